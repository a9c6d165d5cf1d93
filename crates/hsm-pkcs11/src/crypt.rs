//! Encryption on the token: AES-GCM and RSA-OAEP.

use cryptoki::context::Function;
use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::mechanism::aead::GcmParams;
use hsm_core::{Ciphertext, DecryptRequest, EncryptRequest, HsmError, Mechanism};
use zeroize::Zeroizing;

use crate::keys::KeyEntry;
use crate::params::oaep;
use crate::session::{CkContext as _, OpCtx, OpError};

const GCM_IV_LEN: usize = 12;

fn gcm_iv(iv: Option<&[u8]>) -> Result<Vec<u8>, HsmError> {
    match iv {
        Some(iv) if iv.len() == GCM_IV_LEN => Ok(iv.to_vec()),
        Some(iv) => Err(HsmError::invalid(format!(
            "AES-GCM IV must be {GCM_IV_LEN} bytes, got {}",
            iv.len()
        ))),
        None => {
            let mut iv = vec![0u8; GCM_IV_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
            Ok(iv)
        }
    }
}

fn check_label(ctx: &OpCtx<'_>, label: Option<&[u8]>) -> Result<(), OpError> {
    if label.is_some_and(|l| !l.is_empty()) && !ctx.module.profile.oaep_label {
        return Err(HsmError::not_supported(
            crate::error::PROVIDER,
            "RSA-OAEP labels on this token",
        )
        .into());
    }
    Ok(())
}

pub(crate) fn encrypt(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    mech: &Mechanism,
    req: &OwnedEncrypt,
) -> Result<Ciphertext, OpError> {
    match mech {
        Mechanism::AesGcm => {
            let mut iv = gcm_iv(req.iv.as_deref())?;
            let params =
                GcmParams::new(&mut iv, req.aad.as_deref().unwrap_or_default(), 128.into())
                    .map_err(|e| HsmError::invalid(format!("AES-GCM parameters: {e}")))?;
            let data = ctx
                .module
                .raw
                .crypt(
                    ctx.session.handle(),
                    &CkMechanism::AesGcm(params),
                    key.private.handle(),
                    &req.plaintext,
                    req.plaintext.len() + 16,
                    true,
                )
                .map_err(|rv| OpError::Ck(rv.into_ck(Function::Encrypt), "AES-GCM encryption"))?;
            Ok(Ciphertext { data, iv: Some(iv) })
        }
        Mechanism::RsaOaep { .. } => {
            check_label(ctx, req.label.as_deref())?;
            let public = key
                .public
                .ok_or_else(|| HsmError::invalid("the key has no public key object"))?;
            let ck =
                oaep(mech, req.label.as_deref()).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            let data = ctx
                .session
                .encrypt(&ck, public, &req.plaintext)
                .step("RSA-OAEP encryption")?;
            Ok(Ciphertext { data, iv: None })
        }
        other => Err(HsmError::invalid(format!("{other} does not encrypt")).into()),
    }
}

pub(crate) fn decrypt(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    mech: &Mechanism,
    req: &OwnedDecrypt,
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    match mech {
        Mechanism::AesGcm => {
            let mut iv = match req.iv.as_deref() {
                Some(iv) => gcm_iv(Some(iv))?,
                None => return Err(HsmError::invalid("AES-GCM decryption needs the IV").into()),
            };
            let params =
                GcmParams::new(&mut iv, req.aad.as_deref().unwrap_or_default(), 128.into())
                    .map_err(|e| HsmError::invalid(format!("AES-GCM parameters: {e}")))?;
            let out = ctx
                .module
                .raw
                .crypt(
                    ctx.session.handle(),
                    &CkMechanism::AesGcm(params),
                    key.private.handle(),
                    &req.ciphertext,
                    req.ciphertext.len(),
                    false,
                )
                .map_err(|rv| ctx.bad_data(rv.into_ck(Function::Decrypt), "AES-GCM decryption"))?;
            Ok(Zeroizing::new(out))
        }
        Mechanism::RsaOaep { .. } => {
            check_label(ctx, req.label.as_deref())?;
            let ck =
                oaep(mech, req.label.as_deref()).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            let out = ctx
                .session
                .decrypt(&ck, key.private, &req.ciphertext)
                .map_err(|e| ctx.bad_data(e, "RSA-OAEP decryption"))?;
            Ok(Zeroizing::new(out))
        }
        other => Err(HsmError::invalid(format!("{other} does not decrypt")).into()),
    }
}

/// An [`EncryptRequest`] owned by the worker thread.
pub(crate) struct OwnedEncrypt {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub iv: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
    pub label: Option<Vec<u8>>,
}

impl From<&EncryptRequest<'_>> for OwnedEncrypt {
    fn from(r: &EncryptRequest<'_>) -> Self {
        OwnedEncrypt {
            plaintext: Zeroizing::new(r.plaintext.to_vec()),
            iv: r.iv.map(<[u8]>::to_vec),
            aad: r.aad.map(<[u8]>::to_vec),
            label: r.label.map(<[u8]>::to_vec),
        }
    }
}

/// A [`DecryptRequest`] owned by the worker thread.
pub(crate) struct OwnedDecrypt {
    pub ciphertext: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
    pub label: Option<Vec<u8>>,
}

impl From<&DecryptRequest<'_>> for OwnedDecrypt {
    fn from(r: &DecryptRequest<'_>) -> Self {
        OwnedDecrypt {
            ciphertext: r.ciphertext.to_vec(),
            iv: r.iv.map(<[u8]>::to_vec),
            aad: r.aad.map(<[u8]>::to_vec),
            label: r.label.map(<[u8]>::to_vec),
        }
    }
}
