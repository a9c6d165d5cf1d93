//! Escrow into KMS: an AES key generated on a PKCS#11 token (SoftHSM2) is wrapped on the token
//! toward the wrapping key local-kms hands out, imported, and then used on both sides: what KMS
//! encrypts, the token decrypts, and the other way round. moto has no import.
//!
//! Comparing ciphertexts needs local-kms's ciphertext layout (its own, not AWS's, which is not
//! public): `len(ARN) (1 byte) || ARN || backing-key version (u32 LE) || 12-byte IV || AES-GCM
//! ciphertext and tag`, with the encryption context as AAD (each key then value, keys sorted).

mod common;

use hsm_cloud_aws::AwsKmsProvider;
use hsm_core::{
    DecryptRequest, EncryptRequest, GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyId,
    KeyState, KeyType, KeyUsage, Mechanism, PinSource,
};
use hsm_pkcs11::{Pkcs11Builder, Pkcs11Provider};

/// The SoftHSM2 token xtask prepared, or `None` (skipped, as `common::endpoint` explains).
async fn softhsm() -> Option<Pkcs11Provider> {
    let var = |name: &str| std::env::var(format!("HSM_TEST_SOFTHSM2_{name}")).ok();
    let Some(module) = var("MODULE") else {
        let why = "HSM_TEST_SOFTHSM2_MODULE is not set: run through `cargo xtask test-sims`";
        assert!(std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
        println!("skipped: {why}");
        return None;
    };
    let builder = Pkcs11Builder::new(module)
        .token_label(var("TOKEN").expect("HSM_TEST_SOFTHSM2_TOKEN"))
        .pin_source(PinSource::File(
            var("PIN_FILE").expect("HSM_TEST_SOFTHSM2_PIN_FILE").into(),
        ));
    Some(builder.build().await.expect("SoftHSM2 provider"))
}

/// The encryption context the provider binds AAD as, as local-kms feeds it to AES-GCM.
fn context_aad(aad: &[u8]) -> Vec<u8> {
    format!("hsm-rs-aad{}", hex::encode(aad)).into_bytes()
}

/// Splits a local-kms ciphertext into (header, IV, ciphertext with tag).
fn split_blob(blob: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let header_len = 1 + usize::from(blob[0]) + 4;
    let (header, rest) = blob.split_at(header_len);
    let (iv, ct) = rest.split_at(12);
    (header, iv, ct)
}

async fn state(kms: &AwsKmsProvider, key: &KeyId) -> KeyState {
    kms.lifecycle().unwrap().key_state(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_key_escrowed_into_local_kms() {
    let Some(kms) = common::provider(common::LOCALKMS).await else {
        return;
    };
    let Some(token) = softhsm().await else {
        return;
    };
    let suffix = format!("{:08x}", rand::random::<u32>());
    let aes = token
        .generate_key(
            &GenerateKeyRequest::new(format!("escrow-{suffix}"), KeyType::Aes256)
                .with_usage(KeyUsage::ENCRYPT)
                .with_extractable(true)
                .with_persistent(false),
        )
        .await
        .expect("AES key on the token")
        .id;
    let target = kms
        .create_import_key(&GenerateKeyRequest::new(
            format!("escrowed-{suffix}"),
            KeyType::Aes256,
        ))
        .await
        .expect("a KMS key waiting for material")
        .id;
    assert_eq!(state(&kms, &target).await, KeyState::PendingImport);

    // SoftHSM 2.6 wraps with OAEP SHA-1 only; KMS accepts RSAES_OAEP_SHA_1.
    let oaep = Mechanism::rsa_oaep(HashAlg::Sha1);

    // Tampered material is refused, and the key stays waiting.
    let params = kms
        .import_parameters(&target, &oaep, KeyType::Rsa2048)
        .await
        .unwrap();
    let mut bad = token
        .wrap_for(&params.wrapping_key, &aes, &oaep)
        .await
        .unwrap();
    bad[10] ^= 1;
    let e = kms
        .import_key_material(&params, &bad, None)
        .await
        .unwrap_err();
    println!("import: tampered material: {e}");
    assert!(matches!(e, HsmError::IntegrityCheckFailed { .. }), "{e:?}");
    assert_eq!(state(&kms, &target).await, KeyState::PendingImport);

    let params = kms
        .import_parameters(&target, &oaep, KeyType::Rsa2048)
        .await
        .unwrap();
    println!("import: {params:?}");
    let wrapped = token
        .wrap_for(&params.wrapping_key, &aes, &params.mechanism)
        .await
        .expect("wrapped on the token toward the KMS import key");
    kms.import_key_material(&params, &wrapped, None)
        .await
        .expect("imported");
    assert_eq!(state(&kms, &target).await, KeyState::Enabled);

    // KMS encrypts, the token decrypts.
    let (pt, aad) = (b"one key, two places".as_slice(), b"invoice-42".as_slice());
    let blob = kms
        .encrypt(
            &target,
            &Mechanism::ManagedAead,
            &EncryptRequest::new(pt).with_aad(aad),
        )
        .await
        .unwrap()
        .data;
    let (header, iv, ct) = split_blob(&blob);
    let back = token
        .decrypt(
            &aes,
            &Mechanism::AesGcm,
            &DecryptRequest::new(ct)
                .with_iv(iv)
                .with_aad(&context_aad(aad)),
        )
        .await
        .expect("the token decrypts what KMS encrypted");
    assert_eq!(back.as_slice(), pt);

    // The token encrypts, KMS decrypts.
    let iv = [5u8; 12];
    let ct = token
        .encrypt(
            &aes,
            &Mechanism::AesGcm,
            &EncryptRequest::new(pt)
                .with_iv(&iv)
                .with_aad(&context_aad(aad)),
        )
        .await
        .unwrap()
        .data;
    let blob = [header, &iv, &ct].concat();
    let back = kms
        .decrypt(
            &target,
            &Mechanism::ManagedAead,
            &DecryptRequest::new(&blob).with_aad(aad),
        )
        .await
        .expect("KMS decrypts what the token encrypted");
    assert_eq!(back.as_slice(), pt);
    println!("import: SoftHSM2 AES-256 key in local-kms; ciphertexts cross both ways");

    // RSA-AES key wrap: local-kms does not offer it (its layout is checked in software by
    // hsm-pkcs11's wrap_for test); the refusal must be clear.
    let rsa_aes = Mechanism::RsaAesKeyWrap {
        hash: HashAlg::Sha256,
        aes_bits: 256,
    };
    match kms
        .import_parameters(&target, &rsa_aes, KeyType::Rsa2048)
        .await
    {
        Err(e @ HsmError::InvalidInput { .. }) => {
            println!("import: skipped RSA_AES_KEY_WRAP_SHA_256: local-kms refuses it: {e}")
        }
        other => panic!("local-kms was expected to refuse RSA-AES key wrap: {other:?}"),
    }
    // Not a mechanism KMS imports with.
    let e = kms
        .import_parameters(&target, &Mechanism::AesKeyWrapPad, KeyType::Rsa2048)
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");
    kms.delete_key(&target).await.unwrap();
}
