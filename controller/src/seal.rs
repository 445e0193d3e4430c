//! Secret values at rest: sealed with AES-256-GCM (ring) under a key the daemon reads from a
//! 0600 file (`serve --encryption-key-file`), a random 96-bit nonce per value, and the key's
//! id beside each value so that keys can be rotated.
//!
//! The key file holds one base64 key per line: the first seals, every line opens (rotation:
//! put a new key first, keep the old ones until every stack has been applied again). It is
//! generated on first start when absent, and refused when its group or others can read it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A value as stored: which key sealed it, its nonce, and the ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key {sealed_with}, which is not in this daemon's encryption key file (it has {have}); start it with the key file that sealed it")]
    UnknownKey { sealed_with: String, have: String },
    #[error("does not decrypt with key {0}: altered, or sealed for another key")]
    Altered(String),
    #[error("the sealed value is malformed: {0}")]
    Malformed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("encryption key file {path}: mode {mode:o} lets its group or others read it; `chmod 600 {path}`")]
    Readable { path: PathBuf, mode: u32 },
    #[error("encryption key file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("encryption key file {path}, line {line}: not a base64 256-bit key")]
    BadKey { path: PathBuf, line: usize },
    #[error("encryption key file {path} holds no key")]
    Empty { path: PathBuf },
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The daemon's keys: the first seals, all open.
pub struct Sealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer(key {})", self.key_id())
    }
}

fn key_id(bytes: &[u8]) -> String {
    let d = Sha256::digest([b"capstan-key-id:".as_slice(), bytes].concat());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Sealer {
    /// Keys from raw 32-byte values; the first seals.
    pub fn from_keys(raw: &[[u8; 32]]) -> Sealer {
        let keys = raw
            .iter()
            .map(|bytes| Key {
                id: key_id(bytes),
                key: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"),
                ),
            })
            .collect();
        Sealer { keys }
    }

    /// The id of the sealing key.
    pub fn key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Reads the key file, creating it (0600, with a fresh key) when absent.
    pub fn load_or_create(path: &Path) -> Result<Sealer, KeyFileError> {
        let io = |e: std::io::Error| KeyFileError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if !path.exists() {
            create_key_file(path).map_err(io)?;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut raw = vec![];
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = B64
                .decode(line)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            raw.push(bytes.ok_or_else(|| KeyFileError::BadKey {
                path: path.to_path_buf(),
                line: i + 1,
            })?);
        }
        if raw.is_empty() {
            return Err(KeyFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Sealer::from_keys(&raw))
    }

    /// Seals `plain`, bound to `context` (the key it is stored under), with a fresh nonce.
    pub fn seal(&self, plain: &[u8], context: &str) -> Sealed {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let mut buf = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("sealing a value in memory does not fail");
        Sealed {
            key_id: key.id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(buf),
        }
    }

    /// Opens what [`Sealer::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey {
                sealed_with: sealed.key_id.clone(),
                have: self
                    .keys
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let malformed = |what: &str| SealError::Malformed(what.to_string());
        let nonce = B64.decode(&sealed.nonce).map_err(|_| malformed("nonce"))?;
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| malformed("nonce length"))?;
        let mut buf = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| malformed("ciphertext"))?;
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Altered(key.id.clone()))?;
        Ok(plain.to_vec())
    }
}

/// A new key file: the folder 0700 if it is new, the file 0600, written once.
fn create_key_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{}", B64.encode(key))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_context() {
        let a = Sealer::from_keys(&[[1; 32]]);
        let b = Sealer::from_keys(&[[2; 32]]);
        let s = a.seal(b"hunter2", "k");
        assert!(!s.ciphertext.contains("hunter2"));
        assert_ne!(
            a.seal(b"hunter2", "k").nonce,
            s.nonce,
            "a fresh nonce per value"
        );
        assert_eq!(a.open(&s, "k").unwrap(), b"hunter2");
        assert!(matches!(a.open(&s, "other"), Err(SealError::Altered(_))));
        let err = b.open(&s, "k").unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { .. }), "{err}");
        // Rotation: a new key first, the old one still opens what it sealed.
        let rotated = Sealer::from_keys(&[[2; 32], [1; 32]]);
        assert_eq!(rotated.open(&s, "k").unwrap(), b"hunter2");
        assert_eq!(rotated.key_id(), b.key_id());
    }

    #[test]
    fn the_key_file_is_created_0600_and_refused_when_others_can_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("capstan-seal-{}", std::process::id()));
        let path = dir.join("sub/key");
        let first = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            first.key_id(),
            again.key_id(),
            "the same key on the next start"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Sealer::load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Readable { .. }), "{err}");
        std::fs::write(dir.join("bad"), "not a key\n").unwrap();
        std::fs::set_permissions(dir.join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Sealer::load_or_create(&dir.join("bad")),
            Err(KeyFileError::BadKey { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
