//! [`CloudHsmClusters`] against moto's cloudhsmv2 (the `MOTO` emulator of `cargo xtask sims`).
//!
//! moto implements CreateCluster (the cluster is `ACTIVE` at once, with no HSMs, and moto adds
//! one `READY` backup), DescribeClusters, DescribeBackups and DeleteCluster. CreateHsm,
//! CopyBackupToRegion, RestoreBackup and DeleteBackup answer HTTP 500 "not implemented", so
//! for those the tests check only that the failure reaches the caller as a clear `HsmError`:
//! they are untested against a real implementation, and HSM-level health (active HSMs, zones) is
//! covered only by the unit tests beside the code.
//!
//! moto also writes `CreateTimestamp` as an ISO 8601 string without an offset
//! (`"2026-12-04T23:03:24.395880"`), where AWS sends epoch seconds (a JSON number); the SDK
//! rejects the string, so every cluster or backup listing fails against plain moto.
//! [`TimestampFix`] works around that bug here, in the test, and
//! `moto_timestamps_are_reported_as_a_clear_error` shows what the product does without it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudhsmv2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudhsmv2::primitives::{DateTime, DateTimeFormat};
use hsm_cloud_aws::CloudHsmClusters;
use hsm_core::remote::{RemotePolicy, RetryPolicy};
use hsm_core::{HsmError, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCESS_KEY: &str = "AKIAHSMRSTEST";
const SECRET_KEY: &str = "emulator-accepts-any";

/// Short backoffs: moto answers at once, and its 500s are retried.
fn policy() -> RemotePolicy {
    RemotePolicy {
        deadline: Duration::from_secs(20),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        rate_limit: None,
    }
}

/// An SDK configuration for `endpoint` with the dummy credentials moto accepts.
fn conf(endpoint: &str) -> aws_sdk_cloudhsmv2::Config {
    aws_sdk_cloudhsmv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .build()
}

/// Works around moto's wire-format bug: a loopback HTTP relay between the test's client and moto
/// that rewrites offset-less ISO 8601 timestamp strings in response bodies to epoch seconds, the
/// form AWS sends. Nothing else is changed, and AWS itself never needs this.
///
/// Why a relay and not an SDK interceptor (`Intercept::modify_before_deserialization`): the SDK
/// hands interceptors the response body still streaming (it reads the body only after that hook,
/// just before deserializing), interceptors cannot await, and this crate has no dependency that
/// can read a streaming `SdkBody` (that needs `http-body`). The relay does the same rewrite on
/// the bytes instead. It serves one request per connection and reads moto's `Content-Length`.
struct TimestampFix {
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TimestampFix {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TimestampFix {
    async fn start(moto: &str) -> TimestampFix {
        let upstream = moto
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("{moto}: expected http://HOST:PORT"))
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &upstream).await {
                        eprintln!("timestamp relay: {e}");
                    }
                });
            }
        });
        TimestampFix { endpoint, task }
    }
}

/// One HTTP/1.1 message (head and `Content-Length` body) from `stream`.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed inside an HTTP head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut length = 0;
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            assert_ne!(
                (name.as_str(), value.trim()),
                ("transfer-encoding", "chunked"),
                "the relay reads Content-Length bodies only"
            );
            if name == "content-length" {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
    }
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed inside an HTTP body",
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

async fn relay(mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let (head, body) = read_message(&mut client).await?;
    let mut moto = TcpStream::connect(upstream).await?;
    moto.write_all(head.as_bytes()).await?;
    moto.write_all(&body).await?;
    let (head, body) = read_message(&mut moto).await?;
    let body = epoch_timestamps(&String::from_utf8_lossy(&body));
    // The same head with the new length, and one request per connection.
    let mut out = String::new();
    for line in head.trim_end().lines() {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "content-length" && name != "connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    client.write_all(out.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

/// `"2026-12-04T23:03:24.395880"` (Python's `isoformat()` of a naive UTC time) as epoch
/// seconds; `None` for anything else.
fn naive_iso_to_epoch(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shape = b.len() >= 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        });
    if !shape || b.len() == 20 {
        return None;
    }
    let t = DateTime::from_str(&format!("{s}Z"), DateTimeFormat::DateTime).ok()?;
    Some(format!("{}.{:09}", t.secs(), t.subsec_nanos()))
}

/// `body` with every JSON string value that is a naive ISO 8601 time replaced by its epoch
/// seconds.
fn epoch_timestamps(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    let mut copied = 0;
    while let Some((start, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        // The end of this string literal, skipping escaped characters.
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let is_value = body[..start].trim_end().ends_with(':');
        if let Some(epoch) = naive_iso_to_epoch(&body[start + 1..end]).filter(|_| is_value) {
            out.push_str(&body[copied..start]);
            out.push_str(&epoch);
            copied = end + 1;
        }
    }
    out.push_str(&body[copied..]);
    out
}

#[test]
fn the_workaround_rewrites_only_naive_timestamps() {
    let body = r#"{"Backups": [{"BackupId": "b-1", "CreateTimestamp": "2026-12-04T23:03:24.395880", "Note": "say \"2026-12-04T23:03:24\"", "Other": "2026-12-04T23:03:24Z"}]}"#;
    let fixed = epoch_timestamps(body);
    assert_eq!(
        fixed,
        r#"{"Backups": [{"BackupId": "b-1", "CreateTimestamp": 1796425404.395880000, "Note": "say \"2026-12-04T23:03:24\"", "Other": "2026-12-04T23:03:24Z"}]}"#
    );
}

/// Clusters made through `clusters.client()` (moto cannot make HSMs).
async fn create_cluster(clusters: &CloudHsmClusters) -> String {
    let out = clusters
        .client()
        .create_cluster()
        .hsm_type("hsm1.medium")
        .subnet_ids("subnet-12345678")
        .subnet_ids("subnet-87654321")
        .send()
        .await
        .expect("CreateCluster");
    out.cluster()
        .and_then(|c| c.cluster_id())
        .expect("a cluster id")
        .to_owned()
}

async fn delete_cluster(clusters: &CloudHsmClusters, id: &str) {
    clusters
        .client()
        .delete_cluster()
        .cluster_id(id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteCluster {id}: {e:?}"));
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn clusters_health_and_backups() {
    let Some(moto) = common::endpoint(common::MOTO) else {
        return;
    };
    let fix = TimestampFix::start(&moto).await;
    let hsm = CloudHsmClusters::from_conf(conf(&fix.endpoint), policy()).unwrap();
    let id = create_cluster(&hsm).await;

    // Listing and looking up.
    let all = hsm.clusters().await.unwrap();
    let listed = all
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} not in {all:?}"));
    assert_eq!(listed.state, "ACTIVE");
    assert_eq!(listed.hsm_type.as_deref(), Some("hsm1.medium"));
    assert!(listed.hsms.is_empty());
    // AWS maps one subnet per Availability Zone; moto keeps only the last subnet given.
    assert!((1..=2).contains(&listed.subnet_count), "{listed:?}");
    let created = listed.created_at.expect("a creation time");
    assert!((created - now()).abs() < 600, "created at {created}");
    let one = hsm.cluster(&id).await.unwrap();
    assert_eq!(&one, listed);

    // Health: moto's clusters have no HSMs.
    let health = hsm.health(&id).await.unwrap();
    println!("health of {id}: {health:?}");
    assert!(health.degraded);
    assert_eq!(health.cluster_state, "ACTIVE");
    assert_eq!((health.active_hsms, health.total_hsms), (0, 0));
    assert!(
        health.problems.iter().any(|p| p.contains("no HSMs")),
        "{:?}",
        health.problems
    );

    // The backup moto made with the cluster.
    let backups = hsm.backups(Some(&id)).await.unwrap();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup = &backups[0];
    assert_eq!(backup.cluster_id.as_deref(), Some(id.as_str()));
    assert_eq!(backup.state, "READY");
    assert!(!backup.never_expires);
    assert_eq!(backup.copied_from, None);
    assert!(backup.created_at.is_some_and(|t| (t - created).abs() < 60));
    let everywhere = hsm.backups(None).await.unwrap();
    assert!(everywhere.iter().any(|b| b.id == backup.id));

    // No such cluster.
    let missing = hsm.cluster("cluster-doesnotexist").await.unwrap_err();
    assert!(
        matches!(&missing, HsmError::KeyNotFound { key } if key.contains("cluster-doesnotexist")),
        "{missing:?}"
    );
    assert!(matches!(
        hsm.health("cluster-doesnotexist").await,
        Err(HsmError::KeyNotFound { .. })
    ));

    // moto does not implement these; the failure must still be a clear error naming the
    // backup. Copying creates something, so it is not repeated after a server error.
    let stats = hsm.remote_stats();
    let copy = hsm
        .copy_backup_to_region(&backup.id, "us-west-2")
        .await
        .unwrap_err();
    let text = copy.to_string();
    assert!(
        matches!(
            copy,
            HsmError::Unavailable {
                retryable: false,
                ..
            }
        ),
        "{copy:?}"
    );
    assert!(
        text.contains(&backup.id) && text.contains("HTTP 500"),
        "{text}"
    );
    assert!(text.contains("may have taken effect"), "{text}");
    assert_eq!(hsm.remote_stats().retries, stats.retries, "copy retried");
    for (name, result) in [
        ("RestoreBackup", hsm.restore_backup(&backup.id).await),
        ("DeleteBackup", hsm.delete_backup(&backup.id).await),
    ] {
        let e = result.unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(
                e,
                HsmError::Unavailable {
                    retryable: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            text.contains(&backup.id) && text.contains("HTTP 500"),
            "{text}"
        );
        println!("{name}: untested against a real implementation (moto: {text})");
    }
    println!("CopyBackupToRegion: untested against a real implementation (moto: {copy})");
    // Restore and delete are idempotent, so moto's 500s were retried to the attempt limit.
    assert_eq!(hsm.remote_stats().retries - stats.retries, 2 * 2);

    delete_cluster(&hsm, &id).await;
    assert!(matches!(
        hsm.cluster(&id).await,
        Err(HsmError::KeyNotFound { .. })
    ));
}

#[tokio::test]
async fn listings_follow_every_page() {
    let Some(moto) = common::endpoint(common::MOTO) else {
        return;
    };
    let fix = TimestampFix::start(&moto).await;
    let hsm = CloudHsmClusters::from_conf(conf(&fix.endpoint), policy()).unwrap();
    // Pages hold 25 clusters and 50 backups; each cluster comes with one backup.
    let mut ids = Vec::new();
    for _ in 0..51 {
        ids.push(create_cluster(&hsm).await);
    }
    let before = hsm.remote_stats().calls;
    let clusters = hsm.clusters().await.unwrap();
    assert!(hsm.remote_stats().calls - before >= 3, "not paged");
    for id in &ids {
        assert!(clusters.iter().any(|c| &c.id == id), "{id} missing");
    }
    let before = hsm.remote_stats().calls;
    let backups = hsm.backups(None).await.unwrap();
    assert!(hsm.remote_stats().calls - before >= 2, "not paged");
    for id in &ids {
        assert!(
            backups.iter().any(|b| b.cluster_id.as_ref() == Some(id)),
            "no backup of {id}"
        );
    }
    let mut unique: Vec<&str> = backups.iter().map(|b| b.id.as_str()).collect();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), backups.len(), "a backup listed twice");
    for id in &ids {
        delete_cluster(&hsm, id).await;
    }
}

#[tokio::test]
async fn moto_timestamps_are_reported_as_a_clear_error() {
    let Some(moto) = common::endpoint(common::MOTO) else {
        return;
    };
    let fix = TimestampFix::start(&moto).await;
    let fixed = CloudHsmClusters::from_conf(conf(&fix.endpoint), policy()).unwrap();
    let id = create_cluster(&fixed).await;

    // Straight to moto, as a user would connect.
    let plain = CloudHsmClusters::connect(
        Some("us-east-1"),
        Some(&moto),
        Some((Secret::new(ACCESS_KEY), Secret::new(SECRET_KEY))),
        policy(),
    )
    .await
    .unwrap();
    for result in [
        plain.cluster(&id).await.map(|_| ()),
        plain.backups(Some(&id)).await.map(|_| ()),
    ] {
        let e = result.unwrap_err();
        let text = e.to_string();
        println!("without the workaround: {text}");
        assert!(matches!(e, HsmError::Backend { .. }), "{e:?}");
        // The SDK's own words follow (they differ between SDK versions).
        assert!(
            text.contains("could not be parsed") && text.contains(&id),
            "{text}"
        );
        assert!(!text.contains(SECRET_KEY));
    }
    assert_eq!(
        plain.remote_stats().retries,
        0,
        "a parse failure was retried"
    );
    delete_cluster(&fixed, &id).await;
}

#[tokio::test]
async fn bad_configurations_are_errors() {
    let e = CloudHsmClusters::connect(Some("us-east-1"), Some("127.0.0.1:1"), None, policy())
        .await
        .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");

    let no_region = aws_sdk_cloudhsmv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .build();
    let e = CloudHsmClusters::from_conf(no_region, policy()).unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");

    // The SDK panics on a configuration without a behavior version; this is an error instead
    // (the SDK's panic message still shows in the test output).
    let no_behavior = aws_sdk_cloudhsmv2::Config::builder()
        .region(Region::new("us-east-1"))
        .build();
    let e = CloudHsmClusters::from_conf(no_behavior, policy()).unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");

    let e = CloudHsmClusters::from_conf(
        conf("http://127.0.0.1:1"),
        RemotePolicy {
            deadline: Duration::ZERO,
            ..policy()
        },
    )
    .unwrap_err();
    assert!(matches!(e, HsmError::InvalidInput { .. }), "{e:?}");

    // Debug names the region and policy, never the credentials.
    let hsm = CloudHsmClusters::connect(
        Some("us-east-1"),
        Some("http://127.0.0.1:1"),
        Some((Secret::new(ACCESS_KEY), Secret::new(SECRET_KEY))),
        policy(),
    )
    .await
    .unwrap();
    let debug = format!("{hsm:?}");
    assert!(debug.contains("us-east-1"), "{debug}");
    assert!(
        !debug.contains(SECRET_KEY) && !debug.contains(ACCESS_KEY),
        "{debug}"
    );
    // Nothing listens on port 1: a connection error, not a hang.
    let e = hsm.clusters().await.unwrap_err();
    println!("nothing listening: {e}");
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("cannot be reached"), "{e}");
}
