//! # hsm-core: one interface to the places private keys should live
//!
//! `hsm-core` is the contract every hsm-rs provider implements: PKCS#11 HSMs, TPM 2.0, cloud
//! KMS/HSM services, Apple's Secure Enclave, Android StrongBox, and the software keystore
//! (`hsm-soft`). Applications hold an `Arc<dyn HsmProvider>` and do not need to know which one
//! they have.
//!
//! - [`HsmProvider`]: the async, object-safe trait (`info`, `capabilities`, `generate_key`,
//!   `public_key`, `get_key`, `find_keys`, `delete_key`, `sign`, `verify`, `encrypt`, `decrypt`,
//!   `wrap_key`, `unwrap_key`), each method with a documented contract.
//! - [`KeyAttestation`]: the optional attestation trait, reached via [`HsmProvider::attestation`].
//! - [`KeyLifecycle`]: aliases, enable/disable, rotation and scheduled deletion for managed key
//!   services, reached via [`HsmProvider::lifecycle`].
//! - [`HsmError`]: the one error type; semantic variants, [`HsmError::is_retryable`], vendor
//!   codes kept as the source, never a secret.
//! - [`Traced`]: a `tracing` span per operation for any provider.
//! - [`verify`]: software verification from a public key (RustCrypto; see the module for why),
//!   and with feature `aws-lc` a fast AWS-LC verifier for providers that verify locally.
//! - [`HsmSigner`]: any provider key as a RustCrypto `Keypair` + `AsyncSigner` + `Signer`.
//! - [`files`]: atomic, owner-only writes for files that hold keys.
//! - [`remote`]: deadlines, bounded retries with backoff, a rate limit and a single-flight TTL
//!   cache, shared by the providers that reach their keys over a network.
//! - [`config`]: provider URIs (`soft:path=..;object=..`, `pkcs11:token=..;object=..`) and
//!   [`PinSource`] for secrets.
//! - `conformance` (feature `conformance`): the shared suite every provider runs against its
//!   real peer.
//!
//! ## The task's example interface, mapped
//! | example | hsm-rs |
//! |---|---|
//! | `Initialize(config)` | each provider's validated builder or URI (`SoftBuilder::from_uri(..).build().await`), returning a provider |
//! | `GenerateKey(type, attrs)` | [`HsmProvider::generate_key`] with a [`GenerateKeyRequest`] |
//! | `Sign(key, data)` | [`HsmProvider::sign`], with [`SignInput::Message`] or [`SignInput::Digest`] said explicitly |
//! | `Verify(key, data, sig)` | [`HsmProvider::verify`] (on the device), or [`verify::verify_signature`] locally |
//! | `WrapKey(wrapping, key)` | [`HsmProvider::wrap_key`] (raw secret keys, PKCS#8 private keys) |
//! | `UnwrapKey(unwrapping, blob)` | [`HsmProvider::unwrap_key`] with an [`UnwrapKeyRequest`] |
//!
//! ## Example
//! ```no_run
//! # async fn demo(provider: &dyn hsm_core::HsmProvider) -> Result<(), hsm_core::HsmError> {
//! use hsm_core::{GenerateKeyRequest, HashAlg, KeyType, Mechanism, SignInput};
//! let mech = Mechanism::ecdsa(HashAlg::Sha256);
//! let key = provider
//!     .generate_key(&GenerateKeyRequest::new("release-signing", KeyType::EcP256))
//!     .await?;
//! let sig = provider.sign(&key.id, &mech, SignInput::Message(b"hello")).await?;
//! let public = provider.public_key(&key.id).await?;
//! assert!(hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(b"hello"), &sig)?);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
mod error;
pub mod files;
mod provider;
mod public_key;
pub mod remote;
mod signer;
mod traced;
mod types;
pub mod verify;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod paired;

pub use config::{PinSource, ProviderUri, Secret};
pub use error::{BoxError, HsmError, Result};
pub use provider::{
    Attestation, AttestationFormat, DynProvider, HsmProvider, KeyAlias, KeyAttestation,
    KeyLifecycle, KeyState,
};
pub use public_key::PublicKey;
pub use signer::{BlockingHsmSigner, HsmSignature, HsmSigner};
pub use traced::Traced;
pub use types::{
    Capabilities, Ciphertext, DecryptRequest, EcdsaFormat, EncryptRequest, GenerateKeyRequest,
    HashAlg, KeyAttributes, KeyFamily, KeyFilter, KeyId, KeyInfo, KeyType, KeyUsage, Mechanism,
    MechanismSupport, Operation, ProviderInfo, SaltLen, SignInput, SupportIndex, UnwrapKeyRequest,
};

/// Re-exported so providers and applications use the same `async-trait`.
pub use async_trait::async_trait;
/// Re-exported for zeroize-on-drop plaintexts.
pub use zeroize::Zeroizing;
