//! Faults, each on a swtpm of the test's own: the TPM killed in the middle of a run and
//! restarted (the provider reconnects; keys load again from their files), and keys with auth
//! values (a missing or wrong value gives a clear error with the dictionary-attack count).

use std::sync::Arc;

use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyType, Mechanism, Secret, SignInput,
};
use hsm_tpm::TpmBuilder;

mod common;
use common::{OwnTpm, swtpm_bin};

fn mech() -> Mechanism {
    Mechanism::ecdsa(HashAlg::Sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tpm_is_reconnected_and_keys_load_again() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let mut swtpm = OwnTpm::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let tpm = TpmBuilder::new(dir.path())
        .tcti(&swtpm.tcti())
        .unwrap()
        .build()
        .await
        .unwrap();
    let key = tpm
        .generate_key(&GenerateKeyRequest::new("survivor", KeyType::EcP256))
        .await
        .unwrap();
    let session_key = tpm
        .generate_key(&GenerateKeyRequest::new("in-memory", KeyType::EcP256).with_persistent(false))
        .await
        .unwrap();
    let public = tpm.public_key(&key.id).await.unwrap();
    let check = |sig: &[u8]| {
        hsm_core::verify::verify_signature(&public, &mech(), SignInput::Message(b"m"), sig).unwrap()
    };
    let sig = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap();
    assert!(check(&sig));
    let loads_before = tpm.stats().await.unwrap().key_loads;

    // Signers running while the TPM dies: each call either signs or fails as retryable
    // Unavailable; none hangs, none gives another kind of error.
    let signers: Vec<_> = (0..4)
        .map(|_| {
            let (tpm, id) = (tpm.clone(), key.id.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..50 {
                    outcomes.push(tpm.sign(&id, &mech(), SignInput::Message(b"m")).await);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    swtpm.kill();
    let mut failed = 0;
    for signer in signers {
        for outcome in signer.await.unwrap() {
            match outcome {
                Ok(sig) => assert!(check(&sig)),
                Err(HsmError::Unavailable {
                    retryable: true,
                    reason,
                    ..
                }) => {
                    failed += 1;
                    assert!(reason.contains("TPM"), "{reason}");
                }
                Err(other) => panic!("a signer got {other:?}"),
            }
        }
    }
    assert!(failed > 0, "the kill happened after every signature");
    let err = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap_err();
    println!("while the TPM is down: {err}");
    assert!(err.is_retryable(), "{err:?}");

    swtpm.restart();
    // A failed reconnect pauses the next attempt (200 ms): calls fail fast until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let sig = loop {
        match tpm.sign(&key.id, &mech(), SignInput::Message(b"m")).await {
            Ok(sig) => break sig,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no signature after the restart: {e:?}"),
        }
    };
    assert!(check(&sig), "a signature after the restart verifies");
    // The key was loaded again from its file: exactly one more load.
    assert_eq!(tpm.stats().await.unwrap().key_loads, loads_before + 1);
    // A session key's blob lives in the provider; it survives the reconnect too.
    tpm.sign(&session_key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap();
    assert_eq!(tpm.find_keys(&Default::default()).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_values_missing_or_wrong_give_clear_errors() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let swtpm = OwnTpm::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let connect = |b: TpmBuilder| async move { Arc::new(b.build().await.unwrap()) };
    let builder = || TpmBuilder::new(dir.path()).tcti(&swtpm.tcti()).unwrap();

    let tpm = connect(builder()).await;
    let key = tpm
        .generate_key_with_auth(
            &GenerateKeyRequest::new("guarded", KeyType::EcP256),
            Secret::new(b"correct horse".to_vec()),
        )
        .await
        .unwrap();
    let public = tpm.public_key(&key.id).await.unwrap();
    // The provider that made it keeps the auth value.
    let sig = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap();
    assert!(
        hsm_core::verify::verify_signature(&public, &mech(), SignInput::Message(b"m"), &sig)
            .unwrap()
    );
    let da = tpm.lockout_status().await.unwrap();
    println!("dictionary-attack state on a fresh swtpm: {da:?}");
    assert_eq!(da.failures, 0);
    drop(tpm);

    // A later provider without the value: refused before the TPM is asked (no DA count).
    let tpm = connect(builder()).await;
    let err = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HsmError::Unauthenticated { reason } if reason.contains("has an auth value and none was given")),
        "{err:?}"
    );
    assert_eq!(tpm.lockout_status().await.unwrap().failures, 0);
    drop(tpm);

    // A wrong value: the TPM refuses it and counts it; the error says how close lockout is,
    // and never shows either value.
    let tpm = connect(builder().key_auth("guarded", Secret::new(b"wrong horse".to_vec()))).await;
    let err = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    println!("wrong auth: {err}");
    assert!(matches!(&err, HsmError::Unauthenticated { .. }), "{err:?}");
    assert!(text.contains("wrong auth value for key"), "{text}");
    let da = tpm.lockout_status().await.unwrap();
    assert_eq!(da.failures, 1);
    assert!(
        text.contains(&format!("1 of {}", da.max_failures)),
        "{text}"
    );
    assert!(!text.contains("horse"), "an auth value leaked: {text}");
    assert!(!format!("{tpm:?}").contains("horse"));
    drop(tpm);

    // The right value, by label, from a file source as an operator would give it.
    let auth_file = dir.path().join("auth");
    std::fs::write(&auth_file, "correct horse").unwrap();
    let tpm =
        connect(builder().key_auth_source("guarded", hsm_core::PinSource::File(auth_file.clone())))
            .await;
    let sig = tpm
        .sign(&key.id, &mech(), SignInput::Message(b"m"))
        .await
        .unwrap();
    assert!(
        hsm_core::verify::verify_signature(&public, &mech(), SignInput::Message(b"m"), &sig)
            .unwrap()
    );
}
