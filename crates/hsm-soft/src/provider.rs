//! The `HsmProvider` implementation: policy checks, then the operation families.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use hsm_core::{
    Capabilities, Ciphertext, DecryptRequest, EncryptRequest, GenerateKeyRequest, HashAlg,
    HsmError, HsmProvider, KeyAttributes, KeyFilter, KeyId, KeyInfo, KeyType, Mechanism, Operation,
    ProviderInfo, PublicKey, SignInput, SupportIndex, UnwrapKeyRequest, async_trait,
};
use zeroize::Zeroizing;

use crate::cipher;
use crate::config::SoftBuilder;
use crate::error::{PROVIDER, crypto};
use crate::keystore::{FileStore, StoredKey};
use crate::material::{Material, ecdsa_hashes};
use crate::sign;
use crate::wrap;

/// The software provider: keys in a Argon2id + AES-256-GCM encrypted keystore file (or in
/// memory), operations in AWS-LC, and the same policy an HSM enforces (usage flags,
/// non-extractable keys never leave).
#[derive(Clone)]
pub struct SoftProvider {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<HashMap<String, Arc<SoftKey>>>,
    // Serialises changes (label uniqueness and the file write happen together); `None` in memory.
    store: Mutex<Option<FileStore>>,
    read_only: bool,
    location: String,
    caps: Capabilities,
    // `caps` as a set, for the per-operation check on the hot path.
    supported: SupportIndex,
}

struct SoftKey {
    info: KeyInfo,
    material: Material,
    public: Option<PublicKey>,
}

impl std::fmt::Debug for SoftProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftProvider")
            .field("location", &self.inner.location)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

fn lock_err() -> HsmError {
    crypto("internal lock (poisoned by an earlier panic)")
}

/// What the soft provider really supports, limited by what AWS-LC offers.
fn soft_capabilities() -> Capabilities {
    use KeyType::*;
    use Operation::*;
    let rsa = [Rsa2048, Rsa3072, Rsa4096];
    let mut c = Capabilities {
        key_types: KeyType::ALL.to_vec(),
        unwrap_key_types: KeyType::ALL.to_vec(),
        extractable_keys: true,
        session_keys: true,
        oaep_labels: true,
        ..Default::default()
    };
    for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
        c.add(
            &rsa,
            Mechanism::RsaPkcs1v15 { hash: h },
            &[Sign, SignDigest, Verify],
        );
        c.add(&rsa, Mechanism::rsa_pss(h), &[Sign, SignDigest, Verify]);
    }
    for h in HashAlg::ALL {
        c.add(
            &rsa,
            Mechanism::rsa_oaep(*h),
            &[Encrypt, Decrypt, Wrap, Unwrap],
        );
    }
    for h in [HashAlg::Sha1, HashAlg::Sha256] {
        let m = Mechanism::RsaAesKeyWrap {
            hash: h,
            aes_bits: 256,
        };
        c.add(&rsa, m, &[Wrap, Unwrap]);
    }
    for kt in [EcP256, EcP384, EcP521] {
        for &h in ecdsa_hashes(kt) {
            for format in [hsm_core::EcdsaFormat::Der, hsm_core::EcdsaFormat::Fixed] {
                c.add(
                    &[kt],
                    Mechanism::Ecdsa { hash: h, format },
                    &[Sign, SignDigest, Verify],
                );
            }
        }
    }
    c.add(&[Ed25519], Mechanism::Ed25519, &[Sign, Verify]);
    c.add(
        &[Aes128, Aes192, Aes256],
        Mechanism::AesGcm,
        &[Encrypt, Decrypt],
    );
    // AWS-LC's key wrap takes 128- and 256-bit wrapping keys only.
    c.add(&[Aes128, Aes256], Mechanism::AesKeyWrap, &[Wrap, Unwrap]);
    c.add(&[Aes128, Aes256], Mechanism::AesKeyWrapPad, &[Wrap, Unwrap]);
    c
}

fn new_key_id() -> Result<String, HsmError> {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| crypto("random key id"))?;
    Ok(hex::encode(id))
}

impl SoftProvider {
    pub(crate) async fn open(b: SoftBuilder) -> Result<Self, HsmError> {
        let caps = soft_capabilities();
        let supported = SupportIndex::new(&caps);
        let Some(path) = b.path.clone() else {
            return Ok(SoftProvider {
                inner: Arc::new(Inner {
                    keys: RwLock::new(HashMap::new()),
                    store: Mutex::new(None),
                    read_only: false,
                    location: "memory".into(),
                    caps,
                    supported,
                }),
            });
        };
        let passphrase = b.resolve_passphrase()?;
        let opened = tokio::task::spawn_blocking(move || {
            FileStore::open(&path, &passphrase, b.create, b.kdf, b.salvage)
        })
        .await
        .map_err(|e| crypto(&format!("keystore open task: {e}")))??;
        for d in &opened.damaged {
            tracing::warn!(keystore = %opened.store.path().display(), damaged = %d, "salvage mode: skipped a damaged record");
        }
        let mut keys = HashMap::new();
        for StoredKey { info, secret } in opened.keys {
            let material = Material::from_secret(info.key_type, &secret)?;
            let public = material.public_key()?;
            keys.insert(
                info.id.id.clone(),
                Arc::new(SoftKey {
                    info,
                    material,
                    public,
                }),
            );
        }
        Ok(SoftProvider {
            inner: Arc::new(Inner {
                keys: RwLock::new(keys),
                location: opened.store.path().display().to_string(),
                read_only: !opened.damaged.is_empty(),
                store: Mutex::new(Some(opened.store)),
                caps,
                supported,
            }),
        })
    }

    /// Whether the keystore was opened read-only (salvage mode found damaged records).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn key(&self, id: &KeyId) -> Result<Arc<SoftKey>, HsmError> {
        self.inner
            .keys
            .read()
            .map_err(|_| lock_err())?
            .get(&id.id)
            .cloned()
            .ok_or_else(|| HsmError::key_not_found(id))
    }

    /// Looks up a key and checks the mechanism fits, is claimed, and the usage allows `op`.
    /// Looks up a key and checks the operation (see [`SupportIndex::check`]).
    fn key_for(
        &self,
        id: &KeyId,
        mech: &Mechanism,
        op: Operation,
    ) -> Result<Arc<SoftKey>, HsmError> {
        let key = self.key(id)?;
        self.inner.supported.check(PROVIDER, &key.info, mech, op)?;
        Ok(key)
    }

    fn writable(&self) -> Result<(), HsmError> {
        if self.inner.read_only {
            return Err(HsmError::denied(format!(
                "keystore {} was opened in salvage mode and is read-only",
                self.inner.location
            )));
        }
        Ok(())
    }

    /// Adds a key: checks the label is free, persists it (persistent keys in a file-backed
    /// store), then makes it visible. Runs on a blocking thread (it may write the file).
    async fn add_key(
        &self,
        key_type: KeyType,
        mut attributes: KeyAttributes,
        material: Material,
    ) -> Result<KeyInfo, HsmError> {
        self.writable()?;
        attributes.check_for(key_type)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = inner.store.lock().map_err(|_| lock_err())?;
            if store.is_none() {
                // In memory nothing outlives the provider; say so rather than claim persistence.
                attributes.persistent = false;
            }
            let taken = inner
                .keys
                .read()
                .map_err(|_| lock_err())?
                .values()
                .any(|k| k.info.attributes.label == attributes.label);
            if taken {
                return Err(HsmError::AlreadyExists {
                    what: format!("a key labelled {:?}", attributes.label),
                });
            }
            let id = new_key_id()?;
            let info = KeyInfo {
                id: KeyId::with_label(&id, &attributes.label),
                key_type,
                attributes,
            };
            if let (Some(store), true) = (store.as_mut(), info.attributes.persistent) {
                store.insert(&StoredKey {
                    info: info.clone(),
                    secret: Zeroizing::new(material.secret_bytes().to_vec()),
                })?;
            }
            let public = material.public_key()?;
            inner.keys.write().map_err(|_| lock_err())?.insert(
                id,
                Arc::new(SoftKey {
                    info: info.clone(),
                    material,
                    public,
                }),
            );
            Ok(info)
        })
        .await
        .map_err(|e| crypto(&format!("key store task: {e}")))?
    }
}

#[async_trait]
impl HsmProvider for SoftProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn info(&self) -> Result<ProviderInfo, HsmError> {
        let model = if self.inner.location == "memory" {
            "in-memory keystore".to_owned()
        } else {
            "file keystore (Argon2id + AES-256-GCM)".to_owned()
        };
        Ok(ProviderInfo::new(
            PROVIDER,
            "hsm-rs",
            model,
            format!("hsm-soft {} / AWS-LC", env!("CARGO_PKG_VERSION")),
        ))
    }

    async fn capabilities(&self) -> Result<Capabilities, HsmError> {
        Ok(self.inner.caps.clone())
    }

    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo, HsmError> {
        let kt = request.key_type;
        self.writable()?;
        request.attributes.check_for(kt)?;
        // RSA generation takes up to seconds: keep it off the async workers.
        let material = tokio::task::spawn_blocking(move || Material::generate(kt))
            .await
            .map_err(|e| crypto(&format!("key generation task: {e}")))??;
        self.add_key(kt, request.attributes.clone(), material).await
    }

    async fn public_key(&self, key: &KeyId) -> Result<PublicKey, HsmError> {
        let k = self.key(key)?;
        k.public.clone().ok_or_else(|| {
            HsmError::invalid(format!(
                "{key} is a {} key and has no public key",
                k.info.key_type
            ))
        })
    }

    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo, HsmError> {
        Ok(self.key(key)?.info.clone())
    }

    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>, HsmError> {
        let mut out: Vec<KeyInfo> = self
            .inner
            .keys
            .read()
            .map_err(|_| lock_err())?
            .values()
            .filter(|k| filter.matches(&k.info))
            .map(|k| k.info.clone())
            .collect();
        out.sort_by(|a, b| a.attributes.label.cmp(&b.attributes.label));
        Ok(out)
    }

    async fn delete_key(&self, key: &KeyId) -> Result<(), HsmError> {
        self.writable()?;
        let inner = self.inner.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = inner.store.lock().map_err(|_| lock_err())?;
            let found = inner
                .keys
                .read()
                .map_err(|_| lock_err())?
                .get(&key.id)
                .cloned();
            let Some(found) = found else {
                return Err(HsmError::key_not_found(&key));
            };
            if let (Some(store), true) = (store.as_mut(), found.info.attributes.persistent) {
                store.remove(&key.id)?;
            }
            inner.keys.write().map_err(|_| lock_err())?.remove(&key.id);
            Ok(())
        })
        .await
        .map_err(|e| crypto(&format!("key store task: {e}")))?
    }

    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>, HsmError> {
        let k = self.key_for(key, mechanism, input.operation())?;
        sign::sign(k.info.key_type, &k.material, mechanism, input)
    }

    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        let k = self.key_for(key, mechanism, Operation::Verify)?;
        let public = k
            .public
            .as_ref()
            .ok_or_else(|| HsmError::invalid("no public key"))?;
        hsm_core::verify::aws_lc::verify_signature(PROVIDER, public, mechanism, input, signature)
    }

    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext, HsmError> {
        let k = self.key_for(key, mechanism, Operation::Encrypt)?;
        match (&k.material, mechanism) {
            (Material::Aes { key }, Mechanism::AesGcm) => {
                cipher::gcm_encrypt(key, request.iv, request.aad, request.plaintext)
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaOaep { .. }) => {
                let data = cipher::oaep_encrypt(
                    decrypt,
                    cipher::oaep_alg(mechanism)?,
                    request.label,
                    request.plaintext,
                )?;
                Ok(Ciphertext { data, iv: None })
            }
            _ => Err(HsmError::not_supported(
                PROVIDER,
                format!("encrypt with {mechanism}"),
            )),
        }
    }

    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let k = self.key_for(key, mechanism, Operation::Decrypt)?;
        match (&k.material, mechanism) {
            (Material::Aes { key }, Mechanism::AesGcm) => {
                cipher::gcm_decrypt(key, request.iv, request.aad, request.ciphertext)
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaOaep { .. }) => cipher::oaep_decrypt(
                decrypt,
                cipher::oaep_alg(mechanism)?,
                request.label,
                request.ciphertext,
            ),
            _ => Err(HsmError::not_supported(
                PROVIDER,
                format!("decrypt with {mechanism}"),
            )),
        }
    }

    async fn wrap_key(
        &self,
        wrapping_key: &KeyId,
        key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>, HsmError> {
        let wk = self.key_for(wrapping_key, mechanism, Operation::Wrap)?;
        let target = self.key(key)?;
        if !target.info.attributes.extractable {
            return Err(HsmError::denied(format!(
                "key {key} is not extractable and cannot be wrapped out"
            )));
        }
        let secret = target.material.secret_bytes();
        match (&wk.material, mechanism) {
            (Material::Aes { key: kek }, Mechanism::AesKeyWrap) => {
                wrap::aes_wrap(kek, false, secret)
            }
            (Material::Aes { key: kek }, Mechanism::AesKeyWrapPad) => {
                wrap::aes_wrap(kek, true, secret)
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaOaep { .. }) => {
                if target.info.key_type.is_asymmetric() {
                    return Err(HsmError::invalid(
                        "RSA-OAEP wraps only AES keys; wrap private keys with rsa-aes-kw",
                    ));
                }
                cipher::oaep_encrypt(decrypt, cipher::oaep_alg(mechanism)?, None, secret)
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaAesKeyWrap { .. }) => {
                wrap::rsa_aes_wrap(decrypt, mechanism, secret)
            }
            _ => Err(HsmError::not_supported(
                PROVIDER,
                format!("wrap with {mechanism}"),
            )),
        }
    }

    async fn unwrap_key(
        &self,
        unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo, HsmError> {
        self.writable()?;
        let uk = self.key_for(unwrapping_key, mechanism, Operation::Unwrap)?;
        let kt = request.key_type;
        if !self.inner.caps.unwrap_key_types.contains(&kt) {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("unwrapping a {kt} key"),
            ));
        }
        let secret = match (&uk.material, mechanism) {
            (Material::Aes { key: kek }, Mechanism::AesKeyWrap) => {
                wrap::aes_unwrap(kek, false, request.wrapped)?
            }
            (Material::Aes { key: kek }, Mechanism::AesKeyWrapPad) => {
                wrap::aes_unwrap(kek, true, request.wrapped)?
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaOaep { .. }) => {
                cipher::oaep_decrypt(decrypt, cipher::oaep_alg(mechanism)?, None, request.wrapped)?
            }
            (Material::Rsa { decrypt, .. }, Mechanism::RsaAesKeyWrap { .. }) => {
                wrap::rsa_aes_unwrap(decrypt, mechanism, request.wrapped)?
            }
            _ => {
                return Err(HsmError::not_supported(
                    PROVIDER,
                    format!("unwrap with {mechanism}"),
                ));
            }
        };
        let material = Material::from_secret(kt, &secret)?;
        if let Some(given) = &request.public_key
            && material.public_key()?.as_ref() != Some(given)
        {
            return Err(HsmError::invalid(
                "the public key given does not belong to the unwrapped private key",
            ));
        }
        self.add_key(kt, request.attributes.clone(), material).await
    }
}
