//! What realization needs from a cluster, as a trait: discovery (scopes), LIST, GET,
//! server-side apply (or its dry run), DELETE, and the request counts. [`KubeCluster`] is the
//! real one; unit tests use a fault-injecting fake.
//!
//! [`KubeCluster`]: crate::KubeCluster

use std::collections::BTreeSet;

use serde_json::Value;

use crate::desired::Scope;
use k8s_openapi::jiff;

/// A cluster operation that failed.
#[derive(Debug)]
pub enum ClusterError {
    /// No usable kubeconfig or context.
    Config(Box<dyn std::error::Error + Send + Sync>),
    /// The API server refused or failed a request. When it answered with a `Status`, the
    /// error reads as its message, once; otherwise the client's error is the cause.
    Api {
        /// What was attempted.
        action: &'static str,
        /// The object or resource.
        what: String,
        /// The cause.
        source: Box<kube::Error>,
    },
    /// The API server does not serve this kind.
    UnknownKind {
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// The cluster could not be reached at all (refused, timed out, no route, unresolvable).
    Unreachable {
        /// The API server's URL.
        server: String,
        /// The kubeconfig context.
        context: String,
        /// The cause.
        source: Box<kube::Error>,
    },
    /// The object changed on the server since the version the write was conditional on (409
    /// "the object has been modified"): not a field conflict; re-read and write again.
    Modified {
        /// The object.
        what: String,
        /// The server's message.
        message: String,
    },
    /// This run no longer provably holds the set's lock: the write was not sent.
    Fenced {
        /// Why the fence is closed.
        why: String,
    },
    /// Server-side apply conflicts with another field manager (409).
    Conflict {
        /// The object.
        what: String,
        /// The server's message, naming the manager and the fields.
        message: String,
    },
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Config(_) => f.write_str("failed to load the kubeconfig"),
            ClusterError::Api {
                action,
                what,
                source,
            } => match source.as_ref() {
                kube::Error::Api(s) => write!(f, "{action} {what}: {}", s.message),
                _ => write!(f, "{action} {what} failed"),
            },
            ClusterError::Unreachable {
                server, context, ..
            } => write!(
                f,
                "cannot reach the cluster at {server} (context `{context}`)"
            ),
            ClusterError::UnknownKind { api_version, kind } => {
                write!(f, "the cluster does not serve `{kind}` in `{api_version}`")
            }
            ClusterError::Conflict { what, message } => {
                write!(f, "{what}: conflict with another field manager: {message}")
            }
            ClusterError::Fenced { why } => write!(
                f,
                "this run no longer holds the set's lock ({why}); it stopped before its next write"
            ),
            ClusterError::Modified { what, message } => {
                write!(
                    f,
                    "{what} changed on the server while kiln wrote it: {message}"
                )
            }
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Config(e) => Some(e.as_ref()),
            // The server's own message is already the whole story.
            ClusterError::Api { source, .. } if matches!(source.as_ref(), kube::Error::Api(_)) => {
                None
            }
            ClusterError::Api { source, .. } | ClusterError::Unreachable { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}

/// Whether a client error says the server could not be reached (no answer at all), by the
/// I/O error at the end of its chain.
pub fn is_unreachable(e: &kube::Error) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

impl ClusterError {
    /// A 409 from a write: `Modified` when the server says the object changed under a
    /// conditional write, else a field-manager `Conflict`.
    pub fn from_409(what: String, message: String) -> Self {
        if message.contains("has been modified") {
            ClusterError::Modified { what, message }
        } else {
            ClusterError::Conflict { what, message }
        }
    }

    /// Whether the error says the kind is not served (yet).
    pub fn is_not_served(&self) -> bool {
        self.status_code() == Some(404) || matches!(self, ClusterError::UnknownKind { .. })
    }

    /// Whether the server refused the object itself (malformed, invalid, a field its schema
    /// does not declare): the user's to fix. Servers before fieldValidation (< 1.25) answer a
    /// server-side apply of an undeclared field with a 500 "failed to create typed patch
    /// object", so that answer counts too.
    pub fn rejects_the_object(&self) -> bool {
        match self.status_code() {
            Some(c) if (400..500).contains(&c) => !self.is_not_served() && c != 409,
            Some(500) => self
                .server_message()
                .starts_with("failed to create typed patch object"),
            _ => false,
        }
    }

    /// What the server said, once: its `Status` message, else this error's own text.
    pub fn server_message(&self) -> String {
        match self {
            ClusterError::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
                other => other.to_string(),
            },
            ClusterError::Conflict { message, .. } | ClusterError::Modified { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }

    /// The HTTP status the API server answered with, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            ClusterError::Conflict { .. } | ClusterError::Modified { .. } => Some(409),
            _ => None,
        }
    }
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object is being deleted.
    Deleted,
    /// It was not there.
    Gone,
    /// Another object of that name stands there now (the uid precondition failed): left alone.
    Replaced,
}

/// Request counts of one connection (the set's lock excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Every request.
    pub requests: usize,
    /// Requests that change something: not GET, not a dry run.
    pub writes: usize,
}

/// Where a LIST is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Storage (etcd): a consistent read, in pages, that costs what the namespace (or the
    /// cluster) holds of the kind, whatever the selector matches.
    Storage,
    /// The API server's watch cache (`resourceVersion=0`): filtered in memory, cheap however
    /// crowded the namespace, and possibly behind; [`Listed::resource_version`] says how far it
    /// got.
    Cache,
}

/// A resourceVersion as a number (etcd's revision); `None` for another storage's opaque one.
pub fn numeric(resource_version: Option<&str>) -> Option<u64> {
    resource_version?.parse().ok()
}

/// What a LIST returned.
#[derive(Debug, Default)]
pub struct Listed {
    /// The objects, with their `apiVersion` and `kind`.
    pub items: Vec<Value>,
    /// The resourceVersion it was served at, when the server said (and it is a number, as it
    /// is with etcd: the revision).
    pub resource_version: Option<u64>,
}

/// How to apply one object.
#[derive(Debug, Clone, Copy)]
pub struct ApplyParams<'a> {
    /// Take fields other field managers own.
    pub force: bool,
    /// Validate and admit only: the server persists nothing.
    pub dry_run: bool,
    /// The set's field manager ([`crate::ownership::field_manager`]).
    pub manager: &'a str,
}

/// The operations realization performs on a cluster. Futures are awaited on the caller's task
/// (joined, never spawned), so they need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait ClusterApi {
    /// The namespace a namespaced object without one goes to (the context's, else `default`).
    fn default_namespace(&self) -> &str;

    /// Whether `kind` in `api_version` is namespaced, from discovery.
    async fn scope(&self, api_version: &str, kind: &str) -> Result<Scope, ClusterError>;

    /// Every object of `Kind.group` labeled `selector`, across namespaces (or in `namespace`
    /// only), in `api_version` when given, else in the group's preferred version: a consistent
    /// read in pages, or what the API server's watch cache holds (`from`).
    async fn list(
        &self,
        group_kind: &str,
        api_version: Option<&str>,
        selector: &str,
        namespace: Option<&str>,
        from: ReadFrom,
    ) -> Result<Listed, ClusterError>;

    /// Objects labeled `selector` of every listable served kind not in `known`. Kinds this user
    /// may not list (403, 404, 405) hold no members it could act on.
    async fn list_other_kinds(
        &self,
        known: &BTreeSet<String>,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError>;

    /// One object, or `None`.
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClusterError>;

    /// Server-side apply of `obj` with the set's field manager; the object as the server has it.
    async fn apply(&self, obj: &Value, params: ApplyParams<'_>) -> Result<Value, ClusterError>;

    /// A JSON merge patch of one object (the ownership migration); the object after it.
    async fn merge_patch(&self, obj: &Value, patch: &Value) -> Result<Value, ClusterError>;

    /// Follows one object (or its absence, `None`) until `verdict` settles or `timeout`
    /// passes (`Ok(None)`): a watch where the cluster has them, from the object as it is now.
    async fn watch_until<T>(
        &self,
        group_kind: &str,
        namespace: &str,
        name: &str,
        timeout: std::time::Duration,
        verdict: &mut dyn FnMut(Option<&Value>) -> Option<T>,
    ) -> Result<Option<T>, ClusterError>;

    /// Follows the objects of `Kind.group` labeled `selector` in `namespace` until `verdict`
    /// settles or `timeout` passes (`Ok(None)`): a LIST, then a watch from its
    /// resourceVersion; after each change the verdict sees every such object as it now is.
    async fn watch_selected_until<T>(
        &self,
        group_kind: &str,
        namespace: &str,
        selector: &str,
        timeout: std::time::Duration,
        verdict: &mut dyn FnMut(&[Value]) -> Option<T>,
    ) -> Result<Option<T>, ClusterError>;

    /// The last `tail_lines` lines of the log of a pod's container (of its previous instance
    /// with `previous`, for one that crashed).
    async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
        tail_lines: i64,
    ) -> Result<String, ClusterError>;

    /// Whether an object of `Kind.group` exists.
    async fn exists(
        &self,
        group_kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ClusterError>;

    /// Deletes one object (background propagation); a missing object is fine. With `uid`, only
    /// that incarnation of it (a precondition): an object deleted and made again since it was
    /// read is left alone.
    async fn delete(
        &self,
        group_kind: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Deleted, ClusterError>;

    /// Requests made so far.
    fn counts(&self) -> RequestCounts;

    /// Where the set's lock (a Lease) is kept, outside the request counts; `None` when this
    /// connection cannot hold one.
    fn leases(&self) -> Option<std::sync::Arc<dyn LeaseStore>>;

    /// From now on, every write (apply, patch, delete; not dry runs) first checks `fence` and
    /// is refused with [`ClusterError::Fenced`] once it is closed.
    fn fence_writes(&self, fence: std::sync::Arc<crate::fence::Fence>);
}

/// The set's lock Lease, as the lock reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity` (empty: free).
    pub holder: String,
    /// `spec.leaseDurationSeconds`.
    pub ttl_seconds: i64,
    /// `spec.acquireTime`.
    pub acquired: Option<jiff::Timestamp>,
    /// `spec.renewTime`.
    pub renewed: Option<jiff::Timestamp>,
    /// `metadata.resourceVersion` as read (empty for one not yet written): every replace and
    /// delete is conditional on it.
    pub resource_version: String,
}

/// A future of the lease operations: owned, so the lock's renewer can run on its own task.
pub type LeaseFuture<'a, T> = futures::future::BoxFuture<'a, Result<T, ClusterError>>;

/// The Lease operations of the set's lock, and the clocks it judges them by. Shared between
/// the run and its lock's renewer task. Conflicting writes (the Lease exists, or changed since
/// it was read) fail with [`ClusterError::Modified`].
pub trait LeaseStore: Send + Sync {
    /// The Lease `namespace/name`, if it exists.
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str)
        -> LeaseFuture<'a, Option<LeaseRecord>>;
    /// Creates it; the record as stored (with its resourceVersion).
    fn create<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        lease: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord>;
    /// Replaces it, on the condition that it is still at `lease.resource_version`.
    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        lease: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord>;
    /// Deletes it if it is still at `resource_version`; gone or changed is not an error.
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        resource_version: &'a str,
    ) -> LeaseFuture<'a, ()>;
    /// The wall clock, for the holders' renew times (machines' clocks differ).
    fn wall_clock(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
    /// This machine's clock that counts while the process is paused ([`crate::fence`]).
    fn boot_clock(&self) -> std::time::Duration {
        crate::fence::boot_clock()
    }
}
