//! The conformance suite: one definition of "works" for every provider.
//!
//! Each provider crate has one test that builds its provider against a real peer and calls
//! [`run`]. The suite is driven by [`HsmProvider::capabilities`]: every key type and mechanism the
//! provider claims is exercised, and every one it does not claim must fail with
//! [`HsmError::NotSupported`]. Signatures are also checked with [`crate::verify`] (RustCrypto),
//! an implementation independent of the provider. Labels are unique per run and every key the
//! suite creates is deleted at the end.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conformance() {
//!     let provider = Arc::new(MyProvider::connect(..).await.unwrap());
//!     hsm_core::conformance::run(provider).await.assert_passed();
//! }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::RngCore as _;
use tokio::sync::Mutex;

use crate::verify::{rsa_oaep_encrypt, verify_signature};
use crate::{
    Capabilities, DecryptRequest, DynProvider, EncryptRequest, GenerateKeyRequest, HsmError,
    KeyAttributes, KeyFamily, KeyFilter, KeyId, KeyInfo, KeyType, KeyUsage, Mechanism, Operation,
    SignInput, UnwrapKeyRequest,
};

/// Options for a run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SuiteOptions {
    /// How many tasks sign at once in the concurrency case.
    pub concurrency: usize,
    /// Cases not run against this peer, by name prefix, each with the reason printed as the
    /// skip: for a peer that fakes a behaviour (an emulator), where another peer covers it.
    pub skip: Vec<(String, String)>,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            concurrency: 64,
            skip: Vec::new(),
        }
    }
}

impl SuiteOptions {
    /// Skips the cases whose name starts with `prefix`, printing `why`.
    pub fn skip(mut self, prefix: impl Into<String>, why: impl Into<String>) -> Self {
        self.skip.push((prefix.into(), why.into()));
        self
    }

    /// Sets how many tasks sign at once in the concurrency case.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// The provider's name.
    pub provider: String,
    /// Cases (or sub-cases) that passed.
    pub passed: Vec<String>,
    /// Cases that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Cases that did not apply, with why.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// Panics, listing every failure, unless all cases passed or were skipped with a reason.
    pub fn assert_passed(&self) {
        if !self.failed.is_empty() {
            let mut msg = format!("conformance failures for provider {}:\n", self.provider);
            for (case, why) in &self.failed {
                let _ = writeln!(msg, "  {case}: {why}");
            }
            panic!("{msg}");
        }
        assert!(!self.passed.is_empty(), "conformance ran no case");
    }
}

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Fails unless `r` is an error satisfying `want`.
fn expect_err<T>(r: Result<T, HsmError>, want: fn(&HsmError) -> bool, what: &str) -> Outcome {
    match r {
        Ok(_) => Err(format!("{what}: succeeded but should have failed")),
        Err(e) if want(&e) => Ok(()),
        Err(e) => Err(format!("{what}: wrong error {e:?}")),
    }
}

fn is_not_supported(e: &HsmError) -> bool {
    matches!(e, HsmError::NotSupported { .. })
}
fn is_not_found(e: &HsmError) -> bool {
    matches!(e, HsmError::KeyNotFound { .. })
}
fn is_denied(e: &HsmError) -> bool {
    matches!(e, HsmError::PermissionDenied { .. })
}
fn is_integrity(e: &HsmError) -> bool {
    matches!(e, HsmError::IntegrityCheckFailed { .. })
}

/// Which usage a cached key was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Purpose {
    Sign,
    Encrypt,
    Wrap,
    Extractable,
    /// A second signing key of the same type, for wrong-key checks.
    OtherSign,
    /// A second encryption key of the same type, for wrong-key checks.
    OtherEncrypt,
}

struct Suite {
    p: DynProvider,
    caps: Capabilities,
    opts: SuiteOptions,
    run_id: String,
    counter: AtomicU32,
    created: Mutex<Vec<KeyId>>,
    cache: Mutex<HashMap<(KeyType, Purpose), KeyInfo>>,
    report: Mutex<Report>,
}

/// Runs the whole suite with default options.
pub async fn run(provider: DynProvider) -> Report {
    run_with(provider, SuiteOptions::default()).await
}

/// Runs the whole suite.
pub async fn run_with(provider: DynProvider, opts: SuiteOptions) -> Report {
    let caps = match provider.capabilities().await {
        Ok(c) => c,
        Err(e) => {
            return Report {
                provider: provider.name().to_owned(),
                failed: vec![("capabilities".into(), format!("{e:?}"))],
                ..Default::default()
            };
        }
    };
    let mut id = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut id);
    let suite = Suite {
        caps,
        opts,
        run_id: hex::encode(id),
        counter: AtomicU32::new(0),
        created: Mutex::new(Vec::new()),
        cache: Mutex::new(HashMap::new()),
        report: Mutex::new(Report {
            provider: provider.name().to_owned(),
            ..Default::default()
        }),
        p: provider,
    };
    println!(
        "conformance: provider {} (run {}), {} key types, {} mechanism entries",
        suite.p.name(),
        suite.run_id,
        suite.caps.key_types.len(),
        suite.caps.mechanisms.len()
    );

    suite
        .case("info_and_capabilities", suite.info_and_capabilities())
        .await;
    suite
        .case("generate_each_key_type", suite.generate_each_key_type())
        .await;
    suite.sign_verify_mechanisms().await;
    suite.encrypt_decrypt().await;
    suite.wrap_unwrap().await;
    suite
        .case("unknown_key_is_not_found", suite.unknown_key())
        .await;
    suite
        .case("usage_is_enforced", suite.usage_enforced())
        .await;
    suite.case("session_keys", suite.session_keys()).await;
    suite
        .case("concurrent_signing", suite.concurrent_signing())
        .await;
    suite.case("delete_then_use", suite.delete_then_use()).await;
    suite.case("cleanup", suite.cleanup()).await;

    let report = suite.report.into_inner();
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        report.passed.len(),
        report.failed.len(),
        report.skipped.len()
    );
    report
}

/// A case result that may also be a skip.
enum Case {
    Done(Outcome),
    Skip(String),
}

impl From<Outcome> for Case {
    fn from(o: Outcome) -> Self {
        Case::Done(o)
    }
}

impl Suite {
    async fn case(&self, name: &str, fut: impl std::future::Future<Output = impl Into<Case>>) {
        let result = fut.await.into();
        self.record(name, result).await;
    }

    async fn record(&self, name: &str, result: Case) {
        let result = match self
            .opts
            .skip
            .iter()
            .find(|(p, _)| name.starts_with(p.as_str()))
        {
            Some((_, why)) => Case::Skip(why.clone()),
            None => result,
        };
        let mut r = self.report.lock().await;
        match result {
            Case::Done(Ok(())) => {
                println!("conformance {} {name} ... ok", self.p.name());
                r.passed.push(name.to_owned());
            }
            Case::Done(Err(why)) => {
                println!("conformance {} {name} ... FAILED: {why}", self.p.name());
                r.failed.push((name.to_owned(), why));
            }
            Case::Skip(why) => {
                println!("conformance {} {name} ... skipped: {why}", self.p.name());
                r.skipped.push((name.to_owned(), why));
            }
        }
    }

    fn label(&self, what: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("conf-{}-{n}-{what}", self.run_id)
    }

    async fn generate(&self, req: GenerateKeyRequest) -> Result<KeyInfo, String> {
        let what = format!("generate {} {:?}", req.key_type, req.attributes.label);
        let info = self
            .p
            .generate_key(&req)
            .await
            .map_err(|e| format!("{what}: {e:?}"))?;
        self.created.lock().await.push(info.id.clone());
        Ok(info)
    }

    fn usage_for(kt: KeyType, purpose: Purpose) -> KeyUsage {
        match (kt.family(), purpose) {
            (_, Purpose::Sign | Purpose::OtherSign) => KeyUsage::SIGN,
            (_, Purpose::Encrypt | Purpose::OtherEncrypt) => KeyUsage::ENCRYPT,
            (_, Purpose::Wrap) => KeyUsage::WRAP,
            (KeyFamily::Aes, Purpose::Extractable) => KeyUsage::ENCRYPT,
            (KeyFamily::Rsa, Purpose::Extractable) => KeyUsage::SIGN.union(KeyUsage::ENCRYPT),
            (_, Purpose::Extractable) => KeyUsage::SIGN,
        }
    }

    /// A key of `kt` made for `purpose`, generated once per run.
    async fn key(&self, kt: KeyType, purpose: Purpose) -> Result<KeyInfo, String> {
        if let Some(k) = self.cache.lock().await.get(&(kt, purpose)) {
            return Ok(k.clone());
        }
        let req = GenerateKeyRequest::new(self.label(&format!("{kt}-{purpose:?}")), kt)
            .with_usage(Self::usage_for(kt, purpose))
            .with_extractable(purpose == Purpose::Extractable);
        let info = self.generate(req).await?;
        self.cache.lock().await.insert((kt, purpose), info.clone());
        Ok(info)
    }

    async fn info_and_capabilities(&self) -> Outcome {
        let info = self.p.info().await.map_err(|e| format!("info: {e:?}"))?;
        ensure!(!info.provider.is_empty(), "info().provider is empty");
        ensure!(
            !self.caps.key_types.is_empty(),
            "capabilities() lists no key types"
        );
        for m in &self.caps.mechanisms {
            ensure!(
                m.mechanism.fits(m.key_type),
                "capabilities list {} on {}, which does not fit",
                m.mechanism,
                m.key_type
            );
            for op in &m.operations {
                ensure!(
                    m.mechanism.operations().contains(op),
                    "capabilities list {op} for {}, which is not defined",
                    m.mechanism
                );
            }
        }
        Ok(())
    }

    async fn generate_each_key_type(&self) -> Outcome {
        for &kt in KeyType::ALL {
            if !self.caps.can_generate(kt) {
                let r = self
                    .p
                    .generate_key(&GenerateKeyRequest::new(self.label("unsupported"), kt))
                    .await;
                if let Ok(info) = &r {
                    self.created.lock().await.push(info.id.clone());
                }
                expect_err(r, is_not_supported, &format!("generate unclaimed {kt}"))?;
                continue;
            }
            let purpose = if kt.is_asymmetric() {
                Purpose::Sign
            } else {
                Purpose::Encrypt
            };
            let info = self.key(kt, purpose).await?;
            ensure!(
                info.key_type == kt,
                "generated {kt} reports {}",
                info.key_type
            );
            let got = self
                .p
                .get_key(&info.id)
                .await
                .map_err(|e| format!("get_key {kt}: {e:?}"))?;
            ensure!(got.key_type == kt, "get_key {kt} reports {}", got.key_type);
            ensure!(
                got.attributes.label == info.attributes.label,
                "get_key {kt}: label {:?} != {:?}",
                got.attributes.label,
                info.attributes.label
            );
            ensure!(
                !got.attributes.extractable,
                "{kt} generated non-extractable reports extractable"
            );
            let found = self
                .p
                .find_keys(&KeyFilter::label(&info.attributes.label))
                .await
                .map_err(|e| format!("find_keys {kt}: {e:?}"))?;
            ensure!(
                found.len() == 1 && found[0].id == info.id,
                "find_keys by label for {kt} returned {} keys",
                found.len()
            );
            let pk = self.p.public_key(&info.id).await;
            if kt.is_asymmetric() {
                let pk = pk.map_err(|e| format!("public_key {kt}: {e:?}"))?;
                ensure!(
                    pk.key_type() == kt,
                    "public key of {kt} parses as {}",
                    pk.key_type()
                );
            } else {
                expect_err(
                    pk,
                    |e| {
                        matches!(
                            e,
                            HsmError::InvalidInput { .. } | HsmError::NotSupported { .. }
                        )
                    },
                    &format!("public_key of symmetric {kt}"),
                )?;
            }
        }
        let all = self
            .p
            .find_keys(&KeyFilter::all())
            .await
            .map_err(|e| format!("find_keys(all): {e:?}"))?;
        let ours = all
            .iter()
            .filter(|k| {
                k.attributes
                    .label
                    .starts_with(&format!("conf-{}-", self.run_id))
            })
            .count();
        ensure!(
            ours >= self.caps.key_types.len(),
            "list shows {ours} of our keys"
        );
        Ok(())
    }

    /// Every signature mechanism on every key type: supported ones sign and verify (checked by
    /// the provider and independently), unsupported ones say NotSupported.
    async fn sign_verify_mechanisms(&self) {
        let msg = format!("hsm-rs conformance message {}", self.run_id);
        let mut any = false;
        for &kt in KeyType::ALL.iter().filter(|k| k.is_asymmetric()) {
            if !self.caps.can_generate(kt) {
                continue;
            }
            for mech in Mechanism::catalog().into_iter().filter(|m| m.fits(kt)) {
                for op in [Operation::Sign, Operation::SignDigest] {
                    if !mech.operations().contains(&op) {
                        continue;
                    }
                    any = true;
                    let name = format!("sign_verify {kt} {mech} {op}");
                    let out = self.sign_verify_one(kt, &mech, op, msg.as_bytes()).await;
                    self.record(&name, out.into()).await;
                }
            }
        }
        if !any {
            self.record(
                "sign_verify",
                Case::Skip("provider generates no asymmetric keys".into()),
            )
            .await;
        }
    }

    async fn sign_verify_one(
        &self,
        kt: KeyType,
        mech: &Mechanism,
        op: Operation,
        msg: &[u8],
    ) -> Outcome {
        let key = self.key(kt, Purpose::Sign).await?;
        let digest;
        let input = if op == Operation::SignDigest {
            digest = mech.hash().map(|h| h.digest(msg)).unwrap_or_default();
            SignInput::Digest(&digest)
        } else {
            SignInput::Message(msg)
        };
        if !self.caps.supports(kt, mech, op) {
            return expect_err(
                self.p.sign(&key.id, mech, input).await,
                is_not_supported,
                "sign with an unclaimed mechanism",
            );
        }
        let sig = self
            .p
            .sign(&key.id, mech, input)
            .await
            .map_err(|e| format!("sign: {e:?}"))?;
        let public = self
            .p
            .public_key(&key.id)
            .await
            .map_err(|e| format!("public_key: {e:?}"))?;
        let indep = verify_signature(&public, mech, input, &sig)
            .map_err(|e| format!("independent verify: {e:?}"))?;
        ensure!(indep, "signature does not verify in independent software");
        // The same signature must verify for the message form too, whichever form was signed.
        if mech.hash().is_some() {
            ensure!(
                verify_signature(&public, mech, SignInput::Message(msg), &sig).unwrap_or(false),
                "signature over the digest does not verify over the message"
            );
        }
        let mut tampered = sig.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        ensure!(
            !verify_signature(&public, mech, input, &tampered).unwrap_or(true),
            "independent software accepts a tampered signature"
        );
        if self.caps.supports(kt, mech, Operation::Verify) {
            let ok = self
                .p
                .verify(&key.id, mech, input, &sig)
                .await
                .map_err(|e| format!("provider verify: {e:?}"))?;
            ensure!(ok, "provider rejects its own signature");
            let bad = self
                .p
                .verify(&key.id, mech, input, &tampered)
                .await
                .map_err(|e| format!("provider verify of tampered signature: {e:?}"))?;
            ensure!(
                !bad,
                "provider accepts a tampered signature (want Ok(false))"
            );
            let other = SignInput::Message(b"a different message");
            let bad = self
                .p
                .verify(&key.id, mech, other, &sig)
                .await
                .map_err(|e| format!("provider verify of other message: {e:?}"))?;
            ensure!(
                !bad,
                "provider accepts a signature over a different message"
            );
            // Wrong key: a second key of the same type must not accept it.
            let other_key = self.key(kt, Purpose::OtherSign).await?;
            let bad = self
                .p
                .verify(&other_key.id, mech, input, &sig)
                .await
                .map_err(|e| format!("provider verify with wrong key: {e:?}"))?;
            ensure!(!bad, "a different key accepts the signature");
        } else {
            expect_err(
                self.p.verify(&key.id, mech, input, &sig).await,
                is_not_supported,
                "verify with an unclaimed mechanism",
            )?;
        }
        Ok(())
    }

    async fn encrypt_decrypt(&self) {
        let mut any = false;
        for &kt in KeyType::ALL {
            if !self.caps.can_generate(kt) {
                continue;
            }
            for mech in Mechanism::catalog().into_iter().filter(|m| m.fits(kt)) {
                if !mech.operations().contains(&Operation::Encrypt) {
                    continue;
                }
                any = true;
                let out = match mech {
                    Mechanism::AesGcm => self.aes_gcm(kt).await,
                    Mechanism::ManagedAead => self.managed_aead(kt).await,
                    _ => self.rsa_oaep(kt, &mech).await,
                };
                self.record(&format!("encrypt_decrypt {kt} {mech}"), out.into())
                    .await;
            }
        }
        if !any {
            self.record(
                "encrypt_decrypt",
                Case::Skip("provider generates no key that encrypts".into()),
            )
            .await;
        }
    }

    async fn aes_gcm(&self, kt: KeyType) -> Outcome {
        let mech = Mechanism::AesGcm;
        let key = self.key(kt, Purpose::Encrypt).await?;
        let pt = b"attack at dawn, or at 09:00 UTC";
        if !self.caps.supports(kt, &mech, Operation::Encrypt) {
            return expect_err(
                self.p
                    .encrypt(&key.id, &mech, &EncryptRequest::new(pt))
                    .await,
                is_not_supported,
                "AES-GCM encrypt not claimed",
            );
        }
        let iv = [7u8; 12];
        let aad = b"header";
        let ct = self
            .p
            .encrypt(
                &key.id,
                &mech,
                &EncryptRequest::new(pt).with_iv(&iv).with_aad(aad),
            )
            .await
            .map_err(|e| format!("encrypt: {e:?}"))?;
        ensure!(
            ct.data.len() == pt.len() + 16,
            "ciphertext is not plaintext + 16-byte tag"
        );
        ensure!(
            ct.iv.as_deref() == Some(&iv[..]),
            "returned IV differs from the one given"
        );
        let back = self
            .p
            .decrypt(
                &key.id,
                &mech,
                &DecryptRequest::new(&ct.data).with_iv(&iv).with_aad(aad),
            )
            .await
            .map_err(|e| format!("decrypt: {e:?}"))?;
        ensure!(back.as_slice() == pt, "decrypt gives different plaintext");

        // Provider-chosen IVs: present, 12 bytes, fresh each time.
        let a = self
            .p
            .encrypt(&key.id, &mech, &EncryptRequest::new(pt))
            .await
            .map_err(|e| format!("encrypt with provider IV: {e:?}"))?;
        let b = self
            .p
            .encrypt(&key.id, &mech, &EncryptRequest::new(pt))
            .await
            .map_err(|e| format!("encrypt with provider IV: {e:?}"))?;
        let (Some(iva), Some(ivb)) = (&a.iv, &b.iv) else {
            return Err("provider-chosen IV not returned".into());
        };
        ensure!(
            iva.len() == 12 && iva != ivb,
            "provider IVs are not fresh 12-byte values"
        );
        let back = self
            .p
            .decrypt(&key.id, &mech, &DecryptRequest::new(&a.data).with_iv(iva))
            .await
            .map_err(|e| format!("decrypt with provider IV: {e:?}"))?;
        ensure!(back.as_slice() == pt, "round trip with provider IV differs");

        let bad_iv = [8u8; 12];
        expect_err(
            self.p
                .decrypt(
                    &key.id,
                    &mech,
                    &DecryptRequest::new(&ct.data).with_iv(&bad_iv).with_aad(aad),
                )
                .await,
            is_integrity,
            "decrypt with the wrong IV",
        )?;
        expect_err(
            self.p
                .decrypt(
                    &key.id,
                    &mech,
                    &DecryptRequest::new(&ct.data)
                        .with_iv(&iv)
                        .with_aad(b"other"),
                )
                .await,
            is_integrity,
            "decrypt with the wrong AAD",
        )?;
        let mut tampered = ct.data.clone();
        tampered[0] ^= 1;
        expect_err(
            self.p
                .decrypt(
                    &key.id,
                    &mech,
                    &DecryptRequest::new(&tampered).with_iv(&iv).with_aad(aad),
                )
                .await,
            is_integrity,
            "decrypt of tampered ciphertext",
        )?;
        expect_err(
            self.p
                .encrypt(&key.id, &mech, &EncryptRequest::new(pt).with_iv(&[1, 2, 3]))
                .await,
            |e| {
                matches!(
                    e,
                    HsmError::InvalidInput { .. } | HsmError::NotSupported { .. }
                )
            },
            "encrypt with a 3-byte IV",
        )?;
        // Another AES key must not decrypt it.
        let other = self.key(kt, Purpose::OtherEncrypt).await?;
        expect_err(
            self.p
                .decrypt(
                    &other.id,
                    &mech,
                    &DecryptRequest::new(&ct.data).with_iv(&iv).with_aad(aad),
                )
                .await,
            is_integrity,
            "decrypt with the wrong key",
        )?;
        Ok(())
    }

    /// A managed service's own AEAD: round trip with AAD, no IV given or returned, and wrong
    /// AAD, tampering or another key rejected as integrity failures.
    async fn managed_aead(&self, kt: KeyType) -> Outcome {
        let mech = Mechanism::ManagedAead;
        let key = self.key(kt, Purpose::Encrypt).await?;
        let pt = b"attack at dawn, or at 09:00 UTC";
        if !self.caps.supports(kt, &mech, Operation::Encrypt) {
            return expect_err(
                self.p
                    .encrypt(&key.id, &mech, &EncryptRequest::new(pt))
                    .await,
                is_not_supported,
                "managed AEAD encrypt not claimed",
            );
        }
        let aad = b"header";
        let ct = self
            .p
            .encrypt(&key.id, &mech, &EncryptRequest::new(pt).with_aad(aad))
            .await
            .map_err(|e| format!("encrypt: {e:?}"))?;
        ensure!(ct.iv.is_none(), "an IV returned beside the service's blob");
        ensure!(
            !ct.data.windows(pt.len()).any(|w| w == pt),
            "the plaintext appears in the ciphertext"
        );
        let back = self
            .p
            .decrypt(&key.id, &mech, &DecryptRequest::new(&ct.data).with_aad(aad))
            .await
            .map_err(|e| format!("decrypt: {e:?}"))?;
        ensure!(back.as_slice() == pt, "decrypt gives different plaintext");
        expect_err(
            self.p
                .decrypt(
                    &key.id,
                    &mech,
                    &DecryptRequest::new(&ct.data).with_aad(b"other"),
                )
                .await,
            is_integrity,
            "decrypt with the wrong AAD",
        )?;
        let mut tampered = ct.data.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        expect_err(
            self.p
                .decrypt(
                    &key.id,
                    &mech,
                    &DecryptRequest::new(&tampered).with_aad(aad),
                )
                .await,
            is_integrity,
            "decrypt of tampered ciphertext",
        )?;
        expect_err(
            self.p
                .encrypt(&key.id, &mech, &EncryptRequest::new(pt).with_iv(&[0u8; 12]))
                .await,
            |e| matches!(e, HsmError::InvalidInput { .. }),
            "encrypt with a caller's IV",
        )?;
        Ok(())
    }

    async fn rsa_oaep(&self, kt: KeyType, mech: &Mechanism) -> Outcome {
        let Mechanism::RsaOaep { hash, mgf1 } = *mech else {
            return Err(format!("{mech} is not RSA-OAEP"));
        };
        let key = self.key(kt, Purpose::Encrypt).await?;
        let pt = b"a short secret";
        if !self.caps.supports(kt, mech, Operation::Decrypt) {
            return expect_err(
                self.p
                    .decrypt(&key.id, mech, &DecryptRequest::new(&[0u8; 8]))
                    .await,
                is_not_supported,
                "RSA-OAEP decrypt not claimed",
            );
        }
        let public = self
            .p
            .public_key(&key.id)
            .await
            .map_err(|e| format!("public_key: {e:?}"))?;
        // Independent encryption, provider decryption.
        if !self.caps.oaep_labels {
            let ct = rsa_oaep_encrypt(&public, hash, mgf1, Some(b"label"), pt)
                .map_err(|e| format!("software OAEP encrypt: {e:?}"))?;
            expect_err(
                self.p
                    .decrypt(
                        &key.id,
                        mech,
                        &DecryptRequest::new(&ct).with_label(b"label"),
                    )
                    .await,
                is_not_supported,
                "RSA-OAEP with a label on a provider that says it takes none",
            )?;
        }
        let labels: &[Option<&[u8]>] = if self.caps.oaep_labels {
            &[None, Some(b"context-label")]
        } else {
            &[None]
        };
        for &label in labels {
            let ct = rsa_oaep_encrypt(&public, hash, mgf1, label, pt)
                .map_err(|e| format!("software OAEP encrypt: {e:?}"))?;
            let mut req = DecryptRequest::new(&ct);
            req.label = label;
            let back = self.p.decrypt(&key.id, mech, &req).await.map_err(|e| {
                format!("decrypt of independent ciphertext (label {label:?}): {e:?}")
            })?;
            ensure!(back.as_slice() == pt, "decrypt gives a different plaintext");
        }
        if self.caps.supports(kt, mech, Operation::Encrypt) {
            let ct = self
                .p
                .encrypt(&key.id, mech, &EncryptRequest::new(pt))
                .await
                .map_err(|e| format!("encrypt: {e:?}"))?;
            let back = self
                .p
                .decrypt(&key.id, mech, &DecryptRequest::new(&ct.data))
                .await
                .map_err(|e| format!("decrypt: {e:?}"))?;
            ensure!(back.as_slice() == pt, "round trip differs");
            let mut tampered = ct.data.clone();
            tampered[10] ^= 1;
            expect_err(
                self.p
                    .decrypt(&key.id, mech, &DecryptRequest::new(&tampered))
                    .await,
                |e| matches!(e, HsmError::IntegrityCheckFailed { .. }),
                "decrypt of tampered RSA-OAEP ciphertext",
            )?;
        }
        Ok(())
    }

    async fn wrap_unwrap(&self) {
        let mut any = false;
        for &kt in KeyType::ALL {
            if !self.caps.can_generate(kt) {
                continue;
            }
            for mech in Mechanism::catalog().into_iter().filter(|m| m.fits(kt)) {
                if !mech.operations().contains(&Operation::Wrap) {
                    continue;
                }
                if !self.caps.supports(kt, &mech, Operation::Wrap) {
                    let out = self.wrap_unsupported(kt, &mech).await;
                    self.record(&format!("wrap {kt} {mech} (unclaimed)"), out.into())
                        .await;
                    continue;
                }
                for &target in self.wrap_targets(&mech) {
                    if !self.caps.can_generate(target)
                        || !self.caps.unwrap_key_types.contains(&target)
                    {
                        continue;
                    }
                    any = true;
                    let out = self.wrap_one(kt, &mech, target).await;
                    self.record(&format!("wrap_unwrap {kt} {mech} of {target}"), out.into())
                        .await;
                }
            }
        }
        if !any {
            self.record(
                "wrap_unwrap",
                Case::Skip("provider claims no wrap mechanism with an unwrappable key type".into()),
            )
            .await;
        }
    }

    fn wrap_targets(&self, mech: &Mechanism) -> &'static [KeyType] {
        const SECRET: &[KeyType] = &[KeyType::Aes128, KeyType::Aes256];
        const ALL: &[KeyType] = &[
            KeyType::Aes256,
            KeyType::EcP256,
            KeyType::EcP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ];
        match mech {
            Mechanism::AesKeyWrapPad | Mechanism::RsaAesKeyWrap { .. } => ALL,
            _ => SECRET,
        }
    }

    async fn wrap_unsupported(&self, kt: KeyType, mech: &Mechanism) -> Outcome {
        // A provider that wraps with nothing may not make wrapping keys at all.
        let wraps = self
            .caps
            .mechanisms
            .iter()
            .any(|m| m.operations.contains(&Operation::Wrap));
        let purpose = if wraps {
            Purpose::Wrap
        } else {
            Purpose::Encrypt
        };
        let wrapping = self.key(kt, purpose).await?;
        let Some(&target) = KeyType::ALL
            .iter()
            .find(|t| !t.is_asymmetric() && self.caps.can_generate(**t))
        else {
            return Ok(());
        };
        let purpose = if self.caps.extractable_keys {
            Purpose::Extractable
        } else {
            Purpose::Encrypt
        };
        let target = self.key(target, purpose).await?;
        expect_err(
            self.p.wrap_key(&wrapping.id, &target.id, mech).await,
            is_not_supported,
            "wrap with an unclaimed mechanism",
        )
    }

    async fn wrap_one(&self, kt: KeyType, mech: &Mechanism, target_type: KeyType) -> Outcome {
        let wrapping = self.key(kt, Purpose::Wrap).await?;
        let target = self.key(target_type, Purpose::Extractable).await?;
        let wrapped = self
            .p
            .wrap_key(&wrapping.id, &target.id, mech)
            .await
            .map_err(|e| format!("wrap: {e:?}"))?;
        let usage = Self::usage_for(target_type, Purpose::Extractable);
        let attrs = KeyAttributes::new(self.label("unwrapped"), target_type).with_usage(usage);
        let mut request = UnwrapKeyRequest::new(&wrapped, "", target_type).with_attributes(attrs);
        let original_public = if target_type.is_asymmetric() {
            let pk = self
                .p
                .public_key(&target.id)
                .await
                .map_err(|e| format!("public_key of the wrapped key: {e:?}"))?;
            request = request.with_public_key(pk.clone());
            Some(pk)
        } else {
            None
        };
        let unwrapped = self
            .p
            .unwrap_key(&wrapping.id, mech, &request)
            .await
            .map_err(|e| format!("unwrap: {e:?}"))?;
        self.created.lock().await.push(unwrapped.id.clone());
        ensure!(
            unwrapped.key_type == target_type,
            "unwrapped key has type {}",
            unwrapped.key_type
        );
        ensure!(
            !unwrapped.attributes.extractable,
            "unwrapped key asked non-extractable reports extractable"
        );

        if let Some(a) = original_public {
            // Same key material: same public key, and it still signs.
            let b = self
                .p
                .public_key(&unwrapped.id)
                .await
                .map_err(|e| format!("{e:?}"))?;
            ensure!(a == b, "unwrapped key has a different public key");
            let mech = self
                .caps
                .mechanisms
                .iter()
                .find(|m| m.key_type == target_type && m.operations.contains(&Operation::Sign))
                .map(|m| m.mechanism);
            if let Some(sm) = mech {
                let sig = self
                    .p
                    .sign(&unwrapped.id, &sm, SignInput::Message(b"after unwrap"))
                    .await
                    .map_err(|e| format!("sign with unwrapped key: {e:?}"))?;
                ensure!(
                    verify_signature(&a, &sm, SignInput::Message(b"after unwrap"), &sig)
                        .unwrap_or(false),
                    "unwrapped key's signature does not verify with the original public key"
                );
            }
        } else if self
            .caps
            .supports(target_type, &Mechanism::AesGcm, Operation::Encrypt)
        {
            let iv = [3u8; 12];
            let ct = self
                .p
                .encrypt(
                    &target.id,
                    &Mechanism::AesGcm,
                    &EncryptRequest::new(b"same key?").with_iv(&iv),
                )
                .await
                .map_err(|e| format!("encrypt with original: {e:?}"))?;
            let back = self
                .p
                .decrypt(
                    &unwrapped.id,
                    &Mechanism::AesGcm,
                    &DecryptRequest::new(&ct.data).with_iv(&iv),
                )
                .await
                .map_err(|e| format!("decrypt with unwrapped: {e:?}"))?;
            ensure!(back.as_slice() == b"same key?", "unwrapped AES key differs");
        }

        // Tampered wrapped bytes must not import.
        let mut tampered = wrapped.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x40;
        let r = self
            .p
            .unwrap_key(
                &wrapping.id,
                mech,
                &UnwrapKeyRequest::new(&tampered, self.label("tampered"), target_type),
            )
            .await;
        if let Ok(info) = &r {
            self.created.lock().await.push(info.id.clone());
        }
        expect_err(
            r,
            |e| {
                matches!(
                    e,
                    HsmError::IntegrityCheckFailed { .. } | HsmError::InvalidInput { .. }
                )
            },
            "unwrap of tampered bytes",
        )?;

        // A non-extractable key is never wrapped out.
        let purpose = if target_type.is_asymmetric() {
            Purpose::Sign
        } else {
            Purpose::Encrypt
        };
        let locked = self.key(target_type, purpose).await?;
        expect_err(
            self.p.wrap_key(&wrapping.id, &locked.id, mech).await,
            is_denied,
            "wrap of a non-extractable key",
        )?;
        Ok(())
    }

    async fn unknown_key(&self) -> Outcome {
        let missing = KeyId::with_label(format!("conf-{}-missing", self.run_id), "missing");
        expect_err(self.p.get_key(&missing).await, is_not_found, "get_key")?;
        expect_err(
            self.p.public_key(&missing).await,
            is_not_found,
            "public_key",
        )?;
        expect_err(
            self.p.delete_key(&missing).await,
            is_not_found,
            "delete_key",
        )?;
        if let Some(m) = self.first_sign_mechanism() {
            expect_err(
                self.p.sign(&missing, &m.1, SignInput::Message(b"x")).await,
                is_not_found,
                "sign",
            )?;
        }
        Ok(())
    }

    fn first_sign_mechanism(&self) -> Option<(KeyType, Mechanism)> {
        let prefer = [
            KeyType::EcP256,
            KeyType::Ed25519,
            KeyType::EcP384,
            KeyType::Rsa2048,
        ];
        prefer
            .iter()
            .chain(KeyType::ALL)
            .filter(|kt| self.caps.can_generate(**kt))
            .find_map(|kt| {
                self.caps
                    .mechanisms
                    .iter()
                    .find(|m| m.key_type == *kt && m.operations.contains(&Operation::Sign))
                    .map(|m| (*kt, m.mechanism))
            })
    }

    async fn usage_enforced(&self) -> Case {
        // A key made only to encrypt must not sign.
        let Some((kt, mech)) = self.first_sign_mechanism() else {
            return Case::Skip("provider signs with no key type".into());
        };
        let req = GenerateKeyRequest::new(self.label("no-sign"), kt).with_usage(KeyUsage {
            verify: true,
            ..KeyUsage::default()
        });
        let key = match self.p.generate_key(&req).await {
            Ok(k) => k,
            // A provider that cannot keep verify apart from sign (a KMS key usage is
            // SIGN_VERIFY) must refuse the key rather than grant more than was asked.
            Err(HsmError::InvalidInput { reason }) => {
                println!(
                    "conformance {} usage_is_enforced: verify-only refused: {reason}",
                    self.p.name()
                );
                return Ok(()).into();
            }
            Err(e) => return Err(format!("generate a verify-only key: {e:?}")).into(),
        };
        self.created.lock().await.push(key.id.clone());
        expect_err(
            self.p.sign(&key.id, &mech, SignInput::Message(b"x")).await,
            is_denied,
            "sign with a key whose usage lacks sign",
        )
        .into()
    }

    async fn session_keys(&self) -> Case {
        if !self.caps.session_keys {
            return Case::Skip("provider does not offer session (non-persistent) keys".into());
        }
        let Some((kt, mech)) = self.first_sign_mechanism() else {
            return Case::Skip("provider signs with no key type".into());
        };
        let req = GenerateKeyRequest::new(self.label("session"), kt).with_persistent(false);
        let key = match self.generate(req).await {
            Ok(k) => k,
            Err(e) => return Err(e).into(),
        };
        let out: Outcome = async {
            ensure!(!key.attributes.persistent, "session key reports persistent");
            self.p
                .sign(&key.id, &mech, SignInput::Message(b"session"))
                .await
                .map_err(|e| format!("sign with session key: {e:?}"))?;
            Ok(())
        }
        .await;
        out.into()
    }

    async fn concurrent_signing(&self) -> Case {
        let Some((kt, mech)) = self.first_sign_mechanism() else {
            return Case::Skip("provider signs with no key type".into());
        };
        let out: Outcome = async {
            let key = self.key(kt, Purpose::Sign).await?;
            let public = self
                .p
                .public_key(&key.id)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let mut set = tokio::task::JoinSet::new();
            for i in 0..self.opts.concurrency {
                let p = self.p.clone();
                let id = key.id.clone();
                set.spawn(async move {
                    let msg = format!("concurrent message {i}").into_bytes();
                    let sig = p.sign(&id, &mech, SignInput::Message(&msg)).await;
                    (msg, sig)
                });
            }
            let mut verified = 0;
            while let Some(joined) = set.join_next().await {
                let (msg, sig) = joined.map_err(|e| format!("task panicked: {e}"))?;
                let sig = sig.map_err(|e| format!("concurrent sign: {e:?}"))?;
                ensure!(
                    verify_signature(&public, &mech, SignInput::Message(&msg), &sig)
                        .unwrap_or(false),
                    "a concurrent signature does not verify"
                );
                verified += 1;
            }
            ensure!(
                verified == self.opts.concurrency,
                "only {verified} signatures came back"
            );
            Ok(())
        }
        .await;
        out.into()
    }

    async fn delete_then_use(&self) -> Case {
        let Some((kt, mech)) = self.first_sign_mechanism() else {
            return Case::Skip("provider signs with no key type".into());
        };
        let out: Outcome = async {
            let label = self.label("doomed");
            let key = self.generate(GenerateKeyRequest::new(&label, kt)).await?;
            self.p
                .delete_key(&key.id)
                .await
                .map_err(|e| format!("delete: {e:?}"))?;
            expect_err(
                self.p.sign(&key.id, &mech, SignInput::Message(b"x")).await,
                is_not_found,
                "sign after delete",
            )?;
            expect_err(
                self.p.get_key(&key.id).await,
                is_not_found,
                "get_key after delete",
            )?;
            expect_err(
                self.p.public_key(&key.id).await,
                is_not_found,
                "public_key after delete",
            )?;
            expect_err(
                self.p.delete_key(&key.id).await,
                is_not_found,
                "delete twice",
            )?;
            let found = self
                .p
                .find_keys(&KeyFilter::label(&label))
                .await
                .map_err(|e| format!("find_keys: {e:?}"))?;
            ensure!(found.is_empty(), "deleted key still listed");
            self.created.lock().await.retain(|k| *k != key.id);
            Ok(())
        }
        .await;
        out.into()
    }

    async fn cleanup(&self) -> Outcome {
        let keys = std::mem::take(&mut *self.created.lock().await);
        let mut failures = Vec::new();
        for k in &keys {
            match self.p.delete_key(k).await {
                Ok(()) | Err(HsmError::KeyNotFound { .. }) => {}
                Err(e) => failures.push(format!("{k}: {e:?}")),
            }
        }
        ensure!(
            failures.is_empty(),
            "could not delete: {}",
            failures.join("; ")
        );
        let left = self
            .p
            .find_keys(&KeyFilter::all())
            .await
            .map_err(|e| format!("find_keys: {e:?}"))?
            .into_iter()
            .filter(|k| {
                k.attributes
                    .label
                    .starts_with(&format!("conf-{}-", self.run_id))
            })
            .count();
        ensure!(left == 0, "{left} keys of this run are left behind");
        Ok(())
    }
}
