//! A walk over one environment's built objects: every reference a workload, Service, Ingress,
//! autoscaler or certificate makes resolves to an object of the set (or to one the example
//! declares as provided outside it, with the reason), and every ConfigMap and Secret is used.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::selectors::{selects, Endpoint, Labels};

/// Operators that only act on their objects in the namespace they run in.
const WATCHED_NAMESPACES: &[(&str, &str)] = &[("velero.io", "velero"), ("argoproj.io", "argocd")];

/// One pod template of the set, and the workload holding it.
pub struct Pod<'a> {
    pub workload: String,
    pub kind: String,
    pub namespace: String,
    pub spec: &'a Value,
    pub labels: Labels,
    /// A StatefulSet's volumeClaimTemplates (mountable by name).
    pub claim_templates: Vec<String>,
}

pub struct Set {
    pub objects: Vec<Value>,
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

impl Set {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
        })
    }

    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self
            .find("Namespace", "", namespace)
            .and_then(|n| n["metadata"]["labels"].as_object().cloned())
            .unwrap_or_default();
        // Set by the API server itself since Kubernetes 1.21.
        labels.insert(
            "kubernetes.io/metadata.name".into(),
            Value::String(namespace.into()),
        );
        labels
    }

    pub fn pods(&self) -> Vec<Pod<'_>> {
        let mut pods = Vec::new();
        for o in &self.objects {
            let kind = o["kind"].as_str().unwrap_or_default();
            let template = match kind {
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    o.pointer("/spec/template")
                }
                "CronJob" => o.pointer("/spec/jobTemplate/spec/template"),
                _ => None,
            };
            let Some(template) = template else { continue };
            pods.push(Pod {
                workload: o["metadata"]["name"].as_str().unwrap_or_default().into(),
                kind: kind.into(),
                namespace: o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                spec: &template["spec"],
                labels: template["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                claim_templates: array(&o["spec"], "volumeClaimTemplates")
                    .filter_map(|t| str_at(t, "/metadata/name").map(String::from))
                    .collect(),
            });
        }
        pods
    }

    pub fn endpoint(&self, pod: &Pod<'_>) -> Endpoint {
        Endpoint {
            namespace: pod.namespace.clone(),
            namespace_labels: self.namespace_labels(&pod.namespace),
            labels: pod.labels.clone(),
            named_ports: containers(pod.spec)
                .flat_map(|c| array(c, "ports"))
                .filter_map(|p| Some((p["name"].as_str()?.into(), p["containerPort"].as_u64()?)))
                .collect(),
        }
    }

    /// Keys each ConfigMap or Secret provides, by (kind, namespace, name). Secrets made by
    /// cert-manager for a Certificate count as Secrets of the set.
    fn providers(&self) -> BTreeMap<(String, String, String), BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for o in &self.objects {
            let ns = str_at(o, "/metadata/namespace")
                .unwrap_or_default()
                .to_owned();
            let name = str_at(o, "/metadata/name").unwrap_or_default().to_owned();
            let keys = |fields: &[&str]| -> BTreeSet<String> {
                fields
                    .iter()
                    .filter_map(|f| o.get(*f).and_then(Value::as_object))
                    .flat_map(|m| m.keys().cloned())
                    .collect()
            };
            match o["kind"].as_str().unwrap_or_default() {
                "ConfigMap" => {
                    out.insert(
                        ("ConfigMap".into(), ns, name),
                        keys(&["data", "binaryData"]),
                    );
                }
                "Secret" => {
                    let mut k = keys(&["data", "stringData"]);
                    if let Some(refs) = str_at(o, "/metadata/annotations/kiln.dev~1secret-refs") {
                        let refs: Value = serde_json::from_str(refs).unwrap();
                        k.extend(refs.as_object().unwrap().keys().cloned());
                    }
                    out.insert(("Secret".into(), ns, name), k);
                }
                "Certificate" => {
                    let secret = str_at(o, "/spec/secretName").unwrap_or_default().to_owned();
                    let k = ["tls.crt", "tls.key", "ca.crt"].map(String::from).into();
                    out.insert(("Secret".into(), ns, secret), k);
                }
                _ => {}
            }
        }
        out
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    array(spec, "initContainers").chain(array(spec, "containers"))
}

/// What a walk found wrong, one line each.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    fn add(&mut self, what: String) {
        self.0.push(what);
    }
}

/// Objects an example takes from outside its set: (kind, namespace, name).
pub type External<'a> = &'a [(&'a str, &'a str, &'a str)];

pub fn walk(set: &Set, external: External<'_>) -> Problems {
    let mut problems = Problems::default();
    let providers = set.providers();
    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    let is_external = |kind: &str, ns: &str, name: &str| {
        external
            .iter()
            .any(|(k, n, m)| *k == kind && (*n == ns || n.is_empty()) && *m == name)
    };
    let exists = |kind: &str, ns: &str, name: &str| {
        set.find(kind, ns, name).is_some() || is_external(kind, ns, name)
    };
    let mut need = |problems: &mut Problems,
                    who: &str,
                    kind: &str,
                    ns: &str,
                    name: &str,
                    key: Option<&str>| {
        let id = (kind.to_owned(), ns.to_owned(), name.to_owned());
        used.insert(id.clone());
        if is_external(kind, ns, name) {
            return;
        }
        match providers.get(&id) {
            None => problems.add(format!("{who}: {kind} {ns}/{name} is not in the set")),
            Some(keys) => {
                if let Some(key) = key {
                    if !keys.contains(key) {
                        problems.add(format!("{who}: {kind} {ns}/{name} has no key {key}"));
                    }
                }
            }
        }
    };

    // Every namespaced object lives in a namespace of the set, or a declared one; operators'
    // objects live where the operator watches.
    let namespaces: BTreeSet<&str> = set
        .of_kind("Namespace")
        .filter_map(|n| str_at(n, "/metadata/name"))
        .collect();
    for o in &set.objects {
        let Some(ns) = str_at(o, "/metadata/namespace") else {
            continue;
        };
        let id = format!(
            "{} {ns}/{}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["name"]
        );
        if !namespaces.contains(ns) && !is_external("Namespace", "", ns) {
            problems.add(format!("{id}: namespace {ns} is not in the set"));
        }
        let group = group_of(o["apiVersion"].as_str().unwrap_or_default());
        for (g, watched) in WATCHED_NAMESPACES {
            if group == *g && ns != *watched {
                problems.add(format!(
                    "{id}: {g} objects are acted on only in namespace {watched}"
                ));
            }
        }
    }

    // Pods: configuration, volumes, mounts, service accounts.
    let pods = set.pods();
    for pod in &pods {
        let who = format!("{} {}/{}", pod.kind, pod.namespace, pod.workload);
        let ns = pod.namespace.as_str();
        let mut volumes: BTreeSet<String> = pod.claim_templates.iter().cloned().collect();
        let mut volume_sources: BTreeMap<String, &Value> = BTreeMap::new();
        for v in array(pod.spec, "volumes") {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            volumes.insert(name.clone());
            volume_sources.insert(name, v);
            if let Some(cm) = str_at(v, "/configMap/name") {
                for item in array(&v["configMap"], "items") {
                    need(
                        &mut problems,
                        &who,
                        "ConfigMap",
                        ns,
                        cm,
                        item["key"].as_str(),
                    );
                }
                need(&mut problems, &who, "ConfigMap", ns, cm, None);
            }
            if let Some(s) = str_at(v, "/secret/secretName") {
                for item in array(&v["secret"], "items") {
                    need(&mut problems, &who, "Secret", ns, s, item["key"].as_str());
                }
                need(&mut problems, &who, "Secret", ns, s, None);
            }
            for src in array(&v["projected"], "sources") {
                if let Some(cm) = str_at(src, "/configMap/name") {
                    need(&mut problems, &who, "ConfigMap", ns, cm, None);
                }
                if let Some(s) = str_at(src, "/secret/name") {
                    need(&mut problems, &who, "Secret", ns, s, None);
                }
            }
            if let Some(claim) = str_at(v, "/persistentVolumeClaim/claimName") {
                if !exists("PersistentVolumeClaim", ns, claim) {
                    problems.add(format!(
                        "{who}: PersistentVolumeClaim {ns}/{claim} is not in the set"
                    ));
                }
            }
        }
        let mut mounted: BTreeSet<&str> = BTreeSet::new();
        for c in containers(pod.spec) {
            let cname = c["name"].as_str().unwrap_or_default();
            for from in array(c, "envFrom") {
                for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
                    if let Some(name) = from.get(field).and_then(|r| r["name"].as_str()) {
                        if from[field]["optional"] != true {
                            need(&mut problems, &who, kind, ns, name, None);
                        }
                        // Each key becomes a variable: a file's name (`app.env`) would be one
                        // variable holding the whole file, not the settings in it.
                        let id = (kind.to_owned(), ns.to_owned(), name.to_owned());
                        for key in providers.get(&id).into_iter().flatten() {
                            let ok = key
                                .bytes()
                                .next()
                                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                            if !ok {
                                problems.add(format!("{who}: container {cname} takes {kind} {name} as environment, and its key `{key}` is no variable name"));
                            }
                        }
                    }
                }
            }
            for env in array(c, "env") {
                for (field, kind) in [("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")]
                {
                    if let Some(r) = env.pointer(&format!("/valueFrom/{field}")) {
                        if r["optional"] != true {
                            let name = r["name"].as_str().unwrap_or_default();
                            need(&mut problems, &who, kind, ns, name, r["key"].as_str());
                        }
                    }
                }
            }
            let mut paths = BTreeSet::new();
            for m in array(c, "volumeMounts") {
                let vol = m["name"].as_str().unwrap_or_default();
                mounted.insert(vol);
                if !volumes.contains(vol) {
                    problems.add(format!(
                        "{who}: container {cname} mounts volume {vol}, which the pod does not have"
                    ));
                }
                let path = m["mountPath"].as_str().unwrap_or_default();
                if !paths.insert(path) {
                    problems.add(format!("{who}: container {cname} mounts {path} twice"));
                }
                if let (Some(sub), Some(src)) = (m["subPath"].as_str(), volume_sources.get(vol)) {
                    if let Some(cm) = str_at(src, "/configMap/name") {
                        need(&mut problems, &who, "ConfigMap", ns, cm, Some(sub));
                    }
                }
            }
        }
        for v in volume_sources.keys() {
            if !mounted.contains(v.as_str()) {
                problems.add(format!("{who}: volume {v} is mounted by no container"));
            }
        }
        let level = set.namespace_labels(ns);
        if level
            .get("pod-security.kubernetes.io/enforce")
            .and_then(Value::as_str)
            == Some("restricted")
        {
            for why in restricted_violations(pod.spec) {
                problems.add(format!(
                    "{who}: the namespace enforces the restricted pod security level, and {why}"
                ));
            }
        }
        if let Some(sa) = pod.spec["serviceAccountName"].as_str() {
            if sa != "default" && !exists("ServiceAccount", ns, sa) {
                problems.add(format!("{who}: ServiceAccount {ns}/{sa} is not in the set"));
            }
        }
    }

    // Services select pods, and their target ports exist.
    for svc in set.of_kind("Service") {
        let ns = str_at(svc, "/metadata/namespace").unwrap_or_default();
        let who = format!(
            "Service {ns}/{}",
            svc["metadata"]["name"].as_str().unwrap_or_default()
        );
        let Some(selector) = svc["spec"]["selector"].as_object() else {
            continue;
        };
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        if is_external("Service", ns, name) {
            continue;
        }
        let selector = serde_json::json!({ "matchLabels": selector });
        let backing: Vec<&Pod<'_>> = pods
            .iter()
            .filter(|p| {
                // The StatefulSet controller labels each pod with its name (NAME-ORDINAL).
                let mut labels = p.labels.clone();
                if p.kind == "StatefulSet" {
                    if let Some(Value::String(pod)) =
                        selector["matchLabels"].get("statefulset.kubernetes.io/pod-name")
                    {
                        if pod
                            .strip_prefix(&format!("{}-", p.workload))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                        {
                            labels.insert(
                                "statefulset.kubernetes.io/pod-name".into(),
                                Value::String(pod.clone()),
                            );
                        }
                    }
                }
                p.namespace == ns
                    && p.kind != "Job"
                    && p.kind != "CronJob"
                    && selects(&selector, &labels)
            })
            .collect();
        if backing.is_empty() {
            problems.add(format!("{who}: selects no pod of the set"));
            continue;
        }
        for port in array(&svc["spec"], "ports") {
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            let found = backing.iter().any(|p| {
                containers(p.spec)
                    .flat_map(|c| array(c, "ports"))
                    .any(|cp| match target {
                        Value::String(name) => cp["name"] == name.as_str(),
                        number => cp["containerPort"] == *number,
                    })
            });
            if !found {
                problems.add(format!(
                    "{who}: no selected pod has container port {target}"
                ));
            }
        }
    }

    // Ingress backends and TLS secrets.
    for ing in set.of_kind("Ingress") {
        let ns = str_at(ing, "/metadata/namespace").unwrap_or_default();
        let who = format!(
            "Ingress {ns}/{}",
            ing["metadata"]["name"].as_str().unwrap_or_default()
        );
        for rule in array(&ing["spec"], "rules") {
            for path in array(&rule["http"], "paths") {
                let b = &path["backend"]["service"];
                let name = b["name"].as_str().unwrap_or_default();
                match set.find("Service", ns, name) {
                    None => {
                        problems.add(format!("{who}: backend Service {name} is not in the set"))
                    }
                    Some(svc) => {
                        let ok = array(&svc["spec"], "ports").any(|p| {
                            b["port"].get("number").is_some_and(|n| p["port"] == *n)
                                || b["port"].get("name").is_some_and(|n| p["name"] == *n)
                        });
                        if !ok {
                            problems
                                .add(format!("{who}: Service {name} has no port {}", b["port"]));
                        }
                    }
                }
            }
        }
        let shim = str_at(ing, "/metadata/annotations/cert-manager.io~1cluster-issuer");
        if let Some(issuer) = shim {
            if !exists("ClusterIssuer", "", issuer) {
                problems.add(format!("{who}: ClusterIssuer {issuer} is not in the set"));
            }
        }
        for tls in array(&ing["spec"], "tls") {
            let secret = tls["secretName"].as_str().unwrap_or_default();
            if shim.is_none() {
                need(&mut problems, &who, "Secret", ns, secret, Some("tls.crt"));
            }
        }
    }

    // Autoscalers, canaries and disruption budgets act on workloads of the set.
    for (kind, pointer) in [
        ("HorizontalPodAutoscaler", "/spec/scaleTargetRef"),
        ("VerticalPodAutoscaler", "/spec/targetRef"),
        ("Canary", "/spec/targetRef"),
    ] {
        for o in set.of_kind(kind) {
            let ns = str_at(o, "/metadata/namespace").unwrap_or_default();
            let target = &o.pointer(pointer).cloned().unwrap_or_default();
            let (tk, tn) = (
                target["kind"].as_str().unwrap_or_default(),
                target["name"].as_str().unwrap_or_default(),
            );
            if set.find(tk, ns, tn).is_none() {
                problems.add(format!(
                    "{kind} {ns}/{}: target {tk} {tn} is not in the set",
                    o["metadata"]["name"]
                ));
            }
        }
    }
    // Flagger makes a canary's Services (`NAME`, `NAME-primary`, `NAME-canary`) and rewrites
    // their selectors: a Service of the set under one of those names would be fought over.
    for canary in set.of_kind("Canary") {
        let ns = str_at(canary, "/metadata/namespace").unwrap_or_default();
        let target = str_at(canary, "/spec/targetRef/name").unwrap_or_default();
        let apex = str_at(canary, "/spec/service/name").unwrap_or(target);
        for name in [
            apex.to_owned(),
            format!("{target}-primary"),
            format!("{target}-canary"),
        ] {
            if set.find("Service", ns, &name).is_some() {
                problems.add(format!("Service {ns}/{name}: Flagger makes it for Canary {target}; it must not be in the set"));
            }
        }
    }
    for pdb in set.of_kind("PodDisruptionBudget") {
        let ns = str_at(pdb, "/metadata/namespace").unwrap_or_default();
        if !pods
            .iter()
            .any(|p| p.namespace == ns && selects(&pdb["spec"]["selector"], &p.labels))
        {
            problems.add(format!(
                "PodDisruptionBudget {ns}/{}: selects no pod",
                pdb["metadata"]["name"]
            ));
        }
    }
    for cert in set.of_kind("Certificate") {
        let kind = str_at(cert, "/spec/issuerRef/kind").unwrap_or("Issuer");
        let name = str_at(cert, "/spec/issuerRef/name").unwrap_or_default();
        let ns = if kind == "ClusterIssuer" {
            ""
        } else {
            str_at(cert, "/metadata/namespace").unwrap_or_default()
        };
        if !exists(kind, ns, name) {
            problems.add(format!(
                "Certificate {}: {kind} {name} is not in the set",
                cert["metadata"]["name"]
            ));
        }
    }
    // CloudNativePG clusters read their owner's credentials.
    for c in set
        .of_kind("Cluster")
        .filter(|c| group_of(c["apiVersion"].as_str().unwrap_or_default()) == "postgresql.cnpg.io")
    {
        let ns = str_at(c, "/metadata/namespace").unwrap_or_default();
        if let Some(secret) = str_at(c, "/spec/bootstrap/initdb/secret/name") {
            let who = format!("Cluster {ns}/{}", c["metadata"]["name"]);
            need(&mut problems, &who, "Secret", ns, secret, Some("username"));
            need(&mut problems, &who, "Secret", ns, secret, Some("password"));
        }
    }
    // Velero's storage locations read their credentials.
    for bsl in set.of_kind("BackupStorageLocation") {
        let ns = str_at(bsl, "/metadata/namespace").unwrap_or_default();
        if let Some(secret) = str_at(bsl, "/spec/credential/name") {
            let key = str_at(bsl, "/spec/credential/key");
            let who = format!("BackupStorageLocation {ns}/{}", bsl["metadata"]["name"]);
            need(&mut problems, &who, "Secret", ns, secret, key);
        }
    }
    // An Istio ingress gateway reads its TLS secret from its own namespace (istio-system).
    for gw in set
        .of_kind("Gateway")
        .filter(|g| group_of(g["apiVersion"].as_str().unwrap_or_default()) == "networking.istio.io")
    {
        for server in array(&gw["spec"], "servers") {
            if let Some(cred) = str_at(server, "/tls/credentialName") {
                need(
                    &mut problems,
                    &format!("Gateway {}", gw["metadata"]["name"]),
                    "Secret",
                    "istio-system",
                    cred,
                    None,
                );
            }
        }
    }

    // Every ConfigMap and Secret of the set is used by something.
    for (kind, ns, name) in providers.keys() {
        let from_cert = set
            .of_kind("Certificate")
            .any(|c| str_at(c, "/spec/secretName") == Some(name.as_str()));
        if !from_cert
            && !used.contains(&(kind.clone(), ns.clone(), name.clone()))
            && !is_external(kind, ns, name)
        {
            problems.add(format!("{kind} {ns}/{name} is used by no workload"));
        }
    }
    problems
}

/// What the `restricted` Pod Security Standard refuses in a pod spec (the checks of
/// <https://kubernetes.io/docs/concepts/security/pod-security-standards/> that built objects show).
fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod = &spec["securityContext"];
    for c in containers(spec) {
        let name = c["name"].as_str().unwrap_or_default();
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            out.push(format!(
                "container {name} does not set allowPrivilegeEscalation: false"
            ));
        }
        let drops_all = array(&sc["capabilities"], "drop").any(|d| d == "ALL");
        if !drops_all {
            out.push(format!("container {name} does not drop ALL capabilities"));
        }
        if sc["runAsNonRoot"] != true && pod["runAsNonRoot"] != true {
            out.push(format!("container {name} may run as root (runAsNonRoot)"));
        }
        if sc["runAsUser"] == 0 || (sc.get("runAsUser").is_none() && pod["runAsUser"] == 0) {
            out.push(format!("container {name} runs as UID 0"));
        }
        let seccomp = sc
            .pointer("/seccompProfile/type")
            .or_else(|| pod.pointer("/seccompProfile/type"));
        if !matches!(
            seccomp.and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        ) {
            out.push(format!(
                "container {name} has no RuntimeDefault seccomp profile"
            ));
        }
        if sc["privileged"] == true {
            out.push(format!("container {name} is privileged"));
        }
    }
    for v in array(spec, "volumes") {
        if v.get("hostPath").is_some() {
            out.push(format!("volume {} is a hostPath", v["name"]));
        }
    }
    out
}
