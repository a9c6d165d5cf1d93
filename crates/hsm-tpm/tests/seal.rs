//! Sealing against swtpm: a secret sealed to PCR values comes back while they hold, and the TPM
//! refuses it once one of them is extended; bad requests get clear errors.
//!
//! The shared swtpm serves one connection at a time: everything that uses it is one test.
//! PCRs 16 (debug) and 23 (application) are the ones extended: locality 0 may extend them, and
//! no other test depends on their values.

use hsm_core::{HashAlg, HsmError, Secret};
use hsm_tpm::{MAX_SEALED_LEN, PcrSelection, TpmBuilder, TpmProvider};

mod common;
use common::tcti;

const SECRET: &[u8] = b"database master key: 7f3a9c0e5b2d4a1f";

async fn connect(tcti: &str, dir: &std::path::Path) -> TpmProvider {
    TpmBuilder::new(dir)
        .tcti(tcti)
        .unwrap()
        .build()
        .await
        .unwrap_or_else(|e| panic!("connecting to swtpm at {tcti}: {e:?}"))
}

async fn extend(tpm: &TpmProvider, pcr: u8, event: &[u8]) {
    tpm.extend_pcr(HashAlg::Sha256, pcr, &HashAlg::Sha256.digest(event))
        .await
        .unwrap();
}

fn denied_for_pcrs(result: Result<hsm_core::Zeroizing<Vec<u8>>, HsmError>) {
    match result {
        Err(HsmError::PermissionDenied { reason }) => assert!(
            reason.contains("the PCR values differ from those the secret was sealed to"),
            "{reason}"
        ),
        Err(other) => panic!("expected PermissionDenied, got {other:?}"),
        Ok(_) => panic!("unsealed although a PCR changed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_swtpm() {
    let Some(tcti) = tcti() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tpm = connect(&tcti, dir.path()).await;
    let pcr23 = PcrSelection::sha256(&[23]).unwrap();
    let pcr16_23 = PcrSelection::sha256(&[16, 23]).unwrap();

    // Round trip, and the file on disk: mode 0600, no secret in it, never overwritten.
    let sealed = tpm
        .seal("db-key", &Secret::new(SECRET), &pcr16_23)
        .await
        .unwrap();
    assert_eq!(sealed.pcrs, pcr16_23);
    assert_eq!(&tpm.unseal("db-key").await.unwrap()[..], SECRET);
    let path = dir.path().join(format!("{}.sealed.pem", sealed.id));
    let file = std::fs::read(&path).unwrap();
    assert!(
        !file.windows(SECRET.len()).any(|w| w == SECRET),
        "the secret is in the sealed file in the clear"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let err = tpm
        .seal("db-key", &Secret::new(b"other".to_vec()), &pcr23)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file,
        "the file was rewritten"
    );
    let max = vec![0x5a; MAX_SEALED_LEN];
    tpm.seal("largest", &Secret::new(max.clone()), &pcr23)
        .await
        .unwrap();

    // A new connection (the SRK derived again) unseals what the first one sealed.
    drop(tpm);
    let tpm = connect(&tcti, dir.path()).await;
    assert_eq!(&tpm.unseal("db-key").await.unwrap()[..], SECRET);
    assert_eq!(&tpm.unseal("largest").await.unwrap()[..], &max[..]);

    // Extending PCR 16 locks out only what was sealed to PCR 16.
    extend(&tpm, 16, b"debugger attached").await;
    denied_for_pcrs(tpm.unseal("db-key").await);
    assert_eq!(&tpm.unseal("largest").await.unwrap()[..], &max[..]);
    extend(&tpm, 23, b"application update").await;
    denied_for_pcrs(tpm.unseal("largest").await);

    // Sealed again now, it comes back under the new values.
    tpm.seal("db-key-2", &Secret::new(SECRET), &pcr16_23)
        .await
        .unwrap();
    assert_eq!(&tpm.unseal("db-key-2").await.unwrap()[..], SECRET);
    let mut labels: Vec<_> = tpm
        .sealed_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.label)
        .collect();
    labels.sort();
    assert_eq!(labels, ["db-key", "db-key-2", "largest"]);

    // Bad requests, each refused with a clear error before the TPM is asked.
    let secret = Secret::new(SECRET);
    for (label, secret, pcrs, what) in [
        ("x", &secret, &PcrSelection::sha256(&[]).unwrap(), "PCR"),
        ("", &secret, &pcr23, "label"),
        ("x", &Secret::new(vec![]), &pcr23, "1 to 128 bytes"),
        (
            "x",
            &Secret::new(vec![1; MAX_SEALED_LEN + 1]),
            &pcr23,
            "1 to 128 bytes",
        ),
    ] {
        match tpm.seal(label, secret, pcrs).await {
            Err(HsmError::InvalidInput { reason }) => {
                assert!(reason.contains(what), "{reason}");
                assert!(!reason.contains("database master key"), "{reason}");
            }
            other => panic!("expected InvalidInput about {what}, got {other:?}"),
        }
    }
    let err = tpm.unseal("never-sealed").await.unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");

    // Deleting removes the file; the label is free again.
    tpm.delete_sealed("db-key").await.unwrap();
    assert!(!path.exists());
    let err = tpm.unseal("db-key").await.unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");
    let err = tpm.delete_sealed("db-key").await.unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");

    // Nothing is left loaded in the TPM (no resource manager on swtpm).
    drop(tpm);
    common::assert_nothing_left_loaded(&tcti);
}
