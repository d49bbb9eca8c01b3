#!/usr/bin/env bash
# run-fastpath.sh — run bench/fastpath under glibc, ouro, mimalloc, jemalloc
# and tcmalloc back to back, and print a Markdown table of ns per
# malloc+free pair (lower is better).
#
# Usage: bench/run-fastpath.sh [--quick]
#   --quick        passed to bench/fastpath: fewer, shorter runs (CI)
# Environment:
#   BUILD_DIR      build tree holding bench/fastpath and src/.libs (default: the top dir)
#   ROUNDS         rounds; each runs every allocator once (default 3)
#   PIN_CPU        CPU to pin to with taskset (default 1; empty: no pinning)
#
# Rounds interleave the allocators (round 1: glibc ouro mimalloc ..., round
# 2: the same again, ...) so slow drifts of the machine hit all of them
# alike; each cell is the median over rounds of the per-run medians.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top}
rounds=${ROUNDS:-3}
pin_cpu=${PIN_CPU-1}
libdir=/usr/lib/x86_64-linux-gnu

bench_args=(--csv)
for arg in "$@"; do
    case $arg in
        --quick) bench_args+=(--quick) ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-fastpath.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
    echo "run-fastpath.sh: ROUNDS must be a positive integer, not '$rounds'" >&2
    exit 2
fi

bin=$build/bench/fastpath
if [[ ! -x $bin ]]; then
    echo "run-fastpath.sh: $bin not found; build it with 'make bench/fastpath'" >&2
    exit 1
fi

# ---- the allocators: name and library to preload ("" = glibc, no preload) ----
names=()
libs=()
notes=() # printed with the report
add_alloc() { # name so-path
    if [[ -z $2 || -f $2 ]]; then
        names+=("$1")
        libs+=("$2")
    else
        notes+=("skipped $1: $2 not found")
    fi
}
add_alloc glibc ""
add_alloc ouro "$build/src/.libs/libouro-malloc.so"
add_alloc mimalloc "$libdir/libmimalloc.so.2"
add_alloc jemalloc "$libdir/libjemalloc.so.2"
add_alloc tcmalloc "$libdir/libtcmalloc_minimal.so.4"

# ---- pinning ----
pin=()
if [[ -n $pin_cpu ]] && command -v taskset > /dev/null && taskset -c "$pin_cpu" true 2> /dev/null; then
    pin=(taskset -c "$pin_cpu")
elif [[ -n $pin_cpu ]]; then
    notes+=("not pinned: taskset missing or CPU $pin_cpu unavailable")
fi

# ---- header ----
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)
echo "# ouro fast-path benchmark"
echo
echo "- command: \`$0${*:+ $*}\`"
echo "- ouro: $(git -C "$top" describe --always --dirty 2> /dev/null || echo unknown)"
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- nproc: $(nproc), CPU: ${cpu_model:-unknown}"
echo "- pinned: ${pin[*]:-no}; rounds: $rounds; fastpath args: ${bench_args[*]}"
for i in "${!names[@]}"; do
    echo "- ${names[$i]}: ${libs[$i]:-(no preload)}"
done
for note in "${notes[@]}"; do
    echo "- note: $note"
done
echo "- ns per malloc+free pair, median over rounds of each run's median (lower is better)"
echo

# ---- runs ----
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for ((r = 1; r <= rounds; r++)); do
    for i in "${!names[@]}"; do
        name=${names[$i]} lib=${libs[$i]}
        echo "round $r/$rounds: $name" >&2
        out=$tmp/$name.$r.csv
        # env sets LD_PRELOAD for fastpath only, not for taskset
        if ! "${pin[@]}" env ${lib:+LD_PRELOAD="$lib"} "$bin" "${bench_args[@]}" > "$out" 2> "$tmp/err"; then
            cat "$tmp/err" >&2
            echo "run-fastpath.sh: fastpath failed under $name" >&2
            exit 1
        fi
        # ld.so only warns when a preload fails, and the run would measure glibc
        if grep -q 'cannot be preloaded' "$tmp/err"; then
            cat "$tmp/err" >&2
            echo "run-fastpath.sh: $lib could not be preloaded" >&2
            exit 1
        fi
    done
done
echo >&2

# ---- table: rows = tests, columns = allocators, median over rounds ----
# each input line: allocator,test,ns_median,ns_min
for name in "${names[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
        awk -F, -v a="$name" 'NR > 1 { print a "," $0 }' "$tmp/$name.$r.csv"
    done
done | awk -F, -v order="${names[*]}" '
    function median(list,   v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)          # insertion sort, n = rounds
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
                t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
            }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function ratio(a, b) {
        return (a == "" || b == "" || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b)
    }
    {
        if (!($2 in seen)) { seen[$2] = 1; tests[++ntests] = $2 }
        vals[$2, $1] = vals[$2, $1] " " $3
    }
    END {
        nalloc = split(order, alloc, " ")
        line = "| test |"; rule = "|:--|"
        for (i = 1; i <= nalloc; i++) { line = line " " alloc[i] " |"; rule = rule "--:|" }
        print line " ouro/mimalloc | ouro/glibc |"
        print rule "--:|--:|"
        for (t = 1; t <= ntests; t++) {
            line = "| " tests[t] " |"
            delete med
            for (i = 1; i <= nalloc; i++) {
                if ((tests[t], alloc[i]) in vals) {
                    med[alloc[i]] = median(vals[tests[t], alloc[i]])
                    line = line sprintf(" %.2f |", med[alloc[i]])
                } else {
                    line = line " n/a |"
                }
            }
            print line " " ratio(med["ouro"], med["mimalloc"]) " | " ratio(med["ouro"], med["glibc"]) " |"
        }
    }'
echo
echo "Ratios are ouro's ns over the other's: < 1 means ouro is faster."
