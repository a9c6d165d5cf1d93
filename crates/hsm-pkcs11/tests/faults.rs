//! Faults injected underneath a running provider, against SoftHSM2: every session closed during
//! a signing load, the login dropped (during a load, and before a key was ever resolved), the
//! module finalized, the key's handles made stale, the token removed and put back, and a retry
//! budget of zero. The faults come from a second handle on the same module, as another library
//! in the same application would cause them. Signatures are checked in software.
//!
//! # One process, one private token
//! PKCS#11 module state belongs to the process and these scenarios close, log out and finalize
//! it, so they run one after the other inside one test. That test runs in a child process (this
//! test binary started again) whose `SOFTHSM2_CONF` names a private token directory holding a
//! fresh token with the shared token's label and PIN: taking the token away by moving its
//! directory must not take the simulator's shared token from other test binaries that may be
//! using it at the same time, and `std::env::set_var` is unsound once threads run.

mod common;

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SLOT_ID,
    CK_TOKEN_INFO, CK_ULONG,
};
use hsm_core::verify::verify_signature;
use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyId, KeyType, Mechanism, PublicKey,
    SignInput,
};
use hsm_pkcs11::{Pkcs11Provider, PoolStats};

/// The one test; [`TEST_NAME`] must match it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm2_recovers_from_faults() {
    let Some(peer) = common::peer("SOFTHSM2") else {
        return;
    };
    match std::env::var_os(PRIVATE_TOKENS) {
        Some(tokens) => scenarios(&peer, Path::new(&tokens)).await,
        None => tokio::task::spawn_blocking(in_private_process)
            .await
            .expect("the parent side of the fault test panicked"),
    }
}

const TEST_NAME: &str = "softhsm2_recovers_from_faults";
/// Set (to the private token directory) in the child process only.
const PRIVATE_TOKENS: &str = "HSM_FAULTS_PRIVATE_TOKENS";

const MECH: Mechanism = Mechanism::ecdsa(HashAlg::Sha256);
const TASKS: u64 = 8;
const SIGNATURES_PER_TASK: u64 = 300;
/// Faults injected during each load, spread evenly over its signatures.
const FAULTS_PER_LOAD: u64 = 5;

// ---------------------------------------------------------------------------------------------
// The parent: a private token directory and a child process that uses it.

/// Polls of the child, 100 ms apart: a hang becomes a failure after ten minutes (the run takes
/// seconds; the margin is for a shared, niced machine).
const WATCHDOG_POLLS: u32 = 6000;

fn in_private_process() {
    let dir = tempfile::Builder::new()
        .prefix("hsm-rs-faults-")
        .tempdir()
        .expect("a temporary directory");
    let tokens = dir.path().join("tokens");
    fs::create_dir(&tokens).expect("the token directory");
    let conf = dir.path().join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("softhsm2.conf");

    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env("HSM_TEST_SOFTHSM2_CONF", &conf)
        .env(PRIVATE_TOKENS, &tokens)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the test binary again");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut status = None;
    for _ in 0..WATCHDOG_POLLS {
        if let Some(s) = child.try_wait().expect("waiting for the child") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    print!("{}", out.join().unwrap_or_default());
    eprint!("{}", err.join().unwrap_or_default());
    match status {
        Some(s) => assert!(
            s.success(),
            "the fault scenarios failed ({s}); output above"
        ),
        None => panic!("the fault scenarios hung; the child was killed; output above"),
    }
}

/// Makes the token in the empty private directory: the shared token's label and user PIN, a
/// random SO PIN nobody needs again. Through the module (`C_InitToken`, `C_InitPIN`), as xtask
/// does for the shared one, so no PIN is on a command line.
fn init_private_token(peer: &common::Peer) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let ctx = Pkcs11::new(&peer.module).expect("loading SoftHSM");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let free = ctx
        .get_slots_with_token()
        .expect("C_GetSlotList")
        .into_iter()
        .find(|s| {
            !ctx.get_token_info(*s)
                .expect("C_GetTokenInfo")
                .token_initialized()
        })
        .expect("SoftHSM offers a slot with an uninitialised token");
    let so_pin = AuthPin::from(hex::encode(rand::random::<[u8; 16]>()));
    ctx.init_token(free, &so_pin, &peer.token)
        .expect("C_InitToken");
    // SoftHSM gives an initialised token a new slot id: find it by label again.
    let slot = ctx
        .get_slots_with_token()
        .expect("C_GetSlotList")
        .into_iter()
        .find(|s| ctx.get_token_info(*s).expect("C_GetTokenInfo").label() == peer.token)
        .expect("the new token");
    let session = ctx.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::So, Some(&so_pin))
        .expect("C_Login as SO");
    session
        .init_pin(&AuthPin::from(peer.pin()))
        .expect("C_InitPIN");
    session.logout().expect("C_Logout");
    drop(session);
    // The provider initialises the module itself, as it would in an application.
    ctx.finalize().expect("C_Finalize");
}

// ---------------------------------------------------------------------------------------------
// The second handle: how the faults are made.

/// A second handle on the module the provider uses, below cryptoki (which has no
/// `C_CloseAllSessions`). `dlopen` of the same path gives the same loaded object, so its calls
/// act on the provider's module state: what another library in the same application would do.
struct SecondHandle {
    // Keeps the shared object loaded while `list` points into it.
    _lib: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
}

// SAFETY: the function table is immutable, and the module was initialised with
// CKF_OS_LOCKING_OK by the provider, so it may be called from any thread.
unsafe impl Send for SecondHandle {}
// SAFETY: as above.
unsafe impl Sync for SecondHandle {}

/// `CKR_OK`, or the code's name.
fn rv_name(rv: CK_RV) -> String {
    match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => "CKR_OK".into(),
        cryptoki::error::Rv::Error(e) => format!("{e:?} ({rv:#x})"),
    }
}

fn ok(rv: CK_RV, what: &str) {
    assert_eq!(rv, cryptoki_sys::CKR_OK, "{what} returned {}", rv_name(rv));
}

impl SecondHandle {
    fn load(module: &str) -> Self {
        // SAFETY: loading a PKCS#11 module runs its initialisers; the provider already loaded it.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(module) }.expect("loading the module again");
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer.
        ok(
            unsafe { lib.C_GetFunctionList(&mut list) },
            "C_GetFunctionList",
        );
        assert!(!list.is_null(), "C_GetFunctionList gave no table");
        SecondHandle { _lib: lib, list }
    }

    fn table(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: from C_GetFunctionList, valid while `_lib` keeps the module loaded.
        unsafe { &*self.list }
    }

    /// The slot holding the token labelled `label`.
    fn slot(&self, label: &str) -> CK_SLOT_ID {
        let get_slots = self.table().C_GetSlotList.expect("C_GetSlotList");
        let get_info = self.table().C_GetTokenInfo.expect("C_GetTokenInfo");
        let mut n: CK_ULONG = 0;
        // SAFETY: a NULL list asks for the count only.
        ok(
            unsafe { get_slots(cryptoki_sys::CK_TRUE, ptr::null_mut(), &mut n) },
            "C_GetSlotList",
        );
        let mut slots: Vec<CK_SLOT_ID> = vec![0; n as usize];
        // SAFETY: `slots` has room for `n` ids.
        ok(
            unsafe { get_slots(cryptoki_sys::CK_TRUE, slots.as_mut_ptr(), &mut n) },
            "C_GetSlotList",
        );
        slots.truncate(n as usize);
        for slot in slots {
            // SAFETY: CK_TOKEN_INFO is plain data; C_GetTokenInfo fills it.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid CK_TOKEN_INFO to write.
            ok(unsafe { get_info(slot, &mut info) }, "C_GetTokenInfo");
            if String::from_utf8_lossy(&info.label).trim_end() == label {
                return slot;
            }
        }
        panic!("no slot holds a token labelled {label:?}");
    }

    fn close_all_sessions(&self, slot: CK_SLOT_ID) -> CK_RV {
        let f = self.table().C_CloseAllSessions.expect("C_CloseAllSessions");
        // SAFETY: takes a slot id only.
        unsafe { f(slot) }
    }

    /// `C_Finalize(NULL)`: every session, login and handle of the process is gone.
    fn finalize(&self) -> CK_RV {
        let f = self.table().C_Finalize.expect("C_Finalize");
        // SAFETY: the argument must be NULL.
        unsafe { f(ptr::null_mut()) }
    }

    fn open_session(&self, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
        let f = self.table().C_OpenSession.expect("C_OpenSession");
        let mut h: CK_SESSION_HANDLE = 0;
        let flags = cryptoki_sys::CKF_SERIAL_SESSION | cryptoki_sys::CKF_RW_SESSION;
        // SAFETY: no callback; `h` receives the handle.
        ok(
            unsafe { f(slot, flags, ptr::null_mut(), None, &mut h) },
            "C_OpenSession",
        );
        h
    }

    fn close_session(&self, session: CK_SESSION_HANDLE) {
        let f = self.table().C_CloseSession.expect("C_CloseSession");
        // SAFETY: a session this handle opened.
        ok(unsafe { f(session) }, "C_CloseSession");
    }

    /// `C_Logout` on a session of our own: the login belongs to the application, so this logs
    /// the provider's sessions out too. `CKR_USER_NOT_LOGGED_IN` when nobody had logged in again
    /// since the last one.
    fn logout(&self, slot: CK_SLOT_ID) -> CK_RV {
        let s = self.open_session(slot);
        let f = self.table().C_Logout.expect("C_Logout");
        // SAFETY: a session this handle opened.
        let rv = unsafe { f(s) };
        self.close_session(s);
        rv
    }

    /// Replaces the objects with `CKA_ID = id` by copies (`C_CopyObject`, then
    /// `C_DestroyObject` of the originals): the key is the same, every handle to it is stale.
    /// Needs the application's login (the provider's), to see the private key. Returns how many
    /// objects were replaced.
    fn replace_objects(&self, slot: CK_SLOT_ID, id: &[u8]) -> usize {
        let t = self.table();
        let s = self.open_session(slot);
        let mut id = id.to_vec();
        let mut template = [CK_ATTRIBUTE {
            type_: cryptoki_sys::CKA_ID,
            pValue: id.as_mut_ptr().cast(),
            ulValueLen: id.len() as CK_ULONG,
        }];
        let mut found: Vec<CK_OBJECT_HANDLE> = vec![0; 16];
        let mut n: CK_ULONG = 0;
        // SAFETY: the template points at `id`, alive for these calls; `found` has room for 16.
        unsafe {
            ok(
                t.C_FindObjectsInit.expect("C_FindObjectsInit")(s, template.as_mut_ptr(), 1),
                "C_FindObjectsInit",
            );
            ok(
                t.C_FindObjects.expect("C_FindObjects")(s, found.as_mut_ptr(), 16, &mut n),
                "C_FindObjects",
            );
            ok(
                t.C_FindObjectsFinal.expect("C_FindObjectsFinal")(s),
                "C_FindObjectsFinal",
            );
        }
        found.truncate(n as usize);
        for &object in &found {
            let mut copy: CK_OBJECT_HANDLE = 0;
            // An empty template copies every attribute; SoftHSM refuses a NULL one, even empty.
            let mut nothing: [CK_ATTRIBUTE; 0] = [];
            // SAFETY: no attributes are read from `nothing`; `copy` receives the handle.
            unsafe {
                ok(
                    t.C_CopyObject.expect("C_CopyObject")(
                        s,
                        object,
                        nothing.as_mut_ptr(),
                        0,
                        &mut copy,
                    ),
                    "C_CopyObject",
                );
                ok(
                    t.C_DestroyObject.expect("C_DestroyObject")(s, object),
                    "C_DestroyObject",
                );
            }
        }
        self.close_session(s);
        found.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Taking the token away.

/// The token's directory moved aside, so SoftHSM finds no token at its next `C_Initialize`.
/// Put back on drop, so a failing assertion cannot leave the token missing.
struct Parked {
    home: PathBuf,
    aside: PathBuf,
    restored: bool,
}

impl Parked {
    fn park(home: &Path) -> Self {
        let name = home.file_name().expect("a token directory name");
        let aside = home
            .parent()
            .and_then(Path::parent)
            .expect("the token directory's grandparent")
            .join(format!("parked-{}", name.to_string_lossy()));
        fs::rename(home, &aside).expect("moving the token directory aside");
        Parked {
            home: home.to_owned(),
            aside,
            restored: false,
        }
    }

    fn restore(mut self) {
        self.put_back();
    }

    fn put_back(&mut self) {
        if !self.restored {
            fs::rename(&self.aside, &self.home).expect("putting the token directory back");
            self.restored = true;
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// The one directory SoftHSM keeps the token in, under the token directory.
fn token_dir(tokens: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(tokens)
        .expect("reading the token directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one token in {}: {dirs:?}", tokens.display());
    dirs.into_iter().next().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Signing, and loads with faults injected.

/// Signs `msg` and checks the signature in software (RustCrypto, not the token).
async fn sign_checked(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    msg: &[u8],
) -> Result<(), String> {
    let sig = p
        .sign(key, &MECH, SignInput::Message(msg))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match verify_signature(public, &MECH, SignInput::Message(msg), &sig) {
        Ok(true) => Ok(()),
        other => Err(format!("the signature does not verify: {other:?}")),
    }
}

/// Where the faults come in: at points of a load's progress (not of the clock), and between
/// calls. SoftHSM frees a session's state when it is closed without counting who uses it, so a
/// `C_CloseAllSessions` landing inside another thread's `C_Sign` crashes the process (seen:
/// SIGSEGV in OpenSSL's `EC_POINT_get_affine_coordinates` under `C_Sign`); a network HSM would
/// answer `CKR_SESSION_CLOSED` instead. Each signature holds the gate shared, the injector
/// holds it exclusively for the moment of the fault, and the load then runs on.
#[derive(Default)]
struct Injector {
    done: AtomicU64,
    finished: AtomicBool,
    gate: tokio::sync::RwLock<()>,
}

impl Injector {
    /// Waits until `n` signatures are done (or the load has ended), then runs `fault` with no
    /// call in flight.
    fn at<T>(&self, n: u64, fault: impl FnOnce() -> T) -> T {
        while self.done.load(Ordering::SeqCst) < n && !self.finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _quiet = self.gate.blocking_write();
        fault()
    }
}

struct LoadOutcome {
    verified: u64,
    failures: Vec<String>,
    /// What the injector reported.
    injected: u64,
}

/// [`TASKS`] tasks of [`SIGNATURES_PER_TASK`] checked signatures each, while `inject` runs on
/// a blocking thread and injects its faults through the [`Injector`].
async fn load_with_faults(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    inject: impl FnOnce(&Injector) -> u64 + Send + 'static,
) -> LoadOutcome {
    let injector = Arc::new(Injector::default());
    let verified = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (p, key, public) = (p.clone(), key.clone(), public.clone());
        let (injector, verified) = (injector.clone(), verified.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..SIGNATURES_PER_TASK {
                let msg = format!("task {t} signature {i}");
                let pass = injector.gate.read().await;
                let signed = sign_checked(&p, &key, &public, msg.as_bytes()).await;
                drop(pass);
                match signed {
                    Ok(()) => {
                        verified.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.push(format!("{msg}: {e}")),
                }
                injector.done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    let injecting = tokio::task::spawn_blocking({
        let injector = injector.clone();
        move || inject(&injector)
    });
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.expect("a load task panicked"));
    }
    injector.finished.store(true, Ordering::SeqCst);
    let injected = injecting.await.expect("the fault injector panicked");
    LoadOutcome {
        verified: verified.load(Ordering::SeqCst),
        failures,
        injected,
    }
}

/// The points (in signatures done) at which a load's faults are injected.
fn fault_points() -> impl Iterator<Item = u64> {
    let total = TASKS * SIGNATURES_PER_TASK;
    (1..=FAULTS_PER_LOAD).map(move |k| k * total / (FAULTS_PER_LOAD + 1))
}

fn assert_all_verified(what: &str, out: &LoadOutcome) {
    let shown: Vec<&String> = out.failures.iter().take(10).collect();
    assert!(
        out.failures.is_empty(),
        "{what}: {} of {} signatures failed, first ones: {shown:#?}",
        out.failures.len(),
        TASKS * SIGNATURES_PER_TASK
    );
    assert_eq!(out.verified, TASKS * SIGNATURES_PER_TASK, "{what}");
}

/// The counters that grew between two readings, for the report.
fn grown(before: &PoolStats, after: &PoolStats) -> String {
    format!(
        "in place +{}, opened +{}, evicted +{}, retries +{}, relogins +{}, reinitializations +{}",
        after.in_place - before.in_place,
        after.opened - before.opened,
        after.evicted - before.evicted,
        after.retries - before.retries,
        after.relogins - before.relogins,
        after.reinitializations - before.reinitializations
    )
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

async fn scenarios(peer: &common::Peer, tokens: &Path) {
    init_private_token(peer);
    // Async signatures run in place once measured under this limit (the default is 100 µs): a
    // limit no SoftHSM signature reaches, so the faults land on in-place attempts, which hand
    // the call to a worker to recover, as well as on the workers' own.
    let p = peer
        .builder()
        .pool_size(2)
        .in_place_below(Duration::from_millis(5))
        .build()
        .await
        .expect("connecting to the private SoftHSM token");
    let key = p
        .generate_key(&GenerateKeyRequest::new("faults-p256", KeyType::EcP256))
        .await
        .expect("generating a P-256 key")
        .id;
    let public = p.public_key(&key).await.expect("its public key");
    let second = Arc::new(SecondHandle::load(&peer.module));
    let slot = second.slot(&peer.token);
    println!("faults: private token in {}", tokens.display());

    sessions_closed_under_load(&p, &key, &public, &second, slot).await;
    logged_out_under_load(&p, &key, &public, &second, slot).await;
    logged_out_before_first_use(peer, &key, &public, &second, slot).await;
    listed_after_logout(&p, &key, &second, slot).await;
    module_finalized(&p, &key, &public, &second).await;
    stale_handles(&p, &key, &public, &second, &peer.token).await;
    token_removed_and_back(&p, &key, &public, &second, tokens, &peer.token).await;
    retry_budget_is_honoured(peer, &p, &key, &public, &second).await;
    println!("faults: final pool {:?}", p.pool_stats());
}

/// 1. `C_CloseAllSessions` from the second handle, several times during a load: every session
///    of the pool and the anchor die, and with them the login.
async fn sessions_closed_under_load(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &Arc<SecondHandle>,
    slot: CK_SLOT_ID,
) {
    let before = p.pool_stats();
    let h = second.clone();
    let out = load_with_faults(p, key, public, move |injector| {
        let mut closed = 0;
        for at in fault_points() {
            injector.at(at, || ok(h.close_all_sessions(slot), "C_CloseAllSessions"));
            closed += 1;
        }
        closed
    })
    .await;
    let after = p.pool_stats();
    println!(
        "faults: 1. sessions closed {}x under {TASKS}x{SIGNATURES_PER_TASK} signatures: {} verified; {}\n         {after:?}",
        out.injected,
        out.verified,
        grown(&before, &after)
    );
    assert_all_verified("sessions closed under load", &out);
    assert!(
        after.in_place > before.in_place,
        "no signature ran in place: {after:?}"
    );
    assert!(after.evicted > before.evicted, "no session was evicted");
    assert!(
        after.relogins > before.relogins,
        "the login was not restored"
    );
}

/// 2. `C_Logout` from the second handle's own session, several times during a load.
async fn logged_out_under_load(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &Arc<SecondHandle>,
    slot: CK_SLOT_ID,
) {
    let before = p.pool_stats();
    let h = second.clone();
    let out = load_with_faults(p, key, public, move |injector| {
        let mut logged_out = 0;
        for at in fault_points() {
            match injector.at(at, || h.logout(slot)) {
                cryptoki_sys::CKR_OK => logged_out += 1,
                // Nobody has needed the login since the last logout.
                cryptoki_sys::CKR_USER_NOT_LOGGED_IN => {}
                rv => panic!("C_Logout returned {}", rv_name(rv)),
            }
        }
        logged_out
    })
    .await;
    let after = p.pool_stats();
    println!(
        "faults: 2. logged out {}x under {TASKS}x{SIGNATURES_PER_TASK} signatures: {} verified; {}\n         {after:?}",
        out.injected,
        out.verified,
        grown(&before, &after)
    );
    assert!(out.injected > 0, "no logout took effect");
    assert_all_verified("logged out under load", &out);
    assert!(
        after.relogins > before.relogins,
        "the login was not restored"
    );
}

/// 2b. Logged out before a key was ever resolved: the lookup sees no private key (the token
///     hides them without the login), which must restore the login, not report `KeyNotFound`.
async fn logged_out_before_first_use(
    peer: &common::Peer,
    key: &KeyId,
    public: &PublicKey,
    second: &SecondHandle,
    slot: CK_SLOT_ID,
) {
    let fresh = peer
        .builder()
        .pool_size(1)
        .build()
        .await
        .expect("a provider that has resolved no key yet");
    ok(second.logout(slot), "C_Logout");
    sign_checked(&fresh, key, public, b"first use, logged out")
        .await
        .expect("resolving a key while logged out");
    let stats = fresh.pool_stats();
    println!("faults: 2b. logged out before the key was resolved: signs; {stats:?}");
    assert!(stats.relogins > 0, "the login was not restored");
}

/// 2c. Logged out, then the keys listed: without the login the token shows no private key, so
///     the list must restore the login first rather than come back short.
async fn listed_after_logout(
    p: &Pkcs11Provider,
    key: &KeyId,
    second: &SecondHandle,
    slot: CK_SLOT_ID,
) {
    let before = p.pool_stats();
    ok(second.logout(slot), "C_Logout");
    let listed = p
        .find_keys(&hsm_core::KeyFilter::default())
        .await
        .expect("listing keys after a logout");
    let after = p.pool_stats();
    println!(
        "faults: 2c. listed after a logout: {} keys; relogins {} -> {}",
        listed.len(),
        before.relogins,
        after.relogins
    );
    assert!(
        listed.iter().any(|k| k.id.id == key.id),
        "the private key is missing from a list made after a logout: {listed:?}"
    );
    assert!(
        after.relogins > before.relogins,
        "the login was not restored"
    );
}

/// 3. `C_Finalize` from the second handle: the module forgets everything
///    (`CKR_CRYPTOKI_NOT_INITIALIZED`); the provider initialises it again and resolves the key's
///    handle again.
async fn module_finalized(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &SecondHandle,
) {
    sign_checked(p, key, public, b"before C_Finalize")
        .await
        .expect("signing before the fault");
    let before = p.pool_stats();
    ok(second.finalize(), "C_Finalize");
    for i in 0..3 {
        let msg = format!("after C_Finalize {i}");
        sign_checked(p, key, public, msg.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{msg}: {e}"));
    }
    let after = p.pool_stats();
    println!(
        "faults: 3. module finalized: signing goes on; {}\n         {after:?}",
        grown(&before, &after)
    );
    assert!(
        after.reinitializations > before.reinitializations,
        "the module was not initialised again"
    );
}

/// 3b. The key's objects replaced by copies behind the provider's back: the cached handles are
///     stale (`CKR_OBJECT_HANDLE_INVALID`), are resolved again, and the same key signs on.
async fn stale_handles(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &SecondHandle,
    label: &str,
) {
    sign_checked(p, key, public, b"handles cached")
        .await
        .expect("signing before the fault");
    let before = p.pool_stats();
    // After the re-initialisation the slot id may have changed.
    let slot = second.slot(label);
    let id = hex::decode(&key.id).expect("a hex key id");
    let replaced = second.replace_objects(slot, &id);
    assert_eq!(replaced, 2, "the private and the public key object");
    sign_checked(p, key, public, b"handles stale")
        .await
        .expect("signing with stale cached handles");
    let after = p.pool_stats();
    println!(
        "faults: 3b. key objects replaced: resolved again; {}\n         {after:?}",
        grown(&before, &after)
    );
    assert!(
        after.retries > before.retries,
        "the stale handle was not met"
    );
    assert_eq!(after.reinitializations, before.reinitializations);
    assert_eq!(after.evicted, before.evicted);
}

/// 4. The token's directory moved away and the module re-initialised (so SoftHSM rescans):
///    a clear retryable `Unavailable` naming the token, not a hang or a panic; once it is back,
///    the same key signs again.
async fn token_removed_and_back(
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &SecondHandle,
    tokens: &Path,
    label: &str,
) {
    sign_checked(p, key, public, b"before removal")
        .await
        .expect("signing before the fault");
    let before = p.pool_stats();
    let parked = Parked::park(&token_dir(tokens));
    ok(second.finalize(), "C_Finalize");
    let err = p
        .sign(key, &MECH, SignInput::Message(b"while removed"))
        .await
        .expect_err("signing with the token gone");
    println!("faults: 4. token removed: {err}");
    match &err {
        HsmError::Unavailable {
            reason,
            retryable: true,
            ..
        } => assert!(
            reason.contains(label),
            "the error does not name the token {label:?}: {reason}"
        ),
        other => panic!("not a retryable Unavailable: {other:?}"),
    }
    // Still gone: the same answer again, not a stale success or a different failure.
    let again = p
        .sign(key, &MECH, SignInput::Message(b"still removed"))
        .await
        .expect_err("signing with the token still gone");
    assert!(again.is_retryable(), "{again:?}");

    parked.restore();
    sign_checked(p, key, public, b"token back")
        .await
        .expect("signing after the token came back");
    let after = p.pool_stats();
    println!(
        "faults: 4. token back: the key signs again; {}\n         {after:?}",
        grown(&before, &after)
    );
    assert!(after.reinitializations > before.reinitializations);
}

/// 5. A provider with `retry_budget(0)`: after `C_CloseAllSessions` its call fails with a
///    retryable `Unavailable` instead of being retried, and the next call succeeds.
async fn retry_budget_is_honoured(
    peer: &common::Peer,
    p: &Pkcs11Provider,
    key: &KeyId,
    public: &PublicKey,
    second: &SecondHandle,
) {
    // Signing in place as `p` does: the failing call below is tried in place first, on a
    // session opened after the fault (which lacks the login), and must still report what the
    // worker's closed session met.
    let strict = peer
        .builder()
        .pool_size(1)
        .retry_budget(0)
        .in_place_below(Duration::from_millis(5))
        .build()
        .await
        .expect("a second provider");
    sign_checked(&strict, key, public, b"strict, before")
        .await
        .expect("signing before the fault");
    let before = strict.pool_stats();
    ok(
        second.close_all_sessions(second.slot(&peer.token)),
        "C_CloseAllSessions",
    );
    let err = strict
        .sign(key, &MECH, SignInput::Message(b"strict, sessions closed"))
        .await
        .expect_err("with no retries, the closed session's failure is reported");
    let failed = strict.pool_stats();
    println!("faults: 5. retry budget 0: {err}\n         {failed:?}");
    assert!(
        matches!(
            err,
            HsmError::Unavailable {
                retryable: true,
                ..
            }
        ),
        "not a retryable Unavailable: {err:?}"
    );
    assert_eq!(failed.retries, before.retries, "the call was retried");
    sign_checked(&strict, key, public, b"strict, next call")
        .await
        .expect("the call after the reported failure");
    let after = strict.pool_stats();
    println!(
        "faults: 5. next call succeeds; {}\n         {after:?}",
        grown(&before, &after)
    );
    // The first provider lost its sessions too, and heals within its own budget.
    sign_checked(p, key, public, b"first provider, after")
        .await
        .expect("the first provider after C_CloseAllSessions");
}
