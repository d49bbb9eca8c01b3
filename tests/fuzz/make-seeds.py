#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_api.c into tests/fuzz/corpus/.

Each seed is a small program in the harness's byte format (see the comment
at the top of fuzz_api.c), written here with names so that a reader can see
what it exercises; libFuzzer grows the corpus from them.  Run from the
source tree after changing the byte format: python3 tests/fuzz/make-seeds.py
The corpus also keeps inputs the fuzzer found failing, minimized, as
regress-* (not written here): rewrite them by hand if the format changes.
"""
import math
import os

MALLOC, CALLOC, REALLOC, FREE, ALIGNED, BLOCK, BAD, NEW, DUP, DECREF, LINK, LOAD, \
    TRACK, COLLECT, FREEZE, CHECK, FAULT, MISC, REMOTE, SETTLE, WEAKREF = range(21)
# object types
FIN, MID, NOCLEAR, BIG, PLAIN, PLAINBIG, SHARED = range(7)
EMPTY = 31  # a handle no seed fills: LINK to it stores NULL


def size(n):
    """The two size bytes for n bytes (the nearest the encoding can say)."""
    if n < 64:
        v = n
    elif n < 1024:
        v = 0x4000 | n
    elif n <= 0x3fff * 8:
        v = 0x8000 | (n // 8)
    else:
        v = 0xc000 | min(math.isqrt((n - (128 << 10)) * 64), 0x3fff)
    return [v >> 8, v & 255]


def seed(*ops):
    out = []
    for op in ops:
        out += op
    return bytes(out)


seeds = {
    # every allocation call, with growth and shrinking across the classes
    "alloc": seed(
        [MALLOC, 0] + size(0), [MALLOC, 1] + size(24), [MALLOC, 2] + size(700),
        [MALLOC, 3] + size(5000), [MALLOC, 4] + size(200000),
        [CALLOC, 5, 3] + size(40), [ALIGNED, 6, 12] + size(100), [ALIGNED, 7, 22] + size(300000),
        [REALLOC, 1] + size(600), [REALLOC, 2] + size(30), [REALLOC, 4] + size(900000),
        [REALLOC, 8] + size(50), [BLOCK, 1], [BLOCK, 4], [BLOCK, 6],
        [REALLOC, 4] + size(4200000), [REALLOC, 7] + size(4300000), [CALLOC, 9, 2] + size(3000000),
        [FREE, 0, 0], [FREE, 1, 1], [FREE, 2, 2], [REALLOC, 3] + size(0), [MISC, 0, 1]),
    # a two-object cycle, dropped, found by a young collection
    "cycle": seed(
        [NEW, 0, FIN], [NEW, 1, MID], [LINK, 0, 0, 1, 0], [LINK, 1, 0, 0, 1], [CHECK, 0],
        [DECREF, 0], [DECREF, 1], [COLLECT, 0], [CHECK, 2]),
    # survivors age, freezing hides garbage from collections, unfreeze shows it
    "generations": seed(
        [NEW, 0, FIN], [NEW, 1, FIN], [LINK, 0, 0, 1, 0], [LINK, 1, 1, 0, 0],
        [COLLECT, 0], [COLLECT, 1], [FREEZE, 0], [DECREF, 0], [DECREF, 1],
        [COLLECT, 2], [FREEZE, 2], [FREEZE, 1], [COLLECT, 2], [CHECK, 0]),
    # a second thread makes, counts, links and collects objects, then exits
    "remote": seed(
        [REMOTE, 4, 0, FIN, 0], [NEW, 1, MID], [REMOTE, 0, 1, 2, 1], [REMOTE, 5, 0, 0, 1],
        [LINK, 1, 0, 0, 0], [REMOTE, 1, 2, 0, 0], [DECREF, 1], [REMOTE, 3, 5, 1, 0],
        [REMOTE, 2, 5, 0, 0], [MALLOC, 6] + size(100), [REMOTE, 2, 6, 0, 0],
        [CHECK, 0], [REMOTE, 6, 0, 0, 0], [REMOTE, 7, 0, 0, 0], [DECREF, 0], [REMOTE, 8, 0, 0, 0]),
    # every documented error
    "errors": seed(*[[BAD, k, x] for k in range(14) for x in (0, 1)],
                   [COLLECT, 3], [COLLECT, 4], [MISC, 11, 0], [MISC, 12, 0]),
    # cycles the collector must leave: untracked, without clear, saved
    "leftovers": seed(
        [NEW, 0, NOCLEAR], [NEW, 1, NOCLEAR], [LINK, 0, 0, 1, 0], [LINK, 1, 0, 0, 0],
        [NEW, 2, FIN], [LINK, 2, 3, 2, 0], [TRACK, 2, 1], [NEW, 3, PLAIN], [LINK, 0, 2, 3, 0],
        [DECREF, 0], [DECREF, 1], [DECREF, 2], [DECREF, 3], [COLLECT, 2],
        [MISC, 6, 1], [NEW, 4, MID], [LINK, 4, 0, 4, 0], [DECREF, 4], [COLLECT, 0],
        [MISC, 7, 0], [MISC, 7, 1], [MISC, 6, 0]),
    # mappings fail: allocations return NULL with ENOMEM, and recover
    "faults": seed(
        [FAULT, 0, 3], [MALLOC, 0] + size(300000), [ALIGNED, 1, 23] + size(10),
        [REALLOC, 0] + size(500000), [NEW, 2, BIG], [COLLECT, 2], [FAULT, 0, 0],
        [MALLOC, 0] + size(300000), [FREE, 0, 0]),
    # lazy merging across threads, online mode, markers, objects shared for reads
    "threads": seed(
        [MISC, 8, 1], [MISC, 10, 1], [NEW, 0, SHARED], [DUP, 0, 1, 1], [REMOTE, 0, 1, 2, 1],
        [REMOTE, 1, 1, 0, 0], [DECREF, 0], [NEW, 3, FIN], [REMOTE, 0, 3, 4, 0], [DECREF, 3],
        [REMOTE, 1, 4, 0, 0], [MISC, 3, 2], [COLLECT, 0], [SETTLE], [MISC, 9, 0], [MISC, 10, 0]),
    # weak references: got while alive, cleared by the collector and by a count reaching zero
    "weakrefs": seed(
        [NEW, 0, FIN], [NEW, 1, MID], [LINK, 0, 0, 1, 0], [LINK, 1, 0, 0, 0],
        [WEAKREF, 0, 0, 0], [WEAKREF, 0, 1, 1], [WEAKREF, 1, 2, 0], [DECREF, 2],
        [DECREF, 0], [DECREF, 1], [COLLECT, 0], [WEAKREF, 1, 2, 0], [WEAKREF, 1, 2, 1],
        [NEW, 3, PLAIN], [WEAKREF, 0, 3, 2], [DECREF, 3], [WEAKREF, 1, 4, 2], [WEAKREF, 2, 0, 0],
        [CHECK, 5]),
    # one collection.  With FUZZ_CPPFLAGS=-DFUZZ_REENTRANT_CALLBACKS=1 the
    # harness calls ouro_gc_collect from the collection's callbacks, which
    # ouro.h says returns 0; gc.c deadlocks there today (see fuzz_api.c)
    "gc-callback-reentry": seed([COLLECT, 0]),
}

here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "corpus"), exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(here, "corpus", name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")
