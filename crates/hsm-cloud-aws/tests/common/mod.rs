//! Finding the KMS emulators `cargo xtask test-sims` (or `sims up`) started.

#![allow(dead_code, reason = "each test binary uses part of this")]

use hsm_cloud_aws::{AwsKmsBuilder, AwsKmsProvider};
use hsm_core::Secret;

/// The emulators, as xtask names them in `HSM_TEST_<NAME>_ENDPOINT`.
pub const MOTO: &str = "MOTO";
pub const LOCALKMS: &str = "LOCALKMS";

/// The endpoint of emulator `name`, or `None` after printing why the test is skipped (a failure
/// under `HSM_TEST_REQUIRE_ALL=1`, as xtask runs them).
pub fn endpoint(name: &str) -> Option<String> {
    let var = format!("HSM_TEST_{name}_ENDPOINT");
    match std::env::var(&var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let why = format!(
                "{var} is not set: run the tests through `cargo xtask test-sims`, or \
                 `eval \"$(cargo xtask sims up)\"` first"
            );
            assert!(
                std::env::var("HSM_TEST_REQUIRE_ALL").map_or(true, |v| v.is_empty()),
                "{why}"
            );
            println!("skipped: {why}");
            None
        }
    }
}

/// A builder for the emulator at `endpoint`, with the dummy credentials emulators accept.
pub fn builder(endpoint: &str) -> AwsKmsBuilder {
    AwsKmsBuilder::new()
        .region("us-east-1")
        .endpoint(endpoint)
        .static_credentials(
            Secret::new("AKIAHSMRSTEST"),
            Secret::new("emulator-accepts-any"),
        )
}

/// A provider for emulator `name`, or `None` (skipped, see [`endpoint`]).
pub async fn provider(name: &str) -> Option<AwsKmsProvider> {
    let endpoint = endpoint(name)?;
    Some(
        builder(&endpoint)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}
