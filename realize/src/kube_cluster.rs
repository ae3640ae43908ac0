//! The real cluster: [`ClusterApi`] on a kube client with a request counter (a tower layer),
//! discovery cached per group-version, LIST, GET, server-side apply and DELETE.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::TryStreamExt as _;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::discovery::{ApiCapabilities, ApiGroup, Scope};
use kube::{Client, Config};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::api::{
    is_unreachable, numeric, ApplyParams, ClusterApi, ClusterError, Deleted, Listed, ReadFrom,
    RequestCounts,
};
use crate::applyset::{group_kind, split_group_kind};
use crate::desired::Scope as ObjectScope;

/// Request counts, by a counting layer on the client's HTTP stack.
#[derive(Debug, Default)]
struct Counters {
    /// Every request.
    pub requests: AtomicUsize,
    /// Requests that are not GET and not dry runs (writes).
    pub writes: AtomicUsize,
}

/// A connection to one cluster.
pub struct KubeCluster {
    client: Client,
    /// The API server's URL and the kubeconfig context, named when the cluster is out of reach.
    server: String,
    context: String,
    /// The configuration, for the lock's client.
    config: Config,
    /// The same connection without the counting layer: the set's lock (a Lease read, created,
    /// renewed and deleted) is not part of a plan's or an apply's request counts. Made when
    /// first asked for: a plan never takes the lock.
    lock_client: std::sync::OnceLock<Option<Arc<dyn crate::api::LeaseStore>>>,
    /// The set's lock's fence, once this run holds the lock: every write checks it.
    fence: std::sync::OnceLock<Arc<crate::fence::Fence>>,
    counters: Arc<Counters>,
    /// group/version -> the group's resources, fetched once even when asked for concurrently.
    groups: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<ApiGroup>>>>>,
    /// group -> versions, preferred first (from one /apis request, when needed).
    preferred: Mutex<Option<HashMap<String, Vec<String>>>>,
}

/// An unknown `--context` is an error that lists the kubeconfig's contexts.
fn check_context(kc: &Kubeconfig, context: Option<&str>) -> Result<(), ClusterError> {
    let Some(wanted) = context else {
        return Ok(());
    };
    if kc.contexts.iter().any(|c| c.name == wanted) {
        return Ok(());
    }
    let names: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
    Err(ClusterError::Config(
        format!(
            "no context `{wanted}` in the kubeconfig (its contexts: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
        .into(),
    ))
}

impl KubeCluster {
    /// Connects with `--kubeconfig` / `--context`, or the usual inference (`KUBECONFIG`,
    /// `~/.kube/config`, in-cluster).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        request_timeout: Option<std::time::Duration>,
    ) -> Result<Self, ClusterError> {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let boxed = |e: Box<dyn std::error::Error + Send + Sync>| ClusterError::Config(e);
        let mut config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| boxed(Box::new(e)))?;
                check_context(&kc, context)?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| boxed(Box::new(e)))?
            }
            None if context.is_some() => {
                if let Ok(kc) = Kubeconfig::read() {
                    check_context(&kc, context)?;
                }
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| boxed(Box::new(e)))?
            }
            None => Config::infer().await.map_err(|e| boxed(Box::new(e)))?,
        };
        if let Some(t) = request_timeout {
            config.read_timeout = Some(t);
            config.write_timeout = Some(t);
            config.connect_timeout = Some(t);
        }
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let layer =
            tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
                c.requests.fetch_add(1, Ordering::Relaxed);
                let dry_run = req.uri().query().is_some_and(|q| q.contains("dryRun="));
                if req.method() != http::Method::GET && !dry_run {
                    c.writes.fetch_add(1, Ordering::Relaxed);
                }
                req
            });
        let client = crate::connection::client_builder(config.clone())
            .map_err(|e| boxed(Box::new(e)))?
            .with_layer(&layer)
            .build();
        let context = context.map(str::to_owned).or_else(|| {
            let kc = match kubeconfig {
                Some(path) => Kubeconfig::read_from(path).ok()?,
                None => Kubeconfig::read().ok()?,
            };
            kc.current_context
        });
        Ok(Self {
            client,
            server: config.cluster_url.to_string(),
            context: context.unwrap_or_else(|| "(in-cluster)".to_owned()),
            config,
            lock_client: std::sync::OnceLock::new(),
            fence: std::sync::OnceLock::new(),
            counters,
            groups: Mutex::default(),
            preferred: Mutex::default(),
        })
    }

    /// Resolves a kind in an apiVersion, one discovery request per group/version.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gv_key = format!("{group}/{version}");
        for attempt in 0..2 {
            let cell = self
                .groups
                .lock()
                .await
                .entry(gv_key.clone())
                .or_default()
                .clone();
            let g = cell
                .get_or_try_init(|| async {
                    let gv = kube::core::GroupVersion::gv(group, version);
                    kube::discovery::pinned_group(&self.client, &gv)
                        .await
                        .map(Arc::new)
                        .map_err(self.api_error("discover", format!("`{api_version}`")))
                })
                .await?
                .clone();
            if let Some(found) = g
                .versioned_resources(version)
                .into_iter()
                .find(|(ar, _)| ar.kind == kind)
            {
                return Ok(found);
            }
            // A CRD established moments ago may not be in the group's discovery document we
            // read before it: read it again, once.
            if attempt == 0 {
                self.groups.lock().await.remove(&gv_key);
            }
        }
        Err(ClusterError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        })
    }

    /// Resolves a `Kind.group` with the group's preferred version.
    pub async fn resolve_group_kind(
        &self,
        gk: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        let (kind, group) = split_group_kind(gk);
        if group.is_empty() {
            return self.resolve("v1", kind).await;
        }
        let versions = {
            let mut p = self.preferred.lock().await;
            if p.is_none() {
                let list = self
                    .client
                    .list_api_groups()
                    .await
                    .map_err(self.api_error("discover", "API groups"))?;
                // Preferred version first, then the others the group serves.
                *p = Some(
                    list.groups
                        .into_iter()
                        .map(|g| {
                            let mut versions: Vec<String> = g
                                .preferred_version
                                .iter()
                                .map(|v| v.version.clone())
                                .collect();
                            for v in g.versions {
                                if !versions.contains(&v.version) {
                                    versions.push(v.version);
                                }
                            }
                            (g.name, versions)
                        })
                        .collect(),
                );
            }
            p.as_ref()
                .and_then(|m| m.get(group).cloned())
                .unwrap_or_default()
        };
        // A kind need not be served in the preferred version (CronJob is batch/v1beta1 on 1.20).
        for version in &versions {
            match self.resolve(&format!("{group}/{version}"), kind).await {
                Err(ClusterError::UnknownKind { .. }) => continue,
                other => return other,
            }
        }
        Err(ClusterError::UnknownKind {
            api_version: group.to_owned(),
            kind: kind.to_owned(),
        })
    }

    fn api(
        &self,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match (&caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) if !ns.is_empty() => {
                Api::namespaced_with(self.client.clone(), ns, ar)
            }
            _ => Api::all_with(self.client.clone(), ar),
        }
    }
}

impl KubeCluster {
    /// Runs a write request, checking the fence before every poll of it: a request is put
    /// on the wire during a poll, so one whose run was paused past its lease (SIGSTOP,
    /// suspend) before it was sent is dropped when the run resumes, instead of sent late.
    async fn fenced_write<T>(
        &self,
        write: impl std::future::Future<Output = T>,
    ) -> Result<T, ClusterError> {
        let fence = self.fence.get().cloned();
        let mut write = std::pin::pin!(write);
        futures::future::poll_fn(move |cx| {
            if let Some(f) = &fence {
                if let Err(why) = f.check() {
                    return std::task::Poll::Ready(Err(ClusterError::Fenced { why }));
                }
            }
            write.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// A request's failure: `Unreachable` (naming the server and context) when the cluster
    /// could not be reached at all, else `Api`.
    fn api_error(
        &self,
        action: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> ClusterError + '_ {
        let what = what.into();
        move |source| {
            if is_unreachable(&source) {
                ClusterError::Unreachable {
                    server: self.server.clone(),
                    context: self.context.clone(),
                    source: Box::new(source),
                }
            } else {
                ClusterError::Api {
                    action,
                    what,
                    source: Box::new(source),
                }
            }
        }
    }
}

impl ClusterApi for KubeCluster {
    fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    async fn scope(&self, api_version: &str, kind: &str) -> Result<ObjectScope, ClusterError> {
        let (_, caps) = self.resolve(api_version, kind).await?;
        Ok(match caps.scope {
            Scope::Cluster => ObjectScope::Cluster,
            Scope::Namespaced => ObjectScope::Namespaced,
        })
    }

    fn counts(&self) -> RequestCounts {
        RequestCounts {
            requests: self.counters.requests.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    fn fence_writes(&self, fence: Arc<crate::fence::Fence>) {
        let _ = self.fence.set(fence);
    }

    fn leases(&self) -> Option<Arc<dyn crate::api::LeaseStore>> {
        self.lock_client
            .get_or_init(|| {
                match crate::connection::client_builder(self.config.clone()) {
                    Ok(builder) => Some(Arc::new(crate::kube_leases::KubeLeases::new(
                        builder.build(),
                    )) as Arc<dyn crate::api::LeaseStore>),
                    // The same configuration made the counted client; should it fail now, the
                    // apply says that it cannot hold the set's lock.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make a client for the set's lock");
                        None
                    }
                }
            })
            .clone()
    }

    /// Every object of a group-kind labeled `selector`, across namespaces (or in one), in
    /// `api_version` when given (the version kiln applies in, so fields compare like for like),
    /// else the group's preferred version.
    async fn list(
        &self,
        gk: &str,
        api_version: Option<&str>,
        selector: &str,
        namespace: Option<&str>,
        from: ReadFrom,
    ) -> Result<Listed, ClusterError> {
        let (ar, caps) = match api_version {
            Some(v) => self.resolve(v, split_group_kind(gk).0).await?,
            None => self.resolve_group_kind(gk).await?,
        };
        let api = self.api(&ar, &caps, namespace);
        let base = ListParams::default().labels(selector);
        if from == ReadFrom::Cache {
            // `resourceVersion=0`: any version the cache holds, in one response (the cache does
            // not page), filtered by label in memory. The caller checks how far it got.
            let list = api
                .list(&base.match_any())
                .await
                .map_err(self.api_error("list", format!("`{gk}`")))?;
            return Ok(Listed {
                resource_version: numeric(list.metadata.resource_version.as_deref()),
                items: typed_values(list.items, &ar),
            });
        }
        // A consistent read, in pages, so that a kind with very many members never arrives in
        // one response.
        let mut params = base.limit(LIST_PAGE);
        let mut items = Vec::new();
        let resource_version = loop {
            let page = api
                .list(&params)
                .await
                .map_err(self.api_error("list", format!("`{gk}`")))?;
            items.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break numeric(page.metadata.resource_version.as_deref()),
            }
        };
        Ok(Listed {
            items: typed_values(items, &ar),
            resource_version,
        })
    }

    /// Members of the set (labeled `selector`) of every listable kind the cluster serves that
    /// is not in `known` (`Kind.group`): one discovery pass, then one LIST per such kind.
    async fn list_other_kinds(
        &self,
        known: &BTreeSet<String>,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        // Each group's preferred version on its own: one unavailable aggregated API (a
        // metrics-server that is not running answers 503) is skipped with a warning naming
        // it, as kubectl does, instead of failing the whole search.
        let groups = self
            .client
            .list_api_groups()
            .await
            .map_err(self.api_error("discover", "every API group"))?;
        let mut versions = vec![kube::core::GroupVersion::gv("", "v1")];
        for g in groups.groups {
            let preferred = g
                .preferred_version
                .or_else(|| g.versions.into_iter().next());
            if let Some(v) = preferred {
                if let Ok(gv) = v.group_version.parse::<kube::core::GroupVersion>() {
                    versions.push(gv);
                }
            }
        }
        let found = futures::future::join_all(versions.into_iter().map(|gv| async move {
            let group = kube::discovery::pinned_group(&self.client, &gv).await;
            (gv, group)
        }))
        .await;
        let mut kinds = Vec::new();
        for (gv, group) in found {
            let group = match group {
                Ok(g) => g,
                Err(e) if is_unreachable(&e) => {
                    return Err(self.api_error("discover", gv.api_version())(e))
                }
                Err(e) => {
                    tracing::warn!(
                        "skipping `{}` while looking for orphans: its API is unavailable ({})",
                        gv.api_version(),
                        kiln_core::error_chain::error_chain(&e)
                    );
                    continue;
                }
            };
            for (ar, caps) in group.recommended_resources() {
                let gk = group_kind(&ar.api_version, &ar.kind);
                if caps.supports_operation(kube::discovery::verbs::LIST) && !known.contains(&gk) {
                    kinds.push((gk, ar, caps));
                }
            }
        }
        let lists =
            futures::future::try_join_all(kinds.into_iter().map(|(gk, ar, caps)| async move {
                let api = self.api(&ar, &caps, None);
                match api.list(&ListParams::default().labels(selector)).await {
                    Ok(list) => Ok(typed_values(list.items, &ar)),
                    // Kinds this user may not list cannot hold members it could delete.
                    Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 || s.code == 405 => {
                        Ok(Vec::new())
                    }
                    Err(source) => Err(self.api_error("list", format!("`{gk}`"))(source)),
                }
            }))
            .await?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// One object, or `None`.
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        let (ar, caps) = self.resolve(api_version, kind).await?;
        let api = self.api(&ar, &caps, Some(namespace));
        let got = api
            .get_opt(name)
            .await
            .map_err(self.api_error("get", format!("{kind} `{name}`")))?;
        Ok(got.map(|o| serde_json::to_value(o).expect("objects serialize")))
    }

    /// Server-side apply with the set's field manager.
    async fn apply(&self, obj: &Value, apply: ApplyParams<'_>) -> Result<Value, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let (ar, caps) = self.resolve(api_version, kind).await?;
        let api = self.api(&ar, &caps, ns);
        let mut params = PatchParams::apply(apply.manager);
        params.force = apply.force;
        params.dry_run = apply.dry_run;
        let what = format!(
            "{kind} `{}{name}`",
            ns.map(|n| format!("{n}/")).unwrap_or_default()
        );
        let written = if apply.dry_run {
            api.patch(name, &params, &Patch::Apply(obj)).await
        } else {
            self.fenced_write(api.patch(name, &params, &Patch::Apply(obj)))
                .await?
        };
        match written {
            Ok(o) => Ok(serde_json::to_value(o).expect("objects serialize")),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(ClusterError::from_409(what, status.message))
            }
            Err(source) => Err(self.api_error("apply", what)(source)),
        }
    }

    /// A GET, then a watch of that one object from its resourceVersion (field selector on the
    /// name); a watch the server ends (its timeout, a 410 for a version too old) starts again
    /// from a fresh GET.
    async fn watch_until<T>(
        &self,
        group_kind: &str,
        namespace: &str,
        name: &str,
        timeout: std::time::Duration,
        verdict: &mut dyn FnMut(Option<&Value>) -> Option<T>,
    ) -> Result<Option<T>, ClusterError> {
        let (ar, caps) = self.resolve_group_kind(group_kind).await?;
        let api = self.api(&ar, &caps, Some(namespace));
        let what = format!("{group_kind} `{name}`");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A resource the server no longer serves (its CRD was deleted with it) holds no
            // object: absent, and checked again shortly in case it comes back.
            let current = match api.get_opt(name).await {
                Ok(o) => Ok(o.map(|o| serde_json::to_value(o).expect("objects serialize"))),
                Err(e) => Err(self.api_error("get", what.clone())(e)),
            };
            let (current, served) = match current {
                Ok(c) => (c, true),
                Err(e) if e.is_not_served() => (None, false),
                Err(e) => return Err(e),
            };
            if let Some(out) = verdict(current.as_ref()) {
                return Ok(Some(out));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if !served {
                tokio::time::sleep(left.min(std::time::Duration::from_millis(500))).await;
                continue;
            }
            let version = current
                .as_ref()
                .and_then(|c| c.pointer("/metadata/resourceVersion"))
                .and_then(Value::as_str)
                .unwrap_or("0")
                .to_owned();
            // The server ends the watch at this timeout (at most ~5 minutes per watch).
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(left.as_secs().clamp(1, 290) as u32);
            let stream = api
                .watch(&params, &version)
                .await
                .map_err(self.api_error("watch", what.clone()))?;
            let mut stream = std::pin::pin!(stream);
            let until = tokio::time::timeout(left, async {
                while let Some(event) = stream
                    .try_next()
                    .await
                    .map_err(self.api_error("watch", what.clone()))?
                {
                    let seen = match event {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                            Some(serde_json::to_value(o).expect("objects serialize"))
                        }
                        WatchEvent::Deleted(_) => None,
                        WatchEvent::Bookmark(_) => continue,
                        // 410 Gone and the like: start again from a fresh GET.
                        WatchEvent::Error(_) => return Ok(None),
                    };
                    if let Some(out) = verdict(seen.as_ref()) {
                        return Ok(Some(out));
                    }
                }
                Ok::<_, ClusterError>(None)
            })
            .await;
            match until {
                Ok(Ok(Some(out))) => return Ok(Some(out)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => return Ok(None),
            }
        }
    }

    /// A JSON merge patch (its own request, outside any field manager's apply).
    async fn merge_patch(&self, obj: &Value, patch: &Value) -> Result<Value, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let (ar, caps) = self.resolve(api_version, kind).await?;
        let api = self.api(&ar, &caps, ns);
        let what = format!(
            "{kind} `{}{name}`",
            ns.map(|n| format!("{n}/")).unwrap_or_default()
        );
        match self
            .fenced_write(api.patch(name, &PatchParams::default(), &Patch::Merge(patch)))
            .await?
        {
            Ok(o) => Ok(serde_json::to_value(o).expect("objects serialize")),
            // A merge patch has no field managers to conflict with: a 409 is always a change
            // under a resourceVersion it was conditional on.
            Err(kube::Error::Api(status)) if status.code == 409 => Err(ClusterError::Modified {
                what,
                message: status.message,
            }),
            Err(source) => Err(self.api_error("patch", what)(source)),
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
        let (ar, caps) = self.resolve_group_kind(group_kind).await?;
        let api = self.api(&ar, &caps, Some(namespace));
        let what = format!("`{group_kind}` labeled `{selector}`");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(self.api_error("list", what.clone()))?;
            let version = list.metadata.resource_version.clone().unwrap_or_default();
            let mut seen: BTreeMap<String, Value> = typed_values(list.items, &ar)
                .into_iter()
                .map(|o| (name_of(&o), o))
                .collect();
            let current =
                |seen: &BTreeMap<String, Value>| -> Vec<Value> { seen.values().cloned().collect() };
            if let Some(out) = verdict(&current(&seen)) {
                return Ok(Some(out));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let params = WatchParams::default()
                .labels(selector)
                .timeout(left.as_secs().clamp(1, 290) as u32);
            let stream = api
                .watch(&params, &version)
                .await
                .map_err(self.api_error("watch", what.clone()))?;
            let mut stream = std::pin::pin!(stream);
            let until = tokio::time::timeout(left, async {
                while let Some(event) = stream
                    .try_next()
                    .await
                    .map_err(self.api_error("watch", what.clone()))?
                {
                    match event {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                            let o = serde_json::to_value(o).expect("objects serialize");
                            seen.insert(name_of(&o), o);
                        }
                        WatchEvent::Deleted(o) => {
                            let o = serde_json::to_value(o).expect("objects serialize");
                            seen.remove(&name_of(&o));
                        }
                        WatchEvent::Bookmark(_) => continue,
                        // 410 Gone and the like: start again from a fresh LIST.
                        WatchEvent::Error(_) => return Ok(None),
                    }
                    if let Some(out) = verdict(&current(&seen)) {
                        return Ok(Some(out));
                    }
                }
                Ok::<_, ClusterError>(None)
            })
            .await;
            match until {
                Ok(Ok(Some(out))) => return Ok(Some(out)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => return Ok(None),
            }
        }
    }

    async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
        tail_lines: i64,
    ) -> Result<String, ClusterError> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::LogParams {
            container: container.map(str::to_owned),
            previous,
            tail_lines: Some(tail_lines),
            ..Default::default()
        };
        pods.logs(pod, &params)
            .await
            .map_err(self.api_error("read the log of", format!("pod `{namespace}/{pod}`")))
    }

    /// Whether an object of `Kind.group` exists.
    async fn exists(&self, gk: &str, namespace: &str, name: &str) -> Result<bool, ClusterError> {
        let (ar, caps) = self.resolve_group_kind(gk).await?;
        let api = self.api(&ar, &caps, Some(namespace));
        api.get_opt(name)
            .await
            .map(|o| o.is_some())
            .map_err(self.api_error("get", format!("{gk} `{name}`")))
    }

    /// Deletes one object (background propagation); a missing object is fine.
    async fn delete(
        &self,
        gk: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Deleted, ClusterError> {
        let (ar, caps) = self.resolve_group_kind(gk).await?;
        let api = self.api(&ar, &caps, Some(namespace));
        let params = DeleteParams {
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.fenced_write(api.delete(name, &params)).await? {
            Ok(_) => Ok(Deleted::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Deleted::Gone),
            Err(kube::Error::Api(s)) if s.code == 409 && uid.is_some() => Ok(Deleted::Replaced),
            Err(source) => Err(self.api_error("delete", format!("{gk} `{name}`"))(source)),
        }
    }
}

/// Objects per LIST page.
const LIST_PAGE: u32 = 500;

/// Wraps a client error as the failure of `action` on `what`.
/// Listed objects as JSON, with the `apiVersion` and `kind` a LIST leaves out of its items.
fn typed_values(items: Vec<DynamicObject>, ar: &ApiResource) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut o| {
            o.types = Some(kube::core::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
            serde_json::to_value(o).expect("objects serialize")
        })
        .collect()
}

/// `metadata.name` of an object, or empty.
fn name_of(o: &Value) -> String {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
