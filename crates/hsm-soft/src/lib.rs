//! # hsm-soft: the software provider
//!
//! Keys in a file encrypted at rest (Argon2id from a passphrase, AES-256-GCM per record; see
//! [`keystore`](crate::KdfParams) for the format), operations in AWS-LC, and the policy an HSM
//! enforces: usage flags are checked and non-extractable keys are never wrapped out.
//!
//! It is the embedded default of the `hsm` CLI, the fallback where a device has no secure
//! hardware, and the reference provider of the conformance suite. An in-memory mode serves tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hsm_core::HsmError> {
//! use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, Secret, SignInput};
//! let provider = hsm_soft::SoftBuilder::file("keys.hsm")
//!     .passphrase(Secret::from(std::env::var("HSM_PASSPHRASE").unwrap_or_default()))
//!     .create_if_missing(true)
//!     .build()
//!     .await?;
//! let key = provider.generate_key(&GenerateKeyRequest::new("release", KeyType::EcP256)).await?;
//! let sig = provider
//!     .sign(&key.id, &Mechanism::ecdsa(HashAlg::Sha256), SignInput::Message(b"hello"))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Why AWS-LC
//! AWS-LC (through `aws-lc-rs`) is constant-time, FIPS-validated in its `fips` build, fast, and
//! has every primitive a keystore needs (RSA, ECDSA P-256/384/521, Ed25519, AES-GCM, RFC 3394 and
//! RFC 5649 key wrap). It is also an implementation independent of the RustCrypto verifier in
//! `hsm-core`, so the conformance suite checks this provider against other software.
//!
//! ## Limits (as AWS-LC sets them)
//! ECDSA signs P-256 with SHA-256 only, P-384 with SHA-384 only, P-521 with SHA-256/384/512; PSS
//! uses a salt as long as the hash; OAEP uses the same hash for MGF1; AES key wrap takes 128- and
//! 256-bit wrapping keys. [`SoftProvider`]'s capabilities list exactly this.

mod cipher;
mod config;
mod error;
mod keystore;
mod material;
mod provider;
mod sign;
mod wrap;

pub use config::{SoftBuilder, URI_ATTRS, URI_QUERY};
pub use keystore::KdfParams;
pub use provider::SoftProvider;
