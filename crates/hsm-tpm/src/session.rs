//! Parameter encryption: one salted HMAC session, AES-128-CFB, for every command that carries
//! a key blob, a digest or a signature between host and TPM.
//!
//! The session is salted with the storage root key (ECDH on P-256 for an ECC SRK), so its key
//! is unknown to anyone watching the bus or the TCTI socket, and it is unbound (the keys hsm-tpm
//! makes have an empty auth value, so the session key is the salt's). Each command sets the
//! `decrypt` attribute only when its first command parameter is a sized buffer (the TPM encrypts
//! nothing else, and refuses the attribute otherwise) and `encrypt` only when its first response
//! parameter is one.

use tss_esapi::Context;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::SymmetricDefinition;

use hsm_core::HsmError;

use crate::error::to_hsm;
use crate::worker::Tpm;

/// Which of a command's parameters the session encrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Params {
    /// The first command parameter (host to TPM): `TPM2_Load`'s private blob, `TPM2_Sign`'s
    /// digest.
    In,
    /// Both directions: `TPM2_Create` (sensitive data in, private blob out); `TPM2_Certify`
    /// and `TPM2_Quote` (nonce in, statement out).
    Both,
}

/// Starts the salted HMAC session. When the TPM cannot, the connection fails, unless plain
/// password sessions are `allowed` (then `Ok(None)`, and a warning is logged).
pub(crate) fn start_salted_session(
    ctx: &mut Context,
    srk: KeyHandle,
    allowed: bool,
) -> Result<Option<AuthSession>, HsmError> {
    let started = ctx.execute_without_session(|ctx| {
        ctx.start_auth_session(
            Some(srk),
            None,
            None,
            SessionType::Hmac,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
    });
    let err = match started {
        Ok(Some(session)) => return Ok(Some(session)),
        Ok(None) => HsmError::backend(
            crate::error::PROVIDER,
            "starting a salted session",
            std::io::Error::other("the TPM returned no session"),
        ),
        Err(e) => to_hsm(e, "starting a salted session"),
    };
    if !allowed {
        return Err(HsmError::Unavailable {
            reason: format!(
                "parameter encryption is unavailable ({err}); refusing to send key blobs and \
                 data in the clear (TpmBuilder::allow_plain_sessions permits it)"
            ),
            retryable: false,
            source: Some(Box::new(err)),
        });
    }
    tracing::warn!(
        error = %err,
        "parameter encryption is off: commands use password sessions"
    );
    Ok(None)
}

/// Runs `f` with the provider's salted session (attributes set for `params`), or with a null
/// password session when there is none.
pub(crate) fn with_session<T>(
    tpm: &mut Tpm,
    params: Params,
    f: impl FnOnce(&mut Context) -> Result<T, tss_esapi::Error>,
) -> Result<T, tss_esapi::Error> {
    match prepared(tpm, params)? {
        Some(session) => tpm.ctx.execute_with_session(Some(session), f),
        None => tpm.ctx.execute_with_nullauth_session(f),
    }
}

/// Runs `f`, a command with two authorized handles (`TPM2_Certify`: the object, then the
/// signing key), with the salted session (attributes set for `params`) for the first and a
/// password session for the second. Without a salted session both are password sessions.
pub(crate) fn with_two_sessions<T>(
    tpm: &mut Tpm,
    params: Params,
    f: impl FnOnce(&mut Context) -> Result<T, tss_esapi::Error>,
) -> Result<T, tss_esapi::Error> {
    let first = prepared(tpm, params)?.unwrap_or(AuthSession::Password);
    tpm.ctx
        .execute_with_sessions((Some(first), Some(AuthSession::Password), None), f)
}

/// The salted session with its attributes set for `params`, if there is one.
fn prepared(tpm: &mut Tpm, params: Params) -> Result<Option<AuthSession>, tss_esapi::Error> {
    let Some(session) = tpm.session else {
        return Ok(None);
    };
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(true)
        .with_encrypt(params == Params::Both)
        .build();
    tpm.ctx.tr_sess_set_attributes(session, attributes, mask)?;
    Ok(Some(session))
}

impl Tpm {
    /// Starts a policy session (or, with [`SessionType::Trial`], a trial session that only
    /// computes a policy digest). `salted` salts it with the SRK and sets AES-128-CFB, so that a
    /// response parameter can come back encrypted (`TPM2_Unseal`); it is ignored when the
    /// provider runs without parameter encryption.
    pub(crate) fn start_policy_session(
        &mut self,
        kind: SessionType,
        salted: bool,
        what: &str,
    ) -> Result<PolicySession, HsmError> {
        let (salt, symmetric) = match (salted, self.session) {
            (true, Some(_)) => (Some(self.srk), SymmetricDefinition::AES_128_CFB),
            _ => (None, SymmetricDefinition::Null),
        };
        let session = self
            .ctx
            .execute_without_session(|ctx| {
                ctx.start_auth_session(salt, None, None, kind, symmetric, HashingAlgorithm::Sha256)
            })
            .map_err(|e| to_hsm(e, what))?
            .ok_or_else(|| {
                HsmError::backend(
                    crate::error::PROVIDER,
                    format!("{what}: the TPM returned no session"),
                    std::io::Error::other("no session"),
                )
            })?;
        if salt.is_some() {
            let (attributes, mask) = SessionAttributesBuilder::new()
                .with_continue_session(true)
                .with_encrypt(true)
                .build();
            self.ctx
                .tr_sess_set_attributes(session, attributes, mask)
                .map_err(|e| to_hsm(e, what))?;
        }
        PolicySession::try_from(session).map_err(|e| to_hsm(e, what))
    }

    /// Flushes a policy session (every path that starts one ends here, success or not).
    pub(crate) fn flush_policy_session(&mut self, session: PolicySession) {
        let handle: ObjectHandle = SessionHandle::from(session).into();
        if let Err(e) = self.ctx.flush_context(handle) {
            tracing::warn!(error = %e, "flushing a policy session failed");
        }
    }
}
