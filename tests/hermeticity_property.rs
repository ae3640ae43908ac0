//! The hermeticity property (issue 8): on generated projects, a rule's derivation hash changes
//! exactly when something it declares (or a dependency's output) changes. Perturbing anything
//! else — other files, other variables, the environment's name, the process environment, the
//! checkout path, `-j` — leaves it and its output unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;

/// What a generated rule reads.
#[derive(Debug, Clone)]
enum Shape {
    /// A template reading `kiln.env`, spelled one of three ways.
    KilnEnv(usize),
    /// A template reading `var.v<i>`.
    TemplateVar(usize),
    /// A manifest interpolating `${var.v<i>}`.
    ManifestVar(usize),
    /// A configmap over its own source file.
    Source,
    /// A bundle of earlier rules (indices into the rule list, before this one).
    Bundle(Vec<usize>),
}

const VARS: usize = 3;
const KILN_ENV_SPELLINGS: [&str; 3] = [
    "{{ kiln.env }}",
    "{{ kiln[\"env\"] }}",
    "{% set k = kiln %}{{ k.env }}",
];

fn shapes() -> impl Strategy<Value = Vec<Shape>> {
    (2usize..7).prop_flat_map(|n| {
        let per_rule: Vec<BoxedStrategy<Shape>> = (0..n)
            .map(|i| {
                let leaf = prop_oneof![
                    (0..KILN_ENV_SPELLINGS.len()).prop_map(Shape::KilnEnv),
                    (0..VARS).prop_map(Shape::TemplateVar),
                    (0..VARS).prop_map(Shape::ManifestVar),
                    Just(Shape::Source),
                ];
                if i == 0 {
                    leaf.boxed()
                } else {
                    prop_oneof![
                        3 => leaf,
                        1 => proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 1..=i)
                            .prop_map(Shape::Bundle),
                    ]
                    .boxed()
                }
            })
            .collect();
        per_rule
    })
}

/// Writes the project for `shapes` into `dir`, with variable values `vars` and each source
/// file's content `content`.
fn write_project(dir: &Path, shapes: &[Shape], vars: &[String], content: &str) {
    let mut toml = String::from("[project]\nname = \"gen\"\n[vars]\n");
    for (i, v) in vars.iter().enumerate() {
        toml.push_str(&format!("v{i} = \"{v}\"\n"));
    }
    toml.push_str("[env.staging]\n[env.production]\n");
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for (k, shape) in shapes.iter().enumerate() {
        toml.push_str(&format!("[rule.r{k}]\n"));
        match shape {
            Shape::KilnEnv(s) => {
                toml.push_str(&format!("kind = \"template\"\nsrcs = [\"files/t{k}.txt.j2\"]\nstrip_prefix = \"files\"\n"));
                write(
                    &format!("files/t{k}.txt.j2"),
                    &format!("env: {}\n", KILN_ENV_SPELLINGS[*s]),
                );
            }
            Shape::TemplateVar(i) => {
                toml.push_str(&format!("kind = \"template\"\nsrcs = [\"files/t{k}.txt.j2\"]\nstrip_prefix = \"files\"\n"));
                write(
                    &format!("files/t{k}.txt.j2"),
                    &format!("v: {{{{ var.v{i} }}}}\n"),
                );
            }
            Shape::ManifestVar(i) => {
                toml.push_str(&format!("kind = \"manifest\"\nnamespace = \"gen\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"c{k}\" }}, data = {{ v = \"${{var.v{i}}}\" }} }} ]\n"));
            }
            Shape::Source => {
                toml.push_str(&format!("kind = \"configmap\"\nname = \"cm{k}\"\nnamespace = \"gen\"\nsrcs = [\"files/s{k}.env\"]\n"));
                write(&format!("files/s{k}.env"), &format!("K={content}\n"));
            }
            Shape::Bundle(deps) => {
                let deps: Vec<String> = deps.iter().map(|d| format!("\"r{d}\"")).collect();
                toml.push_str(&format!(
                    "kind = \"bundle\"\nlayout = \"by-rule\"\ndeps = [{}]\n",
                    deps.join(", ")
                ));
            }
        }
    }
    write("kiln.toml", &toml);
}

/// Runs `kiln build --json`; returns rule -> (derivation, output).
fn build(
    project: &Path,
    store: &Path,
    env: &str,
    extra: &[&str],
    process_env: &[(&str, &str)],
) -> BTreeMap<String, (String, String)> {
    let mut cmd = assert_cmd::Command::cargo_bin("kiln").unwrap();
    cmd.env("KILN_STORE", store)
        .env("KILN_NO_PROGRESS", "1")
        .arg("build")
        .arg(project)
        .args(["--json", "--env", env])
        .args(extra);
    for (k, v) in process_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    common::hashes(&report)
}

/// The rules whose derivation must change when the rules in `readers` read a changed input:
/// the readers and, through bundles (which take their dependencies' files), their dependents.
fn affected(shapes: &[Shape], readers: &BTreeSet<usize>) -> BTreeSet<String> {
    let mut hit = readers.clone();
    for (k, shape) in shapes.iter().enumerate() {
        if let Shape::Bundle(deps) = shape {
            if deps.iter().any(|d| hit.contains(d)) {
                hit.insert(k);
            }
        }
    }
    hit.into_iter().map(|k| format!("r{k}")).collect()
}

fn readers(shapes: &[Shape], reads: impl Fn(&Shape) -> bool) -> BTreeSet<usize> {
    shapes
        .iter()
        .enumerate()
        .filter(|(_, s)| reads(s))
        .map(|(k, _)| k)
        .collect()
}

fn check(
    what: &str,
    base: &BTreeMap<String, (String, String)>,
    now: &BTreeMap<String, (String, String)>,
    expected: &BTreeSet<String>,
) -> Result<(), TestCaseError> {
    let changed: BTreeSet<String> = base
        .iter()
        .filter(|(rule, (drv, _))| now[*rule].0 != *drv)
        .map(|(rule, _)| rule.clone())
        .collect();
    prop_assert_eq!(&changed, expected, "{}: derivations that changed", what);
    for (rule, (_, out)) in base {
        if !expected.contains(rule) {
            prop_assert_eq!(
                &now[rule].1,
                out,
                "{}: output of unaffected `{}`",
                what,
                rule
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn only_declared_inputs_move_a_derivation(shapes in shapes()) {
        let scratch = tempfile::tempdir().unwrap();
        let (a, b, store) = (scratch.path().join("a"), scratch.path().join("elsewhere/b"), scratch.path().join("store"));
        let vars: Vec<String> = (0..VARS).map(|i| format!("value{i}")).collect();
        write_project(&a, &shapes, &vars, "one");
        let base = build(&a, &store, "staging", &[], &[]);
        let none = BTreeSet::new();

        // Not declared by anyone: the checkout path, -j, the process environment, other files.
        write_project(&b, &shapes, &vars, "one");
        check("checkout path", &base, &build(&b, &store, "staging", &["-j", "1"], &[]), &none)?;
        check("process environment", &base, &build(&a, &store, "staging", &[], &[("KILN_NOISE", "1"), ("HOME", "/nonexistent"), ("LANG", "C")]), &none)?;
        std::fs::create_dir_all(a.join("files")).unwrap();
        std::fs::write(a.join("files/unrelated.txt"), "noise").unwrap();
        std::fs::write(a.join("README.md"), "noise").unwrap();
        check("an unrelated file", &base, &build(&a, &store, "staging", &["-j", "2"], &[]), &none)?;

        // The environment's name: exactly the rules reading `kiln.env`, however spelled.
        let env_readers = readers(&shapes, |s| matches!(s, Shape::KilnEnv(_)));
        check("the environment's name", &base, &build(&a, &store, "production", &[], &[]), &affected(&shapes, &env_readers))?;

        // Each variable: exactly its readers.
        for i in 0..VARS {
            let mut changed = vars.clone();
            changed[i] = format!("other{i}");
            write_project(&b, &shapes, &changed, "one");
            let var_readers = readers(&shapes, |s| matches!(s, Shape::TemplateVar(j) | Shape::ManifestVar(j) if *j == i));
            check(&format!("var.v{i}"), &base, &build(&b, &store, "staging", &[], &[]), &affected(&shapes, &var_readers))?;
        }

        // Source files: exactly the rules that declare them.
        write_project(&b, &shapes, &vars, "two");
        let src_readers = readers(&shapes, |s| matches!(s, Shape::Source));
        check("source content", &base, &build(&b, &store, "staging", &[], &[]), &affected(&shapes, &src_readers))?;
    }
}
