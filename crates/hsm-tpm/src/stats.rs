//! [`TpmStats`]: counters a caller can read to see what the provider asked of the TPM.

use hsm_core::Result;

use crate::provider::TpmProvider;

/// What the provider has asked of the TPM since it connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TpmStats {
    /// Keys loaded into the TPM (`TPM2_Load`). A key that stays in the cache of loaded keys is
    /// loaded once however often it signs; a key evicted to make room is loaded again when next
    /// used.
    pub key_loads: u64,
}

impl TpmProvider {
    /// The provider's counters.
    pub async fn stats(&self) -> Result<TpmStats> {
        self.inner
            .worker
            .run(|tpm| {
                Ok(TpmStats {
                    key_loads: tpm.loads,
                })
            })
            .await
    }
}
