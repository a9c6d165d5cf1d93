//! Configuring the soft provider: a typed builder, or a `soft:` URI.
//!
//! ```text
//! soft:path=keys.hsm;object=release-key?pin-source=env:HSM_PASSPHRASE
//! ```
//! - `path`: the keystore file (created on first use when the builder allows it). Without
//!   `path` the provider keeps keys in memory only (for tests).
//! - `object` / `id`: the key a command acts on (read by callers such as the CLI).
//! - `pin-source`: where the passphrase comes from (`env:NAME`, `file:PATH`, `prompt`).

use std::path::PathBuf;

use hsm_core::{HsmError, PinSource, ProviderUri, Secret};

use crate::keystore::KdfParams;
use crate::provider::SoftProvider;

/// The path attributes a `soft:` URI may carry.
pub const URI_ATTRS: &[&str] = &["path", "object", "id", "type"];
/// The query attributes a `soft:` URI may carry.
pub const URI_QUERY: &[&str] = &["pin-source"];

/// Builds a [`SoftProvider`]. Validated in [`SoftBuilder::build`].
#[derive(Clone, Debug)]
pub struct SoftBuilder {
    pub(crate) path: Option<PathBuf>,
    pub(crate) passphrase: Option<Secret>,
    pub(crate) pin_source: Option<PinSource>,
    pub(crate) create: bool,
    pub(crate) kdf: KdfParams,
    pub(crate) salvage: bool,
}

impl SoftBuilder {
    /// A provider whose keys live in memory only and vanish when it is dropped (tests, scratch).
    pub fn in_memory() -> Self {
        SoftBuilder {
            path: None,
            passphrase: None,
            pin_source: None,
            create: false,
            kdf: KdfParams::default(),
            salvage: false,
        }
    }

    /// A provider backed by the keystore file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SoftBuilder {
            path: Some(path.into()),
            ..Self::in_memory()
        }
    }

    /// From a `soft:` URI (see the module docs).
    pub fn from_uri(uri: &ProviderUri) -> Result<Self, HsmError> {
        if uri.scheme != "soft" {
            return Err(HsmError::invalid(format!(
                "a soft provider URI starts with soft:, not {}:",
                uri.scheme
            )));
        }
        uri.check_known(URI_ATTRS, URI_QUERY)?;
        let mut b = match uri.attr("path") {
            Some(p) if !p.is_empty() => Self::file(p),
            Some(_) => return Err(HsmError::invalid("soft: path= is empty")),
            None => Self::in_memory(),
        };
        b.pin_source = uri.pin_source()?;
        Ok(b)
    }

    /// The keystore passphrase. Takes precedence over a `pin-source`.
    pub fn passphrase(mut self, passphrase: Secret) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// Where to read the passphrase from, if none is given directly.
    pub fn pin_source(mut self, source: PinSource) -> Self {
        self.pin_source = Some(source);
        self
    }

    /// Creates the keystore file if it does not exist (never overwrites one that does).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Argon2id cost for a new keystore (an existing one keeps the cost in its header).
    pub fn kdf_params(mut self, params: KdfParams) -> Self {
        self.kdf = params;
        self
    }

    /// Opens a damaged keystore read-only, skipping the damaged records, so the intact keys
    /// can still be used or wrapped out. Off by default: a damaged keystore fails to open.
    pub fn salvage(mut self, salvage: bool) -> Self {
        self.salvage = salvage;
        self
    }

    /// The keystore path, if file-backed.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The configured pin source, if any.
    pub fn configured_pin_source(&self) -> Option<&PinSource> {
        self.pin_source.as_ref()
    }

    /// Validates the configuration and opens the provider (deriving the keystore key runs on a
    /// blocking thread: Argon2id takes a fraction of a second by design).
    pub async fn build(self) -> Result<SoftProvider, HsmError> {
        SoftProvider::open(self).await
    }

    pub(crate) fn resolve_passphrase(&self) -> Result<Secret, HsmError> {
        if let Some(p) = &self.passphrase {
            return Ok(p.clone());
        }
        match &self.pin_source {
            Some(src) => src.resolve(|| {
                Err(HsmError::Unauthenticated {
                    reason: "pin-source=prompt needs an interactive caller; give the passphrase \
                             to the builder"
                        .into(),
                })
            }),
            None => Err(HsmError::Unauthenticated {
                reason: "the keystore needs a passphrase: set pin-source=env:NAME or file:PATH"
                    .into(),
            }),
        }
    }
}
