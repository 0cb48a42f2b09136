# Sourced by the shell integration tests (after `set -euo pipefail`, with the pgshift binary as
# $1): the binary (PGSHIFT_BINARY overrides it, e.g. a sanitizer build), two throwaway clusters
# (scripts/cluster-pair.sh), `daemon` (a pid the exit hook kills), fail() with the log tail, and
# wait_ready. Skips the test (exit 77) when curl is missing.
bin=${PGSHIFT_BINARY:-$1}
command -v curl >/dev/null || { echo "curl not installed: skipped"; exit 77; }
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/cluster-pair.sh"
daemon=""
on_exit '[ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null'
fail() { echo "FAIL: $*"; echo "--- pgshift log"; tail -40 "$work/pgshift.log" || true; exit 1; }
# wait_ready API SECONDS WHY: waits until API/readyz answers 200, else fails with WHY and its answer.
wait_ready() {
  for _ in $(seq 1 $(( $2 * 5 ))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ] && return 0
    sleep 0.2
  done
  fail "$3: $(curl -s "$1/readyz")"
}
