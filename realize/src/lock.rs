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

use crate::fence::{boot_clock, window, Fence};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;

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
        source: Box<kube::Error>,
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
    api: Api<Lease>,
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
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(LockError::Api {
                action: "release",
                namespace: self.namespace,
                name: self.name,
                source: Box::new(source),
            }),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease(name: &str, namespace: &str, holder: &str, ttl: Duration, rv: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version: rv,
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "kiln".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(ttl.as_secs().max(1) as i32),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..LeaseSpec::default()
        }),
    }
}

/// Whether `l` is held by a live holder, judged by its renew time against the wall clock.
fn live_by_wall_clock(l: &Lease) -> bool {
    let Some(spec) = &l.spec else { return false };
    if spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return false;
    }
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    Timestamp::now().as_second() - renewed.0.as_second() <= ttl
}

/// Takes the lock `name` in `namespace`, waiting while another live holder has it.
/// `on_wait(holder, since)` is called once when this run starts waiting.
// One retry loop: read, then create / take over / wait, each write conditional on the
// resourceVersion read; the cases share the observed-unchanged clock and the "told" flag, and
// read best together (the protocol is in the module's doc).
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    options: &LockOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<LockGuard, LockError> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let holder = holder_identity();
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
        let sent = boot_clock();
        let current = api.get_opt(name).await.map_err(|e| err("read", e))?;
        let attempt = match &current {
            None => {
                api.create(
                    &PostParams::default(),
                    &lease(name, namespace, &holder, options.ttl, None),
                )
                .await
            }
            Some(l) => {
                let rv = l.metadata.resource_version.clone().unwrap_or_default();
                let unchanged_for = match &observed {
                    Some((seen, at)) if *seen == rv => at.elapsed(),
                    _ => {
                        observed = Some((rv.clone(), Instant::now()));
                        Duration::ZERO
                    }
                };
                let ttl = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .map_or(options.ttl, |s| Duration::from_secs(s.max(0) as u64));
                if live_by_wall_clock(l) && unchanged_for <= ttl {
                    let spec = l.spec.clone().unwrap_or_default();
                    let who = spec.holder_identity.unwrap_or_default();
                    let since = spec
                        .acquire_time
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "?".to_owned());
                    if started.elapsed() >= options.timeout {
                        return Err(LockError::Timeout {
                            holder: who,
                            since,
                            waited: started.elapsed(),
                        });
                    }
                    if !told {
                        on_wait(&who, &since);
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                // Free or expired: take it over, on the condition that nobody else did.
                api.replace(
                    name,
                    &PostParams::default(),
                    &lease(name, namespace, &holder, options.ttl, Some(rv)),
                )
                .await
            }
        };
        match attempt {
            Ok(l) => break (l.metadata.resource_version.unwrap_or_default(), sent),
            // Someone else created or took it between our read and write: read again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(err("take", e)),
        }
    };
    tracing::debug!(%holder, "took the set's lock");
    let stop = Arc::new(AtomicBool::new(false));
    let fence = Arc::new(Fence::until(sent + window(options.ttl)));
    let renewer = tokio::spawn(renew(
        api.clone(),
        name.to_owned(),
        rv,
        options.ttl,
        stop.clone(),
        fence.clone(),
    ));
    Ok(LockGuard {
        api,
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
    api: Api<Lease>,
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
        let sent = boot_clock();
        let failed = |fence: &Fence, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "failed to renew the set's lock");
            if fence.check().is_err() {
                fence.lose(format!("renewing the set's lock failed: {e}"));
            }
        };
        let mut l = match api.get_opt(&name).await {
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
        if l.metadata.resource_version.as_deref() != Some(rv.as_str()) {
            taken(&fence);
            return None;
        }
        if let Some(spec) = l.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match api.replace(&name, &PostParams::default(), &l).await {
            Ok(l) => {
                rv = l.metadata.resource_version.unwrap_or_default();
                fence.renewed(sent, ttl);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
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
