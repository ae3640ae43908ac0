//! The cache layout, format `kiln-cache-v1`: static paths, so that any plain HTTP server or
//! bucket can serve reads.
//!
//! ```text
//! kiln-cache-info              {"format":"kiln-cache-v1"}
//! ac/<derivation hex>          action entry (JSON, see `entry`): output record, derivation, signatures
//! cas/<output hex>.tar.zst     the artifact, as the local store archives it
//! ```
//!
//! Keys are 64 lowercase hex digits; [`Key::parse`] accepts nothing else, so no request path can
//! name a file outside these three shapes.

use kiln_core::Digest;

/// The format this kiln reads and writes.
pub const FORMAT: &str = "kiln-cache-v1";

/// The path of the info file.
pub const INFO: &str = "kiln-cache-info";

/// The body of the info file.
pub fn info_body() -> String {
    format!("{{\"format\":\"{FORMAT}\"}}\n")
}

/// One object of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// `kiln-cache-info`.
    Info,
    /// `ac/<derivation hex>`.
    Action(Digest),
    /// `cas/<output hex>.tar.zst`.
    Archive(Digest),
}

impl Key {
    /// The path inside the cache.
    pub fn path(&self) -> String {
        match self {
            Key::Info => INFO.to_owned(),
            Key::Action(d) => format!("ac/{}", d.hex()),
            Key::Archive(d) => format!("cas/{}.tar.zst", d.hex()),
        }
    }

    /// The key a request path names, or `None` for anything that is not exactly one of the
    /// three shapes (uppercase hex, `..`, extra segments, other suffixes are all refused).
    pub fn parse(path: &str) -> Option<Key> {
        let path = path.strip_prefix('/').unwrap_or(path);
        if path == INFO {
            return Some(Key::Info);
        }
        if let Some(hex) = path.strip_prefix("ac/") {
            return strict_hex(hex).map(Key::Action);
        }
        let hex = path.strip_prefix("cas/")?.strip_suffix(".tar.zst")?;
        strict_hex(hex).map(Key::Archive)
    }
}

/// [`Key::parse`] of a request path that may sit under a prefix (`/kiln/ci/ac/<hex>`): the
/// server keeps one layout whatever prefix a client's address carries. Prefix segments must be
/// plain names (no empty, `.` or `..` segments).
pub fn parse_request_path(path: &str) -> Option<Key> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let key_len = match segments.as_slice() {
        [.., last] if *last == INFO => 1,
        [.., dir, _] if *dir == "ac" || *dir == "cas" => 2,
        _ => return None,
    };
    let (prefix, key) = segments.split_at(segments.len() - key_len);
    if prefix
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    Key::parse(&key.join("/"))
}

fn strict_hex(s: &str) -> Option<Digest> {
    let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| Digest::from_hex(s).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    #[test]
    fn paths_are_pinned() {
        let d = Digest::from_hex(HEX).unwrap();
        assert_eq!(Key::Info.path(), "kiln-cache-info");
        assert_eq!(Key::Action(d).path(), format!("ac/{HEX}"));
        assert_eq!(Key::Archive(d).path(), format!("cas/{HEX}.tar.zst"));
        assert_eq!(info_body(), "{\"format\":\"kiln-cache-v1\"}\n");
        for key in [Key::Info, Key::Action(d), Key::Archive(d)] {
            assert_eq!(Key::parse(&key.path()), Some(key));
            assert_eq!(Key::parse(&format!("/{}", key.path())), Some(key));
        }
    }

    #[test]
    fn request_paths_may_carry_a_prefix() {
        let d = Digest::from_hex(HEX).unwrap();
        assert_eq!(
            parse_request_path(&format!("/ac/{HEX}")),
            Some(Key::Action(d))
        );
        assert_eq!(
            parse_request_path(&format!("/kiln/ci/cas/{HEX}.tar.zst")),
            Some(Key::Archive(d))
        );
        assert_eq!(parse_request_path("/kiln/kiln-cache-info"), Some(Key::Info));
        for bad in [
            format!("/../ac/{HEX}"),
            format!("//ac/{HEX}"),
            format!("/a/./ac/{HEX}"),
            format!("/ac/{HEX}/"),
            "/kiln".to_owned(),
        ] {
            assert_eq!(parse_request_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn nothing_else_is_a_key() {
        let upper = HEX.to_uppercase();
        for bad in [
            "",
            "ac/",
            "ac/abc",
            &format!("ac/{upper}"),
            &format!("ac/{HEX}/x"),
            &format!("ac/../{HEX}"),
            &format!("cas/{HEX}"),
            &format!("cas/{HEX}.tar"),
            &format!("cas/{HEX}.tar.zst/"),
            &format!("objects/{HEX}"),
            "../etc/passwd",
            "kiln-cache-info/x",
            &format!("ac/{}g", &HEX[..63]),
        ] {
            assert_eq!(Key::parse(bad), None, "{bad}");
        }
    }
}
