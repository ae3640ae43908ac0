//! `[rule.NAME]` tables: parsed into [`Rule`]s, located, merged across files.

use std::collections::BTreeMap;
use std::ops::Range;

use rayon::prelude::*;

use serde_json::Value;
use toml::de::DeValue;
use toml::Spanned;

use super::chunks;
use super::values::{
    expect_str, expect_str_list, expect_table, parse_toml, parse_toml_at, to_json, type_error,
};
use super::{Loader, Result, WithHint};
use crate::attrs::Attrs;
use crate::diagnostic::{FileId, Location};
use crate::name::{EnvName, RuleName};
use crate::project::{Located, Rule};

pub(super) fn parse_rule_file(loader: &Loader, id: FileId) -> Result<Vec<Rule>> {
    let text = loader.files[id].text.clone();
    let split = loader
        .split_rule_tables
        .then(|| chunks::split(&text))
        .flatten();
    let doc = parse_toml(loader, id, split.as_ref().map_or(&text[..], |s| &s.rest))?;
    let mut out = Vec::new();
    for (key, value) in doc.get_ref() {
        if key.get_ref().as_ref() != "rule" {
            return Err(loader
                .diag(
                    id,
                    key.span(),
                    None,
                    format!("unknown key `{}` in an included file", key.get_ref()),
                )
                .with_hint("included files hold only [rule.NAME] tables"));
        }
        let t = expect_table(loader, id, value, None, "[rule]")?;
        for (rk, rv) in t {
            out.push(parse_rule(loader, id, rk, rv)?);
        }
    }
    if let Some(split) = &split {
        for rule in parse_rule_tables(loader, id, &text, &split.rules) {
            out.push(rule?);
        }
    }
    Ok(out)
}

/// The `[rule.NAME]` tables at `ranges` of a file ([`chunks::split`]), each parsed on its own
/// (in parallel) and dropped once it is a [`Rule`]; in file order.
pub(super) fn parse_rule_tables(
    loader: &Loader,
    file: FileId,
    text: &str,
    ranges: &[Range<usize>],
) -> Vec<Result<Rule>> {
    ranges
        .par_iter()
        .map(|range| {
            let doc = parse_toml_at(loader, file, &text[range.clone()], range.start)?;
            let doc = chunks::shifted(doc.into_inner(), range.start);
            let (_, rules) = doc.iter().next().expect("a [rule.NAME] table");
            let t = expect_table(loader, file, rules, None, "[rule]")?;
            let (rk, rv) = t.iter().next().expect("a [rule.NAME] table");
            parse_rule(loader, file, rk, rv)
        })
        .collect()
}

pub(super) fn add_rules(
    loader: &Loader,
    file: FileId,
    value: &Spanned<DeValue<'_>>,
    rules: &mut BTreeMap<RuleName, Rule>,
) -> Result<()> {
    let t = expect_table(loader, file, value, None, "[rule]")?;
    for (rk, rv) in t {
        insert_rule(loader, rules, parse_rule(loader, file, rk, rv)?)?;
    }
    Ok(())
}

pub(super) fn insert_rule(
    loader: &Loader,
    rules: &mut BTreeMap<RuleName, Rule>,
    rule: Rule,
) -> Result<()> {
    if let Some(prev) = rules.get(&rule.name) {
        let (pl, _) = loader.files[prev.loc.file].line_col(prev.loc.span.start);
        return Err(loader.diag(
            rule.loc.file,
            rule.loc.span.clone(),
            Some(rule.name.as_str()),
            format!(
                "rule `{}` is defined twice (first at {}:{pl})",
                rule.name, loader.files[prev.loc.file].display
            ),
        ));
    }
    rules.insert(rule.name.clone(), rule);
    Ok(())
}

pub(super) fn parse_rule(
    loader: &Loader,
    file: FileId,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> Result<Rule> {
    let raw_name = key.get_ref().as_ref();
    let name = RuleName::new(raw_name)
        .map_err(|e| loader.diag(file, key.span(), Some(raw_name), e.to_string()))?;
    let rn = Some(name.as_str());
    let table = expect_table(loader, file, value, rn, "a rule")?;
    let mut kind = None;
    let mut srcs = Vec::new();
    let mut deps = Vec::new();
    let mut envs = None;
    let mut realize = true;
    let mut nondeterministic = false;
    let mut attrs = serde_json::Map::new();
    for (k, v) in table {
        let ks = k.get_ref().as_ref();
        match ks {
            "kind" => {
                kind = Some(Located {
                    value: expect_str(loader, file, v, rn, "kind")?,
                    loc: Location {
                        file,
                        span: v.span(),
                    },
                })
            }
            "srcs" => srcs = expect_str_list(loader, file, v, rn, "srcs")?,
            "deps" => {
                for d in expect_str_list(loader, file, v, rn, "deps")? {
                    let dep = RuleName::new(&d.value)
                        .map_err(|e| loader.diag(file, d.loc.span.clone(), rn, e.to_string()))?;
                    deps.push(Located {
                        value: dep,
                        loc: d.loc,
                    });
                }
            }
            "envs" => {
                let mut list = Vec::new();
                for e in expect_str_list(loader, file, v, rn, "envs")? {
                    list.push(EnvName::new(&e.value).map_err(|err| {
                        loader.diag(file, e.loc.span.clone(), rn, err.to_string())
                    })?);
                }
                if list.is_empty() {
                    return Err(loader
                        .diag(
                            file,
                            v.span(),
                            rn,
                            "`envs = []` puts the rule in no environment",
                        )
                        .with_hint("remove `envs` to keep the rule in every environment, or name the environments"));
                }
                envs = Some(list);
            }
            "realize" => {
                realize = v
                    .get_ref()
                    .as_bool()
                    .ok_or_else(|| type_error(loader, file, v, rn, "realize", "a boolean"))?;
            }
            "nondeterministic" => {
                nondeterministic = v.get_ref().as_bool().ok_or_else(|| {
                    type_error(loader, file, v, rn, "nondeterministic", "a boolean")
                })?;
            }
            "description" => {
                expect_str(loader, file, v, rn, "description")?;
            }
            _ => {
                let json = to_json(loader, file, v, rn)?;
                attrs.insert(ks.to_owned(), json);
            }
        }
    }
    let kind = kind.ok_or_else(|| {
        loader
            .diag(file, key.span(), rn, "missing `kind`")
            .with_hint("every rule needs `kind = \"...\"`, for example `kind = \"manifest\"`")
    })?;
    Ok(Rule {
        name,
        kind,
        attrs: Attrs::from_value(&Value::Object(attrs)),
        srcs,
        deps,
        envs,
        realize,
        nondeterministic,
        loc: Location {
            file,
            span: key.span(),
        },
    })
}
