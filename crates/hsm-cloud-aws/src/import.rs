//! Bringing key material into AWS KMS: a key created with origin `EXTERNAL`, the one-time
//! wrapping public key and import token from `GetParametersForImport`, and `ImportKeyMaterial`
//! with the material wrapped toward that key elsewhere, for example on a PKCS#11 token with
//! `hsm_pkcs11::Pkcs11Provider::wrap_for`, so it never exists in the clear outside hardware.

use std::fmt;

use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{AlgorithmSpec, ExpirationModelType, OriginType, WrappingKeySpec};
use hsm_core::remote::Idempotency;
use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, KeyId, KeyInfo, KeyType, Mechanism, PublicKey,
};

use crate::error::PROVIDER;
use crate::provider::AwsKmsProvider;

/// What `GetParametersForImport` hands out for one key: the public key to wrap the material
/// toward, and the token that goes back with it. Valid for one import, for 24 hours.
pub struct ImportParameters {
    /// The key the material is for.
    pub key: KeyId,
    /// The RSA public key to wrap the material toward.
    pub wrapping_key: PublicKey,
    /// How to wrap: RSA-OAEP (symmetric material) or RSA-AES key wrap (any material).
    pub mechanism: Mechanism,
    /// Until when the parameters may be used, in seconds since the Unix epoch.
    pub valid_until: Option<i64>,
    token: Vec<u8>,
}

impl fmt::Debug for ImportParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportParameters")
            .field("key", &self.key)
            .field("mechanism", &self.mechanism)
            .field("valid_until", &self.valid_until)
            .field("token", &format_args!("{} bytes", self.token.len()))
            .finish_non_exhaustive()
    }
}

/// KMS's name for an import wrapping mechanism.
fn wrapping_algorithm(mech: &Mechanism) -> Option<AlgorithmSpec> {
    Some(match mech {
        Mechanism::RsaOaep {
            hash: HashAlg::Sha1,
            mgf1: HashAlg::Sha1,
        } => AlgorithmSpec::RsaesOaepSha1,
        Mechanism::RsaOaep {
            hash: HashAlg::Sha256,
            mgf1: HashAlg::Sha256,
        } => AlgorithmSpec::RsaesOaepSha256,
        Mechanism::RsaAesKeyWrap {
            hash: HashAlg::Sha1,
            aes_bits: 256,
        } => AlgorithmSpec::RsaAesKeyWrapSha1,
        Mechanism::RsaAesKeyWrap {
            hash: HashAlg::Sha256,
            aes_bits: 256,
        } => AlgorithmSpec::RsaAesKeyWrapSha256,
        _ => return None,
    })
}

impl AwsKmsProvider {
    /// Creates a key that waits for imported material (origin `EXTERNAL`, state
    /// `PendingImport`). The request's label, type and usage apply as for `generate_key`.
    pub async fn create_import_key(
        &self,
        request: &GenerateKeyRequest,
    ) -> Result<KeyInfo, HsmError> {
        self.create_key(request, OriginType::External).await
    }

    /// `GetParametersForImport`: a fresh wrapping key of `wrapping_key_type` (RSA 2048, 3072 or
    /// 4096) for `mechanism`: RSA-OAEP with SHA-1 or SHA-256 (symmetric material), or RSA-AES
    /// key wrap with SHA-1 or SHA-256 and AES-256 (any material, private keys as PKCS#8).
    pub async fn import_parameters(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        wrapping_key_type: KeyType,
    ) -> Result<ImportParameters, HsmError> {
        let alg = wrapping_algorithm(mechanism).ok_or_else(|| {
            HsmError::invalid(format!(
                "AWS KMS imports with rsa-oaep-sha1, rsa-oaep-sha256, rsa-aes-kw-sha1-aes256 or \
                 rsa-aes-kw-sha256-aes256, not {mechanism}"
            ))
        })?;
        let spec = match wrapping_key_type {
            KeyType::Rsa2048 => WrappingKeySpec::Rsa2048,
            KeyType::Rsa3072 => WrappingKeySpec::Rsa3072,
            KeyType::Rsa4096 => WrappingKeySpec::Rsa4096,
            other => {
                return Err(HsmError::invalid(format!(
                    "the import wrapping key is RSA 2048, 3072 or 4096, not {other}"
                )));
            }
        };
        let what = format!("getting import parameters for {}", key.display_name());
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client()
                    .get_parameters_for_import()
                    .key_id(&key.id)
                    .wrapping_algorithm(alg.clone())
                    .wrapping_key_spec(spec.clone())
                    .send()
            })
            .await?;
        let missing = |field: &str| {
            HsmError::backend(
                PROVIDER,
                format!("{what}: the answer has no {field}"),
                std::io::Error::other("missing field"),
            )
        };
        Ok(ImportParameters {
            key: key.clone(),
            wrapping_key: PublicKey::from_spki_der(
                out.public_key()
                    .ok_or_else(|| missing("PublicKey"))?
                    .as_ref(),
            )?,
            mechanism: *mechanism,
            valid_until: out.parameters_valid_to().map(|d| d.secs()),
            token: out
                .import_token()
                .ok_or_else(|| missing("ImportToken"))?
                .as_ref()
                .to_vec(),
        })
    }

    /// `ImportKeyMaterial`: the material wrapped toward `params.wrapping_key` with
    /// `params.mechanism`. With `expires_at` (Unix seconds) KMS deletes the material then;
    /// otherwise it never expires. Not retried after an unknown outcome.
    pub async fn import_key_material(
        &self,
        params: &ImportParameters,
        wrapped: &[u8],
        expires_at: Option<i64>,
    ) -> Result<(), HsmError> {
        let key = &params.key;
        let what = format!("importing key material into {}", key.display_name());
        let (model, valid_to) = match expires_at {
            // Whole seconds: a fraction makes some implementations reject the request.
            Some(at) => (
                ExpirationModelType::KeyMaterialExpires,
                Some(DateTime::from_secs(at)),
            ),
            None => (ExpirationModelType::KeyMaterialDoesNotExpire, None),
        };
        let (token, material) = (Blob::new(params.token.clone()), Blob::new(wrapped.to_vec()));
        self.call(&what, Idempotency::NotIdempotent, || {
            self.client()
                .import_key_material()
                .key_id(&key.id)
                .import_token(token.clone())
                .encrypted_key_material(material.clone())
                .expiration_model(model.clone())
                .set_valid_to(valid_to)
                .send()
        })
        .await?;
        self.forget(key);
        Ok(())
    }
}
