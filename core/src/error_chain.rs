//! Rendering an error with its causes on one line.

/// `error: cause: cause of cause`, for messages that must fit one line (JSON reports, store
/// verification).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn joins_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = crate::tree::TreeError::Read {
            path: "x".into(),
            source: io,
        };
        assert_eq!(super::error_chain(&e), "failed to read `x`: disk on fire");
    }
}
