//! What every provider that reaches its keys over a network needs, built once: a deadline per
//! call, bounded retries with jittered exponential backoff, a client-side rate limit, and a
//! time-limited cache whose concurrent first lookups of one key make one call.
//!
//! A provider wraps each service call in [`Remote::call`], saying whether the call is
//! idempotent and how to classify its errors ([`Failure`]):
//!
//! - **Deadline.** The whole call, retries and backoff included, ends by
//!   [`RemotePolicy::deadline`]; then it fails with a retryable `Unavailable` that says so.
//!   Nothing hangs on a service that has stopped answering.
//! - **Retries.** Throttling, server errors and connection failures are retried up to
//!   [`RetryPolicy::max_attempts`], waiting a random time up to an exponentially growing bound
//!   ("full jitter"), so clients that failed together do not retry together. A call that is not
//!   idempotent (creating a key, importing key material) is retried only when the request surely
//!   never reached the service ([`Failure::NotSent`], [`Failure::Throttled`]); after a timeout or
//!   a server error its outcome is unknown, and the error says so instead of risking a second key.
//! - **Rate limit.** [`RateLimit`] spaces calls so a busy application stays under its quota
//!   instead of being throttled: callers wait their turn (fairly, first come first served).
//! - **Cache.** [`TtlCache`] keeps values (public keys, key metadata) for a time to live; one
//!   fetch serves every concurrent first lookup of the same key.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::error::HsmError;

/// How a failed attempt may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The service said to slow down (HTTP 429, `ThrottlingException`): retry after a backoff.
    /// The request was refused, so retrying is safe even when it is not idempotent.
    Throttled,
    /// The request never reached the service (connection refused, DNS, TLS set-up): safe to
    /// retry.
    NotSent,
    /// A server error or a broken connection after the request was sent: retried only when the
    /// call is idempotent, since the service may have acted on it.
    Transient,
    /// An answer that another attempt would not change (bad input, no such key, access denied).
    Final,
}

/// Whether repeating a call can have an effect the first did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads, signatures, encryption: repeating is harmless.
    Idempotent,
    /// Creates something (a key, imported material): repeating after an unknown outcome could
    /// make a second one.
    NotIdempotent,
}

/// Bounded retries with jittered exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff bound before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// The largest backoff bound.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, backoff bounds of 50, 100 and 200 ms (AWS's and Google's SDKs use similar).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): uniformly random between
    /// zero and `min(max_delay, base_delay * 2^retry)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let bound = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random::<u64>() % (nanos + 1))
    }
}

/// A client-side rate limit: at most `per_second` calls a second on average, with bursts of up
/// to `burst` calls at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls that may start together after a quiet spell.
    pub burst: u32,
}

/// Network behaviour of one provider: deadline, retries, rate limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RemotePolicy {
    /// The most one call may take, retries and waits included.
    pub deadline: Duration,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// The client-side rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

impl Default for RemotePolicy {
    /// A 10 s deadline, [`RetryPolicy::default`], no rate limit.
    fn default() -> Self {
        RemotePolicy {
            deadline: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limit: None,
        }
    }
}

/// What a provider's calls have met so far, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Calls made (each may have several attempts).
    pub calls: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// Attempts the service throttled.
    pub throttled: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Calls that waited for the rate limit.
    pub rate_limited: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    timeouts: AtomicU64,
    rate_limited: AtomicU64,
}

/// The rate limiter: the generic cell rate algorithm, one timestamp under a lock held only to
/// compute a caller's turn.
struct Limiter {
    interval: Duration,
    tolerance: Duration,
    /// When the next call would be on schedule.
    next: Mutex<Instant>,
}

impl Limiter {
    fn new(limit: RateLimit) -> Result<Limiter, HsmError> {
        if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
            return Err(HsmError::invalid(format!(
                "rate limit of {} calls/s with bursts of {}: both must be positive",
                limit.per_second, limit.burst
            )));
        }
        let interval = Duration::from_secs_f64(1.0 / limit.per_second);
        Ok(Limiter {
            interval,
            tolerance: interval.saturating_mul(limit.burst - 1),
            next: Mutex::new(Instant::now()),
        })
    }

    /// When this caller may start.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let on_schedule = (*next).max(now);
        *next = on_schedule + self.interval;
        on_schedule
            .checked_sub(self.tolerance)
            .unwrap_or(now)
            .max(now)
    }
}

/// Runs a provider's service calls with its [`RemotePolicy`].
pub struct Remote {
    provider: &'static str,
    policy: RemotePolicy,
    limiter: Option<Limiter>,
    counters: Counters,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("provider", &self.provider)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// For `provider` (its short name, used in errors). `InvalidInput` for a rate limit that is
    /// not positive or a zero deadline or attempt count.
    pub fn new(provider: &'static str, policy: RemotePolicy) -> Result<Remote, HsmError> {
        if policy.deadline.is_zero() || policy.retry.max_attempts == 0 {
            return Err(HsmError::invalid(
                "a remote policy needs a deadline above zero and at least one attempt",
            ));
        }
        Ok(Remote {
            provider,
            policy,
            limiter: policy.rate_limit.map(Limiter::new).transpose()?,
            counters: Counters::default(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &RemotePolicy {
        &self.policy
    }

    /// What the calls have met so far.
    pub fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        RemoteStats {
            calls: c.calls.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline passes.
    ///
    /// `what` names the call for errors ("signing with key alias/release"); `classify` says how a
    /// failure may be retried; `convert` turns the last failure into the caller's `HsmError`.
    pub async fn call<T, E, Fut>(
        &self,
        what: &str,
        idempotency: Idempotency,
        classify: impl Fn(&E) -> Failure,
        convert: impl Fn(E) -> HsmError,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, HsmError>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.policy.deadline;
        let mut retry = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                let start = limiter.reserve();
                if start > Instant::now() {
                    self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    if start >= deadline {
                        return Err(self.timed_out(what, idempotency, false));
                    }
                    tokio::time::sleep_until(start).await;
                }
            }
            let err = match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => return Err(self.timed_out(what, idempotency, true)),
            };
            let failure = classify(&err);
            if failure == Failure::Throttled {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            let may_retry = match failure {
                Failure::Throttled | Failure::NotSent => true,
                Failure::Transient => idempotency == Idempotency::Idempotent,
                Failure::Final => false,
            };
            if !may_retry || retry + 1 >= self.policy.retry.max_attempts {
                let e = convert(err);
                return Err(if failure == Failure::Transient && !may_retry {
                    self.outcome_unknown(what, e)
                } else {
                    e
                });
            }
            let wait = self.policy.retry.backoff(retry);
            if Instant::now() + wait >= deadline {
                return Err(convert(err));
            }
            tracing::debug!(
                provider = self.provider,
                operation = what,
                ?failure,
                retry,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(wait).await;
            retry += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn timed_out(&self, what: &str, idempotency: Idempotency, sent: bool) -> HsmError {
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        let unknown = if sent && idempotency == Idempotency::NotIdempotent {
            "; it may have taken effect, so check before repeating it"
        } else {
            ""
        };
        HsmError::Unavailable {
            reason: format!(
                "{what}: {} did not answer within the {:?} deadline{unknown}",
                self.provider, self.policy.deadline
            ),
            retryable: true,
            source: None,
        }
    }

    /// A non-idempotent call failed after its request was sent: it may have taken effect.
    fn outcome_unknown(&self, what: &str, e: HsmError) -> HsmError {
        HsmError::Unavailable {
            reason: format!(
                "{what}: the request reached {} but failed ({e}); it may have taken effect, so \
                 it is not repeated automatically: check before repeating it",
                self.provider
            ),
            retryable: false,
            source: Some(Box::new(e)),
        }
    }
}

/// A time-limited cache; one fetch serves all concurrent first lookups of a key.
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, Entry<V>>>,
}

struct Entry<V> {
    cell: Arc<OnceCell<V>>,
    created: Instant,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// Values live for `ttl` after they are fetched.
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value, or the one `fetch` gives. Concurrent callers for the same key wait for
    /// one fetch; a failed fetch is not cached (the next caller fetches again).
    pub async fn get_or_fetch<E, Fut>(&self, key: &K, fetch: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match entries.get(key) {
                Some(e) if !(e.cell.initialized() && now - e.created >= self.ttl) => e.cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(
                        key.clone(),
                        Entry {
                            cell: cell.clone(),
                            created: now,
                        },
                    );
                    cell
                }
            }
        };
        let fetched = cell.get_or_try_init(fetch).await?.clone();
        Ok(fetched)
    }

    /// Forgets `key` (after the key was deleted or changed).
    pub fn remove(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Follows a paged listing to its end. `page` fetches the page a token names (`None` for the
/// first) and returns its items and the next page's token. The listing ends at an absent or
/// empty token, and at a token the service repeats, which would otherwise loop forever.
pub async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, HsmError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), HsmError>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (mut batch, next) = page(token.clone()).await?;
        items.append(&mut batch);
        match next {
            Some(t) if !t.is_empty() && token.as_ref() != Some(&t) => token = Some(t),
            _ => return Ok(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Pages of a listing, each with the token it answers to and the token it returns.
    async fn listing(pages: &[(Option<&str>, &[u32], Option<&str>)]) -> Result<Vec<u32>, HsmError> {
        all_pages(|token| {
            let found = pages.iter().find(|(asked, ..)| *asked == token.as_deref());
            async move {
                let (_, items, next) = found.ok_or_else(|| HsmError::invalid("unknown token"))?;
                Ok((items.to_vec(), next.map(str::to_owned)))
            }
        })
        .await
    }

    #[tokio::test]
    async fn all_pages_follows_tokens_and_stops_on_a_repeated_one() {
        let three = [
            (None, &[1, 2][..], Some("a")),
            (Some("a"), &[3][..], Some("b")),
            (Some("b"), &[4][..], None),
        ];
        assert_eq!(listing(&three).await.unwrap(), [1, 2, 3, 4]);
        let empty_token = [(None, &[1][..], Some("")), (Some(""), &[2][..], None)];
        assert_eq!(listing(&empty_token).await.unwrap(), [1]);
        let repeated = [
            (None, &[1][..], Some("a")),
            (Some("a"), &[2][..], Some("a")),
        ];
        assert_eq!(listing(&repeated).await.unwrap(), [1, 2]);
        let broken = [(None, &[1][..], Some("gone"))];
        assert!(matches!(
            listing(&broken).await,
            Err(HsmError::InvalidInput { .. })
        ));
    }

    fn remote(policy: RemotePolicy) -> Remote {
        Remote::new("test", policy).unwrap()
    }

    fn quick() -> RemotePolicy {
        RemotePolicy {
            deadline: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(4),
            },
            rate_limit: None,
        }
    }

    async fn failing(
        r: &Remote,
        idem: Idempotency,
        failure: Failure,
        succeed_on: u32,
    ) -> (Result<u32, HsmError>, u32) {
        let tries = AtomicU32::new(0);
        let out = r
            .call(
                "the call",
                idem,
                |_: &Failure| failure,
                |f| HsmError::invalid(format!("{f:?}")),
                || async {
                    let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
                    if n >= succeed_on { Ok(n) } else { Err(failure) }
                },
            )
            .await;
        (out, tries.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retries_are_bounded_and_follow_the_classification() {
        let r = remote(quick());
        // Throttling is retried, and succeeds on the third attempt.
        let (out, tries) = failing(&r, Idempotency::NotIdempotent, Failure::Throttled, 3).await;
        assert_eq!((out.unwrap(), tries), (3, 3));
        // Never more than max_attempts.
        let (out, tries) = failing(&r, Idempotency::Idempotent, Failure::Transient, 10).await;
        assert!(out.is_err());
        assert_eq!(tries, 3);
        // A final answer is not retried.
        let (out, tries) = failing(&r, Idempotency::Idempotent, Failure::Final, 2).await;
        assert!(out.is_err());
        assert_eq!(tries, 1);
        // A non-idempotent call whose request was sent is not repeated, and says why.
        let (out, tries) = failing(&r, Idempotency::NotIdempotent, Failure::Transient, 2).await;
        assert_eq!(tries, 1);
        let msg = out.unwrap_err().to_string();
        assert!(msg.contains("may have taken effect"), "{msg}");
        // ... unless it never left.
        let (out, tries) = failing(&r, Idempotency::NotIdempotent, Failure::NotSent, 2).await;
        assert_eq!((out.unwrap(), tries), (2, 2));
        let s = r.stats();
        assert_eq!(s.calls, 5);
        assert_eq!(s.throttled, 2);
        assert_eq!(s.retries, 2 + 2 + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_a_call_that_hangs() {
        let r = remote(RemotePolicy {
            deadline: Duration::from_millis(300),
            ..quick()
        });
        let err = r
            .call(
                "creating a key",
                Idempotency::NotIdempotent,
                |_: &()| Failure::Transient,
                |_| HsmError::invalid("unreachable"),
                std::future::pending::<Result<(), ()>>,
            )
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("deadline") && msg.contains("may have taken effect"),
            "{msg}"
        );
        assert_eq!(r.stats().timeouts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_calls() {
        let r = remote(RemotePolicy {
            rate_limit: Some(RateLimit {
                per_second: 10.0,
                burst: 2,
            }),
            ..quick()
        });
        let start = Instant::now();
        for _ in 0..6 {
            r.call(
                "a call",
                Idempotency::Idempotent,
                |_: &()| Failure::Final,
                |_| HsmError::invalid("unreachable"),
                || async { Ok::<_, ()>(()) },
            )
            .await
            .unwrap();
        }
        // Two at once, then one every 100 ms: the sixth starts 400 ms in.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(500),
            "{took:?}"
        );
        assert_eq!(r.stats().rate_limited, 4);
    }

    #[test]
    fn a_rate_limit_must_be_positive() {
        for (per_second, burst) in [(0.0, 1), (f64::NAN, 1), (5.0, 0)] {
            let policy = RemotePolicy {
                rate_limit: Some(RateLimit { per_second, burst }),
                ..RemotePolicy::default()
            };
            assert!(Remote::new("test", policy).is_err());
        }
    }

    #[test]
    fn backoff_stays_within_its_bound() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        for retry in 0..10 {
            let bound = Duration::from_millis((10u64 << retry).min(50));
            for _ in 0..100 {
                assert!(p.backoff(retry) <= bound);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_fetch_serves_concurrent_first_lookups_and_the_ttl_expires() {
        let cache = Arc::new(TtlCache::<String, u32>::new(Duration::from_secs(60)));
        let fetches = Arc::new(AtomicU32::new(0));
        let lookups: Vec<_> = (0..16)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(&"k".to_owned(), || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(fetches.fetch_add(1, Ordering::SeqCst) + 1)
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for l in lookups {
            assert_eq!(l.await.unwrap(), 1);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        let v = cache
            .get_or_fetch(&"k".to_owned(), || async { Ok::<_, ()>(2) })
            .await
            .unwrap();
        assert_eq!(v, 2, "expired after the TTL");
        // A failed fetch is not cached.
        cache.remove(&"k".to_owned());
        assert!(
            cache
                .get_or_fetch(&"k".to_owned(), || async { Err::<u32, _>("down") })
                .await
                .is_err()
        );
        let v = cache
            .get_or_fetch(&"k".to_owned(), || async { Ok::<_, ()>(3) })
            .await
            .unwrap();
        assert_eq!(v, 3);
    }
}
