//! The command line, as clap definitions. Parsing only: the commands live in `commands/`.
//!
//! Two rules shape it. The provider and key are always named by a URI (`-u`, or `HSM_URI`), the
//! same string a program would give to the library. And no option takes a secret: a PIN or
//! passphrase on the command line ends up in shell history and in `ps` output, so secrets come
//! only from `--pin-source` / the URI's `pin-source` (an environment variable or a file) or from
//! a prompt on the terminal.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use hsm_core::{KeyType, KeyUsage, Mechanism, PinSource};

use crate::output::{PublicKeyFormat, SignatureEncoding};

const AFTER_HELP: &str = "\
Providers and keys are named by a URI (-u/--uri, or the HSM_URI environment variable):
  soft:path=keys.hsm;object=mykey?pin-source=env:HSM_PASSPHRASE
  soft:path=keys.hsm;id=3f1c0a...       a key by its id instead of its label
  soft:                                 an in-memory keystore that vanishes on exit (tests)

Secrets never appear on the command line. The passphrase or PIN comes from --pin-source or
the URI's pin-source (env:NAME or file:PATH), or from a prompt when run on a terminal.

Exit status: 0 success, 1 signature INVALID (hsm verify), 2 any error.

Try it: hsm quickstart";

/// `hsm`: keys, signatures and encryption on HSMs, TPMs, cloud KMS and the built-in software
/// keystore, through one interface.
#[derive(Debug, Parser)]
#[command(name = "hsm", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where the passphrase or PIN comes from: env:NAME, file:PATH or prompt. Overrides the
    /// URI's pin-source. There is deliberately no option that takes the secret itself.
    #[arg(long, global = true, value_name = "SOURCE")]
    pub pin_source: Option<PinSource>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log each provider operation to stderr (-v: info, -vv: debug). RUST_LOG refines it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate, list, show and delete keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign a file (or a precomputed digest) with a key.
    Sign(SignArgs),
    /// Verify a signature; exit status 1 when it is invalid.
    Verify(VerifyArgs),
    /// Encrypt a file with an AES key (AES-GCM) or an RSA key (RSA-OAEP).
    #[command(long_about = ENCRYPT_ABOUT)]
    Encrypt(EncryptArgs),
    /// Decrypt what `hsm encrypt` (or any AES-GCM / RSA-OAEP implementation) produced.
    #[command(long_about = DECRYPT_ABOUT)]
    Decrypt(DecryptArgs),
    /// Describe the provider: who made it and what it supports.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// A one-command demo: create a keystore, make a key, sign, verify (also with OpenSSL).
    Quickstart(QuickstartArgs),
}

const ENCRYPT_ABOUT: &str = "\
Encrypt a file with an AES key (AES-GCM) or an RSA key (RSA-OAEP).

Output format:
  AES-GCM:   the 12-byte IV, then the ciphertext, then the 16-byte tag (IV || ciphertext || tag).
             A fresh random IV is chosen for every encryption.
  RSA-OAEP:  the ciphertext alone (as `openssl pkeyutl -decrypt` expects).";

const DECRYPT_ABOUT: &str = "\
Decrypt what `hsm encrypt` (or any AES-GCM / RSA-OAEP implementation) produced.

Input format:
  AES-GCM:   the 12-byte IV, then the ciphertext, then the 16-byte tag (IV || ciphertext || tag).
  RSA-OAEP:  the ciphertext alone.
A ciphertext, IV or AAD that does not authenticate is an error (exit status 2) and no plaintext
is written.";

/// Names the provider and key: the one option every provider-facing command has.
#[derive(Debug, Args)]
pub struct Target {
    /// The provider and key, e.g. soft:path=keys.hsm;object=mykey (see `hsm --help`).
    // The value is hidden in help output: a URI holds no secret by design, but one typed by
    // mistake (pin-value=...) must not be echoed back from the environment.
    #[arg(
        short = 'u',
        long = "uri",
        env = "HSM_URI",
        hide_env_values = true,
        value_name = "URI"
    )]
    pub uri: String,
}

/// `hsm keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key (creates the keystore file if it does not exist yet).
    Generate(GenerateArgs),
    /// List the keys.
    List(ListArgs),
    /// Show a key's public key (or, for an AES key, its attributes).
    Show(ShowArgs),
    /// Delete a key, permanently.
    Delete(DeleteArgs),
    /// Cancel a key's scheduled deletion (managed key services such as AWS KMS).
    Restore(RestoreArgs),
}

/// `hsm keys generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The provider, and the new key's label as object=LABEL.
    #[command(flatten)]
    pub target: Target,
    /// The key type.
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = key_type_parser())]
    pub key_type: KeyType,
    /// What the key may do, comma-separated: sign, verify, encrypt, decrypt, wrap, unwrap.
    /// Default: sign,verify for RSA/EC/Ed25519 keys, encrypt,decrypt for AES keys.
    #[arg(long, value_name = "USAGE")]
    pub usage: Option<KeyUsage>,
    /// Allow the key to be wrapped (exported) out of the provider later. Default: never.
    #[arg(long)]
    pub extractable: bool,
    /// Keep the key only as long as this process runs (for trying a provider out).
    #[arg(long)]
    pub session: bool,
}

/// `hsm keys list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The provider (an object= or id= in it is ignored).
    #[command(flatten)]
    pub target: Target,
}

/// `hsm keys show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// The public key's encoding. Default: pem (or the key's attributes, for an AES key).
    #[arg(short, long, value_enum)]
    pub format: Option<PublicKeyFormat>,
    /// Write to FILE instead of standard output (required for der on a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `hsm keys delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// Delete without asking. Without it, the label must be typed on a terminal to confirm;
    /// when not run on a terminal the deletion is refused.
    #[arg(short, long)]
    pub yes: bool,
}

/// `hsm keys restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The provider and the key's id as id=ID (as `hsm keys delete` printed it): a key waiting
    /// for its deletion is no longer found by label.
    #[command(flatten)]
    pub target: Target,
    /// Also enable the key. Without it the key comes back disabled, as the service restores it.
    #[arg(long)]
    pub enable: bool,
}

/// `hsm sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// The signature mechanism, e.g. ecdsa-sha256, rsa-pss-sha256, rsa-pkcs1-sha256, ed25519.
    /// Default from the key: ec-p256 ecdsa-sha256, ec-p384 ecdsa-sha384, ec-p521 ecdsa-sha512,
    /// rsa-* rsa-pkcs1-sha256, ed25519 ed25519. ECDSA signatures are DER (as OpenSSL expects);
    /// add -fixed (ecdsa-sha256-fixed) for r || s.
    #[arg(short, long, value_name = "MECHANISM")]
    pub mechanism: Option<Mechanism>,
    /// The input is a digest already computed with the mechanism's hash, not the message.
    #[arg(long)]
    pub digest: bool,
    /// The message (or digest) to sign; - reads standard input.
    #[arg(short = 'i', long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Write the signature to FILE (raw bytes unless --format says otherwise). Without it the
    /// signature is printed in base64.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The signature's encoding. der: the raw signature bytes (DER for ECDSA).
    #[arg(short, long, value_enum)]
    pub format: Option<SignatureEncoding>,
}

/// `hsm verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// The signature mechanism (default from the key type, as for `hsm sign`).
    #[arg(short, long, value_name = "MECHANISM")]
    pub mechanism: Option<Mechanism>,
    /// The input is a digest already computed with the mechanism's hash, not the message.
    #[arg(long)]
    pub digest: bool,
    /// The signed message (or digest); - reads standard input.
    #[arg(short = 'i', long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// The signature file.
    #[arg(short, long, value_name = "FILE")]
    pub signature: PathBuf,
    /// The signature file's encoding.
    #[arg(long, value_enum, default_value_t = SignatureEncoding::Der)]
    pub signature_format: SignatureEncoding,
}

/// `hsm encrypt`
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// aes-gcm (default for AES keys) or rsa-oaep-sha256 (default for RSA keys; also
    /// rsa-oaep-sha1/-sha384/-sha512).
    #[arg(short, long, value_name = "MECHANISM")]
    pub mechanism: Option<Mechanism>,
    /// The plaintext; - reads standard input.
    #[arg(short = 'i', long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the result (see the format above).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Additional authenticated data (AES-GCM only): must be given again to decrypt.
    #[arg(long, value_name = "FILE")]
    pub aad: Option<PathBuf>,
}

/// `hsm decrypt`
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The provider and key.
    #[command(flatten)]
    pub target: Target,
    /// aes-gcm (default for AES keys) or rsa-oaep-sha256 (default for RSA keys).
    #[arg(short, long, value_name = "MECHANISM")]
    pub mechanism: Option<Mechanism>,
    /// The ciphertext (see the format above); - reads standard input.
    #[arg(short = 'i', long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the plaintext (created readable by the owner only). Default: standard
    /// output, unless that is a terminal and the plaintext is not text.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The additional authenticated data given to encrypt (AES-GCM only).
    #[arg(long, value_name = "FILE")]
    pub aad: Option<PathBuf>,
}

/// `hsm provider ...`
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// The provider's vendor, model and firmware, and the key types and mechanisms it supports.
    Info(InfoArgs),
}

/// `hsm provider info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The provider.
    #[command(flatten)]
    pub target: Target,
}

/// `hsm quickstart`
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// The keystore file to use, created if missing. The demo's files go into a directory
    /// hsm-quickstart/ next to it.
    #[arg(long, value_name = "PATH", default_value = "hsm-quickstart.hsm")]
    pub keystore: PathBuf,
}

/// Key types with their names listed in `--help` and checked by clap.
fn key_type_parser() -> impl TypedValueParser<Value = KeyType> {
    PossibleValuesParser::new(KeyType::ALL.iter().map(|k| k.as_str()))
        .try_map(|name| name.parse::<KeyType>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_option_takes_a_secret() {
        for flag in ["--pin", "--passphrase", "--password"] {
            let r = Cli::try_parse_from(["hsm", flag, "1234", "keys", "list", "-u", "soft:"]);
            assert!(r.is_err(), "{flag} must not exist");
        }
    }
}
