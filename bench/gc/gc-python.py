"""gc-python.py — the graph of gc-ouro.c for CPython's gc: objects/2 pairs
a <-> b (two-element lists), each `a` held in a root list; times `rounds`
gc.collect() calls and prints the median in ns per object.
   python3 gc-python.py [objects] [rounds]
GC_SCATTER=1 in the environment: a churned heap, as in gc-ouro.c (as many
lists freed in random order first, so the pairs lie scattered); GC_CHURN=P:
P per mille of the pairs replaced at random before each timed collection,
with automatic collections on meanwhile."""
import gc
import os
import random
import resource
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000000
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
gc.disable()
pairs = n // 2
if int(os.environ.get("GC_SCATTER", "0") or 0):
    tmp = [[None] for _ in range(n)]
    random.Random(1).shuffle(tmp)
    while tmp:
        tmp.pop()  # frees one list: the free lists come out in random order
    del tmp
t0 = time.perf_counter()
roots = []
for _ in range(pairs):
    a = [None]
    b = [a]
    a[0] = b
    roots.append(a)
build = time.perf_counter() - t0
gc.collect()
times = []
churn_k = pairs * int(os.environ.get("GC_CHURN", "0") or 0) // 1000
rng = random.Random(2)
for _ in range(rounds):
    if churn_k > 0:
        gc.enable()
        for _ in range(churn_k):
            i = rng.randrange(pairs)
            roots[i][0] = None  # break the pair: both die by their counts
            a = [None]
            b = [a]
            a[0] = b
            roots[i] = a
        gc.disable()
    t0 = time.perf_counter()
    gc.collect()
    times.append(time.perf_counter() - t0)
times.sort()
med = times[len(times) // 2]
print(f"impl=python{sys.version_info.major}.{sys.version_info.minor} objects={n} markers=1 "
      f"build_s={build:.3f} full_ns_per_obj={med * 1e9 / n:.2f} full_ms={med * 1e3:.1f} "
      f"min_ns_per_obj={times[0] * 1e9 / n:.2f} tracked={len(gc.get_objects())} "
      f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
