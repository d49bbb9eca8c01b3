#!/usr/bin/env bash
# run.sh — run the collector workloads on ouro, Boehm GC and CPython, side
# by side, and write raw.csv and report.md (medians, ratios ouro/Boehm and
# ouro/python) into a results folder.
#
# Usage: bench/gc/run.sh [--quick] [--reps R] [--out DIR]
#   --quick    every run once, small sizes (CI; a few seconds)
#   --reps R   repetitions (default 3, --quick 1); each cell is the median
#   --out DIR  results folder (default results/gc-DATE, under the current directory)
# Environment:
#   BUILD_DIR    build tree holding bench/gc/trees-ouro etc. (default: the top dir)
#   PYTHON       the CPython to compare with (default python3; missing: its column is n/a)
#   RUN_TIMEOUT  seconds one run may take before it counts as failed (default 300)
#
# Workloads (one process per run, the implementations back to back within
# a repetition, so slow drifts of the machine hit them alike):
#   gc-2cycle           gc-ouro / gc-boehm / gc-python.py: a full collection of N
#   gc-2cycle-2m        the same with two markers each (ouro, Boehm) and no mutator
#                       thread beside them (CPython has one: not run)
#   gc-2cycle-scattered the same on a churned heap (GC_SCATTER=1: as many objects
#                       freed in random order first, so the pairs lie scattered)
#   gc-2cycle-churn     the same, scattered, with 1% of the pairs replaced before
#                       each timed collection (GC_CHURN=10), collections on meanwhile
#                       objects in live 2-cycles, ns per object (median of its rounds)
#   gcbench, binarytrees, and their -cyclic variants (a parent pointer in
#                       every node: each dropped tree is garbage only a cycle
#                       collector reclaims): trees-ouro / trees-boehm / trees.py,
#                       wall seconds of the whole workload
#   and the memory floor: bench/gc/membw with 1 and 2 threads (membw.c), what
#                       moving a collection's bytes alone takes, beside gc-2cycle-2m
# Sizes: default gc-2cycle 1M objects, GCBench depth 16 (the classic sizes:
# stretch 18, long-lived 16, 500k doubles), binary-trees depth 16 (21 is
# the Benchmarks Game's size but takes minutes in CPython and, for
# binarytrees-cyclic on ouro, tens of GiB); --quick: 200k, 12, 12.
# This script builds nothing: build first (make).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top}
gdir=$build/bench/gc
sdir=$top/bench/gc
python=${PYTHON:-python3}
run_timeout=${RUN_TIMEOUT:-300}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

quick=0
reps=
out=
cmdline="$0${*:+ $*}"
while (($#)); do
    case $1 in
        --quick) quick=1 ;;
        --reps) reps=${2-}; shift ;;
        --reps=*) reps=${1#*=} ;;
        --out) out=${2-}; shift ;;
        --out=*) out=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $reps ]] || reps=$((quick ? 1 : 3))
if ! [[ $reps =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --reps wants a positive integer, not '$reps'" >&2
    exit 2
fi

if ((quick)); then
    objects=200000 rounds=3 gcb_depth=12 bt_depth=12
else
    objects=1000000 rounds=5 gcb_depth=16 bt_depth=16
fi
workloads=(gc-2cycle gc-2cycle-2m gc-2cycle-scattered gc-2cycle-churn gcbench gcbench-cyclic binarytrees binarytrees-cyclic)
impls=(ouro boehm python)
declare -A size=([gc-2cycle]=$objects [gc-2cycle-2m]=$objects [gc-2cycle-scattered]=$objects [gc-2cycle-churn]=$objects [gcbench]=$gcb_depth [gcbench-cyclic]=$gcb_depth
    [binarytrees]=$bt_depth [binarytrees-cyclic]=$bt_depth)

missing=()
for p in gc-ouro gc-boehm trees-ouro trees-boehm membw; do
    [[ -x $gdir/$p ]] || missing+=("$gdir/$p")
done
if ((${#missing[@]})); then
    echo "run.sh: programs not found (build them first, e.g. make, or set BUILD_DIR):" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
notes=()
have_python=1
if ! command -v "$python" > /dev/null; then
    have_python=0
    notes+=("$python not found: no CPython column")
fi

# the command line of one run
command_of() { # workload impl
    local w=$1 n=${size[$1]}
    case $w:$2 in
        gc-2cycle:ouro) echo "$gdir/gc-ouro $n 1 $rounds" ;;
        gc-2cycle:boehm) echo "$gdir/gc-boehm $n 1 $rounds" ;;
        gc-2cycle:python) echo "$python $sdir/gc-python.py $n $rounds" ;;
        gc-2cycle-2m:ouro) echo "$gdir/gc-ouro $n 2 $rounds 0" ;;
        gc-2cycle-2m:boehm) echo "$gdir/gc-boehm $n 2 $rounds" ;;
        gc-2cycle-2m:python) ;; # one thread: nothing to run
        gc-2cycle-scattered:*) echo "env GC_SCATTER=1 $(command_of gc-2cycle "$2")" ;;
        gc-2cycle-churn:*) echo "env GC_SCATTER=1 GC_CHURN=10 $(command_of gc-2cycle "$2")" ;;
        *:ouro) echo "$gdir/trees-ouro $w $n" ;;
        *:boehm) echo "$gdir/trees-boehm $w $n" ;;
        *:python) echo "$python $sdir/trees.py $w $n" ;;
    esac
}

[[ -n $out ]] || out=results/gc-$(date '+%Y%m%d-%H%M%S')
mkdir -p "$out"
out=$(cd "$out" && pwd)
raw=$out/raw.csv
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

load0=$(cut -d' ' -f1-3 /proc/loadavg)
start_s=$(date +%s.%N)
start_date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
nruns=0
for w in "${workloads[@]}"; do
    for impl in "${impls[@]}"; do
        if [[ -n $(command_of "$w" "$impl") ]]; then nruns=$((nruns + reps)); fi
    done
done
echo "run.sh: $nruns runs (${#workloads[@]} workloads x ${#impls[@]} implementations x $reps reps) -> $out" >&2

echo "workload,size,impl,rep,metric,value,settle_s,cpu_s,peak_rss_kib,collections,gc_s,check" > "$raw"
failures=()
run=0
for ((r = 1; r <= reps; r++)); do
    for w in "${workloads[@]}"; do
        for impl in "${impls[@]}"; do
            cmd=$(command_of "$w" "$impl")
            [[ -n $cmd ]] || continue # nothing to run (gc-2cycle-2m on CPython)
            run=$((run + 1))
            [[ $impl == python ]] && ((!have_python)) && continue
            rc=0
            # word splitting of $cmd is intended (program and arguments)
            # shellcheck disable=SC2086
            timeout "$run_timeout" $cmd > "$tmp/out" 2> "$tmp/err" || rc=$?
            line=$(grep '^impl=' "$tmp/out" | tail -n 1 || true)
            if ((rc == 0)) && [[ -z $line ]]; then rc=99; fi
            if ((rc != 0)); then
                why="exit $rc"
                ((rc == 124)) && why="timed out after ${run_timeout}s"
                ((rc == 99)) && why="no impl= line"
                msg=$(grep -m1 -v '^$' "$tmp/err" || true)
                failures+=("$w, $impl, rep $r: $why${msg:+: $msg}")
                echo "[$run/$nruns] rep $r $w $impl: FAILED ($why)" >&2
                echo "$w,${size[$w]},$impl,$r,,FAIL,,,,,," >> "$raw"
                continue
            fi
            # impl=... key=value ...: the tree workloads report seconds, the
            # 2-cycle one the median full collection in ns per object
            echo "$line" | awk -v w="$w" -v n="${size[$w]}" -v i="$impl" -v r="$r" '{
                for (k = 1; k <= NF; k++) { key = $k; sub(/=.*/, "", key); v = $k; sub(/^[^=]*=/, "", v); f[key] = v }
                metric = (w ~ /^gc-2cycle/) ? "full_ns_per_obj" : "seconds"
                print w "," n "," i "," r "," metric "," f[metric] "," f["settle_s"] "," f["cpu_s"] "," \
                    f["peak_rss_kib"] "," f["collections"] "," f["gc_s"] "," f["check"]
            }' >> "$raw"
            echo "[$run/$nruns] rep $r $w $impl: $(tail -n 1 "$raw" | cut -d, -f5-6)" >&2
        done
    done
done
# the floor the bytes set (bench/gc/membw.c): one thread against two
floor_cmd=("$gdir/membw" "$objects" 1 $((quick ? 1 : 5)))
floor1=$("${floor_cmd[@]}" | grep -o 'total_ms=[0-9.]*' | cut -d= -f2 || true)
floor_cmd[2]=2
floor2=$("${floor_cmd[@]}" | grep -o 'total_ms=[0-9.]*' | cut -d= -f2 || true)
[[ -n $floor1 && -n $floor2 ]] || failures+=("membw: no total_ms= line")
end_s=$(date +%s.%N)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
runtime=$(awk -v a="$start_s" -v b="$end_s" 'BEGIN { printf "%.0f", b - a }')

# every implementation of a workload must build the same trees: compare checks
while IFS=, read -r w c; do
    failures+=("$w: the implementations disagree on the check value ($c)")
done < <(awk -F, 'NR > 1 && $12 != "" { if (!(($1) in first)) first[$1] = $12; else if (first[$1] != $12) bad[$1] = bad[$1] " " $3 "=" $12 }
    END { for (w in bad) print w "," first[w] " vs" bad[w] }' "$raw")

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)
pyver=$( ((have_python)) && "$python" -c 'import sys; print(sys.version.split()[0])' || echo none)
gcver=$(dpkg-query -W -f '${Version}' libgc1 2> /dev/null || echo unknown)
{
    echo "# ouro collector workloads"
    echo
    echo "- command: \`${BUILD_DIR:+BUILD_DIR=$BUILD_DIR }$cmdline\`"
    echo "- date: $start_date; run time: ${runtime} s; $nruns runs, $reps repetition(s) (each cell: the median)"
    echo "- machine: ${cpu_model:-unknown CPU}, nproc $(nproc), $(uname -sr); load average $load0 before, $load1 after"
    echo "- ouro $(git -C "$top" describe --always --dirty 2> /dev/null || echo unknown); Boehm GC (libgc1) $gcver; CPython $pyver"
    for note in "${notes[@]}"; do echo "- note: $note"; done
    echo
    echo "Ratios are ouro's figure over the other's: **> 1 means ouro is slower** (time) or"
    echo "**uses more memory** (RSS). gc-2cycle: one full collection of that many live objects"
    echo "in 2-cycles, ns per object. Tree workloads: wall seconds of the whole program's work;"
    echo "for ouro that includes the settle time (also shown alone): how long its background"
    echo "collector still needed, after the work ended, to finish the collection in flight and"
    echo "hand the garbage back. Boehm and CPython collect on the working thread: nothing to settle."
    echo "gc-2cycle-2m: the same with two markers for ouro and Boehm, no mutator thread beside them."
    echo "gc-2cycle-scattered: the same on a churned heap (as many objects freed in random order"
    echo "first, so the pairs lie scattered in memory and no list follows addresses)."
    echo "gc-2cycle-churn: that heap with 1% of the pairs replaced before each timed collection,"
    echo "automatic collections on meanwhile (deaths and young collections between full ones)."
    echo "Sizes: object count for gc-2cycle, tree depth for the others."
    echo
} > "$out/report.md"

awk -F, -v wls="${workloads[*]}" -v impls="${impls[*]}" '
    function median(list,   v, n, i, j, t) {
        n = split(list, v, " ")
        if (n == 0) return ""
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "n/a" : sprintf("**%.2f**", a / b) }
    function cell(x, fmt) { return x == "" ? "n/a" : sprintf(fmt, x) }
    function mib(x) { return x == "" ? "n/a" : sprintf("%.1f", x / 1024) }
    BEGIN { nw = split(wls, wl, " "); ni = split(impls, im, " ") }
    NR == 1 { next }
    {
        k = $1 SUBSEP $3; size[$1] = $2
        if ($6 == "FAIL") { failed[k] = 1; next }
        metric[$1] = $5
        for (c = 6; c <= 11; c++) if ($c != "") col[k, c] = col[k, c] " " $c
        # the work plus ouro'"'"'s settling: what the ratios compare
        if ($7 != "") col[k, 0] = col[k, 0] " " ($6 + $7)
    }
    END {
        for (x = 1; x <= nw; x++) for (y = 1; y <= ni; y++) {
            k = wl[x] SUBSEP im[y]
            for (c = 0; c <= 11; c++) med[k, c] = (k in failed) ? "" : median(col[k, c])
            if (med[k, 0] == "") med[k, 0] = med[k, 6]
        }
        print "## Time (median; lower is better)"
        print ""
        print "| workload | size | metric | ouro (with settle) | ouro settle | boehm | python | ouro/boehm | ouro/python |"
        print "|:--|--:|:--|--:|--:|--:|--:|--:|--:|"
        for (x = 1; x <= nw; x++) {
            w = wl[x]; o = med[w, "ouro", 0]; b = med[w, "boehm", 0]; p = med[w, "python", 0]
            f = (metric[w] == "seconds") ? "%.3f" : "%.2f"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, size[w], metric[w], cell(o, f),
                cell(med[w, "ouro", 7], "%.3f"), cell(b, f), cell(p, f), ratio(o, b), ratio(o, p)
        }
        print ""
        print "## Peak RSS (MiB, median; lower is better)"
        print ""
        print "| workload | size | ouro | boehm | python | ouro/boehm | ouro/python |"
        print "|:--|--:|--:|--:|--:|--:|--:|"
        for (x = 1; x <= nw; x++) {
            w = wl[x]; o = med[w, "ouro", 9]; b = med[w, "boehm", 9]; p = med[w, "python", 9]
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", w, size[w], mib(o), mib(b), mib(p),
                ratio(o, b), ratio(o, p)
        }
        print ""
        print "## Collector activity (median): collections / seconds inside them / CPU seconds of the process"
        print ""
        print "ouro collects on a background thread while the program runs, so its collection time"
        print "overlaps the wall time; Boehm and CPython collect on the allocating thread."
        print ""
        print "| workload | ouro | boehm | python |"
        print "|:--|--:|--:|--:|"
        for (x = 1; x <= nw; x++) {
            w = wl[x]; if (metric[w] != "seconds") continue
            line = "| " w " |"
            for (y = 1; y <= ni; y++) {
                k = w SUBSEP im[y]
                line = line " " cell(med[k, 10], "%d") " / " cell(med[k, 11], "%.2f s") " / " cell(med[k, 8], "%.2f s") " |"
            }
            print line
        }
        print ""
    }' "$raw" >> "$out/report.md" || { echo "run.sh: making report.md failed" >&2; exit 1; }

{
    echo "## Memory floor"
    echo
    echo "What a second marker can gain is bounded by what the memory system gives a second"
    echo "core: \`membw N T\` moves the bytes a full collection of N members moves (two passes"
    echo "over N 64-byte nodes, each read and written back, and the dense state) with T threads"
    echo "and does nothing else. Where two threads take about as long as one, one core already"
    echo "takes the whole bandwidth and gc-2cycle-2m cannot gain much more over one marker."
    echo
    echo "| membw $objects, 1 thread | 2 threads | 1 thread / 2 threads |"
    echo "|--:|--:|--:|"
    awk -v a="${floor1:-}" -v b="${floor2:-}" 'BEGIN {
        if (a == "" || b == "") print "| n/a | n/a | n/a |"
        else printf "| %.2f ms | %.2f ms | %.2f |\n", a, b, a / b }'
    echo
    echo "## Runs"
    echo
    for w in "${workloads[@]}"; do
        for impl in "${impls[@]}"; do
            c=$(command_of "$w" "$impl" | sed "s|$build/||; s|$top/||")
            if [[ -n $c ]]; then echo "- $w, $impl: \`$c\`"; fi
        done
    done
    echo "- memory floor: \`bench/gc/membw $objects 1|2 $((quick ? 1 : 5))\`"
    if ((${#failures[@]})); then
        echo
        echo "## Failures (no number posted)"
        echo
        for f in "${failures[@]}"; do echo "- $f"; done
    fi
} >> "$out/report.md"

echo "run.sh: wrote $out/report.md and raw.csv in ${runtime} s" >&2
if ((${#failures[@]})); then
    echo "run.sh: ${#failures[@]} failure(s):" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
