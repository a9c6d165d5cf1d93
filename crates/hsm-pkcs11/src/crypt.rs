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
const GCM_TAG_LEN: usize = 16;

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

/// One AES-GCM `C_Encrypt` or `C_Decrypt` into a buffer of `out_len` bytes (see
/// `RawModule::crypt` for why not through cryptoki).
fn gcm(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    iv: &mut [u8],
    req: &OwnedCrypt,
    out_len: usize,
    f: Function,
) -> Result<Vec<u8>, cryptoki::error::Error> {
    let params = GcmParams::new(iv, req.aad.as_deref().unwrap_or_default(), 128.into())?;
    ctx.module
        .raw
        .crypt(
            ctx.session.handle(),
            &CkMechanism::AesGcm(params),
            key.private.handle(),
            &req.data,
            out_len,
            matches!(f, Function::Encrypt),
        )
        .map_err(|rv| rv.into_ck(f))
}

pub(crate) fn encrypt(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    mech: &Mechanism,
    req: &OwnedCrypt,
) -> Result<Ciphertext, OpError> {
    match mech {
        Mechanism::AesGcm => {
            let token_iv = ctx.module.profile.token_gcm_iv;
            let mut iv = match req.iv.as_deref() {
                Some(_) if token_iv => {
                    return Err(HsmError::invalid(format!(
                        "this token generates AES-GCM IVs itself ({} profile): give no IV",
                        ctx.module.profile.name
                    ))
                    .into());
                }
                // The token writes its IV into this buffer.
                None if token_iv => vec![0u8; GCM_IV_LEN],
                iv => gcm_iv(iv)?,
            };
            let out_len = req.data.len() + GCM_TAG_LEN;
            let data = gcm(ctx, key, &mut iv, req, out_len, Function::Encrypt)
                .map_err(|e| OpError::Ck(e, "AES-GCM encryption"))?;
            if token_iv && iv.iter().all(|b| *b == 0) {
                // A token that did not fill the buffer encrypted under an all-zero IV, which
                // every such call would reuse: the ciphertext is thrown away.
                return Err(HsmError::backend(
                    crate::error::PROVIDER,
                    "AES-GCM encryption: the token returned no IV (is the profile right?)",
                    std::io::Error::other("IV not written"),
                )
                .into());
            }
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
                .encrypt(&ck, public, &req.data)
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
    req: &OwnedCrypt,
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    match mech {
        Mechanism::AesGcm => {
            let mut iv = match req.iv.as_deref() {
                Some(iv) => gcm_iv(Some(iv))?,
                None => return Err(HsmError::invalid("AES-GCM decryption needs the IV").into()),
            };
            let out = gcm(ctx, key, &mut iv, req, req.data.len(), Function::Decrypt)
                .map_err(|e| ctx.bad_data(e, "AES-GCM decryption"))?;
            Ok(Zeroizing::new(out))
        }
        Mechanism::RsaOaep { .. } => {
            check_label(ctx, req.label.as_deref())?;
            let ck =
                oaep(mech, req.label.as_deref()).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            let out = ctx
                .session
                .decrypt(&ck, key.private, &req.data)
                .map_err(|e| ctx.bad_data(e, "RSA-OAEP decryption"))?;
            Ok(Zeroizing::new(out))
        }
        other => Err(HsmError::invalid(format!("{other} does not decrypt")).into()),
    }
}

/// An [`EncryptRequest`] or [`DecryptRequest`] owned by the worker thread. `data` is the
/// plaintext or the ciphertext, zeroized on drop either way.
pub(crate) struct OwnedCrypt {
    pub data: Zeroizing<Vec<u8>>,
    pub iv: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
    pub label: Option<Vec<u8>>,
}

impl OwnedCrypt {
    fn new(data: &[u8], iv: Option<&[u8]>, aad: Option<&[u8]>, label: Option<&[u8]>) -> Self {
        OwnedCrypt {
            data: Zeroizing::new(data.to_vec()),
            iv: iv.map(<[u8]>::to_vec),
            aad: aad.map(<[u8]>::to_vec),
            label: label.map(<[u8]>::to_vec),
        }
    }
}

impl From<&EncryptRequest<'_>> for OwnedCrypt {
    fn from(r: &EncryptRequest<'_>) -> Self {
        OwnedCrypt::new(r.plaintext, r.iv, r.aad, r.label)
    }
}

impl From<&DecryptRequest<'_>> for OwnedCrypt {
    fn from(r: &DecryptRequest<'_>) -> Self {
        OwnedCrypt::new(r.ciphertext, r.iv, r.aad, r.label)
    }
}
