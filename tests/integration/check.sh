#!/usr/bin/env bash
# Integration (SPEC section 6): `pgshift check` against real servers. A good setup exits 0 with no
# error line, also for a non-superuser role on each side holding exactly the privileges check
# asks for (and `pgshift run` then really streams with them). Each broken setup prints its own
# problem naming the side, the object and the fix, and exits 1: wal_level=replica, a source role
# without REPLICATION or not owning a table, a target role without a privilege, no free
# replication slot, too few origin slots, a table without key and identity, a conninfo on port
# 6543 (a pooler, even with nothing listening), a target table missing or missing a column or
# with a column of another type, leftovers of an earlier run. Several problems come out of one
# run; --json is one JSON document; an invalid config file exits 78. With pgbouncer installed, a
# PgBouncer in front of the source is noticed too. What cutover and rollback will need comes out as
# warnings that keep the exit code: none for superusers with wal_level logical on both sides;
# wal_level=replica on the target; a target role without REPLICATION, CREATE or the tables'
# ownership (the reverse stream); a source role without origin privileges, pg_signal_backend or
# TRIGGER on a table (the fence); sequences without SELECT or UPDATE; fence: none and
# sync_sequences: false skip theirs. What logical replication does not carry (an unlogged table
# and a materialized view the globs match, large objects) is a warning, and run logs it.
# Usage: check.sh PGSHIFT_BINARY (CHECK_SHOW=1 prints the output of every check run)
set -euo pipefail
command -v python3 >/dev/null || { echo "python3 not installed: skipped"; exit 77; }
# Room for 3 slots and 2 WAL senders on the source (filled up below), 3 origins on the target.
PAIR_SOURCE_SETTINGS=(max_replication_slots=3 max_wal_senders=2)
PAIR_TARGET_SETTINGS=(max_replication_slots=3)
source "$(dirname "$0")/daemon-test.sh"

schema="CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2), note text);
CREATE TABLE items (id bigint PRIMARY KEY, name text);"
psql_src "$schema"
psql_dst "$schema"
ctl_port=$(free_port)
api="http://127.0.0.1:$ctl_port"

# write_config [SOURCE_CONNINFO [TARGET_CONNINFO [EXTRA_YAML]]]
write_config() {
  local extra="apply: {workers: 2}"
  [ $# -ge 3 ] && extra=$3
  cat > "$work/pgshift.yaml" <<YAML
name: chk
source: {conninfo: "${1:-$src}"}
target: {conninfo: "${2:-$dst}"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$ctl_port"}
reconnect: {min_delay_seconds: 0.2, max_delay_seconds: 1}
$extra
YAML
}
# check_expect CODE [--json]: runs pgshift check (output in $work/pgshift.log), checks the exit code.
check_expect() {
  local code=0
  timeout 60 "$bin" check --config "$work/pgshift.yaml" ${2:+"$2"} >"$work/pgshift.log" 2>&1 || code=$?
  [ -n "${CHECK_SHOW:-}" ] && { echo "--- exit $code"; cat "$work/pgshift.log"; }
  [ "$code" = "$1" ] || fail "pgshift check: exit code $code, expected $1"
}
# has LINE_PREFIX TEXT WHY: some output line starts with LINE_PREFIX and contains TEXT.
has() { grep -F -- "$1" "$work/pgshift.log" | grep -q -F -- "$2" || fail "$3"; }
# lacks LINE_PREFIX TEXT WHY: no output line starts with LINE_PREFIX and contains TEXT.
lacks() { ! grep -F -- "$1" "$work/pgshift.log" | grep -q -F -- "$2" || fail "$3"; }
# no_later_failures WHY: no line says that cutover or rollback will fail.
no_later_failures() {
  ! grep -q -e "cutover will fail" -e "rollback will fail" "$work/pgshift.log" ||
    fail "$1: $(grep -m1 -e "cutover will fail" -e "rollback will fail" "$work/pgshift.log")"
}
# What the reverse stream needs fails the cutover: it sets the stream up before it switches.
rev="cutover will fail (setting up the reverse stream, which rollback needs): "
no_errors() { ! grep -q "^error:" "$work/pgshift.log" || fail "$1: unexpected error line"; }
errors() { grep -c "^error:" "$work/pgshift.log" || true; }

# 1. A good setup: exit 0, no error line; the unlimited WAL retention of a default server is a warning.
write_config
check_expect 0
no_errors "good setup"
grep -q "^check passed: pgshift run can start (source PostgreSQL 15" "$work/pgshift.log" || fail "no summary line"
has "warning: source: " "max_slot_wal_keep_size is -1 (unlimited)" "unlimited max_slot_wal_keep_size not reported"
no_later_failures "good setup: superusers, wal_level logical on both sides"
check_expect 0 --json
python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ok"] is True and d["errors"] == 0, d
assert not [p for p in d["problems"] if p["code"].startswith(("cutover_", "rollback_"))], d' \
  < "$work/pgshift.log" || fail "--json of a good setup is not one JSON document with ok true and nothing for cutover"
echo "ok: a good setup passes (exit 0, no error line, a warning for unlimited WAL retention, nothing cutover or rollback lack); --json parses"

psql_src "ALTER SYSTEM SET max_slot_wal_keep_size = '100MB'"
psql_src "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check_expect 0
has "warning: source: " "max_slot_wal_keep_size is 100 MB: below 1 GB" "small max_slot_wal_keep_size not reported"
psql_src "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'"
psql_src "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check_expect 0
grep -q "max_slot_wal_keep_size" "$work/pgshift.log" && fail "10GB of max_slot_wal_keep_size reported"
echo "ok: max_slot_wal_keep_size below 1 GB is a warning, 10 GB is quiet"

# 2. Source wal_level = replica.
psql_src "ALTER SYSTEM SET wal_level = replica"
"$root/scripts/pgcluster.sh" restart "$work/source"
check_expect 1
has "error: source: " "source wal_level is 'replica', logical replication needs 'logical': ALTER SYSTEM SET wal_level = logical" \
  "wal_level=replica not reported"
psql_src "ALTER SYSTEM RESET wal_level"
"$root/scripts/pgcluster.sh" restart "$work/source"
check_expect 0
echo "ok: wal_level=replica on the source is an error with the fix"

# Target wal_level = replica: streaming works (exit 0, no error), but the reverse stream cannot be
# set up, so cutover would stop: a warning with the fix.
psql_dst "ALTER SYSTEM SET wal_level = replica"
"$root/scripts/pgcluster.sh" restart "$work/target"
check_expect 0
no_errors "wal_level=replica on the target"
has "warning: target: $rev" "the target's wal_level is not 'logical', so pgshift cannot stream the target's changes back to the source after cutover and rollback is impossible: set wal_level = logical on the target and restart it" \
  "wal_level=replica on the target not reported"
psql_dst "ALTER SYSTEM RESET wal_level"
"$root/scripts/pgcluster.sh" restart "$work/target"
check_expect 0
no_later_failures "wal_level back to logical on the target"
echo "ok: wal_level=replica on the target is a warning that cutover will fail and rollback is impossible, with the fix"

# 3. A port-6543 conninfo (nothing listens there): the pooler error and the connection error.
write_config "host=127.0.0.1 port=6543 dbname=postgres user=postgres connect_timeout=5"
check_expect 1
has "error: source: " "source.conninfo points at 127.0.0.1:6543: port 6543 is where Supabase" "port 6543 not called a pooler"
has "error: source: " "cannot connect to the source (could not connect: connection to server at \"127.0.0.1\", port 6543 failed: Connection refused Is the server running" \
  "the connection error is not reported with libpq's message"
[ "$(errors)" = 2 ] || fail "expected exactly the pooler and the connection errors, got $(errors)"
grep -q "^error: target: " "$work/pgshift.log" && fail "the target is reported although it is fine"
echo "ok: a conninfo on port 6543 is reported as a pooler, and the failed connection with libpq's message"

# A PgBouncer (transaction pooling) in front of the source on an ordinary port: noticed once
# connected (the backend pid it announces is its own), and the replication connection fails.
if command -v pgbouncer >/dev/null; then
  start_pgbouncer postgres "$src_port"
  write_config "host=127.0.0.1 port=$bouncer_port dbname=postgres user=postgres"
  check_expect 1
  has "warning: source: " "source.conninfo reaches the server through a connection pooler" "PgBouncer in front of the source not noticed"
  has "error: source: " "cannot open a replication connection (replication=database) as pgshift run does" \
    "the replication connection through PgBouncer is not reported"
  [ "$(errors)" = 1 ] || fail "expected only the replication connection error, got $(errors)"
  kill "$bouncer"
  echo "ok: a PgBouncer in front of the source is noticed, and its refused replication connection is an error"
else
  echo "skipped: pgbouncer not installed (the pooler behind an ordinary port)"
fi

# 4. Roles: a non-superuser source role (REPLICATION, CREATE on the database, owner of the tables)
# and target role (origin functions, SET session_replication_role, table privileges) pass.
psql_src "CREATE ROLE migrator LOGIN; GRANT CREATE ON DATABASE postgres TO migrator;
ALTER TABLE orders OWNER TO migrator; ALTER TABLE items OWNER TO migrator"
psql_dst "CREATE ROLE applier LOGIN;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_oid(text),
  pg_replication_origin_advance(text, pg_lsn), pg_replication_origin_progress(text, boolean),
  pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz) TO applier;
GRANT SET ON PARAMETER session_replication_role TO applier;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders, items TO applier"
src_user="host=127.0.0.1 port=$src_port dbname=postgres user=migrator"
dst_user="host=127.0.0.1 port=$dst_port dbname=postgres user=applier"
write_config "$src_user" "$dst_user"
check_expect 1
has "error: source: " "role migrator has neither the REPLICATION attribute nor superuser, so it cannot open the replication connection that streams changes: ALTER ROLE migrator REPLICATION" \
  "a source role without REPLICATION not reported"
[ "$(errors)" = 1 ] || fail "expected only the REPLICATION error, got $(errors)"
psql_src "ALTER ROLE migrator REPLICATION"
check_expect 0
no_errors "non-superuser roles with the privileges check asks for"

# What cutover and rollback will need of these roles: warnings only (exit 0 above). The target
# role would publish the reverse stream, the source role apply it; each server gets fenced.
has "warning: target: $rev" "role applier has neither the REPLICATION attribute nor superuser, so it cannot create the slot pgshift_chk_rev nor open the replication connection that streams changes back to the source: ALTER ROLE applier REPLICATION" \
  "a target role without REPLICATION not reported for the reverse stream"
lacks "warning: target: " "GRANT postgres TO applier" "suggests making the target role a member of a superuser"
has "warning: target: $rev" "role applier does not own 2 selected table(s) of role postgres (public.items, public.orders), and adding a table to the publication needs its owner: ALTER TABLE ... OWNER TO applier for each" \
  "target tables the target role does not own not reported"
has "warning: target: $rev" "role applier lacks CREATE on database postgres, needed to create the publication pgshift_chk_rev: GRANT CREATE ON DATABASE postgres TO applier" \
  "no CREATE for the reverse publication not reported"
has "warning: target: cutover will fail: " "role applier lacks CREATE on database postgres, needed to create schema pgshift for the table pgshift.switchover" \
  "no CREATE for cutover's record on the target not reported"
has "warning: target: rollback will fail: " "role applier is neither superuser nor a member of pg_signal_backend" \
  "a target role without pg_signal_backend not reported for rollback's fence"
has "warning: target: rollback will fail: " "role applier lacks TRIGGER on public.items, public.orders, which the write fence's trigger needs (cutover.fence: read_only): GRANT TRIGGER ON public.items, public.orders TO applier" \
  "a target role without TRIGGER not reported for rollback's fence"
has "warning: source: $rev" "role migrator may not manage replication origins (apply records its progress in one per worker): as a superuser, GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text)" \
  "a source role without the origin functions not reported for the reverse stream"
has "warning: source: rollback will fail: " "role migrator may not set session_replication_role, which apply sessions set to replica (no user triggers or foreign-key re-checks on replayed rows): GRANT SET ON PARAMETER session_replication_role TO migrator" \
  "a source role that may not set session_replication_role not reported for the reverse stream"
has "warning: source: cutover will fail: " "role migrator is neither superuser nor a member of pg_signal_backend, so the write fence cannot end other roles' sessions holding locks on the selected tables and waits for them to end (at most cutover.timeout_seconds): GRANT pg_signal_backend TO migrator" \
  "a source role without pg_signal_backend not reported for the fence"
lacks "warning: source: " "TRIGGER" "the owner of the source tables is said to lack TRIGGER"
lacks "warning: source: " "which apply needs" "the owner of the source tables is said to lack a table privilege"
# The source role loses TRIGGER on one table (the owner's own privilege, revoked).
psql_src "REVOKE TRIGGER ON items FROM migrator"
check_expect 0
has "warning: source: cutover will fail: " "role migrator lacks TRIGGER on public.items, which the write fence's trigger needs (cutover.fence: read_only): GRANT TRIGGER ON public.items TO migrator" \
  "a source table without TRIGGER for the source role not reported"
# Sequences: read on one side, set on the other, at cutover and the other way round at rollback.
psql_src "CREATE SEQUENCE order_no"
psql_dst "CREATE SEQUENCE order_no"
check_expect 0
has "warning: source: cutover will fail: " "role migrator lacks SELECT on public.order_no, which the sequence sync of cutover needs to read their values (cutover.sync_sequences): GRANT SELECT ON SEQUENCE public.order_no TO migrator" \
  "a sequence the source role may not read not reported"
has "warning: target: cutover will fail: " "role applier lacks UPDATE on public.order_no, which the sequence sync of cutover needs to set their values (cutover.sync_sequences): GRANT UPDATE ON SEQUENCE public.order_no TO applier" \
  "a sequence the target role may not set not reported"
has "warning: target: rollback will fail: " "role applier lacks SELECT on public.order_no, which the sequence sync of rollback needs to read" \
  "a sequence the target role may not read not reported for rollback"
has "warning: source: rollback will fail: " "role migrator lacks UPDATE on public.order_no, which the sequence sync of rollback needs to set" \
  "a sequence the source role may not set not reported for rollback"
# fence: none and sync_sequences: false: nothing about the fence or the sequences.
write_config "$src_user" "$dst_user" "apply: {workers: 2}
cutover: {fence: none, sync_sequences: false}"
check_expect 0
lacks "warning: " "write fence" "fence: none still checks the write fence"
lacks "warning: " "order_no" "sync_sequences: false still checks the sequences"
has "warning: target: $rev" "ALTER ROLE applier REPLICATION" "fence: none skips the reverse stream's checks too"
write_config "$src_user" "$dst_user"
# Granted, the lines go away.
psql_src "GRANT TRIGGER ON items TO migrator; GRANT pg_signal_backend TO migrator; DROP SEQUENCE order_no"
psql_dst "ALTER ROLE applier REPLICATION; ALTER TABLE orders OWNER TO applier; DROP SEQUENCE order_no"
check_expect 0
lacks "warning: source: " "pg_signal_backend" "pg_signal_backend reported although granted"
lacks "warning: source: " "TRIGGER" "TRIGGER reported although granted"
lacks "warning: target: " "REPLICATION attribute" "REPLICATION reported although granted"
has "warning: target: $rev" "role applier does not own 1 selected table(s) of role postgres (public.items)" \
  "a table the target role still does not own not reported"
psql_src "REVOKE pg_signal_backend FROM migrator"
# (Handing a table back moves its owner's privileges along: grant them again.)
psql_dst "ALTER ROLE applier NOREPLICATION; ALTER TABLE orders OWNER TO postgres;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders TO applier"
echo "ok: what cutover and rollback lack (REPLICATION, CREATE, ownership, origins, session_replication_role, pg_signal_backend, TRIGGER, sequences) is a warning each, with its GRANT"
psql_src "ALTER TABLE items OWNER TO postgres"
psql_dst "REVOKE TRUNCATE ON orders FROM applier; REVOKE SET ON PARAMETER session_replication_role FROM applier;
REVOKE EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) FROM applier"
check_expect 1
has "error: source: " "role migrator does not own 1 selected table(s) of role postgres (public.items), and adding a table to the publication needs its owner: ALTER TABLE public.items OWNER TO migrator" \
  "a table the source role does not own not reported"
grep -q "GRANT postgres TO" "$work/pgshift.log" && fail "suggests making the role a member of a superuser"
has "error: target: " "role applier lacks TRUNCATE on public.orders, which apply needs: GRANT TRUNCATE ON public.orders TO applier" \
  "a missing TRUNCATE grant not reported"
has "error: target: " "GRANT SET ON PARAMETER session_replication_role TO applier" \
  "a missing SET privilege on session_replication_role not reported"
has "error: target: " "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_session_setup(text) TO applier" \
  "a missing EXECUTE on an origin function not reported"
[ "$(errors)" = 4 ] || fail "expected 4 privilege errors in one run, got $(errors)"
psql_src "ALTER TABLE items OWNER TO migrator"
psql_dst "GRANT TRUNCATE ON orders TO applier; GRANT SET ON PARAMETER session_replication_role TO applier;
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO applier"
check_expect 0
echo "ok: non-superuser roles pass with the privileges check names; each missing one is named with its GRANT"

# Row-level security that applies to pgshift's role: on a target table the role does not own, an
# error (apply runs with row_security=off and would fail rather than miss rows); FORCEd on a source
# table the role owns, a warning without an initial copy (verify reads it) and an error with one.
psql_dst "ALTER TABLE orders ENABLE ROW LEVEL SECURITY; CREATE POLICY few ON orders USING (id < 10)"
check_expect 1
has "error: target: " "row-level security applies to role applier on public.orders" "row-level security on a target table not reported"
has "error: target: " "ALTER ROLE applier BYPASSRLS" "no fix for row-level security on the target"
[ "$(errors)" = 1 ] || fail "expected only the row-level security error, got $(errors)"
psql_dst "ALTER ROLE applier BYPASSRLS"
check_expect 0
lacks "error: target: " "row-level security" "a role with BYPASSRLS still reported"
psql_src "ALTER TABLE orders ENABLE ROW LEVEL SECURITY; ALTER TABLE orders FORCE ROW LEVEL SECURITY"
check_expect 0
has "warning: source: " "verify will fail: row-level security applies to role migrator on public.orders" \
  "row-level security forced on a source table not reported"
has "warning: source: " "rollback will fail: row-level security applies to role migrator on public.orders" \
  "the reverse stream's apply into a forced source table not reported"
sed -i 's/^initial_copy: {enabled: false}/initial_copy: {enabled: true}/' "$work/pgshift.yaml"
check_expect 1
has "error: source: " "the initial copy (and verify) must see every row" "row-level security on a copied source table not an error"
psql_src "ALTER TABLE orders NO FORCE ROW LEVEL SECURITY; ALTER TABLE orders DISABLE ROW LEVEL SECURITY"
psql_dst "DROP POLICY few ON orders; ALTER TABLE orders DISABLE ROW LEVEL SECURITY; ALTER ROLE applier NOBYPASSRLS"
write_config "$src_user" "$dst_user"
check_expect 0
echo "ok: row-level security that applies to pgshift's role is an error on the target (fixed by BYPASSRLS) and, forced on the source, a warning for verify and rollback or an error for the initial copy"

# 5. No free replication slot on the source (3 of 3 taken), too few origin slots on the target.
psql_src "SELECT pg_create_physical_replication_slot('other_' || g) FROM generate_series(1, 3) g" >/dev/null
write_config "$src" "$dst" "apply: {workers: 4}"
check_expect 1
has "error: source: " "max_replication_slots is 3 and 3 slot(s) exist (other_1, other_2, other_3), so the slot pgshift_chk cannot be created" \
  "no free replication slot not reported"
has "error: target: " "apply.workers = 4 needs 4 more replication origin(s) on the target, but its max_replication_slots (3)" \
  "too few origin slots on the target not reported"
has "warning: source: $rev" "apply.workers = 4 needs 4 more replication origin(s) on the source, but its max_replication_slots (3)" \
  "too few origin slots on the source for the reverse stream not reported"
[ "$(errors)" = 2 ] || fail "expected the slot and the origin errors, got $(errors)"
psql_src "SELECT pg_drop_replication_slot('other_' || g) FROM generate_series(1, 3) g" >/dev/null
echo "ok: a source without a free slot and a target without room for apply.workers origins are errors"

# Both WAL senders taken by other replication connections.
write_config
holders=()
on_exit 'for p in "${holders[@]}"; do kill "$p" 2>/dev/null; done'
for _ in 1 2; do
  "$pgbin/psql" -X -q -d "$src replication=database" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 & holders+=($!)
done
for _ in $(seq 1 50); do [ "$(psql_src "SELECT count(*) FROM pg_stat_replication")" = 2 ] && break; sleep 0.1; done
check_expect 1
has "error: source: " "max_wal_senders is 2 and all are in use, so pgshift's replication connection would be refused" \
  "no free WAL sender not reported"
[ "$(errors)" = 1 ] || fail "expected only the WAL sender error, got $(errors)"
# The backends sleep without reading their socket: end them on the server.
psql_src "SELECT pg_terminate_backend(pid) FROM pg_stat_replication" >/dev/null
for p in "${holders[@]}"; do wait "$p" 2>/dev/null || true; done
holders=()
for _ in $(seq 1 50); do [ "$(psql_src "SELECT count(*) FROM pg_stat_replication")" = 0 ] && break; sleep 0.1; done
check_expect 0
echo "ok: a source without a free WAL sender is an error"

# 6. A table without key and identity; target tables missing, missing a column, a column of another type.
# (schema: verify: the target's schema is the operator's; schema: copy below)
write_config "$src" "$dst" "$(printf 'apply: {workers: 2}\nschema: verify')"
psql_src "CREATE TABLE nokey (a int, b text); CREATE TABLE only_src (id int PRIMARY KEY)"
psql_dst "CREATE TABLE nokey (a int, b text)"
psql_dst "ALTER TABLE orders DROP COLUMN note; ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2);
ALTER TABLE items ADD COLUMN sku text NOT NULL"
check_expect 1
has "error: source: " "table public.nokey has no usable replica identity (no primary key and REPLICA IDENTITY DEFAULT)" \
  "a table without key and identity not reported"
has "error: source: " "ALTER TABLE public.nokey REPLICA IDENTITY FULL" "no REPLICA IDENTITY FULL remedy"
has "error: target: " "table public.only_src does not exist on the target: create it" "a missing target table not reported"
has "error: target: " "table public.orders, column note (text) is missing on the target, so apply cannot write it: ALTER TABLE public.orders ADD COLUMN note text" \
  "a missing target column not reported"
has "error: target: " "table public.orders, column amount is numeric(10,2) on the source but numeric(12,2) on the target: ALTER TABLE public.orders ALTER COLUMN amount TYPE numeric(10,2)" \
  "a column of another type not reported"
has "error: target: " "table public.items, column sku exists only on the target and is NOT NULL without a default" \
  "a NOT NULL target-only column not reported"
[ "$(errors)" = 5 ] || fail "expected 5 errors in one run, got $(errors)"
check_expect 1 --json
python3 - "$work/pgshift.log" <<'PY' || fail "--json does not list the same problems"
import json, sys
d = json.load(open(sys.argv[1]))
codes = sorted(p["code"] for p in d["problems"] if p["severity"] == "error")
assert d["ok"] is False and d["errors"] == 5, d
assert codes == ["column_type", "missing_column", "missing_table", "replica_identity", "required_column"], codes
assert all(p["side"] in ("source", "target") for p in d["problems"]), d
PY
# With schema: copy, run adds a missing column (apply, at the table's first change): a warning.
sed -i 's/^schema: verify/schema: copy/' "$work/pgshift.yaml"
check_expect 1
has "warning: target: " "table public.orders, column note is missing on the target: pgshift adds it at the table's first change" \
  "schema: copy: a missing column is not a warning"
[ "$(errors)" = 4 ] || fail "schema: copy: expected 4 errors, got $(errors)"
# With an initial copy too, run creates a missing table and adds the column before the copy.
sed -i 's/^initial_copy: {enabled: false}/initial_copy: {enabled: true}/' "$work/pgshift.yaml"
check_expect 1
grep -q "only_src" "$work/pgshift.log" && fail "schema: copy with an initial copy: a missing table is reported"
has "warning: target: " "table public.orders, column note is missing on the target: pgshift adds it before the copy" \
  "schema: copy with an initial copy: a missing column is not a warning"
[ "$(errors)" = 3 ] || fail "schema: copy with an initial copy: expected 3 errors, got $(errors)"
sed -i 's/^schema: copy/schema: verify/' "$work/pgshift.yaml"
check_expect 1
has "error: target: " "table public.only_src does not exist on the target" "schema: verify: a missing table not reported"
write_config
psql_src "DROP TABLE nokey, only_src"
psql_dst "DROP TABLE nokey; ALTER TABLE orders ADD COLUMN note text; ALTER TABLE orders ALTER COLUMN amount TYPE numeric(10,2);
ALTER TABLE items DROP COLUMN sku"
check_expect 0
echo "ok: five problems reported in one run (text and --json): no identity, missing table, missing column, other type, NOT NULL extra column; a missing column is a warning for schema: copy, a missing table too with an initial copy"

# 7. Leftovers of an earlier run: a slot without origins (warning), an origin with progress but no slot (error).
psql_src "SELECT pg_create_logical_replication_slot('pgshift_chk', 'pgoutput')" >/dev/null
check_expect 0
has "warning: source: " "replication slot pgshift_chk exists but the target has no replication origin of migration chk" \
  "a leftover slot not reported"
has "warning: source: " "SELECT pg_drop_replication_slot('pgshift_chk')" "no cleanup command for a leftover slot"
psql_src "SELECT pg_drop_replication_slot('pgshift_chk')" >/dev/null
psql_dst "SELECT pg_replication_origin_create('pgshift_chk_w0'); SELECT pg_replication_origin_advance('pgshift_chk_w0', '0/3000000')" >/dev/null
check_expect 1
has "error: target: " "the target's origins of migration chk have applied up to 0/3000000 but the slot pgshift_chk does not exist on the source" \
  "an origin with progress but no slot not reported"
has "error: target: " "SELECT pg_replication_origin_drop('pgshift_chk_w0')" "no cleanup command for a leftover origin"
psql_dst "SELECT pg_replication_origin_drop('pgshift_chk_w0')" >/dev/null
echo "ok: leftovers of an earlier run are reported with the command that cleans them up"

# 7b. What the migration does not carry: an unlogged table and a materialized view that the
# globs match, and a large object. Warnings (exit 0), each naming the objects and what to do;
# tables.exclude silences the first two.
psql_src "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY); CREATE MATERIALIZED VIEW order_totals AS
  SELECT count(*) AS n FROM orders; SELECT lo_from_bytea(0, 'blob')" >/dev/null
write_config
check_expect 0
no_errors "unlogged table, materialized view, large object"
has "warning: source: " "1 unlogged table(s) match tables.include (public.scratch)" "an unlogged table not reported"
has "warning: source: " "SET LOGGED" "no fix for an unlogged table"
has "warning: source: " "1 materialized view(s) match tables.include (public.order_totals)" "a materialized view not reported"
has "warning: source: " "REFRESH MATERIALIZED VIEW" "no fix for a materialized view"
has "warning: source: " "1 large object(s) in the source database" "a large object not reported"
check_expect 0 --json
python3 -c 'import json,sys; d=json.load(sys.stdin); codes={p["code"] for p in d["problems"]}
assert {"unlogged_table", "materialized_view", "large_objects"} <= codes, codes' \
  < "$work/pgshift.log" || fail "--json lacks the codes of what is not carried"
write_config "$src" "$dst" $'apply: {workers: 2}\ntables: {exclude: ["public.scratch", "public.order_totals"]}'
check_expect 0
lacks "warning: source: " "unlogged table" "an excluded unlogged table still reported"
lacks "warning: source: " "materialized view" "an excluded materialized view still reported"
has "warning: source: " "large object(s)" "the large object no longer reported"
psql_src "DROP TABLE scratch; DROP MATERIALIZED VIEW order_totals"
echo "ok: an unlogged table, a materialized view and a large object are reported as not carried (warnings, exit 0); tables.exclude silences the first two"

# 7c. Indexes and constraints the target lacks (made on the source later). With schema: verify a
# missing unique constraint is what a cutover will refuse (the statements to run named), a missing
# index a warning; with schema: copy both are warnings that run builds them. A rule on the target
# alone (it rejects rows the source accepts) is a warning: the statement that drops it, or that
# run drops it.
psql_src "CREATE INDEX orders_note_idx ON orders (note); ALTER TABLE items ADD CONSTRAINT items_name_key UNIQUE (name)"
psql_dst "ALTER TABLE items ADD CONSTRAINT items_name_short CHECK (length(name) < 100)"
# And privileges: a role that may read items on the source and not on the target, one the target lacks.
psql_src "CREATE ROLE chk_app; CREATE ROLE chk_report; GRANT SELECT ON items TO chk_app, chk_report"
psql_dst "CREATE ROLE chk_app"
psql_src "CREATE FUNCTION public.chk_total(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x + 1'"
# And row-level security the target's items lack (a cutover waits for it in either mode).
psql_src "ALTER TABLE items ENABLE ROW LEVEL SECURITY; CREATE POLICY chk_visible ON items FOR SELECT USING (id > 0)"
# And a value added to an enum type of a selected table's column on the source only.
for side in psql_src psql_dst; do $side "CREATE TYPE chk_mood AS ENUM ('a'); ALTER TABLE items ADD COLUMN mood chk_mood"; done
psql_src "ALTER TYPE chk_mood ADD VALUE 'b'"
write_config "$src" "$dst" $'apply: {workers: 2}\nschema: verify'
check_expect 0
has "warning: target: cutover will fail: " "unique constraint items_name_key of public.items exists on the source but not on the target: create it there: CREATE UNIQUE INDEX CONCURRENTLY items_name_key ON public.items USING btree (name); ALTER TABLE public.items ADD CONSTRAINT \"items_name_key\" UNIQUE USING INDEX \"items_name_key\"" \
  "a unique constraint the target lacks not reported as what cutover refuses"
has "warning: target: " "index orders_note_idx of public.orders exists on the source but not on the target: create it there: CREATE INDEX CONCURRENTLY orders_note_idx ON public.orders USING btree (note) (a cutover goes ahead without it" \
  "an index the target lacks not reported"
lacks "warning: target: cutover will fail: " "orders_note_idx" "a missing index under schema: verify reported as stopping the cutover"
has "warning: target: " "check constraint items_name_short of public.items is on the target but not on the source: the target rejects rows the source accepts (apply stops at the first; after a cutover, the application's writes fail): drop it there: ALTER TABLE public.items DROP CONSTRAINT IF EXISTS \"items_name_short\"" \
  "a rule on the target alone not reported"
has "warning: target: " "privileges of role chk_app (SELECT on public.items) are on the source but not on the target: the application connecting as chk_app after a cutover is refused there: grant them there: GRANT SELECT ON TABLE public.items TO \"chk_app\"" \
  "a role's missing privileges not reported"
has "warning: target: " "privileges of role chk_report (SELECT on public.items; USAGE on schema public) are on the source but not on the target: the application connecting as chk_report after a cutover is refused there: role chk_report does not exist on the target (pgshift copies no roles or passwords): create it there, then: GRANT SELECT ON TABLE public.items TO \"chk_report\"; ... (2 statements)" \
  "a missing role not reported"
has "warning: target: " "function public.chk_total(integer) exists on the source but not on the target: create it there: CREATE OR REPLACE FUNCTION public.chk_total(x integer) ... (pg_get_functiondef() on the source)" \
  "a function the target lacks not reported"
has "warning: target: cutover will fail: " "row-level security (on the source: enabled, 1 policy; on the target: off) of public.items differs between the servers: after a cutover the application's roles would see or change other rows on the new primary than on the old: make it the same there, in one transaction: CREATE POLICY chk_visible ON public.items AS PERMISSIVE FOR SELECT TO PUBLIC USING ((id > 0)); ... (2 statements)" \
  "row-level security the target lacks not reported as what cutover refuses"
has "warning: target: cutover will fail: " "value 'b' of enum type public.chk_mood exists on the source but not on the target: create it there: ALTER TYPE public.chk_mood ADD VALUE IF NOT EXISTS 'b' AFTER 'a'" \
  "an enum value the target lacks not reported as what cutover refuses"
# pgshift's target role owns no table there: enabling it would subject apply to the policies.
write_config "$src_user" "$dst_user"
check_expect 0
has "warning: target: cutover will fail: " "row-level security (on the source: enabled, 1 policy; on the target: off) of public.items differs between the servers: after a cutover the application's roles would see or change other rows on the new primary than on the old: row-level security would then apply to pgshift's role" \
  "row-level security that would subject pgshift's role not reported as done by hand"
has "warning: target: cutover will fail: " "BYPASSRLS (as a superuser) or make it the table's owner, then pgshift makes it the same (schema: copy)" \
  "row-level security that would subject pgshift's role: the fix not named"
write_config
check_expect 0
has "warning: target: " "row-level security (on the source: enabled, 1 policy; on the target: off) of public.items differs between the servers: after a cutover the application's roles would see or change other rows on the new primary than on the old: pgshift run makes it the same there once streaming (schema: copy), and a cutover waits for that" \
  "row-level security run makes the same not reported as such"
has "warning: target: " "value 'b' of enum type public.chk_mood exists on the source but not on the target: pgshift run adds it there once streaming (schema: copy)" \
  "an enum value run adds not reported as such"
has "warning: target: " "check constraint items_name_short of public.items is on the target but not on the source: the target rejects rows the source accepts (apply stops at the first; after a cutover, the application's writes fail): pgshift run drops it there once streaming (schema: copy)" \
  "a rule run drops not reported as such"
has "warning: target: " "privileges of role chk_app (SELECT on public.items) are on the source but not on the target: the application connecting as chk_app after a cutover is refused there: pgshift run grants them there once streaming (schema: copy)" \
  "privileges run grants not reported as such"
has "warning: target: " "unique constraint items_name_key of public.items exists on the source but not on the target: pgshift run builds it there once streaming (schema: copy)" \
  "a constraint run builds not reported as such"
lacks "warning: target: cutover will fail: " "items_name_key" "a constraint run builds reported as stopping the cutover"
psql_src "DROP INDEX orders_note_idx; ALTER TABLE items DROP CONSTRAINT items_name_key"
psql_dst "ALTER TABLE items DROP CONSTRAINT items_name_short; DROP ROLE chk_app"
psql_src "REVOKE SELECT ON items FROM chk_app, chk_report; DROP ROLE chk_app; DROP ROLE chk_report; DROP FUNCTION public.chk_total(integer)"
psql_src "DROP POLICY chk_visible ON items; ALTER TABLE items DISABLE ROW LEVEL SECURITY"
for side in psql_src psql_dst; do $side "ALTER TABLE items DROP COLUMN mood; DROP TYPE chk_mood"; done
echo "ok: indexes, constraints, privileges and row-level security the target lacks, a missing role, and a rule the target alone has, are reported (schema: verify: a unique constraint or row-level security stops the cutover, with the statements; schema: copy: run builds or drops them)"

# 8. An invalid config file exits 78 with the key named.
echo "unknown_key: 1" >> "$work/pgshift.yaml"
check_expect 78
grep -q "unknown_key" "$work/pgshift.log" || fail "the unknown key is not named"
echo "ok: an invalid config file exits 78"

# 9. What check passed, run does: the two non-superuser roles stream a change.
write_config "$src_user" "$dst_user"
check_expect 0
"$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 & daemon=$!
wait_ready "$api" 30 "pgshift run does not start with roles check passed"
psql_src "INSERT INTO orders VALUES (1, 9.50, 'checked'); UPDATE orders SET note = 'still' WHERE id = 1"
for _ in $(seq 1 100); do [ "$(psql_dst "SELECT note FROM orders WHERE id = 1")" = still ] && break; sleep 0.2; done
[ "$(psql_dst "SELECT note FROM orders WHERE id = 1")" = still ] || fail "the change did not reach the target"
kill -TERM "$daemon"; wait "$daemon" || fail "SIGTERM exit code"
daemon=""
grep -q "not migrated: 1 large object(s) in the source database" "$work/pgshift.log" ||
  fail "run does not warn about the large object"
echo "ok: with the roles check passed, pgshift run streams, and warns about the large object"
echo "check: all checks passed"
