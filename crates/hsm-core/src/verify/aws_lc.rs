//! Verification with AWS-LC (feature `aws-lc`): for providers that verify locally where speed
//! matters (hsm-soft, the cloud providers, whose verify makes no network call). 5 to 17 times
//! faster than the portable reference verifier in [`super`], which stays the independent check
//! the conformance suite uses (see BENCHMARKS.md).

use aws_lc_rs::digest;
use aws_lc_rs::signature as sig;

use crate::{HashAlg, HsmError, KeyType, Mechanism, PublicKey, SaltLen, SignInput};

/// The AWS-LC algorithm for `mech` on a `kt` key.
fn verification_alg(
    kt: KeyType,
    mech: &Mechanism,
) -> Option<&'static dyn sig::VerificationAlgorithm> {
    use crate::EcdsaFormat::{Der, Fixed};
    use HashAlg::*;
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

/// Verifies `signature` over `input` with `public`. `Ok(false)` for a signature that does not
/// verify (or is not well formed); `NotSupported` (naming `provider`) for a mechanism AWS-LC
/// does not verify on this key type; `InvalidInput` for a digest of the wrong length.
pub fn verify_signature(
    provider: &str,
    public: &PublicKey,
    mechanism: &Mechanism,
    input: SignInput<'_>,
    signature: &[u8],
) -> Result<bool, HsmError> {
    let kt = public.key_type();
    let alg = verification_alg(kt, mechanism).ok_or_else(|| {
        HsmError::not_supported(provider, format!("verifying {mechanism} on {kt}"))
    })?;
    // AWS-LC takes the key inside the SubjectPublicKeyInfo (PKCS#1 RSAPublicKey, EC point, or
    // the raw Ed25519 key).
    let key = sig::UnparsedPublicKey::new(alg, public.raw_public_key());
    let ok = match input {
        SignInput::Message(m) => key.verify(m, signature).is_ok(),
        SignInput::Digest(d) => {
            let (hash, alg) = match mechanism.hash() {
                Some(h @ HashAlg::Sha256) => (h, &digest::SHA256),
                Some(h @ HashAlg::Sha384) => (h, &digest::SHA384),
                Some(h @ HashAlg::Sha512) => (h, &digest::SHA512),
                _ => {
                    return Err(HsmError::not_supported(
                        provider,
                        format!("verifying {mechanism} over a digest"),
                    ));
                }
            };
            let d = digest::Digest::import_less_safe(d, alg).map_err(|_| {
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
