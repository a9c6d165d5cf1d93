//! The CLI's error: one line for the user, exit status 2.
//!
//! Every failure ends as `hsm: error: <message>` on stderr. [`HsmError`]'s `Display` already says
//! what went wrong without any secret; this module adds what the CLI was doing (which file, which
//! key) and keeps the output to a single line so scripts can log it as one record.

use std::fmt;
use std::io;
use std::process::ExitCode;

use hsm_core::HsmError;

/// Exit status for every error. 1 is reserved for "signature INVALID" (see `hsm verify`), so a
/// script can tell a bad signature from a failure to check one.
pub const EXIT_ERROR: u8 = 2;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Something to tell the user.
    Message(String),
    /// The reader of our standard output went away (`hsm keys list | head -1`). There is nobody
    /// left to tell, so this ends the process quietly instead of as an error message.
    OutputClosed,
}

impl CliError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        CliError::Message(message.into())
    }

    /// Prints the error (if anyone is listening) and gives the exit status.
    pub fn report(&self) -> ExitCode {
        if let CliError::Message(m) = self {
            eprintln!("hsm: error: {}", one_line(m));
        }
        ExitCode::from(EXIT_ERROR)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Message(m) => f.write_str(m),
            CliError::OutputClosed => f.write_str("standard output was closed"),
        }
    }
}

impl From<HsmError> for CliError {
    fn from(e: HsmError) -> Self {
        CliError::Message(with_sources(&e))
    }
}

/// Adds what the CLI was doing to an error: `cannot read msg.txt: No such file or directory`.
pub trait Context<T> {
    /// Prefixes the error with `what` (computed only on failure).
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T> Context<T> for Result<T, HsmError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError::Message(format!("{}: {}", what(), with_sources(&e))))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError::Message(format!("{}: {e}", what())))
    }
}

/// The error's text followed by each source's, skipping a source whose text the message already
/// quotes (providers often embed the I/O error in their reason and also keep it as the source).
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Folds a message onto one line: a backend's multi-line text must not break the one-line
/// contract scripts rely on.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Handles a command-line parse failure: help and version go out as clap prints them; a usage
/// error becomes the same one-line `hsm: error:` as every other failure, pointing at `--help`.
pub fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let rendered = e.render().to_string();
            // clap's text: "error: <what>", detail lines, "tip: ..." lines, "Usage: hsm sign ...".
            let what: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .map(|l| l.strip_prefix("error: ").unwrap_or(l))
                .collect();
            let command = rendered
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .map(|usage| {
                    usage
                        .split_whitespace()
                        .take_while(|w| !w.starts_with(['[', '<', '-']))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "hsm".into());
            CliError::new(format!("{} (see '{command} --help')", what.join("; "))).report()
        }
    }
}
