//! Checking TPM attestations in software, with no TPM: what a verifier (a server that handed
//! out the nonce) runs on an [`Attestation`] from [`KeyAttestation::attest_key`] or
//! [`TpmProvider::quote`].
//!
//! The verifier must already trust the attestation key's public key (see `attest.rs`: binding
//! the AK to an EK certificate is not built yet). Both functions check, in this order, and fail
//! with `IntegrityCheckFailed` whose reason names the check, `TPM attestation check failed
//! (<check>): ...`:
//! 1. `signature`: the AK's ECDSA-SHA256 signature over the statement bytes verifies (RustCrypto,
//!    through [`hsm_core::verify::verify_signature`]);
//! 2. `magic`: the statement starts with `TPM_GENERATED_VALUE` (0xff544347), which a TPM puts
//!    only in statements it made itself (a restricted key never signs data that starts so);
//! 3. `type`: `TPM_ST_ATTEST_CERTIFY` or `TPM_ST_ATTEST_QUOTE`, as expected;
//! 4. `nonce`: `extraData` is the verifier's nonce (else the statement is a replay or someone
//!    else's);
//! 5. certify: `name`: the certified name is the name of the public area the verifier was given
//!    (`nameAlg || H_nameAlg(TPMT_PUBLIC)`), so the statement is about that key;
//!    quote: `pcr-selection`: the quoted PCRs are the given values' PCRs, and `pcr-digest`: the
//!    quoted digest is SHA-256 over the given values in index order.
//!
//! A statement that is not a well-formed `TPMS_ATTEST` fails with `Corrupted`; a wrong kind of
//! attestation or AK key type with `InvalidInput`.
//!
//! [`KeyAttestation::attest_key`]: hsm_core::KeyAttestation::attest_key
//! [`TpmProvider::quote`]: crate::TpmProvider::quote

use hsm_core::{Attestation, AttestationFormat, HashAlg, HsmError, KeyType, PublicKey, SignInput};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Attest, AttestInfo, Public};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};

use crate::attest::AK_MECHANISM;
use crate::pcr::{PcrSelection, PcrValues};

/// The first four bytes of every statement a TPM makes (`TPM_GENERATED_VALUE`, "\xffTCG").
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const ST_ATTEST_CERTIFY: u16 = 0x8017;
const ST_ATTEST_QUOTE: u16 = 0x8018;

/// What a verified statement says besides what was checked: the TPM's clock and firmware, for
/// a verifier's own policy (a reset count that went back, a firmware it distrusts).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedStatement {
    /// Milliseconds the TPM has been powered, roughly, since it was made or cleared.
    pub clock: u64,
    /// TPM resets (power cycles) so far.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether the clock has not gone back since it was last reported.
    pub safe: bool,
    /// The TPM maker's firmware version.
    pub firmware_version: u64,
    /// The AK's qualified name (`qualifiedSigner`).
    pub qualified_signer: Vec<u8>,
}

/// Checks a `TPM2_Certify` attestation of the key whose TPM public area (the marshalled
/// `TPMT_PUBLIC`, from [`TpmProvider::public_area`](crate::TpmProvider::public_area)) is
/// `certified_public_area`, made by the AK whose public key is `ak` for `nonce`.
pub fn verify_certify(
    attestation: &Attestation,
    ak: &PublicKey,
    nonce: &[u8],
    certified_public_area: &[u8],
) -> Result<VerifiedStatement, HsmError> {
    let attest = check_statement(
        attestation,
        AttestationFormat::TpmCertify,
        ST_ATTEST_CERTIFY,
        ak,
        nonce,
    )?;
    let AttestInfo::Certify { info } = attest.attested() else {
        return Err(failed("type", "the statement holds no certify information"));
    };
    if info.name().value() != tpm_name(certified_public_area)? {
        return Err(failed(
            "name",
            "the statement certifies another key than the public area given",
        ));
    }
    Ok(summary(&attest))
}

/// Checks a `TPM2_Quote` attestation made by the AK whose public key is `ak` for `nonce`, over
/// the PCR values `pcrs` (from [`Quote::pcrs`](crate::Quote::pcrs), which the verifier then
/// judges against the values it expects).
pub fn verify_quote(
    attestation: &Attestation,
    ak: &PublicKey,
    nonce: &[u8],
    pcrs: &PcrValues,
) -> Result<VerifiedStatement, HsmError> {
    let attest = check_statement(
        attestation,
        AttestationFormat::TpmQuote,
        ST_ATTEST_QUOTE,
        ak,
        nonce,
    )?;
    let AttestInfo::Quote { info } = attest.attested() else {
        return Err(failed("type", "the statement holds no quote information"));
    };
    let quoted = info.pcr_selection().get_selections();
    let same_selection = match quoted {
        [one] => {
            let indices: Vec<u8> = one
                .selected()
                .into_iter()
                .map(|slot| u32::from(slot).trailing_zeros() as u8)
                .collect();
            bank_of(one.hashing_algorithm())
                .and_then(|bank| PcrSelection::new(bank, &indices).ok())
                .is_some_and(|s| s == *pcrs.selection())
        }
        _ => false,
    };
    if !same_selection {
        return Err(failed(
            "pcr-selection",
            "the quote covers other PCRs than the values given",
        ));
    }
    // The quote's digest uses the signing scheme's hash: SHA-256 for hsm-tpm's AKs.
    if info.pcr_digest().value() != pcrs.digest(HashAlg::Sha256) {
        return Err(failed(
            "pcr-digest",
            "the quoted PCR digest differs from the digest of the values given",
        ));
    }
    Ok(summary(&attest))
}

/// The TPM name of an object from its public area (a marshalled `TPMT_PUBLIC`):
/// `nameAlg || H_nameAlg(public area)`. `InvalidInput` when the bytes are not a public area.
pub fn tpm_name(public_area: &[u8]) -> Result<Vec<u8>, HsmError> {
    let bad = |why: &str| HsmError::invalid(format!("not a TPM public area (TPMT_PUBLIC): {why}"));
    let public = Public::unmarshall(public_area).map_err(|e| bad(&e.to_string()))?;
    // The name is over these exact bytes, so they must be the whole, canonical structure.
    if public.marshall().ok().as_deref() != Some(public_area) {
        return Err(bad("trailing or non-canonical bytes"));
    }
    let hash = bank_of(public.name_hashing_algorithm())
        .ok_or_else(|| bad("its name algorithm is not SHA-1 or SHA-2"))?;
    let mut name = public_area[2..4].to_vec();
    name.extend(hash.digest(public_area));
    Ok(name)
}

/// The checks both kinds share (signature, magic, type, nonce) and the parsed statement.
fn check_statement(
    attestation: &Attestation,
    format: AttestationFormat,
    st: u16,
    ak: &PublicKey,
    nonce: &[u8],
) -> Result<Attest, HsmError> {
    if attestation.format != format {
        return Err(HsmError::invalid(format!(
            "a {:?} attestation, where {format:?} was expected",
            attestation.format
        )));
    }
    if ak.key_type() != KeyType::EcP256 {
        return Err(HsmError::invalid(format!(
            "an hsm-tpm attestation key is ECC P-256, not {}",
            ak.key_type()
        )));
    }
    let statement = &attestation.statement;
    let signed = hsm_core::verify::verify_signature(
        ak,
        &AK_MECHANISM,
        SignInput::Message(statement),
        &attestation.signature,
    )?;
    if !signed {
        return Err(failed(
            "signature",
            "the signature does not verify with the attestation key: the statement was \
             altered, or another key signed it",
        ));
    }
    if statement.get(..4) != Some(&TPM_GENERATED_VALUE.to_be_bytes()[..]) {
        return Err(failed(
            "magic",
            "the statement does not start with TPM_GENERATED_VALUE: the TPM did not make it",
        ));
    }
    let found = statement
        .get(4..6)
        .map(|t| u16::from_be_bytes([t[0], t[1]]));
    if found != Some(st) {
        return Err(failed(
            "type",
            &format!(
                "the statement's type is {:#06x}, expected {st:#06x}",
                found.unwrap_or(0)
            ),
        ));
    }
    let corrupted = |why: String| HsmError::Corrupted {
        what: "TPMS_ATTEST statement".into(),
        reason: why,
    };
    let attest = Attest::unmarshall(statement).map_err(|e| corrupted(e.to_string()))?;
    if attest.marshall().ok().as_ref() != Some(statement) {
        return Err(corrupted("trailing or non-canonical bytes".into()));
    }
    if attest.extra_data().value() != nonce {
        return Err(failed(
            "nonce",
            "the statement's extraData is not the expected nonce: a replayed or foreign \
             statement",
        ));
    }
    Ok(attest)
}

fn summary(attest: &Attest) -> VerifiedStatement {
    let clock = attest.clock_info();
    VerifiedStatement {
        clock: clock.clock(),
        reset_count: clock.reset_count(),
        restart_count: clock.restart_count(),
        safe: clock.safe(),
        firmware_version: attest.firmware_version(),
        qualified_signer: attest.qualified_signer().value().to_vec(),
    }
}

fn bank_of(alg: HashingAlgorithm) -> Option<HashAlg> {
    match alg {
        HashingAlgorithm::Sha1 => Some(HashAlg::Sha1),
        HashingAlgorithm::Sha256 => Some(HashAlg::Sha256),
        HashingAlgorithm::Sha384 => Some(HashAlg::Sha384),
        HashingAlgorithm::Sha512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

fn failed(check: &str, why: &str) -> HsmError {
    HsmError::IntegrityCheckFailed {
        reason: format!("TPM attestation check failed ({check}): {why}"),
    }
}

#[cfg(test)]
mod tests {
    //! Statements built byte by byte (TPM 2.0 Part 2, TPMS_ATTEST) and signed with a software
    //! P-256 key, so each check can be made to fail alone. Statements made by swtpm are checked
    //! in `tests/attest.rs`.
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};

    const NONCE: &[u8] = b"verifier nonce 0123456789abcdef";

    fn ak(seed: u8) -> (SigningKey, PublicKey) {
        let key = SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let public = PublicKey::from_ec_point(KeyType::EcP256, point.as_bytes()).unwrap();
        (key, public)
    }

    fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend((bytes.len() as u16).to_be_bytes());
        out.extend(bytes);
    }

    /// `TPMS_ATTEST` up to (not including) the `attested` union.
    fn header(st: u16, nonce: &[u8]) -> Vec<u8> {
        let mut s = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        s.extend(st.to_be_bytes());
        tpm2b(&mut s, &[0x00, 0x0b, 0x11, 0x22]); // qualifiedSigner (contents unchecked)
        tpm2b(&mut s, nonce);
        s.extend(1234u64.to_be_bytes()); // clock
        s.extend(5u32.to_be_bytes()); // resetCount
        s.extend(0u32.to_be_bytes()); // restartCount
        s.push(1); // safe
        s.extend(0x2019_1023u64.to_be_bytes()); // firmwareVersion
        s
    }

    fn certify_statement(nonce: &[u8], name: &[u8]) -> Vec<u8> {
        let mut s = header(ST_ATTEST_CERTIFY, nonce);
        tpm2b(&mut s, name); // name
        tpm2b(&mut s, name); // qualifiedName (unchecked)
        s
    }

    fn quote_statement(nonce: &[u8], bitmap: [u8; 3], digest: &[u8]) -> Vec<u8> {
        let mut s = header(ST_ATTEST_QUOTE, nonce);
        s.extend(1u32.to_be_bytes()); // one TPMS_PCR_SELECTION
        s.extend(0x000bu16.to_be_bytes()); // SHA-256 bank
        s.push(3);
        s.extend(bitmap);
        tpm2b(&mut s, digest);
        s
    }

    fn signed(format: AttestationFormat, key: &SigningKey, statement: Vec<u8>) -> Attestation {
        let sig: Signature = key.sign(&statement);
        Attestation::new(format, statement, sig.to_der().as_bytes().to_vec(), vec![])
    }

    fn public_area() -> Vec<u8> {
        crate::attest::ak_template_for_tests().marshall().unwrap()
    }

    fn check_failed(result: Result<VerifiedStatement, HsmError>, check: &str) {
        match result {
            Err(HsmError::IntegrityCheckFailed { reason }) => {
                assert!(reason.contains(&format!("({check})")), "{reason}")
            }
            other => panic!("expected the {check} check to fail, got {other:?}"),
        }
    }

    #[test]
    fn names_are_computed_from_the_public_area() {
        let area = public_area();
        let name = tpm_name(&area).unwrap();
        assert_eq!(name[..2], [0x00, 0x0b]);
        assert_eq!(name[2..], HashAlg::Sha256.digest(&area)[..]);
        let mut longer = area.clone();
        longer.push(0);
        assert!(matches!(
            tpm_name(&longer),
            Err(HsmError::InvalidInput { .. })
        ));
        assert!(matches!(
            tpm_name(&area[..10]),
            Err(HsmError::InvalidInput { .. })
        ));
    }

    #[test]
    fn certify_checks_fail_one_by_one() {
        let (key, public) = ak(1);
        let area = public_area();
        let name = tpm_name(&area).unwrap();
        let good = signed(
            AttestationFormat::TpmCertify,
            &key,
            certify_statement(NONCE, &name),
        );
        let ok = verify_certify(&good, &public, NONCE, &area).unwrap();
        assert_eq!((ok.clock, ok.reset_count, ok.safe), (1234, 5, true));

        let mut tampered = good.clone();
        tampered.statement[20] ^= 1;
        check_failed(
            verify_certify(&tampered, &public, NONCE, &area),
            "signature",
        );
        let (_, other_ak) = ak(2);
        check_failed(verify_certify(&good, &other_ak, NONCE, &area), "signature");
        check_failed(
            verify_certify(&good, &public, b"another nonce", &area),
            "nonce",
        );

        let mut magic = certify_statement(NONCE, &name);
        magic[0] = 0;
        let magic = signed(AttestationFormat::TpmCertify, &key, magic);
        check_failed(verify_certify(&magic, &public, NONCE, &area), "magic");

        let mut other_name = name.clone();
        other_name[5] ^= 1;
        let other_key = signed(
            AttestationFormat::TpmCertify,
            &key,
            certify_statement(NONCE, &other_name),
        );
        check_failed(verify_certify(&other_key, &public, NONCE, &area), "name");

        let quote = signed(
            AttestationFormat::TpmCertify,
            &key,
            quote_statement(NONCE, [1, 0, 0], &[0; 32]),
        );
        check_failed(verify_certify(&quote, &public, NONCE, &area), "type");

        let mut trailing = certify_statement(NONCE, &name);
        trailing.push(0);
        let trailing = signed(AttestationFormat::TpmCertify, &key, trailing);
        assert!(matches!(
            verify_certify(&trailing, &public, NONCE, &area),
            Err(HsmError::Corrupted { .. })
        ));
        let as_quote = Attestation::new(
            AttestationFormat::TpmQuote,
            good.statement.clone(),
            good.signature.clone(),
            vec![],
        );
        assert!(matches!(
            verify_certify(&as_quote, &public, NONCE, &area),
            Err(HsmError::InvalidInput { .. })
        ));
    }

    #[test]
    fn quote_checks_fail_one_by_one() {
        let (key, public) = ak(3);
        let selection = PcrSelection::sha256(&[0, 16]).unwrap();
        let pcrs = PcrValues::new(selection, vec![vec![0xaa; 32], vec![0xbb; 32]]).unwrap();
        let digest = pcrs.digest(HashAlg::Sha256);
        // PCRs 0 and 16: bit 0 of the first octet, bit 0 of the third.
        let good = signed(
            AttestationFormat::TpmQuote,
            &key,
            quote_statement(NONCE, [1, 0, 1], &digest),
        );
        verify_quote(&good, &public, NONCE, &pcrs).unwrap();

        let fewer = signed(
            AttestationFormat::TpmQuote,
            &key,
            quote_statement(NONCE, [1, 0, 0], &digest),
        );
        check_failed(verify_quote(&fewer, &public, NONCE, &pcrs), "pcr-selection");
        let other_values = PcrValues::new(
            pcrs.selection().clone(),
            vec![vec![0xaa; 32], vec![0xbc; 32]],
        )
        .unwrap();
        check_failed(
            verify_quote(&good, &public, NONCE, &other_values),
            "pcr-digest",
        );
        check_failed(verify_quote(&good, &public, b"nonce", &pcrs), "nonce");
        let area = public_area();
        let certify = signed(
            AttestationFormat::TpmQuote,
            &key,
            certify_statement(NONCE, &tpm_name(&area).unwrap()),
        );
        check_failed(verify_quote(&certify, &public, NONCE, &pcrs), "type");
    }
}
