//! Which async signatures run in place on the caller's thread and which go to a worker thread
//! (`Pkcs11Builder::in_place_below`), against SoftHSM2; every signature is verified in software.
//!
//! A test binary of its own: SoftHSM answered `CKR_GENERAL_ERROR` to a token key's
//! `C_GenerateKeyPair` in the load test while these providers connected (and logged in) in the
//! same process at the same moment.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};
use hsm_pkcs11::Pkcs11Provider;

fn message(thread: usize, i: usize) -> Vec<u8> {
    format!("in place: thread {thread}, signature {i}").into_bytes()
}

/// `n` signatures of distinct messages with `key`, each verified in software; returns how many
/// ran in place.
async fn sign_verified(
    p: &Pkcs11Provider,
    key: &hsm_core::KeyId,
    mech: Mechanism,
    n: usize,
) -> u64 {
    let public = p.public_key(key).await.expect("public_key");
    let before = p.pool_stats().in_place;
    for i in 0..n {
        let msg = message(0, i);
        let sig = p
            .sign(key, &mech, SignInput::Message(&msg))
            .await
            .expect("sign");
        assert!(
            hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(&msg), &sig)
                .expect("verify"),
            "signature {i} does not verify"
        );
    }
    p.pool_stats().in_place - before
}

/// A key's first signature goes to a worker, which measures it; after that its signatures run
/// in place if they take less than the provider's limit, and on a worker if not. The limits are
/// chosen so the outcome does not depend on the machine's speed: 1 s (every SoftHSM signature
/// is faster), zero (none is), and the default 100 µs against RSA-2048, whose private-key
/// operation takes several hundred microseconds on any current CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_run_in_place_only_when_measured_fast_softhsm2() {
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    let connect = |limit: Option<Duration>| {
        let b = peer.builder().pool_size(1);
        let b = match limit {
            Some(l) => b.in_place_below(l),
            None => b,
        };
        async move { b.build().await.expect("SOFTHSM2") }
    };
    let (fast, never, default) = (
        connect(Some(Duration::from_secs(1))).await,
        connect(Some(Duration::ZERO)).await,
        connect(None).await,
    );
    let mut suffix = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    let suffix = hex::encode(suffix);
    // Session objects: every session of this process sees them, and they go with it.
    let generate = |kt: KeyType| {
        GenerateKeyRequest::new(format!("in-place-{kt}-{suffix}"), kt).with_persistent(false)
    };
    let ec = fast
        .generate_key(&generate(KeyType::EcP256))
        .await
        .expect("generate P-256")
        .id;
    let rsa = fast
        .generate_key(&generate(KeyType::Rsa2048))
        .await
        .expect("generate RSA-2048")
        .id;
    let ecdsa = Mechanism::ecdsa(HashAlg::Sha256);
    let pkcs1 = Mechanism::RsaPkcs1v15 {
        hash: HashAlg::Sha256,
    };

    assert_eq!(
        sign_verified(&fast, &ec, ecdsa, 20).await,
        19,
        "1 s limit, P-256"
    );
    assert_eq!(
        sign_verified(&fast, &rsa, pkcs1, 5).await,
        4,
        "1 s limit, RSA"
    );
    assert_eq!(
        sign_verified(&never, &ec, ecdsa, 20).await,
        0,
        "no in place at all"
    );
    assert_eq!(
        sign_verified(&default, &rsa, pkcs1, 5).await,
        0,
        "default limit, RSA"
    );
    // Depends on the machine: SoftHSM's P-256 takes about 40 µs here.
    let in_place = sign_verified(&default, &ec, ecdsa, 20).await;
    println!("default limit, P-256: {in_place} of 20 signatures in place");

    // Pools of one session: four threads of `sign_blocking` and calls that need a worker share
    // one, in-place signatures have the other, and everyone gets a turn.
    let fast = Arc::new(fast);
    let public = fast.public_key(&ec).await.expect("public_key");
    let blocking: Vec<_> = (0..4)
        .map(|t| {
            let (p, key, public) = (fast.clone(), ec.clone(), public.clone());
            tokio::task::spawn_blocking(move || {
                for i in 0..50 {
                    let msg = message(t, i);
                    let sig = p
                        .sign_blocking(&key, &ecdsa, SignInput::Message(&msg))
                        .expect("sign_blocking");
                    assert!(
                        hsm_core::verify::verify_signature(
                            &public,
                            &ecdsa,
                            SignInput::Message(&msg),
                            &sig
                        )
                        .expect("verify")
                    );
                }
            })
        })
        .collect();
    sign_verified(&fast, &ec, ecdsa, 100).await;
    for _ in 0..10 {
        fast.public_key(&rsa).await.expect("a worker's call");
    }
    for b in blocking {
        b.await.expect("a sign_blocking thread");
    }
    let stats = fast.pool_stats();
    assert_eq!(stats.opened, 2, "one session per pool: {stats:?}");
    assert_eq!(stats.in_use, 0, "{stats:?}");
}
