//! What a signature costs in PKCS#11 calls, counted by a tool we did not write: OpenSC's
//! pkcs11-spy, a PKCS#11 module that forwards every call to the module named in `PKCS11SPY` and
//! logs it to `PKCS11SPY_OUTPUT`.
//!
//! The spy is configured by environment variables, which a test cannot set safely in its own
//! (multi-threaded) process, so the test runs itself again as a child with those variables and a
//! marker. The child makes the keys with one provider on the spy; then two more (empty handle
//! caches), one signing in place and one on its worker thread, sign twice per key, which
//! resolves and caches the handles and opens the sessions signing needs, then [`SIGNS`] times
//! per key each. Marker calls (`C_GetInfo`, which the provider never makes) separate
//! the phases; the parent reads the log and counts the calls between them. The warm-up phase
//! must show the lookups, so the count is known to see them when they happen.
//!
//! Run: `cargo test -p hsm-pkcs11 --test call_count -- --nocapture` with `HSM_TEST_SOFTHSM2_*`
//! and `HSM_TEST_PKCS11_SPY` set (`eval "$(cargo xtask sims up)"`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use hsm_core::{GenerateKeyRequest, HashAlg, HsmProvider, KeyType, Mechanism, SignInput};

/// Set in the child's environment: run the signing side.
const CHILD: &str = "HSM_TEST_CALL_COUNT_CHILD";
/// This test's name, for the child's `--exact` filter.
const TEST: &str = "signing_is_sign_init_and_sign_only";
/// Signatures per key between the markers.
const SIGNS: usize = 100;
/// The call that separates the phases in the log.
const MARKER: &str = "C_GetInfo";

const KEYS: [(&str, KeyType, Mechanism); 2] = [
    (
        "ECDSA P-256",
        KeyType::EcP256,
        Mechanism::ecdsa(HashAlg::Sha256),
    ),
    (
        "RSA-2048 PKCS#1 v1.5",
        KeyType::Rsa2048,
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        },
    ),
];

#[test]
fn signing_is_sign_init_and_sign_only() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    let Some(spy) = std::env::var("HSM_TEST_PKCS11_SPY")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        let why = "HSM_TEST_PKCS11_SPY (OpenSC's pkcs11-spy.so) is not set: run the tests through \
                   `cargo xtask test-sims`, or `eval \"$(cargo xtask sims up)\"` first";
        assert!(std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
        println!("skipped: {why}");
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("spy.log");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, &spy)
        .env("PKCS11SPY", &peer.module)
        .env("PKCS11SPY_OUTPUT", &log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let text = std::fs::read_to_string(&log).unwrap();
    // The spy starts each record with "<sequence number>: C_<Function>" on a line of its own.
    let calls: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let (n, f) = l.split_once(": ")?;
            (n.bytes().all(|b| b.is_ascii_digit()) && f.starts_with("C_")).then_some(f)
        })
        .collect();
    let tallies: Vec<BTreeMap<&str, usize>> = calls
        .split(|f| *f == MARKER)
        .skip(1)
        .map(|segment| {
            let mut tally = BTreeMap::new();
            for f in segment {
                *tally.entry(*f).or_default() += 1;
            }
            tally
        })
        .collect();
    // warm-up, one phase per key and path, and whatever follows the last marker.
    let phases: Vec<String> = KEYS
        .iter()
        .flat_map(|(name, _, _)| [format!("{name}, in place"), format!("{name}, on a worker")])
        .collect();
    assert_eq!(
        tallies.len(),
        phases.len() + 2,
        "expected {} marker calls in the spy log",
        phases.len() + 2
    );
    let count = |tally: &BTreeMap<&str, usize>, f: &str| tally.get(f).copied().unwrap_or(0);

    let warm_up = &tallies[0];
    println!(
        "warm-up, two signatures per key and provider from empty caches, pkcs11-spy counted: {warm_up:?}"
    );
    assert_eq!(
        count(warm_up, "C_FindObjects"),
        2 * KEYS.len(),
        "each provider's first signature with a key looks it up once"
    );
    assert!(count(warm_up, "C_GetAttributeValue") > 0);

    for (name, tally) in phases.iter().zip(&tallies[1..]) {
        println!("{name}, {SIGNS} signatures, pkcs11-spy counted: {tally:?}");
        let count = |f: &str| count(tally, f);
        assert_eq!(
            count("C_SignInit"),
            SIGNS,
            "{name}: one C_SignInit per signature"
        );
        for f in [
            "C_FindObjectsInit",
            "C_FindObjects",
            "C_FindObjectsFinal",
            "C_GetAttributeValue",
        ] {
            assert_eq!(count(f), 0, "{name}: {f} on the signing path");
        }
        // One C_Sign into a buffer of the key's signature size: no size query first.
        assert_eq!(count("C_Sign"), SIGNS, "{name}: one C_Sign per signature");
        let others: Vec<_> = tally
            .keys()
            .filter(|f| !["C_SignInit", "C_Sign"].contains(f))
            .collect();
        assert!(
            others.is_empty(),
            "{name}: other calls on the signing path: {others:?}"
        );
    }
}

/// The child: signs through the spy. Runs with `PKCS11SPY` and `PKCS11SPY_OUTPUT` set.
fn child() {
    let spy = std::env::var(CHILD).unwrap();
    let mut peer = common::peer("SOFTHSM2").expect("the parent checked the peer");
    peer.module = spy.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        // The keys are made by one provider (which caches their handles as it makes them) and
        // used by another, whose cache starts empty.
        let maker = peer.builder().pool_size(1).build().await.unwrap();
        // One provider whose async signatures run in place once timed (every one here takes
        // well under a second, even through the spy), and one whose signatures all go to a
        // worker thread: both paths are counted.
        let connect = |limit| peer.builder().pool_size(1).in_place_below(limit).build();
        let providers = [
            connect(std::time::Duration::from_secs(1)).await.unwrap(),
            connect(std::time::Duration::ZERO).await.unwrap(),
        ];
        let mut keys = Vec::new();
        for (name, kt, mech) in KEYS {
            // A session key: visible to every session of this process (both providers share the
            // module), gone with the process, invisible to other tests on the token.
            let key = maker
                .generate_key(
                    &GenerateKeyRequest::new(format!("call-count-{kt}-{}", std::process::id()), kt)
                        .with_persistent(false),
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            keys.push((key, mech));
        }
        // The markers go through a third cryptoki context on the same spy: the module is one
        // shared object, so they land in the same log, in order with the providers' calls.
        let marker = cryptoki::context::Pkcs11::new(&spy).unwrap();
        let mark = || {
            let _ = marker.get_library_info();
        };
        mark();
        // Warm-up: the first signature per key resolves the handles (C_FindObjects,
        // C_GetAttributeValue), caches them and times the signature on a worker; the second runs
        // where that key's signatures will (in place for a fast key, which opens the in-place
        // pool's session).
        for provider in &providers {
            for (key, mech) in &keys {
                for _ in 0..2 {
                    provider
                        .sign(&key.id, mech, SignInput::Message(b"warm-up"))
                        .await
                        .unwrap();
                }
            }
        }
        mark();
        for (key, mech) in &keys {
            for (provider, expected) in providers.iter().zip([SIGNS as u64, 0]) {
                let before = provider.pool_stats().in_place;
                for i in 0..SIGNS {
                    let msg = format!("message {i}");
                    provider
                        .sign(&key.id, mech, SignInput::Message(msg.as_bytes()))
                        .await
                        .unwrap();
                }
                mark();
                // The counts below are only meaningful for the path they claim to count.
                let in_place = provider.pool_stats().in_place - before;
                assert_eq!(in_place, expected, "signatures made in place");
            }
        }
        drop(maker);
    });
}
