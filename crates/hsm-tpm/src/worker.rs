//! The one thread that talks to the TPM, and what it owns: the ESAPI context, the storage root
//! key, and the cache of loaded keys.
//!
//! # Why one dedicated thread (not `spawn_blocking`, not a pool)
//! - Every ESAPI call blocks (milliseconds on swtpm, up to hundreds on a hardware TPM), so none
//!   may run on the async executor.
//! - A TPM runs one command at a time, so a second thread would only wait. Without a resource
//!   manager (swtpm, `/dev/tpm0`) there is also one connection per TPM, and transient objects
//!   are not virtualised: one owner must track every handle and flush what it loads.
//! - An `ESYS_CONTEXT` is not thread-safe, and tss-esapi's `Context` methods take `&mut self`.
//!   Owning it on one thread needs no lock at all: the job queue is the serialisation point.
//!   With `spawn_blocking` and a `Mutex`, 64 concurrent signers would park up to 64 blocking-pool
//!   threads on that lock; here they wait as queued jobs, costing nothing.
//!
//! Async callers send a job and await its answer on a oneshot channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use hsm_core::Secret;
use hsm_core::{HsmError, ProviderInfo};
use tss_esapi::Context;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, CreateKeyResult, Public, SensitiveData};

use crate::config::{SrkAlgorithm, TpmBuilder, parse_tcti};
use crate::error::{PROVIDER, to_hsm, tpm_kind};
use crate::keyfile::OWNER;
use crate::keys::{self, KeyRecord};

/// A job gets the TPM, or the error that says why there is none (the connection was lost and
/// reconnecting failed).
type Job = Box<dyn FnOnce(Result<&mut Tpm, HsmError>) + Send>;

/// The handle the async side holds: a queue to the worker thread.
pub(crate) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    /// Closes the queue and waits for the thread to flush what it loaded and close the
    /// connection: a TPM without a resource manager keeps loaded objects after a client
    /// disconnects, so a process that exits right after dropping the provider must not leave
    /// them behind. Takes a few milliseconds (one `TPM2_FlushContext` per loaded key).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Worker {
    /// Starts the worker thread, which connects to the TPM and sets up the storage root key;
    /// returns once that has succeeded (or with its error).
    pub(crate) async fn start(b: TpmBuilder) -> Result<(Worker, ProviderInfo), HsmError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tpm-worker".into())
            .spawn(move || {
                let mut tpm = match Tpm::open(&b) {
                    Ok(tpm) => tpm,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = tpm.info();
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                // Runs until the provider (the only sender) is dropped; then `tpm` drops, which
                // flushes every transient object it loaded.
                while let Ok(job) = rx.recv() {
                    if tpm.lost
                        && let Err(e) = tpm.reconnect(&b)
                    {
                        job(Err(e));
                        continue;
                    }
                    // A panicking job drops its reply channel (its caller gets an error); the
                    // context stays usable for the next one.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(Ok(&mut tpm))
                    }));
                }
            })
            .map_err(|e| HsmError::backend(PROVIDER, "cannot start the TPM worker thread", e))?;
        let info = ready_rx.await.map_err(|_| {
            HsmError::backend(
                PROVIDER,
                "the TPM worker thread died while connecting",
                std::io::Error::other("panicked"),
            )
        })??;
        Ok((
            Worker {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            info,
        ))
    }

    /// Runs `op` on the worker thread.
    pub(crate) async fn run<T, F>(&self, op: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tpm) -> Result<T, HsmError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |tpm| {
            let result = tpm.and_then(|tpm| {
                let result = op(tpm);
                if let Err(e) = &result
                    && connection_lost(e)
                {
                    // The next job connects again (the TPM may be back by then).
                    tpm.lost = true;
                }
                result
            });
            let _ = tx.send(result);
        });
        let jobs = self.jobs.as_ref().ok_or_else(|| {
            HsmError::backend(
                PROVIDER,
                "the TPM worker thread has stopped",
                std::io::Error::other("provider dropped"),
            )
        })?;
        jobs.send(job).map_err(|_| {
            HsmError::backend(
                PROVIDER,
                "the TPM worker thread has stopped",
                std::io::Error::other("channel closed"),
            )
        })?;
        rx.await.map_err(|_| {
            HsmError::backend(
                PROVIDER,
                "a TPM operation panicked",
                std::io::Error::other("job dropped"),
            )
        })?
    }
}

/// The TPM's dictionary-attack counters (TPM 2.0 Part 1, "Dictionary Attack Protection").
///
/// Every failed authorization of an object without `noDA` (a key with a wrong auth value)
/// adds one to `failures`; at `max_failures` the TPM refuses every such authorization until
/// failures are forgotten, one per `recovery_interval_secs`, or the lockout hierarchy resets
/// the counter (`tpm2_dictionarylockout --clear-lockout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockoutStatus {
    /// Failed authorizations counted now (`TPM_PT_LOCKOUT_COUNTER`).
    pub failures: u32,
    /// The count at which the TPM locks out (`TPM_PT_MAX_AUTH_FAIL`).
    pub max_failures: u32,
    /// Seconds after which one failure is forgotten (`TPM_PT_LOCKOUT_INTERVAL`).
    pub recovery_interval_secs: u32,
}

/// A key loaded in the TPM.
struct Loaded {
    id: String,
    handle: KeyHandle,
    record: Arc<KeyRecord>,
}

/// Everything the worker thread owns.
pub(crate) struct Tpm {
    pub(crate) ctx: Context,
    /// The storage root key new keys are created under.
    pub(crate) srk: KeyHandle,
    /// The SRK as key files name it: [`OWNER`] (the primary, created on each connect) or its
    /// persistent handle.
    pub(crate) srk_parent: u32,
    srk_alg: SrkAlgorithm,
    /// Other parents key files named (the primary when the SRK is persistent, or the other way
    /// round), opened on first use.
    other_parents: Vec<(u32, KeyHandle)>,
    pub(crate) key_dir: PathBuf,
    /// Non-persistent keys: their blobs are kept here only, and die with the provider.
    pub(crate) session_keys: Vec<Arc<KeyRecord>>,
    /// Auth values of keys, by id or label.
    pub(crate) key_auths: Vec<(String, Secret)>,
    /// Loaded keys, least recently used first.
    loaded: Vec<Loaded>,
    capacity: usize,
    /// How many times a key was loaded (`TPM2_Load`): what [`crate::TpmStats`] reports, and how
    /// the tests and the benchmark see that the cache works.
    pub(crate) loads: u64,
    /// The salted HMAC session that encrypts parameters, when one could be started.
    pub(crate) session: Option<AuthSession>,
    tcti: String,
    /// Set when a command failed because the TPM could not be reached: the next job connects
    /// again, and nothing is flushed through the dead connection.
    lost: bool,
    /// No reconnect before this, after one failed.
    next_reconnect: Option<std::time::Instant>,
}

/// How long after a failed reconnect the next is tried.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Tpm {
    fn open(b: &TpmBuilder) -> Result<Tpm, HsmError> {
        let tcti = b.resolved_tcti()?;
        let conf = parse_tcti(&tcti)?;
        let key_dir = b.key_dir.clone();
        if b.create_key_dir && !key_dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&key_dir).map_err(|e| {
                HsmError::invalid(format!(
                    "cannot create the key directory {}: {e}",
                    key_dir.display()
                ))
            })?;
        }
        if !key_dir.is_dir() {
            return Err(HsmError::invalid(format!(
                "the key directory {} does not exist or is not a directory",
                key_dir.display()
            )));
        }
        let owner_auth = b.resolve_owner_auth()?;
        let key_auths = b.resolve_key_auths()?;
        let mut ctx = Context::new(conf).map_err(|e| {
            let code = match &e {
                tss_esapi::Error::Tss2Error(rc) => crate::error::raw_rc(rc)
                    .map(|raw| format!("TSS2_RC {raw:#x}"))
                    .unwrap_or_else(|| e.to_string()),
                other => other.to_string(),
            };
            HsmError::Unavailable {
                reason: format!(
                    "cannot connect to the TPM through TCTI {tcti:?} ({code}): is the TPM, \
                     simulator or resource manager there?"
                ),
                retryable: true,
                source: Some(Box::new(e)),
            }
        })?;
        if let Some(auth) = owner_auth {
            let auth = Auth::try_from(auth.expose().to_vec())
                .map_err(|e| HsmError::invalid(format!("owner auth value: {e}")))?;
            ctx.tr_set_auth(Hierarchy::Owner.into(), auth)
                .map_err(|e| to_hsm(e, "setting the owner auth value"))?;
        }
        flush_leftover_objects(&mut ctx);
        let (srk, srk_parent) = storage_root_key(&mut ctx, b.srk, b.persist_srk)?;
        let transient_min = ctx
            .get_tpm_property(tss_esapi::constants::PropertyTag::HrTransientMin)
            .ok()
            .flatten()
            .unwrap_or(3) as usize;
        // One slot is the SRK's when it is transient (a persistent SRK is loaded on demand by
        // the TPM and needs no transient slot, but keep the margin: TPM2_Load needs one free).
        let capacity = b
            .cache_size
            .unwrap_or_else(|| transient_min.saturating_sub(1).max(1));
        let mut tpm = Tpm {
            ctx,
            srk,
            srk_parent,
            srk_alg: b.srk,
            other_parents: Vec::new(),
            key_dir,
            session_keys: Vec::new(),
            key_auths,
            loaded: Vec::new(),
            capacity,
            loads: 0,
            session: None,
            tcti,
            lost: false,
            next_reconnect: None,
        };
        tpm.session =
            crate::session::start_salted_session(&mut tpm.ctx, srk, b.allow_plain_sessions)?;
        Ok(tpm)
    }

    /// Connects again after the connection was lost (the TPM restarted, the resource manager
    /// went away). Loaded objects and sessions died with the connection; key files, session
    /// keys and auth values carry over, and keys load again on first use.
    ///
    /// After a failed attempt the next one waits [`RECONNECT_PAUSE`]: calls in between fail at
    /// once, so a burst of callers does not hammer a TPM that is down.
    fn reconnect(&mut self, b: &TpmBuilder) -> Result<(), HsmError> {
        let now = std::time::Instant::now();
        if let Some(at) = self.next_reconnect.filter(|at| now < *at) {
            return Err(HsmError::Unavailable {
                reason: format!(
                    "the TPM connection was lost and the last reconnect failed; the next \
                     attempt is in {} ms",
                    (at - now).as_millis()
                ),
                retryable: true,
                source: None,
            });
        }
        let mut fresh = Tpm::open(b).map_err(|e| {
            self.next_reconnect = Some(now + RECONNECT_PAUSE);
            match e {
                HsmError::Unavailable { reason, source, .. } => HsmError::Unavailable {
                    reason: format!(
                        "the TPM connection was lost, and reconnecting failed: {reason}"
                    ),
                    retryable: true,
                    source,
                },
                other => other,
            }
        })?;
        fresh.session_keys = std::mem::take(&mut self.session_keys);
        fresh.key_auths = std::mem::take(&mut self.key_auths);
        fresh.loads = self.loads;
        tracing::info!(tcti = %self.tcti, "reconnected to the TPM");
        // The old context's objects are gone with its connection: its Drop skips the flushes.
        *self = fresh;
        Ok(())
    }

    /// Whether the TPM answers a command (it does not in failure mode).
    pub(crate) fn responsive(&mut self) -> bool {
        self.ctx
            .get_tpm_property(tss_esapi::constants::PropertyTag::HrTransientMin)
            .is_ok()
    }

    pub(crate) fn lockout_status(&mut self) -> LockoutStatus {
        use tss_esapi::constants::PropertyTag;
        let mut prop = |tag| self.ctx.get_tpm_property(tag).ok().flatten().unwrap_or(0);
        LockoutStatus {
            failures: prop(PropertyTag::LockoutCounter),
            max_failures: prop(PropertyTag::MaxAuthFail),
            recovery_interval_secs: prop(PropertyTag::LockoutInterval),
        }
    }

    /// An `Unauthenticated` error for a key's wrong auth value, with the lockout count, so no
    /// caller retries into a lockout unknowingly.
    pub(crate) fn explain_auth_failure(&mut self, err: HsmError, key: &str) -> HsmError {
        let HsmError::Unauthenticated { .. } = err else {
            return err;
        };
        let da = self.lockout_status();
        HsmError::Unauthenticated {
            reason: format!(
                "wrong auth value for key {key}: the TPM has now counted {} of {} failed \
                 authorizations before it locks out (one is forgotten every {} s)",
                da.failures, da.max_failures, da.recovery_interval_secs
            ),
        }
    }

    /// Who made the TPM, from its fixed properties.
    fn info(&mut self) -> ProviderInfo {
        use tss_esapi::constants::PropertyTag;
        let mut prop = |tag| self.ctx.get_tpm_property(tag).ok().flatten();
        let ascii = |v: Option<u32>| {
            v.map(|v| {
                v.to_be_bytes()
                    .iter()
                    .filter(|b| b.is_ascii_graphic() || **b == b' ')
                    .map(|b| char::from(*b))
                    .collect::<String>()
            })
            .unwrap_or_default()
        };
        let vendor = ascii(prop(PropertyTag::Manufacturer)).trim().to_owned();
        let model: String = [
            PropertyTag::VendorString1,
            PropertyTag::VendorString2,
            PropertyTag::VendorString3,
            PropertyTag::VendorString4,
        ]
        .into_iter()
        .map(|t| ascii(prop(t)))
        .collect::<String>()
        .trim()
        .to_owned();
        let fw1 = prop(PropertyTag::FirmwareVersion1).unwrap_or(0);
        let fw2 = prop(PropertyTag::FirmwareVersion2).unwrap_or(0);
        // Vendor-defined; printed as the two 32-bit words in hex (swtpm: 20191023.00163636).
        let firmware = format!("{fw1:08x}.{fw2:08x}");
        ProviderInfo::new(
            PROVIDER,
            if vendor.is_empty() {
                "unknown"
            } else {
                &vendor
            },
            format!("TPM 2.0 {model} (TCTI {})", self.tcti),
            firmware,
        )
    }

    /// The loaded handle of a key, loading it (and evicting the least recently used key when
    /// the cache is full) if needed.
    pub(crate) fn handle_for(&mut self, record: &Arc<KeyRecord>) -> Result<KeyHandle, HsmError> {
        let id = &record.info.id.id;
        if let Some(pos) = self.loaded.iter().position(|l| l.id == *id) {
            let entry = self.loaded.remove(pos);
            let handle = entry.handle;
            self.loaded.push(entry);
            return Ok(handle);
        }
        let auth = self.auth_for(record)?;
        let parent = self.parent(record.parent)?;
        self.make_room();
        let what = format!("loading key {}", record.info.id);
        let handle = self
            .with_room(&what, |tpm| tpm.load(parent, record))
            .map_err(|e| match e {
                HsmError::Corrupted { what, .. } => HsmError::Corrupted {
                    what,
                    reason: format!(
                        "the TPM refuses the key blob: it was made under another storage root \
                         key (another TPM, or this TPM was cleared), or the file is damaged \
                         (parent {:#x})",
                        record.parent
                    ),
                },
                other => other,
            })?;
        self.loads += 1;
        if let Some(auth) = auth {
            self.ctx
                .tr_set_auth(handle.into(), auth)
                .map_err(|e| to_hsm(e, "setting a key's auth value"))?;
        }
        self.loaded.push(Loaded {
            id: id.clone(),
            handle,
            record: Arc::clone(record),
        });
        Ok(handle)
    }

    /// The auth value a key needs: `None` for an empty one; an error names the key when it
    /// needs one that was not given.
    fn auth_for(&self, record: &KeyRecord) -> Result<Option<Auth>, HsmError> {
        if record.empty_auth {
            return Ok(None);
        }
        let id = &record.info.id;
        let secret = self
            .key_auths
            .iter()
            .find(|(k, _)| *k == id.id || *k == record.info.attributes.label)
            .map(|(_, s)| s)
            .ok_or_else(|| HsmError::Unauthenticated {
                reason: format!(
                    "key {id} has an auth value and none was given: configure it with \
                     TpmBuilder::key_auth or key-auth-source="
                ),
            })?;
        Auth::try_from(secret.expose().to_vec())
            .map(Some)
            .map_err(|_| HsmError::invalid(format!("the auth value of key {id} is too long")))
    }

    /// The handle of a key file's parent.
    pub(crate) fn parent(&mut self, parent: u32) -> Result<KeyHandle, HsmError> {
        if parent == self.srk_parent {
            return Ok(self.srk);
        }
        if let Some((_, h)) = self.other_parents.iter().find(|(p, _)| *p == parent) {
            return Ok(*h);
        }
        let template = keys::srk_template(self.srk_alg)?;
        let handle = if parent == OWNER {
            self.make_room();
            self.with_room("creating the primary storage key", |tpm| {
                tpm.ctx.execute_with_nullauth_session(|ctx| {
                    ctx.create_primary(Hierarchy::Owner, template.clone(), None, None, None, None)
                })
            })?
            .key_handle
        } else {
            persistent_srk(&mut self.ctx, parent, &template)?.ok_or_else(|| {
                HsmError::Corrupted {
                    what: format!("a key file naming parent {parent:#x}"),
                    reason: "that persistent handle holds no storage key of this provider's \
                             template (another TPM, an evicted SRK, or srk= differs)"
                        .into(),
                }
            })?
        };
        self.other_parents.push((parent, handle));
        Ok(handle)
    }

    /// The loaded handles of two keys at once, for a command that names both (`TPM2_Certify`:
    /// the key certified and the attestation key). `InvalidInput` when the cache holds a single
    /// key (`cache_size(1)`), since loading the second would flush the first.
    pub(crate) fn handle_pair(
        &mut self,
        a: &Arc<KeyRecord>,
        b: &Arc<KeyRecord>,
    ) -> Result<(KeyHandle, KeyHandle), HsmError> {
        let hb = self.handle_for(b)?;
        let ha = self.handle_for(a)?;
        if !self.loaded.iter().any(|l| l.id == b.info.id.id) {
            return Err(HsmError::invalid(
                "this operation needs two keys loaded at once: the key cache must hold at \
                 least 2 keys (cache_size)",
            ));
        }
        Ok((ha, hb))
    }

    /// Runs a command that needs a free transient slot (`TPM2_Load`, and `TPM2_Create`, which
    /// holds the new object while it works): when the TPM is out of object memory, the least
    /// recently used of our loaded keys is flushed and the command tried again. When none of
    /// ours is left, the slots belong to another client of a TPM without a resource manager.
    pub(crate) fn with_room<T>(
        &mut self,
        what: &str,
        mut command: impl FnMut(&mut Tpm) -> Result<T, tss_esapi::Error>,
    ) -> Result<T, HsmError> {
        loop {
            match command(self) {
                Ok(v) => return Ok(v),
                Err(e) if tpm_kind(&e) == Some(Tss2ResponseCodeKind::ObjectMemory) => {
                    if self.loaded.is_empty() {
                        let mut err = to_hsm(e, what);
                        if let HsmError::Unavailable { reason, .. } = &mut err {
                            reason.push_str(
                                "; every transient slot is taken by another client: use a \
                                 resource manager (/dev/tpmrm0 or tpm2-abrmd)",
                            );
                        }
                        return Err(err);
                    }
                    self.evict_oldest();
                }
                Err(e) => return Err(to_hsm(e, what)),
            }
        }
    }

    /// Creates an object under the SRK (`TPM2_Create`) from `template`, with `auth` and
    /// `data` (a sealed secret) as its sensitive part, in the salted session both ways (the
    /// sensitive part in, the private blob out), making room for it first.
    pub(crate) fn create_under_srk(
        &mut self,
        what: &str,
        template: &Public,
        auth: Option<Auth>,
        data: Option<SensitiveData>,
    ) -> Result<CreateKeyResult, HsmError> {
        let srk = self.srk;
        self.make_room();
        self.with_room(what, |tpm| {
            crate::session::with_session(tpm, crate::session::Params::Both, |ctx| {
                ctx.create(
                    srk,
                    template.clone(),
                    auth.clone(),
                    data.clone(),
                    None,
                    None,
                )
            })
        })
    }

    fn load(
        &mut self,
        parent: KeyHandle,
        record: &KeyRecord,
    ) -> Result<KeyHandle, tss_esapi::Error> {
        let (private, public) = (record.private.clone(), record.public.clone());
        crate::session::with_session(self, crate::session::Params::In, |ctx| {
            ctx.load(parent, private, public)
        })
    }

    /// Flushes least recently used keys until a command that needs a transient slot
    /// (`TPM2_Load`, `TPM2_Create`) has one, so the usual path sends no command that fails.
    pub(crate) fn make_room(&mut self) {
        while self.loaded.len() >= self.capacity {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if !self.loaded.is_empty() {
            let entry = self.loaded.remove(0);
            self.flush(entry.handle);
        }
    }

    fn flush(&mut self, handle: KeyHandle) {
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(handle)) {
            tracing::warn!(error = %e, "flushing a loaded TPM key failed");
        }
    }

    /// Forgets (and flushes) a key that was deleted.
    pub(crate) fn unload(&mut self, id: &str) {
        if let Some(pos) = self.loaded.iter().position(|l| l.id == id) {
            let entry = self.loaded.remove(pos);
            self.flush(entry.handle);
        }
    }

    /// The record of a loaded key, so a signature costs no file read.
    pub(crate) fn cached_record(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.loaded
            .iter()
            .find(|l| l.id == id)
            .map(|l| Arc::clone(&l.record))
    }
}

impl Drop for Tpm {
    /// Flushes what this connection loaded. After a lost connection the objects died with it:
    /// the handles are only closed locally, since tss-esapi's own drop would try to flush
    /// them through the dead connection.
    fn drop(&mut self) {
        let session = self
            .session
            .take()
            .map(|s| ObjectHandle::from(tss_esapi::handles::SessionHandle::from(s)));
        let transient = |p: u32| p == OWNER;
        let mut handles: Vec<ObjectHandle> = std::mem::take(&mut self.loaded)
            .into_iter()
            .map(|l| l.handle.into())
            .collect();
        handles.extend(session);
        if transient(self.srk_parent) {
            handles.push(self.srk.into());
        }
        for (parent, handle) in std::mem::take(&mut self.other_parents) {
            if transient(parent) {
                handles.push(handle.into());
            }
        }
        for mut handle in handles {
            if self.lost {
                let _ = self.ctx.tr_close(&mut handle);
            } else if let Err(e) = self.ctx.flush_context(handle) {
                tracing::warn!(error = %e, "flushing a TPM object failed");
            }
        }
    }
}

/// Whether an error says the TPM could not be reached (a TCTI-layer error: the socket or
/// device is gone), rather than that the TPM refused a command.
fn connection_lost(e: &HsmError) -> bool {
    let HsmError::Unavailable {
        source: Some(source),
        ..
    } = e
    else {
        return false;
    };
    source
        .downcast_ref::<tss_esapi::Error>()
        .is_some_and(crate::error::is_tcti_error)
}

/// Flushes transient objects a previous client left loaded.
///
/// A TPM without a resource manager (swtpm, `/dev/tpm0`) serves one client at a time and keeps
/// what a client loaded after it disconnects: a process that died (or exited before its worker
/// thread flushed) leaves its objects in the 3 transient slots, and nothing can be loaded any
/// more. Whatever is loaded when we connect is therefore left over from a client that is gone.
/// Behind a resource manager (`/dev/tpmrm0`, tpm2-abrmd) transient handles are per connection,
/// so the list is empty and nothing is flushed. Persistent objects are never touched.
fn flush_leftover_objects(ctx: &mut Context) {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::constants::tss::TPM2_TRANSIENT_FIRST;
    use tss_esapi::structures::CapabilityData;
    let Ok((CapabilityData::Handles(list), _)) =
        ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 64)
    else {
        return;
    };
    for tpm_handle in list.into_inner() {
        if !matches!(tpm_handle, TpmHandle::Transient(_)) {
            continue;
        }
        let flushed = ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(tpm_handle))
            .and_then(|object| ctx.flush_context(object));
        match flushed {
            Ok(()) => tracing::info!(
                handle = ?tpm_handle,
                "flushed a transient object left loaded by an earlier client"
            ),
            Err(e) => {
                tracing::warn!(handle = ?tpm_handle, error = %e, "cannot flush a leftover object")
            }
        }
    }
}

/// The storage root key and the parent handle key files name it by: the persistent SRK at
/// the reserved handle when it is the standard one (or made so, with `persist`), else the same
/// key created as a primary in the owner hierarchy (deterministic: the same key every time on
/// the same TPM). A persistent handle holding something else is never touched.
fn storage_root_key(
    ctx: &mut Context,
    alg: SrkAlgorithm,
    persist: bool,
) -> Result<(KeyHandle, u32), HsmError> {
    let template = keys::srk_template(alg)?;
    let reserved = alg.persistent_handle();
    let occupied = handle_present(ctx, reserved);
    if occupied {
        if let Some(handle) = persistent_srk(ctx, reserved, &template)? {
            return Ok((handle, reserved));
        }
        tracing::info!(
            "persistent handle {reserved:#x} holds another key; using the standard SRK as a \
             primary instead, and leaving that handle alone"
        );
    }
    let created = ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| to_hsm(e, "creating the storage root key"))?;
    let primary = created.key_handle;
    if !persist || occupied {
        return Ok((primary, OWNER));
    }
    let persistent = PersistentTpmHandle::new(reserved)
        .map_err(|e| to_hsm(e, "naming the persistent SRK handle"))?;
    let evicted = ctx.execute_with_nullauth_session(|ctx| {
        ctx.evict_control(
            tss_esapi::interface_types::resource_handles::Provision::Owner,
            primary.into(),
            tss_esapi::interface_types::dynamic_handles::Persistent::Persistent(persistent),
        )
    });
    match evicted {
        Ok(object) => {
            let _ = ctx.flush_context(primary.into());
            tracing::info!("made the storage root key persistent at {reserved:#x}");
            Ok((KeyHandle::from(object), reserved))
        }
        Err(e) => {
            // The SRK works as a primary all the same: say why it is not persistent.
            tracing::warn!(
                error = %to_hsm(e, "persisting the storage root key"),
                "the storage root key stays a primary (created on each connect)"
            );
            Ok((primary, OWNER))
        }
    }
}

/// Whether a persistent handle is defined (asked through the handle list: probing an absent
/// handle makes ESYS log errors).
fn handle_present(ctx: &mut Context, handle: u32) -> bool {
    let Ok(persistent) = PersistentTpmHandle::new(handle) else {
        return false;
    };
    matches!(
        ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, handle, 1),
        Ok((tss_esapi::structures::CapabilityData::Handles(list), _))
            if list.as_ref().contains(&TpmHandle::Persistent(persistent))
    )
}

/// The persistent storage key at `handle` if it is there and has the standard SRK template.
fn persistent_srk(
    ctx: &mut Context,
    handle: u32,
    template: &tss_esapi::structures::Public,
) -> Result<Option<KeyHandle>, HsmError> {
    if !handle_present(ctx, handle) {
        return Ok(None);
    }
    let persistent =
        PersistentTpmHandle::new(handle).map_err(|e| to_hsm(e, "naming a persistent handle"))?;
    let Ok(mut object) = ctx
        .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent)))
    else {
        return Ok(None);
    };
    let key = KeyHandle::from(object);
    match ctx.execute_without_session(|ctx| ctx.read_public(key)) {
        Ok((public, _, _)) if keys::same_srk_template(&public, template) => Ok(Some(key)),
        _ => {
            // Not ours to use: close our reference only (never evict it).
            let _ = ctx.tr_close(&mut object);
            Ok(None)
        }
    }
}
