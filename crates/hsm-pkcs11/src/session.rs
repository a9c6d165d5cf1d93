//! The connection to one token: the module, the login, the session pool, the worker threads,
//! and the recovery that keeps them working through faults.
//!
//! # Threads
//! PKCS#11 calls can block (a network HSM answers in milliseconds; SoftHSM's RSA-4096 takes
//! tens), so they run on worker threads, not on the async executor. Each provider owns
//! `pool_size` worker threads that take jobs from one queue; an async caller sends a job and
//! awaits its answer. When requests queue up, a worker goes straight from one `C_Sign` to the
//! next, so the token stays as busy as a bare loop would keep it, and hands fast answers back in
//! small batches (see [`worker`]). Synchronous callers use [`Token::run`] on their own thread
//! with the same pool and recovery.
//!
//! One exception, measured rather than assumed: a signature with a key whose signatures take
//! less than [`Pkcs11Builder::in_place_below`] (100 µs by default, Tokio's budget between two
//! `.await`s) runs on the caller's thread ([`Token::try_in_place`]), as any computation that
//! short would. Handing it to a worker and its answer back costs two thread wakes, and on a
//! virtual machine that is a fifth of a SoftHSM ECDSA signature. In-place signatures have
//! sessions of their own (at most `pool_size`, opened there when first needed), so they never
//! wait for a worker's session nor make a worker wait for theirs (with one pool, a worker that
//! waited for a session made the in-place signatures hand off until it had one, and the two
//! sides took turns). Anything that may wait goes to a worker: a lock held by a
//! re-initialisation, more in-place signatures at once than sessions, and every failure, with
//! its recovery and back-off.
//!
//! [`Pkcs11Builder::in_place_below`]: crate::Pkcs11Builder::in_place_below
//!
//! # Sessions
//! Sessions are pooled LIFO (the most recently used one is warm in the token's caches), at
//! most `pool_size` of them, opened on first need and shared by the workers and
//! `sign_blocking` callers; a borrower that finds none idle and no room for another waits for
//! one to come back. In-place signatures have a pool of the same size of their own. One more "anchor" session holds the login: a PKCS#11 login belongs to the
//! application and lasts while any session is open, so the anchor keeps it alive while the pool
//! grows, shrinks and heals. Session objects (non-persistent
//! keys) are created on the anchor too, since they die with the session that made them.
//!
//! # Recovery
//! Every failure is classified by [`crate::error::recovery`]: a dead session is evicted (never
//! returned to the pool), a lost login is restored, stale object handles are resolved again, a
//! module that lost its state is initialised again. Then the call is retried, within the retry
//! budget. A token that is gone stays an `Unavailable` error until it is back.

use std::ffi::CString;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::RawAuthPin;
use hsm_core::{HsmError, Secret};

use crate::config::{Pkcs11Builder, TokenSelector};
use crate::error::{PROVIDER, Recovery, recovery, to_hsm};
use crate::keys::KeyCache;
use crate::profile::{Features, Profile};

/// Why an attempt failed.
pub(crate) enum OpError {
    /// A PKCS#11 call failed: classified, maybe recovered and retried.
    Ck(CkError, &'static str),
    /// A final answer (key not found, bad input): reported as is.
    Hsm(HsmError),
}

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Hsm(e)
    }
}

/// `?` on a cryptoki result inside an operation, naming the step.
pub(crate) trait CkContext<T> {
    fn step(self, what: &'static str) -> Result<T, OpError>;
}

impl<T> CkContext<T> for Result<T, CkError> {
    fn step(self, what: &'static str) -> Result<T, OpError> {
        self.map_err(|e| OpError::Ck(e, what))
    }
}

/// A loaded, initialised module with the chosen token and its login.
pub(crate) struct Module {
    pub ctx: Pkcs11,
    pub slot: Slot,
    pub token_info: TokenInfo,
    /// The raw function table, for the calls cryptoki cannot express (mechanism codes it does
    /// not know, such as `CKM_AES_KEY_WRAP_KWP`).
    pub raw: crate::raw::RawModule,
    pub profile: &'static Profile,
    pub features: Features,
    anchor: Mutex<Session>,
    generation: u64,
}

/// What an operation gets to work with.
pub(crate) struct OpCtx<'a> {
    pub session: &'a Session,
    pub module: &'a Module,
    pub token: &'a Token,
}

impl OpCtx<'_> {
    /// The token's RFC 5649 key-wrap mechanism code, if it has one.
    pub fn token_kwp(&self) -> Option<u64> {
        self.module.features.kwp
    }

    /// A failed decryption or unwrap as the caller should see it: tokens that report bad data
    /// with another code (a profile quirk: SoftHSM says `CKR_GENERAL_ERROR`, kryoptic
    /// `CKR_DEVICE_ERROR`) give `IntegrityCheckFailed` like the rest, and trigger no recovery.
    pub fn bad_data(&self, e: CkError, what: &'static str) -> OpError {
        if let (Some(code), CkError::Pkcs11(rv, _)) = (self.module.profile.bad_data_code, &e)
            && *rv == code
        {
            return HsmError::IntegrityCheckFailed {
                reason: format!(
                    "{what}: wrong key, IV or AAD, or altered data (the token says {})",
                    crate::error::ckr_name(rv)
                ),
            }
            .into();
        }
        OpError::Ck(e, what)
    }

    /// The anchor session (for session objects, which must outlive pooled sessions).
    pub fn anchor(&self) -> MutexGuard<'_, Session> {
        self.module
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Pool statistics, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The most sessions the pool holds (and worker threads it runs). In-place signatures have
    /// up to as many sessions again, of their own.
    pub size: usize,
    /// Sessions lent to an operation right now.
    pub in_use: u64,
    /// Sessions waiting in the pool.
    pub idle: u64,
    /// Sessions opened since the start.
    pub opened: u64,
    /// Sessions thrown away because the token invalidated them.
    pub evicted: u64,
    /// Calls retried after a recoverable failure.
    pub retries: u64,
    /// Logins restored after the token forgot them.
    pub relogins: u64,
    /// Times the module was initialised again.
    pub reinitializations: u64,
    /// Async signatures made on the caller's thread rather than a worker's
    /// ([`Pkcs11Builder::in_place_below`](crate::Pkcs11Builder::in_place_below)); one that
    /// fails there is handed to a worker, and counted here too.
    pub in_place: u64,
}

#[derive(Default)]
struct Counters {
    in_use: AtomicU64,
    opened: AtomicU64,
    evicted: AtomicU64,
    retries: AtomicU64,
    relogins: AtomicU64,
    reinitializations: AtomicU64,
    in_place: AtomicU64,
}

struct Pooled {
    session: Session,
    generation: u64,
}

/// A set of at most `size` sessions, idle or lent. The provider has two: one for the workers
/// and `sign_blocking` callers, and one for in-place signatures, so that neither ever waits for
/// the other's sessions (see the module docs).
struct Pool {
    size: usize,
    state: Mutex<PoolState>,
    /// Signalled when a session comes back, or room is made for a new one.
    returned: Condvar,
}

/// A session lent by a [`Pool`].
struct Borrowed {
    session: Session,
    /// Opened for this loan rather than reused.
    opened: bool,
}

#[derive(Default)]
struct PoolState {
    /// Most recently returned last.
    idle: Vec<Pooled>,
    lent: usize,
    /// Borrowers waiting for a session to come back.
    waiting: usize,
}

impl Pool {
    fn new(size: usize) -> Self {
        Pool {
            size,
            state: Mutex::default(),
            returned: Condvar::new(),
        }
    }

    /// Borrows a session of `module`: the most recently returned idle one, or a new one while
    /// there is room; otherwise waits for one to come back, or with `wait` false gives `None`.
    /// Borrowers already waiting go first, so a caller that gives a session back and at once
    /// borrows again cannot starve them.
    fn borrow(
        &self,
        module: &Module,
        counters: &Counters,
        wait: bool,
    ) -> Result<Option<Borrowed>, CkError> {
        let mut state = lock(&self.state);
        let mut waited = false;
        let reused = loop {
            if waited || state.waiting == 0 {
                let mut found = None;
                while let Some(p) = state.idle.pop() {
                    if p.generation == module.generation {
                        found = Some(p.session);
                        break;
                    }
                    // From before a re-initialisation: its handle means nothing now.
                    counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                if found.is_some() || state.lent < self.size {
                    break found;
                }
            }
            if !wait {
                return Ok(None);
            }
            state.waiting += 1;
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.waiting -= 1;
            waited = true;
        };
        state.lent += 1;
        // Several sessions may have come back while this borrower waited: pass the rest on.
        if state.waiting > 0 && (!state.idle.is_empty() || state.lent < self.size) {
            self.returned.notify_one();
        }
        drop(state);
        if let Some(session) = reused {
            return Ok(Some(Borrowed {
                session,
                opened: false,
            }));
        }
        let opened = module.ctx.open_rw_session(module.slot);
        if opened.is_ok() {
            counters.opened.fetch_add(1, Ordering::Relaxed);
        } else {
            self.give_back(None);
        }
        opened.map(|session| {
            Some(Borrowed {
                session,
                opened: true,
            })
        })
    }

    /// Ends a loan: the session comes back, or (`None`: dead, or never opened) leaves room for
    /// a new one. Wakes one borrower waiting for either.
    fn give_back(&self, session: Option<Pooled>) {
        let mut state = lock(&self.state);
        state.lent -= 1;
        state.idle.extend(session);
        // A `notify` is a system call even with nobody waiting: only when somebody is.
        if state.waiting > 0 {
            self.returned.notify_one();
        }
    }

    /// Closes the idle sessions (after a re-initialisation they mean nothing).
    fn clear(&self) {
        let mut state = lock(&self.state);
        state.idle.clear();
        if state.waiting > 0 {
            self.returned.notify_all();
        }
    }

    fn idle(&self) -> usize {
        lock(&self.state).idle.len()
    }
}

/// Work for a worker thread: [`Job::run`] does it, and [`Job::reply`] hands the answer to the
/// caller when the worker chooses (see [`worker`]).
///
/// The reply carries the job itself back: a call is one allocation, made and freed by the
/// caller, where it used to be three boxes made on one thread and freed on the other.
trait Job: Send {
    fn run(&mut self);
    fn reply(self: Box<Self>);
}

/// A failed attempt: what a worker recovers from before it tries again.
pub(crate) struct Failure {
    error: CkError,
    step: &'static str,
    generation: u64,
}

/// What [`Token::try_in_place`] did.
pub(crate) enum InPlace<T> {
    /// The call ran, and this is its answer.
    Done(T),
    /// The call is a worker's to make, after recovering from this failure if there was one.
    HandOff(Option<Failure>),
}

/// One [`Token::exec`] call in flight.
struct Call<T, F, W> {
    token: Arc<Token>,
    what: W,
    op: F,
    after: Option<Failure>,
    answer: Option<Result<T, HsmError>>,
    tx: Option<tokio::sync::oneshot::Sender<Box<Self>>>,
}

impl<T, F, W> Job for Call<T, F, W>
where
    T: Send + 'static,
    F: Fn(&OpCtx<'_>) -> Result<T, OpError> + Send + 'static,
    W: Fn() -> String + Send + 'static,
{
    fn run(&mut self) {
        self.answer = Some(
            self.token
                .run_after(self.after.take(), &self.what, &self.op),
        );
    }

    fn reply(mut self: Box<Self>) {
        if let Some(tx) = self.tx.take() {
            // A caller that has gone away (its future dropped) no longer wants the answer.
            let _ = tx.send(self);
        }
    }
}

/// How long a worker may hold finished answers back while it works through queued jobs: about
/// 25 ECDSA signatures on SoftHSM, one wake for all of them. A request that arrives while that
/// many are queued waits about as long for its turn anyway.
const HOLD_MAX: Duration = Duration::from_millis(1);

/// A worker thread: runs jobs until the provider (the only sender) is dropped.
///
/// Handing an answer back wakes the caller's executor thread, and waking a sleeping thread is a
/// system call that costs 5-10 µs on a virtual machine: a fifth of a SoftHSM ECDSA signature.
/// (Timed inside this loop on a 2-CPU Firecracker guest: 7-8 µs for the first answer of a
/// batch, which wakes the executor, and 0.05 µs for each further one.) So while more jobs are
/// queued, a worker holds fast answers and hands them back together, one wake for the lot, just
/// before it starts the last queued job; their callers then queue new work while that job runs,
/// and the token never waits. An answer is held only while the wait it adds stays under
/// [`HOLD_MAX`] (judged by the last job's duration): answers to slow operations, where a wake
/// is noise, go back one or two at a time, and every answer goes back at once when nothing else
/// is queued. (Fast signatures mostly run in place now, see the module docs; this still serves
/// the other operations, and every call with `in_place_below(0)`.)
fn worker(jobs: &crossbeam_channel::Receiver<Box<dyn Job>>) {
    use crossbeam_channel::TryRecvError;
    let mut held: Vec<Box<dyn Job>> = Vec::new();
    let mut held_since = Instant::now();
    let deliver = |held: &mut Vec<Box<dyn Job>>| held.drain(..).for_each(Job::reply);
    loop {
        let mut job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) => {
                deliver(&mut held);
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return deliver(&mut held),
        };
        let started = Instant::now();
        // A panic drops the job and its reply channel, so its caller gets an error; the
        // worker, and the answers it holds for others, carry on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).is_err() {
            continue;
        }
        let took = started.elapsed();
        if held.is_empty() {
            held_since = Instant::now();
        }
        held.push(job);
        if jobs.len() <= 1 || held_since.elapsed() + took >= HOLD_MAX {
            deliver(&mut held);
        }
    }
}

/// One token, shared by the provider and its workers.
pub(crate) struct Token {
    module_path: PathBuf,
    // Kept alive for as long as the module may read it (NSS reads it during C_Initialize).
    init_args: Option<CString>,
    selector: TokenSelector,
    forced_profile: Option<String>,
    pin: Secret,
    state: RwLock<Option<Module>>,
    /// The workers' and `sign_blocking` callers' sessions.
    pool: Pool,
    /// The in-place signatures' sessions.
    in_place_pool: Pool,
    retry_budget: u32,
    /// See [`Pkcs11Builder::in_place_below`](crate::Pkcs11Builder::in_place_below).
    pub in_place_below: Duration,
    generation: AtomicU64,
    counters: Counters,
    pub handles: KeyCache,
    jobs: crossbeam_channel::Sender<Box<dyn Job>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Token {
    /// Loads the module, selects the token, logs in and starts the workers. Blocking.
    pub(crate) fn connect(b: &Pkcs11Builder) -> Result<Arc<Token>, HsmError> {
        let pin = b.resolve_pin()?;
        let init_args = b
            .init_args
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| HsmError::invalid("x-init-args contains a NUL byte"))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Box<dyn Job>>();
        let token = Arc::new(Token {
            module_path: b.module.clone(),
            init_args,
            selector: b.token.clone(),
            forced_profile: b.profile.clone(),
            pin,
            state: RwLock::new(None),
            pool: Pool::new(b.pool_size),
            in_place_pool: Pool::new(b.pool_size),
            retry_budget: b.retry_budget,
            in_place_below: b.in_place_below,
            generation: AtomicU64::new(0),
            counters: Counters::default(),
            handles: KeyCache::default(),
            jobs: tx,
        });
        let module = token.open_module()?;
        *token
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(module);
        for i in 0..b.pool_size {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("pkcs11-worker-{i}"))
                .spawn(move || worker(&rx))
                .map_err(|e| HsmError::backend(PROVIDER, "cannot start a worker thread", e))?;
        }
        Ok(token)
    }

    fn open_module(&self) -> Result<Module, HsmError> {
        // `C_Initialize` is not safe to call while another thread initialises the same module
        // (PKCS#11 3.0 §5.4; SoftHSM answers a second caller "already initialised" before its
        // slots exist), and two providers in one process may share a module: one at a time.
        static INITIALISING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = lock(&INITIALISING);
        let path = self.module_path.display().to_string();
        let ctx = Pkcs11::new(&self.module_path).map_err(|e| HsmError::Unavailable {
            reason: format!("cannot load PKCS#11 module {path}"),
            retryable: false,
            source: Some(Box::new(e)),
        })?;
        let flags = CInitializeFlags::OS_LOCKING_OK;
        let args = match &self.init_args {
            // SAFETY: the pointer is to a NUL-terminated string owned by `self`, which outlives
            // every C_Initialize call.
            Some(s) => unsafe {
                CInitializeArgs::new_with_reserved(
                    flags,
                    NonNull::new(s.as_ptr() as *mut std::ffi::c_void)
                        .ok_or_else(|| HsmError::invalid("empty init args"))?,
                )
            },
            None => CInitializeArgs::new(flags),
        };
        match ctx.initialize(args) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(to_hsm(e, &format!("initialising {path}"))),
        }
        let (slot, token_info) = match self.select_slot(&ctx) {
            Ok(found) => found,
            Err(e) => {
                // Modules such as SoftHSM build their slot list in C_Initialize only: left
                // initialised, the module would never show the token again once it is back.
                // Finalize, so the next attempt initialises it afresh (another provider on this
                // module in the process loses its sessions too, and re-initialises likewise).
                if e.is_retryable() {
                    let _ = ctx.finalize();
                }
                return Err(e);
            }
        };
        let anchor = ctx
            .open_rw_session(slot)
            .map_err(|e| to_hsm(e, "opening the login session"))?;
        if token_info.login_required() {
            login(&anchor, &self.pin)?;
        }
        let raw = crate::raw::RawModule::load(&self.module_path)?;
        let profile =
            crate::profile::detect(token_info.manufacturer_id(), self.forced_profile.as_deref())?;
        let features = crate::profile::features(&raw, slot.id(), profile);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Module {
            ctx,
            slot,
            token_info,
            raw,
            profile,
            features,
            anchor: Mutex::new(anchor),
            generation,
        })
    }

    fn select_slot(&self, ctx: &Pkcs11) -> Result<(Slot, TokenInfo), HsmError> {
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| to_hsm(e, "listing slots"))?;
        let sel = &self.selector;
        let mut seen = Vec::new();
        let mut matches = Vec::new();
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| to_hsm(e, "reading token info"))?;
            seen.push(format!(
                "{:?} (serial {})",
                info.label(),
                info.serial_number()
            ));
            let ok = sel.label.as_deref().is_none_or(|l| info.label() == l)
                && sel
                    .serial
                    .as_deref()
                    .is_none_or(|s| info.serial_number() == s)
                && sel.slot.is_none_or(|s| slot.id() == s)
                && sel
                    .manufacturer
                    .as_deref()
                    .is_none_or(|m| info.manufacturer_id() == m)
                && sel.model.as_deref().is_none_or(|m| info.model() == m);
            if ok {
                matches.push((slot, info));
            }
        }
        let listed = if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        };
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(HsmError::Unavailable {
                reason: format!(
                    "no token with {} is present in {} (tokens present: {listed})",
                    sel.describe(),
                    self.module_path.display()
                ),
                retryable: true,
                source: None,
            }),
            _ => Err(HsmError::invalid(format!(
                "several tokens match {}: {listed}; choose one with token= or serial=",
                sel.describe()
            ))),
        }
    }

    /// Runs `op` on a worker thread with a pooled session, recovering and retrying as the
    /// failure allows.
    pub(crate) async fn exec<T, F>(
        self: &Arc<Self>,
        what: impl Fn() -> String + Send + 'static,
        op: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&OpCtx<'_>) -> Result<T, OpError> + Send + 'static,
    {
        self.exec_after(None, what, op).await
    }

    /// [`Token::exec`] for a call whose first attempt, made in place, failed with `after`: the
    /// worker recovers from that failure first, and it counts against the retry budget.
    pub(crate) async fn exec_after<T, F>(
        self: &Arc<Self>,
        after: Option<Failure>,
        what: impl Fn() -> String + Send + 'static,
        op: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&OpCtx<'_>) -> Result<T, OpError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let call = Box::new(Call {
            token: Arc::clone(self),
            what,
            op,
            after,
            answer: None,
            tx: Some(tx),
        });
        self.jobs.send(call).map_err(|_| {
            HsmError::backend(
                PROVIDER,
                "the worker threads have stopped",
                std::io::Error::other("channel closed"),
            )
        })?;
        let done = rx.await.map_err(|_| {
            HsmError::backend(
                PROVIDER,
                "a worker thread panicked",
                std::io::Error::other("job dropped"),
            )
        })?;
        done.answer.unwrap_or_else(|| {
            Err(HsmError::backend(
                PROVIDER,
                "a worker thread returned no answer",
                std::io::Error::other("job not run"),
            ))
        })
    }

    /// Runs `op` on this thread with a pooled session, recovering and retrying as the failure
    /// allows. `what` describes the call for errors and logs; it is only called on failure, so
    /// the hot path formats nothing.
    pub(crate) fn run<T>(
        &self,
        what: &dyn Fn() -> String,
        op: &dyn Fn(&OpCtx<'_>) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        self.run_after(None, what, op)
    }

    /// [`Token::run`], with the failure of a first attempt already made, if there was one.
    fn run_after<T>(
        &self,
        mut after: Option<Failure>,
        what: &dyn Fn() -> String,
        op: &dyn Fn(&OpCtx<'_>) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        let mut attempt = 0;
        loop {
            let (err, step, generation) = match after.take() {
                Some(f) => (f.error, f.step, f.generation),
                None => match self.attempt(op) {
                    Ok(v) => return Ok(v),
                    Err((OpError::Hsm(e), _)) => return Err(e),
                    Err((OpError::Ck(e, step), generation)) => (e, step, generation),
                },
            };
            let action = match recovery(&err) {
                Recovery::Fail => self.profile_recovery(&err),
                other => other,
            };
            if action == Recovery::Fail {
                return Err(to_hsm(err, &format!("{} ({step})", what())));
            }
            let retry = attempt < self.retry_budget;
            tracing::debug!(operation = what(), step, error = %crate::error::ckr_name_of(&err), ?action, attempt, retry, "recovering");
            // Recover even when the budget is spent and this call fails: otherwise a lost login,
            // stale handles or a dead module stay in place and fail every later call too (with
            // a budget of 0, for good).
            let recovered = match action {
                Recovery::Retry => Ok(()),
                // A closed session may mean every session was closed (`C_CloseAllSessions`),
                // the anchor too, and with it the login.
                Recovery::EvictSession => self.relogin(LoginCheck::IfLost),
                Recovery::Relogin => self.relogin(LoginCheck::Always),
                Recovery::ResolveHandles => {
                    self.handles.clear();
                    // A logout makes private-object handles invalid (PKCS#11 2.40 §5.6
                    // C_Logout), and SoftHSM reports the stale handle before the missing login:
                    // resolving them again would find no private key until the login is back.
                    self.relogin(LoginCheck::IfLost)
                }
                Recovery::Reinitialize => self.reinitialize(generation),
                Recovery::Fail => unreachable!(),
            };
            if !retry {
                // A recovery that failed (the token is gone) explains more than the first error.
                recovered?;
                return Err(to_hsm(err, &format!("{} ({step})", what())));
            }
            attempt += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            recovered?;
            if action == Recovery::Retry {
                std::thread::sleep(Duration::from_millis(5 << attempt));
            }
        }
    }

    /// One try. On failure also returns the module generation it ran against.
    fn attempt<T>(
        &self,
        op: &dyn Fn(&OpCtx<'_>) -> Result<T, OpError>,
    ) -> Result<T, (OpError, u64)> {
        let guard = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(module) = guard.as_ref() else {
            // The token was unavailable at the last re-initialisation: try again now.
            let gen_now = self.generation.load(Ordering::SeqCst);
            return Err((
                OpError::Ck(
                    CkError::Pkcs11(
                        RvError::TokenNotPresent,
                        cryptoki::context::Function::GetSlotList,
                    ),
                    "finding the token",
                ),
                gen_now,
            ));
        };
        let session = match self.pool.borrow(module, &self.counters, true) {
            Ok(b) => b.expect("a waiting borrow always gives a session").session,
            Err(e) => return Err((OpError::Ck(e, "opening a session"), module.generation)),
        };
        self.use_session(&self.pool, module, session, op)
            .map_err(|e| (e, module.generation))
    }

    /// Runs `op` here, on the caller's thread, if that needs no wait: with a session of its own
    /// pool (opened here the first few times; the token's signatures have been measured fast),
    /// and only if no re-initialisation holds the module. See the module docs for when this is
    /// used.
    pub(crate) fn try_in_place<T>(
        &self,
        op: &dyn Fn(&OpCtx<'_>) -> Result<T, OpError>,
    ) -> InPlace<T> {
        let Ok(guard) = self.state.try_read() else {
            return InPlace::HandOff(None);
        };
        let Some(module) = guard.as_ref() else {
            return InPlace::HandOff(None);
        };
        let failure = |error, step| {
            InPlace::HandOff(Some(Failure {
                error,
                step,
                generation: module.generation,
            }))
        };
        let session = match self.in_place_pool.borrow(module, &self.counters, false) {
            // A new session without the login means the login is gone (every session was
            // closed, or someone logged out): a worker restores it, and reports what its own
            // session met, as it would without this attempt.
            Ok(Some(b))
                if b.opened && module.token_info.login_required() && !logged_in(&b.session) =>
            {
                self.in_place_pool.give_back(Some(Pooled {
                    session: b.session,
                    generation: module.generation,
                }));
                return InPlace::HandOff(None);
            }
            Ok(Some(b)) => b.session,
            // As many signatures in place as the pool has sessions: this one goes to a worker.
            Ok(None) => return InPlace::HandOff(None),
            Err(e) => return failure(e, "opening a session"),
        };
        self.counters.in_place.fetch_add(1, Ordering::Relaxed);
        match self.use_session(&self.in_place_pool, module, session, op) {
            Ok(v) => InPlace::Done(v),
            // A final answer (no such key, bad input) is given by the worker's attempt, which
            // runs the same checks.
            Err(OpError::Hsm(_)) => InPlace::HandOff(None),
            Err(OpError::Ck(error, step)) => failure(error, step),
        }
    }

    /// Runs `op` with `session`, then returns the session to `pool`, or throws it away if the
    /// token invalidated it.
    fn use_session<T>(
        &self,
        pool: &Pool,
        module: &Module,
        session: Session,
        op: &dyn Fn(&OpCtx<'_>) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        self.counters.in_use.fetch_add(1, Ordering::Relaxed);
        let result = op(&OpCtx {
            session: &session,
            module,
            token: self,
        });
        self.counters.in_use.fetch_sub(1, Ordering::Relaxed);
        // Without the login a token hides its private keys, so looking a key up then finds
        // nothing: that is a lost login (someone logged out, or closed every session), not a
        // missing key. Reported as such, it is recovered instead of failing every call for good.
        let result = match result {
            Err(OpError::Hsm(HsmError::KeyNotFound { .. }))
                if module.token_info.login_required() && !logged_in(&session) =>
            {
                Err(OpError::Ck(
                    CkError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        cryptoki::context::Function::FindObjects,
                    ),
                    "finding the key while logged out",
                ))
            }
            other => other,
        };
        let dead = matches!(&result, Err(OpError::Ck(e, _))
            if matches!(recovery(e), Recovery::EvictSession | Recovery::Reinitialize));
        if dead {
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            pool.give_back(None);
        } else {
            pool.give_back(Some(Pooled {
                session,
                generation: module.generation,
            }));
        }
        result
    }

    /// What the token's profile says a code means when it is not the standard one: a stale
    /// handle or a busy store (kryoptic), or nothing to recover from.
    fn profile_recovery(&self, e: &CkError) -> Recovery {
        let CkError::Pkcs11(rv, _) = e else {
            return Recovery::Fail;
        };
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.as_ref().map(|m| m.profile) {
            Some(p) if p.stale_handle_code == Some(*rv) => Recovery::ResolveHandles,
            Some(p) if p.busy_code == Some(*rv) => Recovery::Retry,
            _ => Recovery::Fail,
        }
    }

    /// Logs in again (on a new anchor session if the anchor was closed). With
    /// [`LoginCheck::IfLost`], only if the anchor shows the login is gone.
    fn relogin(&self, check: LoginCheck) -> Result<(), HsmError> {
        let guard = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(module) = guard.as_ref() else {
            return Ok(());
        };
        let mut anchor = lock(&module.anchor);
        if check == LoginCheck::IfLost
            && (!module.token_info.login_required() || logged_in(&anchor))
        {
            return Ok(());
        }
        match login(&anchor, &self.pin) {
            Ok(()) => {}
            Err(HsmError::Unavailable { .. }) => {
                // The anchor itself was closed (C_CloseAllSessions): open a new one.
                *anchor = module
                    .ctx
                    .open_rw_session(module.slot)
                    .map_err(|e| to_hsm(e, "reopening the login session"))?;
                login(&anchor, &self.pin)?;
            }
            Err(e) => return Err(e),
        }
        // Handles to private objects died with the old login, even now that it is back
        // (PKCS#11 2.40 §5.6 C_Logout): resolve them again rather than spend a retry on each.
        self.handles.clear();
        self.counters.relogins.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn reinitialize(&self, failed_generation: u64) -> Result<(), HsmError> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = state.as_ref()
            && m.generation != failed_generation
        {
            // Another worker has re-initialised since this call failed.
            return Ok(());
        }
        self.pool.clear();
        self.in_place_pool.clear();
        *state = None;
        self.handles.clear();
        self.counters
            .reinitializations
            .fetch_add(1, Ordering::Relaxed);
        let module = self.open_module()?;
        *state = Some(module);
        Ok(())
    }

    /// The current statistics.
    pub(crate) fn stats(&self) -> PoolStats {
        let c = &self.counters;
        PoolStats {
            size: self.pool.size,
            in_use: c.in_use.load(Ordering::Relaxed),
            idle: (self.pool.idle() + self.in_place_pool.idle()) as u64,
            opened: c.opened.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            relogins: c.relogins.load(Ordering::Relaxed),
            reinitializations: c.reinitializations.load(Ordering::Relaxed),
            in_place: c.in_place.load(Ordering::Relaxed),
        }
    }

    /// Reads something from the current module (token info, mechanism list) without a session.
    pub(crate) fn with_module<T>(
        &self,
        f: impl FnOnce(&Module) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let guard = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(m) => f(m),
            None => Err(HsmError::Unavailable {
                reason: format!("the token ({}) is not present", self.selector.describe()),
                retryable: true,
                source: None,
            }),
        }
    }
}

/// Whether [`Token::relogin`] logs in unconditionally or only when the login is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoginCheck {
    Always,
    IfLost,
}

/// Whether `session` is open and logged in. One `C_GetSessionInfo`: only on recovery paths.
pub(crate) fn logged_in(session: &Session) -> bool {
    session.get_session_info().is_ok_and(|i| {
        matches!(
            i.session_state(),
            SessionState::RoUser | SessionState::RwUser | SessionState::RwSecurityOfficer
        )
    })
}

fn login(session: &Session, pin: &Secret) -> Result<(), HsmError> {
    let raw: RawAuthPin = RawAuthPin::new(Box::new(pin.expose().to_vec()));
    match session.login_with_raw(UserType::User, &raw) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(to_hsm(e, "logging in to the token")),
    }
}
