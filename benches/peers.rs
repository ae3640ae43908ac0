//! kiln against its peers, in one run: `cargo bench --bench peers` (or `benches/peers.sh`, which
//! installs the peers first). Writes `BENCHMARKS.md` and prints the same tables.
//!
//! - **Nix 2.8 `nix-instantiate`** on the same DAG, in four shapes (one file with rules inline,
//!   many files with sources, a deep chain, a wide fan-out/fan-in), at several sizes: cold
//!   (empty store) and no-op (everything there), alternating the tools round by round.
//! - **`kubectl kustomize`** rendering a base and an overlay, against kiln building the same.
//! - **`kubectl apply/diff --server-side`** against `kiln apply/plan` on the test cluster.
//!
//! Arguments (after `--`): sizes (default `1000 10000 100000`), `--rounds N` (default 5),
//! `--no-realize`, `--out FILE` (default `BENCHMARKS.md` at the top of the workspace), `--keep DIR`
//! (generate the projects and stores under DIR, a new or empty directory, and keep them, to
//! profile one afterwards).
//! Each process's peak RSS comes from GNU `time`.

#![allow(clippy::print_stdout)] // a bench prints its table

#[path = "support/cluster.rs"]
mod cluster;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One rule of the abstract DAG.
struct Node {
    kind: NodeKind,
    deps: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum NodeKind {
    ConfigMap,
    Manifest,
    Bundle,
}

#[derive(Clone, Copy)]
enum Shape {
    /// Rules inline in one `kiln.toml`: configmaps and manifests with 1-3 dependencies each.
    OneFile,
    /// The same DAG, 100 rules per include file, each rule reading a source file.
    ManyFiles,
    /// Every rule depends on the one before.
    DeepChain,
    /// One hub every leaf depends on; bundles of 100 leaves; one bundle of all bundles.
    Wide,
}

impl Shape {
    const ALL: [Shape; 4] = [
        Shape::OneFile,
        Shape::ManyFiles,
        Shape::DeepChain,
        Shape::Wide,
    ];

    fn name(self) -> &'static str {
        match self {
            Shape::OneFile => "one file",
            Shape::ManyFiles => "many files",
            Shape::DeepChain => "deep chain",
            Shape::Wide => "wide fan-in/out",
        }
    }

    fn with_files(self) -> bool {
        matches!(self, Shape::ManyFiles)
    }

    fn dag(self, n: usize) -> Vec<Node> {
        let plain = |i: usize, deps: Vec<usize>| Node {
            kind: if i.is_multiple_of(3) {
                NodeKind::ConfigMap
            } else {
                NodeKind::Manifest
            },
            deps,
        };
        match self {
            Shape::OneFile | Shape::ManyFiles => {
                // A fixed linear congruential sequence: the same DAG on every run.
                let mut x: u64 = 0x2545_F491_4F6C_DD1D;
                (0..n)
                    .map(|i| {
                        let mut deps = Vec::new();
                        if i > 0 {
                            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            let count = 1 + (x >> 33) as usize % 3;
                            for _ in 0..count {
                                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                                let back = 1 + (x >> 33) as usize % i.min(50);
                                deps.push(i - back);
                            }
                            deps.sort_unstable();
                            deps.dedup();
                        }
                        plain(i, deps)
                    })
                    .collect()
            }
            Shape::DeepChain => (0..n)
                .map(|i| plain(i, if i > 0 { vec![i - 1] } else { Vec::new() }))
                .collect(),
            Shape::Wide => {
                let bundles = (n.saturating_sub(2)).div_ceil(101).max(1);
                let leaves = n.saturating_sub(2 + bundles).max(1);
                let mut nodes = vec![Node {
                    kind: NodeKind::ConfigMap,
                    deps: Vec::new(),
                }];
                for i in 1..=leaves {
                    nodes.push(Node {
                        kind: if i.is_multiple_of(3) {
                            NodeKind::ConfigMap
                        } else {
                            NodeKind::Manifest
                        },
                        deps: vec![0],
                    });
                }
                let per = leaves.div_ceil(bundles);
                for b in 0..bundles {
                    let deps: Vec<usize> =
                        (1 + b * per..(1 + (b + 1) * per).min(leaves + 1)).collect();
                    nodes.push(Node {
                        kind: NodeKind::Bundle,
                        deps,
                    });
                }
                let all = (leaves + 1..nodes.len()).collect();
                nodes.push(Node {
                    kind: NodeKind::Bundle,
                    deps: all,
                });
                nodes
            }
        }
    }
}

/// The object text of rule `i` (YAML, for source files and Nix).
fn object_yaml(i: usize, kind: NodeKind) -> String {
    match kind {
        NodeKind::ConfigMap => format!("KEY_{i}=value-{i}\n"),
        _ => format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: bench\nspec:\n  ports:\n    - port: {}\n",
            80 + i % 1000
        ),
    }
}

fn deps_toml(deps: &[usize]) -> String {
    let names: Vec<String> = deps.iter().map(|d| format!("\"r{d}\"")).collect();
    format!("deps = [{}]\n", names.join(", "))
}

/// Writes the kiln project of `nodes` under `dir`.
fn write_kiln(dir: &Path, nodes: &[Node], files: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut head = String::from("[project]\nname = \"peers\"\n");
    if files {
        head.push_str("include = [\"rules/*.toml\"]\n");
        for sub in ["rules", "src"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
    }
    let mut text = String::new();
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(text, "[rule.r{i}]");
        match (node.kind, files) {
            (NodeKind::ConfigMap, false) => {
                let _ = writeln!(
                    text,
                    "kind = \"configmap\"\nname = \"c{i}\"\nnamespace = \"bench\"\nliterals = {{ KEY_{i} = \"value-{i}\" }}"
                );
            }
            (NodeKind::Manifest, false) => {
                let _ = writeln!(
                    text,
                    "kind = \"manifest\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"Service\", metadata = {{ name = \"s{i}\", namespace = \"bench\" }}, spec = {{ ports = [ {{ port = {} }} ] }} }} ]",
                    80 + i % 1000
                );
            }
            (NodeKind::ConfigMap, true) => {
                let _ = writeln!(
                    text,
                    "kind = \"configmap\"\nname = \"c{i}\"\nnamespace = \"bench\"\nsrcs = [\"src/r{i}.env\"]"
                );
                std::fs::write(dir.join(format!("src/r{i}.env")), object_yaml(i, node.kind))
                    .unwrap();
            }
            (NodeKind::Manifest, true) => {
                let _ = writeln!(text, "kind = \"manifest\"\nsrcs = [\"src/r{i}.yaml\"]");
                std::fs::write(
                    dir.join(format!("src/r{i}.yaml")),
                    object_yaml(i, node.kind),
                )
                .unwrap();
            }
            (NodeKind::Bundle, _) => text.push_str("kind = \"bundle\"\n"),
        }
        if !node.deps.is_empty() {
            text.push_str(&deps_toml(&node.deps));
        }
        if files && (i % 100 == 99 || i + 1 == nodes.len()) {
            std::fs::write(dir.join(format!("rules/b{}.toml", i / 100)), &text).unwrap();
            text.clear();
        }
    }
    head.push_str(&text);
    std::fs::write(dir.join("kiln.toml"), head).unwrap();
}

/// Writes the same DAG as a Nix expression: one derivation per rule, its text an attribute
/// (read from the same source file in the many-files shape), its dependencies' outputs inputs.
fn write_nix(dir: &Path, nodes: &[Node], files: bool) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let mk = "mk = name: text: deps: derivation { inherit name text deps; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo \\\"$text\\\" > $out\" ]; };";
    let rule = |i: usize, node: &Node| -> String {
        let deps: Vec<String> = node.deps.iter().map(|d| format!("rules.r{d}")).collect();
        let text = match (node.kind, files) {
            (NodeKind::Bundle, _) => "\"\"".to_owned(),
            (k, true) => {
                let ext = if k == NodeKind::ConfigMap {
                    "env"
                } else {
                    "yaml"
                };
                std::fs::write(dir.join(format!("src/r{i}.{ext}")), object_yaml(i, k)).unwrap();
                format!("(builtins.readFile ../src/r{i}.{ext})")
            }
            (k, false) => format!("{:?}", object_yaml(i, k)).replace("${", "\\${"),
        };
        format!("  r{i} = mk \"r{i}\" {text} [ {} ];\n", deps.join(" "))
    };
    if files {
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let mut imports = String::new();
        for (b, chunk) in nodes.chunks(100).enumerate() {
            let mut t = String::from("{ mk, rules }: {\n");
            for (j, node) in chunk.iter().enumerate() {
                t.push_str(&rule(b * 100 + j, node));
            }
            t.push_str("}\n");
            std::fs::write(dir.join(format!("rules/b{b}.nix")), t).unwrap();
            let _ = writeln!(
                imports,
                "    (import ./rules/b{b}.nix {{ inherit mk rules; }})"
            );
        }
        std::fs::write(
            dir.join("default.nix"),
            format!(
                "let\n  {mk}\n  rules = builtins.foldl' (a: b: a // b) {{}} [\n{imports}  ];\nin builtins.attrValues rules\n"
            ),
        )
        .unwrap();
    } else {
        let mut t = format!("let\n  {mk}\n  rules = {{\n");
        for (i, node) in nodes.iter().enumerate() {
            t.push_str(&rule(i, node));
        }
        t.push_str("  };\nin builtins.attrValues rules\n");
        std::fs::write(dir.join("default.nix"), t).unwrap();
    }
}

/// Wall time and peak RSS (KiB) of one process, which must exit with one of `ok`.
fn run(cmd: Command, ok: &[i32]) -> (f64, u64) {
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let program = cmd.get_program().to_owned();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(rss_file.path())
        .arg(&program)
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        timed.current_dir(d);
    }
    let start = Instant::now();
    let out = timed
        .output()
        .expect("run /usr/bin/time (apt-get install time)");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.code().is_some_and(|c| ok.contains(&c)),
        "{program:?} {:?}: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(rss_file.path())
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (secs, rss)
}

/// min / median / max of a sample.
#[derive(Clone, Copy, Default)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }

    fn show(self) -> String {
        format!(
            "{} / **{}** / {}",
            secs(self.min),
            secs(self.median),
            secs(self.max)
        )
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn kiln(store: &Path, args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("KILN_STORE", store)
        .env("KILN_NO_PROGRESS", "1")
        .args(args)
        .arg(dir);
    c
}

fn nix(store: &Path, dir: &Path) -> Command {
    let mut c = Command::new("nix-instantiate");
    c.arg("--store")
        .arg(store)
        .arg("--quiet")
        .arg(dir.join("default.nix"))
        .env("NIX_STATE_DIR", store.join("state"))
        .env("NIX_LOG_DIR", store.join("log"))
        .env("HOME", store.join("home"))
        .stdout(std::process::Stdio::null());
    c
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn files(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count() as u64
}

/// One row of the build table.
struct BuildRow {
    shape: &'static str,
    rules: usize,
    kiln_cold: (f64, u64),
    nix_cold: (f64, u64),
    kiln_noop: Stats,
    nix_noop: Stats,
    kiln_noop_rss: u64,
    nix_noop_rss: u64,
    kiln_edit: Stats,
    nix_edit: Stats,
    kiln_edit_rss: u64,
    kiln_store: (u64, u64),
    nix_store: (u64, u64),
}

/// The index of the node of `kind` nearest to `near`.
fn nodes_kind(nodes: &[Node], kind: NodeKind, near: usize) -> usize {
    (0..nodes.len())
        .filter(|&i| nodes[i].kind == kind)
        .min_by_key(|&i| i.abs_diff(near))
        .expect("every shape has configmaps")
}

/// Changes configmap `i`'s value from `old` to `new`, in the kiln project and the Nix
/// expression alike (inline, or in the rule's source file).
fn edit_value(kdir: &Path, ndir: &Path, i: usize, files: bool, old: &str, new: &str) {
    let replace = |file: PathBuf, from: String, to: String| {
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text.matches(&from).count(),
            1,
            "{from} in {}",
            file.display()
        );
        std::fs::write(&file, text.replace(&from, &to)).unwrap();
    };
    if files {
        for dir in [kdir, ndir] {
            std::fs::write(
                dir.join(format!("src/r{i}.env")),
                format!("KEY_{i}={new}\n"),
            )
            .unwrap();
        }
    } else {
        replace(
            kdir.join("kiln.toml"),
            format!("\"{old}\""),
            format!("\"{new}\""),
        );
        replace(
            ndir.join("default.nix"),
            format!("={old}\\n"),
            format!("={new}\\n"),
        );
    }
}

/// Peak RSS (KiB) of a no-op build of a one-rule project: what the binary itself takes, which
/// the per-rule figures are counted above.
fn binary_rss(scratch: &Path) -> u64 {
    let dir = scratch.join("one-rule");
    let nodes = [Node {
        kind: NodeKind::ConfigMap,
        deps: Vec::new(),
    }];
    write_kiln(&dir.join("kiln"), &nodes, false);
    let store = dir.join("kiln-store");
    let build = ["build", "-q"];
    run(kiln(&store, &build, &dir.join("kiln")), &[0]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    (0..3)
        .map(|_| run(kiln(&store, &build, &dir.join("kiln")), &[0]).1)
        .max()
        .unwrap_or(0)
}

/// Writes out everything dirty (`sync`), so the next measured run pays only for its own data.
fn sync_all() {
    let _ = Command::new("sync").status();
}

fn bench_build(scratch: &Path, shape: Shape, n: usize, rounds: usize, keep: bool) -> BuildRow {
    let dir = scratch.join(format!("{}-{n}", shape.name().replace(['/', ' '], "-")));
    let nodes = shape.dag(n);
    let (kdir, ndir) = (dir.join("kiln"), dir.join("nix"));
    write_kiln(&kdir, &nodes, shape.with_files());
    write_nix(&ndir, &nodes, shape.with_files());
    let (kstore, nstore) = (dir.join("kiln-store"), dir.join("nix-store"));
    let build = ["build", "-q"];
    // Cold, alternating: kiln first, then Nix. Each starts with nothing dirty in the page
    // cache: kiln ends a build with one `syncfs`, which would otherwise also write out what
    // earlier runs (and the other tool) left dirty.
    sync_all();
    let kiln_cold = run(kiln(&kstore, &build, &kdir), &[0]);
    sync_all();
    let nix_cold = run(nix(&nstore, &ndir), &[0]);
    // The first no-op records the fingerprint's stat data; the racy window passes meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    run(kiln(&kstore, &build, &kdir), &[0]);
    let (mut kt, mut nt, mut kr, mut nr) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..rounds {
        let (t, r) = run(kiln(&kstore, &build, &kdir), &[0]);
        kt.push(t);
        kr = kr.max(r);
        let (t, r) = run(nix(&nstore, &ndir), &[0]);
        nt.push(t);
        nr = nr.max(r);
    }
    // One rule edited per round (the configmap nearest the middle, so its dependents rebuild
    // too), alternating the tools: kiln's fingerprint misses, so this is its full path.
    // The footprint of the cold build, before the edits add to either store.
    let kiln_store = (du(&kstore), files(&kstore));
    let nix_store = (du(&nstore.join("nix")), files(&nstore.join("nix")));
    let edited = nodes_kind(&nodes, NodeKind::ConfigMap, n / 2);
    let mut value = format!("value-{edited}");
    let (mut ke, mut ne, mut ker) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        let next = format!("value-{edited}-edit{round}");
        edit_value(&kdir, &ndir, edited, shape.with_files(), &value, &next);
        value = next;
        let (t, r) = run(kiln(&kstore, &build, &kdir), &[0]);
        ke.push(t);
        ker = ker.max(r);
        ne.push(run(nix(&nstore, &ndir), &[0]).0);
    }
    drop(nodes);
    let row = BuildRow {
        shape: shape.name(),
        rules: n,
        kiln_cold,
        nix_cold,
        kiln_noop: Stats::of(kt),
        nix_noop: Stats::of(nt),
        kiln_noop_rss: kr,
        nix_noop_rss: nr,
        kiln_edit: Stats::of(ke),
        nix_edit: Stats::of(ne),
        kiln_edit_rss: ker,
        kiln_store,
        nix_store,
    };
    // Kept until the run ends (the scratch directory goes then): deleting 10k+ files just
    // before the next shape's cold build makes ext4 slow to allocate inodes for a minute or
    // more (`recently_deleted` scans), which a deep chain, built one rule at a time, cannot
    // hide. Only the largest sizes are deleted at once, for disk space.
    if n >= 1_000_000 && !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    row
}

/// A base of `n` Deployments and Services and an overlay (namespace, labels, image tag, one
/// strategic patch), as kustomize directories and as a kiln project.
fn write_kustomize(dir: &Path, n: usize) {
    let base = dir.join("kustomize/base");
    let overlay = dir.join("kustomize/overlay");
    let kbase = dir.join("kiln/base");
    for d in [&base, &overlay, &kbase, &dir.join("kiln/overlay")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut resources = String::from("resources:\n");
    for i in 0..n {
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: app{i}}}\n  template:\n    metadata:\n      labels: {{app: app{i}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example/app:1.0.0\n          ports: [{{containerPort: 8080}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app{i}\nspec:\n  selector: {{app: app{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        );
        std::fs::write(base.join(format!("app{i}.yaml")), &text).unwrap();
        std::fs::write(kbase.join(format!("app{i}.yaml")), &text).unwrap();
        let _ = writeln!(resources, "  - app{i}.yaml");
    }
    std::fs::write(base.join("kustomization.yaml"), resources).unwrap();
    let patch =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app0\nspec:\n  replicas: 5\n";
    std::fs::write(overlay.join("patch.yaml"), patch).unwrap();
    std::fs::write(dir.join("kiln/overlay/patch.yaml"), patch).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources:\n  - ../base\nnamespace: production\nlabels:\n  - pairs: {team: shop}\nimages:\n  - name: registry.example/app\n    newTag: 2.0.0\npatches:\n  - path: patch.yaml\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("kiln/kiln.toml"),
        "[project]\nname = \"kustomize-peer\"\n[rule.base]\nkind = \"manifest\"\nsrcs = [\"base/*.yaml\"]\nrealize = false\n[rule.overlay]\nkind = \"overlay\"\ndeps = [\"base\"]\nsrcs = [\"overlay/patch.yaml\"]\nnamespace = \"production\"\nlabels = { team = \"shop\" }\nimages = { \"registry.example/app\" = \"2.0.0\" }\n",
    )
    .unwrap();
}

struct PairRow {
    what: String,
    peer: &'static str,
    peer_t: Stats,
    kiln_t: Stats,
}

fn bench_kustomize(scratch: &Path, n: usize, rounds: usize) -> Vec<PairRow> {
    let dir = scratch.join(format!("kustomize-{n}"));
    write_kustomize(&dir, n);
    let kdir = dir.join("kiln");
    let overlay = dir.join("kustomize/overlay");
    let (mut k, mut cold, mut noop) = (Vec::new(), Vec::new(), Vec::new());
    let warm = dir.join("store-warm");
    run(kiln(&warm, &["build", "-q"], &kdir), &[0]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    run(kiln(&warm, &["build", "-q"], &kdir), &[0]);
    for r in 0..rounds {
        let mut c = Command::new("kubectl");
        c.arg("kustomize")
            .arg(&overlay)
            .stdout(std::process::Stdio::null());
        k.push(run(c, &[0]).0);
        let store = dir.join(format!("store-{r}"));
        sync_all();
        cold.push(run(kiln(&store, &["build", "-q"], &kdir), &[0]).0);
        noop.push(run(kiln(&warm, &["build", "-q"], &kdir), &[0]).0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let k = Stats::of(k);
    vec![
        PairRow {
            what: format!("render base + overlay, {} objects, cold", 2 * n),
            peer: "kubectl kustomize",
            peer_t: k,
            kiln_t: Stats::of(cold),
        },
        PairRow {
            what: format!("render base + overlay, {} objects, unchanged", 2 * n),
            peer: "kubectl kustomize",
            peer_t: k,
            kiln_t: Stats::of(noop),
        },
    ]
}

/// 1,001 objects applied and diffed by kubectl and by kiln, each in its own namespace.
fn bench_realize(scratch: &Path, rounds: usize) -> Vec<PairRow> {
    let kc = cluster::kubeconfig(scratch);
    let stamp = std::process::id();
    let dir = scratch.join("realize");
    let (kns, lns) = (
        format!("peers-kubectl-{stamp}"),
        format!("peers-kiln-{stamp}"),
    );
    let objects = |ns: &str| {
        let mut t = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
        for i in 0..1000 {
            let _ = write!(
                t,
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{i}\n  namespace: {ns}\ndata:\n  key: value-{i}\n"
            );
        }
        t
    };
    std::fs::create_dir_all(dir.join("kiln/k8s")).unwrap();
    let file = dir.join("kubectl.yaml");
    std::fs::write(&file, objects(&kns)).unwrap();
    std::fs::write(dir.join("kiln/k8s/objects.yaml"), objects(&lns)).unwrap();
    std::fs::write(
        dir.join("kiln/kiln.toml"),
        "[project]\nname = \"peers-realize\"\n[rule.objects]\nkind = \"manifest\"\nsrcs = [\"k8s/objects.yaml\"]\n",
    )
    .unwrap();
    let store = dir.join("store");
    let ldir = dir.join("kiln");
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .arg("-f")
            .arg(&file);
        c.stdout(std::process::Stdio::null());
        c
    };
    let kiln_rl = |args: &[&str]| {
        let mut c = kiln(&store, args, &ldir);
        c.arg("--kubeconfig").arg(&kc);
        c.stdout(std::process::Stdio::null());
        c
    };
    let apply = ["apply", "-q", "--yes", "--no-wait", "--parallel", "32"];
    run(kubectl(&["apply", "--server-side"]), &[0]);
    run(kiln_rl(&apply), &[0]);
    let (mut kd, mut lp, mut ka, mut la) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        kd.push(run(kubectl(&["diff", "--server-side"]), &[0]).0);
        lp.push(run(kiln_rl(&["plan", "-q", "--detailed-exitcode"]), &[0]).0);
        ka.push(run(kubectl(&["apply", "--server-side"]), &[0]).0);
        la.push(run(kiln_rl(&apply), &[0]).0);
    }
    vec![
        PairRow {
            what: "no-op diff / plan, 1,001 objects".into(),
            peer: "kubectl diff --server-side",
            peer_t: Stats::of(kd),
            kiln_t: Stats::of(lp),
        },
        PairRow {
            what: "no-op apply, 1,001 objects".into(),
            peer: "kubectl apply --server-side",
            peer_t: Stats::of(ka),
            kiln_t: Stats::of(la),
        },
    ]
}

fn tool_version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "not installed".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k / 1024 / 1024);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
        .map(|l| {
            l.trim_start_matches("PRETTY_NAME=")
                .trim_matches('"')
                .to_owned()
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    format!(
        "{} cores ({cpu}), {mem} GiB RAM, {os}; load average {load} when the run began (above 0.5: the figures carry other work's noise)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

/// Whether per-rule cost stays within a factor 1.5 from the smallest size with a cold build
/// over 0.1 s to the largest: linear, or by how much it grows.
fn linearity(rows: &[&BuildRow], pick: impl Fn(&BuildRow) -> f64) -> String {
    let per: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.kiln_cold.0 > 0.1)
        .map(|r| (r.rules, pick(r) / r.rules as f64))
        .collect();
    match (per.first(), per.last()) {
        (Some(a), Some(b)) if a.0 != b.0 => {
            let ratio = b.1 / a.1;
            if ratio < 1.5 {
                format!("linear (per rule ×{ratio:.2} from {} to {})", a.0, b.0)
            } else {
                format!("superlinear (per rule ×{ratio:.2} from {} to {})", a.0, b.0)
            }
        }
        _ => "one size only".into(),
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = Vec::new();
    let mut rounds = 5;
    let mut realize = true;
    let mut shapes: Vec<Shape> = Shape::ALL.to_vec();
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let mut keep: Option<PathBuf> = None;
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            "--no-realize" => realize = false,
            "--shapes" => {
                let wanted = it.next().expect("--shapes one-file,many-files,…");
                shapes = Shape::ALL
                    .into_iter()
                    .filter(|s| {
                        let slug = s.name().replace(' ', "-");
                        wanted
                            .split(',')
                            .any(|w| !w.is_empty() && slug.starts_with(w))
                    })
                    .collect();
                assert!(!shapes.is_empty(), "no shape named in `{wanted}`");
            }
            "--out" => out = PathBuf::from(it.next().expect("--out FILE")),
            "--keep" => keep = Some(PathBuf::from(it.next().expect("--keep DIR"))),
            "--bench" => {}
            n => {
                if let Ok(n) = n.parse() {
                    sizes.push(n)
                }
            }
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000, 100_000];
    }
    let temporary = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let scratch: &Path = match &keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).unwrap();
            dir
        }
        None => temporary.path(),
    };
    let started = Instant::now();
    let base_rss = binary_rss(scratch);
    let above = |rss: u64, rules: usize| rss.saturating_sub(base_rss) as f64 / rules as f64;
    let mut rows = Vec::new();
    for &n in &sizes {
        for &shape in &shapes {
            let row = bench_build(scratch, shape, n, rounds, keep.is_some());
            println!(
                "{:>16} {:>8}: kiln cold {} no-op {} ({}); nix cold {} no-op {} ({})",
                row.shape,
                row.rules,
                secs(row.kiln_cold.0),
                secs(row.kiln_noop.median),
                mib(row.kiln_noop_rss),
                secs(row.nix_cold.0),
                secs(row.nix_noop.median),
                mib(row.nix_noop_rss)
            );
            rows.push(row);
        }
    }
    let mut pairs = bench_kustomize(scratch, 500, rounds);
    if realize {
        pairs.extend(bench_realize(scratch, rounds));
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: kiln against its peers\n");
    let _ = writeln!(
        md,
        "Written by `cargo bench --bench peers -- {}` (see `benches/peers.sh`) on {} UTC, in {:.0} min.\n",
        raw.iter().filter(|a| *a != "--bench").cloned().collect::<Vec<_>>().join(" "),
        chrono_like_now(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Peers: {}; {}",
        tool_version("nix-instantiate", &["--version"]),
        tool_version("kubectl", &["version", "--client"])
    );
    let _ = writeln!(
        md,
        "- kiln {} (release build). Times are wall clock, min / **median** / max of {rounds} rounds that alternate the tools; RSS is the peak of the process (GNU time).\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        md,
        "## Build: kiln against Nix `nix-instantiate` on the same DAG\n"
    );
    let _ = writeln!(md, "Cold: an empty store (one run each). No-op: everything in the store, nothing changed (kiln: `kiln build`; Nix: `nix-instantiate` again, writing nothing new).\n");
    let _ = writeln!(md, "A one-rule project's no-op build peaks at {}: the binary itself. The per-rule columns count the RSS above it.\n", mib(base_rss));
    let _ = writeln!(md, "| shape | rules | kiln no-op | Nix no-op | ratio | kiln no-op RSS | per rule | Nix RSS | kiln cold | rules/s | Nix cold | ratio | kiln cold RSS | per rule |");
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1}× | {} | {:.2} KiB | {} | {} | {:.0} | {} | {:.1}× | {} | {:.2} KiB |",
            r.shape,
            r.rules,
            r.kiln_noop.show(),
            r.nix_noop.show(),
            r.nix_noop.median / r.kiln_noop.median,
            mib(r.kiln_noop_rss),
            above(r.kiln_noop_rss, r.rules),
            mib(r.nix_noop_rss),
            secs(r.kiln_cold.0),
            r.rules as f64 / r.kiln_cold.0,
            secs(r.nix_cold.0),
            r.nix_cold.0 / r.kiln_cold.0,
            mib(r.kiln_cold.1),
            above(r.kiln_cold.1, r.rules),
        );
    }
    let _ = writeln!(md, "\n### One rule edited\n");
    let _ = writeln!(md, "Each round changes one configmap's value (the one nearest the middle of the DAG, so its dependents change too) and builds again, alternating the tools. kiln's fingerprint misses: this is its full path, which loads the project and derives every rule.\n");
    let _ = writeln!(
        md,
        "| shape | rules | kiln | Nix | ratio | kiln RSS | per rule |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1}× | {} | {:.2} KiB |",
            r.shape,
            r.rules,
            r.kiln_edit.show(),
            r.nix_edit.show(),
            r.nix_edit.median / r.kiln_edit.median,
            mib(r.kiln_edit_rss),
            above(r.kiln_edit_rss, r.rules),
        );
    }
    let _ = writeln!(md, "\n### Store footprint after the cold build\n");
    let _ = writeln!(
        md,
        "| shape | rules | kiln store | bytes/rule | files | Nix store | bytes/rule | files |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {} |",
            r.shape,
            r.rules,
            mib(r.kiln_store.0 / 1024),
            r.kiln_store.0 as f64 / r.rules as f64,
            r.kiln_store.1,
            mib(r.nix_store.0 / 1024),
            r.nix_store.0 as f64 / r.rules as f64,
            r.nix_store.1,
        );
    }
    let _ = writeln!(md, "\n### How the cost grows\n");
    let _ = writeln!(
        md,
        "| shape | kiln cold | kiln no-op | kiln no-op RSS | Nix cold | Nix no-op |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for shape in Shape::ALL {
        let of: Vec<&BuildRow> = rows.iter().filter(|r| r.shape == shape.name()).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            shape.name(),
            linearity(&of, |r| r.kiln_cold.0),
            linearity(&of, |r| r.kiln_noop.median),
            linearity(&of, |r| r.kiln_noop_rss as f64),
            linearity(&of, |r| r.nix_cold.0),
            linearity(&of, |r| r.nix_noop.median),
        );
    }
    let _ = writeln!(md, "\n## Rendering and realizing: kiln against kubectl\n");
    let _ = writeln!(md, "| workload | peer | peer | kiln | ratio |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for p in &pairs {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {:.1}× |",
            p.what,
            p.peer,
            p.peer_t.show(),
            p.kiln_t.show(),
            p.peer_t.median / p.kiln_t.median
        );
    }
    print!("\n{md}");
    std::fs::write(&out, md).unwrap();
    println!("\nwrote {}", out.display());
}

/// The date and time now, from `date` (no date crate for one line of a report).
fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
