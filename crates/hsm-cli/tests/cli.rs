//! End-to-end tests of the `hsm` binary: each runs the built binary in its own temporary
//! directory, with the keystore passphrase in an environment variable (never on the command
//! line), and checks signatures and ciphertexts with OpenSSL, an implementation that shares no
//! code with hsm-rs.
//!
//! OpenSSL is needed for the interoperability checks. Without it those tests print
//! "skipped: openssl not found", unless HSM_TEST_REQUIRE_ALL=1, where they fail instead (CI sets
//! it, so a missing tool cannot turn the suite green).
//!
//! Every invocation that opens a keystore costs one Argon2id derivation (about 0.3 s), so the
//! tests share a keystore per test and avoid redundant runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

const PASS_VAR: &str = "HSM_TEST_PASS";
const PASS: &str = "correct horse battery staple";
const MESSAGE: &[u8] = b"the quick brown fox jumps over the lazy dog\n";

/// One test's working directory, with a keystore `keys.hsm` created on first use.
struct Workspace {
    dir: tempfile::TempDir,
}

/// What one run of `hsm` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Asserts success and returns stdout as text.
    fn ok(&self) -> String {
        assert_eq!(self.code, 0, "hsm failed: {self:?}");
        self.stdout_text()
    }

    /// Asserts the error contract: exit status 2, stdout empty, and exactly one line on stderr,
    /// `hsm: error: ...`, containing `needle`. Returns that line.
    fn error(&self, needle: &str) -> String {
        assert_eq!(self.code, 2, "expected exit status 2: {self:?}");
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on error: {self:?}"
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one line on stderr: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("hsm: error: "), "{}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "expected {needle:?} in {:?}",
            lines[0]
        );
        lines[0].to_owned()
    }
}

impl Workspace {
    fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A URI for key `object` in this workspace's keystore.
    fn uri(&self, object: &str) -> String {
        format!("soft:path=keys.hsm;object={object}")
    }

    /// `hsm` with no pin source and no secret in the environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm"));
        cmd.current_dir(self.dir.path())
            .env_remove("HSM_URI")
            .env_remove("RUST_LOG")
            .env_remove(PASS_VAR)
            // Not a terminal: nothing may prompt, so nothing may hang.
            .stdin(Stdio::null());
        cmd
    }

    fn run(mut cmd: Command) -> Run {
        let out = cmd.output().expect("run hsm");
        Run {
            code: out.status.code().expect("exit status, not a signal"),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `hsm --pin-source env:HSM_TEST_PASS <args>`, with the passphrase in that variable.
    fn hsm(&self, args: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.env(PASS_VAR, PASS)
            .args(["--pin-source", &format!("env:{PASS_VAR}")])
            .args(args);
        Self::run(cmd)
    }

    /// `hsm <args>` with only the given environment.
    fn hsm_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command();
        cmd.envs(env.iter().copied()).args(args);
        Self::run(cmd)
    }

    /// Generates a key and saves the public key PEM that `keys generate` printed as
    /// `<label>.pub.pem`; returns that file name.
    fn generate(&self, label: &str, key_type: &str, extra: &[&str]) -> String {
        let uri = self.uri(label);
        let mut args = vec!["keys", "generate", "-u", &uri, "--type", key_type];
        args.extend_from_slice(extra);
        let out = self.hsm(&args).ok();
        assert!(out.contains(&format!("type:        {key_type}")), "{out}");
        let pem_start = out
            .find("-----BEGIN PUBLIC KEY-----")
            .expect("a PEM in the output");
        let file = format!("{label}.pub.pem");
        self.write(&file, &out.as_bytes()[pem_start..]);
        file
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).expect("write test file");
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read test file")
    }

    fn openssl(&self, args: &[&str]) -> Output {
        Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run openssl")
    }

    /// Runs OpenSSL, asserts it succeeded, returns stdout and stderr together.
    fn openssl_ok(&self, args: &[&str]) -> String {
        let out = self.openssl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl {args:?} failed: {text}");
        text
    }

    /// `openssl dgst -<hash> -verify` must print "Verified OK".
    fn openssl_dgst_verifies(&self, hash: &str, public: &str, sig: &str, msg: &str, opts: &[&str]) {
        let mut args = vec!["dgst", hash, "-verify", public, "-signature", sig];
        args.extend_from_slice(opts);
        args.push(msg);
        let said = self.openssl_ok(&args);
        assert!(said.contains("Verified OK"), "{said}");
    }
}

/// Whether OpenSSL can be run; see the module docs for what happens when it cannot.
/// On a provider other than the keystore: `keys generate` (EC P-256), `sign`, OpenSSL verifies
/// the signature with the public key generation printed, and `hsm verify` agrees.
fn generate_sign_verify(ws: &Workspace, uri: &str, run: impl Fn(&[&str]) -> Run) {
    let out = run(&["keys", "generate", "-u", uri, "--type", "ec-p256"]).ok();
    let pem_start = out.find("-----BEGIN PUBLIC KEY-----").expect("a PEM");
    ws.write("pub.pem", &out.as_bytes()[pem_start..]);
    ws.write("msg", MESSAGE);
    run(&["sign", "-u", uri, "--in", "msg", "--out", "sig"]).ok();
    ws.openssl_dgst_verifies("-sha256", "pub.pem", "sig", "msg", &[]);
    assert_eq!(
        run(&["verify", "-u", uri, "--in", "msg", "--signature", "sig"]).ok(),
        "signature valid\n"
    );
}

/// A simulator's variable as `cargo xtask test-sims` sets it, or `None` after printing why the
/// test is skipped (a failure under `HSM_TEST_REQUIRE_ALL`).
fn peer_env(var: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        let why = format!("{var} not set: run through cargo xtask test-sims");
        assert!(std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
        println!("skipped: {why}");
    }
    value
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("HSM_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("openssl not found: apt-get install openssl");
        }
        println!("skipped: openssl not found");
    }
    found
}

// 1. The main job: an EC P-256 signature that OpenSSL accepts, and tampering detected by both.
#[test]
fn ec_p256_signature_verifies_with_openssl_and_tampering_is_caught() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let public = ws.generate("ec", "ec-p256", &[]);
    let uri = ws.uri("ec");
    ws.write("msg", MESSAGE);

    ws.hsm(&["sign", "-u", &uri, "--in", "msg", "--out", "sig"])
        .ok();
    ws.openssl_dgst_verifies("-sha256", &public, "sig", "msg", &[]);
    let ok = ws.hsm(&["verify", "-u", &uri, "--in", "msg", "--signature", "sig"]);
    assert_eq!(ok.ok(), "signature valid\n");

    let mut tampered = MESSAGE.to_vec();
    tampered[4] ^= 0x20;
    ws.write("tampered", &tampered);
    let bad = ws.hsm(&[
        "verify",
        "-u",
        &uri,
        "--in",
        "tampered",
        "--signature",
        "sig",
    ]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert_eq!(bad.stdout_text(), "signature INVALID\n");
    let openssl = ws.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &public,
        "-signature",
        "sig",
        "tampered",
    ]);
    assert!(
        !openssl.status.success(),
        "OpenSSL must reject the tampered message"
    );

    // Without --out the signature is printed in base64; `verify` reads it back in that form.
    let printed = ws.hsm(&["sign", "-u", &uri, "--in", "msg"]).ok();
    let der = BASE64.decode(printed.trim()).expect("base64 signature");
    assert_eq!(der[0], 0x30, "an ECDSA signature is a DER SEQUENCE");
    ws.write("sig.b64", printed.as_bytes());
    let args = [
        "verify",
        "-u",
        &uri,
        "--in",
        "msg",
        "--signature",
        "sig.b64",
    ];
    let b64 = ws.hsm(&[&args[..], &["--signature-format", "base64"]].concat());
    assert_eq!(b64.ok(), "signature valid\n");
}

// 2a. The larger curves, each with its default hash.
#[test]
fn ec_p384_and_p521_signatures_verify_with_openssl() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    ws.write("msg", MESSAGE);
    for (label, key_type, hash) in [
        ("p384", "ec-p384", "-sha384"),
        ("p521", "ec-p521", "-sha512"),
    ] {
        let public = ws.generate(label, key_type, &[]);
        let sig = format!("{label}.sig");
        ws.hsm(&["sign", "-u", &ws.uri(label), "--in", "msg", "--out", &sig])
            .ok();
        ws.openssl_dgst_verifies(hash, &public, &sig, "msg", &[]);
    }
}

// 2b. RSA with PKCS#1 v1.5 (the default) and PSS (salt as long as the hash).
#[test]
fn rsa_pkcs1_and_pss_signatures_verify_with_openssl() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let public = ws.generate("rsa", "rsa-2048", &[]);
    let uri = ws.uri("rsa");
    ws.write("msg", MESSAGE);

    ws.hsm(&["sign", "-u", &uri, "--in", "msg", "--out", "pkcs1.sig"])
        .ok();
    ws.openssl_dgst_verifies("-sha256", &public, "pkcs1.sig", "msg", &[]);

    let pss = ["--mechanism", "rsa-pss-sha256"];
    let args = ["sign", "-u", &uri, "--in", "msg", "--out", "pss.sig"];
    ws.hsm(&[&args[..], &pss].concat()).ok();
    let pss_opts = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:-1",
    ];
    ws.openssl_dgst_verifies("-sha256", &public, "pss.sig", "msg", &pss_opts);
    // The PSS signature is not a PKCS#1 one: the mechanism really changed.
    let pkcs1 = ws.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &public,
        "-signature",
        "pss.sig",
        "msg",
    ]);
    assert!(!pkcs1.status.success());
}

// 2c. Ed25519 signs the message itself (OpenSSL's -rawin).
#[test]
fn ed25519_signature_verifies_with_openssl() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let public = ws.generate("ed", "ed25519", &[]);
    ws.write("msg", MESSAGE);
    ws.hsm(&["sign", "-u", &ws.uri("ed"), "--in", "msg", "--out", "sig"])
        .ok();
    assert_eq!(ws.read("sig").len(), 64);
    let said = ws.openssl_ok(&[
        "pkeyutl", "-verify", "-pubin", "-inkey", &public, "-rawin", "-in", "msg", "-sigfile",
        "sig",
    ]);
    assert!(said.contains("Signature Verified Successfully"), "{said}");
}

// 2d. `--digest`: signing a digest OpenSSL computed gives a signature over the message.
#[test]
fn digest_input_signature_verifies_over_the_message() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let public = ws.generate("ec", "ec-p256", &[]);
    let uri = ws.uri("ec");
    ws.write("msg", MESSAGE);
    ws.openssl_ok(&["dgst", "-sha256", "-binary", "-out", "digest", "msg"]);
    assert_eq!(ws.read("digest").len(), 32);

    let sign = [
        "sign", "-u", &uri, "--digest", "--in", "digest", "--out", "sig",
    ];
    ws.hsm(&sign).ok();
    ws.openssl_dgst_verifies("-sha256", &public, "sig", "msg", &[]);
    // The same signature checks as a message signature.
    let verify = ws.hsm(&["verify", "-u", &uri, "--in", "msg", "--signature", "sig"]);
    assert_eq!(verify.ok(), "signature valid\n");

    // A "digest" of the wrong length is refused, not hashed again.
    let wrong = [
        "sign", "-u", &uri, "--digest", "--in", "msg", "--out", "x.sig",
    ];
    ws.hsm(&wrong).error("digest is 44 bytes");
    assert!(!ws.path("x.sig").exists());
}

// 3. RSA-OAEP: OpenSSL encrypts to the public key, hsm decrypts.
#[test]
fn rsa_oaep_ciphertext_from_openssl_decrypts() {
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let usage = ["--usage", "encrypt,decrypt"];
    let public = ws.generate("rsa", "rsa-2048", &usage);
    let secret = b"a secret for the HSM only";
    ws.write("plain", secret);
    ws.openssl_ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &public,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-in",
        "plain",
        "-out",
        "cipher",
    ]);

    let uri = ws.uri("rsa");
    ws.hsm(&[
        "decrypt",
        "-u",
        &uri,
        "--in",
        "cipher",
        "--out",
        "recovered",
    ])
    .ok();
    assert_eq!(ws.read("recovered"), secret);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(ws.path("recovered"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "plaintext is readable by its owner only: {mode:o}"
        );
    }
}

// 4. AES-GCM round trip (key named through HSM_URI); any flipped byte fails as an integrity
//    error and writes nothing.
#[test]
fn aes_gcm_round_trip_and_tampering_fails_integrity() {
    let ws = Workspace::new();
    ws.generate_aes();
    let plaintext: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    ws.write("plain", &plaintext);
    ws.write("aad", b"file: plain; version 1");
    let env_uri = format!("{}?pin-source=env:{PASS_VAR}", ws.uri("aes"));
    let env = [("HSM_URI", env_uri.as_str()), (PASS_VAR, PASS)];

    let enc = [
        "encrypt", "--in", "plain", "--out", "cipher", "--aad", "aad",
    ];
    ws.hsm_with_env(&enc, &env).ok();
    let cipher = ws.read("cipher");
    assert_eq!(
        cipher.len(),
        12 + plaintext.len() + 16,
        "IV || ciphertext || tag"
    );

    let dec = [
        "decrypt",
        "--in",
        "cipher",
        "--out",
        "recovered",
        "--aad",
        "aad",
    ];
    ws.hsm_with_env(&dec, &env).ok();
    assert_eq!(ws.read("recovered"), plaintext);

    // A fresh IV every time: the same plaintext never encrypts the same way twice.
    let enc2 = [
        "encrypt", "--in", "plain", "--out", "cipher2", "--aad", "aad",
    ];
    ws.hsm_with_env(&enc2, &env).ok();
    assert_ne!(ws.read("cipher2")[..12], cipher[..12]);

    let mut flipped = cipher.clone();
    flipped[12 + 500] ^= 0x01;
    ws.write("flipped", &flipped);
    let bad = ["decrypt", "--in", "flipped", "--out", "bad", "--aad", "aad"];
    let line = ws.hsm_with_env(&bad, &env).error("integrity");
    assert!(line.contains("flipped"), "names the file: {line}");
    assert!(
        !ws.path("bad").exists(),
        "no plaintext from a failed decryption"
    );
}

impl Workspace {
    fn generate_aes(&self) {
        let out = self
            .hsm(&[
                "keys",
                "generate",
                "-u",
                &self.uri("aes"),
                "--type",
                "aes-256",
            ])
            .ok();
        assert!(out.contains("usage:       encrypt,decrypt"), "{out}");
        assert!(
            !out.contains("BEGIN PUBLIC KEY"),
            "an AES key has no public key: {out}"
        );
    }
}

// 5. Every public-key output format, and JSON output.
#[test]
fn key_show_formats_and_json_list() {
    let ws = Workspace::new();
    let uri = ws.uri("ec");
    let generated = ws.hsm(&[
        "--json", "keys", "generate", "-u", &uri, "--type", "ec-p256",
    ]);
    let generated: serde_json::Value = serde_json::from_str(&generated.ok()).expect("JSON");
    assert_eq!(generated["key"]["label"], "ec");
    assert_eq!(generated["key"]["type"], "ec-p256");
    assert_eq!(generated["key"]["extractable"], false);
    let pem_from_generate = generated["public_key_pem"].as_str().unwrap().to_owned();

    let show = |format: &str| ws.hsm(&["keys", "show", "-u", &uri, "--format", format]);
    let pem = show("pem").ok();
    assert_eq!(pem, pem_from_generate);
    ws.write("pub.pem", pem.as_bytes());
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der_from_pem = BASE64.decode(body).expect("PEM body is base64");

    let args = [
        "keys", "show", "-u", &uri, "--format", "der", "--out", "pub.der",
    ];
    ws.hsm(&args).ok();
    assert_eq!(ws.read("pub.der"), der_from_pem);
    assert_eq!(hex::decode(show("hex").ok().trim()).unwrap(), der_from_pem);
    let b64 = show("base64").ok();
    assert_eq!(BASE64.decode(b64.trim()).unwrap(), der_from_pem);

    let jwk: serde_json::Value = serde_json::from_str(&show("jwk").ok()).expect("JWK is JSON");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    for coordinate in ["x", "y"] {
        let c = jwk[coordinate].as_str().unwrap();
        assert_eq!(c.len(), 43, "32 bytes in unpadded base64url");
        assert!(!c.contains(['+', '/', '=']), "base64url: {c}");
    }

    let list = ws.hsm(&["keys", "list", "-u", "soft:path=keys.hsm", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list.ok()).expect("JSON");
    let keys = list.as_array().expect("a JSON array");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["label"], "ec");
    assert_eq!(keys[0]["id"], generated["key"]["id"]);

    if openssl_available() {
        ws.openssl_ok(&["pkey", "-pubin", "-in", "pub.pem", "-noout"]);
        ws.openssl_ok(&[
            "pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-noout",
        ]);
    }
}

// 6. Errors: one line, exit status 2, never a secret.
#[test]
fn errors_are_one_line_and_never_show_secrets() {
    let ws = Workspace::new();
    let uri = ws.uri("k");
    ws.hsm(&["keys", "generate", "-u", &uri, "--type", "ed25519"])
        .ok();
    let pin_env = format!("env:{PASS_VAR}");

    // Wrong passphrase: said plainly, and neither passphrase appears.
    let wrong = "Tr0ub4dor&3-not-it";
    let run = ws.hsm_with_env(
        &["--pin-source", &pin_env, "keys", "list", "-u", &uri],
        &[(PASS_VAR, wrong)],
    );
    let line = run.error("wrong passphrase");
    assert!(!line.contains(wrong) && !line.contains(PASS), "{line}");

    // The passphrase from a file works too (one trailing newline is not part of it).
    ws.write("pass.txt", format!("{PASS}\n").as_bytes());
    let from_file = ws.hsm_with_env(
        &["--pin-source", "file:pass.txt", "keys", "list", "-u", &uri],
        &[],
    );
    assert!(from_file.ok().contains("ed25519"));

    ws.hsm(&["keys", "show", "-u", &ws.uri("nope")])
        .error("key not found: nope");
    ws.hsm(&["keys", "list", "-u", "nosuch:token=x"]).error(
        "provider scheme nosuch is not built into this hsm binary (available: soft, pkcs11, tpm, aws-kms)",
    );
    let inline = ws.hsm(&["keys", "list", "-u", "soft:path=keys.hsm?pin-value=1234"]);
    assert!(!inline.error("pin-source").contains("1234"));
    ws.hsm_with_env(
        &[
            "--pin-source",
            "env:HSM_TEST_UNSET",
            "keys",
            "list",
            "-u",
            &uri,
        ],
        &[],
    )
    .error("environment variable HSM_TEST_UNSET (pin-source) is not set");
    ws.hsm_with_env(&["keys", "list", "-u", &uri], &[])
        .error("the keystore needs a passphrase: use --pin-source env:NAME or file:PATH");
    let flag = ws.hsm(&["--pin", "1234", "keys", "list", "-u", &uri]);
    assert!(!flag.error("unexpected argument '--pin'").contains("1234"));

    // Deleting needs --yes when nobody is at a terminal to confirm; the key stays.
    ws.hsm(&["keys", "delete", "-u", &uri])
        .error("without --yes");
    ws.hsm(&["keys", "generate", "-u", &uri, "--type", "ec-p256"])
        .error("already exists");
    ws.hsm(&["keys", "delete", "-u", &uri, "--yes"]).ok();
    ws.hsm(&["keys", "show", "-u", &uri])
        .error("key not found: k");
    // Nothing to restore where a deletion is immediate.
    ws.hsm(&["keys", "restore", "-u", &format!("{uri};id=k")])
        .error("deletes keys at once");
}

// 7. The quickstart demo, twice: the second run reuses the key and leaves the keystore alone.
#[test]
fn quickstart_runs_and_reuses_its_key() {
    let openssl = openssl_available();
    let ws = Workspace::new();
    let first = ws.hsm(&["quickstart"]).ok();
    assert!(first.contains("generated quickstart (ec-p256"), "{first}");
    assert!(first.contains("BEGIN PUBLIC KEY"), "{first}");
    assert!(
        first.contains("hsm sign --in"),
        "ends with the commands: {first}"
    );
    if openssl {
        assert!(first.contains("by OpenSSL: Verified OK"), "{first}");
    }
    for file in ["quickstart.pub.pem", "quickstart.msg", "quickstart.sig"] {
        assert!(ws.path("hsm-quickstart").join(file).is_file(), "{file}");
    }
    let keystore = ws.read("hsm-quickstart.hsm");

    let second = ws.hsm(&["--json", "quickstart"]).ok();
    let second: serde_json::Value = serde_json::from_str(&second).expect("JSON");
    assert_eq!(second["key_reused"], true);
    assert_eq!(second["keystore_created"], false);
    assert_eq!(second["verified"]["provider"], true);
    assert_eq!(second["verified"]["hsm_core"], true);
    if openssl {
        assert_eq!(second["verified"]["openssl"], "Verified OK");
    }
    assert_eq!(
        ws.read("hsm-quickstart.hsm"),
        keystore,
        "the keystore was not rewritten"
    );
    assert!(Path::new(&ws.path("hsm-quickstart")).is_dir());
}

// 8. The same commands on a PKCS#11 token (SoftHSM2, prepared by `cargo xtask test-sims`): the
// provider is named by an RFC 7512 URI and the PIN comes from a file.
#[test]
fn pkcs11_token_signs_and_openssl_verifies() {
    let module = std::env::var("HSM_TEST_SOFTHSM2_MODULE").ok();
    let (Some(module), Ok(token), Ok(pin_file)) = (
        module,
        std::env::var("HSM_TEST_SOFTHSM2_TOKEN"),
        std::env::var("HSM_TEST_SOFTHSM2_PIN_FILE"),
    ) else {
        let why = "HSM_TEST_SOFTHSM2_* not set: run through cargo xtask test-sims";
        assert!(std::env::var_os("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
        println!("skipped: {why}");
        return;
    };
    if !openssl_available() {
        return;
    }
    let ws = Workspace::new();
    let label = format!("cli-{}", std::process::id());
    let uri = format!(
        "pkcs11:token={token};object={label}?module-path={module}&pin-source=file:{pin_file}"
    );
    let run = |args: &[&str]| ws.hsm_with_env(args, &[]);
    generate_sign_verify(&ws, &uri, run);
    let info = run(&["provider", "info", "-u", &uri]).ok();
    assert!(
        info.contains("pkcs11") && info.contains("SoftHSM"),
        "{info}"
    );
    // A wrong PIN is one clear line.
    ws.write("wrong.pin", b"0000");
    let wrong = uri.replace(&pin_file, &ws.path("wrong.pin").display().to_string());
    run(&["keys", "list", "-u", &wrong]).error("CKR_PIN_INCORRECT");
    run(&["keys", "delete", "-u", &uri, "--yes"]).ok();
    run(&["keys", "show", "-u", &uri]).error("key not found");
}

// 9. The same commands on a TPM (swtpm, started by `cargo xtask test-sims`): the key lives in a
// key directory as a TSS2 key file; the URI names the TCTI and the directory.
#[test]
fn tpm_signs_and_openssl_verifies() {
    let Some(tcti) = peer_env("HSM_TEST_SWTPM_TCTI").filter(|_| openssl_available()) else {
        return;
    };
    let ws = Workspace::new();
    let uri = format!("tpm:tcti={tcti};key-dir=tpm-keys;object=release");
    let run = |args: &[&str]| ws.hsm_with_env(args, &[]);
    generate_sign_verify(&ws, &uri, run);
    let files: Vec<_> = std::fs::read_dir(ws.path("tpm-keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.len() == 1 && files[0].ends_with(".pem"),
        "one key file: {files:?}"
    );
    let info = run(&["provider", "info", "-u", &uri]).ok();
    assert!(info.contains("tpm"), "{info}");
    // A TPM has no PIN: --pin-source is refused with where its secrets go instead.
    run(&["--pin-source", "env:X", "keys", "list", "-u", &uri]).error("key-auth-source");
    run(&["keys", "delete", "-u", &uri, "--yes"]).ok();
    run(&["keys", "show", "-u", &uri]).error("key not found");
    assert_eq!(std::fs::read_dir(ws.path("tpm-keys")).unwrap().count(), 0);
}

// 10. The same commands on AWS KMS (local-kms, started by `cargo xtask test-sims`): the key is a
// KMS key found by its alias; the credentials come from sources named in the URI.
#[test]
fn aws_kms_signs_and_openssl_verifies() {
    let Some(endpoint) = peer_env("HSM_TEST_LOCALKMS_ENDPOINT").filter(|_| openssl_available())
    else {
        return;
    };
    let ws = Workspace::new();
    let label = format!("cli-{}", std::process::id());
    let uri = format!(
        "aws-kms:region=us-east-1;object={label}?endpoint={endpoint}\
         &access-key-source=env:CLI_AKID&secret-key-source=env:CLI_SECRET"
    );
    let env = [
        ("CLI_AKID", "AKIAHSMRSTEST"),
        ("CLI_SECRET", "emulator-accepts-any"),
    ];
    let run = |args: &[&str]| ws.hsm_with_env(args, &env);
    generate_sign_verify(&ws, &uri, run);
    // Missing credentials are one clear line that names the variable, never a value.
    ws.hsm_with_env(&["keys", "show", "-u", &uri], &[])
        .error("CLI_AKID");
    run(&["--pin-source", "env:X", "keys", "list", "-u", &uri]).error("no PIN");
    // Deletion is scheduled (7 days), and the command says so: the key is unusable from now on.
    let out = run(&["keys", "delete", "-u", &uri, "--yes"]).ok();
    assert!(out.starts_with("scheduled key"), "{out}");
    run(&["keys", "show", "-u", &uri]).error("key not found");
    // Until the waiting period ends it can be restored, by id: a label no longer finds it.
    let id = out
        .split_once("(id ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .expect("the key id")
        .0;
    assert!(out.contains(&format!("id={id} in the URI")), "{out}");
    run(&["keys", "restore", "-u", &uri]).error("names no key id");
    let by_id = uri.replace(&format!("object={label}"), &format!("id={id}"));
    let out = run(&["keys", "restore", "-u", &by_id]).ok();
    assert!(out.contains("stays disabled"), "{out}");
    run(&["keys", "restore", "-u", &by_id]).error("not scheduled for deletion");
    run(&["sign", "-u", &uri, "--in", "msg", "--out", "sig"]).error("disabled");
    run(&["keys", "restore", "-u", &by_id, "--enable"]).ok();
    run(&["sign", "-u", &uri, "--in", "msg", "--out", "sig2"]).ok();
    ws.openssl_dgst_verifies("-sha256", "pub.pem", "sig2", "msg", &[]);
}
