//! The few PKCS#11 calls made below cryptoki.
//!
//! cryptoki names mechanisms with a closed enum: codes it does not know are dropped from
//! `get_mechanism_list` and cannot be passed to `C_WrapKey`/`C_UnwrapKey`. Tokens disagree on
//! exactly such codes (RFC 5649 key wrap is `CKM_AES_KEY_WRAP_PAD` 0x210A on SoftHSM and
//! `CKM_AES_KEY_WRAP_KWP` 0x210B on kryoptic), so this module calls the module's function table
//! directly for: the raw mechanism list and info, and wrap/unwrap with a raw mechanism code.
//! The module is the same shared object cryptoki loaded, so it shares its initialised state.

use std::path::Path;
use std::ptr;

use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_INFO, CK_MECHANISM_TYPE,
    CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SLOT_ID, CK_ULONG, CKR_OK,
};
use hsm_core::HsmError;

use crate::error::PROVIDER;

/// A raw return code that is not `CKR_OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRv(pub CK_RV);

impl RawRv {
    /// As a cryptoki error, so it is classified like any other failure.
    pub(crate) fn into_ck(self, f: cryptoki::context::Function) -> cryptoki::error::Error {
        match cryptoki::error::Rv::from(self.0).into_result(f) {
            Err(e) => e,
            // Only non-OK codes are wrapped in RawRv.
            Ok(()) => cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::GeneralError, f),
        }
    }
}

fn check(rv: CK_RV) -> Result<(), RawRv> {
    if rv == CKR_OK as CK_RV {
        Ok(())
    } else {
        Err(RawRv(rv))
    }
}

/// The module's function table.
pub(crate) struct RawModule {
    // Never dropped, so the shared object is never unloaded: modules (and the OpenSSL inside
    // SoftHSM) register thread-local destructors, and unloading them before the worker threads
    // that called in have exited makes those threads crash on exit. Holding the handle also
    // keeps `list` valid.
    _lib: std::mem::ManuallyDrop<cryptoki_sys::Pkcs11>,
    list: *const CK_FUNCTION_LIST,
}

// SAFETY: the function table is immutable and PKCS#11 modules initialised with
// CKF_OS_LOCKING_OK are safe to call from any thread.
unsafe impl Send for RawModule {}
// SAFETY: as above.
unsafe impl Sync for RawModule {}

macro_rules! fnptr {
    ($self:ident, $name:ident) => {
        // SAFETY: `list` came from C_GetFunctionList and stays valid while `_lib` is loaded.
        unsafe { (*$self.list).$name }
            .ok_or(RawRv(cryptoki_sys::CKR_FUNCTION_NOT_SUPPORTED as CK_RV))?
    };
}

/// As `fnptr!`, for a caller that reports which function failed.
macro_rules! fnptr_or {
    ($self:ident, $name:ident, $f:expr) => {
        // SAFETY: as in `fnptr!`.
        unsafe { (*$self.list).$name }
            .ok_or((RawRv(cryptoki_sys::CKR_FUNCTION_NOT_SUPPORTED as CK_RV), $f))?
    };
}

impl RawModule {
    pub(crate) fn load(path: &Path) -> Result<Self, HsmError> {
        let unavailable = |why: String| HsmError::Unavailable {
            reason: format!("cannot load PKCS#11 module {}: {why}", path.display()),
            retryable: false,
            source: None,
        };
        // SAFETY: loading a PKCS#11 module runs its initialisers, as cryptoki already did for
        // the same path.
        let lib =
            unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| unavailable(e.to_string()))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer.
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        if rv != CKR_OK as CK_RV || list.is_null() {
            return Err(HsmError::backend(
                PROVIDER,
                format!("C_GetFunctionList returned {rv:#x}"),
                std::io::Error::other("no function list"),
            ));
        }
        Ok(RawModule {
            _lib: std::mem::ManuallyDrop::new(lib),
            list,
        })
    }

    /// Every mechanism code the token lists, including those cryptoki does not name.
    pub(crate) fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>, RawRv> {
        let f = fnptr!(self, C_GetMechanismList);
        let mut n: CK_ULONG = 0;
        // SAFETY: size query with a null buffer, then a buffer of that size.
        check(unsafe { f(slot, ptr::null_mut(), &mut n) })?;
        let mut out = vec![0 as CK_MECHANISM_TYPE; n as usize];
        check(unsafe { f(slot, out.as_mut_ptr(), &mut n) })?;
        out.truncate(n as usize);
        Ok(out)
    }

    /// `C_GetMechanismInfo` for a raw code: (min key size, max key size, flags).
    pub(crate) fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO, RawRv> {
        let f = fnptr!(self, C_GetMechanismInfo);
        let mut info = CK_MECHANISM_INFO {
            ulMinKeySize: 0,
            ulMaxKeySize: 0,
            flags: 0,
        };
        // SAFETY: writes one CK_MECHANISM_INFO.
        check(unsafe { f(slot, mech, &mut info) })?;
        Ok(info)
    }

    /// `C_WrapKey` with a parameterless raw mechanism.
    pub(crate) fn wrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<Vec<u8>, RawRv> {
        let f = fnptr!(self, C_WrapKey);
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut n: CK_ULONG = 0;
        // SAFETY: size query, then a buffer of that size.
        check(unsafe { f(session, &mut m, wrapping, key, ptr::null_mut(), &mut n) })?;
        let mut out = vec![0u8; n as usize];
        check(unsafe { f(session, &mut m, wrapping, key, out.as_mut_ptr(), &mut n) })?;
        out.truncate(n as usize);
        Ok(out)
    }

    /// `C_EncryptInit` + one `C_Encrypt` (or the decrypt pair) into a buffer of `out_len`
    /// bytes. cryptoki asks the size first; NSS softokn answers that size query for AES-GCM
    /// without room for the tag and then fails with `CKR_BUFFER_TOO_SMALL`. The caller knows the
    /// exact size, so one call suffices everywhere.
    pub(crate) fn crypt(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &cryptoki::mechanism::Mechanism<'_>,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        out_len: usize,
        encrypt: bool,
    ) -> Result<Vec<u8>, RawRv> {
        let mut m = CK_MECHANISM::from(mech);
        let mut out = vec![0u8; out_len];
        let mut n = out_len as CK_ULONG;
        // SAFETY: `m` points at parameters borrowed from `mech`, alive for the call; `out` has
        // `n` writable bytes; the module only reads `data`.
        let input = data.as_ptr() as *mut u8;
        let len = data.len() as CK_ULONG;
        if encrypt {
            let (init, run) = (fnptr!(self, C_EncryptInit), fnptr!(self, C_Encrypt));
            check(unsafe { init(session, &mut m, key) })?;
            check(unsafe { run(session, input, len, out.as_mut_ptr(), &mut n) })?;
        } else {
            let (init, run) = (fnptr!(self, C_DecryptInit), fnptr!(self, C_Decrypt));
            check(unsafe { init(session, &mut m, key) })?;
            check(unsafe { run(session, input, len, out.as_mut_ptr(), &mut n) })?;
        }
        out.truncate(n as usize);
        Ok(out)
    }

    /// `C_SignInit` + one `C_Sign` into a buffer of `len` bytes, the signature size the key
    /// type implies. cryptoki's `Session::sign` asks the size with a first `C_Sign`; on the hot
    /// path that query is a third call into the token for nothing. A token that wants more room
    /// answers `CKR_BUFFER_TOO_SMALL` with the size and keeps the operation active (PKCS#11
    /// 3.0 §5.2), so the second call then completes it.
    pub(crate) fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &cryptoki::mechanism::Mechanism<'_>,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, (RawRv, cryptoki::context::Function)> {
        use cryptoki::context::Function;
        let (init, run) = (
            fnptr_or!(self, C_SignInit, Function::SignInit),
            fnptr_or!(self, C_Sign, Function::Sign),
        );
        let mut m = CK_MECHANISM::from(mech);
        // SAFETY: `m` points at parameters borrowed from `mech`, alive for the call.
        check(unsafe { init(session, &mut m, key) }).map_err(|rv| (rv, Function::SignInit))?;
        let mut out = vec![0u8; len];
        let mut n = len as CK_ULONG;
        let input = data.as_ptr() as *mut u8;
        let in_len = data.len() as CK_ULONG;
        // SAFETY: `out` has `n` writable bytes; the module only reads `data`.
        let mut rv = unsafe { run(session, input, in_len, out.as_mut_ptr(), &mut n) };
        if rv == cryptoki_sys::CKR_BUFFER_TOO_SMALL as CK_RV && n as usize > out.len() {
            out.resize(n as usize, 0);
            // SAFETY: as above, with the size the token asked for.
            rv = unsafe { run(session, input, in_len, out.as_mut_ptr(), &mut n) };
        }
        check(rv).map_err(|rv| (rv, Function::Sign))?;
        out.truncate(n as usize);
        Ok(out)
    }

    /// `C_UnwrapKey` with a parameterless raw mechanism and a template.
    pub(crate) fn unwrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &[cryptoki::object::Attribute],
    ) -> Result<CK_OBJECT_HANDLE, RawRv> {
        let f = fnptr!(self, C_UnwrapKey);
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        // The CK_ATTRIBUTEs point into `template`, which outlives the call.
        let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: every pointer refers to storage alive for the call; the module only reads the
        // wrapped bytes and the template.
        check(unsafe {
            f(
                session,
                &mut m,
                unwrapping,
                wrapped.as_ptr() as *mut u8,
                wrapped.len() as CK_ULONG,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut handle,
            )
        })?;
        Ok(handle)
    }
}
