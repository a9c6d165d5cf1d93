//! The keystore file: encrypted at rest, written atomically, locked against a second process.
//!
//! # Format (version 1)
//! A text file of JSON lines, each ending in `\n`:
//! 1. a header: format name, version, the Argon2id parameters and salt, and a check value (a
//!    known plaintext sealed under the derived key, so a wrong passphrase is told apart from a
//!    damaged record);
//! 2. one line per key: `{"id": ..., "sealed": base64(nonce || AES-256-GCM(record) || tag)}`.
//!
//! The record key is Argon2id(passphrase, salt). Each record is sealed separately, with the
//! keystore's salt and the key id as AAD, so a record cannot be moved to another id or keystore,
//! and damage to one record is detected without hiding the others. A record holds the key's
//! metadata and its secret (PKCS#8 DER or raw AES bytes).
//!
//! # Safety of writes
//! Every change rewrites the file through a temporary file in the same directory: write, fsync,
//! rename over the old file, fsync the directory. A crash leaves the old or the new file, never
//! a mix. The file is created with mode 0600. An exclusive lock on `<file>.lock`, held while the
//! keystore is open, keeps a second process from opening it at the same time.
//!
//! A file that fails to parse or authenticate is never written: opening it fails with a clear
//! error and the file stays exactly as it was. In salvage mode the undamaged keys open read-only.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hsm_core::files::FileMode;
use hsm_core::{HsmError, KeyInfo, Secret};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{crypto, io};

const FORMAT: &str = "hsm-soft-keystore";
const VERSION: u32 = 1;
const CHECK_PLAINTEXT: &[u8] = b"hsm-soft keystore v1 passphrase check";

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: above OWASP's Argon2id minimum (19 MiB, 2 passes), about a
    /// quarter of a second on one core of a current x86-64 machine.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only: they make a stolen keystore easy to brute-force.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    kdf: KdfHeader,
    check: String,
}

#[derive(Serialize, Deserialize)]
struct KdfHeader {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct RecordLine {
    id: String,
    sealed: String,
}

/// A decrypted record.
pub(crate) struct StoredKey {
    pub info: KeyInfo,
    pub secret: Zeroizing<Vec<u8>>,
}

/// What opening found.
pub(crate) struct Opened {
    pub store: FileStore,
    pub keys: Vec<StoredKey>,
    /// Damaged records skipped in salvage mode (their line numbers and why).
    pub damaged: Vec<String>,
}

/// An open keystore file.
pub(crate) struct FileStore {
    path: PathBuf,
    // Held (and so locked) for as long as the store is open; released on drop.
    _lock: File,
    key: LessSafeKey,
    salt: Vec<u8>,
    header_line: String,
    lines: BTreeMap<String, String>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("records", &self.lines.len())
            .finish_non_exhaustive()
    }
}

fn corrupted(path: &Path, reason: impl Into<String>) -> HsmError {
    HsmError::Corrupted {
        what: format!("keystore {}", path.display()),
        reason: reason.into(),
    }
}

fn derive_key(passphrase: &Secret, salt: &[u8], p: KdfParams) -> Result<LessSafeKey, HsmError> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| HsmError::invalid(format!("bad Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.expose(), salt, out.as_mut())
        .map_err(|e| HsmError::invalid(format!("Argon2id failed: {e}")))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, out.as_ref()).map_err(|_| crypto("keystore key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<String, HsmError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| crypto("random nonce"))?;
    let mut buf = Zeroizing::new(plaintext.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *buf,
    )
    .map_err(|_| crypto("keystore record sealing"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(B64.encode(out))
}

/// `None` when the record does not authenticate.
fn open_sealed(key: &LessSafeKey, aad: &[u8], sealed_b64: &str) -> Option<Zeroizing<Vec<u8>>> {
    let raw = B64.decode(sealed_b64).ok()?;
    if raw.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

fn record_aad(salt: &[u8], id: &str) -> Vec<u8> {
    let mut aad = b"hsm-soft/v1/record\0".to_vec();
    aad.extend_from_slice(salt);
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn take_lock(path: &Path) -> Result<File, HsmError> {
    let lp = lock_path(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lp)
        .map_err(|e| io(format!("cannot create lock file {}", lp.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(HsmError::Unavailable {
            reason: format!(
                "keystore {} is open in another process (lock {} is held)",
                path.display(),
                lp.display()
            ),
            retryable: true,
            source: None,
        }),
        Err(fs::TryLockError::Error(e)) => Err(io(format!("cannot lock {}", lp.display()), e)),
    }
}

impl FileStore {
    /// Opens (or, with `create`, creates) the keystore at `path`.
    pub(crate) fn open(
        path: &Path,
        passphrase: &Secret,
        create: bool,
        kdf: KdfParams,
        salvage: bool,
    ) -> Result<Opened, HsmError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(HsmError::invalid(format!(
                "keystore directory {} does not exist",
                dir.display()
            )));
        }
        let lock = take_lock(path)?;
        if !path.exists() {
            if !create {
                return Err(HsmError::invalid(format!(
                    "keystore {} does not exist (create it by generating a key, or set create)",
                    path.display()
                )));
            }
            return Self::create(path, passphrase, kdf, lock);
        }
        let text = fs::read(path).map_err(|e| io(format!("cannot read {}", path.display()), e))?;
        let text = String::from_utf8(text).map_err(|_| corrupted(path, "not UTF-8 text"))?;
        if text.is_empty() {
            return Err(corrupted(path, "the file is empty (truncated?)"));
        }
        if !text.ends_with('\n') {
            return Err(corrupted(
                path,
                format!(
                    "line {} is incomplete: the file was truncated",
                    text.lines().count()
                ),
            ));
        }
        let mut lines = text.lines();
        let header_line = lines.next().unwrap_or_default().to_owned();
        let header: Header = serde_json::from_str(&header_line)
            .map_err(|e| corrupted(path, format!("line 1 (header) is not valid: {e}")))?;
        if header.format != FORMAT {
            return Err(corrupted(
                path,
                format!("not an hsm-soft keystore (format {:?})", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(HsmError::NotSupported {
                operation: format!("keystore format version {}", header.version),
                provider: crate::error::PROVIDER.into(),
            });
        }
        if header.kdf.algorithm != "argon2id" {
            return Err(corrupted(
                path,
                format!("unknown KDF {:?}", header.kdf.algorithm),
            ));
        }
        let salt = B64
            .decode(&header.kdf.salt)
            .map_err(|_| corrupted(path, "line 1: salt is not base64"))?;
        let key = derive_key(passphrase, &salt, header.kdf.params)?;
        if open_sealed(&key, b"hsm-soft/v1/check", &header.check)
            .as_deref()
            .map(|v| &v[..])
            != Some(CHECK_PLAINTEXT)
        {
            return Err(HsmError::Unauthenticated {
                reason: format!("wrong passphrase for keystore {}", path.display()),
            });
        }

        let mut keys = Vec::new();
        let mut damaged = Vec::new();
        let mut kept = BTreeMap::new();
        for (n, line) in lines.enumerate() {
            let lineno = n + 2;
            match Self::parse_record(&key, &salt, line) {
                Ok(stored) => {
                    kept.insert(stored.info.id.id.clone(), line.to_owned());
                    keys.push(stored);
                }
                Err(why) => damaged.push(format!("line {lineno}: {why}")),
            }
        }
        if !damaged.is_empty() && !salvage {
            return Err(corrupted(
                path,
                format!(
                    "{} damaged record(s), nothing was changed: {}. The other {} key(s) are intact; \
                     open in salvage mode to use them read-only",
                    damaged.len(),
                    damaged.join("; "),
                    keys.len()
                ),
            ));
        }
        Ok(Opened {
            store: FileStore {
                path: path.to_owned(),
                _lock: lock,
                key,
                salt,
                header_line,
                lines: kept,
            },
            keys,
            damaged,
        })
    }

    fn create(
        path: &Path,
        passphrase: &Secret,
        kdf: KdfParams,
        lock: File,
    ) -> Result<Opened, HsmError> {
        if passphrase.is_empty() {
            return Err(HsmError::invalid(
                "a new keystore needs a non-empty passphrase",
            ));
        }
        let mut salt = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| crypto("random salt"))?;
        let key = derive_key(passphrase, &salt, kdf)?;
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            kdf: KdfHeader {
                algorithm: "argon2id".into(),
                params: kdf,
                salt: B64.encode(&salt),
            },
            check: seal(&key, b"hsm-soft/v1/check", CHECK_PLAINTEXT)?,
        };
        let header_line = serde_json::to_string(&header).map_err(|_| crypto("header encoding"))?;
        let store = FileStore {
            path: path.to_owned(),
            _lock: lock,
            key,
            salt,
            header_line,
            lines: BTreeMap::new(),
        };
        store.flush()?;
        Ok(Opened {
            store,
            keys: Vec::new(),
            damaged: Vec::new(),
        })
    }

    fn parse_record(key: &LessSafeKey, salt: &[u8], line: &str) -> Result<StoredKey, String> {
        let rec: RecordLine =
            serde_json::from_str(line).map_err(|e| format!("malformed record ({e})"))?;
        let plain = open_sealed(key, &record_aad(salt, &rec.id), &rec.sealed).ok_or_else(|| {
            format!(
                "record {} fails authentication (altered or damaged)",
                rec.id
            )
        })?;
        if plain.len() < 4 {
            return Err(format!("record {} is too short", rec.id));
        }
        let meta_len = u32::from_be_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
        let meta = plain
            .get(4..4 + meta_len)
            .ok_or_else(|| format!("record {} has a bad length", rec.id))?;
        let info: KeyInfo = serde_json::from_slice(meta)
            .map_err(|e| format!("record {} metadata is invalid ({e})", rec.id))?;
        if info.id.id != rec.id {
            return Err(format!("record {} holds key {}", rec.id, info.id.id));
        }
        Ok(StoredKey {
            info,
            secret: Zeroizing::new(plain[4 + meta_len..].to_vec()),
        })
    }

    fn flush(&self) -> Result<(), HsmError> {
        let mut out = Zeroizing::new(String::new());
        out.push_str(&self.header_line);
        out.push('\n');
        for line in self.lines.values() {
            out.push_str(line);
            out.push('\n');
        }
        hsm_core::files::write_atomic(&self.path, out.as_bytes(), FileMode::Private)
            .map_err(|e| io(format!("cannot write keystore {}", self.path.display()), e))
    }

    /// Adds a key and writes the file. On failure nothing changes.
    pub(crate) fn insert(&mut self, stored: &StoredKey) -> Result<(), HsmError> {
        let id = stored.info.id.id.clone();
        if self.lines.contains_key(&id) {
            return Err(HsmError::AlreadyExists {
                what: format!("key id {id}"),
            });
        }
        let meta = serde_json::to_vec(&stored.info).map_err(|_| crypto("metadata encoding"))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(4 + meta.len() + stored.secret.len()));
        plain.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes());
        plain.extend_from_slice(&meta);
        plain.extend_from_slice(&stored.secret);
        let line = serde_json::to_string(&RecordLine {
            sealed: seal(&self.key, &record_aad(&self.salt, &id), &plain)?,
            id: id.clone(),
        })
        .map_err(|_| crypto("record encoding"))?;
        self.lines.insert(id.clone(), line);
        if let Err(e) = self.flush() {
            self.lines.remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a key and writes the file. On failure nothing changes.
    pub(crate) fn remove(&mut self, id: &str) -> Result<(), HsmError> {
        let Some(line) = self.lines.remove(id) else {
            return Ok(());
        };
        if let Err(e) = self.flush() {
            self.lines.insert(id.to_owned(), line);
            return Err(e);
        }
        Ok(())
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
