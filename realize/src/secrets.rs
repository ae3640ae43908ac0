//! Resolving a `secret` artifact's references into values: only here, only in memory, only
//! when realizing. Values are never logged, printed or written anywhere but the API server.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_rules::secret::{SecretRef, SECRET_REFS_ANNOTATION};
use serde_json::Value;

/// A reference that could not be resolved. The message names the reference, never a value.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("secret `{secret}`, key `{key}`: {message}")]
pub struct SecretError {
    /// The Secret.
    pub secret: String,
    /// The data key.
    pub key: String,
    /// What went wrong.
    pub message: String,
}

fn resolve_one(r: &SecretRef) -> Result<Vec<u8>, String> {
    match r {
        SecretRef::Env(var) => std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| format!("environment variable `{var}` is not set")),
        SecretRef::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))
        }
        SecretRef::Command(argv) if argv.is_empty() || argv[0].is_empty() => {
            Err("an empty `command` reference names no program".to_owned())
        }
        SecretRef::Command(argv) => {
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))?;
            if !out.status.success() {
                return Err(format!("`{}` exited with {}", argv.join(" "), out.status));
            }
            let mut v = out.stdout;
            if v.last() == Some(&b'\n') {
                v.pop();
            }
            Ok(v)
        }
    }
}

/// The references annotation of `obj`, if it has one.
pub fn references_of(obj: &Value) -> Option<&str> {
    obj.pointer(&format!(
        "/metadata/annotations/{}",
        SECRET_REFS_ANNOTATION.replace('/', "~1")
    ))
    .and_then(Value::as_str)
}

/// Fills `data` of a kiln Secret from its references. Other objects are left as they are.
/// Every reference is tried: all that fail are reported together.
pub fn resolve(obj: &mut Value) -> Result<(), Vec<SecretError>> {
    let Some(refs) = references_of(obj).map(str::to_owned) else {
        return Ok(());
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let refs: BTreeMap<String, SecretRef> = serde_json::from_str(&refs).map_err(|e| {
        vec![SecretError {
            secret: name.clone(),
            key: "*".into(),
            message: format!("unreadable references: {e}"),
        }]
    })?;
    let mut data = serde_json::Map::new();
    let mut errors = Vec::new();
    for (key, r) in refs {
        match resolve_one(&r) {
            Ok(value) => {
                data.insert(
                    key,
                    Value::from(base64::engine::general_purpose::STANDARD.encode(value)),
                );
            }
            Err(message) => errors.push(SecretError {
                secret: name.clone(),
                key,
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    obj["data"] = Value::Object(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_env_file_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, "from-file").unwrap();
        std::env::set_var("KILN_SECRETS_TEST", "from-env");
        let refs = format!(
            r#"{{"a":{{"env":"KILN_SECRETS_TEST"}},"b":{{"file":"{}"}},"c":{{"command":["echo","from-cmd"]}}}}"#,
            f.display()
        );
        let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {SECRET_REFS_ANNOTATION: refs}}});
        resolve(&mut obj).unwrap();
        let dec = |k: &str| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(obj["data"][k].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            (dec("a"), dec("b"), dec("c")),
            ("from-env".into(), "from-file".into(), "from-cmd".into())
        );
    }

    #[test]
    fn a_missing_variable_names_the_reference_not_a_value() {
        let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {SECRET_REFS_ANNOTATION: r#"{"pw":{"env":"KILN_SECRETS_TEST_MISSING"}}"#}}});
        let e = resolve(&mut obj).unwrap_err()[0].to_string();
        assert_eq!(
            e,
            "secret `s`, key `pw`: environment variable `KILN_SECRETS_TEST_MISSING` is not set"
        );
    }

    #[test]
    fn every_failing_reference_is_reported_and_an_empty_command_refused() {
        let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {SECRET_REFS_ANNOTATION: r#"{"a":{"env":"KILN_SECRETS_TEST_NONE_A"},"b":{"env":"KILN_SECRETS_TEST_NONE_B"},"c":{"command":[]}}"#}}});
        let errors = resolve(&mut obj).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[2].to_string().contains("empty `command`"));
    }
}
