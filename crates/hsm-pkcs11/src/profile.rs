//! Vendor profiles: what differs between PKCS#11 implementations, applied automatically from the
//! token info, and the capabilities that follow from a token's raw mechanism list.
//!
//! Profiles marked [`ProfileSource::TestedHere`] run the whole conformance suite in CI
//! (`cargo xtask test-sims`). The others are written from the vendor's documentation and have
//! not been run against the hardware.

use cryptoki::error::RvError;
use cryptoki_sys::{
    CK_MECHANISM_TYPE, CKM_AES_GCM, CKM_AES_KEY_GEN, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_KWP,
    CKM_AES_KEY_WRAP_PAD, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKM_EDDSA,
    CKM_RSA_PKCS, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS_OAEP, CKM_RSA_PKCS_PSS,
};
use hsm_core::{Capabilities, EcdsaFormat, HashAlg, KeyType, Mechanism, Operation, SaltLen};

use crate::raw::RawModule;

/// Where a profile's facts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileSource {
    /// Run against the real implementation by this project's tests.
    TestedHere,
    /// Written from the vendor's documentation; not run here.
    VendorDocumentation,
}

/// Known differences of one implementation.
#[derive(Debug)]
#[non_exhaustive]
pub struct Profile {
    /// Short name (`softhsm2`, `kryoptic`, `nss`, `aws-cloudhsm`, ...), usable in `x-profile=`.
    pub name: &'static str,
    /// Tested here, or from vendor documentation.
    pub source: ProfileSource,
    /// `CK_TOKEN_INFO.manufacturerID` prefixes that select this profile.
    pub manufacturers: &'static [&'static str],
    /// RSA-OAEP hashes the token accepts (MGF1 always uses the same hash here).
    pub oaep_hashes: &'static [HashAlg],
    /// Whether Ed25519 works when the token lists `CKM_EC_EDWARDS_KEY_PAIR_GEN`.
    pub ed25519: bool,
    /// Whether RSA-PSS accepts salt lengths other than the hash length.
    pub pss_any_salt: bool,
    /// Whether RSA-OAEP accepts a label (`CKZ_DATA_SPECIFIED` with data).
    pub oaep_label: bool,
    /// Whether Ed25519 private keys can be wrapped out and unwrapped in.
    pub wrap_ed25519: bool,
    /// The code the token answers bad data with (a failed AES-GCM tag, key-wrap integrity check
    /// or OAEP padding, a signature that does not verify) when it is not the standard one
    /// (`CKR_ENCRYPTED_DATA_INVALID`, `CKR_WRAPPED_KEY_INVALID`, `CKR_SIGNATURE_INVALID`): such a
    /// failure is bad data, not a broken device, and triggers no recovery.
    pub bad_data_code: Option<RvError>,
    /// The code the token answers an operation on a deleted object's stale handle with, when it
    /// is not `CKR_OBJECT_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`: handles are resolved again.
    pub stale_handle_code: Option<RvError>,
    /// The code the token answers with when its store is busy with another writer (not
    /// `CKR_FUNCTION_CANCELED` / `CKR_CANT_LOCK`): the call is retried after a pause.
    pub busy_code: Option<RvError>,
    /// Whether the token chooses AES-GCM IVs itself and writes them into `CK_GCM_PARAMS.pIv`
    /// (a caller's IV is refused).
    pub token_gcm_iv: bool,
    /// Whether RFC 3394 key wrap (`CKM_AES_KEY_WRAP`) round-trips on this token.
    pub aes_kw: bool,
    /// Whether EC private keys can be unwrapped into the token.
    pub unwrap_ec: bool,
    /// Whether an unwrapped secret key gets its `CKA_VALUE_LEN`.
    pub unwrap_sets_value_len: bool,
    /// Whether an AES unwrap template says `CKA_VALUE_LEN` (NSS wants it; SoftHSM refuses it
    /// with CKR_ATTRIBUTE_READ_ONLY).
    pub unwrap_wants_value_len: bool,
    /// How the user PIN is written for this token.
    pub pin_format: &'static str,
    /// Other notes for operators.
    pub notes: &'static str,
}

const ALL_OAEP: &[HashAlg] = &[
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

/// What a token that follows the standard does: every profile starts from this and says only
/// where its token differs.
const STANDARD: Profile = Profile {
    name: "generic",
    source: ProfileSource::VendorDocumentation,
    manufacturers: &[],
    oaep_hashes: ALL_OAEP,
    ed25519: true,
    pss_any_salt: true,
    oaep_label: true,
    wrap_ed25519: true,
    bad_data_code: None,
    stale_handle_code: None,
    busy_code: None,
    token_gcm_iv: false,
    aes_kw: true,
    unwrap_ec: true,
    unwrap_sets_value_len: true,
    unwrap_wants_value_len: false,
    pin_format: "the user PIN",
    notes: "no known quirks; capabilities come from the mechanism list",
};

/// Every known profile; the last one is the generic default.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "softhsm2",
        source: ProfileSource::TestedHere,
        manufacturers: &["SoftHSM"],
        // SoftHSM 2.6 rejects OAEP with anything but SHA-1 (CKR_ARGUMENTS_BAD), and labels.
        oaep_hashes: &[HashAlg::Sha1],
        oaep_label: false,
        wrap_ed25519: false,
        bad_data_code: Some(RvError::GeneralError),
        unwrap_sets_value_len: false,
        notes: "slot ids change when a token is initialised: select by label or serial; RFC 5649 is \
                CKM_AES_KEY_WRAP_PAD (0x210A); OAEP with SHA-1 only and no label; authentication \
                failures come back as CKR_GENERAL_ERROR; Ed25519 keys cannot be wrapped; unwrapped \
                AES keys get no CKA_VALUE_LEN, so hsm-rs keeps their length in the id's last byte",
        ..STANDARD
    },
    Profile {
        name: "kryoptic",
        source: ProfileSource::TestedHere,
        manufacturers: &["Kryoptic"],
        bad_data_code: Some(RvError::DeviceError),
        // kryoptic 1.5 answers C_SignInit on a deleted key's handle with CKR_GENERAL_ERROR.
        stale_handle_code: Some(RvError::GeneralError),
        // kryoptic keeps its token in SQLite and reports a store locked by another process's
        // write as CKR_DEVICE_MEMORY (seen with two concurrent `pkcs11-tool --keypairgen`).
        busy_code: Some(RvError::DeviceMemory),
        notes: "PKCS#11 3.2; RFC 5649 is CKM_AES_KEY_WRAP_KWP (0x210B); CKR_DEVICE_MEMORY means \
                another process is writing the SQLite store, and is retried",
        ..STANDARD
    },
    Profile {
        name: "nss",
        source: ProfileSource::TestedHere,
        manufacturers: &["Mozilla Foundation"],
        // NSS sometimes fails an RSA verification with CKR_DEVICE_ERROR.
        bad_data_code: Some(RvError::DeviceError),
        // NSS 3.87 cannot unwrap what its own CKM_AES_KEY_WRAP wrapped
        // (CKR_WRAPPED_KEY_INVALID); RFC 5649 works and is used instead.
        aes_kw: false,
        // NSS answers CKR_TEMPLATE_INCOMPLETE to an EC private key unwrap.
        unwrap_ec: false,
        unwrap_wants_value_len: true,
        pin_format: "the NSS database password (empty for a database made with --empty-password)",
        notes: "C_Initialize needs the reserved argument configdir='sql:DIR' ... (x-init-args)",
        ..STANDARD
    },
    Profile {
        name: "aws-cloudhsm",
        manufacturers: &["Marvell Semiconductor", "Cavium"],
        // Client SDK 5 lists RSA, ECDSA and HMAC signing: no EdDSA.
        ed25519: false,
        wrap_ed25519: false,
        // "The HSM does not accept an IV from the application": it writes its own into pIv.
        token_gcm_iv: true,
        pin_format: "<crypto user name>:<password> (Client SDK 5)",
        notes: "the HSM generates AES-GCM IVs (a caller's IV is refused); AES-GCM buffers are at \
                most 16 KiB; no read-only sessions (hsm-rs opens read-write ones); no multi-part \
                hashing or signing (hsm-rs hashes in software and signs in one part); keys are \
                shared by every HSM of the cluster, session objects are not replicated",
        ..STANDARD
    },
    Profile {
        name: "thales-luna",
        manufacturers: &["SafeNet", "Thales", "Gemalto"],
        pin_format: "the partition (crypto officer) password",
        notes: "in FIPS mode the HSM generates AES-GCM IVs; object handles are per-session on HA \
                groups: resolve again on CKR_OBJECT_HANDLE_INVALID",
        ..STANDARD
    },
    Profile {
        name: "entrust-nshield",
        manufacturers: &["nCipher", "Entrust"],
        ed25519: false,
        pin_format: "the card set passphrase (OCS) or the softcard passphrase",
        notes: "keys protected by an operator card set need the card present; module protection \
                needs no login",
        ..STANDARD
    },
    Profile {
        name: "yubihsm2",
        manufacturers: &["Yubico"],
        pin_format: "<4-hex-digit auth key id><password>, e.g. 0001password",
        notes: "no AES-GCM; wrapping uses YubiHSM wrap keys (vendor mechanisms), not AES key wrap",
        ..STANDARD
    },
    STANDARD,
];

/// The profile for a token: forced by name, or found by manufacturer, or generic.
pub fn detect(
    manufacturer: &str,
    forced: Option<&str>,
) -> Result<&'static Profile, hsm_core::HsmError> {
    if let Some(name) = forced {
        return PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
            hsm_core::HsmError::invalid(format!(
                "unknown profile {name:?}; known: {}",
                PROFILES
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        });
    }
    Ok(PROFILES
        .iter()
        .find(|p| p.manufacturers.iter().any(|m| manufacturer.starts_with(m)))
        .unwrap_or(&PROFILES[PROFILES.len() - 1]))
}

/// What the token's raw mechanism list says it can do.
#[derive(Clone, Debug, Default)]
pub(crate) struct Features {
    /// The code of RFC 5649 key wrap (0x210A or 0x210B), if any.
    pub kwp: Option<CK_MECHANISM_TYPE>,
    pub caps: Capabilities,
}

/// Reads the mechanism list and works out the capabilities the profile allows.
pub(crate) fn features(raw: &RawModule, slot: u64, profile: &Profile) -> Features {
    let list = raw.mechanism_list(slot).unwrap_or_default();
    let has = |m: u64| list.contains(&(m as CK_MECHANISM_TYPE));
    // Key size limits (bits for RSA and EC, bytes for AES); a maximum of 0 means none is known.
    let fits = |m: u64, size: u64| {
        raw.mechanism_info(slot, m as CK_MECHANISM_TYPE)
            .map(|i| i.ulMinKeySize <= size && (i.ulMaxKeySize == 0 || size <= i.ulMaxKeySize))
            .unwrap_or(false)
    };
    use KeyType::*;
    use Operation::*;
    let mut c = Capabilities {
        extractable_keys: true,
        session_keys: true,
        oaep_labels: profile.oaep_label,
        ..Default::default()
    };
    let rsa: Vec<KeyType> = if has(CKM_RSA_PKCS_KEY_PAIR_GEN) {
        [Rsa2048, Rsa3072, Rsa4096]
            .into_iter()
            .filter(|k| fits(CKM_RSA_PKCS_KEY_PAIR_GEN, u64::from(k.bits())))
            .collect()
    } else {
        Vec::new()
    };
    let ec: Vec<KeyType> = if has(CKM_EC_KEY_PAIR_GEN) {
        [EcP256, EcP384, EcP521]
            .into_iter()
            .filter(|k| fits(CKM_EC_KEY_PAIR_GEN, u64::from(k.bits())))
            .collect()
    } else {
        Vec::new()
    };
    let ed: Vec<KeyType> = if profile.ed25519 && has(CKM_EC_EDWARDS_KEY_PAIR_GEN) && has(CKM_EDDSA)
    {
        vec![Ed25519]
    } else {
        Vec::new()
    };
    let aes: Vec<KeyType> = if has(CKM_AES_KEY_GEN) {
        [Aes128, Aes192, Aes256]
            .into_iter()
            .filter(|k| fits(CKM_AES_KEY_GEN, u64::from(k.bits() / 8)))
            .collect()
    } else {
        Vec::new()
    };
    c.key_types = [rsa.clone(), ec.clone(), ed.clone(), aes.clone()].concat();
    c.unwrap_key_types = c
        .key_types
        .iter()
        .copied()
        .filter(|k| profile.wrap_ed25519 || *k != Ed25519)
        .filter(|k| profile.unwrap_ec || !matches!(k, EcP256 | EcP384 | EcP521))
        .collect();

    let sig_hashes = [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
    if has(CKM_RSA_PKCS) {
        for h in sig_hashes {
            c.add(
                &rsa,
                Mechanism::RsaPkcs1v15 { hash: h },
                &[Sign, SignDigest, Verify],
            );
        }
    }
    if has(CKM_RSA_PKCS_PSS) {
        for h in sig_hashes {
            c.add(&rsa, Mechanism::rsa_pss(h), &[Sign, SignDigest, Verify]);
            if profile.pss_any_salt {
                let m = Mechanism::RsaPss {
                    hash: h,
                    salt: SaltLen::Bytes(0),
                };
                c.add(&rsa, m, &[Sign, SignDigest, Verify]);
            }
        }
    }
    let kwp = [CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP]
        .into_iter()
        .find(|m| has(*m))
        .map(|m| m as CK_MECHANISM_TYPE);
    if has(CKM_RSA_PKCS_OAEP) {
        for h in profile.oaep_hashes {
            c.add(
                &rsa,
                Mechanism::rsa_oaep(*h),
                &[Encrypt, Decrypt, Wrap, Unwrap],
            );
            if kwp.is_some()
                && aes.contains(&Aes256)
                && matches!(h, HashAlg::Sha1 | HashAlg::Sha256)
            {
                let m = Mechanism::RsaAesKeyWrap {
                    hash: *h,
                    aes_bits: 256,
                };
                c.add(&rsa, m, &[Wrap, Unwrap]);
            }
        }
    }
    if has(CKM_ECDSA) {
        for h in sig_hashes {
            for format in [EcdsaFormat::Der, EcdsaFormat::Fixed] {
                c.add(
                    &ec,
                    Mechanism::Ecdsa { hash: h, format },
                    &[Sign, SignDigest, Verify],
                );
            }
        }
    }
    c.add(&ed, Mechanism::Ed25519, &[Sign, Verify]);
    if has(CKM_AES_GCM) {
        c.add(&aes, Mechanism::AesGcm, &[Encrypt, Decrypt]);
    }
    if has(CKM_AES_KEY_WRAP) && profile.aes_kw {
        c.add(&aes, Mechanism::AesKeyWrap, &[Wrap, Unwrap]);
    }
    if kwp.is_some() {
        c.add(&aes, Mechanism::AesKeyWrapPad, &[Wrap, Unwrap]);
    }
    Features { kwp, caps: c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tested_profiles_keep_their_quirks() {
        let p = |n| detect("", Some(n)).unwrap();
        let soft = p("softhsm2");
        assert_eq!(soft.oaep_hashes, &[HashAlg::Sha1]);
        assert!(!soft.oaep_label && !soft.wrap_ed25519 && !soft.unwrap_sets_value_len);
        assert_eq!(soft.bad_data_code, Some(RvError::GeneralError));
        let kry = p("kryoptic");
        assert_eq!(kry.bad_data_code, Some(RvError::DeviceError));
        assert_eq!(kry.stale_handle_code, Some(RvError::GeneralError));
        let nss = p("nss");
        assert!(!nss.aes_kw && !nss.unwrap_ec && nss.unwrap_wants_value_len);
        assert!(!p("entrust-nshield").ed25519);
        assert_eq!(p("generic").source, ProfileSource::VendorDocumentation);
    }

    #[test]
    fn detection_by_manufacturer_and_by_name() {
        assert_eq!(detect("SoftHSM project", None).unwrap().name, "softhsm2");
        assert_eq!(detect("Mozilla Foundation", None).unwrap().name, "nss");
        assert_eq!(detect("Someone Else", None).unwrap().name, "generic");
        assert_eq!(
            detect("SoftHSM project", Some("yubihsm2")).unwrap().name,
            "yubihsm2"
        );
        assert!(detect("x", Some("nope")).is_err());
    }
}
