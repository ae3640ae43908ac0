//! Waiting on the cluster: health gates after a write, absence after a delete. Both follow the
//! object with a watch ([`ClusterApi::watch_until`]: a GET, then a watch from its
//! resourceVersion), so a change is seen when it happens, not at the next poll.

use std::time::Duration;

use serde_json::Value;

use crate::api::{ClusterApi, ReadFrom};
use crate::desired::ObjectKey;
use crate::error::RealizeError;
use crate::health;
use crate::pods;

/// Waits until `obj` passes its health gate ([`health::condition`]); a condition that says it
/// failed for good ends the wait at once. For a workload, its rollout's pods are followed too
/// ([`pods::rollout_pods`]): a pod stuck in a state that does not heal (a crash loop, an image
/// that cannot be had) fails the gate when it is seen, not at the progress deadline, with the
/// crashed container's last log lines; so does a failed Job, with its last failed pod's.
pub async fn ready(
    cluster: &impl ClusterApi,
    obj: &Value,
    timeout: Duration,
    on_progress: &dyn Fn(&str),
) -> Result<(), RealizeError> {
    let Some(condition) = health::condition(obj) else {
        return Ok(());
    };
    let key = ObjectKey::of(obj);
    if obj["kind"] == "PersistentVolumeClaim" {
        return claim_bound(cluster, obj, &key, condition, timeout, on_progress).await;
    }
    let gate = follow(cluster, &key, condition, timeout, on_progress);
    if !pods::has_pods(obj) {
        return gate.await.map_err(|e| e.into_error(&key));
    }
    // Following the pods only ends a wait early: when it cannot read them, the gate decides.
    // What they last showed explains a timeout.
    let last_seen = std::sync::Mutex::new(None);
    let stuck_pod = async {
        match first_stuck_pod(cluster, obj, &key, timeout, &last_seen).await {
            Err(Verdict::Error(e)) => {
                tracing::debug!(object = %key, error = %e, "cannot follow the rollout's pods");
                std::future::pending().await
            }
            other => other,
        }
    };
    let verdict = tokio::select! {
        settled = gate => settled,
        stuck = stuck_pod => stuck,
    };
    let why = last_seen.lock().ok().and_then(|mut w| w.take());
    let verdict = match (verdict, why) {
        (Err(Verdict::TimedOut(condition, timeout)), Some(why)) => {
            Err(Verdict::TimedOut(format!("{condition}; {why}"), timeout))
        }
        (verdict, _) => verdict,
    };
    match verdict {
        Err(Verdict::Failed(condition)) if obj["kind"] == "Job" => {
            let logs = job_logs(cluster, obj, &key, JobPod::LastFailed).await;
            Err(RealizeError::GateFailed {
                object: key.to_string(),
                condition: format!("{condition}{logs}"),
                rule: None,
            })
        }
        // A Job still running at the timeout: what its pod is doing.
        Err(Verdict::TimedOut(condition, timeout)) if obj["kind"] == "Job" => {
            let logs = job_logs(cluster, obj, &key, JobPod::Running).await;
            Err(Verdict::TimedOut(format!("{condition}{logs}"), timeout).into_error(&key))
        }
        other => other.map_err(|e| e.into_error(&key)),
    }
}

/// Which pod of a Job to show.
#[derive(Clone, Copy)]
enum JobPod {
    /// The newest failed one, with its log.
    LastFailed,
    /// The newest running one, with its log so far.
    Running,
}

/// A claim's gate, by how its StorageClass binds ([`health::claim_binding`]): one that waits
/// for its first consumer passes while `Pending` (its consumer may be in a later wave); one
/// nothing provisions says so if it times out.
async fn claim_bound(
    cluster: &impl ClusterApi,
    claim: &Value,
    key: &ObjectKey,
    condition: &'static str,
    timeout: Duration,
    on_progress: &dyn Fn(&str),
) -> Result<(), RealizeError> {
    // A user who may not list StorageClasses waits for `Bound` as before.
    let binding = match cluster
        .list(
            "StorageClass.storage.k8s.io",
            None,
            "",
            None,
            ReadFrom::Storage,
        )
        .await
    {
        Ok(classes) => health::claim_binding(claim, &classes.items),
        Err(e) => {
            tracing::debug!(object = %key, error = %e, "cannot list StorageClasses");
            health::ClaimBinding::Immediate
        }
    };
    if binding == health::ClaimBinding::FirstConsumer {
        on_progress("binds when its first consumer is scheduled (WaitForFirstConsumer)");
        return Ok(());
    }
    match follow(cluster, key, condition, timeout, on_progress).await {
        Ok(()) => Ok(()),
        Err(Verdict::TimedOut(condition, timeout)) => {
            let condition = match binding {
                health::ClaimBinding::NoProvisioner(why) => format!("{condition}; {why}"),
                _ => condition,
            };
            Err(Verdict::TimedOut(condition, timeout).into_error(key))
        }
        Err(e) => Err(e.into_error(key)),
    }
}

/// How a gate ended, short of ready.
enum Verdict {
    /// Failed for good: why.
    Failed(String),
    /// Not ready within the timeout: what it waited for.
    TimedOut(String, Duration),
    /// The cluster failed.
    Error(RealizeError),
}

impl Verdict {
    fn into_error(self, key: &ObjectKey) -> RealizeError {
        match self {
            Verdict::Failed(condition) => RealizeError::GateFailed {
                object: key.to_string(),
                condition,
                rule: None,
            },
            Verdict::TimedOut(condition, timeout) => RealizeError::Unhealthy {
                object: key.to_string(),
                condition,
                timeout,
                rule: None,
            },
            Verdict::Error(e) => e,
        }
    }
}

impl From<crate::api::ClusterError> for Verdict {
    fn from(e: crate::api::ClusterError) -> Self {
        Verdict::Error(e.into())
    }
}

/// Follows the object itself until it is ready or says it failed, telling `on_progress` how far
/// it got each time that changes.
async fn follow(
    cluster: &impl ClusterApi,
    key: &ObjectKey,
    condition: &'static str,
    timeout: Duration,
    on_progress: &dyn Fn(&str),
) -> Result<(), Verdict> {
    let mut last_progress = None;
    let mut verdict = |live: Option<&Value>| -> Option<Result<(), String>> {
        let live = live?;
        if health::is_ready(live) {
            return Some(Ok(()));
        }
        if let Some(failed) = health::failure(live) {
            return Some(Err(failed));
        }
        let progress = health::progress(live);
        if progress != last_progress {
            tracing::debug!(object = %key, waiting_for = condition, progress = progress.as_deref().unwrap_or("-"), "waiting");
            if let Some(p) = &progress {
                on_progress(p);
            }
            last_progress = progress;
        }
        None
    };
    let settled = cluster
        .watch_until(
            &key.group_kind,
            &key.namespace,
            &key.name,
            timeout,
            &mut verdict,
        )
        .await?;
    match settled {
        Some(Ok(())) => Ok(()),
        Some(Err(failed)) => Err(Verdict::Failed(failed)),
        None => {
            let condition = match &last_progress {
                Some(progress) => format!("{condition} (last seen: {progress})"),
                None => condition.to_owned(),
            };
            Err(Verdict::TimedOut(condition, timeout))
        }
    }
}

/// Lines of a container's log shown with a failure.
const LOG_LINES: i64 = 10;

/// Ends (with the failure) once a pod of the rollout of `obj` is stuck for good; otherwise
/// never ends before `timeout` (and then never at all: the gate's own timeout speaks).
/// `last_seen` keeps why the rollout's pods were not ready when last seen.
async fn first_stuck_pod(
    cluster: &impl ClusterApi,
    obj: &Value,
    key: &ObjectKey,
    timeout: Duration,
    last_seen: &std::sync::Mutex<Option<String>>,
) -> Result<(), Verdict> {
    let deadline = tokio::time::Instant::now() + timeout;
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    // The pods of this rollout, once its controller has acted on the spec just written. The
    // selector is read back: a Job's is the server's own (`controller-uid`).
    let selector = loop {
        let live = cluster
            .get(api_version, kind, &key.namespace, &key.name)
            .await?;
        if let Some(live) = live {
            if let Some(base) = pods::selector_of(&live) {
                let replica_sets = if kind == "Deployment" && health::observed(&live) {
                    cluster
                        .list(
                            "ReplicaSet.apps",
                            None,
                            &base,
                            Some(&key.namespace),
                            ReadFrom::Storage,
                        )
                        .await?
                        .items
                } else {
                    Vec::new()
                };
                if let Some(selector) = pods::rollout_pods(&live, &replica_sets) {
                    break selector;
                }
            }
        }
        if tokio::time::Instant::now() + POLL_CONTROLLER >= deadline {
            return std::future::pending().await;
        }
        tokio::time::sleep(POLL_CONTROLLER).await;
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut verdict = |pods: &[Value]| {
        if let Ok(mut seen) = last_seen.lock() {
            *seen = pods::not_ready(pods);
        }
        pods.iter().find_map(pods::fatal_state)
    };
    let Some(stuck) = cluster
        .watch_selected_until("Pod", &key.namespace, &selector, left, &mut verdict)
        .await?
    else {
        return std::future::pending().await;
    };
    let logs = if stuck.crashed {
        log_tail(
            cluster,
            &key.namespace,
            &stuck.pod,
            Some(&stuck.container),
            true,
        )
        .await
    } else {
        String::new()
    };
    Err(Verdict::Failed(format!("{stuck}{logs}")))
}

/// How often the controller is asked whether it has made the rollout's ReplicaSet yet.
const POLL_CONTROLLER: Duration = Duration::from_millis(500);

/// The last log lines of a Job's newest failed (or running) pod, as a suffix for its failure.
async fn job_logs(
    cluster: &impl ClusterApi,
    job: &Value,
    key: &ObjectKey,
    which: JobPod,
) -> String {
    let live = cluster
        .get(
            job["apiVersion"].as_str().unwrap_or_default(),
            "Job",
            &key.namespace,
            &key.name,
        )
        .await
        .ok()
        .flatten();
    let Some(selector) = live.as_ref().and_then(pods::selector_of) else {
        return String::new();
    };
    let Ok(listed) = cluster
        .list(
            "Pod",
            None,
            &selector,
            Some(&key.namespace),
            ReadFrom::Storage,
        )
        .await
    else {
        return String::new();
    };
    let picked = match which {
        JobPod::LastFailed => pods::newest_in_phase(&listed.items, "Failed"),
        JobPod::Running => pods::newest_in_phase(&listed.items, "Running"),
    };
    let Some(pod) = picked
        .and_then(|p| p.pointer("/metadata/name"))
        .and_then(Value::as_str)
    else {
        return String::new();
    };
    let logs = log_tail(cluster, &key.namespace, pod, None, false).await;
    match which {
        JobPod::LastFailed => logs,
        JobPod::Running => format!("; pod `{pod}` is still running{logs}"),
    }
}

/// `"\n  last log lines of pod P:\n    ..."`, or empty when the log cannot be read or is empty.
async fn log_tail(
    cluster: &impl ClusterApi,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    previous: bool,
) -> String {
    match cluster
        .logs(namespace, pod, container, previous, LOG_LINES)
        .await
    {
        Ok(log) if !log.trim().is_empty() => {
            let mut out = format!("\n  last log lines of pod `{pod}`:");
            for line in log.trim_end().lines() {
                out.push_str("\n    ");
                out.push_str(line);
            }
            out
        }
        _ => String::new(),
    }
}

/// Waits until the object `key` no longer exists.
pub async fn gone(
    cluster: &impl ClusterApi,
    key: &ObjectKey,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let mut verdict = |live: Option<&Value>| live.is_none().then_some(());
    let settled = cluster
        .watch_until(
            &key.group_kind,
            &key.namespace,
            &key.name,
            timeout,
            &mut verdict,
        )
        .await?;
    settled.ok_or_else(|| RealizeError::Unhealthy {
        object: key.to_string(),
        condition: "deleted".to_owned(),
        timeout,
        rule: None,
    })
}

/// Waits until the API server's discovery serves the kind of a CustomResourceDefinition in each
/// version the CRD serves. `Established` can come a moment before the group-version's discovery
/// document lists it (the test server, busy, answered 404 for it right after), and applying a
/// custom resource needs discovery.
pub async fn served(
    cluster: &impl ClusterApi,
    crd: &Value,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str);
    let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str);
    let (Some(group), Some(kind)) = (group, kind) else {
        return Ok(());
    };
    let versions: Vec<&str> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() == Some(true))
        .filter_map(|v| v["name"].as_str())
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    for version in versions {
        let api_version = format!("{group}/{version}");
        loop {
            match cluster.scope(&api_version, kind).await {
                Ok(_) => break,
                Err(e) if e.is_not_served() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if e.is_not_served() => {
                    return Err(RealizeError::Unhealthy {
                        object: ObjectKey::of(crd).to_string(),
                        condition: format!("`{kind}` in `{api_version}` served by discovery"),
                        timeout,
                        rule: None,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCluster;
    use serde_json::json;

    const TIMEOUT: Duration = Duration::from_secs(600);

    fn deployment(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "app", "uid": "d1", "generation": 2,
                "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": status})
    }

    fn replica_set(hash: &str, revision: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("web-{hash}"), "namespace": "app",
                "labels": {"app": "web", "pod-template-hash": hash},
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"uid": "d1"}]}})
    }

    fn pod(name: &str, hash: &str, waiting: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "app",
                "labels": {"app": "web", "pod-template-hash": hash}},
            "status": {"containerStatuses": [{"name": "app",
                "state": {"waiting": {"reason": waiting, "message": "back-off restarting"}}}]}})
    }

    fn stuck_rollout(fake: &FakeCluster) {
        fake.put_object(deployment(json!({"observedGeneration": 2, "replicas": 1})));
        fake.put_object(replica_set("old", "1"));
        fake.put_object(replica_set("new", "2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_looping_pod_of_the_new_replica_set_fails_the_gate_at_once_with_its_log() {
        let fake = FakeCluster::default();
        stuck_rollout(&fake);
        fake.put_object(pod("web-new-a", "new", "CrashLoopBackOff"));
        fake.set_log(
            "web-new-a",
            "starting\nconfig: missing DATABASE_URL\nexit 1",
        );
        let started = tokio::time::Instant::now();
        let err = ready(&fake, &deployment(json!({})), TIMEOUT, &|_| {})
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(text.starts_with("Deployment.apps app/web failed: pod `web-new-a`, container `app`: CrashLoopBackOff"), "{text}");
        assert!(text.contains("last log lines of pod `web-new-a`:\n    starting\n    config: missing DATABASE_URL"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_told_once_each_time_it_changes() {
        let fake = FakeCluster::default();
        let status = |updated: i64, available: i64| {
            json!({"observedGeneration": 2, "replicas": 1,
                "updatedReplicas": updated, "availableReplicas": available})
        };
        fake.put_object(deployment(status(0, 0)));
        let told = std::sync::Mutex::new(Vec::new());
        let on_progress = |p: &str| told.lock().unwrap().push(p.to_owned());
        let rollout = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.put_object(deployment(status(1, 0)));
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.put_object(deployment(status(1, 0)));
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.put_object(deployment(status(1, 1)));
        };
        let applied = deployment(json!({}));
        let (gate, ()) = tokio::join!(ready(&fake, &applied, TIMEOUT, &on_progress), rollout);
        gate.unwrap();
        assert_eq!(
            *told.lock().unwrap(),
            ["0/1 updated, 0/1 available", "1/1 updated, 0/1 available"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_rollout_says_why_its_pods_are_not_ready() {
        let fake = FakeCluster::default();
        stuck_rollout(&fake);
        fake.put_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-new-c", "namespace": "app",
                "labels": {"app": "web", "pod-template-hash": "new"}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient cpu."}]}}));
        let err = ready(
            &fake,
            &deployment(json!({})),
            Duration::from_secs(30),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RealizeError::Unhealthy { .. }), "{err}");
        assert!(
            err.to_string().ends_with(
                "; pod `web-new-c` is not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
            ),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_of_an_older_replica_set_does_not_fail_the_new_rollout() {
        let fake = FakeCluster::default();
        stuck_rollout(&fake);
        fake.put_object(pod("web-old-a", "old", "CrashLoopBackOff"));
        let err = ready(
            &fake,
            &deployment(json!({})),
            Duration::from_secs(30),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RealizeError::Unhealthy { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_that_cannot_be_had_fails_the_gate_naming_the_reason() {
        let fake = FakeCluster::default();
        stuck_rollout(&fake);
        fake.put_object(pod("web-new-b", "new", "ErrImageNeverPull"));
        let err = ready(&fake, &deployment(json!({})), TIMEOUT, &|_| {})
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "pod `web-new-b`, container `app`: ErrImageNeverPull: back-off restarting"
            ),
            "{text}"
        );
        assert!(
            !text.contains("last log lines"),
            "an image never ran: {text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_job_shows_its_last_failed_pods_log() {
        let fake = FakeCluster::default();
        fake.put_object(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "app"},
            "spec": {"selector": {"matchLabels": {"controller-uid": "j1"}}},
            "status": {"conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}));
        for (name, t) in [
            ("migrate-a", "2026-01-01T00:00:01Z"),
            ("migrate-b", "2026-01-01T00:00:05Z"),
        ] {
            fake.put_object(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "app", "creationTimestamp": t,
                    "labels": {"controller-uid": "j1"}},
                "status": {"phase": "Failed"}}));
        }
        fake.set_log("migrate-a", "first try");
        fake.set_log(
            "migrate-b",
            "applying 0042_add_index\nERROR: relation \"users\" does not exist",
        );
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "app"}});
        let text = ready(&fake, &job, TIMEOUT, &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(text.contains("BackoffLimitExceeded"), "{text}");
        assert!(text.contains("last log lines of pod `migrate-b`:\n    applying 0042_add_index\n    ERROR: relation"), "{text}");
        assert!(!text.contains("first try"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_still_running_at_the_timeout_shows_its_pods_log() {
        let fake = FakeCluster::default();
        fake.put_object(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "seed", "namespace": "app"},
            "spec": {"selector": {"matchLabels": {"controller-uid": "j2"}}},
            "status": {"active": 1}}));
        fake.put_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "seed-a", "namespace": "app",
                "creationTimestamp": "2026-01-01T00:00:01Z", "labels": {"controller-uid": "j2"}},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}}));
        fake.set_log("seed-a", "waiting for redis-0.redis:6379");
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seed", "namespace": "app"}});
        let err = ready(&fake, &job, Duration::from_secs(30), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, RealizeError::Unhealthy { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("; pod `seed-a` is still running"), "{text}");
        assert!(text.contains("waiting for redis-0.redis:6379"), "{text}");
    }
}
