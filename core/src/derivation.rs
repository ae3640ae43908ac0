//! [`Derivation`]: everything that determines a rule's output, and its hash.
//!
//! Derivation encoding, version 1 (`kiln-drv-v1`): canonical JSON (keys sorted by byte order, no
//! whitespace) of
//!
//! ```json
//! {"attrs":{...},"deps":{"RULE":"blake3:OUTPUT"},"encoding":"kiln-drv-v1","kind":"manifest",
//!  "kind_version":1,"srcs":[{"digest":"blake3:...","executable":false,"path":"k8s/api.yaml"}],
//!  "vars":{"var.image_tag":"1.2.3"}}
//! ```
//!
//! - `attrs`: the rule's attributes with every `${...}` resolved;
//! - `srcs`: source files, MUST be sorted by path; path relative to the project root;
//! - `vars`: only the variables the kind reads from source text (`var.NAME`, `kiln.env`);
//! - `deps`: each dependency's *output* hash (never its derivation hash): this is what gives
//!   early cutoff, since a dependency rebuilt to an identical output leaves this map unchanged.
//!
//! The derivation hash is blake3 over these bytes. No absolute path, mtime, host name or map
//! iteration order can enter it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attrs::Attrs;
use crate::canonical;
use crate::digest::Digest;
use crate::name::RuleName;
use crate::sources::SourceEntry;

/// The encoding tag of version 1.
pub const DERIVATION_ENCODING: &str = "kiln-drv-v1";

/// The inputs of one rule's build: the schema of `kiln-drv-v1`, for reading a stored derivation
/// back. The build encodes through [`DerivationRef`] (no copies); the tests pin that its bytes
/// are this struct's canonical JSON. How two derivations differ, for `kiln why`, is the
/// engine's `why` module (it also shows changed hunks of sources).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derivation {
    /// Always [`DERIVATION_ENCODING`].
    pub encoding: String,
    /// The kind's name.
    pub kind: String,
    /// The kind's implementation version.
    pub kind_version: u32,
    /// Resolved attributes.
    pub attrs: Value,
    /// Source files, sorted by path.
    pub srcs: Vec<SourceEntry>,
    /// Values read from source text, by `var.NAME` / `kiln.NAME`.
    pub vars: BTreeMap<String, Value>,
    /// Output hash of each dependency.
    pub deps: BTreeMap<RuleName, Digest>,
}

/// A borrowed view of a [`Derivation`], so the build can encode one without copying its parts.
#[derive(Clone, Copy, Debug)]
pub struct DerivationRef<'a> {
    /// The kind's name.
    pub kind: &'a str,
    /// The kind's implementation version.
    pub kind_version: u32,
    /// Resolved attributes, as canonical JSON.
    pub attrs: &'a Attrs,
    /// Source files, MUST be sorted by path.
    pub srcs: &'a [SourceEntry],
    /// Values read from source text.
    pub vars: &'a BTreeMap<String, Value>,
    /// Output hash of each dependency.
    pub deps: &'a BTreeMap<RuleName, Digest>,
}

impl DerivationRef<'_> {
    /// The canonical bytes that are hashed and stored (keys in byte order, as documented).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        debug_assert!(self.srcs.windows(2).all(|w| w[0].path < w[1].path));
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"attrs\":");
        out.extend_from_slice(self.attrs.canonical().as_bytes());
        out.extend_from_slice(b",\"deps\":{");
        for (i, (name, digest)) in self.deps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            canonical::write_str(name.as_str(), &mut out);
            out.push(b':');
            canonical::write_str(&digest.to_string(), &mut out);
        }
        out.extend_from_slice(b"},\"encoding\":");
        canonical::write_str(DERIVATION_ENCODING, &mut out);
        out.extend_from_slice(b",\"kind\":");
        canonical::write_str(self.kind, &mut out);
        out.extend_from_slice(
            format!(",\"kind_version\":{},\"srcs\":[", self.kind_version).as_bytes(),
        );
        for (i, src) in self.srcs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"digest\":");
            canonical::write_str(&src.digest.to_string(), &mut out);
            out.extend_from_slice(if src.executable {
                b",\"executable\":true,\"path\":"
            } else {
                b",\"executable\":false,\"path\":"
            });
            canonical::write_str(src.path.as_str(), &mut out);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"vars\":{");
        for (i, (k, v)) in self.vars.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            canonical::write_str(k, &mut out);
            out.push(b':');
            canonical::write(v, &mut out);
        }
        out.extend_from_slice(b"}}");
        out
    }
}

impl Derivation {
    /// The canonical bytes that are hashed and stored.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        DerivationRef {
            kind: &self.kind,
            kind_version: self.kind_version,
            attrs: &Attrs::from_value(&self.attrs),
            srcs: &self.srcs,
            vars: &self.vars,
            deps: &self.deps,
        }
        .canonical_bytes()
    }

    /// The derivation hash.
    pub fn hash(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relpath::RelPath;
    use serde_json::json;

    pub(crate) fn sample() -> Derivation {
        let mut deps = BTreeMap::new();
        deps.insert(RuleName::new("api-config").unwrap(), Digest::of(b"out"));
        let mut vars = BTreeMap::new();
        vars.insert("var.image_tag".to_owned(), json!("1.2.3"));
        Derivation {
            encoding: DERIVATION_ENCODING.to_owned(),
            kind: "manifest".to_owned(),
            kind_version: 1,
            attrs: json!({"namespace": "shop", "labels": {"b": "2", "a": "1"}}),
            srcs: vec![SourceEntry {
                path: RelPath::new("k8s/api.yaml").unwrap(),
                executable: false,
                digest: Digest::of(b"kind: Deployment\n"),
            }],
            vars,
            deps,
        }
    }

    #[test]
    fn golden_derivation_encoding() {
        // Pins kiln-drv-v1. If this fails, the encoding changed: bump DERIVATION_ENCODING.
        let d = sample();
        let text = String::from_utf8(d.canonical_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"attrs":{{"labels":{{"a":"1","b":"2"}},"namespace":"shop"}},"deps":{{"api-config":"{}"}},"encoding":"kiln-drv-v1","kind":"manifest","kind_version":1,"srcs":[{{"digest":"{}","executable":false,"path":"k8s/api.yaml"}}],"vars":{{"var.image_tag":"1.2.3"}}}}"#,
                Digest::of(b"out"),
                Digest::of(b"kind: Deployment\n")
            )
        );
        assert_eq!(
            d.hash().to_string(),
            "blake3:5e4261439163990047b89ddf605ab8f728e018fb251ad65e7f30b98b952788e5"
        );
    }

    #[test]
    fn direct_encoding_equals_canonical_json_of_the_struct() {
        let mut d = sample();
        d.srcs.push(SourceEntry {
            path: RelPath::new("z/\"odd\" name").unwrap(),
            executable: true,
            digest: Digest::of(b"z"),
        });
        d.attrs = json!({"x": [1, 2.5, null, {"b": "é\n", "a": true}]});
        let via_serde = canonical::to_canonical_json(&serde_json::to_value(&d).unwrap());
        assert_eq!(
            String::from_utf8(d.canonical_bytes()).unwrap(),
            String::from_utf8(via_serde).unwrap()
        );
    }

    #[test]
    fn a_stored_derivation_reads_back_and_every_input_moves_the_hash() {
        let d = sample();
        let back: Derivation = serde_json::from_slice(&d.canonical_bytes()).unwrap();
        assert_eq!(back.hash(), d.hash());
        let mut e = d.clone();
        e.vars.insert("var.image_tag".into(), json!("1.2.4"));
        assert_ne!(d.hash(), e.hash());
        let mut e = d.clone();
        e.deps
            .insert(RuleName::new("api-config").unwrap(), Digest::of(b"other"));
        assert_ne!(d.hash(), e.hash());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Attribute maps hash the same whatever order their keys were inserted in.
            #[test]
            fn hash_ignores_attribute_key_order(keys in proptest::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..16)) {
                let forward: serde_json::Map<String, Value> = keys.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let backward: serde_json::Map<String, Value> = keys.iter().rev().map(|(k, v)| (k.clone(), json!(v))).collect();
                let mut a = sample();
                a.attrs = json!({"nested": Value::Object(forward.clone()), "top": Value::Object(forward)});
                let mut b = sample();
                b.attrs = json!({"top": Value::Object(backward.clone()), "nested": Value::Object(backward)});
                prop_assert_eq!(a.hash(), b.hash());
            }
        }
    }
}
