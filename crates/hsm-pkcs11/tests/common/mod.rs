//! The real PKCS#11 implementations the tests run against, as `cargo xtask test-sims` (or
//! `cargo xtask sims up`) prepares them: each is described by `HSM_TEST_<PEER>_*` variables.
//! Without them a test prints why it is skipped, or fails under `HSM_TEST_REQUIRE_ALL=1`.

#![allow(dead_code)]

use hsm_core::{PinSource, Secret};
use hsm_pkcs11::Pkcs11Builder;

/// One PKCS#11 implementation under test.
pub struct Peer {
    pub name: &'static str,
    pub module: String,
    pub token: String,
    pub pin_file: Option<String>,
    pub init_args: Option<String>,
}

impl Peer {
    /// A builder for this peer's token.
    pub fn builder(&self) -> Pkcs11Builder {
        let mut b = Pkcs11Builder::new(&self.module).token_label(&self.token);
        b = match &self.pin_file {
            Some(f) => b.pin_source(PinSource::File(f.into())),
            // NSS's database made with --empty-password.
            None => b.pin(Secret::new(Vec::new())),
        };
        if let Some(a) = &self.init_args {
            b = b.init_args(a);
        }
        b
    }

    /// The user PIN, for tools that need it (pkcs11-tool).
    pub fn pin(&self) -> String {
        self.pin_file
            .as_ref()
            .map(|f| {
                std::fs::read_to_string(f)
                    .expect("pin file")
                    .trim_end()
                    .to_owned()
            })
            .unwrap_or_default()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The peer `name` (`SOFTHSM2`, `KRYOPTIC`, `NSS`), or `None` after printing why it is skipped.
pub fn peer(name: &'static str) -> Option<Peer> {
    let module = var(&format!("HSM_TEST_{name}_MODULE"));
    let Some(module) = module else {
        let why = format!(
            "HSM_TEST_{name}_MODULE is not set: run the tests through `cargo xtask test-sims`, or \
             `eval \"$(cargo xtask sims up)\"` first"
        );
        assert!(var("HSM_TEST_REQUIRE_ALL").is_none(), "{why}");
        println!("skipped: {why}");
        return None;
    };
    let token =
        var(&format!("HSM_TEST_{name}_TOKEN")).unwrap_or_else(|| "NSS Certificate DB".into());
    Some(Peer {
        name,
        module,
        token,
        pin_file: var(&format!("HSM_TEST_{name}_PIN_FILE")),
        init_args: var(&format!("HSM_TEST_{name}_INIT_ARGS")),
    })
}
