//! Key wrapping: AES key wrap (RFC 3394), with padding (RFC 5649), RSA-OAEP, and RSA-AES key wrap
//! (`CKM_RSA_AES_KEY_WRAP`: RSA-OAEP of an ephemeral AES key, then RFC 5649 under it).

use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrap as _, KeyWrapPadded as _};
use aws_lc_rs::rsa::PrivateDecryptingKey;
use hsm_core::{HsmError, Mechanism};
use zeroize::Zeroizing;

use crate::cipher::{oaep_alg, oaep_decrypt, oaep_encrypt};
use crate::error::{crypto, integrity, unsupported};

fn kek(key: &[u8]) -> Result<AesKek, HsmError> {
    let cipher = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(unsupported("AES key wrap with an AES-192 wrapping key")),
    };
    AesKek::new(cipher, key).map_err(|_| crypto("AES key wrap setup"))
}

/// RFC 3394 (`padded == false`) or RFC 5649 (`padded == true`) wrap.
pub(crate) fn aes_wrap(kek_bytes: &[u8], padded: bool, secret: &[u8]) -> Result<Vec<u8>, HsmError> {
    if !padded && (!secret.len().is_multiple_of(8) || secret.len() < 16) {
        return Err(HsmError::invalid(format!(
            "AES key wrap (RFC 3394) needs a multiple of 8 bytes, at least 16; the key is {} bytes \
             (use aes-kwp for private keys)",
            secret.len()
        )));
    }
    let mut out = vec![0u8; secret.len() + 16];
    let k = kek(kek_bytes)?;
    let len = if padded {
        k.wrap_with_padding(secret, &mut out)
    } else {
        k.wrap(secret, &mut out)
    }
    .map_err(|_| crypto("AES key wrap"))?
    .len();
    out.truncate(len);
    Ok(out)
}

/// The inverse of [`aes_wrap`]; `IntegrityCheckFailed` if the integrity check value is wrong.
pub(crate) fn aes_unwrap(
    kek_bytes: &[u8],
    padded: bool,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(HsmError::invalid(format!(
            "wrapped key of {} bytes is not a multiple of 8 of at least 16",
            wrapped.len()
        )));
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let k = kek(kek_bytes)?;
    let len = if padded {
        k.unwrap_with_padding(wrapped, &mut out)
    } else {
        k.unwrap(wrapped, &mut out)
    }
    .map_err(|_| integrity("AES key unwrap"))?
    .len();
    out.truncate(len);
    Ok(out)
}

/// RSA-AES key wrap: `OAEP(ephemeral) || RFC5649(ephemeral, secret)`, the layout of PKCS#11
/// `CKM_RSA_AES_KEY_WRAP` and of the AWS KMS / Google Cloud KMS import formats.
pub(crate) fn rsa_aes_wrap(
    rsa: &PrivateDecryptingKey,
    mech: &Mechanism,
    secret: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let Mechanism::RsaAesKeyWrap { aes_bits, .. } = mech else {
        return Err(unsupported(mech));
    };
    let mut ephemeral = Zeroizing::new(vec![0u8; *aes_bits as usize / 8]);
    aws_lc_rs::rand::fill(&mut ephemeral).map_err(|_| crypto("random ephemeral AES key"))?;
    let mut out = oaep_encrypt(rsa, oaep_alg(mech)?, None, &ephemeral)?;
    out.extend_from_slice(&aes_wrap(&ephemeral, true, secret)?);
    Ok(out)
}

/// The inverse of [`rsa_aes_wrap`].
pub(crate) fn rsa_aes_unwrap(
    rsa: &PrivateDecryptingKey,
    mech: &Mechanism,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let n = rsa.key_size_bytes();
    if wrapped.len() <= n {
        return Err(HsmError::invalid(format!(
            "RSA-AES wrapped key of {} bytes is too short for a {}-bit RSA key",
            wrapped.len(),
            n * 8
        )));
    }
    let (head, tail) = wrapped.split_at(n);
    let ephemeral = oaep_decrypt(rsa, oaep_alg(mech)?, None, head)?;
    aes_unwrap(&ephemeral, true, tail)
}
