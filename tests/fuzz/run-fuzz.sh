#!/usr/bin/env bash
# Builds fuzz_pgoutput in its own clang build dir, writes the seed corpus and fuzzes for SECONDS (default 60).
#
# Usage: tests/fuzz/run-fuzz.sh [SECONDS]
# Environment: PGSHIFT_FUZZ_BUILD (build dir, default <repo>/build-fuzz), JOBS (build jobs, default 2).
# Exit status: 0 when the run ends without a finding, non-zero on a crash, leak, timeout or
# sanitizer report (libFuzzer's status); the reproducer is left under $build/fuzz-artifacts/.
# The corpus grown by earlier runs ($build/fuzz-corpus) is kept and fuzzed again.
set -euo pipefail

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${PGSHIFT_FUZZ_BUILD:-$repo/build-fuzz}
jobs=${JOBS:-2}

for tool in clang clang++ cmake xxd; do
    command -v "$tool" >/dev/null || { echo "run-fuzz.sh: $tool not found" >&2; exit 1; }
done

echo "== configure $build"
mkdir -p "$build"
CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -DPGSHIFT_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
echo "== build fuzz_pgoutput"
cmake --build "$build" --target fuzz_pgoutput -j "$jobs"

seeds=$build/fuzz-seeds
corpus=$build/fuzz-corpus
artifacts=$build/fuzz-artifacts
rm -rf "$seeds"
bash "$repo/tests/fuzz/make_corpus.sh" "$seeds"
mkdir -p "$corpus" "$artifacts"

echo "== fuzz for ${seconds}s"
fuzzer=$build/tests/fuzz/fuzz_pgoutput
args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/")
status=0
"$fuzzer" "${args[@]}" "$corpus" "$seeds" || status=$?
if [[ $status -ne 0 ]]; then
    echo "run-fuzz.sh: FINDING (exit $status); reproducer(s) in $artifacts:" >&2
    ls -l "$artifacts" >&2 || true
    echo "reproduce with: $fuzzer $artifacts/<crash-file>" >&2
    exit "$status"
fi
echo "run-fuzz.sh: no finding in ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) inputs in $corpus)"
