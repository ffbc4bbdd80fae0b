//! The key-encryption key (master key) that seals private keys at rest.
//!
//! It comes from `TOLLGATE_MASTER_KEY` (base64 of 32 bytes), or from a key file; if
//! neither is given, one is generated into the data directory (mode 0600) and a warning
//! says so, because a key beside the data it protects only guards against a leaked
//! database file, not a stolen disk. Sealing is XChaCha20-Poly1305 with a random
//! 24-byte nonce and the record's name as associated data, so a sealed blob cannot be
//! moved to another name.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

pub const MASTER_KEY_FILE: &str = "master.key";
const VERSION: u8 = 1;
const NONCE: usize = 24;

/// Where the master key comes from. `Debug` never shows the key.
#[derive(Clone)]
pub enum MasterKeySource {
    /// Base64 of 32 bytes (`TOLLGATE_MASTER_KEY`).
    Inline(String),
    /// A file holding base64 of 32 bytes (`TOLLGATE_MASTER_KEY_FILE`).
    File(PathBuf),
}

impl fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
            MasterKeySource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// How the master key was obtained, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekOrigin {
    Environment,
    File(PathBuf),
    /// Generated into the data directory on this start.
    Generated(PathBuf),
    /// Read from the data directory, where an earlier start generated it.
    DataDir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("the master key must be base64 of exactly 32 bytes ({0})")]
    Format(&'static str),
    #[error("cannot read or write the master key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("a sealed key could not be opened: wrong master key, or the record was altered ({0})")]
    Open(String),
    #[error("no randomness: {0}")]
    Random(String),
}

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn decode(text: &str) -> Result<[u8; 32], KekError> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| KekError::Format("not base64"))?;
    bytes.try_into().map_err(|_| KekError::Format("wrong length"))
}

fn read(path: &Path) -> Result<[u8; 32], KekError> {
    let text = std::fs::read_to_string(path).map_err(|source| KekError::Io { path: path.into(), source })?;
    decode(&text)
}

pub fn random<const N: usize>() -> Result<[u8; N], KekError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KekError::Random(e.to_string()))?;
    Ok(b)
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(&bytes.into()) }
    }

    /// Loads the master key, generating one into `data_dir` only when no source is
    /// configured and none was generated before.
    pub fn load(source: Option<&MasterKeySource>, data_dir: &Path) -> Result<(Self, KekOrigin), KekError> {
        match source {
            Some(MasterKeySource::Inline(text)) => Ok((Self::from_bytes(decode(text)?), KekOrigin::Environment)),
            Some(MasterKeySource::File(p)) => Ok((Self::from_bytes(read(p)?), KekOrigin::File(p.clone()))),
            None => {
                let path = data_dir.join(MASTER_KEY_FILE);
                if path.exists() {
                    return Ok((Self::from_bytes(read(&path)?), KekOrigin::DataDir(path)));
                }
                let bytes: [u8; 32] = random()?;
                crate::write_secret(&path, &STANDARD.encode(bytes))
                    .map_err(|e| KekError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
                Ok((Self::from_bytes(bytes), KekOrigin::Generated(path)))
            }
        }
    }

    /// `version ‖ nonce ‖ ciphertext`, bound to `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let nonce: [u8; NONCE] = random()?;
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: name.as_bytes() })
            .map_err(|e| KekError::Open(e.to_string()))?;
        let mut out = Vec::with_capacity(1 + NONCE + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        if sealed.len() < 1 + NONCE + 16 || sealed[0] != VERSION {
            return Err(KekError::Open("unknown format".into()));
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: name.as_bytes() })
            .map_err(|_| KekError::Open(format!("record '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = MasterKey::from_bytes([1; 32]);
        let sealed = k.seal("a", b"secret").unwrap();
        assert_eq!(k.open("a", &sealed).unwrap(), b"secret");
        assert!(k.open("b", &sealed).is_err(), "bound to its name");
        assert!(MasterKey::from_bytes([2; 32]).open("a", &sealed).is_err(), "bound to the key");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.open("a", &bad).is_err());
        assert_ne!(k.seal("a", b"secret").unwrap(), sealed, "fresh nonce");
    }

    #[test]
    fn generates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, o1) = MasterKey::load(None, dir.path()).unwrap();
        assert!(matches!(o1, KekOrigin::Generated(_)));
        let (k2, o2) = MasterKey::load(None, dir.path()).unwrap();
        assert!(matches!(o2, KekOrigin::DataDir(_)));
        assert_eq!(k2.open("x", &k1.seal("x", b"1").unwrap()).unwrap(), b"1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let inline = MasterKeySource::Inline(STANDARD.encode([5u8; 32]));
        assert_eq!(format!("{inline:?}"), "Inline(<redacted>)");
        assert!(MasterKey::load(Some(&MasterKeySource::Inline("short".into())), dir.path()).is_err());
    }
}
