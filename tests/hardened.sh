#!/bin/sh
# hardened.sh — the allocator's and the objects' test programs again, in
# hardened mode (OURO_HARDENED=1): encoded free lists, random carving order
# and guard pages must keep every promise those tests check.  (test_hardened
# tests what the mode itself adds.)  Each program's result is its exit status.
set -u
top_builddir=${top_builddir:-$(cd "$(dirname "$0")/.." && pwd)}
t="$top_builddir/tests"
OURO_HARDENED=1
export OURO_HARDENED
# the variable must reach the library as hardened mode, or this proves nothing
mode=$("$t/test_hardened" --mode) || { echo "FAIL: test_hardened --mode"; exit 1; }
if [ "$mode" != hardened ]; then
    echo "FAIL: OURO_HARDENED=1 gives the $mode mode"
    exit 1
fi
fail=0
for prog in test_alloc test_threads test_faults test_objects; do
    if "$t/$prog" > "$t/hardened-$prog.out" 2>&1; then
        echo "PASS: $prog (OURO_HARDENED=1)"
    else
        echo "FAIL: $prog (OURO_HARDENED=1)"
        tail -n 20 "$t/hardened-$prog.out"
        fail=1
    fi
    rm -f "$t/hardened-$prog.out"
done
exit $fail
