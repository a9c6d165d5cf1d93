//! hsm-tpm against a bare tss-esapi loop on the same swtpm and the same key, in one run.
//!
//! - `raw`: a tss-esapi `Context` of its own, set up as a careful hand-written program would be
//!   for the same protection: the ECC P-256 SRK as a primary, a salted HMAC session with
//!   AES-128-CFB parameter encryption (session attributes set once), the key loaded once with
//!   `TPM2_LoadExternal`; then, per signature, SHA-256 in software and `TPM2_Sign` in that
//!   session.
//! - `hsm-tpm`: `HsmProvider::sign` with the message, from 4 concurrent Tokio tasks (the TPM
//!   runs one command at a time; several requests in flight keep the worker fed, as an async
//!   server has). The key is the same key material, imported with
//!   `TpmProvider::import_software_key`, so the provider loads it from its key file.
//!
//! swtpm serves one connection at a time, so the two sides cannot be connected together: each
//! phase connects, signs once untimed (the provider loads the key, the raw side has loaded it),
//! times a batch, and disconnects. Before criterion's groups, a paired pass alternates provider
//! and raw phases (order swapped every round) and prints the median of the per-round ratios
//! (`paired ...` lines), which drift on a shared machine does not bias.
//!
//! The provider's `stats()` counts key loads: the bench asserts and prints that a batch with the
//! key cached loads nothing, and measures, with a cache of one slot and two keys taking turns,
//! what a load on every signature costs.
//!
//! Run: `cargo bench -p hsm-tpm --bench tpm` with `HSM_TEST_SWTPM_TCTI` set
//! (`eval "$(cargo xtask sims up swtpm)"`); without it it prints why and measures nothing.

use std::hint::black_box;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmProvider, KeyInfo, KeyType, KeyUsage, Mechanism, PublicKey,
    SignInput, Zeroizing,
};
use hsm_tpm::{TpmBuilder, TpmProvider};
use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, PrivateKeyRsa, Public, PublicBuilder, PublicEccParameters,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    Sensitive, SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

const MSG: &[u8] = b"hsm-rs benchmark message: 64 bytes of payload to sign, padded...";

/// Requests in flight on the provider side.
const TASKS: usize = 4;

/// A software key, the same key material on both sides.
enum Key {
    P256(p256::SecretKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

struct Alg {
    name: &'static str,
    mechanism: Mechanism,
    /// Signatures per timed batch (about 0.3 s on swtpm).
    batch: usize,
}

fn algs() -> [(Alg, Key); 2] {
    let mut rng = rand::rngs::OsRng;
    [
        (
            Alg {
                name: "ecdsa-p256",
                mechanism: Mechanism::ecdsa(HashAlg::Sha256),
                batch: 200,
            },
            Key::P256(p256::SecretKey::random(&mut rng)),
        ),
        (
            Alg {
                name: "rsa-2048",
                mechanism: Mechanism::RsaPkcs1v15 {
                    hash: HashAlg::Sha256,
                },
                batch: 100,
            },
            Key::Rsa(Box::new(rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap())),
        ),
    ]
}

impl Key {
    fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        use p256::pkcs8::EncodePrivateKey as _;
        let der = match self {
            Key::P256(k) => k.to_pkcs8_der(),
            Key::Rsa(k) => k.to_pkcs8_der(),
        };
        Zeroizing::new(der.unwrap().as_bytes().to_vec())
    }

    /// The public area and sensitive area for `TPM2_LoadExternal`: an unrestricted signing
    /// key with a NULL scheme (each `TPM2_Sign` names its own), as hsm-tpm makes them.
    fn external(&self) -> (Public, Sensitive) {
        let attributes = ObjectAttributesBuilder::new()
            .with_user_with_auth(true)
            .with_sign_encrypt(true)
            .build()
            .unwrap();
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes);
        let seed = Digest::try_from(vec![7u8; 32]).unwrap();
        match self {
            Key::P256(k) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint as _;
                let point = k.public_key().to_encoded_point(false);
                let coord = |c: &[u8]| EccParameter::try_from(c.to_vec()).unwrap();
                let public = builder
                    .with_public_algorithm(PublicAlgorithm::Ecc)
                    .with_ecc_parameters(PublicEccParameters::new(
                        SymmetricDefinitionObject::Null,
                        EccScheme::Null,
                        EccCurve::NistP256,
                        KeyDerivationFunctionScheme::Null,
                    ))
                    .with_ecc_unique_identifier(EccPoint::new(
                        coord(point.x().unwrap()),
                        coord(point.y().unwrap()),
                    ))
                    .build()
                    .unwrap();
                let sensitive = Sensitive::Ecc {
                    auth_value: Auth::default(),
                    seed_value: seed,
                    sensitive: EccParameter::try_from(k.to_bytes().to_vec()).unwrap(),
                };
                (public, sensitive)
            }
            Key::Rsa(k) => {
                use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
                let params = PublicRsaParametersBuilder::new()
                    .with_scheme(RsaScheme::Null)
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_signing_key(true)
                    .with_restricted(false)
                    .build()
                    .unwrap();
                let public = builder
                    .with_public_algorithm(PublicAlgorithm::Rsa)
                    .with_rsa_parameters(params)
                    .with_rsa_unique_identifier(
                        PublicKeyRsa::try_from(k.n().to_bytes_be()).unwrap(),
                    )
                    .build()
                    .unwrap();
                let sensitive = Sensitive::Rsa {
                    auth_value: Auth::default(),
                    seed_value: seed,
                    sensitive: PrivateKeyRsa::try_from(k.primes()[0].to_bytes_be()).unwrap(),
                };
                (public, sensitive)
            }
        }
    }

    fn scheme(&self) -> SignatureScheme {
        let hash_scheme = HashScheme::new(HashingAlgorithm::Sha256);
        match self {
            Key::P256(_) => SignatureScheme::EcDsa { hash_scheme },
            Key::Rsa(_) => SignatureScheme::RsaSsa { hash_scheme },
        }
    }
}

/// The bare tss-esapi side: its own connection, SRK, salted session and loaded key.
struct Raw {
    ctx: Context,
    session: AuthSession,
    key: KeyHandle,
    scheme: SignatureScheme,
}

impl Raw {
    fn connect(tcti: &str, key: &Key) -> Raw {
        let mut ctx = Context::new(TctiNameConf::from_str(tcti).unwrap()).expect("connect");
        let srk_params = PublicEccParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
        .build()
        .unwrap();
        let zero = EccParameter::try_from(vec![0u8; 32]).unwrap();
        let srk_template = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(tss_esapi::attributes::ObjectAttributes::new_fixed_parent_key())
            .with_ecc_parameters(srk_params)
            .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
            .build()
            .unwrap();
        let srk = ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, srk_template, None, None, None, None)
            })
            .expect("SRK")
            .key_handle;
        let session = ctx
            .start_auth_session(
                Some(srk),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .expect("salted session")
            .unwrap();
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(true)
            .build();
        ctx.tr_sess_set_attributes(session, attributes, mask)
            .unwrap();
        let (public, sensitive) = key.external();
        let handle = ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.load_external(sensitive, public, Hierarchy::Null)
            })
            .expect("TPM2_LoadExternal");
        ctx.flush_context(srk.into()).unwrap();
        Raw {
            ctx,
            session,
            key: handle,
            scheme: key.scheme(),
        }
    }

    fn sign(&mut self, msg: &[u8]) -> tss_esapi::structures::Signature {
        let digest = Digest::try_from(Sha256::digest(msg).to_vec()).unwrap();
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .unwrap();
        let (key, scheme) = (self.key, self.scheme);
        self.ctx
            .execute_with_session(Some(self.session), |ctx| {
                ctx.sign(key, digest, scheme, ticket)
            })
            .expect("TPM2_Sign")
    }

    fn batch(&mut self, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            black_box(self.sign(black_box(MSG)));
        }
        start.elapsed()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // swtpm has no resource manager: what is left loaded stays for the next client.
        let _ = self.ctx.flush_context(self.key.into());
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(self.session).into());
    }
}

/// `total` provider signatures from [`TASKS`] concurrent tasks; returns the wall time.
async fn ours_batch(
    tpm: &Arc<TpmProvider>,
    key: &KeyInfo,
    mech: Mechanism,
    total: usize,
) -> Duration {
    let per = total / TASKS;
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (tpm, id) = (tpm.clone(), key.id.clone());
            tokio::spawn(async move {
                for _ in 0..per {
                    black_box(
                        tpm.sign(&id, &mech, SignInput::Message(black_box(MSG)))
                            .await
                            .expect("sign"),
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

struct Bench {
    rt: tokio::runtime::Runtime,
    tcti: String,
    dir: tempfile::TempDir,
}

impl Bench {
    fn provider(&self, cache: Option<usize>) -> Arc<TpmProvider> {
        let mut b = TpmBuilder::new(self.dir.path()).tcti(&self.tcti).unwrap();
        if let Some(n) = cache {
            b = b.cache_size(n).unwrap();
        }
        Arc::new(self.rt.block_on(b.build()).expect("connect the provider"))
    }

    /// One provider phase: connect, one untimed signature (which loads the key), a timed
    /// batch, and the check that the batch loaded nothing.
    fn ours_phase(&self, key: &KeyInfo, mech: Mechanism, n: usize) -> Duration {
        let tpm = self.provider(None);
        self.rt
            .block_on(tpm.sign(&key.id, &mech, SignInput::Message(MSG)))
            .unwrap();
        let loads = self.rt.block_on(tpm.stats()).unwrap().key_loads;
        let took = self.rt.block_on(ours_batch(&tpm, key, mech, n));
        let after = self.rt.block_on(tpm.stats()).unwrap().key_loads;
        assert_eq!(
            (loads, after),
            (1, 1),
            "the key is loaded once per connection"
        );
        took
    }

    fn raw_phase(&self, key: &Key, n: usize) -> Duration {
        let mut raw = Raw::connect(&self.tcti, key);
        raw.sign(MSG);
        raw.batch(n)
    }
}

/// Alternating rounds for the paired ratio.
const PAIRED_ROUNDS: usize = 15;

/// Raw and provider phases alternating (see `hsm_core::paired`); prints the medians and the
/// median of the per-round ratios.
fn paired(alg: &Alg, phase: impl FnMut(bool) -> Duration) {
    let p = hsm_core::paired::run(PAIRED_ROUNDS, phase);
    let rate = |d: Duration| alg.batch as f64 / d.as_secs_f64();
    println!(
        "paired sign/{}: raw {:.0}/s, hsm-tpm {:.0}/s, hsm-tpm/raw {:.3} (median of \
         {PAIRED_ROUNDS} alternating rounds of {} signatures; range {:.3}..{:.3})",
        alg.name,
        rate(p.raw),
        rate(p.ours),
        p.ratio,
        alg.batch,
        p.min,
        p.max,
    );
}

fn benches(c: &mut Criterion) {
    let Some(tcti) = std::env::var("HSM_TEST_SWTPM_TCTI")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!(
            "skipped: HSM_TEST_SWTPM_TCTI is not set; run `eval \"$(cargo xtask sims up swtpm)\"` first"
        );
        return;
    };
    let bench = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        tcti,
        dir: tempfile::tempdir().unwrap(),
    };
    // Not when profiling one benchmark (`--profile-time`): it would be in the profile.
    let paired_pass = !std::env::args().any(|a| a == "--profile-time");

    for (alg, soft) in algs() {
        let tpm = bench.provider(None);
        let key = bench
            .rt
            .block_on(tpm.import_software_key(
                &format!("bench-{}", alg.name),
                KeyUsage::SIGN,
                soft.pkcs8(),
            ))
            .unwrap();
        let public: PublicKey = bench.rt.block_on(tpm.public_key(&key.id)).unwrap();
        drop(tpm);

        // Both sides sign with the same key: each signature verifies with the provider's
        // public key in software.
        let mut raw = Raw::connect(&bench.tcti, &soft);
        let raw_sig = match raw.sign(MSG) {
            tss_esapi::structures::Signature::EcDsa(s) => {
                let mut fixed = pad32(s.signature_r().value());
                fixed.extend(pad32(s.signature_s().value()));
                fixed
            }
            tss_esapi::structures::Signature::RsaSsa(s) => s.signature().value().to_vec(),
            other => panic!("unexpected signature {other:?}"),
        };
        drop(raw);
        let raw_mech = match alg.mechanism {
            Mechanism::Ecdsa { hash, .. } => Mechanism::Ecdsa {
                hash,
                format: hsm_core::EcdsaFormat::Fixed,
            },
            m => m,
        };
        assert!(
            hsm_core::verify::verify_signature(
                &public,
                &raw_mech,
                SignInput::Message(MSG),
                &raw_sig
            )
            .unwrap(),
            "the raw side signs with another key"
        );
        let tpm = bench.provider(None);
        let sig = bench
            .rt
            .block_on(tpm.sign(&key.id, &alg.mechanism, SignInput::Message(MSG)))
            .unwrap();
        assert!(
            hsm_core::verify::verify_signature(
                &public,
                &alg.mechanism,
                SignInput::Message(MSG),
                &sig
            )
            .unwrap()
        );
        drop(tpm);

        if paired_pass {
            paired(&alg, |ours| {
                if ours {
                    bench.ours_phase(&key, alg.mechanism, alg.batch)
                } else {
                    bench.raw_phase(&soft, alg.batch)
                }
            });
        }

        let mut g = c.benchmark_group(format!("sign/{}", alg.name));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .throughput(Throughput::Elements(alg.batch as u64));
        {
            let mut raw = Raw::connect(&bench.tcti, &soft);
            raw.sign(MSG);
            g.bench_function("raw", |b| {
                b.iter_custom(|iters| (0..iters).map(|_| raw.batch(alg.batch)).sum())
            });
        }
        {
            let tpm = bench.provider(None);
            bench
                .rt
                .block_on(tpm.sign(&key.id, &alg.mechanism, SignInput::Message(MSG)))
                .unwrap();
            g.bench_function("hsm-tpm", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            bench
                                .rt
                                .block_on(ours_batch(&tpm, &key, alg.mechanism, alg.batch))
                        })
                        .sum()
                })
            });
            let loads = bench.rt.block_on(tpm.stats()).unwrap().key_loads;
            println!(
                "key loads during sign/{}/hsm-tpm: {loads} (one connection)",
                alg.name
            );
            assert_eq!(loads, 1);
        }
        g.finish();
    }

    // What the cache saves: two keys taking turns in a cache of one slot load a key for every
    // signature (TPM2_Load of the blob, and a flush of the other key).
    let tpm = bench.provider(None);
    let keys: Vec<KeyInfo> = ["bench-turns-a", "bench-turns-b"]
        .into_iter()
        .map(|label| {
            bench
                .rt
                .block_on(tpm.generate_key(&GenerateKeyRequest::new(label, KeyType::EcP256)))
                .unwrap()
        })
        .collect();
    drop(tpm);
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let turns = |tpm: &TpmProvider, n: usize| {
        let start = Instant::now();
        for i in 0..n {
            bench
                .rt
                .block_on(tpm.sign(&keys[i % 2].id, &mech, SignInput::Message(MSG)))
                .unwrap();
        }
        start.elapsed()
    };
    let mut g = c.benchmark_group("sign/ecdsa-p256/two-keys-one-at-a-time");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(100));
    for (name, cache) in [("cache-2", None), ("cache-1", Some(1))] {
        let tpm = bench.provider(cache);
        turns(&tpm, 2);
        let before = bench.rt.block_on(tpm.stats()).unwrap().key_loads;
        let mut signed = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                signed += iters as usize * 100;
                (0..iters).map(|_| turns(&tpm, 100)).sum()
            })
        });
        let loads = bench.rt.block_on(tpm.stats()).unwrap().key_loads - before;
        println!("key loads during {name}: {loads} for {signed} signatures");
        match cache {
            None => assert_eq!(loads, 0, "both keys stay loaded"),
            Some(_) => assert_eq!(loads as usize, signed, "every signature loads its key"),
        }
    }
    g.finish();
}

/// A big-endian number as 32 bytes (the TPM drops leading zeros of ECDSA scalars).
fn pad32(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32usize.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

criterion_group!(tpm, benches);
criterion_main!(tpm);
