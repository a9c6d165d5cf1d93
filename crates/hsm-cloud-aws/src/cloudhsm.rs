//! [`CloudHsmClusters`]: AWS CloudHSM cluster management (the `cloudhsmv2` control plane):
//! clusters, their HSMs and health, and backups.
//!
//! This is the management API only. Keys inside a CloudHSM cluster are reached through the
//! cluster's PKCS#11 library (`hsm-pkcs11` with its AWS CloudHSM profile), not through this type.
//!
//! Every call goes through [`hsm_core::remote::Remote`] (deadline, bounded jittered retries,
//! optional rate limit); the SDK's own retries are switched off so there is one retry policy.
//! Listing follows `NextToken` page by page, each page one call under that policy.

use std::fmt;
use std::future::Future;

use aws_sdk_cloudhsmv2::Client;
use aws_sdk_cloudhsmv2::config::http::HttpResponse;
use aws_sdk_cloudhsmv2::config::retry::RetryConfig;
use aws_sdk_cloudhsmv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudhsmv2::types::{Backup, Cluster, ClusterState, Hsm, HsmState};
use hsm_core::remote::{Failure, Idempotency, Remote, RemotePolicy, RemoteStats, all_pages};
use hsm_core::{HsmError, Secret};

use crate::error::error_chain;

/// The provider's name in errors and spans.
const PROVIDER: &str = "aws-cloudhsm";

/// The largest pages AWS serves: `DescribeClusters` and `DescribeBackups` (`MaxResults`).
const CLUSTER_PAGE: i32 = 25;
const BACKUP_PAGE: i32 = 50;

/// One HSM of a cluster, as `DescribeClusters` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HsmInfo {
    /// The HSM's id (`hsm-...`).
    pub id: String,
    /// Its state as AWS names it: `ACTIVE`, `CREATE_IN_PROGRESS`, `DEGRADED`,
    /// `DELETE_IN_PROGRESS`, `DELETED`, or `UNKNOWN` when AWS gave none.
    pub state: String,
    /// AWS's description of the state, if any.
    pub state_message: Option<String>,
    /// The Availability Zone the HSM is in.
    pub availability_zone: Option<String>,
    /// The IPv4 address of the HSM's network interface in the cluster's VPC.
    pub eni_ip: Option<String>,
}

/// A CloudHSM cluster, as `DescribeClusters` reports it. The pre-crypto-officer password and
/// the certificates AWS also returns are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// The cluster's id (`cluster-...`).
    pub id: String,
    /// Its state as AWS names it: `ACTIVE`, `UNINITIALIZED`, `INITIALIZED`, `DEGRADED`,
    /// `CREATE_IN_PROGRESS`, ..., or `UNKNOWN` when AWS gave none.
    pub state: String,
    /// AWS's description of the state, if any.
    pub state_message: Option<String>,
    /// The HSM type (`hsm1.medium`, `hsm2m.medium`).
    pub hsm_type: Option<String>,
    /// How many subnets the cluster maps (AWS: one per Availability Zone it may place HSMs in).
    pub subnet_count: usize,
    /// The cluster's HSMs.
    pub hsms: Vec<HsmInfo>,
    /// The backup policy (`DEFAULT`).
    pub backup_policy: Option<String>,
    /// When the cluster was created, in seconds since the Unix epoch.
    pub created_at: Option<i64>,
}

/// Where a backup was copied from ([`CloudHsmClusters::copy_backup_to_region`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupOrigin {
    /// The id of the backup this one is a copy of.
    pub backup_id: String,
    /// The region that backup is in.
    pub region: Option<String>,
    /// The cluster that backup was taken from.
    pub cluster_id: Option<String>,
}

/// A cluster backup, as `DescribeBackups` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupInfo {
    /// The backup's id (`backup-...`).
    pub id: String,
    /// The cluster it was taken from (absent once that cluster is gone, for some backups).
    pub cluster_id: Option<String>,
    /// Its state as AWS names it: `READY`, `CREATE_IN_PROGRESS`, `PENDING_DELETION`,
    /// `DELETED`, or `UNKNOWN` when AWS gave none.
    pub state: String,
    /// When it was made, in seconds since the Unix epoch.
    pub created_at: Option<i64>,
    /// For a copy made by `CopyBackupToRegion`: the backup it was copied from.
    pub copied_from: Option<BackupOrigin>,
    /// Whether the backup is exempt from the cluster's retention policy.
    pub never_expires: bool,
}

/// How healthy a cluster is, worked out from its state and its HSMs' ([`ClusterInfo::health`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterHealth {
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's state as AWS names it.
    pub cluster_state: String,
    /// HSMs in state `ACTIVE`.
    pub active_hsms: usize,
    /// All the cluster's HSMs, whatever their state.
    pub total_hsms: usize,
    /// Whether any problem was found.
    pub degraded: bool,
    /// What is wrong, one sentence each; empty for a healthy cluster.
    pub problems: Vec<String>,
}

impl ClusterInfo {
    /// The cluster's health. A cluster is degraded when it is not `ACTIVE`, when any HSM is not
    /// `ACTIVE`, when fewer than two HSMs are active (no redundancy: AWS recommends at least two,
    /// in different Availability Zones), or when all active HSMs share one Availability Zone.
    pub fn health(&self) -> ClusterHealth {
        let mut problems = Vec::new();
        if self.state != ClusterState::Active.as_str() {
            problems.push(format!(
                "the cluster is {}{}",
                self.state,
                explained(self.state_message.as_deref())
            ));
        }
        let active: Vec<&HsmInfo> = self
            .hsms
            .iter()
            .filter(|h| h.state == HsmState::Active.as_str())
            .collect();
        for h in self
            .hsms
            .iter()
            .filter(|h| h.state != HsmState::Active.as_str())
        {
            problems.push(format!(
                "HSM {} in {} is {}{}",
                h.id,
                h.availability_zone.as_deref().unwrap_or("an unknown zone"),
                h.state,
                explained(h.state_message.as_deref())
            ));
        }
        match (self.hsms.len(), active.len()) {
            (0, _) => {
                problems.push("the cluster has no HSMs, so nothing can serve requests".into())
            }
            (_, 0) => problems.push("no HSM is active, so nothing can serve requests".into()),
            (_, 1) => problems.push(
                "only one HSM is active: no redundancy (AWS recommends at least two, in \
                 different Availability Zones)"
                    .into(),
            ),
            _ => {
                let mut zones: Vec<&str> = active
                    .iter()
                    .filter_map(|h| h.availability_zone.as_deref())
                    .collect();
                zones.sort_unstable();
                zones.dedup();
                if let [zone] = zones[..] {
                    problems.push(format!(
                        "all {} active HSMs are in {zone}: an outage of that Availability Zone \
                         stops the cluster",
                        active.len()
                    ));
                }
            }
        }
        ClusterHealth {
            cluster_id: self.id.clone(),
            cluster_state: self.state.clone(),
            active_hsms: active.len(),
            total_hsms: self.hsms.len(),
            degraded: !problems.is_empty(),
            problems,
        }
    }
}

/// ` (message)` after a state, when AWS gave one.
fn explained(message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(" ({m})"),
        _ => String::new(),
    }
}

fn hsm_info(h: &Hsm) -> HsmInfo {
    HsmInfo {
        id: h.hsm_id().to_owned(),
        state: h.state().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
        state_message: h.state_message().map(str::to_owned),
        availability_zone: h.availability_zone().map(str::to_owned),
        eni_ip: h.eni_ip().map(str::to_owned),
    }
}

fn cluster_info(c: &Cluster) -> Result<ClusterInfo, HsmError> {
    let id = c
        .cluster_id()
        .ok_or_else(|| malformed("a cluster without a ClusterId"))?;
    Ok(ClusterInfo {
        id: id.to_owned(),
        state: c.state().map_or("UNKNOWN", |s| s.as_str()).to_owned(),
        state_message: c.state_message().map(str::to_owned),
        hsm_type: c.hsm_type().map(str::to_owned),
        subnet_count: c.subnet_mapping().map_or(0, |m| m.len()),
        hsms: c.hsms().iter().map(hsm_info).collect(),
        backup_policy: c.backup_policy().map(|p| p.as_str().to_owned()),
        created_at: c.create_timestamp().map(|t| t.secs()),
    })
}

fn backup_info(b: &Backup) -> BackupInfo {
    BackupInfo {
        id: b.backup_id().to_owned(),
        cluster_id: b.cluster_id().map(str::to_owned),
        state: b
            .backup_state()
            .map_or("UNKNOWN", |s| s.as_str())
            .to_owned(),
        created_at: b.create_timestamp().map(|t| t.secs()),
        copied_from: b.source_backup().map(|id| BackupOrigin {
            backup_id: id.to_owned(),
            region: b.source_region().map(str::to_owned),
            cluster_id: b.source_cluster().map(str::to_owned),
        }),
        never_expires: b.never_expires().unwrap_or(false),
    }
}

/// An answer that lacks what the API promises.
fn malformed(what: &str) -> HsmError {
    HsmError::Backend {
        provider: PROVIDER.into(),
        message: format!("AWS CloudHSM answered with {what}"),
        source: None,
    }
}

/// AWS's generic throttling codes (CloudHSM models none of its own).
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
];

/// How a failed call may be retried.
fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Failure {
    let SdkError::ServiceError(s) = e else {
        // Connection, timeout and construction failures are the same for every AWS service.
        return crate::error::classify(e);
    };
    let status = s.raw().status();
    match s.err().code() {
        Some(code) if THROTTLING.contains(&code) => Failure::Throttled,
        Some(
            "CloudHsmInternalFailureException"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => Failure::Transient,
        Some(_) => Failure::Final,
        // No AWS error code: an HTTP error page from something in between, or a body that did
        // not parse. Only a server error may go away by itself.
        None if status.as_u16() == 429 => Failure::Throttled,
        None if status.is_server_error() => Failure::Transient,
        None => Failure::Final,
    }
}

/// The caller's error for a failed call. `what` says what was being done and names the cluster
/// or backup; no secrets go in.
fn to_hsm<E>(e: SdkError<E, HttpResponse>, what: &str) -> HsmError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, message, status) = match &e {
        SdkError::ServiceError(s) => (
            s.err().code().map(str::to_owned),
            s.err().message().unwrap_or("").to_owned(),
            s.raw().status(),
        ),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            return HsmError::Unavailable {
                reason: format!(
                    "{what}: AWS CloudHSM cannot be reached ({})",
                    error_chain(&e)
                ),
                retryable: true,
                source: Some(Box::new(e)),
            };
        }
        _ => return HsmError::backend(PROVIDER, format!("{what}: {}", error_chain(&e)), e),
    };
    let Some(code) = code else {
        let status = status.as_u16();
        return if (200..300).contains(&status) {
            // The service said yes, but its answer is not what the API defines (a field in
            // the wrong format, say): a retry would get the same answer.
            HsmError::backend(
                PROVIDER,
                format!(
                    "{what}: the answer from AWS CloudHSM could not be parsed ({})",
                    error_chain(&e)
                ),
                e,
            )
        } else {
            HsmError::Unavailable {
                reason: format!(
                    "{what}: AWS CloudHSM answered HTTP {status} without an AWS error code"
                ),
                retryable: status == 429 || status >= 500,
                source: Some(Box::new(e)),
            }
        };
    };
    let reason = format!("{what}: {code}: {message}");
    match code.as_str() {
        "CloudHsmResourceNotFoundException" | "ResourceNotFoundException" => {
            HsmError::KeyNotFound { key: reason }
        }
        "CloudHsmAccessDeniedException" | "AccessDeniedException" => {
            HsmError::PermissionDenied { reason }
        }
        "CloudHsmInvalidRequestException"
        | "CloudHsmTagException"
        | "ValidationException"
        | "SerializationException" => HsmError::InvalidInput { reason },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException" => HsmError::Unauthenticated { reason },
        // An account quota: waiting does not lift it, deleting something or a quota increase
        // does.
        "CloudHsmResourceLimitExceededException" => HsmError::Unavailable {
            reason: format!("{reason} (an account quota is reached)"),
            retryable: false,
            source: Some(Box::new(e)),
        },
        c if THROTTLING.contains(&c) => HsmError::Unavailable {
            reason,
            retryable: true,
            source: Some(Box::new(e)),
        },
        "CloudHsmInternalFailureException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => HsmError::Unavailable {
            reason,
            retryable: true,
            source: Some(Box::new(e)),
        },
        _ => HsmError::backend(PROVIDER, reason, e),
    }
}

/// AWS CloudHSM cluster management: list clusters and backups, check a cluster's health, copy,
/// restore and delete backups.
///
/// Build it with [`CloudHsmClusters::connect`] (region, endpoint, credentials) or from a
/// ready SDK configuration with [`CloudHsmClusters::from_conf`].
pub struct CloudHsmClusters {
    client: Client,
    remote: Remote,
    region: String,
}

impl fmt::Debug for CloudHsmClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudHsmClusters")
            .field("region", &self.region)
            .field("policy", self.remote.policy())
            .finish_non_exhaustive()
    }
}

impl CloudHsmClusters {
    /// Connects to AWS CloudHSM in `region` (otherwise the standard chain's: `AWS_REGION`, the
    /// profile), at `endpoint` if given (a VPC endpoint, or an emulator as
    /// `http://127.0.0.1:PORT`), with `static_credentials` (access key id, secret access key) or
    /// else the standard AWS credential chain. No call is made until the first operation.
    ///
    /// `InvalidInput` for an endpoint that is not an http(s) URL, credentials that are not
    /// UTF-8, no region at all, or a `policy` with a zero deadline or attempt count.
    pub async fn connect(
        region: Option<&str>,
        endpoint: Option<&str>,
        static_credentials: Option<(Secret, Secret)>,
        policy: RemotePolicy,
    ) -> Result<Self, HsmError> {
        let creds = match static_credentials {
            Some((access_key, secret_key)) => crate::config::Creds::Static {
                access_key,
                secret_key,
            },
            None => crate::config::Creds::Chain,
        };
        let sdk = crate::config::sdk_config(region, endpoint, &creds).await?;
        let conf = aws_sdk_cloudhsmv2::config::Builder::from(&sdk);
        Self::from_conf(conf.build(), policy)
    }

    /// From a ready SDK configuration (credentials, region, endpoint, interceptors, HTTP client
    /// as the caller set them). The SDK's own retries are switched off: `policy` retries.
    ///
    /// `InvalidInput` when `conf` has no region, when the SDK refuses it (no behavior version:
    /// set `BehaviorVersion::latest()`), or for a `policy` with a zero deadline or attempt count.
    pub fn from_conf(
        conf: aws_sdk_cloudhsmv2::Config,
        policy: RemotePolicy,
    ) -> Result<Self, HsmError> {
        let remote = Remote::new(PROVIDER, policy)?;
        let region = conf
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| HsmError::invalid("no AWS region for CloudHSM: set one"))?;
        // hsm_core::remote retries; the SDK's retries would multiply the attempts.
        let conf = conf
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        // The SDK panics on a configuration it cannot use (no behavior version); a caller's
        // configuration mistake is an error here, not a crash.
        let client =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Client::from_conf(conf)))
                .map_err(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("no reason given");
                    HsmError::invalid(format!(
                        "the AWS CloudHSM client configuration is not usable: {why}"
                    ))
                })?;
        Ok(CloudHsmClusters {
            client,
            remote,
            region,
        })
    }

    /// The region the clusters are in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SDK client, for CloudHSM calls this type does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The network counters (calls, retries, throttling, timeouts, rate-limit waits).
    pub fn remote_stats(&self) -> RemoteStats {
        self.remote.stats()
    }

    /// One CloudHSM call under the remote policy.
    async fn call<T, E, Fut>(
        &self,
        what: &str,
        idempotency: Idempotency,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, HsmError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.remote
            .call(what, idempotency, classify, |e| to_hsm(e, what), attempt)
            .await
    }

    /// `DescribeClusters`, every page, optionally only the cluster `id`.
    async fn describe_clusters(&self, id: Option<&str>) -> Result<Vec<ClusterInfo>, HsmError> {
        let what = match id {
            Some(id) => format!("describing CloudHSM cluster {id} in {}", self.region),
            None => format!("listing CloudHSM clusters in {}", self.region),
        };
        let what = &what;
        all_pages(|token| async move {
            let page = self
                .call(what, Idempotency::Idempotent, || {
                    let mut req = self
                        .client
                        .describe_clusters()
                        .max_results(CLUSTER_PAGE)
                        .set_next_token(token.clone());
                    if let Some(id) = id {
                        req = req.filters("clusterIds", vec![id.to_owned()]);
                    }
                    req.send()
                })
                .await?;
            let clusters = page.clusters().iter().map(cluster_info);
            Ok((
                clusters.collect::<Result<_, _>>()?,
                page.next_token().map(str::to_owned),
            ))
        })
        .await
    }

    /// Every cluster in the region (`DescribeClusters`, all pages).
    pub async fn clusters(&self) -> Result<Vec<ClusterInfo>, HsmError> {
        self.describe_clusters(None).await
    }

    /// The cluster `id` (`DescribeClusters` filtered by cluster id). `KeyNotFound`, naming the
    /// cluster and region, when there is none.
    pub async fn cluster(&self, id: &str) -> Result<ClusterInfo, HsmError> {
        self.describe_clusters(Some(id))
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| HsmError::KeyNotFound {
                key: format!(
                    "AWS CloudHSM cluster {id} (no such cluster in {})",
                    self.region
                ),
            })
    }

    /// The health of cluster `id` (see [`ClusterInfo::health`]): one `DescribeClusters` call.
    pub async fn health(&self, id: &str) -> Result<ClusterHealth, HsmError> {
        Ok(self.cluster(id).await?.health())
    }

    /// The backups in the region, or only those of cluster `cluster_id` (`DescribeBackups`, all
    /// pages, filtered by cluster id), newest first as AWS sorts them.
    pub async fn backups(&self, cluster_id: Option<&str>) -> Result<Vec<BackupInfo>, HsmError> {
        let what = match cluster_id {
            Some(id) => format!("listing the backups of CloudHSM cluster {id}"),
            None => format!("listing CloudHSM backups in {}", self.region),
        };
        let what = &what;
        all_pages(|token| async move {
            let page = self
                .call(what, Idempotency::Idempotent, || {
                    let mut req = self
                        .client
                        .describe_backups()
                        .max_results(BACKUP_PAGE)
                        .set_next_token(token.clone());
                    if let Some(id) = cluster_id {
                        req = req.filters("clusterIds", vec![id.to_owned()]);
                    }
                    req.send()
                })
                .await?;
            Ok((
                page.backups().iter().map(backup_info).collect(),
                page.next_token().map(str::to_owned),
            ))
        })
        .await
    }

    /// Starts copying backup `backup_id` to `destination_region` (`CopyBackupToRegion`). The
    /// copy gets a new id there: list it with [`CloudHsmClusters::backups`] on a client for that
    /// region, where its [`BackupInfo::copied_from`] names this backup.
    ///
    /// Not repeated automatically after an unknown outcome (a timeout, a server error), since a
    /// second request would make a second copy.
    pub async fn copy_backup_to_region(
        &self,
        backup_id: &str,
        destination_region: &str,
    ) -> Result<(), HsmError> {
        let what = format!("copying CloudHSM backup {backup_id} to {destination_region}");
        self.call(&what, Idempotency::NotIdempotent, || {
            self.client
                .copy_backup_to_region()
                .backup_id(backup_id)
                .destination_region(destination_region)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Restores backup `backup_id` from `PENDING_DELETION` (`RestoreBackup`); returns the
    /// backup as it is afterwards.
    pub async fn restore_backup(&self, backup_id: &str) -> Result<BackupInfo, HsmError> {
        let what = format!("restoring CloudHSM backup {backup_id}");
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client.restore_backup().backup_id(backup_id).send()
            })
            .await?;
        out.backup()
            .map(backup_info)
            .ok_or_else(|| malformed(&format!("no backup after {what}")))
    }

    /// Deletes backup `backup_id` (`DeleteBackup`): AWS keeps it in `PENDING_DELETION` for 7
    /// days, during which [`CloudHsmClusters::restore_backup`] brings it back. Returns the backup
    /// as it is afterwards.
    pub async fn delete_backup(&self, backup_id: &str) -> Result<BackupInfo, HsmError> {
        let what = format!("deleting CloudHSM backup {backup_id}");
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client.delete_backup().backup_id(backup_id).send()
            })
            .await?;
        out.backup()
            .map(backup_info)
            .ok_or_else(|| malformed(&format!("no backup after {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudhsmv2::error::ErrorMetadata;
    use aws_sdk_cloudhsmv2::operation::describe_clusters::DescribeClustersError;

    fn hsm(id: &str, state: &str, az: &str) -> HsmInfo {
        HsmInfo {
            id: id.into(),
            state: state.into(),
            state_message: None,
            availability_zone: Some(az.into()),
            eni_ip: None,
        }
    }

    fn cluster(state: &str, hsms: Vec<HsmInfo>) -> ClusterInfo {
        ClusterInfo {
            id: "cluster-abcdefghijk".into(),
            state: state.into(),
            state_message: None,
            hsm_type: Some("hsm2m.medium".into()),
            subnet_count: 2,
            hsms,
            backup_policy: Some("DEFAULT".into()),
            created_at: None,
        }
    }

    #[test]
    fn health_names_each_problem() {
        let two_zones = cluster(
            "ACTIVE",
            vec![
                hsm("hsm-a", "ACTIVE", "us-east-1a"),
                hsm("hsm-b", "ACTIVE", "us-east-1b"),
            ],
        );
        let h = two_zones.health();
        assert!(!h.degraded, "{:?}", h.problems);
        assert_eq!((h.active_hsms, h.total_hsms), (2, 2));

        let one_zone = cluster(
            "ACTIVE",
            vec![
                hsm("hsm-a", "ACTIVE", "us-east-1a"),
                hsm("hsm-b", "ACTIVE", "us-east-1a"),
            ],
        );
        let h = one_zone.health();
        assert!(h.degraded);
        assert!(h.problems[0].contains("us-east-1a"), "{:?}", h.problems);

        let one_down = cluster(
            "DEGRADED",
            vec![
                hsm("hsm-a", "ACTIVE", "us-east-1a"),
                hsm("hsm-b", "DEGRADED", "us-east-1b"),
            ],
        );
        let h = one_down.health();
        assert_eq!(h.active_hsms, 1);
        assert_eq!(h.problems.len(), 3, "{:?}", h.problems);
        assert!(h.problems[0].contains("DEGRADED"));
        assert!(h.problems[1].contains("hsm-b"));
        assert!(h.problems[2].contains("no redundancy"));

        let empty = cluster("UNINITIALIZED", vec![]).health();
        assert!(empty.degraded);
        assert_eq!(empty.problems.len(), 2, "{:?}", empty.problems);
        assert!(empty.problems[1].contains("no HSMs"));
    }

    #[test]
    fn sdk_types_convert_without_the_secret_fields() {
        let c = Cluster::builder()
            .cluster_id("cluster-abcdefghijk")
            .state(ClusterState::Active)
            .pre_co_password("not-for-anyone")
            .hsms(
                Hsm::builder()
                    .hsm_id("hsm-a")
                    .state(HsmState::Active)
                    .availability_zone("us-east-1a")
                    .eni_ip("10.0.0.5")
                    .build()
                    .unwrap(),
            )
            .build();
        let info = cluster_info(&c).unwrap();
        assert_eq!(info.hsms[0].eni_ip.as_deref(), Some("10.0.0.5"));
        assert!(!format!("{info:?}").contains("not-for-anyone"));

        let b = Backup::builder()
            .backup_id("backup-abcdefghijk")
            .source_backup("backup-zyxwvutsrqp")
            .source_region("eu-west-1")
            .build()
            .unwrap();
        let info = backup_info(&b);
        assert_eq!(info.state, "UNKNOWN");
        let from = info.copied_from.unwrap();
        assert_eq!(
            (from.backup_id.as_str(), from.region.as_deref()),
            ("backup-zyxwvutsrqp", Some("eu-west-1"))
        );
    }

    fn service_error(
        code: Option<&str>,
        status: u16,
    ) -> SdkError<DescribeClustersError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("the service's message");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), "".into());
        SdkError::service_error(DescribeClustersError::generic(meta.build()), raw)
    }

    #[test]
    fn service_errors_map_to_what_a_caller_can_act_on() {
        let cases = [
            (
                Some("ThrottlingException"),
                400,
                Failure::Throttled,
                "unavailable",
            ),
            (
                Some("CloudHsmInternalFailureException"),
                500,
                Failure::Transient,
                "unavailable",
            ),
            (
                Some("CloudHsmResourceNotFoundException"),
                400,
                Failure::Final,
                "key-not-found",
            ),
            (
                Some("CloudHsmAccessDeniedException"),
                400,
                Failure::Final,
                "permission-denied",
            ),
            (
                Some("CloudHsmInvalidRequestException"),
                400,
                Failure::Final,
                "invalid-input",
            ),
            (
                Some("CloudHsmResourceLimitExceededException"),
                400,
                Failure::Final,
                "unavailable",
            ),
            (
                Some("UnrecognizedClientException"),
                400,
                Failure::Final,
                "unauthenticated",
            ),
            (
                Some("CloudHsmServiceException"),
                400,
                Failure::Final,
                "backend",
            ),
            (None, 500, Failure::Transient, "unavailable"),
            (None, 200, Failure::Final, "backend"),
        ];
        for (code, status, failure, kind) in cases {
            let e = service_error(code, status);
            assert_eq!(classify(&e), failure, "{code:?} {status}");
            let h = to_hsm(e, "describing cluster cluster-abcdefghijk");
            assert_eq!(h.kind(), kind, "{code:?} {status}: {h}");
            assert!(h.to_string().contains("cluster-abcdefghijk"), "{h}");
        }
        let quota = to_hsm(
            service_error(Some("CloudHsmResourceLimitExceededException"), 400),
            "x",
        );
        assert!(!quota.is_retryable());
    }
}
