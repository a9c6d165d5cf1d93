//! Platform configuration registers: which PCRs a quote or a sealed secret covers
//! ([`PcrSelection`]), their values ([`PcrValues`]), reading them and extending one.
//!
//! A selection is one PCR bank and a set of PCR indices 0..=23 (the PC client TPM has 24).
//! Indices are kept sorted: the TPM always hashes selected PCRs in index order (TPM 2.0 Part 1,
//! "Selecting Multiple PCR"), so a verifier recomputes a quote's digest from the values in that
//! order.

use hsm_core::{HashAlg, HsmError};
use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::pcr::PcrData;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectSize, PcrSelectionList, PcrSlot};

use crate::error::{PROVIDER, to_hsm};
use crate::provider::TpmProvider;
use crate::worker::Tpm;

/// The PCRs a PC client TPM has (TCG PC Client Platform TPM Profile): 0..=23.
pub const PCR_COUNT: u8 = 24;

/// PCRs of one bank, by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSelection")]
pub struct PcrSelection {
    bank: HashAlg,
    indices: Vec<u8>,
}

impl PcrSelection {
    /// PCRs `indices` (any order; duplicates are dropped) of the `bank` bank. `InvalidInput`
    /// for an index of 24 or more.
    pub fn new(bank: HashAlg, indices: &[u8]) -> Result<Self, HsmError> {
        if let Some(bad) = indices.iter().find(|i| **i >= PCR_COUNT) {
            return Err(HsmError::invalid(format!(
                "PCR {bad} does not exist: a TPM has PCRs 0 to {}",
                PCR_COUNT - 1
            )));
        }
        let mut indices = indices.to_vec();
        indices.sort_unstable();
        indices.dedup();
        Ok(PcrSelection { bank, indices })
    }

    /// PCRs of the SHA-256 bank, the one every TPM 2.0 has active.
    pub fn sha256(indices: &[u8]) -> Result<Self, HsmError> {
        PcrSelection::new(HashAlg::Sha256, indices)
    }

    /// The bank (the hash its PCRs are extended with).
    pub fn bank(&self) -> HashAlg {
        self.bank
    }

    /// The PCR indices, ascending.
    pub fn indices(&self) -> &[u8] {
        &self.indices
    }

    /// Whether no PCR is selected.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The `TPML_PCR_SELECTION` for tss-esapi.
    pub(crate) fn to_tpm(&self) -> Result<PcrSelectionList, HsmError> {
        let slots = self
            .indices
            .iter()
            .map(|i| PcrSlot::try_from(1u32 << i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| to_hsm(e, "selecting PCRs"))?;
        PcrSelectionList::builder()
            .with_size_of_select(PcrSelectSize::ThreeOctets)
            .with_selection(tpm_hash(self.bank)?, &slots)
            .build()
            .map_err(|e| to_hsm(e, "selecting PCRs"))
    }
}

/// The values of the PCRs of a [`PcrSelection`], in index order: what a verifier needs to
/// recompute a quote's PCR digest, and what it judges (known-good measurements).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawValues")]
pub struct PcrValues {
    selection: PcrSelection,
    values: Vec<Vec<u8>>,
}

impl PcrValues {
    /// PCR values for `selection`, one per selected index in ascending order, each as long as
    /// the bank's hash. `InvalidInput` otherwise.
    pub fn new(selection: PcrSelection, values: Vec<Vec<u8>>) -> Result<Self, HsmError> {
        if values.len() != selection.indices.len() {
            return Err(HsmError::invalid(format!(
                "{} PCR values for {} selected PCRs",
                values.len(),
                selection.indices.len()
            )));
        }
        let len = selection.bank.output_len();
        if let Some((i, v)) = selection
            .indices
            .iter()
            .zip(&values)
            .find(|(_, v)| v.len() != len)
        {
            return Err(HsmError::invalid(format!(
                "PCR {i} value is {} bytes; a {} PCR holds {len}",
                v.len(),
                selection.bank
            )));
        }
        Ok(PcrValues { selection, values })
    }

    /// Which PCRs these are.
    pub fn selection(&self) -> &PcrSelection {
        &self.selection
    }

    /// `(index, value)` pairs in ascending index order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.selection
            .indices
            .iter()
            .copied()
            .zip(self.values.iter().map(Vec::as_slice))
    }

    /// The value of PCR `index`, if selected.
    pub fn get(&self, index: u8) -> Option<&[u8]> {
        self.iter().find(|(i, _)| *i == index).map(|(_, v)| v)
    }

    /// The digest a quote or a PCR policy commits to: `hash` over the values concatenated in
    /// index order (TPM 2.0 Part 3, TPM2_Quote `pcrDigest`; Part 3, TPM2_PolicyPCR).
    pub fn digest(&self, hash: HashAlg) -> Vec<u8> {
        hash.digest(&self.values.concat())
    }
}

// What is read from JSON goes through the constructors' checks.
#[derive(Deserialize)]
struct RawSelection {
    bank: HashAlg,
    indices: Vec<u8>,
}

impl TryFrom<RawSelection> for PcrSelection {
    type Error = HsmError;
    fn try_from(raw: RawSelection) -> Result<Self, HsmError> {
        PcrSelection::new(raw.bank, &raw.indices)
    }
}

#[derive(Deserialize)]
struct RawValues {
    selection: PcrSelection,
    values: Vec<Vec<u8>>,
}

impl TryFrom<RawValues> for PcrValues {
    type Error = HsmError;
    fn try_from(raw: RawValues) -> Result<Self, HsmError> {
        PcrValues::new(raw.selection, raw.values)
    }
}

/// The TPM's name for a hash (signature and OAEP schemes, PCR banks, name and policy
/// algorithms).
pub(crate) fn tpm_hash(hash: HashAlg) -> Result<HashingAlgorithm, HsmError> {
    match hash {
        HashAlg::Sha1 => Ok(HashingAlgorithm::Sha1),
        HashAlg::Sha256 => Ok(HashingAlgorithm::Sha256),
        HashAlg::Sha384 => Ok(HashingAlgorithm::Sha384),
        HashAlg::Sha512 => Ok(HashingAlgorithm::Sha512),
        other => Err(HsmError::not_supported(
            PROVIDER,
            format!("the hash {other}"),
        )),
    }
}

impl Tpm {
    /// Reads the PCRs of `selection` (in as many `TPM2_PCR_Read`s as the TPM needs: it returns
    /// at most 8 values per call). `NotSupported` when the bank is not active on this TPM.
    pub(crate) fn read_pcrs(&mut self, selection: &PcrSelection) -> Result<PcrValues, HsmError> {
        // tss-esapi's `pcr::read_all` loops until everything is read, which is forever when a
        // bank is not active (the TPM returns no value for it); this loop stops there.
        let mut left = selection.to_tpm()?;
        let mut data = PcrData::new();
        while !left.is_empty() {
            let (_, read, digests) = self
                .ctx
                .execute_without_session(|ctx| ctx.pcr_read(left.clone()))
                .map_err(|e| to_hsm(e, "reading PCRs"))?;
            if digests.value().is_empty() {
                break;
            }
            data.add(&read, &digests)
                .and_then(|()| left.subtract(&read))
                .map_err(|e| to_hsm(e, "reading PCRs"))?;
        }
        let bank = data.pcr_bank(tpm_hash(selection.bank)?);
        let mut values = Vec::with_capacity(selection.indices.len());
        for i in &selection.indices {
            let slot = PcrSlot::try_from(1u32 << i).map_err(|e| to_hsm(e, "reading PCRs"))?;
            let value = bank.and_then(|b| b.get_digest(slot)).ok_or_else(|| {
                HsmError::not_supported(
                    PROVIDER,
                    format!(
                        "PCR {i} of the {} bank (the bank is not active on this TPM)",
                        selection.bank
                    ),
                )
            })?;
            values.push(value.value().to_vec());
        }
        PcrValues::new(selection.clone(), values)
    }
}

impl TpmProvider {
    /// Reads the current values of the PCRs of `selection` (`TPM2_PCR_Read`).
    pub async fn read_pcrs(&self, selection: &PcrSelection) -> Result<PcrValues, HsmError> {
        let selection = selection.clone();
        self.inner
            .worker
            .run(move |tpm| tpm.read_pcrs(&selection))
            .await
    }

    /// Extends PCR `index` of the `bank` bank with `digest` (`TPM2_PCR_Extend`:
    /// `PCR := H(PCR || digest)`), as a measurement does. `digest` is the bank hash's length.
    /// Extending changes what quotes report and what sealed secrets need, so extend only PCRs
    /// your application owns: 16 (debug) or 23 (application), the ones software may also
    /// reset. PCRs 17 to 22 need a higher locality and fail with the TPM's locality error.
    pub async fn extend_pcr(
        &self,
        bank: HashAlg,
        index: u8,
        digest: &[u8],
    ) -> Result<(), HsmError> {
        PcrSelection::new(bank, &[index])?;
        if digest.len() != bank.output_len() {
            return Err(HsmError::invalid(format!(
                "a {bank} PCR is extended with a {}-byte digest, not {} bytes",
                bank.output_len(),
                digest.len()
            )));
        }
        let alg = tpm_hash(bank)?;
        let digest = Digest::try_from(digest.to_vec()).map_err(|e| to_hsm(e, "extending a PCR"))?;
        self.inner
            .worker
            .run(move |tpm| {
                let handle = PcrHandle::try_from(u32::from(index))
                    .map_err(|e| to_hsm(e, "naming the PCR"))?;
                let mut values = DigestValues::new();
                values.set(alg, digest);
                // A PCR's auth value is empty (TPM 2.0 Part 1, "PCR Authorization"): a password
                // session carries it.
                tpm.ctx
                    .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, values))
                    .map_err(|e| to_hsm(e, &format!("extending PCR {index}")))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_are_sorted_and_checked() {
        let s = PcrSelection::sha256(&[23, 0, 16, 0]).unwrap();
        assert_eq!(s.indices(), [0, 16, 23]);
        assert!(PcrSelection::sha256(&[24]).is_err());
        assert!(PcrSelection::sha256(&[]).unwrap().is_empty());
        s.to_tpm().unwrap();
    }

    #[test]
    fn json_goes_through_the_checks() {
        let s: PcrSelection =
            serde_json::from_str(r#"{"bank":"sha256","indices":[23,16]}"#).unwrap();
        assert_eq!(s.indices(), [16, 23]);
        assert!(
            serde_json::from_str::<PcrSelection>(r#"{"bank":"sha256","indices":[40]}"#).is_err()
        );
        let v = PcrValues::new(s, vec![vec![1; 32], vec![2; 32]]).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<PcrValues>(&json).unwrap(), v);
        let short = json.replacen("[1,", "[", 1);
        assert!(serde_json::from_str::<PcrValues>(&short).is_err());
    }

    #[test]
    fn values_match_their_selection() {
        let s = PcrSelection::sha256(&[1, 2]).unwrap();
        assert!(PcrValues::new(s.clone(), vec![vec![0; 32]]).is_err());
        assert!(PcrValues::new(s.clone(), vec![vec![0; 32], vec![0; 20]]).is_err());
        let v = PcrValues::new(s, vec![vec![1; 32], vec![2; 32]]).unwrap();
        assert_eq!(v.get(2), Some(&[2u8; 32][..]));
        let mut both = vec![1u8; 32];
        both.extend([2u8; 32]);
        assert_eq!(v.digest(HashAlg::Sha256), HashAlg::Sha256.digest(&both));
    }
}
