//! [`Digest`]: the one type for every blake3 hash kiln computes.

use std::fmt;
use std::str::FromStr;

/// The algorithm prefix every printed digest carries.
pub const PREFIX: &str = "blake3:";

/// A blake3 digest. Prints and parses as `blake3:<64 hex digits>`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Why a string or byte slice is not a [`Digest`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The `blake3:` prefix is missing.
    #[error("digest `{0}` does not start with `blake3:`")]
    MissingPrefix(String),
    /// The hex part is not 64 lowercase hex digits.
    #[error("digest `{0}` is not 64 lowercase hex digits after `blake3:`")]
    BadHex(String),
    /// A raw digest must be 32 bytes.
    #[error("a digest is 32 bytes, got {0}")]
    BadLength(usize),
}

impl Digest {
    /// Hashes what `reader` yields, in chunks, writing each chunk to `sink` too (a copy that
    /// hashes on the way, or `std::io::sink()` to only hash): memory holds one chunk, whatever
    /// the size. Gives the digest and the number of bytes.
    pub fn of_reader(
        reader: &mut dyn std::io::Read,
        sink: &mut dyn std::io::Write,
    ) -> std::io::Result<(Self, u64)> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut len = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])?;
            len += n as u64;
        }
        Ok((hasher.finalize().into(), len))
    }

    /// Hashes `bytes` with blake3.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the prefix (used for file names in the store).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Parses the bare 64-hex form used in store file names.
    pub fn from_hex(s: &str) -> Result<Self, DigestError> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestError::BadHex(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestError::BadHex(s.to_owned()))?;
        Ok(Self(out))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl TryFrom<&[u8]> for Digest {
    type Error = DigestError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        let arr: [u8; 32] = b.try_into().map_err(|_| DigestError::BadLength(b.len()))?;
        Ok(Self(arr))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.short())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| DigestError::MissingPrefix(s.to_owned()))?;
        Self::from_hex(hex_part).map_err(|_| DigestError::BadHex(s.to_owned()))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_with_prefix() {
        let d = Digest::of(b"kiln");
        let s = d.to_string();
        assert!(s.starts_with("blake3:"));
        assert_eq!(s.len(), 7 + 64);
        assert_eq!(s.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn golden_empty_input() {
        // blake3 of the empty input, a published test vector.
        assert_eq!(
            Digest::of(b"").hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!(
            "sha256:00".parse::<Digest>(),
            Err(DigestError::MissingPrefix(_))
        ));
        assert!(matches!(
            "blake3:zz".parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        let upper = format!("blake3:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        assert!(Digest::try_from(&[0u8; 31][..]).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::of(b"x");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"blake3:12\"").is_err());
    }
}
