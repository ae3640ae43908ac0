//! The user's defaults and where each effective setting comes from.
//!
//! The config file (`$XDG_CONFIG_HOME/kiln/config.toml`, else `~/.config/kiln/config.toml`)
//! holds the remote cache settings at its top level (see `kiln_cache::config`) and two tables
//! of its own:
//!
//! ```toml
//! [defaults]
//! store = "/var/cache/kiln/store"
//! jobs = 4
//! color = "never"
//! kubeconfig = "/home/me/.kube/config"
//! context = "kind-dev"
//! request_timeout = 30
//!
//! [[clusters]]              # the first that matches wins
//! project = "odordiff-2"    # the project's `name` in kiln.toml (absent: any)
//! env = "production"        # (absent: any)
//! kubeconfig = "/home/me/.kube/prod"
//! context = "prod-eu-1"
//! ```
//!
//! Every setting is taken from the first of: the command line, the environment
//! (`KILN_STORE`, `KUBECONFIG`, `NO_COLOR`, the cache's `KILN_CACHE*`), the file (a matching
//! `[[clusters]]` entry before `[defaults]`), the built-in default.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::cli::{ColorChoice, Command};
use crate::commands::Failure;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File { path: PathBuf, key: String },
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::File { path, key } => write!(f, "file {} ({key})", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting as it is in effect.
#[derive(Debug, Clone)]
pub struct Effective {
    pub name: &'static str,
    /// `None`: unset (the consumer's own default applies, described in `note`).
    pub value: Option<String>,
    pub source: Source,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    store: Option<PathBuf>,
    jobs: Option<usize>,
    color: Option<ColorChoice>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    request_timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterEntry {
    project: Option<String>,
    env: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
}

/// The config file's `[defaults]` and `[[clusters]]`.
#[derive(Debug, Default)]
pub struct UserConfig {
    path: Option<PathBuf>,
    defaults: Defaults,
    clusters: Vec<ClusterEntry>,
}

/// A bad config file: its path and what is wrong, with the table named.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{}: {message}", path.display())]
struct BadConfig {
    path: PathBuf,
    message: String,
}

impl UserConfig {
    /// The user's config file (none at all is an empty config).
    pub fn load() -> Result<Self, Failure> {
        match kiln_cache::config::config_file() {
            Some(path) => Self::from_file(&path),
            None => Ok(Self::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, Failure> {
        let layer = kiln_cache::config::Layer::from_file(path)?;
        let bad = |table: &str, e: toml::de::Error| Failure {
            code: 1,
            report: miette::Report::new(BadConfig {
                path: path.to_owned(),
                message: format!("[{table}]: {}", e.message()),
            }),
        };
        let defaults: Defaults = match layer.defaults {
            Some(t) => t.try_into().map_err(|e| bad("defaults", e))?,
            None => Defaults::default(),
        };
        if let Some(t) = defaults.request_timeout {
            kiln_core::seconds::seconds(t).map_err(|e| Failure {
                code: 1,
                report: miette::Report::new(BadConfig {
                    path: path.to_owned(),
                    message: format!("[defaults] request_timeout: {e}"),
                }),
            })?;
        }
        let mut clusters = Vec::new();
        for (i, t) in layer.clusters.into_iter().flatten().enumerate() {
            clusters.push(
                t.try_into()
                    .map_err(|e| bad(&format!("[clusters]] #{}", i + 1), e))?,
            );
        }
        Ok(Self {
            path: Some(path.to_owned()),
            defaults,
            clusters,
        })
    }

    /// `[defaults] jobs`, with its source.
    pub fn jobs(&self) -> Option<(usize, Source)> {
        self.defaults
            .jobs
            .map(|j| (j, self.file("defaults.jobs".into())))
    }

    /// `[defaults] request_timeout`, with its source.
    pub fn request_timeout(&self) -> Option<(f64, Source)> {
        self.defaults
            .request_timeout
            .map(|t| (t, self.file("defaults.request_timeout".into())))
    }

    fn file(&self, key: String) -> Source {
        Source::File {
            path: self.path.clone().unwrap_or_default(),
            key,
        }
    }

    /// The first `[[clusters]]` entry for this project and environment.
    fn cluster(&self, project: Option<&str>, env: Option<&str>) -> Option<(usize, &ClusterEntry)> {
        self.clusters.iter().enumerate().find(|(_, c)| {
            c.project.as_deref().is_none_or(|p| Some(p) == project)
                && c.env.as_deref().is_none_or(|e| Some(e) == env)
        })
    }
}

/// How clap saw an argument, here or in a subcommand's matches.
fn given(matches: &[&ArgMatches], id: &str) -> Option<ValueSource> {
    matches
        .iter()
        .filter_map(|m| {
            m.try_get_raw(id)
                .ok()
                .flatten()
                .and_then(|_| m.value_source(id))
        })
        .find(|s| *s != ValueSource::DefaultValue)
}

fn flag_or_env(source: ValueSource, flag: &'static str, env: &'static str) -> Source {
    if source == ValueSource::EnvVariable {
        Source::Env(env)
    } else {
        Source::Flag(flag)
    }
}

/// The `name` in a project's kiln.toml, if it can be read (matching `[[clusters]]` needs it).
pub fn project_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("kiln.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("project")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

/// The project and environment a saved plan at `path` was made for, if `path` is one.
fn saved_plan_target(path: &Path) -> Option<(String, Option<String>)> {
    if !path.is_file() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let s = v.get("settings")?;
    Some((
        s.get("project")?.as_str()?.to_owned(),
        s.get("env").and_then(|e| e.as_str()).map(str::to_owned),
    ))
}

/// The kubeconfig and context for a project and environment, given the flags.
pub fn cluster_settings(
    config: &UserConfig,
    project: Option<&str>,
    env: Option<&str>,
    kubeconfig_flag: Option<&Path>,
    context_flag: Option<&str>,
) -> [Effective; 2] {
    let entry = config.cluster(project, env);
    let kubeconfig = if let Some(k) = kubeconfig_flag {
        (Some(k.display().to_string()), Source::Flag("--kubeconfig"))
    } else if let Some(k) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        (
            Some(k.to_string_lossy().into_owned()),
            Source::Env("KUBECONFIG"),
        )
    } else if let Some((i, k)) = entry.and_then(|(i, c)| Some((i, c.kubeconfig.as_ref()?))) {
        (
            Some(k.display().to_string()),
            config.file(format!("clusters[{i}].kubeconfig")),
        )
    } else if let Some(k) = &config.defaults.kubeconfig {
        (
            Some(k.display().to_string()),
            config.file("defaults.kubeconfig".into()),
        )
    } else {
        (None, Source::Default)
    };
    let context = if let Some(c) = context_flag {
        (Some(c.to_owned()), Source::Flag("--context"))
    } else if let Some((i, c)) = entry.and_then(|(i, c)| Some((i, c.context.as_ref()?))) {
        (
            Some(c.clone()),
            config.file(format!("clusters[{i}].context")),
        )
    } else if let Some(c) = &config.defaults.context {
        (Some(c.clone()), config.file("defaults.context".into()))
    } else {
        (None, Source::Default)
    };
    [
        Effective {
            name: "kubeconfig",
            value: kubeconfig.0,
            source: kubeconfig.1,
        },
        Effective {
            name: "context",
            value: context.0,
            source: context.1,
        },
    ]
}

/// Fills what the command line left to defaults from the config file, and says where every
/// setting the command uses came from.
pub fn apply(
    cli: &mut crate::cli::Cli,
    matches: &ArgMatches,
    config: &UserConfig,
) -> Vec<Effective> {
    let sub = matches.subcommand().map(|(_, m)| m);
    let all: Vec<&ArgMatches> = std::iter::once(matches).chain(sub).collect();
    let mut out = Vec::new();

    let store = match given(&all, "store") {
        Some(s) => flag_or_env(s, "--store", "KILN_STORE"),
        None => match &config.defaults.store {
            Some(p) => {
                cli.global.store = Some(p.clone());
                config.file("defaults.store".into())
            }
            None => Source::Default,
        },
    };
    out.push(Effective {
        name: "store",
        value: Some(
            crate::build::store_dir(cli.global.store.clone())
                .display()
                .to_string(),
        ),
        source: store,
    });

    let color = match given(&all, "color") {
        Some(_) => Source::Flag("--color"),
        None => match config.defaults.color {
            Some(c) => {
                cli.global.color = c;
                config.file("defaults.color".into())
            }
            None => Source::Default,
        },
    };
    out.push(Effective {
        name: "color",
        value: Some(format!("{:?}", cli.global.color).to_lowercase()),
        source: color,
    });

    let jobs_of = |jobs: &mut usize, out: &mut Vec<Effective>| {
        let source = match given(&all, "jobs") {
            Some(_) => Source::Flag("--jobs"),
            None => match config.defaults.jobs {
                Some(j) => {
                    *jobs = j;
                    config.file("defaults.jobs".into())
                }
                None => Source::Default,
            },
        };
        out.push(Effective {
            name: "jobs",
            value: (*jobs > 0).then(|| jobs.to_string()),
            source,
        });
    };
    let cluster = match &mut cli.command {
        Command::Build(a) => {
            jobs_of(&mut a.jobs, &mut out);
            None
        }
        Command::Audit(a) => {
            jobs_of(&mut a.jobs, &mut out);
            None
        }
        Command::Plan(a) => Some((&a.cluster.dir, &a.cluster.env, &mut a.cluster.connect)),
        Command::Apply(a) => Some((&a.cluster.dir, &a.cluster.env, &mut a.cluster.connect)),
        Command::Destroy(a) => Some((&a.dir, &a.env, &mut a.connect)),
        _ => None,
    };
    if let Some((dir, env, c)) = cluster {
        // A saved plan (`kiln apply FILE`) is looked up under the project and environment
        // it was made for.
        let (project, env) = match saved_plan_target(dir) {
            Some((p, e)) => (Some(p), e),
            None => (project_name(dir), env.clone()),
        };
        let settings = cluster_settings(
            config,
            project.as_deref(),
            env.as_deref(),
            c.kubeconfig.as_deref(),
            c.context.as_deref(),
        );
        // kube reads KUBECONFIG itself; a value from the file is passed on.
        let [k, ctx] = &settings;
        if matches!(k.source, Source::File { .. }) {
            c.kubeconfig = k.value.as_ref().map(PathBuf::from);
        }
        if matches!(ctx.source, Source::File { .. }) {
            c.context.clone_from(&ctx.value);
        }
        let timeout = match (c.request_timeout, config.defaults.request_timeout) {
            (Some(_), _) => Source::Flag("--request-timeout"),
            (None, Some(t)) => {
                c.request_timeout = Some(t);
                config.file("defaults.request_timeout".into())
            }
            (None, None) => Source::Default,
        };
        out.extend(settings);
        out.push(Effective {
            name: "request_timeout",
            value: c.request_timeout.map(|t| format!("{t}s")),
            source: timeout,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, UserConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let c = UserConfig::from_file(&path).unwrap_or_else(|f| panic!("{:?}", f.report));
        (dir, c)
    }

    #[test]
    fn the_first_matching_cluster_entry_wins_over_defaults() {
        let (_d, c) = config(
            "[defaults]\ncontext = \"dev\"\n\n[[clusters]]\nproject = \"shop\"\nenv = \"production\"\ncontext = \"prod\"\n\n[[clusters]]\nproject = \"shop\"\ncontext = \"shop-any\"\n",
        );
        let ctx = |p, e| cluster_settings(&c, p, e, None, None)[1].clone();
        assert_eq!(
            ctx(Some("shop"), Some("production")).value.as_deref(),
            Some("prod")
        );
        assert_eq!(
            ctx(Some("shop"), Some("staging")).value.as_deref(),
            Some("shop-any")
        );
        let other = ctx(Some("other"), Some("production"));
        assert_eq!(other.value.as_deref(), Some("dev"));
        assert!(matches!(other.source, Source::File { ref key, .. } if key == "defaults.context"));
        let flag = cluster_settings(&c, Some("shop"), None, None, Some("mine"))[1].clone();
        assert_eq!(flag.source, Source::Flag("--context"));
    }

    #[test]
    fn a_bad_table_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[defaults]\njbos = 3\n").unwrap();
        let Err(e) = UserConfig::from_file(&path) else {
            panic!("a bad table is refused")
        };
        let text = format!("{}", e.report);
        assert!(
            text.contains("[defaults]") && text.contains("jbos"),
            "{text}"
        );
    }
}
