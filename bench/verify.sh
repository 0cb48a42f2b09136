#!/usr/bin/env bash
# Verify benchmark: `pgshift verify` with checksums of a pgbench database, against the read limit:
# both servers streaming the same tables with COPY ... TO STDOUT into /dev/null at the same time.
# pgshift streams a light pgbench load (100 tps) during its comparison, as in production.
#
# Usage: bench/verify.sh [SCALE]   (default 50: 5 million pgbench_accounts rows, ~750 MB).
# Prints the wall time of each, their ratio (read-limit time / verify time; 1.0 = as fast as
# reading both sides), and the CPU seconds of the source and target clusters (bench/cpu.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scale=${1:-50}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
[[ "$scale" =~ ^[0-9]+$ && "$scale" -ge 1 ]] || { echo "SCALE must be a positive number, got '$scale'"; exit 1; }

PAIR_SOURCE_SETTINGS=(max_wal_size=8GB checkpoint_timeout=1h shared_buffers=1GB)
PAIR_TARGET_SETTINGS=(max_wal_size=8GB checkpoint_timeout=1h shared_buffers=1GB)
source "$root/scripts/cluster-pair.sh"
daemon=""; load=""
on_exit '[ -n "$load" ] && kill "$load" 2>/dev/null; [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
now() { date +%s.%N; }

echo "== pgbench -i -s $scale on both servers (identical deterministic data)"
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1 &
"$pgbin/pgbench" -i -q -s "$scale" -d "$dst" >/dev/null 2>&1
wait
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"; psql_src "VACUUM ANALYZE"
psql_dst "VACUUM ANALYZE"
tables="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history"
rows=$(psql_src "SELECT count(*) FROM pgbench_accounts")
echo "   pgbench_accounts: $rows rows, $(psql_src "SELECT pg_size_pretty(pg_total_relation_size('pgbench_accounts'))")"

hz=$(getconf CLK_TCK)
src_pm=$(head -n 1 "$work/source/postmaster.pid")
dst_pm=$(head -n 1 "$work/target/postmaster.pid")
cpu() { "$root/bench/cpu.sh" ticks "$src_pm" "$dst_pm"; }
secs() { printf %.2f "$(echo "scale=4; $1 / $hz" | bc)"; }

# 1. The read limit: every table streamed out of both servers at once (warm caches: twice, the
# second run counts).
read_all() {
  for t in $tables; do
    "$pgbin/psql" -X -q -d "$src" -c "COPY $t TO STDOUT" >/dev/null &
    "$pgbin/psql" -X -q -d "$dst" -c "COPY $t TO STDOUT" >/dev/null &
  done
  wait
}
read_all
read -r -a c0 <<< "$(cpu)"; t0=$(now)
read_all
t_read=$(echo "$(now) - $t0" | bc)
read -r -a c1 <<< "$(cpu)"
read_src=$(secs $((c1[0] - c0[0]))); read_dst=$(secs $((c1[1] - c0[1])))

# 2. pgshift streaming a light load, then verify with checksums.
port=$(free_port)
cat > "$work/v.yaml" <<YAML
name: vb
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$port"}
log: {level: warn}
YAML
"$bin" run --config "$work/v.yaml" >>"$work/v.log" 2>&1 & daemon=$!
for _ in $(seq 1 200); do
  [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_vb'")" = "t" ] && break
  sleep 0.1
done
"$pgbin/pgbench" -n -c 2 -j 1 -T 600 -R 100 -d "$src" >/dev/null 2>&1 & load=$!
sleep 2
read -r -a c0 <<< "$(cpu)"; t0=$(now)
out=$("$bin" verify --wait --config "$work/v.yaml" | tail -1)
t_verify=$(echo "$(now) - $t0" | bc)
read -r -a c1 <<< "$(cpu)"
kill "$load"; wait "$load" 2>/dev/null || true; load=""
ver_src=$(secs $((c1[0] - c0[0]))); ver_dst=$(secs $((c1[1] - c0[1])))
state=$(echo "$out" | sed -nE 's/.*"state":"([a-z]+)".*/\1/p' | head -1)
[ "$state" = match ] || { echo "verify did not report match: $out"; exit 1; }

printf "\n| measure | wall s | source CPU s | target CPU s |\n|---|---|---|---|\n"
printf "| read limit: COPY TO /dev/null of every table, both servers at once | %.2f | %s | %s |\n" "$t_read" "$read_src" "$read_dst"
printf "| pgshift verify with checksums (streaming 100 tps meanwhile), result %s | %.2f | %s | %s |\n" "$state" "$t_verify" "$ver_src" "$ver_dst"
printf "\nratio (read-limit time / verify time): %.2f\n" "$(echo "scale=4; $t_read / $t_verify" | bc)"
