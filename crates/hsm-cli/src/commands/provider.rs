//! `hsm provider info`: what the provider is and what it really supports.

use hsm_core::{Capabilities, KeyType, Mechanism, Operation, ProviderInfo};
use serde::Serialize;

use super::{Globals, Outcome};
use crate::cli::InfoArgs;
use crate::error::CliError;
use crate::open::{self, Keystore};
use crate::output::{self, yes_no};

/// A mechanism with the key types it works on, for one set of operations: the capability list
/// grouped so it reads as a short table instead of one row per key type.
#[derive(Debug, Serialize)]
struct MechanismRow {
    mechanism: String,
    key_types: Vec<KeyType>,
    operations: Vec<Operation>,
}

/// The provider description printed by `info`.
#[derive(Debug, Serialize)]
struct InfoView {
    provider: ProviderInfo,
    key_types: Vec<KeyType>,
    unwrap_key_types: Vec<KeyType>,
    extractable_keys: bool,
    session_keys: bool,
    mechanisms: Vec<MechanismRow>,
}

fn group_mechanisms(caps: &Capabilities) -> Vec<MechanismRow> {
    let mut rows: Vec<(Mechanism, MechanismRow)> = Vec::new();
    for support in &caps.mechanisms {
        match rows
            .iter_mut()
            .find(|(m, row)| *m == support.mechanism && row.operations == support.operations)
        {
            Some((_, row)) => row.key_types.push(support.key_type),
            None => rows.push((
                support.mechanism,
                MechanismRow {
                    mechanism: support.mechanism.name(),
                    key_types: vec![support.key_type],
                    operations: support.operations.clone(),
                },
            )),
        }
    }
    rows.into_iter().map(|(_, row)| row).collect()
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(view: &InfoView) -> String {
    let p = &view.provider;
    let mut out = format!(
        "provider:          {}\nvendor:            {}\nmodel:             {}\nfirmware:          {}\n",
        p.provider, p.vendor, p.model, p.firmware
    );
    if let Some(serial) = &p.serial {
        out.push_str(&format!("serial:            {serial}\n"));
    }
    out.push_str(&format!(
        "key types:         {}\nunwrap key types:  {}\nextractable keys:  {}\nsession keys:      {}\n\nmechanisms:\n",
        join(&view.key_types),
        join(&view.unwrap_key_types),
        yes_no(view.extractable_keys),
        yes_no(view.session_keys),
    ));
    let rows: Vec<[String; 3]> = view
        .mechanisms
        .iter()
        .map(|r| [r.mechanism.clone(), join(&r.operations), join(&r.key_types)])
        .collect();
    let width = |col: usize| rows.iter().map(|r| r[col].len()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for [mechanism, operations, key_types] in &rows {
        out.push_str(&format!(
            "  {mechanism:<w0$}  {operations:<w1$}  {key_types}\n"
        ));
    }
    out
}

/// `hsm provider info`.
pub async fn info(g: &Globals, args: InfoArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let caps = provider.capabilities().await?;
    let view = InfoView {
        provider: provider.info().await?,
        mechanisms: group_mechanisms(&caps),
        key_types: caps.key_types,
        unwrap_key_types: caps.unwrap_key_types,
        extractable_keys: caps.extractable_keys,
        session_keys: caps.session_keys,
    };
    if g.json {
        output::print_json(&view)?;
    } else {
        output::print(&text(&view))?;
    }
    Ok(Outcome::Success)
}
