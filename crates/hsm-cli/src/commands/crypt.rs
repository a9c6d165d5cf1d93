//! `hsm encrypt` and `hsm decrypt`.
//!
//! The file format is the one most tools produce and consume, so nothing hsm-specific is needed
//! to interoperate: AES-GCM is `IV (12 bytes) || ciphertext || tag (16 bytes)`, RSA-OAEP is the
//! bare ciphertext.

use std::io::IsTerminal as _;
use std::path::Path;

use hsm_core::{
    DecryptRequest, EncryptRequest, HashAlg, KeyFamily, KeyInfo, KeyType, Mechanism, Zeroizing,
};
use serde_json::json;

use super::{Globals, Outcome, input_name, read_input};
use crate::cli::{DecryptArgs, EncryptArgs};
use crate::error::{CliError, Context as _};
use crate::open::{self, KeySelector, Keystore};
use crate::output::{self, FileMode};

/// The AES-GCM IV length: 96 bits, the size SP 800-38D recommends and every provider takes.
const GCM_IV_LEN: usize = 12;
/// The AES-GCM tag length.
const GCM_TAG_LEN: usize = 16;

/// The mechanism used when `--mechanism` is not given.
pub fn default_cipher_mechanism(key_type: KeyType) -> Result<Mechanism, CliError> {
    match key_type.family() {
        KeyFamily::Aes => Ok(Mechanism::AesGcm),
        KeyFamily::Rsa => Ok(Mechanism::rsa_oaep(HashAlg::Sha256)),
        _ => Err(CliError::new(format!(
            "{key_type} keys cannot encrypt: use an AES or RSA key"
        ))),
    }
}

fn mechanism_for(key: &KeyInfo, asked: Option<Mechanism>) -> Result<Mechanism, CliError> {
    asked.map_or_else(|| default_cipher_mechanism(key.key_type), Ok)
}

/// Reads `--aad`, which only AES-GCM takes (RSA-OAEP's label is a different thing).
fn read_aad(
    path: Option<&Path>,
    mechanism: &Mechanism,
) -> Result<Option<Zeroizing<Vec<u8>>>, CliError> {
    let Some(path) = path else { return Ok(None) };
    if *mechanism != Mechanism::AesGcm {
        return Err(CliError::new(format!(
            "--aad applies to AES-GCM only, not {mechanism}"
        )));
    }
    read_input(path).map(Some)
}

/// `hsm encrypt`: writes `IV || ciphertext || tag` (AES-GCM) or the ciphertext (RSA-OAEP).
pub async fn encrypt(g: &Globals, args: EncryptArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let plaintext = read_input(&args.input)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let key = selector.resolve(provider.as_ref()).await?;
    let mechanism = mechanism_for(&key, args.mechanism)?;
    let aad = read_aad(args.aad.as_deref(), &mechanism)?;

    let mut request = EncryptRequest::new(&plaintext);
    if let Some(aad) = &aad {
        request = request.with_aad(aad);
    }
    let ciphertext = provider
        .encrypt(&key.id, &mechanism, &request)
        .await
        .context(|| format!("cannot encrypt {}", input_name(&args.input)))?;

    let bytes = match (&mechanism, ciphertext.iv) {
        (Mechanism::AesGcm, Some(iv)) if iv.len() == GCM_IV_LEN => [iv, ciphertext.data].concat(),
        (Mechanism::AesGcm, iv) => {
            return Err(CliError::new(format!(
                "the provider returned a {}-byte AES-GCM IV; this file format needs {GCM_IV_LEN}",
                iv.map_or(0, |iv| iv.len())
            )));
        }
        (_, _) => ciphertext.data,
    };
    output::write_file(&args.out, &bytes, FileMode::Public)?;

    if g.json {
        output::print_json(&json!({
            "key": key.attributes.label,
            "key_id": key.id.id,
            "mechanism": mechanism.name(),
            "out": args.out,
            "bytes": bytes.len(),
        }))?;
    } else {
        output::print(&format!(
            "encrypted {} with {} ({mechanism}): {} ({} bytes)\n",
            input_name(&args.input),
            key.attributes.label,
            args.out.display(),
            bytes.len()
        ))?;
    }
    Ok(Outcome::Success)
}

/// `hsm decrypt`: the inverse of `encrypt`; nothing is written unless the input authenticates.
pub async fn decrypt(g: &Globals, args: DecryptArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let input = read_input(&args.input)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let key = selector.resolve(provider.as_ref()).await?;
    let mechanism = mechanism_for(&key, args.mechanism)?;
    let aad = read_aad(args.aad.as_deref(), &mechanism)?;

    let mut request = if mechanism == Mechanism::AesGcm {
        if input.len() < GCM_IV_LEN + GCM_TAG_LEN {
            return Err(CliError::new(format!(
                "{} is {} bytes, too short for AES-GCM (IV || ciphertext || tag is at least {})",
                input_name(&args.input),
                input.len(),
                GCM_IV_LEN + GCM_TAG_LEN
            )));
        }
        let (iv, rest) = input.split_at(GCM_IV_LEN);
        DecryptRequest::new(rest).with_iv(iv)
    } else {
        DecryptRequest::new(&input)
    };
    if let Some(aad) = &aad {
        request = request.with_aad(aad);
    }
    let plaintext: Zeroizing<Vec<u8>> = provider
        .decrypt(&key.id, &mechanism, &request)
        .await
        .context(|| format!("cannot decrypt {}", input_name(&args.input)))?;

    let Some(out) = &args.out else {
        // Plaintext is often text, so stdout is allowed; binary on a terminal is refused.
        if std::io::stdout().is_terminal() && std::str::from_utf8(&plaintext).is_err() {
            return Err(CliError::new(
                "refusing to write binary plaintext to a terminal: use --out FILE",
            ));
        }
        output::print_bytes(&plaintext)?;
        return Ok(Outcome::Success);
    };
    output::write_file(out, &plaintext, FileMode::Private)?;
    if g.json {
        output::print_json(&json!({
            "key": key.attributes.label,
            "key_id": key.id.id,
            "mechanism": mechanism.name(),
            "out": out,
            "bytes": plaintext.len(),
        }))?;
    } else {
        output::print(&format!(
            "decrypted {} with {} ({mechanism}): {} ({} bytes)\n",
            input_name(&args.input),
            key.attributes.label,
            out.display(),
            plaintext.len()
        ))?;
    }
    Ok(Outcome::Success)
}
