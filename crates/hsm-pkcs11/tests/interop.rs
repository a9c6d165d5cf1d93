//! Interoperability with tools we did not write, on real tokens:
//!
//! - keys the provider generates are used by OpenSC's `pkcs11-tool` to sign, and the provider
//!   (on the token) and `hsm_core::verify` (RustCrypto, in software) both verify the result;
//! - keys `pkcs11-tool` generates are found by label and used by the provider to sign, and
//!   OpenSSL verifies with the PEM public key the provider exports;
//! - where `pkcs11-tool` can export the public key, its SubjectPublicKeyInfo equals ours.
//!
//! Every object a test creates is deleted, also when the test fails (see [`Cleanup`]). The PIN
//! reaches `pkcs11-tool` as `--pin env:NAME` (OpenSC's `util_get_pin`), never on its argv.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyFilter, KeyId, KeyType, Mechanism,
    SignInput,
};
use hsm_pkcs11::Pkcs11Provider;

/// The variable through which `pkcs11-tool` gets the PIN; set on the child process only.
const PIN_VAR: &str = "HSM_TEST_INTEROP_PIN";

fn required() -> bool {
    std::env::var("HSM_TEST_REQUIRE_ALL").is_ok_and(|v| !v.is_empty())
}

/// The path of `name` on `PATH`, or `None` after printing why the test is skipped (a failure
/// under `HSM_TEST_REQUIRE_ALL=1`, as for a missing peer).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("{name} not found (apt-get install {package})");
        assert!(!required(), "{why}");
        println!("skipped: {why}");
    }
    found
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// OpenSC's `pkcs11-tool` pointed at one peer's token.
#[derive(Clone)]
struct Pkcs11Tool {
    exe: PathBuf,
    module: String,
    token: String,
    pin: String,
}

impl Pkcs11Tool {
    fn command(&self, login: bool, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["--module", &self.module, "--token-label", &self.token]);
        if login {
            c.args(["--login", "--pin", &format!("env:{PIN_VAR}")])
                .env(PIN_VAR, &self.pin);
        }
        c.args(args);
        // Without a PIN pkcs11-tool prompts: that must fail at once, not hang the test.
        c.stdin(Stdio::null());
        assert!(
            !c.get_args().any(|a| a == self.pin.as_str()),
            "the PIN must not be on pkcs11-tool's command line"
        );
        c
    }

    fn output(&self, login: bool, args: &[&str]) -> Output {
        self.command(login, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()))
    }

    /// Runs pkcs11-tool, fails the test if it fails, and returns its standard output.
    fn run(&self, login: bool, args: &[&str]) -> String {
        let out = self.output(login, args);
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the token offers `mechanism` (as pkcs11-tool names it).
    fn has_mechanism(&self, mechanism: &str) -> bool {
        self.run(false, &["--list-mechanisms"])
            .lines()
            .any(|l| l.trim_start().split(',').next() == Some(mechanism))
    }

    /// Whether any object on the token has `CKA_ID` = `id_hex`.
    fn has_object(&self, id_hex: &str) -> bool {
        // pkcs11-tool 0.23 ignores --id when listing: search the whole listing.
        self.run(true, &["--list-objects"])
            .lines()
            .any(|l| l.trim_start().starts_with("ID:") && l.trim_end().ends_with(id_hex))
    }

    fn delete(&self, id_hex: &str) {
        for ty in ["privkey", "pubkey"] {
            self.run(true, &["--delete-object", "--type", ty, "--id", id_hex]);
        }
    }

    /// The public key object's SubjectPublicKeyInfo, if this token and pkcs11-tool can give it
    /// (pkcs11-tool 0.23 cannot build an EC one from kryoptic's attributes).
    fn read_spki(&self, id_hex: &str, dir: &Path) -> Result<Vec<u8>, String> {
        let path = dir.join(format!("{id_hex}.spki.der"));
        let p = path.to_str().expect("UTF-8 temp path");
        let out = self.output(
            false,
            &["--read-object", "--type", "pubkey", "--id", id_hex, "-o", p],
        );
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(stderr.trim().lines().collect::<Vec<_>>().join("; "));
        }
        std::fs::read(&path).map_err(|e| e.to_string())
    }
}

/// Deletes, with pkcs11-tool, the key pairs still registered when it is dropped, so a failing
/// test leaves nothing behind on the shared token.
struct Cleanup<'a> {
    tool: &'a Pkcs11Tool,
    ids: Vec<String>,
}

impl Cleanup<'_> {
    fn add(&mut self, id_hex: &str) {
        self.ids.push(id_hex.to_owned());
    }

    /// The key was deleted by the test itself.
    fn done(&mut self, id_hex: &str) {
        self.ids.retain(|i| i != id_hex);
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            for ty in ["privkey", "pubkey"] {
                let _ = self
                    .tool
                    .output(true, &["--delete-object", "--type", ty, "--id", id]);
            }
            println!("cleanup: removed leftover key pair {id} with pkcs11-tool (best effort)");
        }
    }
}

/// The tests of one peer run one at a time. kryoptic keeps its token in SQLite, and two
/// processes writing it at once (one test's provider, another test's pkcs11-tool) make one of
/// them fail: measured with two concurrent `pkcs11-tool --keypairgen`, 5 of 12 got
/// `CKR_DEVICE_MEMORY`, which kryoptic 1.5 reports when SQLite says the store is busy.
fn serial(name: &str) -> &'static tokio::sync::Mutex<()> {
    static SOFTHSM2: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    static KRYOPTIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    match name {
        "SOFTHSM2" => &SOFTHSM2,
        "KRYOPTIC" => &KRYOPTIC,
        other => unreachable!("no interop tests for {other}"),
    }
}

/// Everything a test needs, or `None` (after printing why) when a peer or a tool is missing.
struct Setup {
    name: &'static str,
    provider: Pkcs11Provider,
    tool: Pkcs11Tool,
    openssl: PathBuf,
    dir: tempfile::TempDir,
    // Last: released after everything above is dropped.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup(name: &'static str) -> Option<Setup> {
    let peer = common::peer(name)?;
    let exe = tool("pkcs11-tool", "opensc")?;
    let openssl = tool("openssl", "openssl")?;
    let serial = serial(name).lock().await;
    let provider = peer
        .builder()
        .build()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let tool = Pkcs11Tool {
        exe,
        module: peer.module.clone(),
        token: peer.token.clone(),
        pin: peer.pin(),
    };
    Some(Setup {
        name,
        provider,
        tool,
        openssl,
        dir: tempfile::tempdir().expect("temp dir"),
        _serial: serial,
    })
}

impl Setup {
    fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, bytes).expect("write temp file");
        path
    }

    /// `openssl dgst -sha256 [-sigopt ...] -verify pub.pem -signature sig msg`: true on
    /// "Verified OK", false on "Verification failure", a test failure otherwise.
    fn openssl_verifies(&self, pem: &Path, sigopts: &[&str], sig: &Path, msg: &Path) -> bool {
        let mut c = Command::new(&self.openssl);
        c.args(["dgst", "-sha256"]);
        for o in sigopts {
            c.args(["-sigopt", o]);
        }
        c.arg("-verify")
            .arg(pem)
            .arg("-signature")
            .arg(sig)
            .arg(msg)
            .stdin(Stdio::null());
        let out = c.output().expect("run openssl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.contains("Verified OK") {
            return true;
        }
        assert!(
            stdout.contains("Verification failure"),
            "openssl dgst failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    /// Compares pkcs11-tool's export of the public key with the provider's, where it can.
    async fn compare_spki(&self, key: &KeyId) {
        let ours = self.provider.public_key(key).await.expect("public_key");
        match self.tool.read_spki(&key.id, self.dir.path()) {
            Ok(theirs) => assert_eq!(
                theirs,
                ours.spki_der(),
                "{}: pkcs11-tool and the provider export different public keys for {key}",
                self.name
            ),
            Err(why) => println!(
                "{}: note: pkcs11-tool cannot export the public key of {key}, SPKI not compared: {why}",
                self.name
            ),
        }
    }
}

fn pkcs11_tool_key_type(kt: KeyType) -> &'static str {
    match kt {
        KeyType::EcP256 => "EC:prime256v1",
        KeyType::Rsa2048 => "rsa:2048",
        other => unreachable!("not used here: {other}"),
    }
}

/// A key the provider generates, used by pkcs11-tool to sign, verified by us twice.
async fn ours_signed_by_pkcs11_tool(s: &Setup, kt: KeyType) {
    let name = s.name;
    let mut cleanup = Cleanup {
        tool: &s.tool,
        ids: Vec::new(),
    };
    let label = format!("interop-ours-{kt}-{}", random_hex(6));
    let info = s
        .provider
        .generate_key(&GenerateKeyRequest::new(&label, kt))
        .await
        .unwrap_or_else(|e| panic!("{name}: generating {label}: {e:?}"));
    let id = info.id.id.clone();
    cleanup.add(&id);

    let msg = format!("signed by pkcs11-tool with {label}").into_bytes();
    let digest = HashAlg::Sha256.digest(&msg);
    let sig_path = s.dir.path().join(format!("{id}.sig"));
    let (mech, tool_mech, input) = match kt {
        // DER, what --signature-format openssl writes.
        KeyType::EcP256 if s.tool.has_mechanism("ECDSA-SHA256") => {
            (Mechanism::ecdsa(HashAlg::Sha256), "ECDSA-SHA256", &msg)
        }
        // SoftHSM has no CKM_ECDSA_SHA256: pkcs11-tool signs the SHA-256 digest with CKM_ECDSA.
        KeyType::EcP256 => (Mechanism::ecdsa(HashAlg::Sha256), "ECDSA", &digest),
        _ => (
            Mechanism::RsaPkcs1v15 {
                hash: HashAlg::Sha256,
            },
            "SHA256-RSA-PKCS",
            &msg,
        ),
    };
    let in_path = s.write(&format!("{id}.in"), input);
    s.tool.run(
        true,
        &[
            "--sign",
            "--id",
            &id,
            "--mechanism",
            tool_mech,
            "--signature-format",
            "openssl",
            "-i",
            in_path.to_str().expect("UTF-8 temp path"),
            "-o",
            sig_path.to_str().expect("UTF-8 temp path"),
        ],
    );
    let sig = std::fs::read(&sig_path).expect("read signature");
    println!(
        "{name}: pkcs11-tool signed with our {kt} key {label} ({tool_mech}, {} bytes)",
        sig.len()
    );

    let public = s.provider.public_key(&info.id).await.expect("public_key");
    let tampered = [msg.as_slice(), b"!"].concat();
    for (what, data, expect) in [
        ("message", &msg, true),
        ("tampered message", &tampered, false),
    ] {
        let on_token = s
            .provider
            .verify(&info.id, &mech, SignInput::Message(data), &sig)
            .await
            .unwrap_or_else(|e| panic!("{name}: provider verify: {e:?}"));
        let in_software =
            hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(data), &sig)
                .expect("software verify");
        assert_eq!(
            (on_token, in_software),
            (expect, expect),
            "{name}: {kt} signature by pkcs11-tool over the {what}: (provider, RustCrypto)"
        );
    }
    // The digest form of the same input verifies too.
    assert!(
        hsm_core::verify::verify_signature(&public, &mech, SignInput::Digest(&digest), &sig)
            .expect("software verify")
    );

    s.compare_spki(&info.id).await;

    s.provider
        .delete_key(&info.id)
        .await
        .unwrap_or_else(|e| panic!("{name}: delete_key: {e:?}"));
    assert!(
        !s.tool.has_object(&id),
        "{name}: pkcs11-tool still sees {id} after delete_key"
    );
    cleanup.done(&id);
}

/// A key pkcs11-tool generates, found and used by the provider, verified by OpenSSL.
async fn theirs_signed_by_us(s: &Setup, kt: KeyType) {
    let name = s.name;
    let mut cleanup = Cleanup {
        tool: &s.tool,
        ids: Vec::new(),
    };
    let label = format!("interop-theirs-{kt}-{}", random_hex(6));
    let id = random_hex(16);
    cleanup.add(&id);
    s.tool.run(
        true,
        &[
            "--keypairgen",
            "--key-type",
            pkcs11_tool_key_type(kt),
            "--label",
            &label,
            "--id",
            &id,
            "--usage-sign",
        ],
    );

    let found = s
        .provider
        .find_keys(&KeyFilter::label(&label))
        .await
        .unwrap_or_else(|e| panic!("{name}: find_keys: {e:?}"));
    assert_eq!(
        found.len(),
        1,
        "{name}: find_keys({label:?}) found {found:?}"
    );
    let info = &found[0];
    assert_eq!(info.id.id, id, "{name}: the KeyId is the CKA_ID in hex");
    assert_eq!(info.key_type, kt);
    assert_eq!(info.attributes.label, label);
    assert!(info.attributes.usage.sign, "{name}: {info:?}");
    assert!(info.attributes.persistent, "{name}: {info:?}");

    let public = s.provider.public_key(&info.id).await.expect("public_key");
    let pem = s.write(&format!("{id}.pem"), public.to_pem().as_bytes());
    let msg = format!("signed by hsm-pkcs11 with {label}").into_bytes();
    let msg_path = s.write(&format!("{id}.msg"), &msg);
    let tampered_path = s.write(&format!("{id}.tampered"), &[msg.as_slice(), b"!"].concat());

    let mechanisms: Vec<(Mechanism, &[&str])> = match kt {
        KeyType::EcP256 => vec![(Mechanism::ecdsa(HashAlg::Sha256), &[])],
        _ => vec![
            (
                Mechanism::RsaPkcs1v15 {
                    hash: HashAlg::Sha256,
                },
                &[],
            ),
            (
                Mechanism::rsa_pss(HashAlg::Sha256),
                &["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"],
            ),
        ],
    };
    for (i, (mech, sigopts)) in mechanisms.into_iter().enumerate() {
        let sig = s
            .provider
            .sign(&info.id, &mech, SignInput::Message(&msg))
            .await
            .unwrap_or_else(|e| panic!("{name}: sign with {mech}: {e:?}"));
        let sig_path = s.write(&format!("{id}.{i}.sig"), &sig);
        assert!(
            s.openssl_verifies(&pem, sigopts, &sig_path, &msg_path),
            "{name}: OpenSSL rejects our {mech} signature with pkcs11-tool's {kt} key"
        );
        assert!(
            !s.openssl_verifies(&pem, sigopts, &sig_path, &tampered_path),
            "{name}: OpenSSL accepts our {mech} signature over a tampered message"
        );
        println!("{name}: OpenSSL verified our {mech} signature with pkcs11-tool's {kt} key");
    }

    s.compare_spki(&info.id).await;

    // Deleted behind the provider's back: its cached handles are stale now.
    s.tool.delete(&id);
    cleanup.done(&id);
    let left = s
        .provider
        .find_keys(&KeyFilter::label(&label))
        .await
        .expect("find_keys");
    assert!(left.is_empty(), "{name}: still listed: {left:?}");
    let mech = match kt {
        KeyType::EcP256 => Mechanism::ecdsa(HashAlg::Sha256),
        _ => Mechanism::rsa_pss(HashAlg::Sha256),
    };
    match s
        .provider
        .sign(&info.id, &mech, SignInput::Message(&msg))
        .await
    {
        // The token said the cached handle is invalid (kryoptic says CKR_GENERAL_ERROR: a
        // profile quirk); the provider looked the id up again and found nothing.
        Err(HsmError::KeyNotFound { .. }) => {}
        other => panic!("{name}: signing with a key pkcs11-tool deleted: {other:?}"),
    }
}

// Tool runs block the test's only runtime thread, which is harmless here: the provider works
// on its own threads, and the steps run one after another.

#[tokio::test]
async fn ours_signed_by_pkcs11_tool_softhsm2() {
    let Some(s) = setup("SOFTHSM2").await else {
        return;
    };
    ours_signed_by_pkcs11_tool(&s, KeyType::EcP256).await;
    ours_signed_by_pkcs11_tool(&s, KeyType::Rsa2048).await;
}

#[tokio::test]
async fn theirs_signed_by_us_verified_by_openssl_softhsm2() {
    let Some(s) = setup("SOFTHSM2").await else {
        return;
    };
    theirs_signed_by_us(&s, KeyType::EcP256).await;
    theirs_signed_by_us(&s, KeyType::Rsa2048).await;
}

#[tokio::test]
async fn ours_signed_by_pkcs11_tool_kryoptic() {
    let Some(s) = setup("KRYOPTIC").await else {
        return;
    };
    ours_signed_by_pkcs11_tool(&s, KeyType::EcP256).await;
    ours_signed_by_pkcs11_tool(&s, KeyType::Rsa2048).await;
}

#[tokio::test]
async fn theirs_signed_by_us_verified_by_openssl_kryoptic() {
    let Some(s) = setup("KRYOPTIC").await else {
        return;
    };
    theirs_signed_by_us(&s, KeyType::EcP256).await;
    theirs_signed_by_us(&s, KeyType::Rsa2048).await;
}

/// kryoptic keeps its token in SQLite: while another process writes it, a write of ours gets
/// `CKR_DEVICE_MEMORY`, which the kryoptic profile retries. Three threads run pkcs11-tool
/// `--keypairgen` in a loop while the provider generates key pairs until they are done; every one
/// of ours must succeed (pkcs11-tool, which does not retry, may lose some: those are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_kryoptic() {
    const WRITERS: usize = 3;
    const EACH: usize = 4;
    let Some(s) = setup("KRYOPTIC").await else {
        return;
    };
    let before = s.provider.pool_stats();
    let theirs: Vec<String> = (0..WRITERS * EACH).map(|_| random_hex(8)).collect();
    // Whatever is left when the test ends, theirs or ours, is deleted also on failure.
    let mut cleanup = Cleanup {
        tool: &s.tool,
        ids: theirs.clone(),
    };
    let writers: Vec<_> = theirs
        .chunks(EACH)
        .map(|ids| {
            let (tool, ids) = (s.tool.clone(), ids.to_vec());
            std::thread::spawn(move || {
                ids.iter()
                    .filter(|id| {
                        let label = format!("interop-busy-{id}");
                        let args = ["--keypairgen", "--key-type", "EC:prime256v1", "--id", id];
                        let out = tool.output(true, &[&args[..], &["--label", &label]].concat());
                        !out.status.success()
                    })
                    .count()
            })
        })
        .collect();
    let mut ours = Vec::new();
    while ours.len() < 4 || writers.iter().any(|w| !w.is_finished()) {
        let label = format!("interop-busy-ours-{}", random_hex(6));
        let info = s
            .provider
            .generate_key(&GenerateKeyRequest::new(&label, KeyType::EcP256))
            .await
            .unwrap_or_else(|e| panic!("kryoptic: generating {label} beside pkcs11-tool: {e}"));
        cleanup.add(&info.id.id);
        ours.push(info.id);
    }
    let lost: usize = writers
        .into_iter()
        .map(|w| w.join().expect("pkcs11-tool thread"))
        .sum();
    let after = s.provider.pool_stats();
    for id in &ours {
        sign_and_verify(&s, id).await;
        s.provider.delete_key(id).await.expect("deleting our key");
        cleanup.done(&id.id);
    }
    println!(
        "kryoptic: {} key pairs generated beside {} pkcs11-tool --keypairgen runs ({lost} of \
         theirs failed); our retries {} -> {}",
        ours.len(),
        theirs.len(),
        before.retries,
        after.retries
    );
}

/// One signature with `id`, verified in software.
async fn sign_and_verify(s: &Setup, id: &KeyId) {
    let mech = Mechanism::ecdsa(HashAlg::Sha256);
    let sig = s
        .provider
        .sign(id, &mech, SignInput::Message(b"busy store"))
        .await
        .expect("signing with a key made beside another writer");
    let public = s.provider.public_key(id).await.expect("public key");
    assert!(
        hsm_core::verify::verify_signature(&public, &mech, SignInput::Message(b"busy store"), &sig)
            .expect("verifying"),
        "{id}: the signature does not verify"
    );
}
