//! The commands, one file per family. Each takes its parsed arguments and the global options,
//! opens what it needs through `open.rs`, and prints through `output.rs`.

mod crypt;
mod keys;
mod provider;
mod quickstart;
mod sign;

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use hsm_core::{PinSource, Zeroizing};

use crate::cli::{Cli, Command, KeysCommand, ProviderCommand};
use crate::error::{CliError, Context as _};

/// The options that apply to every command.
#[derive(Debug)]
pub struct Globals {
    /// `--pin-source`, which overrides a URI's.
    pub pin_source: Option<PinSource>,
    /// `--json`.
    pub json: bool,
}

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// `hsm verify` checked the signature and it is not valid: exit status 1, which is not an
    /// error (the check itself worked).
    SignatureInvalid,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::SignatureInvalid => ExitCode::from(1),
        }
    }
}

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> Result<Outcome, CliError> {
    let g = Globals {
        pin_source: cli.pin_source,
        json: cli.json,
    };
    match cli.command {
        Command::Keys(KeysCommand::Generate(a)) => keys::generate(&g, a).await,
        Command::Keys(KeysCommand::List(a)) => keys::list(&g, a).await,
        Command::Keys(KeysCommand::Show(a)) => keys::show(&g, a).await,
        Command::Keys(KeysCommand::Delete(a)) => keys::delete(&g, a).await,
        Command::Keys(KeysCommand::Restore(a)) => keys::restore(&g, a).await,
        Command::Sign(a) => sign::sign(&g, a).await,
        Command::Verify(a) => sign::verify(&g, a).await,
        Command::Encrypt(a) => crypt::encrypt(&g, a).await,
        Command::Decrypt(a) => crypt::decrypt(&g, a).await,
        Command::Provider(ProviderCommand::Info(a)) => provider::info(&g, a).await,
        Command::Quickstart(a) => quickstart::run(&g, a).await,
    }
}

/// Reads a whole input file, or standard input for `-`. Zeroized on drop: it may be a
/// plaintext about to be encrypted.
fn read_input(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut data = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut data)
            .context(|| "cannot read standard input".into())?;
    } else {
        *data = std::fs::read(path).context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(data)
}

/// How an input is named in messages.
fn input_name(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}
