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

/// The bytes the token signs: the digest (in a `DigestInfo` for PKCS#1 v1.5), or the message
/// itself for EdDSA. Made on the caller's thread, so a worker spends its time on the token.
pub(crate) fn token_input(mech: &Mechanism, input: SignInput<'_>) -> Result<Vec<u8>, HsmError> {
    Ok(match (mech, input.digest_for(mech)?) {
        (Mechanism::RsaPkcs1v15 { hash }, Some(d)) => [digest_info_prefix(*hash), &d].concat(),
        (Mechanism::RsaPss { .. } | Mechanism::Ecdsa { .. }, Some(d)) => d,
        (Mechanism::Ed25519, None) => match input {
            SignInput::Message(m) => m.to_vec(),
            SignInput::Digest(_) => unreachable!("digest_for refuses digests for Ed25519"),
        },
        (m, _) => return Err(not_a_signature(m)),
    })
}

/// The token mechanism that signs [`token_input`]'s bytes.
pub(crate) fn token_mechanism(mech: &Mechanism) -> Result<CkMechanism<'static>, HsmError> {
    Ok(match mech {
        Mechanism::RsaPkcs1v15 { .. } => CkMechanism::RsaPkcs,
        Mechanism::RsaPss { hash, salt } => pss(*hash, *salt),
        Mechanism::Ecdsa { .. } => CkMechanism::Ecdsa,
        Mechanism::Ed25519 => CkMechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        m => return Err(not_a_signature(m)),
    })
}

fn not_a_signature(m: &Mechanism) -> HsmError {
    HsmError::invalid(format!("{m} is not a signature mechanism"))
}

/// The size of a signature by a key of this type (r || s for ECDSA).
fn signature_len(kt: KeyType) -> usize {
    match kt.ec_scalar_len() {
        Some(scalar) => 2 * scalar,
        None if kt == KeyType::Ed25519 => 64,
        None => kt.bits().div_ceil(8) as usize,
    }
}

/// Signs prepared input with the cached private key handle: `C_SignInit` + one `C_Sign`,
/// nothing else. Returns the token's signature as it gave it (`r || s` for ECDSA).
pub(crate) fn sign_prepared(
    ctx: &OpCtx<'_>,
    key: &KeyEntry,
    mech: &Mechanism,
    data: &[u8],
) -> Result<Vec<u8>, OpError> {
    let ck = token_mechanism(mech)?;
    ctx.module
        .raw
        .sign(
            ctx.session.handle(),
            &ck,
            key.private.handle(),
            data,
            signature_len(key.info.key_type),
        )
        .map_err(|(rv, f)| rv.into_ck(f))
        .step("signing")
}

/// The signature in the format `mech` asks for: the token gives `r || s`, while DER is what
/// X.509 and OpenSSL expect.
pub(crate) fn finish(mech: &Mechanism, kt: KeyType, sig: Vec<u8>) -> Result<Vec<u8>, HsmError> {
    match mech {
        Mechanism::Ecdsa {
            format: EcdsaFormat::Der,
            ..
        } => hsm_core::verify::ecdsa_fixed_to_der(kt, &sig),
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
    let (ck, data) = (token_mechanism(mech)?, token_input(mech, input)?);
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
