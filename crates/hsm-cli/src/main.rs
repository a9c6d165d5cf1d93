//! `hsm`: keys, signatures and encryption on any hsm-rs provider, named by a URI.
//!
//! `cli.rs` defines the command line, `open.rs` turns a URI into a provider and a key (and is the
//! only code that touches secrets), `commands/` does the work, `output.rs` prints and writes,
//! `error.rs` turns any failure into one line on stderr and exit status 2.

mod cli;
mod commands;
mod error;
mod open;
mod output;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::clap_exit(e),
    };
    init_logging(cli.verbose);
    match commands::run(cli).await {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => e.report(),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`); `-v` shows each provider
/// operation (the `hsm` span from `hsm_core::Traced`, with its outcome and duration).
fn init_logging(verbose: u8) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let level = match verbose {
        0 => None,
        1 => Some("info"),
        _ => Some("debug"),
    };
    if let Some(level) = level {
        for target in ["hsm_core::traced", "hsm"] {
            if let Ok(directive) = format!("{target}={level}").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();
}
