#!/usr/bin/env bash
# Apply with health gates on a real node: a set of N Deployments (default 20, one busybox pod
# each with an HTTP readiness probe), `kiln apply` against `kubectl apply --server-side`
# followed by `kubectl rollout status` for each Deployment, alternating, each into a fresh
# namespace. Prints wall time and API requests per round: kiln's from its `--json` report
# (watches, not polls), kubectl's counted from its `-v=6` request log.
#
# Usage: benches/rollouts.sh KUBECONFIG [N] [ROUNDS]
#   (a test cluster with a node: scripts/test-cluster start DIR --node)
set -euo pipefail
kc=${1:?usage: benches/rollouts.sh KUBECONFIG [N] [ROUNDS]}
n=${2:-20}
rounds=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
kiln=${CARGO_TARGET_DIR:-$root/target}/release/kiln
export KUBECONFIG=$kc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KILN_STORE=$work/store KILN_NO_PROGRESS=1

# deployments NS: N Deployments in namespace NS, as YAML.
deployments() {
  python3 - "$n" "$1" <<'PY'
import sys
n, ns = int(sys.argv[1]), sys.argv[2]
print(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---")
for i in range(n):
    print(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{i}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web-{i}}}}}
  template:
    metadata: {{labels: {{app: web-{i}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: kiln.local/busybox:1
        imagePullPolicy: Never
        command: [httpd, -f, -p, "8080", -h, /www]
        readinessProbe: {{periodSeconds: 1, httpGet: {{path: /, port: 8080}}}}
---""")
PY
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

echo "Apply of $n Deployments with health gates on the test node (wall ms; API requests)"
echo "| round | kiln apply | kiln requests | kubectl apply + rollout status | kubectl requests |"
echo "|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  ns=bench-kiln-$round-$$
  mkdir -p "$work/p$round"
  deployments "$ns" > "$work/p$round/set.yaml"
  printf '[project]\nname = "%s"\n[rule.set]\nkind = "manifest"\nsrcs = ["set.yaml"]\n' "$ns" > "$work/p$round/kiln.toml"
  "$kiln" build -q "$work/p$round" >/dev/null
  start=$(date +%s%N)
  "$kiln" apply --yes --json "$work/p$round" --kubeconfig "$kc" > "$work/kiln.json" 2>/dev/null
  kiln_ms=$(ms_since "$start")
  kiln_requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["applied"]["requests"])' "$work/kiln.json")

  kns=bench-kubectl-$round-$$
  deployments "$kns" > "$work/k$round.yaml"
  start=$(date +%s%N)
  {
    kubectl apply --server-side -f "$work/k$round.yaml" -v=6
    for i in $(seq 0 $((n - 1))); do
      kubectl rollout status -n "$kns" "deployment/web-$i" --timeout=300s -v=6
    done
  } > "$work/kubectl.log" 2>&1
  kubectl_ms=$(ms_since "$start")
  kubectl_requests=$(grep -cE '(GET|POST|PATCH|PUT|DELETE) https?://' "$work/kubectl.log" || true)
  echo "| $round | $kiln_ms | $kiln_requests | $kubectl_ms | $kubectl_requests |"
  # The next round starts on an idle node: the pods of this one are gone.
  kubectl delete namespace "$ns" "$kns" --wait=true >/dev/null
done
