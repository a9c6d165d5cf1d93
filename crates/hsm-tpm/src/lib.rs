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
//!   Windows `tbs` (the TPM Base Services; see "Not yet"). The kernel resource manager,
//!   tpm2-abrmd (`tabrmd:`), swtpm and the Microsoft simulator (`mssim:`) are all TCTIs.
//! - **Storage root key**: the TCG-standard SRK template, ECC P-256 (default) or RSA-2048
//!   ([`SrkAlgorithm`]). A persistent SRK at the reserved handle (0x81000002 ECC, 0x81000001
//!   RSA) is used when it has that template; otherwise the SRK is created as a primary on each
//!   connect (deterministic: the same key each time). [`TpmBuilder::persist_srk`] stores it at
//!   the reserved handle when that handle is free; a handle that holds anything else is never
//!   evicted or overwritten.
//! - **Key files**: one TSS2 PRIVATE KEY PEM file per key (`<id>.pem`, mode 0600, written
//!   atomically, never overwritten), the format tpm2-openssl and tpm2-tss-engine use:
//!   `openssl pkeyutl -provider tpm2 -inkey <id>.pem` signs with our keys, and
//!   [`TpmProvider::import_key_file`] adopts theirs. `persistent = false` keeps the blobs in
//!   memory only.
//! - **Keys**: ECC P-256 and P-384, RSA-2048 and RSA-3072; a key either signs or (RSA)
//!   decrypts. No AES keys: the contract's AES mechanisms (GCM, key wrap) are not TPM
//!   commands.
//! - **Signing**: ECDSA with SHA-256 or SHA-384 (DER or `r || s`), RSASSA-PKCS#1 v1.5 and
//!   RSA-PSS (salt = hash length) with SHA-256 or SHA-384; the digest is computed in software
//!   and signed by the TPM. Verification is local, from the public key.
//! - **Decryption**: RSA-OAEP with SHA-1 or SHA-256 by `TPM2_RSA_Decrypt`; encryption in
//!   software with the public key. No OAEP labels: the TPM takes only labels ending in a zero
//!   byte.
//! - **Key auth values**: [`TpmProvider::generate_key_with_auth`] makes a key that needs one;
//!   later providers get it from [`TpmBuilder::key_auth`] or `key-auth-source=` (`env:`,
//!   `file:`), held as a zeroized secret, never logged. See "Dictionary-attack lockout" below.
//! - **Loaded keys**: a used key stays loaded; when the TPM's transient slots are full the
//!   least recently used key is flushed, so they never run out. [`TpmProvider::stats`]
//!   counts `TPM2_Load`s: a cached key costs none.
//! - **Parameter encryption**: commands that carry a key blob, a digest or decrypted data run
//!   in one salted HMAC session (salted with the SRK, AES-128-CFB). If the TPM cannot start it
//!   the connection fails, unless [`TpmBuilder::allow_plain_sessions`] allows plain sessions.
//! - **Reconnecting**: when the TPM cannot be reached (the simulator or resource manager
//!   restarted), the call fails as retryable `Unavailable` and the next call connects again;
//!   keys load again from their files.
//! - **Attestation**: [`TpmProvider::create_attestation_key`] makes an attestation key (AK: a
//!   restricted ECDSA-P256-SHA256 signing key under the SRK, refused by `sign`);
//!   [`HsmProvider::attestation`](hsm_core::HsmProvider::attestation) certifies a key with it
//!   (`TPM2_Certify`, `qualifyingData` = the verifier's nonce) and [`TpmProvider::quote`]
//!   quotes PCRs (`TPM2_Quote`) and returns the values read. Each statement is the marshalled
//!   `TPMS_ATTEST` with the AK's DER signature and the EK certificate from NV memory, if any
//!   ([`TpmProvider::ek_certificate`]). The AK used is the one
//!   [`TpmBuilder::attestation_key`] names, else the only one there is.
//! - **Verifying attestations** without a TPM: [`verify_attest::verify_certify`] and
//!   [`verify_attest::verify_quote`] check the AK's signature (RustCrypto), the magic, the type,
//!   the nonce, and the certified key's name or the PCR digest; a failure names its check.
//! - **Sealing**: [`TpmProvider::seal`] keeps a secret of up to 128 bytes in a sealed-data
//!   object under the SRK whose only authorization is a `TPM2_PolicyPCR` over the current
//!   values of chosen PCRs; [`TpmProvider::unseal`] returns it (zeroized on drop) while they
//!   hold and fails with `PermissionDenied` once one changed. Each is a `<id>.sealed.pem` file
//!   (TSS2 format, sealed-data type; mode 0600, never overwritten) in the key directory.
//! - **PCRs**: [`TpmProvider::read_pcrs`] and [`TpmProvider::extend_pcr`] on a
//!   [`PcrSelection`] (one bank, PCRs 0 to 23).
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
//!
//! ## Dictionary-attack lockout
//! A key with an auth value is protected by the TPM's dictionary-attack logic (it is made
//! without `noDA`). Each wrong value counts one failure; at the TPM's maximum (swtpm: 3) every
//! such key is refused with `Unavailable` ("dictionary-attack lockout", not retryable) until
//! failures are forgotten, one per recovery interval (swtpm: 1000 s), or the lockout hierarchy
//! clears the count (`tpm2_dictionarylockout --clear-lockout`). hsm-tpm never retries an
//! authorization: a wrong value fails once, as `Unauthenticated`, with the count so far ("1 of 3
//! failed authorizations"); [`TpmProvider::lockout_status`] reads it at any time. A key whose
//! auth value was not configured is refused before the TPM is asked, so it costs no failure.
//! Keys without an auth value, the SRK and the session are not subject to the count.
//!
//! ## Not yet
//! - Keys with policies (other than what attestation and sealing use), and key files with the
//!   later draft fields (`policy`, `secret`): Debian 12's tpm2-openssl reads neither.
//! - With an RSA SRK that is not persistent, key files name the owner hierarchy, which other
//!   programs read as the ECC primary: use `persist_srk` with `srk=rsa-2048` for key files
//!   other programs can load.
//! - Sealing to a policy that survives PCR updates (`TPM2_PolicyAuthorize` with a signed
//!   policy); today a secret sealed to PCRs must be sealed again after a PCR's expected value
//!   changes (a firmware or kernel update).
//! - Credential activation (`TPM2_MakeCredential` / `TPM2_ActivateCredential`), which would
//!   prove to a remote verifier that the AK is in the TPM whose EK certificate comes with the
//!   statement; until then a verifier must trust the AK's public key by other means.
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

mod attest;
mod config;
mod decrypt;
mod duplicate;
mod error;
mod keyfile;
mod keys;
mod pcr;
mod provider;
mod seal;
mod session;
mod sign;
mod stats;
pub mod verify_attest;
mod worker;

pub use attest::{AK_MECHANISM, EK_CERT_NV_INDICES, MAX_NONCE_LEN, Quote};
pub use config::{DEFAULT_TCTI, SrkAlgorithm, TCTI_ENV_VARS, TpmBuilder, URI_ATTRS, URI_QUERY};
pub use duplicate::DuplicationBlob;
pub use pcr::{PCR_COUNT, PcrSelection, PcrValues};
pub use provider::TpmProvider;
pub use seal::{MAX_SEALED_LEN, SealedInfo};
pub use stats::TpmStats;
pub use worker::LockoutStatus;
