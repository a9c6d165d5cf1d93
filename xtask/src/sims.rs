//! Simulators: the real peers (SoftHSM2, swtpm, moto, ...) the provider test suites talk to.
//!
//! A simulator is a [`Sim`]: a run directory under `target/sims/<name>-<pid>`, the loopback
//! ports it listens on, the env vars that tell the tests where it is, and (for daemons) its child
//! process. Dropping a `Sim` kills and reaps the process, so no test run leaves a daemon behind,
//! even when a step fails or xtask panics. [`SIMS`] lists what exists; each later issue that
//! brings a peer adds one [`SimSpec`] row there (and its `prepare` function in a submodule).
//!
//! Some peers are libraries plus files rather than daemons (the PKCS#11 tokens in
//! [`pkcs11`]): for them, starting means preparing their files (initialising a token), and they
//! are ready when `prepare` has succeeded.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{self, is_alive, log_tail, signal};
use crate::{DynResult, target_dir, tools};

mod aws;
mod kryoptic;
mod pkcs11;
mod tpm;

/// One kind of simulator: how to prepare and start it.
#[derive(Clone, Copy)]
pub struct SimSpec {
    /// Short name, used for the run directory and in messages (`softhsm2`, `swtpm`).
    pub name: &'static str,
    /// Host programs, libraries and headers it needs; each must have a row in
    /// [`crate::tools::APT_TOOLS`], so a `test-sims` run (or `sims up`) installs it first.
    pub tools: &'static [&'static str],
    /// Writes whatever the peer needs into its fresh run directory and says how to run it.
    pub prepare: fn(&Prepare) -> DynResult<Launch>,
    /// How long the simulator may take to be ready, counted from the start of `prepare`: the
    /// commands `prepare` runs through [`Prepare::run`] are killed at this deadline (kryoptic's
    /// first build takes minutes), and a daemon must accept connections by then (JVM and Python
    /// peers are slow).
    pub ready_timeout: Duration,
}

/// What [`SimSpec::prepare`] gets to work with.
pub struct Prepare<'a> {
    /// The workspace root, for tools kept under `target/tools`.
    pub root: &'a Path,
    /// The simulator's fresh, empty run directory: its state and `log.txt`.
    pub dir: &'a Path,
    /// When [`SimSpec::ready_timeout`] runs out.
    pub deadline: Instant,
}

impl Prepare<'_> {
    /// Runs a set-up command with its output in the run directory's `log.txt`; it is killed at
    /// the deadline, and a failure carries the end of the log.
    pub fn run(&self, cmd: &mut Command) -> DynResult {
        process::run_logged(cmd, &self.log_path(), self.deadline)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }
}

/// What [`SimSpec::prepare`] hands back.
pub struct Launch {
    /// The daemon to start, or `None` for a peer that is a library plus files (SoftHSM2: its
    /// "start" is initialising a token directory and pointing `SOFTHSM2_CONF` at it).
    pub daemon: Option<Command>,
    /// Loopback ports the daemon listens on (see [`free_port`]); readiness waits on the first.
    pub ports: Vec<u16>,
    /// Env vars the tests read to find the peer, e.g. `HSM_TEST_SOFTHSM2_CONF=<run dir>/softhsm2.conf`.
    pub env: Vec<(String, String)>,
}

/// The registered simulators. hsm-soft runs in-process and needs none.
pub const SIMS: &[SimSpec] = &[
    pkcs11::SOFTHSM2,
    pkcs11::KRYOPTIC,
    pkcs11::NSS,
    aws::MOTO_SERVER,
    aws::LOCAL_KMS_SERVER,
    tpm::SWTPM,
];

/// The message both `test-sims` and `sims` print when [`SIMS`] is empty.
pub const NONE_REGISTERED: &str = "simulators: none registered yet (hsm-soft runs in-process)";

/// A running (or prepared) simulator. Dropping it stops the daemon and reaps it.
pub struct Sim {
    pub name: &'static str,
    /// `target/sims/<name>-<xtask pid>`: the peer's state and its `log.txt`. It is left in place
    /// after the run so a failure can be read, and removed by the next run.
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Sim {
    /// Prepares and starts `spec`, and waits until it accepts connections (a peer without a
    /// daemon is ready once `prepare` has succeeded).
    ///
    /// With `detached` (for `sims up`) the daemon gets its own process group, so it outlives
    /// xtask and `sims down` can stop it together with any helpers it forked. Otherwise it stays
    /// in our process group, so a Ctrl-C at the terminal reaches it too even though that kills
    /// xtask without running destructors.
    pub fn start(root: &Path, spec: &SimSpec, detached: bool) -> DynResult<Sim> {
        let dir = sims_dir(root).join(format!("{}-{}", spec.name, std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;

        let deadline = Instant::now() + spec.ready_timeout;
        let prepare = Prepare {
            root,
            dir: &dir,
            deadline,
        };
        let launch = (spec.prepare)(&prepare)
            .map_err(|err| format!("preparing simulator {}: {err}", spec.name))?;
        let mut sim = Sim {
            name: spec.name,
            dir,
            ports: launch.ports,
            env: launch.env,
            child: None,
        };
        let Some(mut daemon) = launch.daemon else {
            return Ok(sim);
        };

        // Appended to, so what `prepare` logged stays in front of the daemon's output.
        let log = File::options()
            .create(true)
            .append(true)
            .open(sim.log_path())?;
        daemon
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if detached {
            use std::os::unix::process::CommandExt;
            daemon.process_group(0);
        }
        sim.child = Some(
            daemon
                .spawn()
                .map_err(|err| format!("starting simulator {}: {err}", spec.name))?,
        );
        if let Some(&port) = sim.ports.first() {
            sim.wait_ready(port, deadline, spec.ready_timeout)?;
        }
        Ok(sim)
    }

    /// The daemon's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls `127.0.0.1:port` until it accepts a connection, the daemon exits, or `deadline`
    /// (`timeout` after the start) passes; on failure the error carries the end of the log.
    fn wait_ready(&mut self, port: u16, deadline: Instant, timeout: Duration) -> DynResult {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            let problem = match exited {
                Some(status) => format!("exited ({status}) before listening on port {port}"),
                None if Instant::now() >= deadline => {
                    format!("not listening on port {port} after {timeout:?}")
                }
                None => {
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            return Err(format!(
                "simulator {} {problem}; end of {}:\n{}",
                self.name,
                self.log_path().display(),
                log_tail(&self.log_path(), 20)
            )
            .into());
        }
    }

    /// Lets the daemon outlive this `Sim` (for `sims up`); returns its pid for the state file.
    fn detach(mut self) -> Option<u32> {
        // Dropping a std `Child` neither kills nor waits; the detached daemon is reparented to
        // init when xtask exits, and init reaps it.
        self.child.take().map(|child| child.id())
    }
}

impl Drop for Sim {
    /// SIGTERM first so the peer can flush its state, SIGKILL after a grace period, then `wait`
    /// so no zombie is left either.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM", false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A currently free loopback TCP port, chosen by the kernel (bind to port 0, read it back).
///
/// The port is released before the simulator binds it, so another process could take it in
/// between; on a CI machine running one test suite that race is rare, and the readiness wait
/// reports it clearly if it happens.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `target/sims`: every simulator's run directory, and `state.json` of `sims up`.
fn sims_dir(root: &Path) -> PathBuf {
    target_dir(root).join("sims")
}

fn state_path(root: &Path) -> PathBuf {
    sims_dir(root).join("state.json")
}

/// Simulators being started in the background; see [`start_all`].
///
/// Dropping it (also while unwinding from a panic) waits for the start-up thread and then drops
/// the simulators, so they are stopped even if nobody called [`Starting::wait`].
pub struct Starting(Option<thread::JoinHandle<Result<Vec<Sim>, String>>>);

impl Starting {
    /// Waits until every simulator is up; an error lists each one that failed (those that did
    /// start have been stopped again by then).
    pub fn wait(mut self) -> Result<Vec<Sim>, String> {
        self.join()
    }

    fn join(&mut self) -> Result<Vec<Sim>, String> {
        match self.0.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err("simulator start-up panicked".into())),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Starts every registered simulator, one thread each, so slow peers (a JVM, a Python server)
/// come up while the caller goes on building. [`Starting::wait`] hands them over.
pub fn start_all(root: &Path) -> Starting {
    let root = root.to_path_buf();
    Starting(Some(thread::spawn(move || {
        remove_stale_run_dirs(&root);
        let starters: Vec<_> = SIMS
            .iter()
            .map(|spec| {
                let root = root.clone();
                thread::spawn(move || {
                    Sim::start(&root, spec, false).map_err(|err| format!("{}: {err}", spec.name))
                })
            })
            .collect();
        // Join every thread before reporting, so that when one simulator fails, the others are
        // still owned here and get stopped by `Drop`, not leaked by a detached thread.
        let mut sims = Vec::new();
        let mut errors = Vec::new();
        for handle in starters {
            match handle.join() {
                Ok(Ok(sim)) => sims.push(sim),
                Ok(Err(err)) => errors.push(err),
                Err(_) => errors.push("simulator start panicked".into()),
            }
        }
        if errors.is_empty() {
            Ok(sims)
        } else {
            Err(errors.join("\n"))
        }
    })))
}

/// Removes run directories left by earlier runs. Keeps those `sims up` recorded, and those of
/// another xtask still running (the directory name ends in its pid).
fn remove_stale_run_dirs(root: &Path) {
    let in_use: Vec<PathBuf> = read_state(root)
        .map(|entries| entries.into_iter().map(|entry| entry.dir).collect())
        .unwrap_or_default();
    let Ok(entries) = fs::read_dir(sims_dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owner_running = entry
            .file_name()
            .to_str()
            .and_then(|name| name.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && is_alive(pid));
        if path.is_dir() && !in_use.contains(&path) && !owner_running {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// One simulator recorded in `state.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateEntry {
    name: String,
    pid: Option<u32>,
    dir: PathBuf,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
}

#[derive(serde::Serialize)]
struct StateOut<'a> {
    sims: &'a [StateEntry],
}

#[derive(serde::Deserialize)]
struct State {
    sims: Vec<StateEntry>,
}

fn write_state(root: &Path, entries: &[StateEntry]) -> DynResult {
    fs::create_dir_all(sims_dir(root))?;
    let text = serde_json::to_string_pretty(&StateOut { sims: entries })?;
    fs::write(state_path(root), text)?;
    Ok(())
}

/// Reads `state.json`; an empty list when there is none (nothing is up).
fn read_state(root: &Path) -> DynResult<Vec<StateEntry>> {
    let path = state_path(root);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let state: State =
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(state.sims)
}

/// `cargo xtask sims up [NAME...]`: starts the registered simulators (all, or those named)
/// detached, records them in `target/sims/state.json`, and prints `export VAR=value` lines on
/// stdout (messages go to stderr, so `eval "$(cargo xtask sims up)"` works).
pub fn up(root: &Path, names: &[&str]) -> DynResult {
    if names.is_empty() {
        return up_specs(root, SIMS);
    }
    let mut chosen = Vec::new();
    for name in names {
        let spec = SIMS.iter().find(|s| s.name == *name).ok_or_else(|| {
            let known: Vec<&str> = SIMS.iter().map(|s| s.name).collect();
            format!("no simulator named {name:?}; known: {}", known.join(", "))
        })?;
        chosen.push(*spec);
    }
    up_specs(root, &chosen)
}

/// [`up`] for a given registry, so tests can run it with a stand-in simulator.
fn up_specs(root: &Path, specs: &[SimSpec]) -> DynResult {
    if specs.is_empty() {
        eprintln!("{NONE_REGISTERED}");
        return Ok(());
    }
    // A peer without a daemon counts as up while its run directory exists: the exports printed
    // last time point into it.
    let running: Vec<StateEntry> = read_state(root)?
        .into_iter()
        .filter(|e| e.pid.map_or(e.dir.exists(), is_alive))
        .collect();
    if !running.is_empty() {
        let names: Vec<&str> = running.iter().map(|e| e.name.as_str()).collect();
        return Err(format!(
            "already up: {}; run `cargo xtask sims down` first",
            names.join(", ")
        )
        .into());
    }
    remove_stale_run_dirs(root);
    // test-sims has its ensure_tools step; here the simulators' own needs are checked (and
    // installed when root), with the messages on stderr.
    let wanted: Vec<&str> = specs.iter().flat_map(|spec| spec.tools).copied().collect();
    tools::ensure_reporting_on_stderr(&wanted)?;

    let mut entries = Vec::new();
    for spec in specs {
        // Stop what did start if a later one fails: the started `Sim`s are still owned (not
        // detached) until every one is up, so an early return drops them.
        let sim = Sim::start(root, spec, true);
        entries.push(sim.map_err(|err| format!("{}: {err}", spec.name))?);
    }
    let entries: Vec<StateEntry> = entries
        .into_iter()
        .map(|sim| StateEntry {
            name: sim.name.to_owned(),
            dir: sim.dir.clone(),
            ports: sim.ports.clone(),
            env: sim.env.clone(),
            pid: sim.detach(),
        })
        .collect();
    write_state(root, &entries)?;

    for entry in &entries {
        match entry.pid {
            Some(pid) => eprintln!(
                "up: {} (pid {pid}, ports {:?}, log in {})",
                entry.name,
                entry.ports,
                entry.dir.display()
            ),
            None => eprintln!(
                "up: {} (no daemon: prepared in {})",
                entry.name,
                entry.dir.display()
            ),
        }
        for (key, value) in &entry.env {
            println!("export {key}={}", shell_quote(value));
        }
    }
    Ok(())
}

/// `cargo xtask sims down`: stops everything `sims up` recorded and forgets it.
pub fn down(root: &Path) -> DynResult {
    let entries = read_state(root)?;
    if entries.is_empty() {
        if SIMS.is_empty() {
            println!("{NONE_REGISTERED}");
        }
        println!("nothing is up");
        return Ok(());
    }
    for entry in &entries {
        if let Some(pid) = entry.pid.filter(|&pid| is_alive(pid)) {
            // `sims up` made each daemon a process group leader: stop the group, so helpers it
            // forked go too.
            signal(pid, "TERM", true);
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_alive(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            if is_alive(pid) {
                signal(pid, "KILL", true);
            }
        }
        let _ = fs::remove_dir_all(&entry.dir);
        println!("down: {}", entry.name);
    }
    fs::remove_file(state_path(root))?;
    Ok(())
}

/// `cargo xtask sims status`: which recorded simulators are alive.
pub fn status(root: &Path) -> DynResult {
    if SIMS.is_empty() {
        println!("{NONE_REGISTERED}");
    } else {
        let names: Vec<&str> = SIMS.iter().map(|spec| spec.name).collect();
        println!("registered: {}", names.join(", "));
    }
    let entries = read_state(root)?;
    if entries.is_empty() {
        println!("nothing is up");
    }
    for entry in entries {
        let state = match entry.pid {
            Some(pid) if is_alive(pid) => format!("alive (pid {pid}), ports {:?}", entry.ports),
            Some(pid) => format!("dead (pid {pid} is gone), ports {:?}", entry.ports),
            None if entry.dir.exists() => "prepared (no daemon)".into(),
            None => "gone (its run directory was removed)".into(),
        };
        println!("{}: {state}, dir {}", entry.name, entry.dir.display());
        for (key, value) in entry.env {
            println!("    {key}={value}");
        }
    }
    Ok(())
}

/// Quotes a value for a POSIX shell `export` line.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    #[test]
    fn free_port_can_be_bound_again() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
    }

    /// A scratch workspace root under the system temp dir, so tests never touch `target/`.
    fn scratch_root(test: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    /// `sleep` stands in for a daemon; its "port" is a loopback listener the test process holds
    /// open for its whole life (shared, so tests running in parallel cannot close it early).
    fn sleeper(_prepare: &Prepare) -> DynResult<Launch> {
        static LISTENER: OnceLock<TcpListener> = OnceLock::new();
        let listener =
            LISTENER.get_or_init(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        Ok(Launch {
            daemon: Some(cmd),
            ports: vec![listener.local_addr()?.port()],
            env: vec![("HSM_TEST_X".into(), "a b".into())],
        })
    }

    fn sleeper_spec(name: &'static str) -> SimSpec {
        SimSpec {
            name,
            tools: &[],
            prepare: sleeper,
            ready_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn readiness_failures_carry_the_log() {
        let root = scratch_root("readiness");
        let early_exit = SimSpec {
            name: "early-exit",
            tools: &[],
            prepare: |_prepare| {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", "echo boom; exit 3"]);
                Ok(Launch {
                    daemon: Some(cmd),
                    ports: vec![free_port()?],
                    env: vec![],
                })
            },
            ready_timeout: Duration::from_secs(10),
        };
        let err = Sim::start(&root, &early_exit, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("exited") && err.contains("boom"), "{err}");

        let never_listens = SimSpec {
            name: "never-listens",
            tools: &[],
            prepare: |_prepare| {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", "echo waiting; exec sleep 60"]);
                Ok(Launch {
                    daemon: Some(cmd),
                    ports: vec![free_port()?],
                    env: vec![],
                })
            },
            ready_timeout: Duration::from_millis(500),
        };
        let err = Sim::start(&root, &never_listens, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("not listening") && err.contains("waiting"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn dropping_a_sim_kills_and_reaps_it() {
        let root = scratch_root("drop");
        let sim = Sim::start(&root, &sleeper_spec("drop"), false).unwrap();
        let pid = sim.pid().unwrap();
        assert!(is_alive(pid));
        assert!(sim.dir.starts_with(root.join("target").join("sims")));
        drop(sim);
        assert!(!is_alive(pid));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn every_registered_tool_has_an_apt_row() {
        for spec in SIMS {
            for tool in spec.tools {
                assert!(
                    tools::APT_TOOLS.iter().any(|row| row.name == *tool),
                    "{}: `{tool}` has no row in APT_TOOLS",
                    spec.name
                );
            }
        }
    }

    /// A peer without a daemon whose preparation runs a command (like the PKCS#11 tokens).
    fn library_spec(name: &'static str) -> SimSpec {
        SimSpec {
            name,
            tools: &[],
            prepare: |prepare| {
                prepare.run(
                    Command::new("sh")
                        .args(["-c", "echo prepared > token"])
                        .current_dir(prepare.dir),
                )?;
                Ok(Launch {
                    daemon: None,
                    ports: vec![],
                    env: vec![("HSM_TEST_LIB".into(), prepare.dir.display().to_string())],
                })
            },
            ready_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn library_peers_are_ready_when_prepared_and_fail_with_their_log() {
        let root = scratch_root("library");
        let sim = Sim::start(&root, &library_spec("lib"), false).unwrap();
        assert_eq!(sim.pid(), None);
        assert!(sim.dir.join("token").is_file());
        let log = fs::read_to_string(sim.log_path()).unwrap();
        assert!(log.starts_with("$ sh -c"), "{log}");

        let failing = SimSpec {
            name: "failing",
            tools: &[],
            prepare: |prepare| {
                prepare
                    .run(Command::new("sh").args(["-c", "echo compile error here; exit 101"]))?;
                unreachable!("the command fails")
            },
            ready_timeout: Duration::from_secs(10),
        };
        let err = Sim::start(&root, &failing, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("preparing simulator failing")
                && err.contains("exit status: 101")
                && err.contains("compile error here"),
            "{err}"
        );

        let hanging = SimSpec {
            name: "hanging",
            tools: &[],
            prepare: |prepare| {
                prepare.run(Command::new("sh").args(["-c", "echo started; exec sleep 60"]))?;
                unreachable!("the command is killed")
            },
            ready_timeout: Duration::from_millis(500),
        };
        let started = Instant::now();
        let err = Sim::start(&root, &hanging, false)
            .err()
            .unwrap()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.contains("deadline") && err.contains("started"), "{err}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_prepared_library_peer_counts_as_up_until_down() {
        let root = scratch_root("library-up");
        up_specs(&root, &[library_spec("lib")]).unwrap();
        let state = read_state(&root).unwrap();
        assert_eq!(state[0].pid, None);
        assert!(state[0].dir.is_dir());
        // Its exports point into the run directory, so a second `up` must not replace it.
        let err = up_specs(&root, &[library_spec("lib")]).unwrap_err();
        assert!(err.to_string().contains("already up: lib"), "{err}");
        down(&root).unwrap();
        assert!(!state[0].dir.exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn up_records_state_and_down_stops_everything() {
        let root = scratch_root("up-down");
        up_specs(&root, &[sleeper_spec("one"), sleeper_spec("two")]).unwrap();

        let state = read_state(&root).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(state[0].env, [("HSM_TEST_X".to_owned(), "a b".to_owned())]);
        let pids: Vec<u32> = state.iter().map(|entry| entry.pid.unwrap()).collect();
        assert!(pids.iter().all(|&pid| is_alive(pid)));
        // A second `up` refuses while they run.
        assert!(up_specs(&root, &[sleeper_spec("one")]).is_err());
        status(&root).unwrap();

        down(&root).unwrap();
        assert!(pids.iter().all(|&pid| !is_alive(pid)));
        assert!(!state_path(&root).exists());
        assert!(state.iter().all(|entry| !entry.dir.exists()));
        let _ = fs::remove_dir_all(&root);
    }
}
