//! The conformance suite against the machine's own TPM through the Windows TPM Base Services
//! (TBS), the default TCTI on Windows.
//!
//! Runs only on Windows with `HSM_TEST_TBS=1` (a machine with a TPM 2.0 on which this user may
//! create keys under the owner hierarchy); everywhere else it prints why it is skipped. It
//! cannot pass yet: hsm-tpm's tss-esapi 7.7 has no TBS TCTI, so connecting returns
//! `NotSupported` (see the crate docs and `ci/windows-tpm.yml`, which does not set the variable).

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_tbs() {
    if !cfg!(windows) {
        println!("skipped: the TBS TCTI exists only on Windows");
        return;
    }
    if std::env::var_os("HSM_TEST_TBS").is_none() {
        println!("skipped: HSM_TEST_TBS is not set (set it on a Windows machine with a TPM 2.0)");
        return;
    }
    assert_eq!(hsm_tpm::DEFAULT_TCTI, "tbs");
    let dir = tempfile::tempdir().unwrap();
    let tpm = hsm_tpm::TpmBuilder::new(dir.path())
        .build()
        .await
        .unwrap_or_else(|e| panic!("connecting through TBS: {e:?}"));
    let report = hsm_core::conformance::run(hsm_core::Traced::wrap(Arc::new(tpm))).await;
    report.assert_passed();
}
