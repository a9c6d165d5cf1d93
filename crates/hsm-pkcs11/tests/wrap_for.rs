//! Wrapping a token key toward an RSA public key from outside the token (a cloud KMS's import
//! key), unwrapped by independent software: RustCrypto's RSA-OAEP and AWS-LC's RFC 5649. The
//! unwrapped key then decrypts what the token encrypted, so the bytes are the layout KMS import
//! expects (RSA-OAEP of the key, or an OAEP-wrapped ephemeral AES key followed by RFC 5649).

mod common;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded as _};
use hsm_core::{
    EncryptRequest, GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyType, KeyUsage,
    Mechanism, Operation, PublicKey,
};
use rsa::traits::PublicKeyParts as _;
use rsa::{Oaep, RsaPrivateKey};

/// RustCrypto's OAEP with `hash` for the digest and MGF1.
fn oaep(hash: HashAlg) -> Oaep {
    match hash {
        HashAlg::Sha1 => Oaep::new::<sha1::Sha1>(),
        _ => Oaep::new::<sha2::Sha256>(),
    }
}

/// Decrypts `ct` (AES-256-GCM, tag appended) in software with `key`.
fn software_gcm_open(key: &[u8], iv: &[u8], aad: &[u8], ct: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 key"));
    let mut buf = ct.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(iv).expect("12-byte IV");
    key.open_in_place(nonce, Aad::from(aad), &mut buf)
        .expect("the unwrapped key decrypts the token's ciphertext")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm2() {
    wrapped_toward_an_outside_key_and_unwrapped_in_software("SOFTHSM2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic() {
    wrapped_toward_an_outside_key_and_unwrapped_in_software("KRYOPTIC").await;
}

async fn wrapped_toward_an_outside_key_and_unwrapped_in_software(name: &'static str) {
    let Some(peer) = common::peer(name) else {
        return;
    };
    let p = peer.builder().build().await.expect("provider");
    // The strongest OAEP hash the token wraps with (SoftHSM 2.6: SHA-1 only).
    let caps = p.capabilities().await.unwrap();
    let hash = [HashAlg::Sha256, HashAlg::Sha1]
        .into_iter()
        .find(|h| caps.supports(KeyType::Rsa2048, &Mechanism::rsa_oaep(*h), Operation::Wrap))
        .expect("RSA-OAEP key wrap");
    let aes = p
        .generate_key(
            &GenerateKeyRequest::new(
                format!("wrap-for-{}", rand::random::<u32>()),
                KeyType::Aes256,
            )
            .with_usage(KeyUsage::ENCRYPT)
            .with_extractable(true)
            .with_persistent(false),
        )
        .await
        .expect("an extractable AES key")
        .id;
    let (pt, iv, aad) = (b"escrowed into a cloud KMS", [9u8; 12], b"context");
    let ct = p
        .encrypt(
            &aes,
            &Mechanism::AesGcm,
            &EncryptRequest::new(pt).with_iv(&iv).with_aad(aad),
        )
        .await
        .expect("AES-GCM on the token");

    // The outside key: made and kept in software, as a KMS keeps its import key.
    let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
    let public =
        PublicKey::from_rsa_components(&private.n().to_bytes_be(), &private.e().to_bytes_be())
            .unwrap();

    // RSA-OAEP (SHA-256) of the AES key itself.
    let wrapped = p
        .wrap_for(&public, &aes, &Mechanism::rsa_oaep(hash))
        .await
        .expect("RSA-OAEP toward the outside key");
    let key = private
        .decrypt(oaep(hash), &wrapped)
        .expect("RustCrypto OAEP-decrypts it");
    assert_eq!(software_gcm_open(&key, &iv, aad, &ct.data), pt);

    // RSA-AES key wrap: OAEP-wrapped ephemeral AES-256 key, then RFC 5649 of the target.
    let wrapped = p
        .wrap_for(
            &public,
            &aes,
            &Mechanism::RsaAesKeyWrap {
                hash,
                aes_bits: 256,
            },
        )
        .await
        .expect("RSA-AES key wrap toward the outside key");
    let (head, tail) = wrapped.split_at(256);
    let ephemeral = private
        .decrypt(oaep(hash), head)
        .expect("the first 256 bytes are the OAEP-wrapped ephemeral key");
    assert_eq!(ephemeral.len(), 32, "an AES-256 ephemeral key");
    let kek = AesKek::new(&AES_256, &ephemeral).unwrap();
    let mut out = vec![0u8; tail.len()];
    let key = kek
        .unwrap_with_padding(tail, &mut out)
        .expect("AWS-LC unwraps the rest with RFC 5649");
    assert_eq!(software_gcm_open(key, &iv, aad, &ct.data), pt);
    println!(
        "wrap_for {name}: RSA-OAEP-{hash} and RSA-AES key wrap ({} bytes) unwrapped in \
         software; the key decrypts the token's AES-GCM",
        wrapped.len()
    );

    // Refusals: a key that may not leave, and a public key that cannot wrap.
    let fixed = p
        .generate_key(
            &GenerateKeyRequest::new(
                format!("wrap-for-fixed-{}", rand::random::<u32>()),
                KeyType::Aes256,
            )
            .with_persistent(false),
        )
        .await
        .unwrap()
        .id;
    let e = p
        .wrap_for(&public, &fixed, &Mechanism::rsa_oaep(hash))
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::PermissionDenied { .. }), "{e:?}");
    let ec = p
        .generate_key(
            &GenerateKeyRequest::new("wrap-for-ec", KeyType::EcP256).with_persistent(false),
        )
        .await
        .unwrap()
        .id;
    let ec_public = p.public_key(&ec).await.unwrap();
    let e = p
        .wrap_for(&ec_public, &aes, &Mechanism::rsa_oaep(hash))
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");
}
