//! Cache settings from three places, each overriding the one before: the user's config file
//! (`$XDG_CONFIG_HOME/kiln/config.toml`, else `~/.config/kiln/config.toml`), the environment
//! (`KILN_CACHE`, `KILN_TRUSTED_KEYS`, `KILN_CACHE_PUSH`, `KILN_SIGNING_KEY`,
//! `KILN_CACHE_TOKEN_FILE`, `KILN_CACHE_TIMEOUT`), and the command line.
//!
//! ```toml
//! substituters = ["https://cache.example/kiln", "s3://platform-cache/kiln"]
//! trusted_keys = ["ci-main:…"]
//! push = false
//! signing_key = "/etc/kiln/ci-main.key"
//! token_file = "/etc/kiln/push.token"
//! timeout_secs = 10
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::CacheError;
use crate::keys::PublicKey;

/// Settings as one source gives them; `None` means "not said here".
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Caches to pull from, in order; the first is the one pushed to.
    pub substituters: Option<Vec<String>>,
    /// Public keys trusted to sign entries.
    pub trusted_keys: Option<Vec<String>>,
    /// Push after a successful build.
    pub push: Option<bool>,
    /// The secret key that signs pushed entries.
    pub signing_key: Option<PathBuf>,
    /// A file holding the bearer token for `http(s)://` caches.
    pub token_file: Option<PathBuf>,
    /// Per-request timeout in seconds.
    pub timeout_secs: Option<f64>,
    /// The file's `[defaults]` table (store, jobs, colour, cluster defaults): the CLI's own.
    #[serde(default)]
    pub defaults: Option<toml::Table>,
    /// The file's `[[clusters]]` tables (kubeconfig and context per project and environment).
    #[serde(default)]
    pub clusters: Option<Vec<toml::Table>>,
}

impl Layer {
    /// `other` over `self`.
    fn over(self, other: Layer) -> Layer {
        Layer {
            substituters: other.substituters.or(self.substituters),
            trusted_keys: other.trusted_keys.or(self.trusted_keys),
            push: other.push.or(self.push),
            signing_key: other.signing_key.or(self.signing_key),
            token_file: other.token_file.or(self.token_file),
            timeout_secs: other.timeout_secs.or(self.timeout_secs),
            defaults: None,
            clusters: None,
        }
    }

    /// The layer a config file gives (an absent file gives nothing).
    pub fn from_file(path: &Path) -> Result<Layer, CacheError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Layer::default()),
            Err(e) => return Err(CacheError::io("read", path)(e)),
        };
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(1);
            CacheError::Config {
                path: path.to_owned(),
                message: format!("line {line}: {}", e.message()),
            }
        })
    }

    /// The layer the environment gives, read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Layer, CacheError> {
        let list = |s: String| -> Vec<String> {
            s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let push = match var("KILN_CACHE_PUSH").as_deref() {
            None | Some("") => None,
            Some("1" | "true" | "yes") => Some(true),
            Some("0" | "false" | "no") => Some(false),
            Some(other) => {
                return Err(CacheError::Config {
                    path: "KILN_CACHE_PUSH".into(),
                    message: format!("`{other}` is not true or false"),
                })
            }
        };
        let timeout_secs = match var("KILN_CACHE_TIMEOUT") {
            None => None,
            Some(t) => Some(t.trim().parse().map_err(|_| CacheError::Config {
                path: "KILN_CACHE_TIMEOUT".into(),
                message: format!("`{t}` is not a number of seconds"),
            })?),
        };
        Ok(Layer {
            substituters: var("KILN_CACHE").map(list),
            trusted_keys: var("KILN_TRUSTED_KEYS").map(list),
            push,
            signing_key: var("KILN_SIGNING_KEY").map(PathBuf::from),
            token_file: var("KILN_CACHE_TOKEN_FILE").map(PathBuf::from),
            timeout_secs,
            ..Layer::default()
        })
    }
}

/// The user's config file.
pub fn config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("kiln").join("config.toml"))
}

/// The settings in effect.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Caches to pull from, in order.
    pub substituters: Vec<String>,
    /// Trusted keys.
    pub trusted_keys: Vec<PublicKey>,
    /// Push after a successful build (to the first substituter).
    pub push: bool,
    /// The signing key file.
    pub signing_key: Option<PathBuf>,
    /// The token file.
    pub token_file: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// File, then environment, then `flags`.
pub fn resolve(flags: Layer) -> Result<Settings, CacheError> {
    let file = match config_file() {
        Some(path) => Layer::from_file(&path)?,
        None => Layer::default(),
    };
    let env = Layer::from_env(|k| std::env::var(k).ok())?;
    settle(file.over(env).over(flags))
}

/// A merged layer as settings.
pub fn settle(layer: Layer) -> Result<Settings, CacheError> {
    let trusted_keys = layer
        .trusted_keys
        .unwrap_or_default()
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<_, _>>()?;
    let timeout = layer.timeout_secs.unwrap_or(10.0);
    let timeout = match kiln_core::seconds::seconds(timeout) {
        Ok(t) if t.as_secs() < 3600 => t,
        _ => {
            return Err(CacheError::Key(format!(
                "a cache timeout of {timeout} s is out of range (more than 0, less than 3600)"
            )))
        }
    };
    Ok(Settings {
        substituters: layer.substituters.unwrap_or_default(),
        trusted_keys,
        push: layer.push.unwrap_or(false),
        signing_key: layer.signing_key,
        token_file: layer.token_file,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_env_and_env_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "substituters = [\"file:///from-file\"]\npush = true\ntimeout_secs = 3\n",
        )
        .unwrap();
        let from_file = Layer::from_file(&file).unwrap();
        let env = Layer::from_env(|k| {
            (k == "KILN_CACHE").then(|| "http://a/kiln, s3://b/kiln".to_owned())
        })
        .unwrap();
        let merged = settle(from_file.clone().over(env.clone())).unwrap();
        assert_eq!(merged.substituters, ["http://a/kiln", "s3://b/kiln"]);
        assert!(
            merged.push,
            "the file's push stays when the environment says nothing"
        );
        assert_eq!(merged.timeout, Duration::from_secs(3));
        let flags = Layer {
            push: Some(false),
            substituters: Some(vec!["file:///flag".into()]),
            ..Layer::default()
        };
        let merged = settle(from_file.over(env).over(flags)).unwrap();
        assert_eq!(merged.substituters, ["file:///flag"]);
        assert!(!merged.push);
    }

    #[test]
    fn bad_settings_name_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "push = true\nsubstitutors = []\n").unwrap();
        let e = Layer::from_file(&file).unwrap_err().to_string();
        assert!(
            e.contains("config.toml: line 2") && e.contains("substitutors"),
            "{e}"
        );
        let e = Layer::from_env(|k| (k == "KILN_CACHE_PUSH").then(|| "maybe".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KILN_CACHE_PUSH"), "{e}");
        let bad_key = Layer {
            trusted_keys: Some(vec!["nonsense".into()]),
            ..Layer::default()
        };
        assert!(settle(bad_key).is_err());
        assert!(Layer::from_file(&dir.path().join("absent.toml")).unwrap() == Layer::default());
    }
}
