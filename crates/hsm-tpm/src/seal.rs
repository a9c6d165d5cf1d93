//! Sealing: a small secret (a disk key, a database password) kept by the TPM and released only
//! while chosen PCRs hold the values they held when it was sealed.
//!
//! # How
//! [`TpmProvider::seal`] reads the chosen PCRs (so a bank that is not active fails now, not
//! silently later), computes the `TPM2_PolicyPCR` digest of their current values in a trial
//! session, and creates a sealed-data object under the SRK: a `keyedHash` object whose
//! sensitive data is the secret, whose `authPolicy` is that digest, with `userWithAuth` and
//! `adminWithPolicy` so that the policy is the only way to use it (its empty auth value
//! opens nothing). The secret travels to the TPM encrypted in the salted session.
//! [`TpmProvider::unseal`] loads it, runs `TPM2_PolicyPCR` over the same PCRs in a policy
//! session (salted with the SRK, so the secret comes back encrypted), and `TPM2_Unseal`s. If a
//! PCR changed, the TPM refuses (`TPM_RC_POLICY_FAIL`) and unsealing fails with
//! `PermissionDenied`: "the PCR values differ from those the secret was sealed to".
//!
//! # Sealed files
//! Each sealed secret is a file `<id>.sealed.pem` in the key directory (`id`: 32 random hex
//! digits) in the TSS2 key file format with the sealed-data type (see `keyfile.rs`): a metadata
//! line `{"id", "label", "pcrs": {"bank", "indices"}}`, then the parent handle and the public
//! and private areas (the secret, encrypted under this TPM's SRK: the file is useless on
//! another TPM). Written with `write_atomic`, mode 0600, never overwritten; labels are unique
//! among sealed secrets.
//!
//! The secret is held in `Zeroizing` buffers on our side; copies that tpm2-tss makes while
//! marshalling are outside hsm-tpm's reach.

use std::fs;
use std::path::{Path, PathBuf};

use hsm_core::files::{FileMode, write_atomic};
use hsm_core::{HsmError, Secret, Zeroizing};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::structures::{
    Digest, KeyedHashScheme, PcrSelectionList, Private, Public, PublicBuilder,
    PublicKeyedHashParameters, SensitiveData,
};

use crate::error::{PROVIDER, to_hsm, tpm_kind};
use crate::keyfile::{KeyFile, Kind};
use crate::pcr::PcrSelection;
use crate::provider::TpmProvider;
use crate::session::{Params, with_session};
use crate::worker::Tpm;

/// The largest secret a TPM seals (`MAX_SYM_DATA`, TPM 2.0 Part 2).
pub const MAX_SEALED_LEN: usize = 128;

/// The end of a sealed file's name (key files end in `.pem` with an id for a stem, so the two
/// never mix).
const SUFFIX: &str = ".sealed.pem";

/// A sealed secret, without the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealedInfo {
    /// The file's id (`<id>.sealed.pem`).
    pub id: String,
    /// The label it was sealed under.
    pub label: String,
    /// The PCRs whose values it was sealed to.
    pub pcrs: PcrSelection,
}

/// What hsm-rs adds to a sealed file.
#[derive(Serialize, Deserialize)]
struct SealedMeta {
    id: String,
    label: String,
    pcrs: PcrSelection,
}

/// A sealed file, read and decoded.
struct Sealed {
    info: SealedInfo,
    public: Public,
    private: Private,
    /// The handle of the storage key it is sealed under (see `keyfile::OWNER`).
    parent: u32,
}

/// The sealed-data object's template: no signing or decryption, data from the caller, usable
/// only through the policy.
fn sealed_template(policy: Digest) -> Result<Public, HsmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(false)
        .with_admin_with_policy(true)
        .build()
        .map_err(|e| to_hsm(e, "building the sealed object's attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(|e| to_hsm(e, "building the sealed object's template"))
}

fn check_secret(secret: &Secret) -> Result<(), HsmError> {
    if secret.is_empty() || secret.expose().len() > MAX_SEALED_LEN {
        return Err(HsmError::invalid(format!(
            "a sealed secret is 1 to {MAX_SEALED_LEN} bytes, not {} (seal a key that encrypts \
             larger data)",
            secret.expose().len()
        )));
    }
    Ok(())
}

fn sealed_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{SUFFIX}"))
}

fn bad_file(path: &Path, reason: impl Into<String>) -> HsmError {
    HsmError::Corrupted {
        what: format!("sealed file {}", path.display()),
        reason: reason.into(),
    }
}

fn read_sealed(path: &Path) -> Result<Sealed, HsmError> {
    let text = fs::read_to_string(path).map_err(|e| {
        HsmError::backend(
            PROVIDER,
            format!("cannot read sealed file {}", path.display()),
            e,
        )
    })?;
    let file = KeyFile::<SealedMeta>::decode(&text, Kind::Sealed)
        .map_err(|reason| bad_file(path, reason))?;
    let meta = file
        .meta
        .ok_or_else(|| bad_file(path, "no hsm-rs metadata line (label and PCRs)"))?;
    Ok(Sealed {
        info: SealedInfo {
            id: meta.id,
            label: meta.label,
            pcrs: meta.pcrs,
        },
        public: file.public,
        private: file.private,
        parent: file.parent,
    })
}

impl Tpm {
    /// Every sealed file in the key directory; a damaged one is skipped with a warning.
    fn all_sealed(&self) -> Result<Vec<(PathBuf, Sealed)>, HsmError> {
        let entries = fs::read_dir(&self.key_dir).map_err(|e| {
            HsmError::backend(
                PROVIDER,
                format!("cannot list the key directory {}", self.key_dir.display()),
                e,
            )
        })?;
        let mut out = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX))
            {
                continue;
            }
            match read_sealed(&path) {
                Ok(sealed) => out.push((path, sealed)),
                Err(e) => tracing::warn!(error = ?e, "skipping a sealed file"),
            }
        }
        Ok(out)
    }

    fn find_sealed(&self, label: &str) -> Result<(PathBuf, Sealed), HsmError> {
        self.all_sealed()?
            .into_iter()
            .find(|(_, s)| s.info.label == label)
            .ok_or_else(|| HsmError::key_not_found(format!("sealed secret {label:?}")))
    }

    /// The `TPM2_PolicyPCR` digest of the PCRs' current values, from a trial session.
    fn pcr_policy(&mut self, pcrs: PcrSelectionList) -> Result<Digest, HsmError> {
        let session =
            self.start_policy_session(SessionType::Trial, false, "computing the PCR policy")?;
        let digest = self.ctx.execute_without_session(|ctx| {
            // An empty pcrDigest: the TPM uses the PCRs' current values.
            ctx.policy_pcr(session, Digest::default(), pcrs)?;
            ctx.policy_get_digest(session)
        });
        self.flush_policy_session(session);
        digest.map_err(|e| to_hsm(e, "computing the PCR policy"))
    }

    fn seal(
        &mut self,
        label: &str,
        secret: &Secret,
        pcrs: &PcrSelection,
    ) -> Result<SealedInfo, HsmError> {
        if self
            .all_sealed()?
            .iter()
            .any(|(_, s)| s.info.label == label)
        {
            return Err(HsmError::AlreadyExists {
                what: format!("a sealed secret labelled {label:?}"),
            });
        }
        // Fails with NotSupported for a bank that is not active, whose PolicyPCR would cover
        // nothing.
        self.read_pcrs(pcrs)?;
        let policy = self.pcr_policy(pcrs.to_tpm()?)?;
        let data = SensitiveData::try_from(secret.expose().to_vec())
            .map_err(|e| to_hsm(e, "preparing the secret"))?;
        let what = format!("sealing {label:?}");
        let created = self.create_under_srk(&what, &sealed_template(policy)?, None, Some(data))?;
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        let file = KeyFile {
            kind: Kind::Sealed,
            meta: Some(SealedMeta {
                id: id.clone(),
                label: label.to_owned(),
                pcrs: pcrs.clone(),
            }),
            // No auth value: the policy is the only way in.
            empty_auth: true,
            parent: self.srk_parent,
            public: created.out_public,
            private: created.out_private,
        };
        let path = sealed_path(&self.key_dir, &id);
        // write_atomic replaces; a sealed file never is (ids are 128 random bits).
        if path.exists() {
            return Err(HsmError::AlreadyExists {
                what: format!("sealed file {}", path.display()),
            });
        }
        write_atomic(&path, file.encode()?.as_bytes(), FileMode::Private).map_err(|e| {
            HsmError::backend(
                PROVIDER,
                format!("cannot write sealed file {}", path.display()),
                e,
            )
        })?;
        Ok(SealedInfo {
            id,
            label: label.to_owned(),
            pcrs: pcrs.clone(),
        })
    }

    fn unseal(&mut self, label: &str) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let (_, sealed) = self.find_sealed(label)?;
        let pcrs = sealed.info.pcrs.to_tpm()?;
        let parent = self.parent(sealed.parent)?;
        self.make_room();
        let handle: KeyHandle = self
            .with_room(&format!("loading sealed {label:?}"), |tpm| {
                with_session(tpm, Params::In, |ctx| {
                    ctx.load(parent, sealed.private.clone(), sealed.public.clone())
                })
            })
            .map_err(|e| match e {
                HsmError::Corrupted { what, .. } => HsmError::Corrupted {
                    what,
                    reason: "the TPM refuses the sealed blob: it was sealed under another \
                             storage root key (another TPM, or this TPM was cleared), or the \
                             file is damaged"
                        .into(),
                },
                other => other,
            })?;
        let what = format!("unsealing {label:?}");
        let secret = self.unseal_loaded(handle, pcrs, sealed.public.auth_policy(), &what);
        if let Err(e) = self.ctx.flush_context(handle.into()) {
            tracing::warn!(error = %e, "flushing a sealed object failed");
        }
        let pcrs_differ = || {
            HsmError::denied(format!(
                "cannot unseal {label:?}: the PCR values differ from those the secret was \
                 sealed to"
            ))
        };
        match secret {
            Ok(Some(secret)) => Ok(secret),
            Ok(None) => Err(pcrs_differ()),
            Err(e) => Err(e),
        }
    }

    /// `TPM2_PolicyPCR` then `TPM2_Unseal` in a policy session, salted with the SRK when the
    /// TPM allows salted sessions, so that the secret comes back encrypted. `Ok(None)` when the
    /// PCRs no longer match: the session's policy digest is not `policy` (then `TPM2_Unseal`
    /// would only fail, and make ESYS log an error), or the TPM says so.
    fn unseal_loaded(
        &mut self,
        handle: KeyHandle,
        pcrs: PcrSelectionList,
        policy: &Digest,
        what: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HsmError> {
        let session = self.start_policy_session(SessionType::Policy, true, what)?;
        let result = (|| {
            let reached = self.ctx.execute_without_session(|ctx| {
                ctx.policy_pcr(session, Digest::default(), pcrs)?;
                ctx.policy_get_digest(session)
            })?;
            if reached != *policy {
                return Ok(None);
            }
            let data = self
                .ctx
                .execute_with_session(Some(session.into()), |ctx| ctx.unseal(handle.into()))?;
            Ok(Some(Zeroizing::new(data.value().to_vec())))
        })();
        self.flush_policy_session(session);
        match result {
            Err(e) if tpm_kind(&e) == Some(Tss2ResponseCodeKind::PolicyFail) => Ok(None),
            other => other.map_err(|e| to_hsm(e, what)),
        }
    }
}

impl TpmProvider {
    /// Seals `secret` (1 to [`MAX_SEALED_LEN`] bytes) to the current values of the PCRs of
    /// `pcrs`, and saves it as a sealed file labelled `label` in the key directory (see the
    /// module docs for the format).
    ///
    /// `InvalidInput` for an empty label, an empty PCR selection (nothing would guard the
    /// secret but the file's permissions) or a secret of a bad size; `NotSupported` when the
    /// bank is not active; `AlreadyExists` when a sealed secret has that label.
    pub async fn seal(
        &self,
        label: &str,
        secret: &Secret,
        pcrs: &PcrSelection,
    ) -> Result<SealedInfo, HsmError> {
        if label.is_empty() {
            return Err(HsmError::invalid("a sealed secret needs a label"));
        }
        if pcrs.is_empty() {
            return Err(HsmError::invalid(
                "sealing needs at least one PCR: with none, anyone holding the sealed file on \
                 this TPM could unseal it",
            ));
        }
        check_secret(secret)?;
        let (label, secret, pcrs) = (label.to_owned(), secret.clone(), pcrs.clone());
        self.inner
            .worker
            .run(move |tpm| tpm.seal(&label, &secret, &pcrs))
            .await
    }

    /// Unseals the secret labelled `label`. `KeyNotFound` if there is none; `PermissionDenied`
    /// when the PCRs no longer hold the values it was sealed to; `Corrupted` when it was sealed
    /// on another TPM (or before the TPM was cleared).
    pub async fn unseal(&self, label: &str) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let label = label.to_owned();
        self.inner.worker.run(move |tpm| tpm.unseal(&label)).await
    }

    /// The sealed secrets in the key directory (labels and PCRs only).
    pub async fn sealed_secrets(&self) -> Result<Vec<SealedInfo>, HsmError> {
        self.inner
            .worker
            .run(|tpm| Ok(tpm.all_sealed()?.into_iter().map(|(_, s)| s.info).collect()))
            .await
    }

    /// Deletes the sealed file labelled `label`. `KeyNotFound` if there is none.
    pub async fn delete_sealed(&self, label: &str) -> Result<(), HsmError> {
        let label = label.to_owned();
        self.inner
            .worker
            .run(move |tpm| {
                let (path, _) = tpm.find_sealed(&label)?;
                fs::remove_file(&path).map_err(|e| {
                    HsmError::backend(
                        PROVIDER,
                        format!("cannot remove sealed file {}", path.display()),
                        e,
                    )
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_opens_only_through_the_policy() {
        let policy = Digest::try_from(vec![7u8; 32]).unwrap();
        let t = sealed_template(policy.clone()).unwrap();
        let attrs = t.object_attributes();
        assert!(!attrs.user_with_auth() && attrs.admin_with_policy());
        assert!(!attrs.sensitive_data_origin() && !attrs.sign_encrypt() && !attrs.decrypt());
        assert_eq!(t.auth_policy(), &policy);
    }

    #[test]
    fn secret_sizes_are_checked() {
        assert!(check_secret(&Secret::new(vec![])).is_err());
        assert!(check_secret(&Secret::new(vec![1; MAX_SEALED_LEN + 1])).is_err());
        check_secret(&Secret::new(vec![1; MAX_SEALED_LEN])).unwrap();
    }
}
