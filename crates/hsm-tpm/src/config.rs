//! [`TpmBuilder`]: which TPM (a TCTI), where the key files live, and the `tpm:` URI.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hsm_core::{HsmError, PinSource, ProviderUri, Secret};
use tss_esapi::TctiNameConf;

use crate::provider::TpmProvider;

/// Path attributes a `tpm:` URI may carry.
pub const URI_ATTRS: &[&str] = &["tcti", "key-dir", "object", "id"];
/// Query attributes a `tpm:` URI may carry.
pub const URI_QUERY: &[&str] = &["owner-auth-source", "x-cache-size"];

/// The environment variables read for the TCTI when none is given, in order (the ones
/// tpm2-tools read).
pub const TCTI_ENV_VARS: &[&str] = &["TPM2TOOLS_TCTI", "TCTI"];

/// The TCTI used when none is given and none is in the environment: the Windows TPM Base
/// Services on Windows (`tbs`, as tpm2-tools spells it), else the kernel's resource manager.
pub const DEFAULT_TCTI: &str = if cfg!(windows) {
    "tbs"
} else {
    "device:/dev/tpmrm0"
};

/// The persistent handle of the storage root key in the TCG provisioning guidance. Used when
/// it holds the standard ECC P-256 SRK; never created, evicted or overwritten by hsm-tpm.
pub const SRK_PERSISTENT_HANDLE: u32 = 0x8100_0001;

/// Builds a [`TpmProvider`].
///
/// ```no_run
/// # async fn demo() -> Result<(), hsm_core::HsmError> {
/// let uri = hsm_core::ProviderUri::parse(
///     "tpm:tcti=swtpm:host=127.0.0.1,port=2321;key-dir=/var/lib/myapp/tpm-keys",
/// )?;
/// let tpm = hsm_tpm::TpmBuilder::from_uri(&uri)?.build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TpmBuilder {
    pub(crate) tcti: Option<String>,
    pub(crate) key_dir: PathBuf,
    pub(crate) owner_auth: Option<PinSource>,
    pub(crate) owner_auth_value: Option<Secret>,
    pub(crate) cache_size: Option<usize>,
    pub(crate) create_key_dir: bool,
}

// Written by hand so that no auth value is ever printed (the pin source only names where it is).
impl fmt::Debug for TpmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmBuilder")
            .field("tcti", &self.tcti)
            .field("key_dir", &self.key_dir)
            .field("owner_auth_source", &self.owner_auth)
            .field(
                "owner_auth_value",
                &self.owner_auth_value.as_ref().map(|_| "***"),
            )
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

impl TpmBuilder {
    /// A builder for the TPM named by the environment ([`TCTI_ENV_VARS`], else
    /// [`DEFAULT_TCTI`]), keeping key files in `key_dir`.
    pub fn new(key_dir: impl Into<PathBuf>) -> Self {
        TpmBuilder {
            tcti: None,
            key_dir: key_dir.into(),
            owner_auth: None,
            owner_auth_value: None,
            cache_size: None,
            create_key_dir: false,
        }
    }

    /// Parses a `tpm:` URI: `tpm:tcti=<TCTI>;key-dir=<DIR>[;object=<label>]` with query
    /// attributes `owner-auth-source=env:NAME|file:PATH` and `x-cache-size=N`. `object=` and `id=`
    /// name a key for the caller (the CLI); the provider itself ignores them. `tcti=` may be left
    /// out to use the environment.
    pub fn from_uri(uri: &ProviderUri) -> Result<Self, HsmError> {
        if uri.scheme != "tpm" {
            return Err(HsmError::invalid(format!(
                "not a tpm: URI (scheme {:?})",
                uri.scheme
            )));
        }
        uri.check_known(URI_ATTRS, URI_QUERY)?;
        let key_dir = uri.attr("key-dir").ok_or_else(|| {
            HsmError::invalid(
                "a tpm: URI needs key-dir=<directory> (where the key blobs are kept), e.g. \
                 tpm:tcti=device:/dev/tpmrm0;key-dir=/var/lib/app/tpm-keys",
            )
        })?;
        let mut b = TpmBuilder::new(key_dir);
        if let Some(tcti) = uri.attr("tcti") {
            b = b.tcti(tcti)?;
        }
        if let Some(source) = uri.query("owner-auth-source") {
            b = b.owner_auth_source(source.parse()?);
        }
        if let Some(n) = uri.query("x-cache-size") {
            let n: usize = n.parse().map_err(|_| {
                HsmError::invalid(format!("x-cache-size={n:?} is not a positive number"))
            })?;
            b = b.cache_size(n)?;
        }
        Ok(b)
    }

    /// Uses this TCTI (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `mssim:...`,
    /// `tabrmd:...`, and on Windows `tbs`). Checked here, so a typo fails before any connection
    /// is tried.
    pub fn tcti(mut self, tcti: &str) -> Result<Self, HsmError> {
        parse_tcti(tcti)?;
        self.tcti = Some(tcti.to_owned());
        Ok(self)
    }

    /// Reads the owner hierarchy's auth value from `source` when connecting (needed only to
    /// create the storage root key on a TPM whose owner auth is set).
    pub fn owner_auth_source(mut self, source: PinSource) -> Self {
        self.owner_auth = Some(source);
        self
    }

    /// Uses this owner hierarchy auth value.
    pub fn owner_auth(mut self, auth: Secret) -> Self {
        self.owner_auth_value = Some(auth);
        self
    }

    /// How many keys stay loaded in the TPM (default: what the TPM guarantees,
    /// `TPM_PT_HR_TRANSIENT_MIN`, minus one slot for the storage root key).
    pub fn cache_size(mut self, n: usize) -> Result<Self, HsmError> {
        if n == 0 {
            return Err(HsmError::invalid("the key cache needs at least one slot"));
        }
        self.cache_size = Some(n);
        Ok(self)
    }

    /// Creates the key directory (mode 0700) if it is missing, instead of failing.
    pub fn create_key_dir(mut self, yes: bool) -> Self {
        self.create_key_dir = yes;
        self
    }

    /// The key directory.
    pub fn key_dir(&self) -> &Path {
        &self.key_dir
    }

    /// The TCTI this builder will use: the one given, else the first of [`TCTI_ENV_VARS`] that
    /// is set, else [`DEFAULT_TCTI`].
    pub fn resolved_tcti(&self) -> Result<String, HsmError> {
        if let Some(t) = &self.tcti {
            return Ok(t.clone());
        }
        for var in TCTI_ENV_VARS {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                parse_tcti(&v).map_err(|e| HsmError::invalid(format!("{var}: {e}")))?;
                return Ok(v);
            }
        }
        Ok(DEFAULT_TCTI.into())
    }

    pub(crate) fn resolve_owner_auth(&self) -> Result<Option<Secret>, HsmError> {
        if let Some(v) = &self.owner_auth_value {
            return Ok(Some(v.clone()));
        }
        self.owner_auth
            .as_ref()
            .map(|s| {
                s.resolve(|| {
                    Err(HsmError::invalid(
                        "owner-auth-source=prompt is not supported; use env:NAME or file:PATH",
                    ))
                })
            })
            .transpose()
    }

    /// Connects to the TPM, sets up the storage root key and starts the worker thread.
    pub async fn build(self) -> Result<TpmProvider, HsmError> {
        TpmProvider::connect(self).await
    }
}

/// Parses a TCTI string with tss-esapi's own parser, with an error that says what is accepted.
pub(crate) fn parse_tcti(tcti: &str) -> Result<TctiNameConf, HsmError> {
    if tcti == "tbs" || tcti.starts_with("tbs:") {
        return tbs();
    }
    TctiNameConf::from_str(tcti).map_err(|e| {
        HsmError::invalid(format!(
            "bad TCTI {tcti:?} ({e}); expected device:/dev/tpmrm0, \
             swtpm:host=127.0.0.1,port=2321, mssim:host=..,port=.., tabrmd:bus_name=.. \
             or (on Windows) tbs"
        ))
    })
}

/// The Windows TPM Base Services TCTI (tpm2-tss `tcti-tbs`).
#[cfg(not(windows))]
fn tbs() -> Result<TctiNameConf, HsmError> {
    Err(HsmError::invalid(
        "the TBS TCTI exists only on Windows (TPM Base Services); here use \
         device:/dev/tpmrm0, tabrmd:, or swtpm:/mssim: for a simulator",
    ))
}

/// The Windows TPM Base Services TCTI (tpm2-tss `tcti-tbs`).
///
/// tss-esapi 7.7's `TctiNameConf` has no TBS variant and its `Context` can only be made from
/// one (the variant is in tss-esapi 8, which needs tpm2-tss 4.1 or later; hsm-tpm stays on 7.x
/// for Debian 12's tpm2-tss 3.2). Until hsm-tpm moves to 8, this says so; then it returns
/// `TctiNameConf::Tbs`.
#[cfg(windows)]
fn tbs() -> Result<TctiNameConf, HsmError> {
    Err(HsmError::not_supported(
        crate::error::PROVIDER,
        "the Windows TBS TCTI with tss-esapi 7.7 (it needs tss-esapi 8's TctiNameConf::Tbs); \
         use swtpm: or mssim: to reach a TPM simulator",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_tcti_and_key_dir() {
        let uri = ProviderUri::parse(
            "tpm:tcti=swtpm:host=127.0.0.1,port=2321;key-dir=/tmp/k;object=release?x-cache-size=2",
        )
        .unwrap();
        let b = TpmBuilder::from_uri(&uri).unwrap();
        assert_eq!(b.tcti.as_deref(), Some("swtpm:host=127.0.0.1,port=2321"));
        assert_eq!(b.key_dir, Path::new("/tmp/k"));
        assert_eq!(b.cache_size, Some(2));
        assert_eq!(b.resolved_tcti().unwrap(), "swtpm:host=127.0.0.1,port=2321");
    }

    #[test]
    fn uri_errors_are_clear() {
        let err = |u: &str| {
            TpmBuilder::from_uri(&ProviderUri::parse(u).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err("tpm:tcti=device:/dev/tpmrm0").contains("key-dir"));
        assert!(err("tpm:key-dir=/k;tcti=swtmp:port=1").contains("bad TCTI"));
        assert!(err("tpm:key-dir=/k;tcti=swtpm:host=h,port=notaport").contains("bad TCTI"));
        assert!(err("tpm:key-dir=/k;token=x").contains("unknown tpm: URI attribute"));
        assert!(err("tpm:key-dir=/k?x-cache-size=0").contains("at least one"));
        assert!(err("pkcs11:key-dir=/k").contains("not a tpm: URI"));
        assert!(err("tpm:key-dir=/k?owner-auth-source=hunter2").contains("pin-source"));
    }

    #[test]
    fn tbs_is_the_windows_default_and_refused_elsewhere() {
        if cfg!(windows) {
            assert_eq!(DEFAULT_TCTI, "tbs");
            let err = TpmBuilder::new("/k").tcti("tbs").unwrap_err();
            assert!(matches!(err, HsmError::NotSupported { .. }), "{err:?}");
        } else {
            assert_eq!(DEFAULT_TCTI, "device:/dev/tpmrm0");
            let err = TpmBuilder::new("/k").tcti("tbs").unwrap_err().to_string();
            assert!(err.contains("the TBS TCTI exists only on Windows"), "{err}");
            let uri = ProviderUri::parse("tpm:tcti=tbs;key-dir=/k").unwrap();
            let err = TpmBuilder::from_uri(&uri).unwrap_err().to_string();
            assert!(err.contains("only on Windows"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_the_owner_auth() {
        let b = TpmBuilder::new("/k").owner_auth(Secret::new(b"hunter2".to_vec()));
        let text = format!("{b:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
