//! `kiln cache ...`, and the remote caches of `build`, `plan` and `apply`.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use kiln_cache::config::{self, Layer, Settings};
use kiln_cache::keys::SecretKey;
use kiln_cache::{CacheError, PushItem, RemoteCache, RemoteOptions};
use kiln_core::error_chain::error_chain;
use kiln_store::{LocalStore, Substituter};

use crate::build::{BuildOptions, BuildReport, Status};
use crate::cli::{CacheArgs, CacheCommand, CacheReadArgs, TransferArgs};
use crate::commands::Failure;
use crate::printer::Printer;

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        let code = match e {
            CacheError::Remote { .. } | CacheError::Store(_) => 2,
            _ => 1,
        };
        Failure {
            code,
            report: miette::miette!("{}", error_chain(&e)),
        }
    }
}

/// The remote caches of one run, opened from the settings in effect.
#[derive(Clone, Default)]
pub struct Caches {
    settings: Settings,
    remotes: Vec<Arc<RemoteCache>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.remotes.iter().map(|r| r.address().to_owned()))
            .finish()
    }
}

impl Caches {
    /// Settings from the config file, the environment and `args`; every cache opened (no
    /// request is made yet).
    pub fn open(args: &CacheArgs) -> Result<Self, Failure> {
        let flags = Layer {
            substituters: (!args.read.caches.is_empty()).then(|| args.read.caches.clone()),
            trusted_keys: (!args.read.trusted_keys.is_empty())
                .then(|| args.read.trusted_keys.clone()),
            push: args.push.then_some(true),
            signing_key: args.signing_key.clone(),
            token_file: args.read.cache_token_file.clone(),
            timeout_secs: args.read.cache_timeout,
            ..Layer::default()
        };
        let settings = config::resolve(flags)?;
        let token = settings
            .token_file
            .as_deref()
            .map(kiln_cache::read_token)
            .transpose()?;
        let options = RemoteOptions {
            trusted: settings.trusted_keys.clone(),
            token,
            timeout: settings.timeout,
            ..RemoteOptions::default()
        };
        let remotes = settings
            .substituters
            .iter()
            .map(|addr| RemoteCache::open(addr, options.clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        if settings.push && settings.substituters.is_empty() {
            return Err(
                CacheError::Key("--push needs a cache (--cache or KILN_CACHE)".into()).into(),
            );
        }
        Ok(Self { settings, remotes })
    }

    /// Whether any cache is configured.
    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// The caches as the engine's substituters.
    pub fn substituters(&self) -> Vec<Arc<dyn Substituter>> {
        self.remotes
            .iter()
            .map(|r| r.clone() as Arc<dyn Substituter>)
            .collect()
    }

    /// `options` pulling from these caches.
    pub fn apply_to(&self, options: BuildOptions) -> BuildOptions {
        options.substituters(self.substituters())
    }

    fn signing_key(&self) -> Result<Option<SecretKey>, Failure> {
        let Some(path) = &self.settings.signing_key else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| CacheError::Io {
            action: "read the signing key",
            path: path.clone(),
            source: e,
        })?;
        Ok(Some(SecretKey::parse(&text).map_err(|e| {
            CacheError::Key(format!("{}: {e}", path.display()))
        })?))
    }

    /// Pushes `items` to the first cache, when pushing is on.
    pub fn push_if_asked(&self, store: &Path, items: &[PushItem]) -> Result<(), Failure> {
        if !self.settings.push {
            return Ok(());
        }
        self.push(store, items)
    }

    fn push(&self, store: &Path, items: &[PushItem]) -> Result<(), Failure> {
        let Some(first) = self.remotes.first() else {
            return Err(
                CacheError::Key("pushing needs a cache (--cache or KILN_CACHE)".into()).into(),
            );
        };
        let key = self.signing_key()?;
        let local = LocalStore::open(store)?;
        first.ensure_info()?;
        first.push(&local, items, key.as_ref())?;
        Ok(())
    }

    /// Makes `out` local: fetched from the first cache that has it (verified). Without caches,
    /// or when none has it, the store's "missing" error.
    pub fn fetch(&self, store: &Path, out: &kiln_core::Digest) -> Result<(), Failure> {
        let local = Arc::new(LocalStore::open(store)?);
        // Streamed into the store, never loaded whole: `store cat/path` read it from there.
        kiln_store::PullThrough::new(local.clone(), self.substituters()).prefetch(&[*out])?;
        if local.has_object(out) {
            Ok(())
        } else {
            Err(kiln_store::StoreError::Missing(*out).into())
        }
    }

    /// What the caches cost, as JSON (one object per cache).
    pub fn traffic_json(&self) -> Option<serde_json::Value> {
        (!self.is_empty()).then(|| {
            serde_json::json!(self.remotes.iter().map(|r| r.traffic()).collect::<Vec<_>>())
        })
    }

    /// One summary line: requests and bytes of every cache.
    pub fn traffic_line(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .remotes
            .iter()
            .map(|r| {
                let t = r.traffic();
                let mut line = format!(
                    "{}: {} requests, {} down, {} up, {} hits",
                    t.address,
                    t.requests,
                    indicatif::HumanBytes(t.bytes_down),
                    indicatif::HumanBytes(t.bytes_up),
                    t.hits
                );
                if t.pushed_entries > 0 || t.pushed_archives > 0 {
                    line += &format!(
                        ", pushed {} entries and {} archives",
                        t.pushed_entries, t.pushed_archives
                    );
                }
                if t.refused > 0 {
                    line += &format!(", {} refused", t.refused);
                }
                if t.gave_up {
                    line += ", given up after repeated failures";
                }
                line
            })
            .collect();
        Some(format!("cache {}", parts.join("; ")))
    }
}

/// What a build's report says can be pushed: every rule that succeeded.
pub fn push_items(report: &BuildReport) -> Vec<PushItem> {
    report.rules.iter().filter_map(push_item).collect()
}

fn push_item(r: &crate::build::RuleReport) -> Option<PushItem> {
    matches!(r.status, Status::Built | Status::Cached | Status::Pulled).then_some(PushItem {
        derivation: r.derivation?,
        output: r.output?,
    })
}

/// Runs `kiln cache ...`.
pub fn run(cmd: &CacheCommand, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    match cmd {
        CacheCommand::Keygen { name, out } => keygen(name, out.as_deref(), printer),
        CacheCommand::Serve {
            dir,
            backend,
            listen,
            token_file,
            read_token_file,
            max_upload_bytes,
        } => serve(
            dir.as_deref(),
            backend.as_deref(),
            listen,
            token_file.as_deref(),
            read_token_file.as_deref(),
            *max_upload_bytes,
            printer,
        ),
        CacheCommand::Push {
            transfer: args,
            signing_key,
        } => {
            // `kiln cache push` pushes by itself: no `--push` to give.
            let cache = CacheArgs {
                read: args.cache.clone(),
                push: false,
                signing_key: signing_key.clone(),
            };
            transfer(args, &cache, printer, store, true)
        }
        CacheCommand::Pull(args) => {
            transfer(args, &CacheArgs::from(&args.cache), printer, store, false)
        }
        CacheCommand::Verify { cache, json } => verify(cache, *json, printer),
    }
}

fn keygen(name: &str, out: Option<&Path>, printer: &Printer) -> Result<u8, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = SecretKey::generate(name)?;
    let path = out.map_or_else(|| kiln_cache::default_key_path(name), Path::to_path_buf);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| CacheError::Io {
            action: "create the secret key file (it must not exist yet)",
            path: path.clone(),
            source: e,
        })?;
    writeln!(file, "{}", key.to_text())
        .and_then(|()| file.sync_all())
        .map_err(|e| CacheError::Io {
            action: "write",
            path: path.clone(),
            source: e,
        })?;
    printer.data(&key.public().to_text());
    printer.status(&format!(
        "secret key written to {} (mode 0600)",
        path.display()
    ));
    Ok(0)
}

fn serve(
    dir: Option<&Path>,
    backend: Option<&str>,
    listen: &str,
    token_file: Option<&Path>,
    read_token_file: Option<&Path>,
    max_upload_bytes: usize,
    printer: &Printer,
) -> Result<u8, Failure> {
    let address = match (dir, backend) {
        (Some(d), _) => {
            std::fs::create_dir_all(d).map_err(|e| CacheError::Io {
                action: "create",
                path: d.to_owned(),
                source: e,
            })?;
            let abs = std::fs::canonicalize(d).map_err(|e| CacheError::Io {
                action: "resolve",
                path: d.to_owned(),
                source: e,
            })?;
            format!("file://{}", abs.display())
        }
        (None, Some(b)) => b.to_owned(),
        (None, None) => unreachable!("clap requires --dir or --backend"),
    };
    let (store, prefix) = kiln_cache::address::open_store(&address, &RemoteOptions::default())?;
    let store: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            store,
            prefix.trim_end_matches('/'),
        ))
    };
    let config = kiln_cache::server::ServerConfig {
        store,
        push_token: token_file.map(kiln_cache::read_token).transpose()?,
        read_token: read_token_file.map(kiln_cache::read_token).transpose()?,
        max_upload_bytes,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CacheError::Remote {
            cache: address.clone(),
            message: e.to_string(),
        })?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        printer.status(&format!(
            "serving {address} on http://{bound} ({})",
            if config.push_token.is_some() {
                "push with the token"
            } else {
                "read-only"
            }
        ));
        kiln_cache::server::serve(config, listener, shutdown_signal()).await
    });
    result.map_err(|e| CacheError::Remote {
        cache: address,
        message: format!("the server failed: {e}"),
    })?;
    printer.status("stopped");
    Ok(0)
}

/// Ctrl-C (through the CLI's handler) or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    let interrupted = async {
        while !kiln_core::interrupt::interrupted() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        () = interrupted => {}
    }
}

fn transfer(
    args: &TransferArgs,
    cache: &CacheArgs,
    printer: &Printer,
    store: &Path,
    push: bool,
) -> Result<u8, Failure> {
    let caches = Caches::open(cache)?;
    if caches.is_empty() {
        return Err(
            CacheError::Key("no cache is configured (--cache or KILN_CACHE)".into()).into(),
        );
    }
    let mut options = BuildOptions::default().env(args.env.clone());
    if !push {
        options = caches.apply_to(options);
    }
    // A pull whose archives are refused or gone builds those rules locally, once.
    for attempt in 0..2 {
        let report = crate::build::build(&args.dir, store, &options, &|_, _| {})?;
        for d in &report.diagnostics {
            printer.error(d);
        }
        if !report.success() {
            return Ok(report.exit_code());
        }
        let unknown: Vec<String> = args
            .rules
            .iter()
            .filter(|r| !report.rules.iter().any(|x| &x.name == *r))
            .map(|r| format!("`{r}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(CacheError::Key(format!(
                "no rule {} in this project and environment",
                unknown.join(", ")
            ))
            .into());
        }
        let selected: Vec<&crate::build::RuleReport> = report
            .rules
            .iter()
            .filter(|r| args.all || args.rules.contains(&r.name))
            .collect();
        if push {
            let items: Vec<PushItem> = selected.into_iter().filter_map(push_item).collect();
            caches.push(store, &items)?;
            break;
        }
        let outs: Vec<kiln_core::Digest> = selected.iter().filter_map(|r| r.output).collect();
        let local = Arc::new(LocalStore::open(store)?);
        kiln_store::PullThrough::new(local.clone(), caches.substituters()).prefetch(&outs)?;
        let unavailable: Vec<kiln_core::Digest> =
            outs.into_iter().filter(|o| !local.has_object(o)).collect();
        if unavailable.is_empty() {
            break;
        }
        if attempt == 1 {
            return Err(CacheError::Remote {
                cache: caches.remotes[0].address().to_owned(),
                message: format!(
                    "{} archives could not be fetched or built",
                    unavailable.len()
                ),
            }
            .into());
        }
        printer.status(&format!(
            "{} archives are in no cache or were refused: building them locally",
            unavailable.len()
        ));
        options = options.distrust(unavailable);
    }
    if args.json {
        printer.json(&serde_json::json!({ "cache": caches.traffic_json() }));
    }
    if let Some(line) = caches.traffic_line() {
        printer.status(&line);
    }
    Ok(0)
}

fn verify(args: &CacheReadArgs, json: bool, printer: &Printer) -> Result<u8, Failure> {
    let caches = Caches::open(&CacheArgs::from(args))?;
    if caches.is_empty() {
        return Err(CacheError::Key("no cache to verify (--cache or KILN_CACHE)".into()).into());
    }
    let mut all_good = true;
    let mut reports = Vec::new();
    for remote in &caches.remotes {
        let report = remote.verify_all()?;
        all_good &= report.problems.is_empty();
        if !json {
            for p in &report.problems {
                printer.status(&format!("{}: {p}", remote.address()));
            }
            printer.status(&format!(
                "{}: {} entries, {} archives, {} problems",
                remote.address(),
                report.entries,
                report.archives,
                report.problems.len()
            ));
        }
        reports.push(report);
    }
    if json {
        printer.json(&reports);
    }
    Ok(if all_good { 0 } else { 1 })
}
