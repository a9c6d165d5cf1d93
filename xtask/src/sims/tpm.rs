//! The TPM 2.0 peer of hsm-tpm: swtpm (libtpms), a daemon on two free loopback ports with its
//! state in the run directory.
//!
//! swtpm speaks the TPM command protocol on the server port and its control protocol (power,
//! reset, shutdown) on the control port; tpm2-tss reaches it through its `swtpm` TCTI, which
//! uses both (`mssim:` does not work with swtpm). `--flags not-need-init,startup-clear` makes
//! swtpm power itself on and send `TPM2_Startup(CLEAR)`, so the TPM is usable as soon as the
//! port accepts connections, with no `tpm2_startup` step.
//!
//! The TCTI has no setting for the control port: it is always the server port + 1 (tpm2-tss
//! `tcti-swtpm.c`), so the two ports are chosen as a free consecutive pair.
//!
//! Exports:
//! - `HSM_TEST_SWTPM_TCTI=swtpm:host=127.0.0.1,port=P`, the TCTI config string tss-esapi 7 and
//!   tpm2-tss 3.2 accept (also usable as `TPM2TOOLS_TCTI` for tpm2-tools by hand);
//! - `HSM_TEST_SWTPM_BIN` and `HSM_TEST_SWTPM_STATE`, for tests that stop and restart a TPM of
//!   their own.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

use super::{Launch, Prepare, SimSpec, free_port};
use crate::{DynResult, tools};

/// swtpm 0.7 (Debian 12) with libtpms 0.9: TPM 2.0, no Ed25519.
pub const SWTPM: SimSpec = SimSpec {
    name: "swtpm",
    tools: &[
        "swtpm",
        "swtpm_setup",
        "tpm2_getcap",
        "ossl-modules/tpm2.so",
        "openssl",
    ],
    prepare: swtpm,
    // It listens within a second; the margin is for a loaded 2-core CI machine.
    ready_timeout: Duration::from_secs(60),
};

fn swtpm(prepare: &Prepare) -> DynResult<Launch> {
    let bin = tools::path_of("swtpm")?;
    let state = prepare.dir.join("state");
    fs::create_dir(&state)?;
    let (port, ctrl) = free_port_pair()?;
    let mut daemon = Command::new(&bin);
    daemon
        .arg("socket")
        .arg("--tpm2")
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .args(["--flags", "not-need-init,startup-clear"])
        .current_dir(prepare.dir);
    Ok(Launch {
        daemon: Some(daemon),
        ports: vec![port, ctrl],
        env: vec![
            (
                "HSM_TEST_SWTPM_TCTI".into(),
                format!("swtpm:host=127.0.0.1,port={port}"),
            ),
            ("HSM_TEST_SWTPM_BIN".into(), bin.display().to_string()),
            ("HSM_TEST_SWTPM_STATE".into(), state.display().to_string()),
        ],
    })
}

/// Two free consecutive loopback ports `(P, P + 1)`: the server port, and the control port the
/// swtpm TCTI derives from it. Same race as [`free_port`]: a port freed here can be taken
/// before swtpm binds it, which the readiness wait then reports.
fn free_port_pair() -> io::Result<(u16, u16)> {
    for _ in 0..64 {
        let port = free_port()?;
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_ok() {
            return Ok((port, next));
        }
    }
    Err(io::Error::other(
        "no two consecutive free loopback ports found in 64 tries",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pair_is_consecutive_and_free() {
        let (port, ctrl) = free_port_pair().unwrap();
        assert_eq!(ctrl, port + 1);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        TcpListener::bind((Ipv4Addr::LOCALHOST, ctrl)).unwrap();
    }
}
