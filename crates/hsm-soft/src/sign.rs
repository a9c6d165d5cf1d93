//! Signing and verification with AWS-LC.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, RsaEncoding};
use hsm_core::{EcdsaFormat, HashAlg, HsmError, KeyType, Mechanism, SaltLen, SignInput};

use crate::error::{crypto, unsupported};
use crate::material::Material;

fn digest_alg(hash: HashAlg) -> Result<&'static digest::Algorithm, HsmError> {
    Ok(match hash {
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
        other => return Err(unsupported(format!("signing with {other}"))),
    })
}

fn rsa_encoding(mech: &Mechanism) -> Option<&'static dyn RsaEncoding> {
    Some(match mech {
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        } => &sig::RSA_PKCS1_SHA256,
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha384,
        } => &sig::RSA_PKCS1_SHA384,
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha512,
        } => &sig::RSA_PKCS1_SHA512,
        // AWS-LC's PSS always uses a salt as long as the hash.
        Mechanism::RsaPss {
            hash: HashAlg::Sha256,
            salt: SaltLen::HashLen,
        } => &sig::RSA_PSS_SHA256,
        Mechanism::RsaPss {
            hash: HashAlg::Sha384,
            salt: SaltLen::HashLen,
        } => &sig::RSA_PSS_SHA384,
        Mechanism::RsaPss {
            hash: HashAlg::Sha512,
            salt: SaltLen::HashLen,
        } => &sig::RSA_PSS_SHA512,
        _ => return None,
    })
}

/// Signs `input` with `material` of type `kt`. The caller has checked that the provider claims
/// this (key type, mechanism, operation).
pub(crate) fn sign(
    kt: KeyType,
    material: &Material,
    mechanism: &Mechanism,
    input: SignInput<'_>,
) -> Result<Vec<u8>, HsmError> {
    input.check(mechanism)?;
    match (material, mechanism) {
        (Material::Rsa { pair, .. }, _) => {
            let enc = rsa_encoding(mechanism).ok_or_else(|| unsupported(mechanism))?;
            let mut out = vec![0u8; pair.public_modulus_len()];
            match input {
                SignInput::Message(m) => pair.sign(enc, &SystemRandom::new(), m, &mut out),
                SignInput::Digest(d) => {
                    let hash = mechanism.hash().ok_or_else(|| unsupported(mechanism))?;
                    let d = digest::Digest::import_less_safe(d, digest_alg(hash)?)
                        .map_err(|_| HsmError::invalid("digest length does not match the hash"))?;
                    pair.sign_digest(enc, &d, &mut out)
                }
            }
            .map_err(|_| crypto("RSA signing"))?;
            Ok(out)
        }
        (Material::Ec { pairs, .. }, Mechanism::Ecdsa { hash, format }) => {
            let pair = pairs
                .iter()
                .find(|(h, _)| h == hash)
                .map(|(_, p)| p)
                .ok_or_else(|| unsupported(mechanism))?;
            let der = match input {
                SignInput::Message(m) => pair.sign(&SystemRandom::new(), m),
                SignInput::Digest(d) => {
                    let d = digest::Digest::import_less_safe(d, digest_alg(*hash)?)
                        .map_err(|_| HsmError::invalid("digest length does not match the hash"))?;
                    pair.sign_digest(&d)
                }
            }
            .map_err(|_| crypto("ECDSA signing"))?;
            match format {
                EcdsaFormat::Der => Ok(der.as_ref().to_vec()),
                EcdsaFormat::Fixed => hsm_core::verify::ecdsa_der_to_fixed(kt, der.as_ref()),
                _ => Err(unsupported(mechanism)),
            }
        }
        (Material::Ed25519 { pair, .. }, Mechanism::Ed25519) => match input {
            SignInput::Message(m) => Ok(pair.sign(m).as_ref().to_vec()),
            SignInput::Digest(_) => Err(unsupported("Ed25519 over a digest")),
        },
        _ => Err(HsmError::invalid(format!(
            "{mechanism} does not apply to a {kt} key"
        ))),
    }
}
