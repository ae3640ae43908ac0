//! Health gates: when an applied object counts as ready. Pure functions of the object.

use serde_json::Value;

/// What a gate waits for, named in errors.
pub fn condition(obj: &Value) -> Option<&'static str> {
    let api = obj["apiVersion"].as_str().unwrap_or_default();
    match (
        api.split('/').next().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
    ) {
        ("apps", "Deployment") => {
            Some("rollout complete (updated and available replicas = spec.replicas)")
        }
        ("apps", "StatefulSet") => Some(
            "rollout complete (ready replicas = spec.replicas, current revision = update revision)",
        ),
        ("apps", "DaemonSet") => {
            Some("rollout complete (updated and available pods = desired pods)")
        }
        ("batch", "Job") => Some("condition Complete=True"),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some("condition Established=True"),
        ("v1", "PersistentVolumeClaim") => Some("phase Bound"),
        _ => None,
    }
}

/// Whether the gate needs nodes or a volume provisioner to pass (rollouts, Jobs, PVC binding),
/// which `--skip-workload-gates` turns off.
pub fn is_workload(obj: &Value) -> bool {
    matches!(
        obj["kind"].as_str(),
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "PersistentVolumeClaim")
    )
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn has_condition(obj: &Value, ty: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// Whether the controller has seen the object's latest spec (`status.observedGeneration` at
/// least `metadata.generation`).
pub fn observed(obj: &Value) -> bool {
    int(obj, "/status/observedGeneration") >= int(obj, "/metadata/generation")
}

/// How a StatefulSet or DaemonSet replaces its pods.
enum Strategy {
    /// `RollingUpdate` (the default): every pod is replaced.
    Rolling,
    /// `RollingUpdate` with `partition` N: only pods with an ordinal ≥ N are replaced.
    Partitioned(i64),
    /// `OnDelete`: pods are replaced only when someone deletes them.
    OnDelete,
}

fn update_strategy(obj: &Value) -> Strategy {
    if obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        return Strategy::OnDelete;
    }
    match int(obj, "/spec/updateStrategy/rollingUpdate/partition") {
        0 => Strategy::Rolling,
        n => Strategy::Partitioned(n),
    }
}

/// Whether `obj` (as read back from the cluster) is ready.
pub fn is_ready(obj: &Value) -> bool {
    let generation_seen = observed(obj);
    match obj["kind"].as_str().unwrap_or_default() {
        "Deployment" => {
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            generation_seen
                && int(obj, "/status/updatedReplicas") >= want
                && int(obj, "/status/availableReplicas") >= want
                && int(obj, "/status/replicas") <= want
        }
        "StatefulSet" => {
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ready = generation_seen && int(obj, "/status/readyReplicas") >= want;
            match update_strategy(obj) {
                // The controller replaces no pod by itself: ready pods are all there is to wait for.
                Strategy::OnDelete => ready,
                // Pods below the partition keep the old revision on purpose.
                Strategy::Partitioned(partition) => {
                    ready && int(obj, "/status/updatedReplicas") >= want - partition
                }
                Strategy::Rolling => {
                    ready
                        && obj.pointer("/status/currentRevision")
                            == obj.pointer("/status/updateRevision")
                }
            }
        }
        "DaemonSet" => {
            let want = int(obj, "/status/desiredNumberScheduled");
            let available = generation_seen && int(obj, "/status/numberAvailable") >= want;
            match update_strategy(obj) {
                Strategy::OnDelete => available,
                _ => available && int(obj, "/status/updatedNumberScheduled") >= want,
            }
        }
        "Job" => has_condition(obj, "Complete"),
        "CustomResourceDefinition" => has_condition(obj, "Established"),
        "PersistentVolumeClaim" => {
            obj.pointer("/status/phase").and_then(Value::as_str) == Some("Bound")
        }
        _ => true,
    }
}

/// How a PersistentVolumeClaim gets its volume, from its StorageClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimBinding {
    /// Its class provisions (or binds) as soon as the claim exists: wait for `Bound`.
    Immediate,
    /// Its class binds only once a pod that uses the claim is scheduled
    /// (`volumeBindingMode: WaitForFirstConsumer`, the default classes of EKS, AKS and GKE):
    /// `Pending` is as ready as it gets before its consumer exists.
    FirstConsumer,
    /// No class will provision it: it binds only to a PersistentVolume someone makes. Why.
    NoProvisioner(String),
}

/// How `claim` binds, given the cluster's StorageClasses.
pub fn claim_binding(claim: &Value, classes: &[Value]) -> ClaimBinding {
    let is_default = |c: &&Value| {
        [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|a| {
            c.pointer("/metadata/annotations").and_then(|m| m.get(*a)) == Some(&Value::from("true"))
        })
    };
    let class = match claim
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
    {
        Some("") => {
            return ClaimBinding::NoProvisioner(
                "its storageClassName is \"\": it binds only to a matching PersistentVolume"
                    .to_owned(),
            )
        }
        Some(name) => match classes
            .iter()
            .find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        {
            Some(class) => class,
            None => {
                return ClaimBinding::NoProvisioner(format!(
                    "its StorageClass `{name}` does not exist on the cluster"
                ))
            }
        },
        None => match classes.iter().find(is_default) {
            Some(class) => class,
            None => {
                return ClaimBinding::NoProvisioner(
                    "it names no StorageClass and the cluster has no default StorageClass"
                        .to_owned(),
                )
            }
        },
    };
    if class["volumeBindingMode"] == "WaitForFirstConsumer" {
        ClaimBinding::FirstConsumer
    } else {
        ClaimBinding::Immediate
    }
}

/// Whether `obj` (as read back) has failed for good, so waiting longer is pointless: the
/// failing condition and its reason and message. A Job with `Failed=True`; a Deployment whose
/// `Progressing` condition says `ProgressDeadlineExceeded`; a CRD whose names were not accepted.
pub fn failure(obj: &Value) -> Option<String> {
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    let find = |ty: &str, status: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == ty && c["status"] == status)
    };
    let describe = |c: &Value| {
        format!(
            "condition {}={}: {}: {}",
            c["type"].as_str().unwrap_or_default(),
            c["status"].as_str().unwrap_or_default(),
            c["reason"].as_str().unwrap_or("no reason"),
            c["message"].as_str().unwrap_or("no message")
        )
    };
    match obj["kind"].as_str().unwrap_or_default() {
        "Job" => find("Failed", "True").map(describe),
        "Deployment" => find("Progressing", "False")
            .filter(|c| c["reason"] == "ProgressDeadlineExceeded")
            .map(describe),
        "CustomResourceDefinition" => find("NamesAccepted", "False").map(describe),
        _ => None,
    }
}

/// How far a rollout or a Job got, for progress output, when the kind has one.
pub fn progress(obj: &Value) -> Option<String> {
    let want = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(1);
    let kind = obj["kind"].as_str().unwrap_or_default();
    let rollout = matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet");
    // Until its controller has seen the new spec, the counts are the old rollout's.
    if rollout && !observed(obj) {
        return Some("waiting for the controller to start the rollout".to_owned());
    }
    match kind {
        "Deployment" => {
            let counts = format!(
                "{}/{want} updated, {}/{want} available",
                int(obj, "/status/updatedReplicas"),
                int(obj, "/status/availableReplicas"),
                want = want("/spec/replicas")
            );
            // Pods its ReplicaSet cannot create (a quota, an admission policy) never show up
            // as pods: the condition is the only place that says why.
            let failure = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == "ReplicaFailure" && c["status"] == "True")
                });
            Some(match failure {
                Some(c) => format!(
                    "{counts}; ReplicaFailure: {}",
                    c["message"].as_str().unwrap_or("no message")
                ),
                None => counts,
            })
        }
        "StatefulSet" => Some(format!(
            "{}/{want} updated, {}/{want} ready",
            int(obj, "/status/updatedReplicas"),
            int(obj, "/status/readyReplicas"),
            want = want("/spec/replicas")
        )),
        "DaemonSet" => Some(format!(
            "{}/{want} updated, {}/{want} ready",
            int(obj, "/status/updatedNumberScheduled"),
            int(obj, "/status/numberReady"),
            want = int(obj, "/status/desiredNumberScheduled")
        )),
        "Job" => Some(format!(
            "{}/{} succeeded, {} running",
            int(obj, "/status/succeeded"),
            want("/spec/completions"),
            int(obj, "/status/active")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_statefulset_is_ready_by_its_update_strategy() {
        let sts = |strategy: Value, status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 2},
                "spec": {"replicas": 3, "updateStrategy": strategy}, "status": status})
        };
        let mid_rollout = json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1,
            "currentRevision": "web-1", "updateRevision": "web-2"});
        assert!(!is_ready(&sts(json!({}), mid_rollout.clone())));
        assert!(!is_ready(&sts(
            json!({"type": "RollingUpdate"}),
            mid_rollout.clone()
        )));
        // OnDelete: nothing rolls by itself; ready pods are what there is to wait for.
        assert!(is_ready(&sts(
            json!({"type": "OnDelete"}),
            mid_rollout.clone()
        )));
        // A partition of 2 updates only ordinal 2: one updated pod is the whole rollout.
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        assert!(is_ready(&sts(partitioned.clone(), mid_rollout.clone())));
        let mut none_updated = mid_rollout.clone();
        none_updated["updatedReplicas"] = json!(0);
        assert!(!is_ready(&sts(partitioned, none_updated)));
        let done = json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
            "currentRevision": "web-2", "updateRevision": "web-2"});
        assert!(is_ready(&sts(json!({}), done)));
    }

    #[test]
    fn a_daemonset_is_ready_when_its_pods_are_available_and_updated_unless_on_delete() {
        let ds = |strategy: Value, updated: i64, available: i64| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
                "spec": {"updateStrategy": strategy},
                "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": updated, "numberReady": 2,
                    "numberAvailable": available}})
        };
        assert!(is_ready(&ds(json!({}), 2, 2)));
        assert!(!is_ready(&ds(json!({}), 1, 2)), "not all updated");
        assert!(
            !is_ready(&ds(json!({}), 2, 1)),
            "ready but not yet available"
        );
        assert!(is_ready(&ds(json!({"type": "OnDelete"}), 0, 2)));
    }

    #[test]
    fn a_claim_binds_as_its_storage_class_says() {
        let claim = |class: Option<&str>| match class {
            Some(c) => json!({"kind": "PersistentVolumeClaim", "spec": {"storageClassName": c}}),
            None => json!({"kind": "PersistentVolumeClaim", "spec": {}}),
        };
        let gp3 = json!({"metadata": {"name": "gp3", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer"});
        let fast = json!({"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"});
        let classes = [gp3, fast];
        assert_eq!(
            claim_binding(&claim(None), &classes),
            ClaimBinding::FirstConsumer
        );
        assert_eq!(
            claim_binding(&claim(Some("fast")), &classes),
            ClaimBinding::Immediate
        );
        assert!(matches!(claim_binding(&claim(Some("slow")), &classes),
            ClaimBinding::NoProvisioner(why) if why.contains("`slow` does not exist")));
        assert!(matches!(claim_binding(&claim(None), &classes[1..]),
            ClaimBinding::NoProvisioner(why) if why.contains("no default StorageClass")));
        assert!(matches!(
            claim_binding(&claim(Some("")), &classes),
            ClaimBinding::NoProvisioner(_)
        ));
    }

    #[test]
    fn deployment_readiness() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}});
        assert!(condition(&d).is_some());
        assert!(!is_ready(&d), "generation not observed yet");
        d["status"]["observedGeneration"] = json!(2);
        assert!(is_ready(&d), "0 replicas: ready once observed");
        d["spec"]["replicas"] = json!(2);
        assert!(!is_ready(&d));
        d["status"] = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(is_ready(&d));
    }

    #[test]
    fn crd_job_pvc() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert!(is_ready(&crd));
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {}});
        assert!(!is_ready(&job));
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert!(!is_ready(&pvc));
        assert!(
            is_workload(&pvc),
            "PVC binding needs a provisioner: skipped with the workload gates"
        );
        assert!(!is_workload(&crd), "CRD gates always apply");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(condition(&cm).is_none() && is_ready(&cm));
    }

    #[test]
    fn failures_end_the_wait_with_their_condition() {
        let job = json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        assert_eq!(
            failure(&job).unwrap(),
            "condition Failed=True: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
        let stuck = json!({"kind": "Deployment", "status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}});
        assert!(failure(&stuck)
            .unwrap()
            .contains("ProgressDeadlineExceeded"));
        let progressing = json!({"kind": "Deployment", "status": {"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}});
        assert!(failure(&progressing).is_none());
        let d = json!({"kind": "Deployment", "spec": {"replicas": 3}, "status": {"updatedReplicas": 2, "availableReplicas": 1}});
        assert_eq!(progress(&d).unwrap(), "2/3 updated, 1/3 available");
        let quota = json!({"kind": "Deployment", "spec": {"replicas": 1}, "status": {"conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"web-1\" is forbidden: exceeded quota: compute"}]}});
        assert_eq!(
            progress(&quota).unwrap(),
            "0/1 updated, 0/1 available; ReplicaFailure: pods \"web-1\" is forbidden: exceeded quota: compute"
        );
        let job = json!({"kind": "Job", "spec": {}, "status": {"active": 1}});
        assert_eq!(progress(&job).unwrap(), "0/1 succeeded, 1 running");
        let unseen = json!({"kind": "Deployment", "metadata": {"generation": 3}, "spec": {"replicas": 1}, "status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1}});
        assert_eq!(
            progress(&unseen).unwrap(),
            "waiting for the controller to start the rollout"
        );
    }
}
