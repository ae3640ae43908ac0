//! A fault-injecting [`ClusterApi`] for unit tests: an in-memory API server with discovery,
//! label selectors, namespaces that must exist, resourceVersion preconditions, CRDs that make
//! their kinds served, a "controller" that marks workloads ready (or stuck, or failed), a log of
//! every write, and injected HTTP failures (409, 422, 5xx) by operation and object name.
//!
//! It helps unit tests cover apply ordering and partial failures without a cluster; the
//! integration tests in `tests/` run on a real control plane.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::api::{ApplyParams, ClusterApi, ClusterError, Deleted, Listed, ReadFrom, RequestCounts};
use crate::applyset::{group_kind, split_group_kind};
use crate::desired::{ObjectKey, Scope};

/// An injected failure: the next `times` calls of `op` on an object named `name` (any name
/// when empty) answer `status`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `apply`, `dry-run`, `get`, `list`, `delete` or `scope`.
    pub op: &'static str,
    /// The object's name (for `list` and `scope`: the `Kind.group`).
    pub name: String,
    /// The HTTP status.
    pub status: u16,
    /// How many calls fail.
    pub times: usize,
}

/// How the fake controller treats a workload after it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its status says ready.
    Ready,
    /// Its status never becomes ready.
    Stuck,
    /// Its status says it failed for good.
    Failed,
}

#[derive(Default)]
struct State {
    served: BTreeMap<String, (String, Scope)>,
    objects: BTreeMap<ObjectKey, Value>,
    faults: Vec<Fault>,
    health: BTreeMap<String, Health>,
    writes: Vec<String>,
    counts: RequestCounts,
    resource_version: u64,
    namespaced_user: bool,
    /// The watch cache when it lags: the objects and resourceVersion it stopped at.
    frozen_cache: Option<(BTreeMap<ObjectKey, Value>, u64)>,
    /// LISTs served so far: (from storage, from the cache).
    lists: (usize, usize),
    /// Container logs, by pod name.
    logs: BTreeMap<String, String>,
}

/// The fake cluster.
pub struct FakeCluster {
    state: Mutex<State>,
    fence: std::sync::OnceLock<std::sync::Arc<crate::fence::Fence>>,
    /// The set's lock Leases.
    pub leases: std::sync::Arc<crate::fake_leases::FakeLeases>,
}

impl Default for FakeCluster {
    fn default() -> Self {
        let fake = Self {
            state: Mutex::default(),
            fence: std::sync::OnceLock::new(),
            leases: std::sync::Arc::default(),
        };
        for (api_version, kind, scope) in [
            ("v1", "Namespace", Scope::Cluster),
            ("v1", "ConfigMap", Scope::Namespaced),
            ("v1", "Secret", Scope::Namespaced),
            ("v1", "Service", Scope::Namespaced),
            ("v1", "ServiceAccount", Scope::Namespaced),
            ("v1", "Pod", Scope::Namespaced),
            ("apps/v1", "Deployment", Scope::Namespaced),
            ("apps/v1", "ReplicaSet", Scope::Namespaced),
            ("batch/v1", "Job", Scope::Namespaced),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                Scope::Cluster,
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                Scope::Cluster,
            ),
        ] {
            fake.serve(api_version, kind, scope);
        }
        fake.state.lock().unwrap().objects.insert(
            ObjectKey {
                group_kind: "Namespace".into(),
                namespace: String::new(),
                name: "default".into(),
            },
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        );
        fake
    }
}

pub(crate) fn api_error(status: u16, message: String) -> kube::Error {
    let status: kube::core::Status =
        serde_json::from_value(json!({"code": status, "message": message, "reason": "Injected"}))
            .expect("a Status");
    kube::Error::Api(Box::new(status))
}

impl FakeCluster {
    /// Serves `kind` in `api_version`.
    pub fn serve(&self, api_version: &str, kind: &str, scope: Scope) {
        self.state.lock().unwrap().served.insert(
            group_kind(api_version, kind),
            (api_version.to_owned(), scope),
        );
    }

    /// Injects a failure.
    pub fn fail(&self, op: &'static str, name: &str, status: u16, times: usize) {
        self.state.lock().unwrap().faults.push(Fault {
            op,
            name: name.to_owned(),
            status,
            times,
        });
    }

    /// Puts `obj` (a pod, a replica set: what a controller or the kubelet would make) into
    /// the cluster as is.
    pub fn put_object(&self, obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.objects.insert(ObjectKey::of(&obj), obj);
    }

    /// The log `pod`'s containers have written.
    pub fn set_log(&self, pod: &str, log: &str) {
        self.state
            .lock()
            .unwrap()
            .logs
            .insert(pod.to_owned(), log.to_owned());
    }

    /// How the controller treats the workload `name` (ready by default).
    pub fn health(&self, name: &str, health: Health) {
        self.state
            .lock()
            .unwrap()
            .health
            .insert(name.to_owned(), health);
    }

    /// Refuses cluster-wide LISTs (403), as for a user whose Roles cover some namespaces.
    pub fn namespaced_user(&self) {
        self.state.lock().unwrap().namespaced_user = true;
    }

    /// Every write so far: `apply <key>` / `delete <key>`, in order.
    pub fn writes(&self) -> Vec<String> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Forgets the writes logged so far.
    pub fn clear_writes(&self) {
        self.state.lock().unwrap().writes.clear();
    }

    /// The stored object, if any.
    pub fn object(&self, group_kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&ObjectKey {
                group_kind: group_kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .cloned()
    }

    /// The watch cache stops where the objects are now.
    pub fn freeze_cache(&self) {
        let mut s = self.state.lock().unwrap();
        s.frozen_cache = Some((s.objects.clone(), s.resource_version));
    }

    /// LISTs served so far: (from storage, from the watch cache).
    pub fn lists(&self) -> (usize, usize) {
        self.state.lock().unwrap().lists
    }

    /// Stores an object as another client would create it.
    pub fn put(&self, obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.resource_version += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        s.objects.insert(ObjectKey::of(&obj), obj);
    }

    /// Changes a stored object as another client would (a new resourceVersion).
    pub fn touch(&self, group_kind: &str, namespace: &str, name: &str, annotation: &str) {
        let mut s = self.state.lock().unwrap();
        s.resource_version += 1;
        let rv = s.resource_version.to_string();
        let key = ObjectKey {
            group_kind: group_kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let obj = s.objects.get_mut(&key).expect("the object exists");
        obj["metadata"]["annotations"][annotation] = json!("x");
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    fn injected(s: &mut State, op: &str, name: &str) -> Option<u16> {
        let fault = s
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.times > 0 && (f.name.is_empty() || f.name == name))?;
        fault.times -= 1;
        Some(fault.status)
    }

    fn request(&self, op: &'static str, name: &str, write: bool) -> Result<(), ClusterError> {
        if write {
            if let Some(f) = self.fence.get() {
                f.check().map_err(|why| ClusterError::Fenced { why })?;
            }
        }
        let mut s = self.state.lock().unwrap();
        s.counts.requests += 1;
        if write {
            s.counts.writes += 1;
        }
        match Self::injected(&mut s, op, name) {
            None => Ok(()),
            // A merge patch has no field managers: its 409 is a change under its precondition.
            Some(409) if op == "patch" => Err(ClusterError::Modified {
                what: name.to_owned(),
                message: "Operation cannot be fulfilled: the object has been modified".into(),
            }),
            Some(409) => Err(ClusterError::Conflict {
                what: name.to_owned(),
                message: "injected conflict".into(),
            }),
            Some(status) => Err(ClusterError::Api {
                action: op,
                what: format!("`{name}`"),
                source: Box::new(api_error(status, format!("injected {status}"))),
            }),
        }
    }

    fn scope_of(s: &State, gk: &str) -> Option<Scope> {
        s.served.get(gk).map(|(_, scope)| *scope)
    }

    /// What the controller writes into a workload's status.
    fn status(obj: &Value, health: Health) -> Option<Value> {
        let replicas = obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        match (obj["kind"].as_str()?, health) {
            ("Deployment", Health::Ready) => Some(json!({"observedGeneration": 1,
                "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas})),
            ("Deployment", Health::Stuck) => {
                Some(json!({"observedGeneration": 1, "replicas": replicas}))
            }
            ("Deployment", Health::Failed) => Some(json!({"observedGeneration": 1,
                "conditions": [{"type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded", "message": "injected"}]})),
            ("Job", Health::Ready) => {
                Some(json!({"conditions": [{"type": "Complete", "status": "True"}]}))
            }
            ("Job", Health::Stuck) => Some(json!({})),
            ("Job", Health::Failed) => Some(json!({"conditions": [{"type": "Failed",
                "status": "True", "reason": "BackoffLimitExceeded", "message": "injected"}]})),
            ("CustomResourceDefinition", _) => {
                Some(json!({"conditions": [{"type": "Established", "status": "True"}]}))
            }
            _ => None,
        }
    }
}

/// Whether `obj` carries every `key=value` of `selector` (other terms are not understood here
/// and match everything).
fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return true;
        };
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

impl ClusterApi for FakeCluster {
    fn default_namespace(&self) -> &str {
        "default"
    }

    async fn scope(&self, api_version: &str, kind: &str) -> Result<Scope, ClusterError> {
        let gk = group_kind(api_version, kind);
        self.request("scope", &gk, false)?;
        let s = self.state.lock().unwrap();
        Self::scope_of(&s, &gk).ok_or_else(|| ClusterError::UnknownKind {
            api_version: api_version.into(),
            kind: kind.into(),
        })
    }

    async fn list(
        &self,
        gk: &str,
        _api_version: Option<&str>,
        selector: &str,
        namespace: Option<&str>,
        from: ReadFrom,
    ) -> Result<Listed, ClusterError> {
        let s = self.state.lock().unwrap();
        let cluster_wide = namespace.is_none() || Self::scope_of(&s, gk) == Some(Scope::Cluster);
        let forbidden = cluster_wide && s.namespaced_user;
        drop(s);
        if forbidden {
            return Err(ClusterError::Api {
                action: "list",
                what: format!("`{gk}`"),
                source: Box::new(api_error(403, "forbidden at the cluster scope".into())),
            });
        }
        self.request("list", gk, false)?;
        let mut s = self.state.lock().unwrap();
        if Self::scope_of(&s, gk).is_none() {
            return Err(ClusterError::Api {
                action: "list",
                what: format!("`{gk}`"),
                source: Box::new(api_error(404, "not served".into())),
            });
        }
        match from {
            ReadFrom::Storage => s.lists.0 += 1,
            ReadFrom::Cache => s.lists.1 += 1,
        }
        let (objects, resource_version) = match (&s.frozen_cache, from) {
            (Some((objects, rv)), ReadFrom::Cache) => (objects, *rv),
            _ => (&s.objects, s.resource_version),
        };
        Ok(Listed {
            items: objects
                .iter()
                .filter(|(k, o)| {
                    k.group_kind == gk
                        && matches_selector(o, selector)
                        && namespace.is_none_or(|ns| k.namespace == ns)
                })
                .map(|(_, o)| o.clone())
                .collect(),
            resource_version: Some(resource_version),
        })
    }

    async fn list_other_kinds(
        &self,
        known: &BTreeSet<String>,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        self.request("list", "*", false)?;
        let s = self.state.lock().unwrap();
        Ok(s.objects
            .iter()
            .filter(|(k, o)| !known.contains(&k.group_kind) && matches_selector(o, selector))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        self.request("get", name, false)?;
        let gk = group_kind(api_version, kind);
        let s = self.state.lock().unwrap();
        let namespace = match Self::scope_of(&s, &gk) {
            Some(Scope::Cluster) => "",
            _ => namespace,
        };
        Ok(s.objects
            .get(&ObjectKey {
                group_kind: gk,
                namespace: namespace.into(),
                name: name.into(),
            })
            .cloned())
    }

    async fn apply(&self, obj: &Value, params: ApplyParams<'_>) -> Result<Value, ClusterError> {
        let key = ObjectKey::of(obj);
        self.request(
            if params.dry_run { "dry-run" } else { "apply" },
            &key.name,
            !params.dry_run,
        )?;
        let mut s = self.state.lock().unwrap();
        let Some(scope) = Self::scope_of(&s, &key.group_kind) else {
            let (kind, _) = split_group_kind(&key.group_kind);
            return Err(ClusterError::UnknownKind {
                api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
                kind: kind.into(),
            });
        };
        let namespace_key = ObjectKey {
            group_kind: "Namespace".into(),
            namespace: String::new(),
            name: key.namespace.clone(),
        };
        if scope == Scope::Namespaced && !s.objects.contains_key(&namespace_key) {
            return Err(ClusterError::Api {
                action: "apply",
                what: key.to_string(),
                source: Box::new(api_error(
                    404,
                    format!("namespaces \"{}\" not found", key.namespace),
                )),
            });
        }
        let live_rv = s
            .objects
            .get(&key)
            .and_then(|o| o.pointer("/metadata/resourceVersion").cloned());
        if let Some(wanted) = obj.pointer("/metadata/resourceVersion") {
            if live_rv.as_ref() != Some(wanted) {
                return Err(ClusterError::Modified {
                    what: key.to_string(),
                    message: "Operation cannot be fulfilled: the object has been modified".into(),
                });
            }
        }
        let mut stored = obj.clone();
        let health = s.health.get(&key.name).copied().unwrap_or(Health::Ready);
        if let Some(status) = Self::status(obj, health) {
            stored["status"] = status;
        }
        if params.dry_run {
            // As the API server: a dry run of an existing object answers with its version.
            if let Some(rv) = live_rv {
                stored["metadata"]["resourceVersion"] = rv;
            }
            return Ok(stored);
        }
        s.resource_version += 1;
        stored["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        if key.group_kind == "CustomResourceDefinition.apiextensions.k8s.io" {
            let spec = &obj["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let version = spec
                .pointer("/versions/0/name")
                .and_then(Value::as_str)
                .unwrap_or("v1");
            let kind = spec.pointer("/names/kind").and_then(Value::as_str);
            let scope = match spec["scope"].as_str() {
                Some("Cluster") => Scope::Cluster,
                _ => Scope::Namespaced,
            };
            if let Some(kind) = kind {
                let api_version = format!("{group}/{version}");
                s.served
                    .insert(group_kind(&api_version, kind), (api_version, scope));
            }
        }
        s.writes.push(format!("apply {key}"));
        s.objects.insert(key, stored.clone());
        Ok(stored)
    }

    /// The fake keeps no managedFields: a merge patch is a write that changes nothing else.
    async fn merge_patch(&self, obj: &Value, _patch: &Value) -> Result<Value, ClusterError> {
        let key = ObjectKey::of(obj);
        self.request("patch", &key.name, true)?;
        let s = self.state.lock().unwrap();
        Ok(s.objects.get(&key).cloned().unwrap_or_else(|| obj.clone()))
    }

    /// The fake has no watches: it polls, every 50 ms of (tokio's) time.
    async fn watch_until<T>(
        &self,
        group_kind: &str,
        namespace: &str,
        name: &str,
        timeout: std::time::Duration,
        verdict: &mut dyn FnMut(Option<&Value>) -> Option<T>,
    ) -> Result<Option<T>, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.request("get", name, false)?;
            let current = {
                let s = self.state.lock().unwrap();
                let namespace = match Self::scope_of(&s, group_kind) {
                    Some(Scope::Cluster) => "",
                    _ => namespace,
                };
                s.objects
                    .get(&ObjectKey {
                        group_kind: group_kind.into(),
                        namespace: namespace.into(),
                        name: name.into(),
                    })
                    .cloned()
            };
            if let Some(out) = verdict(current.as_ref()) {
                return Ok(Some(out));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn watch_selected_until<T>(
        &self,
        group_kind: &str,
        namespace: &str,
        selector: &str,
        timeout: std::time::Duration,
        verdict: &mut dyn FnMut(&[Value]) -> Option<T>,
    ) -> Result<Option<T>, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.request("list", group_kind, false)?;
            let current: Vec<Value> = {
                let s = self.state.lock().unwrap();
                s.objects
                    .iter()
                    .filter(|(k, o)| {
                        k.group_kind == group_kind
                            && k.namespace == namespace
                            && matches_selector(o, selector)
                    })
                    .map(|(_, o)| o.clone())
                    .collect()
            };
            if let Some(out) = verdict(&current) {
                return Ok(Some(out));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn logs(
        &self,
        _namespace: &str,
        pod: &str,
        _container: Option<&str>,
        _previous: bool,
        tail_lines: i64,
    ) -> Result<String, ClusterError> {
        self.request("get", pod, false)?;
        let s = self.state.lock().unwrap();
        let log = s.logs.get(pod).cloned().unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines
            .len()
            .saturating_sub(usize::try_from(tail_lines).unwrap_or(0));
        Ok(lines[from..].join("\n"))
    }

    async fn exists(&self, gk: &str, namespace: &str, name: &str) -> Result<bool, ClusterError> {
        self.request("get", name, false)?;
        let s = self.state.lock().unwrap();
        Ok(s.objects.contains_key(&ObjectKey {
            group_kind: gk.into(),
            namespace: namespace.into(),
            name: name.into(),
        }))
    }

    async fn delete(
        &self,
        gk: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Deleted, ClusterError> {
        self.request("delete", name, true)?;
        let mut s = self.state.lock().unwrap();
        let key = ObjectKey {
            group_kind: gk.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let Some(live) = s.objects.get(&key) else {
            return Ok(Deleted::Gone);
        };
        if uid.is_some_and(|u| live.pointer("/metadata/uid").and_then(Value::as_str) != Some(u)) {
            return Ok(Deleted::Replaced);
        }
        s.writes.push(format!("delete {key}"));
        s.objects.remove(&key);
        Ok(Deleted::Deleted)
    }

    fn counts(&self) -> RequestCounts {
        self.state.lock().unwrap().counts
    }

    fn leases(&self) -> Option<std::sync::Arc<dyn crate::api::LeaseStore>> {
        Some(self.leases.clone())
    }

    fn fence_writes(&self, fence: std::sync::Arc<crate::fence::Fence>) {
        let _ = self.fence.set(fence);
    }
}
