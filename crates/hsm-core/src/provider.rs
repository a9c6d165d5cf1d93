//! The provider contract: [`HsmProvider`], and the optional [`KeyAttestation`] trait.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Result;
use crate::public_key::PublicKey;
use crate::types::{
    Capabilities, Ciphertext, DecryptRequest, EncryptRequest, GenerateKeyRequest, KeyFilter, KeyId,
    KeyInfo, Mechanism, ProviderInfo, SignInput, UnwrapKeyRequest,
};

/// One place private keys live: a PKCS#11 token, a TPM, a cloud KMS, a secure element, or the
/// software keystore.
///
/// Object safe, `Send + Sync`: applications hold an `Arc<dyn HsmProvider>` and need not know which
/// backend they have. Every method is required and has a contract; a provider that cannot do
/// something returns [`HsmError::NotSupported`](crate::HsmError::NotSupported) and leaves it out of
/// [`capabilities`](HsmProvider::capabilities).
///
/// Errors common to every method: `Unavailable` (backend unreachable or busy; see
/// [`is_retryable`](crate::HsmError::is_retryable)), `Unauthenticated` (login missing or
/// rejected), `Backend` (anything else, with the vendor's code as the source).
#[async_trait]
pub trait HsmProvider: Send + Sync + fmt::Debug {
    /// The provider's short name (`soft`, `pkcs11`, `tpm`, `aws-kms`), used in errors and spans.
    fn name(&self) -> &str;

    /// Who made the device and what it is.
    async fn info(&self) -> Result<ProviderInfo>;

    /// What this provider really supports.
    ///
    /// # Contract
    /// Every key type and (key type, mechanism, operation) listed works; everything else fails with
    /// `NotSupported`. The conformance suite checks both directions.
    async fn capabilities(&self) -> Result<Capabilities>;

    /// Generates a key inside the provider.
    ///
    /// # Contract
    /// - Returns the new key's info; its `id` is what later calls take.
    /// - `NotSupported` for a key type not in `capabilities().key_types`.
    /// - `AlreadyExists` where the provider requires unique labels and the label is taken.
    /// - `InvalidInput` for attributes the key type cannot have (e.g. `sign` on an AES key).
    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo>;

    /// The public key of an asymmetric key, as SubjectPublicKeyInfo.
    ///
    /// # Contract
    /// `KeyNotFound` for an unknown id; `InvalidInput` for a symmetric key.
    async fn public_key(&self, key: &KeyId) -> Result<PublicKey>;

    /// What the provider knows about one key. `KeyNotFound` for an unknown id.
    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo>;

    /// The keys matching `filter` (an empty filter lists every key). Never fails because nothing
    /// matched: that is an empty list.
    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>>;

    /// Destroys a key. `KeyNotFound` if it does not exist; after success every use of the id
    /// gives `KeyNotFound`.
    async fn delete_key(&self, key: &KeyId) -> Result<()>;

    /// Signs a message or a precomputed digest.
    ///
    /// # Contract
    /// - [`SignInput::Message`] is hashed with the mechanism's hash (by the device or in software,
    ///   the result is the same); [`SignInput::Digest`] must already be that hash, of its length.
    /// - Returns the signature in the mechanism's encoding (ECDSA DER or `r || s`).
    /// - `KeyNotFound`; `PermissionDenied` if the key's usage lacks `sign`; `InvalidInput` if the
    ///   mechanism does not fit the key or the digest length is wrong; `NotSupported` for a
    ///   mechanism, or digest input, the provider does not offer.
    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>>;

    /// Verifies a signature with the key (on the device, or locally from its public key).
    ///
    /// # Contract
    /// `Ok(true)` valid, `Ok(false)` invalid (including malformed signature bytes); errors as for
    /// [`sign`](HsmProvider::sign).
    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool>;

    /// Encrypts with AES-GCM or RSA-OAEP.
    ///
    /// # Contract
    /// - AES-GCM: a 12-byte IV from the request, or a fresh random one chosen by the provider;
    ///   the returned [`Ciphertext`] holds the IV and the ciphertext with the 16-byte tag appended.
    /// - `PermissionDenied` without `encrypt` usage; `InvalidInput` for a bad IV length or a
    ///   plaintext too long for RSA-OAEP.
    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext>;

    /// Decrypts what [`encrypt`](HsmProvider::encrypt) (or any correct implementation) produced.
    ///
    /// # Contract
    /// `IntegrityCheckFailed` if the tag, IV, AAD or ciphertext do not authenticate (AES-GCM) or
    /// the OAEP padding is wrong; the plaintext is returned zeroize-on-drop.
    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Wraps (exports) `key` under `wrapping_key`.
    ///
    /// # Contract
    /// - Secret keys are wrapped as their raw bytes, private keys as PKCS#8 `PrivateKeyInfo` DER
    ///   (what PKCS#11 tokens, AWS KMS, Google Cloud KMS and Azure import flows expect).
    /// - `PermissionDenied` if `key` is not extractable or `wrapping_key` lacks `wrap` usage.
    /// - `InvalidInput` if the input does not suit the mechanism (RFC 3394 needs a multiple of
    ///   8 bytes; RSA-OAEP only fits short secret keys).
    async fn wrap_key(
        &self,
        wrapping_key: &KeyId,
        key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>>;

    /// Unwraps (imports) a wrapped key as a new key with the requested attributes.
    ///
    /// # Contract
    /// `IntegrityCheckFailed` if the wrapped bytes do not authenticate under `unwrapping_key`;
    /// `InvalidInput` if they do not hold a key of the requested type; `PermissionDenied` without
    /// `unwrap` usage.
    async fn unwrap_key(
        &self,
        unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo>;

    /// The provider's attestation interface, if it has one.
    fn attestation(&self) -> Option<&dyn KeyAttestation> {
        None
    }

    /// The provider's key lifecycle interface (aliases, enable/disable, rotation, scheduled
    /// deletion), if it is a managed key service that has one.
    fn lifecycle(&self) -> Option<&dyn KeyLifecycle> {
        None
    }
}

/// A provider used through an `Arc`.
pub type DynProvider = Arc<dyn HsmProvider>;

/// Where a key is in its lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
#[non_exhaustive]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Kept, but every use fails until it is enabled again.
    Disabled,
    /// Unusable, and destroyed at `deletion_at` (Unix seconds) unless the deletion is cancelled.
    PendingDeletion {
        /// When the service destroys the key, in seconds since the Unix epoch.
        deletion_at: Option<i64>,
    },
    /// Created for imported key material that has not arrived (or has expired).
    PendingImport,
    /// Not usable for another reason the service gives (its own word for the state).
    Other(String),
}

/// An alias: a stable name for a key that can be moved to another key (for rotation by hand).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyAlias {
    /// The alias as the service spells it (AWS: `alias/name`).
    pub name: String,
    /// The key it names.
    pub key: KeyId,
}

impl KeyAlias {
    /// An alias record.
    pub fn new(name: impl Into<String>, key: KeyId) -> Self {
        KeyAlias {
            name: name.into(),
            key,
        }
    }
}

/// Key lifecycle as managed key services offer it (AWS KMS, Google Cloud KMS, Azure Key Vault).
/// Reached through [`HsmProvider::lifecycle`].
///
/// Errors common to every method: `KeyNotFound` for an unknown key or alias, `NotSupported` for
/// what the service does not offer for that key (rotation of an asymmetric AWS key, say),
/// `InvalidInput` for a name or period the service refuses, with its reason.
#[async_trait]
pub trait KeyLifecycle: Send + Sync {
    /// The key's state.
    async fn key_state(&self, key: &KeyId) -> Result<KeyState>;

    /// Points a new alias at `key`. `AlreadyExists` if the alias exists.
    async fn create_alias(&self, alias: &str, key: &KeyId) -> Result<()>;

    /// Points an existing alias at another key.
    async fn update_alias(&self, alias: &str, key: &KeyId) -> Result<()>;

    /// Removes an alias (the key stays).
    async fn delete_alias(&self, alias: &str) -> Result<()>;

    /// The aliases, of one key or of all.
    async fn list_aliases(&self, key: Option<&KeyId>) -> Result<Vec<KeyAlias>>;

    /// Enables or disables a key. A disabled key keeps its material; every use fails with
    /// `PermissionDenied` until it is enabled again.
    async fn set_enabled(&self, key: &KeyId, enabled: bool) -> Result<()>;

    /// Turns automatic rotation on (every `period_days`, where the service lets the period be
    /// chosen; `None` for its default) or off.
    async fn set_rotation(&self, key: &KeyId, on: bool, period_days: Option<u32>) -> Result<()>;

    /// Whether automatic rotation is on.
    async fn rotation_enabled(&self, key: &KeyId) -> Result<bool>;

    /// Schedules the key's destruction after a waiting period of `pending_days` (the service
    /// sets the allowed range; AWS: 7 to 30). Returns the state, with the deletion time. Until
    /// then the key is unusable and [`cancel_deletion`](KeyLifecycle::cancel_deletion) brings
    /// it back.
    async fn schedule_deletion(&self, key: &KeyId, pending_days: u32) -> Result<KeyState>;

    /// Cancels a scheduled deletion. The key comes back disabled, as the services do it: enable
    /// it to use it again.
    async fn cancel_deletion(&self, key: &KeyId) -> Result<()>;
}

/// The format of an [`Attestation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AttestationFormat {
    /// TPM 2.0 `TPMS_ATTEST` from `TPM2_Certify`, signed by an attestation key.
    TpmCertify,
    /// TPM 2.0 `TPMS_ATTEST` from `TPM2_Quote` over PCRs.
    TpmQuote,
    /// Android Key Attestation certificate chain (the extension in the leaf certificate).
    AndroidKeyAttestation,
    /// Apple App Attest / Secure Enclave attestation object.
    AppleAppAttest,
    /// A vendor's own format (for example a PKCS#11 HSM's key attestation blob).
    Vendor(String),
}

/// Evidence that a key lives in, and was generated by, a particular device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attestation {
    /// How to interpret the other fields.
    pub format: AttestationFormat,
    /// The signed statement (e.g. `TPMS_ATTEST` bytes).
    pub statement: Vec<u8>,
    /// The signature over `statement` (empty where the chain carries it).
    pub signature: Vec<u8>,
    /// DER certificates, leaf first, that vouch for the signing key.
    pub certificate_chain: Vec<Vec<u8>>,
}

impl Attestation {
    /// An attestation record.
    pub fn new(
        format: AttestationFormat,
        statement: Vec<u8>,
        signature: Vec<u8>,
        certificate_chain: Vec<Vec<u8>>,
    ) -> Self {
        Attestation {
            format,
            statement,
            signature,
            certificate_chain,
        }
    }
}

/// Key attestation, for providers whose hardware can vouch for its keys (TPM, Android
/// StrongBox, Secure Enclave, some PKCS#11 HSMs). Reached through
/// [`HsmProvider::attestation`].
#[async_trait]
pub trait KeyAttestation: Send + Sync {
    /// Produces evidence about `key`, bound to the verifier's `nonce` so it cannot be replayed.
    ///
    /// # Contract
    /// `KeyNotFound` for an unknown key; `NotSupported` for a key the device cannot attest (for
    /// example one imported from outside).
    async fn attest_key(&self, key: &KeyId, nonce: &[u8]) -> Result<Attestation>;
}
