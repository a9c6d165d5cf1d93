//! Keys: the templates they are created from, the key files that hold their blobs, and
//! generate / list / get / delete.
//!
//! # Key files
//! A TPM keeps no keys of its own here: `TPM2_Create` returns the key's public area and its
//! private area encrypted under the storage root key, and the blob is useless without that SRK
//! on that TPM. Each key is one file `<id>.tpmkey` in the key directory: JSON with the label,
//! key type, usage, the SRK's name, and both areas (base64 of the marshalled `TPMT_PUBLIC` and of
//! the `TPM2B_PRIVATE` buffer). Files are written with `hsm_core::files::write_atomic` (mode
//! 0600) under a fresh random id, and never overwritten. Deleting a key removes its file; a copy
//! of the file made elsewhere would still load on the same TPM.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hsm_core::files::{FileMode, write_atomic};
use hsm_core::{
    GenerateKeyRequest, HsmError, KeyAttributes, KeyFilter, KeyId, KeyInfo, KeyType, KeyUsage,
    PublicKey,
};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccPoint, EccScheme, KeyDerivationFunctionScheme, Private, Public, PublicBuilder,
    PublicEccParameters, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};

use crate::error::{PROVIDER, to_hsm};
use crate::session::{Params, with_session};
use crate::worker::Tpm;

/// The key types hsm-tpm generates.
pub(crate) const KEY_TYPES: &[KeyType] = &[KeyType::EcP256, KeyType::Rsa2048];

const FORMAT: &str = "hsm-rs-tpm-key/1";
const EXTENSION: &str = "tpmkey";

/// A key as read from its file (or kept in memory, for a session key).
pub(crate) struct KeyRecord {
    pub info: KeyInfo,
    pub public_key: PublicKey,
    pub public: Public,
    pub private: Private,
    /// The name of the SRK the private area is encrypted under.
    pub parent: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    id: String,
    label: String,
    key_type: KeyType,
    usage: KeyUsage,
    /// Hex of the SRK's name.
    parent: String,
    /// Base64 of the marshalled `TPMT_PUBLIC`.
    public: String,
    /// Base64 of the `TPM2B_PRIVATE` buffer.
    private: String,
}

/// The TCG-standard storage root key template ("TCG TPM v2.0 Provisioning Guidance", ECC
/// P-256 SRK): restricted decryption key, AES-128-CFB, SHA-256 name, `noDA`, unique zeroed.
pub(crate) fn srk_template() -> Result<Public, HsmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(|e| to_hsm(e, "building the SRK attributes"))?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| to_hsm(e, "building the SRK parameters"))?;
    let zero = tss_esapi::structures::EccParameter::try_from(vec![0u8; 32])
        .map_err(|e| to_hsm(e, "building the SRK template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
        .build()
        .map_err(|e| to_hsm(e, "building the SRK template"))
}

/// Whether a persistent key's public area is the one [`srk_template`] makes (same type,
/// attributes and parameters; the unique field is the key itself and differs).
pub(crate) fn same_srk_template(public: &Public, template: &Public) -> bool {
    match (public, template) {
        (
            Public::Ecc {
                object_attributes: a1,
                name_hashing_algorithm: n1,
                auth_policy: p1,
                parameters: k1,
                ..
            },
            Public::Ecc {
                object_attributes: a2,
                name_hashing_algorithm: n2,
                auth_policy: p2,
                parameters: k2,
                ..
            },
        ) => a1 == a2 && n1 == n2 && p1 == p2 && k1 == k2,
        _ => false,
    }
}

/// The template of a new key: a signing key, or for RSA with only encryption usages, a
/// decryption key. The scheme is left open (`NULL`), so each signature chooses its own.
pub(crate) fn key_template(key_type: KeyType, usage: KeyUsage) -> Result<Public, HsmError> {
    let signs = usage.sign;
    let decrypts = usage.decrypt || usage.encrypt || usage.wrap || usage.unwrap;
    if signs && decrypts {
        return Err(HsmError::invalid(
            "a TPM key either signs or decrypts, not both: generate one key for each",
        ));
    }
    if !signs && !decrypts {
        return Err(HsmError::invalid(
            "a TPM key needs sign usage (or, for RSA, encrypt/decrypt): there are no \
             verify-only TPM keys; verify with the public key instead",
        ));
    }
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(signs)
        .with_decrypt(decrypts)
        .build()
        .map_err(|e| to_hsm(e, "building key attributes"))?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let public = match key_type {
        KeyType::EcP256 => {
            // Built directly: tss-esapi's builder refuses a NULL scheme on a signing key, which
            // the TPM accepts (TPM 2.0 Part 2, TPMS_ECC_PARMS) and which lets each signature
            // choose its hash.
            let params = PublicEccParameters::new(
                SymmetricDefinitionObject::Null,
                EccScheme::Null,
                EccCurve::NistP256,
                KeyDerivationFunctionScheme::Null,
            );
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(params)
                .with_ecc_unique_identifier(EccPoint::default())
                .build()
        }
        KeyType::Rsa2048 => {
            let params = PublicRsaParametersBuilder::new()
                .with_scheme(RsaScheme::Null)
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(RsaExponent::default())
                .with_is_signing_key(signs)
                .with_is_decryption_key(decrypts)
                .with_restricted(false)
                .build()
                .map_err(|e| to_hsm(e, "building RSA parameters"))?;
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(params)
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()
        }
        other => return Err(HsmError::not_supported(PROVIDER, format!("{other} keys"))),
    };
    public.map_err(|e| to_hsm(e, "building the key template"))
}

/// The SubjectPublicKeyInfo of a TPM public area.
pub(crate) fn public_key_of(key_type: KeyType, public: &Public) -> Result<PublicKey, HsmError> {
    match (key_type, public) {
        (KeyType::EcP256, Public::Ecc { unique, .. }) => {
            let mut point = vec![0x04];
            point.extend(left_pad(unique.x().value(), 32)?);
            point.extend(left_pad(unique.y().value(), 32)?);
            PublicKey::from_ec_point(key_type, &point)
        }
        (
            KeyType::Rsa2048,
            Public::Rsa {
                unique, parameters, ..
            },
        ) => {
            // An exponent of 0 in a TPM public area means the default, 65537.
            let e = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            PublicKey::from_rsa_components(unique.value(), &e.to_be_bytes())
        }
        _ => Err(HsmError::Corrupted {
            what: "TPM public area".into(),
            reason: format!("it does not hold a {key_type} key"),
        }),
    }
}

/// A big-endian number as exactly `len` bytes (the TPM drops leading zeros of EC coordinates
/// and ECDSA scalars).
pub(crate) fn left_pad(bytes: &[u8], len: usize) -> Result<Vec<u8>, HsmError> {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &[],
    };
    if bytes.len() > len {
        return Err(HsmError::backend(
            PROVIDER,
            format!(
                "the TPM returned a {}-byte value where {len} fit",
                bytes.len()
            ),
            std::io::Error::other("value too long"),
        ));
    }
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Key ids are 32 lowercase hex digits; anything else names no key (and never a path).
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.{EXTENSION}"))
}

fn bad_file(path: &Path, reason: impl Into<String>) -> HsmError {
    HsmError::Corrupted {
        what: format!("key file {}", path.display()),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Option<KeyRecord>, HsmError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(HsmError::backend(
                PROVIDER,
                format!("cannot read key file {}", path.display()),
                e,
            ));
        }
    };
    let file: KeyFile =
        serde_json::from_str(&text).map_err(|e| bad_file(path, format!("not a key file: {e}")))?;
    if file.format != FORMAT {
        return Err(bad_file(
            path,
            format!("format {:?}, expected {FORMAT:?}", file.format),
        ));
    }
    let public_bytes = B64
        .decode(&file.public)
        .map_err(|e| bad_file(path, format!("public area: {e}")))?;
    let public = Public::unmarshall(&public_bytes)
        .map_err(|e| bad_file(path, format!("public area: {e}")))?;
    let private_bytes = B64
        .decode(&file.private)
        .map_err(|e| bad_file(path, format!("private area: {e}")))?;
    let private = Private::try_from(private_bytes)
        .map_err(|e| bad_file(path, format!("private area: {e}")))?;
    let parent =
        hex::decode(&file.parent).map_err(|e| bad_file(path, format!("parent name: {e}")))?;
    let public_key = public_key_of(file.key_type, &public)
        .map_err(|e| bad_file(path, format!("public key: {e}")))?;
    let attributes = KeyAttributes::new(&file.label, file.key_type).with_usage(file.usage);
    Ok(Some(KeyRecord {
        info: KeyInfo {
            id: KeyId::with_label(file.id, file.label),
            key_type: file.key_type,
            attributes,
        },
        public_key,
        public,
        private,
        parent,
    }))
}

fn write_file(dir: &Path, record: &KeyRecord) -> Result<(), HsmError> {
    let info = &record.info;
    let file = KeyFile {
        format: FORMAT.into(),
        id: info.id.id.clone(),
        label: info.attributes.label.clone(),
        key_type: info.key_type,
        usage: info.attributes.usage,
        parent: hex::encode(&record.parent),
        public: B64.encode(
            record
                .public
                .marshall()
                .map_err(|e| to_hsm(e, "encoding the public area"))?,
        ),
        private: B64.encode(record.private.value()),
    };
    let path = key_path(dir, &info.id.id);
    // write_atomic replaces; a key file is never replaced. Ids are 128 random bits and every
    // write happens on the one worker thread, so this check only guards against the impossible.
    if path.exists() {
        return Err(HsmError::AlreadyExists {
            what: format!("key file {}", path.display()),
        });
    }
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| HsmError::backend(PROVIDER, "encoding a key file", e))?;
    write_atomic(&path, &json, FileMode::Private).map_err(|e| {
        HsmError::backend(
            PROVIDER,
            format!("cannot write key file {}", path.display()),
            e,
        )
    })
}

impl Tpm {
    /// Every key in the key directory, plus the session keys. A damaged file is skipped with a
    /// warning, so one bad file does not hide the others.
    pub(crate) fn all_keys(&self) -> Result<Vec<Arc<KeyRecord>>, HsmError> {
        let mut out: Vec<Arc<KeyRecord>> = self.session_keys.clone();
        let entries = fs::read_dir(&self.key_dir).map_err(|e| {
            HsmError::backend(
                PROVIDER,
                format!("cannot list the key directory {}", self.key_dir.display()),
                e,
            )
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_key = path.extension().is_some_and(|e| e == EXTENSION)
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(valid_id);
            if !is_key {
                continue;
            }
            match read_file(&path) {
                Ok(Some(record)) => out.push(Arc::new(crate::duplicate::mark_extractable(record))),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = ?e, "skipping a key file"),
            }
        }
        Ok(out)
    }

    /// One key, from the cache of loaded keys, the session keys or its file.
    pub(crate) fn record(&self, key: &KeyId) -> Result<Arc<KeyRecord>, HsmError> {
        if let Some(r) = self.cached_record(&key.id) {
            return Ok(r);
        }
        if let Some(r) = self.session_keys.iter().find(|r| r.info.id.id == key.id) {
            return Ok(Arc::clone(r));
        }
        if !valid_id(&key.id) {
            return Err(HsmError::key_not_found(key));
        }
        match read_file(&key_path(&self.key_dir, &key.id))? {
            Some(r) if r.info.id.id == key.id => {
                Ok(Arc::new(crate::duplicate::mark_extractable(r)))
            }
            Some(_) => Err(bad_file(
                &key_path(&self.key_dir, &key.id),
                "the id inside differs from the file name",
            )),
            None => Err(HsmError::key_not_found(key)),
        }
    }

    pub(crate) fn find(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>, HsmError> {
        Ok(self
            .all_keys()?
            .iter()
            .map(|r| r.info.clone())
            .filter(|info| filter.matches(info))
            .collect())
    }

    /// Creates a key under the SRK and saves its blobs (or keeps them in memory for a session
    /// key).
    pub(crate) fn generate(&mut self, req: &GenerateKeyRequest) -> Result<KeyInfo, HsmError> {
        let attrs = &req.attributes;
        let label = &attrs.label;
        if self
            .all_keys()?
            .iter()
            .any(|r| r.info.attributes.label == *label)
        {
            return Err(HsmError::AlreadyExists {
                what: format!("a TPM key labelled {label:?}"),
            });
        }
        let mut template = key_template(req.key_type, attrs.usage)?;
        if attrs.extractable {
            template = crate::duplicate::duplicable(self, template)?;
        }
        let srk = self.srk;
        let what = format!("creating {} key {label:?}", req.key_type);
        self.make_room();
        let created = self.with_room(&what, |tpm| {
            with_session(tpm, Params::Both, |ctx| {
                ctx.create(srk, template.clone(), None, None, None, None)
            })
        })?;
        self.save_key(
            label,
            req.key_type,
            attrs.usage,
            attrs.persistent,
            created.out_public,
            created.out_private,
        )
    }

    /// Records a key that now exists under the SRK (created, imported or duplicated here):
    /// gives it a fresh id and writes its key file, or keeps it in memory when not
    /// `persistent`. Refuses a label another key has.
    pub(crate) fn save_key(
        &mut self,
        label: &str,
        key_type: KeyType,
        usage: KeyUsage,
        persistent: bool,
        public: Public,
        private: Private,
    ) -> Result<KeyInfo, HsmError> {
        if self
            .all_keys()?
            .iter()
            .any(|r| r.info.attributes.label == label)
        {
            return Err(HsmError::AlreadyExists {
                what: format!("a TPM key labelled {label:?}"),
            });
        }
        let public_key = public_key_of(key_type, &public)?;
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let info = KeyInfo {
            id: KeyId::with_label(hex::encode(id), label),
            key_type,
            attributes: KeyAttributes::new(label, key_type)
                .with_usage(usage)
                .with_persistent(persistent)
                .with_extractable(crate::duplicate::is_duplicable(&public)),
        };
        let record = KeyRecord {
            info: info.clone(),
            public_key,
            public,
            private,
            parent: self.srk_name.clone(),
        };
        if persistent {
            write_file(&self.key_dir, &record)?;
        } else {
            self.session_keys.push(Arc::new(record));
        }
        Ok(info)
    }

    pub(crate) fn delete(&mut self, key: &KeyId) -> Result<(), HsmError> {
        self.unload(&key.id);
        if let Some(pos) = self
            .session_keys
            .iter()
            .position(|r| r.info.id.id == key.id)
        {
            self.session_keys.remove(pos);
            return Ok(());
        }
        if !valid_id(&key.id) {
            return Err(HsmError::key_not_found(key));
        }
        let path = key_path(&self.key_dir, &key.id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(HsmError::key_not_found(key)),
            Err(e) => Err(HsmError::backend(
                PROVIDER,
                format!("cannot remove key file {}", path.display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_name_a_path() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!valid_id("conf-1234-missing"));
    }

    #[test]
    fn left_pad_restores_leading_zeros() {
        assert_eq!(left_pad(&[1, 2], 4).unwrap(), [0, 0, 1, 2]);
        assert_eq!(left_pad(&[0, 0, 0, 1, 2], 4).unwrap(), [0, 0, 1, 2]);
        assert!(left_pad(&[1, 2, 3], 2).is_err());
    }

    #[test]
    fn templates_refuse_what_a_tpm_key_cannot_be() {
        let both = KeyUsage::SIGN.union(KeyUsage::ENCRYPT);
        assert!(key_template(KeyType::Rsa2048, both).is_err());
        let verify_only = KeyUsage {
            verify: true,
            ..KeyUsage::default()
        };
        assert!(matches!(
            key_template(KeyType::EcP256, verify_only),
            Err(HsmError::InvalidInput { .. })
        ));
        key_template(KeyType::EcP256, KeyUsage::SIGN).unwrap();
        assert!(key_template(KeyType::Rsa2048, KeyUsage::ENCRYPT).is_ok());
        assert!(srk_template().is_ok());
    }
}
