//! Keys: the templates they are created from, the key files that hold their blobs, and
//! generate / list / get / delete.
//!
//! # Key files
//! A TPM keeps no keys of its own here: `TPM2_Create` returns the key's public area and its
//! private area encrypted under the storage root key, and the blob is useless without that SRK
//! on that TPM. Each key is one file `<id>.pem` in the key directory, in the TSS2 PRIVATE KEY
//! format (see `keyfile.rs`). Files are written with `hsm_core::files::write_atomic` (mode
//! 0600) under a fresh random id, and never overwritten. Deleting a key removes its file; a copy
//! of the file made elsewhere would still load on the same TPM.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsm_core::files::{FileMode, write_atomic};
use hsm_core::{
    GenerateKeyRequest, HsmError, KeyAttributes, KeyFilter, KeyId, KeyInfo, KeyType, KeyUsage,
    PublicKey, Secret,
};
use rand::RngCore as _;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Auth, EccPoint, EccScheme, KeyDerivationFunctionScheme, Private, Public, PublicBuilder,
    PublicEccParameters, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SymmetricDefinitionObject,
};

use crate::config::SrkAlgorithm;
use crate::error::{PROVIDER, to_hsm};
use crate::keyfile::{EXTENSION, KeyFile, Kind, Meta};
use crate::worker::Tpm;

/// The key types hsm-tpm generates.
pub(crate) const KEY_TYPES: &[KeyType] = &[
    KeyType::EcP256,
    KeyType::EcP384,
    KeyType::Rsa2048,
    KeyType::Rsa3072,
];

/// A key as read from its file (or kept in memory, for a session key).
pub(crate) struct KeyRecord {
    pub info: KeyInfo,
    pub public_key: PublicKey,
    pub public: Public,
    pub private: Private,
    /// The handle of the storage key the private area is encrypted under (see
    /// [`crate::keyfile::OWNER`]).
    pub parent: u32,
    /// Whether the key's auth value is empty; if not, it must be configured to use the key.
    pub empty_auth: bool,
}

/// The TCG-standard storage root key template ("TCG TPM v2.0 Provisioning Guidance"):
/// restricted decryption key, AES-128-CFB, SHA-256 name, `noDA`, empty unique field; ECC P-256
/// or RSA-2048. tpm2-openssl and tpm2-tools create the same primary key under the owner
/// hierarchy (key files with parent 0x40000001 load in either).
pub(crate) fn srk_template(alg: SrkAlgorithm) -> Result<Public, HsmError> {
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
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let built = match alg {
        SrkAlgorithm::EccP256 => {
            let params = PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(|e| to_hsm(e, "building the SRK parameters"))?;
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(params)
                .with_ecc_unique_identifier(EccPoint::default())
                .build()
        }
        SrkAlgorithm::Rsa2048 => {
            let params = PublicRsaParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                RsaKeyBits::Rsa2048,
                RsaExponent::default(),
            )
            .build()
            .map_err(|e| to_hsm(e, "building the SRK parameters"))?;
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(params)
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()
        }
    };
    built.map_err(|e| to_hsm(e, "building the SRK template"))
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
        (
            Public::Rsa {
                object_attributes: a1,
                name_hashing_algorithm: n1,
                auth_policy: p1,
                parameters: k1,
                ..
            },
            Public::Rsa {
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
        KeyType::EcP256 | KeyType::EcP384 => {
            let curve = if key_type == KeyType::EcP256 {
                EccCurve::NistP256
            } else {
                EccCurve::NistP384
            };
            // Built directly: tss-esapi's builder refuses a NULL scheme on a signing key, which
            // the TPM accepts (TPM 2.0 Part 2, TPMS_ECC_PARMS) and which lets each signature
            // choose its hash.
            let params = PublicEccParameters::new(
                SymmetricDefinitionObject::Null,
                EccScheme::Null,
                curve,
                KeyDerivationFunctionScheme::Null,
            );
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(params)
                .with_ecc_unique_identifier(EccPoint::default())
                .build()
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 => {
            let bits = if key_type == KeyType::Rsa2048 {
                RsaKeyBits::Rsa2048
            } else {
                RsaKeyBits::Rsa3072
            };
            let params = PublicRsaParametersBuilder::new()
                .with_scheme(RsaScheme::Null)
                .with_key_bits(bits)
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

/// The key type of a TPM public area (for key files without hsm-rs metadata).
pub(crate) fn key_type_of(public: &Public) -> Result<KeyType, HsmError> {
    let unsupported = |what: String| HsmError::Corrupted {
        what: "TPM public area".into(),
        reason: format!("{what}: not a key type hsm-tpm uses"),
    };
    match public {
        Public::Ecc { parameters, .. } => match parameters.ecc_curve() {
            EccCurve::NistP256 => Ok(KeyType::EcP256),
            EccCurve::NistP384 => Ok(KeyType::EcP384),
            other => Err(unsupported(format!("ECC curve {other:?}"))),
        },
        Public::Rsa { parameters, .. } => match parameters.key_bits() {
            RsaKeyBits::Rsa2048 => Ok(KeyType::Rsa2048),
            RsaKeyBits::Rsa3072 => Ok(KeyType::Rsa3072),
            RsaKeyBits::Rsa4096 => Ok(KeyType::Rsa4096),
            other => Err(unsupported(format!("RSA-{other:?}"))),
        },
        _ => Err(unsupported("not an RSA or ECC key".into())),
    }
}

/// What a key may do, from its public area's attributes (for key files without metadata).
fn usage_of(public: &Public) -> KeyUsage {
    let attributes = public.object_attributes();
    let mut usage = KeyUsage::default();
    if attributes.sign_encrypt() {
        usage.sign = true;
        usage.verify = true;
    }
    if attributes.decrypt() && !attributes.restricted() {
        usage.encrypt = true;
        usage.decrypt = true;
    }
    usage
}

/// The SubjectPublicKeyInfo of a TPM public area.
pub(crate) fn public_key_of(key_type: KeyType, public: &Public) -> Result<PublicKey, HsmError> {
    match (key_type, public) {
        (KeyType::EcP256 | KeyType::EcP384, Public::Ecc { unique, .. }) => {
            let len = key_type.ec_scalar_len().unwrap_or(32);
            let mut point = vec![0x04];
            point.extend(left_pad(unique.x().value(), len)?);
            point.extend(left_pad(unique.y().value(), len)?);
            PublicKey::from_ec_point(key_type, &point)
        }
        (
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096,
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
    let file =
        KeyFile::<Meta>::decode(&text, Kind::Loadable).map_err(|reason| bad_file(path, reason))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let meta = match file.meta {
        Some(meta) => meta,
        // Written by another program: named by its file, typed by its public area.
        None => Meta {
            id: stem.clone(),
            label: stem,
            key_type: key_type_of(&file.public).map_err(|e| bad_file(path, e.to_string()))?,
            usage: usage_of(&file.public),
        },
    };
    let public_key = public_key_of(meta.key_type, &file.public)
        .map_err(|e| bad_file(path, format!("public key: {e}")))?;
    // Whether a key may leave (duplication) is the public area's to say, not the metadata's.
    let attributes = KeyAttributes::new(&meta.label, meta.key_type)
        .with_usage(meta.usage)
        .with_extractable(crate::duplicate::is_duplicable(&file.public));
    Ok(Some(KeyRecord {
        info: KeyInfo {
            id: KeyId::with_label(meta.id, meta.label),
            key_type: meta.key_type,
            attributes,
        },
        public_key,
        public: file.public,
        private: file.private,
        parent: file.parent,
        empty_auth: file.empty_auth,
    }))
}

fn write_file(dir: &Path, record: &KeyRecord) -> Result<(), HsmError> {
    let info = &record.info;
    let file = KeyFile {
        kind: Kind::Loadable,
        meta: Some(Meta {
            id: info.id.id.clone(),
            label: info.attributes.label.clone(),
            key_type: info.key_type,
            usage: info.attributes.usage,
        }),
        empty_auth: record.empty_auth,
        parent: record.parent,
        public: record.public.clone(),
        private: record.private.clone(),
    };
    let path = key_path(dir, &info.id.id);
    // write_atomic replaces; a key file is never replaced. Ids are 128 random bits and every
    // write happens on the one worker thread, so this check only guards against the impossible.
    if path.exists() {
        return Err(HsmError::AlreadyExists {
            what: format!("key file {}", path.display()),
        });
    }
    write_atomic(&path, file.encode()?.as_bytes(), FileMode::Private).map_err(|e| {
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
                Ok(Some(record)) => out.push(Arc::new(record)),
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
            Some(r) if r.info.id.id == key.id => Ok(Arc::new(r)),
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
    /// key). With `auth`, the key has that auth value: every use needs it, and the TPM counts
    /// wrong values toward dictionary-attack lockout.
    pub(crate) fn generate(
        &mut self,
        req: &GenerateKeyRequest,
        auth: Option<Secret>,
    ) -> Result<KeyInfo, HsmError> {
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
        let tpm_auth = auth
            .as_ref()
            .map(|a| {
                Auth::try_from(a.expose().to_vec()).map_err(|_| {
                    HsmError::invalid(
                        "a TPM key auth value is at most the name hash's size (32 bytes)",
                    )
                })
            })
            .transpose()?;
        let what = format!("creating {} key {label:?}", req.key_type);
        let created = self.create_under_srk(&what, &template, tpm_auth, None)?;
        let info = self.save(
            label,
            req.key_type,
            attrs.usage,
            attrs.persistent,
            created.out_public,
            created.out_private,
            auth.is_none(),
        )?;
        if let Some(auth) = auth {
            self.key_auths.push((info.id.id.clone(), auth));
        }
        Ok(info)
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
        self.save(label, key_type, usage, persistent, public, private, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn save(
        &mut self,
        label: &str,
        key_type: KeyType,
        usage: KeyUsage,
        persistent: bool,
        public: Public,
        private: Private,
        empty_auth: bool,
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
            parent: self.srk_parent,
            empty_auth,
        };
        if persistent {
            write_file(&self.key_dir, &record)?;
        } else {
            self.session_keys.push(Arc::new(record));
        }
        Ok(info)
    }

    /// Adopts a TSS2 PRIVATE KEY file another program made (tpm2-openssl, tpm2-tss-engine):
    /// checks that this TPM loads it, then writes it to the key directory under a fresh id with
    /// `label`. The key's type and usage come from its public area.
    pub(crate) fn import_key_file(&mut self, label: &str, text: &str) -> Result<KeyInfo, HsmError> {
        let file = KeyFile::<Meta>::decode(text, Kind::Loadable).map_err(|reason| {
            HsmError::InvalidInput {
                reason: format!("not a TSS2 PRIVATE KEY file: {reason}"),
            }
        })?;
        if self
            .all_keys()?
            .iter()
            .any(|r| r.info.attributes.label == label)
        {
            return Err(HsmError::AlreadyExists {
                what: format!("a TPM key labelled {label:?}"),
            });
        }
        let key_type = key_type_of(&file.public)?;
        if !KEY_TYPES.contains(&key_type) {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("{key_type} keys"),
            ));
        }
        let usage = usage_of(&file.public);
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let record = Arc::new(KeyRecord {
            info: KeyInfo {
                id: KeyId::with_label(hex::encode(id), label),
                key_type,
                attributes: KeyAttributes::new(label, key_type)
                    .with_usage(usage)
                    .with_extractable(crate::duplicate::is_duplicable(&file.public)),
            },
            public_key: public_key_of(key_type, &file.public)?,
            public: file.public,
            private: file.private,
            parent: file.parent,
            empty_auth: file.empty_auth,
        });
        if record.empty_auth {
            // Proves the blob belongs under a parent of this TPM before it is kept.
            self.handle_for(&record)?;
            self.unload(&record.info.id.id);
        }
        write_file(&self.key_dir, &record)?;
        Ok(record.info.clone())
    }

    pub(crate) fn key_file(&self, key: &KeyId) -> Result<Option<PathBuf>, HsmError> {
        let record = self.record(key)?;
        if self
            .session_keys
            .iter()
            .any(|r| r.info.id.id == record.info.id.id)
        {
            return Ok(None);
        }
        Ok(Some(key_path(&self.key_dir, &record.info.id.id)))
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
        for alg in [SrkAlgorithm::EccP256, SrkAlgorithm::Rsa2048] {
            let t = srk_template(alg).unwrap();
            assert!(same_srk_template(&t, &t));
        }
        let (ecc, rsa) = (
            srk_template(SrkAlgorithm::EccP256).unwrap(),
            srk_template(SrkAlgorithm::Rsa2048).unwrap(),
        );
        assert!(!same_srk_template(&ecc, &rsa));
    }
}
