//! Keys that move: duplication from one TPM to another, import of keys made in software, and
//! the cache of loaded keys (counted through `TpmProvider::stats`).
//!
//! Each test starts swtpm instances of its own (`common::OwnTpm`), so the tests run in
//! parallel and never touch the shared TPM. Every signature is checked in software
//! (`hsm_core::verify`) with the public key recorded where the key was made.

use hsm_core::verify::verify_signature;
use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyId, KeyType, KeyUsage, Mechanism,
    PublicKey, SignInput, Zeroizing,
};
use hsm_tpm::{DuplicationBlob, TpmBuilder, TpmProvider};

mod common;
use common::{OwnTpm, swtpm_bin};

async fn connect(tpm: &OwnTpm, dir: &std::path::Path) -> TpmProvider {
    TpmBuilder::new(dir)
        .tcti(&tpm.tcti())
        .unwrap()
        .build()
        .await
        .unwrap_or_else(|e| panic!("connecting to swtpm at {}: {e:?}", tpm.tcti()))
}

fn mechanism_for(key_type: KeyType) -> Mechanism {
    match key_type {
        KeyType::EcP256 => Mechanism::ecdsa(HashAlg::Sha256),
        _ => Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        },
    }
}

/// Signs `message` with `key` on `tpm` and checks the signature in software with `public`.
async fn signs_for(tpm: &TpmProvider, key: &KeyId, key_type: KeyType, public: &PublicKey) {
    let mech = mechanism_for(key_type);
    let message = format!("signed by {key}");
    let sig = tpm
        .sign(key, &mech, SignInput::Message(message.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("sign with {key}: {e:?}"));
    assert!(
        verify_signature(public, &mech, SignInput::Message(message.as_bytes()), &sig).unwrap(),
        "{key_type} signature from {key} does not verify with the recorded public key"
    );
}

/// `bytes` with one byte flipped.
fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_move_from_one_tpm_to_another() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let (tpm_a, tpm_b) = (OwnTpm::start(&bin), OwnTpm::start(&bin));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = connect(&tpm_a, dir_a.path()).await;
    let b = connect(&tpm_b, dir_b.path()).await;
    let srk_a = a.storage_key_public().await.unwrap();
    let srk_b = b.storage_key_public().await.unwrap();
    assert_ne!(
        srk_a, srk_b,
        "two fresh TPMs have different storage root keys"
    );

    for key_type in [KeyType::EcP256, KeyType::Rsa2048] {
        let req =
            GenerateKeyRequest::new(format!("movable-{key_type}"), key_type).with_extractable(true);
        let key = a.generate_key(&req).await.unwrap();
        assert!(key.attributes.extractable, "{key_type}: {key:?}");
        // Read back from the key file: extractable comes from the public area.
        assert!(a.get_key(&key.id).await.unwrap().attributes.extractable);
        let public = a.public_key(&key.id).await.unwrap();
        signs_for(&a, &key.id, key_type, &public).await;

        // A -> B, through bytes, as it would travel between machines.
        let bytes = a
            .duplicate(&key.id, &srk_b)
            .await
            .unwrap()
            .to_bytes()
            .unwrap();
        let blob = DuplicationBlob::from_bytes(&bytes).unwrap();
        assert_eq!(blob.key_type().unwrap(), key_type);
        assert_eq!(blob.public_key().unwrap(), public);
        let moved = b
            .import_duplicate(&format!("moved-{key_type}"), &blob)
            .await
            .unwrap();
        assert_eq!(moved.key_type, key_type);
        assert_eq!(b.public_key(&moved.id).await.unwrap(), public);
        signs_for(&b, &moved.id, key_type, &public).await;
        // The key stays usable on A.
        signs_for(&a, &key.id, key_type, &public).await;

        // A blob made for B does not import on A: A's SRK cannot recover the seed.
        let wrong_tpm = a.import_duplicate("not-for-me", &blob).await;
        assert!(
            matches!(wrong_tpm, Err(HsmError::IntegrityCheckFailed { .. })),
            "{key_type}: {wrong_tpm:?}"
        );

        // A changed blob is refused. The seed (B's ECC SRK: a P-256 point, 2 + 68 bytes) ends
        // the blob, so 80 bytes from the end is inside the encrypted private area.
        let tampered = DuplicationBlob::from_bytes(&flipped(&bytes, bytes.len() - 80)).unwrap();
        let r = b.import_duplicate("tampered-private", &tampered).await;
        assert!(
            matches!(r, Err(HsmError::IntegrityCheckFailed { .. })),
            "{key_type}: {r:?}"
        );
        let tampered = DuplicationBlob::from_bytes(&flipped(&bytes, bytes.len() - 5)).unwrap();
        let r = b.import_duplicate("tampered-seed", &tampered).await;
        assert!(
            matches!(
                r,
                Err(HsmError::IntegrityCheckFailed { .. } | HsmError::InvalidInput { .. })
            ),
            "{key_type}: {r:?}"
        );
        // Byte 60 is in the public area (after the 8-byte header and 2-byte size): a changed
        // public area changes the key's name, which the integrity HMAC covers.
        match DuplicationBlob::from_bytes(&flipped(&bytes, 60)) {
            Ok(tampered) => {
                let r = b.import_duplicate("tampered-public", &tampered).await;
                assert!(
                    matches!(
                        r,
                        Err(HsmError::IntegrityCheckFailed { .. } | HsmError::InvalidInput { .. })
                    ),
                    "{key_type}: {r:?}"
                );
            }
            Err(e) => assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}"),
        }
        let listed = b.find_keys(&hsm_core::KeyFilter::default()).await.unwrap();
        assert!(
            listed
                .iter()
                .all(|k| !k.attributes.label.starts_with("tampered")),
            "a refused import left a key behind: {listed:?}"
        );

        // The moved key is duplicable again: B -> A.
        let moved_info = b.get_key(&moved.id).await.unwrap();
        assert!(moved_info.attributes.extractable);
        let back = b.duplicate(&moved.id, &srk_a).await.unwrap();
        let returned = a
            .import_duplicate(&format!("returned-{key_type}"), &back)
            .await
            .unwrap();
        signs_for(&a, &returned.id, key_type, &public).await;
    }

    // A key made the default way (fixedTPM) never leaves.
    let fixed = a
        .generate_key(&GenerateKeyRequest::new("fixed", KeyType::EcP256))
        .await
        .unwrap();
    assert!(!fixed.attributes.extractable);
    let err = a.duplicate(&fixed.id, &srk_b).await.unwrap_err();
    assert!(matches!(err, HsmError::PermissionDenied { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("created fixedTPM: it can never leave this TPM"),
        "{err}"
    );

    // What is not a public area is refused before any TPM command.
    let err = a.duplicate(&fixed.id, b"not a key").await.unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");
    let err = DuplicationBlob::from_bytes(b"TPMDUP\x00\x01\x00").unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");

    // Each duplication loads the new parent and starts a policy session; both must be flushed
    // before it returns. The TPM holds 3 transient objects and 3 loaded sessions
    // (TPM_PT_HR_TRANSIENT_MIN, TPM_PT_HR_LOADED_MIN), so a leak fails within a few rounds.
    let movable = a
        .find_keys(&hsm_core::KeyFilter::label(format!(
            "movable-{}",
            KeyType::EcP256
        )))
        .await
        .unwrap();
    for round in 0..8 {
        a.duplicate(&movable[0].id, &srk_b)
            .await
            .unwrap_or_else(|e| panic!("duplication round {round}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_in_software_import_and_sign() {
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let own = OwnTpm::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let tpm = connect(&own, dir.path()).await;
    let mut rng = rand::rngs::OsRng;

    let ec = p256::SecretKey::random(&mut rng);
    let ec_public = PublicKey::from_ec_point(
        KeyType::EcP256,
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&ec.public_key(), false)
            .as_bytes(),
    )
    .unwrap();
    let der = Zeroizing::new(ec.to_pkcs8_der().unwrap().as_bytes().to_vec());
    let key = tpm
        .import_software_key("soft-p256", KeyUsage::SIGN, der)
        .await
        .unwrap();
    assert_eq!(key.key_type, KeyType::EcP256);
    assert!(!key.attributes.extractable);
    assert_eq!(tpm.public_key(&key.id).await.unwrap(), ec_public);
    signs_for(&tpm, &key.id, KeyType::EcP256, &ec_public).await;
    let fixed = Mechanism::Ecdsa {
        hash: HashAlg::Sha384,
        format: hsm_core::EcdsaFormat::Fixed,
    };
    let sig = tpm
        .sign(&key.id, &fixed, SignInput::Message(b"fixed"))
        .await
        .unwrap();
    assert!(verify_signature(&ec_public, &fixed, SignInput::Message(b"fixed"), &sig).unwrap());

    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let rsa_public =
        PublicKey::from_rsa_components(&rsa_key.n().to_bytes_be(), &rsa_key.e().to_bytes_be())
            .unwrap();
    let der = Zeroizing::new(rsa_key.to_pkcs8_der().unwrap().as_bytes().to_vec());
    let key = tpm
        .import_software_key("soft-rsa", KeyUsage::SIGN, der)
        .await
        .unwrap();
    assert_eq!(key.key_type, KeyType::Rsa2048);
    assert_eq!(tpm.public_key(&key.id).await.unwrap(), rsa_public);
    signs_for(&tpm, &key.id, KeyType::Rsa2048, &rsa_public).await;
    let pss = Mechanism::rsa_pss(HashAlg::Sha256);
    let sig = tpm
        .sign(&key.id, &pss, SignInput::Message(b"pss"))
        .await
        .unwrap();
    assert!(verify_signature(&rsa_public, &pss, SignInput::Message(b"pss"), &sig).unwrap());

    // Imported keys have no duplication policy: they stay.
    let srk = tpm.storage_key_public().await.unwrap();
    let err = tpm.duplicate(&key.id, &srk).await.unwrap_err();
    assert!(matches!(err, HsmError::PermissionDenied { .. }), "{err:?}");

    // The key files survive a reconnect, like generated keys.
    drop(tpm);
    let tpm = connect(&own, dir.path()).await;
    signs_for(&tpm, &key.id, KeyType::Rsa2048, &rsa_public).await;

    // Bad input: not a key, a key size hsm-tpm does not take, a label in use.
    let err = tpm
        .import_software_key("junk", KeyUsage::SIGN, Zeroizing::new(b"junk".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::InvalidInput { .. }), "{err:?}");
    let small = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let der = Zeroizing::new(small.to_pkcs8_der().unwrap().as_bytes().to_vec());
    let err = tpm
        .import_software_key("rsa-1024", KeyUsage::SIGN, der)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::NotSupported { .. }), "{err:?}");
    let der = Zeroizing::new(ec.to_pkcs8_der().unwrap().as_bytes().to_vec());
    let err = tpm
        .import_software_key("soft-p256", KeyUsage::SIGN, der)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::AlreadyExists { .. }), "{err:?}");
    for (label, usage) in [("", KeyUsage::SIGN), ("ec-decrypt", KeyUsage::ENCRYPT)] {
        let der = Zeroizing::new(ec.to_pkcs8_der().unwrap().as_bytes().to_vec());
        let err = tpm
            .import_software_key(label, usage, der)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HsmError::InvalidInput { .. }),
            "{label:?}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_loads_a_key_once() {
    let Some(bin) = swtpm_bin() else {
        return;
    };
    let own = OwnTpm::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let sign = |tpm: TpmProvider, key: KeyId| async move {
        tpm.sign(&key, &mech, SignInput::Message(b"cache"))
            .await
            .unwrap();
    };

    // Default cache: one key signing 20 times is loaded once.
    let tpm = connect(&own, dir.path()).await;
    let key = tpm
        .generate_key(&GenerateKeyRequest::new("cached", KeyType::EcP256))
        .await
        .unwrap();
    let before = tpm.stats().await.unwrap().key_loads;
    for _ in 0..20 {
        sign(tpm.clone(), key.id.clone()).await;
    }
    assert_eq!(tpm.stats().await.unwrap().key_loads - before, 1);
    drop(tpm);

    // A cache of one with two keys taking turns: every signature loads its key.
    let tpm = TpmBuilder::new(dir.path())
        .tcti(&own.tcti())
        .unwrap()
        .cache_size(1)
        .unwrap()
        .build()
        .await
        .unwrap();
    let other = tpm
        .generate_key(&GenerateKeyRequest::new("other", KeyType::EcP256))
        .await
        .unwrap();
    let before = tpm.stats().await.unwrap().key_loads;
    for _ in 0..5 {
        sign(tpm.clone(), key.id.clone()).await;
        sign(tpm.clone(), other.id.clone()).await;
    }
    assert_eq!(tpm.stats().await.unwrap().key_loads - before, 10);
}
