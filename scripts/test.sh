#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs unit and integration tests.
# Slow suites (label "slow") run only with PGSHIFT_SLOW=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
"$root/scripts/build.sh" -DPGSHIFT_WERROR=$werror
cd "${PGSHIFT_BUILD_DIR:-$root/build}"
if [ "${PGSHIFT_SLOW:-0}" = "1" ]; then
  ctest --output-on-failure --timeout 900 "$@"
else
  ctest --output-on-failure --timeout 900 -LE slow "$@"
fi
