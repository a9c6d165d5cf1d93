//! [`TpmProvider`]: the `HsmProvider` impl. It only checks requests against the capabilities
//! and forwards them to the worker thread (see `worker.rs`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use hsm_core::{
    Capabilities, Ciphertext, DecryptRequest, EcdsaFormat, EncryptRequest, GenerateKeyRequest,
    HashAlg, HsmError, HsmProvider, KeyFilter, KeyId, KeyInfo, KeyType, Mechanism, Operation,
    ProviderInfo, PublicKey, Result, Secret, SignInput, SupportIndex, UnwrapKeyRequest, Zeroizing,
    async_trait,
};

use crate::config::TpmBuilder;
use crate::error::PROVIDER;
use crate::keys::{KEY_TYPES, KeyRecord};
use crate::worker::LockoutStatus;
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
    /// The label [`TpmBuilder::attestation_key`] chose, if any.
    pub(crate) attestation_key: Option<String>,
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

/// What hsm-tpm supports, and nothing else: ECDSA P-256/P-384 and RSA-2048/3072 signing keys,
/// RSA-OAEP decryption keys.
fn capabilities() -> Capabilities {
    use Operation::{Decrypt, Encrypt, Sign, SignDigest, Verify};
    let mut caps = Capabilities {
        key_types: KEY_TYPES.to_vec(),
        session_keys: true,
        // See decrypt.rs: the TPM only takes labels that end in a zero byte.
        oaep_labels: false,
        // Extractable keys are duplicable TPM keys: they leave only wrapped for another TPM's
        // storage key (`TpmProvider::duplicate`), never through `wrap_key`.
        extractable_keys: true,
        ..Default::default()
    };
    let ops = &[Sign, SignDigest, Verify];
    let ec = &[KeyType::EcP256, KeyType::EcP384];
    let rsa = &[KeyType::Rsa2048, KeyType::Rsa3072];
    for hash in [HashAlg::Sha256, HashAlg::Sha384] {
        for format in [EcdsaFormat::Der, EcdsaFormat::Fixed] {
            caps.add(ec, Mechanism::Ecdsa { hash, format }, ops);
        }
        caps.add(rsa, Mechanism::RsaPkcs1v15 { hash }, ops);
        caps.add(rsa, Mechanism::rsa_pss(hash), ops);
    }
    for hash in [HashAlg::Sha1, HashAlg::Sha256] {
        caps.add(rsa, Mechanism::rsa_oaep(hash), &[Encrypt, Decrypt]);
    }
    caps
}

impl TpmProvider {
    pub(crate) async fn connect(b: TpmBuilder) -> Result<Self> {
        let tcti = b.resolved_tcti()?;
        let key_dir = b.key_dir.clone();
        let attestation_key = b.attestation_key.clone();
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
                attestation_key,
            }),
        })
    }

    /// Generates a key with an auth value: every later use needs it (this provider keeps it for
    /// the rest of its life; later providers need [`TpmBuilder::key_auth`]). The key is
    /// protected by the TPM's dictionary-attack logic: each wrong value counts toward lockout.
    pub async fn generate_key_with_auth(
        &self,
        request: &GenerateKeyRequest,
        auth: Secret,
    ) -> Result<KeyInfo> {
        if auth.is_empty() {
            return Err(HsmError::invalid(
                "an empty auth value: use generate_key for a key without one",
            ));
        }
        self.check_generate(request)?;
        let request = request.clone();
        self.inner
            .worker
            .run(move |tpm| tpm.generate(&request, Some(auth)))
            .await
    }

    /// Adopts a key file in the TSS2 PRIVATE KEY format made by another program for this TPM
    /// (`openssl genpkey -provider tpm2`, tpm2-tss-engine): checks that the TPM loads it and
    /// keeps it in the key directory under `label`. Key files this provider writes are in the
    /// same format, so they work the other way round as they are.
    pub async fn import_key_file(&self, label: &str, pem: &str) -> Result<KeyInfo> {
        let (label, pem) = (label.to_owned(), pem.to_owned());
        self.inner
            .worker
            .run(move |tpm| tpm.import_key_file(&label, &pem))
            .await
    }

    /// The path of a key's file (`None` for a session key), for programs that read TSS2 key
    /// files (`openssl pkeyutl -provider tpm2 -inkey <path>`).
    pub async fn key_file(&self, key: &KeyId) -> Result<Option<PathBuf>> {
        let key = key.clone();
        self.inner.worker.run(move |tpm| tpm.key_file(&key)).await
    }

    /// The TPM's dictionary-attack state: failed authorizations counted, the number that
    /// locks the TPM out, and the seconds after which one failure is forgotten.
    pub async fn lockout_status(&self) -> Result<LockoutStatus> {
        self.inner.worker.run(|tpm| Ok(tpm.lockout_status())).await
    }

    fn check_generate(&self, request: &GenerateKeyRequest) -> Result<()> {
        if !self.inner.caps.can_generate(request.key_type) {
            return Err(self.not_supported(&format!("{} keys", request.key_type)));
        }
        request.attributes.check_for(request.key_type)?;
        Ok(())
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

    async fn record(&self, key: &KeyId) -> Result<Arc<KeyRecord>> {
        let key = key.clone();
        self.inner.worker.run(move |tpm| tpm.record(&key)).await
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
        self.check_generate(request)?;
        let request = request.clone();
        self.inner
            .worker
            .run(move |tpm| tpm.generate(&request, None))
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
        let record = self.record(key).await?;
        self.inner
            .support
            .check(PROVIDER, &record.info, mechanism, Operation::Verify)?;
        input.check(mechanism)?;
        hsm_core::verify::verify_signature(&record.public_key, mechanism, input, signature)
    }

    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext> {
        // With the public key, in software: the TPM would do the same with no secret involved.
        let Mechanism::RsaOaep { hash, mgf1 } = *mechanism else {
            return Err(self.not_supported(&format!("encrypt with {mechanism}")));
        };
        if request.label.is_some() {
            return Err(self.not_supported("RSA-OAEP labels (see decrypt)"));
        }
        let record = self.record(key).await?;
        self.inner
            .support
            .check(PROVIDER, &record.info, mechanism, Operation::Encrypt)?;
        let data = hsm_core::verify::rsa_oaep_encrypt(
            &record.public_key,
            hash,
            mgf1,
            None,
            request.plaintext,
        )?;
        Ok(Ciphertext { data, iv: None })
    }

    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if !matches!(mechanism, Mechanism::RsaOaep { .. }) {
            return Err(self.not_supported(&format!("decrypt with {mechanism}")));
        }
        if request.label.is_some() {
            return Err(self.not_supported(
                "RSA-OAEP labels (the TPM takes only labels ending in a zero byte)",
            ));
        }
        let (key, mechanism) = (key.clone(), *mechanism);
        let ciphertext = request.ciphertext.to_vec();
        let support = Arc::clone(&self.inner.support);
        self.inner
            .worker
            .run(move |tpm| {
                let record = tpm.record(&key)?;
                support.check(PROVIDER, &record.info, &mechanism, Operation::Decrypt)?;
                tpm.rsa_oaep_decrypt(&record, &mechanism, ciphertext)
            })
            .await
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

    /// `TPM2_Certify` with the provider's attestation key (see `attest.rs`).
    fn attestation(&self) -> Option<&dyn hsm_core::KeyAttestation> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_claim_signing_and_oaep_only() {
        let caps = capabilities();
        assert_eq!(caps.key_types, KEY_TYPES);
        assert!(caps.extractable_keys);
        for m in &caps.mechanisms {
            assert!(m.mechanism.fits(m.key_type), "{}", m.mechanism);
            let allowed: &[Operation] = match m.mechanism {
                Mechanism::RsaOaep { .. } => &[Operation::Encrypt, Operation::Decrypt],
                _ => &[Operation::Sign, Operation::SignDigest, Operation::Verify],
            };
            assert!(
                m.operations.iter().all(|op| allowed.contains(op)),
                "{}",
                m.mechanism
            );
        }
    }
}
