//! Key objects: templates for generation, attributes mapped both ways, lookup by `CKA_ID` with a
//! handle cache, listing and deletion.
//!
//! A key is named by its `CKA_ID` in hex (the [`KeyId::id`]); a key pair is the private and the
//! public object sharing that id and label. Handles are resolved once (one `C_FindObjects` and
//! one `C_GetAttributeValue` per object) and cached, so signing costs `C_SignInit` + `C_Sign`
//! only. A stale handle (`CKR_OBJECT_HANDLE_INVALID`) clears the cache and the call is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_core::{
    HsmError, KeyAttributes, KeyFamily, KeyFilter, KeyId, KeyInfo, KeyType, KeyUsage, PublicKey,
};

use crate::session::{CkContext as _, OpCtx, OpError};

/// A resolved key: its handles and what we know about it.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub info: KeyInfo,
    /// The private key (key pairs) or the secret key (AES).
    pub private: ObjectHandle,
    /// The public key object of a key pair, if the token holds one.
    pub public: Option<ObjectHandle>,
    /// The public key, for key pairs.
    pub public_key: Option<PublicKey>,
    /// How long this key's signatures take on the token.
    pub sign_time: SignTime,
}

/// How long a key's signatures take on the token, in nanoseconds (0 until the first): a moving
/// average in which each signature weighs 1/8, except those within a quarter of the average,
/// which leave it as it is. Accurate to a quarter, which is enough to tell a software token
/// (tens of microseconds) from a network HSM (milliseconds). It decides whether an async
/// signature may run on the caller's thread (see [`crate::session`]): one signature that stalls
/// (ten times the limit or more) sends the next ones to the worker threads.
#[derive(Debug, Default)]
pub(crate) struct SignTime(AtomicU64);

impl SignTime {
    pub(crate) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.0.load(Ordering::Relaxed);
        // Most signatures take about the average, and leaving it as it is then keeps this
        // cache line unwritten: threads signing with the key on other CPUs do not fight over
        // it. (Two threads storing at once lose one sample; this is an estimate.)
        if old == 0 {
            self.0.store(ns, Ordering::Relaxed);
        } else if ns.abs_diff(old) > old / 4 {
            self.0.store(old - old / 8 + ns / 8, Ordering::Relaxed);
        }
    }

    /// Whether signatures have been measured, and take less than `limit`.
    pub(crate) fn under(&self, limit: Duration) -> bool {
        let ns = self.0.load(Ordering::Relaxed);
        ns != 0 && u128::from(ns) < limit.as_nanos()
    }
}

/// Cached handles, by hex `CKA_ID`.
#[derive(Default)]
pub(crate) struct KeyCache(RwLock<HashMap<String, Arc<KeyEntry>>>);

impl KeyCache {
    pub(crate) fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn put(&self, entry: Arc<KeyEntry>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(entry.info.id.id.clone(), entry);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    pub(crate) fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
pub(crate) const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
pub(crate) const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
// PKCS#11 3.0 also names the curve by the printable string "edwards25519".
const PRINTABLE_ED25519: &[u8] = b"\x13\x0cedwards25519";

/// `CKA_EC_PARAMS` for an EC or EdDSA key type.
pub(crate) fn ec_params(kt: KeyType) -> Option<&'static [u8]> {
    Some(match kt {
        KeyType::EcP256 => OID_P256,
        KeyType::EcP384 => OID_P384,
        KeyType::EcP521 => OID_P521,
        KeyType::Ed25519 => OID_ED25519,
        _ => return None,
    })
}

fn key_type_from(
    class: ObjectClass,
    ck: CkKeyType,
    size: Option<u64>,
    params: Option<&[u8]>,
) -> Option<KeyType> {
    if class == ObjectClass::SECRET_KEY {
        return match (ck, size?) {
            (CkKeyType::AES, 16) => Some(KeyType::Aes128),
            (CkKeyType::AES, 24) => Some(KeyType::Aes192),
            (CkKeyType::AES, 32) => Some(KeyType::Aes256),
            _ => None,
        };
    }
    if ck == CkKeyType::RSA {
        return match size? {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        };
    }
    let params = params?;
    if ck == CkKeyType::EC {
        return [KeyType::EcP256, KeyType::EcP384, KeyType::EcP521]
            .into_iter()
            .find(|kt| ec_params(*kt) == Some(params));
    }
    if ck == CkKeyType::EC_EDWARDS && (params == OID_ED25519 || params == PRINTABLE_ED25519) {
        return Some(KeyType::Ed25519);
    }
    None
}

/// The AES key length hsm-rs stored in the last byte of a 16-byte `CKA_ID` when it unwrapped the
/// key on a token that records no `CKA_VALUE_LEN` for unwrapped keys (SoftHSM 2.6).
fn aes_len_from_id(id: &[u8]) -> Option<u64> {
    match id {
        [.., n @ (16 | 24 | 32)] if id.len() == 16 => Some(u64::from(*n)),
        _ => None,
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point per the standard; some tokens return
/// the bare point. Accept both.
pub(crate) fn ec_point_bytes(value: &[u8], point_len: usize) -> Vec<u8> {
    if value.len() == point_len {
        return value.to_vec();
    }
    use der::Decode as _;
    der::asn1::OctetString::from_der(value)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_else(|_| value.to_vec())
}

fn point_len(kt: KeyType) -> usize {
    match kt {
        KeyType::Ed25519 => 32,
        other => 1 + 2 * other.ec_scalar_len().unwrap_or(0),
    }
}

/// The public key from a public key object (or, for RSA, a private one: the modulus and
/// exponent are not sensitive).
pub(crate) fn read_public_key(
    session: &Session,
    kt: KeyType,
    handle: ObjectHandle,
) -> Result<PublicKey, OpError> {
    match kt.family() {
        KeyFamily::Rsa => {
            let attrs = session
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .step("reading the RSA public key")?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(HsmError::invalid("the RSA key object has no modulus").into());
            };
            Ok(PublicKey::from_rsa_components(&n, &e)?)
        }
        _ => {
            let attrs = session
                .get_attributes(handle, &[AttributeType::EcPoint])
                .step("reading the EC public point")?;
            let Some(Attribute::EcPoint(v)) = attrs.into_iter().next() else {
                return Err(HsmError::invalid("the public key object has no CKA_EC_POINT").into());
            };
            let point = ec_point_bytes(&v, point_len(kt));
            Ok(if kt == KeyType::Ed25519 {
                PublicKey::from_ed25519(&point)?
            } else {
                PublicKey::from_ec_point(kt, &point)?
            })
        }
    }
}

const INFO_ATTRS: &[AttributeType] = &[
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::Token,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::Sign,
    AttributeType::Verify,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::Wrap,
    AttributeType::Unwrap,
    AttributeType::Derive,
    AttributeType::ValueLen,
    AttributeType::ModulusBits,
    AttributeType::Modulus,
    AttributeType::EcParams,
];

/// What one object says about itself.
struct ObjectFacts {
    class: ObjectClass,
    key_type: Option<KeyType>,
    label: String,
    id: Vec<u8>,
    token: bool,
    sensitive: bool,
    extractable: bool,
    usage: KeyUsage,
}

fn read_facts(session: &Session, handle: ObjectHandle) -> Result<ObjectFacts, OpError> {
    // Attributes an object does not have are simply absent from the answer.
    let attrs = session
        .get_attributes(handle, INFO_ATTRS)
        .step("reading key attributes")?;
    let mut class = ObjectClass::DATA;
    let mut ck = None;
    let mut f = ObjectFacts {
        class,
        key_type: None,
        label: String::new(),
        id: Vec::new(),
        token: true,
        sensitive: true,
        extractable: false,
        usage: KeyUsage::default(),
    };
    let (mut size, mut params) = (None, None);
    for a in attrs {
        match a {
            Attribute::Class(c) => class = c,
            Attribute::KeyType(k) => ck = Some(k),
            Attribute::Label(l) => f.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::Id(i) => f.id = i,
            Attribute::Token(b) => f.token = b,
            Attribute::Sensitive(b) => f.sensitive = b,
            Attribute::Extractable(b) => f.extractable = b,
            Attribute::Sign(b) => f.usage.sign = b,
            Attribute::Verify(b) => f.usage.verify = b,
            Attribute::Encrypt(b) => f.usage.encrypt = b,
            Attribute::Decrypt(b) => f.usage.decrypt = b,
            Attribute::Wrap(b) => f.usage.wrap = b,
            Attribute::Unwrap(b) => f.usage.unwrap = b,
            Attribute::Derive(b) => f.usage.derive = b,
            Attribute::ValueLen(n) => size = Some(u64::from(n)),
            Attribute::ModulusBits(n) if size.is_none() => size = Some(u64::from(n)),
            Attribute::Modulus(m) if size.is_none() => size = Some(m.len() as u64 * 8),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    f.class = class;
    f.key_type = ck.and_then(|ck| key_type_from(class, ck, size, params.as_deref()));
    if class == ObjectClass::SECRET_KEY && size == Some(0) {
        f.key_type = aes_len_from_id(&f.id)
            .and_then(|n| key_type_from(class, CkKeyType::AES, Some(n), None));
    }
    Ok(f)
}

/// Finds the objects with `CKA_ID = id` and builds the entry. One `C_FindObjects` round and one
/// `C_GetAttributeValue` per object: done once per key, then cached.
fn load_entry(session: &Session, id: &KeyId) -> Result<Option<KeyEntry>, OpError> {
    let Ok(raw_id) = hex::decode(&id.id) else {
        return Ok(None);
    };
    let handles = session
        .find_objects(&[Attribute::Id(raw_id)])
        .step("finding the key objects")?;
    let (mut main, mut public) = (None, None);
    for h in handles {
        let facts = read_facts(session, h)?;
        if facts.class == ObjectClass::PUBLIC_KEY {
            public = Some((h, facts));
        } else if facts.class == ObjectClass::PRIVATE_KEY || facts.class == ObjectClass::SECRET_KEY
        {
            main = Some((h, facts));
        }
    }
    let Some((handle, facts)) = main else {
        return Ok(None);
    };
    let Some(kt) = facts.key_type else {
        return Err(HsmError::NotSupported {
            operation: format!("key {id}: its type or size is not one hsm-rs supports"),
            provider: crate::error::PROVIDER.into(),
        }
        .into());
    };
    let mut usage = facts.usage;
    if let Some((_, pf)) = &public {
        usage.verify |= pf.usage.verify;
        usage.encrypt |= pf.usage.encrypt;
        usage.wrap |= pf.usage.wrap;
    }
    if matches!(kt.family(), KeyFamily::Ec | KeyFamily::EdDsa) {
        // Keys made by other tools may carry flags their type cannot use; report what works.
        usage = KeyUsage {
            sign: usage.sign,
            verify: usage.verify,
            ..KeyUsage::default()
        };
    }
    let public_key = match (&public, kt.family()) {
        (_, KeyFamily::Aes) => None,
        (Some((ph, _)), _) => Some(read_public_key(session, kt, *ph)?),
        (None, KeyFamily::Rsa) => Some(read_public_key(session, kt, handle)?),
        (None, _) => None,
    };
    Ok(Some(KeyEntry {
        info: KeyInfo {
            id: KeyId::with_label(hex::encode(&facts.id), &facts.label),
            key_type: kt,
            attributes: KeyAttributes {
                label: facts.label,
                usage,
                extractable: facts.extractable,
                sensitive: facts.sensitive,
                persistent: facts.token,
            },
        },
        private: handle,
        public: public.map(|(h, _)| h),
        public_key,
        sign_time: SignTime::default(),
    }))
}

impl OpCtx<'_> {
    /// The key with this id, read from the token now (another application may have deleted or
    /// replaced it), refreshing the cache. For `get_key` and `public_key`, which promise
    /// `KeyNotFound` for a key that is gone; the signing path uses the cache.
    pub(crate) fn key_fresh(&self, id: &KeyId) -> Result<Arc<KeyEntry>, OpError> {
        self.token.handles.remove(&id.id);
        self.key(id)
    }

    /// The key with this id, from the cache or the token.
    pub(crate) fn key(&self, id: &KeyId) -> Result<Arc<KeyEntry>, OpError> {
        if let Some(e) = self.token.handles.get(&id.id) {
            return Ok(e);
        }
        let entry = load_entry(self.session, id)?.ok_or_else(|| HsmError::key_not_found(id))?;
        let entry = Arc::new(entry);
        self.token.handles.put(entry.clone());
        Ok(entry)
    }
}

/// Every private and secret key matching `filter`.
pub(crate) fn find(ctx: &OpCtx<'_>, filter: &KeyFilter) -> Result<Vec<KeyInfo>, OpError> {
    // Without the login a token lists only its public objects, so a list made after someone
    // logged out would silently miss every private key: report the lost login instead, and
    // the caller restores it and lists again.
    if ctx.module.token_info.login_required() && !crate::session::logged_in(ctx.session) {
        return Err(OpError::Ck(
            cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserNotLoggedIn,
                cryptoki::context::Function::FindObjectsInit,
            ),
            "listing keys while logged out",
        ));
    }
    let mut out = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
        let mut template = vec![Attribute::Class(class)];
        if let Some(l) = &filter.label {
            template.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        let handles = ctx.session.find_objects(&template).step("listing keys")?;
        for h in handles {
            let facts = read_facts(ctx.session, h)?;
            if facts.id.is_empty() {
                continue;
            }
            let id = KeyId::with_label(hex::encode(&facts.id), &facts.label);
            // Keys of types hsm-rs does not model (DES, DSA...) are left out of the list.
            if let Ok(entry) = ctx.key(&id)
                && filter.matches(&entry.info)
            {
                out.push(entry.info.clone());
            }
        }
    }
    out.sort_by(|a, b| a.attributes.label.cmp(&b.attributes.label));
    Ok(out)
}

/// The attributes shared by both objects of a pair, or by a secret key.
fn common(attrs: &KeyAttributes, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(attrs.persistent),
        Attribute::Id(id.to_vec()),
        Attribute::Label(attrs.label.as_bytes().to_vec()),
    ]
}

/// The private (or secret) half's policy attributes.
fn private_policy(attrs: &KeyAttributes) -> Vec<Attribute> {
    vec![
        Attribute::Private(true),
        // hsm-rs never asks a token to reveal a key in plaintext.
        Attribute::Sensitive(true),
        Attribute::Extractable(attrs.extractable),
    ]
}

/// Templates for a new key of `kt`: (public, private-or-secret).
pub(crate) fn templates(
    kt: KeyType,
    attrs: &KeyAttributes,
    id: &[u8],
) -> (Vec<Attribute>, Vec<Attribute>) {
    let u = attrs.usage;
    let mut private = common(attrs, id);
    private.extend(private_policy(attrs));
    let mut public = common(attrs, id);
    public.push(Attribute::Private(false));
    match kt.family() {
        KeyFamily::Rsa => {
            public.extend([
                Attribute::ModulusBits((kt.bits() as u64).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Verify(u.verify),
                Attribute::Encrypt(u.encrypt),
                Attribute::Wrap(u.wrap),
            ]);
            private.extend([
                Attribute::Sign(u.sign),
                Attribute::Decrypt(u.decrypt),
                Attribute::Unwrap(u.unwrap),
            ]);
        }
        KeyFamily::Ec | KeyFamily::EdDsa => {
            // Every usage flag is said explicitly: tokens default the unsaid ones (SoftHSM
            // makes an EC public key "encrypt" and "wrap" unless told otherwise).
            public.extend([
                Attribute::EcParams(ec_params(kt).unwrap_or_default().to_vec()),
                Attribute::Verify(u.verify),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ]);
            private.extend([
                Attribute::Sign(u.sign),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ]);
        }
        _ => {
            private.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::AES),
                Attribute::ValueLen((kt.bits() as u64 / 8).into()),
                Attribute::Encrypt(u.encrypt),
                Attribute::Decrypt(u.decrypt),
                Attribute::Wrap(u.wrap),
                Attribute::Unwrap(u.unwrap),
                Attribute::Derive(false),
            ]);
        }
    }
    (public, private)
}

/// Generates a key of `kt` on the token.
pub(crate) fn generate(
    ctx: &OpCtx<'_>,
    kt: KeyType,
    attrs: &KeyAttributes,
) -> Result<KeyInfo, OpError> {
    let taken = ctx
        .session
        .find_objects(&[Attribute::Label(attrs.label.as_bytes().to_vec())])
        .step("checking the label is free")?;
    if !taken.is_empty() {
        return Err(HsmError::AlreadyExists {
            what: format!("a key labelled {:?} on this token", attrs.label),
        }
        .into());
    }
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let (public, private) = templates(kt, attrs, &id);
    // Session objects die with the session that made them: make them on the anchor session,
    // which lives as long as the provider.
    let anchor;
    let session = if attrs.persistent {
        ctx.session
    } else {
        anchor = ctx.anchor();
        &*anchor
    };
    match kt.family() {
        KeyFamily::Rsa => session
            .generate_key_pair(&CkMechanism::RsaPkcsKeyPairGen, &public, &private)
            .step("generating an RSA key pair")
            .map(drop)?,
        KeyFamily::Ec => session
            .generate_key_pair(&CkMechanism::EccKeyPairGen, &public, &private)
            .step("generating an EC key pair")
            .map(drop)?,
        KeyFamily::EdDsa => session
            .generate_key_pair(&CkMechanism::EccEdwardsKeyPairGen, &public, &private)
            .step("generating an Ed25519 key pair")
            .map(drop)?,
        _ => session
            .generate_key(&CkMechanism::AesKeyGen, &private)
            .step("generating an AES key")
            .map(drop)?,
    }
    let key = KeyId::with_label(hex::encode(id), &attrs.label);
    let entry = load_entry(session, &key)?.ok_or_else(|| {
        HsmError::backend(
            crate::error::PROVIDER,
            "the new key cannot be found",
            std::io::Error::other("find after generate"),
        )
    })?;
    let info = entry.info.clone();
    ctx.token.handles.put(Arc::new(entry));
    Ok(info)
}

/// Destroys both objects of a key.
pub(crate) fn delete(ctx: &OpCtx<'_>, id: &KeyId) -> Result<(), OpError> {
    let entry = ctx.key(id)?;
    let session = if entry.info.attributes.persistent {
        None
    } else {
        Some(ctx.anchor())
    };
    let s = session.as_deref().unwrap_or(ctx.session);
    if let Some(p) = entry.public {
        s.destroy_object(p).step("destroying the public key")?;
    }
    s.destroy_object(entry.private).step("destroying the key")?;
    ctx.token.handles.remove(&id.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_time_follows_slow_signatures_and_recovers() {
        let t = SignTime::default();
        let limit = Duration::from_micros(100);
        assert!(!t.under(limit), "unmeasured counts as slow");
        t.record(Duration::from_micros(40));
        assert!(t.under(limit));
        // One stall sends the next signatures to the workers...
        t.record(Duration::from_secs(1));
        assert!(!t.under(limit));
        // ...whose fast signatures bring the average back down.
        let mut fast = 0;
        while !t.under(limit) {
            t.record(Duration::from_micros(40));
            fast += 1;
            assert!(fast < 100, "the average never came down");
        }
        assert!(
            fast > 10,
            "one fast signature should not undo a stall ({fast})"
        );
        // Jitter around the average leaves it alone.
        let before = t.0.load(Ordering::Relaxed);
        t.record(Duration::from_nanos(before + before / 5));
        assert_eq!(t.0.load(Ordering::Relaxed), before);
    }
}
