//! [`TpmProvider`]: the `HsmProvider` impl. It only checks requests against the capabilities
//! and forwards them to the worker thread (see `worker.rs`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use hsm_core::{
    Capabilities, Ciphertext, DecryptRequest, EcdsaFormat, EncryptRequest, GenerateKeyRequest,
    HashAlg, HsmError, HsmProvider, KeyFilter, KeyId, KeyInfo, KeyType, Mechanism, Operation,
    ProviderInfo, PublicKey, Result, SignInput, SupportIndex, UnwrapKeyRequest, Zeroizing,
    async_trait,
};

use crate::config::TpmBuilder;
use crate::error::PROVIDER;
use crate::keys::KEY_TYPES;
use crate::worker::Worker;

/// A TPM 2.0 behind the hsm-rs contract. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct TpmProvider {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) worker: Worker,
    info: ProviderInfo,
    caps: Capabilities,
    /// Shared with sign jobs, which check a key's usage once its record is read.
    support: Arc<SupportIndex>,
    tcti: String,
    key_dir: PathBuf,
}

// No auth value is held after connecting; the TCTI and directory are not secret.
impl fmt::Debug for TpmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmProvider")
            .field("tcti", &self.inner.tcti)
            .field("key_dir", &self.inner.key_dir)
            .finish_non_exhaustive()
    }
}

/// What hsm-tpm supports, and nothing else: ECDSA P-256 and RSA-2048 signing keys.
fn capabilities() -> Capabilities {
    use Operation::{Sign, SignDigest, Verify};
    let mut caps = Capabilities {
        key_types: KEY_TYPES.to_vec(),
        session_keys: true,
        // Extractable keys are duplicable TPM keys: they leave only wrapped for another TPM's
        // storage key (`TpmProvider::duplicate`), never through `wrap_key`.
        extractable_keys: true,
        ..Default::default()
    };
    let ops = &[Sign, SignDigest, Verify];
    for hash in [HashAlg::Sha256, HashAlg::Sha384] {
        for format in [EcdsaFormat::Der, EcdsaFormat::Fixed] {
            caps.add(&[KeyType::EcP256], Mechanism::Ecdsa { hash, format }, ops);
        }
    }
    caps.add(
        &[KeyType::Rsa2048],
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        },
        ops,
    );
    caps.add(
        &[KeyType::Rsa2048],
        Mechanism::rsa_pss(HashAlg::Sha256),
        ops,
    );
    caps
}

impl TpmProvider {
    pub(crate) async fn connect(b: TpmBuilder) -> Result<Self> {
        let tcti = b.resolved_tcti()?;
        let key_dir = b.key_dir.clone();
        let (worker, info) = Worker::start(b).await?;
        let caps = capabilities();
        Ok(TpmProvider {
            inner: Arc::new(Inner {
                worker,
                info,
                support: Arc::new(SupportIndex::new(&caps)),
                caps,
                tcti,
                key_dir,
            }),
        })
    }

    /// Whether TPM commands run in a salted HMAC session with parameter encryption
    /// (AES-128-CFB), rather than in plain password sessions.
    pub async fn parameter_encryption(&self) -> Result<bool> {
        self.inner.worker.run(|tpm| Ok(tpm.session.is_some())).await
    }

    async fn key(&self, key: &KeyId) -> Result<KeyInfo> {
        let key = key.clone();
        self.inner
            .worker
            .run(move |tpm| Ok(tpm.record(&key)?.info.clone()))
            .await
    }

    fn not_supported(&self, what: &str) -> HsmError {
        HsmError::not_supported(PROVIDER, what)
    }
}

#[async_trait]
impl HsmProvider for TpmProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn info(&self) -> Result<ProviderInfo> {
        Ok(self.inner.info.clone())
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(self.inner.caps.clone())
    }

    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo> {
        if !self.inner.caps.can_generate(request.key_type) {
            return Err(self.not_supported(&format!("{} keys", request.key_type)));
        }
        request.attributes.check_for(request.key_type)?;
        let request = request.clone();
        self.inner
            .worker
            .run(move |tpm| tpm.generate(&request))
            .await
    }

    async fn public_key(&self, key: &KeyId) -> Result<PublicKey> {
        let key = key.clone();
        self.inner
            .worker
            .run(move |tpm| Ok(tpm.record(&key)?.public_key.clone()))
            .await
    }

    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo> {
        self.key(key).await
    }

    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>> {
        let filter = filter.clone();
        self.inner.worker.run(move |tpm| tpm.find(&filter)).await
    }

    async fn delete_key(&self, key: &KeyId) -> Result<()> {
        let key = key.clone();
        self.inner.worker.run(move |tpm| tpm.delete(&key)).await
    }

    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>> {
        // Hash (or check the digest) here, so the job carries 32-48 bytes, not the message.
        let digest = input
            .digest_for(mechanism)?
            .ok_or_else(|| self.not_supported(&format!("signing with {mechanism}")))?;
        let (key, mechanism, op) = (key.clone(), *mechanism, input.operation());
        let support = Arc::clone(&self.inner.support);
        self.inner
            .worker
            .run(move |tpm| {
                let record = tpm.record(&key)?;
                support.check(PROVIDER, &record.info, &mechanism, op)?;
                tpm.sign_digest(&record, &mechanism, digest)
            })
            .await
    }

    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool> {
        // Locally, from the public key: a TPM2_VerifySignature would need the public key loaded
        // and would only say the same thing slower.
        let key = key.clone();
        let record = self.inner.worker.run(move |tpm| tpm.record(&key)).await?;
        self.inner
            .support
            .check(PROVIDER, &record.info, mechanism, Operation::Verify)?;
        input.check(mechanism)?;
        hsm_core::verify::verify_signature(&record.public_key, mechanism, input, signature)
    }

    async fn encrypt(
        &self,
        _key: &KeyId,
        mechanism: &Mechanism,
        _request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext> {
        Err(self.not_supported(&format!("encrypt with {mechanism}")))
    }

    async fn decrypt(
        &self,
        _key: &KeyId,
        mechanism: &Mechanism,
        _request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(self.not_supported(&format!("decrypt with {mechanism}")))
    }

    async fn wrap_key(
        &self,
        _wrapping_key: &KeyId,
        _key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>> {
        Err(self.not_supported(&format!("wrap with {mechanism}")))
    }

    async fn unwrap_key(
        &self,
        _unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        _request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo> {
        Err(self.not_supported(&format!("unwrap with {mechanism}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_claim_only_signing() {
        let caps = capabilities();
        assert_eq!(caps.key_types, [KeyType::EcP256, KeyType::Rsa2048]);
        assert!(caps.extractable_keys);
        for m in &caps.mechanisms {
            assert!(m.mechanism.fits(m.key_type), "{}", m.mechanism);
            assert!(
                m.operations.iter().all(|op| matches!(
                    op,
                    Operation::Sign | Operation::SignDigest | Operation::Verify
                )),
                "{}",
                m.mechanism
            );
        }
    }
}
