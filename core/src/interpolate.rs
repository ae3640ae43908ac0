//! `${...}` interpolation: environment variables, dependency exports and kiln facts.
//!
//! Syntax, in rule attributes and in the source files of kinds that interpolate them:
//! - `${var.NAME}`: variable `NAME` of the selected environment (or its `[vars]` default);
//! - `${dep.RULE.KEY}`: value `KEY` exported by dependency `RULE` (for example a ConfigMap's hashed name);
//! - `${kiln.env}`, `${kiln.project}`: the environment and project names;
//! - `$${` writes a literal `${`.
//!
//! A string that is exactly one reference takes the referenced value's type (so
//! `replicas = "${var.replicas}"` stays a number); otherwise values are spliced in as text.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::exports::Exports;
use crate::name::RuleName;

/// One `${...}` reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `${var.NAME}`.
    Var(String),
    /// `${dep.RULE.KEY}`.
    Dep {
        /// The dependency's rule name.
        rule: RuleName,
        /// The exported key.
        key: String,
    },
    /// `${kiln.env}` or `${kiln.project}`.
    Kiln(String),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Var(n) => write!(f, "${{var.{n}}}"),
            Reference::Dep { rule, key } => write!(f, "${{dep.{rule}.{key}}}"),
            Reference::Kiln(n) => write!(f, "${{kiln.{n}}}"),
        }
    }
}

impl Reference {
    /// The key under which this reference's value is recorded in a derivation's `vars`
    /// (`var.NAME`, `kiln.env`), or `None` for dependency exports, which the dependency's output
    /// hash already covers.
    pub fn derivation_key(&self) -> Option<String> {
        match self {
            Reference::Var(n) => Some(format!("var.{n}")),
            Reference::Kiln(n) => Some(format!("kiln.{n}")),
            Reference::Dep { .. } => None,
        }
    }
}

/// An interpolation failure. `offset` is the byte offset in the interpolated string.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${` without a closing `}`.
    #[error("unterminated `${{` (missing `}}`)")]
    Unterminated {
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// `${...}` whose content is not `var.X`, `dep.R.K` or `kiln.X`.
    #[error("`${{{text}}}` is not a reference: use `${{var.NAME}}`, `${{dep.RULE.KEY}}` or `${{kiln.env}}`")]
    BadReference {
        /// Byte offset of the `${`.
        offset: usize,
        /// The text between the braces.
        text: String,
    },
    /// A variable that the environment does not define.
    #[error("variable `{name}` is not defined for environment `{env}`")]
    UndefinedVar {
        /// Byte offset of the `${`.
        offset: usize,
        /// The variable.
        name: String,
        /// The environment.
        env: String,
    },
    /// `${dep.R.K}` where `R` is not in the rule's `deps`.
    #[error("`{rule}` is not a dependency of this rule (add it to `deps`)")]
    NotADependency {
        /// Byte offset of the `${`.
        offset: usize,
        /// The referenced rule.
        rule: RuleName,
    },
    /// `${dep.R.K}` where `R` does not export `K`.
    #[error("dependency `{rule}` does not export `{key}` (it exports: {available})")]
    MissingExport {
        /// Byte offset of the `${`.
        offset: usize,
        /// The dependency.
        rule: RuleName,
        /// The key.
        key: String,
        /// What it does export.
        available: String,
    },
    /// An unknown `${kiln.X}`.
    #[error("`${{kiln.{name}}}` is unknown: use `${{kiln.env}}` or `${{kiln.project}}`")]
    UnknownKiln {
        /// Byte offset of the `${`.
        offset: usize,
        /// The name.
        name: String,
    },
    /// A table or array spliced into the middle of a string.
    #[error("`{reference}` is a table or array and cannot be spliced into text")]
    NotScalar {
        /// Byte offset of the `${`.
        offset: usize,
        /// The reference.
        reference: String,
    },
}

impl InterpolateError {
    /// Byte offset of the offending `${` in the string.
    pub fn offset(&self) -> usize {
        match self {
            Self::Unterminated { offset }
            | Self::BadReference { offset, .. }
            | Self::UndefinedVar { offset, .. }
            | Self::NotADependency { offset, .. }
            | Self::MissingExport { offset, .. }
            | Self::UnknownKiln { offset, .. }
            | Self::NotScalar { offset, .. } => *offset,
        }
    }
}

/// A piece of a parsed string.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(std::borrow::Cow<'a, str>),
    Ref(Reference, usize),
}

fn parse(s: &str) -> Result<Vec<Piece<'_>>, InterpolateError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    let mut base = 0;
    let mut text = String::new();
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            text.push_str(&rest[..pos - 1]);
            text.push_str("${");
            base += pos + 2;
            rest = &rest[pos + 2..];
            continue;
        }
        text.push_str(&rest[..pos]);
        let offset = base + pos;
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or(InterpolateError::Unterminated { offset })?;
        let inner = after[..end].trim();
        let reference = parse_reference(inner).ok_or_else(|| InterpolateError::BadReference {
            offset,
            text: inner.to_owned(),
        })?;
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text).into()));
        }
        pieces.push(Piece::Ref(reference, offset));
        base += pos + 2 + end + 1;
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text.into()));
    }
    Ok(pieces)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_reference(inner: &str) -> Option<Reference> {
    let (ns, rest) = inner.split_once('.')?;
    match ns {
        "var" if is_ident(rest) && !rest.contains('.') => Some(Reference::Var(rest.to_owned())),
        "kiln" if is_ident(rest) => Some(Reference::Kiln(rest.to_owned())),
        "dep" => {
            let (rule, key) = rest.rsplit_once('.')?;
            if !(is_ident(rule) && is_ident(key)) {
                return None;
            }
            Some(Reference::Dep {
                rule: RuleName::new(rule).ok()?,
                key: key.to_owned(),
            })
        }
        _ => None,
    }
}

/// Every reference in `s`, in order of appearance.
pub fn references(s: &str) -> Result<Vec<Reference>, InterpolateError> {
    Ok(parse(s)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r, _) => Some(r),
            Piece::Text(_) => None,
        })
        .collect())
}

/// What a reference resolves against.
#[derive(Debug, Default, Clone)]
pub struct Scope<'a> {
    /// The environment's name.
    pub env: &'a str,
    /// The project's name.
    pub project: &'a str,
    /// The environment's variables (defaults merged in).
    pub vars: Option<&'a BTreeMap<String, Value>>,
    /// The rule's declared dependencies, with their exports once built. A dependency that is
    /// declared but not built yet has `None`: its references are left as written.
    pub deps: BTreeMap<&'a str, Option<&'a Exports>>,
}

enum Resolved<'v> {
    Value(std::borrow::Cow<'v, Value>),
    Unresolved,
}

impl Scope<'_> {
    fn resolve(&self, r: &Reference, offset: usize) -> Result<Resolved<'_>, InterpolateError> {
        use std::borrow::Cow;
        match r {
            Reference::Var(name) => self
                .vars
                .and_then(|v| v.get(name))
                .map(|v| Resolved::Value(Cow::Borrowed(v)))
                .ok_or_else(|| InterpolateError::UndefinedVar {
                    offset,
                    name: name.clone(),
                    env: self.env.to_owned(),
                }),
            Reference::Kiln(name) => match name.as_str() {
                "env" => Ok(Resolved::Value(Cow::Owned(Value::from(self.env)))),
                "project" => Ok(Resolved::Value(Cow::Owned(Value::from(self.project)))),
                _ => Err(InterpolateError::UnknownKiln {
                    offset,
                    name: name.clone(),
                }),
            },
            Reference::Dep { rule, key } => match self.deps.get(rule.as_str()) {
                None => Err(InterpolateError::NotADependency {
                    offset,
                    rule: rule.clone(),
                }),
                Some(None) => Ok(Resolved::Unresolved),
                Some(Some(exports)) => exports
                    .get(key)
                    .map(|v| Resolved::Value(Cow::Owned(Value::from(v))))
                    .ok_or_else(|| InterpolateError::MissingExport {
                        offset,
                        rule: rule.clone(),
                        key: key.clone(),
                        available: if exports.is_empty() {
                            "nothing".to_owned()
                        } else {
                            exports.keys().collect::<Vec<_>>().join(", ")
                        },
                    }),
            },
        }
    }

    /// Checks one reference and returns its value: `None` for a dependency export that is
    /// declared but not built yet.
    pub fn lookup(&self, r: &Reference) -> Result<Option<Value>, InterpolateError> {
        Ok(match self.resolve(r, 0)? {
            Resolved::Value(v) => Some(v.into_owned()),
            Resolved::Unresolved => None,
        })
    }

    /// Interpolates a string. A string that is exactly one reference keeps the value's type.
    pub fn interpolate_str(&self, s: &str) -> Result<Value, InterpolateError> {
        if !s.contains("${") {
            return Ok(Value::String(s.to_owned()));
        }
        let pieces = parse(s)?;
        if let [Piece::Ref(r, offset)] = pieces.as_slice() {
            return Ok(match self.resolve(r, *offset)? {
                Resolved::Value(v) => v.into_owned(),
                Resolved::Unresolved => Value::String(s.to_owned()),
            });
        }
        Ok(Value::String(self.interpolate_text(s)?))
    }

    /// Interpolates text (a source file): every value is spliced in as text.
    pub fn interpolate_text(&self, s: &str) -> Result<String, InterpolateError> {
        if !s.contains("${") {
            return Ok(s.to_owned());
        }
        let mut out = String::with_capacity(s.len());
        for piece in parse(s)? {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Ref(r, offset) => match self.resolve(&r, offset)? {
                    Resolved::Value(v) => match v.as_ref() {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        Value::Null => {}
                        Value::Array(_) | Value::Object(_) => {
                            return Err(InterpolateError::NotScalar {
                                offset,
                                reference: r.to_string(),
                            })
                        }
                    },
                    Resolved::Unresolved => out.push_str(&r.to_string()),
                },
            }
        }
        Ok(out)
    }

    /// Interpolates every string (keys excluded) in a JSON value. Errors carry the path of the
    /// offending value in the form `a.b[2].c`.
    pub fn interpolate_value(&self, v: &Value) -> Result<Value, (String, InterpolateError)> {
        self.walk(v, &mut String::new())
    }

    fn walk(&self, v: &Value, path: &mut String) -> Result<Value, (String, InterpolateError)> {
        Ok(match v {
            Value::String(s) => self.interpolate_str(s).map_err(|e| (path.clone(), e))?,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(self.walk(item, path)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, item) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    out.insert(k.clone(), self.walk(item, path)?);
                    path.truncate(len);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

/// Whether any string in `v` contains `${` (so interpolation could change it).
pub fn has_references(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(has_references),
        Value::Object(map) => map.values().any(has_references),
        _ => false,
    }
}

/// Collects every reference in the strings of a JSON value.
pub fn value_references(v: &Value, out: &mut Vec<Reference>) -> Result<(), InterpolateError> {
    match v {
        Value::String(s) if s.contains("${") => out.extend(references(s)?),
        Value::Array(items) => {
            for i in items {
                value_references(i, out)?;
            }
        }
        Value::Object(map) => {
            for i in map.values() {
                value_references(i, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, Value> {
        let mut v = BTreeMap::new();
        v.insert("tag".into(), json!("1.2.3"));
        v.insert("replicas".into(), json!(3));
        v
    }

    #[test]
    fn whole_reference_keeps_type() {
        let vars = vars();
        let scope = Scope {
            env: "prod",
            project: "p",
            vars: Some(&vars),
            ..Default::default()
        };
        assert_eq!(scope.interpolate_str("${var.replicas}").unwrap(), json!(3));
        assert_eq!(
            scope.interpolate_str("x${var.replicas}").unwrap(),
            json!("x3")
        );
        assert_eq!(
            scope.interpolate_str("img:${var.tag}-${kiln.env}").unwrap(),
            json!("img:1.2.3-prod")
        );
        assert_eq!(
            scope.interpolate_str("$${var.tag}").unwrap(),
            json!("${var.tag}")
        );
    }

    #[test]
    fn dependency_exports() {
        let ex = Exports::from([("name".to_owned(), "cfg-abc".to_owned())]);
        let mut scope = Scope::default();
        scope.deps.insert("cfg", Some(&ex));
        scope.deps.insert("later", None);
        assert_eq!(
            scope.interpolate_str("${dep.cfg.name}").unwrap(),
            json!("cfg-abc")
        );
        assert_eq!(
            scope.interpolate_str("${dep.later.name}").unwrap(),
            json!("${dep.later.name}")
        );
        assert!(matches!(
            scope.interpolate_str("${dep.other.name}"),
            Err(InterpolateError::NotADependency { .. })
        ));
        assert!(matches!(
            scope.interpolate_str("${dep.cfg.nope}"),
            Err(InterpolateError::MissingExport { .. })
        ));
    }

    #[test]
    fn errors_carry_offsets_and_paths() {
        let vars = vars();
        let scope = Scope {
            env: "prod",
            vars: Some(&vars),
            ..Default::default()
        };
        let e = scope.interpolate_str("abc ${var.nope}").unwrap_err();
        assert_eq!(e.offset(), 4);
        assert!(matches!(
            scope.interpolate_str("a ${var.x"),
            Err(InterpolateError::Unterminated { offset: 2 })
        ));
        assert!(matches!(
            scope.interpolate_str("${env.x}"),
            Err(InterpolateError::BadReference { .. })
        ));
        let (path, _) = scope
            .interpolate_value(&json!({"a": [1, {"b": "${var.missing}"}]}))
            .unwrap_err();
        assert_eq!(path, "a[1].b");
    }

    #[test]
    fn collects_references() {
        let refs = references("${var.a} and ${dep.r-1.name} ${kiln.env}").unwrap();
        assert_eq!(
            refs,
            vec![
                Reference::Var("a".into()),
                Reference::Dep {
                    rule: RuleName::new("r-1").unwrap(),
                    key: "name".into()
                },
                Reference::Kiln("env".into())
            ]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn ident() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9_]{0,6}"
        }

        fn reference() -> impl Strategy<Value = Reference> {
            prop_oneof![
                ident().prop_map(Reference::Var),
                ident().prop_map(Reference::Kiln),
                (ident(), ident()).prop_map(|(r, k)| Reference::Dep {
                    rule: RuleName::new(r).unwrap(),
                    key: k
                }),
            ]
        }

        proptest! {
            /// A reference printed into text is found again, the same, between any text
            /// without `$`.
            #[test]
            fn references_round_trip(refs in proptest::collection::vec(reference(), 0..5), gap in "[^$]{0,8}") {
                let text: String = refs.iter().map(|r| format!("{gap}{r}")).collect();
                prop_assert_eq!(references(&text).unwrap(), refs);
            }

            /// Text without `${` interpolates to itself.
            #[test]
            fn plain_text_is_unchanged(text in "[^$]{0,40}") {
                let scope = Scope { env: "e", project: "p", vars: None, deps: Default::default() };
                prop_assert_eq!(scope.interpolate_text(&text).unwrap(), text);
            }
        }
    }
}
