//! The whole conformance suite against both AWS KMS emulators. Where one fakes a behaviour the
//! other does for real, that case runs on the other one, and the skip says why.

mod common;

use std::sync::Arc;

use hsm_core::conformance::{SuiteOptions, run_with};

const RSA: [&str; 3] = ["rsa-2048", "rsa-3072", "rsa-4096"];
const HASHES: [&str; 3] = ["sha256", "sha384", "sha512"];
/// The curves and the one hash KMS pairs with each.
const EC: [(&str, &str); 3] = [
    ("ec-p256", "sha256"),
    ("ec-p384", "sha384"),
    ("ec-p521", "sha512"),
];

/// Both emulators sign RSA-PSS with the longest salt the key allows; AWS KMS uses a salt as long
/// as the hash, which is what the provider claims and the independent verifier checks.
fn without_pss(mut opts: SuiteOptions) -> SuiteOptions {
    for kt in RSA {
        for h in HASHES {
            opts = opts.skip(
                format!("sign_verify {kt} rsa-pss-{h} "),
                "both emulators sign RSA-PSS with the longest salt, AWS KMS with the hash's \
                 length; no peer here signs PSS as AWS does",
            );
        }
    }
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_moto() {
    let Some(p) = common::provider(common::MOTO).await else {
        return;
    };
    const DIGEST: &str =
        "moto ignores MessageType=DIGEST (it hashes the digest again): runs on local-kms";
    let mut opts = without_pss(SuiteOptions::default());
    for kt in RSA {
        for h in HASHES {
            opts = opts.skip(
                format!("sign_verify {kt} rsa-pkcs1-{h} sign-digest"),
                DIGEST,
            );
        }
        for h in ["sha1", "sha256"] {
            opts = opts.skip(
                format!("encrypt_decrypt {kt} rsa-oaep-{h}"),
                "moto's RSA encryption is not OAEP (an AES-GCM blob): runs on local-kms",
            );
        }
    }
    for (kt, h) in EC {
        for format in ["", "-fixed"] {
            opts = opts.skip(
                format!("sign_verify {kt} ecdsa-{h}{format} sign-digest"),
                DIGEST,
            );
        }
    }
    run_with(Arc::new(p), opts).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_kms() {
    let Some(p) = common::provider(common::LOCALKMS).await else {
        return;
    };
    run_with(Arc::new(p), without_pss(SuiteOptions::default()))
        .await
        .assert_passed();
}
