//! From a URI to an open provider and a key: the only place that knows which providers this
//! binary has, and the only place that handles secrets.
//!
//! Adding a provider (gcp-kms, azure-kv, ...) is one match arm in [`open`] and one entry in
//! [`BUILT_IN`]; the commands only ever see an `Arc<dyn HsmProvider>`.
//!
//! Secrets come from, in order: `--pin-source`, the URI's `pin-source`, a prompt when standard
//! input is a terminal. Never from an argument: see `cli.rs`.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;

use hsm_cloud_aws::AwsKmsBuilder;
use hsm_core::{
    DynProvider, HsmError, HsmProvider, KeyFilter, KeyId, KeyInfo, PinSource, ProviderUri, Secret,
    Traced,
};
use hsm_pkcs11::Pkcs11Builder;
use hsm_soft::SoftBuilder;
use hsm_tpm::TpmBuilder;

use crate::error::CliError;

/// The provider schemes this binary can open.
pub const BUILT_IN: &[&str] = &["soft", "pkcs11", "tpm", "aws-kms"];

/// Whether a missing keystore may be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keystore {
    /// It must exist (every command but `keys generate` and `quickstart`).
    MustExist,
    /// Create it if missing (never overwrites one that exists).
    CreateIfMissing,
}

/// Parses a provider URI. Refuses inline secrets (`pin-value=`) without echoing them.
pub fn parse_uri(text: &str) -> Result<ProviderUri, CliError> {
    Ok(ProviderUri::parse(text)?)
}

/// Opens the provider `uri` names, wrapped in [`Traced`] so `-v` shows every operation.
pub async fn open(
    uri: &ProviderUri,
    pin_source: Option<&PinSource>,
    keystore: Keystore,
) -> Result<DynProvider, CliError> {
    match uri.scheme.as_str() {
        "soft" => open_soft(SoftBuilder::from_uri(uri)?, pin_source, keystore).await,
        "pkcs11" => open_pkcs11(Pkcs11Builder::from_uri(uri)?, pin_source).await,
        "tpm" => open_tpm(TpmBuilder::from_uri(uri)?, pin_source).await,
        "aws-kms" => open_aws_kms(AwsKmsBuilder::from_uri(uri)?, pin_source).await,
        other => Err(CliError::new(format!(
            "provider scheme {other} is not built into this hsm binary (available: {})",
            BUILT_IN.join(", ")
        ))),
    }
}

/// Opens a soft keystore: file-backed keystores are unlocked with a passphrase, in-memory ones
/// need none.
pub async fn open_soft(
    builder: SoftBuilder,
    pin_source: Option<&PinSource>,
    keystore: Keystore,
) -> Result<DynProvider, CliError> {
    let location = builder
        .path()
        .map_or_else(|| "memory".to_owned(), |p| p.display().to_string());
    let builder = match builder.path().map(Path::to_owned) {
        None => builder,
        Some(path) => {
            let exists = path.try_exists().map_err(|e| {
                CliError::new(format!("cannot access keystore {}: {e}", path.display()))
            })?;
            // Checked here, before asking for a passphrase that could not be used anyway.
            if !exists && keystore == Keystore::MustExist {
                return Err(CliError::new(format!(
                    "keystore {} does not exist (hsm keys generate creates it)",
                    path.display()
                )));
            }
            let source = pin_source.or(builder.configured_pin_source());
            let passphrase = read_secret(
                source,
                &SecretRequest {
                    holder: "the keystore",
                    location: &format!("keystore {location}"),
                    kind: "passphrase",
                    new: !exists,
                },
            )?;
            builder
                .passphrase(passphrase)
                .create_if_missing(keystore == Keystore::CreateIfMissing)
        }
    };
    let provider = builder.build().await?;
    tracing::info!(provider = "soft", keystore = %location, "provider opened");
    Ok(Traced::wrap(Arc::new(provider)))
}

/// Opens a PKCS#11 token and logs in with its user PIN.
pub async fn open_pkcs11(
    builder: Pkcs11Builder,
    pin_source: Option<&PinSource>,
) -> Result<DynProvider, CliError> {
    let source = pin_source.or(builder.configured_pin_source());
    let pin = read_secret(
        source,
        &SecretRequest {
            holder: "the token",
            location: "the PKCS#11 token",
            kind: "PIN",
            new: false,
        },
    )?;
    let provider = builder.pin(pin).build().await?;
    tracing::info!(
        provider = "pkcs11",
        profile = provider.profile().name,
        "provider opened"
    );
    Ok(Traced::wrap(Arc::new(provider)))
}

/// Opens a TPM. Its secrets (a key's auth value, the owner auth) are named in the URI
/// (`key-auth-source=`, `owner-auth-source=`), since a TPM has no single login to prompt for.
pub async fn open_tpm(
    builder: TpmBuilder,
    pin_source: Option<&PinSource>,
) -> Result<DynProvider, CliError> {
    if pin_source.is_some() {
        return Err(CliError::new(
            "a TPM has no PIN: give a key's auth value with key-auth-source=env:NAME or \
             file:PATH in the tpm: URI (and the owner's with owner-auth-source=)",
        ));
    }
    let provider = builder.create_key_dir(true).build().await?;
    tracing::info!(provider = "tpm", "provider opened");
    Ok(Traced::wrap(Arc::new(provider)))
}

/// Opens AWS KMS. Credentials come from the standard AWS chain, or from the URI's
/// `access-key-source=`/`secret-key-source=`; there is no PIN.
pub async fn open_aws_kms(
    builder: AwsKmsBuilder,
    pin_source: Option<&PinSource>,
) -> Result<DynProvider, CliError> {
    if pin_source.is_some() {
        return Err(CliError::new(
            "AWS KMS has no PIN: credentials come from the AWS credential chain, or from \
             access-key-source= and secret-key-source= (env:NAME or file:PATH) in the aws-kms: URI",
        ));
    }
    let provider = builder.build().await?;
    tracing::info!(provider = "aws-kms", "provider opened");
    Ok(Traced::wrap(Arc::new(provider)))
}

/// What a secret is for, to word prompts and errors.
struct SecretRequest<'a> {
    /// What needs it: "the keystore", "the token".
    holder: &'a str,
    /// Which one, as prompts name it: "keystore keys.hsm", "token MyToken".
    location: &'a str,
    /// "passphrase" or "PIN".
    kind: &'a str,
    /// A new secret is being set: ask twice on a terminal so a typo does not lock the data away.
    new: bool,
}

/// Reads a secret from its source, or from a prompt when standard input is a terminal.
fn read_secret(source: Option<&PinSource>, req: &SecretRequest<'_>) -> Result<Secret, CliError> {
    match source {
        Some(s @ (PinSource::Env(_) | PinSource::File(_))) => {
            Ok(s.resolve(|| Err(HsmError::invalid("not a prompt source")))?)
        }
        _ if std::io::stdin().is_terminal() => prompt_secret(req),
        Some(PinSource::Prompt) => Err(CliError::new(format!(
            "pin-source prompt needs a terminal, and standard input is not one: use \
             --pin-source env:NAME or file:PATH for {}",
            req.location
        ))),
        None => Err(CliError::new(format!(
            "{} needs a {}: use --pin-source env:NAME or file:PATH",
            req.holder, req.kind
        ))),
    }
}

fn prompt_secret(req: &SecretRequest<'_>) -> Result<Secret, CliError> {
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(Secret::from)
            .map_err(|e| {
                CliError::new(format!(
                    "cannot read the {} from the terminal: {e}",
                    req.kind
                ))
            })
    };
    if !req.new {
        return ask(format!("{} for {}: ", capitalized(req.kind), req.location));
    }
    let first = ask(format!("New {} for {}: ", req.kind, req.location))?;
    if first.is_empty() {
        return Err(CliError::new(format!("the {} must not be empty", req.kind)));
    }
    let second = ask(format!("Repeat the {}: ", req.kind))?;
    if first.expose() != second.expose() {
        return Err(CliError::new(format!(
            "the two {}s do not match; nothing was created",
            req.kind
        )));
    }
    Ok(first)
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Which key a URI names: `object=LABEL`, `id=ID`, or both (which must agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySelector {
    label: Option<String>,
    id: Option<String>,
}

impl KeySelector {
    /// The key named by `uri`; an error if it names none. Checked before the provider is opened,
    /// so a URI without a key fails before any passphrase is asked for.
    pub fn from_uri(uri: &ProviderUri) -> Result<Self, CliError> {
        let label = uri.attr("object").map(str::to_owned);
        let id = uri.attr("id").map(str::to_owned);
        if label.is_none() && id.is_none() {
            return Err(CliError::new(
                "the URI names no key: add ;object=LABEL or ;id=ID \
                 (e.g. soft:path=keys.hsm;object=mykey)",
            ));
        }
        Ok(KeySelector { label, id })
    }

    /// Finds the key: `KeyNotFound` if it does not exist, an error if a label is ambiguous.
    pub async fn resolve(&self, provider: &dyn HsmProvider) -> Result<KeyInfo, CliError> {
        if let Some(id) = &self.id {
            let info = provider.get_key(&KeyId::new(id.as_str())).await?;
            if let Some(label) = &self.label
                && info.attributes.label != *label
            {
                return Err(CliError::new(format!(
                    "the URI's object={label} and id={id} disagree: that id is labelled {:?}",
                    info.attributes.label
                )));
            }
            return Ok(info);
        }
        let label = self.label.as_deref().unwrap_or_default();
        let mut found = provider.find_keys(&KeyFilter::label(label)).await?;
        match found.len() {
            0 => Err(HsmError::key_not_found(label).into()),
            1 => Ok(found.remove(0)),
            n => Err(CliError::new(format!(
                "{n} keys are labelled {label:?} (ids {}): name one with id=ID in the URI",
                found
                    .iter()
                    .map(|k| k.id.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The label for a new key: `object=LABEL`. The id is the provider's to choose.
pub fn new_key_label(uri: &ProviderUri) -> Result<String, CliError> {
    if uri.attr("id").is_some() {
        return Err(CliError::new(
            "a new key is named by object=LABEL; its id is chosen by the provider, so drop id=",
        ));
    }
    match uri.attr("object") {
        Some(label) if !label.trim().is_empty() => Ok(label.to_owned()),
        _ => Err(CliError::new(
            "name the new key in the URI with object=LABEL (e.g. soft:path=keys.hsm;object=mykey)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> ProviderUri {
        parse_uri(text).unwrap()
    }

    #[tokio::test]
    async fn unknown_scheme_names_the_built_in_ones() {
        let e = open(&uri("nosuch:token=x"), None, Keystore::MustExist)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "provider scheme nosuch is not built into this hsm binary (available: soft, pkcs11, tpm, aws-kms)"
        );
    }

    #[test]
    fn key_selection_needs_a_key() {
        assert!(KeySelector::from_uri(&uri("soft:path=k.hsm")).is_err());
        assert!(KeySelector::from_uri(&uri("soft:path=k.hsm;id=00ff")).is_ok());
        assert!(new_key_label(&uri("soft:path=k.hsm;id=00ff")).is_err());
        assert_eq!(new_key_label(&uri("soft:object=a%20b")).unwrap(), "a b");
    }

    #[tokio::test]
    async fn resolves_labels_and_ids_in_memory() {
        let p = open(&uri("soft:"), None, Keystore::MustExist)
            .await
            .unwrap();
        let req = hsm_core::GenerateKeyRequest::new("k", hsm_core::KeyType::Ed25519);
        let made = p.generate_key(&req).await.unwrap();
        let by_label = KeySelector::from_uri(&uri("soft:object=k")).unwrap();
        assert_eq!(by_label.resolve(p.as_ref()).await.unwrap().id, made.id);
        let by_id = KeySelector::from_uri(&uri(&format!("soft:id={}", made.id.id))).unwrap();
        assert_eq!(by_id.resolve(p.as_ref()).await.unwrap().id, made.id);
        let missing = KeySelector::from_uri(&uri("soft:object=nope")).unwrap();
        let e = missing.resolve(p.as_ref()).await.unwrap_err().to_string();
        assert!(e.contains("key not found"), "{e}");
        let clash = KeySelector::from_uri(&uri(&format!("soft:object=x;id={}", made.id.id)));
        assert!(clash.unwrap().resolve(p.as_ref()).await.is_err());
    }
}
