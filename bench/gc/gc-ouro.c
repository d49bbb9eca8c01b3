/* gc-ouro.c — full collections of N tracked objects in live 2-cycles
 * (issue 4's benchmark), on ouro; gc-boehm.c and gc-python.py build the
 * same graph for Boehm GC and CPython's gc.
 *
 *   gc-ouro [objects] [markers] [rounds] [mutator]
 *
 * Builds objects/2 pairs a <-> b, each `a` held by a counted reference in a
 * C array (so every pair is live), then times `rounds` full collections
 * (ouro_gc_collect(2)) and prints the median in ns per object.  Meanwhile
 * a mutator thread keeps allocating, linking and dropping small containers
 * and records the longest gap between two of its operations: the pause a
 * running thread sees; `mutator` 0 leaves it out, to time the markers alone
 * (on 2 cores the mutator takes one of them).  `mutator` 2 runs it at
 * real-time priority (SCHED_FIFO 1; needs CAP_SYS_NICE, else it says so and
 * runs at normal priority): with a marker and the mutator on both cores of
 * a 2-core machine, any other task that wakes (a kernel thread, another
 * process) preempts one of them, and when that is the mutator its gap is
 * that task's time slice, not a pause of ouro's; at real-time priority no
 * ordinary task preempts it, so its longest gap is what the collector and
 * its own calls into ouro cost it.  ouro's helper threads (liburcu's
 * call_rcu, the markers) cannot preempt it then either: the normal-priority
 * run is the one that shows them (the notes on issue 4 show both, traced
 * with perf sched).  GC_SCATTER=1 in the environment builds the pairs on
 * a churned heap (scatter(), below); GC_CHURN=P replaces P per mille of
 * the pairs, chosen at random, before each timed collection, with
 * automatic collections on meanwhile (churn(), below): the collection then
 * meets deaths and young collections since the last one, as in a running
 * program.  gc-boehm and gc-python.py do the same.  One line of key=value
 * pairs per run. */
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "churn.h"
#include "ouro.h"

typedef struct pair_s {
    ouro_object_t ob;
    ouro_object_t *other;
} pair_t;

static int pair_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    ouro_object_t *o = ouro_load(&((pair_t *)self)->other);
    return o ? visit(o, arg) : 0;
}
static void pair_clear(ouro_object_t *self)
{
    ouro_setref(&((pair_t *)self)->other, NULL);
}
static const ouro_type_t pair_type = {.name = "pair",
                                      .basic_size = sizeof(pair_t),
                                      .traverse = pair_traverse,
                                      .clear = pair_clear,
                                      .dealloc = pair_clear};

/* GC_SCATTER=1: a churned heap.  Allocate as many objects as the graph
 * will hold and free them in random order, so that the pairs reuse blocks
 * all over the heap and the collector's lists (creation order) do not
 * follow addresses, as in a program that has been running a while. */
static void scatter(long n)
{
    void **tmp = malloc(sizeof *tmp * (size_t)n);
    if (tmp == NULL)
        return;
    for (long i = 0; i < n; i++)
        tmp[i] = ouro_new(&pair_type);
    churn_shuffle(tmp, n);
    for (long i = 0; i < n; i++)
        if (tmp[i])
            ouro_decref((ouro_object_t *)tmp[i]);
    free(tmp);
}

/* GC_CHURN: replace `k` random pairs of roots[0..pairs) with new ones;
 * each old pair is broken first, so both die by their counts. */
static void churn(ouro_object_t **roots, long pairs, long k, uint64_t *x)
{
    ouro_gc_enable();
    for (long c = 0; c < k; c++) {
        long i = (long)(churn_next(x) % (uint64_t)pairs);
        pair_t *a = (pair_t *)roots[i];
        ouro_setref(&a->other, NULL); /* b dies, and drops its reference to a */
        ouro_decref(&a->ob);
        a = (pair_t *)ouro_new(&pair_type);
        pair_t *b = (pair_t *)ouro_new(&pair_type);
        if (a == NULL || b == NULL) {
            fprintf(stderr, "out of memory while churning\n");
            exit(1);
        }
        ouro_store(&a->other, &b->ob);
        ouro_incref(&a->ob);
        ouro_store(&b->other, &a->ob);
        roots[i] = &a->ob;
    }
    ouro_gc_disable();
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static _Atomic int phase; /* 0 warm-up, 1 measuring, 2 stop */
static double max_gap;
static unsigned long mut_ops;
static int mut_rt; /* the mutator runs at real-time priority */

static void *mutator(void *arg)
{
    if (*(int *)arg == 2) {
        struct sched_param sp = {.sched_priority = 1};
        int e = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
        if (e)
            fprintf(stderr, "gc-ouro: mutator at normal priority: SCHED_FIFO refused: %s\n", strerror(e));
        else
            mut_rt = 1;
    }
    ouro_thread_register();
    double last = now_s();
    while (atomic_load_explicit(&phase, memory_order_relaxed) != 2) {
        pair_t *a = (pair_t *)ouro_new(&pair_type), *b = (pair_t *)ouro_new(&pair_type);
        ouro_incref(&b->ob);
        ouro_setref(&a->other, &b->ob);
        ouro_setref(&a->other, NULL);
        ouro_decref(&a->ob);
        ouro_decref(&b->ob);
        double t = now_s();
        if (atomic_load_explicit(&phase, memory_order_relaxed) == 1) {
            if (t - last > max_gap)
                max_gap = t - last;
            mut_ops++;
        }
        last = t;
    }
    return NULL;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 4000000;
    int markers = argc > 2 ? atoi(argv[2]) : 1;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    int with_mutator = argc > 4 ? atoi(argv[4]) : 1;
    if (n < 2 || markers < 0 || rounds < 1 || with_mutator < 0 || with_mutator > 2) {
        fprintf(stderr, "usage: gc-ouro [objects >= 2] [markers >= 0, 0: the default] [rounds >= 1] "
                        "[mutator: 0 none, 1 normal priority, 2 real-time]\n");
        return 2;
    }
    ouro_gc_disable();
    ouro_gc_set_markers(markers);
    long pairs = n / 2;
    ouro_object_t **roots = malloc(sizeof *roots * (size_t)pairs);
    if (roots == NULL)
        return 1;
    if (getenv("GC_SCATTER") && atoi(getenv("GC_SCATTER")))
        scatter(n);
    double t0 = now_s();
    for (long i = 0; i < pairs; i++) {
        pair_t *a = (pair_t *)ouro_new(&pair_type), *b = (pair_t *)ouro_new(&pair_type);
        if (a == NULL || b == NULL) {
            fprintf(stderr, "out of memory at pair %ld\n", i);
            return 1;
        }
        ouro_store(&a->other, &b->ob); /* takes over our reference to b */
        ouro_incref(&a->ob);
        ouro_store(&b->other, &a->ob);
        roots[i] = &a->ob;
    }
    double build = now_s() - t0;
    /* the first collection promotes everything to the oldest generation */
    t0 = now_s();
    long found = ouro_gc_collect(2);
    double first = now_s() - t0;
    pthread_t mt;
    if (with_mutator)
        pthread_create(&mt, NULL, mutator, &with_mutator);
    double *times = malloc(sizeof *times * (size_t)rounds);
    atomic_store(&phase, 1);
    long churn_k = getenv("GC_CHURN") ? pairs * atol(getenv("GC_CHURN")) / 1000 : 0;
    uint64_t x = CHURN_SEED;
    for (int r = 0; r < rounds; r++) {
        if (churn_k > 0)
            churn(roots, pairs, churn_k, &x);
        t0 = now_s();
        found += ouro_gc_collect(2);
        times[r] = now_s() - t0;
    }
    atomic_store(&phase, 2);
    if (with_mutator)
        pthread_join(mt, NULL);
    qsort(times, (size_t)rounds, sizeof *times, cmp_double);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    /* the last collection by step (ouro_gc_phase_t), to see where time goes */
    static const char *const step[OURO_GC_NPHASES] = {"h1", "walk", "count", "mark", "h2", "validate", "finish"};
    for (int p = 0; p < OURO_GC_NPHASES; p++)
        fprintf(stderr, "%s%s_ms=%.2f", p ? " " : "last collection: ", step[p], (double)st.last_phase_ns[p] / 1e6);
    fprintf(stderr, "\n");
    printf("impl=ouro objects=%ld markers=%u build_s=%.3f first_ns_per_obj=%.2f "
           "full_ns_per_obj=%.2f full_ms=%.1f min_ns_per_obj=%.2f garbage=%ld "
           "mutator_max_gap_us=%.0f mutator_ops=%lu mutator_rt=%d peak_rss_kib=%ld\n",
           n, st.last_markers, build, first * 1e9 / (double)n, times[rounds / 2] * 1e9 / (double)n,
           times[rounds / 2] * 1e3, times[0] * 1e9 / (double)n, found, max_gap * 1e6, mut_ops, mut_rt, peak_rss_kib());
    for (long i = 0; i < pairs; i++)
        ouro_decref(roots[i]);
    free(roots);
    free(times);
    return 0;
}
