//! The vocabulary shared by every provider: keys, their attributes, mechanisms and requests.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::HsmError;

/// Names a key inside one provider.
///
/// `id` is opaque and provider-scoped (a PKCS#11 `CKA_ID` in hex, a KMS key ARN, a TPM key file
/// name); only the provider that issued it interprets it. `label` is the human name, carried along
/// so logs and errors can say which key is meant.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId {
    /// The provider's own identifier.
    pub id: String,
    /// The key's label, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl KeyId {
    /// A key id without a known label.
    pub fn new(id: impl Into<String>) -> Self {
        KeyId {
            id: id.into(),
            label: None,
        }
    }

    /// A key id with its label.
    pub fn with_label(id: impl Into<String>, label: impl Into<String>) -> Self {
        KeyId {
            id: id.into(),
            label: Some(label.into()),
        }
    }

    /// The label if there is one, otherwise the id: what logs and errors show.
    pub fn display_name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "KeyId({l:?}, id={})", self.id),
            None => write!(f, "KeyId(id={})", self.id),
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{l} (id {})", self.id),
            None => write!(f, "id {}", self.id),
        }
    }
}

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name { $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text form used in URIs, the CLI and JSON.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = HsmError;
            fn from_str(s: &str) -> Result<Self, HsmError> {
                match s.to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(HsmError::invalid(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

string_enum! {
    /// The type and size of a key.
    pub enum KeyType {
        /// RSA, 2048-bit modulus.
        Rsa2048 = "rsa-2048",
        /// RSA, 3072-bit modulus.
        Rsa3072 = "rsa-3072",
        /// RSA, 4096-bit modulus.
        Rsa4096 = "rsa-4096",
        /// ECDSA on NIST P-256 (secp256r1).
        EcP256 = "ec-p256",
        /// ECDSA on NIST P-384 (secp384r1).
        EcP384 = "ec-p384",
        /// ECDSA on NIST P-521 (secp521r1).
        EcP521 = "ec-p521",
        /// EdDSA on edwards25519.
        Ed25519 = "ed25519",
        /// AES, 128-bit key.
        Aes128 = "aes-128",
        /// AES, 192-bit key.
        Aes192 = "aes-192",
        /// AES, 256-bit key.
        Aes256 = "aes-256",
    }
}

/// The broad family of a [`KeyType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyFamily {
    /// RSA key pair.
    Rsa,
    /// Elliptic-curve (ECDSA) key pair.
    Ec,
    /// Edwards-curve (EdDSA) key pair.
    EdDsa,
    /// Symmetric AES key.
    Aes,
}

impl KeyType {
    /// The key's family.
    pub fn family(&self) -> KeyFamily {
        match self {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => KeyFamily::Rsa,
            KeyType::EcP256 | KeyType::EcP384 | KeyType::EcP521 => KeyFamily::Ec,
            KeyType::Ed25519 => KeyFamily::EdDsa,
            KeyType::Aes128 | KeyType::Aes192 | KeyType::Aes256 => KeyFamily::Aes,
        }
    }

    /// Whether this is an asymmetric key pair (it has a public key).
    pub fn is_asymmetric(&self) -> bool {
        self.family() != KeyFamily::Aes
    }

    /// Key size in bits (the modulus for RSA, the field for EC, the key for AES).
    pub fn bits(&self) -> u32 {
        match self {
            KeyType::Rsa2048 => 2048,
            KeyType::Rsa3072 => 3072,
            KeyType::Rsa4096 => 4096,
            KeyType::EcP256 | KeyType::Ed25519 | KeyType::Aes256 => 256,
            KeyType::EcP384 => 384,
            KeyType::EcP521 => 521,
            KeyType::Aes128 => 128,
            KeyType::Aes192 => 192,
        }
    }

    /// The length in bytes of one ECDSA scalar (r or s) for EC keys.
    pub fn ec_scalar_len(&self) -> Option<usize> {
        match self {
            KeyType::EcP256 => Some(32),
            KeyType::EcP384 => Some(48),
            KeyType::EcP521 => Some(66),
            _ => None,
        }
    }

    /// The usage a key of this type gets when the request does not say.
    pub fn default_usage(&self) -> KeyUsage {
        match self.family() {
            KeyFamily::Rsa | KeyFamily::Ec | KeyFamily::EdDsa => KeyUsage::SIGN,
            KeyFamily::Aes => KeyUsage::ENCRYPT,
        }
    }
}

string_enum! {
    /// A hash function used by a mechanism.
    pub enum HashAlg {
        /// SHA-1: only for legacy RSA-OAEP (some tokens offer nothing else); never for signing.
        Sha1 = "sha1",
        /// SHA-256.
        Sha256 = "sha256",
        /// SHA-384.
        Sha384 = "sha384",
        /// SHA-512.
        Sha512 = "sha512",
    }
}

impl HashAlg {
    /// Digest length in bytes.
    pub fn output_len(&self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hash `data` in software.
    pub fn digest(&self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// What a key may be used for. Providers enforce it as an HSM does (`CKA_SIGN`, KMS key usage).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyUsage {
    /// Create signatures.
    pub sign: bool,
    /// Verify signatures.
    pub verify: bool,
    /// Encrypt data.
    pub encrypt: bool,
    /// Decrypt data.
    pub decrypt: bool,
    /// Wrap (export) other keys.
    pub wrap: bool,
    /// Unwrap (import) other keys.
    pub unwrap: bool,
    /// Derive other keys.
    pub derive: bool,
}

impl KeyUsage {
    /// Sign and verify.
    pub const SIGN: KeyUsage = KeyUsage {
        sign: true,
        verify: true,
        encrypt: false,
        decrypt: false,
        wrap: false,
        unwrap: false,
        derive: false,
    };
    /// Encrypt and decrypt.
    pub const ENCRYPT: KeyUsage = KeyUsage {
        sign: false,
        verify: false,
        encrypt: true,
        decrypt: true,
        wrap: false,
        unwrap: false,
        derive: false,
    };
    /// Wrap and unwrap other keys.
    pub const WRAP: KeyUsage = KeyUsage {
        sign: false,
        verify: false,
        encrypt: false,
        decrypt: false,
        wrap: true,
        unwrap: true,
        derive: false,
    };

    /// The union of two usages.
    pub const fn union(self, o: KeyUsage) -> KeyUsage {
        KeyUsage {
            sign: self.sign || o.sign,
            verify: self.verify || o.verify,
            encrypt: self.encrypt || o.encrypt,
            decrypt: self.decrypt || o.decrypt,
            wrap: self.wrap || o.wrap,
            unwrap: self.unwrap || o.unwrap,
            derive: self.derive || o.derive,
        }
    }

    /// Whether this usage allows `op`. Operations that are not key uses (generate, list) are
    /// always allowed.
    pub fn allows(&self, op: Operation) -> bool {
        match op {
            Operation::Sign | Operation::SignDigest => self.sign,
            Operation::Verify => self.verify,
            Operation::Encrypt => self.encrypt,
            Operation::Decrypt => self.decrypt,
            Operation::Wrap => self.wrap,
            Operation::Unwrap => self.unwrap,
            Operation::GenerateKey | Operation::Delete => true,
        }
    }

    fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.sign, "sign"),
            (self.verify, "verify"),
            (self.encrypt, "encrypt"),
            (self.decrypt, "decrypt"),
            (self.wrap, "wrap"),
            (self.unwrap, "unwrap"),
            (self.derive, "derive"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

impl fmt::Debug for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUsage({})", self.names().join("|"))
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for KeyUsage {
    type Err = HsmError;
    /// Parses a comma-separated list: `sign,verify,encrypt,decrypt,wrap,unwrap,derive`.
    fn from_str(s: &str) -> Result<Self, HsmError> {
        let mut u = KeyUsage::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "sign" => u.sign = true,
                "verify" => u.verify = true,
                "encrypt" => u.encrypt = true,
                "decrypt" => u.decrypt = true,
                "wrap" => u.wrap = true,
                "unwrap" => u.unwrap = true,
                "derive" => u.derive = true,
                other => {
                    return Err(HsmError::invalid(format!(
                        "unknown key usage {other:?}; expected sign, verify, encrypt, decrypt, wrap, unwrap or derive"
                    )));
                }
            }
        }
        Ok(u)
    }
}

/// The attributes of a key: how it may be used and whether it may leave the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttributes {
    /// The human name of the key.
    pub label: String,
    /// What the key may be used for.
    pub usage: KeyUsage,
    /// Whether the key may be wrapped out of the provider (`CKA_EXTRACTABLE`). Default: false.
    pub extractable: bool,
    /// Whether the key's secret value is never revealed in plaintext (`CKA_SENSITIVE`).
    /// Default: true. Providers never export a sensitive key unwrapped.
    pub sensitive: bool,
    /// Whether the key outlives the session that made it (a PKCS#11 token object, a keystore
    /// record) or disappears when the provider is dropped. Default: true.
    pub persistent: bool,
}

impl KeyAttributes {
    /// Attributes with the safe defaults: non-extractable, sensitive, persistent, and the
    /// usage that fits the key type.
    pub fn new(label: impl Into<String>, key_type: KeyType) -> Self {
        KeyAttributes {
            label: label.into(),
            usage: key_type.default_usage(),
            extractable: false,
            sensitive: true,
            persistent: true,
        }
    }

    /// Sets the usage.
    pub fn with_usage(mut self, usage: KeyUsage) -> Self {
        self.usage = usage;
        self
    }

    /// Sets whether the key may be wrapped out.
    pub fn with_extractable(mut self, extractable: bool) -> Self {
        self.extractable = extractable;
        self
    }

    /// Sets whether the key outlives the session.
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Checks that a key of `key_type` can have these attributes: a non-empty label, and only
    /// usages its family has (no `sign` on an AES key, no `encrypt` on an EC key). No provider
    /// implements `derive` yet, so it is refused too.
    pub fn check_for(&self, key_type: KeyType) -> Result<(), HsmError> {
        if self.label.trim().is_empty() {
            return Err(HsmError::invalid("a key needs a non-empty label"));
        }
        let u = self.usage;
        let bad: &[(bool, &str)] = match key_type.family() {
            KeyFamily::Rsa => &[(u.derive, "derive")],
            KeyFamily::Ec | KeyFamily::EdDsa => &[
                (u.encrypt, "encrypt"),
                (u.decrypt, "decrypt"),
                (u.wrap, "wrap"),
                (u.unwrap, "unwrap"),
                (u.derive, "derive"),
            ],
            KeyFamily::Aes => &[(u.sign, "sign"), (u.verify, "verify"), (u.derive, "derive")],
        };
        match bad.iter().find(|(on, _)| *on) {
            Some((_, name)) => Err(HsmError::invalid(format!(
                "usage {name} is not possible for a key of type {key_type}"
            ))),
            None => Ok(()),
        }
    }
}

/// What a provider knows about one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's identity.
    pub id: KeyId,
    /// Its type.
    pub key_type: KeyType,
    /// Its attributes.
    pub attributes: KeyAttributes,
}

string_enum! {
    /// How ECDSA signatures are encoded.
    pub enum EcdsaFormat {
        /// ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }`: what X.509, OpenSSL and KMS use.
        Der = "der",
        /// Fixed-width big-endian `r || s`: what PKCS#11 `CKM_ECDSA`, JOSE and WebAuthn use.
        Fixed = "fixed",
    }
}

/// The RSA-PSS salt length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaltLen {
    /// The salt is as long as the hash output (the common choice, and the only one many HSMs
    /// and cloud KMSs offer).
    HashLen,
    /// An explicit number of bytes.
    Bytes(u32),
}

/// A cryptographic mechanism: which algorithm, with which fixed parameters.
///
/// Per-call inputs (an IV, AAD, an OAEP label) live in the request, not here, so a mechanism
/// value can be listed in [`Capabilities`] and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "alg", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mechanism {
    /// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2).
    RsaPkcs1v15 {
        /// The hash.
        hash: HashAlg,
    },
    /// RSASSA-PSS (RFC 8017 §8.1) with MGF1 over the same hash.
    RsaPss {
        /// The hash (also used by MGF1).
        hash: HashAlg,
        /// The salt length.
        salt: SaltLen,
    },
    /// RSAES-OAEP (RFC 8017 §7.1), for encryption and for wrapping AES keys.
    RsaOaep {
        /// The label hash.
        hash: HashAlg,
        /// The MGF1 hash.
        mgf1: HashAlg,
    },
    /// ECDSA (FIPS 186-5).
    Ecdsa {
        /// The hash.
        hash: HashAlg,
        /// The signature encoding.
        format: EcdsaFormat,
    },
    /// Pure Ed25519 (RFC 8032); signs messages only, never digests.
    Ed25519,
    /// AES-GCM (NIST SP 800-38D) with a 96-bit IV and a 128-bit tag appended to the ciphertext.
    AesGcm,
    /// A managed key service's own authenticated symmetric encryption (AWS KMS
    /// `SYMMETRIC_DEFAULT`, Google Cloud KMS `GOOGLE_SYMMETRIC_ENCRYPTION`): AES-256-GCM where the
    /// service chooses the IV and the ciphertext is its opaque blob (key version, IV, tag). The
    /// AAD is bound as the service's encryption context. No IV may be given.
    ManagedAead,
    /// AES key wrap (RFC 3394 / `CKM_AES_KEY_WRAP`): input a multiple of 8 bytes.
    AesKeyWrap,
    /// AES key wrap with padding (RFC 5649 / `CKM_AES_KEY_WRAP_PAD` or `_KWP`): any input.
    AesKeyWrapPad,
    /// RSA-AES key wrap (`CKM_RSA_AES_KEY_WRAP`; KMS `RSA_AES_KEY_WRAP_SHA_*`): an ephemeral AES
    /// key wrapped with RSA-OAEP, followed by the target key wrapped with RFC 5649 under it.
    RsaAesKeyWrap {
        /// The OAEP hash (MGF1 uses the same hash).
        hash: HashAlg,
        /// The ephemeral AES key size in bits (128, 192 or 256).
        aes_bits: u32,
    },
}

impl Mechanism {
    /// ECDSA with a DER-encoded signature.
    pub const fn ecdsa(hash: HashAlg) -> Self {
        Mechanism::Ecdsa {
            hash,
            format: EcdsaFormat::Der,
        }
    }

    /// RSA-PSS with salt length equal to the hash output.
    pub const fn rsa_pss(hash: HashAlg) -> Self {
        Mechanism::RsaPss {
            hash,
            salt: SaltLen::HashLen,
        }
    }

    /// RSA-OAEP with MGF1 over the same hash.
    pub const fn rsa_oaep(hash: HashAlg) -> Self {
        Mechanism::RsaOaep { hash, mgf1: hash }
    }

    /// The hash a signing mechanism uses, if any (Ed25519 hashes internally).
    pub fn hash(&self) -> Option<HashAlg> {
        match self {
            Mechanism::RsaPkcs1v15 { hash }
            | Mechanism::RsaPss { hash, .. }
            | Mechanism::RsaOaep { hash, .. }
            | Mechanism::Ecdsa { hash, .. }
            | Mechanism::RsaAesKeyWrap { hash, .. } => Some(*hash),
            _ => None,
        }
    }

    /// Whether this mechanism applies to keys of `family` at all (not whether a provider
    /// implements it).
    pub fn fits(&self, key_type: KeyType) -> bool {
        match self {
            Mechanism::RsaPkcs1v15 { .. }
            | Mechanism::RsaPss { .. }
            | Mechanism::RsaOaep { .. }
            | Mechanism::RsaAesKeyWrap { .. } => key_type.family() == KeyFamily::Rsa,
            Mechanism::Ecdsa { .. } => key_type.family() == KeyFamily::Ec,
            Mechanism::Ed25519 => key_type == KeyType::Ed25519,
            Mechanism::AesGcm
            | Mechanism::ManagedAead
            | Mechanism::AesKeyWrap
            | Mechanism::AesKeyWrapPad => key_type.family() == KeyFamily::Aes,
        }
    }

    /// The operations this mechanism is defined for.
    pub fn operations(&self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Mechanism::RsaPkcs1v15 { .. } | Mechanism::RsaPss { .. } | Mechanism::Ecdsa { .. } => {
                &[Sign, SignDigest, Verify]
            }
            Mechanism::Ed25519 => &[Sign, Verify],
            Mechanism::RsaOaep { .. } => &[Encrypt, Decrypt, Wrap, Unwrap],
            Mechanism::AesGcm | Mechanism::ManagedAead => &[Encrypt, Decrypt],
            Mechanism::AesKeyWrap | Mechanism::AesKeyWrapPad | Mechanism::RsaAesKeyWrap { .. } => {
                &[Wrap, Unwrap]
            }
        }
    }

    /// Every mechanism hsm-rs can name with common parameters: the universe the conformance suite
    /// walks (supported ones are exercised, the rest must say `NotSupported`).
    pub fn catalog() -> Vec<Mechanism> {
        let mut v = Vec::new();
        let sig_hashes = [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
        for h in sig_hashes {
            v.push(Mechanism::RsaPkcs1v15 { hash: h });
            v.push(Mechanism::rsa_pss(h));
            v.push(Mechanism::RsaPss {
                hash: h,
                salt: SaltLen::Bytes(0),
            });
            for format in [EcdsaFormat::Der, EcdsaFormat::Fixed] {
                v.push(Mechanism::Ecdsa { hash: h, format });
            }
        }
        v.push(Mechanism::Ed25519);
        for h in HashAlg::ALL {
            v.push(Mechanism::rsa_oaep(*h));
        }
        v.push(Mechanism::RsaOaep {
            hash: HashAlg::Sha256,
            mgf1: HashAlg::Sha1,
        });
        v.push(Mechanism::AesGcm);
        v.push(Mechanism::ManagedAead);
        v.push(Mechanism::AesKeyWrap);
        v.push(Mechanism::AesKeyWrapPad);
        for h in [HashAlg::Sha1, HashAlg::Sha256] {
            v.push(Mechanism::RsaAesKeyWrap {
                hash: h,
                aes_bits: 256,
            });
        }
        v
    }

    /// The mechanism's short name, as the CLI accepts it (see [`FromStr`]).
    pub fn name(&self) -> String {
        match self {
            Mechanism::RsaPkcs1v15 { hash } => format!("rsa-pkcs1-{hash}"),
            Mechanism::RsaPss {
                hash,
                salt: SaltLen::HashLen,
            } => format!("rsa-pss-{hash}"),
            Mechanism::RsaPss {
                hash,
                salt: SaltLen::Bytes(n),
            } => format!("rsa-pss-{hash}-salt{n}"),
            Mechanism::RsaOaep { hash, mgf1 } if hash == mgf1 => format!("rsa-oaep-{hash}"),
            Mechanism::RsaOaep { hash, mgf1 } => format!("rsa-oaep-{hash}-mgf1-{mgf1}"),
            Mechanism::Ecdsa {
                hash,
                format: EcdsaFormat::Der,
            } => format!("ecdsa-{hash}"),
            Mechanism::Ecdsa {
                hash,
                format: EcdsaFormat::Fixed,
            } => format!("ecdsa-{hash}-fixed"),
            Mechanism::Ed25519 => "ed25519".into(),
            Mechanism::AesGcm => "aes-gcm".into(),
            Mechanism::ManagedAead => "managed-aead".into(),
            Mechanism::AesKeyWrap => "aes-kw".into(),
            Mechanism::AesKeyWrapPad => "aes-kwp".into(),
            Mechanism::RsaAesKeyWrap { hash, aes_bits } => {
                format!("rsa-aes-kw-{hash}-aes{aes_bits}")
            }
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Mechanism {
    type Err = HsmError;

    /// Parses the names [`Mechanism::name`] prints, for example `ecdsa-sha256`,
    /// `ecdsa-sha384-fixed`, `rsa-pss-sha256`, `rsa-pss-sha256-salt0`, `rsa-pkcs1-sha256`,
    /// `rsa-oaep-sha256`, `rsa-oaep-sha256-mgf1-sha1`, `ed25519`, `aes-gcm`, `aes-kw`, `aes-kwp`,
    /// `rsa-aes-kw-sha256-aes256` (the `-aes256` suffix may be left out).
    fn from_str(s: &str) -> Result<Self, HsmError> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || {
            HsmError::invalid(format!(
                "unknown mechanism {s:?}; examples: ecdsa-sha256, ecdsa-sha256-fixed, rsa-pkcs1-sha256, \
                 rsa-pss-sha256, rsa-oaep-sha256, ed25519, aes-gcm, aes-kw, aes-kwp, rsa-aes-kw-sha256"
            ))
        };
        let hash = |t: &str| t.parse::<HashAlg>().map_err(|_| bad());
        let m = match s.as_str() {
            "ed25519" | "eddsa" => Mechanism::Ed25519,
            "aes-gcm" => Mechanism::AesGcm,
            "managed-aead" => Mechanism::ManagedAead,
            "aes-kw" => Mechanism::AesKeyWrap,
            "aes-kwp" => Mechanism::AesKeyWrapPad,
            _ => {
                if let Some(rest) = s.strip_prefix("ecdsa-") {
                    match rest.strip_suffix("-fixed") {
                        Some(h) => Mechanism::Ecdsa {
                            hash: hash(h)?,
                            format: EcdsaFormat::Fixed,
                        },
                        None => Mechanism::ecdsa(hash(rest)?),
                    }
                } else if let Some(h) = s.strip_prefix("rsa-pkcs1-") {
                    Mechanism::RsaPkcs1v15 { hash: hash(h)? }
                } else if let Some(rest) = s.strip_prefix("rsa-pss-") {
                    match rest.split_once("-salt") {
                        Some((h, n)) => Mechanism::RsaPss {
                            hash: hash(h)?,
                            salt: SaltLen::Bytes(n.parse().map_err(|_| bad())?),
                        },
                        None => Mechanism::rsa_pss(hash(rest)?),
                    }
                } else if let Some(rest) = s.strip_prefix("rsa-oaep-") {
                    match rest.split_once("-mgf1-") {
                        Some((h, m)) => Mechanism::RsaOaep {
                            hash: hash(h)?,
                            mgf1: hash(m)?,
                        },
                        None => Mechanism::rsa_oaep(hash(rest)?),
                    }
                } else if let Some(rest) = s.strip_prefix("rsa-aes-kw-") {
                    let (h, bits) = match rest.split_once("-aes") {
                        Some((h, b)) => (h, b.parse().map_err(|_| bad())?),
                        None => (rest, 256),
                    };
                    if ![128, 192, 256].contains(&bits) {
                        return Err(bad());
                    }
                    Mechanism::RsaAesKeyWrap {
                        hash: hash(h)?,
                        aes_bits: bits,
                    }
                } else {
                    return Err(bad());
                }
            }
        };
        Ok(m)
    }
}

string_enum! {
    /// The operations of the [`HsmProvider`](crate::HsmProvider) contract that depend on a key type
    /// or a mechanism.
    pub enum Operation {
        /// Generate a key.
        GenerateKey = "generate-key",
        /// Sign a message.
        Sign = "sign",
        /// Sign a precomputed digest.
        SignDigest = "sign-digest",
        /// Verify a signature.
        Verify = "verify",
        /// Encrypt.
        Encrypt = "encrypt",
        /// Decrypt.
        Decrypt = "decrypt",
        /// Wrap (export) a key under another key.
        Wrap = "wrap",
        /// Unwrap (import) a wrapped key.
        Unwrap = "unwrap",
        /// Delete a key.
        Delete = "delete",
    }
}

/// The data to sign or verify, stated explicitly as a message or a precomputed digest.
#[derive(Clone, Copy)]
pub enum SignInput<'a> {
    /// The whole message; the provider (or the token) hashes it with the mechanism's hash.
    Message(&'a [u8]),
    /// A digest already computed with the mechanism's hash; its length must match.
    Digest(&'a [u8]),
}

impl SignInput<'_> {
    /// The operation this input asks for.
    pub fn operation(&self) -> Operation {
        match self {
            SignInput::Message(_) => Operation::Sign,
            SignInput::Digest(_) => Operation::SignDigest,
        }
    }

    /// Checks the input against the mechanism: a digest must have the hash's length, and
    /// mechanisms without a separate hash (Ed25519) take only messages.
    pub fn check(&self, mechanism: &Mechanism) -> Result<(), HsmError> {
        match (mechanism.hash(), self) {
            (None, SignInput::Digest(_)) => Err(HsmError::invalid(format!(
                "{mechanism} signs the message itself and cannot sign a precomputed digest"
            ))),
            (Some(h), SignInput::Digest(d)) if d.len() != h.output_len() => {
                Err(HsmError::invalid(format!(
                    "digest is {} bytes but {h} produces {}",
                    d.len(),
                    h.output_len()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks the input (see [`check`](Self::check)) and returns the digest to sign, hashing a
    /// message in software if needed. Returns `None` for mechanisms that sign the message itself
    /// (Ed25519).
    pub fn digest_for(&self, mechanism: &Mechanism) -> Result<Option<Vec<u8>>, HsmError> {
        self.check(mechanism)?;
        Ok(match (mechanism.hash(), self) {
            (None, _) => None,
            (Some(h), SignInput::Message(m)) => Some(h.digest(m)),
            (Some(_), SignInput::Digest(d)) => Some(d.to_vec()),
        })
    }
}

impl fmt::Debug for SignInput<'_> {
    // Lengths only: the data may be confidential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignInput::Message(m) => write!(f, "Message({} bytes)", m.len()),
            SignInput::Digest(d) => write!(f, "Digest({} bytes)", d.len()),
        }
    }
}

/// A request to generate a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GenerateKeyRequest {
    /// The key type.
    pub key_type: KeyType,
    /// The key's attributes.
    pub attributes: KeyAttributes,
}

impl GenerateKeyRequest {
    /// A request with safe default attributes (see [`KeyAttributes::new`]).
    pub fn new(label: impl Into<String>, key_type: KeyType) -> Self {
        GenerateKeyRequest {
            key_type,
            attributes: KeyAttributes::new(label, key_type),
        }
    }

    /// Sets the usage.
    pub fn with_usage(mut self, usage: KeyUsage) -> Self {
        self.attributes.usage = usage;
        self
    }

    /// Sets whether the key may be wrapped out.
    pub fn with_extractable(mut self, extractable: bool) -> Self {
        self.attributes.extractable = extractable;
        self
    }

    /// Sets whether the key outlives the session.
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.attributes.persistent = persistent;
        self
    }
}

/// A request to encrypt.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EncryptRequest<'a> {
    /// The plaintext.
    pub plaintext: &'a [u8],
    /// The IV for AES-GCM (12 bytes). `None` lets the provider choose a fresh random IV, which is
    /// returned in [`Ciphertext::iv`]; never reuse an IV with the same key.
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data for AES-GCM.
    pub aad: Option<&'a [u8]>,
    /// The OAEP label for RSA-OAEP.
    pub label: Option<&'a [u8]>,
}

impl<'a> EncryptRequest<'a> {
    /// Encrypt `plaintext` with defaults (random IV, no AAD, no label).
    pub fn new(plaintext: &'a [u8]) -> Self {
        EncryptRequest {
            plaintext,
            ..Default::default()
        }
    }

    /// Sets the IV.
    pub fn with_iv(mut self, iv: &'a [u8]) -> Self {
        self.iv = Some(iv);
        self
    }

    /// Sets the AAD.
    pub fn with_aad(mut self, aad: &'a [u8]) -> Self {
        self.aad = Some(aad);
        self
    }

    /// Sets the OAEP label.
    pub fn with_label(mut self, label: &'a [u8]) -> Self {
        self.label = Some(label);
        self
    }
}

impl fmt::Debug for EncryptRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("plaintext_len", &self.plaintext.len())
            .field("iv", &self.iv.map(hex::encode))
            .field("aad_len", &self.aad.map(<[u8]>::len))
            .field("label_len", &self.label.map(<[u8]>::len))
            .finish()
    }
}

/// The result of encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ciphertext {
    /// The ciphertext; for AES-GCM the 16-byte tag is appended.
    pub data: Vec<u8>,
    /// The IV that was used (AES-GCM), to be passed back to decrypt.
    pub iv: Option<Vec<u8>>,
}

/// A request to decrypt.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct DecryptRequest<'a> {
    /// The ciphertext (for AES-GCM with the tag appended).
    pub ciphertext: &'a [u8],
    /// The IV (AES-GCM).
    pub iv: Option<&'a [u8]>,
    /// The AAD (AES-GCM).
    pub aad: Option<&'a [u8]>,
    /// The OAEP label.
    pub label: Option<&'a [u8]>,
}

impl<'a> DecryptRequest<'a> {
    /// Decrypt `ciphertext`.
    pub fn new(ciphertext: &'a [u8]) -> Self {
        DecryptRequest {
            ciphertext,
            ..Default::default()
        }
    }

    /// Sets the IV.
    pub fn with_iv(mut self, iv: &'a [u8]) -> Self {
        self.iv = Some(iv);
        self
    }

    /// Sets the AAD.
    pub fn with_aad(mut self, aad: &'a [u8]) -> Self {
        self.aad = Some(aad);
        self
    }

    /// Sets the OAEP label.
    pub fn with_label(mut self, label: &'a [u8]) -> Self {
        self.label = Some(label);
        self
    }
}

impl fmt::Debug for DecryptRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptRequest")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("iv", &self.iv.map(hex::encode))
            .field("aad_len", &self.aad.map(<[u8]>::len))
            .finish()
    }
}

/// A request to unwrap (import) a wrapped key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UnwrapKeyRequest<'a> {
    /// The wrapped key bytes.
    pub wrapped: &'a [u8],
    /// The type of the key inside.
    pub key_type: KeyType,
    /// The attributes the unwrapped key gets.
    pub attributes: KeyAttributes,
    /// The public half of a wrapped private key, where the caller knows it. Providers that
    /// cannot derive a public key from an unwrapped private key (a PKCS#11 token holding an EC
    /// or Ed25519 key) need it, and check that it matches the private key before accepting it.
    pub public_key: Option<crate::PublicKey>,
}

impl<'a> UnwrapKeyRequest<'a> {
    /// Unwrap `wrapped` as a key of `key_type` with safe default attributes.
    pub fn new(wrapped: &'a [u8], label: impl Into<String>, key_type: KeyType) -> Self {
        UnwrapKeyRequest {
            wrapped,
            key_type,
            attributes: KeyAttributes::new(label, key_type),
            public_key: None,
        }
    }

    /// Supplies the public half of a wrapped private key.
    pub fn with_public_key(mut self, public_key: crate::PublicKey) -> Self {
        self.public_key = Some(public_key);
        self
    }

    /// Sets the attributes.
    pub fn with_attributes(mut self, attributes: KeyAttributes) -> Self {
        self.attributes = attributes;
        self
    }
}

/// A filter for [`find_keys`](crate::HsmProvider::find_keys). The default matches every key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyFilter {
    /// Only keys with exactly this label.
    pub label: Option<String>,
    /// Only keys of this type.
    pub key_type: Option<KeyType>,
}

impl KeyFilter {
    /// Every key.
    pub fn all() -> Self {
        KeyFilter::default()
    }

    /// Keys with this label.
    pub fn label(label: impl Into<String>) -> Self {
        KeyFilter {
            label: Some(label.into()),
            key_type: None,
        }
    }

    /// Whether `info` matches.
    pub fn matches(&self, info: &KeyInfo) -> bool {
        self.label
            .as_ref()
            .is_none_or(|l| info.attributes.label == *l)
            && self.key_type.is_none_or(|t| info.key_type == t)
    }
}

/// Who made the provider's device and what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProviderInfo {
    /// The provider's name in hsm-rs (`soft`, `pkcs11`, `tpm`, `aws-kms`).
    pub provider: String,
    /// The device or service vendor.
    pub vendor: String,
    /// The model or product.
    pub model: String,
    /// Firmware or library version.
    pub firmware: String,
    /// Serial number, where the device has one.
    pub serial: Option<String>,
}

impl ProviderInfo {
    /// A provider info record.
    pub fn new(
        provider: impl Into<String>,
        vendor: impl Into<String>,
        model: impl Into<String>,
        firmware: impl Into<String>,
    ) -> Self {
        ProviderInfo {
            provider: provider.into(),
            vendor: vendor.into(),
            model: model.into(),
            firmware: firmware.into(),
            serial: None,
        }
    }

    /// Sets the serial number.
    pub fn with_serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }
}

/// One mechanism a provider really supports on one key type, and for which operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismSupport {
    /// The key type.
    pub key_type: KeyType,
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The operations supported with it (a subset of [`Mechanism::operations`]).
    pub operations: Vec<Operation>,
}

/// What a provider really supports: the key types it can generate and the mechanisms it can run
/// on each. Anything absent fails with [`HsmError::NotSupported`]; the conformance suite checks
/// both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Key types this provider can generate.
    pub key_types: Vec<KeyType>,
    /// Key types this provider can import by unwrapping.
    pub unwrap_key_types: Vec<KeyType>,
    /// Supported (key type, mechanism, operations) triples.
    pub mechanisms: Vec<MechanismSupport>,
    /// Whether keys can be generated as extractable at all (cloud KMSs: never).
    pub extractable_keys: bool,
    /// Whether session (non-persistent) keys are supported.
    pub session_keys: bool,
    /// Whether RSA-OAEP takes a label (some tokens accept only the empty label).
    pub oaep_labels: bool,
}

impl Capabilities {
    /// Whether `key_type` can be generated.
    pub fn can_generate(&self, key_type: KeyType) -> bool {
        self.key_types.contains(&key_type)
    }

    /// Whether `op` with `mechanism` on a `key_type` key is supported.
    pub fn supports(&self, key_type: KeyType, mechanism: &Mechanism, op: Operation) -> bool {
        self.mechanisms.iter().any(|m| {
            m.key_type == key_type && m.mechanism == *mechanism && m.operations.contains(&op)
        })
    }

    /// Adds `mechanism` on each of `key_types` for `operations`.
    pub fn add(&mut self, key_types: &[KeyType], mechanism: Mechanism, operations: &[Operation]) {
        for kt in key_types {
            self.mechanisms.push(MechanismSupport {
                key_type: *kt,
                mechanism,
                operations: operations.to_vec(),
            });
        }
    }
}

/// What a provider supports, indexed for the check every operation makes. Built once from the
/// provider's [`Capabilities`].
#[derive(Clone, Debug, Default)]
pub struct SupportIndex(HashSet<(KeyType, Mechanism, Operation)>);

impl SupportIndex {
    /// Indexes `caps`.
    pub fn new(caps: &Capabilities) -> Self {
        SupportIndex(
            caps.mechanisms
                .iter()
                .flat_map(|m| m.operations.iter().map(|op| (m.key_type, m.mechanism, *op)))
                .collect(),
        )
    }

    /// Checks an operation on `key` in the contract's order: the mechanism must fit the key
    /// (`InvalidInput`), be offered for the operation (`NotSupported`), and be allowed by the
    /// key's usage (`PermissionDenied`).
    pub fn check(
        &self,
        provider: &str,
        key: &KeyInfo,
        mechanism: &Mechanism,
        op: Operation,
    ) -> Result<(), HsmError> {
        let kt = key.key_type;
        let id = &key.id;
        if !mechanism.fits(kt) {
            return Err(HsmError::invalid(format!(
                "{mechanism} does not apply to {id}, a {kt} key"
            )));
        }
        if !self.0.contains(&(kt, *mechanism, op)) {
            return Err(HsmError::not_supported(
                provider,
                format!("{op} with {mechanism} on {kt}"),
            ));
        }
        if !key.attributes.usage.allows(op) {
            let op = if op == Operation::SignDigest {
                Operation::Sign
            } else {
                op
            };
            return Err(HsmError::denied(format!(
                "key {id} does not have usage {op}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::catalog() {
            let name = m.name();
            let back: Mechanism = name.parse().unwrap();
            assert_eq!(back, m, "{name}");
        }
        assert!("ecdsa-md5".parse::<Mechanism>().is_err());
        assert!("rsa-aes-kw-sha256-aes100".parse::<Mechanism>().is_err());
    }

    #[test]
    fn key_type_strings() {
        for kt in KeyType::ALL {
            assert_eq!(kt.as_str().parse::<KeyType>().unwrap(), *kt);
        }
        let err = "rsa-1024".parse::<KeyType>().unwrap_err().to_string();
        assert!(err.contains("rsa-2048"), "{err}");
    }

    #[test]
    fn usage_parse() {
        let u: KeyUsage = "sign, decrypt".parse().unwrap();
        assert!(u.sign && u.decrypt && !u.verify);
        assert!("sing".parse::<KeyUsage>().is_err());
    }

    #[test]
    fn digest_input_is_checked() {
        let m = Mechanism::ecdsa(HashAlg::Sha256);
        assert!(SignInput::Digest(&[0; 31]).digest_for(&m).is_err());
        assert_eq!(
            SignInput::Digest(&[7; 32]).digest_for(&m).unwrap(),
            Some(vec![7; 32])
        );
        assert!(
            SignInput::Digest(&[0; 32])
                .digest_for(&Mechanism::Ed25519)
                .is_err()
        );
    }
}
