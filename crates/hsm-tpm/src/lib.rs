//! # hsm-tpm: a TPM 2.0 behind the hsm-rs contract
//!
//! Keys are created inside the TPM under a storage root key (SRK) and never leave it in the
//! clear: what the host keeps is each key's public area and its private area encrypted under the
//! SRK, one file per key in a key directory. Tested against swtpm (libtpms) with the shared
//! conformance suite.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hsm_core::HsmError> {
//! use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};
//! let tpm = hsm_tpm::TpmBuilder::new("/var/lib/myapp/tpm-keys")
//!     .tcti("device:/dev/tpmrm0")?
//!     .build()
//!     .await?;
//! let key = tpm.generate_key(&GenerateKeyRequest::new("release", KeyType::EcP256)).await?;
//! let sig = tpm
//!     .sign(&key.id, &Mechanism::ecdsa(HashAlg::Sha256), SignInput::Message(b"hello"))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## What it does
//! - **Which TPM**: a TCTI string given to [`TpmBuilder::tcti`], a `tpm:` URI
//!   (`tpm:tcti=swtpm:host=127.0.0.1,port=2321;key-dir=/path`), or the environment
//!   (`TPM2TOOLS_TCTI`, then `TCTI`), else [`DEFAULT_TCTI`]: `device:/dev/tpmrm0`, or on
//!   Windows `tbs` (the TPM Base Services). `tbs` is refused off Windows with "the TBS TCTI
//!   exists only on Windows".
//! - **Storage root key**: the TCG-standard ECC P-256 SRK. If the persistent handle 0x81000001
//!   holds exactly that key it is used; otherwise the SRK is created as a primary on each
//!   connect (deterministic: the same key each time on the same TPM). A persistent handle is
//!   never created, evicted or overwritten.
//! - **Keys**: ECC P-256 and RSA-2048 signing keys (RSA keys made with only encryption usages
//!   are decryption keys, but decryption itself is not offered yet). `persistent = false` keeps
//!   the blobs in memory only.
//! - **Signing**: ECDSA with SHA-256 or SHA-384 (DER or `r || s`), RSASSA-PKCS#1 v1.5 and
//!   RSA-PSS (salt = hash length) with SHA-256; the digest is computed in software and signed by
//!   the TPM. A used key stays loaded; when the TPM's transient slots are full the least recently
//!   used key is flushed. Verification is local, from the public key.
//! - **Parameter encryption**: commands that carry a key blob or a digest run in one salted
//!   HMAC session (salted with the SRK, AES-128-CFB), so they are encrypted on the way to the
//!   TPM (and `TPM2_Create`'s private area on the way back); [`TpmProvider::parameter_encryption`]
//!   says whether the session could be started (if not, plain password sessions are used and a
//!   warning is logged).
//! - **Threads**: one worker thread owns the ESAPI context; no TPM call runs on the async
//!   executor (see `worker.rs` for why one thread and no lock).
//! - **Keys that move** (TPM 2.0 duplication): a key generated with `extractable = true` is
//!   *duplicable* (`fixedTPM`/`fixedParent` clear, policy `PolicyCommandCode(Duplicate)`);
//!   [`TpmProvider::duplicate`] wraps it for another TPM's storage key
//!   ([`TpmProvider::storage_key_public`]) into a [`DuplicationBlob`], which that TPM imports with
//!   [`TpmProvider::import_duplicate`]. Every other key is `fixedTPM` and is refused.
//!   [`TpmProvider::import_software_key`] imports a P-256 or RSA-2048 PKCS#8 key, wrapped in
//!   software for the SRK before it is sent. These are dedicated methods, not
//!   `wrap_key`/`unwrap_key` (see `duplicate.rs` for why, and for what "extractable" allows).
//! - **Counters**: [`TpmProvider::stats`] says how many times a key was loaded, which shows
//!   the cache of loaded keys at work.
//! - Everything else (encrypt, decrypt, wrap, unwrap, other key types) is `NotSupported` and
//!   absent from `capabilities()`.
//!
//! ## Not yet
//! - Key files are hsm-rs's own JSON (`<id>.tpmkey`: label, public and private areas), not yet
//!   the TSS2 PRIVATE KEY PEM that tpm2-openssl and tpm2-tss-engine read.
//! - Keys with an auth value or a policy (keys are created with an empty auth value;
//!   protection comes from the TPM binding and the key file's permissions).
//! - RSA decryption (RSA-OAEP), attestation (`TPM2_Certify`, quotes), sealing, P-384 and
//!   RSA-3072/4096 keys.
//! - **Windows**: `tbs` is recognised and is the default there, but connecting through it
//!   returns `NotSupported`: tss-esapi 7.7 has no TBS TCTI (`TctiNameConf::Tbs` came in
//!   tss-esapi 8, which needs tpm2-tss 4.1; hsm-tpm stays on 7.x for Debian 12's tpm2-tss 3.2),
//!   and tss-esapi-sys 0.6 ships no Windows bindings (build with
//!   `--features tss-esapi/generate-bindings`). The Windows code path is `cfg(windows)` in
//!   `config.rs`; `ci/windows-tpm.yml` is a GitHub Actions workflow that builds and tests the
//!   crate on Windows. Neither has been run: this project's CI is Linux only.
//! - Duplication bound to one target (`PolicyDuplicationSelect`), inner wrappers
//!   (`encryptedDuplication`), and importing under a storage key that is not the standard ECC
//!   P-256 SRK from software.
//! - Without a resource manager (swtpm, `/dev/tpm0`) one process at a time can use the TPM;
//!   use `/dev/tpmrm0` or tpm2-abrmd to share it.

mod config;
mod duplicate;
mod error;
mod keys;
mod provider;
mod session;
mod sign;
mod stats;
mod worker;

pub use config::{
    DEFAULT_TCTI, SRK_PERSISTENT_HANDLE, TCTI_ENV_VARS, TpmBuilder, URI_ATTRS, URI_QUERY,
};
pub use duplicate::DuplicationBlob;
pub use provider::TpmProvider;
pub use stats::TpmStats;
