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
pub const URI_QUERY: &[&str] = &[
    "owner-auth-source",
    "key-auth-source",
    "srk",
    "persist-srk",
    "attestation-key",
    "x-cache-size",
];

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

/// The storage root key's algorithm, and so its TCG-standard template and reserved handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SrkAlgorithm {
    /// ECC NIST P-256 (the default: fast to create, and the salted session is an ECDH).
    #[default]
    EccP256,
    /// RSA-2048, for TPMs without ECC.
    Rsa2048,
}

impl SrkAlgorithm {
    /// The persistent handle reserved for this SRK ("Registry of Reserved TPM 2.0 Handles":
    /// 0x81000001 RSA, 0x81000002 ECC). hsm-tpm uses what it finds there only when it is the
    /// standard SRK, and writes there only with [`TpmBuilder::persist_srk`] and when it is empty.
    pub fn persistent_handle(self) -> u32 {
        match self {
            SrkAlgorithm::Rsa2048 => 0x8100_0001,
            SrkAlgorithm::EccP256 => 0x8100_0002,
        }
    }
}

impl FromStr for SrkAlgorithm {
    type Err = HsmError;
    fn from_str(s: &str) -> Result<Self, HsmError> {
        match s {
            "ecc-p256" | "ecc" => Ok(SrkAlgorithm::EccP256),
            "rsa-2048" | "rsa" => Ok(SrkAlgorithm::Rsa2048),
            other => Err(HsmError::invalid(format!(
                "srk={other:?}: expected ecc-p256 or rsa-2048"
            ))),
        }
    }
}

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
    pub(crate) srk: SrkAlgorithm,
    pub(crate) persist_srk: bool,
    pub(crate) allow_plain_sessions: bool,
    pub(crate) attestation_key: Option<String>,
    /// Auth values of keys, by label or id.
    pub(crate) key_auths: Vec<(String, KeyAuth)>,
}

/// Where a key's auth value comes from.
#[derive(Clone)]
pub(crate) enum KeyAuth {
    Value(Secret),
    Source(PinSource),
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
            .field("srk", &self.srk)
            .field("persist_srk", &self.persist_srk)
            .field("allow_plain_sessions", &self.allow_plain_sessions)
            .field(
                "key_auths",
                &self.key_auths.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("attestation_key", &self.attestation_key)
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
            srk: SrkAlgorithm::default(),
            persist_srk: false,
            allow_plain_sessions: false,
            key_auths: Vec::new(),
            attestation_key: None,
        }
    }

    /// Parses a `tpm:` URI: `tpm:tcti=<TCTI>;key-dir=<DIR>[;object=<label>]` with query
    /// attributes `owner-auth-source=env:NAME|file:PATH`, `key-auth-source=env:NAME|file:PATH`
    /// (the auth value of the key named by `object=` or `id=`), `attestation-key=<label>`,
    /// `srk=ecc-p256|rsa-2048`,
    /// `persist-srk=true|false` and `x-cache-size=N`. `object=` and `id=` name a key for the
    /// caller (the CLI). `tcti=` may be left out to use the environment.
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
        if let Some(source) = uri.query("key-auth-source") {
            let key = uri.attr("object").or(uri.attr("id")).ok_or_else(|| {
                HsmError::invalid("key-auth-source= needs the key it is for: object=<label>")
            })?;
            b = b.key_auth_source(key, source.parse()?);
        }
        if let Some(ak) = uri.query("attestation-key") {
            b = b.attestation_key(ak);
        }
        if let Some(srk) = uri.query("srk") {
            b = b.srk_algorithm(srk.parse()?);
        }
        if let Some(v) = uri.query("persist-srk") {
            b = b.persist_srk(match v {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                other => {
                    return Err(HsmError::invalid(format!(
                        "persist-srk={other:?}: expected true or false"
                    )));
                }
            });
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

    /// The storage root key's algorithm (default ECC P-256).
    pub fn srk_algorithm(mut self, alg: SrkAlgorithm) -> Self {
        self.srk = alg;
        self
    }

    /// Makes the storage root key persistent at its reserved handle
    /// ([`SrkAlgorithm::persistent_handle`]) when that handle is empty, so later connections
    /// skip `TPM2_CreatePrimary` (slow on hardware TPMs). Needs the owner auth value when one is
    /// set. A handle that holds another key is left alone (and a log line says so).
    pub fn persist_srk(mut self, yes: bool) -> Self {
        self.persist_srk = yes;
        self
    }

    /// Connects even when the TPM cannot start the salted session that encrypts command
    /// parameters (then key blobs, digests and decrypted data cross the bus in the clear, and
    /// a log line says so). Off by default: such a connection fails with an error.
    pub fn allow_plain_sessions(mut self, yes: bool) -> Self {
        self.allow_plain_sessions = yes;
        self
    }

    /// The auth value of the key with this label or id. Keys made with
    /// [`TpmProvider::generate_key_with_auth`] need it in every later session; the TPM counts
    /// wrong values toward dictionary-attack lockout.
    pub fn key_auth(mut self, key: &str, auth: Secret) -> Self {
        self.key_auths.push((key.to_owned(), KeyAuth::Value(auth)));
        self
    }

    /// Reads the auth value of the key with this label or id from `source` when connecting.
    pub fn key_auth_source(mut self, key: &str, source: PinSource) -> Self {
        self.key_auths
            .push((key.to_owned(), KeyAuth::Source(source)));
        self
    }

    pub(crate) fn resolve_key_auths(&self) -> Result<Vec<(String, Secret)>, HsmError> {
        self.key_auths
            .iter()
            .map(|(key, auth)| {
                let secret = match auth {
                    KeyAuth::Value(v) => v.clone(),
                    KeyAuth::Source(s) => s.resolve(|| {
                        Err(HsmError::invalid(
                            "key-auth-source=prompt is not supported; use env:NAME or file:PATH",
                        ))
                    })?,
                };
                Ok((key.clone(), secret))
            })
            .collect()
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

    /// Attests keys with the attestation key labelled `label` (made by
    /// [`TpmProvider::create_attestation_key`]). Without it, the one attestation key in the key
    /// directory is used; with several, attesting fails until one is chosen here.
    pub fn attestation_key(mut self, label: impl Into<String>) -> Self {
        self.attestation_key = Some(label.into());
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

        let uri = ProviderUri::parse(
            "tpm:key-dir=/k;object=release?key-auth-source=env:RELEASE_AUTH&srk=rsa-2048\
             &persist-srk=true&attestation-key=ak",
        )
        .unwrap();
        let b = TpmBuilder::from_uri(&uri).unwrap();
        assert_eq!(b.srk, SrkAlgorithm::Rsa2048);
        assert!(b.persist_srk);
        assert_eq!(b.attestation_key.as_deref(), Some("ak"));
        assert_eq!(b.key_auths.len(), 1);
        assert_eq!(b.key_auths[0].0, "release");
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
        assert!(err("tpm:key-dir=/k?key-auth-source=env:A").contains("object=<label>"));
        assert!(err("tpm:key-dir=/k?srk=dsa").contains("ecc-p256 or rsa-2048"));
        assert!(err("tpm:key-dir=/k?persist-srk=maybe").contains("true or false"));
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
    fn debug_never_shows_an_auth_value() {
        let b = TpmBuilder::new("/k")
            .owner_auth(Secret::new(b"hunter2".to_vec()))
            .key_auth("release", Secret::new(b"swordfish".to_vec()));
        let text = format!("{b:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("swordfish"), "{text}");
        assert!(text.contains("release"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
