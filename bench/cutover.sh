#!/usr/bin/env bash
# Cutover benchmark: the write downtime of cutover and of rollback under a paced pgbench load.
#
# Two throwaway clusters hold the same pgbench database (pgbench -i on both, initial copy off);
# pgshift streams between them (apply.workers 4, cutover.verify counts, the read_only fence). Each
# round runs pgbench at RATE transactions per second on the current primary, starts a cutover (or a
# rollback) after 3 s of load, and records the write downtime pgshift reports (from the moment the
# fence starts going up to the new primary being in sync with the reverse stream set up) and each
# phase's duration. The load's clients stop at the fence's error, as an application's would until
# it reconnects to the new primary; the next round's load runs on the new primary.
# Printed: every run, then p50 and max per kind. Goal (issue 10): max < 1 s.
#
# Usage: bench/cutover.sh [RUNS] [RATE]   (defaults 5, 1000). Needs a built pgshift.
# Environment: SCALE=10 (pgbench scale), VERIFY=counts (cutover.verify: none | counts | checksums).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
rate=${2:-1000}
scale=${SCALE:-10}
verify=${VERIFY:-counts}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || { echo "RUNS must be a number >= 1, got '$runs'"; exit 1; }
[[ "$rate" =~ ^[0-9]+$ ]] || { echo "RATE must be a number, got '$rate'"; exit 1; }

source "$root/scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
for side in "$src" "$dst"; do
  "$pgbin/pgbench" -i -q -s "$scale" -d "$side" >/dev/null 2>&1
  "$pgbin/psql" -X -q -d "$side" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
done
ctl_port=$(free_port)
api="http://127.0.0.1:$ctl_port"
cat > "$work/pgshift.yaml" <<YAML
name: bench
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
apply: {workers: 4}
control: {listen: "127.0.0.1:$ctl_port"}
cutover: {verify: $verify, timeout_seconds: 60}
log: {level: info}
YAML
"$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 &
daemon=$!
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] && break
  sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] || { tail -20 "$work/pgshift.log"; exit 1; }
echo "pgshift streaming; $runs cutover(s) and $runs rollback(s) under pgbench at $rate tps (scale $scale, verify $verify)"

declare -a cutover_d rollback_d
primary="$src"
for i in $(seq 1 "$runs"); do
  for kind in cutover rollback; do
    "$pgbin/pgbench" -n -c 4 -j 2 -T 8 -R "$rate" -d "$primary" >"$work/pgbench-$kind-$i.log" 2>&1 &
    load=$!
    sleep 3
    json=$("$bin" "$kind" --wait --url "$api" | tail -1)
    wait "$load" || true # its clients stop at the fence
    line=$(echo "$json" | /usr/bin/python3 -c '
import json, sys
o = json.load(sys.stdin)
if o["phase"] != "done":
    print("FAILED", o["phase"], o.get("error")); sys.exit(1)
print("%.3f %s" % (o["write_downtime_seconds"], " ".join("%s=%.0fms" % (p["phase"], p["seconds"] * 1000)
      for p in o["phases"] if p["phase"] != "checking")))') || { echo "$kind $i: $line"; tail -20 "$work/pgshift.log"; exit 1; }
    tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$work/pgbench-$kind-$i.log" | head -1)
    printf "%-8s run %d: write downtime %s s   (%s; load before it: %s tps)\n" "$kind" "$i" "${line%% *}" \
      "${line#* }" "${tps:-?}"
    if [ "$kind" = cutover ]; then cutover_d+=("${line%% *}"); primary="$dst"; else rollback_d+=("${line%% *}"); primary="$src"; fi
  done
done

stats() { # name values...: p50 and max
  local name=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v n="$name" '{v[NR]=$1} END {
    p50 = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
    printf "%-8s write downtime over %d runs: p50 %.3f s, max %.3f s\n", n, NR, p50, v[NR] }'
}
echo
stats cutover "${cutover_d[@]}"
stats rollback "${rollback_d[@]}"
