//! Small helpers for running commands and looking at the host: the few things every task needs.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::DynResult;

/// The `cargo` that runs us, so nested builds use the same toolchain (`cargo +nightly xtask`
/// stays on nightly); plain `cargo` when xtask is run some other way.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` with inherited stdio, echoing it first so a CI log shows exactly what ran.
///
/// A non-zero exit becomes an error naming the command, so callers can just use `?`.
pub fn run(cmd: &mut Command) -> DynResult {
    let shown = display(cmd);
    println!("$ {shown}");
    wait_for(cmd, &shown)
}

/// [`run`] for commands whose output must stay off our stdout: the echo and the command's
/// stdout go to stderr. `sims up` needs this, because its stdout is the `export` lines a shell
/// evaluates.
pub fn run_on_stderr(cmd: &mut Command) -> DynResult {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    wait_for(cmd.stdout(std::io::stderr()), &shown)
}

fn wait_for(cmd: &mut Command, shown: &str) -> DynResult {
    let status = cmd
        .status()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})").into())
    }
}

/// Runs `cmd` quietly and returns its trimmed stdout, for asking a tool a question
/// (`git rev-parse`, `cargo-deny --version`).
pub fn output(cmd: &mut Command) -> DynResult<String> {
    let shown = display(cmd);
    let out = cmd
        .output()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cmd` with its stdout and stderr appended to the file `log` (after a `$ command` line),
/// and kills it if it is still running at `deadline`.
///
/// For work that runs in a background thread (preparing simulators while clippy compiles), where
/// inherited output would be interleaved with the foreground step's. On failure the error carries
/// the end of the log, so a CI run shows why without anyone opening the file.
pub fn run_logged(cmd: &mut Command, log: &Path, deadline: Instant) -> DynResult {
    let shown = display(cmd);
    let mut file = OpenOptions::new().create(true).append(true).open(log)?;
    writeln!(file, "$ {shown}")?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    let problem = loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            break format!("failed ({status})");
        }
        if Instant::now() >= deadline {
            // Only the command itself is killed; children it started in our process group
            // (rustc under cargo) finish their current unit and exit on their own.
            let _ = child.kill();
            let _ = child.wait();
            break "was still running at its deadline and was killed".to_owned();
        }
        thread::sleep(Duration::from_millis(100));
    };
    Err(format!(
        "`{shown}` {problem}; end of {}:\n{}",
        log.display(),
        log_tail(log, 30)
    )
    .into())
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The command line as a user would type it (env assignments and program plus arguments).
///
/// The value of an env var whose name contains `PIN` is shown as `***` (unless the name ends in
/// `_FILE`: a file name is no secret): xtask hands test-token PINs to tools such as
/// `pkcs11-tool --pin env:NAME` that way, and echoed commands end up in CI logs.
fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        let key = key.to_string_lossy();
        value.map(|value| {
            if key.contains("PIN") && !key.ends_with("_FILE") {
                format!("{key}=***")
            } else {
                format!("{key}={}", value.to_string_lossy())
            }
        })
    });
    // The toolchain's cargo is a long rustup path; `cargo` says the same to a reader.
    let program = if std::env::var_os("CARGO").as_deref() == Some(cmd.get_program()) {
        OsStr::new("cargo")
    } else {
        cmd.get_program()
    };
    let words = std::iter::once(program)
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .map(|word| word.into_owned());
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

/// Finds an executable on `PATH`, like `command -v`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Whether we run as root, so installing with apt-get can work without sudo.
///
/// Reads the effective uid from `/proc/self/status` (no libc dependency needed) and falls back to
/// `id -u` where there is no procfs.
pub fn is_root() -> bool {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            // "Uid:\treal\teffective\tsaved\tfs": apt-get cares about the effective one.
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        });
    from_proc.unwrap_or_else(|| output(Command::new("id").arg("-u")).is_ok_and(|uid| uid == "0"))
}

/// Whether a process with this pid is running (and not just a zombie waiting to be reaped).
///
/// Reads `/proc/<pid>/stat` on Linux, where a zombie shows state `Z`; elsewhere falls back to
/// `kill -0`, which counts a zombie as alive.
pub fn is_alive(pid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() {
        return std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // "pid (comm) state ...": comm may itself contain spaces and parentheses.
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_comm.split_whitespace().next() != Some("Z")
        });
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to a process, or to its whole process group when
/// `group` is set. Errors are ignored: the process may already be gone, which is what we want.
pub fn signal(pid: u32, signal: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Prints a step heading that stands out in a long CI log.
pub fn heading(text: &str) {
    println!("\n==> {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_in_env_are_not_shown() {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.env("HSM_XTASK_USER_PIN", "secret")
            .env("SOFTHSM2_CONF", "/c")
            .env("HSM_TEST_SOFTHSM2_PIN_FILE", "/r/user.pin")
            .args(["--pin", "env:HSM_XTASK_USER_PIN"]);
        let shown = display(&cmd);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("HSM_XTASK_USER_PIN=***") && shown.contains("SOFTHSM2_CONF=/c"));
        assert!(
            shown.contains("HSM_TEST_SOFTHSM2_PIN_FILE=/r/user.pin"),
            "{shown}"
        );
    }
}
