//! Kubernetes label selectors and NetworkPolicy admission, evaluated on built objects.

use serde_json::Value;

/// Labels as a JSON object (`metadata.labels`, a selector's `matchLabels`).
pub type Labels = serde_json::Map<String, Value>;

/// Whether `selector` (a `LabelSelector`: `matchLabels` and `matchExpressions`) selects `labels`.
/// An empty selector selects everything.
pub fn selects(selector: &Value, labels: &Labels) -> bool {
    let has = |k: &str, v: &str| labels.get(k).and_then(Value::as_str) == Some(v);
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        if !m.iter().all(|(k, v)| v.as_str().is_some_and(|v| has(k, v))) {
            return false;
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let value = labels.get(key).and_then(Value::as_str);
        let ok = match e["operator"].as_str().unwrap_or_default() {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => !value.is_some_and(|v| values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown selector operator {other}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// One end of a connection: a pod's namespace, its namespace's labels and its own labels.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub namespace: String,
    pub namespace_labels: Labels,
    pub labels: Labels,
    /// The pod's named container ports (name → number), for policies that name a port.
    pub named_ports: Vec<(String, u64)>,
}

impl Endpoint {
    fn is_peer(&self, peer: &Value, policy_namespace: &str) -> bool {
        if peer.get("ipBlock").is_some() {
            // An ipBlock admits addresses outside the cluster, never a pod by its labels.
            return false;
        }
        let pods = peer.get("podSelector");
        match peer.get("namespaceSelector") {
            Some(ns) => {
                selects(ns, &self.namespace_labels) && pods.is_none_or(|p| selects(p, &self.labels))
            }
            None => {
                self.namespace == policy_namespace && pods.is_some_and(|p| selects(p, &self.labels))
            }
        }
    }
}

/// Whether a policy rule's `ports` list admits `port`/`protocol` on `target`.
fn admits_port(ports: Option<&Value>, port: u64, protocol: &str, target: &Endpoint) -> bool {
    let Some(ports) = ports.and_then(Value::as_array).filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        proto == protocol
            && match p.get("port") {
                None => true,
                Some(Value::Number(n)) => n.as_u64() == Some(port),
                Some(Value::String(name)) => target
                    .named_ports
                    .iter()
                    .any(|(n, number)| n == name && *number == port),
                Some(_) => false,
            }
    })
}

/// The policy types a NetworkPolicy enforces (`policyTypes`, or what its rules imply).
fn enforces(policy: &Value, direction: &str) -> bool {
    match policy["spec"].get("policyTypes").and_then(Value::as_array) {
        Some(types) => types.iter().any(|t| t == direction),
        None => direction == "Ingress" || policy["spec"].get("egress").is_some(),
    }
}

/// Whether the NetworkPolicies `policies` let `from` open a connection to `to` on
/// `port`/`protocol`: the destination's ingress policies and the source's egress policies must
/// each admit it (a pod no policy of that direction selects is open in that direction).
pub fn admitted(
    policies: &[&Value],
    from: &Endpoint,
    to: &Endpoint,
    port: u64,
    protocol: &str,
) -> Result<(), String> {
    let direction = |dir: &str, subject: &Endpoint, other: &Endpoint, key: &str, peers: &str| {
        let selecting: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                p["metadata"]["namespace"] == subject.namespace.as_str()
                    && enforces(p, dir)
                    && selects(&p["spec"]["podSelector"], &subject.labels)
            })
            .collect();
        if selecting.is_empty() {
            return Ok(());
        }
        let ok = selecting.iter().any(|p| {
            p["spec"][key].as_array().into_iter().flatten().any(|rule| {
                let peer_ok = match rule.get(peers).and_then(Value::as_array) {
                    None => true,
                    Some(list) if list.is_empty() => true,
                    Some(list) => list
                        .iter()
                        .any(|peer| other.is_peer(peer, &subject.namespace)),
                };
                peer_ok && admits_port(rule.get("ports"), port, protocol, to)
            })
        });
        if ok {
            Ok(())
        } else {
            let names: Vec<&str> = selecting
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            Err(format!("{dir} refused by {}", names.join(", ")))
        }
    };
    direction("Ingress", to, from, "ingress", "from")?;
    direction("Egress", from, to, "egress", "to")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Labels {
        v.as_object().unwrap().clone()
    }

    fn endpoint(ns: &str, l: Value) -> Endpoint {
        Endpoint {
            namespace: ns.into(),
            namespace_labels: labels(json!({ "kubernetes.io/metadata.name": ns })),
            labels: labels(l),
            named_ports: vec![("http".into(), 8080)],
        }
    }

    #[test]
    fn selectors_follow_the_api_rules() {
        let l = labels(json!({"app": "api", "tier": "edge"}));
        assert!(selects(&json!({}), &l));
        assert!(selects(&json!({"matchLabels": {"app": "api"}}), &l));
        assert!(!selects(&json!({"matchLabels": {"app": "web"}}), &l));
        let expr = |op: &str| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": ["edge"]}]});
        assert!(selects(&expr("In"), &l));
        assert!(!selects(&expr("NotIn"), &l));
        assert!(selects(
            &json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
            &l
        ));
    }

    #[test]
    fn default_deny_refuses_and_a_matching_rule_admits() {
        let deny = json!({"metadata": {"name": "deny", "namespace": "a"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
        let allow = json!({"metadata": {"name": "allow", "namespace": "a"},
            "spec": {"podSelector": {"matchLabels": {"app": "api"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                    "ports": [{"port": "http"}]}]}});
        let api = endpoint("a", json!({"app": "api"}));
        let nginx = endpoint("ingress", json!({"app": "nginx"}));
        assert!(admitted(&[&deny], &nginx, &api, 8080, "TCP").is_err());
        assert!(admitted(&[&deny, &allow], &nginx, &api, 8080, "TCP").is_ok());
        assert!(admitted(&[&deny, &allow], &nginx, &api, 9090, "TCP").is_err());
        let same_ns = endpoint("a", json!({"app": "other"}));
        assert!(admitted(&[&deny, &allow], &same_ns, &api, 8080, "TCP").is_err());
    }

    #[test]
    fn egress_is_checked_on_the_source() {
        let egress = json!({"metadata": {"name": "egress", "namespace": "a"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}]}});
        let api = endpoint("a", json!({"app": "api"}));
        let db = endpoint("a", json!({"app": "db"}));
        assert!(admitted(&[&egress], &api, &db, 5432, "TCP").is_ok());
        assert!(admitted(&[&egress], &db, &api, 8080, "TCP").is_err());
        assert!(admitted(&[&egress], &api, &db, 5432, "UDP").is_err());
    }
}
