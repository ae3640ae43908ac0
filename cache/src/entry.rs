//! Action entries, `ac/<derivation hex>`: format `kiln-ac-v1`.
//!
//! ```json
//! {"derivation":"<canonical derivation, as text>","derivation_hash":"blake3:…",
//!  "format":"kiln-ac-v1","record":{"entries":…,"exports":{…},"output":"blake3:…","size":…},
//!  "signatures":[{"key":"ci-main","sig":"<base64 ed25519>"}]}
//! ```
//!
//! A signature covers the entry's *fingerprint*: `kiln-ac-v1\n<derivation hex>\n<canonical JSON
//! of the record>`. The derivation text itself is covered through its hash (it must hash to the
//! entry's key), so a signature copied onto another entry, or a record edited after signing,
//! does not verify.

use kiln_core::canonical::to_canonical_json;
use kiln_core::Digest;
use kiln_store::OutputRecord;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};

/// The entry format.
pub const ENTRY_FORMAT: &str = "kiln-ac-v1";

/// One signature of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature {
    /// The signing key's name.
    pub key: String,
    /// The ed25519 signature of the fingerprint, base64.
    pub sig: String,
}

/// An action-cache entry as stored in a remote cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionEntry {
    /// [`ENTRY_FORMAT`].
    pub format: String,
    /// The derivation hash: the entry's key.
    pub derivation_hash: Digest,
    /// The canonical derivation record, whose blake3 is `derivation_hash`.
    pub derivation: String,
    /// What it built.
    pub record: OutputRecord,
    /// Signatures of [`ActionEntry::fingerprint`].
    #[serde(default)]
    pub signatures: Vec<EntrySignature>,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not JSON of this format.
    #[error("not a {ENTRY_FORMAT} entry: {0}")]
    Malformed(String),
    /// Stored under another derivation's key, or its derivation does not hash to the key.
    #[error("its derivation does not hash to its key")]
    WrongKey,
    /// Trusted keys are set and the entry carries no signature.
    #[error("it is unsigned")]
    Unsigned,
    /// Signed only by keys this runner does not trust.
    #[error("it is signed by `{0}`, which is not a trusted key")]
    UnknownKey(String),
    /// A trusted key's signature that does not verify.
    #[error("its signature by `{0}` does not verify")]
    BadSignature(String),
}

impl ActionEntry {
    /// An unsigned entry.
    pub fn new(derivation: &[u8], record: OutputRecord) -> Result<Self, Refusal> {
        let text = std::str::from_utf8(derivation)
            .map_err(|_| Refusal::Malformed("the derivation is not UTF-8".into()))?;
        Ok(Self {
            format: ENTRY_FORMAT.to_owned(),
            derivation_hash: Digest::of(derivation),
            derivation: text.to_owned(),
            record,
            signatures: Vec::new(),
        })
    }

    /// The bytes a signature covers.
    pub fn fingerprint(&self) -> Vec<u8> {
        let record = serde_json::to_value(&self.record).expect("a record is JSON");
        let mut out = format!("{ENTRY_FORMAT}\n{}\n", self.derivation_hash.hex()).into_bytes();
        out.extend(to_canonical_json(&record));
        out
    }

    /// Adds `key`'s signature.
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(&self.fingerprint());
        self.signatures.retain(|s| s.key != key.name);
        self.signatures.push(EntrySignature {
            key: key.name.clone(),
            sig,
        });
    }

    /// The stored bytes (canonical JSON, one line).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = to_canonical_json(&serde_json::to_value(self).expect("an entry is JSON"));
        v.push(b'\n');
        v
    }

    /// Parses stored bytes and checks what needs no key: the format, and that the derivation
    /// hashes to `key`.
    pub fn parse(bytes: &[u8], key: &Digest) -> Result<Self, Refusal> {
        let entry: Self =
            serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if entry.format != ENTRY_FORMAT {
            return Err(Refusal::Malformed(format!("format `{}`", entry.format)));
        }
        if entry.derivation_hash != *key || Digest::of(entry.derivation.as_bytes()) != *key {
            return Err(Refusal::WrongKey);
        }
        Ok(entry)
    }

    /// With `trusted` keys set, the entry must carry a valid signature of one of them;
    /// with none set, every well-formed entry is accepted.
    pub fn check_signatures(&self, trusted: &[PublicKey]) -> Result<(), Refusal> {
        if trusted.is_empty() {
            return Ok(());
        }
        if self.signatures.is_empty() {
            return Err(Refusal::Unsigned);
        }
        let fingerprint = self.fingerprint();
        let mut bad = None;
        for s in &self.signatures {
            if let Some(k) = trusted.iter().find(|k| k.name == s.key) {
                if k.verifies(&fingerprint, &s.sig) {
                    return Ok(());
                }
                bad = Some(s.key.clone());
            }
        }
        Err(match bad {
            Some(name) => Refusal::BadSignature(name),
            None => Refusal::UnknownKey(
                self.signatures
                    .iter()
                    .map(|s| s.key.as_str())
                    .collect::<Vec<_>>()
                    .join("`, `"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OutputRecord {
        OutputRecord {
            output: Digest::of(b"tree"),
            exports: [("name".to_owned(), "cfg-1234".to_owned())].into(),
            entries: 2,
            size: 10,
        }
    }

    const DRV: &[u8] = br#"{"encoding":"kiln-drv-v1","kind":"manifest"}"#;

    /// Golden: the stored form of an unsigned entry is pinned, so a change to the layout is a
    /// reviewed change of this test (and of ARCHITECTURE.md).
    #[test]
    fn the_stored_form_is_pinned() {
        let e = ActionEntry::new(DRV, record()).unwrap();
        let text = String::from_utf8(e.to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"derivation\":{},\"derivation_hash\":\"{}\",\"format\":\"kiln-ac-v1\",\"record\":{{\"entries\":2,\"exports\":{{\"name\":\"cfg-1234\"}},\"output\":\"{}\",\"size\":10}},\"signatures\":[]}}\n",
                serde_json::to_string(std::str::from_utf8(DRV).unwrap()).unwrap(),
                Digest::of(DRV),
                Digest::of(b"tree"),
            )
        );
        assert_eq!(
            String::from_utf8(e.fingerprint()).unwrap(),
            format!(
                "kiln-ac-v1\n{}\n{{\"entries\":2,\"exports\":{{\"name\":\"cfg-1234\"}},\"output\":\"{}\",\"size\":10}}",
                Digest::of(DRV).hex(),
                Digest::of(b"tree")
            )
        );
        assert_eq!(
            ActionEntry::parse(&e.to_bytes(), &Digest::of(DRV)).unwrap(),
            e
        );
    }

    #[test]
    fn signatures_are_checked_against_trusted_keys() {
        let key = SecretKey::generate("ci-main").unwrap();
        let trusted = [key.public()];
        let mut e = ActionEntry::new(DRV, record()).unwrap();
        assert_eq!(e.check_signatures(&[]), Ok(()), "no trusted keys: accepted");
        assert_eq!(e.check_signatures(&trusted), Err(Refusal::Unsigned));
        e.sign(&key);
        assert_eq!(e.check_signatures(&trusted), Ok(()));

        let stranger = SecretKey::generate("laptop").unwrap();
        let mut by_stranger = ActionEntry::new(DRV, record()).unwrap();
        by_stranger.sign(&stranger);
        assert_eq!(
            by_stranger.check_signatures(&trusted),
            Err(Refusal::UnknownKey("laptop".into()))
        );

        // A forged key of the trusted name.
        let forger = SecretKey::parse(&format!(
            "ci-main:{}",
            &SecretKey::generate("x").unwrap().to_text()[2..]
        ))
        .unwrap();
        let mut forged = ActionEntry::new(DRV, record()).unwrap();
        forged.sign(&forger);
        assert_eq!(
            forged.check_signatures(&trusted),
            Err(Refusal::BadSignature("ci-main".into()))
        );

        // A record edited after signing, and a signature copied onto another entry.
        let mut edited = e.clone();
        edited.record.exports.insert("name".into(), "evil".into());
        assert_eq!(
            edited.check_signatures(&trusted),
            Err(Refusal::BadSignature("ci-main".into()))
        );
        let other = br#"{"encoding":"kiln-drv-v1","kind":"other"}"#;
        let mut copied = ActionEntry::new(other, record()).unwrap();
        copied.signatures = e.signatures.clone();
        assert_eq!(
            copied.check_signatures(&trusted),
            Err(Refusal::BadSignature("ci-main".into()))
        );
    }

    #[test]
    fn entries_under_the_wrong_key_are_refused() {
        let e = ActionEntry::new(DRV, record()).unwrap();
        let elsewhere = Digest::of(b"another derivation");
        assert_eq!(
            ActionEntry::parse(&e.to_bytes(), &elsewhere),
            Err(Refusal::WrongKey)
        );
        let mut lying = e.clone();
        lying.derivation.push(' ');
        assert_eq!(
            ActionEntry::parse(&lying.to_bytes(), &e.derivation_hash),
            Err(Refusal::WrongKey)
        );
        assert!(matches!(
            ActionEntry::parse(b"{\"format\":1}", &e.derivation_hash),
            Err(Refusal::Malformed(_))
        ));
    }
}
