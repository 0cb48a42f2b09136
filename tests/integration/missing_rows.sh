#!/usr/bin/env bash
# Integration: rows the target lacks (it diverged from the source) are never skipped silently,
# also when a batch's COMMIT goes in the same round trip as its statements.
#   apply.on_missing_row: error (default): the transaction that updates a missing row stops apply
#     with the table named, and nothing of that transaction reaches the target;
#   apply.on_missing_row: skip: after a restart the same transaction is applied once, the missing
#     row skipped with a warning; so are a multi-row DELETE and a REPLICA IDENTITY FULL delete.
# Usage: missing_rows.sh PGSHIFT_BINARY
set -euo pipefail
source "$(dirname "$0")/daemon-test.sh"

ctl_port=$(free_port)
for c in psql_src psql_dst; do
  $c "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)"
  $c "CREATE TABLE logs (a int, b text); ALTER TABLE logs REPLICA IDENTITY FULL"
done
write_config() { # POLICY
  cat > "$work/pgshift.yaml" <<YAML
name: missing
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
apply: {workers: 2, on_missing_row: $1}
control: {listen: "127.0.0.1:$ctl_port"}
reconnect: {min_delay_seconds: 0.2, max_delay_seconds: 1}
YAML
}
api="http://127.0.0.1:$ctl_port"
start() { "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!; }
stop() { kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"; daemon=""; }
wait_equal() { # SQL WHAT: waits until SQL gives the same answer on both servers
  for _ in $(seq 1 100); do [ "$(psql_src "$1")" = "$(psql_dst "$1")" ] && return 0; sleep 0.1; done
  fail "$2: source $(psql_src "$1"), target $(psql_dst "$1")"
}
items="SELECT string_agg(id || ':' || v, ' ' ORDER BY id) FROM items"
logs="SELECT string_agg(a || ':' || b, ' ' ORDER BY a) FROM logs"

write_config error
start
wait_ready "$api" 20 "not streaming"
psql_src "INSERT INTO items SELECT g, 0 FROM generate_series(1, 5) g"
psql_src "INSERT INTO logs SELECT g, 'x' || g FROM generate_series(1, 3) g"
wait_equal "$items" "items not replicated"
wait_equal "$logs" "logs not replicated"
one_trip=$(curl -s "$api/metrics" | awk '/^pgshift_apply_batches_one_round_trip_total / { print $2 }')
[ "${one_trip%.*}" -ge 1 ] || fail "no batch committed in one round trip (pgshift_apply_batches_one_round_trip_total $one_trip)"
echo "ok: $one_trip batch(es) committed in one round trip"
inline=$(curl -s "$api/metrics" | awk '/^pgshift_apply_batches_inline_total / { print $2 }')
[ "${inline%.*}" -ge 1 ] || fail "no batch applied by the scheduler itself (pgshift_apply_batches_inline_total $inline)"

# The target diverges: rows 2 and 4 of items and row 2 of logs are gone there.
psql_dst "DELETE FROM items WHERE id IN (2, 4); DELETE FROM logs WHERE a = 2"

# 1. on_missing_row: error.
psql_src "BEGIN; UPDATE items SET v = v + 1 WHERE id IN (1, 2); INSERT INTO items VALUES (6, 0); COMMIT"
wait_failed "$api"
echo "$status" | grep -q 'UPDATE on public.items found no row' || fail "last_error does not name the table: $status"
[ "$(psql_dst "$items")" = "1:0 3:0 5:0" ] || fail "part of the failed transaction reached the target: $(psql_dst "$items")"
echo "ok: a missing row stops apply (public.items named), nothing of its transaction committed"
stop

# 2. on_missing_row: skip. The held-back transaction is applied once, without row 2.
write_config skip
start
wait_ready "$api" 20 "not streaming after the restart with skip"
for _ in $(seq 1 100); do [ "$(psql_dst "$items")" = "1:1 3:0 5:0 6:0" ] && break; sleep 0.1; done
[ "$(psql_dst "$items")" = "1:1 3:0 5:0 6:0" ] || fail "the transaction was not applied exactly once: $(psql_dst "$items")"
grep -q "UPDATE on public.items found no row .*skipped (apply.on_missing_row = skip)" "$work/pgshift.log" ||
  fail "no warning for the skipped update"
echo "ok: with skip, the transaction is applied once and the missing row reported"

# A multi-row DELETE with two of its four rows missing, and a REPLICA IDENTITY FULL delete.
psql_src "DELETE FROM items WHERE id IN (2, 3, 4, 5)"
psql_src "DELETE FROM logs WHERE a IN (2, 3)"
psql_src "INSERT INTO items VALUES (7, 7)"
wait_equal "$items" "items differ after the multi-row delete"
wait_equal "$logs" "logs differ after the delete"
[ "$(psql_dst "$items")" = "1:1 6:0 7:7" ] || fail "unexpected items: $(psql_dst "$items")"
[ "$(grep -c "DELETE on public.items found no row .*skipped" "$work/pgshift.log")" = 2 ] ||
  fail "expected 2 skipped deletes on items: $(grep -c "DELETE on public.items found no row" "$work/pgshift.log")"
grep -q "DELETE on public.logs found no row .*skipped" "$work/pgshift.log" || fail "no warning for the logs delete"
echo "ok: multi-row and REPLICA IDENTITY FULL deletes skip exactly the missing rows"
stop
echo "PASS"
