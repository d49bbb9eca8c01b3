"""trees.py — GCBench and binary-trees (bench/gc/trees.h) for CPython's gc.

   python3 trees.py gcbench|binarytrees[-cyclic] [depth]

The same workloads, shapes and output line as trees-ouro and trees-boehm.
A node is an instance of a class with __slots__ (a tracked container,
like ouro's nodes); the -cyclic variants add a parent slot, so each dropped
tree is a cycle that only gc reclaims.  The long-lived array is an
array.array of doubles (pointer-free, untracked, as Boehm's atomic block).
gc keeps its defaults (enabled, thresholds 700, 10, 10).  Prints
collections= (all generations), collected= and gc_s= (the collections'
summed durations, timed with gc.callbacks)."""
import array
import gc
import resource
import sys
import time


class Node:
    __slots__ = ("left", "right", "i", "j")

    def __init__(self):
        self.left = self.right = None
        self.i = self.j = 0


class CNode:
    __slots__ = ("left", "right", "parent", "i", "j")

    def __init__(self):
        self.left = self.right = self.parent = None
        self.i = self.j = 0


def nodes(depth):
    return (2 << depth) - 1


def make_builders(cyclic):
    new = CNode if cyclic else Node

    def link(n, l, r):
        n.left = l
        n.right = r
        if cyclic:
            l.parent = n
            r.parent = n

    def populate(depth, n):
        if depth <= 0:
            return
        l, r = new(), new()
        link(n, l, r)
        populate(depth - 1, l)
        populate(depth - 1, r)

    def make(depth):
        if depth <= 0:
            return new()
        l = make(depth - 1)
        r = make(depth - 1)
        n = new()
        link(n, l, r)
        return n

    return new, populate, make


def check(n):
    l = n.left
    return 1 + check(l) + check(n.right) if l is not None else 1


def run_gcbench(depth, cyclic):
    new, populate, make = make_builders(cyclic)
    min_depth, stretch_depth, array_size = 4, depth + 2, 500000
    make(stretch_depth)
    long_lived = new()
    populate(depth, long_lived)
    arr = array.array("d", bytes(8 * array_size))
    for i in range(array_size // 2):
        arr[i] = 1.0 / i if i else float("inf")
    for d in range(min_depth, depth + 1, 2):
        iters = 2 * nodes(stretch_depth) // nodes(d)
        for _ in range(iters):
            populate(d, new())
        for _ in range(iters):
            make(d)
    result = check(long_lived)
    if arr[1000] != 1.0 / 1000:
        sys.exit("gcbench: the long-lived array lost its contents")
    return result


def run_binarytrees(depth, cyclic):
    _, _, make = make_builders(cyclic)
    min_depth = 4
    depth = max(depth, min_depth + 2)
    total = check(make(depth + 1))
    long_lived = make(depth)
    for d in range(min_depth, depth + 1, 2):
        iters = 1 << (depth - d + min_depth)
        c = 0
        for _ in range(iters):
            c += check(make(d))
        if c != iters * nodes(d):
            sys.exit(f"binarytrees: {iters} trees of depth {d} checked {c}")
        total += c
    return total + check(long_lived)


def main():
    workload = sys.argv[1] if len(sys.argv) > 1 else "gcbench"
    cyclic = workload.endswith("-cyclic")
    base = workload[: -len("-cyclic")] if cyclic else workload
    if base not in ("gcbench", "binarytrees"):
        sys.exit(f"usage: {sys.argv[0]} gcbench|binarytrees[-cyclic] [depth]")
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else (16 if base == "gcbench" else 21)
    if not 4 <= depth <= 28:
        sys.exit(f"{sys.argv[0]}: depth {depth} out of range 4..28")

    gc_time = [0.0, 0.0]  # total, start of the current collection

    def timer(phase, info):
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    gc.callbacks.append(timer)
    t0 = time.perf_counter()
    result = (run_gcbench if base == "gcbench" else run_binarytrees)(depth, cyclic)
    seconds = time.perf_counter() - t0  # gc runs on this thread: nothing to settle
    gc.callbacks.remove(timer)

    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats = gc.get_stats()
    impl = f"python{sys.version_info.major}.{sys.version_info.minor}"
    print(f"impl={impl} workload={workload} depth={depth} seconds={seconds:.3f} settle_s=0.000 "
          f"cpu_s={ru.ru_utime + ru.ru_stime:.3f} peak_rss_kib={ru.ru_maxrss} check={result} "
          f"collections={sum(s['collections'] for s in stats)} "
          f"collected={sum(s['collected'] for s in stats)} gc_s={gc_time[0]:.3f}")


if __name__ == "__main__":
    main()
