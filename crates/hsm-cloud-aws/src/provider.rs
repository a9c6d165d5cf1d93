//! [`AwsKmsProvider`]: the [`HsmProvider`] contract over AWS KMS.
//!
//! Every KMS call goes through [`hsm_core::remote::Remote`] (deadline, bounded retries, rate
//! limit); the SDK's own retries are off so there is one retry policy, not two stacked. Public
//! keys and key metadata are cached with a TTL, so verification makes no network call after the
//! first and signing makes one (`Sign`).

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    EncryptionAlgorithmSpec, KeyMetadata, KeySpec, KeyState as AwsKeyState, KeyUsageType,
    MessageType, OriginType, SigningAlgorithmSpec,
};
use hsm_core::remote::{Idempotency, Remote, TtlCache, all_pages};
use hsm_core::{
    Capabilities, Ciphertext, DecryptRequest, EcdsaFormat, EncryptRequest, GenerateKeyRequest,
    HashAlg, HsmError, HsmProvider, KeyAttributes, KeyFilter, KeyId, KeyInfo, KeyLifecycle,
    KeyType, KeyUsage, Mechanism, Operation, ProviderInfo, PublicKey, SaltLen, SignInput,
    SupportIndex, UnwrapKeyRequest, Zeroizing,
};

use crate::config::AwsKmsBuilder;
use crate::error::{PROVIDER, classify, to_hsm};

/// The largest message KMS signs as `RAW`; longer ones are hashed here and sent as `DIGEST`.
const RAW_MAX: usize = 4096;

/// AWS KMS behind the hsm-rs contract. Keys never leave KMS; `wrap_key` is not offered, and
/// keys come in through the import methods ([`AwsKmsProvider::create_import_key`],
/// [`AwsKmsProvider::import_parameters`], [`AwsKmsProvider::import_key_material`]).
pub struct AwsKmsProvider {
    client: Client,
    remote: Remote,
    region: String,
    endpoint: Option<String>,
    caps: Capabilities,
    supported: SupportIndex,
    public_keys: TtlCache<String, PublicKey>,
    metadata: TtlCache<String, KeyInfo>,
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("policy", self.remote.policy())
            .finish_non_exhaustive()
    }
}

/// The KMS key spec of a key type, where KMS has one.
fn key_spec(kt: KeyType) -> Option<KeySpec> {
    Some(match kt {
        KeyType::Rsa2048 => KeySpec::Rsa2048,
        KeyType::Rsa3072 => KeySpec::Rsa3072,
        KeyType::Rsa4096 => KeySpec::Rsa4096,
        KeyType::EcP256 => KeySpec::EccNistP256,
        KeyType::EcP384 => KeySpec::EccNistP384,
        KeyType::EcP521 => KeySpec::EccNistP521,
        KeyType::Aes256 => KeySpec::SymmetricDefault,
        _ => return None,
    })
}

fn key_type(spec: &KeySpec) -> Option<KeyType> {
    Some(match spec {
        KeySpec::Rsa2048 => KeyType::Rsa2048,
        KeySpec::Rsa3072 => KeyType::Rsa3072,
        KeySpec::Rsa4096 => KeyType::Rsa4096,
        KeySpec::EccNistP256 => KeyType::EcP256,
        KeySpec::EccNistP384 => KeyType::EcP384,
        KeySpec::EccNistP521 => KeyType::EcP521,
        KeySpec::SymmetricDefault => KeyType::Aes256,
        _ => return None,
    })
}

/// KMS's name for a signing mechanism. KMS's PSS salt is the hash length; ECDSA pairs each
/// curve with one hash.
fn signing_algorithm(kt: KeyType, mech: &Mechanism) -> Option<SigningAlgorithmSpec> {
    use SigningAlgorithmSpec as S;
    Some(match (kt, mech) {
        (_, Mechanism::RsaPkcs1v15 { hash }) => match hash {
            HashAlg::Sha256 => S::RsassaPkcs1V15Sha256,
            HashAlg::Sha384 => S::RsassaPkcs1V15Sha384,
            HashAlg::Sha512 => S::RsassaPkcs1V15Sha512,
            _ => return None,
        },
        (
            _,
            Mechanism::RsaPss {
                hash,
                salt: SaltLen::HashLen,
            },
        ) => match hash {
            HashAlg::Sha256 => S::RsassaPssSha256,
            HashAlg::Sha384 => S::RsassaPssSha384,
            HashAlg::Sha512 => S::RsassaPssSha512,
            _ => return None,
        },
        (
            KeyType::EcP256,
            Mechanism::Ecdsa {
                hash: HashAlg::Sha256,
                ..
            },
        ) => S::EcdsaSha256,
        (
            KeyType::EcP384,
            Mechanism::Ecdsa {
                hash: HashAlg::Sha384,
                ..
            },
        ) => S::EcdsaSha384,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: HashAlg::Sha512,
                ..
            },
        ) => S::EcdsaSha512,
        _ => return None,
    })
}

fn encryption_algorithm(mech: &Mechanism) -> Option<EncryptionAlgorithmSpec> {
    Some(match mech {
        Mechanism::ManagedAead => EncryptionAlgorithmSpec::SymmetricDefault,
        Mechanism::RsaOaep {
            hash: HashAlg::Sha1,
            mgf1: HashAlg::Sha1,
        } => EncryptionAlgorithmSpec::RsaesOaepSha1,
        Mechanism::RsaOaep {
            hash: HashAlg::Sha256,
            mgf1: HashAlg::Sha256,
        } => EncryptionAlgorithmSpec::RsaesOaepSha256,
        _ => return None,
    })
}

/// What KMS offers, as capabilities.
fn capabilities() -> Capabilities {
    let mut caps = Capabilities::default();
    let rsa = [KeyType::Rsa2048, KeyType::Rsa3072, KeyType::Rsa4096];
    let ec = [KeyType::EcP256, KeyType::EcP384, KeyType::EcP521];
    caps.key_types = rsa.iter().chain(&ec).copied().collect();
    caps.key_types.push(KeyType::Aes256);
    use Operation::*;
    for kt in caps.key_types.clone() {
        for mech in Mechanism::catalog().into_iter().filter(|m| m.fits(kt)) {
            if signing_algorithm(kt, &mech).is_some() {
                caps.add(&[kt], mech, &[Sign, SignDigest, Verify]);
            } else if let Some(alg) = encryption_algorithm(&mech) {
                let symmetric = alg == EncryptionAlgorithmSpec::SymmetricDefault;
                if symmetric == (kt == KeyType::Aes256) {
                    caps.add(&[kt], mech, &[Encrypt, Decrypt]);
                }
            }
        }
    }
    caps.extractable_keys = false;
    caps.session_keys = false;
    caps.oaep_labels = false;
    caps
}

/// Our usage for a KMS key usage.
fn usage(u: Option<&KeyUsageType>) -> KeyUsage {
    match u {
        Some(KeyUsageType::SignVerify) => KeyUsage::SIGN,
        Some(KeyUsageType::EncryptDecrypt) => KeyUsage::ENCRYPT,
        _ => KeyUsage::default(),
    }
}

/// A key's info from its KMS metadata.
fn key_info(m: &KeyMetadata) -> Result<KeyInfo, HsmError> {
    let spec = m.key_spec().ok_or_else(|| {
        HsmError::backend(
            PROVIDER,
            format!("key {} has no key spec", m.key_id()),
            std::io::Error::other("missing KeySpec"),
        )
    })?;
    let kt = key_type(spec).ok_or_else(|| {
        HsmError::not_supported(PROVIDER, format!("key {} of spec {spec}", m.key_id()))
    })?;
    let label = m.description().unwrap_or_default().to_owned();
    let mut attributes = KeyAttributes::new(label.clone(), kt).with_usage(usage(m.key_usage()));
    attributes.extractable = false;
    Ok(KeyInfo {
        id: KeyId::with_label(m.key_id(), label),
        key_type: kt,
        attributes,
    })
}

impl AwsKmsProvider {
    pub(crate) async fn connect(b: AwsKmsBuilder) -> Result<Self, HsmError> {
        let remote = Remote::new(PROVIDER, b.policy)?;
        let sdk =
            crate::config::sdk_config(b.region.as_deref(), b.endpoint.as_deref(), &b.creds).await?;
        let conf = aws_sdk_kms::config::Builder::from(&sdk).build();
        let region = sdk.region().map(ToString::to_string).unwrap_or_default();
        let caps = capabilities();
        Ok(AwsKmsProvider {
            client: Client::from_conf(conf),
            remote,
            region,
            endpoint: b.endpoint,
            supported: SupportIndex::new(&caps),
            caps,
            public_keys: TtlCache::new(b.public_key_ttl),
            metadata: TtlCache::new(b.public_key_ttl),
        })
    }

    /// The network counters (calls, retries, throttling, timeouts, rate-limit waits).
    pub fn remote_stats(&self) -> hsm_core::remote::RemoteStats {
        self.remote.stats()
    }

    /// The SDK client, for KMS calls the contract does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One KMS call under the remote policy.
    pub(crate) async fn call<T, E, R, Fut>(
        &self,
        what: &str,
        idempotency: Idempotency,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, HsmError>
    where
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        self.remote
            .call(what, idempotency, classify, |e| to_hsm(e, what), attempt)
            .await
    }

    /// The key's info, from the cache or `DescribeKey`. Keys scheduled for deletion are gone.
    pub(crate) async fn info_of(&self, key: &KeyId) -> Result<KeyInfo, HsmError> {
        self.metadata
            .get_or_fetch(&key.id, || async {
                let what = format!("describing key {}", key.display_name());
                let out = self
                    .call(&what, Idempotency::Idempotent, || {
                        self.client.describe_key().key_id(&key.id).send()
                    })
                    .await?;
                let m = out
                    .key_metadata()
                    .ok_or_else(|| HsmError::key_not_found(key.display_name()))?;
                if matches!(m.key_state(), Some(AwsKeyState::PendingDeletion)) {
                    return Err(HsmError::KeyNotFound {
                        key: format!("{} (scheduled for deletion)", key.display_name()),
                    });
                }
                key_info(m)
            })
            .await
    }

    /// Forgets what is cached about `key`.
    pub(crate) fn forget(&self, key: &KeyId) {
        self.metadata.remove(&key.id);
        self.public_keys.remove(&key.id);
    }

    /// `CreateKey` for `request`, with material made by KMS or (origin `EXTERNAL`) imported
    /// later. Not retried once its outcome is unknown.
    pub(crate) async fn create_key(
        &self,
        request: &GenerateKeyRequest,
        origin: OriginType,
    ) -> Result<KeyInfo, HsmError> {
        let kt = request.key_type;
        let attrs = &request.attributes;
        let spec =
            key_spec(kt).ok_or_else(|| HsmError::not_supported(PROVIDER, format!("{kt} keys")))?;
        attrs.check_for(kt)?;
        // KMS key usage is SIGN_VERIFY or ENCRYPT_DECRYPT, each both ways: a usage it cannot
        // enforce is refused rather than silently widened.
        let key_usage = match attrs.usage {
            u if u == KeyUsage::SIGN => KeyUsageType::SignVerify,
            u if u == KeyUsage::ENCRYPT => KeyUsageType::EncryptDecrypt,
            _ => {
                return Err(HsmError::invalid(
                    "an AWS KMS key has usage sign+verify or encrypt+decrypt, nothing else \
                     (no verify-only, wrap or derive keys)",
                ));
            }
        };
        let what = format!("creating {kt} key {:?}", attrs.label);
        let out = self
            .call(&what, Idempotency::NotIdempotent, || {
                self.client
                    .create_key()
                    .key_spec(spec.clone())
                    .key_usage(key_usage.clone())
                    .origin(origin.clone())
                    .description(&attrs.label)
                    .send()
            })
            .await?;
        let m = out.key_metadata().ok_or_else(|| {
            HsmError::backend(
                PROVIDER,
                format!("{what}: no key metadata"),
                std::io::Error::other("missing KeyMetadata"),
            )
        })?;
        key_info(m)
    }

    /// `GenerateDataKey`: a fresh AES-256 data key for envelope encryption, in plaintext (to
    /// use now and then zeroize) and encrypted under `key` (to store beside the data).
    pub async fn generate_data_key(&self, key: &KeyId) -> Result<DataKey, HsmError> {
        let what = format!("generating a data key under {}", key.display_name());
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client
                    .generate_data_key()
                    .key_id(&key.id)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .send()
            })
            .await?;
        let missing = || {
            HsmError::backend(
                PROVIDER,
                format!("{what}: the answer lacks the key"),
                std::io::Error::other("missing field"),
            )
        };
        Ok(DataKey {
            plaintext: Zeroizing::new(out.plaintext().ok_or_else(missing)?.as_ref().to_vec()),
            encrypted: out.ciphertext_blob().ok_or_else(missing)?.as_ref().to_vec(),
        })
    }
}

/// A data key from [`AwsKmsProvider::generate_data_key`].
pub struct DataKey {
    /// The AES-256 key; zeroized when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The same key encrypted under the KMS key: `decrypt` with `Mechanism::ManagedAead` gives
    /// it back.
    pub encrypted: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"***")
            .field("encrypted", &format_args!("{} bytes", self.encrypted.len()))
            .finish()
    }
}

/// AAD as a KMS encryption context: one entry, the AAD in hex, so any bytes can be bound.
fn context(aad: Option<&[u8]>) -> Option<std::collections::HashMap<String, String>> {
    aad.map(|a| [("hsm-rs-aad".to_owned(), hex::encode(a))].into())
}

#[async_trait]
impl HsmProvider for AwsKmsProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn info(&self) -> Result<ProviderInfo, HsmError> {
        let model = match &self.endpoint {
            Some(e) => format!("AWS KMS {} at {e}", self.region),
            None => format!("AWS KMS {}", self.region),
        };
        Ok(ProviderInfo::new(
            PROVIDER,
            "Amazon Web Services",
            model,
            "api 2014-11-01",
        ))
    }

    async fn capabilities(&self) -> Result<Capabilities, HsmError> {
        Ok(self.caps.clone())
    }

    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo, HsmError> {
        if request.attributes.extractable {
            return Err(HsmError::invalid(
                "AWS KMS keys can never be exported: extractable keys are not possible",
            ));
        }
        if !request.attributes.persistent {
            return Err(HsmError::not_supported(
                PROVIDER,
                "session (non-persistent) keys",
            ));
        }
        self.create_key(request, OriginType::AwsKms).await
    }

    async fn public_key(&self, key: &KeyId) -> Result<PublicKey, HsmError> {
        let info = self.info_of(key).await?;
        if !info.key_type.is_asymmetric() {
            return Err(HsmError::invalid(format!(
                "{} is a symmetric key: it has no public key",
                key.display_name()
            )));
        }
        self.public_keys
            .get_or_fetch(&key.id, || async {
                let what = format!("reading the public key of {}", key.display_name());
                let out = self
                    .call(&what, Idempotency::Idempotent, || {
                        self.client.get_public_key().key_id(&key.id).send()
                    })
                    .await?;
                let der = out.public_key().ok_or_else(|| {
                    HsmError::backend(
                        PROVIDER,
                        format!("{what}: no public key in the answer"),
                        std::io::Error::other("missing PublicKey"),
                    )
                })?;
                PublicKey::from_spki_der(der.as_ref())
            })
            .await
    }

    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo, HsmError> {
        self.info_of(key).await
    }

    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>, HsmError> {
        let ids = all_pages(|marker| async move {
            let page = self
                .call("listing keys", Idempotency::Idempotent, || {
                    self.client
                        .list_keys()
                        .set_marker(marker.clone())
                        .limit(1000)
                        .send()
                })
                .await?;
            let ids = page.keys().iter().filter_map(|k| k.key_id());
            let next = page.next_marker().filter(|_| page.truncated());
            Ok((
                ids.map(KeyId::new).collect::<Vec<_>>(),
                next.map(str::to_owned),
            ))
        })
        .await?;
        let mut out = Vec::new();
        for id in ids {
            // Keys of specs hsm-rs does not model (HMAC, SM2, ...) and keys scheduled for
            // deletion are left out.
            match self.info_of(&id).await {
                Ok(info) if filter.matches(&info) => out.push(info),
                Ok(_) | Err(HsmError::KeyNotFound { .. } | HsmError::NotSupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.attributes.label.cmp(&b.attributes.label));
        Ok(out)
    }

    /// Schedules the key's deletion after KMS's shortest waiting period (7 days); from now on
    /// it is gone for every caller. [`KeyLifecycle::cancel_deletion`] brings it back.
    async fn delete_key(&self, key: &KeyId) -> Result<(), HsmError> {
        match self.info_of(key).await {
            // A key of a spec the contract does not model (an HMAC key) is still deleted.
            Ok(_) | Err(HsmError::NotSupported { .. }) => {}
            Err(e) => return Err(e),
        }
        self.schedule_deletion(key, 7).await?;
        Ok(())
    }

    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>, HsmError> {
        input.check(mechanism)?;
        let info = self.info_of(key).await?;
        self.supported
            .check(PROVIDER, &info, mechanism, input.operation())?;
        let alg = signing_algorithm(info.key_type, mechanism).ok_or_else(|| {
            HsmError::not_supported(PROVIDER, format!("signing with {mechanism}"))
        })?;
        let (message, kind) = match input {
            SignInput::Message(m) if m.len() <= RAW_MAX => (m.to_vec(), MessageType::Raw),
            other => (
                other.digest_for(mechanism)?.ok_or_else(|| {
                    HsmError::invalid(format!("{mechanism} needs a hash to sign a digest"))
                })?,
                MessageType::Digest,
            ),
        };
        let what = format!("signing with key {}", key.display_name());
        let message = Blob::new(message);
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client
                    .sign()
                    .key_id(&key.id)
                    .message(message.clone())
                    .message_type(kind.clone())
                    .signing_algorithm(alg.clone())
                    .send()
            })
            .await?;
        let sig = out
            .signature()
            .ok_or_else(|| {
                HsmError::backend(
                    PROVIDER,
                    format!("{what}: no signature in the answer"),
                    std::io::Error::other("missing Signature"),
                )
            })?
            .as_ref()
            .to_vec();
        match mechanism {
            // KMS gives DER.
            Mechanism::Ecdsa {
                format: EcdsaFormat::Fixed,
                ..
            } => hsm_core::verify::ecdsa_der_to_fixed(info.key_type, &sig),
            _ => Ok(sig),
        }
    }

    /// Verifies locally with the cached public key: no network call once the key is cached.
    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        input.check(mechanism)?;
        let info = self.info_of(key).await?;
        self.supported
            .check(PROVIDER, &info, mechanism, Operation::Verify)?;
        let public = self.public_key(key).await?;
        hsm_core::verify::aws_lc::verify_signature(PROVIDER, &public, mechanism, input, signature)
    }

    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext, HsmError> {
        let info = self.info_of(key).await?;
        self.supported
            .check(PROVIDER, &info, mechanism, Operation::Encrypt)?;
        check_crypt_options(mechanism, request.iv, request.aad, request.label)?;
        let alg = encryption_algorithm(mechanism).expect("claimed mechanisms have a KMS name");
        let what = format!("encrypting with key {}", key.display_name());
        let plaintext = Blob::new(request.plaintext.to_vec());
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client
                    .encrypt()
                    .key_id(&key.id)
                    .plaintext(plaintext.clone())
                    .encryption_algorithm(alg.clone())
                    .set_encryption_context(context(request.aad))
                    .send()
            })
            .await?;
        let data = out
            .ciphertext_blob()
            .ok_or_else(|| {
                HsmError::backend(
                    PROVIDER,
                    format!("{what}: no ciphertext in the answer"),
                    std::io::Error::other("missing CiphertextBlob"),
                )
            })?
            .as_ref()
            .to_vec();
        Ok(Ciphertext { data, iv: None })
    }

    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let info = self.info_of(key).await?;
        self.supported
            .check(PROVIDER, &info, mechanism, Operation::Decrypt)?;
        check_crypt_options(mechanism, request.iv, request.aad, request.label)?;
        let alg = encryption_algorithm(mechanism).expect("claimed mechanisms have a KMS name");
        let what = format!("decrypting with key {}", key.display_name());
        let blob = Blob::new(request.ciphertext.to_vec());
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client
                    .decrypt()
                    .key_id(&key.id)
                    .ciphertext_blob(blob.clone())
                    .encryption_algorithm(alg.clone())
                    .set_encryption_context(context(request.aad))
                    .send()
            })
            .await?;
        let pt = out.plaintext().ok_or_else(|| {
            HsmError::backend(
                PROVIDER,
                format!("{what}: no plaintext in the answer"),
                std::io::Error::other("missing Plaintext"),
            )
        })?;
        Ok(Zeroizing::new(pt.as_ref().to_vec()))
    }

    async fn wrap_key(
        &self,
        _wrapping_key: &KeyId,
        _key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>, HsmError> {
        Err(HsmError::not_supported(
            PROVIDER,
            format!("wrapping out with {mechanism}: AWS KMS keys never leave KMS"),
        ))
    }

    async fn unwrap_key(
        &self,
        _unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        _request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo, HsmError> {
        Err(HsmError::not_supported(
            PROVIDER,
            format!(
                "unwrapping with {mechanism} under an existing key: KMS imports through \
                 GetParametersForImport / ImportKeyMaterial"
            ),
        ))
    }

    fn lifecycle(&self) -> Option<&dyn KeyLifecycle> {
        Some(self)
    }
}

/// The options KMS takes: no IV (it chooses), AAD only for its symmetric encryption, no OAEP
/// label.
fn check_crypt_options(
    mechanism: &Mechanism,
    iv: Option<&[u8]>,
    aad: Option<&[u8]>,
    label: Option<&[u8]>,
) -> Result<(), HsmError> {
    if iv.is_some() {
        return Err(HsmError::invalid(format!(
            "{mechanism} on AWS KMS takes no IV: KMS chooses it and keeps it in the ciphertext"
        )));
    }
    if label.is_some_and(|l| !l.is_empty()) {
        return Err(HsmError::not_supported(PROVIDER, "RSA-OAEP labels"));
    }
    if aad.is_some() && *mechanism != Mechanism::ManagedAead {
        return Err(HsmError::invalid(format!("{mechanism} takes no AAD")));
    }
    Ok(())
}
