//! The set's lock: a `coordination.k8s.io/v1` Lease next to the ApplySet parent, held by one
//! `kiln apply` from before its plan is read until the parent is narrowed, so two applies of one
//! set never interleave (a narrowing run would hide the other's new members from every later
//! plan).
//!
//! - **Holder identity**: `kiln <user>@<host> pid <pid>`, with `acquireTime` as "since".
//! - **TTL**: `leaseDurationSeconds`; the holder renews every third of it. A holder killed
//!   with `kill -9` stops renewing, and the Lease counts as expired once its `renewTime` is
//!   older than the TTL, by the waiter's clock, or once the waiter has seen it unchanged for a
//!   whole TTL on its own monotonic clock (so clock skew cannot make a live lock look dead for
//!   longer than one TTL, nor a dead one live forever).
//! - **Every write is conditional** on the `resourceVersion` read before it: two waiters that
//!   both see an expired Lease cannot both take it.
//! - **The holder fences itself** ([`crate::fence`]): it writes to the cluster only within a
//!   window after its last accepted renewal, on its boot clock, and never again once a renewal
//!   finds another holder. A holder paused past its TTL resumes to a closed fence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::api::{ClusterError, LeaseRecord, LeaseStore};
use crate::fence::{window, Fence};

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another apply held the lock for longer than `--lock-timeout`.
    #[error("the set is locked by `{holder}` since {since}; gave up after {waited:?}")]
    Timeout {
        /// Who holds it.
        holder: String,
        /// Since when.
        since: String,
        /// How long this run waited.
        waited: Duration,
    },
    /// The API server refused a Lease request.
    #[error("failed to {action} the lock Lease `{namespace}/{name}`")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// The Lease's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: Box<ClusterError>,
    },
}

/// How to take the lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long to wait for another holder.
    pub timeout: Duration,
    /// The Lease's TTL.
    pub ttl: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            ttl: Duration::from_secs(15),
        }
    }
}

/// This process, as a Lease holder.
pub fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown-user".to_owned());
    format!("kiln {user}@{host} pid {}", std::process::id())
}

/// A held lock. It is renewed in the background until [`LockGuard::release`].
pub struct LockGuard {
    store: Arc<dyn LeaseStore>,
    name: String,
    namespace: String,
    stop: Arc<AtomicBool>,
    fence: Arc<Fence>,
    renewer: tokio::task::JoinHandle<Option<String>>,
}

impl LockGuard {
    /// Whether this run lost the lock (another holder took it, or renewals stopped working
    /// for longer than the safe window).
    pub fn lost(&self) -> bool {
        self.fence.closed()
    }

    /// The fence every cluster write of this run checks.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Stops renewing and deletes the Lease (only if it is still ours).
    pub async fn release(self) -> Result<(), LockError> {
        self.stop.store(true, Ordering::SeqCst);
        let rv = self.renewer.await.ok().flatten();
        let Some(rv) = rv else { return Ok(()) };
        self.store
            .delete(&self.namespace, &self.name, &rv)
            .await
            .map_err(|source| LockError::Api {
                action: "release",
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source: Box::new(source),
            })
    }
}

/// A Lease held by `holder` from now (by `store`'s wall clock), conditional on `rv`.
fn lease(store: &dyn LeaseStore, holder: &str, ttl: Duration, rv: String) -> LeaseRecord {
    let now = store.wall_clock();
    LeaseRecord {
        holder: holder.to_owned(),
        ttl_seconds: ttl.as_secs().max(1) as i64,
        acquired: Some(now),
        renewed: Some(now),
        resource_version: rv,
    }
}

/// Whether `l` is held by a live holder, judged by its renew time against the wall clock `now`.
fn live_by_wall_clock(l: &LeaseRecord, now: Timestamp) -> bool {
    if l.holder.is_empty() {
        return false;
    }
    let Some(renewed) = l.renewed.or(l.acquired) else {
        return false;
    };
    now.as_second() - renewed.as_second() <= l.ttl_seconds
}

/// Takes the lock `name` in `namespace`, waiting while another live holder has it.
/// `on_wait(holder, since)` is called once when this run starts waiting.
// One retry loop: read, then create / take over / wait, each write conditional on the
// resourceVersion read; the cases share the observed-unchanged clock and the "told" flag, and
// read best together (the protocol is in the module's doc).
pub async fn acquire(
    store: Arc<dyn LeaseStore>,
    namespace: &str,
    name: &str,
    options: &LockOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<LockGuard, LockError> {
    acquire_as(store, namespace, name, &holder_identity(), options, on_wait).await
}

/// [`acquire`] as `holder`.
async fn acquire_as(
    store: Arc<dyn LeaseStore>,
    namespace: &str,
    name: &str,
    holder: &str,
    options: &LockOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<LockGuard, LockError> {
    let err = |action, source| LockError::Api {
        action,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    };
    let started = Instant::now();
    let mut told = false;
    // (resourceVersion, first seen) of the other holder's Lease.
    let mut observed: Option<(String, Instant)> = None;
    let (rv, sent) = loop {
        let sent = store.boot_clock();
        let current = store
            .get(namespace, name)
            .await
            .map_err(|e| err("read", e))?;
        let attempt = match &current {
            None => {
                let new = lease(store.as_ref(), holder, options.ttl, String::new());
                store.create(namespace, name, &new).await
            }
            Some(l) => {
                let rv = l.resource_version.clone();
                let unchanged_for = match &observed {
                    Some((seen, at)) if *seen == rv => at.elapsed(),
                    _ => {
                        observed = Some((rv.clone(), Instant::now()));
                        Duration::ZERO
                    }
                };
                let ttl = Duration::from_secs(l.ttl_seconds.max(0) as u64);
                if live_by_wall_clock(l, store.wall_clock()) && unchanged_for <= ttl {
                    let since = l
                        .acquired
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "?".to_owned());
                    if started.elapsed() >= options.timeout {
                        return Err(LockError::Timeout {
                            holder: l.holder.clone(),
                            since,
                            waited: started.elapsed(),
                        });
                    }
                    if !told {
                        on_wait(&l.holder, &since);
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                // Free or expired: take it over, on the condition that nobody else did.
                let new = lease(store.as_ref(), holder, options.ttl, rv);
                store.replace(namespace, name, &new).await
            }
        };
        match attempt {
            Ok(l) => break (l.resource_version, sent),
            // Someone else created or took it between our read and write: read again.
            Err(ClusterError::Modified { .. }) => continue,
            Err(e) => return Err(err("take", e)),
        }
    };
    tracing::debug!(%holder, "took the set's lock");
    let stop = Arc::new(AtomicBool::new(false));
    let clock = {
        let store = store.clone();
        Arc::new(move || store.boot_clock())
    };
    let fence = Arc::new(Fence::on_clock(sent + window(options.ttl), clock));
    let renewer = tokio::spawn(renew(
        store.clone(),
        namespace.to_owned(),
        name.to_owned(),
        rv,
        options.ttl,
        stop.clone(),
        fence.clone(),
    ));
    Ok(LockGuard {
        store,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        stop,
        fence,
        renewer,
    })
}

/// Renews the Lease every third of its TTL until stopped; returns its last resourceVersion
/// while it is still ours. Each accepted renewal moves the fence's window; one that finds
/// another holder closes it; failing ones are retried quickly until the window has passed,
/// which closes it too.
async fn renew(
    store: Arc<dyn LeaseStore>,
    namespace: String,
    name: String,
    mut rv: String,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    fence: Arc<Fence>,
) -> Option<String> {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let mut next = Instant::now() + period;
    let taken = |fence: &Fence| {
        fence.lose("another run took the set's lock over");
        tracing::warn!("the set's lock was taken over by another holder");
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            return Some(rv);
        }
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        next = Instant::now() + period;
        let sent = store.boot_clock();
        let failed = |fence: &Fence, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "failed to renew the set's lock");
            if fence.check().is_err() {
                fence.lose(format!("renewing the set's lock failed: {e}"));
            }
        };
        let mut l = match store.get(&namespace, &name).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                fence.lose("the set's lock Lease was deleted by someone else");
                return None;
            }
            Err(e) => {
                failed(&fence, &e);
                if fence.closed() {
                    return None;
                }
                next = Instant::now() + Duration::from_millis(200);
                continue;
            }
        };
        if l.resource_version != rv {
            taken(&fence);
            return None;
        }
        l.renewed = Some(store.wall_clock());
        match store.replace(&namespace, &name, &l).await {
            Ok(l) => {
                rv = l.resource_version;
                fence.renewed(sent, ttl);
            }
            Err(ClusterError::Modified { .. }) => {
                taken(&fence);
                return None;
            }
            Err(e) => {
                failed(&fence, &e);
                if fence.closed() {
                    return None;
                }
                next = Instant::now() + Duration::from_millis(200);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_leases::FakeLeases;
    use k8s_openapi::jiff::SignedDuration;

    const TTL: Duration = Duration::from_secs(15);

    fn options(timeout: u64) -> LockOptions {
        LockOptions {
            timeout: Duration::from_secs(timeout),
            ttl: TTL,
        }
    }

    async fn take(store: &Arc<FakeLeases>, who: &str) -> Result<LockGuard, LockError> {
        acquire_as(
            store.clone(),
            "default",
            "kiln-shop",
            who,
            &options(300),
            |_, _| {},
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_lock_is_taken_renewed_and_released() {
        let store = Arc::new(FakeLeases::default());
        let guard = take(&store, "a").await.unwrap();
        let held = store.lease("default", "kiln-shop").unwrap();
        assert_eq!((held.holder.as_str(), held.ttl_seconds), ("a", 15));
        // Renewed every third of the TTL: the fence stays open however long the run takes.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!guard.lost());
        assert!(guard.fence().check().is_ok());
        let renewed = store.lease("default", "kiln-shop").unwrap();
        assert_ne!(renewed.resource_version, held.resource_version);
        assert!(renewed.renewed > held.renewed);
        guard.release().await.unwrap();
        assert_eq!(store.lease("default", "kiln-shop"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_holder_makes_the_next_run_wait_and_give_up_at_its_timeout() {
        let store = Arc::new(FakeLeases::default());
        let _held = take(&store, "a").await.unwrap();
        let told = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let err = acquire_as(
            store.other_machine(SignedDuration::ZERO),
            "default",
            "kiln-shop",
            "b",
            &options(40),
            |holder, _| told.lock().unwrap().push(holder.to_owned()),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(&err, LockError::Timeout { holder, .. } if holder == "a"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_secs(40));
        assert_eq!(*told.lock().unwrap(), ["a"], "told once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_holders_lease_is_taken_over_after_its_ttl_even_by_a_clock_far_behind() {
        let store = Arc::new(FakeLeases::default());
        // Left by a holder killed with -9: renewed "now", never again.
        store.put(
            "default",
            "kiln-shop",
            lease(store.as_ref(), "dead", TTL, String::new()),
        );
        // This machine's clock is an hour behind: by it, the renewal is in the future and
        // looks live; the Lease unchanged for a whole TTL on its own clock ends that.
        let behind = store.other_machine(SignedDuration::from_hours(-1));
        let started = Instant::now();
        let guard = acquire_as(
            behind,
            "default",
            "kiln-shop",
            "b",
            &options(300),
            |_, _| {},
        )
        .await
        .unwrap();
        let waited = started.elapsed();
        assert!(waited >= TTL && waited < TTL * 2, "{waited:?}");
        assert_eq!(store.lease("default", "kiln-shop").unwrap().holder, "b");
        guard.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_whose_lease_is_taken_over_closes_its_fence_at_its_next_renewal() {
        let store = Arc::new(FakeLeases::default());
        let a = take(&store, "a").await.unwrap();
        // A machine whose clock is an hour ahead sees a's renewals as expired and takes over.
        let ahead = store.other_machine(SignedDuration::from_hours(1));
        let b = acquire_as(ahead, "default", "kiln-shop", "b", &options(300), |_, _| {})
            .await
            .unwrap();
        assert!(a.fence().check().is_ok(), "a has not renewed yet");
        tokio::time::sleep(TTL / 3 + Duration::from_millis(100)).await;
        let why = a.fence().check().unwrap_err();
        assert!(why.contains("took the set's lock over"), "{why}");
        assert!(a.lost());
        assert!(!b.lost());
        // a's release leaves b's Lease alone.
        a.release().await.unwrap();
        assert_eq!(store.lease("default", "kiln-shop").unwrap().holder, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_that_keep_failing_close_the_fence_once_the_safe_window_has_passed() {
        let store = Arc::new(FakeLeases::default());
        let guard = take(&store, "a").await.unwrap();
        store.fail("replace", usize::MAX);
        // Open while the last accepted renewal is within two thirds of the TTL.
        tokio::time::sleep(window(TTL) - Duration::from_secs(1)).await;
        assert!(guard.fence().check().is_ok());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let why = guard.fence().check().unwrap_err();
        assert!(
            why.contains("past the safe window") || why.contains("renewing"),
            "{why}"
        );
        assert!(guard.lost());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_holder_resumes_to_a_closed_fence() {
        let store = Arc::new(FakeLeases::default());
        let guard = take(&store, "a").await.unwrap();
        assert!(guard.fence().check().is_ok());
        // SIGSTOP for two TTLs: tokio's timers stood still, the boot clock did not.
        store.pause(TTL * 2);
        let why = guard.fence().check().unwrap_err();
        assert!(why.contains("past the safe window"), "{why}");
    }
}
