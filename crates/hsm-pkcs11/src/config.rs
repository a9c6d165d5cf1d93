//! Configuring the PKCS#11 provider: a typed builder, or an RFC 7512 `pkcs11:` URI.
//!
//! ```text
//! pkcs11:token=signing;object=release-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:HSM_PIN
//! ```
//! Path attributes: `token` (label), `serial`, `slot-id` choose the token (label or serial is
//! the default way: SoftHSM renumbers slots when a token is initialised); `manufacturer` and
//! `model` must match when given; `object`, `id` and `type` name a key for callers such as the
//! CLI. Query attributes: `module-path` (required), `pin-source` (`env:NAME`, `file:PATH`,
//! `prompt`); `pin-value` is refused. Vendor extensions (RFC 7512 §2.3 reserves no `x-` names):
//! `x-pool-size` (sessions), `x-init-args` (the `C_Initialize` reserved string NSS softokn
//! needs), `x-profile` (force a vendor profile by name), `x-in-place-below-us` (see
//! [`Pkcs11Builder::in_place_below`]; `0` hands every call to a worker thread).

use std::path::PathBuf;
use std::time::Duration;

use hsm_core::{HsmError, PinSource, ProviderUri, Secret};

use crate::provider::Pkcs11Provider;

/// The path attributes a `pkcs11:` URI may carry.
pub const URI_ATTRS: &[&str] = &[
    "token",
    "serial",
    "slot-id",
    "manufacturer",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "object",
    "id",
    "type",
];
/// The query attributes a `pkcs11:` URI may carry.
pub const URI_QUERY: &[&str] = &[
    "module-path",
    "module-name",
    "pin-source",
    "x-pool-size",
    "x-init-args",
    "x-profile",
    "x-in-place-below-us",
];

/// How the token is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// `CK_TOKEN_INFO.label`.
    pub label: Option<String>,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: Option<String>,
    /// The slot id (changes when tokens are initialised; prefer label or serial).
    pub slot: Option<u64>,
    /// `CK_TOKEN_INFO.manufacturerID`, checked when given.
    pub manufacturer: Option<String>,
    /// `CK_TOKEN_INFO.model`, checked when given.
    pub model: Option<String>,
}

impl TokenSelector {
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label {
            parts.push(format!("label {l:?}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s:?}"));
        }
        if let Some(s) = self.slot {
            parts.push(format!("slot {s}"));
        }
        if parts.is_empty() {
            "the only token present".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Builds a [`Pkcs11Provider`]; validated in [`Pkcs11Builder::build`].
#[derive(Clone, Debug)]
pub struct Pkcs11Builder {
    pub(crate) module: PathBuf,
    pub(crate) token: TokenSelector,
    pub(crate) pin: Option<Secret>,
    pub(crate) pin_source: Option<PinSource>,
    pub(crate) pool_size: usize,
    pub(crate) retry_budget: u32,
    pub(crate) init_args: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) in_place_below: Duration,
}

/// The default of [`Pkcs11Builder::in_place_below`]: Tokio's rule of thumb for the longest a
/// task should run between two `.await`s is 10 to 100 µs.
pub const IN_PLACE_BELOW: Duration = Duration::from_micros(100);

impl Pkcs11Builder {
    /// A provider on the PKCS#11 module at `module` (a `.so`/`.dll`/`.dylib` path).
    pub fn new(module: impl Into<PathBuf>) -> Self {
        Pkcs11Builder {
            module: module.into(),
            token: TokenSelector::default(),
            pin: None,
            pin_source: None,
            // A local token is CPU-bound: one session per core keeps every core busy.
            pool_size: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retry_budget: 3,
            init_args: None,
            profile: None,
            in_place_below: IN_PLACE_BELOW,
        }
    }

    /// From a `pkcs11:` URI (RFC 7512; see the module docs).
    pub fn from_uri(uri: &ProviderUri) -> Result<Self, HsmError> {
        if uri.scheme != "pkcs11" {
            return Err(HsmError::invalid(format!(
                "a PKCS#11 URI starts with pkcs11:, not {}:",
                uri.scheme
            )));
        }
        uri.check_known(URI_ATTRS, URI_QUERY)?;
        let module = uri.query("module-path").ok_or_else(|| {
            HsmError::invalid("a pkcs11: URI needs module-path=<path of the PKCS#11 library>")
        })?;
        let mut b = Self::new(module);
        b.token = TokenSelector {
            label: uri.attr("token").map(str::to_owned),
            serial: uri.attr("serial").map(str::to_owned),
            slot: uri
                .attr("slot-id")
                .map(|s| {
                    s.parse()
                        .map_err(|_| HsmError::invalid(format!("slot-id {s:?} is not a number")))
                })
                .transpose()?,
            manufacturer: uri.attr("manufacturer").map(str::to_owned),
            model: uri.attr("model").map(str::to_owned),
        };
        b.pin_source = uri.pin_source()?;
        if let Some(n) = uri.query("x-pool-size") {
            b = b
                .pool_size(n.parse().map_err(|_| {
                    HsmError::invalid(format!("x-pool-size {n:?} is not a number"))
                })?);
        }
        b.init_args = uri.query("x-init-args").map(str::to_owned);
        b.profile = uri.query("x-profile").map(str::to_owned);
        if let Some(us) = uri.query("x-in-place-below-us") {
            b = b.in_place_below(Duration::from_micros(us.parse().map_err(|_| {
                HsmError::invalid(format!(
                    "x-in-place-below-us {us:?} is not a whole number of microseconds"
                ))
            })?));
        }
        Ok(b)
    }

    /// Choose the token by label.
    pub fn token_label(mut self, label: impl Into<String>) -> Self {
        self.token.label = Some(label.into());
        self
    }

    /// Choose the token by serial number.
    pub fn token_serial(mut self, serial: impl Into<String>) -> Self {
        self.token.serial = Some(serial.into());
        self
    }

    /// Choose the token by slot id.
    pub fn slot(mut self, slot: u64) -> Self {
        self.token.slot = Some(slot);
        self
    }

    /// The user PIN. Takes precedence over a `pin-source`.
    pub fn pin(mut self, pin: Secret) -> Self {
        self.pin = Some(pin);
        self
    }

    /// Where to read the PIN from, if none is given directly.
    pub fn pin_source(mut self, source: PinSource) -> Self {
        self.pin_source = Some(source);
        self
    }

    /// How many sessions (and worker threads) serve operations. Default: one per CPU core.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Async signatures with a key whose signatures have taken less than this on average run
    /// on the caller's thread, like any computation that short, instead of being handed to a
    /// worker thread and their answer handed back. Default [`IN_PLACE_BELOW`] (100 µs);
    /// `Duration::ZERO` hands every call to a worker.
    ///
    /// A key's first signatures always run on a worker, which measures them; so do those of a
    /// key that has taken longer, until its average falls below the limit again. A network or
    /// USB HSM (milliseconds per signature) never runs in place; a software token or a fast
    /// local HSM does, and saves the two thread hand-offs that cost a fifth of a SoftHSM ECDSA
    /// signature (BENCHMARKS.md). Only an idle pooled session is used in place: opening a
    /// session, recovering from a failure and waiting for the token are always done by a worker.
    pub fn in_place_below(mut self, limit: Duration) -> Self {
        self.in_place_below = limit;
        self
    }

    /// How many times a call is retried after a recoverable failure (session closed, login
    /// lost, stale handle, module re-initialised). Default 3.
    pub fn retry_budget(mut self, n: u32) -> Self {
        self.retry_budget = n;
        self
    }

    /// The string passed as `C_Initialize`'s reserved argument (NSS softokn's
    /// `configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=`).
    pub fn init_args(mut self, args: impl Into<String>) -> Self {
        self.init_args = Some(args.into());
        self
    }

    /// Forces a vendor profile by name instead of detecting it from the token info.
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }

    /// The pin source from the URI or builder, if any.
    pub fn configured_pin_source(&self) -> Option<&PinSource> {
        self.pin_source.as_ref()
    }

    /// Loads the module, finds the token, logs in and returns the provider. Blocking PKCS#11
    /// calls run on a blocking thread.
    pub async fn build(self) -> Result<Pkcs11Provider, HsmError> {
        Pkcs11Provider::connect(self).await
    }

    pub(crate) fn resolve_pin(&self) -> Result<Secret, HsmError> {
        if let Some(p) = &self.pin {
            return Ok(p.clone());
        }
        match &self.pin_source {
            Some(src) => src.resolve(|| {
                Err(HsmError::Unauthenticated {
                    reason:
                        "pin-source=prompt needs an interactive caller; give the PIN to the builder"
                            .into(),
                })
            }),
            None => Err(HsmError::Unauthenticated {
                reason: "the token needs a PIN: set pin-source=env:NAME or file:PATH".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_selects_token_and_module() {
        let uri = ProviderUri::parse(
            "pkcs11:token=signing;serial=abc;object=k?module-path=/lib/x.so&pin-source=env:PIN&x-pool-size=3",
        )
        .unwrap();
        let b = Pkcs11Builder::from_uri(&uri).unwrap();
        assert_eq!(b.module, PathBuf::from("/lib/x.so"));
        assert_eq!(b.token.label.as_deref(), Some("signing"));
        assert_eq!(b.token.serial.as_deref(), Some("abc"));
        assert_eq!(b.pool_size, 3);
        assert_eq!(b.pin_source, Some(PinSource::Env("PIN".into())));
        assert_eq!(b.in_place_below, IN_PLACE_BELOW);
        let b = Pkcs11Builder::from_uri(
            &ProviderUri::parse("pkcs11:token=t?module-path=/x.so&x-in-place-below-us=0").unwrap(),
        )
        .unwrap();
        assert_eq!(b.in_place_below, Duration::ZERO);
    }

    #[test]
    fn bad_uris_are_clear() {
        let e =
            Pkcs11Builder::from_uri(&ProviderUri::parse("pkcs11:token=t").unwrap()).unwrap_err();
        assert!(e.to_string().contains("module-path"), "{e}");
        let e = Pkcs11Builder::from_uri(
            &ProviderUri::parse("pkcs11:tokn=t?module-path=/x.so").unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tokn"), "{e}");
        let e = Pkcs11Builder::from_uri(
            &ProviderUri::parse("pkcs11:slot-id=one?module-path=/x.so").unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("slot-id"), "{e}");
        let e = Pkcs11Builder::from_uri(
            &ProviderUri::parse("pkcs11:token=t?module-path=/x.so&x-in-place-below-us=1ms")
                .unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("x-in-place-below-us \"1ms\""), "{e}");
    }
}
