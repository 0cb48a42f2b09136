#!/usr/bin/env bash
# Acceptance (cutover behind a pooler): a real PgBouncer (transaction pooling) sits in front of the
# primary; pgshift fences by command (PAUSE app on PgBouncer's console) and switches by command
# (repoint app at the new primary, RELOAD, RESUME app). pgbench clients write through PgBouncer
# during a cutover and a rollback and see zero errors: every transaction pgbench counts is one row on
# both servers, the tables are identical, and rows were written on the target while it was the
# primary. Their longest stall (the slowest transaction in pgbench's log) is printed, next to the
# write downtime pgshift reports for each operation.
# Usage: cutover_pgbouncer.sh PGSHIFT_BINARY
set -euo pipefail
command -v pgbouncer >/dev/null || { echo "pgbouncer not installed: skipped"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not installed: skipped"; exit 77; }
source "$(dirname "$0")/daemon-test.sh"
[ -x "$pgbin/pgbench" ] || { echo "pgbench not installed: skipped"; exit 77; }

# --- PgBouncer in front of the source: database app, admin user postgres, trust auth.
start_pgbouncer app "$src_port" "query_wait_timeout = 15
default_pool_size = 10"
app="host=127.0.0.1 port=$bouncer_port dbname=app user=postgres"
admin="$pgbin/psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $bouncer_port -U postgres -d pgbouncer"
[ "$("$pgbin/psql" -X -A -t -d "$app" -c "SELECT inet_server_port()")" = "$src_port" ] ||
  fail "app through PgBouncer does not reach the source: $(tail -5 "$bdir/pgbouncer.log")"

# --- The operator's three commands. Each logs its environment to commands.log.
cat > "$work/fence.sh" <<SH
#!/bin/sh
set -eu
echo "fence \$PGSHIFT_MIGRATION \$PGSHIFT_OPERATION old=\$PGSHIFT_OLD_PRIMARY new=\$PGSHIFT_NEW_PRIMARY old_conninfo=\$PGSHIFT_OLD_PRIMARY_CONNINFO new_conninfo=\$PGSHIFT_NEW_PRIMARY_CONNINFO" >> "$work/commands.log"
$admin -c "PAUSE app"
SH
# All or nothing: when repointing or RESUME fails, app points at the old primary again (still
# paused: pgshift aborts and its unfence_command resumes it there).
cat > "$work/switch.sh" <<SH
#!/bin/sh
set -eu
echo "switch \$PGSHIFT_MIGRATION \$PGSHIFT_OPERATION old=\$PGSHIFT_OLD_PRIMARY new=\$PGSHIFT_NEW_PRIMARY old_conninfo=\$PGSHIFT_OLD_PRIMARY_CONNINFO new_conninfo=\$PGSHIFT_NEW_PRIMARY_CONNINFO" >> "$work/commands.log"
port_of() {
  case "\$1" in
    source) echo $src_port ;;
    target) echo $dst_port ;;
    *) echo "unknown server '\$1'" >&2; return 1 ;;
  esac
}
new=\$(port_of "\$PGSHIFT_NEW_PRIMARY")
old=\$(port_of "\$PGSHIFT_OLD_PRIMARY")
repoint() {
  sed -i "s/^app = .*/app = host=127.0.0.1 port=\$1 dbname=postgres/" "$bdir/pgbouncer.ini" &&
    grep -q "^app = host=127.0.0.1 port=\$1 " "$bdir/pgbouncer.ini" && $admin -c "RELOAD"
}
repoint "\$new" || { repoint "\$old"; exit 1; }
$admin -c "RESUME app" || { repoint "\$old"; exit 1; }
echo "app -> \$PGSHIFT_NEW_PRIMARY (port \$new)"
SH
cat > "$work/unfence.sh" <<SH
#!/bin/sh
set -eu
echo "unfence \$PGSHIFT_MIGRATION \$PGSHIFT_OPERATION old=\$PGSHIFT_OLD_PRIMARY new=\$PGSHIFT_NEW_PRIMARY" >> "$work/commands.log"
$admin -c "RESUME app"
SH
chmod 755 "$work/fence.sh" "$work/switch.sh" "$work/unfence.sh"

# --- Schema on both sides (no initial copy): port records which server took the insert.
schema="CREATE TABLE tbl (id bigserial PRIMARY KEY, client int NOT NULL,
  ts timestamptz NOT NULL DEFAULT clock_timestamp(), port int NOT NULL DEFAULT inet_server_port())"
psql_src "$schema"
psql_dst "$schema"

# --- pgshift, connected directly to the clusters.
ctl_port=$(free_port)
api="http://127.0.0.1:$ctl_port"
cat > "$work/pgshift.yaml" <<YAML
name: bouncer
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$ctl_port"}
cutover:
  fence: command
  fence_command: "$work/fence.sh"
  unfence_command: "$work/unfence.sh"
  switch_command: "$work/switch.sh"
  timeout_seconds: 30
YAML
"$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!
wait_ready "$api" 30 "pgshift did not become ready"
direction() { curl -s "$api/v1/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["direction"])'; }
[ "$(direction)" = forward ] || fail "direction is $(direction) before the cutover, expected forward"

# --- Clients: 4 pgbench clients through PgBouncer, 200 inserts/s for 25 s, every transaction logged.
echo 'INSERT INTO tbl (client) VALUES (:client_id);' > "$work/insert.sql"
t_start=$(date +%s.%N)
"$pgbin/pgbench" -n -f "$work/insert.sql" -c 4 -j 2 --rate 200 -T 25 \
  -l --log-prefix="$work/pgbench_log" "$app" >"$work/pgbench.out" 2>&1 &
bench=$!
on_exit 'kill "$bench" 2>/dev/null'

# op KIND: runs `pgshift KIND --wait` (output in KIND.out); sets downtime from its last line.
op() {
  local code=0
  "$bin" "$1" --wait --config "$work/pgshift.yaml" >"$work/$1.out" 2>&1 || code=$?
  [ "$code" = 0 ] || { cat "$work/$1.out"; tail -5 "$bdir/pgbouncer.log"; fail "pgshift $1 --wait exited $code"; }
  downtime=$(python3 -c '
import json, sys
op = json.loads([l for l in open(sys.argv[1]) if l.strip()][-1])
assert op["phase"] == "done" and "write_downtime_seconds" in op, op
print("%.3f" % op["write_downtime_seconds"])' "$work/$1.out") ||
    { cat "$work/$1.out"; fail "the last line of pgshift $1 --wait is not phase done with write_downtime_seconds"; }
}
sleep 5
t_cutover=$(date +%s.%N)
op cutover; cutover_downtime=$downtime
t_cutover_done=$(date +%s.%N)
[ "$(direction)" = reverse ] || fail "direction is $(direction) after the cutover, expected reverse"
echo "ok: cutover done, write downtime $cutover_downtime s; direction reverse"
# took_writes PSQL PORT N: within 3 s the server on PORT holds more than N rows it inserted itself
# (clients write to it through PgBouncer).
took_writes() {
  for _ in $(seq 1 30); do
    [ "$($1 "SELECT count(*) FROM tbl WHERE port = $2")" -gt "$3" ] && return 0
    sleep 0.1
  done
  return 1
}
took_writes psql_dst "$dst_port" 0 || fail "3 s after the cutover no client write reached the target (port $dst_port) through PgBouncer"
sleep "$(awk -v t="$t_cutover_done" -v n="$(date +%s.%N)" 'BEGIN {d = t + 6 - n; printf "%.2f", (d > 0 ? d : 0)}')"
on_source=$(psql_src "SELECT count(*) FROM tbl WHERE port = $src_port")
t_rollback=$(date +%s.%N)
op rollback; rollback_downtime=$downtime
t_rollback_done=$(date +%s.%N)
[ "$(direction)" = forward ] || fail "direction is $(direction) after the rollback, expected forward"
echo "ok: rollback done, write downtime $rollback_downtime s; direction forward"
took_writes psql_src "$src_port" "$on_source" ||
  fail "3 s after the rollback no client write reached the source (port $src_port) through PgBouncer"

code=0; wait "$bench" || code=$?
bench=""
cat "$work/pgbench.out"
# --- 1. The clients saw no error.
[ "$code" = 0 ] || fail "pgbench exited $code (see its output above)"
! grep -qi -e "aborted" -e "error" "$work/pgbench.out" || fail "pgbench reports an error or an aborted client: $(grep -i -m3 -e aborted -e error "$work/pgbench.out")"
if grep -q "number of failed transactions" "$work/pgbench.out"; then
  grep -q "number of failed transactions: 0 " "$work/pgbench.out" || fail "pgbench: $(grep "number of failed transactions" "$work/pgbench.out")"
fi
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
[ -n "$processed" ] && [ "$processed" -gt 1000 ] || fail "pgbench processed '${processed}' transactions, expected well over 1000"
logged=$(cat "$work"/pgbench_log.* | wc -l)
[ "$logged" = "$processed" ] || fail "pgbench's log has $logged transactions, its summary $processed"
! awk '$3 !~ /^[0-9]+$/' "$work"/pgbench_log.* | grep -q . || fail "pgbench's log has failed or skipped transactions: $(awk '$3 !~ /^[0-9]+$/' "$work"/pgbench_log.* | head -3)"
echo "ok: pgbench: $processed transactions, 0 failed, no client aborted, exit 0"

# --- 2. Both servers hold exactly the rows pgbench committed, and the same ones.
count_src=""; count_dst=""
for _ in $(seq 1 100); do
  count_src=$(psql_src "SELECT count(*) FROM tbl"); count_dst=$(psql_dst "SELECT count(*) FROM tbl")
  [ "$count_src" = "$count_dst" ] && break
  sleep 0.2
done
[ "$count_src" = "$count_dst" ] || fail "the servers do not converge: source $count_src rows, target $count_dst rows"
[ "$count_src" = "$processed" ] || fail "both servers hold $count_src rows, pgbench committed $processed transactions"
digest="SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM tbl t"
[ "$(psql_src "$digest")" = "$(psql_dst "$digest")" ] || fail "the tables differ (md5 source $(psql_src "$digest"), target $(psql_dst "$digest"))"
echo "ok: source and target each hold the $processed rows pgbench committed, identical (md5 $(psql_src "$digest"))"

# --- 3. The clients went through both servers: the source, then the target while it was the
# primary, then the source again. Every row falls in one of these three id ranges (the sequence
# sync makes each new primary's ids continue after the old primary's).
where="SELECT count(*) FILTER (WHERE port = $src_port AND id < (SELECT min(id) FROM tbl WHERE port = $dst_port)) || ' ' ||
  count(*) FILTER (WHERE port = $dst_port) || ' ' ||
  count(*) FILTER (WHERE port = $src_port AND id > (SELECT max(id) FROM tbl WHERE port = $dst_port)) || ' ' ||
  count(*) FILTER (WHERE port NOT IN ($src_port, $dst_port)) FROM tbl"
read -r before on_target after elsewhere <<<"$(psql_dst "$where")"
[ "$on_target" -gt 0 ] || fail "no row was inserted on the target (port $dst_port): the clients never reached it after the cutover"
[ "$before" -gt 0 ] && [ "$after" -gt 0 ] ||
  fail "rows inserted on the source before the cutover: $before, after the rollback: $after (both must be > 0)"
[ "$elsewhere" = 0 ] || fail "$elsewhere row(s) were inserted on neither server's port"
[ $((before + on_target + after)) = "$processed" ] ||
  fail "ids interleave: $before rows from the source below the target's ids, $on_target from the target, $after from the source above them; $processed in all"
echo "ok: inserts went to the source ($before), then the target ($on_target), then the source again ($after)"

# --- 4. The commands saw which way each switch went.
expect_cmd() { grep -q "^$1" "$work/commands.log" || { cat "$work/commands.log"; fail "no command ran as '$1'"; }; }
expect_cmd "fence bouncer cutover old=source new=target old_conninfo=.*port=$src_port.* new_conninfo=.*port=$dst_port"
expect_cmd "switch bouncer cutover old=source new=target"
expect_cmd "fence bouncer rollback old=target new=source old_conninfo=.*port=$dst_port.* new_conninfo=.*port=$src_port"
expect_cmd "switch bouncer rollback old=target new=source"
! grep -q "^unfence" "$work/commands.log" || fail "unfence_command ran although nothing aborted"
[ "$(wc -l < "$work/commands.log")" = 4 ] || { cat "$work/commands.log"; fail "expected exactly 4 command runs"; }

# --- The clients' longest stall, from pgbench's per-transaction log (latency in µs, column 3;
# with --rate it counts from the scheduled start, so time spent queued in PgBouncer is included).
read -r stall_us stall_at <<<"$(cat "$work"/pgbench_log.* | sort -k3,3n | tail -1 | awk '{print $3, $5 "." sprintf("%06d", $6)}')"
slow_cutover=$(awk -v a="$t_cutover" -v b="$t_cutover_done" '($5 + $6 / 1e6) >= a && ($5 + $6 / 1e6 - $3 / 1e6) <= b && $3 > m {m = $3} END {print m + 0}' "$work"/pgbench_log.*)
slow_rollback=$(awk -v a="$t_rollback" -v b="$t_rollback_done" '($5 + $6 / 1e6) >= a && ($5 + $6 / 1e6 - $3 / 1e6) <= b && $3 > m {m = $3} END {print m + 0}' "$work"/pgbench_log.*)
echo "pgbench through PgBouncer: longest transaction (the stall) $(awk -v u="$stall_us" 'BEGIN {printf "%.3f", u / 1e6}') s, ended $(awk -v t="$stall_at" -v s="$t_start" 'BEGIN {printf "%.1f", t - s}') s into the run"
echo "  slowest transaction across the cutover $(awk -v u="$slow_cutover" 'BEGIN {printf "%.3f", u / 1e6}') s (write downtime reported: $cutover_downtime s)"
echo "  slowest transaction across the rollback $(awk -v u="$slow_rollback" 'BEGIN {printf "%.3f", u / 1e6}') s (write downtime reported: $rollback_downtime s)"

kill -TERM "$daemon"; wait "$daemon" || fail "pgshift did not exit 0 on SIGTERM"; daemon=""
echo "ok: clients through PgBouncer saw zero errors across cutover and rollback"
