//! Host tools the test suites need, and how to install them when they are missing.
//!
//! CI runs on a fresh Debian 12 machine as root, so a missing tool is installed rather than
//! reported: the project's own files must install what it needs. A developer who is not root gets
//! the exact command to run instead. Each later issue that brings a new peer (SoftHSM2, swtpm,
//! moto, local-kms, lowkey-vault) adds a row or a call here, not a new mechanism.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, run, which};
use crate::{DynResult, target_dir};

/// A host program the tests run, and the Debian package that ships it.
pub struct AptTool {
    /// The executable looked up on `PATH`.
    pub binary: &'static str,
    /// The Debian 12 package that provides it.
    pub package: &'static str,
    /// Who needs it, printed when it is missing so nobody wonders why it is installed.
    pub needed_by: &'static str,
}

/// Every host program a test-sims run needs. Add a row when a suite starts calling a new tool,
/// e.g. `softhsm2-util` -> `softhsm2`, `pkcs11-tool` -> `opensc`, `swtpm` -> `swtpm`.
pub const APT_TOOLS: &[AptTool] = &[
    AptTool {
        binary: "openssl",
        package: "openssl",
        needed_by: "hsm-cli interop tests (independent verification of signatures)",
    },
    AptTool {
        binary: "git",
        package: "git",
        needed_by: "cargo-deny (reads the advisory DB snapshot as a git repository)",
    },
];

/// Checks that each program is on `PATH`; installs the missing ones with apt-get when root, and
/// otherwise fails with the command to run. Every program must have a row in [`APT_TOOLS`], so
/// the table stays the one list of what the project installs.
pub fn ensure(binaries: &[&str]) -> DynResult {
    let mut rows: Vec<&AptTool> = Vec::new();
    for binary in binaries {
        let row = APT_TOOLS
            .iter()
            .find(|tool| tool.binary == *binary)
            .ok_or_else(|| format!("`{binary}` has no row in tools::APT_TOOLS"))?;
        if !rows.iter().any(|known| known.binary == row.binary) {
            rows.push(row);
        }
    }

    let missing: Vec<&AptTool> = rows
        .into_iter()
        .filter(|tool| {
            let found = which(tool.binary);
            match &found {
                Some(path) => println!("found {:<14} {}", tool.binary, path.display()),
                None => println!(
                    "missing {:<12} (package {}, needed by {})",
                    tool.binary, tool.package, tool.needed_by
                ),
            }
            found.is_none()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }

    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.sort_unstable();
    packages.dedup();
    if !process::is_root() {
        return Err(format!(
            "missing host tools; install them with:\n    sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        )
        .into());
    }

    // Update the package lists first: a fresh machine has none, and apt-get install would fail.
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;

    // A package can install its binary somewhere off PATH (e.g. /usr/sbin for a non-root PATH);
    // catch that here rather than as a confusing test failure later.
    let still_missing: Vec<&str> = missing
        .iter()
        .filter(|tool| which(tool.binary).is_none())
        .map(|tool| tool.binary)
        .collect();
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still not on PATH after apt-get install: {}",
            still_missing.join(", ")
        )
        .into())
    }
}

/// Creates (once) a Python virtualenv in `target/venv` and installs pinned `requirements`
/// (`"moto[server]==5.1.0"`) into it; returns the venv's `bin` directory.
///
/// For the simulators later issues add (moto). A stamp file records what was installed, so
/// reruns skip pip entirely unless the list changes. On Debian, `python3 -m venv` needs the
/// `python3-venv` package: add it to [`APT_TOOLS`]' install list together with the first user.
#[expect(dead_code, reason = "for the simulators later issues add (moto)")]
pub fn python_venv(root: &Path, requirements: &[&str]) -> DynResult<PathBuf> {
    let venv = target_dir(root).join("venv");
    let bin = venv.join("bin");
    let stamp = venv.join(".xtask-requirements");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(bin);
    }
    if !bin.join("python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(bin)
}

/// Installs a Go program (`"github.com/nsmithuk/local-kms@v0.0.0-..."`) into
/// `target/tools/go-bin` unless `binary` is already there; returns the binary's path.
///
/// For the simulators later issues add (local-kms, a GCP KMS emulator). `GOBIN` keeps the result
/// inside the workspace instead of `~/go/bin`, so a `cargo clean` removes it too.
#[expect(dead_code, reason = "for the simulators later issues add (local-kms)")]
pub fn go_install(root: &Path, module_at_version: &str, binary: &str) -> DynResult<PathBuf> {
    let gobin = target_dir(root).join("tools").join("go-bin");
    let path = gobin.join(binary);
    if !path.exists() {
        run(Command::new("go")
            .args(["install", module_at_version])
            .env("GOBIN", &gobin))?;
    }
    Ok(path)
}

/// Copies a Maven artifact (`"groupId:artifactId:version[:packaging[:classifier]]"`) into
/// `target/tools/maven` unless it is already there; returns the file's path.
///
/// For the simulators later issues add (lowkey-vault's jar). Uses the dependency plugin's `copy`
/// goal, which works without a `pom.xml`; the plugin version is pinned so the command does not
/// change under us.
#[expect(
    dead_code,
    reason = "for the simulators later issues add (lowkey-vault)"
)]
pub fn maven_artifact(root: &Path, coordinates: &str) -> DynResult<PathBuf> {
    let dir = target_dir(root).join("tools").join("maven");
    let parts: Vec<&str> = coordinates.split(':').collect();
    let (artifact, version, packaging, classifier) = match parts.as_slice() {
        [_, a, v] => (*a, *v, "jar", None),
        [_, a, v, p] => (*a, *v, *p, None),
        [_, a, v, p, c] => (*a, *v, *p, Some(*c)),
        _ => return Err(format!("not Maven coordinates: {coordinates}").into()),
    };
    let file = match classifier {
        Some(c) => format!("{artifact}-{version}-{c}.{packaging}"),
        None => format!("{artifact}-{version}.{packaging}"),
    };
    let path = dir.join(file);
    if !path.exists() {
        run(Command::new("mvn")
            .args([
                "--batch-mode",
                "--quiet",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            ])
            .arg(format!("-Dartifact={coordinates}"))
            .arg(format!("-DoutputDirectory={}", dir.display())))?;
    }
    Ok(path)
}
