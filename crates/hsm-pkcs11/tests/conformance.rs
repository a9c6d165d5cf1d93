//! The shared conformance suite against three PKCS#11 implementations we did not write.
//! Differences between them are handled by the vendor profiles, not by skipping.

mod common;

use std::sync::Arc;

async fn run(name: &'static str) {
    let Some(peer) = common::peer(name) else {
        return;
    };
    let p = peer
        .builder()
        .build()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    println!("{name}: profile {}", p.profile().name);
    let report = hsm_core::conformance::run(hsm_core::Traced::wrap(Arc::new(p.clone()))).await;
    println!("{name}: pool {:?}", p.pool_stats());
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_softhsm2() {
    run("SOFTHSM2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kryoptic() {
    run("KRYOPTIC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_nss() {
    run("NSS").await;
}
