#!/bin/sh
# SPEC section 4: the exposition passes `promtool check metrics` with no findings, for an idle
# and a busy daemon. Usage: check_metrics.sh DUMP_METRICS_BINARY [PROMTOOL]; exit 77 = skipped.
set -u
dump=$1
promtool=${2:-}
if [ -z "$promtool" ] || [ ! -x "$promtool" ]; then
    echo "promtool not found; skipping"
    exit 77
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
status=0
for which in zero busy; do
    if ! "$dump" "$which" >"$tmp"; then
        echo "$which: dump_metrics failed"
        status=1
        continue
    fi
    findings=$("$promtool" check metrics <"$tmp" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || [ -n "$findings" ]; then
        echo "$which: promtool check metrics exited $rc:"
        echo "$findings"
        status=1
    else
        echo "$which: promtool check metrics: no findings ($(grep -c '^# TYPE' "$tmp") families)"
    fi
done
exit $status
