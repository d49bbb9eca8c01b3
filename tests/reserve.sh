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
# a reservation the kernel refuses (RLIMIT_AS) is tried again smaller:
# under a 16 GiB limit, the 64 GiB default gives way to 8 GiB (halving
# from 64 until it fits), not to none.  Sanitizers need more address space
# than any such limit leaves them: plain builds only.
if [ -z "${OURO_SANITIZED:-}" ]; then
    got=$(ulimit -v 16777216 && "$t/test_alloc" --reserve) || { echo "FAIL: test_alloc --reserve under ulimit -v"; exit 1; }
    if [ "$got" -ge $((256 * 1048576)) ] && [ "$got" -lt $((16384 * 1048576)) ]; then
        echo "PASS: under a 16 GiB address space limit, $got bytes reserved"
    else
        echo "FAIL: under a 16 GiB address space limit, $got bytes reserved"
        fail=1
    fi
fi
exit $fail
