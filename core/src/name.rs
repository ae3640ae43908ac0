//! Validated identifiers: [`RuleName`] and [`EnvName`].

use std::fmt;

/// Why a string is not a valid rule or environment name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{name}` is not a valid {what} name: use 1-128 characters from a-z, A-Z, 0-9, `-`, `_` and `.`, starting with a letter or digit")]
pub struct NameError {
    /// The rejected name.
    pub name: String,
    /// "rule" or "environment".
    pub what: &'static str,
}

fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                if valid(&s) {
                    Ok(Self(s))
                } else {
                    Err(NameError { name: s, what: $what })
                }
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a rule, unique within a project.
    RuleName,
    "rule"
);
name_type!(
    /// The name of an environment (`staging`, `production`).
    EnvName,
    "environment"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert!(RuleName::new("api-config").is_ok());
        assert!(RuleName::new("postgres.primary_1").is_ok());
        assert!(RuleName::new("-x").is_err());
        assert!(RuleName::new("a/b").is_err());
        assert!(RuleName::new("").is_err());
        assert!(EnvName::new("production").is_ok());
        assert_eq!(
            EnvName::new("pro duction")
                .unwrap_err()
                .to_string()
                .split(':')
                .next()
                .unwrap(),
            "`pro duction` is not a valid environment name"
        );
    }
}
