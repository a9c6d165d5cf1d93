//! hsm-soft against raw AWS-LC, in one run, on one thread.
//!
//! `*/hsm-soft` goes through the whole `HsmProvider` path (key lookup, policy checks, the async
//! call); `*/aws-lc-rs` is the bare library call it wraps. `verify/*/hsm-core` is hsm-core's
//! portable reference verifier (RustCrypto), which the conformance suite uses as the independent
//! check. Run: `cargo bench -p hsm-soft --bench soft`.

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};
use hsm_soft::SoftBuilder;

const MSG: &[u8] = b"hsm-rs benchmark message: 64 bytes of payload to sign, padded...";

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let provider = rt.block_on(SoftBuilder::in_memory().build()).unwrap();
    let rng = SystemRandom::new();

    for (kt, mech) in [
        (KeyType::EcP256, Mechanism::ecdsa(HashAlg::Sha256)),
        (
            KeyType::Rsa2048,
            Mechanism::RsaPkcs1v15 {
                hash: HashAlg::Sha256,
            },
        ),
    ] {
        let key = rt
            .block_on(provider.generate_key(&GenerateKeyRequest::new(format!("bench-{kt}"), kt)))
            .unwrap();
        let public = rt.block_on(provider.public_key(&key.id)).unwrap();
        let signature = rt
            .block_on(provider.sign(&key.id, &mech, SignInput::Message(MSG)))
            .unwrap();

        let mut g = c.benchmark_group(format!("sign/{kt}"));
        g.bench_function("hsm-soft", |b| {
            b.iter(|| {
                rt.block_on(provider.sign(&key.id, &mech, SignInput::Message(black_box(MSG))))
                    .unwrap()
            })
        });
        match kt {
            KeyType::EcP256 => {
                let raw = EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
                g.bench_function("aws-lc-rs", |b| {
                    b.iter(|| raw.sign(&rng, black_box(MSG)).unwrap())
                });
            }
            _ => {
                let raw =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let mut out = vec![0u8; raw.public_modulus_len()];
                g.bench_function("aws-lc-rs", |b| {
                    b.iter(|| {
                        raw.sign(&sig::RSA_PKCS1_SHA256, &rng, black_box(MSG), &mut out)
                            .unwrap()
                    })
                });
            }
        }
        g.finish();

        let mut g = c.benchmark_group(format!("verify/{kt}"));
        g.bench_function("hsm-soft", |b| {
            b.iter(|| {
                let ok = rt.block_on(provider.verify(
                    &key.id,
                    &mech,
                    SignInput::Message(black_box(MSG)),
                    &signature,
                ));
                assert!(ok.unwrap())
            })
        });
        g.bench_function("hsm-core-rustcrypto", |b| {
            b.iter(|| {
                assert!(
                    hsm_core::verify::verify_signature(
                        &public,
                        &mech,
                        SignInput::Message(black_box(MSG)),
                        &signature
                    )
                    .unwrap()
                )
            })
        });
        let alg: &dyn sig::VerificationAlgorithm = match kt {
            KeyType::EcP256 => &sig::ECDSA_P256_SHA256_ASN1,
            _ => &sig::RSA_PKCS1_2048_8192_SHA256,
        };
        // AWS-LC takes the SubjectPublicKeyInfo's inner key for RSA and EC alike.
        let raw_public = sig::UnparsedPublicKey::new(alg, public.raw_public_key());
        g.bench_function("aws-lc-rs", |b| {
            b.iter(|| raw_public.verify(black_box(MSG), &signature).unwrap())
        });
        g.finish();
    }
}

criterion_group!(soft, benches);
criterion_main!(soft);
