//! `template`: text files rendered by minijinja (Jinja2 syntax).
//!
//! ```toml
//! [rule.prometheus-config]
//! kind = "template"
//! srcs = ["templates/prometheus.yml.j2"]
//! strip_prefix = "templates"          # output path = source path without this directory...
//! # ...and without a `.j2` suffix: the artifact holds `prometheus.yml`
//! values = { scrape_interval = "15s" }
//! ```
//!
//! The context is `var` (the environment's variables), `dep` (each dependency's exports, as
//! `dep["api-config"].name`), `kiln.env`, `kiln.project` and `values`. Undefined names are errors.
//! Only the variables a template names (`var.NAME`) are passed in and enter the derivation, so a
//! change to another variable does not rebuild it.

use std::collections::BTreeMap;

use kiln_core::interpolate::Reference;
use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind, LoadedSource};
use kiln_core::{RelPath, Tree};
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(default)]
    values: BTreeMap<String, Value>,
    #[serde(default)]
    strip_prefix: Option<String>,
    #[serde(default = "j2")]
    strip_suffix: String,
}

fn j2() -> String {
    ".j2".to_owned()
}

/// The `template` kind.
pub struct Template;

/// The keys of `kiln` in a template's context.
const KILN_KEYS: &[&str] = &["env", "project"];

/// The byte offset of `word` standing alone (not inside a longer name) in `text`.
fn whole_word(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        !text[..i].chars().next_back().is_some_and(ident)
            && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

fn line_offset(text: &str, line: Option<usize>) -> Option<usize> {
    let line = line?;
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return Some(offset);
        }
        offset += l.len();
    }
    Some(offset)
}

fn template_error(src: &LoadedSource, text: &str, e: &minijinja::Error) -> BuildError {
    let mut msg = format!("template error: {}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    BuildError::source(&src.path, line_offset(text, e.line()), msg)
}

impl Kind for Template {
    fn name(&self) -> &'static str {
        "template"
    }

    fn version(&self) -> u32 {
        // 2: the context holds only the names the template reads (`kiln` included).
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        if let Some(p) = &a.strip_prefix {
            RelPath::new(p.trim_end_matches('/'))
                .map_err(|e| AttrError::new("strip_prefix", e.to_string()))?;
        }
        Ok(())
    }

    fn source_references(
        &self,
        _attrs: &Value,
        src: &LoadedSource,
    ) -> Result<Vec<Reference>, BuildError> {
        let text = src.text()?;
        let env = environment();
        let tmpl = env
            .template_from_str(text)
            .map_err(|e| template_error(src, text, &e))?;
        // `undeclared_variables(true)` names attribute paths (`kiln.env`) where the template
        // spells them statically, and only the top-level name where it does not (`kiln["env"]`,
        // `{% set k = kiln %}`). A top-level name alone could reach any key: for `kiln` all of
        // its keys enter the derivation; for `var`, which holds every variable, it is refused.
        let mut refs = Vec::new();
        let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
        names.sort();
        for name in names {
            let mut parts = name.splitn(3, '.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("var"), Some(v), _) => refs.push(Reference::Var(v.to_owned())),
                (Some("kiln"), Some(k), _) => refs.push(Reference::Kiln(k.to_owned())),
                (Some("kiln"), None, _) => {
                    refs.extend(KILN_KEYS.iter().map(|k| Reference::Kiln((*k).to_owned())));
                }
                (Some("var"), None, _) => {
                    return Err(BuildError::source(
                        &src.path,
                        whole_word(text, "var"),
                        "templates must name each variable as `var.NAME` (not `var[...]` or `var` alone), so exactly those enter the derivation",
                    ))
                }
                _ => {}
            }
        }
        refs.sort_by_key(ToString::to_string);
        refs.dedup();
        Ok(refs)
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        let env = environment();
        let mut tree = Tree::new();
        for src in cx.srcs {
            let text = src.text()?;
            let tmpl = env
                .template_from_str(text)
                .map_err(|e| template_error(src, text, &e))?;
            // Only what this template names is visible, so the derivation covers all it reads.
            let mut vars = serde_json::Map::new();
            let mut kiln = serde_json::Map::new();
            for r in self.source_references(cx.attrs, src)? {
                match r {
                    Reference::Var(name) => {
                        let v = cx
                            .scope
                            .interpolate_str(&format!("${{var.{name}}}"))
                            .map_err(|e| BuildError::source(&src.path, None, e.to_string()))?;
                        vars.insert(name, v);
                    }
                    Reference::Kiln(key) => {
                        let v = match key.as_str() {
                            "env" => cx.scope.env,
                            "project" => cx.scope.project,
                            _ => continue,
                        };
                        kiln.insert(key, Value::from(v));
                    }
                    Reference::Dep { .. } => {}
                }
            }
            let deps: serde_json::Map<String, Value> = cx
                .scope
                .deps
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.cloned().unwrap_or_default())))
                .collect();
            let ctx = json!({
                "var": vars,
                "dep": deps,
                "kiln": kiln,
                "values": a.values,
            });
            let mut out = tmpl
                .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
                .map_err(|e| template_error(src, text, &e))?;
            if text.ends_with('\n') && !out.ends_with('\n') {
                out.push('\n');
            }
            let mut path = src.path.as_str();
            if let Some(prefix) = &a.strip_prefix {
                path = src
                    .path
                    .strip_dir(prefix.trim_end_matches('/'))
                    .map_or(path, |_| &path[prefix.trim_end_matches('/').len() + 1..]);
            }
            let path = path.strip_suffix(a.strip_suffix.as_str()).unwrap_or(path);
            let rel = RelPath::new(path)
                .map_err(|e| BuildError::source(&src.path, None, e.to_string()))?;
            tree.insert_file(rel, out.into_bytes(), src.executable);
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Result<Vec<String>, BuildError> {
        let src = LoadedSource {
            path: RelPath::new("t.j2").unwrap(),
            content: kiln_core::Bytes::copy_from_slice(text.as_bytes()),
            executable: false,
        };
        Ok(Template
            .source_references(&Value::Null, &src)?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn every_way_to_reach_kiln_enters_the_derivation() {
        assert_eq!(refs("{{ kiln.env }}").unwrap(), ["${kiln.env}"]);
        for text in [
            "{{ kiln[\"env\"] }}",
            "{% set k = kiln %}{{ k.env }}",
            "{{ kiln }}",
            "{% for k, v in kiln|items %}{{ v }}{% endfor %}",
        ] {
            assert_eq!(
                refs(text).unwrap(),
                ["${kiln.env}", "${kiln.project}"],
                "{text}"
            );
        }
    }

    #[test]
    fn variables_must_be_named_and_the_refusal_is_located() {
        assert_eq!(
            refs("{{ var.ns }} {{ var.tag }}").unwrap(),
            ["${var.ns}", "${var.tag}"]
        );
        for text in [
            "a: 1\nb: {{ var[\"ns\"] }}\n",
            "{% set v = var %}{{ v.ns }}",
        ] {
            match refs(text) {
                Err(BuildError::Source { offset, .. }) => {
                    assert_eq!(offset, Some(text.find("var").unwrap()), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_and_variables_are_not_mistaken_for_var() {
        assert_eq!(
            refs("{{ values.variant }} {{ var.x }}").unwrap(),
            ["${var.x}"]
        );
    }
}
