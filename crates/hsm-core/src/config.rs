//! Provider configuration: URIs of the RFC 7512 shape, and secrets from a `pin-source`.
//!
//! Every provider is configured the same way: a URI `scheme:attr=value;attr=value?query=value&...`
//! (the shape of `pkcs11:` URIs, RFC 7512) or the provider's typed builder; both are validated.
//! Secrets (PINs, passphrases) never come from the URI or a command-line argument itself, only
//! from a [`PinSource`]: an environment variable, a file, or an interactive prompt.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::error::HsmError;

/// A secret value (PIN, passphrase). Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }

    /// The secret bytes. Call only where the secret is consumed.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(Zeroizing::new(s.into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a PIN or passphrase comes from: `env:NAME`, `file:PATH` or `prompt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable.
    Env(String),
    /// A file; one trailing newline is removed.
    File(PathBuf),
    /// Ask interactively (the caller supplies the prompt).
    Prompt,
}

impl FromStr for PinSource {
    type Err = HsmError;
    fn from_str(s: &str) -> Result<Self, HsmError> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err(HsmError::invalid("pin-source env: needs a variable name"));
            }
            Ok(PinSource::Env(name.to_owned()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(HsmError::invalid("pin-source file: needs a path"));
            }
            Ok(PinSource::File(PathBuf::from(path)))
        } else if s == "prompt" {
            Ok(PinSource::Prompt)
        } else {
            Err(HsmError::invalid(
                "pin-source must be env:NAME, file:PATH or prompt (a PIN is never given directly)",
            ))
        }
    }
}

impl PinSource {
    /// Reads the secret. `prompt` is called only for [`PinSource::Prompt`].
    pub fn resolve(
        &self,
        prompt: impl FnOnce() -> Result<Secret, HsmError>,
    ) -> Result<Secret, HsmError> {
        match self {
            PinSource::Env(name) => match std::env::var_os(name) {
                Some(v) => Ok(Secret::new(v.into_encoded_bytes())),
                None => Err(HsmError::Unauthenticated {
                    reason: format!("environment variable {name} (pin-source) is not set"),
                }),
            },
            PinSource::File(path) => {
                let mut bytes =
                    Zeroizing::new(std::fs::read(path).map_err(|e| HsmError::Unauthenticated {
                        reason: format!("cannot read pin-source file {}: {e}", path.display()),
                    })?);
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                Ok(Secret::new(bytes.to_vec()))
            }
            PinSource::Prompt => prompt(),
        }
    }
}

/// A parsed provider URI: `scheme:attr=value;...?query=value&...`, percent-decoded.
///
/// Path attributes name the token or store and the object (`token=`, `path=`, `object=`, `id=`);
/// query attributes say how to reach it (`module-path=`, `pin-source=`). An attribute may appear
/// once. Providers check the names with [`ProviderUri::check_known`] so a typo is an error, not a
/// silently ignored setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderUri {
    /// The scheme (`soft`, `pkcs11`, ...).
    pub scheme: String,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl ProviderUri {
    /// Parses a URI.
    pub fn parse(uri: &str) -> Result<Self, HsmError> {
        let (scheme, rest) = uri.split_once(':').ok_or_else(|| {
            HsmError::invalid(format!(
                "provider URI {:?} has no scheme; expected e.g. soft:path=keys.hsm;object=mykey",
                redact_uri(uri)
            ))
        })?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(HsmError::invalid(format!("bad URI scheme {scheme:?}")));
        }
        let (path_part, query_part) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        let parse_attrs = |text: &str, sep: char| -> Result<Vec<(String, String)>, HsmError> {
            let mut out: Vec<(String, String)> = Vec::new();
            for item in text.split(sep).filter(|s| !s.is_empty()) {
                let (k, v) = item.split_once('=').ok_or_else(|| {
                    HsmError::invalid(format!("URI attribute {item:?} has no '=value'"))
                })?;
                let k = percent_decode(k)?;
                if k.contains("pin-value") || k == "pin" || k == "passphrase" {
                    return Err(HsmError::invalid(
                        "secrets are not accepted in a URI; use pin-source=env:NAME or file:PATH",
                    ));
                }
                if out.iter().any(|(e, _)| *e == k) {
                    return Err(HsmError::invalid(format!(
                        "URI attribute {k:?} appears twice"
                    )));
                }
                out.push((k, percent_decode(v)?));
            }
            Ok(out)
        };
        Ok(ProviderUri {
            scheme: scheme.to_ascii_lowercase(),
            path: parse_attrs(path_part, ';')?,
            query: parse_attrs(query_part, '&')?,
        })
    }

    /// An empty URI of `scheme`, to build with [`with_attr`](Self::with_attr) and
    /// [`with_query`](Self::with_query) and print with `Display` (which percent-encodes).
    pub fn new(scheme: impl Into<String>) -> Self {
        ProviderUri {
            scheme: scheme.into(),
            path: Vec::new(),
            query: Vec::new(),
        }
    }

    /// Adds a path attribute.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.path.push((name.into(), value.into()));
        self
    }

    /// Adds a query attribute.
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// A path attribute (`path=`, `token=`, `object=`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.path
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query attribute (`pin-source=`, `module-path=`).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `pin-source` query attribute, parsed.
    pub fn pin_source(&self) -> Result<Option<PinSource>, HsmError> {
        self.query("pin-source").map(str::parse).transpose()
    }

    /// Fails if an attribute is not one of `path_names` / `query_names`.
    pub fn check_known(&self, path_names: &[&str], query_names: &[&str]) -> Result<(), HsmError> {
        for (k, _) in &self.path {
            if !path_names.contains(&k.as_str()) {
                return Err(HsmError::invalid(format!(
                    "unknown {}: URI attribute {k:?}; known: {}",
                    self.scheme,
                    path_names.join(", ")
                )));
            }
        }
        for (k, _) in &self.query {
            if !query_names.contains(&k.as_str()) {
                return Err(HsmError::invalid(format!(
                    "unknown {}: URI query attribute {k:?}; known: {}",
                    self.scheme,
                    query_names.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for ProviderUri {
    /// The URI with every delimiter inside names and values percent-encoded, so it parses back
    /// to the same attributes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |attrs: &[(String, String)], sep: &str| {
            attrs
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join(sep)
        };
        write!(f, "{}:{}", self.scheme, join(&self.path, ";"))?;
        if !self.query.is_empty() {
            write!(f, "?{}", join(&self.query, "&"))?;
        }
        Ok(())
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// Errors quote a URI only after dropping anything that looks like an inline secret.
fn redact_uri(uri: &str) -> String {
    if uri.contains("pin") || uri.contains("pass") {
        "<uri not shown: it may contain a secret>".into()
    } else {
        uri.to_owned()
    }
}

fn percent_decode(s: &str) -> Result<String, HsmError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    HsmError::invalid(format!("bad percent-escape in URI part {s:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HsmError::invalid("URI attribute is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_shape() {
        let u = ProviderUri::parse(
            "pkcs11:token=My%20Token;object=k1;type=private?module-path=/usr/lib/x.so&pin-source=env:PIN",
        )
        .unwrap();
        assert_eq!(u.scheme, "pkcs11");
        assert_eq!(u.attr("token"), Some("My Token"));
        assert_eq!(u.query("module-path"), Some("/usr/lib/x.so"));
        assert_eq!(u.pin_source().unwrap(), Some(PinSource::Env("PIN".into())));
        assert!(
            u.check_known(&["token", "object", "type"], &["module-path", "pin-source"])
                .is_ok()
        );
        assert!(
            u.check_known(&["token"], &["module-path", "pin-source"])
                .is_err()
        );
    }

    #[test]
    fn refuses_bad_uris_and_inline_secrets() {
        assert!(ProviderUri::parse("no-scheme").is_err());
        assert!(ProviderUri::parse("soft:path=a;path=b").is_err());
        assert!(ProviderUri::parse("soft:path").is_err());
        assert!(ProviderUri::parse("soft:path=%zz").is_err());
        let e = ProviderUri::parse("pkcs11:token=t?pin-value=1234").unwrap_err();
        assert!(!e.to_string().contains("1234"), "{e}");
        assert!("1234".parse::<PinSource>().is_err());
    }

    #[test]
    fn display_round_trips() {
        let u = ProviderUri::new("soft")
            .with_attr("path", "my keys;v2?.hsm")
            .with_attr("object", "a=b")
            .with_query("pin-source", "env:PASS");
        let text = u.to_string();
        assert_eq!(ProviderUri::parse(&text).unwrap(), u, "{text}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn file_pin_source_strips_one_newline() {
        let dir = std::env::temp_dir().join(format!("hsm-core-pin-{}", std::process::id()));
        std::fs::write(&dir, b"p@ss\n").unwrap();
        let s = PinSource::File(dir.clone())
            .resolve(|| unreachable!())
            .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(s.expose(), b"p@ss");
    }
}
