//! Key files: the TSS2 PRIVATE KEY PEM format that tpm2-openssl, tpm2-tss-engine and
//! openssl_tpm2_engine read and write ("ASN.1 Specification for TPM 2.0 Key Files",
//! draft-bottomley-tpm2-keys), with one line of hsm-rs metadata before it.
//!
//! ```text
//! hsm-rs-tpm-key: {"id":"<32 hex>","label":"release","key_type":"ec-p256","usage":{...}}
//! -----BEGIN TSS2 PRIVATE KEY-----
//! MIH0BgZngQUKAQOgAwEB/wIEQAAAAQRYAFYAIwALAAQEcgAAABAAEAADABAAIDnG...
//! -----END TSS2 PRIVATE KEY-----
//! ```
//!
//! The PEM block is the standard `TPMKey` sequence: the loadable-key OID, `emptyAuth`, the
//! parent handle, and the marshalled `TPM2B_PUBLIC` and `TPM2B_PRIVATE`. The private part is
//! encrypted under the parent storage key, so the file is useless away from that TPM. The
//! metadata line is RFC 7468 "explanatory text", which PEM readers skip (OpenSSL does), so
//! `openssl pkeyutl -provider tpm2 -inkey <id>.pem` uses our files as they are; a file
//! without it (made by tpm2-openssl, say) is read too, its type and usage taken from the
//! public area.
//!
//! Sealed secrets (`seal.rs`) are files of the same format with the draft's sealed-data type
//! (OID 2.23.133.10.1.5) and their own metadata line.
//!
//! Only the fields of the first version of the format are written (no `policy`, `secret` or
//! `description`): Debian 12's tpm2-openssl 1.1 refuses a sequence with fields it does not know.

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode as _, Encode as _, Sequence, Tag, Tagged as _};
use hsm_core::{HsmError, KeyType, KeyUsage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};

use crate::error::to_hsm;

/// The extension of key files in the key directory.
pub(crate) const EXTENSION: &str = "pem";

/// The parent handle that means "the primary storage key created in the owner hierarchy with
/// the standard template" (the draft's convention, which tpm2-openssl follows).
pub(crate) const OWNER: u32 = 0x4000_0001;

const LOADABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.3");
const SEALED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.5");

/// What a file holds: the draft's "loadable key" or "sealed data" object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Loadable,
    Sealed,
}

impl Kind {
    fn oid(self) -> ObjectIdentifier {
        match self {
            Kind::Loadable => LOADABLE_KEY,
            Kind::Sealed => SEALED_DATA,
        }
    }
}
const PEM_LABEL: &str = "TSS2 PRIVATE KEY";
const META: &str = "hsm-rs-tpm-key:";

/// `TPMKey` as the first version of the format defines it.
#[derive(Sequence)]
struct TpmKey<'a> {
    key_type: ObjectIdentifier,
    /// A BOOLEAN, read leniently: OpenSSL (tpm2-openssl) writes TRUE as 0x01, which strict DER
    /// (0xFF) refuses.
    #[asn1(context_specific = "0", optional = "true")]
    empty_auth: Option<AnyRef<'a>>,
    parent: u32,
    pubkey: OctetStringRef<'a>,
    privkey: OctetStringRef<'a>,
}

/// What hsm-rs adds to a key file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: String,
    pub label: String,
    pub key_type: KeyType,
    pub usage: KeyUsage,
}

/// A key file's content, with hsm-rs metadata of type `M`.
pub(crate) struct KeyFile<M = Meta> {
    pub kind: Kind,
    /// `None` for a file another program wrote.
    pub meta: Option<M>,
    /// Whether the key's auth value is empty (else it must be supplied to use the key).
    pub empty_auth: bool,
    /// The parent's handle: [`OWNER`] or a persistent handle.
    pub parent: u32,
    pub public: Public,
    pub private: Private,
}

impl<M: Serialize + DeserializeOwned> KeyFile<M> {
    /// The file's text.
    pub(crate) fn encode(&self) -> Result<String, HsmError> {
        let public = tpm2b(
            &self
                .public
                .marshall()
                .map_err(|e| to_hsm(e, "encoding the public area"))?,
        )?;
        let private = tpm2b(self.private.value())?;
        let der = TpmKey {
            key_type: self.kind.oid(),
            // The draft writes emptyAuth only when TRUE; absent means an auth value is needed.
            empty_auth: self
                .empty_auth
                .then(|| AnyRef::new(Tag::Boolean, &[0xff]))
                .transpose()
                .map_err(encoding)?,
            parent: self.parent,
            pubkey: OctetStringRef::new(&public).map_err(encoding)?,
            privkey: OctetStringRef::new(&private).map_err(encoding)?,
        }
        .to_der()
        .map_err(encoding)?;
        let pem = der::pem::encode_string(PEM_LABEL, der::pem::LineEnding::LF, &der)
            .map_err(|e| encoding(der::Error::from(e)))?;
        let mut text = String::new();
        if let Some(meta) = &self.meta {
            let line = serde_json::to_string(meta)
                .map_err(|e| HsmError::backend(crate::error::PROVIDER, "encoding a key file", e))?;
            text.push_str(META);
            text.push(' ');
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(&pem);
        Ok(text)
    }

    /// Reads a key file; the error is the reason it is not one.
    pub(crate) fn decode(text: &str, kind: Kind) -> Result<KeyFile<M>, String> {
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let start = text
            .find(&begin)
            .ok_or_else(|| format!("no {begin} line"))?;
        let meta = match text[..start].lines().find_map(|l| l.strip_prefix(META)) {
            Some(json) => Some(
                serde_json::from_str::<M>(json.trim())
                    .map_err(|e| format!("the {META} line: {e}"))?,
            ),
            None => None,
        };
        let (label, der) =
            der::pem::decode_vec(&text.as_bytes()[start..]).map_err(|e| format!("PEM: {e}"))?;
        if label != PEM_LABEL {
            return Err(format!("PEM label {label:?}, expected {PEM_LABEL:?}"));
        }
        let key = TpmKey::from_der(&der).map_err(|e| format!("TPMKey sequence: {e}"))?;
        if key.key_type != kind.oid() {
            let what = match kind {
                Kind::Loadable => "the loadable key",
                Kind::Sealed => "sealed data",
            };
            return Err(format!(
                "object type {}, expected {what} {}",
                key.key_type,
                kind.oid()
            ));
        }
        let public = from_tpm2b(key.pubkey.as_bytes(), "public area")?;
        let public = Public::unmarshall(public).map_err(|e| format!("public area: {e}"))?;
        let private = from_tpm2b(key.privkey.as_bytes(), "private area")?;
        let private =
            Private::try_from(private.to_vec()).map_err(|e| format!("private area: {e}"))?;
        let empty_auth = match key.empty_auth {
            None => false,
            Some(b) if b.tag() == Tag::Boolean && b.value().len() == 1 => b.value()[0] != 0,
            Some(_) => return Err("emptyAuth is not a BOOLEAN".into()),
        };
        Ok(KeyFile {
            kind,
            meta,
            empty_auth,
            // 0 is what some early writers used for the owner hierarchy.
            parent: if key.parent == 0 { OWNER } else { key.parent },
            public,
            private,
        })
    }
}

/// Adds the 16-bit size of a TPM2B.
fn tpm2b(bytes: &[u8]) -> Result<Vec<u8>, HsmError> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| HsmError::invalid("a TPM structure longer than 65535 bytes"))?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(out)
}

fn from_tpm2b<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
            Ok(rest)
        }
        _ => Err(format!("{what}: the size prefix does not match the length")),
    }
}

fn encoding(e: impl std::error::Error + Send + Sync + 'static) -> HsmError {
    HsmError::backend(crate::error::PROVIDER, "encoding a key file", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2b_sizes_are_checked() {
        assert_eq!(tpm2b(b"abc").unwrap(), b"\0\x03abc");
        assert_eq!(from_tpm2b(b"\0\x03abc", "x").unwrap(), b"abc");
        assert!(from_tpm2b(b"\0\x04abc", "x").is_err());
        assert!(from_tpm2b(b"\0", "x").is_err());
    }

    #[test]
    fn other_pem_and_garbage_are_refused_with_the_reason() {
        let err = |t: &str| KeyFile::<Meta>::decode(t, Kind::Loadable).err().unwrap();
        assert!(err("hello").contains("no -----BEGIN TSS2 PRIVATE KEY----- line"));
        assert!(err("hsm-rs-tpm-key: {oops}\n-----BEGIN TSS2 PRIVATE KEY-----\n").contains("line"));
        let der = TpmKey {
            key_type: ObjectIdentifier::new_unwrap("2.23.133.10.1.4"),
            empty_auth: None,
            parent: OWNER,
            pubkey: OctetStringRef::new(b"\0\0").unwrap(),
            privkey: OctetStringRef::new(b"\0\0").unwrap(),
        }
        .to_der()
        .unwrap();
        let pem = der::pem::encode_string(PEM_LABEL, der::pem::LineEnding::LF, &der).unwrap();
        assert!(err(&pem).contains("expected the loadable key 2.23.133.10.1.3"));
        let sealed = KeyFile::<Meta>::decode(&pem, Kind::Sealed).err().unwrap();
        assert!(
            sealed.contains("expected sealed data 2.23.133.10.1.5"),
            "{sealed}"
        );
    }

    #[test]
    fn empty_auth_as_openssl_writes_it_is_read() {
        // tpm2-openssl 1.1's header: emptyAuth [0] BOOLEAN 0x01, parent 0x40000001.
        let der = [
            0x30, 0x17, 0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03, 0xa0, 0x03, 0x01, 0x01,
            0x01, 0x02, 0x04, 0x40, 0x00, 0x00, 0x01, 0x04, 0x00, 0x04, 0x00,
        ];
        let key = TpmKey::from_der(&der).unwrap();
        assert_eq!(key.empty_auth.unwrap().value(), [1]);
        assert_eq!(key.parent, OWNER);
    }

    #[test]
    fn the_parent_handle_is_an_unsigned_der_integer() {
        // 0x40000001 and 0x81000002 as positive INTEGERs (the high bit needs a leading zero).
        for (parent, bytes) in [
            (OWNER, &[0x02, 0x04, 0x40, 0, 0, 1][..]),
            (0x8100_0002, &[0x02, 0x05, 0, 0x81, 0, 0, 2][..]),
        ] {
            let der = TpmKey {
                key_type: LOADABLE_KEY,
                empty_auth: None,
                parent,
                pubkey: OctetStringRef::new(b"").unwrap(),
                privkey: OctetStringRef::new(b"").unwrap(),
            }
            .to_der()
            .unwrap();
            assert!(der.windows(bytes.len()).any(|w| w == bytes), "{der:02x?}");
            assert_eq!(TpmKey::from_der(&der).unwrap().parent, parent);
        }
    }
}
