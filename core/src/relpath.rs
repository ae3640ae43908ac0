//! [`RelPath`]: a normalized relative path inside a project or an artifact.

use std::fmt;

/// A relative, normalized, forward-slash path: no leading `/`, no `.` or `..` components, no empty
/// components, no NUL or backslash. Validated when constructed and when deserialized, so a path
/// traversal cannot be written with it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

/// Why a string is not a [`RelPath`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelPathError {
    /// The empty string.
    #[error("path is empty")]
    Empty,
    /// Starts with `/`.
    #[error("path `{0}` is absolute")]
    Absolute(String),
    /// Contains `..`.
    #[error("path `{0}` climbs out with `..`")]
    ParentComponent(String),
    /// Contains `.`, `//` or a trailing `/`.
    #[error("path `{0}` is not normalized")]
    NotNormalized(String),
    /// Contains NUL or a backslash.
    #[error("path `{0}` contains a forbidden character")]
    ForbiddenChar(String),
    /// Longer than [`RelPath::MAX_LEN`].
    #[error("path of {0} bytes is longer than the limit")]
    TooLong(usize),
}

impl RelPath {
    /// The longest path accepted, in bytes.
    pub const MAX_LEN: usize = 4096;

    /// Validates `s` as a relative path.
    pub fn new(s: impl Into<String>) -> Result<Self, RelPathError> {
        let s = s.into();
        validate(&s)?;
        Ok(Self(s))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/child`, where `child` is itself a valid relative path.
    pub fn join(&self, child: &RelPath) -> RelPath {
        RelPath(format!("{}/{}", self.0, child.0))
    }

    /// The path with `prefix/` removed, if it starts with that directory.
    pub fn strip_dir(&self, prefix: &str) -> Option<RelPath> {
        let rest = self.0.strip_prefix(prefix)?.strip_prefix('/')?;
        Some(RelPath(rest.to_owned()))
    }

    /// The final component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn validate(s: &str) -> Result<(), RelPathError> {
    if s.is_empty() {
        return Err(RelPathError::Empty);
    }
    if s.len() > RelPath::MAX_LEN {
        return Err(RelPathError::TooLong(s.len()));
    }
    if s.starts_with('/') {
        return Err(RelPathError::Absolute(s.to_owned()));
    }
    if s.contains(['\0', '\\']) {
        return Err(RelPathError::ForbiddenChar(s.to_owned()));
    }
    for c in s.split('/') {
        match c {
            ".." => return Err(RelPathError::ParentComponent(s.to_owned())),
            "" | "." => return Err(RelPathError::NotNormalized(s.to_owned())),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for RelPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for RelPath {
    type Error = RelPathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for ok in [
            "a",
            "a/b.yaml",
            "objects/_cluster/Namespace/prod.yaml",
            ".kiln/exports.json",
        ] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_traversal_and_odd_forms() {
        assert_eq!(RelPath::new(""), Err(RelPathError::Empty));
        assert!(matches!(
            RelPath::new("/etc/passwd"),
            Err(RelPathError::Absolute(_))
        ));
        assert!(matches!(
            RelPath::new("a/../../b"),
            Err(RelPathError::ParentComponent(_))
        ));
        assert!(matches!(
            RelPath::new(".."),
            Err(RelPathError::ParentComponent(_))
        ));
        assert!(matches!(
            RelPath::new("a//b"),
            Err(RelPathError::NotNormalized(_))
        ));
        assert!(matches!(
            RelPath::new("./a"),
            Err(RelPathError::NotNormalized(_))
        ));
        assert!(matches!(
            RelPath::new("a/"),
            Err(RelPathError::NotNormalized(_))
        ));
        assert!(matches!(
            RelPath::new("a\\b"),
            Err(RelPathError::ForbiddenChar(_))
        ));
        assert!(matches!(
            RelPath::new("a\0b"),
            Err(RelPathError::ForbiddenChar(_))
        ));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<RelPath>("\"../x\"").is_err());
        assert!(serde_json::from_str::<RelPath>("\"x/y\"").is_ok());
    }

    #[test]
    fn strip_and_join() {
        let p = RelPath::new("objects/ns/a.yaml").unwrap();
        assert_eq!(p.strip_dir("objects").unwrap().as_str(), "ns/a.yaml");
        assert!(p.strip_dir("obj").is_none());
        let j = RelPath::new("x").unwrap().join(&p);
        assert_eq!(j.as_str(), "x/objects/ns/a.yaml");
        assert_eq!(p.file_name(), "a.yaml");
    }
}
