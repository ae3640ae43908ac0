//! Objects written as YAML: keys sorted, multi-line strings as literal blocks.
//!
//! serde-saphyr picks a literal block (`|`) for a multi-line string on its own, but it checks
//! the string's characters twice to do so (once to choose the style, once to write it), and a
//! 1 MB ConfigMap value made that check a third of a configmap rule's CPU time. A string
//! that is plain printable ASCII with line breaks is handed to it as a `LitStr`, which is
//! checked once and written the same way: the bytes are the crate's own in both cases (tested
//! below against its automatic choice). Any other string takes the automatic path.

use kiln_core::canonical::{SortedWith, StringStyle};
use serde::ser::{Serialize, Serializer};
use serde_json::Value;

/// Serializes an object to canonical YAML (keys sorted).
pub fn to_yaml(obj: &Value) -> String {
    let mut out = String::with_capacity(yaml_size_hint(obj));
    serde_saphyr::to_fmt_writer(&mut out, &SortedWith(obj, LiteralBlocks))
        .expect("JSON values serialize to YAML");
    out
}

/// A first guess of the YAML's size, so that a large value is not copied on every growth of
/// the text: its strings' bytes, plus a quarter for indentation and keys.
fn yaml_size_hint(v: &Value) -> usize {
    fn strings(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(strings).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + strings(v)).sum(),
            _ => 8,
        }
    }
    let n = strings(v);
    n + n / 4 + 256
}

/// Whether serde-saphyr's automatic choice for `s` is a literal block that a `LitStr` writes
/// byte for byte the same: a non-empty string with a line break, made only of printable ASCII,
/// line breaks and tabs (a subset of what it accepts in a block). Checked in blocks without
/// branching, which the compiler turns into vector code.
fn literal_block_as_chosen(s: &str) -> bool {
    let plain = |b: &u8| matches!(b, b' '..=b'~' | b'\n' | b'\t');
    s.as_bytes()
        .chunks(64)
        .all(|block| block.iter().fold(true, |ok, b| ok & plain(b)))
        && s.contains('\n')
}

/// String values marked as literal blocks where [`literal_block_as_chosen`] says so.
#[derive(Clone, Copy)]
struct LiteralBlocks;

impl StringStyle for LiteralBlocks {
    fn serialize_str<S: Serializer>(self, s: &str, serializer: S) -> Result<S::Ok, S::Error> {
        if literal_block_as_chosen(s) {
            serde_saphyr::LitStr(s).serialize(serializer)
        } else {
            serializer.serialize_str(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::canonical::Sorted;
    use serde_json::json;

    /// What serde-saphyr writes by its own choice of styles.
    fn automatic(v: &Value) -> String {
        serde_saphyr::to_string(&Sorted(v)).unwrap()
    }

    #[test]
    fn literal_blocks_are_written_as_the_crate_chooses_them() {
        let strings = [
            "a\nb\n",
            "a\nb",
            "a\nb\n\n\n",
            "\n",
            "\n\n",
            "  leading spaces\nsecond\n",
            "\tleading tab\nx\n",
            "trailing spaces  \nx  \n",
            "key: value\n# not a comment\n- not a list\n",
            "|\n>\n---\n...\n",
            "unicode é\nline\n",
            "carriage\r\nreturn\n",
            "bell\u{7}\nx\n",
            "one line",
            "",
            "a very long single line that is longer than the folding column of eighty characters, for sure",
        ];
        for s in strings {
            let obj = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x", "annotations": {"note": s}},
                "data": {"a": s, "b": [s, {"c": s}]},
            });
            assert_eq!(to_yaml(&obj), automatic(&obj), "{s:?}");
        }
    }

    #[test]
    fn only_plain_multi_line_text_is_marked() {
        assert!(literal_block_as_chosen("a\nb"));
        assert!(literal_block_as_chosen(&"x: 1\n".repeat(1000)));
        assert!(!literal_block_as_chosen("no line break"));
        assert!(!literal_block_as_chosen(""));
        assert!(!literal_block_as_chosen("é\n"));
        assert!(!literal_block_as_chosen("a\r\nb"));
        let mut late = "x\n".repeat(100);
        late.push('\u{1}');
        assert!(!literal_block_as_chosen(&late));
    }

    #[test]
    fn a_large_value_is_written_without_growing_the_text() {
        let value = "- name: item\n  image: registry.example/app:1\n".repeat(20_000);
        let obj = json!({"data": {"f.yaml": value}});
        let yaml = to_yaml(&obj);
        assert!(yaml.capacity() >= yaml.len());
        assert!(
            yaml_size_hint(&obj) >= yaml.len(),
            "{} < {}",
            yaml_size_hint(&obj),
            yaml.len()
        );
        assert_eq!(yaml, automatic(&obj));
    }
}
