//! Load: 64 concurrent tasks sign 1,000 times each with one ECDSA P-256 key on SoftHSM through
//! the default session pool. Every one of the 64,000 signatures must come back, and verify with
//! independent software (RustCrypto, `hsm_core::verify`) over the message its task asked for, so
//! a lost, failed, duplicated or crossed-over answer is caught. The pool must end quiet: nothing
//! in use, no more sessions than its two pools hold, none evicted, nothing recovered.

mod common;

use std::sync::Arc;
use std::time::Instant;

use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};

const TASKS: usize = 64;
const SIGNATURES_PER_TASK: usize = 1_000;

fn message(task: usize, i: usize) -> Vec<u8> {
    format!("load test: task {task}, signature {i}").into_bytes()
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_sign_a_thousand_times_softhsm2() {
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    let provider = Arc::new(
        peer.builder()
            .build()
            .await
            .unwrap_or_else(|e| panic!("SOFTHSM2: {e:?}")),
    );
    let mut suffix = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    let label = format!("load-ec-p256-{}", hex::encode(suffix));
    let key = provider
        .generate_key(&GenerateKeyRequest::new(&label, KeyType::EcP256))
        .await
        .expect("generate_key")
        .id;
    let public = Arc::new(provider.public_key(&key).await.expect("public_key"));
    let mech = Mechanism::ecdsa(HashAlg::Sha256);

    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (provider, key, public) = (provider.clone(), key.clone(), public.clone());
            tokio::spawn(async move {
                let mut signed = Vec::with_capacity(SIGNATURES_PER_TASK);
                let mut errors = Vec::new();
                for i in 0..SIGNATURES_PER_TASK {
                    let msg = message(task, i);
                    match provider.sign(&key, &mech, SignInput::Message(&msg)).await {
                        Ok(sig) => signed.push((i, sig)),
                        Err(e) => errors.push(format!("task {task}, signature {i}: {e}")),
                    }
                }
                // Software verification is CPU work: off the async workers, and overlapping the
                // other tasks' signing.
                tokio::task::spawn_blocking(move || {
                    let mut tally = Tally {
                        errors,
                        ..Tally::default()
                    };
                    for (i, sig) in signed {
                        let msg = message(task, i);
                        match hsm_core::verify::verify_signature(
                            &public,
                            &mech,
                            SignInput::Message(&msg),
                            &sig,
                        ) {
                            Ok(true) => tally.valid += 1,
                            Ok(false) => tally.invalid += 1,
                            Err(e) => tally.errors.push(format!("verifying {task}/{i}: {e}")),
                        }
                    }
                    tally
                })
                .await
                .expect("verification task")
            })
        })
        .collect();

    let mut total = Tally::default();
    for t in tasks {
        // A panicked task is counted, not propagated, so the key is still deleted below.
        match t.await {
            Ok(tally) => {
                total.valid += tally.valid;
                total.invalid += tally.invalid;
                total.errors.extend(tally.errors);
            }
            Err(e) => total.errors.push(format!("a task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let stats = provider.pool_stats();
    println!(
        "SOFTHSM2: {} valid, {} invalid, {} errors from {TASKS} tasks x {SIGNATURES_PER_TASK} \
         in {elapsed:.1?} (signing and verifying); pool {stats:?}",
        total.valid,
        total.invalid,
        total.errors.len()
    );

    provider.delete_key(&key).await.expect("delete_key");

    assert!(
        total.errors.is_empty(),
        "{} calls failed, the first: {:#?}",
        total.errors.len(),
        &total.errors[..total.errors.len().min(5)]
    );
    assert_eq!(total.invalid, 0, "signatures that do not verify");
    assert_eq!(total.valid, TASKS * SIGNATURES_PER_TASK, "signatures lost");

    assert_eq!(stats.in_use, 0, "sessions still lent out: {stats:?}");
    assert!(
        stats.idle >= 1,
        "no session went back to the pool: {stats:?}"
    );
    // The workers' pool, and as many again for signatures made in place.
    assert!(
        stats.idle <= 2 * stats.size as u64 && stats.opened <= 2 * stats.size as u64,
        "more sessions than the two pools hold: {stats:?}"
    );
    assert_eq!(
        stats.evicted, 0,
        "sessions evicted without a fault: {stats:?}"
    );
    assert_eq!(
        (stats.retries, stats.relogins, stats.reinitializations),
        (0, 0, 0),
        "recoveries without a fault: {stats:?}"
    );
}
