//! `CKR_*` codes: what each means for the session pool (retry? evict? log in again?) and which
//! `HsmError` the caller sees. The table is the one place this is decided.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use hsm_core::HsmError;

pub(crate) const PROVIDER: &str = "pkcs11";

/// What the pool does about a failed call before (perhaps) trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The session is gone (closed underneath us, device removed): never reuse it; retry on
    /// another session.
    EvictSession,
    /// The token forgot the login (someone logged out or closed every session): log in again,
    /// then retry.
    Relogin,
    /// An object handle went stale (object recreated, token re-initialised): forget cached
    /// handles, resolve them again, retry.
    ResolveHandles,
    /// The module lost its state (`C_Finalize` elsewhere, device error): initialise it again,
    /// reopen sessions, log in, retry.
    Reinitialize,
    /// Transient contention; retry as is.
    Retry,
    /// Permanent for this request: report it.
    Fail,
}

/// How the pool handles each `CKR_*` code.
pub(crate) fn recovery(e: &CkError) -> Recovery {
    let CkError::Pkcs11(rv, _) = e else {
        return Recovery::Fail;
    };
    match rv {
        RvError::SessionHandleInvalid | RvError::SessionClosed => Recovery::EvictSession,
        RvError::DeviceRemoved | RvError::TokenNotPresent => Recovery::Reinitialize,
        RvError::UserNotLoggedIn => Recovery::Relogin,
        RvError::ObjectHandleInvalid
        | RvError::KeyHandleInvalid
        | RvError::WrappingKeyHandleInvalid
        | RvError::UnwrappingKeyHandleInvalid => Recovery::ResolveHandles,
        RvError::CryptokiNotInitialized | RvError::DeviceError => Recovery::Reinitialize,
        RvError::SessionCount | RvError::FunctionCanceled | RvError::CantLock => Recovery::Retry,
        // An earlier operation on this session was abandoned half way (a panic in a caller):
        // the session is not usable for a new one.
        RvError::OperationActive => Recovery::EvictSession,
        _ => Recovery::Fail,
    }
}

fn function_name(f: &Function) -> String {
    format!("C_{f:?}")
}

/// `C_Sign CKR_SESSION_HANDLE_INVALID`, for logs.
pub(crate) fn ckr_name_of(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{} {}", function_name(f), ckr_name(rv)),
        other => other.to_string(),
    }
}

/// `CKR_KEY_FUNCTION_NOT_PERMITTED` from cryptoki's `KeyFunctionNotPermitted`: the name a PKCS#11
/// reader knows.
pub(crate) fn ckr_name(rv: &RvError) -> String {
    let mut out = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The `HsmError` for a cryptoki failure. `what` says what was being done (no secrets).
pub(crate) fn to_hsm(e: CkError, what: &str) -> HsmError {
    let CkError::Pkcs11(rv, f) = &e else {
        return match e {
            CkError::LibraryLoading(_) | CkError::MissingSymbol(_) => HsmError::Unavailable {
                reason: format!("{what}: cannot load the PKCS#11 module"),
                retryable: false,
                source: Some(Box::new(e)),
            },
            CkError::NotSupported => HsmError::not_supported(PROVIDER, what),
            _ => HsmError::backend(PROVIDER, what.to_owned(), e),
        };
    };
    let code = format!("{} returned {}", function_name(f), ckr_name(rv));
    let reason = format!("{what}: {code}");
    match rv {
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinExpired => HsmError::Unauthenticated { reason },
        RvError::PinLocked => HsmError::Unauthenticated {
            reason: format!("{reason} (the token locked the PIN after too many wrong attempts)"),
        },
        RvError::UserNotLoggedIn | RvError::UserPinNotInitialized => {
            HsmError::Unauthenticated { reason }
        }
        RvError::KeyFunctionNotPermitted
        | RvError::KeyUnextractable
        | RvError::KeyNotWrappable
        | RvError::ActionProhibited
        | RvError::TokenWriteProtected
        | RvError::SessionReadOnly
        | RvError::AttributeSensitive => HsmError::PermissionDenied { reason },
        RvError::MechanismInvalid | RvError::FunctionNotSupported | RvError::CurveNotSupported => {
            HsmError::NotSupported {
                operation: reason,
                provider: PROVIDER.into(),
            }
        }
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::WrappedKeyInvalid
        | RvError::WrappedKeyLenRange => HsmError::IntegrityCheckFailed { reason },
        RvError::ArgumentsBad
        | RvError::DataInvalid
        | RvError::DataLenRange
        | RvError::MechanismParamInvalid
        | RvError::TemplateIncomplete
        | RvError::TemplateInconsistent
        | RvError::AttributeValueInvalid
        | RvError::AttributeTypeInvalid
        | RvError::KeySizeRange
        | RvError::KeyTypeInconsistent
        | RvError::DomainParamsInvalid
        | RvError::WrappingKeyTypeInconsistent
        | RvError::UnwrappingKeyTypeInconsistent
        | RvError::WrappingKeySizeRange
        | RvError::UnwrappingKeySizeRange
        | RvError::PublicKeyInvalid => HsmError::InvalidInput { reason },
        RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => {
            HsmError::KeyNotFound { key: reason }
        }
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::SessionCount
        | RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::DeviceError
        | RvError::DeviceMemory
        | RvError::CryptokiNotInitialized
        | RvError::FunctionCanceled
        | RvError::CantLock => HsmError::Unavailable {
            reason,
            retryable: true,
            source: Some(Box::new(e)),
        },
        _ => HsmError::Backend {
            provider: PROVIDER.into(),
            message: reason,
            source: Some(Box::new(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck(rv: RvError) -> CkError {
        CkError::Pkcs11(rv, Function::Sign)
    }

    #[test]
    fn every_recoverable_code_has_a_recovery() {
        assert_eq!(
            recovery(&ck(RvError::SessionHandleInvalid)),
            Recovery::EvictSession
        );
        assert_eq!(
            recovery(&ck(RvError::SessionClosed)),
            Recovery::EvictSession
        );
        assert_eq!(recovery(&ck(RvError::UserNotLoggedIn)), Recovery::Relogin);
        assert_eq!(
            recovery(&ck(RvError::ObjectHandleInvalid)),
            Recovery::ResolveHandles
        );
        assert_eq!(
            recovery(&ck(RvError::CryptokiNotInitialized)),
            Recovery::Reinitialize
        );
        assert_eq!(
            recovery(&ck(RvError::DeviceRemoved)),
            Recovery::Reinitialize
        );
        assert_eq!(recovery(&ck(RvError::PinIncorrect)), Recovery::Fail);
        assert_eq!(recovery(&ck(RvError::SignatureInvalid)), Recovery::Fail);
    }

    #[test]
    fn errors_name_the_function_and_code() {
        let e = to_hsm(ck(RvError::KeyFunctionNotPermitted), "sign with k1");
        assert!(matches!(e, HsmError::PermissionDenied { .. }));
        let text = e.to_string();
        assert!(
            text.contains("C_Sign") && text.contains("CKR_KEY_FUNCTION_NOT_PERMITTED"),
            "{text}"
        );
        assert!(to_hsm(ck(RvError::DeviceRemoved), "x").is_retryable());
        assert!(!to_hsm(ck(RvError::PinIncorrect), "x").is_retryable());
    }
}
