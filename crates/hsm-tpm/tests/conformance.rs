//! The shared conformance suite against swtpm, as `cargo xtask test-sims` (or
//! `cargo xtask sims up`) starts it: `HSM_TEST_SWTPM_TCTI` names the TPM. Without it the test
//! prints why it is skipped, or fails under `HSM_TEST_REQUIRE_ALL=1`.
//!
//! swtpm serves one connection at a time, so this file holds one test that uses it.

use std::sync::Arc;

use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};
use hsm_tpm::TpmBuilder;

mod common;
use common::tcti;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_swtpm() {
    let Some(tcti) = tcti() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tpm = TpmBuilder::new(dir.path())
        .tcti(&tcti)
        .unwrap()
        .build()
        .await
        .unwrap_or_else(|e| panic!("connecting to swtpm at {tcti}: {e:?}"));
    println!("swtpm: {:?}", tpm.info().await.unwrap());
    assert!(
        tpm.parameter_encryption().await.unwrap(),
        "the salted HMAC session did not start"
    );

    let report = hsm_core::conformance::run(hsm_core::Traced::wrap(Arc::new(tpm.clone()))).await;
    report.assert_passed();

    // Keys outlive the provider: a new connection (the SRK created again) finds, and signs
    // with, a key the first one made; the key file is all it needs.
    let key = tpm
        .generate_key(&GenerateKeyRequest::new(
            "survives-reconnect",
            KeyType::EcP256,
        ))
        .await
        .unwrap();
    let public = tpm.public_key(&key.id).await.unwrap();
    drop(tpm);
    let tpm = TpmBuilder::new(dir.path())
        .tcti(&tcti)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let sig = tpm
        .sign(&key.id, &mech, SignInput::Message(b"after reconnect"))
        .await
        .unwrap();
    assert!(
        hsm_core::verify::verify_signature(
            &public,
            &mech,
            SignInput::Message(b"after reconnect"),
            &sig
        )
        .unwrap()
    );
    tpm.delete_key(&key.id).await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // swtpm has no resource manager: what a client leaves loaded stays loaded. Once the
    // provider is dropped, tpm2-tools (another TSS client) must find nothing loaded.
    drop(tpm);
    common::assert_nothing_left_loaded(&tcti);
}
