//! Any provider key as a RustCrypto signer, so it works where Rust code expects one
//! (`x509-cert`'s certificate builder, CMS/PKCS#7 builders, JOSE libraries).
//!
//! [`HsmSigner`] fetches the public key once at construction and implements
//! [`signature::Keypair`], [`async_signature::AsyncSigner`] and
//! [`spki::DynSignatureAlgorithmIdentifier`]; [`HsmSigner::blocking`] gives a
//! [`signature::Signer`] for synchronous APIs.

use der::asn1::{AnyRef, BitString};
use der::oid::ObjectIdentifier;
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding};

use crate::error::HsmError;
use crate::provider::DynProvider;
use crate::public_key::PublicKey;
use crate::types::{EcdsaFormat, HashAlg, KeyId, Mechanism, SignInput};

/// A signature made by a provider, in the mechanism's encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmSignature(Vec<u8>);

impl HsmSignature {
    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<HsmSignature> for Vec<u8> {
    fn from(s: HsmSignature) -> Vec<u8> {
        s.0
    }
}

impl TryFrom<&[u8]> for HsmSignature {
    type Error = signature::Error;
    fn try_from(b: &[u8]) -> Result<Self, signature::Error> {
        Ok(HsmSignature(b.to_vec()))
    }
}

impl signature::SignatureEncoding for HsmSignature {
    type Repr = Vec<u8>;
}

impl SignatureBitStringEncoding for HsmSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// A provider key usable as a RustCrypto signer.
#[derive(Debug, Clone)]
pub struct HsmSigner {
    provider: DynProvider,
    key: KeyId,
    mechanism: Mechanism,
    public_key: PublicKey,
}

impl HsmSigner {
    /// Binds `key` on `provider` to `mechanism`, fetching and caching its public key.
    pub async fn new(
        provider: DynProvider,
        key: KeyId,
        mechanism: Mechanism,
    ) -> Result<Self, HsmError> {
        let public_key = provider.public_key(&key).await?;
        if !mechanism.fits(public_key.key_type()) {
            return Err(HsmError::invalid(format!(
                "{mechanism} does not apply to {key}, a {} key",
                public_key.key_type()
            )));
        }
        Ok(HsmSigner {
            provider,
            key,
            mechanism,
            public_key,
        })
    }

    /// The key's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The mechanism every signature uses.
    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }
}

fn to_sig_error(e: HsmError) -> signature::Error {
    signature::Error::from_source(e)
}

impl signature::Keypair for HsmSigner {
    type VerifyingKey = PublicKey;
    fn verifying_key(&self) -> PublicKey {
        self.public_key.clone()
    }
}

impl async_signature::AsyncSigner<HsmSignature> for HsmSigner {
    async fn sign_async(&self, msg: &[u8]) -> Result<HsmSignature, signature::Error> {
        self.provider
            .sign(&self.key, &self.mechanism, SignInput::Message(msg))
            .await
            .map(HsmSignature)
            .map_err(to_sig_error)
    }
}

/// The same key for APIs that only take a synchronous [`signature::Signer`] (such as
/// `x509-cert`'s certificate builder). Made by [`HsmSigner::blocking`].
///
/// Inside a multi-threaded Tokio runtime each signature moves off the worker with
/// `block_in_place`; outside any runtime it runs on a private current-thread runtime. It panics
/// inside a current-thread runtime, where blocking would deadlock: use [`HsmSigner`] (async)
/// there.
#[derive(Debug, Clone)]
pub struct BlockingHsmSigner(HsmSigner);

impl HsmSigner {
    /// A synchronous view of this signer.
    pub fn blocking(self) -> BlockingHsmSigner {
        BlockingHsmSigner(self)
    }
}

impl signature::Keypair for BlockingHsmSigner {
    type VerifyingKey = PublicKey;
    fn verifying_key(&self) -> PublicKey {
        self.0.public_key.clone()
    }
}

impl signature::Signer<HsmSignature> for BlockingHsmSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<HsmSignature, signature::Error> {
        let fut = async_signature::AsyncSigner::sign_async(&self.0, msg);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| handle.block_on(fut)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(signature::Error::from_source)?
                .block_on(fut),
        }
    }
}

impl DynSignatureAlgorithmIdentifier for BlockingHsmSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        self.0.signature_algorithm_identifier()
    }
}

const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The X.509 signature algorithm of each mechanism that has a parameter-free one (RFC 4055,
/// RFC 5758, RFC 8410). RSA-PSS and `r || s` ECDSA have none and are refused.
impl DynSignatureAlgorithmIdentifier for HsmSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        let (oid, null_params) = match self.mechanism {
            Mechanism::RsaPkcs1v15 { hash } => match hash {
                HashAlg::Sha256 => (SHA256_WITH_RSA, true),
                HashAlg::Sha384 => (SHA384_WITH_RSA, true),
                HashAlg::Sha512 => (SHA512_WITH_RSA, true),
                HashAlg::Sha1 => return Err(spki::Error::KeyMalformed),
            },
            Mechanism::Ecdsa {
                hash,
                format: EcdsaFormat::Der,
            } => match hash {
                HashAlg::Sha256 => (ECDSA_SHA256, false),
                HashAlg::Sha384 => (ECDSA_SHA384, false),
                HashAlg::Sha512 => (ECDSA_SHA512, false),
                HashAlg::Sha1 => return Err(spki::Error::KeyMalformed),
            },
            Mechanism::Ed25519 => (ED25519, false),
            _ => return Err(spki::Error::OidUnknown { oid: ED25519 }),
        };
        Ok(AlgorithmIdentifierOwned {
            oid,
            parameters: null_params.then(|| AnyRef::NULL.into()),
        })
    }
}

impl spki::EncodePublicKey for PublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::try_from(self.spki_der())?)
    }
}
