#!/usr/bin/env bash
# report.sh — run the allocator workloads of bench/workloads under glibc,
# ouro, mimalloc, jemalloc and tcmalloc (LD_PRELOAD) at 1..N threads and
# write raw.csv, report.md, throughput.png and rss.png into a results folder;
# then the collector workloads (bench/gc/run.sh: ouro, Boehm GC, CPython)
# into its gc/ subfolder, their tables appended to report.md.
#
# Usage: bench/report.sh [--quick] [--reps R] [--out DIR] [--workloads a,b,c]
#                        [--threads 1,2,4] [--no-gc]
#   --quick          every workload once, briefly, at 1 and N threads (CI; < 60 s here)
#   --reps R         repetitions (default 3); each cell is the median over them
#   --out DIR        results folder (default results/DATE, under the current directory)
#   --workloads LIST comma-separated subset (default: all); the collector
#                    workloads run only if LIST names `gc`
#   --threads LIST   comma-separated thread counts (default: 1..N; --quick: 1,N)
#   --no-gc          leave out the collector workloads (bench/gc/run.sh alone runs them)
# Environment:
#   WORKLOAD_DIR     where the compiled workloads are (default BUILD_DIR/bench/workloads)
#   BUILD_DIR        build tree holding src/.libs/libouro-malloc.so (default: the top dir)
#   OURO_LIB         the ouro library to preload (default BUILD_DIR/src/.libs/libouro-malloc.so);
#                    point it at a copy to keep a rebuild during the run out of the numbers
#   RUN_TIMEOUT      seconds one run may take before it counts as failed (default 120)
#   NOISE_MAX        a run during which other processes kept more than this share of the
#                    CPUs busy is run again (default 0.10) ...
#   NOISE_RETRIES    ... at most this many times (default 2, --quick 0; in all at most a
#                    quarter of the runs, to bound the run time); the report counts them
#
# N is the number of cores (hwloc-calc --number-of core machine:0, else
# nproc).  Each repetition runs every workload, thread count and allocator,
# the allocators back to back (interleaved), so slow drifts of the machine
# hit all of them alike.  The workloads pin their threads to cores with
# hwloc and print their own peak RSS (getrusage ru_maxrss).  A workload
# checks a pattern in every block it frees and exits non-zero on a
# corruption; such a run posts no number and the report lists it.
# This script builds nothing: build the workloads first (make).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top}
wdir=${WORKLOAD_DIR:-$build/bench/workloads}
libdir=/usr/lib/x86_64-linux-gnu
run_timeout=${RUN_TIMEOUT:-120}
noise_max=${NOISE_MAX:-0.10}
noise_retries=${NOISE_RETRIES-}
all_workloads=(larson xmalloc cache-scratch cache-thrash mstress rptest alloc-test glibc-thread)

# ---- per workload: arguments of a full and of a quick run, and what it measures ----
declare -A full_args=(
    [larson]="-d 1"
    [xmalloc]="-d 1"
    [cache-scratch]="-s 0.05"
    [cache-thrash]="-s 0.05"
    [mstress]="-s 100"
    [rptest]="-s 40"
    [alloc-test]="-s 1"
    [glibc-thread]="-d 1"
)
declare -A quick_args=(
    [larson]="-d 0.25"
    [xmalloc]="-d 0.25"
    [cache-scratch]="-s 0.01"
    [cache-thrash]="-s 0.01"
    [mstress]="-s 5"
    [rptest]="-s 4"
    [alloc-test]="-s 0.1"
    [glibc-thread]="-d 0.25"
)
declare -A about=(
    [larson]="server simulation: 1000 slots per thread, random sizes 8-999 B, threads hand their slots to new threads every 500k ops (fixed time)"
    [xmalloc]="P producers allocate batches of 4096 x 64 B, P consumers free them (cross-thread frees; fixed time)"
    [cache-scratch]="passive false sharing: threads free an 8 B object the main thread allocated, then allocate 8 B objects, atomically increment each many times, free them (fixed total work)"
    [cache-thrash]="active false sharing: threads allocate 8 B objects, atomically increment each many times, free them (fixed total work)"
    [mstress]="mimalloc-style stress: mixed sizes and lifetimes, transfer array between threads, 25 rounds of new threads (fixed work per thread)"
    [rptest]="rpmalloc-style: working set of 1000 blocks of 8-16000 B, 1 in 8 freed by another thread (fixed work per thread)"
    [alloc-test]="random slot replacement, 8192 slots, sizes 75% 8-64 B, 20% -512 B, 5% -4 KiB (fixed work per thread)"
    [glibc-thread]="per-thread working set of 2048 blocks of 8-512 B, random replacement (fixed time)"
)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

quick=0
reps=3
reps_set=0
out=
workload_list=
thread_list=
run_gc=1
cmdline="$0${*:+ $*}"
while (($#)); do
    case $1 in
        --quick) quick=1 ;;
        --reps) reps=${2-}; reps_set=1; shift ;;
        --reps=*) reps=${1#*=}; reps_set=1 ;;
        --out) out=${2-}; shift ;;
        --out=*) out=${1#*=} ;;
        --workloads) workload_list=${2-}; shift ;;
        --workloads=*) workload_list=${1#*=} ;;
        --threads) thread_list=${2-}; shift ;;
        --threads=*) thread_list=${1#*=} ;;
        --no-gc) run_gc=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "report.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
((quick && !reps_set)) && reps=1
[[ -n $noise_retries ]] || noise_retries=$((quick ? 0 : 2))
if ! [[ $noise_retries =~ ^[0-9]+$ ]]; then
    echo "report.sh: NOISE_RETRIES wants a count, not '$noise_retries'" >&2
    exit 2
fi
if ! [[ $reps =~ ^[1-9][0-9]*$ ]]; then
    echo "report.sh: --reps wants a positive integer, not '$reps'" >&2
    exit 2
fi

# ---- workloads ----
workloads=()
if [[ -n $workload_list ]]; then
    IFS=, read -r -a wanted <<< "$workload_list"
    gc_wanted=0
    for w in "${wanted[@]}"; do
        [[ -z $w ]] && continue
        if [[ $w == gc ]]; then gc_wanted=1; continue; fi
        if [[ -z ${full_args[$w]+x} ]]; then
            echo "report.sh: unknown workload '$w' (known: ${all_workloads[*]})" >&2
            exit 2
        fi
        workloads+=("$w")
    done
    ((gc_wanted)) || run_gc=0
else
    workloads=("${all_workloads[@]}")
fi
((${#workloads[@]})) || { echo "report.sh: no workloads selected" >&2; exit 2; }
missing=()
for w in "${workloads[@]}"; do
    [[ -x $wdir/$w ]] || missing+=("$wdir/$w")
done
if ((${#missing[@]})); then
    echo "report.sh: workload programs not found (build them first, e.g. make, or set WORKLOAD_DIR):" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

# ---- thread counts ----
cores=
if command -v hwloc-calc > /dev/null; then
    cores=$(hwloc-calc --number-of core machine:0 2> /dev/null || true)
fi
cores_from="hwloc-calc"
if ! [[ $cores =~ ^[1-9][0-9]*$ ]]; then
    cores=$(nproc)
    cores_from="nproc"
fi
threads=()
if [[ -n $thread_list ]]; then
    IFS=, read -r -a threads <<< "$thread_list"
    for t in "${threads[@]}"; do
        [[ $t =~ ^[1-9][0-9]*$ ]] || { echo "report.sh: bad thread count '$t'" >&2; exit 2; }
    done
elif ((quick)); then
    threads=(1)
    ((cores > 1)) && threads+=("$cores")
else
    for ((t = 1; t <= cores; t++)); do threads+=("$t"); done
fi
max_threads=${threads[-1]}
for t in "${threads[@]}"; do ((t > max_threads)) && max_threads=$t; done

# ---- allocators: name and library to preload ("" = glibc, no preload) ----
names=()
libs=()
notes=()
add_alloc() { # name so-path
    if [[ -z $2 || -f $2 ]]; then
        names+=("$1")
        libs+=("$2")
    else
        notes+=("skipped $1: $2 not found")
    fi
}
add_alloc glibc ""
add_alloc ouro "${OURO_LIB:-$build/src/.libs/libouro-malloc.so}"
add_alloc mimalloc "$libdir/libmimalloc.so.2"
add_alloc jemalloc "$libdir/libjemalloc.so.2"
add_alloc tcmalloc "$libdir/libtcmalloc_minimal.so.4"

# ---- results folder ----
[[ -n $out ]] || out=results/$(date '+%Y%m%d-%H%M%S')
mkdir -p "$out"
out=$(cd "$out" && pwd)
raw=$out/raw.csv
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# /proc/stat cpu line: busy (user nice system irq softirq), steal, total ticks
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
read -r busy0 steal0 total0 < <(cpu_ticks)
clk_tck=$(getconf CLK_TCK)
ncpu=$(nproc)
# user + system seconds of this shell's finished children (the `times` builtin)
children_cpu() {
    times > "$tmp/times"
    awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } print n }' "$tmp/times"
}
load0=$(cut -d' ' -f1-3 /proc/loadavg)
start_s=$(date +%s.%N)
start_date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

nruns=$((reps * ${#workloads[@]} * ${#threads[@]} * ${#names[@]}))
retry_budget=$((nruns / 4 > 10 ? nruns / 4 : 10)) # bounds the run time on a busy machine
echo "report.sh: $nruns runs (${#workloads[@]} workloads x threads ${threads[*]} x ${#names[@]} allocators x $reps reps) -> $out" >&2

# ---- runs ----
echo "workload,allocator,threads,rep,metric,value,rss_kb" > "$raw"
failures=()
kept_noisy=()
retried=0
run=0
for ((r = 1; r <= reps; r++)); do
    for w in "${workloads[@]}"; do
        if ((quick)); then args=${quick_args[$w]}; else args=${full_args[$w]}; fi
        for t in "${threads[@]}"; do
            for i in "${!names[@]}"; do
                name=${names[$i]} lib=${libs[$i]}
                run=$((run + 1))
                for ((attempt = 0; ; attempt++)); do
                    rc=0
                    read -r b0 _ _ < <(cpu_ticks)
                    children_cpu > "$tmp/c0" # not $(...): a subshell has no children of ours
                    c0=$(< "$tmp/c0")
                    w0=$(date +%s.%N)
                    # word splitting of $args is intended (options like "-d 1")
                    # shellcheck disable=SC2086
                    timeout "$run_timeout" env ${lib:+LD_PRELOAD="$lib"} "$wdir/$w" -t "$t" $args \
                        > "$tmp/out" 2> "$tmp/err" || rc=$?
                    w1=$(date +%s.%N)
                    children_cpu > "$tmp/c1"
                    c1=$(< "$tmp/c1")
                    read -r b1 _ _ < <(cpu_ticks)
                    # CPU the machine spent on other processes meanwhile, as a
                    # share of all CPUs over the run's wall time (/proc/stat counts
                    # in ticks: less than 3 of them is below what it can tell)
                    other=$(awk -v b="$((b1 - b0))" -v hz="$clk_tck" -v c="$(awk -v x="$c0" -v y="$c1" 'BEGIN { print y - x }')" \
                        -v w="$(awk -v x="$w0" -v y="$w1" 'BEGIN { print y - x }')" -v n="$ncpu" \
                        'BEGIN { o = b / hz - c; if (o < 3 / hz) o = 0; s = (w > 0 ? o / (w * n) : 0); printf "%.3f", (s > 1 ? 1 : s) }')
                    if ((rc != 0)) || awk -v o="$other" -v m="$noise_max" 'BEGIN { exit !(o <= m) }'; then
                        break
                    fi
                    if ((attempt >= noise_retries || retried >= retry_budget)); then
                        kept_noisy+=("$w, $name, $t threads, rep $r: $(awk -v o="$other" 'BEGIN { printf "%.0f", 100 * o }')% of the CPUs busy elsewhere")
                        break
                    fi
                    retried=$((retried + 1))
                    echo "[$run/$nruns] rep $r $w t=$t $name: disturbed ($(awk -v o="$other" 'BEGIN { printf "%.0f", 100 * o }')% of the CPUs busy elsewhere), again" >&2
                    sleep 1
                done
                if ((rc == 0)) && grep -q 'cannot be preloaded' "$tmp/err"; then
                    rc=98 # ld.so only warns, and the run would have measured glibc
                fi
                line=$(grep '^RESULT ' "$tmp/out" | tail -n 1 || true)
                if ((rc == 0)) && [[ -z $line ]]; then rc=99; fi
                if ((rc != 0)); then
                    why="exit $rc"
                    ((rc == 124)) && why="timed out after ${run_timeout}s"
                    ((rc == 98)) && why="library could not be preloaded"
                    ((rc == 99)) && why="no RESULT line"
                    msg=$(grep -m1 -v '^$' "$tmp/err" || true)
                    failures+=("$w, $name, $t threads, rep $r: $why${msg:+: $msg}")
                    echo "[$run/$nruns] rep $r $w t=$t $name: FAILED ($why)" >&2
                    [[ -s $tmp/err ]] && sed 's/^/    /' "$tmp/err" | head -n 5 >&2
                    echo "$w,$name,$t,$r,,FAIL," >> "$raw"
                    continue
                fi
                # RESULT workload=... threads=... metric=... value=... rss_kb=... [extra]
                echo "$line" | awk -v w="$w" -v a="$name" -v t="$t" -v r="$r" '{
                    for (i = 2; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
                    print w "," a "," t "," r "," f["metric"] "," f["value"] "," f["rss_kb"]
                }' >> "$raw"
                echo "[$run/$nruns] rep $r $w t=$t $name: $(tail -n 1 "$raw" | cut -d, -f5-)" >&2
            done
        done
    done
done
end_s=$(date +%s.%N)
read -r busy1 steal1 total1 < <(cpu_ticks)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
runtime=$(awk -v a="$start_s" -v b="$end_s" 'BEGIN { printf "%.0f", b - a }')
steal_pct=$(awk -v s="$((steal1 - steal0))" -v t="$((total1 - total0))" 'BEGIN { printf "%.1f", (t > 0 ? 100 * s / t : 0) }')
# CPU the machine was busy minus what this script's children used: other load
children_cpu > "$tmp/ours" # in this shell: a subshell would see no children
ours=$(cat "$tmp/ours")
other_cpu=$(awk -v b="$((busy1 - busy0))" -v hz="$(getconf CLK_TCK)" -v o="$ours" -v t="$((total1 - total0))" \
    -v w="$runtime" 'BEGIN { x = b / hz - o; if (x < 0) x = 0; printf "%.1f s (%.1f%% of the CPUs)", x, (t > 0 ? 100 * x * hz / t : 0) }')

# ---- report.md and plot data ----
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)
mkdir -p "$out/plot"
for w in "${workloads[@]}"; do printf '%s\t%s\n' "$w" "${about[$w]}"; done > "$tmp/about"
{
    echo "# ouro allocator workloads"
    echo
    envs=
    for v in WORKLOAD_DIR BUILD_DIR OURO_LIB RUN_TIMEOUT; do
        [[ -n ${!v:-} ]] && envs+=" $v=${!v}"
    done
    echo "- command: \`${envs:+${envs# } }$cmdline\`"
    echo "- date: $start_date; total run time: ${runtime} s; $nruns runs"
    echo "- machine: ${cpu_model:-unknown CPU}, $cores cores ($cores_from), nproc $(nproc), $(uname -sr)"
    echo "- noise: CPU steal ${steal_pct}% (the VM host taking the CPUs); CPU used by other processes during the runs: $other_cpu; load average $load0 before, $load1 after"
    echo "- ouro: $(git -C "$top" describe --always --dirty 2> /dev/null || echo unknown)"
    echo "- runs repeated because other processes kept > $(awk -v m="$noise_max" 'BEGIN { printf "%.0f", 100 * m }')% of the CPUs busy: $retried; kept although still disturbed after $noise_retries retries: ${#kept_noisy[@]}"
    echo "- threads: ${threads[*]}; repetitions: $reps (each cell: median over them); threads pinned to cores with hwloc"
    for i in "${!names[@]}"; do
        lib=${libs[$i]}
        sum=
        [[ -n $lib ]] && sum=$(sha256sum "$lib" 2> /dev/null | cut -c1-12)
        echo "- ${names[$i]}: ${lib:-(no preload)}${sum:+ (sha256 $sum…)}"
    done
    for note in "${notes[@]}"; do
        echo "- note: $note"
    done
    echo "- raw data: raw.csv; plots: throughput.png, rss.png"
    echo
    echo "Ratio rows are **throughput ratios**: ouro's throughput over the other allocator's, so"
    echo "**> 1 means ouro is faster**. For workloads that report elapsed time (lower is better) the"
    echo "throughput is 1/time, so the ratio is the other's time over ouro's. Peak RSS ratios are"
    echo "ouro's RSS over the other's: **< 1 means ouro uses less memory**."
    echo
} > "$out/report.md"

awk -F, -v order="${names[*]}" -v wls="${workloads[*]}" -v thr="${threads[*]}" \
    -v maxt="$max_threads" -v plotdir="$out/plot" -v aboutfile="$tmp/about" '
    function median(list,   v, n, i, j, t) {
        n = split(list, v, " ")
        if (n == 0) return ""
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    # throughput: bigger is better, whatever the metric
    function tput(w, v) { return (v == "" ) ? "" : (lower[w] ? (v > 0 ? 1 / v : "") : v) }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : a / b }
    function fmtr(x) { return x == "" ? "n/a" : sprintf("%.2f", x) }
    function fmtv(w, v) {
        if (v == "") return "FAIL"
        if (lower[w]) return sprintf("%.3f", v)
        return sprintf("%.2f", v / 1e6)
    }
    function unit(w) { return lower[w] ? metric[w] " in s (lower is better)" : metric[w] " in millions (higher is better)" }
    BEGIN {
        nalloc = split(order, alloc, " "); nw = split(wls, wl, " "); nt = split(thr, th, " ")
        while ((getline line < aboutfile) > 0) { k = line; sub(/\t.*/, "", k); d = line; sub(/^[^\t]*\t/, "", d); about[k] = d }
    }
    NR == 1 { next }
    {
        w = $1; a = $2; t = $3
        if ($6 == "FAIL") { failed[w, a, t]++; next }
        if ($5 != "") { metric[w] = $5; lower[w] = ($5 == "elapsed_s") }
        vals[w, a, t] = vals[w, a, t] " " $6
        if ($7 != "") rss[w, a, t] = rss[w, a, t] " " $7
        byrep[w, a, t, $4] = $6; rep[$4] = 1
    }
    END {
        for (x = 1; x <= nw; x++) {
            w = wl[x]
            for (i = 1; i <= nalloc; i++) for (y = 1; y <= nt; y++) {
                a = alloc[i]; t = th[y]
                med[w, a, t] = median(vals[w, a, t]); mrss[w, a, t] = median(rss[w, a, t])
                # a cell with a failed run posts no number: a broken allocator must not look good
                if ((w, a, t) in failed) { med[w, a, t] = ""; mrss[w, a, t] = "" }
            }
            print "## " w
            print ""
            print about[w] ". Metric: " unit(w) "."
            print ""
            line = "| allocator |"; rule = "|:--|"
            for (y = 1; y <= nt; y++) { line = line " " th[y] (th[y] == 1 ? " thread" : " threads") " |"; rule = rule "--:|" }
            print line; print rule
            for (i = 1; i <= nalloc; i++) {
                a = alloc[i]; line = "| " a " |"
                for (y = 1; y <= nt; y++) {
                    v = med[w, a, th[y]]
                    line = line " " fmtv(w, v) ((w, a, th[y]) in failed ? " (" failed[w, a, th[y]] " run(s) failed)" : "") " |"
                }
                print line
            }
            split("mimalloc glibc", others, " ")
            for (k = 1; k <= 2; k++) {
                o = others[k]; line = "| **ouro/" o "** (throughput) |"
                for (y = 1; y <= nt; y++) {
                    t = th[y]
                    line = line " **" fmtr(ratio(tput(w, med[w, "ouro", t]), tput(w, med[w, o, t]))) "** |"
                }
                print line
            }
            print ""
            print "Peak RSS, MiB (median):"
            print ""
            line = "| allocator |"; rule = "|:--|"
            for (y = 1; y <= nt; y++) { line = line " " th[y] (th[y] == 1 ? " thread" : " threads") " |"; rule = rule "--:|" }
            print line; print rule
            for (i = 1; i <= nalloc; i++) {
                a = alloc[i]; line = "| " a " |"
                for (y = 1; y <= nt; y++) {
                    v = mrss[w, a, th[y]]
                    line = line " " (v == "" ? "n/a" : sprintf("%.1f", v / 1024)) " |"
                }
                print line
            }
            line = "| **ouro/mimalloc** |"
            for (y = 1; y <= nt; y++) line = line " **" fmtr(ratio(mrss[w, "ouro", th[y]], mrss[w, "mimalloc", th[y]])) "** |"
            print line
            print ""

            # plot data: threads, then each allocator throughput (1/s for time metrics)
            f = plotdir "/tput-" x ".dat"
            hdr = "# threads"; for (i = 1; i <= nalloc; i++) hdr = hdr " " alloc[i]
            print hdr > f
            for (y = 1; y <= nt; y++) {
                t = th[y]; line = t
                for (i = 1; i <= nalloc; i++) {
                    v = tput(w, med[w, alloc[i], t])
                    line = line " " (v == "" ? "NaN" : (lower[w] ? v : v / 1e6))
                }
                print line > f
            }
            close(f)
            f = plotdir "/rss-" x ".dat"
            for (i = 1; i <= nalloc; i++) {
                v = mrss[w, alloc[i], maxt]
                print alloc[i], i - 1, (v == "" ? "NaN" : v / 1024), i > f
            }
            close(f)
            print w "\t" (lower[w] ? "runs/s (1 / elapsed s)" : metric[w] " (millions)") > (plotdir "/titles")
        }
        close(plotdir "/titles")

        print "## Summary at " maxt " threads"
        print ""
        print "| workload | ouro/mimalloc throughput | per repetition | ouro/glibc throughput | peak RSS ouro/mimalloc | peak RSS ouro, MiB | peak RSS mimalloc, MiB |"
        print "|:--|--:|--:|--:|--:|--:|--:|"
        n = 0; logsum = 0; minr = ""; minw = ""; ng = 0; loggsum = 0
        for (x = 1; x <= nw; x++) {
            w = wl[x]
            # the ratio within each repetition (the two runs were back to
            # back): its spread says how far the median can be trusted
            lo = ""; hi = ""
            for (r in rep) {
                if (!((w, "ouro", maxt, r) in byrep) || !((w, "mimalloc", maxt, r) in byrep)) continue
                rr = ratio(tput(w, byrep[w, "ouro", maxt, r]), tput(w, byrep[w, "mimalloc", maxt, r]))
                if (rr == "" || rr <= 0) continue
                if (lo == "" || rr < lo) lo = rr
                if (hi == "" || rr > hi) hi = rr
                replog[r] += log(rr); repn[r]++
            }
            rm = ratio(tput(w, med[w, "ouro", maxt]), tput(w, med[w, "mimalloc", maxt]))
            rg = ratio(tput(w, med[w, "ouro", maxt]), tput(w, med[w, "glibc", maxt]))
            rr = ratio(mrss[w, "ouro", maxt], mrss[w, "mimalloc", maxt])
            if (rm != "" && rm > 0) { n++; logsum += log(rm); if (minr == "" || rm < minr) { minr = rm; minw = w } }
            if (rg != "" && rg > 0) { ng++; loggsum += log(rg) }
            ro = mrss[w, "ouro", maxt]; rmi = mrss[w, "mimalloc", maxt]
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", w, fmtr(rm), (lo == "" ? "n/a" : fmtr(lo) "–" fmtr(hi)), fmtr(rg), fmtr(rr),
                (ro == "" ? "n/a" : sprintf("%.1f", ro / 1024)), (rmi == "" ? "n/a" : sprintf("%.1f", rmi / 1024))
        }
        print ""
        if (n > 0) {
            printf "- geometric mean of ouro/mimalloc throughput ratios over %d workloads at %d threads: **%.2f**\n", n, maxt, exp(logsum / n)
            glo = ""; ghi = ""
            for (r in rep)
                if (repn[r] == n) {
                    g = exp(replog[r] / n)
                    if (glo == "" || g < glo) glo = g
                    if (ghi == "" || g > ghi) ghi = g
                }
            if (glo != "")
                printf "- the same over the runs of one repetition at a time (lowest–highest): %.2f–%.2f\n", glo, ghi
            printf "- lowest ouro/mimalloc throughput ratio: **%.2f** (%s)\n", minr, minw
        } else {
            print "- no ouro/mimalloc ratios (a run failed or an allocator is missing)"
        }
        if (ng > 0) printf "- geometric mean of ouro/glibc throughput ratios: %.2f\n", exp(loggsum / ng)
        print "- throughput ratio > 1: ouro faster; RSS ratio > 1: ouro uses more memory"
    }' "$raw" >> "$out/report.md" || { echo "report.sh: making report.md failed" >&2; exit 1; }

{
    echo
    echo "## Runs"
    echo
    for w in "${workloads[@]}"; do
        if ((quick)); then args=${quick_args[$w]}; else args=${full_args[$w]}; fi
        echo "- $w: \`$w -t T $args\`"
    done
    if ((${#kept_noisy[@]})); then
        echo
        echo "## Runs kept although disturbed by other load"
        echo
        for f in "${kept_noisy[@]}"; do echo "- $f"; done
    fi
    if ((${#failures[@]})); then
        echo
        echo "## Failed runs (no number posted)"
        echo
        for f in "${failures[@]}"; do echo "- $f"; done
    fi
} >> "$out/report.md"

# ---- plots ----
plot_note=
if command -v gnuplot > /dev/null; then
    term=png
    if gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo; then term=pngcairo; fi
    nw=${#workloads[@]}
    cols=$((nw > 6 ? 4 : (nw > 2 ? 3 : nw)))
    rows=$(((nw + cols - 1) / cols))
    {
        echo "set terminal $term size $((cols * 420)),$((rows * 350 + 40)) font 'sans,9' noenhanced"
        echo "names = '${names[*]}'"
        echo "set datafile missing 'NaN'"
        echo "set grid ytics"
        echo "set output '$out/throughput.png'"
        echo "set multiplot layout $rows,$cols title 'ouro workloads: throughput vs threads (higher is better; medians over $reps reps)'"
        echo "set xlabel 'threads'"
        echo "set xtics 1"
        echo "set xrange [0.5:$max_threads.5]"
        echo "set yrange [0:*]"
        echo "set key inside top left horizontal maxcols 3 font ',8' samplen 1.5 reverse Left width 1 opaque"
        echo "set offsets 0, 0, graph 0.3, 0" # headroom for the key
        x=0
        for w in "${workloads[@]}"; do
            x=$((x + 1))
            ylabel=$(awk -F'\t' -v w="$w" '$1 == w { print $2 }' "$out/plot/titles")
            echo "set title '$w'"
            echo "set ylabel '$ylabel'"
            echo "plot for [i=1:words(names)] '$out/plot/tput-$x.dat' using 1:(column(i+1)) with linespoints lt i lw (word(names, i) eq 'ouro' ? 2.5 : 1.2) pt 7 ps 0.8 title word(names, i)"
        done
        echo "unset multiplot"
        echo "set output '$out/rss.png'"
        echo "set multiplot layout $rows,$cols title 'ouro workloads: peak RSS at $max_threads threads (MiB, lower is better)'"
        echo "unset xlabel"
        echo "set xtics rotate by -30 font ',8'"
        echo "set xrange [-0.6:words(names) - 0.4]"
        echo "set yrange [0:*]"
        echo "set style fill solid 0.8 border -1"
        echo "set boxwidth 0.7"
        echo "set ylabel 'peak RSS, MiB'"
        echo "set offsets 0, 0, graph 0.12, 0" # room for the labels
        x=0
        for w in "${workloads[@]}"; do
            x=$((x + 1))
            echo "set title '$w'"
            echo "plot '$out/plot/rss-$x.dat' using 2:3:(0.7):4:xtic(1) with boxes lc variable notitle, '' using 2:3:(sprintf('%.1f', \$3)) with labels offset 0,0.6 font ',7' notitle"
        done
        echo "unset multiplot"
    } > "$out/plot/plots.gp"
    if ! gnuplot "$out/plot/plots.gp" 2> "$tmp/gp.err"; then
        cat "$tmp/gp.err" >&2
        plot_note="gnuplot failed; see plot/plots.gp"
    fi
else
    plot_note="gnuplot not found: no plots"
fi
if [[ -n $plot_note ]]; then
    echo "report.sh: $plot_note" >&2
    printf '\n- note: %s\n' "$plot_note" >> "$out/report.md"
fi

echo "report.sh: wrote $out/report.md, raw.csv, throughput.png, rss.png in ${runtime} s" >&2

# ---- the collector workloads: their own script, their tables appended ----
if ((run_gc)); then
    gc_rc=0
    gc_args=(--out "$out/gc")
    ((quick)) && gc_args+=(--quick)
    ((reps_set)) && gc_args+=(--reps "$reps")
    BUILD_DIR=$build bash "$top/bench/gc/run.sh" "${gc_args[@]}" || gc_rc=$?
    if [[ -f $out/gc/report.md ]]; then
        # one level down: its title becomes a section of this report
        { echo; sed 's/^#/##/' "$out/gc/report.md"; } >> "$out/report.md"
    fi
    if ((gc_rc != 0)); then
        failures+=("collector workloads: bench/gc/run.sh exited $gc_rc (see gc/report.md)")
    fi
fi

if ((${#failures[@]})); then
    echo "report.sh: ${#failures[@]} run(s) failed:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
