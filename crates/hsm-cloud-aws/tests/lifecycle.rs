//! Key lifecycle and envelope encryption on local-kms, which enforces key states (moto does not:
//! a disabled key still signs there).

mod common;

use hsm_cloud_aws::AwsKmsProvider;
use hsm_core::{
    DecryptRequest, GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyId, KeyState, KeyType,
    Mechanism, SignInput,
};

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

async fn sign_verifies_with(p: &AwsKmsProvider, signer: &KeyId, owner: &KeyId) -> bool {
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let sig = p
        .sign(signer, &mech, SignInput::Message(b"lifecycle"))
        .await
        .unwrap_or_else(|e| panic!("signing with {signer}: {e}"));
    let public = p.public_key(owner).await.expect("public key");
    hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(b"lifecycle"), &sig)
        .expect("verifying")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_enable_rotation_and_deletion() {
    let Some(p) = common::provider(common::LOCALKMS).await else {
        return;
    };
    let lc = p.lifecycle().expect("AWS KMS has a lifecycle interface");
    let gen_p256 = |label: String| GenerateKeyRequest::new(label, KeyType::EcP256);
    let a = p
        .generate_key(&gen_p256(format!("lc-a-{}", suffix())))
        .await
        .unwrap()
        .id;
    let b = p
        .generate_key(&gen_p256(format!("lc-b-{}", suffix())))
        .await
        .unwrap()
        .id;

    // A key ARN names the key too (local-kms's account, as xtask starts it).
    let arn = KeyId::new(format!("arn:aws:kms:us-east-1:111122223333:key/{}", a.id));
    assert!(
        sign_verifies_with(&p, &arn, &a).await,
        "the ARN signs as key a"
    );

    // Aliases: name a key, move to another, go away.
    let alias = format!("alias/hsm-rs-test-{}", suffix());
    let by_alias = KeyId::new(&alias);
    lc.create_alias(&alias, &a).await.expect("create alias");
    assert!(
        sign_verifies_with(&p, &by_alias, &a).await,
        "the alias signs as key a"
    );
    let listed = lc.list_aliases(Some(&a)).await.expect("list aliases");
    assert!(listed.iter().any(|x| x.name == alias), "{listed:?}");
    let again = lc.create_alias(&alias, &b).await.unwrap_err();
    assert!(matches!(again, HsmError::AlreadyExists { .. }), "{again:?}");
    lc.update_alias(&alias, &b).await.expect("update alias");
    assert!(
        sign_verifies_with(&p, &by_alias, &b).await,
        "the alias now signs as key b"
    );
    lc.delete_alias(&alias).await.expect("delete alias");
    let gone = p
        .sign(
            &by_alias,
            &Mechanism::ecdsa(HashAlg::Sha256),
            SignInput::Message(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(gone, HsmError::KeyNotFound { .. }), "{gone:?}");
    for bad in ["release", "alias/", "alias/aws/mine"] {
        let e = lc.create_alias(bad, &a).await.unwrap_err();
        assert!(matches!(e, HsmError::InvalidInput { .. }), "{bad}: {e:?}");
    }

    // Disable: every use refused until enabled again.
    lc.set_enabled(&a, false).await.expect("disable");
    assert_eq!(lc.key_state(&a).await.unwrap(), KeyState::Disabled);
    let refused = p
        .sign(
            &a,
            &Mechanism::ecdsa(HashAlg::Sha256),
            SignInput::Message(b"x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, HsmError::PermissionDenied { .. }),
        "{refused:?}"
    );
    lc.set_enabled(&a, true).await.expect("enable");
    assert!(sign_verifies_with(&p, &a, &a).await);

    // Rotation: symmetric keys only, 90 to 2560 days.
    let aes = p
        .generate_key(&GenerateKeyRequest::new(
            format!("lc-aes-{}", suffix()),
            KeyType::Aes256,
        ))
        .await
        .unwrap()
        .id;
    lc.set_rotation(&aes, true, Some(180))
        .await
        .expect("rotation on");
    assert!(lc.rotation_enabled(&aes).await.unwrap());
    lc.set_rotation(&aes, false, None)
        .await
        .expect("rotation off");
    assert!(!lc.rotation_enabled(&aes).await.unwrap());
    let short = lc.set_rotation(&aes, true, Some(10)).await.unwrap_err();
    assert!(matches!(short, HsmError::InvalidInput { .. }), "{short:?}");
    let asym = lc.set_rotation(&a, true, None).await;
    println!("rotation of an asymmetric key: {asym:?}");
    assert!(asym.is_err(), "AWS KMS rotates symmetric keys only");

    // Scheduled deletion: gone for users, back (disabled) when cancelled.
    let short = lc.schedule_deletion(&b, 3).await.unwrap_err();
    assert!(matches!(short, HsmError::InvalidInput { .. }), "{short:?}");
    let state = lc
        .schedule_deletion(&b, 7)
        .await
        .expect("schedule deletion");
    let KeyState::PendingDeletion {
        deletion_at: Some(at),
    } = state
    else {
        panic!("not pending deletion with a date: {state:?}");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        at > now + 6 * 86_400 && at <= now + 8 * 86_400,
        "deletion at {at}, now {now}"
    );
    let gone = p.get_key(&b).await.unwrap_err();
    assert!(matches!(gone, HsmError::KeyNotFound { .. }), "{gone:?}");
    let gone = p
        .sign(
            &b,
            &Mechanism::ecdsa(HashAlg::Sha256),
            SignInput::Message(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(gone, HsmError::KeyNotFound { .. }), "{gone:?}");
    lc.cancel_deletion(&b).await.expect("cancel deletion");
    assert_eq!(lc.key_state(&b).await.unwrap(), KeyState::Disabled);
    lc.set_enabled(&b, true).await.unwrap();
    assert!(sign_verifies_with(&p, &b, &b).await);

    for k in [&a, &b, &aes] {
        p.delete_key(k).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_for_envelope_encryption() {
    for name in [common::LOCALKMS, common::MOTO] {
        let Some(p) = common::provider(name).await else {
            return;
        };
        let aes = p
            .generate_key(&GenerateKeyRequest::new(
                format!("dk-{}", suffix()),
                KeyType::Aes256,
            ))
            .await
            .unwrap()
            .id;
        let dk = p.generate_data_key(&aes).await.expect("GenerateDataKey");
        assert_eq!(dk.plaintext.len(), 32, "{name}: an AES-256 key");
        let shown = format!("{dk:?}");
        assert!(
            !shown.contains(&format!("{:?}", &dk.plaintext[..4])),
            "{name}: {shown}"
        );
        let back = p
            .decrypt(
                &aes,
                &Mechanism::ManagedAead,
                &DecryptRequest::new(&dk.encrypted),
            )
            .await
            .expect("decrypting the data key");
        assert_eq!(back.as_slice(), dk.plaintext.as_slice(), "{name}");
        let other = p.generate_data_key(&aes).await.unwrap();
        assert_ne!(
            other.plaintext.as_slice(),
            dk.plaintext.as_slice(),
            "{name}: fresh keys"
        );
        p.delete_key(&aes).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_keys() {
    use hsm_cloud_aws::HmacSpec;
    for name in [common::LOCALKMS, common::MOTO] {
        let Some(p) = common::provider(name).await else {
            return;
        };
        for spec in [HmacSpec::Sha256, HmacSpec::Sha512] {
            let key = p
                .generate_hmac_key(&format!("mac-{}", suffix()), spec)
                .await
                .expect("an HMAC key");
            let mac = p
                .generate_mac(&key, spec, b"to authenticate")
                .await
                .unwrap();
            let len = if spec == HmacSpec::Sha256 { 32 } else { 64 };
            assert_eq!(mac.len(), len, "{name} {spec:?}");
            assert!(
                p.verify_mac(&key, spec, b"to authenticate", &mac)
                    .await
                    .unwrap()
            );
            assert!(
                !p.verify_mac(&key, spec, b"to authenticatE", &mac)
                    .await
                    .unwrap()
            );
            let mut bad = mac.clone();
            bad[0] ^= 1;
            assert!(
                !p.verify_mac(&key, spec, b"to authenticate", &bad)
                    .await
                    .unwrap()
            );
            // Not a key type of the contract: get_key says so, delete_key still deletes.
            let e = p.get_key(&key).await.unwrap_err();
            assert!(matches!(e, HsmError::NotSupported { .. }), "{name}: {e:?}");
            p.delete_key(&key).await.expect("deleting an HMAC key");
        }
        let e = p
            .generate_hmac_key(" ", HmacSpec::Sha256)
            .await
            .unwrap_err();
        assert!(matches!(e, HsmError::InvalidInput { .. }));
    }
}
