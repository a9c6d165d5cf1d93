//! Every operation through `Traced` gets one span with the documented fields, and no secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hsm_core::{GenerateKeyRequest, HashAlg, KeyId, KeyType, Mechanism, Secret, SignInput, Traced};
use hsm_soft::{KdfParams, SoftBuilder};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spans_carry_operation_fields_and_no_secrets() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let passphrase = "tracing-test-passphrase-9f3a";
    let p = SoftBuilder::file(dir.path().join("k.hsm"))
        .passphrase(Secret::from(passphrase.to_string()))
        .create_if_missing(true)
        .kdf_params(KdfParams::INSECURE_FOR_TESTS)
        .build()
        .await
        .unwrap();
    let p = Traced::wrap(Arc::new(p));
    let key = p
        .generate_key(&GenerateKeyRequest::new("release-key", KeyType::EcP256))
        .await
        .unwrap();
    let message = b"confidential-message-body-77";
    p.sign(
        &key.id,
        &Mechanism::ecdsa(HashAlg::Sha256),
        SignInput::Message(message),
    )
    .await
    .unwrap();
    let _ = p.public_key(&KeyId::new("no-such-key")).await;

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let sign_line = out
        .lines()
        .find(|l| l.contains("operation=\"sign\"") && l.contains("close"))
        .unwrap_or_else(|| panic!("no closed sign span in:\n{out}"));
    for field in [
        "provider=\"soft\"",
        "key=\"release-key\"",
        "mechanism=\"ecdsa-sha256\"",
        "outcome=\"ok\"",
        "duration_us=",
    ] {
        assert!(
            sign_line.contains(field),
            "{field} missing from {sign_line}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.contains("operation=\"public_key\"")
                && l.contains("outcome=\"key-not-found\"")),
        "failed operation not recorded:\n{out}"
    );
    assert!(!out.contains(passphrase), "passphrase in the trace");
    assert!(
        !out.contains("confidential-message-body"),
        "signed data in the trace"
    );
}
