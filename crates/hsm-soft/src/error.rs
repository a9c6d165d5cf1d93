//! Mapping AWS-LC's opaque failures to `HsmError`.
//!
//! AWS-LC reports every failure as `Unspecified` (deliberately: no oracle for attackers), so each
//! call site says what it was doing, and the variant is chosen by what a failure there can mean.

use hsm_core::HsmError;

pub(crate) const PROVIDER: &str = "soft";

/// An AWS-LC call failed where only an internal fault can explain it.
pub(crate) fn crypto(what: &str) -> HsmError {
    HsmError::Backend {
        provider: PROVIDER.into(),
        message: format!("{what} failed in AWS-LC"),
        source: None,
    }
}

/// Authenticated decryption or unwrapping failed: wrong key, IV, AAD, or tampered input.
pub(crate) fn integrity(what: &str) -> HsmError {
    HsmError::IntegrityCheckFailed {
        reason: format!("{what}: wrong key, IV or AAD, or the data was altered"),
    }
}

/// An I/O failure on the keystore file.
pub(crate) fn io(what: String, e: std::io::Error) -> HsmError {
    HsmError::Unavailable {
        reason: format!("{what}: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    }
}

/// The provider does not offer this.
pub(crate) fn unsupported(what: impl std::fmt::Display) -> HsmError {
    HsmError::not_supported(PROVIDER, what)
}
