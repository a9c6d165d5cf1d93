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

fn verification_alg(
    kt: KeyType,
    mech: &Mechanism,
) -> Option<&'static dyn sig::VerificationAlgorithm> {
    use HashAlg::*;
    use hsm_core::EcdsaFormat::{Der, Fixed};
    Some(match (kt, mech) {
        (_, Mechanism::RsaPkcs1v15 { hash: Sha256 }) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (_, Mechanism::RsaPkcs1v15 { hash: Sha384 }) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (_, Mechanism::RsaPkcs1v15 { hash: Sha512 }) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (
            _,
            Mechanism::RsaPss {
                hash: Sha256,
                salt: SaltLen::HashLen,
            },
        ) => &sig::RSA_PSS_2048_8192_SHA256,
        (
            _,
            Mechanism::RsaPss {
                hash: Sha384,
                salt: SaltLen::HashLen,
            },
        ) => &sig::RSA_PSS_2048_8192_SHA384,
        (
            _,
            Mechanism::RsaPss {
                hash: Sha512,
                salt: SaltLen::HashLen,
            },
        ) => &sig::RSA_PSS_2048_8192_SHA512,
        (
            KeyType::EcP256,
            Mechanism::Ecdsa {
                hash: Sha256,
                format: Der,
            },
        ) => &sig::ECDSA_P256_SHA256_ASN1,
        (
            KeyType::EcP256,
            Mechanism::Ecdsa {
                hash: Sha256,
                format: Fixed,
            },
        ) => &sig::ECDSA_P256_SHA256_FIXED,
        (
            KeyType::EcP384,
            Mechanism::Ecdsa {
                hash: Sha384,
                format: Der,
            },
        ) => &sig::ECDSA_P384_SHA384_ASN1,
        (
            KeyType::EcP384,
            Mechanism::Ecdsa {
                hash: Sha384,
                format: Fixed,
            },
        ) => &sig::ECDSA_P384_SHA384_FIXED,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha256,
                format: Der,
            },
        ) => &sig::ECDSA_P521_SHA256_ASN1,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha256,
                format: Fixed,
            },
        ) => &sig::ECDSA_P521_SHA256_FIXED,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha384,
                format: Der,
            },
        ) => &sig::ECDSA_P521_SHA384_ASN1,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha384,
                format: Fixed,
            },
        ) => &sig::ECDSA_P521_SHA384_FIXED,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha512,
                format: Der,
            },
        ) => &sig::ECDSA_P521_SHA512_ASN1,
        (
            KeyType::EcP521,
            Mechanism::Ecdsa {
                hash: Sha512,
                format: Fixed,
            },
        ) => &sig::ECDSA_P521_SHA512_FIXED,
        (KeyType::Ed25519, Mechanism::Ed25519) => &sig::ED25519,
        _ => return None,
    })
}

/// Verifies with AWS-LC from the public key. (The conformance suite checks the same signatures
/// with hsm-core's RustCrypto verifier, so the two implementations check each other.)
pub(crate) fn verify(
    public: &hsm_core::PublicKey,
    mechanism: &Mechanism,
    input: SignInput<'_>,
    signature: &[u8],
) -> Result<bool, HsmError> {
    let kt = public.key_type();
    let alg = verification_alg(kt, mechanism).ok_or_else(|| unsupported(mechanism))?;
    // AWS-LC takes the key inside the SubjectPublicKeyInfo (PKCS#1 RSAPublicKey, EC point, or
    // the raw Ed25519 key).
    let key = sig::UnparsedPublicKey::new(alg, public.raw_public_key());
    let ok = match input {
        SignInput::Message(m) => key.verify(m, signature).is_ok(),
        SignInput::Digest(d) => {
            let hash = mechanism
                .hash()
                .ok_or_else(|| unsupported("Ed25519 over a digest"))?;
            let d = digest::Digest::import_less_safe(d, digest_alg(hash)?).map_err(|_| {
                HsmError::invalid(format!(
                    "digest is {} bytes but {hash} produces {}",
                    d.len(),
                    hash.output_len()
                ))
            })?;
            key.verify_digest(&d, signature).is_ok()
        }
    };
    Ok(ok)
}
