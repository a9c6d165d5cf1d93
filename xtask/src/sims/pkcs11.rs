//! The PKCS#11 peers of hsm-pkcs11: SoftHSM2, kryoptic and NSS softokn.
//!
//! All three are shared libraries plus files, not daemons: "starting" one writes its
//! configuration into the run directory and initialises a token there, and the tests load the
//! module themselves. Each exports `HSM_TEST_<PEER>_MODULE` and what the module needs to find its
//! token (a config file path, or for NSS the `C_Initialize` argument string).
//!
//! PINs: every run makes fresh random PINs (so no test can come to depend on a PIN written in
//! the source) and writes them to `user.pin` and `so.pin` (mode 0600, no trailing newline) in the
//! run directory; the tests get the file names, never the PINs, in env vars. `pkcs11-tool` gets
//! them as `--pin env:NAME`, so no PIN is on any command line.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Launch, Prepare, SimSpec, kryoptic};
use crate::{DynResult, tools};

/// The label of the token xtask initialises in SoftHSM2 and kryoptic; tests select it by label,
/// because SoftHSM2 gives a token a new slot id when it is initialised.
const TOKEN_LABEL: &str = "hsm-rs-test";

/// The token NSS keeps its database in, named by NSS; the module's other slot, "NSS Generic
/// Crypto Services", has no database and no login.
const NSS_TOKEN_LABEL: &str = "NSS Certificate DB";

/// The module is `libsofthsm2.so`; `SOFTHSM2_CONF` names the config that puts the token
/// directory in the run directory.
pub const SOFTHSM2: SimSpec = SimSpec {
    name: "softhsm2",
    tools: &["libsofthsm2.so", "pkcs11-tool", "pkcs11-spy.so"],
    prepare: softhsm2,
    ready_timeout: Duration::from_secs(60),
};

/// Built from its crates.io source on first use ([`kryoptic::ensure_module`]), so the timeout
/// covers a cold build with its downloads, running beside clippy on 2 cores (45 to 60 seconds
/// alone); generous, because a build that times out fails the whole test step.
pub const KRYOPTIC: SimSpec = SimSpec {
    name: "kryoptic",
    tools: &[
        "pkcs11-tool",
        "clang",
        "pkg-config",
        "openssl/evp.h",
        "sqlite3.h",
    ],
    prepare: kryoptic,
    ready_timeout: Duration::from_secs(30 * 60),
};

/// NSS's software token; its database is made with `certutil`, and the module finds it through
/// the `C_Initialize` argument string.
pub const NSS: SimSpec = SimSpec {
    name: "nss",
    tools: &["libsoftokn3.so", "certutil"],
    prepare: nss,
    ready_timeout: Duration::from_secs(60),
};

fn softhsm2(prepare: &Prepare) -> DynResult<Launch> {
    let module = tools::path_of("libsofthsm2.so")?;
    let spy = tools::path_of("pkcs11-spy.so")?;
    let tokens = prepare.dir.join("tokens");
    fs::create_dir(&tokens)?;
    let conf = prepare.dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let pins = Pins::create(prepare.dir)?;
    // Through the module's own C_InitToken / C_InitPIN with pkcs11-tool (not softhsm2-util,
    // which only takes PINs on its command line), exactly as for kryoptic.
    init_token(prepare, &module, ("SOFTHSM2_CONF", &conf), &pins)?;

    let mut env = peer_env("SOFTHSM2", &module, &conf, &pins);
    // The module reads its own variable when loaded; tests cannot set it safely once threads
    // run, so it is exported here.
    env.push(("SOFTHSM2_CONF".into(), path_string(&conf)?));
    // The spy wraps any module (PKCS11SPY=<module>, PKCS11SPY_OUTPUT=<log>). Exported by one
    // peer only, so `sims up` prints it once.
    env.push(("HSM_TEST_PKCS11_SPY".into(), path_string(&spy)?));
    Ok(library(env))
}

fn kryoptic(prepare: &Prepare) -> DynResult<Launch> {
    let module = kryoptic::ensure_module(prepare.root, prepare.deadline)?;
    let conf = prepare.dir.join("kryoptic.toml");
    let db = prepare.dir.join("token.sql");
    fs::write(
        &conf,
        format!(
            "[[slots]]\nslot = 0\ndbtype = \"sqlite\"\ndbargs = {}\n",
            toml_string(&path_string(&db)?)
        ),
    )?;
    let pins = Pins::create(prepare.dir)?;
    init_token(prepare, &module, ("KRYOPTIC_CONF", &conf), &pins)?;
    let mut env = peer_env("KRYOPTIC", &module, &conf, &pins);
    env.push(("KRYOPTIC_CONF".into(), path_string(&conf)?));
    Ok(library(env))
}

fn nss(prepare: &Prepare) -> DynResult<Launch> {
    let module = tools::path_of("libsoftokn3.so")?;
    let db = prepare.dir.join("nssdb");
    fs::create_dir(&db)?;
    let db_str = path_string(&db)?;
    // NSS's parameter syntax has no escape for a quote inside a quoted value.
    if db_str.contains('\'') {
        return Err(format!("the NSS database path must not contain a quote: {db_str}").into());
    }
    prepare.run(
        Command::new("certutil")
            .args(["-N", "-d"])
            .arg(format!("sql:{db_str}"))
            .arg("--empty-password"),
    )?;
    for file in ["cert9.db", "key4.db"] {
        if !db.join(file).is_file() {
            return Err(format!("certutil -N made no {file} in {db_str}").into());
        }
    }
    // The token has an empty user PIN; an empty pin file lets tests treat all peers alike.
    let pin_file = prepare.dir.join("user.pin");
    write_secret(&pin_file, "")?;

    // softokn loaded without NSS proper (by a plain PKCS#11 application) fails C_Initialize
    // unless pReserved carries this parameter string (cryptoki: `CInitializeArgs::new_with_reserved`).
    let init_args =
        format!("configdir='sql:{db_str}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=");
    Ok(library(vec![
        ("HSM_TEST_NSS_MODULE".into(), path_string(&module)?),
        ("HSM_TEST_NSS_DIR".into(), db_str),
        ("HSM_TEST_NSS_INIT_ARGS".into(), init_args),
        ("HSM_TEST_NSS_TOKEN".into(), NSS_TOKEN_LABEL.into()),
        ("HSM_TEST_NSS_PIN_FILE".into(), path_string(&pin_file)?),
    ]))
}

/// A peer without a daemon: nothing to start, nothing to wait for.
fn library(env: Vec<(String, String)>) -> Launch {
    Launch {
        daemon: None,
        ports: Vec::new(),
        env,
    }
}

/// The test token's PINs, written to `user.pin` and `so.pin` in the run directory.
struct Pins {
    user: String,
    so: String,
    user_file: PathBuf,
    so_file: PathBuf,
}

impl Pins {
    fn create(dir: &Path) -> DynResult<Pins> {
        // 16 characters: kryoptic wants PINs of at least 8, SoftHSM2 takes 4 to 255.
        let pins = Pins {
            user: random_pin()?,
            so: random_pin()?,
            user_file: dir.join("user.pin"),
            so_file: dir.join("so.pin"),
        };
        write_secret(&pins.user_file, &pins.user)?;
        write_secret(&pins.so_file, &pins.so)?;
        Ok(pins)
    }
}

/// Names of the env vars that carry the PINs to `pkcs11-tool` (`--pin env:NAME`). They contain
/// `PIN`, so the echoed command lines in the logs show `***` for them.
const USER_PIN_VAR: &str = "HSM_XTASK_USER_PIN";
const SO_PIN_VAR: &str = "HSM_XTASK_SO_PIN";

/// Initialises the token in the module's first slot with [`TOKEN_LABEL`] and both PINs, then
/// logs in with the user PIN, which is what "ready" means for a token.
fn init_token(prepare: &Prepare, module: &Path, config: (&str, &Path), pins: &Pins) -> DynResult {
    let tool = |args: &[&str]| {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.arg("--module")
            .arg(module)
            .args(args)
            .env(config.0, config.1)
            .env(USER_PIN_VAR, &pins.user)
            .env(SO_PIN_VAR, &pins.so);
        prepare.run(&mut cmd)
    };
    let so_pin = format!("env:{SO_PIN_VAR}");
    let user_pin = format!("env:{USER_PIN_VAR}");
    // A fresh token directory or database holds one uninitialised token, in the first slot.
    tool(&[
        "--slot-index",
        "0",
        "--init-token",
        "--label",
        TOKEN_LABEL,
        "--so-pin",
        &so_pin,
    ])?;
    // From here on by label: SoftHSM2 has moved the initialised token to a new slot id.
    tool(&[
        "--token-label",
        TOKEN_LABEL,
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        &so_pin,
        "--init-pin",
        "--pin",
        &user_pin,
    ])?;
    // Any command that logs in would do; private keys, because there are none yet (a plain
    // --list-objects lists kryoptic's 117 CKO_MECHANISM objects).
    tool(&[
        "--token-label",
        TOKEN_LABEL,
        "--login",
        "--pin",
        &user_pin,
        "--list-objects",
        "--type",
        "privkey",
    ])
}

/// `HSM_TEST_<PEER>_MODULE`, `_CONF` (the file the module's own config variable must name),
/// `_TOKEN`, `_PIN_FILE` and `_SO_PIN_FILE`, for a peer with a [`TOKEN_LABEL`] token.
fn peer_env(peer: &str, module: &Path, conf: &Path, pins: &Pins) -> Vec<(String, String)> {
    let var = |suffix: &str| format!("HSM_TEST_{peer}_{suffix}");
    let text = |path: &Path| path.to_string_lossy().into_owned();
    vec![
        (var("MODULE"), text(module)),
        (var("CONF"), text(conf)),
        (var("TOKEN"), TOKEN_LABEL.into()),
        (var("PIN_FILE"), text(&pins.user_file)),
        (var("SO_PIN_FILE"), text(&pins.so_file)),
    ]
}

/// 16 lowercase hex digits from the kernel's CSPRNG (xtask has no dependencies beyond serde).
fn random_pin() -> DynResult<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Creates `path` readable by its owner only and writes `secret` (no trailing newline).
fn write_secret(path: &Path, secret: &str) -> DynResult {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

/// A path as UTF-8, since it goes into config files and env vars; errors on anything else.
fn path_string(path: &Path) -> DynResult<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("not a UTF-8 path: {}", path.display()).into())
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ch if ch.is_control() => out.push_str(&format!("\\u{:04X}", ch as u32)),
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pins_are_fresh_and_private() {
        let dir = std::env::temp_dir().join(format!("xtask-pins-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let pins = Pins::create(&dir).unwrap();
        assert_eq!(pins.user.len(), 16);
        assert_ne!(pins.user, pins.so);
        assert_eq!(fs::read_to_string(&pins.so_file).unwrap(), pins.so);
        let mode = fs::metadata(&pins.user_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }

    #[test]
    fn env_names_follow_the_pattern() {
        let pins = Pins {
            user: String::new(),
            so: String::new(),
            user_file: "/r/user.pin".into(),
            so_file: "/r/so.pin".into(),
        };
        let env = peer_env("X", Path::new("/m.so"), Path::new("/r/x.conf"), &pins);
        let names: Vec<&str> = env.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            names,
            [
                "HSM_TEST_X_MODULE",
                "HSM_TEST_X_CONF",
                "HSM_TEST_X_TOKEN",
                "HSM_TEST_X_PIN_FILE",
                "HSM_TEST_X_SO_PIN_FILE"
            ]
        );
    }
}
