#!/usr/bin/env bash
# hardened-cost.sh — what hardened mode (OURO_HARDENED=1) costs against the
# default mode, and, given a second library, what a change cost the default
# mode: bench/fastpath and a few allocator workloads of bench/workloads,
# each run under ouro (LD_PRELOAD of libouro-malloc.so) with OURO_HARDENED=0
# and 1 (and under BASE_LIB with OURO_HARDENED=0), alternating within every
# round so that drifts of the machine hit every configuration alike.
# Prints Markdown tables of medians over the rounds, with ratios.
#
# Usage: bench/hardened-cost.sh [--rounds N] [--quick] [--workloads a,b,c] [--threads T]
#   --rounds N       rounds (default 7); each runs every configuration once
#   --quick          short runs (CI: proves the script works, says nothing of speed)
#   --workloads LIST workloads of bench/workloads (default larson,xmalloc,alloc-test);
#                    "none" runs bench/fastpath only
#   --threads T      threads of each workload (default 2)
# Environment:
#   BUILD_DIR        build tree (default: the top dir)
#   OURO_LIB         ouro library to preload (default BUILD_DIR/src/.libs/libouro-malloc.so)
#   BASE_LIB         another build of the library (e.g. before a change): measured in the
#                    default mode as the column "base"
#   PIN_CPU          CPU for bench/fastpath (taskset; default 1; empty: not pinned)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top}
lib=${OURO_LIB:-$build/src/.libs/libouro-malloc.so}
base_lib=${BASE_LIB:-}
pin_cpu=${PIN_CPU-1}
rounds=7
quick=0
workload_list=larson,xmalloc,alloc-test
nthreads=2
while (($#)); do
    case $1 in
        --rounds) rounds=${2-}; shift ;;
        --quick) quick=1 ;;
        --workloads) workload_list=${2-}; shift ;;
        --threads) nthreads=${2-}; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "hardened-cost.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "hardened-cost.sh: --rounds wants a positive integer" >&2; exit 2; }
[[ $nthreads =~ ^[1-9][0-9]*$ ]] || { echo "hardened-cost.sh: --threads wants a positive integer" >&2; exit 2; }
[[ -f $lib ]] || { echo "hardened-cost.sh: $lib not found (build first)" >&2; exit 1; }
[[ -z $base_lib || -f $base_lib ]] || { echo "hardened-cost.sh: BASE_LIB $base_lib not found" >&2; exit 1; }
[[ -x $build/bench/fastpath ]] || { echo "hardened-cost.sh: $build/bench/fastpath not built" >&2; exit 1; }

declare -A full_args=([larson]="-d 1" [xmalloc]="-d 1" [alloc-test]="-s 1" [mstress]="-s 100"
    [rptest]="-s 40" [glibc-thread]="-d 1" [cache-scratch]="-s 0.05" [cache-thrash]="-s 0.05")
declare -A quick_args=([larson]="-d 0.2" [xmalloc]="-d 0.2" [alloc-test]="-s 0.1" [mstress]="-s 5"
    [rptest]="-s 4" [glibc-thread]="-d 0.2" [cache-scratch]="-s 0.01" [cache-thrash]="-s 0.01")
workloads=()
if [[ $workload_list != none ]]; then
    IFS=, read -r -a workloads <<< "$workload_list"
    for w in "${workloads[@]}"; do
        [[ -n ${full_args[$w]+x} ]] || { echo "hardened-cost.sh: unknown workload '$w'" >&2; exit 2; }
        [[ -x $build/bench/workloads/$w ]] || { echo "hardened-cost.sh: $build/bench/workloads/$w not built" >&2; exit 1; }
    done
fi

# configurations: name, library, OURO_HARDENED
cfgs=(default hardened)
declare -A cfg_lib=([default]=$lib [hardened]=$lib [base]=$base_lib)
declare -A cfg_env=([default]=0 [hardened]=1 [base]=0)
[[ -n $base_lib ]] && cfgs=(base "${cfgs[@]}")

pin=()
if [[ -n $pin_cpu ]] && command -v taskset > /dev/null && taskset -c "$pin_cpu" true 2> /dev/null; then
    pin=(taskset -c "$pin_cpu")
fi
fp_args=(--csv)
((quick)) && fp_args+=(--quick)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/fast.csv" # cfg,test,ns
: > "$tmp/work.csv" # cfg,workload,throughput,rss_kb

# every run checks that the mode it asked for is the mode it got: a
# library that ignores OURO_HARDENED would make the comparison meaningless
for c in "${cfgs[@]}"; do
    want=default
    [[ $c == hardened ]] && want=hardened
    json=$(env LD_PRELOAD="${cfg_lib[$c]}" OURO_HARDENED="${cfg_env[$c]}" OURO_SHOW_STATS=2 /bin/true 2>&1 || true)
    if [[ $json != *'"mode":"'$want'"'* ]] && ! [[ $c == base && $json == '{"version"'* && $json != *'"mode"'* ]]; then
        echo "hardened-cost.sh: ${cfg_lib[$c]} with OURO_HARDENED=${cfg_env[$c]} does not run in $want mode: ${json:0:80}" >&2
        exit 1
    fi
done

for ((r = 1; r <= rounds; r++)); do
    for c in "${cfgs[@]}"; do
        echo "round $r/$rounds: fastpath, $c" >&2
        "${pin[@]}" env LD_PRELOAD="${cfg_lib[$c]}" OURO_HARDENED="${cfg_env[$c]}" \
            "$build/bench/fastpath" "${fp_args[@]}" > "$tmp/out" 2> "$tmp/err" ||
            { cat "$tmp/err" >&2; exit 1; }
        awk -F, -v c="$c" 'NR > 1 { print c "," $1 "," $2 }' "$tmp/out" >> "$tmp/fast.csv"
    done
    for w in "${workloads[@]}"; do
        if ((quick)); then args=${quick_args[$w]}; else args=${full_args[$w]}; fi
        for c in "${cfgs[@]}"; do
            echo "round $r/$rounds: $w -t $nthreads $args, $c" >&2
            # shellcheck disable=SC2086
            env LD_PRELOAD="${cfg_lib[$c]}" OURO_HARDENED="${cfg_env[$c]}" \
                "$build/bench/workloads/$w" -t "$nthreads" $args > "$tmp/out" 2> "$tmp/err" ||
                { cat "$tmp/err" >&2; echo "hardened-cost.sh: $w failed under $c" >&2; exit 1; }
            grep '^RESULT ' "$tmp/out" | tail -n 1 | awk -v c="$c" -v w="$w" '{
                for (i = 2; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
                t = f["metric"] == "elapsed_s" ? 1 / f["value"] : f["value"]
                print c "," w "," t "," f["rss_kb"] }' >> "$tmp/work.csv"
        done
    done
done

table() { # csv value-column title
    awk -F, -v col="$2" -v order="${cfgs[*]}" -v title="$3" '
        function median(list,   v, n, i, j, t) {
            n = split(list, v, " ")
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        { if (!($2 in seen)) { seen[$2] = 1; rows[++nrows] = $2 } vals[$2, $1] = vals[$2, $1] " " $col }
        END {
            n = split(order, cfg, " ")
            line = "| " title " |"; rule = "|:--|"
            for (i = 1; i <= n; i++) { line = line " " cfg[i] " |"; rule = rule "--:|" }
            line = line " hardened/default |"; rule = rule "--:|"
            if (n == 3) { line = line " default/base |"; rule = rule "--:|" }
            print line; print rule
            for (r = 1; r <= nrows; r++) {
                line = "| " rows[r] " |"
                for (i = 1; i <= n; i++) { m[cfg[i]] = median(vals[rows[r], cfg[i]]); line = line sprintf(" %.4g |", m[cfg[i]]) }
                line = line sprintf(" %.3f |", m["hardened"] / m["default"])
                if (n == 3) line = line sprintf(" %.3f |", m["default"] / m["base"])
                print line
            }
        }' "$1"
}

echo "# hardened mode against the default mode"
echo
qflag=
((quick)) && qflag=" --quick"
echo "- command: \`${BASE_LIB:+BASE_LIB=$BASE_LIB }$0 --rounds $rounds$qflag --workloads $workload_list --threads $nthreads\`"
echo "- ouro: $(git -C "$top" describe --always --dirty 2> /dev/null || echo unknown) ($lib)"
[[ -n $base_lib ]] && echo "- base: $base_lib, default mode"
echo "- $(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc $(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- medians over $rounds rounds, configurations alternating within each round; fastpath pinned: ${pin[*]:-no}"
echo
table "$tmp/fast.csv" 3 "fastpath, ns per malloc+free pair (lower is better)"
if ((${#workloads[@]})); then
    echo
    table "$tmp/work.csv" 3 "workload, $nthreads threads: throughput (higher is better; 1/s for timed work)"
    echo
    table "$tmp/work.csv" 4 "workload, $nthreads threads: peak RSS, KiB"
fi
