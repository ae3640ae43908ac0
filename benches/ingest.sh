#!/usr/bin/env bash
# Ingest of big artifacts, end to end through rules, against the machine's own yardsticks
# (issue 17). Alternates, round by round:
#   b3sum           hashing the input files (Debian's b3sum)
#   tar | zstd -3   archiving and compressing them with two threads
#   cp + tar | zstd the exec rule's work done by hand: the files copied to a directory, which
#                   is then archived and compressed
#   kiln exec       one `exec` rule copying the files to $out (sources shown in place, command
#                   run, $out streamed into the store)
#   kiln link       one `exec` rule hard-linking them into $out (kiln's ingest alone)
#   kiln configmap  one `configmap` rule per file
#
# Each measured command writes to a file system made for it (a fresh ext4 image, loop-mounted;
# as root), so that none pays for the deletions of another: ext4 skips an inode freed within
# the last 60 s (360 s while its table block is dirty) when it allocates one, scanning past
# every such inode, and the rounds delete thousands of files (stores, build directories). On
# this machine a cold build of 1,024 configmaps took 2.3 s right after such deletions and
# 1.45 s on a fresh file system. Without root (no loop mounts) the bench writes under its
# work directory, with a warning.
# and then one `exec` rule writing a large artifact from outside the project (--unsandboxed,
# no sources), for the peak RSS of a multi-GB artifact.
#
# Usage: benches/ingest.sh [--files N] [--file-bytes B] [--rounds R] [--big-gib G]
# Defaults: 1,024 files of 1 MB (1.024 GB; a ConfigMap holds at most 1 MiB), 3 rounds, a 4 GiB
# artifact. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

files=1024 file_bytes=1000000 rounds=3 big_gib=4
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --file-bytes) file_bytes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --big-gib) big_gib=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need=()
command -v b3sum >/dev/null || need+=(b3sum)
command -v zstd >/dev/null || need+=(zstd)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --locked --bin kiln >&2
kiln=$PWD/target/release/kiln

work=$(mktemp -d /var/tmp/kiln-ingest.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data"

# YAML-like files, each different, in the style of benches/build.rs's store ingest (so the two
# benches' figures compare): a list of items whose names count up.
python3 - "$data" "$files" "$file_bytes" <<'EOF'
import os, sys
out, n, size_each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for f in range(n):
    parts, size, i = [], 0, 0
    while size < size_each:
        line = ("- name: item-%d-%d\n  image: registry.example/app:%d\n  replicas: %d\n"
                "  labels: {tier: web, team: t%d}\n" % (f, i, i % 97, i % 7, i % 13))
        parts.append(line)
        size += len(line)
        i += 1
    with open(os.path.join(out, "f%04d.yaml" % f), "w") as fh:
        fh.write("".join(parts)[:size_each])
EOF
bytes=$(du -sb "$data" | cut -f1)

# exec_project DIR NAME COMMAND [SRCS]: a project of one exec rule running COMMAND (a shell
# line, taken literally: `$out` is the rule's).
exec_project() {
  mkdir -p "$1"
  {
    printf '[project]\nname = "ingest-%s"\n\n[rule.%s]\nkind = "exec"\nrealize = false\n' "$2" "$2"
    if [ -n "${4:-}" ]; then printf 'srcs = %s\n' "$4"; fi
    printf 'command = ["sh", "-c", "%s"]\n' "$3"
  } >"$1/kiln.toml"
}

# The exec project: its sources are the files (a copy: sources must lie inside the project);
# the command copies them to $out.
exec_project "$work/exec" copy 'cp -r in/data/. $out/' '["data/*.yaml"]'
cp -r "$data" "$work/exec/data"

# The ingest-only project: the command hard-links the files into $out (--unsandboxed, from
# outside the project; a copy of them made on the fresh file system before the clock starts,
# since links do not cross file systems), so what is measured is kiln's own part: $out
# hashed, archived, compressed and stored, without the page-cache writes of copying 1 GB.
exec_project "$work/link" link "cp -al $work/fs/linked/. \$out/"

# The configmap project: one rule per file.
mkdir -p "$work/cm"
cp -r "$data" "$work/cm/data"
{
  echo '[project]'
  echo 'name = "ingest-configmaps"'
  for f in "$data"/*.yaml; do
    n=$(basename "$f" .yaml)
    printf '\n[rule.%s]\nkind = "configmap"\nname = "%s"\nnamespace = "bench"\nsrcs = ["data/%s.yaml"]\n' "$n" "$n" "$n"
  done
} >"$work/cm/kiln.toml"

# The file system each measured command writes to: $fs, fresh for each (see the top).
fs=$work/fs
mkdir -p "$fs"
fresh_fs=0
fs_gib=4
# new_fs: a fresh ext4 file system of $fs_gib GiB at $fs, its inode tables and journal written
# now rather than by the kernel's lazy init in the background of the measurement.
mkfs_at() {
  truncate -s 0 "$work/fs.img" && truncate -s $((fs_gib << 30)) "$work/fs.img" &&
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.img" &&
    mount -o loop "$work/fs.img" "$fs"
}
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && mkfs_at; then
  umount "$fs"
  fresh_fs=1
else
  echo "warning: no fresh file system per command (needs root and loop mounts); figures include the cost of earlier deletions" >&2
fi
new_fs() {
  if [ "$fresh_fs" = 1 ]; then
    if mountpoint -q "$fs"; then umount "$fs"; fi
    mkfs_at
  else
    rm -rf "${fs:?}"/* && mkdir -p "$fs"
  fi
}
trap 'if mountpoint -q "$fs"; then umount "$fs"; fi; rm -rf "$work"' EXIT

# time a command; prints "seconds peak_kib". Each starts on a fresh file system ($fs) with no
# dirty pages left by the one before (the exec rule writes 1 GB into the page cache), so none
# pays for another's writeback or deletions.
measure() {
  new_fs
  if [ -n "${setup:-}" ]; then eval "$setup"; fi
  sync
  if ! /usr/bin/time -o "$work/time.out" -f "%e %M" "$@" >"$work/run.log" 2>&1; then
    echo "failed: $*" >&2
    cat "$work/run.log" >&2
    exit 1
  fi
  tail -1 "$work/time.out"
}

declare -A wall rss
record() { wall[$1]="${wall[$1]:-} $2"; rss[$1]="${rss[$1]:-} $3"; }

for r in $(seq 1 "$rounds"); do
  read -r t m < <(measure b3sum --num-threads 2 "$data"/*.yaml)
  record b3sum "$t" "$m"
  read -r t m < <(measure sh -c "tar -C '$data' -cf - . | zstd -3 -T2 -q -o '$fs/yard.tar.zst' -f")
  record tarzstd "$t" "$m"
  read -r t m < <(measure sh -c "mkdir '$fs/out' && cp -r '$data/.' '$fs/out/' && tar -C '$fs/out' -cf - . | zstd -3 -T2 -q -o '$fs/yard.tar.zst' -f")
  record cptarzstd "$t" "$m"
  read -r t m < <(measure env KILN_STORE="$fs/store" KILN_NO_PROGRESS=1 "$kiln" build "$work/exec" --quiet)
  record exec "$t" "$m"
  setup="cp -r '$data' '$fs/linked'"
  read -r t m < <(measure env KILN_STORE="$fs/store" KILN_NO_PROGRESS=1 "$kiln" build "$work/link" --unsandboxed --quiet)
  setup=
  record link "$t" "$m"
  read -r t m < <(measure env KILN_STORE="$fs/store" KILN_NO_PROGRESS=1 "$kiln" build "$work/cm" --quiet)
  record configmap "$t" "$m"
done

# The big artifact: generated by the command from the data files (no sources, so only the
# output side is measured), past the default 1 GiB limit.
copies=$(( (big_gib << 30) / bytes ))
big_bytes=$(( copies * bytes ))
exec_project "$work/big" big \
  "for i in \$(seq 1 $copies); do mkdir -p \$out/\$i && cp -r $data/. \$out/\$i/; done"
# The same artifact hard-linked into $out from a copy of the data on the fresh file system
# (made before the clock starts): kiln's ingest of a multi-GB artifact, alone.
exec_project "$work/big-link" big \
  "for i in \$(seq 1 $copies); do mkdir -p \$out/\$i && cp -al $fs/linked/. \$out/\$i/; done"
fs_gib=$(( big_gib * 2 + 4 ))
measure_big() {
  measure env KILN_STORE="$fs/store" KILN_NO_PROGRESS=1 \
    KILN_MAX_ARTIFACT_BYTES=$(( (big_gib + 1) << 30 )) "$kiln" build "$1" --unsandboxed --quiet
}
read -r big_t big_m < <(measure_big "$work/big")
big_store=$(du -sb "$fs/store/objects" | cut -f1)
setup="cp -r '$data' '$fs/linked'"
read -r bigl_t bigl_m < <(measure_big "$work/big-link")
setup=

stats() { # min median max of the numbers given
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%s %s %s\n", a[1], a[int((NR+1)/2)], a[NR]}'
}

echo "## Ingest of big artifacts ($(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "$files files of $file_bytes bytes ($bytes bytes in all), $rounds rounds, tools alternating round by round," \
  "$([ "$fresh_fs" = 1 ] && echo "each on a fresh ext4 file system" || echo "all on one file system (no root: no fresh file system each)")."
echo
echo "| path | min s | median s | max s | GB/s (median) | peak RSS (max) |"
echo "|---|---:|---:|---:|---:|---:|"
for k in b3sum tarzstd cptarzstd exec link configmap; do
  # shellcheck disable=SC2086
  read -r lo med hi < <(stats ${wall[$k]})
  # shellcheck disable=SC2086
  read -r _ _ mx < <(stats ${rss[$k]})
  case $k in
    b3sum) name="b3sum (yardstick)" ;;
    tarzstd) name="tar \\| zstd -3 -T2 (yardstick)" ;;
    cptarzstd) name="cp -r, then tar \\| zstd -3 -T2 (yardstick: the exec rule's work by hand)" ;;
    exec) name="kiln: one exec rule copying its sources" ;;
    link) name="kiln: one exec rule hard-linking them into \$out (ingest alone)" ;;
    configmap) name="kiln: $files configmap rules" ;;
  esac
  gbs=$(awk -v b="$bytes" -v t="$med" 'BEGIN {printf "%.2f", b / t / 1e9}')
  echo "| $name | $lo | $med | $hi | $gbs | $((mx / 1024)) MiB |"
done
echo
gbs=$(awk -v b="$big_bytes" -v t="$big_t" 'BEGIN {printf "%.2f", b / t / 1e9}')
echo "One exec rule writing $big_bytes bytes (generated, no sources): $big_t s ($gbs GB/s end to end," \
  "including the command's own copying), peak RSS $((big_m / 1024)) MiB, archive $big_store bytes."
echo
gbs=$(awk -v b="$big_bytes" -v t="$bigl_t" 'BEGIN {printf "%.2f", b / t / 1e9}')
echo "The same $big_bytes bytes hard-linked into \$out (ingest alone): $bigl_t s ($gbs GB/s end to end)," \
  "peak RSS $((bigl_m / 1024)) MiB."
