//! RSA-OAEP decryption with `TPM2_RSA_Decrypt` (the private key never leaves the TPM), and
//! encryption, which needs only the public key and is done in software.
//!
//! The TPM takes an OAEP label only when its last byte is zero (TPM 2.0 Part 1, "RSAES_OAEP":
//! the label is treated as a C string), so an arbitrary label cannot be honoured: labels are
//! refused as `NotSupported` and `Capabilities::oaep_labels` is false.

use std::sync::Arc;

use hsm_core::{HsmError, Mechanism, Zeroizing};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::structures::{Data, HashScheme, PublicKeyRsa, RsaDecryptionScheme};

use crate::error::{PROVIDER, to_hsm, tpm_kind};
use crate::keys::KeyRecord;
use crate::pcr::tpm_hash;
use crate::session::{Params, with_session};
use crate::worker::Tpm;

impl Tpm {
    /// Decrypts an RSA-OAEP ciphertext with the key of `record`.
    pub(crate) fn rsa_oaep_decrypt(
        &mut self,
        record: &Arc<KeyRecord>,
        mechanism: &Mechanism,
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let Mechanism::RsaOaep { hash, mgf1 } = *mechanism else {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("decrypt with {mechanism}"),
            ));
        };
        if hash != mgf1 {
            return Err(HsmError::not_supported(
                PROVIDER,
                "RSA-OAEP with an MGF1 hash other than the label hash",
            ));
        }
        let modulus = record.info.key_type.bits() as usize / 8;
        if ciphertext.len() != modulus {
            return Err(HsmError::invalid(format!(
                "an RSA-OAEP ciphertext for {} is {modulus} bytes, not {}",
                record.info.key_type,
                ciphertext.len()
            )));
        }
        let scheme = RsaDecryptionScheme::Oaep(HashScheme::new(tpm_hash(hash)?));
        let ciphertext = PublicKeyRsa::try_from(ciphertext)
            .map_err(|e| to_hsm(e, "preparing the ciphertext"))?;
        let handle = self.handle_for(record)?;
        // The plaintext comes back encrypted by the session (`Params::Both`): it is a secret.
        let result = with_session(self, Params::Both, |ctx| {
            ctx.rsa_decrypt(handle, ciphertext, scheme, Data::default())
        });
        match result {
            Ok(plain) => Ok(Zeroizing::new(plain.value().to_vec())),
            // A ciphertext whose padding does not check out, or made for another key: TPM_RC_VALUE
            // per the specification. libtpms 0.9 answers TPM_RC_FAILURE instead, without going
            // into failure mode; a TPM really in failure mode fails the next command too, so
            // one cheap command tells the two apart.
            Err(e)
                if tpm_kind(&e) == Some(Tss2ResponseCodeKind::Value)
                    || (tpm_kind(&e) == Some(Tss2ResponseCodeKind::Failure)
                        && self.responsive()) =>
            {
                Err(HsmError::IntegrityCheckFailed {
                    reason: format!(
                        "RSA-OAEP decryption with {} failed: the ciphertext was altered, or \
                         made for another key or with another hash or label",
                        record.info.id
                    ),
                })
            }
            Err(e) => {
                let err = to_hsm(e, &format!("decrypting with {}", record.info.id));
                Err(self.explain_auth_failure(err, &record.info.id.to_string()))
            }
        }
    }
}
