#!/usr/bin/env bash
# Integration: errors only an operator can fix. A source schema change the target lacks stops apply
# with the table and column named, keeps the daemon up and the slot intact, and apply resumes on
# `pgshift resume` once the target is fixed; a slot invalidated by the source is fatal, clearly.
# Usage: operator_errors.sh PGSHIFT_BINARY
set -euo pipefail
source "$(dirname "$0")/daemon-test.sh"

ctl_port=$(free_port)
for c in psql_src psql_dst; do $c "CREATE TABLE orders (id int PRIMARY KEY, amount numeric)"; done

cat > "$work/pgshift.yaml" <<YAML
name: operr
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
schema: verify   # the operator keeps the target's schema (with schema: copy pgshift adds the column)
control: {listen: "127.0.0.1:$ctl_port"}
reconnect: {min_delay_seconds: 0.2, max_delay_seconds: 1}
YAML
api="http://127.0.0.1:$ctl_port"
start() { "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!; }
start
wait_ready "$api" 20 "not streaming"

# 1. The source gains a column the target does not have.
psql_src "INSERT INTO orders VALUES (1, 10)"
psql_src "ALTER TABLE orders ADD COLUMN note text"
psql_src "INSERT INTO orders VALUES (2, 20, 'after the change'); UPDATE orders SET note = 'x' WHERE id = 1"
wait_failed "$api"
echo "$status" | grep -q 'column \\"note\\" of source table public.orders does not exist on the target' ||
  fail "last_error does not name the table and column: $status"
kill -0 "$daemon" || fail "the daemon exited"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 503 ] || fail "/readyz is not 503 while failed"
[ "$(psql_src "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgshift_operr'")" = 1 ] || fail "slot gone"
[ "$(psql_dst "SELECT count(*) FROM orders")" = 1 ] || fail "the target moved on despite the error"
echo "ok: schema change stops apply, names public.orders column note, daemon up, slot kept"

psql_dst "ALTER TABLE orders ADD COLUMN note text"
resumed=$("$bin" resume --config "$work/pgshift.yaml") || fail "pgshift resume"
# Regression: resume printed "state: failed" although it had worked.
echo "$resumed" | grep -q "failed" && fail "pgshift resume reports the state it left: $resumed"
digest="SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
for _ in $(seq 1 100); do [ "$(psql_src "$digest")" = "$(psql_dst "$digest")" ] && break; sleep 0.2; done
[ "$(psql_src "$digest")" = "$(psql_dst "$digest")" ] || fail "target did not catch up after resume"
for _ in $(seq 1 50); do curl -s "$api/v1/status" | grep -q '"state":"streaming"' && break; sleep 0.2; done
curl -s "$api/v1/status" | grep -q '"state":"streaming"' || fail "not streaming after resume"
echo "ok: after fixing the target, pgshift resume applies everything that was held back"

# 2. A slot the source invalidated is fatal and never recreated.
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
daemon=""
psql_src "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"
psql_src "SELECT pg_reload_conf()" >/dev/null
psql_src "CREATE TABLE junk AS SELECT g, repeat('x', 500) AS filler FROM generate_series(1, 150000) g"
for _ in 1 2 3; do psql_src "SELECT pg_switch_wal()" >/dev/null; psql_src "CHECKPOINT"; done
[ "$(psql_src "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgshift_operr'")" = lost ] ||
  fail "could not make the source invalidate the slot"
code=0
timeout 60 "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 || code=$?
[ "$code" = 1 ] || fail "pgshift exited $code with a lost slot, not 1"
grep -q "was invalidated by the source (wal_status = lost" "$work/pgshift.log" || fail "no clear message"
[ "$(psql_src "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgshift_operr'")" = lost ] ||
  fail "the slot was recreated or dropped"
echo "ok: an invalidated slot stops pgshift with exit 1 and a clear message; the slot is left alone"
echo "operator errors: all checks passed"
