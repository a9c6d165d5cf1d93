//! Signing: the hash is computed in software (or given), and the TPM signs the digest with a
//! loaded key. Keys are created with a `NULL` scheme, so each `TPM2_Sign` names its own.

use std::sync::Arc;

use hsm_core::{EcdsaFormat, HsmError, KeyType, Mechanism, SaltLen};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::structures::{Digest, HashScheme, HashcheckTicket, Signature, SignatureScheme};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use crate::error::{PROVIDER, to_hsm};
use crate::keys::{KeyRecord, left_pad};
use crate::pcr::tpm_hash;
use crate::session::{Params, with_session};
use crate::worker::Tpm;

/// The `TPMT_SIG_SCHEME` for a mechanism (the capability check has already passed).
fn scheme(mechanism: &Mechanism) -> Result<SignatureScheme, HsmError> {
    Ok(match *mechanism {
        Mechanism::Ecdsa { hash, .. } => SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(tpm_hash(hash)?),
        },
        Mechanism::RsaPkcs1v15 { hash } => SignatureScheme::RsaSsa {
            hash_scheme: HashScheme::new(tpm_hash(hash)?),
        },
        // TPM 2.0 (Part 1, RSASSA-PSS; libtpms) uses a salt as long as the digest.
        Mechanism::RsaPss {
            hash,
            salt: SaltLen::HashLen,
        } => SignatureScheme::RsaPss {
            hash_scheme: HashScheme::new(tpm_hash(hash)?),
        },
        other => {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("signing with {other}"),
            ));
        }
    })
}

impl Tpm {
    /// Signs `digest` (already the mechanism's hash) with the key of `record`.
    pub(crate) fn sign_digest(
        &mut self,
        record: &Arc<KeyRecord>,
        mechanism: &Mechanism,
        digest: Vec<u8>,
    ) -> Result<Vec<u8>, HsmError> {
        if crate::attest::is_attestation_key(&record.public) {
            return Err(HsmError::denied(format!(
                "{} is an attestation key: it signs only statements the TPM makes (certify, \
                 quote), never a caller's digest",
                record.info.id
            )));
        }
        let scheme = scheme(mechanism)?;
        let handle = self.handle_for(record)?;
        let digest = Digest::try_from(digest).map_err(|e| to_hsm(e, "preparing the digest"))?;
        // An unrestricted key signs any digest: the "no ticket" ticket (TPM2_Sign, Part 3).
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| to_hsm(e, "preparing the hash-check ticket"))?;
        let signature = with_session(self, Params::In, |ctx| {
            ctx.sign(handle, digest, scheme, validation)
        })
        .map_err(|e| {
            let err = to_hsm(e, &format!("signing with {}", record.info.id));
            self.explain_auth_failure(err, &record.info.id.to_string())
        })?;
        encode(record.info.key_type, mechanism, signature)
    }
}

/// The signature in the mechanism's encoding.
pub(crate) fn encode(
    key_type: KeyType,
    mechanism: &Mechanism,
    signature: Signature,
) -> Result<Vec<u8>, HsmError> {
    match (signature, mechanism) {
        (Signature::EcDsa(sig), Mechanism::Ecdsa { format, .. }) => {
            let len = key_type.ec_scalar_len().unwrap_or(32);
            let mut fixed = left_pad(sig.signature_r().value(), len)?;
            fixed.extend(left_pad(sig.signature_s().value(), len)?);
            match format {
                EcdsaFormat::Fixed => Ok(fixed),
                EcdsaFormat::Der => hsm_core::verify::ecdsa_fixed_to_der(key_type, &fixed),
                other => Err(HsmError::not_supported(
                    PROVIDER,
                    format!("ECDSA format {other}"),
                )),
            }
        }
        (Signature::RsaSsa(sig) | Signature::RsaPss(sig), _) => {
            Ok(sig.signature().value().to_vec())
        }
        (other, _) => Err(HsmError::backend(
            PROVIDER,
            format!(
                "the TPM returned a {:?} signature for {mechanism}",
                other.algorithm()
            ),
            std::io::Error::other("unexpected signature type"),
        )),
    }
}
