//! `kiln why RULE`: what moved a rule's derivation hash, down to the root causes.
//!
//! Two sides are compared, each a derivation record per rule: the old one (a GC root, with the
//! derivations the store keeps in its action entries) and the new one (the checkout now, or a
//! newer root). A rule's causes are the fields of its canonical derivation that differ: the
//! kind or its version, attributes by path, variables, source files (with the changed hunks,
//! from the sources the store keeps), and dependencies whose output moved, explained in turn.
//! A dependency whose derivation moved but whose output did not is an early cutoff: its
//! dependents did not rebuild. Pure once both sides are read.

use std::collections::{BTreeMap, BTreeSet};

use kiln_core::Digest;
use serde::Serialize;
use serde_json::Value;

use crate::treediff::{diff_values, FieldChange};

/// One side of the comparison: a rule's derivation hash, its canonical record when the store
/// still has it, and its output when known.
#[derive(Debug, Clone)]
pub struct Side {
    /// Derivation hash.
    pub drv: Digest,
    /// The canonical derivation record, when at hand (else read through
    /// [`Comparison::record`]).
    pub record: Option<Vec<u8>>,
    /// The output, when known (built).
    pub output: Option<Digest>,
}

/// What happened to one rule between the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Same derivation: nothing to rebuild.
    Unchanged,
    /// The derivation moved, and the new output is not known yet: it would rebuild.
    WouldRebuild,
    /// The derivation moved and the rebuild gave a new output.
    Rebuilt,
    /// The derivation moved but the output came out the same: its dependents did not rebuild.
    RebuiltSameOutput,
    /// The rule did not exist on the old side.
    New,
}

/// One reason a derivation moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The kind, or the version of its implementation.
    Kind {
        /// Old `kind@version`.
        old: String,
        /// New `kind@version`.
        new: String,
    },
    /// An attribute, by path.
    Attribute(FieldChange),
    /// A variable the rule reads from its sources.
    Variable {
        /// `var.NAME` or `kiln.env`.
        name: String,
        /// Old value.
        old: Option<Value>,
        /// New value.
        new: Option<Value>,
    },
    /// A source file.
    Source {
        /// Its path in the project.
        path: String,
        /// `added`, `removed`, `modified` or `mode` (the executable bit).
        change: String,
        /// The changed hunks, when both contents are at hand.
        #[serde(skip_serializing_if = "Option::is_none")]
        hunks: Option<String>,
    },
    /// A dependency whose output moved (or would), explained in turn.
    Dependency(Box<Explanation>),
    /// A dependency added or removed.
    DependencyList {
        /// The dependency.
        name: String,
        /// `added` or `removed`.
        change: String,
    },
    /// A dependency whose derivation moved but whose output did not (early cutoff).
    EarlyCutoff {
        /// The dependency.
        name: String,
    },
    /// The old derivation record is no longer in the store (collected by `kiln store gc`).
    RecordGone,
}

/// Why one rule's derivation moved (or did not).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The rule.
    pub rule: String,
    /// What happened to it.
    pub state: State,
    /// The reasons.
    pub causes: Vec<Cause>,
}

/// Both sides and how to read sources.
pub struct Comparison<'a> {
    /// The old side, by rule.
    pub old: &'a BTreeMap<String, Side>,
    /// The new side, by rule.
    pub new: &'a BTreeMap<String, Side>,
    /// The output hash that stands for "not built yet" on the new side.
    pub unknown_output: Digest,
    /// A source's content by digest (kept sources, or the checkout's files).
    pub source: &'a dyn Fn(&str, &Digest) -> Option<Vec<u8>>,
    /// A derivation record by hash, for sides read without their records (read only for the
    /// rules an explanation visits).
    pub record: &'a dyn Fn(&Digest) -> Option<Vec<u8>>,
}

impl Comparison<'_> {
    /// Why `rule` moved.
    pub fn explain(&self, rule: &str) -> Explanation {
        self.explain_in(rule, &mut BTreeSet::new())
    }

    fn explain_in(&self, rule: &str, seen: &mut BTreeSet<String>) -> Explanation {
        let mut e = Explanation {
            rule: rule.to_owned(),
            state: State::Unchanged,
            causes: Vec::new(),
        };
        let (Some(old), Some(new)) = (self.old.get(rule), self.new.get(rule)) else {
            e.state = State::New;
            return e;
        };
        let parse = |s: &Side| -> Option<Value> {
            match &s.record {
                Some(bytes) => serde_json::from_slice(bytes).ok(),
                None => serde_json::from_slice(&(self.record)(&s.drv)?).ok(),
            }
        };
        let (old_record, new_record) = (parse(old), parse(new));
        if old.drv == new.drv {
            // Unchanged; still say which dependencies moved without moving this rule.
            if let Some(n) = &new_record {
                for dep in deps_of(n).keys() {
                    if let (Some(a), Some(b)) = (self.old.get(dep), self.new.get(dep)) {
                        if a.drv != b.drv {
                            e.causes.push(Cause::EarlyCutoff { name: dep.clone() });
                        }
                    }
                }
            }
            return e;
        }
        e.state = match new.output {
            None => State::WouldRebuild,
            Some(o) if o == self.unknown_output => State::WouldRebuild,
            Some(o) if Some(o) == old.output => State::RebuiltSameOutput,
            Some(_) => State::Rebuilt,
        };
        let (Some(a), Some(b)) = (old_record, new_record) else {
            e.causes.push(Cause::RecordGone);
            return e;
        };
        let kind = |v: &Value| {
            format!(
                "{}@{}",
                v["kind"].as_str().unwrap_or("?"),
                v["kind_version"]
            )
        };
        if kind(&a) != kind(&b) {
            e.causes.push(Cause::Kind {
                old: kind(&a),
                new: kind(&b),
            });
        }
        let mut attrs = Vec::new();
        diff_values("", &a["attrs"], &b["attrs"], &mut attrs);
        e.causes.extend(attrs.into_iter().map(Cause::Attribute));
        e.causes.extend(self.variables(&a["vars"], &b["vars"]));
        e.causes.extend(self.sources(&a["srcs"], &b["srcs"]));
        seen.insert(rule.to_owned());
        let (da, db) = (deps_of(&a), deps_of(&b));
        for (name, new_out) in &db {
            match da.get(name) {
                None => e.causes.push(Cause::DependencyList {
                    name: name.clone(),
                    change: "added".into(),
                }),
                Some(old_out) if old_out != new_out && !seen.contains(name) => {
                    e.causes
                        .push(Cause::Dependency(Box::new(self.explain_in(name, seen))));
                }
                Some(_) => {
                    let moved = matches!(
                        (self.old.get(name), self.new.get(name)),
                        (Some(x), Some(y)) if x.drv != y.drv
                    );
                    if moved {
                        e.causes.push(Cause::EarlyCutoff { name: name.clone() });
                    }
                }
            }
        }
        for name in da.keys().filter(|n| !db.contains_key(*n)) {
            e.causes.push(Cause::DependencyList {
                name: name.clone(),
                change: "removed".into(),
            });
        }
        e
    }

    fn variables(&self, a: &Value, b: &Value) -> Vec<Cause> {
        let empty = serde_json::Map::new();
        let (a, b) = (
            a.as_object().unwrap_or(&empty),
            b.as_object().unwrap_or(&empty),
        );
        let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        names
            .into_iter()
            .filter(|n| a.get(*n) != b.get(*n))
            .map(|n| Cause::Variable {
                name: n.clone(),
                old: a.get(n).cloned(),
                new: b.get(n).cloned(),
            })
            .collect()
    }

    fn sources(&self, a: &Value, b: &Value) -> Vec<Cause> {
        let by_path = |v: &Value| -> BTreeMap<String, (String, bool)> {
            v.as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|s| {
                            Some((
                                s["path"].as_str()?.to_owned(),
                                (
                                    s["digest"].as_str()?.to_owned(),
                                    s["executable"].as_bool().unwrap_or(false),
                                ),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (a, b) = (by_path(a), by_path(b));
        let mut out = Vec::new();
        for (path, (digest, exec)) in &b {
            match a.get(path) {
                None => out.push(Cause::Source {
                    path: path.clone(),
                    change: "added".into(),
                    hunks: None,
                }),
                Some((old_digest, _)) if old_digest != digest => out.push(Cause::Source {
                    path: path.clone(),
                    change: "modified".into(),
                    hunks: self.hunks(path, old_digest, digest),
                }),
                Some((_, old_exec)) if old_exec != exec => out.push(Cause::Source {
                    path: path.clone(),
                    change: "mode".into(),
                    hunks: None,
                }),
                Some(_) => {}
            }
        }
        for path in a.keys().filter(|p| !b.contains_key(*p)) {
            out.push(Cause::Source {
                path: path.clone(),
                change: "removed".into(),
                hunks: None,
            });
        }
        out
    }

    fn hunks(&self, path: &str, old: &str, new: &str) -> Option<String> {
        let read = |d: &str| -> Option<String> {
            let digest: Digest = d.parse().ok()?;
            String::from_utf8((self.source)(path, &digest)?).ok()
        };
        let (a, b) = (read(old)?, read(new)?);
        let diff = similar::TextDiff::from_lines(&a, &b);
        let text = diff.unified_diff().context_radius(1).to_string();
        Some(text)
    }
}

fn deps_of(v: &Value) -> BTreeMap<String, String> {
    v["deps"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The explanation as indented text.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    render_into(e, 0, &mut out);
    out
}

fn render_into(e: &Explanation, depth: usize, out: &mut String) {
    use std::fmt::Write as _;
    let pad = "  ".repeat(depth);
    let state = match e.state {
        State::Unchanged => "is unchanged: it does not rebuild",
        State::WouldRebuild => "would rebuild",
        State::Rebuilt => "was rebuilt",
        State::RebuiltSameOutput => {
            "was rebuilt to the same output: its dependents were not rebuilt (early cutoff)"
        }
        State::New => "is new (nothing to compare with)",
    };
    let _ = writeln!(out, "{pad}`{}` {state}", e.rule);
    let json = |v: &Option<Value>| {
        v.as_ref()
            .map_or_else(|| "(absent)".to_owned(), |v| v.to_string())
    };
    for c in &e.causes {
        match c {
            Cause::Kind { old, new } => {
                let _ = writeln!(out, "{pad}  kind {old} → {new}");
            }
            Cause::Attribute(f) => {
                let _ = writeln!(
                    out,
                    "{pad}  attribute {}: {} → {}",
                    f.path,
                    json(&f.old),
                    json(&f.new)
                );
            }
            Cause::Variable { name, old, new } => {
                let _ = writeln!(out, "{pad}  variable {name}: {} → {}", json(old), json(new));
            }
            Cause::Source {
                path,
                change,
                hunks,
            } => {
                let _ = writeln!(out, "{pad}  source {path} {change}");
                for line in hunks.iter().flat_map(|h| h.lines()) {
                    let _ = writeln!(out, "{pad}    {line}");
                }
            }
            Cause::Dependency(d) => {
                let _ = writeln!(out, "{pad}  dependency `{}` changed its output:", d.rule);
                render_into(d, depth + 2, out);
            }
            Cause::DependencyList { name, change } => {
                let _ = writeln!(out, "{pad}  dependency `{name}` {change}");
            }
            Cause::EarlyCutoff { name } => {
                let _ = writeln!(
                    out,
                    "{pad}  dependency `{name}` changed its derivation but not its output (early cutoff)"
                );
            }
            Cause::RecordGone => {
                let _ = writeln!(
                    out,
                    "{pad}  (the old derivation record is no longer in the store)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(drv: &str, record: Value, output: Option<&str>) -> Side {
        let bytes = serde_json::to_vec(&record).unwrap();
        let _ = drv;
        Side {
            drv: Digest::of(&bytes),
            record: Some(bytes),
            output: output.map(|o| Digest::of(o.as_bytes())),
        }
    }

    #[test]
    fn a_dependency_chain_reaches_the_root_cause() {
        let out = |s: &str| Digest::of(s.as_bytes()).to_string();
        let cfg = |v: &str| serde_json::json!({"attrs": {"data": {"LEVEL": v}}, "deps": {}, "kind": "configmap", "kind_version": 1, "srcs": [], "vars": {}});
        let api = |dep: &str| serde_json::json!({"attrs": {}, "deps": {"cfg": dep}, "kind": "manifest", "kind_version": 1, "srcs": [], "vars": {}});
        let old: BTreeMap<String, Side> = [
            ("cfg".to_owned(), side("", cfg("info"), Some("cfg1"))),
            ("api".to_owned(), side("", api(&out("cfg1")), Some("api1"))),
        ]
        .into();
        let new: BTreeMap<String, Side> = [
            ("cfg".to_owned(), side("", cfg("debug"), Some("cfg2"))),
            ("api".to_owned(), side("", api(&out("cfg2")), None)),
        ]
        .into();
        let none = |_: &str, _: &Digest| None;
        let no_record = |_: &Digest| None;
        let c = Comparison {
            old: &old,
            new: &new,
            unknown_output: Digest::of(b"unknown"),
            source: &none,
            record: &no_record,
        };
        let e = c.explain("api");
        assert_eq!(e.state, State::WouldRebuild);
        let Cause::Dependency(d) = &e.causes[0] else {
            panic!("{e:?}")
        };
        assert_eq!(d.rule, "cfg");
        assert_eq!(d.state, State::Rebuilt);
        let text = render(&e);
        assert!(
            text.contains("attribute data.LEVEL: \"info\" → \"debug\""),
            "{text}"
        );
    }
}
