#!/usr/bin/env bash
# Checks systemd/pgshift@.service with systemd-analyze (offline): any warning fails the test.
set -euo pipefail
unit_src=$1
binary=$2
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed: skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# A concrete instance whose ExecStart points at the binary just built (verify needs it to exist).
sed "s|/usr/bin/pgshift|$binary|" "$unit_src" > "$dir/pgshift@demo.service"
out=$(cd "$dir" && systemd-analyze verify --man=no "$dir/pgshift@demo.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi
score=$(systemd-analyze security --offline=true "$dir/pgshift@demo.service" 2>/dev/null | grep -o 'Overall exposure level.*' || true)
echo "unit verified; $score"
