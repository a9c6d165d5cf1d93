//! # hsm-pkcs11: PKCS#11 tokens behind the hsm-rs contract
//!
//! PKCS#11 is how most HSMs are reached (Thales Luna, Entrust nShield, Utimaco, YubiHSM 2, AWS
//! CloudHSM, SoftHSM). This provider is built for the complaints people have about the usual
//! libraries:
//!
//! - **Sessions that never recover.** Sessions are pooled and self-healing: a session the token
//!   invalidated is evicted, a lost login is restored, stale handles are resolved again, and a
//!   module that lost its state is initialised again, each followed by a bounded retry (see
//!   [`PoolStats`]).
//! - **`C_FindObjects` on every operation.** Handles are resolved once and cached; signing is
//!   `C_SignInit` + `C_Sign` and nothing else.
//! - **No Ed25519.** `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA` where the token has them.
//! - **Vendor quirks as opaque `CKR_` codes.** Known differences live in [`PROFILES`], applied
//!   from the token info; every error names the C function and the `CKR_` code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hsm_core::HsmError> {
//! use hsm_core::ProviderUri;
//! let uri = ProviderUri::parse(
//!     "pkcs11:token=signing?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:HSM_PIN",
//! )?;
//! let provider = hsm_pkcs11::Pkcs11Builder::from_uri(&uri)?.build().await?;
//! # Ok(()) }
//! ```

mod config;
mod crypt;
mod error;
mod keys;
mod params;
mod profile;
mod provider;
mod raw;
mod session;
mod sign;
mod wrap;

pub use config::{Pkcs11Builder, TokenSelector, URI_ATTRS, URI_QUERY};
pub use profile::{PROFILES, Profile, ProfileSource};
pub use provider::Pkcs11Provider;
pub use session::PoolStats;
