//! Encryption: AES-GCM and RSA-OAEP.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use hsm_core::{Ciphertext, HashAlg, HsmError, Mechanism};
use zeroize::Zeroizing;

use crate::error::{crypto, integrity, unsupported};

const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;

fn gcm_key(key: &[u8]) -> Result<LessSafeKey, HsmError> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        n => return Err(HsmError::invalid(format!("{n}-byte AES key"))),
    };
    Ok(LessSafeKey::new(
        UnboundKey::new(alg, key).map_err(|_| crypto("AES-GCM key setup"))?,
    ))
}

fn gcm_nonce(iv: &[u8]) -> Result<Nonce, HsmError> {
    Nonce::try_assume_unique_for_key(iv).map_err(|_| {
        HsmError::invalid(format!(
            "AES-GCM IV must be {GCM_IV_LEN} bytes, got {}",
            iv.len()
        ))
    })
}

/// AES-GCM encryption; a fresh random IV when none is given.
pub(crate) fn gcm_encrypt(
    key: &[u8],
    iv: Option<&[u8]>,
    aad: Option<&[u8]>,
    plaintext: &[u8],
) -> Result<Ciphertext, HsmError> {
    let iv = match iv {
        Some(iv) => iv.to_vec(),
        None => {
            let mut iv = vec![0u8; GCM_IV_LEN];
            aws_lc_rs::rand::fill(&mut iv).map_err(|_| crypto("random IV"))?;
            iv
        }
    };
    let nonce = gcm_nonce(&iv)?;
    let mut data = plaintext.to_vec();
    gcm_key(key)?
        .seal_in_place_append_tag(nonce, Aad::from(aad.unwrap_or_default()), &mut data)
        .map_err(|_| crypto("AES-GCM encryption"))?;
    Ok(Ciphertext { data, iv: Some(iv) })
}

/// AES-GCM decryption; `IntegrityCheckFailed` if anything does not authenticate.
pub(crate) fn gcm_decrypt(
    key: &[u8],
    iv: Option<&[u8]>,
    aad: Option<&[u8]>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let iv = iv.ok_or_else(|| HsmError::invalid("AES-GCM decryption needs the IV"))?;
    let nonce = gcm_nonce(iv)?;
    if ciphertext.len() < GCM_TAG_LEN {
        return Err(HsmError::invalid(
            "AES-GCM ciphertext is shorter than its tag",
        ));
    }
    let mut data = Zeroizing::new(ciphertext.to_vec());
    let len = gcm_key(key)?
        .open_in_place(nonce, Aad::from(aad.unwrap_or_default()), &mut data)
        .map_err(|_| integrity("AES-GCM decryption"))?
        .len();
    data.truncate(len);
    Ok(data)
}

/// The AWS-LC OAEP algorithm for a mechanism (AWS-LC requires the MGF1 hash to match).
pub(crate) fn oaep_alg(mech: &Mechanism) -> Result<&'static OaepAlgorithm, HsmError> {
    let (hash, mgf1) = match mech {
        Mechanism::RsaOaep { hash, mgf1 } => (*hash, *mgf1),
        Mechanism::RsaAesKeyWrap { hash, .. } => (*hash, *hash),
        _ => return Err(unsupported(mech)),
    };
    if hash != mgf1 {
        return Err(unsupported(mech));
    }
    Ok(match hash {
        HashAlg::Sha1 => &OAEP_SHA1_MGF1SHA1,
        HashAlg::Sha256 => &OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &OAEP_SHA384_MGF1SHA384,
        HashAlg::Sha512 => &OAEP_SHA512_MGF1SHA512,
        _ => return Err(unsupported(mech)),
    })
}

/// RSA-OAEP encryption to the public half of `key`.
pub(crate) fn oaep_encrypt(
    key: &PrivateDecryptingKey,
    alg: &'static OaepAlgorithm,
    label: Option<&[u8]>,
    plaintext: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let public =
        OaepPublicEncryptingKey::new(key.public_key()).map_err(|_| crypto("RSA-OAEP key setup"))?;
    let max = public.max_plaintext_size(alg);
    if plaintext.len() > max {
        return Err(HsmError::invalid(format!(
            "RSA-OAEP with this key and hash takes at most {max} bytes, got {}",
            plaintext.len()
        )));
    }
    let mut out = vec![0u8; public.ciphertext_size()];
    let len = public
        .encrypt(alg, plaintext, &mut out, label)
        .map_err(|_| crypto("RSA-OAEP encryption"))?
        .len();
    out.truncate(len);
    Ok(out)
}

/// RSA-OAEP decryption; `IntegrityCheckFailed` on bad padding.
pub(crate) fn oaep_decrypt(
    key: &PrivateDecryptingKey,
    alg: &'static OaepAlgorithm,
    label: Option<&[u8]>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    // `OaepPrivateDecryptingKey::new` takes ownership; the clone shares AWS-LC's key object.
    let private =
        OaepPrivateDecryptingKey::new(key.clone()).map_err(|_| crypto("RSA-OAEP key setup"))?;
    if ciphertext.len() != private.key_size_bytes() {
        return Err(integrity("RSA-OAEP decryption (ciphertext length)"));
    }
    let mut out = Zeroizing::new(vec![0u8; private.min_output_size()]);
    let len = private
        .decrypt(alg, ciphertext, &mut out, label)
        .map_err(|_| integrity("RSA-OAEP decryption"))?
        .len();
    out.truncate(len);
    Ok(out)
}
