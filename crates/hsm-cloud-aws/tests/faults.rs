//! Network faults against a real KMS (local-kms): the service stopped mid-run and started again,
//! a service that accepts connections and never answers, and throttling and latency injected by
//! a loopback proxy in front of it. The proxy is ours; the service behind it is not.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hsm_cloud_aws::AwsKmsProvider;
use hsm_core::remote::{RateLimit, RemotePolicy, RetryPolicy};
use hsm_core::{GenerateKeyRequest, HashAlg, HsmError, HsmProvider, KeyType, Mechanism, SignInput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A local-kms of the test's own, on `port`, keeping its keys in `data`.
struct LocalKms {
    child: Child,
}

impl LocalKms {
    fn start(bin: &str, port: u16, data: &std::path::Path) -> LocalKms {
        let mut kms = LocalKms {
            child: Command::new(bin)
                .env("PORT", port.to_string())
                .env("KMS_REGION", "us-east-1")
                .env("KMS_ACCOUNT_ID", "111122223333")
                .env("KMS_DATA_PATH", data)
                .env("KMS_SEED_PATH", data.join("no-seed.yaml"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start local-kms"),
        };
        // Ready when it accepts connections (it starts in well under a second). Dropping `kms`
        // on a panic kills and reaps it.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return kms;
            }
            if let Ok(Some(status)) = kms.child.try_wait() {
                panic!("local-kms exited ({status}) before listening on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("local-kms did not listen on port {port}");
    }
}

impl Drop for LocalKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn policy(deadline_ms: u64, attempts: u32) -> RemotePolicy {
    RemotePolicy {
        deadline: Duration::from_millis(deadline_ms),
        retry: RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        rate_limit: None,
    }
}

async fn provider(endpoint: &str, policy: RemotePolicy) -> AwsKmsProvider {
    common::builder(endpoint)
        .policy(policy)
        .build()
        .await
        .unwrap()
}

async fn sign(p: &AwsKmsProvider, key: &hsm_core::KeyId) -> Result<Vec<u8>, HsmError> {
    p.sign(
        key,
        &Mechanism::ecdsa(HashAlg::Sha256),
        SignInput::Message(b"faults"),
    )
    .await
}

fn bin() -> Option<String> {
    common::endpoint(common::LOCALKMS)?;
    Some(std::env::var("HSM_TEST_LOCALKMS_BIN").expect("xtask exports HSM_TEST_LOCALKMS_BIN"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stopped_and_restarted() {
    let Some(bin) = bin() else { return };
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let kms = LocalKms::start(&bin, port, data.path());
    let p = provider(&format!("http://127.0.0.1:{port}"), policy(3_000, 3)).await;
    let key = p
        .generate_key(&GenerateKeyRequest::new("faults-stop", KeyType::EcP256))
        .await
        .unwrap()
        .id;
    sign(&p, &key).await.expect("signs while the service runs");

    drop(kms);
    let start = Instant::now();
    let err = sign(&p, &key).await.unwrap_err();
    println!(
        "faults: service stopped: {err} (after {:?})",
        start.elapsed()
    );
    assert!(
        matches!(
            err,
            HsmError::Unavailable {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    let stats = p.remote_stats();
    assert_eq!(
        stats.retries, 2,
        "a refused connection is retried within the budget: {stats:?}"
    );

    let _kms = LocalKms::start(&bin, port, data.path());
    sign(&p, &key)
        .await
        .expect("signs again once the service is back");
    println!("faults: service back: signs again; {:?}", p.remote_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_hits_the_deadline() {
    if bin().is_none() {
        return;
    }
    // Accepts connections, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let p = provider(&format!("http://127.0.0.1:{port}"), policy(500, 3)).await;
    let start = Instant::now();
    let err = p
        .generate_key(&GenerateKeyRequest::new("never", KeyType::EcP256))
        .await
        .unwrap_err();
    println!(
        "faults: silent service: {err} (after {:?})",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(matches!(err, HsmError::Unavailable { .. }), "{err:?}");
    assert!(
        msg.contains("deadline") && msg.contains("may have taken effect"),
        "{msg}"
    );
    assert_eq!(p.remote_stats().timeouts, 1);
}

/// What the proxy does with the next connections.
#[derive(Default)]
struct Faults {
    /// Connections still to answer with `ThrottlingException` (then closed).
    throttle: AtomicU32,
    /// Delay added before forwarding each connection's first request.
    latency_ms: AtomicU64,
    /// Requests answered with throttling so far.
    throttled: AtomicU32,
    /// Connections forwarded so far.
    forwarded: AtomicU32,
}

/// A loopback proxy in front of `upstream` that injects `faults`; returns its port.
async fn proxy(upstream: String, faults: Arc<Faults>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (faults, upstream) = (faults.clone(), upstream.clone());
            tokio::spawn(async move {
                let throttle = faults
                    .throttle
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if throttle {
                    read_request(&mut client).await;
                    faults.throttled.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                    let answer = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                         x-amzn-ErrorType: ThrottlingException\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                faults.forwarded.fetch_add(1, Ordering::SeqCst);
                let delay = faults.latency_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                // One request per connection (`Connection: close` asked of the service), so
                // each request meets the faults set at the time it is made.
                let request = read_request(&mut client).await;
                let Some(line_end) = request.windows(2).position(|w| w == b"\r\n") else {
                    return;
                };
                let mut closing = request[..line_end + 2].to_vec();
                closing.extend_from_slice(b"Connection: close\r\n");
                closing.extend_from_slice(&request[line_end + 2..]);
                let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                    return;
                };
                if server.write_all(&closing).await.is_ok() {
                    let _ = tokio::io::copy(&mut server, &mut client).await;
                }
            });
        }
    });
    port
}

/// Reads one HTTP request (headers, then `Content-Length` bytes of body).
async fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_latency_and_the_rate_limit() {
    let Some(endpoint) = common::endpoint(common::LOCALKMS) else {
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").to_owned();
    let faults = Arc::new(Faults::default());
    let port = proxy(upstream, faults.clone()).await;
    let via_proxy = format!("http://127.0.0.1:{port}");
    let p = provider(&via_proxy, policy(5_000, 4)).await;

    // Throttled twice, then served: retried (creating a key too: a throttled request was
    // refused, so repeating it cannot make a second key).
    faults.throttle.store(2, Ordering::SeqCst);
    let key = p
        .generate_key(&GenerateKeyRequest::new("faults-throttle", KeyType::EcP256))
        .await
        .expect("created after two throttled attempts")
        .id;
    let s = p.remote_stats();
    println!("faults: throttled twice: created; {s:?}");
    assert_eq!((s.throttled, s.retries), (2, 2), "{s:?}");

    // Throttled more often than the budget allows: a bounded number of attempts, then a
    // retryable error.
    faults.throttle.store(10, Ordering::SeqCst);
    let err = sign(&p, &key).await.unwrap_err();
    println!("faults: throttled beyond the budget: {err}");
    assert!(
        matches!(
            err,
            HsmError::Unavailable {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        faults.throttled.load(Ordering::SeqCst),
        2 + 4,
        "four attempts, no more"
    );
    faults.throttle.store(0, Ordering::SeqCst);

    // Latency beyond the deadline: a create is not repeated blindly.
    faults.latency_ms.store(1_500, Ordering::SeqCst);
    let slow = provider(&via_proxy, policy(500, 4)).await;
    let before = faults.forwarded.load(Ordering::SeqCst);
    let err = slow
        .generate_key(&GenerateKeyRequest::new("faults-slow", KeyType::EcP256))
        .await
        .unwrap_err();
    println!("faults: 1.5 s latency, 0.5 s deadline: {err}");
    assert!(err.to_string().contains("may have taken effect"), "{err}");
    assert_eq!(
        faults.forwarded.load(Ordering::SeqCst) - before,
        1,
        "sent once"
    );
    faults.latency_ms.store(0, Ordering::SeqCst);

    // The rate limit: 20 concurrent signatures at 10/s with bursts of 2 all succeed, most of
    // them after waiting their turn, and none is throttled.
    let limited = Arc::new(
        common::builder(&via_proxy)
            .policy(RemotePolicy {
                rate_limit: Some(RateLimit {
                    per_second: 10.0,
                    burst: 2,
                }),
                ..policy(10_000, 4)
            })
            .build()
            .await
            .unwrap(),
    );
    limited.public_key(&key).await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (p, key) = (limited.clone(), key.clone());
            tokio::spawn(async move { sign(&p, &key).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().expect("signed under the rate limit");
    }
    let s = limited.remote_stats();
    println!("faults: 20 signatures at 10/s: {s:?}");
    assert!(s.rate_limited >= 15, "{s:?}");
    assert_eq!(s.throttled, 0);
    p.delete_key(&key).await.unwrap();
}
