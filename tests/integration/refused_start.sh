#!/usr/bin/env bash
# Integration (do no harm): a start pgshift refuses creates and changes nothing on either server.
# A selected table without a usable replica identity (publishing it would make the source refuse
# the application's UPDATE/DELETE), an initial copy into a target table that holds rows, an
# unusable spill directory and a bad token_file all exit 78 with the key or table and the fix named; the source keeps accepting
# writes; no publication, slot or origin exists afterwards. Then the same table excluded, or given
# REPLICA IDENTITY FULL, starts fine.
# Usage: refused_start.sh PGSHIFT_BINARY
set -euo pipefail
# Room for 3 replication origins on the target: apply.workers 4 must be refused before anything.
PAIR_TARGET_SETTINGS=(max_replication_slots=3)
source "$(dirname "$0")/daemon-test.sh"

schema="CREATE TABLE orders (id int PRIMARY KEY, amount numeric);
CREATE TABLE nopk (a int, b text);
CREATE TABLE parted (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
psql_src "$schema"
psql_dst "$schema"
psql_src "INSERT INTO nopk VALUES (1, 'a'); INSERT INTO parted VALUES (1, '2026-05-01')"
ctl_port=$(free_port)
token_file=""

# write_config EXTRA_YAML: the config with extra top-level keys (and $token_file when set).
write_config() {
  cat > "$work/pgshift.yaml" <<YAML
name: refuse
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
control: {listen: "127.0.0.1:$ctl_port"${token_file:+, token_file: \"$token_file\"}}
reconnect: {min_delay_seconds: 0.2, max_delay_seconds: 1}
$1
YAML
  # Two workers fit the target's 3 origin slots, unless the test sets apply itself.
  grep -q "^apply:" "$work/pgshift.yaml" || echo "apply: {workers: 2}" >> "$work/pgshift.yaml"
}
# run_expect CODE: runs the daemon to its exit (at most 30 s) and checks the exit code.
run_expect() {
  local code=0
  : > "$work/pgshift.log"
  timeout 30 "$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 || code=$?
  [ "$code" = "$1" ] || fail "exit code $code, expected $1"
}
no_objects_left() {
  [ "$(psql_src "SELECT count(*) FROM pg_publication")" = 0 ] || fail "$1: a publication was created"
  [ "$(psql_src "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "$1: a slot was created"
  [ "$(psql_dst "SELECT count(*) FROM pg_replication_origin")" = 0 ] || fail "$1: an origin was created"
}

# 1. Tables without a usable replica identity: refused, each named with the remedies.
write_config "initial_copy: {enabled: false}"
run_expect 78
grep -q "refusing to start: publishing these tables would break writes on the source" "$work/pgshift.log" ||
  fail "no refusal message"
grep -q "table public.nopk has no usable replica identity (no primary key and REPLICA IDENTITY DEFAULT)" \
  "$work/pgshift.log" || fail "public.nopk not named"
grep -q "ALTER TABLE public.nopk REPLICA IDENTITY FULL" "$work/pgshift.log" || fail "no REPLICA IDENTITY FULL remedy"
grep -q 'add "public.nopk" to tables.exclude' "$work/pgshift.log" || fail "no exclude remedy"
grep -q "table public.parted has no usable replica identity (no primary key and REPLICA IDENTITY DEFAULT): its changes are published under this root" \
  "$work/pgshift.log" || fail "the partitioned root public.parted is not named"
grep -q "(and 1 more partition(s) of public.parted without a usable replica identity)" "$work/pgshift.log" ||
  fail "the partition of public.parted is not counted"
grep -q "public.orders" "$work/pgshift.log" && fail "public.orders (it has a primary key) is named"
no_objects_left "refused start"
psql_src "UPDATE nopk SET b = 'still writable' WHERE a = 1; DELETE FROM parted WHERE id = 1" ||
  fail "the source refuses writes after a refused start"
echo "ok: tables without a usable replica identity refuse the start (exit 78), named with remedies; nothing created"

# 2. Other refusals before any side effect.
# The initial copy fills empty target tables only: a target table with rows refuses the start.
psql_dst "INSERT INTO orders VALUES (42, 1)"
write_config "initial_copy: {enabled: true}
tables: {exclude: [public.nopk, public.parted]}"
run_expect 78
grep -q "the initial copy fills empty target tables only, and these already hold rows" "$work/pgshift.log" ||
  fail "initial copy into a non-empty table not explained"
grep -q "^  public.orders" "$work/pgshift.log" || fail "the non-empty table public.orders is not named"
no_objects_left "initial copy into a non-empty table refused"
psql_dst "DELETE FROM orders"
write_config "initial_copy: {enabled: false}
tables: {exclude: [public.nopk, public.parted]}
apply: {workers: 2, spill_dir: $work/no-such-dir}"
run_expect 78
grep -q "apply.spill_dir: the spill directory cannot be used: could not create a spill file in $work/no-such-dir" \
  "$work/pgshift.log" || fail "missing spill directory not named"
no_objects_left "spill dir refused"
mkdir "$work/tokendir"
for tf in /dev/zero "$work/tokendir"; do
  token_file=$tf write_config "initial_copy: {enabled: false}
tables: {exclude: [public.nopk, public.parted]}"
  start=$(date +%s)
  run_expect 78
  [ $(( $(date +%s) - start )) -le 5 ] || fail "token_file $tf took more than 5 s"
  grep -q "control.token_file" "$work/pgshift.log" || fail "token_file $tf: the key is not named"
  no_objects_left "token_file $tf"
done
echo "ok: an initial copy into a non-empty table, a missing spill directory, /dev/zero and a directory as token_file exit 78 first"

# 3. The operator's fixes: exclude one table, give the other (root and partition) REPLICA IDENTITY FULL.
write_config "initial_copy: {enabled: false}
tables: {exclude: [public.nopk]}"
# Only the partition first: the root still lacks an identity, so the start is still refused.
psql_src "ALTER TABLE parted_2026 REPLICA IDENTITY FULL"
run_expect 78
grep -q "table public.parted has no usable replica identity" "$work/pgshift.log" || fail "root not named"
grep -q "more partition" "$work/pgshift.log" && fail "a fixed partition is still counted"
for c in psql_src psql_dst; do $c "ALTER TABLE parted REPLICA IDENTITY FULL; ALTER TABLE parted_2026 REPLICA IDENTITY FULL"; done
# 4 workers need 4 origins, the target has room for 3: refused before any origin is created.
api="http://127.0.0.1:$ctl_port"
sed -i 's/apply: {workers: 2}/apply: {workers: 4}/' "$work/pgshift.yaml"
run_expect 78
grep -q "apply.workers = 4 needs 4 more replication origin(s) on the target, but its max_replication_slots (3)" \
  "$work/pgshift.log" || fail "too few replication state slots on the target not reported"
no_objects_left "too few origin slots"
sed -i 's/apply: {workers: 4}/apply: {workers: 2}/' "$work/pgshift.yaml"
echo "ok: apply.workers beyond the target's max_replication_slots is refused before any origin exists"
"$bin" run --config "$work/pgshift.yaml" >>"$work/pgshift.log" 2>&1 & daemon=$!
wait_ready "$api" 20 "not streaming after the fixes"
psql_src "INSERT INTO parted VALUES (2, '2026-06-01'); UPDATE parted SET id = 3 WHERE id = 2; INSERT INTO orders VALUES (1, 5)"
psql_src "UPDATE nopk SET b = 'excluded, still writable'"
digest="SELECT md5(string_agg(p::text, ',' ORDER BY p::text)) FROM parted p"
for _ in $(seq 1 100); do [ "$(psql_src "$digest")" = "$(psql_dst "$digest")" ] && break; sleep 0.2; done
[ "$(psql_src "$digest")" = "$(psql_dst "$digest")" ] || fail "public.parted did not converge"
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
daemon=""
echo "ok: with the table excluded and the partition given REPLICA IDENTITY FULL, pgshift starts and replicates"
echo "refused start: all checks passed"
