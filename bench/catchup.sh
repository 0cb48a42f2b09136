#!/usr/bin/env bash
# Catch-up benchmark: one pgbench backlog on the source, drained by every consumer from its own
# slot, in the same run. Prints ratios against PostgreSQL's own tools:
#   reader   pgshift's reader (apply blocked) vs pg_recvlogical draining pgoutput to /dev/null
#   apply    pgshift's full catch-up with apply.workers 1, 2 and 4 vs a native subscription
#            (CREATE SUBSCRIPTION), and each worker count vs 1 worker
#   control  pgshift's catch-up while /metrics is scraped 20 times a second and /v1/status polled,
#            vs without: three runs of each, alternating, compared by their total time
#   delay    pgshift with apply.workers 1, 2, 4 and 8 writing to the target through
#            bench/delay_proxy.py (2.5 ms each way: a 5 ms round trip), vs its own zero-delay run
# and, for every consumer, the CPU seconds spent during its catch-up by the source cluster (every
# process of its postmaster: walsender, checkpointer, ...), by the target cluster and by the
# consumer itself, and pgshift's peak RSS (see bench/cpu.sh; the accounting notes are at cpu_begin).
#
# Usage: bench/catchup.sh [SECONDS_OF_PGBENCH] [SCALE]   (defaults 30, 10). Needs a built pgshift.
#   WORKLOAD=pgbench (default): pgbench's TPC-B-like transactions (3 updates and 1 insert each).
#   WORKLOAD=inserts: insert-heavy: each transaction inserts one row into each of 3 tables of 10
#   columns (integers, timestamps, numeric, jsonb, uuid, and a text column over 2 kB in 1 row of 3).
#   The backlog is pgbench -c 4 -j 2 for SECONDS at SCALE: 30 s at scale 10 gives ~50,000
#   transactions on the 2-core development machine. TXNS=50000 writes exactly that many instead
#   (pgbench -t TXNS/4 per client; SECONDS is then ignored), for the same backlog on any machine.
# Environment:
#   WORKERS="1 2 4"          apply.workers of the zero-delay pgshift runs ("vs 1 worker" needs 1)
#   DELAY=0                  skips the delay scenario (default on: pgshift sends many
#                            transactions per round trip, so the runs through the proxy take
#                            seconds each; one that waited a 5 ms round trip per transaction
#                            would need ~4 minutes for 50,000 transactions with one worker)
#   DELAY_MS=2.5             one-way delay of the proxy in milliseconds
#   DELAY_WORKERS="1 2 4 8"  apply.workers of the runs through the proxy
#   CONTROL=0                skips the control-plane overhead runs
#   TIMELINE=1               also prints, for each pgshift run, WAL received and transactions
#                            applied every 250 ms (from /metrics), to see where a run loses time
#   PROBE=1                  also prints what the target's sessions waited on during each catch-up
#                            (its queries run on the target: they inflate the target CPU column)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
scale=${2:-10}
txns=${TXNS:-}
workload=${WORKLOAD:-pgbench}
case $workload in
  pgbench) tables="pgbench_accounts pgbench_tellers pgbench_branches pgbench_history" ;;
  inserts) tables="ev1 ev2 ev3" ;;
  *) echo "WORKLOAD is pgbench or inserts, got '$workload'"; exit 1 ;;
esac
workers=${WORKERS:-1 2 4}
delay=${DELAY:-1}
delay_ms=${DELAY_MS:-2.5}
delay_workers=${DELAY_WORKERS:-1 2 4 8}
bin="${PGSHIFT_BUILD_DIR:-$root/build}/src/daemon/pgshift"
[ -x "$bin" ] || { echo "build pgshift first (scripts/build.sh)"; exit 1; }
for n in $workers $delay_workers; do
  [[ "$n" =~ ^[0-9]+$ && $n -ge 1 && $n -le 64 ]] || { echo "worker counts are 1-64, got '$n'"; exit 1; }
done
[ -n "$workers" ] || { echo "WORKERS must name at least one worker count"; exit 1; }
[ "$delay" = 1 ] || delay_workers=""
[[ -z "$txns" || "$txns" =~ ^[0-9]+$ ]] || { echo "TXNS must be a number, got '$txns'"; exit 1; }

# One slot per consumer on the source (up to 4 + 4 + 6 control runs + reader + 2 references); on
# the target one replication origin per apply worker of every run, each holding one of the
# max_replication_slots progress entries for good. No timed checkpoint inside a measured run
# (each run starts with an explicit one).
PAIR_SOURCE_SETTINGS=(max_wal_size=4GB max_replication_slots=40 max_wal_senders=40 checkpoint_timeout=1h)
PAIR_TARGET_SETTINGS=(max_wal_size=4GB max_replication_slots=400 checkpoint_timeout=1h)
source "$root/scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null'
dst_base="host=127.0.0.1 port=$dst_port user=postgres"
psql_dst() { "$pgbin/psql" -X -q -A -t -d "$dst_base dbname=$1" -c "$2"; } # DB, SQL
now() { date +%s.%N; }

# The polls of the source during a measured run go through one long-lived psql session: a new
# connection per poll costs the source ~3 ms of CPU (backend start and exit): at 20 polls a second,
# 6 % of a core in the source CPU column. A query in the open session costs ~0.1 ms.
coproc SRCQ { exec "$pgbin/psql" -X -q -A -t -d "$src" 2>>"$work/poll.err"; }
poll_pid=$SRCQ_PID # bash unsets SRCQ_PID once the coprocess is gone
on_exit 'kill "$poll_pid" 2>/dev/null'
poll_src() { # SQL returning one row of one column -> that value
  local line
  echo "$1;" >&"${SRCQ[1]}"
  IFS= read -r -t 30 line <&"${SRCQ[0]}" || { echo "source poll failed: $1" >&2; cat "$work/poll.err" >&2; return 1; }
  echo "$line"
}

# Identical starting data everywhere: pgbench's initial data is deterministic.
"$pgbin/pgbench" -i -q -s "$scale" -d "$src" >/dev/null 2>&1
# pgbench_history has no key; pgshift only publishes tables the source can still update. It is
# insert-only, so REPLICA IDENTITY FULL changes nothing for either consumer.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
psql_dst postgres "CREATE DATABASE t_base"
"$pgbin/pgbench" -i -q -s "$scale" -d "$dst_base dbname=t_base" >/dev/null 2>&1
script=()
if [ "$workload" = inserts ]; then
  ev_sql=""
  for t in ev1 ev2 ev3; do
    ev_sql+="CREATE TABLE $t (id bigserial PRIMARY KEY, account int NOT NULL, amount bigint, note text,
               created_at timestamptz NOT NULL DEFAULT now(), price numeric(12,2), body text, flag boolean,
               attrs jsonb, ref uuid);"
  done
  psql_src "$ev_sql"; psql_dst t_base "$ev_sql"
  cat > "$work/inserts.sql" <<'SQL'
\set a random(1, 1000000)
\set big random(1, 3)
BEGIN;
INSERT INTO ev1 (account, amount, note, price, body, flag, attrs, ref) VALUES (:a, :a * 7, 'deposit ' || :a, :a / 100.0,
  CASE WHEN :big = 1 THEN (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 70)) END, :a % 2 = 0,
  jsonb_build_object('a', :a, 'k', 'v'), gen_random_uuid());
INSERT INTO ev2 (account, amount, note, price, body, flag, attrs, ref) VALUES (:a, -:a, 'fee', 1.50,
  CASE WHEN :big = 2 THEN (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 70)) END, true,
  jsonb_build_object('a', :a), gen_random_uuid());
INSERT INTO ev3 (account, amount, note, price, body, flag, attrs, ref) VALUES (:a, 0, 'audit', NULL,
  CASE WHEN :big = 3 THEN (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 70)) END, false,
  '{}', gen_random_uuid());
END;
SQL
  script=(-f "$work/inserts.sql")
fi
control_runs="bq1 bs1 bq2 bs2 bq3 bs3" # q = quiet, s = scraped; alternating against drift
[ "${CONTROL:-1}" = 1 ] || control_runs=""
apply_runs="$(for n in $workers; do echo "bw$n"; done) $(for n in $delay_workers; do echo "bd$n"; done)"
target_db() { case $1 in breader) echo t_reader ;; bw*) echo "t_w${1#bw}" ;; bd*) echo "t_d${1#bd}" ;; *) echo "t_$1" ;; esac; }
for db in t_native t_reader $(for r in $apply_runs $control_runs; do target_db "$r"; done); do
  psql_dst postgres "CREATE DATABASE $db TEMPLATE t_base"
done

# The slow network: pgshift's target conninfo of the bd* runs points at the proxy.
proxy=""
if [ -n "$delay_workers" ]; then
  proxy_port=$(free_port)
  python3 "$root/bench/delay_proxy.py" "$proxy_port" 127.0.0.1 "$dst_port" "$delay_ms" >"$work/proxy.out" 2>&1 &
  proxy=$!
  on_exit 'kill "$proxy" 2>/dev/null'
  for _ in $(seq 1 100); do grep -q ready "$work/proxy.out" 2>/dev/null && break; sleep 0.05; done
  grep -q ready "$work/proxy.out" || { echo "delay proxy did not start"; cat "$work/proxy.out"; exit 1; }
fi

# Every consumer's slot exists before the backlog is written.
config() { # name target_db port [workers [target_port]]
  local apply="max_queue_bytes: 1073741824"
  [ -n "${4:-}" ] && apply="workers: $4, $apply"
  cat > "$work/$1.yaml" <<YAML
name: $1
source: {conninfo: "$src"}
target: {conninfo: "host=127.0.0.1 port=${5:-$dst_port} user=postgres dbname=$2"}
initial_copy: {enabled: false}
apply: {$apply}
control: {listen: "127.0.0.1:$3"}
log: {level: warn}
YAML
}
ctl_port=$(free_port)
start_daemon() { "$bin" run --config "$work/$1.yaml" >>"$work/$1.log" 2>&1 & daemon=$!; }
stop_daemon() { kill -TERM "$daemon"; wait "$daemon" || true; daemon=""; }
wait_active() {
  for _ in $(seq 1 200); do
    [ "$(psql_src "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_$1'")" = "t" ] && return 0
    sleep 0.1
  done
  echo "pgshift $1 did not start"; cat "$work/$1.log"; exit 1
}
for n in $apply_runs breader $control_runs; do
  case $n in
    bw*) config "$n" "$(target_db "$n")" "$ctl_port" "${n#bw}" ;;
    bd*) config "$n" "$(target_db "$n")" "$ctl_port" "${n#bd}" "$proxy_port" ;;
    *) config "$n" "$(target_db "$n")" "$ctl_port" ;;
  esac
  start_daemon "$n"; wait_active "$n"; stop_daemon
done
# The references read what the first pgshift run publishes (every pgshift publication is the same).
pub="pgshift_bw$(echo "$workers" | awk '{ print $1 }')"
psql_src "SELECT pg_create_logical_replication_slot('b_recvlogical', 'pgoutput')" >/dev/null
psql_src "SELECT pg_create_logical_replication_slot('b_native', 'pgoutput')" >/dev/null
psql_dst t_native "CREATE SUBSCRIPTION b_native CONNECTION '$src' PUBLICATION $pub
                   WITH (create_slot = false, slot_name = 'b_native', enabled = false, copy_data = false)"

if [ -n "$txns" ]; then
  echo "== backlog: pgbench -c 4 -t $((txns / 4)) at scale $scale on the source (no consumer running)"
  length=(-t "$((txns / 4))")
else
  echo "== backlog: pgbench -c 4 -T $seconds at scale $scale on the source (no consumer running)"
  length=(-T "$seconds")
fi
"$pgbin/pgbench" -n -c 4 -j 2 "${length[@]}" ${script[@]+"${script[@]}"} -d "$src" 2>/dev/null | tee "$work/pgbench.out" |
  grep -E "^(number of transactions actually|tps)" | sed 's/^/   /'
ntx=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$work/pgbench.out")
[ -n "$ntx" ] && [ "$ntx" -gt 0 ] || { echo "pgbench wrote no transaction"; cat "$work/pgbench.out"; exit 1; }
endpos=$(psql_src "SELECT pg_current_wal_lsn()")
backlog=$(psql_src "SELECT pg_size_pretty(pg_wal_lsn_diff('$endpos', confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = 'b_recvlogical'")
echo "   WAL to decode: $backlog (up to $endpos)"
# The source's autovacuum would otherwise wake up during whichever run comes first.
psql_src "VACUUM ANALYZE"

if [ -n "$proxy" ]; then # the round trip the proxy adds, measured with SELECT 1
  echo "SELECT 1;" > "$work/select1.sql"
  latency() { "$pgbin/pgbench" -n -c 1 -t 400 -f "$work/select1.sql" -d "host=127.0.0.1 port=$1 user=postgres dbname=postgres" 2>/dev/null |
                sed -nE 's/^latency average = ([0-9.]+) ms$/\1/p'; }
  echo "== delay proxy: $delay_ms ms each way; SELECT 1 round trip $(latency "$proxy_port") ms through it, $(latency "$dst_port") ms direct"
fi

caught_up() { # slot
  [ "$(poll_src "SELECT confirmed_flush_lsn >= '$endpos' FROM pg_replication_slots WHERE slot_name = '$1'")" = "t" ]
}
# Each measured run starts right after a checkpoint on the target, so every consumer pays the same
# full-page-write cost (a checkpoint falling inside one run otherwise dominates the comparison).
# The source's is for the CPU columns: nothing left for its checkpointer to write during a run.
checkpoint() { psql_dst postgres "CHECKPOINT"; psql_src "CHECKPOINT"; }
# ...and after each run its target database is vacuumed, so that the autovacuum its changes call
# for does not land in the next consumer's run (a run's own autovacuum counts in its target CPU).
settle() { psql_dst "$1" "VACUUM ANALYZE"; } # DB
time_until_caught_up() { # slot -> seconds since $t0
  local next_sample=0
  while ! caught_up "$1"; do
    if [ -n "${TIMELINE:-}" ] && [ "${1#pgshift_}" != "$1" ] && [ "$(echo "$(now) >= $next_sample" | bc)" = 1 ]; then
      curl -s "http://127.0.0.1:$ctl_port/metrics" | awk -v t="$(echo "$(now) - $t0" | bc)" -v run="$1" '
        /^pgshift_received_lsn_bytes / { r = $2 } /^pgshift_transactions_applied_total / { a = $2 }
        /^pgshift_queue_bytes / { q = $2 }
        END { printf "   %s %5.2f s: received %.1f MB of WAL, applied %d transactions, queue %.1f MB\n", run, t, r / 1048576, a, q / 1048576 }' >&2
      next_sample=$(echo "$(now) + 0.25" | bc)
    fi
    [ -n "${PROBE:-}" ] && psql_dst postgres "select datname, state, wait_event_type, wait_event, left(query, 40) from pg_stat_activity where backend_type = 'client backend' and state <> 'idle'" >> "$work/waits"
    sleep 0.05; done
  [ -n "${PROBE:-}" ] && sort "$work/waits" | uniq -c | sort -rn | head -12 >&2 && rm -f "$work/waits"
  echo "$(now) - $t0" | bc
}

# CPU seconds of a run: /proc utime+stime of each postmaster's whole process tree (the postmaster,
# its children: walsenders, backends, apply workers, checkpointer, autovacuum...; plus cutime+cstime,
# which hold the children it has reaped, e.g. a backend that exited during the run) and of the
# consumer's, sampled just before the consumer starts and just after it has caught up.
# Not counted: this script and its psql/curl polls (but the source session answering the polls
# is: one short query every 50 ms), the delay proxy, and the kernel's work outside process
# context (loopback networking in softirq is charged to whichever process was interrupted).
hz=$(getconf CLK_TCK)
src_pm=$(head -n 1 "$work/source/postmaster.pid")
dst_pm=$(head -n 1 "$work/target/postmaster.pid")
declare -A wall cpu_src cpu_dst cpu_own rss
cpu_begin() { read -r -a cpu0 <<< "$("$root/bench/cpu.sh" ticks "$src_pm" "$dst_pm")"; }
cpu_end() { # run seconds [consumer_pid | -seconds_of_consumer_cpu]
  local c1 own=${3:-0} pid=0
  [[ "$own" =~ ^[0-9]+$ ]] && pid=$own
  read -r -a c1 <<< "$("$root/bench/cpu.sh" ticks "$src_pm" "$dst_pm" "$pid")"
  wall[$1]=$2
  cpu_src[$1]=$(printf %.2f "$(echo "scale=4; (${c1[0]} - ${cpu0[0]}) / $hz" | bc)")
  cpu_dst[$1]=$(printf %.2f "$(echo "scale=4; (${c1[1]} - ${cpu0[1]}) / $hz" | bc)")
  if [ "$own" = 0 ]; then cpu_own[$1]=""
  elif [ "${own:0:1}" = - ]; then cpu_own[$1]=${own#-}
  else
    cpu_own[$1]=$(printf %.2f "$(echo "scale=4; ${c1[2]} / $hz" | bc)") # a consumer started inside the run
    rss[$1]=$(( $("$root/bench/cpu.sh" hwm "$own") / 1024 ))
  fi
}

# 1. pg_recvlogical: the decoding limit of the source. Its CPU: `times` in the subshell that
# waited for it (its own utime+stime; /proc/<pid> is gone once it exits at endpos).
checkpoint; cpu_begin; t0=$(now)
( "$pgbin/pg_recvlogical" -d "$src" -S b_recvlogical --start -P pgoutput -o proto_version=1 \
    -o publication_names="$pub" -f /dev/null -E "$endpos" --no-loop -s 1
  times > "$work/recv.times" )
t_recv=$(echo "$(now) - $t0" | bc)
cpu_end recv "$t_recv" "-$(sed -n 2p "$work/recv.times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%.2f", s }')"

# 2. pgshift's reader alone: apply is blocked by a lock on the target, the queue is unbounded.
received() { curl -s "http://127.0.0.1:$ctl_port/v1/status" | sed -nE 's/.*"received":"([0-9A-F]+\/[0-9A-F]+)".*/\1/p'; }
reader_done() { local lsn; lsn=$(received || true); [ -n "$lsn" ] && [ "$(poll_src "SELECT '$lsn'::pg_lsn >= '$endpos'")" = "t" ]; }
"$pgbin/psql" -X -q -d "$dst_base dbname=t_reader" -c "BEGIN; LOCK ${tables// /, }; SELECT pg_sleep(600)" >/dev/null 2>&1 &
locker=$!
sleep 0.5
checkpoint; cpu_begin; t0=$(now)
start_daemon breader
until reader_done; do sleep 0.05; done
t_reader=$(echo "$(now) - $t0" | bc)
cpu_end reader "$t_reader" "$daemon"
kill -9 "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
kill "$locker" 2>/dev/null || true; wait "$locker" 2>/dev/null || true
# End the lock holder and the blocked apply session: an open transaction would hold back the
# target's xmin horizon and slow every later run down (dead row versions cannot be pruned).
# (stderr: a session that ends by itself meanwhile draws a harmless "not a PostgreSQL backend" warning.)
psql_dst postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 't_reader'" >/dev/null 2>&1

# 3. pgshift end to end per worker count vs 4. the native subscription, then 3b. through the proxy.
apply_run() { # run
  checkpoint; cpu_begin; t0=$(now); start_daemon "$1"
  t=$(time_until_caught_up "pgshift_$1"); cpu_end "$1" "$t" "$daemon"
  # How apply spent it: batches (source transactions per target commit), statements, and where
  # batches waited (for a worker, for an earlier conflicting batch, at the commit gate).
  curl -s "http://127.0.0.1:$ctl_port/metrics" | awk -v run="$1" '
    /^pgshift_apply_batches_total / { b = $2 } /^pgshift_apply_statements_total / { st = $2 }
    /^pgshift_apply_batches_chained_total / { ch = $2 }
    /^pgshift_apply_batches_one_round_trip_total / { one = $2 }
    /^pgshift_apply_retries_total/ { r += $2 }
    /^pgshift_apply_wait_seconds_total/ { match($0, /stage="[a-z_]+"/); w = w " " substr($0, RSTART + 7, RLENGTH - 8) " " sprintf("%.2f s", $2) }
    END { printf "   %s: %d batches (%d chained, %d in one round trip), %d statements, %d retries; waits:%s\n", run, b, ch, one, st, r, w }'
  stop_daemon
  settle "$(target_db "$1")"
}
for n in $workers; do apply_run "bw$n"; done
checkpoint; cpu_begin; t0=$(now); psql_dst t_native "ALTER SUBSCRIPTION b_native ENABLE"
t_native=$(time_until_caught_up b_native); cpu_end native "$t_native"
psql_dst t_native "ALTER SUBSCRIPTION b_native DISABLE"
settle t_native
proxy_ticks=0
if [ -n "$proxy" ]; then # the proxy shares the cores: its CPU, for reading the delay runs' times
  proxy_ticks=$("$root/bench/cpu.sh" ticks "$proxy")
  for n in $delay_workers; do apply_run "bd$n"; done
  proxy_ticks=$(( $("$root/bench/cpu.sh" ticks "$proxy") - proxy_ticks ))
fi

# 5. control-plane overhead: the same catch-up without and with 20 scrapes/s and status polling.
t_quiet=0; t_scraped=0; runs_quiet=""; runs_scraped=""
for n in $control_runs; do
  checkpoint
  start_daemon "$n"
  scraper=""; poller=""
  if [ "${n:1:1}" = s ]; then
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/livez" && break; sleep 0.05; done
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/metrics"; sleep 0.05; done ) &
    scraper=$!
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$ctl_port/v1/status"; sleep 0.2; done ) &
    poller=$!
  fi
  t0=$(now); t=$(time_until_caught_up "pgshift_$n")
  [ -n "$scraper" ] && { kill "$scraper" "$poller"; wait "$scraper" "$poller" 2>/dev/null || true; }
  stop_daemon
  if [ "${n:1:1}" = s ]; then
    t_scraped=$(echo "$t_scraped + $t" | bc); runs_scraped="$runs_scraped $(printf %.2f "$t")"
  else
    t_quiet=$(echo "$t_quiet + $t" | bc); runs_quiet="$runs_quiet $(printf %.2f "$t")"
  fi
done

# Every target must hold exactly the source's data: every row of every table.
table_md5() { echo "(SELECT coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM $1 x)"; }
digest="SELECT ''"
for t in $tables; do digest+=" || $(table_md5 "$t")"; done
want=$(psql_src "$digest")
for db in t_native $(for r in $apply_runs $control_runs; do target_db "$r"; done); do
  [ "$(psql_dst "$db" "$digest")" = "$want" ] || { echo "target $db differs from the source"; exit 1; }
done

ratio() { printf %.2f "$(echo "scale=4; $1 / $2" | bc)"; }
printf "\n| measure | pgshift | reference | ratio (pgshift rate / reference rate) |\n|---|---|---|---|\n"
printf "| reader drain of the backlog | %.2f s | pg_recvlogical %.2f s | %s |\n" "$t_reader" "$t_recv" "$(ratio "$t_recv" "$t_reader")"
for n in $workers; do
  printf "| catch-up, end to end, apply.workers %s | %.2f s | native subscription %.2f s | %s |\n" \
    "$n" "${wall[bw$n]}" "$t_native" "$(ratio "$t_native" "${wall[bw$n]}")"
done
[ -n "$control_runs" ] &&
  printf "| catch-up with 20 scrapes/s + status polls, 3 runs | %.2f s (%s) | without %.2f s (%s) | %s |\n" \
    "$t_scraped" "${runs_scraped# }" "$t_quiet" "${runs_quiet# }" "$(ratio "$t_quiet" "$t_scraped")"

# The per-consumer table: rates as ratios (> 1 = faster than the reference), CPU in seconds, and
# the CPU per 10,000 source transactions (source / target / consumer), where a change shows.
per10k() { [ -n "$1" ] && printf %.2f "$(echo "scale=6; $1 * 10000 / $ntx" | bc)" || echo "-"; }
row() { # run label ratio1 ratio2
  printf "| %s | %.2f | %s | %s | %s | %s / %s / %s | %s | %s | %s |\n" "$2" "${wall[$1]}" "${cpu_src[$1]}" "${cpu_dst[$1]}" \
    "${cpu_own[$1]:-(in target)}" "$(per10k "${cpu_src[$1]}")" "$(per10k "${cpu_dst[$1]}")" "$(per10k "${cpu_own[$1]:-}")" \
    "${rss[$1]:--}" "$3" "$4"
}
vs() { [ -n "${wall[$2]:-}" ] && ratio "${wall[$2]}" "${wall[$1]}" || echo -; } # run reference_run
echo
echo "Workload: $workload, $ntx source transactions."
printf "\n| consumer | wall s | source CPU s | target CPU s | consumer CPU s | CPU s per 10k txns (source / target / consumer) | peak RSS MiB | rate vs built-in | rate vs pgshift 1 worker |\n|---|---|---|---|---|---|---|---|---|\n"
row native "built-in replication (CREATE SUBSCRIPTION)" "1.00" -
for n in $workers; do row "bw$n" "pgshift, apply.workers $n" "$(vs "bw$n" native)" "$(vs "bw$n" bw1)"; done
row reader "pgshift reader only (apply blocked)" "$(vs reader native)" -
row recv "pg_recvlogical to /dev/null (decoding limit)" "$(vs recv native)" -
if [ -n "$delay_workers" ]; then
  echo
  echo "Through the delay proxy ($delay_ms ms each way; the proxy itself used $(printf %.2f "$(echo "scale=4; $proxy_ticks / $hz" | bc)") CPU s"
  echo "over these runs, counted in no column). Last column: vs pgshift without delay with the same apply.workers (or the last of WORKERS)."
  printf "\n| consumer | wall s | source CPU s | target CPU s | consumer CPU s | CPU s per 10k txns (source / target / consumer) | peak RSS MiB | rate vs built-in | rate vs no delay |\n|---|---|---|---|---|---|---|---|---|\n"
  last=$(echo "$workers" | awk '{ print $NF }')
  for n in $delay_workers; do
    if [ -n "${wall[bw$n]:-}" ]; then ref=bw$n; refn=""; else ref=bw$last; refn=" (vs $last)"; fi
    row "bd$n" "pgshift via proxy, apply.workers $n" "$(vs "bd$n" native)" "$(vs "bd$n" "$ref")$refn"
  done
fi
