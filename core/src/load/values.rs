//! TOML values: parsing a file, typed accessors with located errors, conversion to JSON.

use std::collections::BTreeMap;

use serde_json::Value;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{LoadError, Loader, Result};
use crate::diagnostic::{FileId, Location};
use crate::project::Located;

pub(super) fn parse_toml<'t>(
    loader: &Loader,
    file: FileId,
    text: &'t str,
) -> Result<Spanned<DeTable<'t>>> {
    parse_toml_at(loader, file, text, 0)
}

/// [`parse_toml`] of a part of the file that starts at `offset` (errors point into the file).
pub(super) fn parse_toml_at<'t>(
    loader: &Loader,
    file: FileId,
    text: &'t str,
    offset: usize,
) -> Result<Spanned<DeTable<'t>>> {
    DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        loader.diag(
            file,
            span.start + offset..span.end + offset,
            None,
            format!("invalid TOML: {}", e.message().trim_end()),
        )
    })
}

pub(super) fn vars_table(
    loader: &Loader,
    file: FileId,
    t: &DeTable<'_>,
) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (k, v) in t {
        out.insert(k.get_ref().to_string(), to_json(loader, file, v, None)?);
    }
    Ok(out)
}

pub(super) fn type_error(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
    expected: &str,
) -> LoadError {
    loader.diag(
        file,
        v.span(),
        rule,
        format!(
            "`{what}` must be {expected}, found {}",
            v.get_ref().type_str()
        ),
    )
}

pub(super) fn expect_table<'a, 't>(
    loader: &Loader,
    file: FileId,
    v: &'a Spanned<DeValue<'t>>,
    rule: Option<&str>,
    what: &str,
) -> Result<&'a DeTable<'t>> {
    v.get_ref()
        .as_table()
        .ok_or_else(|| type_error(loader, file, v, rule, what, "a table"))
}

pub(super) fn expect_str(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
) -> Result<String> {
    v.get_ref()
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_error(loader, file, v, rule, what, "a string"))
}

pub(super) fn expect_str_list(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
) -> Result<Vec<Located<String>>> {
    let arr = v
        .get_ref()
        .as_array()
        .ok_or_else(|| type_error(loader, file, v, rule, what, "an array of strings"))?;
    arr.iter()
        .map(|item| {
            Ok(Located {
                value: expect_str(loader, file, item, rule, what)?,
                loc: Location {
                    file,
                    span: item.span(),
                },
            })
        })
        .collect()
}

/// Converts a TOML value to JSON.
pub(super) fn to_json(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
) -> Result<Value> {
    Ok(match v.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| loader.diag(file, v.span(), rule, "integer out of range"))?;
            Value::from(n)
        }
        DeValue::Float(f) => {
            let x: f64 = f
                .as_str()
                .replace('_', "")
                .parse()
                .map_err(|_| loader.diag(file, v.span(), rule, "invalid float"))?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| {
                    loader.diag(
                        file,
                        v.span(),
                        rule,
                        "`inf` and `nan` are not allowed in attributes",
                    )
                })?
        }
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_json(loader, file, item, rule)?);
            }
            Value::Array(out)
        }
        DeValue::Table(t) => {
            let mut out = serde_json::Map::new();
            for (k, item) in t {
                out.insert(k.get_ref().to_string(), to_json(loader, file, item, rule)?);
            }
            Value::Object(out)
        }
    })
}
