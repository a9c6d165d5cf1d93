//! `hsm keys generate | list | show | delete`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use hsm_core::{GenerateKeyRequest, KeyFilter, KeyId, KeyInfo, KeyState, PublicKey};
use serde::Serialize;

use super::{Globals, Outcome};
use crate::cli::{DeleteArgs, GenerateArgs, ListArgs, RestoreArgs, ShowArgs};
use crate::error::CliError;
use crate::open::{self, KeySelector, Keystore};
use crate::output::{self, KeyView, PublicKeyFormat};

/// A key and, for a key pair, its public key, as `generate` and `show --json` print them.
#[derive(Serialize)]
struct KeyWithPublic {
    key: KeyView,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key_pem: Option<String>,
}

impl KeyWithPublic {
    fn new(info: &KeyInfo, public: Option<&PublicKey>) -> Self {
        KeyWithPublic {
            key: KeyView::from(info),
            public_key_pem: public.map(PublicKey::to_pem),
        }
    }
}

/// `hsm keys generate`: makes the key, prints its attributes and public key.
pub async fn generate(g: &Globals, args: GenerateArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    // Before opening: a URI without a label must not leave a new, empty keystore behind.
    let label = open::new_key_label(&uri)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::CreateIfMissing).await?;

    let mut request = GenerateKeyRequest::new(label, args.key_type)
        .with_extractable(args.extractable)
        .with_persistent(!args.session);
    if let Some(usage) = args.usage {
        request = request.with_usage(usage);
    }
    let info = provider.generate_key(&request).await?;
    let public = if info.key_type.is_asymmetric() {
        Some(provider.public_key(&info.id).await?)
    } else {
        None
    };

    let shown = KeyWithPublic::new(&info, public.as_ref());
    if g.json {
        output::print_json(&shown)?;
        return Ok(Outcome::Success);
    }
    let mut text = format!("generated key {}\n{}", shown.key.label, shown.key.details());
    if let Some(pem) = &shown.public_key_pem {
        text.push_str(pem);
    }
    output::print(&text)?;
    Ok(Outcome::Success)
}

/// `hsm keys list`: every key, as a table or a JSON array.
pub async fn list(g: &Globals, args: ListArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let keys: Vec<KeyView> = provider
        .find_keys(&KeyFilter::all())
        .await?
        .iter()
        .map(KeyView::from)
        .collect();
    if g.json {
        output::print_json(&keys)?;
    } else if keys.is_empty() {
        output::print("no keys\n")?;
    } else {
        output::print(&output::key_table(&keys))?;
    }
    Ok(Outcome::Success)
}

/// `hsm keys show`: the public key in the asked-for encoding; an AES key's attributes.
pub async fn show(g: &Globals, args: ShowArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let info = selector.resolve(provider.as_ref()).await?;

    if !info.key_type.is_asymmetric() {
        // A script that asked for a public key must fail, not receive attributes instead.
        if args.format.is_some() || args.out.is_some() {
            return Err(CliError::new(format!(
                "key {} is an {} key and has no public key (hsm keys show without \
                 --format/--out shows its attributes)",
                info.attributes.label, info.key_type
            )));
        }
        let shown = KeyWithPublic::new(&info, None);
        if g.json {
            output::print_json(&shown)?;
        } else {
            output::print(&shown.key.details())?;
        }
        return Ok(Outcome::Success);
    }

    let public = provider.public_key(&info.id).await?;
    match args.format {
        // `--json` alone: the attributes and the PEM, for scripts that want both.
        None if g.json && args.out.is_none() => {
            output::print_json(&KeyWithPublic::new(&info, Some(&public)))?;
        }
        format => {
            let format = format.unwrap_or(PublicKeyFormat::Pem);
            format
                .encode(&public)?
                .emit(args.out.as_deref(), "DER public key")?;
        }
    }
    Ok(Outcome::Success)
}

/// `hsm keys delete`: destroys the key after `--yes` or a typed confirmation.
pub async fn delete(g: &Globals, args: DeleteArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let info = selector.resolve(provider.as_ref()).await?;
    if !args.yes {
        confirm_deletion(&info)?;
    }
    provider.delete_key(&info.id).await?;
    // A managed key service (one with a lifecycle) only schedules the destruction: say so, since
    // the material still exists until the waiting period ends.
    let scheduled = provider.lifecycle().is_some();
    if g.json {
        output::print_json(&serde_json::json!({
            "deleted": KeyView::from(&info),
            "scheduled": scheduled,
        }))?;
    } else if scheduled {
        output::print(&format!(
            "scheduled key {} for deletion: it is unusable now, and the service destroys it \
             when its waiting period ends (AWS KMS: 7 days); until then `hsm keys restore` with \
             id={} in the URI cancels the deletion\n",
            info.id, info.id.id
        ))?;
    } else {
        output::print(&format!("deleted key {}\n", info.id))?;
    }
    Ok(Outcome::Success)
}

/// `hsm keys restore`: cancels a scheduled deletion on a managed key service, and with
/// `--enable` enables the key again.
pub async fn restore(g: &Globals, args: RestoreArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let Some(id) = uri.attr("id") else {
        return Err(CliError::new(
            "the URI names no key id: add ;id=ID as `hsm keys delete` printed it \
             (a key scheduled for deletion is no longer found by label)",
        ));
    };
    let key = KeyId::new(id);
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let Some(lifecycle) = provider.lifecycle() else {
        return Err(CliError::new(format!(
            "{} deletes keys at once: there is no scheduled deletion to cancel",
            provider.name()
        )));
    };
    // Restoring twice, say to add `--enable`, finds nothing to cancel the second time.
    let pending = matches!(
        lifecycle.key_state(&key).await?,
        KeyState::PendingDeletion { .. }
    );
    if pending {
        lifecycle.cancel_deletion(&key).await?;
    } else if !args.enable {
        return Err(CliError::new(format!(
            "key {id} is not scheduled for deletion: nothing to restore"
        )));
    }
    if args.enable {
        lifecycle.set_enabled(&key, true).await?;
    }
    if g.json {
        output::print_json(&serde_json::json!({ "restored": id, "enabled": args.enable }))?;
    } else if args.enable {
        output::print(&format!(
            "restored key {id}: its deletion is cancelled and it is enabled\n"
        ))?;
    } else {
        output::print(&format!(
            "restored key {id}: its deletion is cancelled; it stays disabled until enabled \
             (hsm keys restore --enable)\n"
        ))?;
    }
    Ok(Outcome::Success)
}

/// Asks for the key's label to be typed back. Deleting a key destroys everything it protects,
/// so a stray `y` must not do it, and neither may a script that forgot `--yes`.
fn confirm_deletion(info: &KeyInfo) -> Result<(), CliError> {
    // Some providers allow unlabelled keys; then the id is what must be typed.
    let name = if info.attributes.label.is_empty() {
        info.id.id.as_str()
    } else {
        info.attributes.label.as_str()
    };
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(format!(
            "refusing to delete key {} without --yes: standard input is not a terminal to \
             confirm on",
            info.id
        )));
    }
    eprint!(
        "Deleting {} key {} cannot be undone.\nType {name} to confirm: ",
        info.key_type, info.id
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::new(format!("cannot read the confirmation: {e}")))?;
    if answer.trim_end_matches(['\r', '\n']) != name {
        return Err(CliError::new(format!(
            "not deleted: the confirmation did not match {name}"
        )));
    }
    Ok(())
}
