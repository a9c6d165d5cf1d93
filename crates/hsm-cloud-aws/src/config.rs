//! Configuring the AWS KMS provider: a typed builder, or an `aws-kms:` URI.
//!
//! ```text
//! aws-kms:region=eu-west-1
//! aws-kms:region=us-east-1;object=alias/release?endpoint=http://127.0.0.1:4566&access-key-source=env:AWS_ACCESS_KEY_ID&secret-key-source=env:AWS_SECRET_ACCESS_KEY
//! ```
//! - `region`: the AWS region (otherwise the standard chain's: `AWS_REGION`, the profile).
//! - `object` / `id`: the key a command acts on: key id, key ARN or `alias/name`.
//! - `endpoint`: another endpoint (a VPC endpoint, FIPS, or an emulator on loopback).
//! - `access-key-source` and `secret-key-source` (both or neither): static credentials, read
//!   from `env:NAME` or `file:PATH`, never from the URI itself. Without them the standard AWS
//!   chain is used (environment, profile, SSO, web identity, container and instance roles).
//! - `x-deadline-ms`, `x-max-attempts`, `x-rate-limit` (calls per second): the network policy.

use std::time::Duration;

use hsm_core::remote::{RateLimit, RemotePolicy};
use hsm_core::{HsmError, PinSource, ProviderUri, Secret};

use crate::provider::AwsKmsProvider;

/// The path attributes an `aws-kms:` URI may carry.
pub const URI_ATTRS: &[&str] = &["region", "object", "id"];
/// The query attributes an `aws-kms:` URI may carry.
pub const URI_QUERY: &[&str] = &[
    "endpoint",
    "access-key-source",
    "secret-key-source",
    "x-deadline-ms",
    "x-max-attempts",
    "x-rate-limit",
];

/// Where the credentials come from.
#[derive(Clone, Debug)]
pub(crate) enum Creds {
    /// The standard AWS chain.
    Chain,
    /// Fixed keys (tests, emulators). `Secret`'s `Debug` prints no bytes.
    Static {
        access_key: Secret,
        secret_key: Secret,
    },
}

/// Builds an [`AwsKmsProvider`]. Validated in [`AwsKmsBuilder::build`].
#[derive(Clone, Debug)]
pub struct AwsKmsBuilder {
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) creds: Creds,
    pub(crate) policy: RemotePolicy,
    pub(crate) public_key_ttl: Duration,
}

impl Default for AwsKmsBuilder {
    fn default() -> Self {
        AwsKmsBuilder {
            region: None,
            endpoint: None,
            creds: Creds::Chain,
            policy: RemotePolicy::default(),
            public_key_ttl: Duration::from_secs(3600),
        }
    }
}

impl AwsKmsBuilder {
    /// The standard AWS chain for region and credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// From an `aws-kms:` URI (see the module docs).
    pub fn from_uri(uri: &ProviderUri) -> Result<Self, HsmError> {
        if uri.scheme != "aws-kms" {
            return Err(HsmError::invalid(format!(
                "an AWS KMS provider URI starts with aws-kms:, not {}:",
                uri.scheme
            )));
        }
        uri.check_known(URI_ATTRS, URI_QUERY)?;
        let mut b = AwsKmsBuilder::new();
        if let Some(r) = uri.attr("region") {
            b = b.region(r);
        }
        if let Some(e) = uri.query("endpoint") {
            b = b.endpoint(e);
        }
        match (
            uri.query("access-key-source"),
            uri.query("secret-key-source"),
        ) {
            (None, None) => {}
            (Some(a), Some(s)) => {
                let read = |src: &str, what: &str| {
                    let source: PinSource = src.parse().map_err(|_| {
                        HsmError::invalid(format!("{what} must be env:NAME or file:PATH"))
                    })?;
                    if source == PinSource::Prompt {
                        return Err(HsmError::invalid(format!(
                            "{what} must be env:NAME or file:PATH"
                        )));
                    }
                    source.resolve(|| unreachable!("not a prompt"))
                };
                b.creds = Creds::Static {
                    access_key: read(a, "access-key-source")?,
                    secret_key: read(s, "secret-key-source")?,
                };
            }
            _ => {
                return Err(HsmError::invalid(
                    "access-key-source and secret-key-source go together",
                ));
            }
        }
        let num = |name: &str| -> Result<Option<f64>, HsmError> {
            uri.query(name)
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite() && *n > 0.0)
                        .ok_or_else(|| {
                            HsmError::invalid(format!("{name}={v}: expected a positive number"))
                        })
                })
                .transpose()
        };
        if let Some(ms) = num("x-deadline-ms")? {
            b.policy.deadline = Duration::from_millis(ms as u64);
        }
        if let Some(n) = num("x-max-attempts")? {
            b.policy.retry.max_attempts = n as u32;
        }
        if let Some(rate) = num("x-rate-limit")? {
            b.policy.rate_limit = Some(RateLimit {
                per_second: rate,
                burst: rate.ceil() as u32,
            });
        }
        Ok(b)
    }

    /// The AWS region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Another endpoint than the region's (`http://127.0.0.1:PORT` for an emulator).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Fixed credentials instead of the standard chain.
    pub fn static_credentials(mut self, access_key: Secret, secret_key: Secret) -> Self {
        self.creds = Creds::Static {
            access_key,
            secret_key,
        };
        self
    }

    /// Deadline, retries and rate limit (see [`hsm_core::remote`]).
    pub fn policy(mut self, policy: RemotePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a public key fetched from KMS is used before it is fetched again.
    pub fn public_key_ttl(mut self, ttl: Duration) -> Self {
        self.public_key_ttl = ttl;
        self
    }

    /// Checks the settings and connects (no call to KMS is made until the first operation).
    pub async fn build(self) -> Result<AwsKmsProvider, HsmError> {
        AwsKmsProvider::connect(self).await
    }
}

/// The SDK settings every AWS client here starts from (KMS, CloudHSM): region, endpoint and
/// credentials, from the standard AWS chain where not given. The SDK's own retries are off:
/// `hsm_core::remote` retries, and two stacked policies would multiply the attempts.
pub(crate) async fn sdk_config(
    region: Option<&str>,
    endpoint: Option<&str>,
    creds: &Creds,
) -> Result<aws_config::SdkConfig, HsmError> {
    use aws_sdk_kms::config::retry::RetryConfig;
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_owned()));
    }
    if let Some(e) = endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            return Err(HsmError::invalid(format!(
                "endpoint {e:?} must be an http:// or https:// URL"
            )));
        }
        loader = loader.endpoint_url(e);
    }
    if let Creds::Static {
        access_key,
        secret_key,
    } = creds
    {
        let text = |s: &Secret, what: &str| {
            String::from_utf8(s.expose().to_vec())
                .map_err(|_| HsmError::invalid(format!("the {what} is not UTF-8")))
        };
        loader = loader.credentials_provider(Credentials::new(
            text(access_key, "access key id")?,
            text(secret_key, "secret access key")?,
            None,
            None,
            "hsm-rs static",
        ));
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(HsmError::invalid(
            "no AWS region: set region= (or AWS_REGION, or one in the AWS profile)",
        ));
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(uri: &str) -> Result<AwsKmsBuilder, HsmError> {
        AwsKmsBuilder::from_uri(&ProviderUri::parse(uri)?)
    }

    #[test]
    fn uris_are_validated() {
        let b = from(
            "aws-kms:region=eu-west-1;object=alias/release?x-deadline-ms=2500&x-rate-limit=50",
        )
        .unwrap();
        assert_eq!(b.region.as_deref(), Some("eu-west-1"));
        assert_eq!(b.policy.deadline, Duration::from_millis(2500));
        assert_eq!(b.policy.rate_limit.map(|r| r.burst), Some(50));
        assert!(matches!(b.creds, Creds::Chain));

        let var = "HSM_RS_TEST_AWS_URI_SECRET";
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var(var, "not-a-real-secret") };
        let b = from(&format!(
            "aws-kms:region=us-east-1?access-key-source=env:{var}&secret-key-source=env:{var}"
        ))
        .unwrap();
        let shown = format!("{b:?}");
        assert!(!shown.contains("not-a-real-secret"), "{shown}");

        for (uri, says) in [
            ("soft:path=x", "aws-kms:"),
            ("aws-kms:region=x;colour=blue", "colour"),
            ("aws-kms:region=x?access-key-source=env:A", "go together"),
            (
                "aws-kms:region=x?access-key-source=prompt&secret-key-source=env:B",
                "env:NAME",
            ),
            ("aws-kms:region=x?x-deadline-ms=soon", "x-deadline-ms"),
            ("aws-kms:region=x?x-rate-limit=-3", "x-rate-limit"),
        ] {
            let e = from(uri).unwrap_err();
            assert!(matches!(e, HsmError::InvalidInput { .. }), "{uri}: {e:?}");
            assert!(e.to_string().contains(says), "{uri}: {e}");
        }
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_before_any_call() {
        let e = AwsKmsBuilder::new()
            .region("us-east-1")
            .endpoint("127.0.0.1:4566")
            .static_credentials(Secret::new("a"), Secret::new("b"))
            .build()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
    }
}
