//! tss-esapi failures as `HsmError`s: the one place that decides which TPM response code means
//! what to a caller. Every error keeps the TSS response code (layer and number) as its source.

use hsm_core::HsmError;
use tss_esapi::Error as TssError;
use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};

pub(crate) const PROVIDER: &str = "tpm";

/// TSS2 response-code layers (bits 16..23 of a `TSS2_RC`), from tpm2-tss `tss2_common.h`.
const LAYER_TPM: u32 = 0;
const LAYER_TCTI: u32 = 10;

/// The raw `TSS2_RC`. tss-esapi 7 keeps it in a private field and prints it only through
/// `Display` ("Response code value: 0x..."), so it is read back from there.
pub(crate) fn raw_rc(rc: &Tss2ResponseCode) -> Option<u32> {
    let text = match rc {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(code) => code.to_string(),
        Tss2ResponseCode::FormatOne(code) => code.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// What kind of TPM answer this is, if it came from the TPM itself.
pub(crate) fn tpm_kind(e: &TssError) -> Option<Tss2ResponseCodeKind> {
    match e {
        TssError::Tss2Error(rc) if raw_rc(rc).map(|r| r >> 16) == Some(LAYER_TPM) => rc.kind(),
        _ => None,
    }
}

/// Whether the TSS error comes from the TCTI layer: the TPM could not be reached.
pub(crate) fn is_tcti_error(e: &TssError) -> bool {
    match e {
        TssError::Tss2Error(rc) => raw_rc(rc).is_some_and(|raw| raw >> 16 == LAYER_TCTI),
        _ => false,
    }
}

/// The `HsmError` for a failed TSS call. `what` says what was being done (never a secret).
pub(crate) fn to_hsm(e: TssError, what: &str) -> HsmError {
    let TssError::Tss2Error(rc) = &e else {
        // A wrapper error: tss-esapi refused the request before it reached the TPM.
        return HsmError::backend(PROVIDER, format!("{what}: {e}"), e);
    };
    let raw = raw_rc(rc).unwrap_or(0);
    let code = format!("TSS2_RC {raw:#x}");
    if raw >> 16 == LAYER_TCTI {
        return HsmError::Unavailable {
            reason: format!("{what}: the TPM cannot be reached ({code}: {e})"),
            retryable: true,
            source: Some(Box::new(e)),
        };
    }
    if raw >> 16 == LAYER_TPM {
        match rc.kind() {
            Some(
                Tss2ResponseCodeKind::ObjectMemory
                | Tss2ResponseCodeKind::SessionMemory
                | Tss2ResponseCodeKind::Memory
                | Tss2ResponseCodeKind::Retry
                | Tss2ResponseCodeKind::Yielded
                | Tss2ResponseCodeKind::Testing
                | Tss2ResponseCodeKind::ContextGap,
            ) => {
                return HsmError::Unavailable {
                    reason: format!("{what}: the TPM is busy or out of memory ({code}: {e})"),
                    retryable: true,
                    source: Some(Box::new(e)),
                };
            }
            Some(Tss2ResponseCodeKind::Lockout) => {
                return HsmError::Unavailable {
                    reason: format!("{what}: the TPM is in dictionary-attack lockout ({code})"),
                    retryable: false,
                    source: Some(Box::new(e)),
                };
            }
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                return HsmError::Unauthenticated {
                    reason: format!("{what}: the TPM refused the authorization ({code})"),
                };
            }
            Some(Tss2ResponseCodeKind::Integrity) => {
                return HsmError::Corrupted {
                    what: what.to_owned(),
                    reason: format!(
                        "the TPM says the key blob fails its integrity check: damaged, or made \
                         under another storage root key or TPM ({code})"
                    ),
                };
            }
            _ => {}
        }
    }
    HsmError::backend(PROVIDER, format!("{what}: {code}: {e}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::constants::response_code::Tss2ResponseCode;

    #[test]
    fn raw_codes_are_read_back() {
        // TPM_RC_OBJECT_MEMORY (a format-zero warning) and a TCTI I/O error.
        let object_memory = Tss2ResponseCode::from(0x902);
        assert_eq!(raw_rc(&object_memory), Some(0x902));
        let err = to_hsm(TssError::Tss2Error(object_memory), "loading a key");
        assert!(err.is_retryable(), "{err:?}");
        let io = to_hsm(
            TssError::Tss2Error(Tss2ResponseCode::from(0xA000A)),
            "signing",
        );
        assert!(matches!(io, HsmError::Unavailable { .. }), "{io:?}");
    }
}
