//! Host tools the test suites need, and how to install them when they are missing.
//!
//! CI runs on a fresh Debian 12 machine as root, so a missing tool is installed rather than
//! reported: the project's own files must install what it needs. A developer who is not root gets
//! the exact command to run instead. Each later issue that brings a new peer (swtpm, moto,
//! local-kms, lowkey-vault) adds a row or a call here, not a new mechanism.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, which};
use crate::{DynResult, target_dir};

/// Something on the host the tests or xtask use, and the Debian package that ships it.
pub struct AptTool {
    /// The name steps and simulators ask for (in [`ensure`] and `SimSpec::tools`): a program
    /// (`openssl`), or for a library or header that ships no program, its file name
    /// (`libsoftokn3.so`, `sqlite3.h`).
    pub name: &'static str,
    /// How to tell that it is installed, and where it is.
    pub probe: Probe,
    /// The Debian 12 package that provides it.
    pub package: &'static str,
    /// Who needs it, printed when it is missing so nobody wonders why it is installed.
    pub needed_by: &'static str,
}

/// How [`ensure`] and [`path_of`] find an [`AptTool`].
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// An executable called [`AptTool::name`] on `PATH`.
    Program,
    /// A file at this absolute path (a library with a fixed Debian path, or a header).
    File(&'static str),
    /// A file called [`AptTool::name`] in Debian's multiarch library directory
    /// ([`multiarch_lib_dir`], `/usr/lib/x86_64-linux-gnu` on amd64).
    MultiarchLib,
}

/// Everything a test-sims run needs on the host. Add a row when a suite or simulator starts
/// using something new, e.g. `swtpm` -> `swtpm`.
pub const APT_TOOLS: &[AptTool] = &[
    AptTool {
        name: "openssl",
        probe: Probe::Program,
        package: "openssl",
        needed_by: "hsm-cli interop tests (independent verification of signatures)",
    },
    AptTool {
        name: "git",
        probe: Probe::Program,
        package: "git",
        needed_by: "cargo-deny (reads the advisory DB snapshot as a git repository)",
    },
    // PKCS#11 peers (xtask/src/sims/pkcs11.rs).
    AptTool {
        name: "pkcs11-tool",
        probe: Probe::Program,
        package: "opensc",
        needed_by: "the softhsm2 and kryoptic simulators (initialise their test tokens)",
    },
    AptTool {
        name: "pkcs11-spy.so",
        probe: Probe::MultiarchLib,
        package: "opensc-pkcs11",
        needed_by: "hsm-pkcs11 tests (HSM_TEST_PKCS11_SPY: logs the PKCS#11 calls to any module)",
    },
    AptTool {
        name: "libsofthsm2.so",
        // The file is in `libsofthsm2`; `softhsm2` pulls it in together with `softhsm2-util`,
        // which is what one wants for looking at a test token by hand.
        probe: Probe::File("/usr/lib/softhsm/libsofthsm2.so"),
        package: "softhsm2",
        needed_by: "the softhsm2 simulator (SoftHSM2 PKCS#11 module)",
    },
    AptTool {
        name: "libsoftokn3.so",
        probe: Probe::MultiarchLib,
        package: "libnss3",
        needed_by: "the nss simulator (NSS softokn PKCS#11 module)",
    },
    AptTool {
        name: "certutil",
        probe: Probe::Program,
        package: "libnss3-tools",
        needed_by: "the nss simulator (creates its NSS database)",
    },
    // Building kryoptic from its crates.io source (xtask/src/sims/kryoptic.rs).
    AptTool {
        name: "clang",
        probe: Probe::Program,
        package: "clang",
        needed_by: "building kryoptic (bindgen loads libclang to generate the OpenSSL bindings)",
    },
    AptTool {
        name: "pkg-config",
        probe: Probe::Program,
        package: "pkg-config",
        needed_by: "building kryoptic (finds OpenSSL and SQLite) and hsm-tpm (tss-esapi-sys finds tpm2-tss)",
    },
    AptTool {
        name: "openssl/evp.h",
        probe: Probe::File("/usr/include/openssl/evp.h"),
        package: "libssl-dev",
        needed_by: "building kryoptic (OpenSSL headers and libcrypto to link)",
    },
    AptTool {
        name: "sqlite3.h",
        probe: Probe::File("/usr/include/sqlite3.h"),
        package: "libsqlite3-dev",
        needed_by: "building kryoptic (its token database is SQLite)",
    },
    // The TPM 2.0 peer (xtask/src/sims/tpm.rs) and building hsm-tpm.
    AptTool {
        name: "swtpm",
        probe: Probe::Program,
        package: "swtpm",
        needed_by: "the swtpm simulator (software TPM 2.0 on libtpms)",
    },
    AptTool {
        name: "swtpm_setup",
        probe: Probe::Program,
        package: "swtpm-tools",
        needed_by: "hsm-tpm attestation tests (manufacture a TPM with an EK certificate: \
                    swtpm_setup and swtpm_localca)",
    },
    AptTool {
        name: "tpm2_getcap",
        probe: Probe::Program,
        package: "tpm2-tools",
        needed_by: "hsm-tpm tests (tpm2-tools look at the TPM independently of hsm-tpm)",
    },
    AptTool {
        name: "ossl-modules/tpm2.so",
        probe: Probe::MultiarchLib,
        package: "tpm2-openssl",
        needed_by: "hsm-tpm interop tests (OpenSSL signs with hsm-tpm key files, and makes keys)",
    },
    AptTool {
        name: "tss2/tss2_esys.h",
        probe: Probe::File("/usr/include/tss2/tss2_esys.h"),
        package: "libtss2-dev",
        needed_by: "building hsm-tpm (tss-esapi links tpm2-tss's ESAPI, MU and TCTI libraries)",
    },
];

/// Debian's multiarch library directory for the architecture xtask runs on.
pub fn multiarch_lib_dir() -> PathBuf {
    let triplet = match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".to_owned(),
        "arm" => "arm-linux-gnueabihf".to_owned(),
        "powerpc64" => "powerpc64le-linux-gnu".to_owned(),
        // x86_64, aarch64, riscv64, s390x: the Rust name is the Debian one.
        arch => format!("{arch}-linux-gnu"),
    };
    Path::new("/usr/lib").join(triplet)
}

fn row(name: &str) -> DynResult<&'static AptTool> {
    APT_TOOLS
        .iter()
        .find(|tool| tool.name == name)
        .ok_or_else(|| format!("`{name}` has no row in tools::APT_TOOLS").into())
}

/// Where `tool` is on this host, if it is installed.
fn locate(tool: &AptTool) -> Option<PathBuf> {
    let path = match tool.probe {
        Probe::Program => return which(tool.name),
        Probe::File(path) => PathBuf::from(path),
        Probe::MultiarchLib => multiarch_lib_dir().join(tool.name),
    };
    // `is_file` follows symlinks, so a dangling one (half-removed package) counts as missing.
    path.is_file().then_some(path)
}

/// The path of an installed [`APT_TOOLS`] entry, or an error saying which package to install.
///
/// Simulators take their module paths from here, so the path they export is the one
/// [`ensure`] checked.
pub fn path_of(name: &str) -> DynResult<PathBuf> {
    let tool = row(name)?;
    locate(tool).ok_or_else(|| {
        format!(
            "`{name}` is not installed (Debian package {}); `cargo xtask test-sims` as root \
             installs it, or run `sudo apt-get install --no-install-recommends {}`",
            tool.package, tool.package
        )
        .into()
    })
}

/// Checks that each named [`APT_TOOLS`] entry is installed; installs the missing ones with
/// apt-get when root, and otherwise fails with the command to run. Every name must have a row in
/// [`APT_TOOLS`], so the table stays the one list of what the project installs.
pub fn ensure(names: &[&str]) -> DynResult {
    ensure_with(names, false)
}

/// [`ensure`] with every message and the apt-get output on stderr, for `sims up` (whose stdout
/// a shell evaluates).
pub fn ensure_reporting_on_stderr(names: &[&str]) -> DynResult {
    ensure_with(names, true)
}

fn ensure_with(names: &[&str], on_stderr: bool) -> DynResult {
    let say = |text: String| {
        if on_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    };
    let mut rows: Vec<&AptTool> = Vec::new();
    for name in names {
        let row = row(name)?;
        if !rows.iter().any(|known| known.name == row.name) {
            rows.push(row);
        }
    }

    let missing: Vec<&AptTool> = rows
        .into_iter()
        .filter(|tool| {
            let found = locate(tool);
            match &found {
                Some(path) => say(format!("found {:<16} {}", tool.name, path.display())),
                None => say(format!(
                    "missing {:<14} (package {}, needed by {})",
                    tool.name, tool.package, tool.needed_by
                )),
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

    let apt_get = |cmd: &mut Command| {
        let cmd = cmd.env("DEBIAN_FRONTEND", "noninteractive");
        if on_stderr {
            process::run_on_stderr(cmd)
        } else {
            process::run(cmd)
        }
    };
    // Update the package lists first: a fresh machine has none, and apt-get install would fail.
    apt_get(Command::new("apt-get").arg("update"))?;
    apt_get(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&packages),
    )?;

    // A package can install its binary somewhere off PATH (e.g. /usr/sbin for a non-root PATH),
    // or a library somewhere else than the row says; catch that here rather than as a confusing
    // test failure later.
    let still_missing: Vec<&str> = missing
        .iter()
        .filter(|tool| locate(tool).is_none())
        .map(|tool| tool.name)
        .collect();
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still not found after apt-get install: {} (check the rows in tools::APT_TOOLS)",
            still_missing.join(", ")
        )
        .into())
    }
}

/// Creates (once) a Python virtualenv in `target/venv` and installs pinned `requirements`
/// (`"moto[server]==5.1.0"`) into it; returns the venv's `bin` directory. Commands go through
/// `run` (a simulator's [`crate::sims::Prepare::run`]: logged to its run directory, bounded by
/// its deadline, and off stdout, which `sims up` keeps for its `export` lines).
///
/// For moto. A stamp file records what was installed, so
/// reruns skip pip entirely unless the list changes. The machine's `python3` (pyenv's build)
/// has `venv` built in; Debian's own Python would need the `python3-venv` package.
pub fn python_venv(
    root: &Path,
    requirements: &[&str],
    run: impl Fn(&mut Command) -> DynResult,
) -> DynResult<PathBuf> {
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
/// `target/tools/go-bin` unless `binary` is already there; returns the binary's path. Commands
/// go through `run`, as for [`python_venv`].
///
/// For local-kms (and a GCP KMS emulator later). `GOBIN` keeps the result
/// inside the workspace instead of `~/go/bin`, so a `cargo clean` removes it too.
pub fn go_install(
    root: &Path,
    module_at_version: &str,
    binary: &str,
    run: impl Fn(&mut Command) -> DynResult,
) -> DynResult<PathBuf> {
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
/// `target/tools/maven` unless it is already there; returns the file's path. Commands go through
/// `run`, as for [`python_venv`].
///
/// For the simulators later issues add (lowkey-vault's jar). Uses the dependency plugin's `copy`
/// goal, which works without a `pom.xml`; the plugin version is pinned so the command does not
/// change under us.
#[expect(
    dead_code,
    reason = "for the simulators later issues add (lowkey-vault)"
)]
pub fn maven_artifact(
    root: &Path,
    coordinates: &str,
    run: impl Fn(&mut Command) -> DynResult,
) -> DynResult<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_file_probes_absolute() {
        for (i, tool) in APT_TOOLS.iter().enumerate() {
            assert!(
                APT_TOOLS[..i].iter().all(|other| other.name != tool.name),
                "two rows for {}",
                tool.name
            );
            if let Probe::File(path) = tool.probe {
                assert!(Path::new(path).is_absolute(), "{path}");
            }
        }
    }

    #[test]
    fn unknown_names_are_an_error() {
        assert!(ensure(&["no-such-tool"]).is_err());
        assert!(path_of("no-such-tool").is_err());
    }

    #[test]
    fn multiarch_dir_is_under_usr_lib() {
        let dir = multiarch_lib_dir();
        assert!(dir.starts_with("/usr/lib"));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(dir, Path::new("/usr/lib/x86_64-linux-gnu"));
        }
    }
}
