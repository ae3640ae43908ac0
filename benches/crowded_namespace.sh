#!/usr/bin/env bash
# The cost of a small set in a crowded namespace: N unrelated ConfigMaps (default 30,000) share
# the namespace with 5 of the set's. Prints, per round, the three ways to read 5 members (a
# consistent LIST by label, a LIST from the watch cache, a GET each) and `kiln plan` against
# `kubectl diff --server-side` of 5 ConfigMaps there.
#
# Usage: benches/crowded_namespace.sh KUBECONFIG [N]   (a test cluster: scripts/test-cluster start DIR)
# Builds kiln in release mode. Loading N objects takes about 160 s for 30,000; they are kept.
set -euo pipefail
kc=${1:?usage: benches/crowded_namespace.sh KUBECONFIG [N]}
n=${2:-30000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
kiln=${CARGO_TARGET_DIR:-$root/target}/release/kiln
export KUBECONFIG=$kc
ns=crowded-bench
kubectl create namespace $ns >/dev/null 2>&1 || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$(kubectl get cm -n $ns --no-headers 2>/dev/null | wc -l)" -lt "$n" ]; then
  python3 - "$n" > "$work/noise.yaml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: noise-{i}}}\ndata: {{v: '1'}}\n---")
for i in range(5):
    print(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: member-{i}, labels: {{set: mine}}}}\ndata: {{v: '1'}}\n---")
PY
  kubectl apply --server-side -n $ns -f "$work/noise.yaml" >/dev/null
fi
mkdir -p "$work/p"
for i in 0 1 2 3 4; do printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kiln-%s, namespace: %s}\ndata: {v: "1"}\n---\n' $i $ns; done > "$work/p/cms.yaml"
for i in 0 1 2 3 4; do printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kubectl-%s, namespace: %s}\ndata: {v: "1"}\n---\n' $i $ns; done > "$work/k.yaml"
printf '[project]\nname = "crowded"\n[rule.cms]\nkind = "manifest"\nsrcs = ["cms.yaml"]\n' > "$work/p/kiln.toml"
export KILN_STORE=$work/store KILN_NO_PROGRESS=1
"$kiln" apply -q --yes "$work/p" --kubeconfig "$kc"
kubectl apply --server-side -f "$work/k.yaml" >/dev/null
rv=$(kubectl get cm -n $ns member-0 -o jsonpath='{.metadata.resourceVersion}')
latency() { kubectl get --raw "$1" -v=6 2>&1 >/dev/null | grep -o 'in [0-9]* milliseconds' | grep -o '[0-9]*'; }
ms() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; echo $(( ($(date +%s%N) - s) / 1000000 )); }
echo "5 members among $n unrelated ConfigMaps in one namespace (milliseconds)"
echo "| round | consistent LIST | watch-cache LIST | 5 GETs | kiln plan | kubectl diff |"
echo "|---|---|---|---|---|---|"
for round in 1 2 3 4 5; do
  list=$(latency "/api/v1/namespaces/$ns/configmaps?labelSelector=set%3Dmine")
  cache=$(latency "/api/v1/namespaces/$ns/configmaps?labelSelector=set%3Dmine&resourceVersion=$rv&resourceVersionMatch=NotOlderThan")
  gets=0
  for i in 0 1 2 3 4; do gets=$((gets + $(latency "/api/v1/namespaces/$ns/configmaps/member-$i"))); done
  plan=$(ms "$kiln" plan -q --detailed-exitcode "$work/p" --kubeconfig "$kc")
  diff=$(ms kubectl diff --server-side -f "$work/k.yaml")
  echo "| $round | $list | $cache | $gets | $plan | $diff |"
done
