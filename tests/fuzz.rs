//! Stable-Rust fuzzing (proptest) of everything that reads user or cache input: the TOML
//! loader, the YAML/object checker, interpolation and the archive reader. Each must return an
//! error or a value, never panic, and within bounded time. CI runs `KILN_FUZZ_CASES` (default
//! 256) inputs per target; `scripts/fuzz` runs many more and prints the count.

use std::io::Write;
use std::path::Path;

use kiln_core::interpolate::Scope;
use kiln_core::RelPath;
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Pieces of a kiln.toml, valid and not, joined at random.
fn toml_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[project]\nname = \"p\"\n".to_owned()),
        Just("[project]\n".to_owned()),
        Just("include = [\"*.toml\"]\n".to_owned()),
        Just("[vars]\nns = \"x\"\nn = 3\n".to_owned()),
        Just("[env.prod]\nns = \"y\"\n".to_owned()),
        Just("[rule.a]\nkind = \"manifest\"\n".to_owned()),
        Just("[rule.b]\nkind = \"bundle\"\ndeps = [\"a\"]\n".to_owned()),
        Just("[rule.c]\nkind = \"configmap\"\nname = \"${var.ns}\"\n".to_owned()),
        Just("deps = [\"a\", \"b\", \"zz\"]\n".to_owned()),
        Just("envs = [\"prod\", \"nope\"]\n".to_owned()),
        Just("srcs = [\"../x\", \"/etc/passwd\", \"**\"]\n".to_owned()),
        Just("objects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"${var.n}\" } } ]\n".to_owned()),
        "[a-z\\[\\]\"=., \n{}$]{0,40}",
        "\\PC{0,30}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// YAML-ish text: objects, flow collections, anchors, tags, and noise.
fn yaml_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".to_owned()),
        Just("---\n".to_owned()),
        Just("kind: List\nitems: [{apiVersion: v1, kind: X, metadata: {name: b}}]\n".to_owned()),
        Just("a: &x [1, 2]\nb: *x\n".to_owned()),
        Just("c: !!binary aGVsbG8=\n".to_owned()),
        Just("d: [[[[[[\n".to_owned()),
        Just("e: {f: {g: {h: 1}}}\n".to_owned()),
        Just("k: 1\nk: 2\n".to_owned()),
        Just(
            "apiVersion: a/b/c\nkind: ../x\nmetadata: {name: \"UPPER\", namespace: 3}\n".to_owned()
        ),
        "[a-z:\\[\\]{}\\-,&*!#'\" \n]{0,60}",
        "\\PC{0,40}",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

/// Text with `${...}` references, well-formed or not.
fn interpolation_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("${var.ns}".to_owned()),
        Just("${var.missing}".to_owned()),
        Just("${dep.a.name}".to_owned()),
        Just("${kiln.env}".to_owned()),
        Just("${kiln.nope}".to_owned()),
        Just("$${".to_owned()),
        Just("${".to_owned()),
        Just("${var.".to_owned()),
        Just("}".to_owned()),
        "[a-z$.{} ]{0,20}",
        "\\PC{0,20}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn tar_header(name: &str, kind: u8, size: u64, link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    let _ = h.set_path(name);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    let _ = h.set_link_name(link);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Tar streams with hostile entries, zstd-compressed, then possibly mutated.
fn archive_bytes() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        prop_oneof![
            Just("a".to_owned()),
            Just("../up".to_owned()),
            Just("/abs".to_owned()),
            Just("d/./x".to_owned()),
            Just("l".to_owned()),
            "[a-z/.]{1,12}",
        ],
        prop_oneof![
            Just(b'0'),
            Just(b'2'),
            Just(b'1'),
            Just(b'3'),
            Just(b'5'),
            Just(b'6'),
            any::<u8>()
        ],
        prop_oneof![Just(0u64), Just(5), Just(1 << 40), any::<u64>()],
        prop_oneof![
            Just(String::new()),
            Just("../../etc".to_owned()),
            Just("a".to_owned())
        ],
        prop::collection::vec(any::<u8>(), 0..64),
    );
    (
        prop::collection::vec(entry, 0..6),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(entries, flips)| {
            let mut raw = Vec::new();
            for (name, kind, size, link, content) in entries {
                raw.extend(tar_header(&name, kind, size, &link));
                raw.extend(&content);
                raw.resize(raw.len().div_ceil(512) * 512, 0);
            }
            raw.extend([0u8; 1024]);
            let mut enc = zstd::Encoder::new(Vec::new(), 1).unwrap();
            enc.write_all(&raw).unwrap();
            let mut bytes = enc.finish().unwrap();
            for (at, bit) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= bit;
                }
            }
            bytes
        })
}

fn load(dir: &Path, text: &str) {
    std::fs::write(dir.join("kiln.toml"), text).unwrap();
    let _ = kiln_core::load::load_project(dir);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_toml_loader_never_panics(text in toml_text()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("more.toml"), "[rule.m]\nkind = \"manifest\"\n").unwrap();
        load(dir.path(), &text);
    }

    #[test]
    fn the_yaml_and_object_checker_never_panics(text in yaml_text()) {
        let path = RelPath::new("f.yaml").unwrap();
        if let Ok(docs) = kiln_rules::objects::parse_documents(&text, &path) {
            for d in &docs {
                let _ = kiln_rules::objects::check_object(d);
            }
        }
    }

    #[test]
    fn interpolation_never_panics(text in interpolation_text()) {
        let vars: std::collections::BTreeMap<String, Value> =
            [("ns".to_owned(), Value::from("x"))].into();
        let exports = kiln_core::exports::Exports::from([("name".to_owned(), "n".to_owned())]);
        let scope = Scope {
            env: "prod",
            project: "p",
            vars: Some(&vars),
            deps: [("a", Some(&exports))].into(),
        };
        let _ = kiln_core::interpolate::references(&text);
        let _ = scope.interpolate_text(&text);
        let _ = scope.interpolate_str(&text);
    }

    #[test]
    fn the_archive_reader_never_panics(bytes in archive_bytes()) {
        let limits = kiln_store::archive::UnpackLimits { max_total_bytes: 1 << 20, max_entries: 100 };
        if let Ok(tree) = kiln_store::archive::unpack(&bytes, limits) {
            prop_assert!(tree.validate().is_ok());
        }
    }
}
