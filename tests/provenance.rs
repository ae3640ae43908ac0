//! `kiln provenance`: an in-toto SLSA v1 statement for a built artifact, signed and verified.

mod common;

use common::{small_platform, Sandbox};
use serde_json::Value;
use sha2::Digest as _;

fn provenance(s: &Sandbox, extra: &[&str]) -> std::process::Output {
    s.kiln().args(["provenance"]).args(extra).output().unwrap()
}

#[test]
fn a_statement_describes_the_artifact_its_inputs_and_its_builder() {
    let s = Sandbox::new();
    small_platform(&s);
    let report = s.build(&["--env", "staging"]);
    let project = s.project().display().to_string();
    let out = provenance(&s, &["api", &project, "--env", "staging"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let api = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "api")
        .unwrap();
    let output = api["output"]
        .as_str()
        .unwrap()
        .trim_start_matches("blake3:");
    assert_eq!(st["subject"][0]["name"], "api");
    assert_eq!(st["subject"][0]["digest"]["blake3"], output);
    // The archive's sha256, checkable with any tool.
    let archive = s
        .store()
        .join("objects")
        .join(&output[..2])
        .join(format!("{output}.tar.zst"));
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(archive).unwrap()));
    assert_eq!(st["subject"][0]["digest"]["sha256"], sha);
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["buildType"], "https://kiln.dev/provenance/rule/v1");
    assert_eq!(def["externalParameters"]["rule"], "api");
    assert_eq!(def["internalParameters"]["derivation"], api["derivation"]);
    let uris: Vec<&str> = def["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uri"].as_str().unwrap())
        .collect();
    assert!(uris.contains(&"file:k8s/api.yaml"), "{uris:?}");
    assert!(
        uris.contains(&"kiln:rule/config") && uris.contains(&"kiln:rule/ns"),
        "{uris:?}"
    );
    let run = &st["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "https://kiln.dev/builder/local/v1");
    assert_eq!(run["builder"]["version"]["kiln"], env!("CARGO_PKG_VERSION"));
    assert!(run["metadata"]["startedOn"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(run["metadata"]["invocationId"], api["derivation"]);
}

#[test]
fn a_signed_envelope_verifies_and_one_changed_byte_fails() {
    let s = Sandbox::new();
    small_platform(&s);
    s.build(&["--env", "staging"]);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("release.key");
    let out = s
        .kiln()
        .args(["cache", "keygen", "release", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let project = s.project().display().to_string();
    let key_arg = key.display().to_string();
    let out = provenance(
        &s,
        &["api", &project, "--env", "staging", "--sign", &key_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envelope: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(envelope["signatures"][0]["keyid"], "release");
    let file = keys.path().join("api.intoto.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let file_arg = file.display().to_string();
    let ok = provenance(&s, &["--verify", &file_arg, "--trusted-key", &public]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("verified: api"));

    // One changed byte of the statement.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let i = payload.iter().position(|&c| c == b'a').unwrap();
    payload[i] = b'b';
    let mut tampered = envelope.clone();
    tampered["payload"] = Value::String(b64.encode(&payload));
    std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let bad = provenance(&s, &["--verify", &file_arg, "--trusted-key", &public]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not verify"));
}
