#!/usr/bin/env bash
# Integration: the control plane of a live daemon — Prometheus scrapes it, a live exposition passes
# promtool, and pause/resume move lag up and back to ~0 under a pgbench write load.
# Usage: control_plane.sh PGSHIFT_BINARY
set -euo pipefail
bin=${PGSHIFT_BINARY:-$1} # PGSHIFT_BINARY: e.g. a sanitizer build (scripts/sanitize.sh)
for tool in prometheus promtool curl; do
  command -v "$tool" >/dev/null || { echo "$tool not installed: skipped"; exit 77; }
done
source "$(dirname "$0")/../../scripts/cluster-pair.sh"
pids=()
on_exit 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done'
fail() { echo "FAIL: $*"; echo "--- pgshift log"; tail -40 "$work/pgshift.log" || true; exit 1; }

ctl_port=$(free_port)
prom_port=$(free_port)
# Trust authentication ignores passwords, so the daemon's conninfos can carry one that must
# never show up in its log, its status or its metrics.
secret="Pw-$(date +%s%N)"
"$pgbin/pgbench" -i -q -s 1 -d "$src" >/dev/null 2>&1
"$pgbin/pgbench" -i -q -s 1 -d "$dst" >/dev/null 2>&1
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" # no key; insert-only

echo "s3cret-token" > "$work/token"
cat > "$work/pgshift.yaml" <<YAML
name: ctl
source: {conninfo: "$src password=$secret"}
target: {conninfo: "$dst password=$secret"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$ctl_port", token_file: "$work/token"}
YAML
"$bin" run --config "$work/pgshift.yaml" >"$work/pgshift.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$ctl_port"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = "200" ] && break
  sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = "200" ] || fail "daemon not ready"
echo "ok: /readyz 200 while streaming"

# A live exposition passes promtool with no findings.
curl -s "$api/metrics" > "$work/metrics.txt"
out=$(promtool check metrics < "$work/metrics.txt" 2>&1) || fail "promtool check metrics: $out"
[ -z "$out" ] || fail "promtool check metrics reported: $out"
echo "ok: promtool check metrics on the live exposition: no findings"

# A real Prometheus scrapes the daemon; its query API returns pgshift_lag_bytes.
cat > "$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: pgshift
    static_configs: [{targets: ["127.0.0.1:$ctl_port"]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
result=""
for _ in $(seq 1 60); do
  result=$(curl -s "http://127.0.0.1:$prom_port/api/v1/query?query=pgshift_lag_bytes" || true)
  echo "$result" | grep -q '"result":\[{' && break
  sleep 1
done
echo "$result" | grep -q '"result":\[{' || { tail -20 "$work/prometheus.log"; fail "Prometheus has no pgshift_lag_bytes sample: $result"; }
echo "ok: Prometheus scraped pgshift: $(echo "$result" | grep -o '"value":\[[^]]*\]')"
up=$(curl -s "http://127.0.0.1:$prom_port/api/v1/query?query=up%7Bjob%3D%22pgshift%22%7D")
echo "$up" | grep -q '"value":\[[0-9.]*,"1"\]' || fail "up{job=pgshift} is not 1: $up"

# The CLI client reads the daemon's address and token from the same configuration file.
"$bin" status --config "$work/pgshift.yaml" > "$work/status.txt" || fail "pgshift status"
grep -Eq "^state +streaming" "$work/status.txt" || fail "pgshift status: $(cat "$work/status.txt")"
"$bin" status --json --url "$api" | grep -q '"name":"ctl"' || fail "pgshift status --json"
"$bin" lag --config "$work/pgshift.yaml" | grep -Eq "^[0-9]+ bytes, [0-9.]+ s" || fail "pgshift lag"
code=0; "$bin" rollback --config "$work/pgshift.yaml" 2>"$work/rollback.err" || code=$?
[ "$code" = "1" ] && grep -q "412" "$work/rollback.err" && grep -q "nothing to roll back" "$work/rollback.err" ||
  fail "pgshift rollback before any cutover should fail with the daemon's 412 (exit $code): $(cat "$work/rollback.err")"
code=0; "$bin" status --url "http://127.0.0.1:1" 2>/dev/null || code=$?
[ "$code" = "1" ] || fail "pgshift status against nothing exited $code, not 1"
code=0; "$bin" status 2>/dev/null || code=$?
[ "$code" = "2" ] || fail "pgshift status without --config/--url exited $code, not 2"
code=0; "$bin" pause --url "$api" 2>/dev/null || code=$?
[ "$code" = "1" ] || fail "pgshift pause without the token exited $code, not 1"
echo "ok: CLI status, status --json, lag, rollback refused (412), exit codes"

# Pause needs the token.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/v1/pause")
[ "$code" = "401" ] || fail "POST /v1/pause without token answered $code"
"$bin" pause --config "$work/pgshift.yaml" >/dev/null || fail "pgshift pause"
curl -s "$api/v1/status" | grep -q '"state":"paused"' || fail "state is not paused"

lag_bytes() { curl -s "$api/v1/lag" | sed -E 's/.*"bytes":([0-9]+).*/\1/'; }
metric_lag() { curl -s "$api/metrics" | awk '$1 == "pgshift_lag_bytes" {print $2}'; }
"$pgbin/pgbench" -n -c 2 -T 6 -d "$src" >/dev/null 2>&1
sleep 2.5  # the source monitor polls every 2 s
paused_lag=$(lag_bytes)
paused_metric=$(metric_lag)
echo "lag while paused: /v1/lag $paused_lag bytes, /metrics $paused_metric"
[ "$paused_lag" -gt 100000 ] || fail "lag did not grow while paused ($paused_lag)"
awk -v m="$paused_metric" 'BEGIN { exit !(m > 100000) }' || fail "pgshift_lag_bytes did not grow ($paused_metric)"

"$bin" resume --config "$work/pgshift.yaml" >/dev/null || fail "pgshift resume"
for _ in $(seq 1 60); do
  [ "$(lag_bytes)" -lt 20000 ] && break
  sleep 0.5
done
sleep 2.5
after_lag=$(lag_bytes)
after_metric=$(metric_lag)
echo "lag after resume: /v1/lag $after_lag bytes, /metrics $after_metric"
[ "$after_lag" -lt 20000 ] || fail "lag did not return to about 0 after resume ($after_lag)"
awk -v m="$after_metric" 'BEGIN { exit !(m < 20000) }' || fail "pgshift_lag_bytes did not return to about 0"
for what in "$work/pgshift.log" "$work/metrics.txt" "$work/status.txt"; do
  grep -q -- "$secret" "$what" && fail "the password appears in $what"
done
curl -s "$api/v1/status" | grep -q -- "$secret" && fail "the password appears in /v1/status"
grep -q "password=\*\*\*\*\*\*\*\*" "$work/pgshift.log" || fail "the log does not show the redacted conninfo"
echo "ok: the conninfo password appears in no log line, status or metric"
echo "control plane: all checks passed"
