//! How two artifacts differ, file by file: the shared diff of `kiln audit` and `kiln diff`.
//!
//! - Kubernetes objects and other YAML/JSON files: a structured diff by field path
//!   (`spec.template.metadata.annotations["build-time"]: "…" → "…"`), documents matched by
//!   position;
//! - other text: a unified diff;
//! - binary files: sizes and hashes.
//!
//! Entries that appear or disappear, and modes (executable bit) and symlink targets that change,
//! are listed too. Pure: trees in, a value out.

use std::fmt::Write as _;

use kiln_core::tree::{Entry, Tree};
use kiln_core::Digest;
use serde::Serialize;
use serde_json::Value;

/// One field that differs inside a structured file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field's path (`spec.replicas`, `spec.containers[0].image`).
    pub path: String,
    /// The old value (`None`: the field is new).
    pub old: Option<Value>,
    /// The new value (`None`: the field is gone).
    pub new: Option<Value>,
}

/// How one file's content differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentDiff {
    /// YAML or JSON, field by field.
    Fields {
        /// The changed fields.
        changes: Vec<FieldChange>,
    },
    /// Other text, as a unified diff.
    Text {
        /// The unified diff.
        unified: String,
    },
    /// Binary content.
    Binary {
        /// Old size in bytes.
        old_size: u64,
        /// New size in bytes.
        new_size: u64,
        /// Old content hash.
        old_digest: Digest,
        /// New content hash.
        new_digest: Digest,
    },
}

/// One entry that differs between two trees.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum EntryChange {
    /// Only in the new tree.
    Added {
        /// The path.
        path: String,
    },
    /// Only in the old tree.
    Removed {
        /// The path.
        path: String,
    },
    /// Both, with different content, mode or type.
    Modified {
        /// The path.
        path: String,
        /// The executable bit, when it changed: (old, new).
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<(bool, bool)>,
        /// A file became a symlink or the reverse, or a symlink's target moved: (old, new).
        #[serde(skip_serializing_if = "Option::is_none")]
        link: Option<(String, String)>,
        /// The content, when it changed.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ContentDiff>,
    },
}

impl EntryChange {
    /// The entry's path.
    pub fn path(&self) -> &str {
        match self {
            EntryChange::Added { path }
            | EntryChange::Removed { path }
            | EntryChange::Modified { path, .. } => path,
        }
    }
}

/// Every entry that differs from `old` to `new`, by path.
pub fn diff_trees(old: &Tree, new: &Tree) -> Vec<EntryChange> {
    let mut changes = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((pa, _)), Some((pb, _))) if pa.as_str() < pb.as_str() => {
                changes.push(EntryChange::Removed {
                    path: pa.to_string(),
                });
                a.next();
            }
            (Some((pa, _)), Some((pb, _))) if pa.as_str() > pb.as_str() => {
                changes.push(EntryChange::Added {
                    path: pb.to_string(),
                });
                b.next();
            }
            (Some(_), Some(_)) => {
                let ((path, ea), (_, eb)) = (a.next().expect("peeked"), b.next().expect("peeked"));
                if let Some(c) = diff_entry(path.as_str(), ea, eb) {
                    changes.push(c);
                }
            }
            (Some((pa, _)), None) => {
                changes.push(EntryChange::Removed {
                    path: pa.to_string(),
                });
                a.next();
            }
            (None, Some((pb, _))) => {
                changes.push(EntryChange::Added {
                    path: pb.to_string(),
                });
                b.next();
            }
        }
    }
    changes
}

fn describe_link(e: &Entry) -> String {
    match e {
        Entry::File { .. } => "(a file)".to_owned(),
        Entry::Symlink { target } => format!("-> {target}"),
    }
}

fn diff_entry(path: &str, old: &Entry, new: &Entry) -> Option<EntryChange> {
    match (old, new) {
        (
            Entry::File {
                content: ca,
                executable: xa,
            },
            Entry::File {
                content: cb,
                executable: xb,
            },
        ) => {
            let mode = (xa != xb).then_some((*xa, *xb));
            let content = (ca != cb).then(|| diff_content(path, ca, cb));
            (mode.is_some() || content.is_some()).then(|| EntryChange::Modified {
                path: path.to_owned(),
                mode,
                link: None,
                content,
            })
        }
        (Entry::Symlink { target: ta }, Entry::Symlink { target: tb }) if ta == tb => None,
        _ => Some(EntryChange::Modified {
            path: path.to_owned(),
            mode: None,
            link: Some((describe_link(old), describe_link(new))),
            content: None,
        }),
    }
}

/// The content diff of one file.
pub fn diff_content(path: &str, old: &[u8], new: &[u8]) -> ContentDiff {
    let structured = path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json");
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(a), Ok(b)) => {
            if structured {
                if let (Some(va), Some(vb)) = (parse_documents(path, a), parse_documents(path, b)) {
                    return ContentDiff::Fields {
                        changes: diff_documents(&va, &vb),
                    };
                }
            }
            ContentDiff::Text {
                unified: similar::TextDiff::from_lines(a, b)
                    .unified_diff()
                    .context_radius(2)
                    .header("recorded", "rebuilt")
                    .to_string(),
            }
        }
        _ => ContentDiff::Binary {
            old_size: old.len() as u64,
            new_size: new.len() as u64,
            old_digest: Digest::of(old),
            new_digest: Digest::of(new),
        },
    }
}

/// Every YAML document of `text` (JSON is YAML), or `None` when it does not parse: read as
/// artifacts are read (`kiln_rules::objects::parse_documents`, which also refuses hostile
/// nesting, since an audit may compare an artifact a cache handed over).
fn parse_documents(path: &str, text: &str) -> Option<Vec<Value>> {
    let path = kiln_core::RelPath::new(path).ok()?;
    kiln_rules::objects::parse_documents(text, &path).ok()
}

fn diff_documents(old: &[Value], new: &[Value]) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let multi = old.len().max(new.len()) > 1;
    for i in 0..old.len().max(new.len()) {
        let prefix = if multi {
            format!("[document {i}]")
        } else {
            String::new()
        };
        match (old.get(i), new.get(i)) {
            (Some(a), Some(b)) => diff_values(&prefix, a, b, &mut out),
            (a, b) => out.push(FieldChange {
                path: if prefix.is_empty() {
                    ".".into()
                } else {
                    prefix
                },
                old: a.cloned(),
                new: b.cloned(),
            }),
        }
    }
    out
}

fn key_path(prefix: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, prefix.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{prefix}.{key}"),
        (false, _) => format!(
            "{prefix}[{}]",
            serde_json::to_string(key).expect("a string")
        ),
    }
}

/// Field-by-field changes from `old` to `new`, appended to `out` under `path`.
pub fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = key_path(path, k);
                match b.get(k) {
                    Some(vb) => diff_values(&p, va, vb, out),
                    None => out.push(FieldChange {
                        path: p,
                        old: Some(va.clone()),
                        new: None,
                    }),
                }
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(FieldChange {
                    path: key_path(path, k),
                    old: None,
                    new: Some(vb.clone()),
                });
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let p = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => diff_values(&p, va, vb, out),
                    (va, vb) => out.push(FieldChange {
                        path: p,
                        old: va.cloned(),
                        new: vb.cloned(),
                    }),
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_owned()
            },
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
    }
}

/// The changes as text, one line per field or file, indented by `indent`.
pub fn render(changes: &[EntryChange], indent: &str) -> String {
    let mut s = String::new();
    let short = |v: &Option<Value>| match v {
        None => "(absent)".to_owned(),
        Some(v) => {
            let t = serde_json::to_string(v).expect("JSON");
            if t.chars().count() > 120 {
                format!("{}…", t.chars().take(120).collect::<String>())
            } else {
                t
            }
        }
    };
    for c in changes {
        match c {
            EntryChange::Added { path } => {
                let _ = writeln!(s, "{indent}+ {path}");
            }
            EntryChange::Removed { path } => {
                let _ = writeln!(s, "{indent}- {path}");
            }
            EntryChange::Modified {
                path,
                mode,
                link,
                content,
            } => {
                let _ = writeln!(s, "{indent}~ {path}");
                if let Some((a, b)) = mode {
                    let _ = writeln!(s, "{indent}    executable: {a} → {b}");
                }
                if let Some((a, b)) = link {
                    let _ = writeln!(s, "{indent}    {a} → {b}");
                }
                match content {
                    Some(ContentDiff::Fields { changes }) => {
                        for f in changes {
                            let _ = writeln!(
                                s,
                                "{indent}    {}: {} → {}",
                                f.path,
                                short(&f.old),
                                short(&f.new)
                            );
                        }
                    }
                    Some(ContentDiff::Text { unified }) => {
                        for line in unified.lines() {
                            let _ = writeln!(s, "{indent}    {line}");
                        }
                    }
                    Some(ContentDiff::Binary {
                        old_size,
                        new_size,
                        old_digest,
                        new_digest,
                    }) => {
                        let _ = writeln!(
                            s,
                            "{indent}    binary: {old_size} bytes {} → {new_size} bytes {}",
                            old_digest.short(),
                            new_digest.short()
                        );
                    }
                    None => {}
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::fixtures::{rel, tree_of};

    #[test]
    fn yaml_differs_by_field_path() {
        let a = tree_of(&[(
            "objects/ns/Deployment.apps/api.yaml",
            "kind: Deployment\nmetadata:\n  annotations:\n    build-time: '1'\n    kiln.dev/rule: api\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - image: a:1\n",
        )]);
        let b = tree_of(&[(
            "objects/ns/Deployment.apps/api.yaml",
            "kind: Deployment\nmetadata:\n  annotations:\n    build-time: '2'\n    kiln.dev/rule: api\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - image: a:2\n        name: app\n",
        )]);
        let changes = diff_trees(&a, &b);
        let EntryChange::Modified {
            content: Some(ContentDiff::Fields { changes }),
            ..
        } = &changes[0]
        else {
            panic!("{changes:?}")
        };
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.annotations.build-time",
                "spec.template.spec.containers[0].image",
                "spec.template.spec.containers[0].name"
            ]
        );
        assert_eq!(changes[2].old, None);
        let text = render(&diff_trees(&a, &b), "");
        assert!(
            text.contains("spec.template.spec.containers[0].image: \"a:1\" → \"a:2\""),
            "{text}"
        );
        let dotted = tree_of(&[("x.json", r#"{"a.b": 1}"#)]);
        let dotted2 = tree_of(&[("x.json", r#"{"a.b": 2}"#)]);
        assert!(render(&diff_trees(&dotted, &dotted2), "").contains(r#"["a.b"]: 1 → 2"#));
    }

    #[test]
    fn text_binary_modes_and_entries() {
        let mut a = tree_of(&[
            ("run.sh", "echo 1\n"),
            ("gone.txt", "x"),
            ("notes.txt", "one\ntwo\nthree\n"),
        ]);
        a.insert_file(rel("blob.bin"), vec![0u8, 159, 146, 150], false);
        let mut b = tree_of(&[
            ("run.sh", "echo 1\n"),
            ("notes.txt", "one\n2\nthree\n"),
            ("new.txt", "y"),
        ]);
        b.insert_file(rel("run.sh"), &b"echo 1\n"[..], true);
        b.insert_file(rel("blob.bin"), vec![0u8, 159, 146, 151, 1], false);
        let changes = diff_trees(&a, &b);
        let text = render(&changes, "");
        assert!(text.contains("- gone.txt"), "{text}");
        assert!(text.contains("+ new.txt"), "{text}");
        assert!(text.contains("executable: false → true"), "{text}");
        assert!(text.contains("-two") && text.contains("+2"), "{text}");
        assert!(text.contains("binary: 4 bytes"), "{text}");
        assert_eq!(diff_trees(&a, &a), []);
    }
}
