//! The AWS KMS peers of hsm-cloud-aws: moto server (PyPI) and local-kms (a Go module), each a
//! daemon on a free loopback port with its state in the run directory.
//!
//! Both accept any credentials; the tests use fixed dummy ones. Each exports
//! `HSM_TEST_<PEER>_ENDPOINT=http://127.0.0.1:PORT`; local-kms also its binary
//! (`HSM_TEST_LOCALKMS_BIN`), for tests that stop and restart an instance of their own.

use std::process::Command;
use std::time::Duration;

use super::{Launch, Prepare, SimSpec, free_port};
use crate::{DynResult, tools};

/// moto's version, pinned so an upgrade is a reviewed change.
const MOTO: &str = "moto[server]==5.2.5";

/// local-kms publishes no releases, only commits: this pseudo-version is its newest on the Go
/// module proxy.
const LOCAL_KMS: &str = "github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6";

/// moto's KMS and CloudHSMv2 (`moto_server`: every service on one port, state in memory).
pub const MOTO_SERVER: SimSpec = SimSpec {
    name: "moto",
    tools: &[],
    prepare: moto,
    // A cold pip install of moto and its dependencies, then a Flask app start.
    ready_timeout: Duration::from_secs(10 * 60),
};

/// local-kms: real cryptography for DIGEST signing, PSS, RSA-OAEP and key import.
pub const LOCAL_KMS_SERVER: SimSpec = SimSpec {
    name: "local-kms",
    tools: &[],
    prepare: local_kms,
    // A cold `go install` downloads and builds the module.
    ready_timeout: Duration::from_secs(10 * 60),
};

fn moto(prepare: &Prepare) -> DynResult<Launch> {
    let bin = tools::python_venv(prepare.root, &[MOTO], |cmd| prepare.run(cmd))?;
    let port = free_port()?;
    let mut daemon = Command::new(bin.join("moto_server"));
    daemon
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(prepare.dir);
    Ok(Launch {
        daemon: Some(daemon),
        ports: vec![port],
        env: vec![(
            "HSM_TEST_MOTO_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        )],
    })
}

fn local_kms(prepare: &Prepare) -> DynResult<Launch> {
    let exe = tools::go_install(prepare.root, LOCAL_KMS, "local-kms", |cmd| prepare.run(cmd))?;
    let port = free_port()?;
    let data = prepare.dir.join("data");
    std::fs::create_dir(&data)?;
    let mut daemon = Command::new(&exe);
    daemon
        .env("PORT", port.to_string())
        .env("KMS_REGION", "us-east-1")
        .env("KMS_ACCOUNT_ID", "111122223333")
        .env("KMS_DATA_PATH", &data)
        // No seed file: start with no keys (the default path is under /init).
        .env("KMS_SEED_PATH", prepare.dir.join("no-seed.yaml"))
        .current_dir(prepare.dir);
    Ok(Launch {
        daemon: Some(daemon),
        ports: vec![port],
        env: vec![
            (
                "HSM_TEST_LOCALKMS_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            // The fault tests run an instance of their own, to stop and restart it.
            ("HSM_TEST_LOCALKMS_BIN".into(), exe.display().to_string()),
        ],
    })
}
