//! Public keys as SubjectPublicKeyInfo DER, with PEM and JWK export.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use der::Decode as _;
use serde::{Deserialize, Serialize};
use spki::ObjectIdentifier;

use crate::error::HsmError;
use crate::types::{KeyFamily, KeyType};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A public key: its type and its DER-encoded SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), the form
/// OpenSSL, X.509 and every cloud KMS exchange.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Repr", into = "Repr")]
pub struct PublicKey {
    key_type: KeyType,
    spki_der: Vec<u8>,
    // The subjectPublicKey bits, kept so verifiers do not parse the SPKI on every call.
    raw: Vec<u8>,
}

/// The serialized form: type and SPKI only; the rest is derived again when read.
#[derive(Serialize, Deserialize)]
struct Repr {
    key_type: KeyType,
    #[serde(with = "b64")]
    spki_der: Vec<u8>,
}

impl From<PublicKey> for Repr {
    fn from(k: PublicKey) -> Repr {
        Repr {
            key_type: k.key_type,
            spki_der: k.spki_der,
        }
    }
}

impl TryFrom<Repr> for PublicKey {
    type Error = HsmError;
    fn try_from(r: Repr) -> Result<Self, HsmError> {
        let k = PublicKey::from_spki_der(&r.spki_der)?;
        if k.key_type != r.key_type {
            return Err(HsmError::invalid(format!(
                "public key says {} but its SPKI holds a {} key",
                r.key_type, k.key_type
            )));
        }
        Ok(k)
    }
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo and works out its key type.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, HsmError> {
        let bad =
            |why: String| HsmError::invalid(format!("not a usable SubjectPublicKeyInfo: {why}"));
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| bad(e.to_string()))?;
        let oid = spki.algorithm.oid;
        let key_type = if oid == OID_RSA {
            use rsa::pkcs8::DecodePublicKey as _;
            use rsa::traits::PublicKeyParts as _;
            let key =
                rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(e.to_string()))?;
            match key.n().bits() {
                2048 => KeyType::Rsa2048,
                3072 => KeyType::Rsa3072,
                4096 => KeyType::Rsa4096,
                n => return Err(bad(format!("RSA-{n} is not a supported key size"))),
            }
        } else if oid == OID_EC {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|e| bad(format!("EC key without a named curve: {e}")))?;
            match curve {
                c if c == OID_P256 => KeyType::EcP256,
                c if c == OID_P384 => KeyType::EcP384,
                c if c == OID_P521 => KeyType::EcP521,
                c => return Err(bad(format!("unsupported EC curve {c}"))),
            }
        } else if oid == OID_ED25519 {
            KeyType::Ed25519
        } else {
            return Err(bad(format!("unsupported key algorithm {oid}")));
        };
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad("the public key bit string has unused bits".into()))?
            .to_vec();
        Ok(PublicKey {
            key_type,
            spki_der: der.to_vec(),
            raw,
        })
    }

    /// From an RSA modulus and public exponent (big-endian), as PKCS#11 `CKA_MODULUS` /
    /// `CKA_PUBLIC_EXPONENT`, a JWK's `n`/`e` or a TPM's `TPM2B_PUBLIC_KEY_RSA` give them.
    pub fn from_rsa_components(modulus: &[u8], exponent: &[u8]) -> Result<Self, HsmError> {
        use rsa::pkcs8::EncodePublicKey as _;
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(modulus),
            rsa::BigUint::from_bytes_be(exponent),
        )
        .map_err(|e| HsmError::invalid(format!("bad RSA public key: {e}")))?;
        let der = key
            .to_public_key_der()
            .map_err(|e| HsmError::invalid(format!("cannot encode RSA public key: {e}")))?;
        Self::from_spki_der(der.as_bytes())
    }

    /// From an uncompressed EC point (`04 || x || y`) on the curve of `key_type`; the point is
    /// checked to lie on the curve.
    pub fn from_ec_point(key_type: KeyType, point: &[u8]) -> Result<Self, HsmError> {
        let bad = |e: String| HsmError::invalid(format!("bad {key_type} public point: {e}"));
        let curve = match key_type {
            KeyType::EcP256 => {
                p256::PublicKey::from_sec1_bytes(point).map_err(|e| bad(e.to_string()))?;
                OID_P256
            }
            KeyType::EcP384 => {
                p384::PublicKey::from_sec1_bytes(point).map_err(|e| bad(e.to_string()))?;
                OID_P384
            }
            KeyType::EcP521 => {
                p521::PublicKey::from_sec1_bytes(point).map_err(|e| bad(e.to_string()))?;
                OID_P521
            }
            other => return Err(HsmError::invalid(format!("{other} is not an EC key type"))),
        };
        Self::encode(OID_EC, Some(curve), point)
    }

    /// From a raw 32-byte Ed25519 public key.
    pub fn from_ed25519(raw: &[u8]) -> Result<Self, HsmError> {
        let bytes: [u8; 32] = raw.try_into().map_err(|_| {
            HsmError::invalid(format!("Ed25519 public key is {} bytes, not 32", raw.len()))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| HsmError::invalid(format!("bad Ed25519 public key: {e}")))?;
        Self::encode(OID_ED25519, None, raw)
    }

    fn encode(
        algorithm: ObjectIdentifier,
        curve: Option<ObjectIdentifier>,
        key: &[u8],
    ) -> Result<Self, HsmError> {
        use der::Encode as _;
        let spki = spki::SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: algorithm,
                parameters: curve.map(der::Any::from),
            },
            subject_public_key: der::asn1::BitString::from_bytes(key)
                .map_err(|e| HsmError::invalid(e.to_string()))?,
        };
        let der = spki
            .to_der()
            .map_err(|e| HsmError::invalid(e.to_string()))?;
        Self::from_spki_der(&der)
    }

    /// Parses a PEM `PUBLIC KEY` block.
    pub fn from_pem(pem: &str) -> Result<Self, HsmError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| HsmError::invalid(format!("not a PEM PUBLIC KEY block: {e}")))?;
        Self::from_spki_der(&der)
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The subjectPublicKey BIT STRING contents: the PKCS#1 RSAPublicKey, the uncompressed EC
    /// point, or the raw Ed25519 key.
    pub fn raw_public_key(&self) -> &[u8] {
        &self.raw
    }

    /// The RSA modulus and public exponent, big-endian without leading zeros, for an RSA key.
    pub fn rsa_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let k = rsa::RsaPublicKey::from_public_key_der(&self.spki_der).ok()?;
        Some((k.n().to_bytes_be(), k.e().to_bytes_be()))
    }

    /// PEM (`-----BEGIN PUBLIC KEY-----`), as `openssl pkey -pubin` reads it.
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.spki_der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// JSON Web Key (RFC 7517 / 7518 / 8037).
    pub fn to_jwk(&self) -> Result<serde_json::Value, HsmError> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        Ok(match self.key_type.family() {
            KeyFamily::Rsa => {
                use rsa::pkcs8::DecodePublicKey as _;
                use rsa::traits::PublicKeyParts as _;
                let k = rsa::RsaPublicKey::from_public_key_der(&self.spki_der)
                    .map_err(|e| HsmError::invalid(e.to_string()))?;
                serde_json::json!({
                    "kty": "RSA",
                    "n": b64(&k.n().to_bytes_be()),
                    "e": b64(&k.e().to_bytes_be()),
                })
            }
            KeyFamily::Ec => {
                let point = self.raw_public_key();
                let n = self.key_type.ec_scalar_len().unwrap_or(0);
                if point.len() != 1 + 2 * n || point[0] != 4 {
                    return Err(HsmError::invalid("EC point is not in uncompressed form"));
                }
                let crv = match self.key_type {
                    KeyType::EcP256 => "P-256",
                    KeyType::EcP384 => "P-384",
                    _ => "P-521",
                };
                serde_json::json!({
                    "kty": "EC",
                    "crv": crv,
                    "x": b64(&point[1..1 + n]),
                    "y": b64(&point[1 + n..]),
                })
            }
            KeyFamily::EdDsa => serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64(self.raw_public_key()),
            }),
            KeyFamily::Aes => unreachable!("a PublicKey is never symmetric"),
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, spki={})",
            self.key_type,
            hex::encode(&self.spki_der)
        )
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 public key made with `openssl ecparam -genkey -name prime256v1 | openssl pkey -pubout`.
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvNgv4jFQDfBtN+cc+3zRLGCI3G3U
3aafAi1K04hMGxip693vm70QYkDXlFmEoI4C/c/Yc8H208SX17HhRClfbg==
-----END PUBLIC KEY-----
";

    #[test]
    fn pem_round_trip_and_jwk() {
        let k = PublicKey::from_pem(P256_PEM).unwrap();
        assert_eq!(k.key_type(), KeyType::EcP256);
        assert_eq!(k.to_pem(), P256_PEM);
        let jwk = k.to_jwk().unwrap();
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
    }

    #[test]
    fn built_from_components_equals_parsed() {
        let k = PublicKey::from_pem(P256_PEM).unwrap();
        let again = PublicKey::from_ec_point(KeyType::EcP256, k.raw_public_key()).unwrap();
        assert_eq!(again, k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), k);
        let mut off_curve = k.raw_public_key().to_vec();
        off_curve[10] ^= 1;
        assert!(PublicKey::from_ec_point(KeyType::EcP256, &off_curve).is_err());
        assert!(PublicKey::from_ed25519(&[0u8; 31]).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = PublicKey::from_spki_der(b"nope").unwrap_err();
        assert!(matches!(e, HsmError::InvalidInput { .. }), "{e}");
    }
}
