//! The pods behind a workload's health gate: which pods belong to the rollout being waited on,
//! and which states of theirs mean the rollout can never become ready (so the wait ends at
//! once instead of at the progress deadline). Pure functions of objects as read back.

use serde_json::Value;

/// Container waiting reasons that do not heal by waiting: the image cannot be had, the
/// container cannot be made, or it keeps crashing. `ErrImagePull` alone is not here: the
/// kubelet retries a pull once before it backs off (`ImagePullBackOff`), so a registry's
/// passing hiccup does not fail an apply.
const FATAL_WAITING: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A pod of a rollout that can never become ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    /// The pod's name.
    pub pod: String,
    /// The failing container.
    pub container: String,
    /// The kubelet's reason (`CrashLoopBackOff`, `ErrImageNeverPull`, ...).
    pub reason: String,
    /// The kubelet's message, when it gave one.
    pub message: String,
    /// Whether the container ran and exited (so its previous instance has logs to show).
    pub crashed: bool,
}

impl std::fmt::Display for PodFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pod `{}`, container `{}`: {}",
            self.pod, self.container, self.reason
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// The first container (init containers first) of `pod` stuck in a state that does not heal.
pub fn fatal_state(pod: &Value) -> Option<PodFailure> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
    ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find_map(|status| {
            let waiting = status.pointer("/state/waiting")?;
            let reason = waiting["reason"].as_str()?;
            let crashed = reason == "CrashLoopBackOff";
            // A crash loop's own message only says it backs off; how the last run ended says why.
            let message = crashed
                .then(|| last_exit(status))
                .flatten()
                .unwrap_or_else(|| waiting["message"].as_str().unwrap_or_default().to_owned());
            FATAL_WAITING.contains(&reason).then(|| PodFailure {
                pod: name.to_owned(),
                container: status["name"].as_str().unwrap_or_default().to_owned(),
                reason: reason.to_owned(),
                message,
                crashed,
            })
        })
}

/// How a container's previous run ended: `last run exited with code 137 (OOMKilled)`, with
/// its termination message when it wrote one.
fn last_exit(status: &Value) -> Option<String> {
    let terminated = status.pointer("/lastState/terminated")?;
    let mut text = format!(
        "last run exited with code {}",
        terminated["exitCode"].as_i64()?
    );
    if let Some(reason) = terminated["reason"].as_str() {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = terminated["message"]
        .as_str()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        text.push_str(&format!(": {message}"));
    }
    Some(text)
}

/// Why the first of `pods` that is not ready is not: not scheduled (the scheduler's reason),
/// a container waiting (its reason), or running without passing its readiness probe.
pub fn not_ready(pods: &[Value]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        let conditions = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let condition = |ty: &str| conditions.iter().find(|c| c["type"] == ty);
        if let Some(c) = condition("PodScheduled").filter(|c| c["status"] == "False") {
            return Some(format!(
                "pod `{name}` is not scheduled: {}: {}",
                c["reason"].as_str().unwrap_or("no reason"),
                c["message"].as_str().unwrap_or("no message").trim()
            ));
        }
        if condition("Ready").is_some_and(|c| c["status"] == "True") {
            return None;
        }
        let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
            .iter()
            .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
            .flatten();
        for status in statuses {
            if status["ready"] == true {
                continue;
            }
            let container = status["name"].as_str().unwrap_or_default();
            if let Some(waiting) = status.pointer("/state/waiting") {
                return Some(format!(
                    "pod `{name}`, container `{container}` is waiting: {}",
                    waiting["reason"].as_str().unwrap_or("no reason")
                ));
            }
            if status.pointer("/state/running").is_some() {
                return Some(format!(
                    "pod `{name}`, container `{container}` runs but does not pass its readiness probe ({} restarts)",
                    status["restartCount"].as_i64().unwrap_or(0)
                ));
            }
        }
        Some(format!("pod `{name}` is not ready"))
    })
}

/// The most recently created of `pods` in `phase` (a Job's last failed pod, its running one).
pub fn newest_in_phase<'a>(pods: &'a [Value], phase: &str) -> Option<&'a Value> {
    pods.iter()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some(phase))
        .max_by_key(|p| {
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
}

/// The label selector (in the API's string form) of `spec.selector`, or `None` when it cannot
/// be written as one (no selector, or an operator this does not know).
pub fn selector_of(workload: &Value) -> Option<String> {
    let selector = workload.pointer("/spec/selector")?;
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push(format!("{k}={}", v.as_str()?));
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str()?;
        let values = || -> Option<String> {
            let vs: Option<Vec<&str>> = e["values"].as_array()?.iter().map(Value::as_str).collect();
            Some(vs?.join(","))
        };
        terms.push(match e["operator"].as_str()? {
            "In" => format!("{key} in ({})", values()?),
            "NotIn" => format!("{key} notin ({})", values()?),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

/// The selector of the pods of the rollout `workload` (as read back) is waiting on, once its
/// controller has acted on its latest spec: the newest ReplicaSet's pods for a Deployment
/// (`replica_sets`: the ReplicaSets its selector lists), the update revision's for a
/// StatefulSet, the current template generation's for a DaemonSet, the Job's own. `None`
/// while the controller has not caught up (or for other kinds).
pub fn rollout_pods(workload: &Value, replica_sets: &[Value]) -> Option<String> {
    let generation = workload
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let observed = workload
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let caught_up = generation.is_some() && observed >= generation;
    let base = selector_of(workload)?;
    match workload["kind"].as_str()? {
        "Deployment" if caught_up => {
            let uid = workload.pointer("/metadata/uid")?;
            let revision =
                workload.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")?;
            let newest = replica_sets.iter().find(|rs| {
                rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                    == Some(revision)
                    && rs
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|os| os.iter().any(|o| o.get("uid") == Some(uid)))
            })?;
            let hash = newest
                .pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)?;
            Some(format!("{base},pod-template-hash={hash}"))
        }
        "StatefulSet" if caught_up => {
            let revision = workload
                .pointer("/status/updateRevision")
                .and_then(Value::as_str)?;
            Some(format!("{base},controller-revision-hash={revision}"))
        }
        "DaemonSet" if caught_up => Some(format!("{base},pod-template-generation={}", generation?)),
        "Job" => Some(base),
        _ => None,
    }
}

/// Whether a workload's gate follows pods: the kinds whose pods [`rollout_pods`] finds.
pub fn has_pods(workload: &Value) -> bool {
    matches!(
        workload["kind"].as_str(),
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(statuses: Value) -> Value {
        json!({"metadata": {"name": "web-1"}, "status": {"containerStatuses": statuses}})
    }

    #[test]
    fn states_that_do_not_heal_are_fatal_and_passing_ones_are_not() {
        for reason in [
            "CrashLoopBackOff",
            "ImagePullBackOff",
            "ErrImageNeverPull",
            "CreateContainerConfigError",
        ] {
            let p = pod(
                json!([{"name": "app", "state": {"waiting": {"reason": reason, "message": "m"}}}]),
            );
            let f = fatal_state(&p).unwrap();
            assert_eq!((f.reason.as_str(), f.container.as_str()), (reason, "app"));
            assert_eq!(f.crashed, reason == "CrashLoopBackOff");
            assert_eq!(
                f.to_string(),
                format!("pod `web-1`, container `app`: {reason}: m")
            );
        }
        for reason in ["ContainerCreating", "ErrImagePull", "PodInitializing"] {
            let p = pod(json!([{"name": "app", "state": {"waiting": {"reason": reason}}}]));
            assert_eq!(fatal_state(&p), None, "{reason}");
        }
        let running = pod(json!([{"name": "app", "state": {"running": {}}}]));
        assert_eq!(fatal_state(&running), None);
        let init = json!({"metadata": {"name": "p"}, "status": {"initContainerStatuses": [
            {"name": "migrate", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(fatal_state(&init).unwrap().container, "migrate");
    }

    #[test]
    fn a_pod_that_is_not_ready_says_why() {
        let unscheduled = json!({"metadata": {"name": "web-1"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient cpu."}]}});
        assert_eq!(
            not_ready(&[unscheduled]).unwrap(),
            "pod `web-1` is not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
        );
        let unready = json!({"metadata": {"name": "web-2"}, "status": {"phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "state": {"running": {}}}]}});
        assert_eq!(
            not_ready(&[unready]).unwrap(),
            "pod `web-2`, container `app` runs but does not pass its readiness probe (0 restarts)"
        );
        let ready = json!({"metadata": {"name": "web-3"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(not_ready(&[ready]), None);
    }

    #[test]
    fn a_crash_loop_says_how_the_last_run_ended() {
        let p = pod(json!([{"name": "app",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]));
        assert_eq!(
            fatal_state(&p).unwrap().to_string(),
            "pod `web-1`, container `app`: CrashLoopBackOff: last run exited with code 137 (OOMKilled)"
        );
        let p = pod(json!([{"name": "app",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 128, "reason": "StartError",
                "message": "exec: \"redis-server\": executable file not found in $PATH\n"}}}]));
        assert!(fatal_state(&p).unwrap().to_string().ends_with(
            "code 128 (StartError): exec: \"redis-server\": executable file not found in $PATH"
        ));
    }

    #[test]
    fn selectors_are_written_as_the_api_reads_them() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "fe"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}}});
        assert_eq!(
            selector_of(&d).unwrap(),
            "app=web,tier=fe,env in (a,b),!canary"
        );
        assert_eq!(selector_of(&json!({"spec": {}})), None);
        let odd =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "Gt"}]}}});
        assert_eq!(selector_of(&odd), None);
    }

    #[test]
    fn a_deployment_rollout_follows_its_newest_replica_set_once_observed() {
        let mut d = json!({"kind": "Deployment", "metadata": {"uid": "u1", "generation": 2,
            "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": 1}});
        let rs = |rev: &str, hash: &str, owner: &str| {
            json!({"metadata": {
            "annotations": {"deployment.kubernetes.io/revision": rev},
            "labels": {"pod-template-hash": hash}, "ownerReferences": [{"uid": owner}]}})
        };
        let sets = [
            rs("1", "old", "u1"),
            rs("2", "other", "u2"),
            rs("2", "new", "u1"),
        ];
        assert_eq!(
            rollout_pods(&d, &sets),
            None,
            "generation 2 not observed yet"
        );
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(
            rollout_pods(&d, &sets).unwrap(),
            "app=web,pod-template-hash=new"
        );
        assert_eq!(
            rollout_pods(&d, &sets[..2]),
            None,
            "its ReplicaSet not listed yet"
        );
    }

    #[test]
    fn other_workloads_follow_their_current_revision() {
        let sts = json!({"kind": "StatefulSet", "metadata": {"generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"observedGeneration": 3, "updateRevision": "db-7f"}});
        assert_eq!(
            rollout_pods(&sts, &[]).unwrap(),
            "app=db,controller-revision-hash=db-7f"
        );
        let ds = json!({"kind": "DaemonSet", "metadata": {"generation": 4},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}},
            "status": {"observedGeneration": 4}});
        assert_eq!(
            rollout_pods(&ds, &[]).unwrap(),
            "app=agent,pod-template-generation=4"
        );
        let job =
            json!({"kind": "Job", "spec": {"selector": {"matchLabels": {"controller-uid": "j1"}}}});
        assert_eq!(rollout_pods(&job, &[]).unwrap(), "controller-uid=j1");
    }

    #[test]
    fn the_last_failed_pod_is_the_newest_failed_one() {
        let p = |name: &str, phase: &str, t: &str| json!({"metadata": {"name": name, "creationTimestamp": t}, "status": {"phase": phase}});
        let pods = [
            p("a", "Failed", "2026-01-01T00:00:01Z"),
            p("b", "Failed", "2026-01-01T00:00:09Z"),
            p("c", "Running", "2026-01-01T00:00:10Z"),
        ];
        assert_eq!(
            newest_in_phase(&pods, "Failed").unwrap()["metadata"]["name"],
            "b"
        );
        assert_eq!(
            newest_in_phase(&pods, "Running").unwrap()["metadata"]["name"],
            "c"
        );
        assert!(newest_in_phase(&pods, "Succeeded").is_none());
    }
}
