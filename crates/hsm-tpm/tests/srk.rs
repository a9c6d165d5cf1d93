//! The storage root key, on swtpm instances of the test's own: made persistent at its reserved
//! handle only when asked and only when the handle is free; a handle another program owns is
//! left alone; key files made under the primary and under the persistent SRK both keep working.

use std::process::Command;

use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyId, KeyType, Mechanism, SignInput};
use hsm_tpm::{SrkAlgorithm, TpmBuilder, TpmProvider};

mod common;
use common::{OwnTpm, swtpm_bin};

const ECC_SRK: &str = "0x81000002";

fn tpm2(tcti: &str, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tcti)
        .output()
        .expect("tpm2-tools runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn signs(tpm: &TpmProvider, key: &KeyId) {
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let sig = tpm
        .sign(key, &mech, SignInput::Message(b"m"))
        .await
        .unwrap();
    let public = tpm.public_key(key).await.unwrap();
    assert!(
        hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(b"m"), &sig).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srk_is_persisted_only_when_asked_and_never_over_another_key() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let swtpm = OwnTpm::start(&bin);
    let tcti = swtpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    let builder = || TpmBuilder::new(dir.path()).tcti(&tcti).unwrap();
    let new_key = |tpm: &TpmProvider, label: &str| {
        let tpm = tpm.clone();
        let label = label.to_owned();
        async move {
            tpm.generate_key(&GenerateKeyRequest::new(label, KeyType::EcP256))
                .await
                .unwrap()
                .id
        }
    };

    // By default nothing is written to the TPM: the SRK is a primary, re-created each time.
    let tpm = builder().build().await.unwrap();
    let under_primary = new_key(&tpm, "under-primary").await;
    drop(tpm);
    assert!(!tpm2(&tcti, &["tpm2_getcap", "handles-persistent"]).contains(ECC_SRK));

    // persist_srk: the SRK goes to 0x81000002; new keys are made under it; old ones still load.
    let tpm = builder().persist_srk(true).build().await.unwrap();
    let under_persistent = new_key(&tpm, "under-persistent").await;
    signs(&tpm, &under_primary).await;
    signs(&tpm, &under_persistent).await;
    drop(tpm);
    assert!(tpm2(&tcti, &["tpm2_getcap", "handles-persistent"]).contains(ECC_SRK));
    let file =
        std::fs::read_to_string(dir.path().join(format!("{}.pem", under_persistent.id))).unwrap();
    assert!(file.contains("-----BEGIN TSS2 PRIVATE KEY-----"));

    // A later provider uses the persistent SRK it finds, without being asked to persist.
    let tpm = builder().build().await.unwrap();
    signs(&tpm, &under_primary).await;
    signs(&tpm, &under_persistent).await;
    drop(tpm);

    // On another TPM, the ECC SRK handle holds someone else's RSA primary: it is left alone.
    let other = OwnTpm::start(&bin);
    let other_tcti = other.tcti();
    let ctx = dir.path().join("rsa-primary.ctx");
    let ctx = ctx.to_str().unwrap();
    tpm2(
        &other_tcti,
        &["tpm2_createprimary", "-C", "o", "-G", "rsa2048", "-c", ctx],
    );
    tpm2(
        &other_tcti,
        &["tpm2_evictcontrol", "-C", "o", "-c", ctx, ECC_SRK],
    );
    let before = tpm2(&other_tcti, &["tpm2_readpublic", "-c", ECC_SRK]);
    let other_dir = tempfile::tempdir().unwrap();
    let tpm = TpmBuilder::new(other_dir.path())
        .tcti(&other_tcti)
        .unwrap()
        .persist_srk(true)
        .build()
        .await
        .unwrap();
    let key = new_key(&tpm, "beside-a-foreign-handle").await;
    signs(&tpm, &key).await;
    drop(tpm);
    assert_eq!(
        tpm2(&other_tcti, &["tpm2_readpublic", "-c", ECC_SRK]),
        before
    );

    // An RSA-2048 SRK (for TPMs without ECC) works the same way.
    let tpm = TpmBuilder::new(other_dir.path())
        .tcti(&other_tcti)
        .unwrap()
        .srk_algorithm(SrkAlgorithm::Rsa2048)
        .build()
        .await
        .unwrap();
    let key = new_key(&tpm, "under-an-rsa-srk").await;
    signs(&tpm, &key).await;
    assert!(tpm.parameter_encryption().await.unwrap());
}
