//! The `HsmProvider` implementation: checks, then one job on a worker per call (a fast
//! signature runs in place instead: see [`crate::session`]).

use std::sync::Arc;
use std::time::Instant;

use hsm_core::{
    Capabilities, Ciphertext, DecryptRequest, EncryptRequest, GenerateKeyRequest, HsmError,
    HsmProvider, KeyFilter, KeyId, KeyInfo, Mechanism, Operation, ProviderInfo, PublicKey,
    SignInput, SupportIndex, UnwrapKeyRequest, async_trait,
};
use zeroize::Zeroizing;

use crate::config::Pkcs11Builder;
use crate::crypt::{self, OwnedCrypt};
use crate::error::PROVIDER;
use crate::keys::{self, KeyEntry};
use crate::profile::Profile;
use crate::session::{InPlace, OpCtx, OpError, PoolStats, Token};
use crate::sign;
use crate::wrap::{self, OwnedUnwrap};

/// A PKCS#11 token behind the hsm-rs contract. Cheap to clone; clones share the token, the
/// session pool and the worker threads, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Pkcs11Provider {
    token: Arc<Token>,
    info: ProviderInfo,
    profile: &'static Profile,
    caps: Arc<Capabilities>,
    supported: Supported,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token", &self.info.model)
            .field("serial", &self.info.serial)
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

/// Sign input owned by the worker.
enum OwnedInput {
    Message(Vec<u8>),
    Digest(Vec<u8>),
}

impl OwnedInput {
    fn new(input: SignInput<'_>) -> Self {
        match input {
            SignInput::Message(m) => OwnedInput::Message(m.to_vec()),
            SignInput::Digest(d) => OwnedInput::Digest(d.to_vec()),
        }
    }

    fn borrow(&self) -> SignInput<'_> {
        match self {
            OwnedInput::Message(m) => SignInput::Message(m),
            OwnedInput::Digest(d) => SignInput::Digest(d),
        }
    }
}

type Supported = Arc<SupportIndex>;

/// Resolves a key and checks the operation (see [`SupportIndex::check`]).
fn checked(
    ctx: &OpCtx<'_>,
    supported: &Supported,
    id: &KeyId,
    mech: &Mechanism,
    op: Operation,
) -> Result<Arc<KeyEntry>, OpError> {
    let k = ctx.key(id)?;
    supported.check(PROVIDER, &k.info, mech, op)?;
    Ok(k)
}

/// A signature's part on the token: the checks, `C_SignInit` + `C_Sign`, timed for
/// [`KeyEntry::sign_time`]. Returns the token's signature, which [`sign::finish`] completes.
fn sign_with(
    ctx: &OpCtx<'_>,
    supported: &Supported,
    key: &KeyEntry,
    mech: &Mechanism,
    op: Operation,
    data: &[u8],
) -> Result<Vec<u8>, OpError> {
    supported.check(PROVIDER, &key.info, mech, op)?;
    let started = Instant::now();
    let signed = sign::sign_prepared(ctx, key, mech, data);
    // Failures count too: a token that takes seconds to fail is no token to wait for in place.
    key.sign_time.record(started.elapsed());
    signed
}

/// [`sign_with`] for a key named by id, resolved (or found in the cache) first; with the key's
/// type.
fn sign_on_token(
    ctx: &OpCtx<'_>,
    supported: &Supported,
    id: &KeyId,
    mech: &Mechanism,
    op: Operation,
    data: &[u8],
) -> Result<(Vec<u8>, hsm_core::KeyType), OpError> {
    let k = ctx.key(id)?;
    Ok((
        sign_with(ctx, supported, &k, mech, op, data)?,
        k.info.key_type,
    ))
}

impl Pkcs11Provider {
    pub(crate) async fn connect(b: Pkcs11Builder) -> Result<Self, HsmError> {
        let token = tokio::task::spawn_blocking(move || Token::connect(&b))
            .await
            .map_err(|e| HsmError::backend(PROVIDER, "connect task failed", e))??;
        let (info, profile, caps) = token.with_module(|m| {
            let t = &m.token_info;
            let fw = t.firmware_version();
            let info = ProviderInfo::new(
                PROVIDER,
                t.manufacturer_id(),
                format!("{} ({})", t.model(), t.label()),
                format!("{}.{}", fw.major(), fw.minor()),
            )
            .with_serial(t.serial_number());
            Ok((info, m.profile, m.features.caps.clone()))
        })?;
        let supported = SupportIndex::new(&caps);
        tracing::info!(token = %info.model, profile = profile.name, "PKCS#11 token connected");
        Ok(Pkcs11Provider {
            token,
            info,
            profile,
            caps: Arc::new(caps),
            supported: Arc::new(supported),
        })
    }

    /// The vendor profile in use.
    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    /// Session pool statistics.
    pub fn pool_stats(&self) -> PoolStats {
        self.token.stats()
    }

    /// Signs on the calling thread: the same checks, session pool and recovery as
    /// [`HsmProvider::sign`], without the hand-off to a worker thread.
    ///
    /// For callers already on threads of their own that need a synchronous signer (rustls's
    /// `SigningKey::sign`, a thread-per-connection server, a batch job). Each calling thread
    /// borrows a pooled session (waiting for one if all are lent), and waits out recovery and its
    /// back-off itself. Never call this on an async executor thread: the async `sign` runs fast
    /// signatures in place already, and hands the rest to a worker thread.
    pub fn sign_blocking(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>, HsmError> {
        input.check(mechanism)?;
        let op = input.operation();
        let data = sign::token_input(mechanism, input)?;
        // Borrows instead of copying: nothing here has to outlive the call.
        let supported = &self.supported;
        let (sig, kt) = self.token.run(&self.label("signing", key), &|ctx| {
            sign_on_token(ctx, supported, key, mechanism, op, &data)
        })?;
        sign::finish(mechanism, kt, sig)
    }

    /// Wraps `key` toward an RSA public key that lives outside this token, such as the import
    /// wrapping key AWS KMS, Google Cloud KMS or Azure Key Vault hands out: with
    /// [`Mechanism::RsaOaep`] for an AES key, or [`Mechanism::RsaAesKeyWrap`] for any key (the
    /// ephemeral AES key is made on the token, so no key material passes through the host).
    ///
    /// # Contract
    /// `PermissionDenied` if `key` is not extractable; `InvalidInput` for a public key that is
    /// not RSA or a mechanism that is not one of the two; `NotSupported` where the token lacks
    /// the mechanism (RFC 5649 for RSA-AES key wrap).
    pub async fn wrap_for(
        &self,
        public: &PublicKey,
        key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>, HsmError> {
        let (public, id, mech) = (public.clone(), key.clone(), *mechanism);
        let supported = self.supported.clone();
        self.token
            .exec(
                self.label("wrapping toward an outside key", key),
                move |ctx| {
                    let info = KeyInfo {
                        id: KeyId::new("outside public key"),
                        key_type: public.key_type(),
                        attributes: hsm_core::KeyAttributes::new("", public.key_type())
                            .with_usage(hsm_core::KeyUsage::WRAP),
                    };
                    supported.check(PROVIDER, &info, &mech, Operation::Wrap)?;
                    let target = ctx.key(&id)?;
                    wrap::wrap_for(ctx, &public, &target, &mech)
                },
            )
            .await
    }

    /// Describes a call for errors and logs, formatted only if one is written.
    fn label(&self, what: &'static str, key: &KeyId) -> impl Fn() -> String + Send + 'static {
        let key = key.clone();
        move || format!("{what} with key {}", key.display_name())
    }
}

#[async_trait]
impl HsmProvider for Pkcs11Provider {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn info(&self) -> Result<ProviderInfo, HsmError> {
        Ok(self.info.clone())
    }

    async fn capabilities(&self) -> Result<Capabilities, HsmError> {
        Ok((*self.caps).clone())
    }

    async fn generate_key(&self, request: &GenerateKeyRequest) -> Result<KeyInfo, HsmError> {
        let kt = request.key_type;
        request.attributes.check_for(kt)?;
        if !self.caps.can_generate(kt) {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("generating {kt} keys on this token"),
            ));
        }
        let attrs = request.attributes.clone();
        let label = attrs.label.clone();
        self.token
            .exec(
                move || format!("generating {kt} key {label:?}"),
                move |ctx| keys::generate(ctx, kt, &attrs),
            )
            .await
    }

    async fn public_key(&self, key: &KeyId) -> Result<PublicKey, HsmError> {
        let id = key.clone();
        self.token
            .exec(self.label("reading the public key", key), move |ctx| {
                let k = ctx.key_fresh(&id)?;
                k.public_key.clone().ok_or_else(|| {
                    HsmError::invalid(format!(
                        "{id} is a {} key without a public key",
                        k.info.key_type
                    ))
                    .into()
                })
            })
            .await
    }

    async fn get_key(&self, key: &KeyId) -> Result<KeyInfo, HsmError> {
        let id = key.clone();
        self.token
            .exec(self.label("reading", key), move |ctx| {
                Ok(ctx.key_fresh(&id)?.info.clone())
            })
            .await
    }

    async fn find_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyInfo>, HsmError> {
        let filter = filter.clone();
        self.token
            .exec(
                || "listing keys".into(),
                move |ctx| keys::find(ctx, &filter),
            )
            .await
    }

    async fn delete_key(&self, key: &KeyId) -> Result<(), HsmError> {
        let id = key.clone();
        self.token
            .exec(self.label("deleting", key), move |ctx| {
                keys::delete(ctx, &id)
            })
            .await
    }

    async fn sign(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
    ) -> Result<Vec<u8>, HsmError> {
        input.check(mechanism)?;
        let op = input.operation();
        // Hashing and encoding happen here, on the caller's thread: the worker only signs.
        let data = sign::token_input(mechanism, input)?;
        let mut failed = None;
        if let Some(k) = self.token.handles.get(&key.id)
            && k.sign_time.under(self.token.in_place_below)
        {
            // In place the call never waits, so it takes a unit of Tokio's budget: a task that
            // signs in a loop still lets the other tasks on its thread run.
            tokio::task::coop::consume_budget().await;
            let supported = &self.supported;
            match self
                .token
                .try_in_place(&|ctx| sign_with(ctx, supported, &k, mechanism, op, &data))
            {
                InPlace::Done(sig) => return sign::finish(mechanism, k.info.key_type, sig),
                InPlace::HandOff(failure) => failed = failure,
            }
        }
        let (id, mech, supported) = (key.clone(), *mechanism, self.supported.clone());
        let (sig, kt) = self
            .token
            .exec_after(failed, self.label("signing", key), move |ctx| {
                sign_on_token(ctx, &supported, &id, &mech, op, &data)
            })
            .await?;
        sign::finish(mechanism, kt, sig)
    }

    async fn verify(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        input.check(mechanism)?;
        let (id, mech, input, sig) = (
            key.clone(),
            *mechanism,
            OwnedInput::new(input),
            signature.to_vec(),
        );
        let supported = self.supported.clone();
        self.token
            .exec(self.label("verifying", key), move |ctx| {
                let k = checked(ctx, &supported, &id, &mech, Operation::Verify)?;
                let public = k.public.ok_or_else(|| {
                    HsmError::invalid(format!("{id} has no public key object on the token"))
                })?;
                sign::verify(
                    ctx.session,
                    k.info.key_type,
                    public,
                    &mech,
                    input.borrow(),
                    &sig,
                    ctx.module.profile.bad_data_code,
                )
            })
            .await
    }

    async fn encrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &EncryptRequest<'_>,
    ) -> Result<Ciphertext, HsmError> {
        let (id, mech, req) = (key.clone(), *mechanism, OwnedCrypt::from(request));
        let supported = self.supported.clone();
        self.token
            .exec(self.label("encrypting", key), move |ctx| {
                let k = checked(ctx, &supported, &id, &mech, Operation::Encrypt)?;
                crypt::encrypt(ctx, &k, &mech, &req)
            })
            .await
    }

    async fn decrypt(
        &self,
        key: &KeyId,
        mechanism: &Mechanism,
        request: &DecryptRequest<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let (id, mech, req) = (key.clone(), *mechanism, OwnedCrypt::from(request));
        let supported = self.supported.clone();
        self.token
            .exec(self.label("decrypting", key), move |ctx| {
                let k = checked(ctx, &supported, &id, &mech, Operation::Decrypt)?;
                crypt::decrypt(ctx, &k, &mech, &req)
            })
            .await
    }

    async fn wrap_key(
        &self,
        wrapping_key: &KeyId,
        key: &KeyId,
        mechanism: &Mechanism,
    ) -> Result<Vec<u8>, HsmError> {
        let (wid, id, mech) = (wrapping_key.clone(), key.clone(), *mechanism);
        let supported = self.supported.clone();
        self.token
            .exec(self.label("wrapping", key), move |ctx| {
                let w = checked(ctx, &supported, &wid, &mech, Operation::Wrap)?;
                let target = ctx.key(&id)?;
                wrap::wrap(ctx, &w, &target, &mech)
            })
            .await
    }

    async fn unwrap_key(
        &self,
        unwrapping_key: &KeyId,
        mechanism: &Mechanism,
        request: &UnwrapKeyRequest<'_>,
    ) -> Result<KeyInfo, HsmError> {
        let kt = request.key_type;
        if !self.caps.unwrap_key_types.contains(&kt) {
            return Err(HsmError::not_supported(
                PROVIDER,
                format!("unwrapping a {kt} key on this token"),
            ));
        }
        let (uid, mech) = (unwrapping_key.clone(), *mechanism);
        let req = OwnedUnwrap {
            wrapped: request.wrapped.to_vec(),
            key_type: kt,
            attributes: request.attributes.clone(),
            public_key: request.public_key.clone(),
        };
        let supported = self.supported.clone();
        self.token
            .exec(
                move || format!("unwrapping a {kt} key"),
                move |ctx| {
                    let u = checked(ctx, &supported, &uid, &mech, Operation::Unwrap)?;
                    wrap::unwrap(ctx, &u, &mech, &req)
                },
            )
            .await
    }
}
