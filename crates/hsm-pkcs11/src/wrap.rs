//! Wrapping keys out of and into the token.
//!
//! - AES key wrap (RFC 3394): `CKM_AES_KEY_WRAP`.
//! - AES key wrap with padding (RFC 5649): whichever code the token lists, `CKM_AES_KEY_WRAP_PAD`
//!   (0x210A, SoftHSM) or `CKM_AES_KEY_WRAP_KWP` (0x210B, kryoptic), called raw (see `raw.rs`).
//! - RSA-OAEP of an AES key: `CKM_RSA_PKCS_OAEP` with the public key.
//! - RSA-AES key wrap: built on the token from the two above, as `CKM_RSA_AES_KEY_WRAP` defines it
//!   (an ephemeral AES key made on the token, wrapped with RSA-OAEP, followed by the target wrapped
//!   under it with RFC 5649). No key material passes through the host in the clear, and the
//!   bytes are the layout AWS KMS, Google Cloud KMS and Azure import.
//!
//! Private keys travel as PKCS#8, as `C_WrapKey` defines. An unwrapped private key gets a public
//! key object too: RSA from its modulus, EC and Ed25519 from the public key the caller supplies,
//! after the new private key proves it matches by signing a challenge.

use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_core::{
    HashAlg, HsmError, KeyAttributes, KeyFamily, KeyId, KeyInfo, KeyType, Mechanism, SignInput,
};

use crate::keys::{KeyEntry, ec_params, read_public_key};
use crate::params::oaep;
use crate::session::{CkContext as _, OpCtx, OpError};

/// A temporary object destroyed on drop (the ephemeral key of RSA-AES key wrap, or a new key
/// whose set-up failed half way).
struct Temp<'a> {
    session: &'a Session,
    handle: Option<ObjectHandle>,
}

impl Temp<'_> {
    fn keep(mut self) -> ObjectHandle {
        self.handle.take().expect("kept once")
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.session.destroy_object(h);
        }
    }
}

fn kwp_code(ctx: &OpCtx<'_>) -> Result<u64, OpError> {
    ctx.token_kwp().ok_or_else(|| {
        HsmError::not_supported(
            crate::error::PROVIDER,
            "AES key wrap with padding on this token",
        )
        .into()
    })
}

/// An ephemeral AES key for RSA-AES key wrap, as a session object: generated to wrap, or
/// unwrapped to unwrap (its length then comes from the wrapped bytes, so no `CKA_VALUE_LEN`).
fn ephemeral_aes(bits: u32, for_wrap: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        // Extractable only to be wrapped by RSA-OAEP when exporting.
        Attribute::Extractable(for_wrap),
        Attribute::Wrap(for_wrap),
        Attribute::Unwrap(!for_wrap),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ];
    if for_wrap {
        t.push(Attribute::ValueLen((u64::from(bits) / 8).into()));
    }
    t
}

pub(crate) fn wrap(
    ctx: &OpCtx<'_>,
    wrapping: &KeyEntry,
    target: &KeyEntry,
    mech: &Mechanism,
) -> Result<Vec<u8>, OpError> {
    if !target.info.attributes.extractable {
        return Err(HsmError::denied(format!(
            "key {} is not extractable and cannot be wrapped out",
            target.info.id
        ))
        .into());
    }
    if target.info.key_type == KeyType::Ed25519 && !ctx.module.profile.wrap_ed25519 {
        return Err(HsmError::not_supported(
            crate::error::PROVIDER,
            "wrapping Ed25519 keys on this token",
        )
        .into());
    }
    let s = ctx.session;
    match mech {
        Mechanism::AesKeyWrap => s
            .wrap_key(&CkMechanism::AesKeyWrap, wrapping.private, target.private)
            .step("AES key wrap"),
        Mechanism::AesKeyWrapPad => {
            let code = kwp_code(ctx)?;
            ctx.module
                .raw
                .wrap_key(
                    s.handle(),
                    code,
                    wrapping.private.handle(),
                    target.private.handle(),
                )
                .map_err(|rv| {
                    OpError::Ck(
                        rv.into_ck(cryptoki::context::Function::WrapKey),
                        "AES key wrap with padding",
                    )
                })
        }
        Mechanism::RsaOaep { .. } => {
            if target.info.key_type.is_asymmetric() {
                return Err(HsmError::invalid(
                    "RSA-OAEP wraps only AES keys; wrap private keys with rsa-aes-kw",
                )
                .into());
            }
            let public = wrapping
                .public
                .ok_or_else(|| HsmError::invalid("the wrapping key has no public key object"))?;
            let ck = oaep(mech, None).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            s.wrap_key(&ck, public, target.private)
                .step("RSA-OAEP key wrap")
        }
        Mechanism::RsaAesKeyWrap { aes_bits, .. } => {
            let code = kwp_code(ctx)?;
            let public = wrapping
                .public
                .ok_or_else(|| HsmError::invalid("the wrapping key has no public key object"))?;
            let eph = Temp {
                session: s,
                handle: Some(
                    s.generate_key(&CkMechanism::AesKeyGen, &ephemeral_aes(*aes_bits, true))
                        .step("generating the ephemeral AES key")?,
                ),
            };
            let eph_h = eph.handle.expect("set above");
            let ck = oaep(mech, None).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            let mut out = s
                .wrap_key(&ck, public, eph_h)
                .step("RSA-OAEP wrap of the ephemeral key")?;
            let tail = ctx
                .module
                .raw
                .wrap_key(s.handle(), code, eph_h.handle(), target.private.handle())
                .map_err(|rv| {
                    OpError::Ck(
                        rv.into_ck(cryptoki::context::Function::WrapKey),
                        "RFC 5649 wrap under the ephemeral key",
                    )
                })?;
            out.extend_from_slice(&tail);
            Ok(out)
        }
        other => Err(HsmError::invalid(format!("{other} does not wrap keys")).into()),
    }
}

/// Wraps `target` toward an RSA public key from outside the token (a cloud KMS's import
/// wrapping key): the public key becomes a session object for this one call, then is destroyed.
pub(crate) fn wrap_for(
    ctx: &OpCtx<'_>,
    public: &hsm_core::PublicKey,
    target: &KeyEntry,
    mech: &Mechanism,
) -> Result<Vec<u8>, OpError> {
    let kt = public.key_type();
    if kt.family() != KeyFamily::Rsa
        || !matches!(
            mech,
            Mechanism::RsaOaep { .. } | Mechanism::RsaAesKeyWrap { .. }
        )
    {
        return Err(HsmError::invalid(format!(
            "wrapping toward an outside public key takes an RSA key and RSA-OAEP or RSA-AES key \
             wrap, not {mech} with a {kt} key"
        ))
        .into());
    }
    let attrs = KeyAttributes::new("hsm-rs outside wrapping key", kt)
        .with_usage(hsm_core::KeyUsage::WRAP)
        .with_persistent(false);
    let s = ctx.session;
    let object = Temp {
        session: s,
        handle: Some(create_public(s, kt, &attrs, b"", public)?),
    };
    let wrapping = KeyEntry {
        info: KeyInfo {
            id: KeyId::new("outside public key"),
            key_type: kt,
            attributes: attrs,
        },
        private: object.handle.expect("set above"),
        public: object.handle,
        public_key: Some(public.clone()),
        sign_time: Default::default(),
    };
    wrap(ctx, &wrapping, target, mech)
}

/// The owned parts of an unwrap request.
pub(crate) struct OwnedUnwrap {
    pub wrapped: Vec<u8>,
    pub key_type: KeyType,
    pub attributes: KeyAttributes,
    pub public_key: Option<hsm_core::PublicKey>,
}

fn template_class(template: &[Attribute]) -> Attribute {
    template
        .iter()
        .find(|a| matches!(a, Attribute::Class(_)))
        .cloned()
        .unwrap_or(Attribute::Class(ObjectClass::SECRET_KEY))
}

fn unwrap_template(kt: KeyType, attrs: &KeyAttributes, id: &[u8]) -> Vec<Attribute> {
    let u = attrs.usage;
    let mut t = vec![
        Attribute::Token(attrs.persistent),
        Attribute::Id(id.to_vec()),
        Attribute::Label(attrs.label.as_bytes().to_vec()),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(attrs.extractable),
    ];
    match kt.family() {
        KeyFamily::Aes => t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::Encrypt(u.encrypt),
            Attribute::Decrypt(u.decrypt),
            Attribute::Wrap(u.wrap),
            Attribute::Unwrap(u.unwrap),
        ]),
        KeyFamily::Rsa => t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(CkKeyType::RSA),
            Attribute::Sign(u.sign),
            Attribute::Decrypt(u.decrypt),
            Attribute::Unwrap(u.unwrap),
        ]),
        KeyFamily::Ec => t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(CkKeyType::EC),
            Attribute::Sign(u.sign),
        ]),
        _ => t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(CkKeyType::EC_EDWARDS),
            Attribute::Sign(u.sign),
        ]),
    }
    t
}

pub(crate) fn unwrap(
    ctx: &OpCtx<'_>,
    unwrapping: &KeyEntry,
    mech: &Mechanism,
    req: &OwnedUnwrap,
) -> Result<KeyInfo, OpError> {
    let kt = req.key_type;
    let attrs = &req.attributes;
    attrs.check_for(kt)?;
    if kt.is_asymmetric() && kt.family() != KeyFamily::Rsa && !attrs.usage.sign {
        return Err(
            HsmError::invalid(format!("an unwrapped {kt} key must be allowed to sign")).into(),
        );
    }
    let anchor;
    let s: &Session = if attrs.persistent {
        ctx.session
    } else {
        anchor = ctx.anchor();
        &anchor
    };
    if !s
        .find_objects(&[Attribute::Label(attrs.label.as_bytes().to_vec())])
        .step("checking the label is free")?
        .is_empty()
    {
        return Err(HsmError::AlreadyExists {
            what: format!("a key labelled {:?} on this token", attrs.label),
        }
        .into());
    }
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    if kt.family() == KeyFamily::Aes && !ctx.module.profile.unwrap_sets_value_len {
        // The token will not record CKA_VALUE_LEN (and refuses it in the template), so the
        // length rides in the id's last byte; see `keys::aes_len_from_id`.
        id[15] = (kt.bits() / 8) as u8;
    }
    let mut template = unwrap_template(kt, attrs, &id);
    if kt.family() == KeyFamily::Aes && ctx.module.profile.unwrap_wants_value_len {
        template.push(Attribute::ValueLen((u64::from(kt.bits()) / 8).into()));
    }
    // The raw call returns a bare handle; the object is found again by its fresh CKA_ID.
    let raw_unwrap = |code: u64,
                      key: ObjectHandle,
                      bytes: &[u8],
                      template: &[Attribute]|
     -> Result<ObjectHandle, OpError> {
        ctx.module
            .raw
            .unwrap_key(s.handle(), code, key.handle(), bytes, template)
            .map_err(|rv| {
                ctx.bad_data(
                    rv.into_ck(cryptoki::context::Function::UnwrapKey),
                    "AES key unwrap with padding",
                )
            })?;
        let found = s
            .find_objects(&[Attribute::Id(id.to_vec()), template_class(template)])
            .step("finding the unwrapped key")?;
        found.into_iter().next().ok_or_else(|| {
            HsmError::backend(
                crate::error::PROVIDER,
                "the unwrapped key cannot be found",
                std::io::Error::other("find after unwrap"),
            )
            .into()
        })
    };
    let handle = match mech {
        Mechanism::AesKeyWrap => s
            .unwrap_key(
                &CkMechanism::AesKeyWrap,
                unwrapping.private,
                &req.wrapped,
                &template,
            )
            .map_err(|e| ctx.bad_data(e, "AES key unwrap"))?,
        Mechanism::AesKeyWrapPad => {
            raw_unwrap(kwp_code(ctx)?, unwrapping.private, &req.wrapped, &template)?
        }
        Mechanism::RsaOaep { .. } => {
            let ck = oaep(mech, None).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            s.unwrap_key(&ck, unwrapping.private, &req.wrapped, &template)
                .map_err(|e| ctx.bad_data(e, "RSA-OAEP key unwrap"))?
        }
        Mechanism::RsaAesKeyWrap { aes_bits, .. } => {
            let n = unwrapping.info.key_type.bits() as usize / 8;
            if req.wrapped.len() <= n {
                return Err(HsmError::invalid(format!(
                    "RSA-AES wrapped key of {} bytes is too short for a {}-bit RSA key",
                    req.wrapped.len(),
                    n * 8
                ))
                .into());
            }
            let (head, tail) = req.wrapped.split_at(n);
            let ck = oaep(mech, None).ok_or_else(|| HsmError::invalid("not OAEP"))?;
            let eph = Temp {
                session: s,
                handle: Some(
                    s.unwrap_key(
                        &ck,
                        unwrapping.private,
                        head,
                        &ephemeral_aes(*aes_bits, false),
                    )
                    .map_err(|e| ctx.bad_data(e, "RSA-OAEP unwrap of the ephemeral key"))?,
                ),
            };
            raw_unwrap(
                kwp_code(ctx)?,
                eph.handle.expect("set above"),
                tail,
                &template,
            )?
        }
        other => return Err(HsmError::invalid(format!("{other} does not unwrap keys")).into()),
    };
    let private = Temp {
        session: s,
        handle: Some(handle),
    };

    if kt.is_asymmetric() {
        let public = match kt.family() {
            KeyFamily::Rsa => read_public_key(s, kt, handle)?,
            _ => req.public_key.clone().ok_or_else(|| {
                HsmError::invalid(format!(
                    "a PKCS#11 token cannot derive the public key of an unwrapped {kt} private key: \
                     pass it in the request"
                ))
            })?,
        };
        if let Some(given) = &req.public_key
            && *given != public
        {
            return Err(HsmError::invalid(
                "the public key given does not belong to the unwrapped private key",
            )
            .into());
        }
        if kt.family() != KeyFamily::Rsa {
            prove_match(s, kt, handle, &public)?;
        }
        let _public_obj = create_public(s, kt, attrs, &id, &public)?;
    }
    private.keep();
    let key = KeyId::with_label(hex::encode(id), &attrs.label);
    ctx.token.handles.remove(&key.id);
    let entry = ctx.key(&key)?;
    Ok(entry.info.clone())
}

/// Signs a random challenge with the new private key and checks it with `public`, so a wrong
/// public key is never paired with it.
fn prove_match(
    s: &Session,
    kt: KeyType,
    private: ObjectHandle,
    public: &hsm_core::PublicKey,
) -> Result<(), OpError> {
    let mut challenge = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
    let (ck, mech, input) = if kt == KeyType::Ed25519 {
        (
            CkMechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            )),
            Mechanism::Ed25519,
            SignInput::Message(&challenge),
        )
    } else {
        (
            CkMechanism::Ecdsa,
            Mechanism::Ecdsa {
                hash: HashAlg::Sha256,
                format: hsm_core::EcdsaFormat::Fixed,
            },
            SignInput::Digest(&challenge),
        )
    };
    let sig = s
        .sign(&ck, private, &challenge)
        .step("signing the key-match challenge")?;
    if hsm_core::verify::verify_signature(public, &mech, input, &sig)? {
        Ok(())
    } else {
        Err(
            HsmError::invalid("the public key given does not belong to the unwrapped private key")
                .into(),
        )
    }
}

fn create_public(
    s: &Session,
    kt: KeyType,
    attrs: &KeyAttributes,
    id: &[u8],
    public: &hsm_core::PublicKey,
) -> Result<ObjectHandle, OpError> {
    let u = attrs.usage;
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(attrs.persistent),
        Attribute::Id(id.to_vec()),
        Attribute::Label(attrs.label.as_bytes().to_vec()),
        Attribute::Private(false),
        Attribute::Verify(u.verify || u.sign),
    ];
    match kt.family() {
        KeyFamily::Rsa => {
            let (n, e) = public
                .rsa_components()
                .ok_or_else(|| HsmError::invalid("the public key is not an RSA key"))?;
            t.extend([
                Attribute::KeyType(CkKeyType::RSA),
                Attribute::Modulus(n),
                Attribute::PublicExponent(e),
                Attribute::Encrypt(u.encrypt || u.decrypt),
                Attribute::Wrap(u.wrap || u.unwrap),
            ]);
        }
        _ => {
            use der::Encode as _;
            let point = der::asn1::OctetString::new(public.raw_public_key())
                .and_then(|o| o.to_der())
                .map_err(|e| HsmError::invalid(e.to_string()))?;
            t.extend([
                Attribute::KeyType(if kt == KeyType::Ed25519 {
                    CkKeyType::EC_EDWARDS
                } else {
                    CkKeyType::EC
                }),
                Attribute::EcParams(ec_params(kt).unwrap_or_default().to_vec()),
                Attribute::EcPoint(point),
            ]);
        }
    }
    s.create_object(&t).step("creating the public key object")
}
