# Sourced by the demo, the shell integration tests and the benchmarks: a work directory and two
# throwaway PostgreSQL clusters (source and target), removed on exit.
#
# Before sourcing: set -euo pipefail; optionally PAIR_SOURCE_SETTINGS / PAIR_TARGET_SETTINGS
# (arrays of name=value). After: root, pgbin, work, src_port, dst_port, src, dst (conninfos),
# psql_src/psql_dst SQL helpers, free_port, and on_exit CMD... to run CMD before the clusters go.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pgbin=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$pgbin/psql" ] || pgbin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/pgshift-pair.XXXXXX)
chmod 755 "$work" # the clusters run as postgres when we are root

pair_exit_hooks=()
on_exit() { pair_exit_hooks+=("$*"); }
pair_cleanup() {
  local hook
  for hook in "${pair_exit_hooks[@]}"; do eval "$hook" || true; done
  "$root/scripts/pgcluster.sh" stop "$work/source" || true
  "$root/scripts/pgcluster.sh" stop "$work/target" || true
  rm -rf "$work"
}
trap pair_cleanup EXIT

free_port() { "$root/scripts/pgcluster.sh" free-port; }
src_port=$(free_port)
"$root/scripts/pgcluster.sh" start "$work/source" "$src_port" ${PAIR_SOURCE_SETTINGS[@]+"${PAIR_SOURCE_SETTINGS[@]}"}
dst_port=$(free_port)
"$root/scripts/pgcluster.sh" start "$work/target" "$dst_port" ${PAIR_TARGET_SETTINGS[@]+"${PAIR_TARGET_SETTINGS[@]}"}
src="host=127.0.0.1 port=$src_port dbname=postgres user=postgres"
dst="host=127.0.0.1 port=$dst_port dbname=postgres user=postgres"
psql_src() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$src" -c "$1"; }
psql_dst() { "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$dst" -c "$1"; }
