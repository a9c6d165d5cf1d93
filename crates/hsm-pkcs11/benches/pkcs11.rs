//! hsm-pkcs11 against a bare cryptoki loop on the same SoftHSM2 token and the same key, in one
//! run.
//!
//! - `sign-throughput/<alg>/threads-<T>/raw`: T OS threads, each with its own session and the
//!   key handle found once, started once and kept (as the provider's workers are), looping
//!   hash-in-software + `C_SignInit` + `C_Sign` (for RSA over `DigestInfo || digest` with
//!   `CKM_RSA_PKCS`, exactly what the provider sends; cryptoki's `Session::sign` on both sides).
//! - `sign-throughput/<alg>/threads-<T>/hsm-pkcs11-async`: a provider with `pool_size(T)` and
//!   its defaults, driven by 16*T concurrent tasks on a Tokio runtime of T threads calling
//!   `HsmProvider::sign` with the message: a signature measured under 100 µs runs in place on
//!   the runtime's thread, a slower one is handed to a worker thread.
//! - `sign-throughput/<alg>/threads-<T>/hsm-pkcs11-handoff`: the same with `in_place_below(0)`,
//!   so every signature is handed to a worker thread and its answer handed back.
//! - `sign-throughput/<alg>/threads-<T>/hsm-pkcs11-blocking`: T threads of the caller's own
//!   calling `Pkcs11Provider::sign_blocking`.
//! - `verify/<alg>/{local,local-aws-lc,c-verify}`: hsm-core's software verifiers (RustCrypto,
//!   and AWS-LC behind its `aws-lc` feature) from the cached public key, against
//!   `HsmProvider::verify` (`C_VerifyInit` + `C_Verify` on the token).
//!
//! Each throughput iteration is a fixed batch of signatures split across the threads or tasks,
//! timed with `iter_custom`, so criterion's throughput is signatures per second. Before
//! criterion's groups, a paired pass alternates raw and hsm-pkcs11 batches and prints the median
//! ratio (`paired ...` lines): on a shared machine it is the steadier comparison. Keys are
//! session objects made for the run, so other processes using the token never see them.
//!
//! Run: `cargo bench -p hsm-pkcs11 --bench pkcs11` with the `HSM_TEST_SOFTHSM2_*` variables set
//! (`eval "$(cargo xtask sims up)"`); without them it prints why and measures nothing. With
//! `HSM_BENCH_PIN=1`, raw thread i, the hand-off provider's worker i and thread i of the
//! runtime that signs in place are pinned to CPU i, so each pair is compared on the same CPU: on
//! a virtual machine whose CPUs differ from moment to moment, that steadies the ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyInfo, KeyType, Mechanism, SignInput};
use hsm_pkcs11::Pkcs11Provider;
use sha2::{Digest as _, Sha256};

const MSG: &[u8] = b"hsm-rs benchmark message: 64 bytes of payload to sign, padded...";

/// The DER `DigestInfo` prefix for SHA-256 (RFC 8017 §9.2 note 1), as the provider sends it.
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Requests in flight per pool session for the async side: as an async server saturating a
/// token has, more than sessions, so a worker never waits for the next job.
const IN_FLIGHT: usize = 16;

struct Alg {
    name: &'static str,
    key_type: KeyType,
    mechanism: Mechanism,
    /// Signatures per timed iteration (about 0.1 s of one core on SoftHSM).
    batch: usize,
}

const ALGS: [Alg; 2] = [
    Alg {
        name: "ecdsa-p256",
        key_type: KeyType::EcP256,
        mechanism: Mechanism::ecdsa(HashAlg::Sha256),
        batch: 2000,
    },
    Alg {
        name: "rsa-2048",
        key_type: KeyType::Rsa2048,
        mechanism: Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        },
        batch: 200,
    },
];

/// The bare cryptoki side: the same module, already initialised by the provider.
struct Raw {
    ctx: Pkcs11,
    slot: cryptoki::slot::Slot,
    /// Holds the login for the whole run, whatever the provider does with its own.
    _login: Option<Session>,
}

impl Raw {
    fn open(peer: &common::Peer) -> Raw {
        let ctx = Pkcs11::new(&peer.module).expect("load the module");
        // The provider in this process has initialised the module already; the module is one
        // shared object, so both sides share its state (sessions, login, objects).
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        let slot = ctx
            .get_slots_with_token()
            .expect("C_GetSlotList")
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|t| t.label() == peer.token)
            })
            .expect("the token");
        let mut raw = Raw {
            ctx,
            slot,
            _login: None,
        };
        // A login belongs to the application: once is enough for every session, and it lasts
        // while any session is open.
        let s = raw.session();
        match s.login(UserType::User, Some(&AuthPin::new(peer.pin().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("C_Login: {e}"),
        }
        raw._login = Some(s);
        raw
    }

    fn session(&self) -> Session {
        self.ctx.open_rw_session(self.slot).expect("C_OpenSession")
    }

    fn private_key(&self, session: &Session, key: &KeyInfo) -> ObjectHandle {
        let id = hex::decode(&key.id.id).expect("hex CKA_ID");
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id),
            ])
            .expect("C_FindObjects");
        assert_eq!(found.len(), 1, "one private key with the id");
        found[0]
    }
}

/// What the raw loop gives the token: the mechanism and the bytes, hashed in software.
fn raw_input(kt: KeyType, msg: &[u8]) -> (CkMechanism<'static>, Vec<u8>) {
    let digest = Sha256::digest(msg);
    match kt {
        KeyType::EcP256 => (CkMechanism::Ecdsa, digest.to_vec()),
        _ => {
            let mut data = SHA256_DIGEST_INFO.to_vec();
            data.extend_from_slice(&digest);
            (CkMechanism::RsaPkcs, data)
        }
    }
}

/// The raw side's threads: T OS threads, each with its own session, started once and kept
/// across batches (as the provider's workers are), each told how many signatures to make.
struct RawThreads {
    work: Vec<crossbeam_channel::Sender<usize>>,
    done: crossbeam_channel::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RawThreads {
    fn start(raw: &Raw, n: usize, handle: ObjectHandle, kt: KeyType) -> RawThreads {
        let (done_tx, done) = crossbeam_channel::unbounded();
        let (mut work, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded::<usize>();
            let (session, done) = (raw.session(), done_tx.clone());
            let index = threads.len();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("raw-signer-{index}"))
                    .spawn(move || {
                        if pinning() {
                            pin(0, index);
                        }
                        for count in rx {
                            for _ in 0..count {
                                let (mech, data) = raw_input(kt, black_box(MSG));
                                black_box(session.sign(&mech, handle, &data).expect("C_Sign"));
                            }
                            done.send(()).unwrap();
                        }
                    })
                    .unwrap(),
            );
            work.push(tx);
        }
        RawThreads {
            work,
            done,
            threads,
        }
    }

    /// `total` signatures split across the threads; returns the wall time.
    fn batch(&self, total: usize) -> Duration {
        let per = total / self.work.len();
        let start = Instant::now();
        for w in &self.work {
            w.send(per).unwrap();
        }
        for _ in &self.work {
            self.done.recv().unwrap();
        }
        start.elapsed()
    }
}

impl Drop for RawThreads {
    fn drop(&mut self) {
        self.work.clear();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Whether `HSM_BENCH_PIN` asks for pinned signer threads (see the module docs).
fn pinning() -> bool {
    std::env::var_os("HSM_BENCH_PIN").is_some()
}

/// Pins thread `tid` (0: the calling thread) to CPU `index` (modulo the CPU count).
fn pin(tid: libc::pid_t, index: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: `set` is a plain bit set of the size the call is given.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(index % cpus, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(ok, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

/// Pins every provider's worker i to CPU i, finding the workers by name.
fn pin_workers() {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Some(index) = comm
            .trim_end()
            .strip_prefix("pkcs11-worker-")
            .and_then(|i| i.parse().ok())
        {
            pin(
                task.file_name().to_string_lossy().parse().expect("a tid"),
                index,
            );
        }
    }
}

/// `total` provider signatures made by `tasks` concurrent tasks; returns the wall time.
///
/// The tasks take signatures from one counter, as requests come to a server, rather than a
/// fixed share each: a signature made in place never yields, so a task's share would run in
/// one go, and the runtime thread that drew more of the tasks would still be signing when the
/// other had nothing left. The raw threads each make an exact share, and take equally long.
async fn ours_batch(
    provider: &Arc<Pkcs11Provider>,
    key: &KeyInfo,
    mech: Mechanism,
    tasks: usize,
    total: usize,
) -> Duration {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (p, id, next) = (provider.clone(), key.id.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    black_box(
                        p.sign(&id, &mech, SignInput::Message(black_box(MSG)))
                            .await
                            .expect("sign"),
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}

/// `total` signatures with [`Pkcs11Provider::sign_blocking`] from `threads` OS threads of the
/// caller's own (scoped; starting them costs well under 0.1% of a batch); returns the wall time.
fn blocking_batch(
    provider: &Pkcs11Provider,
    key: &KeyInfo,
    mech: Mechanism,
    threads: usize,
    total: usize,
) -> Duration {
    let per = total / threads;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..per {
                    black_box(
                        provider
                            .sign_blocking(&key.id, &mech, SignInput::Message(black_box(MSG)))
                            .expect("sign"),
                    );
                }
            });
        }
    });
    start.elapsed()
}

/// Alternating rounds for the paired ratio.
const PAIRED_ROUNDS: usize = 31;

/// Raw and ours in alternating batches (see `hsm_core::paired`: the machine's load drifts
/// between criterion's benchmarks, which run one after the other); prints the median of the
/// per-round ratios.
fn paired(
    alg: &Alg,
    threads: usize,
    rounds: usize,
    label: &str,
    batch: impl FnMut(bool) -> Duration,
) {
    let p = hsm_core::paired::run(rounds, batch);
    let rate = |d: Duration| alg.batch as f64 / d.as_secs_f64();
    println!(
        "paired sign-throughput/{}/threads-{threads}: raw {:.0}/s, {label} {:.0}/s, \
         {label}/raw {:.3} (median of {rounds} alternating rounds; range {:.3}..{:.3})",
        alg.name,
        rate(p.raw),
        rate(p.ours),
        p.ratio,
        p.min,
        p.max,
    );
}

fn benches(c: &mut Criterion) {
    if std::env::var_os("HSM_TEST_SOFTHSM2_MODULE").is_none() {
        println!(
            "skipped: HSM_TEST_SOFTHSM2_MODULE is not set; run `eval \"$(cargo xtask sims up)\"` first"
        );
        return;
    }
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    // Runtimes of T threads for the async side at T threads, as the raw side has T threads:
    // pinned like the raw threads where the runtime's threads sign (in place), not where they
    // only hand calls to the provider's (pinned) workers.
    let runtime = |threads: usize, pinned: bool| {
        let started = std::sync::atomic::AtomicUsize::new(0);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            // The worker threads start with the runtime, so they are the first ones here.
            .on_thread_start(move || {
                let i = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if pinned && pinning() && i < threads {
                    pin(0, i);
                }
            })
            .build()
            .unwrap()
    };
    let runtimes: Vec<tokio::runtime::Runtime> = [1, 2].map(|t| runtime(t, true)).into();
    let handoff_runtimes: Vec<tokio::runtime::Runtime> = [1, 2].map(|t| runtime(t, false)).into();
    let rt = &runtimes[1];
    // Per pool size, all on the same module, token and keys: a provider with its defaults, and
    // one that hands every signature to a worker.
    let connect = |n: usize, in_place: bool| {
        let b = peer.builder().pool_size(n);
        let b = if in_place {
            b
        } else {
            b.in_place_below(Duration::ZERO)
        };
        Arc::new(rt.block_on(b.build()).unwrap())
    };
    // The signers are pinned: the raw threads, the hand-off providers' workers, the in-place
    // runtime's threads. The in-place providers' workers are not (they are started after the
    // others are pinned): a slow signature (RSA) goes to them while the runtime thread that
    // handed it over waits on the CPU it is pinned to.
    let handoff: Vec<Arc<Pkcs11Provider>> = [1, 2].map(|n| connect(n, false)).into();
    if pinning() {
        pin_workers();
        println!("pinned: raw thread i, hand-off worker i and in-place runtime thread i on CPU i");
    }
    let providers: Vec<Arc<Pkcs11Provider>> = [1, 2].map(|n| connect(n, true)).into();
    let raw = Raw::open(&peer);
    // Not when profiling one benchmark (`--profile-time`): it would be in the profile.
    let paired_pass = !std::env::args().any(|a| a == "--profile-time");
    let run = std::process::id();

    for alg in &ALGS {
        // A session key: visible to every session of this process, gone when it exits, and
        // invisible to other processes testing on the same token.
        let key = rt
            .block_on(
                providers[0].generate_key(
                    &GenerateKeyRequest::new(format!("bench-{}-{run}", alg.name), alg.key_type)
                        .with_persistent(false),
                ),
            )
            .unwrap();
        let public = rt.block_on(providers[0].public_key(&key.id)).unwrap();

        // Both sides produce signatures the independent verifier accepts.
        let check = raw.session();
        let handle = raw.private_key(&check, &key);
        let (mech, data) = raw_input(alg.key_type, MSG);
        let raw_sig = check.sign(&mech, handle, &data).unwrap();
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
            .unwrap()
        );
        let signature = rt
            .block_on(providers[0].sign(&key.id, &alg.mechanism, SignInput::Message(MSG)))
            .unwrap();
        assert!(
            hsm_core::verify::verify_signature(
                &public,
                &alg.mechanism,
                SignInput::Message(MSG),
                &signature
            )
            .unwrap()
        );
        // The other providers resolve and cache the handle, and time the key's signatures,
        // before they are timed.
        for p in providers[1..].iter().chain(&handoff) {
            rt.block_on(p.sign(&key.id, &alg.mechanism, SignInput::Message(MSG)))
                .unwrap();
        }

        for (threads, (provider, rt)) in
            [1usize, 2].into_iter().zip(providers.iter().zip(&runtimes))
        {
            let async_sides = [
                ("hsm-pkcs11-async", provider, rt),
                (
                    "hsm-pkcs11-handoff",
                    &handoff[threads - 1],
                    &handoff_runtimes[threads - 1],
                ),
            ];
            let raw_threads = RawThreads::start(&raw, threads, handle, alg.key_type);
            if paired_pass {
                paired(alg, threads, PAIRED_ROUNDS, "hsm-pkcs11-blocking", |ours| {
                    if ours {
                        blocking_batch(provider, &key, alg.mechanism, threads, alg.batch)
                    } else {
                        raw_threads.batch(alg.batch)
                    }
                });
                for (label, p, rt) in async_sides {
                    let before = p.pool_stats();
                    paired(alg, threads, PAIRED_ROUNDS, label, |ours| {
                        if ours {
                            rt.block_on(ours_batch(
                                p,
                                &key,
                                alg.mechanism,
                                threads * IN_FLIGHT,
                                alg.batch,
                            ))
                        } else {
                            raw_threads.batch(alg.batch)
                        }
                    });
                    let in_place = p.pool_stats().in_place - before.in_place;
                    println!(
                        "  {label}: {:.1}% of its signatures in place",
                        // The paired pass warms each side up with one batch first.
                        100.0 * in_place as f64 / ((PAIRED_ROUNDS + 1) * alg.batch) as f64
                    );
                }
            }

            let mut g =
                c.benchmark_group(format!("sign-throughput/{}/threads-{threads}", alg.name));
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_secs(2))
                .measurement_time(Duration::from_secs(8))
                .throughput(Throughput::Elements(alg.batch as u64));

            g.bench_function("raw", |b| {
                b.iter_custom(|iters| (0..iters).map(|_| raw_threads.batch(alg.batch)).sum())
            });
            drop(raw_threads);

            g.bench_function("hsm-pkcs11-blocking", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| blocking_batch(provider, &key, alg.mechanism, threads, alg.batch))
                        .sum()
                })
            });

            for (label, p, rt) in async_sides {
                g.bench_function(label, |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += ours_batch(
                                    p,
                                    &key,
                                    alg.mechanism,
                                    threads * IN_FLIGHT,
                                    alg.batch,
                                )
                                .await;
                            }
                            total
                        })
                    })
                });
            }
            g.finish();
        }
        drop(check);

        let mut g = c.benchmark_group(format!("verify/{}", alg.name));
        g.sample_size(50)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .throughput(Throughput::Elements(1));
        g.bench_function("local", |b| {
            b.iter(|| {
                assert!(
                    hsm_core::verify::verify_signature(
                        &public,
                        &alg.mechanism,
                        SignInput::Message(black_box(MSG)),
                        &signature
                    )
                    .unwrap()
                )
            })
        });
        g.bench_function("local-aws-lc", |b| {
            b.iter(|| {
                assert!(
                    hsm_core::verify::aws_lc::verify_signature(
                        "bench",
                        &public,
                        &alg.mechanism,
                        SignInput::Message(black_box(MSG)),
                        &signature
                    )
                    .unwrap()
                )
            })
        });
        g.bench_function("c-verify", |b| {
            b.iter(|| {
                assert!(
                    rt.block_on(providers[0].verify(
                        &key.id,
                        &alg.mechanism,
                        SignInput::Message(black_box(MSG)),
                        &signature
                    ))
                    .unwrap()
                )
            })
        });
        g.finish();
    }
}

criterion_group!(pkcs11, benches);
criterion_main!(pkcs11);
