//! `hsm sign` and `hsm verify`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hsm_core::{HashAlg, KeyFamily, KeyInfo, KeyType, Mechanism, SignInput};
use serde_json::json;

use super::{Globals, Outcome, input_name, read_input};
use crate::cli::{SignArgs, VerifyArgs};
use crate::error::{CliError, Context as _};
use crate::open::{self, KeySelector, Keystore};
use crate::output::{self, SignatureEncoding};

/// The mechanism used when `--mechanism` is not given: the conventional one for the key type,
/// with a hash matching the curve's strength for ECDSA (what OpenSSL, X.509 and JOSE pair).
pub fn default_signature_mechanism(key_type: KeyType) -> Result<Mechanism, CliError> {
    Ok(match key_type {
        KeyType::EcP256 => Mechanism::ecdsa(HashAlg::Sha256),
        KeyType::EcP384 => Mechanism::ecdsa(HashAlg::Sha384),
        KeyType::EcP521 => Mechanism::ecdsa(HashAlg::Sha512),
        KeyType::Ed25519 => Mechanism::Ed25519,
        kt if kt.family() == KeyFamily::Rsa => Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        },
        kt => {
            return Err(CliError::new(format!(
                "{kt} keys cannot sign: use an EC, Ed25519 or RSA key"
            )));
        }
    })
}

fn mechanism_for(key: &KeyInfo, asked: Option<Mechanism>) -> Result<Mechanism, CliError> {
    asked.map_or_else(|| default_signature_mechanism(key.key_type), Ok)
}

fn sign_input(data: &[u8], digest: bool) -> SignInput<'_> {
    if digest {
        SignInput::Digest(data)
    } else {
        SignInput::Message(data)
    }
}

/// `hsm sign`: signs the input; the signature goes to `--out` (raw) or stdout (base64).
pub async fn sign(g: &Globals, args: SignArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let data = read_input(&args.input)?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let key = selector.resolve(provider.as_ref()).await?;
    let mechanism = mechanism_for(&key, args.mechanism)?;

    let signature = provider
        .sign(&key.id, &mechanism, sign_input(&data, args.digest))
        .await
        .context(|| format!("cannot sign {}", input_name(&args.input)))?;

    let format = args.format.unwrap_or(match args.out {
        Some(_) => SignatureEncoding::Der,
        None => SignatureEncoding::Base64,
    });
    let mut summary = json!({
        "key": key.attributes.label,
        "key_id": key.id.id,
        "mechanism": mechanism.name(),
    });
    match &args.out {
        Some(out) => {
            format.encode(&signature).emit(Some(out), "signature")?;
            if g.json {
                summary["format"] = json!(format.name());
                summary["out"] = json!(out);
                output::print_json(&summary)?;
            } else {
                output::print(&format!(
                    "signed {} with {} ({mechanism}): {} ({})\n",
                    input_name(&args.input),
                    key.attributes.label,
                    out.display(),
                    format.name()
                ))?;
            }
        }
        // In JSON the signature is always base64: raw bytes do not fit in JSON text.
        None if g.json => {
            summary["signature"] = json!(BASE64.encode(&signature));
            output::print_json(&summary)?;
        }
        None => format.encode(&signature).emit(None, "signature")?,
    }
    Ok(Outcome::Success)
}

/// `hsm verify`: "signature valid" (exit 0) or "signature INVALID" (exit 1).
pub async fn verify(g: &Globals, args: VerifyArgs) -> Result<Outcome, CliError> {
    let uri = open::parse_uri(&args.target.uri)?;
    let selector = KeySelector::from_uri(&uri)?;
    let data = read_input(&args.input)?;
    let signature_file = read_input(&args.signature)?;
    let signature = args
        .signature_format
        .decode(&signature_file)
        .map_err(|why| {
            CliError::new(format!(
                "signature file {} is not {}: {why}",
                args.signature.display(),
                args.signature_format.name()
            ))
        })?;
    let provider = open::open(&uri, g.pin_source.as_ref(), Keystore::MustExist).await?;
    let key = selector.resolve(provider.as_ref()).await?;
    let mechanism = mechanism_for(&key, args.mechanism)?;

    let valid = provider
        .verify(
            &key.id,
            &mechanism,
            sign_input(&data, args.digest),
            &signature,
        )
        .await
        .context(|| format!("cannot verify {}", input_name(&args.input)))?;

    if g.json {
        output::print_json(&json!({
            "valid": valid,
            "key": key.attributes.label,
            "key_id": key.id.id,
            "mechanism": mechanism.name(),
        }))?;
    } else {
        output::print(if valid {
            "signature valid\n"
        } else {
            "signature INVALID\n"
        })?;
    }
    Ok(if valid {
        Outcome::Success
    } else {
        Outcome::SignatureInvalid
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_key_type() {
        let name = |kt| default_signature_mechanism(kt).unwrap().name();
        assert_eq!(name(KeyType::EcP256), "ecdsa-sha256");
        assert_eq!(name(KeyType::EcP384), "ecdsa-sha384");
        assert_eq!(name(KeyType::EcP521), "ecdsa-sha512");
        assert_eq!(name(KeyType::Rsa3072), "rsa-pkcs1-sha256");
        assert_eq!(name(KeyType::Ed25519), "ed25519");
        assert!(default_signature_mechanism(KeyType::Aes256).is_err());
    }
}
