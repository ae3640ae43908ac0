//! Canonical JSON: object keys sorted by byte order, no insignificant whitespace.
//!
//! Used for everything that is hashed, whatever serde_json features other crates enable.

use serde_json::Value;

/// Returns `v` with every object's keys in sorted order.
pub fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// `v` serialized with every object's keys in sorted order, by reference: what
/// [`sort_keys`] gives without copying the value (a ConfigMap of 1 MiB is not cloned to be
/// written as YAML).
#[derive(Debug, Clone, Copy)]
pub struct Sorted<'a>(pub &'a Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SortedWith(self.0, PlainStrings).serialize(serializer)
    }
}

/// How a walk of [`SortedWith`] serializes each string value (keys stay plain): a format's
/// writer may mark some strings with a style of its own (the YAML writer's literal blocks).
pub trait StringStyle: Copy {
    /// Serializes the string value `s`.
    fn serialize_str<S: serde::Serializer>(self, s: &str, serializer: S)
        -> Result<S::Ok, S::Error>;
}

/// Strings serialized as they are.
#[derive(Debug, Clone, Copy)]
pub struct PlainStrings;

impl StringStyle for PlainStrings {
    fn serialize_str<S: serde::Serializer>(
        self,
        s: &str,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(s)
    }
}

/// [`Sorted`], with string values serialized by a [`StringStyle`].
#[derive(Debug, Clone, Copy)]
pub struct SortedWith<'a, St>(pub &'a Value, pub St);

impl<St: StringStyle> serde::Serialize for SortedWith<'_, St> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut m = serializer.serialize_map(Some(keys.len()))?;
                for k in keys {
                    m.serialize_entry(k, &SortedWith(&map[k], self.1))?;
                }
                m.end()
            }
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&SortedWith(item, self.1))?;
                }
                seq.end()
            }
            Value::String(s) => self.1.serialize_str(s, serializer),
            other => other.serialize(serializer),
        }
    }
}

/// blake3 of `v`'s canonical JSON ([`to_canonical_json`]), written straight into the hasher
/// through a 64 KiB buffer: the text is never held whole (a 1 MiB ConfigMap body is hashed for
/// its name suffix without a copy of it).
pub fn digest(v: &Value) -> crate::Digest {
    let mut sink = Hashing {
        buf: Vec::with_capacity(Hashing::SPILL_AT),
        hasher: blake3::Hasher::new(),
    };
    write_to(v, &mut sink);
    sink.hasher.update(&sink.buf);
    crate::Digest::from(sink.hasher.finalize())
}

/// Appends `s` as a JSON string to `out`, escaped as serde_json escapes it (`\"`, `\\`, the
/// short escapes `\b \f \n \r \t`, other control characters as `\u00xx`), with SIMD: a large
/// string's escaping was the largest cost of a ConfigMap's name suffix.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    json_escape_simd::escape_into(s, out);
}

/// Writes `v` as canonical JSON.
pub fn to_canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// Appends `v` as canonical JSON to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    write_to(v, out);
}

/// Where canonical JSON goes: a growing text, or a hasher fed a buffer at a time.
trait Sink {
    /// The text written so far and not yet spilled.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Called between values: a sink may hand on what it holds.
    fn spill(&mut self) {}
}

impl Sink for Vec<u8> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self
    }
}

struct Hashing {
    buf: Vec<u8>,
    hasher: blake3::Hasher,
}

impl Hashing {
    const SPILL_AT: usize = 64 * 1024;
}

impl Sink for Hashing {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn spill(&mut self) {
        if self.buf.len() >= Self::SPILL_AT {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }
}

fn write_to(v: &Value, out: &mut impl Sink) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.buf().push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.buf().push(b',');
                }
                write_str(k, out.buf());
                out.buf().push(b':');
                write_to(&map[k], out);
            }
            out.buf().push(b'}');
        }
        Value::Array(items) => {
            out.buf().push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.buf().push(b',');
                }
                write_to(item, out);
            }
            out.buf().push(b']');
        }
        Value::String(s) => write_str(s, out.buf()),
        scalar => serde_json::to_writer(out.buf(), scalar).expect("scalar serializes"),
    }
    out.spill();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_is_blake3_of_the_canonical_text() {
        let big = "x\"é\n".repeat(40_000);
        for v in [
            json!({}),
            json!({"b": 1, "a": {"z": [true, null, "x", 2.5, -7], "y": big}, "": {"k": [[]]}}),
            // Many values, so the hasher is fed at several points between them.
            Value::Array(
                (0..200)
                    .map(|i| Value::from(format!("{i}\n").repeat(700)))
                    .collect(),
            ),
        ] {
            assert_eq!(digest(&v), crate::Digest::of(&to_canonical_json(&v)));
        }
    }

    #[test]
    fn keys_sorted_and_compact() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x"], "y": 1.5}});
        assert_eq!(
            String::from_utf8(to_canonical_json(&v)).unwrap(),
            r#"{"a":{"y":1.5,"z":[true,null,"x"]},"b":1}"#
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON values without floats (whose text form is serde_json's own business).
        fn values() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                ".{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(".{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Strings dense with what JSON escapes, around SIMD block edges.
        fn escapable() -> impl Strategy<Value = String> {
            let ch = prop_oneof![
                (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
                Just('"'),
                Just('\\'),
                Just('\u{7f}'),
                Just('é'),
                Just('\u{2028}'),
                Just('😀'),
                any::<char>(),
                "[a-z]".prop_map(|s| s.chars().next().unwrap()),
            ];
            proptest::collection::vec(ch, 0..200).prop_map(|v| v.into_iter().collect())
        }

        proptest! {
            /// Strings are escaped byte for byte as serde_json escapes them (derivation hashes
            /// and ConfigMap name suffixes were defined by its text).
            #[test]
            fn strings_are_written_as_serde_json_writes_them(s in escapable()) {
                let mut ours = Vec::new();
                write_str(&s, &mut ours);
                prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
            }

            /// The canonical bytes are serde_json's text of the value with its keys sorted.
            #[test]
            fn canonical_text_is_serde_jsons_sorted_text(v in values()) {
                prop_assert_eq!(to_canonical_json(&v), serde_json::to_vec(&Sorted(&v)).unwrap());
            }

            /// The canonical bytes parse back to the same value, and are a fixed point.
            #[test]
            fn round_trips(v in values()) {
                let bytes = to_canonical_json(&v);
                let back: Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(&back, &v);
                prop_assert_eq!(to_canonical_json(&back), bytes);
            }

            /// Two values have the same canonical bytes exactly when they are equal.
            #[test]
            fn bytes_identify_the_value(v in values(), w in values()) {
                prop_assert_eq!(to_canonical_json(&v) == to_canonical_json(&w), v == w);
            }
        }
    }
}

#[cfg(test)]
mod sorted_tests {
    use super::*;

    #[test]
    fn sorted_serializes_as_sort_keys_does() {
        let v: Value = serde_json::json!({"b": [{"z": 1, "a": 2}], "a": {"y": null, "x": "s"}});
        assert_eq!(
            serde_json::to_string(&Sorted(&v)).unwrap(),
            serde_json::to_string(&sort_keys(v.clone())).unwrap()
        );
    }
}
