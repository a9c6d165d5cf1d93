//! The keystore file: persistence, wrong passphrases, damage, locking, atomic writes.

use std::path::Path;

use hsm_core::{
    GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyFilter, KeyType, Mechanism, Secret,
    SignInput,
};
use hsm_soft::{KdfParams, SoftBuilder, SoftProvider};

fn pass(s: &str) -> Secret {
    Secret::from(s.to_string())
}

async fn open(path: &Path, passphrase: &str) -> Result<SoftProvider, HsmError> {
    SoftBuilder::file(path)
        .passphrase(pass(passphrase))
        .create_if_missing(true)
        .kdf_params(KdfParams::INSECURE_FOR_TESTS)
        .build()
        .await
}

async fn salvage(path: &Path, passphrase: &str) -> Result<SoftProvider, HsmError> {
    SoftBuilder::file(path)
        .passphrase(pass(passphrase))
        .salvage(true)
        .build()
        .await
}

/// A keystore with three P-256 keys `a`, `b`, `c`; returns their public keys.
async fn three_keys(path: &Path) -> Vec<hsm_core::PublicKey> {
    let p = open(path, "correct horse").await.unwrap();
    let mut pubs = Vec::new();
    for label in ["a", "b", "c"] {
        let k = p
            .generate_key(&GenerateKeyRequest::new(label, KeyType::EcP256))
            .await
            .unwrap();
        pubs.push(p.public_key(&k.id).await.unwrap());
    }
    pubs
}

async fn sign_with(p: &SoftProvider, label: &str) -> Result<bool, HsmError> {
    let k = p.find_keys(&KeyFilter::label(label)).await?;
    let k = k.first().ok_or_else(|| HsmError::key_not_found(label))?;
    let m = Mechanism::ecdsa(HashAlg::Sha256);
    let sig = p.sign(&k.id, &m, SignInput::Message(b"still here")).await?;
    let public = p.public_key(&k.id).await?;
    hsm_core::verify::verify_signature(&public, &m, SignInput::Message(b"still here"), &sig)
}

#[tokio::test]
async fn keys_survive_reopen_and_stay_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    let pubs = three_keys(&path).await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("correct horse"), "passphrase in the file");
    // Labels and key material are inside the sealed records.
    assert!(!text.contains("\"label\""), "metadata stored in the clear");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keystore readable by others");
    }

    let p = open(&path, "correct horse").await.unwrap();
    assert_eq!(p.find_keys(&KeyFilter::all()).await.unwrap().len(), 3);
    for (label, expected) in ["a", "b", "c"].iter().zip(&pubs) {
        let k = &p.find_keys(&KeyFilter::label(*label)).await.unwrap()[0];
        assert_eq!(&p.public_key(&k.id).await.unwrap(), expected);
        assert!(sign_with(&p, label).await.unwrap());
    }
}

#[tokio::test]
async fn wrong_passphrase_is_clear_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    three_keys(&path).await;
    let before = std::fs::read(&path).unwrap();
    let e = open(&path, "wrong horse").await.unwrap_err();
    assert!(matches!(e, HsmError::Unauthenticated { .. }), "{e:?}");
    assert!(e.to_string().contains("wrong passphrase"), "{e}");
    assert!(
        !format!("{e:?}").contains("wrong horse"),
        "passphrase in the error"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "file changed");
}

#[tokio::test]
async fn truncated_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    three_keys(&path).await;
    let full = std::fs::read(&path).unwrap();
    let cut = &full[..full.len() - 40];
    std::fs::write(&path, cut).unwrap();
    let e = open(&path, "correct horse").await.unwrap_err();
    assert!(matches!(e, HsmError::Corrupted { .. }), "{e:?}");
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        cut,
        "a damaged file was rewritten"
    );

    // Salvage mode still refuses a cut-off line (there is no way to tell a half record), but an
    // empty file is also refused rather than treated as a new keystore.
    std::fs::write(&path, b"").unwrap();
    let e = open(&path, "correct horse").await.unwrap_err();
    assert!(matches!(e, HsmError::Corrupted { .. }), "{e:?}");
    assert!(std::fs::read(&path).unwrap().is_empty());
}

#[tokio::test]
async fn a_damaged_record_loses_no_other_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    three_keys(&path).await;
    // Damage the ciphertext of the second record (line 3).
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let sealed_at = lines[2].find("\"sealed\":\"").unwrap() + 20;
    let mut bytes = lines[2].clone().into_bytes();
    bytes[sealed_at] = if bytes[sealed_at] == b'A' { b'B' } else { b'A' };
    lines[2] = String::from_utf8(bytes).unwrap();
    let damaged = lines.join("\n") + "\n";
    std::fs::write(&path, &damaged).unwrap();

    let e = open(&path, "correct horse").await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HsmError::Corrupted { .. }), "{e:?}");
    assert!(
        msg.contains("line 3") && msg.contains("2 key(s) are intact"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);

    // Salvage mode: the two intact keys open read-only and still sign.
    let p = salvage(&path, "correct horse").await.unwrap();
    assert!(p.is_read_only());
    let left = p.find_keys(&KeyFilter::all()).await.unwrap();
    assert_eq!(left.len(), 2);
    for k in &left {
        assert!(sign_with(&p, &k.attributes.label).await.unwrap());
    }
    let e = p
        .generate_key(&GenerateKeyRequest::new("d", KeyType::EcP256))
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::PermissionDenied { .. }), "{e:?}");
    drop(p);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
}

#[tokio::test]
async fn a_second_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    let first = open(&path, "correct horse").await.unwrap();
    let e = open(&path, "correct horse").await.unwrap_err();
    assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("another process"), "{e}");
    drop(first);
    open(&path, "correct horse").await.unwrap();
}

#[tokio::test]
async fn existing_keystores_and_labels_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    three_keys(&path).await;
    // "Create" with another passphrase must not replace the existing keystore.
    let e = open(&path, "another passphrase").await.unwrap_err();
    assert!(matches!(e, HsmError::Unauthenticated { .. }), "{e:?}");
    let p = open(&path, "correct horse").await.unwrap();
    let e = p
        .generate_key(&GenerateKeyRequest::new("a", KeyType::EcP384))
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(
        p.find_keys(&KeyFilter::label("a")).await.unwrap()[0].key_type,
        KeyType::EcP256
    );
    // No temporary files are left behind by the atomic writes.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[tokio::test]
async fn session_keys_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.hsm");
    {
        let p = open(&path, "correct horse").await.unwrap();
        p.generate_key(&GenerateKeyRequest::new("temp", KeyType::EcP256).with_persistent(false))
            .await
            .unwrap();
        p.generate_key(&GenerateKeyRequest::new("kept", KeyType::EcP256))
            .await
            .unwrap();
    }
    let p = open(&path, "correct horse").await.unwrap();
    let labels: Vec<_> = p
        .find_keys(&KeyFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.attributes.label)
        .collect();
    assert_eq!(labels, ["kept"]);
}

#[tokio::test]
async fn missing_keystore_and_missing_passphrase_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let e = SoftBuilder::file(dir.path().join("none.hsm"))
        .passphrase(pass("x"))
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = SoftBuilder::file(dir.path().join("none.hsm"))
        .create_if_missing(true)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::Unauthenticated { .. }), "{e:?}");
    let e = SoftBuilder::file(dir.path().join("no-such-dir/k.hsm"))
        .passphrase(pass("x"))
        .create_if_missing(true)
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let b = SoftBuilder::file("k.hsm").passphrase(pass("super secret passphrase"));
    let text = format!("{b:?}");
    assert!(!text.contains("super secret"), "{text}");
}
