//! `hsm quickstart`: the main job of hsm-rs in one command, on the embedded soft provider.
//!
//! It opens (or creates) a keystore, makes an EC P-256 key (or reuses the one a previous run
//! made: a key is never overwritten), signs a message, and checks the signature three ways: by
//! the provider, by `hsm-core`'s independent RustCrypto verifier, and by OpenSSL when it is
//! installed. The demo's files go into `hsm-quickstart/` next to the keystore; only those files
//! are ever replaced. It ends with the individual commands that do the same.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_core::{
    GenerateKeyRequest, HashAlg, KeyFilter, KeyInfo, KeyType, Mechanism, PinSource, ProviderUri,
    SignInput,
};
use hsm_soft::SoftBuilder;
use serde::Serialize;

use super::{Globals, Outcome};
use crate::cli::QuickstartArgs;
use crate::error::{CliError, Context as _};
use crate::open::{self, Keystore};
use crate::output::{self, FileMode, KeyView};

const LABEL: &str = "quickstart";
const DIR: &str = "hsm-quickstart";
const PUB_FILE: &str = "quickstart.pub.pem";
const MSG_FILE: &str = "quickstart.msg";
const SIG_FILE: &str = "quickstart.sig";
const MESSAGE: &[u8] = b"hsm-rs quickstart: signed by a key that never left its keystore\n";

/// What `--json` prints.
#[derive(Serialize)]
struct Summary<'a> {
    keystore: &'a Path,
    keystore_created: bool,
    key: KeyView,
    key_reused: bool,
    mechanism: String,
    files: Files,
    verified: Verified,
    public_key_pem: String,
}

#[derive(Serialize)]
struct Files {
    public_key: PathBuf,
    message: PathBuf,
    signature: PathBuf,
}

#[derive(Serialize)]
struct Verified {
    provider: bool,
    hsm_core: bool,
    /// What `openssl dgst -verify` printed, or `null` when OpenSSL is not installed.
    openssl: Option<String>,
}

/// Prints a step in text mode; JSON mode prints one summary at the end instead.
struct Report {
    json: bool,
}

impl Report {
    fn step(&self, what: &str, detail: impl AsRef<str>) -> Result<(), CliError> {
        if self.json {
            return Ok(());
        }
        output::print(&format!("{what:<10}  {}\n", detail.as_ref()))
    }
}

/// `hsm quickstart`.
pub async fn run(g: &Globals, args: QuickstartArgs) -> Result<Outcome, CliError> {
    let report = Report { json: g.json };
    let keystore = args.keystore.as_path();
    let dir = keystore
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from(DIR), |p| p.join(DIR));
    let existed = keystore
        .try_exists()
        .context(|| format!("cannot access keystore {}", keystore.display()))?;

    let provider = open::open_soft(
        SoftBuilder::file(keystore),
        g.pin_source.as_ref(),
        Keystore::CreateIfMissing,
    )
    .await?;
    let created = if existed { "opened" } else { "created" };
    report.step("keystore", format!("{} ({created})", keystore.display()))?;

    let (key, reused) = quickstart_key(provider.as_ref(), keystore).await?;
    let view = KeyView::from(&key);
    report.step(
        "key",
        if reused {
            format!(
                "reusing {LABEL} ({}, id {}) from an earlier run",
                view.key_type, view.id
            )
        } else {
            format!("generated {LABEL} ({}, id {})", view.key_type, view.id)
        },
    )?;

    let mechanism = Mechanism::ecdsa(HashAlg::Sha256);
    let public = provider.public_key(&key.id).await?;
    let signature = provider
        .sign(&key.id, &mechanism, SignInput::Message(MESSAGE))
        .await?;

    let by_provider = provider
        .verify(&key.id, &mechanism, SignInput::Message(MESSAGE), &signature)
        .await?;
    let by_core = hsm_core::verify::verify_signature(
        &public,
        &mechanism,
        SignInput::Message(MESSAGE),
        &signature,
    )?;
    if !(by_provider && by_core) {
        return Err(CliError::new(format!(
            "the new signature did not verify (provider: {by_provider}, hsm-core: {by_core}): \
             this is a bug, please report it"
        )));
    }

    fs::create_dir_all(&dir).context(|| format!("cannot create directory {}", dir.display()))?;
    let files = [
        (PUB_FILE, public.to_pem().into_bytes()),
        (MSG_FILE, MESSAGE.to_vec()),
        (SIG_FILE, signature.clone()),
    ];
    for (name, bytes) in &files {
        let path = dir.join(name);
        refuse_to_replace_keystore(&path, keystore)?;
        output::write_file(&path, bytes, FileMode::Public)?;
    }
    let shown = |name: &str| dir.join(name).display().to_string();
    report.step(
        "signed",
        format!(
            "{} with {mechanism}: {} ({} bytes, DER)",
            shown(MSG_FILE),
            shown(SIG_FILE),
            signature.len()
        ),
    )?;
    report.step("verified", "by the provider: valid")?;
    report.step(
        "verified",
        "by hsm-core's RustCrypto verifier (independent of the provider): valid",
    )?;

    let openssl = openssl_verify(&dir)?;
    report.step(
        "verified",
        match &openssl {
            Some(said) => format!("by OpenSSL: {said}"),
            None => "by OpenSSL: skipped (openssl is not on PATH)".to_owned(),
        },
    )?;

    if g.json {
        output::print_json(&Summary {
            keystore,
            keystore_created: !existed,
            key: view,
            key_reused: reused,
            mechanism: mechanism.name(),
            files: Files {
                public_key: dir.join(PUB_FILE),
                message: dir.join(MSG_FILE),
                signature: dir.join(SIG_FILE),
            },
            verified: Verified {
                provider: by_provider,
                hsm_core: by_core,
                openssl,
            },
            public_key_pem: public.to_pem(),
        })?;
    } else {
        output::print(&format!(
            "\npublic key ({}):\n{}\n{}",
            shown(PUB_FILE),
            public.to_pem(),
            equivalent_commands(keystore, &dir, g.pin_source.as_ref())
        ))?;
    }
    Ok(Outcome::Success)
}

/// The demo key: the existing `quickstart` key if there is a usable one, else a new one.
async fn quickstart_key(
    provider: &dyn hsm_core::HsmProvider,
    keystore: &Path,
) -> Result<(KeyInfo, bool), CliError> {
    let mut found = provider.find_keys(&KeyFilter::label(LABEL)).await?;
    match found.len() {
        0 => {
            let request = GenerateKeyRequest::new(LABEL, KeyType::EcP256);
            Ok((provider.generate_key(&request).await?, false))
        }
        1 => {
            let key = found.remove(0);
            let usage = key.attributes.usage;
            if key.key_type != KeyType::EcP256 || !usage.sign || !usage.verify {
                return Err(CliError::new(format!(
                    "keystore {} already has a key labelled {LABEL} ({}, usage {usage}) that \
                     the demo cannot use; it is left alone: use another --keystore",
                    keystore.display(),
                    key.key_type
                )));
            }
            Ok((key, true))
        }
        n => Err(CliError::new(format!(
            "keystore {} has {n} keys labelled {LABEL}; use another --keystore",
            keystore.display()
        ))),
    }
}

/// The demo replaces only its own files; a keystore given a demo file's name stays untouched.
fn refuse_to_replace_keystore(path: &Path, keystore: &Path) -> Result<(), CliError> {
    let same = match (fs::canonicalize(path), fs::canonicalize(keystore)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(CliError::new(format!(
            "{} is the keystore; the demo will not overwrite it",
            path.display()
        )));
    }
    Ok(())
}

/// Runs `openssl dgst -sha256 -verify` on the demo files: an implementation that shares no code
/// with hsm-rs. `None` if OpenSSL is not installed; an error if it rejects the signature.
fn openssl_verify(dir: &Path) -> Result<Option<String>, CliError> {
    // A blocking call on the async thread is fine here: nothing else runs in this process.
    let run = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", PUB_FILE])
        .args(["-signature", SIG_FILE, MSG_FILE])
        .current_dir(dir)
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::new(format!("cannot run openssl: {e}"))),
    };
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::new(format!(
            "OpenSSL did not verify the signature ({}): {said} {}",
            out.status,
            err.trim()
        )));
    }
    Ok(Some(said))
}

/// The same demo as individual commands, with the URI this run used.
fn equivalent_commands(keystore: &Path, dir: &Path, pin_source: Option<&PinSource>) -> String {
    let mut uri = ProviderUri::new("soft")
        .with_attr("path", keystore.display().to_string())
        .with_attr("object", LABEL);
    match pin_source {
        Some(PinSource::Env(name)) => uri = uri.with_query("pin-source", format!("env:{name}")),
        Some(PinSource::File(path)) => {
            uri = uri.with_query("pin-source", format!("file:{}", path.display()))
        }
        Some(PinSource::Prompt) | None => {}
    }
    let f = |name: &str| shell_quote(&dir.join(name).display().to_string());
    let (public, message, signature) = (f(PUB_FILE), f(MSG_FILE), f(SIG_FILE));
    format!(
        "The same, one command at a time:\n  \
         export HSM_URI={}\n  \
         hsm keys generate --type ec-p256    # done above; a second generate says \"already exists\"\n  \
         hsm keys show --out {public}\n  \
         hsm sign --in {message} --out {signature}\n  \
         hsm verify --in {message} --signature {signature}\n  \
         openssl dgst -sha256 -verify {public} -signature {signature} {message}\n",
        shell_quote(&uri.to_string())
    )
}

/// Quotes a word for a POSIX shell when it needs quoting.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_uri_parses_back() {
        let text = equivalent_commands(
            Path::new("my keys;v2.hsm"),
            &PathBuf::from(DIR),
            Some(&PinSource::Env("PASS".into())),
        );
        let line = text.lines().find(|l| l.contains("export")).unwrap();
        let quoted = line.trim().strip_prefix("export HSM_URI=").unwrap();
        let uri = quoted.trim_matches('\'');
        let parsed = hsm_core::ProviderUri::parse(uri).unwrap();
        assert_eq!(parsed.attr("path"), Some("my keys;v2.hsm"));
        assert_eq!(parsed.attr("object"), Some(LABEL));
        assert_eq!(parsed.query("pin-source"), Some("env:PASS"));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a/b.sig"), "a/b.sig");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("x;y"), "'x;y'");
    }
}
