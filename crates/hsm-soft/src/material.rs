//! Key material: generation, parsing from stored bytes, and the public half.
//!
//! Private keys are kept as PKCS#8 DER (what `wrap_key` exports and the keystore stores) next to
//! the parsed AWS-LC objects used for operations; AES keys as raw bytes. Both are zeroized on drop
//! (AWS-LC clears its own copies when it frees them).

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use hsm_core::{HashAlg, HsmError, KeyFamily, KeyType, PublicKey};
use zeroize::Zeroizing;

use crate::error::crypto;

/// The parsed key, ready for operations.
pub(crate) enum Material {
    Rsa {
        pkcs8: Zeroizing<Vec<u8>>,
        pair: aws_lc_rs::rsa::KeyPair,
        decrypt: PrivateDecryptingKey,
    },
    Ec {
        pkcs8: Zeroizing<Vec<u8>>,
        /// One AWS-LC key object per hash: AWS-LC binds the hash to the key object.
        pairs: Vec<(HashAlg, EcdsaKeyPair)>,
    },
    Ed25519 {
        pkcs8: Zeroizing<Vec<u8>>,
        pair: Ed25519KeyPair,
    },
    Aes {
        key: Zeroizing<Vec<u8>>,
    },
}

/// The ECDSA hashes AWS-LC can sign with on each curve (it has no P-256/SHA-384, for example).
pub(crate) fn ecdsa_hashes(kt: KeyType) -> &'static [HashAlg] {
    match kt {
        KeyType::EcP256 => &[HashAlg::Sha256],
        KeyType::EcP384 => &[HashAlg::Sha384],
        KeyType::EcP521 => &[HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512],
        _ => &[],
    }
}

fn ecdsa_alg(kt: KeyType, hash: HashAlg) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    Some(match (kt, hash) {
        (KeyType::EcP256, HashAlg::Sha256) => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        (KeyType::EcP384, HashAlg::Sha384) => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        (KeyType::EcP521, HashAlg::Sha256) => &sig::ECDSA_P521_SHA256_ASN1_SIGNING,
        (KeyType::EcP521, HashAlg::Sha384) => &sig::ECDSA_P521_SHA384_ASN1_SIGNING,
        (KeyType::EcP521, HashAlg::Sha512) => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => return None,
    })
}

impl Material {
    /// Generates fresh key material.
    pub(crate) fn generate(kt: KeyType) -> Result<Self, HsmError> {
        let pkcs8 = match kt.family() {
            KeyFamily::Rsa => {
                let size = match kt {
                    KeyType::Rsa2048 => KeySize::Rsa2048,
                    KeyType::Rsa3072 => KeySize::Rsa3072,
                    _ => KeySize::Rsa4096,
                };
                let pair = aws_lc_rs::rsa::KeyPair::generate(size)
                    .map_err(|_| crypto("RSA key generation"))?;
                pair.as_der()
                    .map_err(|_| crypto("RSA PKCS#8 encoding"))?
                    .as_ref()
                    .to_vec()
            }
            KeyFamily::Ec => {
                let alg = ecdsa_alg(kt, ecdsa_hashes(kt)[0]).ok_or_else(|| crypto("EC curve"))?;
                let pair = EcdsaKeyPair::generate(alg).map_err(|_| crypto("EC key generation"))?;
                pair.to_pkcs8v1()
                    .map_err(|_| crypto("EC PKCS#8 encoding"))?
                    .as_ref()
                    .to_vec()
            }
            KeyFamily::EdDsa => {
                let pair =
                    Ed25519KeyPair::generate().map_err(|_| crypto("Ed25519 key generation"))?;
                pair.to_pkcs8v1()
                    .map_err(|_| crypto("Ed25519 PKCS#8 encoding"))?
                    .as_ref()
                    .to_vec()
            }
            KeyFamily::Aes => {
                let mut key = Zeroizing::new(vec![0u8; kt.bits() as usize / 8]);
                aws_lc_rs::rand::fill(&mut key).map_err(|_| crypto("random AES key"))?;
                return Ok(Material::Aes { key });
            }
            _ => return Err(crate::error::unsupported(kt)),
        };
        Self::from_secret(kt, &Zeroizing::new(pkcs8))
    }

    /// Parses stored or unwrapped bytes (PKCS#8 DER for key pairs, raw bytes for AES) as a key
    /// of `kt`, and checks that they really are one.
    pub(crate) fn from_secret(kt: KeyType, bytes: &[u8]) -> Result<Self, HsmError> {
        let wrong = |what: &str| {
            HsmError::invalid(format!("the key bytes are not a valid {kt} key ({what})"))
        };
        let pkcs8 = Zeroizing::new(bytes.to_vec());
        let material = match kt.family() {
            KeyFamily::Rsa => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(bytes)
                    .map_err(|_| wrong("not an RSA PKCS#8 private key"))?;
                if pair.public_modulus_len() * 8 != kt.bits() as usize {
                    return Err(wrong("modulus size differs"));
                }
                let decrypt = PrivateDecryptingKey::from_pkcs8(bytes)
                    .map_err(|_| wrong("not an RSA PKCS#8 private key"))?;
                Material::Rsa {
                    pkcs8,
                    pair,
                    decrypt,
                }
            }
            KeyFamily::Ec => {
                let mut pairs = Vec::new();
                for &h in ecdsa_hashes(kt) {
                    let alg = ecdsa_alg(kt, h).ok_or_else(|| crypto("EC curve"))?;
                    let pair = EcdsaKeyPair::from_pkcs8(alg, bytes)
                        .map_err(|_| wrong("not a PKCS#8 private key on this curve"))?;
                    pairs.push((h, pair));
                }
                Material::Ec { pkcs8, pairs }
            }
            KeyFamily::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(bytes)
                    .map_err(|_| wrong("not an Ed25519 PKCS#8 private key"))?;
                Material::Ed25519 { pkcs8, pair }
            }
            KeyFamily::Aes => {
                if bytes.len() * 8 != kt.bits() as usize {
                    return Err(wrong(&format!("{} bytes", bytes.len())));
                }
                Material::Aes { key: pkcs8 }
            }
            _ => return Err(crate::error::unsupported(kt)),
        };
        Ok(material)
    }

    /// The bytes that are stored and wrapped: PKCS#8 DER, or the raw AES key.
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        match self {
            Material::Rsa { pkcs8, .. }
            | Material::Ec { pkcs8, .. }
            | Material::Ed25519 { pkcs8, .. } => pkcs8,
            Material::Aes { key } => key,
        }
    }

    /// The public key, for key pairs.
    pub(crate) fn public_key(&self) -> Result<Option<PublicKey>, HsmError> {
        let der = match self {
            Material::Rsa { pair, .. } => pair
                .public_key()
                .as_der()
                .map_err(|_| crypto("RSA public key encoding"))?
                .as_ref()
                .to_vec(),
            Material::Ec { pairs, .. } => pairs[0]
                .1
                .public_key()
                .as_der()
                .map_err(|_| crypto("EC public key encoding"))?
                .as_ref()
                .to_vec(),
            Material::Ed25519 { pair, .. } => pair
                .public_key()
                .as_der()
                .map_err(|_| crypto("Ed25519 public key encoding"))?
                .as_ref()
                .to_vec(),
            Material::Aes { .. } => return Ok(None),
        };
        PublicKey::from_spki_der(&der).map(Some)
    }
}
