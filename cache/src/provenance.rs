//! Provenance of an artifact: an in-toto Statement v1 with a SLSA Provenance v1 predicate,
//! optionally wrapped in a DSSE envelope signed with a cache key (`keys`).
//!
//! The types are the few fields kiln fills, with the specifications' field names; golden tests
//! pin them. Digests: `blake3` is kiln's tree identity (the output hash); the subject also
//! carries the `sha256` of the artifact's archive, which any tool can check.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::CacheError;
use crate::keys::{PublicKey, SecretKey};

/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1 `predicateType`.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// kiln's build type: one rule built from its canonical derivation.
pub const BUILD_TYPE: &str = "https://kiln.dev/provenance/rule/v1";
/// The builder id of a local kiln build.
pub const BUILDER_ID: &str = "https://kiln.dev/builder/local/v1";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A digest set: algorithm -> lowercase hex.
pub type DigestSet = BTreeMap<String, String>;

/// An in-toto resource descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    /// A name (subjects) ...
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// ... or a URI (dependencies).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uri: Option<String>,
    /// Its digests.
    pub digest: DigestSet,
}

/// The in-toto Statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The artifacts the statement is about.
    pub subject: Vec<ResourceDescriptor>,
    /// [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The SLSA provenance.
    pub predicate: Provenance,
}

/// SLSA Provenance v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// What was built, from what.
    #[serde(rename = "buildDefinition")]
    pub build_definition: BuildDefinition,
    /// Who built it, and when.
    #[serde(rename = "runDetails")]
    pub run_details: RunDetails,
}

/// SLSA `buildDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`].
    #[serde(rename = "buildType")]
    pub build_type: String,
    /// What the user controls: project, environment, rule, kind.
    #[serde(rename = "externalParameters")]
    pub external_parameters: serde_json::Value,
    /// What kiln fixes: the derivation hash and the kind's version.
    #[serde(rename = "internalParameters")]
    pub internal_parameters: serde_json::Value,
    /// Sources and dependency outputs, with their digests.
    #[serde(rename = "resolvedDependencies")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA `runDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetails {
    /// The builder.
    pub builder: Builder,
    /// Invocation metadata.
    pub metadata: RunMetadata,
}

/// SLSA `builder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    /// [`BUILDER_ID`].
    pub id: String,
    /// Versions of the builder's parts.
    pub version: BTreeMap<String, String>,
}

/// SLSA `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// The derivation hash: one invocation per derivation.
    #[serde(rename = "invocationId")]
    pub invocation_id: String,
    /// RFC 3339.
    #[serde(rename = "startedOn", skip_serializing_if = "Option::is_none", default)]
    pub started_on: Option<String>,
    /// RFC 3339.
    #[serde(
        rename = "finishedOn",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub finished_on: Option<String>,
}

/// What the statement is made from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Project name.
    pub project: String,
    /// Environment.
    pub env: String,
    /// Rule name.
    pub rule: String,
    /// The canonical derivation record (its `kind`, `kind_version`, `srcs`, `deps`).
    pub derivation: serde_json::Value,
    /// Derivation hash (`blake3:…`).
    pub derivation_hash: String,
    /// Output hash, hex.
    pub output_blake3: String,
    /// sha256 of the archive, hex.
    pub archive_sha256: String,
    /// Who built it: kiln version, host, start and end, when the store knows.
    pub built: Option<kiln_store::BuildInfo>,
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("blake3:").to_owned()
}

/// The provenance statement of one artifact.
pub fn statement(f: &Facts) -> Statement {
    let d = &f.derivation;
    let mut deps = Vec::new();
    for s in d["srcs"].as_array().into_iter().flatten() {
        deps.push(ResourceDescriptor {
            name: None,
            uri: Some(format!("file:{}", s["path"].as_str().unwrap_or_default())),
            digest: [(
                "blake3".to_owned(),
                hex_of(s["digest"].as_str().unwrap_or_default()),
            )]
            .into(),
        });
    }
    for (name, out) in d["deps"].as_object().into_iter().flatten() {
        deps.push(ResourceDescriptor {
            name: None,
            uri: Some(format!("kiln:rule/{name}")),
            digest: [(
                "blake3".to_owned(),
                hex_of(out.as_str().unwrap_or_default()),
            )]
            .into(),
        });
    }
    let mut version: BTreeMap<String, String> = BTreeMap::new();
    version.insert(
        "kiln".into(),
        f.built
            .as_ref()
            .map_or_else(|| env!("CARGO_PKG_VERSION").to_owned(), |b| b.kiln.clone()),
    );
    if let Some(b) = &f.built {
        version.insert("host".into(), b.host.clone());
    }
    Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![ResourceDescriptor {
            name: Some(f.rule.clone()),
            uri: None,
            digest: [
                ("blake3".to_owned(), f.output_blake3.clone()),
                ("sha256".to_owned(), f.archive_sha256.clone()),
            ]
            .into(),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: serde_json::json!({
                    "project": f.project,
                    "env": f.env,
                    "rule": f.rule,
                    "kind": d["kind"],
                }),
                internal_parameters: serde_json::json!({
                    "derivation": f.derivation_hash,
                    "kind_version": d["kind_version"],
                }),
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: BUILDER_ID.into(),
                    version,
                },
                metadata: RunMetadata {
                    invocation_id: f.derivation_hash.clone(),
                    started_on: f.built.as_ref().map(|b| b.started.clone()),
                    finished_on: f.built.as_ref().map(|b| b.finished.clone()),
                },
            },
        },
    }
}

/// A DSSE signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The key's name.
    pub keyid: String,
    /// base64 ed25519 signature of the PAE.
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// base64 of the statement's JSON.
    pub payload: String,
    /// Signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `statement` signed by `key`.
pub fn sign(statement: &Statement, key: &SecretKey) -> Envelope {
    let payload = serde_json::to_vec(statement).expect("a statement is JSON");
    Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: STANDARD.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: key.name.clone(),
            sig: key.sign(&pae(PAYLOAD_TYPE, &payload)),
        }],
    }
}

/// The statement of an envelope that one of `trusted` signed; an error naming why not.
pub fn verify(envelope: &Envelope, trusted: &[PublicKey]) -> Result<Statement, CacheError> {
    let refuse = |why: String| CacheError::Key(format!("the envelope does not verify: {why}"));
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(refuse(format!("payload type `{}`", envelope.payload_type)));
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|e| refuse(format!("payload is not base64: {e}")))?;
    let message = pae(&envelope.payload_type, &payload);
    let signed = envelope.signatures.iter().any(|s| {
        trusted
            .iter()
            .any(|k| k.name == s.keyid && k.verifies(&message, &s.sig))
    });
    if !signed {
        let names: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect();
        return Err(refuse(format!(
            "no valid signature by a trusted key (signed by: {})",
            if names.is_empty() {
                "nobody".to_owned()
            } else {
                names.join(", ")
            }
        )));
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| refuse(format!("the payload is not a statement: {e}")))?;
    if statement.statement_type != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(refuse("not an in-toto SLSA v1 statement".into()));
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            project: "shop".into(),
            env: "staging".into(),
            rule: "api".into(),
            derivation: serde_json::json!({
                "kind": "manifest", "kind_version": 1,
                "srcs": [{"digest": "blake3:aa", "executable": false, "path": "k8s/api.yaml"}],
                "deps": {"config": "blake3:bb"}
            }),
            derivation_hash: "blake3:cc".into(),
            output_blake3: "dd".into(),
            archive_sha256: "ee".into(),
            built: Some(kiln_store::BuildInfo {
                kiln: "0.1.0".into(),
                host: "ci-7".into(),
                started: "2026-12-01T10:00:00Z".into(),
                finished: "2026-12-01T10:00:01Z".into(),
                duration_ms: 1000.0,
            }),
        }
    }

    /// Golden: the statement's JSON, with the SLSA v1 field names.
    #[test]
    fn the_statement_is_pinned() {
        let json = serde_json::to_string(&statement(&facts())).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"api","digest":{"blake3":"dd","sha256":"ee"}}],"#,
                r#""predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://kiln.dev/provenance/rule/v1","#,
                r#""externalParameters":{"env":"staging","kind":"manifest","project":"shop","rule":"api"},"internalParameters":{"derivation":"blake3:cc","kind_version":1},"#,
                r#""resolvedDependencies":[{"uri":"file:k8s/api.yaml","digest":{"blake3":"aa"}},{"uri":"kiln:rule/config","digest":{"blake3":"bb"}}]},"#,
                r#""runDetails":{"builder":{"id":"https://kiln.dev/builder/local/v1","version":{"host":"ci-7","kiln":"0.1.0"}},"#,
                r#""metadata":{"invocationId":"blake3:cc","startedOn":"2026-12-01T10:00:00Z","finishedOn":"2026-12-01T10:00:01Z"}}}}"#
            )
        );
        assert_eq!(pae("t", b"body"), b"DSSEv1 1 t 4 body");
    }

    #[test]
    fn envelopes_verify_and_one_changed_byte_fails() {
        let key = SecretKey::generate("release").unwrap();
        let s = statement(&facts());
        let env = sign(&s, &key);
        assert_eq!(verify(&env, &[key.public()]).unwrap(), s);
        let mut payload = STANDARD.decode(&env.payload).unwrap();
        let i = payload.len() / 2;
        payload[i] ^= 1;
        let tampered = Envelope {
            payload: STANDARD.encode(&payload),
            ..env.clone()
        };
        assert!(verify(&tampered, &[key.public()]).is_err());
        let stranger = SecretKey::generate("release").unwrap();
        assert!(verify(&env, &[stranger.public()]).is_err());
    }
}
