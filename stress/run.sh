#!/bin/sh
# stress/run.sh [SECONDS_TOTAL] [THREADS]
# Run the long randomized stress programs in sequence, splitting a total time
# budget (default 60 s) among them; THREADS defaults to 4.  The programs are
# taken from ${BUILD_DIR:-.}/stress/.  Exits non-zero if any of them fails.
total=${1:-60}
threads=${2:-4}
dir=${BUILD_DIR:-.}/stress
progs="alloc_stress object_stress fork_stress gc_stress"
n=4
each=$((total / n))
[ "$each" -ge 1 ] || each=1

status=0
for p in $progs; do
    exe=$dir/$p
    if [ ! -x "$exe" ]; then
        echo "stress $p: FAILED: $exe not found (build it, or set BUILD_DIR)"
        status=1
        continue
    fi
    "$exe" -t "$threads" -d "$each"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "stress $p: FAILED (exit status $rc)"
        status=1
    fi
done
exit $status
