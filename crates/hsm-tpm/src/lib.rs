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
//!   (`TPM2TOOLS_TCTI`, then `TCTI`), else `device:/dev/tpmrm0`.
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
//!   hold and fails with `PermissionDenied` once one changed. Each is a `<id>.tpmseal` file
//!   (JSON, mode 0600, never overwritten) in the key directory.
//! - **PCRs**: [`TpmProvider::read_pcrs`] and [`TpmProvider::extend_pcr`] on a
//!   [`PcrSelection`] (one bank, PCRs 0 to 23).
//! - **Threads**: one worker thread owns the ESAPI context; no TPM call runs on the async
//!   executor (see `worker.rs` for why one thread and no lock).
//! - Everything else (encrypt, decrypt, wrap, unwrap, other key types, extractable keys) is
//!   `NotSupported` and absent from `capabilities()`.
//!
//! ## Not yet
//! - Key files are hsm-rs's own JSON (`<id>.tpmkey`: label, public and private areas), not yet
//!   the TSS2 PRIVATE KEY PEM that tpm2-openssl and tpm2-tss-engine read.
//! - Keys with an auth value or a policy (keys are created with an empty auth value;
//!   protection comes from the TPM binding and the key file's permissions).
//! - RSA decryption (RSA-OAEP), duplication (wrap/unwrap), P-384 and RSA-3072/4096 keys, and
//!   the Windows TBS path.
//! - Sealing to a policy that survives PCR updates (`TPM2_PolicyAuthorize` with a signed
//!   policy); today a secret sealed to PCRs must be sealed again after a PCR's expected value
//!   changes (a firmware or kernel update).
//! - Credential activation (`TPM2_MakeCredential` / `TPM2_ActivateCredential`), which would
//!   prove to a remote verifier that the AK is in the TPM whose EK certificate comes with the
//!   statement; until then a verifier must trust the AK's public key by other means.
//! - Without a resource manager (swtpm, `/dev/tpm0`) one process at a time can use the TPM;
//!   use `/dev/tpmrm0` or tpm2-abrmd to share it.

mod attest;
mod config;
mod error;
mod keys;
mod pcr;
mod provider;
mod seal;
mod session;
mod sign;
pub mod verify_attest;
mod worker;

pub use attest::{AK_MECHANISM, EK_CERT_NV_INDICES, MAX_NONCE_LEN, Quote};
pub use config::{SRK_PERSISTENT_HANDLE, TCTI_ENV_VARS, TpmBuilder, URI_ATTRS, URI_QUERY};
pub use pcr::{PCR_COUNT, PcrSelection, PcrValues};
pub use provider::TpmProvider;
pub use seal::{MAX_SEALED_LEN, SealedInfo};
