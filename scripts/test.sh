#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs unit and integration tests.
# Slow suites (label "slow") run only with PGSHIFT_SLOW=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
"$root/scripts/build.sh" -DPGSHIFT_WERROR=$werror
build="${PGSHIFT_BUILD_DIR:-$root/build}"

# A short libFuzzer run over the protocol decoders (clang, ASan+UBSan); 60 s and more with
# tests/fuzz/run-fuzz.sh. It runs before CTest so that CTest's summary stays the last line.
fuzz_seconds=${PGSHIFT_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" != "0" ]; then
  echo "== fuzzing the pgoutput decoders for ${fuzz_seconds}s (log: $build-fuzz/fuzz.log)"
  mkdir -p "$build-fuzz"
  if ! PGSHIFT_FUZZ_BUILD="$build-fuzz" bash "$root/tests/fuzz/run-fuzz.sh" "$fuzz_seconds" >"$build-fuzz/fuzz.log" 2>&1; then
    tail -40 "$build-fuzz/fuzz.log"
    echo "fuzzing found a problem (see above)"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|run-fuzz.sh:)" "$build-fuzz/fuzz.log" | sed 's/^/   /'
fi

cd "$build"
if [ "${PGSHIFT_SLOW:-0}" = "1" ]; then
  ctest --output-on-failure --timeout 900 "$@"
else
  ctest --output-on-failure --timeout 900 -LE slow "$@"
fi
