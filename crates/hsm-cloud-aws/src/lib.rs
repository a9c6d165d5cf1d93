//! # hsm-cloud-aws: AWS KMS behind the hsm-rs contract
//!
//! [`AwsKmsProvider`] implements [`hsm_core::HsmProvider`] over AWS KMS (aws-sdk-kms on
//! rustls, no legacy HTTP stack) and [`hsm_core::KeyLifecycle`] (aliases, enable/disable,
//! rotation, scheduled deletion). Configure it with [`AwsKmsBuilder`] or an `aws-kms:` URI.
//!
//! - Keys: RSA 2048/3072/4096 and EC P-256/P-384/P-521 (sign or encrypt, as KMS key usage
//!   says), symmetric AES-256 ([`hsm_core::Mechanism::ManagedAead`]: KMS's `SYMMETRIC_DEFAULT`,
//!   the AAD bound as encryption context). Named by key id, ARN or `alias/name`.
//! - Signing: PKCS#1 v1.5, PSS and ECDSA; messages up to 4 KiB are sent `RAW`, longer ones and
//!   digests as `DIGEST`. Verification is local (AWS-LC), from a public key cached with a TTL:
//!   no network call per verify. [`AwsKmsProvider::generate_data_key`] for envelope encryption.
//! - Network: every call has a deadline, bounded jittered retries on throttling and server or
//!   connection errors, never a blind retry of a call that creates something, and an optional
//!   client-side rate limit ([`hsm_core::remote`]).
//! - Keys never leave KMS: `wrap_key` is `NotSupported`, and so is generating an extractable key.
//!   `delete_key` schedules the deletion after KMS's shortest waiting period (7 days).
//! - HMAC keys beside the contract: [`AwsKmsProvider::generate_hmac_key`],
//!   [`AwsKmsProvider::generate_mac`], [`AwsKmsProvider::verify_mac`].
//! - Import: [`AwsKmsProvider::create_import_key`], [`AwsKmsProvider::import_parameters`] and
//!   [`AwsKmsProvider::import_key_material`], with RSA-OAEP or RSA-AES key wrap; material wrapped
//!   on a PKCS#11 token with `hsm_pkcs11::Pkcs11Provider::wrap_for` never exists in the clear.
//! - CloudHSM: [`CloudHsmClusters`] manages AWS CloudHSM clusters over the `cloudhsmv2` API:
//!   clusters, their HSMs and health, and backups (list, copy to a region, restore, delete).
//!   Keys inside a cluster are reached through its PKCS#11 library (`hsm-pkcs11`).

#![warn(missing_docs)]

mod cloudhsm;
mod config;
mod error;
mod import;
mod lifecycle;
mod mac;
mod provider;

pub use cloudhsm::{
    BackupInfo, BackupOrigin, CloudHsmClusters, ClusterHealth, ClusterInfo, HsmInfo,
};
pub use config::{AwsKmsBuilder, URI_ATTRS, URI_QUERY};
pub use import::ImportParameters;
pub use mac::HmacSpec;
pub use provider::{AwsKmsProvider, DataKey};
