#!/usr/bin/env bash
# README: regenerates the golden pgoutput captures (*.hex, one hex message per line) from a throwaway PostgreSQL cluster.
#
# Usage:  tests/unit/protocol/golden/capture.sh [PGBIN]
#   PGBIN    directory holding initdb/pg_ctl/psql (default /usr/lib/postgresql/15/bin)
#   PGPORT   port of the throwaway cluster (default 55999); it listens on a Unix socket only
#   GOLDEN_OUT  where to write the .hex files (default: this directory); point it elsewhere to
#               compare a fresh capture with the committed one without replacing it
#
# The cluster lives in a fresh temporary directory and is stopped and deleted on exit. Run as
# root, the server commands run as user "postgres" (PostgreSQL refuses to run as root).
#
# Each scenario gets its own slot created just before its workload, so one file holds exactly
# that scenario (plus the Relation/Type messages a new decoding session always re-sends). The
# files are read with pg_logical_slot_peek_binary_changes, which yields exactly the payloads a
# walsender would put in 'w' frames.
#
# The tests in tests/unit/protocol/ assert concrete values of these captures (xids, OIDs, LSNs,
# timestamps, message positions). Re-running on the same PostgreSQL build reproduced every byte
# except commit timestamps; another version or build may shift xids, OIDs and LSNs as well, so
# update the tests together with the files.
#
# Lines starting with '#' in a .hex file are comments; the first ones record how it was made.
set -euo pipefail

PGBIN=${1:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-55999}
OUT=${GOLDEN_OUT:-$(cd "$(dirname "$0")" && pwd)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pgshift-golden.XXXXXX)

# The server binaries must not run as root; psql may, but running everything as the same
# user keeps the socket and file permissions simple.
if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$WORK"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -E UTF8 --locale=C >/dev/null
# 64kB (the minimum) makes modest transactions stream; listen_addresses='' keeps it off TCP.
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -w -l "$WORK/log" \
    -o "-p $PGPORT -k $WORK -c listen_addresses='' -c wal_level=logical -c logical_decoding_work_mem=64kB" start >/dev/null

sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -d postgres -At "$@"; }

server_version=$(sql -c "SHOW server_version")

# Incompressible ~100 kB text: stored out of line (STORAGE EXTERNAL) as ~50 TOAST chunks,
# which alone exceed logical_decoding_work_mem and force the transaction to stream.
BIG="(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3200) i)"

sql >/dev/null <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);

CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), note text);

CREATE TABLE audit_full (id int, label text, amount bigint);
ALTER TABLE audit_full REPLICA IDENTITY FULL;

CREATE TABLE ri_index (code int NOT NULL, descr text);
CREATE UNIQUE INDEX ri_index_code ON ri_index (code);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_code;

CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE TABLE people (id int PRIMARY KEY, feeling mood, age posint, tags text[]);

CREATE TABLE parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
CREATE TABLE child (id bigserial PRIMARY KEY, parent_id bigint REFERENCES parent (id));

-- payload is left out of the publication's column list: its TOAST chunks fill the reorder
-- buffer (so the xact streams) while the Insert messages stay a few bytes long.
-- Not published: a write to it commits (and so flushes WAL) without producing messages.
CREATE TABLE unpublished (x int);

CREATE TABLE big (id int PRIMARY KEY, feeling mood, payload text);
ALTER TABLE big ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE PUBLICATION pgshift_pub FOR TABLE accounts, audit_full, ri_index, docs, people, parent, child,
    big (id, feeling);

-- Rows that exist before the slots: only their later changes are captured.
INSERT INTO audit_full VALUES (1, 'first', 10), (2, 'second', NULL);
INSERT INTO ri_index VALUES (7, 'seven');
SQL
sql -c "INSERT INTO docs VALUES (1, 'draft', repeat('lorem ipsum ', 250))" >/dev/null  # 3000 bytes, TOASTed

SELECT_OPTS_V1="'proto_version', '1', 'publication_names', 'pgshift_pub', 'messages', 'true'"
SELECT_OPTS_V2="'proto_version', '2', 'publication_names', 'pgshift_pub', 'messages', 'true', 'streaming', 'on'"

new_slot() { sql -c "SELECT 1 FROM pg_create_logical_replication_slot('$1', 'pgoutput')" >/dev/null; }

# capture FILE SLOT OPTIONS DESCRIPTION: writes the slot's pending messages, then drops the slot.
capture() {
    local file=$1 slot=$2 opts=$3 descr=$4
    {
        echo "# $descr"
        echo "# PostgreSQL $server_version, pg_logical_slot_peek_binary_changes options: $opts"
        sql -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('$slot', NULL, NULL, $opts)"
    } >"$OUT/$file"
    sql -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
    echo "wrote $file ($(grep -vc '^#' "$OUT/$file") messages)"
}

# --- DML on a primary-key table: NULLs, update without and with key change, delete.
new_slot s_dml
sql >/dev/null <<'SQL'
INSERT INTO accounts VALUES (1, 'alice', 100.50, NULL), (2, 'bob', NULL, 'vip');
UPDATE accounts SET balance = 75.25 WHERE id = 1;
UPDATE accounts SET id = 3 WHERE id = 2;
DELETE FROM accounts WHERE id = 1;
SQL
capture dml_pk_v1.hex s_dml "$SELECT_OPTS_V1" \
    "accounts (PK): xact1 insert 2 rows; xact2 update non-key; xact3 update key 2->3; xact4 delete id 1"

# --- REPLICA IDENTITY FULL ('O' old tuples) and USING INDEX ('i', 'K' on key change).
new_slot s_ri
sql >/dev/null <<'SQL'
UPDATE audit_full SET amount = 20 WHERE id = 1;
DELETE FROM audit_full WHERE id = 2;
UPDATE ri_index SET code = 8 WHERE code = 7;
SQL
capture replica_identity_v1.hex s_ri "$SELECT_OPTS_V1" \
    "audit_full (FULL): update id 1 amount 10->20; delete id 2 (amount NULL); ri_index (USING INDEX): code 7->8"

# --- Unchanged TOASTed column: 'u' in the new tuple.
new_slot s_toast
sql -c "UPDATE docs SET title = 'final' WHERE id = 1" >/dev/null
capture toast_unchanged_v1.hex s_toast "$SELECT_OPTS_V1" \
    "docs: update title of a row whose 3000-byte body is stored out of line (body unchanged)"

# --- User types: enum and domain columns make pgoutput send Type messages before the Relation.
new_slot s_types
sql -c "INSERT INTO people VALUES (1, 'happy', 42, '{a,\"b c\"}'), (2, NULL, NULL, NULL)" >/dev/null
capture types_v1.hex s_types "$SELECT_OPTS_V1" \
    "people: enum mood, domain posint, text[]; one full row and one all-NULL row"

# --- TRUNCATE ... RESTART IDENTITY CASCADE: one Truncate listing both tables, flags 3.
new_slot s_trunc
sql >/dev/null <<'SQL'
INSERT INTO parent (name) VALUES ('p1');
INSERT INTO child (parent_id) VALUES (1);
TRUNCATE parent RESTART IDENTITY CASCADE;
SQL
capture truncate_v1.hex s_trunc "$SELECT_OPTS_V1" \
    "parent/child: insert one row each (2 xacts), then TRUNCATE parent RESTART IDENTITY CASCADE"

# --- Logical messages, transactional (inside Begin/Commit) and not (standalone).
new_slot s_msg
sql >/dev/null <<'SQL'
BEGIN;
SELECT pg_logical_emit_message(true, 'pgshift', 'txn-msg');
INSERT INTO accounts VALUES (10, 'msg', 0, NULL);
COMMIT;
SELECT pg_logical_emit_message(false, 'pgshift-cutover', '\x00ff01'::bytea);
-- A non-transactional message is not flushed by itself and decoding stops at the flush
-- position; this commit flushes it (PG16+ has pg_logical_emit_message(..., flush => true)).
INSERT INTO unpublished VALUES (1);
SQL
capture messages_v1.hex s_msg "$SELECT_OPTS_V1" \
    "transactional message 'txn-msg' + insert; then non-transactional message with bytes 00 ff 01"

# --- Replication origin: an Origin message right after Begin.
new_slot s_origin
sql >/dev/null <<'SQL'
SELECT pg_replication_origin_create('pgshift_w0');
SELECT pg_replication_origin_session_setup('pgshift_w0');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF0', '2026-01-02 03:04:05.678901+00');
INSERT INTO accounts VALUES (11, 'from-origin', 1, NULL);
COMMIT;
SQL
capture origin_v1.hex s_origin "$SELECT_OPTS_V1" \
    "insert from a session with origin pgshift_w0, xact_setup('0/ABCDEF0', '2026-01-02 03:04:05.678901+00')"

# --- Binary column format ('b' values).
new_slot s_bin
sql -c "INSERT INTO accounts VALUES (12, 'bin', 12.34, NULL)" >/dev/null
capture binary_v1.hex s_bin "$SELECT_OPTS_V1, 'binary', 'true'" \
    "insert with binary 'true': int4/text/numeric sent in binary send format, NULL as 'n'"

# --- Streaming (proto 2). Decoding runs after everything has finished, so aborted
# (sub)transactions are already aborted when their changes are decoded: a change whose output
# needs a catalog lookup (enum_out reads pg_enum) then hits PostgreSQL's "concurrent abort"
# path, which ends the block early. The subtransaction therefore inserts into big with a NULL
# enum (its changes arrive whole), while xact B's enum value cuts its block short after the
# Type and Relation messages: a real-world block with schema but no change.
new_slot s_stream
sql >/dev/null <<SQL
BEGIN;
INSERT INTO accounts VALUES (20, 'streamed', 1, NULL);
SELECT pg_logical_emit_message(true, 'pgshift', 'in-stream');
INSERT INTO big VALUES (1, 'ok', $BIG);
SAVEPOINT sp;
INSERT INTO accounts VALUES (30, 'in-sub', 3, NULL);
INSERT INTO big VALUES (2, NULL, $BIG);
ROLLBACK TO SAVEPOINT sp;
UPDATE accounts SET note = 'after rollback' WHERE id = 20;
COMMIT;
BEGIN;
INSERT INTO big VALUES (3, 'happy', $BIG);
ROLLBACK;
INSERT INTO accounts VALUES (21, 'plain v2', 2, NULL);
SQL
capture stream_v2.hex s_stream "$SELECT_OPTS_V2" \
    "xact A streamed: [accounts 20, message 'in-stream', big 1] [subxact: accounts 30, big 2] subxact Stream Abort [new subxact: update accounts 20] Stream Commit; xact B streamed: [big 3, cut short by concurrent abort] Stream Abort; xact C plain: insert accounts 21"
