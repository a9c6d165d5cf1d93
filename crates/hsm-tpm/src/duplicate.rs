//! Moving keys between TPMs, and into a TPM from software: TPM 2.0 duplication
//! (`TPM2_Duplicate` / `TPM2_Import`, TPM 2.0 Part 1 "Protected Storage" and "Duplication").
//!
//! # Which keys may move
//! A key generated with [`KeyAttributes::extractable`](hsm_core::KeyAttributes) is made
//! *duplicable*: `fixedTPM` and `fixedParent` clear, and an `authPolicy` of
//! `TPM2_PolicyCommandCode(TPM2_CC_Duplicate)`, so the only thing its policy allows is
//! duplication (the TPM requires the DUP role to be authorised by a policy session). That is
//! the TPM's form of "extractable": the key can leave, but only encrypted to another storage
//! key, never in the clear through this API. Every other key is created `fixedTPM`, and the
//! TPM itself refuses to let it leave.
//!
//! What "extractable" means here, plainly: the policy does not name the target, so whoever
//! holds the key file and can use this TPM can duplicate the key toward any storage key they
//! choose, including one they made in software, or (`encryptedDuplication` being clear) toward
//! no parent at all, which the TPM answers with the key in the clear. Setting
//! `encryptedDuplication` would not change that, since a storage key made in software is as
//! good as the clear. Treat a duplicable key like a PKCS#11 key with `CKA_EXTRACTABLE` and no
//! wrap template; binding the target (`PolicyDuplicationSelect`) is not done yet.
//!
//! # The wrapping
//! [`TpmProvider::duplicate`] runs `TPM2_Duplicate` with an *outer wrapper* only: the TPM
//! derives a seed by ECDH (or RSA-OAEP) with the new parent's public key, encrypts the key's
//! sensitive area with AES-CFB and protects it with an HMAC over the ciphertext and the key's
//! name. No inner wrapper is used (`symmetricAlg = NULL`, `encryptedDuplication` clear): its
//! key would have to travel beside the blob, and would add nothing the outer wrapper does not
//! already give.
//!
//! [`TpmProvider::import_software_key`] does the same outer wrap in software toward this TPM's
//! own storage root key (ECDH + KDFe for the seed, KDFa for the AES and HMAC keys), so the
//! private key crosses the TCTI already encrypted to the SRK, whether or not parameter
//! encryption is on. The TPM then checks it exactly as it checks a blob from another TPM.
//!
//! # Why not `wrap_key` / `unwrap_key`
//! The `HsmProvider` contract wraps a key under another key *in the same provider* and outputs
//! PKCS#8 (or raw) bytes. Duplication wraps toward another TPM's storage key, which is not a
//! key of this provider, and its output is a TPM duplication blob no other kind of provider can
//! open. So these are dedicated methods on [`TpmProvider`], and `wrap_key` / `unwrap_key` stay
//! `NotSupported`.

use std::fmt;
use std::sync::Arc;

use aes::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use hsm_core::{
    HsmError, KeyAttributes, KeyId, KeyInfo, KeyType, KeyUsage, PublicKey, Result, Zeroizing,
};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use sha2::{Digest as _, Sha256};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::CommandCode;
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{
    TPMA_OBJECT_FIXEDPARENT, TPMA_OBJECT_FIXEDTPM, TPMA_OBJECT_SENSITIVEDATAORIGIN,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EncryptedSecret, Private, Public, PublicKeyRsa,
    PublicRsaParameters, RsaExponent, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};

use crate::error::{PROVIDER, raw_rc, to_hsm, tpm_kind};
use crate::keys::{KEY_TYPES, KeyRecord, key_template};
use crate::provider::TpmProvider;
use crate::session::{Params, with_session};
use crate::worker::Tpm;

/// `PolicyCommandCode(TPM2_CC_Duplicate)` from a fresh SHA-256 policy session (TPM 2.0 Part 3,
/// TPM2_PolicyCommandCode: `H(zeros || TPM_CC_PolicyCommandCode || TPM_CC_Duplicate)`), the
/// `authPolicy` of every duplicable key.
const DUPLICATION_POLICY: [u8; 32] = [
    0xbe, 0xf5, 0x6b, 0x8c, 0x1c, 0xc8, 0x4e, 0x11, 0xed, 0xd7, 0x17, 0x52, 0x8d, 0x2c, 0xd9, 0x93,
    0x56, 0xbd, 0x2b, 0xbf, 0x8f, 0x01, 0x52, 0x09, 0xc3, 0xf8, 0x4a, 0xee, 0xab, 0xa8, 0xe8, 0xa2,
];

/// The first bytes of a serialised [`DuplicationBlob`].
const BLOB_MAGIC: &[u8; 8] = b"TPMDUP\x00\x01";

/// A key duplicated toward another TPM's storage key: its public area, its private area
/// wrapped for the new parent, and the seed the new parent recovers the wrapping keys from.
/// Only the TPM holding that storage key can import it. [`to_bytes`](Self::to_bytes) and
/// [`from_bytes`](Self::from_bytes) carry it between machines.
#[derive(Clone, PartialEq, Eq)]
pub struct DuplicationBlob {
    public: Public,
    duplicate: Private,
    seed: EncryptedSecret,
}

// The private area is encrypted, but it is still key material: print only what the key is.
impl fmt::Debug for DuplicationBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuplicationBlob")
            .field("key_type", &key_type_of(&self.public).ok())
            .finish_non_exhaustive()
    }
}

impl DuplicationBlob {
    /// The blob as bytes: `TPMDUP\0\x01`, then the key's `TPM2B_PUBLIC`, the duplicate's
    /// `TPM2B_PRIVATE` and the seed's `TPM2B_ENCRYPTED_SECRET`, each a big-endian 16-bit size
    /// and its bytes (the TPM's own encodings).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = BLOB_MAGIC.to_vec();
        out.extend(marshall_public(&self.public)?);
        put_sized(&mut out, self.duplicate.value());
        put_sized(&mut out, self.seed.value());
        Ok(out)
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote. `InvalidInput` if it is not such a
    /// blob; a blob that was changed is only detected by the TPM, on import.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| HsmError::invalid(format!("not a TPM duplication blob: {why}"));
        let mut rest = bytes
            .strip_prefix(BLOB_MAGIC.as_slice())
            .ok_or_else(|| bad("it does not start with the TPMDUP header"))?;
        let public = take_sized(&mut rest).ok_or_else(|| bad("truncated public area"))?;
        let duplicate = take_sized(&mut rest).ok_or_else(|| bad("truncated private area"))?;
        let seed = take_sized(&mut rest).ok_or_else(|| bad("truncated seed"))?;
        if !rest.is_empty() {
            return Err(bad("bytes after the seed"));
        }
        Ok(DuplicationBlob {
            public: Public::unmarshall(public).map_err(|e| bad(&format!("public area: {e}")))?,
            duplicate: Private::try_from(duplicate.to_vec())
                .map_err(|e| bad(&format!("private area: {e}")))?,
            seed: EncryptedSecret::try_from(seed.to_vec())
                .map_err(|e| bad(&format!("seed: {e}")))?,
        })
    }

    /// The type of the key it carries.
    pub fn key_type(&self) -> Result<KeyType> {
        key_type_of(&self.public)
    }

    /// The public key of the key it carries, so a receiver can check what it is about to
    /// import.
    pub fn public_key(&self) -> Result<PublicKey> {
        crate::keys::public_key_of(key_type_of(&self.public)?, &self.public)
    }
}

impl TpmProvider {
    /// This TPM's storage root key as a `TPM2B_PUBLIC` (the format `tpm2_readpublic -o` writes):
    /// what another TPM duplicates a key toward so that this one can import it.
    pub async fn storage_key_public(&self) -> Result<Vec<u8>> {
        self.inner
            .worker
            .run(|tpm| marshall_public(&tpm.srk_public()?))
            .await
    }

    /// Duplicates `key` toward the storage key whose public area is `new_parent` (a
    /// `TPM2B_PUBLIC` or `TPMT_PUBLIC`, e.g. another TPM's
    /// [`storage_key_public`](Self::storage_key_public)).
    ///
    /// # Contract
    /// - The key stays usable here; the blob can be imported only by the TPM holding
    ///   `new_parent`'s private key, with [`import_duplicate`](Self::import_duplicate).
    /// - `PermissionDenied` for a key that is not duplicable (created `fixedTPM`, i.e. without
    ///   `extractable`, or imported from software).
    /// - `InvalidInput` if `new_parent` is not a public area, or the TPM refuses it as a
    ///   storage key.
    pub async fn duplicate(&self, key: &KeyId, new_parent: &[u8]) -> Result<DuplicationBlob> {
        let new_parent = parse_public(new_parent)?;
        let key = key.clone();
        self.inner
            .worker
            .run(move |tpm| {
                let record = tpm.record(&key)?;
                tpm.duplicate_key(&record, new_parent)
            })
            .await
    }

    /// Imports a key another TPM duplicated toward this TPM's storage root key, and records it
    /// under `label` (a persistent key, with the usage its public area allows).
    ///
    /// # Contract
    /// `IntegrityCheckFailed` if the blob was changed or made for another storage key;
    /// `AlreadyExists` if `label` is taken; `NotSupported` for a key type hsm-tpm does not
    /// handle.
    pub async fn import_duplicate(&self, label: &str, blob: &DuplicationBlob) -> Result<KeyInfo> {
        let (label, blob) = (label.to_owned(), blob.clone());
        self.inner
            .worker
            .run(move |tpm| {
                let usage = usage_of(&blob.public);
                tpm.import_blob(&label, usage, &blob)
            })
            .await
    }

    /// Imports a private key made in software, as PKCS#8 `PrivateKeyInfo` DER (P-256 or
    /// RSA-2048), for `usage` (`sign`, or for RSA, `encrypt`/`decrypt`). The key is wrapped in
    /// software for this TPM's storage root key before it is sent, and zeroized after.
    ///
    /// The imported key is not duplicable (it gets no policy) and is marked as not
    /// extractable; its public area says it did not originate in the TPM.
    ///
    /// # Contract
    /// `InvalidInput` if the bytes are not such a key (the error never holds key bytes);
    /// `NotSupported` for other key types or sizes; `AlreadyExists` if `label` is taken.
    pub async fn import_software_key(
        &self,
        label: &str,
        usage: KeyUsage,
        pkcs8_der: Zeroizing<Vec<u8>>,
    ) -> Result<KeyInfo> {
        let label = label.to_owned();
        self.inner
            .worker
            .run(move |tpm| {
                let key = SoftwareKey::from_pkcs8(&pkcs8_der)?;
                drop(pkcs8_der);
                let public = key.public_area(usage)?;
                let sensitive = key.sensitive()?;
                let srk = tpm.srk_public()?;
                let (duplicate, seed) = outer_wrap(&srk, &public, &sensitive)?;
                let blob = DuplicationBlob {
                    public,
                    duplicate,
                    seed,
                };
                tpm.import_blob(&label, usage, &blob)
            })
            .await
    }
}

/// The template of a duplicable key: `template` with `fixedTPM` and `fixedParent` cleared and
/// the duplication policy (computed by the TPM in a trial session) as its `authPolicy`.
pub(crate) fn duplicable(tpm: &mut Tpm, template: Public) -> Result<Public> {
    let policy = tpm.duplication_policy()?;
    // A TPM that computes another digest would make keys nothing here recognises as
    // duplicable; better to stop now.
    if policy.value() != DUPLICATION_POLICY {
        return Err(HsmError::backend(
            PROVIDER,
            "the TPM computed an unexpected PolicyCommandCode(Duplicate) digest",
            std::io::Error::other("policy digest mismatch"),
        ));
    }
    Ok(movable(
        template,
        TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT,
        policy,
    ))
}

/// Whether a key may be duplicated: it is not bound to its TPM or parent, and its policy is
/// the duplication policy (keys imported from software have none, so nothing can satisfy the
/// DUP role).
pub(crate) fn is_duplicable(public: &Public) -> bool {
    let attributes = public.object_attributes();
    !attributes.fixed_tpm()
        && !attributes.fixed_parent()
        && public.auth_policy().value() == DUPLICATION_POLICY
}

impl Tpm {
    /// The SRK's public area.
    fn srk_public(&mut self) -> Result<Public> {
        let srk = self.srk;
        let (public, _, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.read_public(srk))
            .map_err(|e| to_hsm(e, "reading the storage root key"))?;
        Ok(public)
    }

    /// `PolicyCommandCode(TPM2_CC_Duplicate)`, as the TPM computes it in a trial session.
    fn duplication_policy(&mut self) -> Result<Digest> {
        let what = "computing the duplication policy";
        let session = self.start_policy_session(SessionType::Trial, false, what)?;
        let digest = self.ctx.execute_without_session(|ctx| {
            ctx.policy_command_code(session, CommandCode::Duplicate)?;
            ctx.policy_get_digest(session)
        });
        self.flush_policy_session(session);
        digest.map_err(|e| to_hsm(e, what))
    }

    fn duplicate_key(
        &mut self,
        record: &Arc<KeyRecord>,
        new_parent: Public,
    ) -> Result<DuplicationBlob> {
        let id = &record.info.id;
        let attributes = record.public.object_attributes();
        if attributes.fixed_tpm() || attributes.fixed_parent() {
            return Err(HsmError::denied(format!(
                "key {id} was created fixedTPM: it can never leave this TPM (only keys generated \
                 with extractable = true are duplicable)"
            )));
        }
        if !is_duplicable(&record.public) {
            return Err(HsmError::denied(format!(
                "key {id} has no duplication policy, so the TPM cannot authorise its \
                 duplication (keys imported from software are not duplicable)"
            )));
        }
        // The new parent first, in the slot the cache keeps free: it is not a cached key, and
        // loading the key after it lets the cache make room around it.
        self.make_room();
        let parent = self
            .ctx
            .execute_without_session(|ctx| ctx.load_external_public(new_parent, Hierarchy::Null))
            .map_err(|e| refused_input(e, "the new parent's public area"))?;
        let result = self.duplicate_under(record, parent);
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(parent)) {
            tracing::warn!(error = %e, "flushing the new parent's public area failed");
        }
        result
    }

    fn duplicate_under(
        &mut self,
        record: &Arc<KeyRecord>,
        parent: KeyHandle,
    ) -> Result<DuplicationBlob> {
        let what = format!("duplicating {}", record.info.id);
        let handle = self.handle_for(record)?;
        let session = self.start_policy_session(SessionType::Policy, false, &what)?;
        // continueSession is set, so the session outlives the command whether it succeeds or
        // fails, and is flushed here in both cases.
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .build();
        let duplicated = self
            .ctx
            .tr_sess_set_attributes(AuthSession::from(session), attributes, mask)
            .and_then(|()| {
                self.ctx.execute_without_session(|ctx| {
                    ctx.policy_command_code(session, CommandCode::Duplicate)
                })
            })
            .and_then(|()| {
                self.ctx
                    .execute_with_session(Some(AuthSession::from(session)), |ctx| {
                        ctx.duplicate(
                            handle.into(),
                            parent.into(),
                            None,
                            SymmetricDefinitionObject::Null,
                        )
                    })
            });
        self.flush_policy_session(session);
        let (_, duplicate, seed) = duplicated.map_err(|e| refused_input(e, &what))?;
        Ok(DuplicationBlob {
            public: record.public.clone(),
            duplicate,
            seed,
        })
    }

    /// `TPM2_Import` under the SRK, then records the key.
    fn import_blob(
        &mut self,
        label: &str,
        usage: KeyUsage,
        blob: &DuplicationBlob,
    ) -> Result<KeyInfo> {
        let key_type = key_type_of(&blob.public)?;
        KeyAttributes::new(label, key_type)
            .with_usage(usage)
            .check_for(key_type)?;
        let srk = self.srk;
        let (public, duplicate, seed) = (
            blob.public.clone(),
            blob.duplicate.clone(),
            blob.seed.clone(),
        );
        let what = format!("importing {key_type} key {label:?}");
        let private = with_session(self, Params::Both, |ctx| {
            ctx.import(
                srk.into(),
                None,
                public,
                duplicate,
                seed,
                SymmetricDefinitionObject::Null,
            )
        })
        .map_err(|e| match tpm_kind(&e) {
            Some(Tss2ResponseCodeKind::Integrity) => HsmError::IntegrityCheckFailed {
                reason: format!(
                    "{what}: the blob fails its integrity check: it was changed, or it was made \
                     for another TPM's storage key"
                ),
            },
            _ => refused_input(e, &what),
        })?;
        self.save_key(label, key_type, usage, true, blob.public.clone(), private)
    }
}

/// A TPM answer about a caller's input (a parameter, handle or value the TPM refused) as
/// `InvalidInput`; anything else as `to_hsm` says.
fn refused_input(e: tss_esapi::Error, what: &str) -> HsmError {
    let format_one = matches!(&e, tss_esapi::Error::Tss2Error(rc)
        if raw_rc(rc).is_some_and(|raw| raw >> 16 == 0 && raw & 0x80 != 0));
    if format_one {
        let err = to_hsm(e, what);
        return HsmError::invalid(format!("the TPM refused {what}: {err}"));
    }
    to_hsm(e, what)
}

/// `public` with the attribute bits in `clear` cleared and `policy` as its `authPolicy`.
fn movable(public: Public, clear: u32, policy: Digest) -> Public {
    let attrs = |a: tss_esapi::attributes::ObjectAttributes| {
        tss_esapi::attributes::ObjectAttributes::from(u32::from(a) & !clear)
    };
    match public {
        Public::Ecc {
            object_attributes,
            name_hashing_algorithm,
            parameters,
            unique,
            ..
        } => Public::Ecc {
            object_attributes: attrs(object_attributes),
            name_hashing_algorithm,
            auth_policy: policy,
            parameters,
            unique,
        },
        Public::Rsa {
            object_attributes,
            name_hashing_algorithm,
            parameters,
            unique,
            ..
        } => Public::Rsa {
            object_attributes: attrs(object_attributes),
            name_hashing_algorithm,
            auth_policy: policy,
            parameters,
            unique,
        },
        other => other,
    }
}

/// Which hsm-rs key type a public area holds.
fn key_type_of(public: &Public) -> Result<KeyType> {
    let key_type = match public {
        Public::Ecc { parameters, .. } if parameters.ecc_curve() == EccCurve::NistP256 => {
            KeyType::EcP256
        }
        Public::Rsa { parameters, .. } if parameters.key_bits() == RsaKeyBits::Rsa2048 => {
            KeyType::Rsa2048
        }
        _ => {
            return Err(HsmError::not_supported(
                PROVIDER,
                "importing this kind of key (hsm-tpm handles ECC P-256 and RSA-2048)",
            ));
        }
    };
    if !KEY_TYPES.contains(&key_type) {
        return Err(HsmError::not_supported(
            PROVIDER,
            format!("{key_type} keys"),
        ));
    }
    Ok(key_type)
}

/// The usage a public area allows.
fn usage_of(public: &Public) -> KeyUsage {
    if public.object_attributes().sign_encrypt() {
        KeyUsage::SIGN
    } else {
        KeyUsage::ENCRYPT
    }
}

fn marshall_public(public: &Public) -> Result<Vec<u8>> {
    let body = public
        .marshall()
        .map_err(|e| to_hsm(e, "encoding a public area"))?;
    let mut out = Vec::with_capacity(body.len() + 2);
    put_sized(&mut out, &body);
    Ok(out)
}

/// A public area as `TPM2B_PUBLIC` (size first) or bare `TPMT_PUBLIC`. A `TPMT_PUBLIC` starts
/// with its type (0x0001 RSA, 0x0023 ECC), never with the size of what follows, so the two
/// cannot be confused.
fn parse_public(bytes: &[u8]) -> Result<Public> {
    let body = match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    };
    Public::unmarshall(body)
        .map_err(|e| HsmError::invalid(format!("the new parent is not a TPM public area: {e}")))
}

fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) {
    // TPM2B sizes are 16-bit; every buffer here is bounded far below that by its TPM type.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let [hi, lo, tail @ ..] = *rest else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let (value, tail) = (tail.get(..len)?, &tail[len..]);
    *rest = tail;
    Some(value)
}

/// A private key made in software.
enum SoftwareKey {
    P256(p256::SecretKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl SoftwareKey {
    fn from_pkcs8(der: &[u8]) -> Result<SoftwareKey> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(SoftwareKey::P256(key));
        }
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Ok(SoftwareKey::Rsa(Box::new(key)));
        }
        Err(HsmError::invalid(
            "the key to import is not a PKCS#8 DER P-256 or RSA private key",
        ))
    }

    /// The public area the key gets in the TPM: the template of a generated key of the same
    /// type, not bound to the TPM or a parent (the TPM imports nothing else), not marked as
    /// made by the TPM, and with no policy.
    fn public_area(&self, usage: KeyUsage) -> Result<Public> {
        use rsa::traits::PublicKeyParts as _;
        let key_type = match self {
            SoftwareKey::P256(_) => KeyType::EcP256,
            SoftwareKey::Rsa(key) if key.size() == 256 => KeyType::Rsa2048,
            SoftwareKey::Rsa(key) => {
                return Err(HsmError::not_supported(
                    PROVIDER,
                    format!("importing RSA-{} keys", key.size() * 8),
                ));
            }
        };
        let clear =
            TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN;
        let template = movable(key_template(key_type, usage)?, clear, Digest::default());
        let bad = |e| to_hsm(e, "building the imported key's public area");
        Ok(match (template, self) {
            (
                Public::Ecc {
                    object_attributes,
                    name_hashing_algorithm,
                    auth_policy,
                    parameters,
                    ..
                },
                SoftwareKey::P256(key),
            ) => {
                let point = key.public_key().to_encoded_point(false);
                let coordinate = |c: Option<&p256::FieldBytes>| {
                    EccParameter::try_from(c.map(|c| c.to_vec()).unwrap_or_default())
                };
                Public::Ecc {
                    object_attributes,
                    name_hashing_algorithm,
                    auth_policy,
                    parameters,
                    unique: EccPoint::new(
                        coordinate(point.x()).map_err(bad)?,
                        coordinate(point.y()).map_err(bad)?,
                    ),
                }
            }
            (
                Public::Rsa {
                    object_attributes,
                    name_hashing_algorithm,
                    auth_policy,
                    parameters,
                    ..
                },
                SoftwareKey::Rsa(key),
            ) => {
                let e = match key.e().to_bytes_be().as_slice() {
                    bytes @ [_, ..] if bytes.len() <= 4 => {
                        bytes.iter().fold(0u32, |e, b| (e << 8) | u32::from(*b))
                    }
                    _ => {
                        return Err(HsmError::invalid(
                            "the RSA key's public exponent does not fit 32 bits",
                        ));
                    }
                };
                // 0 is how a TPM spells the default exponent 65537.
                let exponent = RsaExponent::create(if e == 65537 { 0 } else { e }).map_err(bad)?;
                let parameters = PublicRsaParameters::new(
                    parameters.symmetric_definition_object(),
                    parameters.rsa_scheme(),
                    parameters.key_bits(),
                    exponent,
                );
                Public::Rsa {
                    object_attributes,
                    name_hashing_algorithm,
                    auth_policy,
                    parameters,
                    unique: PublicKeyRsa::try_from(key.n().to_bytes_be()).map_err(bad)?,
                }
            }
            _ => {
                return Err(HsmError::backend(
                    PROVIDER,
                    "the key template does not match the imported key",
                    std::io::Error::other("template mismatch"),
                ));
            }
        })
    }

    /// The key's `TPM2B_SENSITIVE` (TPM 2.0 Part 2, TPMT_SENSITIVE): type, an empty auth
    /// value, a random obfuscation value as long as the name hash, and the private part (the
    /// scalar for ECC, the first prime for RSA).
    fn sensitive(&self) -> Result<Zeroizing<Vec<u8>>> {
        use rand::RngCore as _;
        use rsa::traits::PrivateKeyParts as _;
        let (alg, secret): (u16, Zeroizing<Vec<u8>>) = match self {
            SoftwareKey::P256(key) => {
                let scalar = Zeroizing::new(key.to_bytes());
                (0x0023, Zeroizing::new(scalar.to_vec()))
            }
            SoftwareKey::Rsa(key) => {
                let [p, _q] = key.primes() else {
                    return Err(HsmError::invalid(
                        "the RSA key has more than two primes, which a TPM cannot hold",
                    ));
                };
                (0x0001, Zeroizing::new(p.to_bytes_be()))
            }
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(seed.as_mut());
        let mut body = Zeroizing::new(Vec::with_capacity(8 + 32 + secret.len()));
        body.extend_from_slice(&alg.to_be_bytes());
        put_sized(&mut body, &[]);
        put_sized(&mut body, seed.as_ref());
        put_sized(&mut body, &secret);
        let mut sensitive = Zeroizing::new(Vec::with_capacity(body.len() + 2));
        put_sized(&mut sensitive, &body);
        Ok(sensitive)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The outer duplication wrapper toward an ECC P-256 storage key, as `TPM2_Duplicate`
/// computes it (TPM 2.0 Part 1, "Outer Duplication Wrapper" and Annex C "ECDH"):
///
/// - an ephemeral key `Q_e`; `Z` = the x coordinate of ECDH(`Q_e`, parent);
/// - `seed = KDFe(SHA-256, Z, "DUPLICATE", Q_e.x, parent.x, 256)`; the encrypted seed is
///   `Q_e` as a `TPMS_ECC_POINT`;
/// - `symKey = KDFa(SHA-256, seed, "STORAGE", name, "", 128)`: AES-128-CFB, zero IV, over
///   the `TPM2B_SENSITIVE`;
/// - `HMACkey = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)`; the duplicate is
///   `TPM2B_DIGEST(HMAC(HMACkey, ciphertext || name)) || ciphertext`.
fn outer_wrap(
    parent: &Public,
    object: &Public,
    sensitive: &[u8],
) -> Result<(Private, EncryptedSecret)> {
    let Public::Ecc {
        name_hashing_algorithm: HashingAlgorithm::Sha256,
        parameters,
        unique,
        ..
    } = parent
    else {
        return Err(HsmError::not_supported(
            PROVIDER,
            "importing under a storage key that is not ECC with a SHA-256 name",
        ));
    };
    if parameters.ecc_curve() != EccCurve::NistP256
        || parameters.symmetric_definition_object() != SymmetricDefinitionObject::AES_128_CFB
    {
        return Err(HsmError::not_supported(
            PROVIDER,
            "importing under a storage key that is not P-256 with AES-128-CFB",
        ));
    }
    let parent_x = unique.x().value();
    let mut point = vec![0x04];
    point.extend(crate::keys::left_pad(parent_x, 32)?);
    point.extend(crate::keys::left_pad(unique.y().value(), 32)?);
    let parent_key = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| HsmError::invalid("the storage key's public point is not on P-256"))?;

    let ephemeral = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
    let ephemeral_point = ephemeral.public_key().to_encoded_point(false);
    let (Some(ex), Some(ey)) = (ephemeral_point.x(), ephemeral_point.y()) else {
        return Err(HsmError::invalid(
            "the ephemeral P-256 point is the identity",
        ));
    };
    let z = ephemeral.diffie_hellman(&parent_key);
    let seed = kdfe(z.raw_secret_bytes(), b"DUPLICATE", ex, parent_x, 256);

    let name = object_name(object)?;
    let sym_key = kdfa(&seed, b"STORAGE", &name, b"", 128);
    // Plaintext until the next line encrypts it in place.
    let mut ciphertext = Zeroizing::new(sensitive.to_vec());
    cfb_mode::Encryptor::<aes::Aes128>::new(sym_key.as_slice().into(), &[0u8; 16].into())
        .encrypt(&mut ciphertext);
    let hmac_key = kdfa(&seed, b"INTEGRITY", b"", b"", 256);
    let mut mac = HmacSha256::new_from_slice(&hmac_key).expect("HMAC takes a key of any length");
    mac.update(&ciphertext);
    mac.update(&name);
    let mut duplicate = Vec::with_capacity(34 + ciphertext.len());
    put_sized(&mut duplicate, &mac.finalize().into_bytes());
    duplicate.extend_from_slice(&ciphertext);

    let mut encrypted_seed = Vec::with_capacity(68);
    put_sized(&mut encrypted_seed, ex);
    put_sized(&mut encrypted_seed, ey);
    let bad = |e| to_hsm(e, "encoding the wrapped key");
    Ok((
        Private::try_from(duplicate).map_err(bad)?,
        EncryptedSecret::try_from(encrypted_seed).map_err(bad)?,
    ))
}

/// An object's name: its name algorithm (SHA-256, `0x000B`) and the hash of its public area.
fn object_name(public: &Public) -> Result<Vec<u8>> {
    if public.name_hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(HsmError::not_supported(
            PROVIDER,
            "keys whose name hash is not SHA-256",
        ));
    }
    let body = public
        .marshall()
        .map_err(|e| to_hsm(e, "encoding a public area"))?;
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(&body));
    Ok(name)
}

/// KDFa with HMAC-SHA-256 (TPM 2.0 Part 1, 11.4.10.2; SP 800-108 counter mode): the label
/// is followed by its terminating zero, and the output length in bits closes each block.
fn kdfa(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let len = bits.div_ceil(8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter = 1u32;
    while out.len() < len {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// KDFe with SHA-256 (TPM 2.0 Part 1, 11.4.10.3; SP 800-56A concatenation KDF).
fn kdfe(z: &[u8], label: &[u8], party_u: &[u8], party_v: &[u8], bits: u32) -> Zeroizing<Vec<u8>> {
    let len = bits.div_ceil(8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter = 1u32;
    while out.len() < len {
        let block = Sha256::new()
            .chain_update(counter.to_be_bytes())
            .chain_update(z)
            .chain_update(label)
            .chain_update([0])
            .chain_update(party_u)
            .chain_update(party_v)
            .finalize();
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duplication_policy_is_policy_command_code_duplicate() {
        // The TPM's own trial session is checked against it each time a duplicable key is made.
        let expected = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(tss_esapi::constants::tss::TPM2_CC_PolicyCommandCode.to_be_bytes())
            .chain_update(tss_esapi::constants::tss::TPM2_CC_Duplicate.to_be_bytes())
            .finalize();
        assert_eq!(expected[..], DUPLICATION_POLICY);
    }

    #[test]
    fn blobs_round_trip_and_bad_bytes_are_refused() {
        assert!(DuplicationBlob::from_bytes(b"nope").is_err());
        assert!(DuplicationBlob::from_bytes(b"TPMDUP\x00\x01\x00\x05ab").is_err());
        let mut rest: &[u8] = &[0, 2, 7, 8, 9];
        assert_eq!(take_sized(&mut rest), Some(&[7u8, 8][..]));
        assert_eq!(rest, [9]);
        assert_eq!(take_sized(&mut rest), None);
    }

    #[test]
    fn kdfs_give_the_asked_length() {
        assert_eq!(kdfa(b"k", b"STORAGE", b"n", b"", 128).len(), 16);
        assert_eq!(kdfa(b"k", b"X", b"", b"", 384).len(), 48);
        assert_eq!(kdfe(b"z", b"DUPLICATE", b"u", b"v", 256).len(), 32);
        // Labels are separated from the context by their zero octet.
        assert_ne!(
            *kdfa(b"k", b"AB", b"C", b"", 256),
            *kdfa(b"k", b"A", b"BC", b"", 256)
        );
    }
}
