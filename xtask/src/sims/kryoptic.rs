//! kryoptic, a PKCS#11 software token written in Rust, built from its crates.io source.
//!
//! It is not packaged for Debian, and its code does not belong in this repository, so xtask
//! builds the pinned release the way `cargo install` would build a binary: cargo downloads the
//! crate into its registry cache, and `cargo build --locked` runs on that source with the
//! `Cargo.lock` published in the crate, with the output kept under `target/tools/kryoptic/`.
//! (`cargo install` itself cannot do it: the crate has only a `cdylib` target, nothing to install.)
//! The resulting `libkryoptic_pkcs11.so` is copied beside a stamp naming the version and
//! features, and reused until either changes or `cargo clean` removes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::process::{cargo, output, run_logged};
use crate::{DynResult, target_dir};

/// The kryoptic release the tests run against (checked on Debian 12, see FIELD-NOTES).
const VERSION: &str = "1.5.4";

/// kryoptic's default features include EdDSA, whose OpenSSL bindings need OpenSSL >= 3.2: the
/// build script of its `ossl` crate stops with "OpenSSL 3.2.0 or later is required" against
/// bookworm's 3.0. This set builds against 3.0, linked dynamically to the system
/// libcrypto, and gives ECDSA/ECDH, RSA, SHA-1/SHA-2 with HMAC, AES, HKDF and the SQLite token
/// store. There is no Ed25519 in this build.
const FEATURES: &str = "kryoptic-lib/dynamic,kryoptic-lib/sqlitedb,kryoptic-lib/ecc_min,\
                        kryoptic-lib/rsa,kryoptic-lib/hash_all,kryoptic-lib/aes,kryoptic-lib/hkdf";

/// The cdylib's file name (`[lib] name = "kryoptic_pkcs11"` in the crate's manifest).
const LIBRARY: &str = "libkryoptic_pkcs11.so";

/// Returns the path of a `libkryoptic_pkcs11.so` built from [`VERSION`] with [`FEATURES`],
/// building it first if there is none. The build must end by `deadline`; a failure carries the
/// end of the build log.
pub fn ensure_module(root: &Path, deadline: Instant) -> DynResult<PathBuf> {
    let dir = target_dir(root).join("tools").join("kryoptic");
    let library = dir.join(LIBRARY);
    let stamp = dir.join(format!("{LIBRARY}.built"));
    let want = format!("kryoptic {VERSION} --no-default-features --features {FEATURES}");
    if library.is_file() && fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        eprintln!("kryoptic: using {VERSION} from {}", library.display());
        return Ok(library);
    }

    fs::create_dir_all(&dir)?;
    let log = dir.join("build.log");
    fs::write(&log, format!("{want}\n"))?;
    eprintln!(
        "kryoptic: building {VERSION} from crates.io (about a minute on 2 cores, more while \
         other builds run; later runs reuse it until `cargo clean`); log in {}",
        log.display()
    );
    let started = Instant::now();
    build(&dir, &log, deadline)
        .map_err(|err| format!("building kryoptic {VERSION} failed: {err}"))?;

    // Copied out of cargo's target directory under a temporary name and renamed into place, so
    // a half-copied library is never taken for a built one; the stamp is written last.
    let built = dir.join("target").join("release").join(LIBRARY);
    let partial = dir.join(format!("{LIBRARY}.{}.partial", std::process::id()));
    fs::copy(&built, &partial)?;
    fs::rename(&partial, &library)?;
    fs::write(&stamp, &want)?;
    eprintln!(
        "kryoptic: built {} in {:.0}s",
        library.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(library)
}

/// Downloads the crate and builds it, logging to `log`.
fn build(dir: &Path, log: &Path, deadline: Instant) -> DynResult {
    let manifest = crate_source(dir, log, deadline)?;
    run_logged(
        cargo()
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(dir.join("target"))
            .args(["--no-default-features", "--features", FEATURES])
            .current_dir(dir),
        log,
        deadline,
    )
}

/// Makes cargo download kryoptic [`VERSION`] and returns the path of its `Cargo.toml` in
/// cargo's registry cache.
///
/// Cargo has no command that downloads one crate, so a throwaway package that depends on it
/// does: `cargo fetch` downloads it (with its dependencies, which the build needs anyway), and
/// `cargo metadata` says where it was unpacked.
fn crate_source(dir: &Path, log: &Path, deadline: Instant) -> DynResult<PathBuf> {
    let fetch = dir.join("fetch");
    fs::create_dir_all(fetch.join("src"))?;
    // `[workspace]` keeps cargo from taking it for a member of the hsm-rs workspace it sits in.
    fs::write(
        fetch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"kryoptic-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[dependencies]\n\
             kryoptic = {{ version = \"={VERSION}\", default-features = false }}\n\n[workspace]\n"
        ),
    )?;
    fs::write(fetch.join("src").join("lib.rs"), "")?;
    let manifest = fetch.join("Cargo.toml");
    run_logged(
        cargo().arg("fetch").arg("--manifest-path").arg(&manifest),
        log,
        deadline,
    )?;

    let metadata = output(
        cargo()
            .args(["metadata", "--offline", "--format-version", "1"])
            .arg("--manifest-path")
            .arg(&manifest),
    )?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == "kryoptic" && package["version"] == VERSION)
        .and_then(|package| package["manifest_path"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| format!("cargo metadata does not list kryoptic {VERSION}").into())
}
