#!/usr/bin/env bash
# Runs the integration suite against a sanitizer build of the daemon.
# Usage: scripts/sanitize.sh tsan|asan [extra ctest args, e.g. -R crash]
#   tsan: ThreadSanitizer; asan: AddressSanitizer + UndefinedBehaviorSanitizer.
# The daemon is built into build-tsan / build-asan (only the pgshift target); the tests are the
# normal build's (./build), pointed at that binary through PGSHIFT_BINARY. A sanitizer report
# ends the daemon (halt_on_error) with exit code 66, which fails the test, and every daemon log
# is searched for reports afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:?usage: scripts/sanitize.sh tsan|asan [ctest args]}
shift
case "$kind" in
  tsan) flags=(-DPGSHIFT_TSAN=ON) ;;
  asan) flags=(-DPGSHIFT_SANITIZE=ON) ;;
  *) echo "usage: scripts/sanitize.sh tsan|asan [ctest args]"; exit 2 ;;
esac
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" >/dev/null # the tests and harness
sbuild="$root/build-$kind"
cmake -S "$root" -B "$sbuild" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF "${flags[@]}" >/dev/null
cmake --build "$sbuild" -j"$(nproc)" --target pgshift
export PGSHIFT_BINARY="$sbuild/src/daemon/pgshift"
export PGSHIFT_SANITIZER="$kind" # tests skip what a sanitizer build cannot meet (the RSS bound)
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
export ASAN_OPTIONS="halt_on_error=1 exitcode=66 detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1 exitcode=66 print_stacktrace=1"
cd "$root/build"
status=0
ctest -L integration --output-on-failure --timeout 900 "$@" 2>&1 | tee "$sbuild/ctest.log" || status=$?
if grep -E "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$sbuild/ctest.log"; then
  echo "sanitizer reports found (see $sbuild/ctest.log)"
  exit 1
fi
exit "$status"
