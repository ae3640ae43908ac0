//! Strategic merge, differentially: every case's base object and patch go through kiln's
//! `overlay` rule and through `kubectl kustomize` (kustomize built into kubectl, `patches:` with
//! a strategic merge patch file), and the two objects must be identical (issue 7, class 13).
//! The cases cover the merge keys of the Kubernetes schema (containers, env, ports, volumes,
//! volume mounts and devices, hostAliases, topologySpreadConstraints, imagePullSecrets, Service
//! ports, finalizers), the lists that replace (tolerations, args, envFrom, rules), the
//! directives (`$patch: replace|delete|merge`, `$retainKeys`, `$setElementOrder`,
//! `$deleteFromPrimitiveList`), other kinds (Job, CronJob, DaemonSet, StatefulSet, Service,
//! ConfigMap, Endpoints) and a custom resource without a schema.

mod common;

use std::path::Path;
use std::process::Command;

use common::Sandbox;
use serde_json::Value;

/// A Deployment with most list fields a pod spec has.
const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  labels: {app: web, tier: front}
  finalizers: [example.com/a, example.com/b]
spec:
  replicas: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      imagePullSecrets: [{name: registry-a}]
      hostAliases:
        - ip: 10.0.0.1
          hostnames: [a.internal]
      tolerations:
        - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      initContainers:
        - name: migrate
          image: migrate:1
      containers:
        - name: app
          image: app:1
          args: [--port, "8080"]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
          envFrom:
            - configMapRef: {name: settings}
          ports:
            - {containerPort: 8080, name: http}
            - {containerPort: 9090, name: metrics}
          resources:
            limits: {cpu: 500m, memory: 256Mi}
            requests: {cpu: 100m}
          securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true}
          volumeMounts:
            - {name: data, mountPath: /data}
            - {name: cache, mountPath: /cache, readOnly: false}
          volumeDevices:
            - {name: raw, devicePath: /dev/xvda}
        - name: sidecar
          image: proxy:1
      volumes:
        - name: data
          persistentVolumeClaim: {claimName: data}
        - name: cache
          emptyDir: {}
        - name: raw
          persistentVolumeClaim: {claimName: raw}
"#;

/// The containers of a patch of [`DEPLOYMENT`] named `NAME`.
fn pod_patch(spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: NAME}}\nspec:\n  template:\n    spec:\n{}",
        indent(spec, 6)
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// (case, base, patch); `NAME` becomes the case's name (lowercase, as object names are).
fn cases() -> Vec<(String, String, String)> {
    let d = || DEPLOYMENT.to_owned();
    let p = pod_patch;
    let cases: Vec<(&str, String, String)> = vec![
        ("containers-by-name", d(), p("containers:\n  - name: app\n    image: app:2")),
        ("container-added", d(), p("containers:\n  - name: metrics\n    image: exporter:1")),
        ("container-deleted", d(), p("containers:\n  - name: sidecar\n    $patch: delete")),
        ("containers-replaced", d(), p("containers:\n  - $patch: replace\n  - name: only\n    image: only:1")),
        ("env-by-name", d(), p("containers:\n  - name: app\n    env:\n      - {name: B, value: \"22\"}\n      - {name: C, value: \"3\"}")),
        ("env-deleted", d(), p("containers:\n  - name: app\n    env:\n      - {name: A, $patch: delete}")),
        ("env-value-to-valueFrom", d(), p("containers:\n  - name: app\n    env:\n      - name: A\n        value: null\n        valueFrom: {secretKeyRef: {name: s, key: a}}")),
        ("ports-by-containerPort", d(), p("containers:\n  - name: app\n    ports:\n      - {containerPort: 9090, name: prom}\n      - {containerPort: 7070, name: grpc}")),
        ("volumeMounts-by-mountPath", d(), p("containers:\n  - name: app\n    volumeMounts:\n      - {mountPath: /cache, name: cache, readOnly: true}\n      - {mountPath: /tmp, name: tmp}")),
        ("volumeDevices-by-devicePath", d(), p("containers:\n  - name: app\n    volumeDevices:\n      - {devicePath: /dev/xvdb, name: raw2}")),
        ("volumes-by-name", d(), p("volumes:\n  - name: tmp\n    emptyDir: {medium: Memory}\n  - name: data\n    persistentVolumeClaim: {claimName: data-v2}")),
        ("volume-deleted", d(), p("volumes:\n  - {name: raw, $patch: delete}")),
        ("imagePullSecrets-by-name", d(), p("imagePullSecrets:\n  - name: registry-b")),
        ("hostAliases-by-ip", d(), p("hostAliases:\n  - ip: 10.0.0.1\n    hostnames: [b.internal]\n  - ip: 10.0.0.2\n    hostnames: [c.internal]")),
        (
            "ports-by-containerPort-and-protocol",
            d().replace("{containerPort: 8080, name: http}", "{containerPort: 8080, protocol: TCP, name: http}").replace("{containerPort: 9090, name: metrics}", "{containerPort: 9090, protocol: TCP, name: metrics}"),
            p("containers:\n  - name: app\n    ports:\n      - {containerPort: 9090, protocol: TCP, name: prom}\n      - {containerPort: 7070, protocol: TCP, name: grpc}\n      - {containerPort: 8080, protocol: UDP, name: quic}"),
        ),
        ("topologySpread-by-both-keys", d(), p("topologySpreadConstraints:\n  - {topologyKey: host, maxSkew: 1, whenUnsatisfiable: ScheduleAnyway}\n  - {topologyKey: zone, maxSkew: 3, whenUnsatisfiable: DoNotSchedule}")),
        ("topologySpread-by-topologyKey", d(), p("topologySpreadConstraints:\n  - {topologyKey: zone, maxSkew: 2, whenUnsatisfiable: DoNotSchedule}\n  - {topologyKey: host, maxSkew: 1, whenUnsatisfiable: ScheduleAnyway}")),
        ("tolerations-replace", d(), p("tolerations:\n  - {key: gpu, operator: Exists, effect: NoSchedule}")),
        ("args-replace", d(), p("containers:\n  - name: app\n    args: [--port, \"9000\", --verbose]")),
        ("envFrom-replace", d(), p("containers:\n  - name: app\n    envFrom:\n      - secretRef: {name: creds}")),
        ("initContainers-by-name", d(), p("initContainers:\n  - name: migrate\n    image: migrate:2\n  - name: seed\n    image: seed:1")),
        ("null-deletes", d(), p("containers:\n  - name: app\n    securityContext: null\n    resources:\n      requests: null")),
        ("map-patch-replace", d(), p("containers:\n  - name: app\n    resources:\n      $patch: replace\n      limits: {memory: 1Gi}")),
        ("map-patch-delete", d(), p("containers:\n  - name: app\n    securityContext:\n      $patch: delete")),
        ("labels-merge", d(), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: NAME\n  labels: {tier: null, team: core}\n".to_owned()),
        ("finalizers-merge", d(), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: NAME\n  finalizers: [example.com/c]\n".to_owned()),
        ("replicas-and-nested", d(), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: NAME}\nspec:\n  replicas: 5\n  template:\n    metadata:\n      annotations: {checksum: abc}\n".to_owned()),
        (
            "job-containers",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: NAME}\nspec:\n  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - {name: run, image: run:1, env: [{name: X, value: \"1\"}]}\n        - {name: log, image: log:1}\n".to_owned(),
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: NAME}\nspec:\n  template:\n    spec:\n      containers:\n        - {name: run, env: [{name: Y, value: \"2\"}]}\n".to_owned(),
        ),
        (
            "cronjob-containers",
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: NAME}\nspec:\n  schedule: \"0 2 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - {name: backup, image: backup:1, args: [--all]}\n            - {name: notify, image: notify:1}\n".to_owned(),
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: NAME}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - {name: backup, image: backup:2}\n".to_owned(),
        ),
        (
            "daemonset-tolerations-and-containers",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: NAME}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      tolerations: [{operator: Exists}]\n      containers:\n        - {name: agent, image: agent:1, volumeMounts: [{name: logs, mountPath: /var/log}]}\n      volumes: [{name: logs, hostPath: {path: /var/log}}]\n".to_owned(),
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: NAME}\nspec:\n  template:\n    spec:\n      tolerations: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]\n      containers:\n        - {name: agent, volumeMounts: [{name: proc, mountPath: /host/proc}]}\n      volumes: [{name: proc, hostPath: {path: /proc}}]\n".to_owned(),
        ),
        (
            "statefulset-volumeClaimTemplates",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: NAME}\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: db, image: db:1}]\n  volumeClaimTemplates:\n    - metadata: {name: data}\n      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n".to_owned(),
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: NAME}\nspec:\n  volumeClaimTemplates:\n    - metadata: {name: data}\n      spec: {resources: {requests: {storage: 10Gi}}}\n".to_owned(),
        ),
        (
            "service-ports-by-port",
            "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  selector: {app: web}\n  ports:\n    - {name: http, port: 80, targetPort: 8080}\n    - {name: https, port: 443, targetPort: 8443}\n".to_owned(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  type: LoadBalancer\n  ports:\n    - {port: 443, targetPort: 9443}\n    - {name: grpc, port: 9000}\n".to_owned(),
        ),
        (
            "service-ports-by-port-and-protocol",
            "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  ports:\n    - {name: dns, port: 53, protocol: UDP}\n    - {name: dns-tcp, port: 53, protocol: TCP}\n".to_owned(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  ports:\n    - {name: dns-over-tcp, port: 53, protocol: TCP}\n    - {name: metrics, port: 9153, protocol: TCP}\n".to_owned(),
        ),
        (
            "configmap-data",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: NAME}\ndata: {a: \"1\", b: \"2\"}\n".to_owned(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: NAME}\ndata: {b: null, c: \"3\"}\n".to_owned(),
        ),
        (
            "endpoints-addresses-replace",
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: NAME}\nsubsets:\n  - addresses: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]\n    ports: [{port: 80}]\n".to_owned(),
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: NAME}\nsubsets:\n  - addresses: [{ip: 10.1.0.3}]\n    ports: [{port: 80}]\n".to_owned(),
        ),
        (
            "role-rules-replace",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: NAME}\nrules:\n  - {apiGroups: [\"\"], resources: [pods], verbs: [get]}\n".to_owned(),
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: NAME}\nrules:\n  - {apiGroups: [apps], resources: [deployments], verbs: [list]}\n".to_owned(),
        ),
        (
            "custom-resource-lists",
            "apiVersion: example.com/v1\nkind: Pipeline\nmetadata: {name: NAME}\nspec:\n  stages:\n    - {name: build, image: b:1}\n    - {name: test, image: t:1}\n  tags: [a, b]\n".to_owned(),
            "apiVersion: example.com/v1\nkind: Pipeline\nmetadata: {name: NAME}\nspec:\n  stages:\n    - {name: test, image: t:2}\n    - {name: deploy, image: d:1}\n  tags: [c]\n".to_owned(),
        ),
    ];
    named(cases)
}

/// Cases with `NAME` replaced by the case's name, lowercase as object names are.
fn named(cases: Vec<(&str, String, String)>) -> Vec<(String, String, String)> {
    cases
        .into_iter()
        .map(|(name, base, patch)| {
            let name = name.to_lowercase();
            let (base, patch) = (base.replace("NAME", &name), patch.replace("NAME", &name));
            (name, base, patch)
        })
        .collect()
}

/// A project with a base rule and an overlay rule (named after the case) per case, built.
fn built_overlays(cases: &[(String, String, String)]) -> Sandbox {
    let s = Sandbox::new();
    let mut rules = String::from("[project]\nname = \"smp\"\n");
    for (name, base, patch) in cases {
        s.write(&format!("bases/{name}.yaml"), base);
        s.write(&format!("patches/{name}.yaml"), patch);
        rules.push_str(&format!(
            "\n[rule.base-{name}]\nkind = \"manifest\"\nsrcs = [\"bases/{name}.yaml\"]\n\n[rule.{name}]\nkind = \"overlay\"\ndeps = [\"base-{name}\"]\nsrcs = [\"patches/{name}.yaml\"]\n"
        ));
    }
    s.write("kiln.toml", &rules);
    s.build_ok(&[]);
    s
}

/// The object the overlay rule of case `name` built from `base`.
fn overlaid(s: &Sandbox, name: &str, base: &str) -> Value {
    let obj = parse(base);
    let kind = obj["kind"].as_str().unwrap();
    let group = match obj["apiVersion"].as_str().unwrap().rsplit_once('/') {
        Some((g, _)) => g,
        None => "core",
    };
    parse(&s.cat(
        name,
        &format!("objects/_cluster/{kind}.{group}/{name}.yaml"),
        &[],
    ))
}

/// The directives kustomize passes through unread, as Kubernetes' own strategic merge
/// defines them (`kubectl patch --local --type strategic`, the apimachinery implementation).
/// Where a patch touches a keyed list it also says the list's order (`$setElementOrder`, as
/// the patches kubectl computes do): without it, apimachinery orders merged lists differently
/// from kustomize, and kiln follows kustomize.
fn kubernetes_directive_cases() -> Vec<(String, String, String)> {
    let d = || DEPLOYMENT.to_owned();
    let p = pod_patch;
    let cases: Vec<(&str, String, String)> = vec![
        ("volume-source-retainKeys", d(), p("$setElementOrder/volumes: [{name: data}, {name: cache}, {name: raw}]\nvolumes:\n  - name: cache\n    $retainKeys: [name, configMap]\n    configMap: {name: cache-seed}")),
        ("strategy-retainKeys", d(), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: NAME}\nspec:\n  strategy:\n    $retainKeys: [type]\n    type: Recreate\n".to_owned()),
        ("deleteFromPrimitiveList", d(), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: NAME\n  $deleteFromPrimitiveList/finalizers: [example.com/a]\n".to_owned()),
        ("setElementOrder", d(), p("$setElementOrder/containers:\n  - name: sidecar\n  - name: app\ncontainers:\n  - name: app\n    image: app:3")),
        ("retainKeys-in-a-container-volume", d(), p("$setElementOrder/volumes: [{name: data}, {name: cache}, {name: raw}]\nvolumes:\n  - name: data\n    $retainKeys: [name, emptyDir]\n    emptyDir: {sizeLimit: 1Gi}")),
    ];
    named(cases)
}

/// The object in `yaml` (one document), as JSON, read as kiln reads sources.
fn parse(yaml: &str) -> Value {
    let path = kiln_core::RelPath::new("case.yaml".to_owned()).unwrap();
    let mut docs =
        kiln_rules::objects::parse_documents(yaml, &path).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(docs.len(), 1, "{yaml}");
    docs.remove(0)
}

fn kustomize(dir: &Path, base: &str, patch: &str) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("base.yaml"), base).unwrap();
    std::fs::write(dir.join("patch.yaml"), patch).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [base.yaml]\npatches:\n  - path: patch.yaml\n",
    )
    .unwrap();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap())
}

/// kustomize ≥ 4 (kubectl ≥ 1.21) implements `patches:` and the schema's merge keys; the
/// kustomize 2 of older kubectls would compare against something else.
fn kustomize_version() -> String {
    let out = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: "))
        .unwrap_or_else(|| panic!("kubectl has no kustomize version: {text}"))
        .to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 4, "kubectl's kustomize {version} is older than v4");
    version
}

#[test]
fn overlays_merge_as_kustomize_does() {
    let version = kustomize_version();
    let cases = cases();
    assert!(cases.len() >= 30);
    let s = built_overlays(&cases);
    let scratch = tempfile::tempdir().unwrap();

    let mut differ = Vec::new();
    for (name, base, patch) in &cases {
        let expected = kustomize(&scratch.path().join(name), base, patch);
        let actual = overlaid(&s, name, base);
        if actual != expected {
            differ.push(format!(
                "{name}:\n  kiln:      {actual}\n  kustomize: {expected}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} cases differ from kustomize {version}:\n{}",
        differ.len(),
        cases.len(),
        differ.join("\n")
    );
}

/// `kubectl patch --local --type strategic`: Kubernetes' own strategic merge, no server.
fn kubectl_patch(dir: &Path, base: &str, patch: &Value) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("base.yaml"), base).unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .args([
            "patch",
            "--local",
            "--type",
            "strategic",
            "-o",
            "json",
            "-f",
        ])
        .arg(dir.join("base.yaml"))
        .arg("-p")
        .arg(patch.to_string())
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn directives_kustomize_leaves_unread_merge_as_kubernetes_defines_them() {
    let cases = kubernetes_directive_cases();
    let s = built_overlays(&cases);
    let scratch = tempfile::tempdir().unwrap();
    let mut differ = Vec::new();
    for (name, base, patch) in &cases {
        // kustomize keeps the directive in its output (and so does not apply it); if a later
        // kustomize reads it, this case belongs with the kustomize cases.
        let by_kustomize = kustomize(&scratch.path().join(name), base, patch);
        assert!(
            by_kustomize.to_string().contains("\"$"),
            "{name}: kustomize now applies the directive"
        );
        let expected = kubectl_patch(
            &scratch.path().join(format!("{name}-patch")),
            base,
            &parse(patch),
        );
        let actual = overlaid(&s, name, base);
        if actual != expected {
            differ.push(format!(
                "{name}:\n  kiln:       {actual}\n  kubernetes: {expected}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Where kustomize is known to lose items, kiln does not follow it: ports given with a
/// `protocol` in the patch but without one in the base (kustomize issues #3620 and #4752: it
/// drops the patch's ports). kiln matches them by both keys, a missing protocol counting as
/// TCP (the server's default): 9090/TCP merges into the base's 9090, 8080/UDP is a new port.
#[test]
fn a_port_without_protocol_matches_tcp_where_kustomize_loses_ports() {
    let s = Sandbox::new();
    s.write("base.yaml", &DEPLOYMENT.replace("NAME", "mixed"));
    s.write(
        "patch.yaml",
        &pod_patch("containers:\n  - name: app\n    ports:\n      - {containerPort: 9090, protocol: TCP, name: prom}\n      - {containerPort: 8080, protocol: UDP, name: quic}")
            .replace("NAME", "mixed"),
    );
    s.write(
        "kiln.toml",
        "[project]\nname = \"smp\"\n[rule.base]\nkind = \"manifest\"\nsrcs = [\"base.yaml\"]\n[rule.patched]\nkind = \"overlay\"\ndeps = [\"base\"]\nsrcs = [\"patch.yaml\"]\n",
    );
    s.build_ok(&[]);
    let obj = parse(&s.cat(
        "patched",
        "objects/_cluster/Deployment.apps/mixed.yaml",
        &[],
    ));
    let ports: Vec<String> = obj["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p["containerPort"], p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, ["8080/quic", "8080/http", "9090/prom"]);
}

/// The checked-in merge table is what `scripts/gen-merge-keys` makes of the Kubernetes source's
/// OpenAPI spec (which `scripts/test-cluster build` unpacks next to the binaries it builds).
#[test]
fn the_merge_table_is_generated_from_the_openapi_spec() {
    let home = std::env::var("HOME").unwrap();
    let src = Path::new(&home).join(".cache/kiln/test-cluster/src");
    let spec = std::fs::read_dir(&src)
        .ok()
        .and_then(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("api/openapi-spec/swagger.json"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "no Kubernetes source under {}: run scripts/test-cluster build",
                src.display()
            )
        });
    let out = tempfile::tempdir().unwrap().keep().join("merge_keys.tsv");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join("scripts/gen-merge-keys"))
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(root.join("rules/src/strategic/merge_keys.tsv")).unwrap(),
        "rules/src/strategic/merge_keys.tsv is stale: run scripts/gen-merge-keys"
    );
}
