//! Provider keys as RustCrypto signers: an X.509 certificate built by `x509-cert` with a key in
//! the soft provider, then checked by OpenSSL.

use std::process::Command;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_signature::AsyncSigner as _;
use der::{EncodePem as _, pem::LineEnding};
use hsm_core::{DynProvider, GenerateKeyRequest, HashAlg, HsmSigner, KeyType, Mechanism};
use hsm_soft::SoftBuilder;
use spki::{SignatureBitStringEncoding as _, SubjectPublicKeyInfoOwned};
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

fn openssl_available() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(),
            "openssl not found: apt-get install openssl"
        );
        println!("skipped: openssl not found (apt-get install openssl)");
    }
    found
}

async fn self_signed(p: &DynProvider, kt: KeyType, mech: Mechanism, blocking: bool) -> String {
    let key = p
        .generate_key(&GenerateKeyRequest::new(format!("ca-{kt}-{blocking}"), kt))
        .await
        .unwrap();
    let signer = HsmSigner::new(p.clone(), key.id, mech).await.unwrap();
    let spki = SubjectPublicKeyInfoOwned::try_from(signer.public_key().spki_der()).unwrap();
    let subject = Name::from_str(&format!("CN=hsm-rs test CA {kt},O=hsm-rs")).unwrap();
    let validity = Validity::from_now(Duration::from_secs(3600)).unwrap();
    let serial = SerialNumber::from(42u32);
    let cert = if blocking {
        // Synchronous builders take the blocking view of the signer.
        let signer = signer.blocking();
        let builder =
            CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
                .unwrap();
        builder.build::<hsm_core::HsmSignature>().unwrap()
    } else {
        let mut builder =
            CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
                .unwrap();
        let tbs = builder.finalize().unwrap();
        let sig: hsm_core::HsmSignature = signer.sign_async(&tbs).await.unwrap();
        builder.assemble(sig.to_bitstring().unwrap()).unwrap()
    };
    cert.to_pem(LineEnding::LF).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_certificates_signed_in_the_provider_verify_with_openssl() {
    if !openssl_available() {
        return;
    }
    let p: DynProvider = Arc::new(SoftBuilder::in_memory().build().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (KeyType::EcP256, Mechanism::ecdsa(HashAlg::Sha256), false),
        (KeyType::EcP384, Mechanism::ecdsa(HashAlg::Sha384), true),
        (
            KeyType::Rsa2048,
            Mechanism::RsaPkcs1v15 {
                hash: HashAlg::Sha256,
            },
            true,
        ),
        (KeyType::Ed25519, Mechanism::Ed25519, false),
    ];
    for (kt, mech, blocking) in cases {
        let pem = self_signed(&p, kt, mech, blocking).await;
        let path = dir.path().join(format!("{kt}.pem"));
        std::fs::write(&path, &pem).unwrap();
        // -check_ss_sig: OpenSSL does not check a trust anchor's own signature otherwise.
        let out = Command::new("openssl")
            .args(["verify", "-check_ss_sig", "-CAfile"])
            .arg(&path)
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(": OK"),
            "{kt}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // And a certificate whose signature is flipped must not.
        let mut der = x509_cert::der::Decode::from_der(
            &x509_cert::der::pem::decode_vec(pem.as_bytes()).unwrap().1,
        )
        .map(|c: x509_cert::Certificate| x509_cert::der::Encode::to_der(&c).unwrap())
        .unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let bad = dir.path().join(format!("{kt}-bad.der"));
        std::fs::write(&bad, &der).unwrap();
        let pem_bad = dir.path().join(format!("{kt}-bad.pem"));
        let conv = Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&bad)
            .arg("-out")
            .arg(&pem_bad)
            .output()
            .unwrap();
        assert!(conv.status.success());
        let out = Command::new("openssl")
            .args(["verify", "-check_ss_sig", "-CAfile"])
            .arg(&pem_bad)
            .arg(&pem_bad)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{kt}: OpenSSL accepted a tampered certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_refuses_mechanisms_without_an_x509_algorithm() {
    let p: DynProvider = Arc::new(SoftBuilder::in_memory().build().await.unwrap());
    let key = p
        .generate_key(&GenerateKeyRequest::new("pss", KeyType::Rsa2048))
        .await
        .unwrap();
    let signer = HsmSigner::new(
        p.clone(),
        key.id.clone(),
        Mechanism::rsa_pss(HashAlg::Sha256),
    )
    .await
    .unwrap();
    assert!(
        spki::DynSignatureAlgorithmIdentifier::signature_algorithm_identifier(&signer).is_err()
    );
    let e = HsmSigner::new(p, key.id, Mechanism::ecdsa(HashAlg::Sha256))
        .await
        .unwrap_err();
    assert!(
        matches!(e, hsm_core::HsmError::InvalidInput { .. }),
        "{e:?}"
    );
}
