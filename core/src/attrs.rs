//! A rule's attributes in compact form: the canonical JSON text of the attribute object.
//!
//! A loaded project keeps every rule's attributes until the build ends. As `serde_json` maps
//! they took about 2 KB per small rule (a B-tree node per object, whatever its size); as text
//! they take the bytes of their canonical JSON, which is also exactly what the derivation
//! hashes, so a rule without references is encoded by copying it. Consumers that need the
//! structure (checking, interpolation, building) parse it for the moment they need it.

use std::fmt;

use serde_json::Value;

use crate::canonical;

/// The canonical JSON text of an attribute object (keys sorted, no whitespace).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Attrs(Box<str>);

impl Attrs {
    /// The attributes of `value`, which should be a JSON object.
    pub fn from_value(value: &Value) -> Self {
        let bytes = canonical::to_canonical_json(value);
        Self(
            String::from_utf8(bytes)
                .expect("canonical JSON is UTF-8")
                .into_boxed_str(),
        )
    }

    /// The canonical JSON text.
    pub fn canonical(&self) -> &str {
        &self.0
    }

    /// The attributes as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).expect("canonical JSON written by `from_value` parses")
    }

    /// Whether some string (or key) holds `${`: false means no `${...}` reference for certain,
    /// true means one may be there ([`crate::interpolate::has_references`] on the value says).
    pub fn may_have_references(&self) -> bool {
        self.0.contains("${")
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_the_canonical_json_and_parses_back_to_the_value() {
        let v = json!({"b": [1, 2.5, -3e-7, 1.0e300, null], "a": {"y": "é\n\"", "x": true}, "c": 18446744073709551615u64});
        let a = Attrs::from_value(&v);
        assert_eq!(
            a.canonical().as_bytes(),
            canonical::to_canonical_json(&v).as_slice()
        );
        assert_eq!(a.to_value(), v);
        assert_eq!(Attrs::from_value(&a.to_value()), a);
    }

    #[test]
    fn references_are_never_missed() {
        assert!(!Attrs::from_value(&json!({"a": "$ {x}", "b": ["{}"]})).may_have_references());
        assert!(Attrs::from_value(&json!({"a": ["x", {"b": "${var.x}"}]})).may_have_references());
        assert!(Attrs::from_value(&json!({"${k}": 1})).may_have_references());
    }
}
