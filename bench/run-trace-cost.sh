#!/usr/bin/env bash
# run-trace-cost.sh — what allocation tracing costs the fast path: runs
# bench/fastpath under libouro-malloc.so with tracing off, on for every
# allocation (one frame, and 8 frames), and sampled (8 frames, about one
# allocation per 512 KiB); and, if BASE_LIB names another build of the
# override (e.g. one without tracing), that one too, tracing off.  Prints a
# Markdown table of ns per malloc+free pair and each column's ratio to
# "off" (the same library, same run).
#
# Usage: bench/run-trace-cost.sh [--quick]
#   --quick        passed to bench/fastpath: fewer, shorter runs
# Environment:
#   BUILD_DIR      build tree holding bench/fastpath and src/.libs (default: the top dir)
#   ROUNDS         rounds; each runs every configuration once, in turn (default 5)
#   PIN_CPU        CPU to pin to with taskset (default 1; empty: no pinning)
#   BASE_LIB       another libouro-malloc.so to measure, tracing off (default: none)
#
# Rounds interleave the configurations, so slow drifts of the machine hit
# all of them alike; each cell is the median over rounds of the per-run
# medians.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top}
rounds=${ROUNDS:-5}
pin_cpu=${PIN_CPU-1}
lib=$build/src/.libs/libouro-malloc.so
bin=$build/bench/fastpath

bench_args=(--csv)
for arg in "$@"; do
    case $arg in
        --quick) bench_args+=(--quick) ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-trace-cost.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "run-trace-cost.sh: ROUNDS must be a positive integer" >&2; exit 2; }
[[ -x $bin && -f $lib ]] || { echo "run-trace-cost.sh: build bench/fastpath and src/libouro-malloc.la first" >&2; exit 1; }

# name | library | environment
configs=()
[[ -n ${BASE_LIB:-} ]] && configs+=("base|$BASE_LIB|")
configs+=("off|$lib|")
configs+=("every-1|$lib|OURO_TRACE=1")
configs+=("every-8|$lib|OURO_TRACE=8")
configs+=("sampled-8|$lib|OURO_TRACE=8 OURO_TRACE_SAMPLE=524288")

pin=()
if [[ -n $pin_cpu ]] && command -v taskset > /dev/null && taskset -c "$pin_cpu" true 2> /dev/null; then
    pin=(taskset -c "$pin_cpu")
fi

echo "# ouro tracing cost (bench/fastpath, ns per malloc+free pair)"
echo
echo "- command: \`$0${*:+ $*}\` (ROUNDS=$rounds${BASE_LIB:+ BASE_LIB=$BASE_LIB})"
echo "- ouro: $(git -C "$top" describe --always --dirty 2> /dev/null || echo unknown); nproc $(nproc); pinned: ${pin[*]:-no}"
for c in "${configs[@]}"; do
    IFS='|' read -r name l env <<< "$c"
    echo "- $name: LD_PRELOAD=$l ${env:-(tracing off)}"
done
echo

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 1; r <= rounds; r++)); do
    for c in "${configs[@]}"; do
        IFS='|' read -r name l env <<< "$c"
        echo "round $r/$rounds: $name" >&2
        # shellcheck disable=SC2086 # env holds VAR=value words
        "${pin[@]}" env LD_PRELOAD="$l" $env "$bin" "${bench_args[@]}" > "$tmp/$name.$r.csv"
    done
done

names=()
for c in "${configs[@]}"; do names+=("${c%%|*}"); done
for name in "${names[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
        awk -F, -v a="$name" 'NR > 1 { print a "," $1 "," $2 }' "$tmp/$name.$r.csv"
    done
done | awk -F, -v order="${names[*]}" '
    function median(list,   v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    {
        if (!($2 in seen)) { seen[$2] = 1; tests[++nt] = $2 }
        vals[$2, $1] = vals[$2, $1] " " $3
    }
    END {
        nc = split(order, cfg, " ")
        line = "| test |"; rule = "|:--|"
        for (i = 1; i <= nc; i++) { line = line " " cfg[i] " |"; rule = rule "--:|" }
        for (i = 1; i <= nc; i++) if (cfg[i] != "off") { line = line " " cfg[i] "/off |"; rule = rule "--:|" }
        print line; print rule
        for (t = 1; t <= nt; t++) {
            line = "| " tests[t] " |"
            for (i = 1; i <= nc; i++) { m[cfg[i]] = median(vals[tests[t], cfg[i]]); line = line sprintf(" %.2f |", m[cfg[i]]) }
            for (i = 1; i <= nc; i++) if (cfg[i] != "off") line = line sprintf(" %.2f |", m[cfg[i]] / m["off"])
            print line
        }
    }'
