#!/usr/bin/env bash
# The trust boundary's bounds (issue 31), measured on this machine and printed as Markdown:
#   tiny files   one exec rule whose $out holds N tiny files (default 200,000): end to end, and
#                the rule alone (its command moves ready-made files into $out, so what remains
#                is kiln's: listing, reading, hashing, archiving; the build directory's removal
#                follows it). Yardstick: tar | zstd -3 -T2 of the same tree.
#   entry limit  `kiln store path` of an artifact whose archive holds 1,000,001 entries (one over
#                the limit): how long until it is refused, and what it leaves behind.
#   4 GB pull    peak RSS of `kiln cache pull --all` taking a 4 GiB artifact from
#                `kiln cache serve` (target <= 128 MiB), and the server's.
#   8 uploads    peak RSS of `kiln cache serve` while 8 clients PUT a 1 GB archive at once
#                (target <= 256 MiB). The 8 bodies are one archive, uploaded 8 times
#                concurrently into an empty cache: each streams to its own temporary file and
#                is checked from disk, then the first is stored and the others compared with it.
#
# Each measured command runs on a fresh ext4 file system (as root: a loop-mounted image), so
# none pays for another's deletions (see benches/ingest.sh).
#
# Usage: benches/bounds.sh [--files N] [--rounds R] [--pull-gib G] [--upload-mb M] [--skip-big]
set -euo pipefail
cd "$(dirname "$0")/.."

files=200000 rounds=3 pull_gib=4 upload_mb=1000 skip_big=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --pull-gib) pull_gib=$2; shift 2 ;;
    --upload-mb) upload_mb=$2; shift 2 ;;
    --skip-big) skip_big=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need=()
command -v zstd >/dev/null || need+=(zstd)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --locked --bin kiln >&2
kiln=$PWD/target/release/kiln
export KILN_NO_PROGRESS=1

work=$(mktemp -d /var/tmp/kiln-bounds.XXXXXX)
fs=$work/fs
mkdir -p "$fs"
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if mountpoint -q "$fs"; then umount "$fs"; fi
  rm -rf "$work"
}
trap cleanup EXIT

fresh_fs=0
fs_gib=4
mkfs_at() {
  truncate -s 0 "$work/fs.img" && truncate -s $((fs_gib << 30)) "$work/fs.img" &&
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.img" &&
    mount -o loop "$work/fs.img" "$fs"
}
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && mkfs_at; then
  umount "$fs"
  fresh_fs=1
else
  echo "warning: no fresh file system per command (needs root and loop mounts)" >&2
fi
new_fs() {
  if [ "$fresh_fs" = 1 ]; then
    if mountpoint -q "$fs"; then umount "$fs"; fi
    mkfs_at
  else
    rm -rf "${fs:?}"/* && mkdir -p "$fs"
  fi
}

# exec_project DIR NAME COMMAND: a project of one exec rule running the shell line COMMAND.
exec_project() {
  mkdir -p "$1"
  printf '[project]\nname = "bounds-%s"\n\n[rule.%s]\nkind = "exec"\nrealize = false\ncommand = ["sh", "-c", "%s"]\n' \
    "$2" "$2" "$3" >"$1/kiln.toml"
}

stats() { # min median max of the numbers given
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%s %s %s\n", a[1], a[int((NR+1)/2)], a[NR]}'
}

# --- tiny files -------------------------------------------------------------------------------
# N files of 8 to 12 bytes, 1,000 per directory.
make_tiny() {
  python3 - "$1" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, "f%d" % (i % 1000)), "w") as f:
        f.write("k%d: v\n" % i)
EOF
}
exec_project "$work/tiny" tiny "mv $fs/tiny/* \$out/"
tiny_total=() tiny_rule=() tiny_rss=() yard=()
for _ in $(seq 1 "$rounds"); do
  new_fs && mkdir "$fs/tiny" && make_tiny "$fs/tiny" && sync
  /usr/bin/time -o "$work/time.out" -f "%e %M" env KILN_STORE="$fs/store" \
    "$kiln" build "$work/tiny" --unsandboxed --json >"$work/report.json" 2>"$work/run.log" ||
    { cat "$work/run.log" >&2; exit 1; }
  read -r t m <"$work/time.out"
  tiny_total+=("$t") tiny_rss+=("$m")
  tiny_rule+=("$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["rules"][0]["duration_ms"] / 1000))' "$work/report.json")")
  new_fs && mkdir "$fs/tiny" && make_tiny "$fs/tiny" && sync
  /usr/bin/time -o "$work/time.out" -f "%e %M" sh -c "tar -C '$fs/tiny' -cf - . | zstd -3 -T2 -q -o '$fs/yard.tar.zst' -f"
  read -r t _ <"$work/time.out"
  yard+=("$t")
done

# --- entry limit ------------------------------------------------------------------------------
new_fs
exec_project "$work/one" one "echo x > \$out/f"
KILN_STORE="$fs/store" "$kiln" build "$work/one" --quiet
object=$(find "$fs/store/objects" -name '*.tar.zst' | head -1)
python3 - "$object.tar" <<'EOF'
import sys, tarfile, io
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for i in range(1_000_001):
        info = tarfile.TarInfo("d%d/f%d" % (i // 1000, i % 1000))
        t.addfile(info, io.BytesIO(b""))
EOF
zstd -1 -q -f --rm "$object.tar" -o "$object"
sync
count_left() { find "$fs/store/tmp" "$fs/store/trees" -mindepth 1 -not -type d 2>/dev/null | wc -l; }
left_before=$(count_left)
start=$(date +%s.%N)
if KILN_STORE="$fs/store" "$kiln" store path one "$work/one" >"$work/run.log" 2>&1; then
  echo "store path served an archive over the entry limit" >&2; exit 1
fi
limit_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
limit_msg=$(grep -o 'more than [0-9]* entries' "$work/run.log" | head -1)
left=$(( $(count_left) - left_before ))

echo "## The trust boundary's bounds ($(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), at $(git rev-parse --short HEAD))"
echo
echo "### Many tiny files in one \$out"
echo
echo "$files files of 8 to 12 bytes (1,000 per directory), $rounds rounds," \
  "$([ "$fresh_fs" = 1 ] && echo "each on a fresh ext4 file system" || echo "all on one file system")."
echo
echo "| path | min s | median s | max s | files/s (median) | peak RSS (max) |"
echo "|---|---:|---:|---:|---:|---:|"
row() { # name, peak KiB or -, seconds...
  local name=$1 peak=$2; shift 2
  read -r lo med hi < <(stats "$@")
  rate=$(awk -v n="$files" -v t="$med" 'BEGIN {printf "%.0f", n / t}')
  echo "| $name | $lo | $med | $hi | $rate | $peak |"
}
row "tar \\| zstd -3 -T2 (yardstick)" "-" "${yard[@]}"
read -r _ _ mx < <(stats "${tiny_rss[@]}")
row "kiln: the rule (listing, reading, hashing, archiving, storing)" "-" "${tiny_rule[@]}"
row "kiln build, end to end (with the build directory's removal)" "$((mx / 1024)) MiB" "${tiny_total[@]}"
echo
echo "### An archive over the entry limit"
echo
echo "\`kiln store path\` of an artifact whose archive holds 1,000,001 empty files: refused in ${limit_s} s" \
  "(\"${limit_msg}\"), leaving ${left} files under the store's tmp/ and trees/."

[ "$skip_big" = 1 ] && exit 0

# --- 4 GB pull --------------------------------------------------------------------------------
# wait_for_server LOG: the URL `kiln cache serve` prints.
start_server() {
  "$kiln" cache serve --listen 127.0.0.1:0 "$@" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://[0-9.:]*' "$work/server.log" | head -1 || true)
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  cat "$work/server.log" >&2
  exit 1
}
stop_server() {
  server_rss=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
  kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=
}

fs_gib=$(( pull_gib * 3 + 4 ))
new_fs
big_limit=$(( (pull_gib + 1) << 30 ))
exec_project "$work/big" big "head -c $(( pull_gib << 30 )) /dev/urandom > \$out/blob"
KILN_STORE="$fs/store" KILN_MAX_ARTIFACT_BYTES=$big_limit \
  "$kiln" build "$work/big" --unsandboxed --quiet --cache "file://$fs/cache" --push 2>>"$work/run.log"
rm -rf "$fs/store"
start_server --dir "$fs/cache"
/usr/bin/time -o "$work/time.out" -f "%e %M" env KILN_STORE="$fs/pulled" KILN_MAX_ARTIFACT_BYTES=$big_limit \
  "$kiln" cache pull --all "$work/big" --cache "$url" --cache-timeout 600 >"$work/run.log" 2>&1 ||
  { cat "$work/run.log" >&2; exit 1; }
read -r pull_t pull_m <"$work/time.out"
stop_server
pulled=$(find "$fs/pulled/objects" -name '*.tar.zst' -size +1G | wc -l)

# --- 8 concurrent uploads ---------------------------------------------------------------------
fs_gib=$(( upload_mb * 10 / 1000 + 4 ))
new_fs
exec_project "$work/up" up "head -c $(( upload_mb * 1000000 )) /dev/urandom > \$out/blob"
KILN_STORE="$fs/store" "$kiln" build "$work/up" --unsandboxed --quiet --cache "file://$fs/source" --push 2>>"$work/run.log"
archive=$(find "$fs/source/cas" -name '*.tar.zst' | head -1)
key=cas/$(basename "$archive")
echo "push-token" >"$work/token"
start_server --dir "$fs/cache" --token-file "$work/token"
codes=()
wait_start=$(date +%s.%N)
for i in $(seq 1 8); do
  curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer push-token" \
    -T "$archive" "$url/$key" >"$work/code.$i" &
done
for j in $(jobs -p); do [ "$j" = "$server_pid" ] || wait "$j"; done
up_s=$(awk -v a="$wait_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
for i in $(seq 1 8); do codes+=("$(cat "$work/code.$i")"); done
stop_server
upload_rss=$server_rss

echo
echo "### Memory bounds of the cache"
echo
echo "| what | target | peak RSS | time | result |"
echo "|---|---:|---:|---:|---|"
echo "| \`kiln cache pull --all\` of one $pull_gib GiB artifact from \`kiln cache serve\` | <= 128 MiB | $((pull_m / 1024)) MiB | ${pull_t} s | $pulled archive over 1 GB stored |"
echo "| \`kiln cache serve\` while 8 clients PUT one $upload_mb MB archive at once | <= 256 MiB | $((upload_rss / 1024)) MiB | ${up_s} s | HTTP ${codes[*]} |"
