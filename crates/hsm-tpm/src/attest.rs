//! Attestation: an attestation key (AK) in the TPM signs statements the TPM itself makes about a
//! key (`TPM2_Certify`) or about its PCRs (`TPM2_Quote`), bound to a verifier's nonce; and the
//! endorsement key certificate the TPM maker (or swtpm_setup) stored in NV memory.
//!
//! # The attestation key
//! An ECC P-256 key under the SRK with `restricted` and `sign` set and the scheme fixed to
//! ECDSA-SHA256 in its template. A restricted signing key signs only what the TPM produced
//! (statements starting with `TPM_GENERATED_VALUE`) or digests the TPM hashed itself, so its
//! signature on a `TPMS_ATTEST` means the TPM made that statement. It is saved like any key (a
//! key file, usage `sign`); the `restricted` attribute in its public area is what marks it, so
//! [`HsmProvider::sign`](hsm_core::HsmProvider::sign) refuses it with `PermissionDenied`.
//!
//! Which AK attests: the one [`TpmBuilder::attestation_key`](crate::TpmBuilder::attestation_key)
//! names, else the only AK in the key directory. With several and none chosen, attesting fails
//! with `InvalidInput` naming them; with none, `KeyNotFound`.
//!
//! # Not done here
//! Nothing proves to a remote verifier that the AK lives in the same TPM as the EK whose
//! certificate comes with the statement: that takes `TPM2_MakeCredential` /
//! `TPM2_ActivateCredential` (credential activation) with the verifier, which is not built yet.
//! A verifier trusts the AK's public key by other means (enrolment).

use std::sync::Arc;

use hsm_core::{
    Attestation, AttestationFormat, HashAlg, HsmError, KeyAttestation, KeyId, KeyInfo, KeyType,
    KeyUsage, Mechanism, async_trait,
};
use tss_esapi::abstraction::AsymmetricAlgorithmSelection as Alg;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Attest, AttestInfo, CapabilityData, Data, EccPoint, EccScheme, HashScheme,
    KeyDerivationFunctionScheme, Public, PublicBuilder, PublicEccParametersBuilder, Signature,
    SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall as _;

use crate::error::{PROVIDER, to_hsm, tpm_kind};
use crate::keys::KeyRecord;
use crate::pcr::{PcrSelection, PcrValues};
use crate::provider::TpmProvider;
use crate::session::{Params, with_session, with_two_sessions};
use crate::worker::Tpm;

/// How an AK signs (fixed in its template): ECDSA P-256 with SHA-256, DER-encoded here.
pub const AK_MECHANISM: Mechanism = Mechanism::ecdsa(HashAlg::Sha256);

/// The longest nonce a TPM takes (`TPM2B_DATA` holds a `TPMT_HA`: at most a SHA-512 digest).
pub const MAX_NONCE_LEN: usize = Data::MAX_SIZE;

/// NV indices of EK certificates (TCG EK Credential Profile 2.0: RSA-2048, ECC P-256, ECC
/// P-384, RSA-3072), in the order [`TpmProvider::ek_certificate`] tries them. swtpm_setup
/// writes the RSA-2048 and the ECC P-384 ones.
pub const EK_CERT_NV_INDICES: &[u32] = &[0x01c0_0002, 0x01c0_000a, 0x01c0_0016, 0x01c0_001c];

/// A PCR quote and the PCR values it covers.
#[derive(Clone, Debug)]
pub struct Quote {
    /// The `TPMS_ATTEST` (type `TPM_ST_ATTEST_QUOTE`) and the AK's DER ECDSA signature; the
    /// certificate chain holds the EK certificate, if the TPM has one.
    pub attestation: Attestation,
    /// The values of the quoted PCRs, read right after the quote (their digest matched the
    /// quote's), for a verifier to judge and to recompute the digest from.
    pub pcrs: PcrValues,
}

/// Whether a public area is an attestation key's: a restricted signing key.
pub(crate) fn is_attestation_key(public: &Public) -> bool {
    let attrs = public.object_attributes();
    attrs.restricted() && attrs.sign_encrypt()
}

/// The AK template: ECC P-256, restricted signing, ECDSA-SHA256 fixed, SHA-256 name.
fn ak_template() -> Result<Public, HsmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(|e| to_hsm(e, "building the attestation key attributes"))?;
    let params = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .build()
        .map_err(|e| to_hsm(e, "building the attestation key parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| to_hsm(e, "building the attestation key template"))
}

#[cfg(test)]
pub(crate) fn ak_template_for_tests() -> Public {
    ak_template().unwrap()
}

/// The nonce as `qualifyingData`: refused when empty (the statement could be replayed) or
/// longer than a TPM takes.
fn nonce_data(nonce: &[u8]) -> Result<Data, HsmError> {
    if nonce.is_empty() {
        return Err(HsmError::invalid(
            "an attestation needs the verifier's nonce (1 to 64 bytes), so that it cannot be \
             replayed",
        ));
    }
    if nonce.len() > MAX_NONCE_LEN {
        return Err(HsmError::invalid(format!(
            "the nonce is {} bytes; a TPM takes at most {MAX_NONCE_LEN} (TPM2B_DATA)",
            nonce.len()
        )));
    }
    Data::try_from(nonce.to_vec()).map_err(|e| to_hsm(e, "preparing the nonce"))
}

/// A failed `TPM2_Certify` or `TPM2_Quote`: a nonce the TPM finds too long (its largest hash is
/// shorter than SHA-512) is bad input; the rest as usual.
fn attest_error(e: tss_esapi::Error, what: &str) -> HsmError {
    if tpm_kind(&e) == Some(Tss2ResponseCodeKind::Size) {
        return HsmError::invalid(format!(
            "{what}: the TPM refused the nonce's size (it takes at most its largest digest)"
        ));
    }
    to_hsm(e, what)
}

impl Tpm {
    fn create_attestation_key(&mut self, label: &str) -> Result<KeyInfo, HsmError> {
        let what = format!("creating attestation key {label:?}");
        let created = self.create_under_srk(&what, &ak_template()?, None, None)?;
        self.save_key(
            label,
            KeyType::EcP256,
            KeyUsage::SIGN,
            true,
            created.out_public,
            created.out_private,
        )
    }

    /// The AK that attests: the one labelled `chosen`, else the only one there is.
    fn attestation_key(&self, chosen: Option<&str>) -> Result<Arc<KeyRecord>, HsmError> {
        let all = self.all_keys()?;
        if let Some(label) = chosen {
            let record = all
                .into_iter()
                .find(|r| r.info.attributes.label == label)
                .ok_or_else(|| HsmError::key_not_found(format!("attestation key {label:?}")))?;
            if !is_attestation_key(&record.public) {
                return Err(HsmError::invalid(format!(
                    "key {label:?} is not an attestation key (make one with \
                     TpmProvider::create_attestation_key)"
                )));
            }
            return Ok(record);
        }
        let mut aks: Vec<_> = all
            .into_iter()
            .filter(|r| is_attestation_key(&r.public))
            .collect();
        match aks.len() {
            0 => Err(HsmError::key_not_found(
                "attestation key (none in the key directory: make one with \
                 TpmProvider::create_attestation_key)",
            )),
            1 => Ok(aks.remove(0)),
            _ => {
                let mut labels: Vec<_> = aks.iter().map(|r| &r.info.attributes.label).collect();
                labels.sort();
                Err(HsmError::invalid(format!(
                    "there are {} attestation keys ({labels:?}): choose one with \
                     TpmBuilder::attestation_key",
                    aks.len()
                )))
            }
        }
    }

    fn certify(
        &mut self,
        ak: &Arc<KeyRecord>,
        key: &Arc<KeyRecord>,
        nonce: &[u8],
    ) -> Result<Attestation, HsmError> {
        let data = nonce_data(nonce)?;
        let (ak_handle, key_handle) = self.handle_pair(ak, key)?;
        let what = format!(
            "certifying key {} with attestation key {}",
            key.info.id, ak.info.id
        );
        // The scheme is the AK's own (fixed in its template), so NULL here.
        let (attest, signature) = with_two_sessions(self, Params::Both, |ctx| {
            ctx.certify(key_handle.into(), ak_handle, data, SignatureScheme::Null)
        })
        .map_err(|e| attest_error(e, &what))?;
        self.signed_statement(AttestationFormat::TpmCertify, &attest, signature)
    }

    fn quote(
        &mut self,
        ak: &Arc<KeyRecord>,
        selection: &PcrSelection,
        nonce: &[u8],
    ) -> Result<Quote, HsmError> {
        if selection.is_empty() {
            return Err(HsmError::invalid("a quote needs at least one PCR to cover"));
        }
        let data = nonce_data(nonce)?;
        let list = selection.to_tpm()?;
        // Read first: a bank that is not active fails here with a clear NotSupported.
        self.read_pcrs(selection)?;
        let ak_handle = self.handle_for(ak)?;
        let what = format!("quoting PCRs with attestation key {}", ak.info.id);
        let (attest, signature) = with_session(self, Params::Both, |ctx| {
            ctx.quote(ak_handle, data, SignatureScheme::Null, list)
        })
        .map_err(|e| attest_error(e, &what))?;
        // The values a verifier gets must be the ones quoted; another client of a shared TPM
        // may extend a PCR between the two commands.
        let pcrs = self.read_pcrs(selection)?;
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(HsmError::backend(
                PROVIDER,
                "TPM2_Quote returned a statement that is not a quote",
                std::io::Error::other("unexpected attestation type"),
            ));
        };
        if info.pcr_digest().value() != pcrs.digest(HashAlg::Sha256) {
            return Err(HsmError::Unavailable {
                reason: "the PCRs changed between the quote and reading them; quote again".into(),
                retryable: true,
                source: None,
            });
        }
        let attestation = self.signed_statement(AttestationFormat::TpmQuote, &attest, signature)?;
        Ok(Quote { attestation, pcrs })
    }

    /// The statement as bytes, the AK's signature as DER, and the EK certificate if any.
    fn signed_statement(
        &mut self,
        format: AttestationFormat,
        attest: &Attest,
        signature: Signature,
    ) -> Result<Attestation, HsmError> {
        let statement = attest
            .marshall()
            .map_err(|e| to_hsm(e, "encoding the TPMS_ATTEST"))?;
        let signature = crate::sign::encode(KeyType::EcP256, &AK_MECHANISM, signature)?;
        let chain = self.ek_certificate()?.into_iter().collect();
        Ok(Attestation::new(format, statement, signature, chain))
    }

    /// The first EK certificate of [`EK_CERT_NV_INDICES`] that is defined, as DER.
    fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, HsmError> {
        // Asked through the handle list first: reading an absent index makes ESYS log errors.
        let (data, _) = self
            .ctx
            .get_capability(CapabilityType::Handles, EK_CERT_NV_INDICES[0], 64)
            .map_err(|e| to_hsm(e, "listing NV indices"))?;
        let CapabilityData::Handles(handles) = data else {
            return Ok(None);
        };
        let defined: Vec<u32> = handles.into_inner().into_iter().map(u32::from).collect();
        let Some(index) = EK_CERT_NV_INDICES
            .iter()
            .copied()
            .find(|i| defined.contains(i))
        else {
            return Ok(None);
        };
        // tss-esapi reads an EK certificate by the EK's algorithm, which names the index.
        let alg = match index {
            0x01c0_0002 => Alg::Rsa(RsaKeyBits::Rsa2048),
            0x01c0_000a => Alg::Ecc(EccCurve::NistP256),
            0x01c0_0016 => Alg::Ecc(EccCurve::NistP384),
            0x01c0_001c => Alg::Rsa(RsaKeyBits::Rsa3072),
            _ => return Ok(None),
        };
        let raw = tss_esapi::abstraction::ek::retrieve_ek_pubcert(&mut self.ctx, alg)
            .map_err(|e| to_hsm(e, &format!("reading the EK certificate at NV {index:#x}")))?;
        der_prefix(&raw)
            .map(|der| Some(der.to_vec()))
            .ok_or_else(|| HsmError::Corrupted {
                what: format!("EK certificate at NV index {index:#x}"),
                reason: "it does not start with a DER SEQUENCE of a length that fits".into(),
            })
    }
}

/// The DER element at the start of `bytes` (some TPMs pad the NV index after the certificate).
fn der_prefix(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&0x30) {
        return None;
    }
    let first = *bytes.get(1)?;
    let (header, len) = match first {
        0..=0x7f => (2, usize::from(first)),
        0x81 => (3, usize::from(*bytes.get(2)?)),
        0x82 => (
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        _ => return None,
    };
    bytes.get(..header + len)
}

impl TpmProvider {
    /// Creates an attestation key labelled `label` under the SRK and saves it like any key
    /// (a key file; usage `sign`, though [`sign`](hsm_core::HsmProvider::sign) refuses it).
    /// `AlreadyExists` if a key has that label.
    pub async fn create_attestation_key(&self, label: &str) -> Result<KeyInfo, HsmError> {
        let label = label.to_owned();
        self.inner
            .worker
            .run(move |tpm| tpm.create_attestation_key(&label))
            .await
    }

    /// The attestation key this provider attests with (see the module docs for how it is
    /// chosen). Its public key, from [`public_key`](hsm_core::HsmProvider::public_key), is what
    /// a verifier checks signatures with.
    pub async fn attestation_key(&self) -> Result<KeyInfo, HsmError> {
        let chosen = self.inner.attestation_key.clone();
        self.inner
            .worker
            .run(move |tpm| Ok(tpm.attestation_key(chosen.as_deref())?.info.clone()))
            .await
    }

    /// The key's TPM public area (the marshalled `TPMT_PUBLIC`): its attributes, policy and
    /// public key. Its name, which [`TPM2_Certify`](hsm_core::KeyAttestation::attest_key)
    /// certifies, is computed from it (see [`crate::verify_attest::tpm_name`]).
    pub async fn public_area(&self, key: &KeyId) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        self.inner
            .worker
            .run(move |tpm| {
                tpm.record(&key)?
                    .public
                    .marshall()
                    .map_err(|e| to_hsm(e, "encoding the public area"))
            })
            .await
    }

    /// Quotes the PCRs of `selection` with the attestation key (`TPM2_Quote`), bound to
    /// `nonce` (1 to [`MAX_NONCE_LEN`] bytes), and reads their values. `InvalidInput` for an
    /// empty selection or a bad nonce; `NotSupported` when the bank is not active.
    pub async fn quote(&self, selection: &PcrSelection, nonce: &[u8]) -> Result<Quote, HsmError> {
        let chosen = self.inner.attestation_key.clone();
        let (selection, nonce) = (selection.clone(), nonce.to_vec());
        self.inner
            .worker
            .run(move |tpm| {
                let ak = tpm.attestation_key(chosen.as_deref())?;
                tpm.quote(&ak, &selection, &nonce)
            })
            .await
    }

    /// The endorsement key certificate (DER) the TPM holds in NV memory: the first of
    /// [`EK_CERT_NV_INDICES`] that is defined (RSA-2048 first), or `None` when the TPM has
    /// none (swtpm has one only when swtpm_setup made it).
    pub async fn ek_certificate(&self) -> Result<Option<Vec<u8>>, HsmError> {
        self.inner.worker.run(|tpm| tpm.ek_certificate()).await
    }
}

#[async_trait]
impl KeyAttestation for TpmProvider {
    /// `TPM2_Certify` of `key` by the attestation key, with `qualifyingData = nonce` (1 to
    /// [`MAX_NONCE_LEN`] bytes, else `InvalidInput`). Returns the marshalled `TPMS_ATTEST`,
    /// the AK's DER ECDSA-SHA256 signature over it, and the EK certificate if the TPM has one.
    /// Check it with [`crate::verify_attest::verify_certify`].
    async fn attest_key(&self, key: &KeyId, nonce: &[u8]) -> Result<Attestation, HsmError> {
        let chosen = self.inner.attestation_key.clone();
        let (key, nonce) = (key.clone(), nonce.to_vec());
        self.inner
            .worker
            .run(move |tpm| {
                nonce_data(&nonce)?;
                let key = tpm.record(&key)?;
                let ak = tpm.attestation_key(chosen.as_deref())?;
                tpm.certify(&ak, &key, &nonce)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ak_template_is_a_restricted_signing_key() {
        let t = ak_template().unwrap();
        assert!(is_attestation_key(&t));
        let attrs = t.object_attributes();
        assert!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin());
        assert!(!attrs.decrypt());
    }

    #[test]
    fn nonces_are_checked() {
        assert!(matches!(
            nonce_data(b""),
            Err(HsmError::InvalidInput { .. })
        ));
        assert!(matches!(
            nonce_data(&[0; 65]),
            Err(HsmError::InvalidInput { .. })
        ));
        nonce_data(&[7; 64]).unwrap();
    }

    #[test]
    fn der_prefix_drops_padding() {
        assert_eq!(
            der_prefix(&[0x30, 2, 1, 2, 0xff, 0xff]),
            Some(&[0x30, 2, 1, 2][..])
        );
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(vec![0; 256]);
        long.extend([0xff; 3]);
        assert_eq!(der_prefix(&long).map(<[u8]>::len), Some(260));
        assert_eq!(der_prefix(&[0x30, 5, 1]), None);
        assert_eq!(der_prefix(&[0x04, 0]), None);
    }
}
