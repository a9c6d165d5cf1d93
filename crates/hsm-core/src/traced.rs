//! Observability: a `tracing` span around every provider operation.
//!
//! [`Traced`] wraps any provider and gives each call a span named `hsm` with the fields
//! `provider`, `operation`, `key` (label, or id when there is no label), `mechanism`, and, when the
//! call ends, `outcome` (`ok` or the error kind) and `duration_us`. It records no data, PIN or key
//! bytes: only names and sizes. Wrapping happens once, so every provider gets the same spans.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use zeroize::Zeroizing;

use crate::error::Result;
use crate::provider::{DynProvider, HsmProvider, KeyAttestation};
use crate::public_key::PublicKey;
use crate::types::{
    Capabilities, Ciphertext, DecryptRequest, EncryptRequest, GenerateKeyRequest, KeyFilter, KeyId,
    KeyInfo, Mechanism, ProviderInfo, SignInput, UnwrapKeyRequest,
};

/// A provider whose every operation runs in a `tracing` span. See the module docs.
#[derive(Debug, Clone)]
pub struct Traced {
    inner: DynProvider,
}

impl Traced {
    /// Wraps `inner`.
    pub fn new(inner: DynProvider) -> Self {
        Traced { inner }
    }

    /// Wraps `inner` and returns it ready to share.
    pub fn wrap(inner: DynProvider) -> DynProvider {
        std::sync::Arc::new(Traced::new(inner))
    }

    fn span(
        &self,
        operation: &'static str,
        key: Option<&str>,
        mechanism: Option<&Mechanism>,
    ) -> Span {
        tracing::info_span!(
            "hsm",
            provider = self.inner.name(),
            operation,
            key = key.unwrap_or(""),
            mechanism = mechanism.map(Mechanism::name).unwrap_or_default(),
            outcome = Empty,
            duration_us = Empty,
        )
    }
}

async fn observe<T>(span: Span, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let start = Instant::now();
    let result = fut.instrument(span.clone()).await;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("duration_us", micros);
    match &result {
        Ok(_) => {
            span.record("outcome", "ok");
            span.in_scope(|| tracing::debug!(duration_us = micros, "hsm operation ok"));
        }
        Err(e) => {
            span.record("outcome", e.kind());
            span.in_scope(
                // DEBUG, not WARN: the caller gets the error and decides whether to report it.
                || tracing::debug!(error = %e, duration_us = micros, "hsm operation failed"),
            );
        }
    }
    result
}

#[async_trait]
impl HsmProvider for Traced {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn info(&self) -> Result<ProviderInfo> {
        observe(self.span("info", None, None), self.inner.info()).await
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        observe(
            self.span("capabilities", None, None),
            self.inner.capabilities(),
        )
        .await
    }

    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo> {
        let span = self.span("generate_key", Some(&request.attributes.label), None);
        observe(span, self.inner.generate_key(request)).await
    }

    async fn public_key(&self, key: &KeyId) -> Result<PublicKey> {
        let span = self.span("public_key", Some(key.display_name()), None);
        observe(span, self.inner.public_key(key)).await
    }

    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo> {
        let span = self.span("get_key", Some(key.display_name()), None);
        observe(span, self.inner.get_key(key)).await
    }

    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>> {
        let span = self.span("find_keys", filter.label.as_deref(), None);
        observe(span, self.inner.find_keys(filter)).await
    }

    async fn delete_key(&self, key: &KeyId) -> Result<()> {
        let span = self.span("delete_key", Some(key.display_name()), None);
        observe(span, self.inner.delete_key(key)).await
    }

    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>> {
        let span = self.span("sign", Some(key.display_name()), Some(mechanism));
        observe(span, self.inner.sign(key, mechanism, input)).await
    }

    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool> {
        let span = self.span("verify", Some(key.display_name()), Some(mechanism));
        observe(span, self.inner.verify(key, mechanism, input, signature)).await
    }

    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext> {
        let span = self.span("encrypt", Some(key.display_name()), Some(mechanism));
        observe(span, self.inner.encrypt(key, mechanism, request)).await
    }

    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let span = self.span("decrypt", Some(key.display_name()), Some(mechanism));
        observe(span, self.inner.decrypt(key, mechanism, request)).await
    }

    async fn wrap_key(
        &self,
        wrapping_key: &KeyId,
        key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>> {
        let span = self.span("wrap_key", Some(key.display_name()), Some(mechanism));
        observe(span, self.inner.wrap_key(wrapping_key, key, mechanism)).await
    }

    async fn unwrap_key(
        &self,
        unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo> {
        let span = self.span(
            "unwrap_key",
            Some(&request.attributes.label),
            Some(mechanism),
        );
        observe(
            span,
            self.inner.unwrap_key(unwrapping_key, mechanism, request),
        )
        .await
    }

    fn attestation(&self) -> Option<&dyn KeyAttestation> {
        self.inner.attestation()
    }

    fn lifecycle(&self) -> Option<&dyn crate::KeyLifecycle> {
        self.inner.lifecycle()
    }
}
