//! `cargo xtask test-sims`: the project's one test command, run by README readers and by CI.
//!
//! Every step runs even when an earlier one failed, so one CI run reports everything that is
//! wrong (a formatting slip should not hide a failing test). The last line is
//! `test-sims: N passed, M failed`, counting steps, and the exit code is 1 if any failed.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::process::{self, cargo, heading};
use crate::sims::{self, SIMS, Sim};
use crate::{DynResult, deny, tools};

/// The outcome of one step, for the summary.
struct Outcome {
    name: &'static str,
    error: Option<String>,
    seconds: f64,
}

/// Runs the steps in order and prints the summary; see the module docs.
pub fn run(root: &Path) -> ExitCode {
    const STEPS: usize = 5;
    let mut outcomes = Vec::new();
    let mut step = |name: &'static str, what: &str, body: &mut dyn FnMut() -> DynResult| {
        heading(&format!("[{}/{STEPS}] {name}: {what}", outcomes.len() + 1));
        let start = Instant::now();
        let error = body().err().map(|err| err.to_string());
        if let Some(err) = &error {
            println!("step {name} failed: {err}");
        }
        outcomes.push(Outcome {
            name,
            error,
            seconds: start.elapsed().as_secs_f64(),
        });
    };

    step(
        "ensure_tools",
        "host tools the test suites need",
        &mut || {
            let mut wanted: Vec<&str> = tools::APT_TOOLS.iter().map(|tool| tool.name).collect();
            wanted.extend(SIMS.iter().flat_map(|spec| spec.tools));
            tools::ensure(&wanted)
        },
    );

    // Simulators come up in the background while fmt and clippy compile; the test step waits
    // for them. `Starting` stops them on drop, so they go away even if a step panics.
    let mut starting = if SIMS.is_empty() {
        println!("{}", sims::NONE_REGISTERED);
        None
    } else {
        let names: Vec<&str> = SIMS.iter().map(|spec| spec.name).collect();
        println!(
            "starting simulators in the background: {}",
            names.join(", ")
        );
        Some(sims::start_all(root))
    };

    step("fmt", "cargo fmt --all -- --check", &mut || {
        process::run(
            cargo()
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(root),
        )
    });
    step(
        "clippy",
        "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        &mut || {
            process::run(
                cargo()
                    .args(["clippy", "--workspace", "--all-targets", "--all-features"])
                    .args(["--", "-D", "warnings"])
                    .current_dir(root),
            )
        },
    );

    step(
        "test",
        "cargo test --workspace --all-features --no-fail-fast (HSM_TEST_REQUIRE_ALL=1)",
        &mut || {
            // Taken here so the simulators are stopped as soon as the tests are done.
            let sims = match starting.take().map(sims::Starting::wait) {
                Some(Ok(sims)) => sims,
                Some(Err(err)) => return Err(format!("simulators failed to start:\n{err}").into()),
                None => Vec::new(),
            };
            let mut cmd = cargo();
            // --no-fail-fast: one failing test binary must not hide the others' results.
            cmd.args(["test", "--workspace", "--all-features", "--no-fail-fast"])
                .current_dir(root)
                // Suites fail instead of skipping when a peer they need is missing: on CI a
                // skip would hide a broken install step.
                .env("HSM_TEST_REQUIRE_ALL", "1");
            add_sim_env(&mut cmd, &sims);
            process::run(&mut cmd)
            // `sims` is dropped here: every simulator is stopped and reaped.
        },
    );

    step(
        "deny",
        "cargo-deny check (offline advisory DB)",
        &mut || deny::run(root),
    );

    summarize(&outcomes)
}

/// Passes each simulator's env vars to the test run, and says which are up.
fn add_sim_env(cmd: &mut Command, sims: &[Sim]) {
    for sim in sims {
        match sim.pid() {
            Some(pid) => println!(
                "simulator {} up (pid {pid}, ports {:?}, log {})",
                sim.name,
                sim.ports,
                sim.log_path().display()
            ),
            None => println!(
                "simulator {} ready (no daemon: prepared in {})",
                sim.name,
                sim.dir.display()
            ),
        }
        for (key, value) in &sim.env {
            cmd.env(key, value);
        }
    }
}

/// Prints one line per step, the failed steps, and the closing count line; returns the exit code.
fn summarize(outcomes: &[Outcome]) -> ExitCode {
    heading("summary");
    for outcome in outcomes {
        let status = if outcome.error.is_some() {
            "FAILED"
        } else {
            "ok"
        };
        println!(
            "  {status:<6} {:<13} {:>7.1}s",
            outcome.name, outcome.seconds
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_some())
        .map(|outcome| outcome.name)
        .collect();
    let passed = outcomes.len() - failed.len();
    if !failed.is_empty() {
        println!("test-sims failed steps: {}", failed.join(", "));
    }
    // The closing line CI reads: keep it exactly in this form and last.
    println!("test-sims: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
