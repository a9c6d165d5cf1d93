//! Attestation against swtpm: an attestation key certifies keys (`TPM2_Certify`) and quotes
//! PCRs (`TPM2_Quote`); the statements are checked by `hsm_tpm::verify_attest` (RustCrypto) and,
//! for a quote, by tpm2-tools' `tpm2_checkquote`; each kind of forgery fails with its own check.
//! A second test manufactures its own TPM with swtpm_setup and reads its EK certificate.
//!
//! The shared swtpm serves one connection at a time: everything that uses it is one test.

use hsm_core::{
    AttestationFormat, GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyType, Mechanism,
    PublicKey, SignInput,
};
use hsm_tpm::verify_attest::{VerifiedStatement, verify_certify, verify_quote};
use hsm_tpm::{PcrSelection, TpmBuilder, TpmProvider};

mod common;
use common::{OwnTpm, on_path, swtpm_bin, tcti};

const NONCE: &[u8] = b"fresh verifier nonce, 32 bytes!!";

async fn connect(tcti: &str, dir: &std::path::Path, ak: Option<&str>) -> TpmProvider {
    let mut b = TpmBuilder::new(dir).tcti(tcti).unwrap();
    if let Some(label) = ak {
        b = b.attestation_key(label);
    }
    b.build()
        .await
        .unwrap_or_else(|e| panic!("connecting to swtpm at {tcti}: {e:?}"))
}

/// Asserts that verification failed in the check named `check`.
fn failed_check(result: Result<VerifiedStatement, HsmError>, check: &str) {
    match result {
        Err(HsmError::IntegrityCheckFailed { reason }) => {
            assert!(reason.contains(&format!("({check})")), "{reason}")
        }
        other => panic!("expected the {check} check to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_swtpm() {
    let Some(tcti) = tcti() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tpm = connect(&tcti, dir.path(), None).await;
    let attestation = tpm.attestation().expect("hsm-tpm offers attestation");

    let key = tpm
        .generate_key(&GenerateKeyRequest::new("app-key", KeyType::EcP256))
        .await
        .unwrap();
    let err = attestation.attest_key(&key.id, NONCE).await.unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");

    let ak = tpm.create_attestation_key("ak-1").await.unwrap();
    assert_eq!(tpm.attestation_key().await.unwrap().id, ak.id);
    let ak_public = tpm.public_key(&ak.id).await.unwrap();
    let err = tpm
        .sign(
            &ak.id,
            &Mechanism::ecdsa(HashAlg::Sha256),
            SignInput::Message(b"x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HsmError::PermissionDenied { reason } if reason.contains("attestation key")),
        "{err:?}"
    );

    // A valid certify verifies against the key's public area, and only against it.
    let area = tpm.public_area(&key.id).await.unwrap();
    let certified = attestation.attest_key(&key.id, NONCE).await.unwrap();
    assert_eq!(certified.format, AttestationFormat::TpmCertify);
    assert!(
        certified.certificate_chain.is_empty(),
        "the shared swtpm has no EK certificate"
    );
    let statement = verify_certify(&certified, &ak_public, NONCE, &area).unwrap();
    assert!(statement.safe);

    let mut tampered = certified.clone();
    let last = tampered.statement.len() - 1;
    tampered.statement[last] ^= 0x01;
    failed_check(
        verify_certify(&tampered, &ak_public, NONCE, &area),
        "signature",
    );
    failed_check(
        verify_certify(&certified, &ak_public, b"another nonce", &area),
        "nonce",
    );
    let other = tpm
        .generate_key(&GenerateKeyRequest::new("other-key", KeyType::EcP256))
        .await
        .unwrap();
    let other_area = tpm.public_area(&other.id).await.unwrap();
    failed_check(
        verify_certify(&certified, &ak_public, NONCE, &other_area),
        "name",
    );
    let other_public = tpm.public_key(&other.id).await.unwrap();
    failed_check(
        verify_certify(&certified, &other_public, NONCE, &area),
        "signature",
    );

    // RSA keys and the AK itself can be certified too.
    let rsa = tpm
        .generate_key(&GenerateKeyRequest::new("rsa-key", KeyType::Rsa2048))
        .await
        .unwrap();
    let rsa_area = tpm.public_area(&rsa.id).await.unwrap();
    let rsa_certified = attestation.attest_key(&rsa.id, NONCE).await.unwrap();
    verify_certify(&rsa_certified, &ak_public, NONCE, &rsa_area).unwrap();
    let ak_area = tpm.public_area(&ak.id).await.unwrap();
    let self_certified = attestation.attest_key(&ak.id, NONCE).await.unwrap();
    verify_certify(&self_certified, &ak_public, NONCE, &ak_area).unwrap();

    // Nonces: none, or longer than a TPM2B_DATA, are refused before the TPM sees them.
    for bad in [&[][..], &[0u8; 65][..]] {
        let err = attestation.attest_key(&key.id, bad).await.unwrap_err();
        assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");
    }
    let unknown = hsm_core::KeyId::new("0123456789abcdef0123456789abcdef");
    let err = attestation.attest_key(&unknown, NONCE).await.unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");

    // Quote: the values returned are the ones quoted; after a PCR changes they no longer are.
    let selection = PcrSelection::sha256(&[0, 16, 23]).unwrap();
    let quote = tpm.quote(&selection, NONCE).await.unwrap();
    assert_eq!(quote.attestation.format, AttestationFormat::TpmQuote);
    assert_eq!(quote.pcrs.selection(), &selection);
    verify_quote(&quote.attestation, &ak_public, NONCE, &quote.pcrs).unwrap();
    check_quote_with_tpm2_tools(&quote, &ak_public);
    failed_check(
        verify_quote(&quote.attestation, &ak_public, b"stale nonce", &quote.pcrs),
        "nonce",
    );
    let mut tampered = quote.attestation.clone();
    tampered.statement[10] ^= 0x80;
    failed_check(
        verify_quote(&tampered, &ak_public, NONCE, &quote.pcrs),
        "signature",
    );
    let err = verify_certify(&quote.attestation, &ak_public, NONCE, &area).unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");
    tpm.extend_pcr(HashAlg::Sha256, 16, &HashAlg::Sha256.digest(b"event"))
        .await
        .unwrap();
    let now = tpm.read_pcrs(&selection).await.unwrap();
    assert_ne!(now.get(16), quote.pcrs.get(16), "PCR 16 was extended");
    assert_eq!(now.get(0), quote.pcrs.get(0));
    failed_check(
        verify_quote(&quote.attestation, &ak_public, NONCE, &now),
        "pcr-digest",
    );
    let fewer = tpm
        .read_pcrs(&PcrSelection::sha256(&[0, 23]).unwrap())
        .await
        .unwrap();
    failed_check(
        verify_quote(&quote.attestation, &ak_public, NONCE, &fewer),
        "pcr-selection",
    );
    let err = tpm
        .quote(&PcrSelection::sha256(&[]).unwrap(), NONCE)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");
    let err = tpm
        .extend_pcr(HashAlg::Sha256, 16, b"not a digest")
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");

    // A second AK: without a choice the provider will not guess; chosen, its statements do
    // not verify with the first AK's key.
    let ak2 = tpm.create_attestation_key("ak-2").await.unwrap();
    let err = attestation.attest_key(&key.id, NONCE).await.unwrap_err();
    assert!(
        matches!(&err, HsmError::InvalidInput { reason } if reason.contains("ak-1")),
        "{err:?}"
    );
    let ak2_public = tpm.public_key(&ak2.id).await.unwrap();
    drop(tpm); // swtpm serves one connection at a time
    let tpm = connect(&tcti, dir.path(), Some("ak-2")).await;
    let by_ak2 = tpm
        .attestation()
        .unwrap()
        .attest_key(&key.id, NONCE)
        .await
        .unwrap();
    verify_certify(&by_ak2, &ak2_public, NONCE, &area).unwrap();
    failed_check(
        verify_certify(&by_ak2, &ak_public, NONCE, &area),
        "signature",
    );
    drop(tpm);
    let tpm = connect(&tcti, dir.path(), Some("app-key")).await;
    let err = tpm.quote(&selection, NONCE).await.unwrap_err();
    assert!(
        matches!(&err, HsmError::InvalidInput { reason } if reason.contains("not an attestation key")),
        "{err:?}"
    );
    assert_eq!(tpm.ek_certificate().await.unwrap(), None);
    drop(tpm);
    common::assert_nothing_left_loaded(&tcti);
}

/// tpm2-tools checks the quote on its own: signature, nonce and PCR digest.
fn check_quote_with_tpm2_tools(quote: &hsm_tpm::Quote, ak: &PublicKey) {
    let Some(checkquote) = on_path("tpm2_checkquote") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ak.pem"), ak.to_pem()).unwrap();
    std::fs::write(path("quote.bin"), &quote.attestation.statement).unwrap();
    // TPMT_SIGNATURE: TPM_ALG_ECDSA, TPM_ALG_SHA256, then r and s as TPM2Bs.
    let fixed = hsm_core::verify::ecdsa_der_to_fixed(KeyType::EcP256, &quote.attestation.signature)
        .unwrap();
    let mut sig = vec![0x00, 0x18, 0x00, 0x0b];
    for half in fixed.chunks(32) {
        sig.extend(32u16.to_be_bytes());
        sig.extend(half);
    }
    std::fs::write(path("sig.bin"), sig).unwrap();
    let values: Vec<u8> = quote.pcrs.iter().flat_map(|(_, v)| v.to_vec()).collect();
    std::fs::write(path("pcrs.bin"), values).unwrap();
    let run = |nonce: &[u8]| {
        std::process::Command::new(&checkquote)
            .arg("-u")
            .arg(path("ak.pem"))
            .arg("-m")
            .arg(path("quote.bin"))
            .arg("-s")
            .arg(path("sig.bin"))
            .arg("-f")
            .arg(path("pcrs.bin"))
            .args(["-l", "sha256:0,16,23", "-g", "sha256", "-q"])
            .arg(hex::encode(nonce))
            .output()
            .expect("tpm2_checkquote runs")
    };
    let out = run(NONCE);
    assert!(out.status.success(), "tpm2_checkquote: {out:?}");
    let out = run(b"another nonce");
    assert!(!out.status.success(), "tpm2_checkquote took a wrong nonce");
}

/// A TPM manufactured by swtpm_setup holds an EK certificate; it parses as X.509, its public
/// key is the EK that the TCG default template derives on this TPM, and it comes with each
/// attestation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ek_certificate_from_swtpm_setup() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let Some(own) = OwnTpm::provisioned(&bin) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tpm = connect(&own.tcti(), dir.path(), None).await;
    let cert = tpm
        .ek_certificate()
        .await
        .unwrap()
        .expect("swtpm_setup stored an EK certificate");
    use x509_cert::der::{Decode as _, Encode as _};
    let parsed = x509_cert::Certificate::from_der(&cert).expect("the EK certificate is X.509");
    let spki = parsed
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let cert_key = PublicKey::from_spki_der(&spki).unwrap();
    assert_eq!(cert_key.key_type(), KeyType::Rsa2048, "RSA-2048 EK first");

    // swtpm_setup left only the SHA-256 bank active: the SHA-1 bank cannot be read, quoted or
    // sealed to.
    let sha1 = PcrSelection::new(HashAlg::Sha1, &[0]).unwrap();
    let err = tpm.read_pcrs(&sha1).await.unwrap_err();
    assert!(matches!(err, HsmError::NotSupported { .. }), "{err:?}");
    let err = tpm
        .seal("s", &hsm_core::Secret::new(b"x".to_vec()), &sha1)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::NotSupported { .. }), "{err:?}");

    tpm.create_attestation_key("ak").await.unwrap();
    let err = tpm.quote(&sha1, NONCE).await.unwrap_err();
    assert!(matches!(err, HsmError::NotSupported { .. }), "{err:?}");
    let key = tpm
        .generate_key(&GenerateKeyRequest::new("k", KeyType::EcP256))
        .await
        .unwrap();
    let certified = tpm
        .attestation()
        .unwrap()
        .attest_key(&key.id, NONCE)
        .await
        .unwrap();
    assert_eq!(certified.certificate_chain, vec![cert.clone()]);
    drop(tpm);

    // The EK, derived independently of hsm-tpm with tss-esapi's TCG default template.
    let ek = {
        use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek};
        use tss_esapi::interface_types::key_bits::RsaKeyBits;
        use tss_esapi::structures::Public;
        let conf: tss_esapi::TctiNameConf = own.tcti().parse().unwrap();
        let mut ctx = tss_esapi::Context::new(conf).unwrap();
        let handle = ek::create_ek_object_2(
            &mut ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            None,
        )
        .unwrap();
        let (public, _, _) = ctx.read_public(handle).unwrap();
        ctx.flush_context(handle.into()).unwrap();
        let Public::Rsa { unique, .. } = public else {
            panic!("an RSA EK");
        };
        PublicKey::from_rsa_components(unique.value(), &65537u32.to_be_bytes()).unwrap()
    };
    assert_eq!(
        ek.spki_der(),
        cert_key.spki_der(),
        "the certificate is the EK's"
    );

    // The local CA issued it: openssl checks the chain (TCG's critical SAN is not one it
    // knows, so that check alone is relaxed).
    if let (Some(openssl), Some(ca)) = (on_path("openssl"), own.ca_dir()) {
        let cert_pem = dir.path().join("ek.pem");
        std::fs::write(
            &cert_pem,
            der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &cert).unwrap(),
        )
        .unwrap();
        let out = std::process::Command::new(openssl)
            .args(["verify", "-ignore_critical", "-CAfile"])
            .arg(ca.join("swtpm-localca-rootca-cert.pem"))
            .arg("-untrusted")
            .arg(ca.join("issuercert.pem"))
            .arg(&cert_pem)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl verify: {out:?}");
    }
}
