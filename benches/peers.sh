#!/usr/bin/env bash
# kiln against its peers in one run (benches/peers.rs): installs what it compares with from the
# machine's own package sources (Nix 2.8's nix-instantiate from Debian's nix-bin, kubectl, GNU
# time for peak RSS), then runs the bench, which writes BENCHMARKS.md. Arguments go to the bench:
#   benches/peers.sh                    # 1k, 10k and 100k rules, 5 rounds, realize rows
#   benches/peers.sh 1000 10000 1000000 --rounds 3 --no-realize
# The realize rows use KILN_TEST_KUBECONFIG if set, else start the test cluster for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

need=()
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v kubectl >/dev/null || need+=(kubernetes-client)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo bench --locked --bench peers -- "$@"
