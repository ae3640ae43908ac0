//! `--var NAME=VALUE`: the value is typed by the variable's default, so a number stays a
//! number and a string stays a string (`--var tag=1.10` is the string `1.10`, not the float
//! `1.1`), and a value of the wrong type is refused at the variable's definition
//! (file:line), not rendered into `replicas: abc`.

use std::ops::Range;

use kiln_core::diagnostic::{Diagnostic, Location};
use kiln_core::project::Project;
use kiln_core::EnvName;
use serde_json::Value;
use toml::de::DeTable;

/// What a variable's default says its overrides must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarType {
    String,
    Integer,
    Number,
    Bool,
    Array,
    Table,
}

impl VarType {
    fn of(v: &Value) -> Option<Self> {
        Some(match v {
            Value::String(_) => Self::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::Bool(_) => Self::Bool,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Table,
            Value::Null => return None,
        })
    }

    fn article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Bool => "a boolean (true or false)",
            Self::Array => "an array",
            Self::Table => "a table",
        }
    }
}

/// `given` read as the type of `default`: a raw string from the command line is parsed as TOML
/// when the default is not a string; a value that already has a type (from a saved plan, the
/// config file) must have the default's. `Err` says what the value should have been.
pub fn typed(given: &Value, default: &Value) -> Result<Value, &'static str> {
    let Some(want) = VarType::of(default) else {
        return Ok(given.clone());
    };
    let value = match (want, given) {
        (VarType::String, Value::String(raw)) => {
            // `--var ns="a b"`: a quoted TOML string; anything else is taken as written.
            match parse_toml(raw) {
                Some(Value::String(s)) if raw.trim_start().starts_with(['"', '\'']) => {
                    Value::String(s)
                }
                _ => given.clone(),
            }
        }
        (_, Value::String(raw)) => parse_toml(raw).ok_or(want.article())?,
        _ => given.clone(),
    };
    match (want, VarType::of(&value)) {
        (w, Some(g)) if w == g => Ok(value),
        (VarType::Number, Some(VarType::Integer)) => Ok(value),
        _ => Err(want.article()),
    }
}

fn parse_toml(raw: &str) -> Option<Value> {
    let mut t = toml::from_str::<toml::Table>(&format!("v = {raw}")).ok()?;
    serde_json::to_value(t.remove("v")?).ok()
}

/// The refusal of `--var NAME=VALUE` whose value is not of the variable's type, located where
/// the variable is defined (the environment's table, else `[vars]`).
pub fn wrong_type(
    project: &Project,
    env: Option<&EnvName>,
    name: &str,
    given: &Value,
    want: &str,
) -> Diagnostic {
    let shown = match given {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let message =
        format!("`--var {name}={shown}`: variable `{name}` is {want}, and `{shown}` is not");
    let main = &project.files[0];
    let span = find_var_span(&main.text, env.map(EnvName::as_str), name).unwrap_or(0..0);
    project
        .diagnostic(&Location { file: 0, span }, None, message)
        .with_hint(format!(
            "its default here decides the type: pass {want} (`--var {name}=...`)"
        ))
}

/// The span of variable `name` in kiln.toml `text`: in `[env.ENV]` when it is set there,
/// else in `[vars]`.
fn find_var_span(text: &str, env: Option<&str>, name: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let root = doc.get_ref();
    let in_env = env.and_then(|e| {
        let envs = root.get("env")?.get_ref().as_table()?;
        let table = envs.get(e)?.get_ref().as_table()?;
        table.get_key_value(name).map(|(k, _)| k.span())
    });
    in_env.or_else(|| {
        let vars = root.get("vars")?.get_ref().as_table()?;
        vars.get_key_value(name).map(|(k, _)| k.span())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(s: &str) -> Value {
        Value::from(s)
    }

    #[test]
    fn a_value_takes_the_type_of_the_default() {
        assert_eq!(typed(&raw("3"), &json!(2)), Ok(json!(3)));
        assert_eq!(typed(&raw("2.5"), &json!(1.0)), Ok(json!(2.5)));
        assert_eq!(typed(&raw("3"), &json!(1.0)), Ok(json!(3)));
        assert_eq!(typed(&raw("true"), &json!(false)), Ok(json!(true)));
        assert_eq!(typed(&raw("[1, 2]"), &json!([])), Ok(json!([1, 2])));
        assert_eq!(typed(&raw("{ a = 1 }"), &json!({})), Ok(json!({"a": 1})));
        // A string stays the string written, even when it reads as a number.
        assert_eq!(typed(&raw("1.10"), &json!("1.0.0")), Ok(json!("1.10")));
        assert_eq!(typed(&raw("pr-123"), &json!("shop")), Ok(json!("pr-123")));
        assert_eq!(typed(&raw("\"a b\""), &json!("x")), Ok(json!("a b")));
        assert_eq!(typed(&raw(""), &json!("x")), Ok(json!("")));
        // Already typed (a saved plan's overrides).
        assert_eq!(typed(&json!(4), &json!(2)), Ok(json!(4)));
    }

    #[test]
    fn a_value_of_another_type_is_refused() {
        assert_eq!(typed(&raw("abc"), &json!(2)), Err("an integer"));
        assert_eq!(typed(&raw("2.5"), &json!(2)), Err("an integer"));
        assert_eq!(
            typed(&raw("yes"), &json!(true)),
            Err("a boolean (true or false)")
        );
        assert_eq!(typed(&raw("3"), &json!([])), Err("an array"));
        assert_eq!(typed(&json!(3), &json!("x")), Err("a string"));
    }

    #[test]
    fn a_variable_is_found_in_its_environment_else_in_vars() {
        let text = "[vars]\nreplicas = 1\ntag = \"a\"\n\n[env.production]\nreplicas = 3\n";
        let at = |r: Range<usize>| &text[r];
        let span = find_var_span(text, Some("production"), "replicas").unwrap();
        assert_eq!(at(span.clone()), "replicas");
        assert!(span.start > text.find("[env").unwrap());
        let span = find_var_span(text, Some("production"), "tag").unwrap();
        assert_eq!(at(span), "tag");
        let span = find_var_span(text, None, "replicas").unwrap();
        assert!(span.start < text.find("[env").unwrap());
        assert_eq!(find_var_span(text, None, "nope"), None);
    }
}
