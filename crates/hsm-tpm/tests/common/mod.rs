//! What the hsm-tpm test files share: the swtpm that `cargo xtask test-sims` started, and
//! swtpm instances a test starts for itself (a second TPM, or one it may kill and restart).
//!
//! swtpm has no resource manager and serves one connection at a time, so each test file keeps
//! everything that uses the shared TPM in one test, run one step after another.

#![allow(dead_code)] // each test file uses its own part of this module

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TCTI of the shared swtpm, or `None` after printing why the test is skipped (a failure
/// under `HSM_TEST_REQUIRE_ALL=1`, which `cargo xtask test-sims` sets).
pub fn tcti() -> Option<String> {
    env_or_skip("HSM_TEST_SWTPM_TCTI")
}

/// Asserts, with tpm2-tools (another TSS client), that no transient object and no session is
/// left loaded in the TPM at `tcti`: swtpm has no resource manager, so whatever a client leaves
/// there stays. Call it once the provider is dropped.
pub fn assert_nothing_left_loaded(tcti: &str) {
    for what in ["handles-transient", "handles-loaded-session"] {
        let out = Command::new("tpm2_getcap")
            .args(["-T", tcti, what])
            .output()
            .expect("tpm2_getcap (Debian tpm2-tools) runs");
        assert!(out.status.success(), "{out:?}");
        let left = String::from_utf8_lossy(&out.stdout);
        assert!(left.trim().is_empty(), "{what} left loaded: {left}");
    }
}

/// The swtpm program, for tests that start their own TPM.
pub fn swtpm_bin() -> Option<PathBuf> {
    env_or_skip("HSM_TEST_SWTPM_BIN").map(PathBuf::from)
}

/// A program on `PATH`, or `None` after printing why the test is skipped (a failure under
/// `HSM_TEST_REQUIRE_ALL=1`).
pub fn on_path(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip(&format!(
            "{program} is not installed (`cargo xtask test-sims` installs it)"
        ));
    }
    found
}

fn skip(why: &str) {
    assert!(std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
    println!("skipped: {why}");
}

fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None => {
            skip(&format!(
                "{var} is not set: run the tests through `cargo xtask test-sims`, or \
                 `eval \"$(cargo xtask sims up swtpm)\"` first"
            ));
            None
        }
    }
}

/// A swtpm of the test's own, on two free loopback ports, with its state in a directory that
/// outlives [`stop`](OwnTpm::stop) (so a restart finds the same TPM: same seeds, same SRK).
/// Dropping it kills the process and removes the state.
pub struct OwnTpm {
    bin: PathBuf,
    state: tempfile::TempDir,
    /// The local CA of a [`provisioned`](OwnTpm::provisioned) TPM.
    ca: Option<tempfile::TempDir>,
    port: u16,
    child: Option<Child>,
}

impl OwnTpm {
    /// Starts a fresh TPM (new seeds), ready for commands.
    pub fn start(bin: &Path) -> OwnTpm {
        let state = tempfile::tempdir().expect("a temporary directory for the TPM state");
        OwnTpm::run(bin, state, None)
    }

    /// Starts a TPM that swtpm_setup (Debian swtpm-tools) manufactured first, as a TPM maker
    /// does: endorsement keys (RSA-2048, ECC P-384) with certificates in NV memory, issued by a
    /// local CA (swtpm_localca) whose files are in [`ca_dir`](OwnTpm::ca_dir), and a platform
    /// certificate; NV memory locked. Everything lives in temporary directories; no root is
    /// needed. `None`, after printing why, when swtpm_setup is not installed.
    pub fn provisioned(bin: &Path) -> Option<OwnTpm> {
        let setup = on_path("swtpm_setup")?;
        let localca = on_path("swtpm_localca")?;
        let state = tempfile::tempdir().expect("a temporary directory for the TPM state");
        let ca = tempfile::tempdir().expect("a temporary directory for the local CA");
        let dir = ca.path();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write(
            "swtpm_setup.conf",
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca.display(),
                dir.join("swtpm-localca.conf").display(),
                dir.join("swtpm-localca.options").display()
            ),
        );
        write(
            "swtpm-localca.conf",
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\n\
                 certserial = {d}/certserial\n",
                d = dir.display()
            ),
        );
        write(
            "swtpm-localca.options",
            "--platform-manufacturer hsm-rs\n--platform-version 2.1\n--platform-model swtpm\n"
                .into(),
        );
        let out = Command::new(setup)
            .arg("--tpm2")
            // swtpm_setup splits this at spaces and runs the TPM itself while manufacturing.
            .arg("--tpm")
            .arg(format!("{} socket", bin.display()))
            .arg("--tpmstate")
            .arg(state.path())
            .arg("--config")
            .arg(dir.join("swtpm_setup.conf"))
            .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
            .args(["--pcr-banks", "sha256"])
            .output()
            .expect("swtpm_setup runs");
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(OwnTpm::run(bin, state, Some(ca)))
    }

    fn run(bin: &Path, state: tempfile::TempDir, ca: Option<tempfile::TempDir>) -> OwnTpm {
        let mut tpm = OwnTpm {
            bin: bin.to_owned(),
            state,
            ca,
            port: free_port_pair(),
            child: None,
        };
        tpm.restart();
        tpm
    }

    /// The local CA's directory of a [`provisioned`](OwnTpm::provisioned) TPM: its root
    /// certificate `swtpm-localca-rootca-cert.pem` and the EK certificates' issuer
    /// `issuercert.pem`.
    pub fn ca_dir(&self) -> Option<&Path> {
        self.ca.as_ref().map(|d| d.path())
    }

    /// The TCTI config string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The directory holding the TPM's state (NVChip): another swtpm may be started on it.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Kills the process abruptly (SIGKILL: what a crash or a power cut looks like to the
    /// client). The state stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and state; waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.kill();
        let ctrl = self.port + 1;
        let child = Command::new(&self.bin)
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.path().display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("swtpm starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen within 30 s"
            );
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("swtpm exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnTpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two free consecutive loopback ports `(P, P + 1)`: swtpm's server port and the control port
/// its TCTI derives from it. A port found free can be taken before swtpm binds it; the
/// readiness wait then fails with swtpm's own message.
fn free_port_pair() -> u16 {
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free consecutive loopback ports");
}
