//! `cargo xtask deny`: cargo-deny (licenses, bans, sources, advisories) without network access
//! to GitHub.
//!
//! The RustSec advisory DB comes as a plain folder, `../shared/advisory-db` beside the workspace
//! (on CI it lies beside the clone, read-only). cargo-deny only opens advisory DBs that are git
//! repositories in a directory named after the DB's URL, so this module keeps a throwaway git
//! snapshot of that folder under `target/advisory-dbs/` and runs `cargo-deny --offline check`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::process::{self, cargo, output};
use crate::{DynResult, target_dir, tools};

/// The cargo-deny release xtask builds. Pinned so every machine checks with the same rules and
/// because [`ADVISORY_DB_DIR`] depends on its source. 0.20.2 was the newest release when this
/// was written and builds with `--locked` on Rust 1.95 (about 5 minutes on 2 cores).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// The directory cargo-deny 0.20 looks in for the DB at `db-urls` =
/// `https://github.com/rustsec/advisory-db`: `url_to_db_path` in its
/// `src/advisories/helpers/db.rs` names it `<last URL path segment>-<hash>`, where the hash is
/// XxHash64 (seed `0xca80de71`) of the lower-cased URL in 16 hex digits. Confirmed by
/// experiment: with no DB, `cargo-deny --offline check advisories` fails naming this path.
/// Re-check it when bumping [`CARGO_DENY_VERSION`].
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";

/// How old a fetched DB may be before cargo-deny calls it stale (its `maximum-db-staleness`
/// default). cargo-deny cannot see the age of our snapshot (it dates a DB by the git checkout,
/// which we make fresh), so xtask warns on its own.
const STALE_AFTER_DAYS: i64 = 90;

/// Runs cargo-deny with every check, offline.
pub fn run(root: &Path) -> DynResult {
    // cargo-deny reads the DB's age with `git show`, and the snapshot is made with git.
    tools::ensure(&["git"])?;
    let cargo_deny = ensure_cargo_deny(root)?;
    prepare_advisory_db(root)?;

    // `--offline` makes cargo-deny run `cargo metadata --offline`, which needs every package in
    // Cargo.lock on disk, including the Windows- and macOS-only ones a Linux build never
    // downloads. Fetching them from crates.io is a no-op once they are there.
    process::run(cargo().arg("fetch").current_dir(root))?;

    // From the workspace root: deny.toml's relative `db-path` is resolved against the current
    // directory.
    process::run(
        Command::new(cargo_deny)
            .args(["--offline", "check"])
            .current_dir(root),
    )
}

/// Returns `target/tools/bin/cargo-deny`, building it from crates.io first if it is missing or
/// not [`CARGO_DENY_VERSION`].
fn ensure_cargo_deny(root: &Path) -> DynResult<PathBuf> {
    let tools_root = target_dir(root).join("tools");
    let binary = tools_root.join("bin").join("cargo-deny");
    let want = format!("cargo-deny {CARGO_DENY_VERSION}");
    if binary.exists() && output(Command::new(&binary).arg("--version")).is_ok_and(|v| v == want) {
        println!("using {want} from {}", binary.display());
        return Ok(binary);
    }
    println!(
        "building {want} from crates.io into {} (takes several minutes on 2 cores; \
         later runs reuse it until `cargo clean`)",
        tools_root.display()
    );
    process::run(
        cargo()
            .args(["install", "--locked", "--force", "cargo-deny", "--version"])
            .arg(CARGO_DENY_VERSION)
            .arg("--root")
            .arg(&tools_root),
    )?;
    Ok(binary)
}

/// Makes `target/advisory-dbs/<ADVISORY_DB_DIR>` a git repository holding the shared snapshot,
/// reusing it while the snapshot's `SNAPSHOT` file is unchanged.
fn prepare_advisory_db(root: &Path) -> DynResult {
    let source = root
        .parent()
        .ok_or("the workspace root has no parent directory")?
        .join("shared")
        .join("advisory-db");
    let snapshot = fs::read_to_string(source.join("SNAPSHOT")).map_err(|err| {
        format!(
            "the RustSec advisory DB snapshot is missing: could not read {} ({err}).\n\
             cargo-deny needs it offline: a plain copy of the advisory-db repository \
             (README.md, SNAPSHOT, crates/, rust/) in ../shared/advisory-db beside the workspace",
            source.join("SNAPSHOT").display()
        )
    })?;

    let dbs = target_dir(root).join("advisory-dbs");
    let db = dbs.join(ADVISORY_DB_DIR);
    let current = fs::read_to_string(db.join("SNAPSHOT")).ok();
    if current.as_deref() == Some(snapshot.as_str()) && db.join(".git").is_dir() {
        println!("advisory DB: reusing {}", db.display());
    } else {
        println!(
            "advisory DB: making a git snapshot of {} in {}",
            source.display(),
            db.display()
        );
        // Build beside and rename into place, so an interrupted copy is never taken for a
        // complete one by the SNAPSHOT check above.
        let staging = dbs.join(format!(".staging-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        copy_tree(&source, &staging)?;
        git_snapshot(&staging, snapshot.trim())?;
        if db.exists() {
            fs::remove_dir_all(&db)?;
        }
        fs::rename(&staging, &db)?;
    }

    report_age(snapshot.trim());
    Ok(())
}

/// Commits everything in `dir` as one commit dated like the snapshot, with a fixed author and
/// no user or system git configuration needed.
fn git_snapshot(dir: &Path, snapshot: &str) -> DynResult {
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(["-c", "user.name=xtask", "-c", "user.email=xtask@localhost"])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args);
        if let Some(date) = snapshot_date(snapshot) {
            let stamp = format!("{date}T00:00:00Z");
            cmd.env("GIT_AUTHOR_DATE", &stamp)
                .env("GIT_COMMITTER_DATE", &stamp);
        }
        output(&mut cmd)
    };
    git(&["init", "--quiet"])?;
    git(&["add", "--all"])?;
    git(&[
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        &format!("RustSec advisory-db snapshot {snapshot}"),
    ])?;
    Ok(())
}

/// Prints which snapshot is used and warns when it is older than cargo-deny would accept from a
/// fetched DB.
fn report_age(snapshot: &str) {
    let age = snapshot_date(snapshot).and_then(|date| {
        let mut parts = date.split('-').map(str::parse::<i64>);
        let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let today = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64 / 86_400;
        Some(today - days_from_civil(y, m, d))
    });
    match age {
        Some(days) => {
            println!("advisory DB: snapshot {snapshot} ({days} days old)");
            if days > STALE_AFTER_DAYS {
                println!(
                    "warning: the advisory DB snapshot is more than {STALE_AFTER_DAYS} days old; \
                     advisories published since then are not checked. Refresh ../shared/advisory-db."
                );
            }
        }
        None => println!("advisory DB: snapshot {snapshot} (date unknown)"),
    }
}

/// The `YYYY-MM-DD` date in a `SNAPSHOT` file (`<commit> <date>`), if there is one.
fn snapshot_date(snapshot: &str) -> Option<&str> {
    snapshot
        .split_whitespace()
        .find(|word| word.len() == 10 && word.as_bytes()[4] == b'-' && word.as_bytes()[7] == b'-')
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Copies a directory tree of plain files (the advisory DB has no symlinks).
fn copy_tree(from: &Path, to: &Path) -> DynResult {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 8, 21), 20_686);
    }

    #[test]
    fn snapshot_date_is_found() {
        assert_eq!(
            snapshot_date("bf5c0d245a92671908518d7e765914d437954ed6 2026-08-21"),
            Some("2026-08-21")
        );
        assert_eq!(snapshot_date("no date here"), None);
    }
}
