//! The shared conformance suite against the soft provider, in memory and file-backed.

use std::sync::Arc;

use hsm_core::{Secret, Traced};
use hsm_soft::{KdfParams, SoftBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    let p = SoftBuilder::in_memory().build().await.unwrap();
    hsm_core::conformance::run(Traced::wrap(Arc::new(p)))
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_backed() {
    let dir = tempfile::tempdir().unwrap();
    let p = SoftBuilder::file(dir.path().join("keys.hsm"))
        .passphrase(Secret::from("conformance passphrase".to_string()))
        .create_if_missing(true)
        .kdf_params(KdfParams::INSECURE_FOR_TESTS)
        .build()
        .await
        .unwrap();
    hsm_core::conformance::run(Arc::new(p))
        .await
        .assert_passed();
}
