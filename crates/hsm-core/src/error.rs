//! The one error type every provider returns.
//!
//! Variants are semantic: each names something a caller can act on (retry, ask for a PIN, pick
//! another mechanism, report bad input). Whatever the backend said (a `CKR_*` code, a `TPM_RC`, an
//! HTTP status) is kept as the error's `source`, so nothing is lost for diagnosis.
//!
//! No variant carries a PIN, a passphrase or key bytes: messages name keys by label or id and
//! describe the problem, never the secret.

use std::error::Error as StdError;
use std::fmt;

/// A boxed error from a backend library (cryptoki, tss-esapi, an SDK), kept as the source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with [`HsmError`].
pub type Result<T, E = HsmError> = std::result::Result<T, E>;

/// Everything that can go wrong in an hsm-rs operation.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// No key with this id (or label) exists, or it was deleted.
    #[error("key not found: {key}")]
    KeyNotFound {
        /// The id or label that was looked up.
        key: String,
    },

    /// The object to create exists already (a key label, a keystore file).
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What exists.
        what: String,
    },

    /// The caller is authenticated but the key's policy forbids this (usage flags,
    /// non-extractable key, read-only keystore).
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Which policy refused it.
        reason: String,
    },

    /// Login is missing or failed: wrong PIN or passphrase, expired credentials.
    #[error("not authenticated: {reason}")]
    Unauthenticated {
        /// What failed (never the secret itself).
        reason: String,
    },

    /// The request is malformed: wrong length, a mechanism that does not fit the key, a bad URI.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },

    /// This provider does not offer this operation, key type or mechanism. It is also absent
    /// from the provider's [`Capabilities`](crate::Capabilities).
    #[error("{provider} does not support {operation}")]
    NotSupported {
        /// The operation, key type or mechanism asked for.
        operation: String,
        /// The provider's name.
        provider: String,
    },

    /// Authenticated decryption failed: wrong key, IV, AAD, or tampered ciphertext or wrapped key.
    #[error("integrity check failed: {reason}")]
    IntegrityCheckFailed {
        /// What was being checked.
        reason: String,
    },

    /// Stored data (a keystore file, a key blob) is damaged or truncated. Nothing was written.
    #[error("corrupted {what}: {reason}")]
    Corrupted {
        /// What is damaged.
        what: String,
        /// How it is damaged.
        reason: String,
    },

    /// The backend cannot be reached or is busy (network, device removed, locked by another
    /// process, throttled). `retryable` says whether the same call may succeed later.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is unavailable.
        reason: String,
        /// Whether trying again later may succeed.
        retryable: bool,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other backend failure; `source` keeps the vendor's code and message.
    #[error("{provider} error: {message}")]
    Backend {
        /// The provider's name.
        provider: String,
        /// A short description (for example the name of the failed C function and its `CKR_*`).
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<BoxError>,
    },
}

impl HsmError {
    /// Whether the same call may succeed if tried again later (after a backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HsmError::Unavailable {
                retryable: true,
                ..
            }
        )
    }

    /// A short stable name of the variant, for logs, metrics and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            HsmError::KeyNotFound { .. } => "key-not-found",
            HsmError::AlreadyExists { .. } => "already-exists",
            HsmError::PermissionDenied { .. } => "permission-denied",
            HsmError::Unauthenticated { .. } => "unauthenticated",
            HsmError::InvalidInput { .. } => "invalid-input",
            HsmError::NotSupported { .. } => "not-supported",
            HsmError::IntegrityCheckFailed { .. } => "integrity-check-failed",
            HsmError::Corrupted { .. } => "corrupted",
            HsmError::Unavailable { .. } => "unavailable",
            HsmError::Backend { .. } => "backend",
        }
    }

    /// Shorthand for [`HsmError::KeyNotFound`].
    pub fn key_not_found(key: impl fmt::Display) -> Self {
        HsmError::KeyNotFound {
            key: key.to_string(),
        }
    }

    /// Shorthand for [`HsmError::InvalidInput`].
    pub fn invalid(reason: impl Into<String>) -> Self {
        HsmError::InvalidInput {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`HsmError::NotSupported`].
    pub fn not_supported(provider: impl Into<String>, operation: impl fmt::Display) -> Self {
        HsmError::NotSupported {
            operation: operation.to_string(),
            provider: provider.into(),
        }
    }

    /// Shorthand for [`HsmError::PermissionDenied`].
    pub fn denied(reason: impl Into<String>) -> Self {
        HsmError::PermissionDenied {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`HsmError::Backend`] with a source.
    pub fn backend(
        provider: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        HsmError::Backend {
            provider: provider.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

// `Debug` shows the same text as `Display` plus the source chain: the variants hold no secrets,
// and a readable chain is what a person debugging a CKR_ code wants.
impl fmt::Debug for HsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmError::{}({self})", self.kind())?;
        let mut source = StdError::source(self);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_only_when_marked() {
        let e = HsmError::Unavailable {
            reason: "throttled".into(),
            retryable: true,
            source: None,
        };
        assert!(e.is_retryable());
        assert!(!HsmError::key_not_found("k").is_retryable());
        assert!(
            !HsmError::Unavailable {
                reason: "gone".into(),
                retryable: false,
                source: None
            }
            .is_retryable()
        );
    }

    #[test]
    fn debug_keeps_the_vendor_source() {
        let e = HsmError::backend(
            "pkcs11",
            "C_Sign failed",
            std::io::Error::other("CKR_DEVICE_ERROR"),
        );
        let text = format!("{e:?}");
        assert!(text.contains("C_Sign failed"), "{text}");
        assert!(text.contains("CKR_DEVICE_ERROR"), "{text}");
        assert!(StdError::source(&e).is_some());
    }
}
