//! hsm-cloud-aws against a bare aws-sdk-kms client on the same local-kms, same key, one run.
//!
//! - `sign/{hsm-cloud-aws,bare-sdk}`: one ECDSA P-256 `Sign` (RAW message) at a time: the
//!   provider's call (remote policy, cached metadata, checks, DER out) against
//!   `client.sign()...send()` on a client configured the same way (static credentials, SDK
//!   retries off).
//! - `verify/{local-cached,kms-verify}`: the provider's verify (AWS-LC, cached public key, no
//!   network call) against KMS `Verify` through the bare client.
//! - `throughput-32/{hsm-cloud-aws,bare-sdk}`: 32 calls in flight, 640 signatures a batch.
//!
//! Before criterion's groups, a paired pass alternates the two sides (order swapped every round)
//! and prints the median ratio, which drift on a shared machine does not bias.
//!
//! Run: `cargo bench -p hsm-cloud-aws --bench kms` with `HSM_TEST_LOCALKMS_ENDPOINT` set
//! (`eval "$(cargo xtask sims up)"`); without it the bench prints why and measures nothing.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hsm_cloud_aws::{AwsKmsBuilder, AwsKmsProvider};
use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmProvider, KeyId, KeyType, Mechanism, Secret, SignInput,
};

const MSG: &[u8] = b"hsm-rs benchmark message: 64 bytes of payload to sign, padded...";
const IN_FLIGHT: usize = 32;
const PER_TASK: usize = 20;
const ROUNDS: usize = 21;

fn bare_client(endpoint: &str) -> Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "AKIAHSMRSTEST",
            "emulator-accepts-any",
            None,
            None,
            "bench",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

async fn bare_sign(client: &Client, key: &str) -> Vec<u8> {
    let out = client
        .sign()
        .key_id(key)
        .message(Blob::new(MSG))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("bare Sign");
    out.signature().expect("signature").as_ref().to_vec()
}

async fn ours_sign(p: &AwsKmsProvider, key: &KeyId) -> Vec<u8> {
    p.sign(
        key,
        &Mechanism::ecdsa(HashAlg::Sha256),
        SignInput::Message(MSG),
    )
    .await
    .expect("provider sign")
}

/// `n` calls of `f` in a row; the wall time.
async fn run_seq<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let start = Instant::now();
    for _ in 0..n {
        black_box(f().await);
    }
    start.elapsed()
}

/// `IN_FLIGHT` tasks of `PER_TASK` signatures each; the wall time.
async fn ours_parallel(p: &Arc<AwsKmsProvider>, key: &KeyId) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (p, key) = (p.clone(), key.clone());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    black_box(ours_sign(&p, &key).await);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn bare_parallel(client: &Client, key: &str) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, key) = (client.clone(), key.to_owned());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    black_box(bare_sign(&client, &key).await);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Ours and the bare SDK in alternating rounds (see `hsm_core::paired`); prints the median
/// of the per-round time ratios ours/bare (the inverse of the throughput ratio).
fn paired(name: &str, round: impl FnMut(bool) -> Duration) {
    let p = hsm_core::paired::run(ROUNDS, round);
    println!(
        "paired {name}: hsm-cloud-aws {:?}, bare-sdk {:?} (median batch), time ours/bare {:.3} \
         (median of {ROUNDS} alternating rounds; range {:.3}..{:.3})",
        p.ours,
        p.raw,
        1.0 / p.ratio,
        1.0 / p.max,
        1.0 / p.min,
    );
}

fn benches(c: &mut Criterion) {
    let Ok(endpoint) = std::env::var("HSM_TEST_LOCALKMS_ENDPOINT") else {
        println!(
            "skipped: HSM_TEST_LOCALKMS_ENDPOINT is not set; run `eval \"$(cargo xtask sims up)\"` first"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let provider = Arc::new(
        rt.block_on(
            AwsKmsBuilder::new()
                .region("us-east-1")
                .endpoint(&endpoint)
                .static_credentials(
                    Secret::new("AKIAHSMRSTEST"),
                    Secret::new("emulator-accepts-any"),
                )
                .build(),
        )
        .unwrap(),
    );
    let client = bare_client(&endpoint);
    let key = rt
        .block_on(provider.generate_key(&GenerateKeyRequest::new("bench-p256", KeyType::EcP256)))
        .unwrap()
        .id;
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    // Warm both: metadata and public key cached, connections open.
    let sig = rt.block_on(ours_sign(&provider, &key));
    rt.block_on(bare_sign(&client, &key.id));
    assert!(
        rt.block_on(provider.verify(&key, &mech, SignInput::Message(MSG), &sig))
            .unwrap()
    );

    if !std::env::args().any(|a| a == "--profile-time") {
        paired("sign (50 in a row)", |ours| {
            rt.block_on(async {
                if ours {
                    run_seq(50, || ours_sign(&provider, &key)).await
                } else {
                    run_seq(50, || bare_sign(&client, &key.id)).await
                }
            })
        });
        paired(&format!("throughput ({IN_FLIGHT} in flight)"), |ours| {
            rt.block_on(async {
                if ours {
                    ours_parallel(&provider, &key).await
                } else {
                    bare_parallel(&client, &key.id).await
                }
            })
        });
    }

    let mut g = c.benchmark_group("sign");
    g.sample_size(50).throughput(Throughput::Elements(1));
    g.bench_function("hsm-cloud-aws", |b| {
        b.to_async(&rt).iter(|| ours_sign(&provider, &key))
    });
    g.bench_function("bare-sdk", |b| {
        b.to_async(&rt).iter(|| bare_sign(&client, &key.id))
    });
    g.finish();

    let mut g = c.benchmark_group("verify");
    g.sample_size(50).throughput(Throughput::Elements(1));
    g.bench_function("local-cached", |b| {
        b.to_async(&rt).iter(|| async {
            assert!(
                provider
                    .verify(&key, &mech, SignInput::Message(black_box(MSG)), &sig)
                    .await
                    .unwrap()
            )
        })
    });
    g.bench_function("kms-verify", |b| {
        b.to_async(&rt).iter(|| async {
            let out = client
                .verify()
                .key_id(&key.id)
                .message(Blob::new(black_box(MSG)))
                .message_type(MessageType::Raw)
                .signature(Blob::new(sig.clone()))
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .expect("KMS Verify");
            assert!(out.signature_valid());
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("throughput-{IN_FLIGHT}"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements((IN_FLIGHT * PER_TASK) as u64));
    g.bench_function("hsm-cloud-aws", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(ours_parallel(&provider, &key)))
                .sum()
        })
    });
    g.bench_function("bare-sdk", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(bare_parallel(&client, &key.id)))
                .sum()
        })
    });
    g.finish();
    rt.block_on(provider.delete_key(&key)).unwrap();
}

criterion_group!(kms, benches);
criterion_main!(kms);
