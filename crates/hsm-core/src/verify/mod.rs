//! Signature verification and public-key encryption in software, from a [`PublicKey`] alone.
//!
//! # Why RustCrypto
//! This module uses the RustCrypto crates (`rsa`, `p256`/`p384`/`p521`, `ed25519-dalek`):
//! - they are pure Rust, so `hsm-core` stays thin and builds for every target hsm-rs serves
//!   (iOS, Android, Windows) without a C toolchain;
//! - they are an implementation independent of the ones behind our providers (AWS-LC in
//!   `hsm-soft` and the AWS SDK, vendor firmware behind PKCS#11, TPMs and cloud HSMs), which is
//!   what the conformance suite needs when it checks a provider's signatures by "independent
//!   software";
//! - only public-key operations happen here. The `rsa` crate's known timing side channel
//!   (RUSTSEC-2023-0071, "Marvin") concerns private-key decryption, which hsm-rs never does with it.
//!
//! Providers that verify locally where speed matters (hsm-soft; cloud KMS providers, whose
//! verify must make no network call) use `aws_lc::verify_signature` (feature `aws-lc`), 5 to
//! 17 times faster; this module stays the reference the conformance suite checks them against.

#[cfg(feature = "aws-lc")]
pub mod aws_lc;

use rsa::pkcs8::DecodePublicKey as _;
use signature::hazmat::PrehashVerifier as _;

use crate::error::HsmError;
use crate::public_key::PublicKey;
use crate::types::{EcdsaFormat, HashAlg, KeyFamily, KeyType, Mechanism, SaltLen, SignInput};

/// Verifies `signature` over `input` with `public_key` under `mechanism`.
///
/// # Contract
/// - `Ok(true)`: the signature is valid.
/// - `Ok(false)`: it is not (wrong key, tampered data, malformed signature bytes).
/// - `Err(InvalidInput)`: the request itself is wrong (a mechanism that does not fit the key, a
///   digest of the wrong length, a digest given to Ed25519).
pub fn verify_signature(
    public_key: &PublicKey,
    mechanism: &Mechanism,
    input: SignInput<'_>,
    signature: &[u8],
) -> Result<bool, HsmError> {
    let key_type = public_key.key_type();
    if !mechanism.fits(key_type) {
        return Err(HsmError::invalid(format!(
            "{mechanism} does not apply to a {key_type} key"
        )));
    }
    let digest = input.digest_for(mechanism)?;
    match (mechanism, digest) {
        (Mechanism::RsaPkcs1v15 { hash }, Some(d)) => {
            let key = rsa_key(public_key)?;
            Ok(key.verify(pkcs1_scheme(*hash)?, &d, signature).is_ok())
        }
        (Mechanism::RsaPss { hash, salt }, Some(d)) => {
            let key = rsa_key(public_key)?;
            let salt_len = match salt {
                SaltLen::HashLen => hash.output_len(),
                SaltLen::Bytes(n) => *n as usize,
            };
            Ok(key
                .verify(pss_scheme(*hash, salt_len)?, &d, signature)
                .is_ok())
        }
        (Mechanism::Ecdsa { format, .. }, Some(d)) => verify_ecdsa(
            key_type,
            public_key.raw_public_key(),
            &d,
            *format,
            signature,
        ),
        (Mechanism::Ed25519, None) => {
            let SignInput::Message(msg) = input else {
                unreachable!("digest_for refuses digests for Ed25519")
            };
            let raw: [u8; 32] = public_key
                .raw_public_key()
                .try_into()
                .map_err(|_| HsmError::invalid("Ed25519 public key is not 32 bytes"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .map_err(|e| HsmError::invalid(format!("bad Ed25519 public key: {e}")))?;
            let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                return Ok(false);
            };
            Ok(key.verify_strict(msg, &sig).is_ok())
        }
        (m, _) => Err(HsmError::invalid(format!(
            "{m} is not a signature mechanism"
        ))),
    }
}

/// Encrypts `plaintext` to an RSA public key with RSA-OAEP, in software.
///
/// Used by providers that encrypt locally from a cached public key (as cloud KMS clients do) and
/// by the conformance suite to check a provider's decryption against independent encryption.
pub fn rsa_oaep_encrypt(
    public_key: &PublicKey,
    hash: HashAlg,
    mgf1: HashAlg,
    label: Option<&[u8]>,
    plaintext: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let key = rsa_key(public_key)?;
    let mut padding = oaep_padding(hash, mgf1);
    if let Some(l) = label {
        // OAEP labels are bytes (RFC 8017), but the rsa crate stores them as a String.
        let text = std::str::from_utf8(l)
            .map_err(|_| HsmError::invalid("software RSA-OAEP supports only UTF-8 labels"))?;
        padding.label = Some(text.to_owned());
    }
    key.encrypt(&mut rand::rngs::OsRng, padding, plaintext)
        .map_err(|e| HsmError::invalid(format!("RSA-OAEP encryption failed: {e}")))
}

/// Converts a DER ECDSA signature to fixed-width `r || s` for a key of `key_type`.
pub fn ecdsa_der_to_fixed(key_type: KeyType, der_sig: &[u8]) -> Result<Vec<u8>, HsmError> {
    let bad = |e: String| HsmError::invalid(format!("malformed DER ECDSA signature: {e}"));
    Ok(match key_type {
        KeyType::EcP256 => p256::ecdsa::Signature::from_der(der_sig)
            .map_err(|e| bad(e.to_string()))?
            .to_bytes()
            .to_vec(),
        KeyType::EcP384 => p384::ecdsa::Signature::from_der(der_sig)
            .map_err(|e| bad(e.to_string()))?
            .to_bytes()
            .to_vec(),
        KeyType::EcP521 => p521::ecdsa::Signature::from_der(der_sig)
            .map_err(|e| bad(e.to_string()))?
            .to_bytes()
            .to_vec(),
        other => return Err(HsmError::invalid(format!("{other} is not an ECDSA key"))),
    })
}

/// Converts a fixed-width `r || s` ECDSA signature to DER for a key of `key_type`.
///
/// On every signature's path (tokens give `r || s`, X.509 wants DER), so it encodes directly:
/// each scalar is checked to lie in `1..n` by a byte comparison with the curve order, with no
/// big-number arithmetic.
pub fn ecdsa_fixed_to_der(key_type: KeyType, fixed: &[u8]) -> Result<Vec<u8>, HsmError> {
    use p256::elliptic_curve::Curve as _;
    use p256::elliptic_curve::bigint::ArrayEncoding as _;
    let (p256_n, p384_n, p521_n);
    let order: &[u8] = match key_type {
        KeyType::EcP256 => {
            p256_n = p256::NistP256::ORDER.to_be_byte_array();
            &p256_n
        }
        KeyType::EcP384 => {
            p384_n = p384::NistP384::ORDER.to_be_byte_array();
            &p384_n
        }
        KeyType::EcP521 => {
            // A 576-bit integer: the order's 66 bytes are the last ones.
            p521_n = p521::NistP521::ORDER.to_be_byte_array();
            &p521_n[p521_n.len() - 66..]
        }
        other => return Err(HsmError::invalid(format!("{other} is not an ECDSA key"))),
    };
    let len = order.len();
    if fixed.len() != 2 * len {
        return Err(HsmError::invalid(format!(
            "malformed r||s ECDSA signature: {} bytes, {key_type} needs {}",
            fixed.len(),
            2 * len
        )));
    }
    let (r, s) = fixed.split_at(len);
    for (name, x) in [("r", r), ("s", s)] {
        if x.iter().all(|b| *b == 0) || x >= order {
            return Err(HsmError::invalid(format!(
                "malformed r||s ECDSA signature: {name} is not in 1..n"
            )));
        }
    }
    let ((rp, r), (sp, s)) = (der_integer(r), der_integer(s));
    let body = 2 + rp + r.len() + 2 + sp + s.len();
    let mut out = Vec::with_capacity(body + 3);
    out.push(0x30);
    // At most 2 * (66 + 3) = 138 bytes: the long form needs one length byte.
    if body >= 0x80 {
        out.push(0x81);
    }
    out.push(body as u8);
    for (pad, x) in [(rp, r), (sp, s)] {
        out.push(0x02);
        out.push((pad + x.len()) as u8);
        if pad == 1 {
            out.push(0);
        }
        out.extend_from_slice(x);
    }
    Ok(out)
}

/// A DER INTEGER's contents for an unsigned big-endian number: no leading zero bytes, then one
/// 0x00 (the count returned) if the top bit is set.
fn der_integer(x: &[u8]) -> (usize, &[u8]) {
    let x = &x[x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1)..];
    (usize::from(x[0] & 0x80 != 0), x)
}

fn rsa_key(public_key: &PublicKey) -> Result<rsa::RsaPublicKey, HsmError> {
    if public_key.key_type().family() != KeyFamily::Rsa {
        return Err(HsmError::invalid(format!(
            "{} is not an RSA key",
            public_key.key_type()
        )));
    }
    rsa::RsaPublicKey::from_public_key_der(public_key.spki_der())
        .map_err(|e| HsmError::invalid(format!("bad RSA public key: {e}")))
}

fn pkcs1_scheme(hash: HashAlg) -> Result<rsa::Pkcs1v15Sign, HsmError> {
    Ok(match hash {
        HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        HashAlg::Sha1 => return Err(HsmError::invalid("SHA-1 signatures are not accepted")),
    })
}

fn pss_scheme(hash: HashAlg, salt_len: usize) -> Result<rsa::Pss, HsmError> {
    Ok(match hash {
        HashAlg::Sha256 => rsa::Pss::new_with_salt::<sha2::Sha256>(salt_len),
        HashAlg::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(salt_len),
        HashAlg::Sha512 => rsa::Pss::new_with_salt::<sha2::Sha512>(salt_len),
        HashAlg::Sha1 => return Err(HsmError::invalid("SHA-1 signatures are not accepted")),
    })
}

fn oaep_padding(hash: HashAlg, mgf1: HashAlg) -> rsa::Oaep {
    use sha1::Sha1;
    use sha2::{Sha256, Sha384, Sha512};
    macro_rules! pick {
        ($($h:ident => $H:ty),*) => {
            match (hash, mgf1) {
                $( (HashAlg::$h, HashAlg::Sha1) => rsa::Oaep::new_with_mgf_hash::<$H, Sha1>(),
                   (HashAlg::$h, HashAlg::Sha256) => rsa::Oaep::new_with_mgf_hash::<$H, Sha256>(),
                   (HashAlg::$h, HashAlg::Sha384) => rsa::Oaep::new_with_mgf_hash::<$H, Sha384>(),
                   (HashAlg::$h, HashAlg::Sha512) => rsa::Oaep::new_with_mgf_hash::<$H, Sha512>(), )*
            }
        };
    }
    pick!(Sha1 => Sha1, Sha256 => Sha256, Sha384 => Sha384, Sha512 => Sha512)
}

fn verify_ecdsa(
    key_type: KeyType,
    point: &[u8],
    digest: &[u8],
    format: EcdsaFormat,
    signature: &[u8],
) -> Result<bool, HsmError> {
    // FIPS 186-5 takes the whole hash as the integer when it is shorter than the group order, which
    // is the same integer as the hash left-padded with zeros to the field size. Padding lets
    // RustCrypto (which refuses digests under half the field size) check P-521 with SHA-256.
    let field = key_type.ec_scalar_len().unwrap_or(0);
    let mut z = vec![0u8; field.saturating_sub(digest.len())];
    z.extend_from_slice(digest);

    macro_rules! check {
        ($curve:ident) => {{
            let key = $curve::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|e| HsmError::invalid(format!("bad EC public key: {e}")))?;
            let sig = match format {
                EcdsaFormat::Der => $curve::ecdsa::Signature::from_der(signature),
                EcdsaFormat::Fixed => $curve::ecdsa::Signature::from_slice(signature),
            };
            Ok(match sig {
                Ok(sig) => key.verify_prehash(&z, &sig).is_ok(),
                Err(_) => false,
            })
        }};
    }
    match key_type {
        KeyType::EcP256 => check!(p256),
        KeyType::EcP384 => check!(p384),
        KeyType::EcP521 => check!(p521),
        other => Err(HsmError::invalid(format!("{other} is not an ECDSA key"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with: openssl ecparam -genkey -name prime256v1 -out k.pem; printf abc > m;
    // openssl pkey -in k.pem -pubout; openssl dgst -sha256 -sign k.pem m | xxd -p
    const PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiYmNBuJsqR7ZQn1ETL2SQuG5kwOd
TIOLsUIuuKV8Y61DUvzoCEyvW1mQ4gmAbVpNZFaQT5/ojzIGsPQPnZgTEg==
-----END PUBLIC KEY-----";
    const SIG: &str = "30460221009df388a24d3593fe5027cb3c5fa92f4a41c9d5e24db44e8c2c32abbd92a0c15f02210085f5bd0e19ad82860adb862f9a1d382b1c9b93f5f353b81e4df80503a26693b7";

    #[test]
    fn verifies_an_openssl_signature() {
        let k = PublicKey::from_pem(PUB).unwrap();
        let sig = hex::decode(SIG).unwrap();
        let m = Mechanism::ecdsa(HashAlg::Sha256);
        assert!(verify_signature(&k, &m, SignInput::Message(b"abc"), &sig).unwrap());
        assert!(!verify_signature(&k, &m, SignInput::Message(b"abd"), &sig).unwrap());
        let digest = HashAlg::Sha256.digest(b"abc");
        assert!(verify_signature(&k, &m, SignInput::Digest(&digest), &sig).unwrap());
        let fixed = ecdsa_der_to_fixed(KeyType::EcP256, &sig).unwrap();
        let m = Mechanism::Ecdsa {
            hash: HashAlg::Sha256,
            format: EcdsaFormat::Fixed,
        };
        assert!(verify_signature(&k, &m, SignInput::Message(b"abc"), &fixed).unwrap());
    }

    #[test]
    fn der_fixed_round_trip() {
        let der = hex::decode(SIG).unwrap();
        let fixed = ecdsa_der_to_fixed(KeyType::EcP256, &der).unwrap();
        assert_eq!(fixed.len(), 64);
        assert_eq!(ecdsa_fixed_to_der(KeyType::EcP256, &fixed).unwrap(), der);
    }

    #[test]
    fn mechanism_must_fit_key() {
        let k = PublicKey::from_pem(PUB).unwrap();
        let e = verify_signature(
            &k,
            &Mechanism::RsaPkcs1v15 {
                hash: HashAlg::Sha256,
            },
            SignInput::Message(b"abc"),
            &[0; 64],
        )
        .unwrap_err();
        assert!(matches!(e, HsmError::InvalidInput { .. }));
        // Garbage signature bytes are a failed verification, not an error.
        assert!(
            !verify_signature(
                &k,
                &Mechanism::ecdsa(HashAlg::Sha256),
                SignInput::Message(b"abc"),
                b"junk"
            )
            .unwrap()
        );
    }

    #[test]
    fn fixed_to_der_matches_the_ecdsa_crates() {
        use rand::RngCore as _;
        let mut rng = rand::thread_rng();
        for (kt, len) in [
            (KeyType::EcP256, 32),
            (KeyType::EcP384, 48),
            (KeyType::EcP521, 66),
        ] {
            for i in 0..300 {
                let mut fixed = vec![0u8; 2 * len];
                rng.fill_bytes(&mut fixed);
                if kt == KeyType::EcP521 {
                    fixed[0] &= 0x01;
                    fixed[len] &= 0x01;
                }
                // Short scalars and scalars with the top bit set, both ways.
                match i % 3 {
                    0 => fixed[..3].fill(0),
                    1 => fixed[len] |= if kt == KeyType::EcP521 { 0x01 } else { 0x80 },
                    _ => {}
                }
                let reference = match kt {
                    KeyType::EcP256 => p256::ecdsa::Signature::from_slice(&fixed)
                        .map(|s| s.to_der().as_bytes().to_vec()),
                    KeyType::EcP384 => p384::ecdsa::Signature::from_slice(&fixed)
                        .map(|s| s.to_der().as_bytes().to_vec()),
                    _ => p521::ecdsa::Signature::from_slice(&fixed)
                        .map(|s| s.to_der().as_bytes().to_vec()),
                };
                match (ecdsa_fixed_to_der(kt, &fixed), reference) {
                    (Ok(ours), Ok(theirs)) => {
                        assert_eq!(ours, theirs, "{kt} {}", hex::encode(&fixed))
                    }
                    (Err(_), Err(_)) => {}
                    (ours, theirs) => {
                        panic!("{kt} {}: {ours:?} vs {theirs:?}", hex::encode(&fixed))
                    }
                }
                let der = ecdsa_fixed_to_der(kt, &fixed);
                if let Ok(der) = der {
                    assert_eq!(ecdsa_der_to_fixed(kt, &der).unwrap(), fixed);
                }
            }
            let zero = vec![0u8; 2 * len];
            assert!(ecdsa_fixed_to_der(kt, &zero).is_err());
            assert!(ecdsa_fixed_to_der(kt, &zero[1..]).is_err());
        }
    }
}
