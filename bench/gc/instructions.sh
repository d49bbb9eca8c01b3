#!/usr/bin/env bash
# instructions.sh — instructions a full collection executes per member, with
# callgrind: a figure that does not move with the machine's load, for
# comparing two versions of the collector's passes where wall time is too
# noisy (a change that cuts instructions may still gain no time: the passes
# are partly memory-bound; confirm with alternating gc-ouro runs).
#
# Usage: bench/gc/instructions.sh [--objects N]
#   --objects N  objects in live 2-cycles (default 200000)
# Runs gc-ouro under callgrind twice (2 and 7 timed rounds) and prints the
# difference of ouro__gc_mark's inclusive instruction count, per collection
# and member: the steady state, without the build and the first collection.
# One marker: with several, helpers run their share outside that count.
# Needs valgrind; this script builds nothing: build first (make).
# Environment: BUILD_DIR, the build tree (default: the top dir).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top}
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

objects=200000
markers=1 # see above
while [ $# -gt 0 ]; do
    case $1 in
    --objects) objects=${2:?--objects needs a number}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "instructions.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case $objects in *[!0-9]* | '' | 0) echo "instructions.sh: --objects takes a positive number" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
bin=$build/bench/gc/.libs/gc-ouro
[ -x "$bin" ] || bin=$build/bench/gc/gc-ouro
[ -x "$bin" ] || { echo "instructions.sh: no $build/bench/gc/gc-ouro: build first (make)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# ouro__gc_mark's inclusive count after `rounds` timed collections
mark_ir() {
    LD_LIBRARY_PATH=$build/src/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$1" "$bin" "$objects" "$markers" "$1" 0 \
        >"$tmp/log.$1" 2>&1 || { cat "$tmp/log.$1" >&2; exit 1; }
    callgrind_annotate --inclusive=yes "$tmp/cg.$1" 2>/dev/null |
        awk '!n && /src\/gcmark.c:ouro__gc_mark \[/ { gsub(",", "", $1); print $1; n = 1 }'
}
a=$(mark_ir 2)
b=$(mark_ir 7)
[ -n "$a" ] && [ -n "$b" ] || { echo "instructions.sh: ouro__gc_mark not in callgrind's output (stripped build?)" >&2; exit 1; }
awk -v a="$a" -v b="$b" -v n="$objects" \
    'BEGIN { printf "objects=%d markers=1 instructions_per_member=%.1f\n", n, (b - a) / 5 / n }'
