//! Signing keys and trusted public keys, written as Nix writes its cache keys:
//! `<name>:<base64 of the 32-byte secret seed>` and `<name>:<base64 of the public key>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::error::CacheError;

/// A named secret key that signs action entries.
pub struct SecretKey {
    /// The key's name (the part before `:`), carried in every signature.
    pub name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

/// A named public key whose signatures a runner trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The key's name.
    pub name: String,
    key: VerifyingKey,
}

fn split_named(text: &str) -> Option<(&str, Vec<u8>)> {
    let (name, b64) = text.trim().split_once(':')?;
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let bytes = STANDARD.decode(b64).ok()?;
    valid_name.then_some((name, bytes))
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, CacheError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CacheError::Key(format!("no randomness: {e}")))?;
        Self::parse(&format!("{name}:{}", STANDARD.encode(seed)))
    }

    /// Parses `<name>:<base64 seed>`.
    pub fn parse(text: &str) -> Result<Self, CacheError> {
        let bad = || CacheError::Key("a secret key reads `<name>:<base64 of 32 bytes>`".into());
        let (name, bytes) = split_named(text).ok_or_else(bad)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The file form, `<name>:<base64 seed>`.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.to_bytes()))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `message`; the signature in base64.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

impl PublicKey {
    /// Parses `<name>:<base64 public key>`.
    pub fn parse(text: &str) -> Result<Self, CacheError> {
        let bad = || {
            CacheError::Key(format!(
                "`{}` is not a public key (`<name>:<base64 of 32 bytes>`)",
                text.trim()
            ))
        };
        let (name, bytes) = split_named(text).ok_or_else(bad)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// Parses a list separated by commas or whitespace (as `KILN_TRUSTED_KEYS` holds it).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, CacheError> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect()
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.to_bytes()))
    }

    /// Whether `signature` (base64) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let sk = SecretKey::generate("ci-main").unwrap();
        let back = SecretKey::parse(&sk.to_text()).unwrap();
        assert_eq!(back.public(), sk.public());
        let pk = PublicKey::parse(&sk.public().to_text()).unwrap();
        assert!(pk.to_text().starts_with("ci-main:"));
        let sig = sk.sign(b"hello");
        assert!(pk.verifies(b"hello", &sig));
        assert!(!pk.verifies(b"hellO", &sig));
        assert!(!pk.verifies(b"hello", "not base64!"));
        let other = SecretKey::generate("ci-main").unwrap();
        assert!(!pk.verifies(b"hello", &other.sign(b"hello")));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "name", ":AAAA", "na me:AAAA", "k:AAAA", "k:!!!"] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
        let two = format!(
            "{}, {}",
            SecretKey::generate("a").unwrap().public().to_text(),
            SecretKey::generate("b").unwrap().public().to_text()
        );
        assert_eq!(PublicKey::parse_list(&two).unwrap().len(), 2);
    }
}
