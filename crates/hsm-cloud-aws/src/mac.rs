//! HMAC keys, which KMS offers beside the hsm-rs contract (the contract has no MAC operation
//! yet): generate a key, make a MAC with `GenerateMac`, check one with `VerifyMac`. The key never
//! leaves KMS.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec};
use hsm_core::remote::Idempotency;
use hsm_core::{HsmError, KeyId};

use crate::error::PROVIDER;
use crate::provider::AwsKmsProvider;

/// An HMAC key size and its hash, as KMS names them (`HMAC_256` keys make `HMAC_SHA_256` MACs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HmacSpec {
    /// HMAC with SHA-224.
    Sha224,
    /// HMAC with SHA-256.
    Sha256,
    /// HMAC with SHA-384.
    Sha384,
    /// HMAC with SHA-512.
    Sha512,
}

impl HmacSpec {
    fn key_spec(self) -> KeySpec {
        match self {
            HmacSpec::Sha224 => KeySpec::Hmac224,
            HmacSpec::Sha256 => KeySpec::Hmac256,
            HmacSpec::Sha384 => KeySpec::Hmac384,
            HmacSpec::Sha512 => KeySpec::Hmac512,
        }
    }

    fn algorithm(self) -> MacAlgorithmSpec {
        match self {
            HmacSpec::Sha224 => MacAlgorithmSpec::HmacSha224,
            HmacSpec::Sha256 => MacAlgorithmSpec::HmacSha256,
            HmacSpec::Sha384 => MacAlgorithmSpec::HmacSha384,
            HmacSpec::Sha512 => MacAlgorithmSpec::HmacSha512,
        }
    }
}

impl AwsKmsProvider {
    /// Generates an HMAC key (`CreateKey` with key usage `GENERATE_VERIFY_MAC`). It is listed by
    /// no `find_keys` (the contract has no HMAC key type); `delete_key` deletes it.
    pub async fn generate_hmac_key(&self, label: &str, spec: HmacSpec) -> Result<KeyId, HsmError> {
        if label.trim().is_empty() {
            return Err(HsmError::invalid("a key needs a non-empty label"));
        }
        let what = format!("generating {spec:?} HMAC key {label:?}");
        let out = self
            .call(&what, Idempotency::NotIdempotent, || {
                self.client()
                    .create_key()
                    .key_spec(spec.key_spec())
                    .key_usage(KeyUsageType::GenerateVerifyMac)
                    .description(label)
                    .send()
            })
            .await?;
        let id = out.key_metadata().map(|m| m.key_id()).ok_or_else(|| {
            HsmError::backend(
                PROVIDER,
                format!("{what}: no key metadata"),
                std::io::Error::other("missing KeyMetadata"),
            )
        })?;
        Ok(KeyId::with_label(id, label))
    }

    /// `GenerateMac`: the HMAC of `message` (at most 4 KiB) under `key`.
    pub async fn generate_mac(
        &self,
        key: &KeyId,
        spec: HmacSpec,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let what = format!("making a MAC with {}", key.display_name());
        let message = Blob::new(message);
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client()
                    .generate_mac()
                    .key_id(&key.id)
                    .mac_algorithm(spec.algorithm())
                    .message(message.clone())
                    .send()
            })
            .await?;
        out.mac().map(|m| m.as_ref().to_vec()).ok_or_else(|| {
            HsmError::backend(
                PROVIDER,
                format!("{what}: no MAC in the answer"),
                std::io::Error::other("missing Mac"),
            )
        })
    }

    /// `VerifyMac`: whether `mac` is the HMAC of `message` under `key`. `Ok(false)` for a MAC
    /// that does not match.
    pub async fn verify_mac(
        &self,
        key: &KeyId,
        spec: HmacSpec,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, HsmError> {
        let what = format!("checking a MAC with {}", key.display_name());
        let (message, mac) = (Blob::new(message), Blob::new(mac));
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client()
                    .verify_mac()
                    .key_id(&key.id)
                    .mac_algorithm(spec.algorithm())
                    .message(message.clone())
                    .mac(mac.clone())
                    .send()
            })
            .await;
        match out {
            Ok(o) => Ok(o.mac_valid()),
            // AWS answers a wrong MAC with KMSInvalidMacException.
            Err(HsmError::IntegrityCheckFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
