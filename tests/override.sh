#!/bin/sh
# override.sh — real programs under the malloc override (LD_PRELOAD of
# libouro-malloc.so): their output must equal their output under glibc,
# and ouro must really have served them (its statistics at exit say so).
set -u
top_builddir=${top_builddir:-$(cd "$(dirname "$0")/.." && pwd)}
lib="$top_builddir/src/.libs/libouro-malloc.so"
if [ -n "${OURO_SANITIZED:-}" ]; then
    echo "SKIP: sanitizer runtimes interpose malloc themselves"
    exit 77
fi
[ -f "$lib" ] || { echo "FAIL: $lib not built"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS: $1"; }
ko() { fail=$((fail + 1)); echo "FAIL: $1"; }

# Run "$@" with and without ouro; compare stdout; check from the dynamic
# linker's binding log that the program's malloc was bound to ouro (stats at
# exit cannot prove it: some programs, like sort, close stderr first).
same() {
    name=$1
    shift
    "$@" >"$tmp/ref.out" 2>/dev/null
    ref=$?
    rm -f "$tmp"/ld.*
    env LD_PRELOAD="$lib" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$tmp/ld" "$@" >"$tmp/ouro.out" 2>"$tmp/ouro.err"
    got=$?
    if [ $ref -ne 0 ] || [ $got -ne 0 ]; then
        ko "$name: exit $ref under glibc, $got under ouro"; tail -5 "$tmp/ouro.err"
    elif ! cmp -s "$tmp/ref.out" "$tmp/ouro.out"; then
        ko "$name: output differs"; diff "$tmp/ref.out" "$tmp/ouro.out" | head -10
    elif ! cat "$tmp"/ld.* | grep -q "to $lib.*normal symbol .malloc'"; then
        ko "$name: malloc was not bound to ouro"
    else
        ok "$name"
    fi
}

# python3 with its own allocator off, so every object goes through malloc
cat >"$tmp/prog.py" <<'PY'
import hashlib, json, threading
d = {}
def work(k):
    for i in range(60000):
        d[(k, i)] = [str(i) * (i % 7), {"k": k, "v": i}]
        if i % 3 == 0:
            d.pop((k, i // 2), None)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
s = json.dumps(sorted((str(k), v) for k, v in d.items()))
print(len(d), hashlib.sha256(s.encode()).hexdigest())
PY
if command -v python3 >/dev/null; then
    same "python3 (PYTHONMALLOC=malloc, 4 threads)" env PYTHONMALLOC=malloc python3 "$tmp/prog.py"
else
    ko "python3 not installed"
fi

# sort over a large file, in parallel
awk 'BEGIN { srand(7); for (i = 0; i < 400000; i++) printf "%d %s\n", int(rand() * 1e9), substr("abcdefghijklmnopqrstuvwxyz", 1 + i % 26) }' >"$tmp/big.txt"
same "sort -n --parallel=2 (400k lines)" sort -n --parallel=2 -S 20M "$tmp/big.txt"

# a threaded C++ program, and the C entry points
same "C++ containers across threads" "$top_builddir/tests/cxx_prog"

# a bad option value is named in a warning, and the default kept
out=$(env LD_PRELOAD="$lib" OURO_PURGE_DELAY=soon /bin/true 2>&1)
case $out in
    *OURO_PURGE_DELAY*soon*keeping\ 10*) ok "bad OURO_PURGE_DELAY is reported" ;;
    *) ko "bad OURO_PURGE_DELAY not reported: '$out'" ;;
esac

# OURO_VERBOSE=0 silences the warnings about every variable, whatever its
# place in the table (it is read first); a bad OURO_VERBOSE is reported
out=$(env LD_PRELOAD="$lib" OURO_VERBOSE=0 OURO_PURGE_DELAY=soon OURO_GC_THRESHOLD=-3 /bin/true 2>&1)
if [ -z "$out" ]; then ok "OURO_VERBOSE=0 silences the warnings"; else ko "OURO_VERBOSE=0 printed: '$out'"; fi
out=$(env LD_PRELOAD="$lib" OURO_VERBOSE=loud /bin/true 2>&1)
case $out in
    *OURO_VERBOSE*loud*keeping\ 1*) ok "bad OURO_VERBOSE is reported" ;;
    *) ko "bad OURO_VERBOSE not reported: '$out'" ;;
esac

echo "override: $pass passed, $fail failed"
[ $fail -eq 0 ]
