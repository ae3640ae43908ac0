//! A [`LeaseStore`] for unit tests: Leases kept in memory with the API server's conditional
//! writes, and each view with clocks of its own (wall-clock skew, a paused process) and
//! injectable failures. Its clocks follow tokio's, so tests run on paused time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

use crate::api::{ClusterError, LeaseFuture, LeaseRecord, LeaseStore};

/// What all views share: the Leases, as the API server holds them.
#[derive(Default)]
struct Server {
    leases: BTreeMap<(String, String), LeaseRecord>,
    version: u64,
    /// Requests that fail (500) from now on, by operation: how many more.
    failing: BTreeMap<&'static str, usize>,
}

impl Server {
    /// Stores `lease` at `key` under the next resourceVersion, as a write does; returns it.
    fn store(&mut self, key: (String, String), mut lease: LeaseRecord) -> LeaseRecord {
        self.version += 1;
        lease.resource_version = self.version.to_string();
        self.leases.insert(key, lease.clone());
        lease
    }
}

/// One machine's view of the Leases.
pub struct FakeLeases {
    server: Arc<Mutex<Server>>,
    /// tokio's clock when the store was made, and the wall clock then.
    start: (Instant, Timestamp),
    /// How far this machine's wall clock is ahead (negative: behind).
    skew: Mutex<SignedDuration>,
    /// How long this process was paused (its boot clock counted on).
    paused: Mutex<Duration>,
}

impl Default for FakeLeases {
    fn default() -> Self {
        Self::on(Arc::default())
    }
}

impl FakeLeases {
    fn on(server: Arc<Mutex<Server>>) -> Self {
        Self {
            server,
            start: (Instant::now(), Timestamp::now()),
            skew: Mutex::new(SignedDuration::ZERO),
            paused: Mutex::new(Duration::ZERO),
        }
    }

    /// Another machine's view of the same Leases, its wall clock `skew` ahead.
    pub fn other_machine(&self, skew: SignedDuration) -> Arc<Self> {
        let view = Self::on(self.server.clone());
        *view.skew.lock().unwrap() = skew;
        Arc::new(view)
    }

    /// The next `times` requests of `op` (`get`, `create`, `replace`, `delete`) fail with 500.
    pub fn fail(&self, op: &'static str, times: usize) {
        self.server.lock().unwrap().failing.insert(op, times);
    }

    /// This process was stopped for `d` (SIGSTOP, a suspended machine): its boot clock moves on.
    pub fn pause(&self, d: Duration) {
        *self.paused.lock().unwrap() += d;
    }

    /// The Lease `namespace/name` as the server holds it.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<LeaseRecord> {
        let key = (namespace.to_owned(), name.to_owned());
        self.server.lock().unwrap().leases.get(&key).cloned()
    }

    /// Puts a Lease as another (perhaps dead) holder left it.
    pub fn put(&self, namespace: &str, name: &str, lease: LeaseRecord) {
        let key = (namespace.to_owned(), name.to_owned());
        self.server.lock().unwrap().store(key, lease);
    }

    /// Runs `op` on the server, unless a failure is injected for it.
    fn request<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Server) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut s = self.server.lock().unwrap();
        if let Some(left) = s.failing.get_mut(op).filter(|n| **n > 0) {
            *left -= 1;
            return Err(ClusterError::Api {
                action: op,
                what: "the lock Lease".to_owned(),
                source: Box::new(crate::fake::api_error(500, "injected".to_owned())),
            });
        }
        f(&mut s)
    }
}

fn modified(message: &str) -> ClusterError {
    ClusterError::Modified {
        what: "the lock Lease".to_owned(),
        message: message.to_owned(),
    }
}

impl LeaseStore for FakeLeases {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> LeaseFuture<'a, Option<LeaseRecord>> {
        let key = (namespace.to_owned(), name.to_owned());
        Box::pin(async move { self.request("get", |s| Ok(s.leases.get(&key).cloned())) })
    }

    fn create<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        lease: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord> {
        let key = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            self.request("create", |s| {
                if s.leases.contains_key(&key) {
                    return Err(modified("already exists"));
                }
                Ok(s.store(key, lease.clone()))
            })
        })
    }

    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        lease: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord> {
        let key = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            self.request("replace", |s| {
                let current = s.leases.get(&key).map(|l| l.resource_version.clone());
                if current.as_deref() != Some(lease.resource_version.as_str()) {
                    return Err(modified("the object has been modified"));
                }
                Ok(s.store(key, lease.clone()))
            })
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        resource_version: &'a str,
    ) -> LeaseFuture<'a, ()> {
        let key = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            self.request("delete", |s| {
                if s.leases.get(&key).map(|l| l.resource_version.as_str()) == Some(resource_version)
                {
                    s.leases.remove(&key);
                }
                Ok(())
            })
        })
    }

    fn wall_clock(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.0.elapsed()).unwrap_or_default();
        self.start.1 + elapsed + *self.skew.lock().unwrap()
    }

    fn boot_clock(&self) -> Duration {
        Duration::from_secs(1_000) + self.start.0.elapsed() + *self.paused.lock().unwrap()
    }
}
