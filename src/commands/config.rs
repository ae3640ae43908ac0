//! `kiln config show`: every setting in effect, and where it came from.

use kiln_cache::config::{config_file, Layer};
use serde_json::{json, Value};

use crate::cli::ConfigShowArgs;
use crate::commands::Failure;
use crate::printer::Printer;
use crate::settings::{cluster_settings, project_name, Effective, Source, UserConfig};

/// What the defaults are, for settings whose default is not one value.
fn default_meaning(name: &str) -> &'static str {
    match name {
        "jobs" => "one per CPU",
        "kubeconfig" => "~/.kube/config, else in-cluster",
        "context" => "the kubeconfig's current context",
        "request_timeout" => "none",
        "substituters" | "trusted_keys" => "none",
        "signing_key" | "token_file" => "none",
        "push" => "false",
        "timeout_secs" => "10",
        _ => "",
    }
}

/// The remote cache settings with their sources (the environment over the file).
fn cache_settings() -> Result<Vec<Effective>, Failure> {
    let env = Layer::from_env(|k| std::env::var(k).ok())?;
    let path = config_file();
    let file = match &path {
        Some(p) => Layer::from_file(p)?,
        None => Layer::default(),
    };
    let list = |v: &Option<Vec<String>>| v.as_ref().map(|l| l.join(", "));
    let path_of = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let entries: [(&'static str, &'static str, Option<String>, Option<String>); 6] = [
        (
            "substituters",
            "KILN_CACHE",
            list(&env.substituters),
            list(&file.substituters),
        ),
        (
            "trusted_keys",
            "KILN_TRUSTED_KEYS",
            list(&env.trusted_keys),
            list(&file.trusted_keys),
        ),
        (
            "push",
            "KILN_CACHE_PUSH",
            env.push.map(|b| b.to_string()),
            file.push.map(|b| b.to_string()),
        ),
        (
            "signing_key",
            "KILN_SIGNING_KEY",
            path_of(&env.signing_key),
            path_of(&file.signing_key),
        ),
        (
            "token_file",
            "KILN_CACHE_TOKEN_FILE",
            path_of(&env.token_file),
            path_of(&file.token_file),
        ),
        (
            "timeout_secs",
            "KILN_CACHE_TIMEOUT",
            env.timeout_secs.map(|t| t.to_string()),
            file.timeout_secs.map(|t| t.to_string()),
        ),
    ];
    Ok(entries
        .into_iter()
        .map(
            |(name, var, from_env, from_file)| match (from_env, from_file) {
                (Some(v), _) => Effective {
                    name,
                    value: Some(v),
                    source: Source::Env(var),
                },
                (None, Some(v)) => Effective {
                    name,
                    value: Some(v),
                    source: Source::File {
                        path: path.clone().unwrap_or_default(),
                        key: name.to_owned(),
                    },
                },
                (None, None) => Effective {
                    name,
                    value: None,
                    source: Source::Default,
                },
            },
        )
        .collect())
}

fn source_json(s: &Source) -> Value {
    match s {
        Source::Flag(f) => json!({"kind": "flag", "flag": f}),
        Source::Env(v) => json!({"kind": "environment", "variable": v}),
        Source::File { path, key } => json!({"kind": "file", "path": path, "key": key}),
        Source::Default => json!({"kind": "default"}),
    }
}

/// Prints the settings a build, plan or apply of `args.dir` in `args.env` would use.
pub fn show(
    args: &ConfigShowArgs,
    printer: &Printer,
    config: &UserConfig,
    global: &[Effective],
) -> Result<u8, Failure> {
    let mut settings: Vec<Effective> = global.to_vec();
    let jobs = config.jobs();
    settings.push(match jobs {
        Some((j, source)) => Effective {
            name: "jobs",
            value: Some(j.to_string()),
            source,
        },
        None => Effective {
            name: "jobs",
            value: None,
            source: Source::Default,
        },
    });
    let project = project_name(&args.dir);
    settings.extend(cluster_settings(
        config,
        project.as_deref(),
        args.env.as_deref(),
        None,
        None,
    ));
    settings.push(match config.request_timeout() {
        Some((t, source)) => Effective {
            name: "request_timeout",
            value: Some(format!("{t}s")),
            source,
        },
        None => Effective {
            name: "request_timeout",
            value: None,
            source: Source::Default,
        },
    });
    settings.extend(cache_settings()?);

    if args.json {
        printer.json(&json!({
            "format_version": 1,
            "config_file": config_file(),
            "project": project,
            "env": args.env,
            "settings": settings.iter().map(|s| json!({
                "name": s.name,
                "value": s.value,
                "source": source_json(&s.source),
            })).collect::<Vec<_>>(),
        }));
        return Ok(0);
    }
    let width = settings.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    if let Some(p) = config_file() {
        text.push_str(&format!("# config file: {}\n", p.display()));
    }
    for s in &settings {
        let value = match &s.value {
            Some(v) => v.clone(),
            None => format!("({})", default_meaning(s.name)),
        };
        text.push_str(&format!("{:width$}  {value}  [{}]\n", s.name, s.source));
    }
    printer.data(&text);
    Ok(0)
}
