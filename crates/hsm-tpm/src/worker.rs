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

use hsm_core::{HsmError, ProviderInfo};
use tss_esapi::Context;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::Auth;

use crate::config::{SRK_PERSISTENT_HANDLE, TpmBuilder, parse_tcti};
use crate::error::{PROVIDER, to_hsm, tpm_kind};
use crate::keys::{self, KeyRecord};

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

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
                    // A panicking job drops its reply channel (its caller gets an error); the
                    // context stays usable for the next one.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut tpm)));
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
            let _ = tx.send(op(tpm));
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

/// A key loaded in the TPM.
struct Loaded {
    id: String,
    handle: KeyHandle,
    record: Arc<KeyRecord>,
}

/// Everything the worker thread owns.
pub(crate) struct Tpm {
    pub(crate) ctx: Context,
    pub(crate) srk: KeyHandle,
    /// The SRK's name: recorded in each key file, checked before loading a blob.
    pub(crate) srk_name: Vec<u8>,
    /// Whether the SRK is the persistent one at [`SRK_PERSISTENT_HANDLE`] (never flushed).
    srk_persistent: bool,
    pub(crate) key_dir: PathBuf,
    /// Non-persistent keys: their blobs are kept here only, and die with the provider.
    pub(crate) session_keys: Vec<Arc<KeyRecord>>,
    /// Loaded keys, least recently used first.
    loaded: Vec<Loaded>,
    capacity: usize,
    /// How many times a key was loaded (`TPM2_Load`): what [`crate::TpmStats`] reports, and how
    /// the tests and the benchmark see that the cache works.
    pub(crate) loads: u64,
    /// The salted HMAC session that encrypts parameters, when one could be started.
    pub(crate) session: Option<AuthSession>,
    tcti: String,
}

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
        let mut ctx = Context::new(conf).map_err(|e| HsmError::Unavailable {
            reason: format!("cannot connect to the TPM through TCTI {tcti:?}: {e}"),
            retryable: true,
            source: Some(Box::new(e)),
        })?;
        if let Some(auth) = owner_auth {
            let auth = Auth::try_from(auth.expose().to_vec())
                .map_err(|e| HsmError::invalid(format!("owner auth value: {e}")))?;
            ctx.tr_set_auth(Hierarchy::Owner.into(), auth)
                .map_err(|e| to_hsm(e, "setting the owner auth value"))?;
        }
        flush_leftover_objects(&mut ctx);
        let (srk, srk_name, srk_persistent) = storage_root_key(&mut ctx)?;
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
            srk_name,
            srk_persistent,
            key_dir,
            session_keys: Vec::new(),
            loaded: Vec::new(),
            capacity,
            loads: 0,
            session: None,
            tcti,
        };
        tpm.session = crate::session::start_salted_session(&mut tpm.ctx, srk)?;
        Ok(tpm)
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
        if record.parent != self.srk_name {
            return Err(HsmError::Corrupted {
                what: format!("key file of {}", record.info.id),
                reason: "the key was made under another storage root key (another TPM, or a \
                         TPM that was cleared)"
                    .into(),
            });
        }
        self.make_room();
        let what = format!("loading key {}", record.info.id);
        let handle = self.with_room(&what, |tpm| tpm.load(record))?;
        self.loaded.push(Loaded {
            id: id.clone(),
            handle,
            record: Arc::clone(record),
        });
        Ok(handle)
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

    fn load(&mut self, record: &KeyRecord) -> Result<KeyHandle, tss_esapi::Error> {
        let (private, public) = (record.private.clone(), record.public.clone());
        let srk = self.srk;
        let handle = crate::session::with_session(self, crate::session::Params::In, |ctx| {
            ctx.load(srk, private, public)
        })?;
        self.loads += 1;
        Ok(handle)
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
    fn drop(&mut self) {
        for entry in std::mem::take(&mut self.loaded) {
            self.flush(entry.handle);
        }
        if let Some(session) = self.session.take() {
            let handle: ObjectHandle = tss_esapi::handles::SessionHandle::from(session).into();
            let _ = self.ctx.flush_context(handle);
        }
        if !self.srk_persistent {
            let srk = self.srk;
            self.flush(srk);
        }
    }
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

/// The storage root key: the persistent one at 0x81000001 when it is the TCG-standard ECC P-256
/// SRK, else the same key created as a primary in the owner hierarchy (the derivation is
/// deterministic, so it is the same key every time on the same TPM). A persistent handle that
/// holds something else is left alone.
fn storage_root_key(ctx: &mut Context) -> Result<(KeyHandle, Vec<u8>, bool), HsmError> {
    let template = keys::srk_template()?;
    let persistent = PersistentTpmHandle::new(SRK_PERSISTENT_HANDLE)
        .map_err(|e| to_hsm(e, "naming the persistent SRK handle"))?;
    // Asked through the handle list first: probing an absent handle makes ESYS log errors.
    let present = matches!(
        ctx.get_capability(
            tss_esapi::constants::CapabilityType::Handles,
            SRK_PERSISTENT_HANDLE,
            1
        ),
        Ok((tss_esapi::structures::CapabilityData::Handles(list), _))
            if list.as_ref().contains(&TpmHandle::Persistent(persistent))
    );
    if present
        && let Ok(object) = ctx.execute_without_session(|ctx| {
            ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
        })
    {
        let handle = KeyHandle::from(object);
        match ctx.execute_without_session(|ctx| ctx.read_public(handle)) {
            Ok((public, name, _)) if keys::same_srk_template(&public, &template) => {
                return Ok((handle, name.value().to_vec(), true));
            }
            _ => {
                // Not ours to use: close our reference only (never evict it).
                let mut object = object;
                let _ = ctx.tr_close(&mut object);
                tracing::info!(
                    "persistent handle {SRK_PERSISTENT_HANDLE:#x} holds another key; creating \
                     the standard ECC P-256 SRK as a primary instead"
                );
            }
        }
    }
    let created = ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| to_hsm(e, "creating the storage root key"))?;
    let handle = created.key_handle;
    let (_, name, _) = ctx
        .execute_without_session(|ctx| ctx.read_public(handle))
        .map_err(|e| to_hsm(e, "reading the storage root key"))?;
    Ok((handle, name.value().to_vec(), false))
}
