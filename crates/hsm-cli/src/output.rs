//! What the commands print and write: text and JSON views of keys, public-key and signature
//! encodings, standard output, and output files.
//!
//! Output files are written atomically (a temporary file in the same directory, then a rename),
//! so an interrupted command never leaves half a signature or half a plaintext behind.

use std::io::{self, IsTerminal as _, Write as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::ValueEnum;
use hsm_core::{KeyInfo, KeyType, PublicKey};
use serde::Serialize;

use crate::error::{CliError, Context as _};

/// How `hsm keys show` encodes a public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PublicKeyFormat {
    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `openssl pkey -pubin` reads it.
    Pem,
    /// DER SubjectPublicKeyInfo (binary).
    Der,
    /// DER SubjectPublicKeyInfo in hex.
    Hex,
    /// DER SubjectPublicKeyInfo in base64 (the PEM body on one line).
    Base64,
    /// JSON Web Key (RFC 7517).
    Jwk,
}

impl PublicKeyFormat {
    /// The public key in this encoding.
    pub fn encode(self, key: &PublicKey) -> Result<Encoded, CliError> {
        Ok(match self {
            PublicKeyFormat::Pem => Encoded::Text(key.to_pem()),
            PublicKeyFormat::Der => Encoded::Binary(key.spki_der().to_vec()),
            PublicKeyFormat::Hex => Encoded::Text(format!("{}\n", hex::encode(key.spki_der()))),
            PublicKeyFormat::Base64 => {
                Encoded::Text(format!("{}\n", BASE64.encode(key.spki_der())))
            }
            PublicKeyFormat::Jwk => Encoded::Text(json_text(&key.to_jwk()?)?),
        })
    }
}

/// How a signature is stored or printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SignatureEncoding {
    /// The raw signature bytes: DER for ECDSA (the default), r || s for -fixed mechanisms, the
    /// plain signature for RSA and Ed25519. What `openssl dgst -verify -signature` reads.
    #[value(alias = "raw")]
    Der,
    /// Hex text.
    Hex,
    /// Base64 text.
    Base64,
}

impl SignatureEncoding {
    /// Encodes a signature; text encodings end with a newline.
    pub fn encode(self, signature: &[u8]) -> Encoded {
        match self {
            SignatureEncoding::Der => Encoded::Binary(signature.to_vec()),
            SignatureEncoding::Hex => Encoded::Text(format!("{}\n", hex::encode(signature))),
            SignatureEncoding::Base64 => Encoded::Text(format!("{}\n", BASE64.encode(signature))),
        }
    }

    /// Decodes a signature file's contents (surrounding whitespace allowed for text encodings).
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let text = || {
            std::str::from_utf8(bytes)
                .map(str::trim)
                .map_err(|_| "it is not text".to_owned())
        };
        match self {
            SignatureEncoding::Der => Ok(bytes.to_vec()),
            SignatureEncoding::Hex => hex::decode(text()?).map_err(|e| format!("not hex: {e}")),
            SignatureEncoding::Base64 => BASE64
                .decode(text()?)
                .map_err(|e| format!("not base64: {e}")),
        }
    }

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            SignatureEncoding::Der => "der",
            SignatureEncoding::Hex => "hex",
            SignatureEncoding::Base64 => "base64",
        }
    }
}

/// Encoded output, which knows whether it is safe to print on a terminal.
pub enum Encoded {
    /// Printable text.
    Text(String),
    /// Binary bytes.
    Binary(Vec<u8>),
}

impl Encoded {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Text(t) => t.as_bytes(),
            Encoded::Binary(b) => b,
        }
    }

    /// Writes to `out`, or to standard output, refusing to print binary on a terminal (it would
    /// garble the terminal and is never what was meant).
    pub fn emit(&self, out: Option<&Path>, what: &str) -> Result<(), CliError> {
        match (out, self) {
            (Some(path), _) => write_file(path, self.as_bytes(), FileMode::Public),
            (None, Encoded::Binary(_)) if io::stdout().is_terminal() => Err(CliError::new(
                format!("refusing to write binary {what} to a terminal: use --out FILE"),
            )),
            (None, _) => print_bytes(self.as_bytes()),
        }
    }
}

/// A key as the CLI shows it, in text and JSON: flat, with the names the CLI accepts.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// The label.
    pub label: String,
    /// The provider's id (what `id=` in a URI takes).
    pub id: String,
    /// The key type, e.g. `ec-p256`.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// What the key may do.
    pub usage: Vec<String>,
    /// Whether it may be wrapped out of the provider.
    pub extractable: bool,
    /// Whether its secret is never revealed in plaintext.
    pub sensitive: bool,
    /// Whether it outlives the session.
    pub persistent: bool,
}

impl From<&KeyInfo> for KeyView {
    fn from(k: &KeyInfo) -> Self {
        let usage = k.attributes.usage.to_string();
        KeyView {
            label: k.attributes.label.clone(),
            id: k.id.id.clone(),
            key_type: k.key_type,
            usage: usage
                .split(',')
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            extractable: k.attributes.extractable,
            sensitive: k.attributes.sensitive,
            persistent: k.attributes.persistent,
        }
    }
}

impl KeyView {
    /// The key's attributes, one per line, indented.
    pub fn details(&self) -> String {
        format!(
            "  label:       {}\n  id:          {}\n  type:        {}\n  usage:       {}\n  \
             extractable: {}\n  persistent:  {}\n",
            self.label,
            self.id,
            self.key_type,
            self.usage_text(),
            yes_no(self.extractable),
            yes_no(self.persistent),
        )
    }

    fn usage_text(&self) -> String {
        if self.usage.is_empty() {
            "-".into()
        } else {
            self.usage.join(",")
        }
    }
}

/// A table of keys: label, type, usage, extractable, id.
pub fn key_table(keys: &[KeyView]) -> String {
    let header = ["LABEL", "TYPE", "USAGE", "EXTRACTABLE", "ID"];
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            [
                k.label.clone(),
                k.key_type.to_string(),
                k.usage_text(),
                yes_no(k.extractable).to_owned(),
                k.id.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Pretty JSON with a trailing newline.
pub fn json_text(value: &impl Serialize) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(format!("cannot encode JSON output: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    print(&json_text(value)?)
}

/// Prints text on standard output.
pub fn print(text: &str) -> Result<(), CliError> {
    print_bytes(text.as_bytes())
}

/// Writes bytes to standard output and flushes (so a failure is seen here, not lost at exit).
pub fn print_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => CliError::OutputClosed,
            _ => CliError::new(format!("cannot write to standard output: {e}")),
        })
}

pub use hsm_core::files::FileMode;

/// Writes `bytes` to `path` atomically, replacing any existing file.
///
/// The data goes to a temporary file next to `path`, is flushed to disk, and is renamed over
/// `path`: a reader sees the old file or the complete new one, never a torn write.
pub fn write_file(path: &Path, bytes: &[u8], mode: FileMode) -> Result<(), CliError> {
    hsm_core::files::write_atomic(path, bytes, mode)
        .context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_encodings_round_trip() {
        let sig = [0x30u8, 0x45, 0x02, 0x20, 0xff];
        for enc in [
            SignatureEncoding::Der,
            SignatureEncoding::Hex,
            SignatureEncoding::Base64,
        ] {
            let encoded = enc.encode(&sig);
            assert_eq!(enc.decode(encoded.as_bytes()).unwrap(), sig, "{enc:?}");
        }
        assert!(SignatureEncoding::Hex.decode(b"zz").is_err());
    }

    #[test]
    fn table_aligns_columns() {
        let view = |label: &str| KeyView {
            label: label.into(),
            id: "00ff".into(),
            key_type: KeyType::EcP256,
            usage: vec!["sign".into(), "verify".into()],
            extractable: false,
            sensitive: true,
            persistent: true,
        };
        let table = key_table(&[view("a"), view("a-much-longer-label")]);
        let lines: Vec<&str> = table.lines().collect();
        let col = lines[0].find("TYPE").unwrap();
        assert_eq!(lines[1].find("ec-p256"), Some(col));
        assert_eq!(lines[2].find("ec-p256"), Some(col));
    }
}
