//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kiln: build Kubernetes platforms from a DAG of hashed rules.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More logging (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less output (errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// When to use colour.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Never show progress bars.
    #[arg(long, env = "KILN_NO_PROGRESS", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub no_progress: bool,
    /// The store directory [default: $KILN_STORE, else $XDG_DATA_HOME/kiln/store].
    #[arg(long, env = "KILN_STORE", global = true, hide_env_values = true)]
    pub store: Option<PathBuf>,
}

/// `--color`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build every rule of a project into the store.
    Build(BuildArgs),
    /// Draw the rule graph.
    Graph(GraphArgs),
    /// Inspect and maintain the store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Build, then show what `apply` would change on the cluster.
    Plan(PlanArgs),
    /// Build, then realize the artifacts on the cluster: apply changes, wait for health, prune.
    Apply(ApplyArgs),
    /// Delete every member of an environment's set from the cluster, then its parent.
    Destroy(DestroyArgs),
    /// Share built artifacts through a remote cache: keys, a server, explicit push and pull.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Rebuild every rule, ignoring every cache, and compare with the recorded outputs.
    Audit(AuditArgs),
    /// Why did (or would) a rule rebuild? The inputs that moved its hash, down to the root cause.
    Why(WhyArgs),
    /// How two environments' artifacts differ, or this checkout's from the last build.
    Diff(DiffArgs),
    /// An in-toto SLSA v1 provenance statement for a rule's artifact (signed with --sign), or
    /// --verify one.
    Provenance(ProvenanceArgs),
    /// Print a plan saved by `kiln plan --out`.
    Show(ShowArgs),
    /// Write the objects apply would send into a directory, one file per object (GitOps).
    Export(ExportArgs),
    /// The user's configuration: `kiln config show` prints every setting in effect and where
    /// it came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (`source <(kiln completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (kiln.1 and one per subcommand) into a directory.
    Manpages {
        /// The directory (created if missing).
        dir: PathBuf,
    },
}

/// `kiln provenance`.
#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// The rule whose artifact the statement is about.
    #[arg(required_unless_present = "verify")]
    pub rule: Option<String>,
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Wrap the statement in a DSSE envelope signed with this secret key (`kiln cache keygen`).
    #[arg(long, value_name = "KEY_FILE")]
    pub sign: Option<PathBuf>,
    /// Verify a DSSE envelope instead (with --trusted-key).
    #[arg(long, value_name = "FILE", conflicts_with = "sign")]
    pub verify: Option<PathBuf>,
    /// A public key `<name>:<base64>` trusted to sign envelopes (repeatable).
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub trusted_keys: Vec<String>,
}

/// `kiln why`.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The rule.
    pub rule: String,
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Compare with `last` (the last build) or a GC root file.
    #[arg(long, default_value = "last", value_name = "ROOT_FILE|last")]
    pub since: String,
    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vars: InstanceArgs,
}

/// `kiln diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment; twice to compare two (`--env staging --env production`).
    #[arg(short, long, num_args = 1)]
    pub env: Vec<String>,
    /// Compare this checkout with the last build of the environment (`last`).
    #[arg(long, value_name = "last")]
    pub since: Option<String>,
    /// Print the differences as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `kiln audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Parallel jobs [default: one per CPU].
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// Only these rules are rebuilt (the others contribute their recorded outputs).
    #[arg(long, num_args = 1..)]
    pub rules: Vec<String>,
    /// Compare with this remote cache's (signed, with --trusted-key) entries: another
    /// machine's build. Without it, the local store's records.
    #[arg(long, value_name = "CACHE_URL")]
    pub against: Option<String>,
    /// Public keys trusted to sign the `--against` cache's entries (repeatable).
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// Print the report as JSON (format version 1).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// Remote cache settings of `build`, `plan`, `apply` and `cache push/pull`. Each overrides the
/// environment (`KILN_CACHE`, `KILN_TRUSTED_KEYS`, `KILN_CACHE_PUSH`, `KILN_SIGNING_KEY`,
/// `KILN_CACHE_TOKEN_FILE`, `KILN_CACHE_TIMEOUT`), which overrides the user's config file
/// (`$XDG_CONFIG_HOME/kiln/config.toml`).
#[derive(Debug, Args, Default, Clone)]
pub struct CacheArgs {
    #[command(flatten)]
    pub read: CacheReadArgs,
    /// Push what the cache lacks after a successful build.
    #[arg(long)]
    pub push: bool,
    /// The secret key that signs pushed entries (made by `kiln cache keygen`).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// The cache settings of commands that only read from caches (`store cat/path`, `cache pull`,
/// `cache verify`): no push, no signing key.
#[derive(Debug, Args, Default, Clone)]
pub struct CacheReadArgs {
    /// A remote cache to pull from (repeatable, tried in order; the first is pushed to):
    /// `file:///dir`, `http(s)://host/prefix`, `s3://bucket/prefix`, `gs://…`, `az://…`.
    #[arg(long = "cache", value_name = "URL")]
    pub caches: Vec<String>,
    /// A public key `<name>:<base64>` whose signatures are trusted (repeatable). With any
    /// set, unsigned or unknown-signed entries are refused.
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// A file holding the bearer token for `http(s)://` caches.
    #[arg(long, value_name = "FILE")]
    pub cache_token_file: Option<PathBuf>,
    /// Per-request timeout of the caches, in seconds [default: 10].
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    pub cache_timeout: Option<f64>,
}

impl From<&CacheReadArgs> for CacheArgs {
    fn from(read: &CacheReadArgs) -> Self {
        Self {
            read: read.clone(),
            push: false,
            signing_key: None,
        }
    }
}

/// `kiln cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Make an ed25519 key pair: the secret key goes to `<NAME>.key` (mode 0600), the public
    /// key `<NAME>:<base64>` to stdout.
    Keygen {
        /// The key's name, carried in every signature.
        name: String,
        /// Where to write the secret key [default: `<NAME>.key`].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve a cache over HTTP (GET, HEAD; PUT with the push token).
    Serve {
        /// A directory holding the cache.
        #[arg(long, conflicts_with = "backend", required_unless_present = "backend")]
        dir: Option<PathBuf>,
        /// Or any object store backend (`s3://…`, `file:///…`).
        #[arg(long)]
        backend: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The bearer token PUT needs; without it the server is read-only.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A bearer token reads need [default: reads are open].
        #[arg(long, value_name = "FILE")]
        read_token_file: Option<PathBuf>,
        /// The largest upload accepted, in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        max_upload_bytes: usize,
    },
    /// Build (a no-op after `kiln build`), then push the entries and archives the first cache
    /// lacks (of `--all` rules, or the named ones).
    Push {
        #[command(flatten)]
        transfer: TransferArgs,
        /// The secret key that signs pushed entries (made by `kiln cache keygen`).
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// Build with the caches, then download the archives (of `--all` rules, or the named
    /// ones), e.g. before an apply without network.
    Pull(TransferArgs),
    /// Check every entry and archive of a cache: entries parse, hash to their keys, carry a
    /// trusted signature (with trusted keys set) and point at archives that hash to theirs.
    Verify {
        #[command(flatten)]
        cache: CacheReadArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `kiln cache push` and `pull` move.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Every rule.
    #[arg(long, conflicts_with = "rules", required_unless_present = "rules")]
    pub all: bool,
    /// A rule to move (repeatable).
    #[arg(long = "rule", value_name = "NAME")]
    pub rules: Vec<String>,
    /// Print what the caches cost as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheReadArgs,
}

/// A positive number of seconds, at most a year (`kiln_core::seconds`, the one parser of
/// every duration).
fn positive_seconds(s: &str) -> Result<f64, String> {
    kiln_core::seconds::parse_seconds(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| e.to_string())
}

/// A whole, positive number of seconds, at most a year.
fn whole_seconds(s: &str) -> Result<u64, String> {
    let secs: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of seconds"))?;
    kiln_core::seconds::parse_seconds(s).map_err(|e| e.to_string())?;
    Ok(secs)
}

/// [`whole_seconds`], or 0 (do not wait at all).
fn whole_seconds_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    whole_seconds(s)
}

/// `--var NAME=VALUE`, repeatable: VALUE is a TOML value, else a string; and `--unsandboxed`.
#[derive(Debug, Clone, Default, Args)]
pub struct VarArgs {
    /// Run `exec` commands without the sandbox (for machines without bubblewrap or user
    /// namespaces): they can then read the host and reach the network. Warns per rule.
    #[arg(long)]
    pub unsandboxed: bool,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

impl VarArgs {
    /// The overrides by name (a later one wins).
    pub fn map(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.instance.map()
    }
}

/// `--var` alone, for commands that build nothing (`destroy`, `why`); [`VarArgs`] adds
/// `--unsandboxed` for those that build. The overrides name the instance of the environment
/// (its GC root, its set).
#[derive(Debug, Clone, Default, Args)]
pub struct InstanceArgs {
    /// Override a variable (NAME=VALUE, typed by the variable's default): each distinct set of
    /// overrides is its own instance of the environment, with its own GC root and ApplySet.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::build::parse_var)]
    pub vars: Vec<(String, serde_json::Value)>,
}

impl InstanceArgs {
    /// The overrides by name (a later one wins).
    pub fn map(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.vars.iter().cloned().collect()
    }
}

/// Which cluster, and how to reach it.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: the current context].
    #[arg(long)]
    pub context: Option<String>,
    /// The longest one cluster request may take, in seconds (connect, read and write).
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    pub request_timeout: Option<f64>,
}

/// What `plan` and `apply` share.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The project directory (holding kiln.toml); for `apply`, also a plan saved by
    /// `kiln plan --out`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Namespace of the ApplySet parent Secret (`kiln-<project>-<env>`) [default: default].
    #[arg(long)]
    pub applyset_namespace: Option<String>,
    /// Print JSON on stdout (format version 1).
    #[arg(long)]
    pub json: bool,
    /// Only this rule and its dependencies (repeatable; `NAME+` adds its dependents). Prune is
    /// off when a run covers only part of the project.
    #[arg(long = "rule", value_name = "NAME[+]")]
    pub rules: Vec<String>,
    #[command(flatten)]
    pub vars: VarArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `kiln plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also look in every kind the cluster serves for members of the set that its parent does
    /// not list (left by a race, an older kiln or a crash): one LIST per served kind.
    #[arg(long)]
    pub find_orphans: bool,
    /// Take over objects that are members of another kiln set (refused otherwise).
    #[arg(long)]
    pub adopt: bool,
    /// Exit 0 when there is nothing to change, 2 when there is, 1 on errors (as Terraform).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan to FILE for review; `kiln apply FILE` applies exactly it (or refuses
    /// when it is stale).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the plan as one self-contained HTML page: the rule graph coloured by what
    /// the plan does, each rule's objects and diffs a click away.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `kiln export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// The directory to write (`<namespace|_cluster>/<Kind>.<group|core>/<name>.yaml`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Change nothing: exit 1 when the directory is out of date (for CI).
    #[arg(long)]
    pub check: bool,
    /// Namespace of the ApplySet parent, as for apply (it names the set in the labels).
    #[arg(long, default_value = "default")]
    pub applyset_namespace: String,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `kiln show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A plan saved by `kiln plan --out`.
    pub file: PathBuf,
    /// Print the plan's JSON (as `kiln plan --json`).
    #[arg(long)]
    pub json: bool,
}

/// `kiln apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Delete objects removed from the rules without asking.
    #[arg(short, long)]
    pub yes: bool,
    /// Take over fields other field managers own.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Do not wait for health gates.
    #[arg(long)]
    pub no_wait: bool,
    /// Skip the gates that need nodes or a volume provisioner: rollouts of Deployments,
    /// StatefulSets and DaemonSets, Job completion, PVC binding (CRD gates still apply). For
    /// control planes that cannot run pods, like the test cluster.
    #[arg(long)]
    pub skip_workload_gates: bool,
    /// Seconds each wave may wait for health.
    #[arg(long, default_value_t = 300, value_parser = whole_seconds)]
    pub timeout: u64,
    /// Concurrent writes inside a wave.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Also find members of kinds the parent does not list (see `plan --find-orphans`) and
    /// delete them, with the same confirmation as prune.
    #[arg(long)]
    pub prune_orphans: bool,
    /// Take over objects that are members of another kiln set (refused otherwise).
    #[arg(long)]
    pub adopt: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// The set's lock.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Seconds to wait for another apply of the same set to release its lock.
    #[arg(long, default_value_t = 300, value_parser = whole_seconds_or_zero)]
    pub lock_timeout: u64,
    /// Seconds after which the lock of an apply that stopped renewing it (killed) expires.
    #[arg(long, default_value_t = 15, value_parser = whole_seconds)]
    pub lock_ttl: u64,
}

/// `kiln destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The project directory (holding kiln.toml): it names the set (nothing is built).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Namespace of the ApplySet parent Secret (`kiln-<project>-<env>`) [default: default].
    #[arg(long)]
    pub applyset_namespace: Option<String>,
    /// Print JSON on stdout (format version 1).
    #[arg(long)]
    pub json: bool,
    /// Delete only the objects of this rule (repeatable; `NAME+` adds its dependents): the
    /// other rules' objects and the set's parent stay.
    #[arg(long = "rule", value_name = "NAME[+]")]
    pub rules: Vec<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete without asking.
    #[arg(short, long)]
    pub yes: bool,
    /// Wait until every member is gone (finalizers done) before deleting the parent.
    #[arg(long)]
    pub wait: bool,
    /// Seconds `--wait` may take.
    #[arg(long, default_value_t = 300, value_parser = whole_seconds)]
    pub timeout: u64,
    /// Also delete members of kinds the parent does not list (one LIST per served kind).
    #[arg(long)]
    pub find_orphans: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment to build.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Parallel jobs [default: one per CPU].
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep building independent rules after a failure.
    #[arg(short, long)]
    pub keep_going: bool,
    /// Only this rule and its dependencies (repeatable; `NAME+` adds its dependents). Prune is
    /// off when a run covers only part of the project.
    #[arg(long = "rule", value_name = "NAME[+]")]
    pub rules: Vec<String>,
    #[command(flatten)]
    pub vars: VarArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `kiln graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment whose rules to draw.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormatArg::Dot)]
    pub format: GraphFormatArg,
    /// Only this rule and its dependencies (repeatable; `NAME+` adds its dependents). Prune is
    /// off when a run covers only part of the project.
    #[arg(long = "rule", value_name = "NAME[+]")]
    pub rules: Vec<String>,
}

/// `--format` of `kiln graph`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormatArg {
    /// SVG, drawn by Graphviz's `dot` (which must be installed).
    Svg,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON.
    Json,
}

/// Where a rule of a project is: the rule, the project directory and `--env`.
#[derive(Debug, Args)]
pub struct RuleRef {
    /// The rule.
    pub rule: String,
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment.
    #[arg(short, long)]
    pub env: Option<String>,
    /// Caches to fetch the artifact from when the store only holds its entry.
    #[command(flatten)]
    pub cache: CacheReadArgs,
}

/// `kiln store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Delete everything no GC root reaches.
    Gc {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rehash every entry; corrupt ones are moved aside. Exits 1 if any was corrupt.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List GC roots and what they hold.
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the directory holding a rule's artifact.
    Path(RuleRef),
    /// Print a rule's artifact files (or one of them).
    Cat {
        #[command(flatten)]
        rule: RuleRef,
        /// One file of the artifact.
        #[arg(long)]
        file: Option<String>,
    },
}

/// `kiln config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The settings in effect for a project and environment, and where each came from (flag,
    /// environment, the config file, default).
    Show(ConfigShowArgs),
}

/// `kiln config show`.
#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    /// The project directory (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The environment (`[[clusters]]` entries can name one).
    #[arg(short, long)]
    pub env: Option<String>,
    /// Print JSON on stdout (format version 1).
    #[arg(long)]
    pub json: bool,
}
