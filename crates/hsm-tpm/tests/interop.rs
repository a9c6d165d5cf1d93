//! Key files work both ways with tpm2-openssl (Debian's OpenSSL 3 provider for TPM 2.0): a key
//! hsm-tpm made signs through `openssl pkeyutl -provider tpm2`, and a key `openssl genpkey
//! -provider tpm2` made signs through hsm-tpm. Signatures are checked by RustCrypto and by
//! OpenSSL's own software verifier, never only by the TPM.
//!
//! swtpm serves one connection at a time, so the provider is dropped before openssl runs.

use std::path::Path;
use std::process::Command;

use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyType, Mechanism, PublicKey, SignInput,
};
use hsm_tpm::TpmBuilder;

mod common;
use common::tcti;

const MESSAGE: &[u8] = b"signed across two TPM stacks";

/// Runs openssl with the tpm2 provider pointed at `tcti`; panics with its output on failure.
fn openssl(tcti: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .env("TPM2OPENSSL_TCTI", tcti)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mechanism(key_type: KeyType) -> Mechanism {
    if key_type.family() == hsm_core::KeyFamily::Rsa {
        Mechanism::RsaPkcs1v15 {
            hash: HashAlg::Sha256,
        }
    } else {
        Mechanism::ecdsa(HashAlg::Sha256)
    }
}

fn verify(public: &PublicKey, key_type: KeyType, sig: &[u8]) -> bool {
    hsm_core::verify::verify_signature(
        public,
        &mechanism(key_type),
        SignInput::Message(MESSAGE),
        sig,
    )
    .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_work_with_tpm2_openssl_both_ways() {
    let Some(tcti) = tcti() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let msg = work.path().join("msg");
    std::fs::write(&msg, MESSAGE).unwrap();
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();

    // Ours, signed by openssl.
    let tpm = TpmBuilder::new(&keys)
        .tcti(&tcti)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut made = Vec::new();
    for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let key = tpm
            .generate_key(&GenerateKeyRequest::new(
                format!("ours-{key_type}"),
                key_type,
            ))
            .await
            .unwrap();
        let public = tpm.public_key(&key.id).await.unwrap();
        let file = tpm
            .key_file(&key.id)
            .await
            .unwrap()
            .expect("a persistent key has a file");
        made.push((key_type, public, file));
    }
    drop(tpm);
    for (key_type, public, file) in &made {
        let sig = work.path().join(format!("{key_type}.sig"));
        openssl(
            &tcti,
            &[
                "pkeyutl",
                "-provider",
                "tpm2",
                "-provider",
                "default",
                "-sign",
                "-rawin",
                "-digest",
                "sha256",
                "-inkey",
                path(file),
                "-in",
                path(&msg),
                "-out",
                path(&sig),
            ],
        );
        let sig = std::fs::read(&sig).unwrap();
        assert!(
            verify(public, *key_type, &sig),
            "openssl's {key_type} signature with our key"
        );
    }

    // Theirs, adopted and signed by hsm-tpm, checked by openssl in software.
    let foreign = work.path().join("openssl-key.pem");
    openssl(
        &tcti,
        &[
            "genpkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "group:P-256",
            "-out",
            path(&foreign),
        ],
    );
    let public_pem = work.path().join("openssl-key.pub.pem");
    openssl(
        &tcti,
        &[
            "pkey",
            "-provider",
            "tpm2",
            "-provider",
            "default",
            "-in",
            path(&foreign),
            "-pubout",
            "-out",
            path(&public_pem),
        ],
    );
    let tpm = TpmBuilder::new(&keys)
        .tcti(&tcti)
        .unwrap()
        .build()
        .await
        .unwrap();
    let text = std::fs::read_to_string(&foreign).unwrap();
    let key = tpm.import_key_file("from-openssl", &text).await.unwrap();
    assert_eq!(key.key_type, KeyType::EcP256);
    let sig = tpm
        .sign(
            &key.id,
            &mechanism(KeyType::EcP256),
            SignInput::Message(MESSAGE),
        )
        .await
        .unwrap();
    let public = tpm.public_key(&key.id).await.unwrap();
    assert!(verify(&public, KeyType::EcP256, &sig));
    // Adopting it again under the same label is refused; garbage is refused with the reason.
    assert!(matches!(
        tpm.import_key_file("from-openssl", &text).await,
        Err(HsmError::AlreadyExists { .. })
    ));
    let err = tpm.import_key_file("junk", "not a key").await.unwrap_err();
    assert!(
        matches!(&err, HsmError::InvalidInput { reason } if reason.contains("TSS2 PRIVATE KEY")),
        "{err:?}"
    );
    drop(tpm);
    let sig_file = work.path().join("ours.sig");
    std::fs::write(&sig_file, &sig).unwrap();
    let out = openssl(
        &tcti,
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            path(&public_pem),
            "-rawin",
            "-digest",
            "sha256",
            "-in",
            path(&msg),
            "-sigfile",
            path(&sig_file),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out).contains("Signature Verified Successfully"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
