//! Project automation for hsm-rs, run as `cargo xtask <command>`.
//!
//! The xtask pattern keeps build and CI logic in Rust, next to the code it checks, instead of in
//! shell scripts that behave differently on every machine. The crate depends on `std` only so that
//! `cargo xtask` compiles in seconds on a fresh CI machine, before anything else is built.
//!
//! Commands:
//! - `test-sims`: the project's one test command (README and `.ci/run` call it): installs missing
//!   host tools, then runs fmt, clippy, the workspace tests (with every registered simulator up)
//!   and cargo-deny, and prints `test-sims: N passed, M failed`.
//! - `sims up|down|status`: start the simulators detached for development, stop them, list them.
//! - `deny`: cargo-deny against the offline RustSec advisory snapshot.
//!
//! Every path is computed from the workspace root (the parent of this crate's manifest directory),
//! so the commands work from any current directory and in any clone.

mod deny;
mod process;
mod sims;
mod test_sims;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Error type of every fallible xtask function: a task either succeeds or prints why it did not,
/// so a boxed error with a readable message is all the structure needed.
pub type DynResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test-sims            install missing host tools, then fmt, clippy, tests (with simulators), cargo-deny
  sims up [NAME...]    start the simulators (all, or those named) detached; prints `export VAR=value` lines
  sims down|status     stop them, list them
  deny                 cargo-deny with the offline RustSec advisory snapshot from ../shared/advisory-db
  help                 this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = workspace_root();

    let result = match args.as_slice() {
        ["test-sims"] => return test_sims::run(&root),
        ["sims", "up", names @ ..] => sims::up(&root, names),
        ["sims", "down"] => sims::down(&root),
        ["sims", "status"] => sims::status(&root),
        ["deny"] => deny::run(&root),
        [] | ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("xtask: unknown command `{}`\n\n{USAGE}", args.join(" "));
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
///
/// `CARGO_MANIFEST_DIR` is fixed at compile time, which is what we want: `cargo xtask` always
/// builds the binary from the checkout it runs in, so the root is right whatever the current
/// directory is.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The directory where xtask keeps its tools, simulator state and advisory DB copy.
///
/// It is always `<root>/target` (not `CARGO_TARGET_DIR`), because `deny.toml` names
/// `target/advisory-dbs` as a fixed relative path and one place is easier to clean.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target")
}
