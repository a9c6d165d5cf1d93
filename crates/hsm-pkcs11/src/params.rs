//! hsm-core mechanisms as PKCS#11 mechanism parameters.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism as CkMechanism, MechanismType};
use hsm_core::{HashAlg, Mechanism, SaltLen};

pub(crate) fn hash_mech(h: HashAlg) -> MechanismType {
    match h {
        HashAlg::Sha256 => MechanismType::SHA256,
        HashAlg::Sha384 => MechanismType::SHA384,
        HashAlg::Sha512 => MechanismType::SHA512,
        _ => MechanismType::SHA1,
    }
}

pub(crate) fn mgf(h: HashAlg) -> PkcsMgfType {
    match h {
        HashAlg::Sha256 => PkcsMgfType::MGF1_SHA256,
        HashAlg::Sha384 => PkcsMgfType::MGF1_SHA384,
        HashAlg::Sha512 => PkcsMgfType::MGF1_SHA512,
        _ => PkcsMgfType::MGF1_SHA1,
    }
}

/// `CKM_RSA_PKCS_PSS` parameters for a digest made with `hash`.
pub(crate) fn pss(hash: HashAlg, salt: SaltLen) -> CkMechanism<'static> {
    let s_len = match salt {
        SaltLen::HashLen => hash.output_len() as u64,
        SaltLen::Bytes(n) => u64::from(n),
    };
    CkMechanism::RsaPkcsPss(PkcsPssParams {
        hash_alg: hash_mech(hash),
        mgf: mgf(hash),
        s_len: s_len.into(),
    })
}

/// `CKM_RSA_PKCS_OAEP` parameters (from an `RsaOaep` or the OAEP part of `RsaAesKeyWrap`).
pub(crate) fn oaep<'a>(mech: &Mechanism, label: Option<&'a [u8]>) -> Option<CkMechanism<'a>> {
    let (hash, mgf1) = match mech {
        Mechanism::RsaOaep { hash, mgf1 } => (*hash, *mgf1),
        Mechanism::RsaAesKeyWrap { hash, .. } => (*hash, *hash),
        _ => return None,
    };
    let source = label.map_or(PkcsOaepSource::empty(), PkcsOaepSource::data_specified);
    Some(CkMechanism::RsaPkcsOaep(PkcsOaepParams::new(
        hash_mech(hash),
        mgf(mgf1),
        source,
    )))
}

/// The DER `DigestInfo` prefix RSASSA-PKCS1-v1_5 puts before the digest (RFC 8017 §9.2).
pub(crate) fn digest_info_prefix(h: HashAlg) -> &'static [u8] {
    match h {
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
    }
}
