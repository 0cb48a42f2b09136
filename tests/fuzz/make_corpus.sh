#!/usr/bin/env bash
# Writes the fuzz_pgoutput seed corpus: every golden pgoutput capture line, plus frames and hand-built messages.
#
# Usage: make_corpus.sh OUT_DIR [GOLDEN_DIR]
#
# Each seed is one selector byte followed by the bytes under test (layout: fuzz_pgoutput.cpp):
#   selector bits 0-1 = proto_version - 1, bit 2 = in_stream, bit 3 = parallel_stream.
# The proto_version of a capture comes from its name (*_v2.hex); in_stream is tracked across
# lines as a live reader would: on after Stream Start ('S', 0x53), off after Stream Stop ('E', 0x45).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUT_DIR [GOLDEN_DIR]" >&2
    exit 2
fi
out=$1
golden=${2:-$(cd "$(dirname "$0")/../unit/protocol/golden" && pwd)}
command -v xxd >/dev/null || { echo "make_corpus.sh: xxd not found" >&2; exit 1; }
mkdir -p "$out"

# seed NAME SELECTOR_HEX BYTES_HEX
seed() {
    printf '%s%s' "$2" "$3" | xxd -r -p >"$out/$1"
}

# An XLogData ('w') frame header: walStart 0/1000000, walEnd 0/1000100, sendTime 7.
xlog_header=77$(printf '%016x%016x%016x' 0x1000000 0x1000100 7)

count=0
shopt -s nullglob
files=("$golden"/*.hex)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "make_corpus.sh: no .hex captures in $golden" >&2
    exit 1
fi
for f in "${files[@]}"; do
    base=$(basename "$f" .hex)
    proto=1
    [[ $base =~ _v([1-4])$ ]] && proto=${BASH_REMATCH[1]}
    in_stream=0
    lineno=0
    while IFS= read -r line || [[ -n $line ]]; do
        lineno=$((lineno + 1))
        line=${line%$'\r'}
        [[ -z $line || $line == \#* ]] && continue
        selector=$(printf '%02x' $(((proto - 1) | (in_stream << 2))))
        seed "$base-$lineno" "$selector" "$line"
        seed "$base-$lineno-xlog" "$selector" "$xlog_header$line"
        count=$((count + 2))
        case ${line:0:2} in
            53) in_stream=1 ;;
            45) in_stream=0 ;;
        esac
    done <"$f"
done

# Messages the captures cannot hold (two-phase is off there, parallel streaming needs PG16), the
# same layouts as hand_built() in tests/unit/protocol/test_malformed.cpp; gid "gid-1", xid 900.
gid=6769642d3100     # "gid-1\0"
xid=00000384         # 900
lsn_1000=0000000000001000
lsn_1050=0000000000001050
lsn_2000=0000000000002000
lsn_2060=0000000000002060
ts_7=0000000000000007
ts_8=0000000000000008
ts_9=0000000000000009
seed begin_prepare-v3 02 "62$lsn_1000$lsn_1050$ts_7$xid$gid"
seed prepare-v3 02 "5000$lsn_1000$lsn_1050$ts_7$xid$gid"
seed stream_prepare-v3 02 "7000$lsn_1000$lsn_1050$ts_7$xid$gid"
seed commit_prepared-v3 02 "4b00$lsn_2000$lsn_2060$ts_8$xid$gid"
seed rollback_prepared-v3 02 "7200$lsn_1050$lsn_2060$ts_7$ts_9$xid$gid"
# Stream Abort xid 901 subxid 902, with abort_lsn 0/3000 and abort_ts 10 under parallel streaming.
seed stream_abort_parallel-v4 0b "410000038500000386$(printf '%016x%016x' 0x3000 10)"
seed stream_abort-v4 03 "410000038500000386"
# Keepalive ('k', reply requested) and a standby status update ('r').
seed keepalive 00 "6b$(printf '%016x%016x' 0x1000000 7)01"
seed standby_status 00 "72$(printf '%016x%016x%016x%016x' 0x1000000 0x1000000 0x1000000 9)00"
count=$((count + 9))
echo "make_corpus.sh: wrote $count seeds to $out"
