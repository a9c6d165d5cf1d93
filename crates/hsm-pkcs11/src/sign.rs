//! Signing and verification on the token.
//!
//! Messages are hashed in software and the token signs the digest (`CKM_RSA_PKCS` over a
//! `DigestInfo`, `CKM_RSA_PKCS_PSS`, `CKM_ECDSA`): every token offers these raw mechanisms,
//! while the hash-and-sign ones vary (SoftHSM has no `CKM_ECDSA_SHA256`), and message and digest
//! input then take the same path. EdDSA signs the message itself (`CKM_EDDSA`).

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use hsm_core::{EcdsaFormat, HsmError, KeyType, Mechanism, SignInput};

use crate::keys::KeyEntry;
use crate::params::{digest_info_prefix, pss};
use crate::session::{CkContext as _, OpCtx, OpError};

/// What the token is given: the mechanism and the bytes.
fn prepare(
    mech: &Mechanism,
    input: SignInput<'_>,
) -> Result<(CkMechanism<'static>, Vec<u8>), HsmError> {
    let digest = input.digest_for(mech)?;
    Ok(match (mech, digest) {
        (Mechanism::RsaPkcs1v15 { hash }, Some(d)) => {
            let mut data = digest_info_prefix(*hash).to_vec();
            data.extend_from_slice(&d);
            (CkMechanism::RsaPkcs, data)
        }
        (Mechanism::RsaPss { hash, salt }, Some(d)) => (pss(*hash, *salt), d),
        (Mechanism::Ecdsa { .. }, Some(d)) => (CkMechanism::Ecdsa, d),
        (Mechanism::Ed25519, None) => {
            let SignInput::Message(m) = input else {
                unreachable!("digest_for refuses digests for Ed25519")
            };
            (
                CkMechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                m.to_vec(),
            )
        }
        (m, _) => {
            return Err(HsmError::invalid(format!(
                "{m} is not a signature mechanism"
            )));
        }
    })
}

/// The size of a signature by a key of this type (r || s for ECDSA).
fn signature_len(kt: KeyType) -> usize {
    match kt.ec_scalar_len() {
        Some(scalar) => 2 * scalar,
        None if kt == KeyType::Ed25519 => 64,
        None => kt.bits().div_ceil(8) as usize,
    }
}

/// Signs with the cached private key handle: `C_SignInit` + one `C_Sign`, nothing else.
pub(crate) fn sign(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    mech: &Mechanism,
    input: SignInput<'_>,
) -> Result<Vec<u8>, OpError> {
    let (ck, data) = prepare(mech, input)?;
    let sig = ctx
        .module
        .raw
        .sign(
            ctx.session.handle(),
            &ck,
            key.private.handle(),
            &data,
            signature_len(key.info.key_type),
        )
        .map_err(|(rv, f)| rv.into_ck(f))
        .step("signing")?;
    match mech {
        // The token gives r || s; DER is what X.509 and OpenSSL expect.
        Mechanism::Ecdsa {
            format: EcdsaFormat::Der,
            ..
        } => Ok(hsm_core::verify::ecdsa_fixed_to_der(
            key.info.key_type,
            &sig,
        )?),
        _ => Ok(sig),
    }
}

/// Verifies on the token with the public key object (`C_VerifyInit` + `C_Verify`).
pub(crate) fn verify(
    session: &Session,
    kt: KeyType,
    public: ObjectHandle,
    mech: &Mechanism,
    input: SignInput<'_>,
    signature: &[u8],
    bad_data_code: Option<RvError>,
) -> Result<bool, OpError> {
    let (ck, data) = prepare(mech, input)?;
    let sig = match mech {
        Mechanism::Ecdsa {
            format: EcdsaFormat::Der,
            ..
        } => match hsm_core::verify::ecdsa_der_to_fixed(kt, signature) {
            Ok(s) => s,
            // Not even a DER signature: invalid, not an error.
            Err(_) => return Ok(false),
        },
        _ => signature.to_vec(),
    };
    match session.verify(&ck, public, &data, &sig) {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
            Ok(false)
        }
        Err(CkError::Pkcs11(rv, _)) if Some(rv) == bad_data_code => Ok(false),
        Err(e) => Err(e).step("verifying"),
    }
}
