//! Profiles from vendor documentation, exercised where a real token can show their handling: the
//! `aws-cloudhsm` profile forced onto SoftHSM2 (`x-profile`). CloudHSM chooses AES-GCM IVs
//! itself; a token that does not must never be left encrypting under the all-zero buffer.

mod common;

use hsm_core::{
    EncryptRequest, GenerateKeyRequest, HsmError, HsmProvider, KeyType, KeyUsage, Mechanism,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cloudhsm_profile_on_softhsm2() {
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    let p = peer
        .builder()
        .profile("aws-cloudhsm")
        .build()
        .await
        .expect("provider with the aws-cloudhsm profile");
    let caps = p.capabilities().await.unwrap();
    assert!(
        !caps.can_generate(KeyType::Ed25519),
        "CloudHSM has no EdDSA"
    );

    let aes = p
        .generate_key(
            &GenerateKeyRequest::new("profile-cloudhsm-gcm", KeyType::Aes256)
                .with_usage(KeyUsage::ENCRYPT)
                .with_persistent(false),
        )
        .await
        .unwrap()
        .id;
    let e = p
        .encrypt(
            &aes,
            &Mechanism::AesGcm,
            &EncryptRequest::new(b"x").with_iv(&[1u8; 12]),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");
    println!("profiles: caller IV refused: {e}");
    // SoftHSM does not write an IV back: the provider must refuse the result.
    let e = p
        .encrypt(&aes, &Mechanism::AesGcm, &EncryptRequest::new(b"x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("returned no IV"), "{e:?}");
    println!("profiles: a token that wrote no IV: {e}");
}
