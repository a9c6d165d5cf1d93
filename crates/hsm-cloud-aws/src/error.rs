//! AWS SDK failures: how each may be retried ([`classify`]) and what it means to the caller
//! ([`to_hsm`]).

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use hsm_core::HsmError;
use hsm_core::remote::Failure;

/// The provider's name in errors and spans.
pub(crate) const PROVIDER: &str = "aws-kms";

/// How a failed call may be retried.
pub(crate) fn classify<E, R>(e: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(s) => match s.err().code() {
            Some("ThrottlingException" | "LimitExceededException" | "TooManyRequestsException") => {
                Failure::Throttled
            }
            Some("KMSInternalException" | "DependencyTimeoutException" | "ServiceUnavailable") => {
                Failure::Transient
            }
            _ => Failure::Final,
        },
        // The connection could not be made: the request never left.
        SdkError::DispatchFailure(d)
            if d.is_io() && d.as_connector_error().is_some_and(|c| refused(c)) =>
        {
            Failure::NotSent
        }
        SdkError::DispatchFailure(d) if d.is_user() => Failure::Final,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::Transient
        }
        SdkError::ConstructionFailure(_) => Failure::Final,
        _ => Failure::Transient,
    }
}

/// The messages of an error and its sources, outermost first, without repeats: what went wrong
/// on the wire ("Connection refused (os error 111)") without the SDK's `Debug` dump.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Whether the error chain holds a refused or unreachable connection.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The caller's error for a failed call. `what` says what was being done (no secrets).
pub(crate) fn to_hsm<E, R>(e: SdkError<E, R>, what: &str) -> HsmError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match &e {
        SdkError::ServiceError(s) => (
            s.err().code().unwrap_or("unknown").to_owned(),
            s.err().message().unwrap_or("").to_owned(),
        ),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            return HsmError::Unavailable {
                reason: format!("{what}: AWS KMS cannot be reached ({})", error_chain(&e)),
                retryable: true,
                source: Some(Box::new(e)),
            };
        }
        _ => {
            return HsmError::backend(PROVIDER, format!("{what}: {}", error_chain(&e)), e);
        }
    };
    let reason = format!("{what}: {code}: {message}");
    match code.as_str() {
        "NotFoundException" => HsmError::KeyNotFound { key: reason },
        // A key scheduled for deletion is gone as far as its users are concerned.
        "KMSInvalidStateException" if message.contains("pending deletion") => {
            HsmError::KeyNotFound { key: reason }
        }
        "AlreadyExistsException" => HsmError::AlreadyExists { what: reason },
        "DisabledException" | "KMSInvalidStateException" | "AccessDeniedException" => {
            HsmError::PermissionDenied { reason }
        }
        "InvalidCiphertextException"
        | "KMSInvalidSignatureException"
        | "KMSInvalidMacException"
        | "IncorrectKeyException" => HsmError::IntegrityCheckFailed { reason },
        "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException" => {
            HsmError::Unauthenticated { reason }
        }
        "UnsupportedOperationException" => HsmError::NotSupported {
            operation: reason,
            provider: PROVIDER.into(),
        },
        "ValidationException"
        | "InvalidKeyUsageException"
        | "InvalidArnException"
        | "InvalidAliasNameException"
        | "InvalidImportTokenException"
        | "IncorrectKeyMaterialException"
        | "ExpiredImportTokenException"
        | "InvalidMarkerException" => HsmError::InvalidInput { reason },
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException" => HsmError::Unavailable {
            reason,
            retryable: true,
            source: Some(Box::new(e)),
        },
        _ => HsmError::backend(PROVIDER, reason, e),
    }
}
