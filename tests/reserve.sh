#!/bin/sh
# reserve.sh — the allocator's test programs again with the address space
# reserved for arenas (OURO_ARENA_RESERVE) set to none and to 8 MiB: with
# none, every free finds its arena through the unit map; with 8 MiB, the
# first two arenas lie in the reservation and later ones were mapped one
# by one (test_alloc's blocks_in_many_arenas_are_all_alike spans a dozen).
# Either way every promise of those tests must hold.  Each program's
# result is its exit status.
set -u
top_builddir=${top_builddir:-$(cd "$(dirname "$0")/.." && pwd)}
t="$top_builddir/tests"
fail=0
for mib in 0 8; do
    # the variable must reach the library, or this proves nothing
    got=$(OURO_ARENA_RESERVE=$mib "$t/test_alloc" --reserve) || { echo "FAIL: test_alloc --reserve"; exit 1; }
    if [ "$got" != $((mib * 1048576)) ]; then
        echo "FAIL: OURO_ARENA_RESERVE=$mib reserves $got bytes"
        exit 1
    fi
    for prog in test_alloc test_errors test_threads; do
        OURO_ARENA_RESERVE=$mib "$t/$prog" > "$t/reserve-$prog.out" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            echo "PASS: $prog (OURO_ARENA_RESERVE=$mib)"
        elif [ $rc -eq 77 ]; then
            # the program skips itself in this build (test_errors under TSan)
            echo "SKIP: $prog (OURO_ARENA_RESERVE=$mib): $(tail -n 1 "$t/reserve-$prog.out")"
        else
            echo "FAIL: $prog (OURO_ARENA_RESERVE=$mib)"
            tail -n 20 "$t/reserve-$prog.out"
            fail=1
        fi
        rm -f "$t/reserve-$prog.out"
    done
done
exit $fail
