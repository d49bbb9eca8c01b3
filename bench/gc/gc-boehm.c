/* gc-boehm.c — the graph of gc-ouro.c on Boehm GC: objects/2 pairs
 * a <-> b, each `a` held in a root array; times `rounds` GC_gcollect()
 * calls (a full, stop-the-world mark and sweep) and prints the median in
 * ns per object.  gc-boehm [objects] [markers] [rounds] (markers: Boehm's
 * marker threads, GC_set_markers_count; 0: its default, GC_MARKERS or the
 * core count).  markers= in the output is the number it used. */
#define GC_THREADS /* GC_set_markers_count, GC_get_parallel */
#include <gc/gc.h> /* Boehm GC (not src/gc.h: -I./src is on the path) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "churn.h"

typedef struct pair_s {
    struct pair_s *other;
    void *type; /* the same 16 bytes of header-ish payload as ouro's pair */
} pair_t;

/* GC_SCATTER=1: a churned heap, as in gc-ouro.c: as many objects freed
 * in random order (GC_FREE: a collection would sweep them back into
 * address order), so that the pairs lie scattered. */
static void scatter(long n)
{
    void **tmp = GC_MALLOC(sizeof *tmp * (size_t)n); /* scanned: they stay ours until freed */
    if (tmp == NULL)
        return;
    for (long i = 0; i < n; i++)
        tmp[i] = GC_MALLOC(sizeof(pair_t));
    churn_shuffle(tmp, n);
    for (long i = 0; i < n; i++) {
        GC_FREE(tmp[i]);
        tmp[i] = NULL;
    }
    GC_FREE(tmp);
}

/* GC_CHURN=P, as in gc-ouro.c: replace P per mille of the pairs, at
 * random, before each timed collection (the old ones become garbage). */
static void churn(pair_t **roots, long pairs, long k, uint64_t *x)
{
    for (long c = 0; c < k; c++) {
        long i = (long)(churn_next(x) % (uint64_t)pairs);
        pair_t *a = GC_MALLOC(sizeof *a), *b = GC_MALLOC(sizeof *b);
        a->other = b;
        b->other = a;
        roots[i] = a;
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
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
    if (markers > 0)
        GC_set_markers_count((unsigned)markers);
    GC_INIT();
    /* a program with one thread gets Boehm's helper markers only if it
     * asks for them */
    GC_start_mark_threads();
    long pairs = n / 2;
    pair_t **roots = GC_MALLOC(sizeof *roots * (size_t)pairs);
    if (getenv("GC_SCATTER") && atoi(getenv("GC_SCATTER")))
        scatter(n);
    double t0 = now_s();
    for (long i = 0; i < pairs; i++) {
        pair_t *a = GC_MALLOC(sizeof *a), *b = GC_MALLOC(sizeof *b);
        a->other = b;
        b->other = a;
        roots[i] = a;
    }
    double build = now_s() - t0;
    GC_gcollect();
    double *times = malloc(sizeof *times * (size_t)rounds);
    long churn_k = getenv("GC_CHURN") ? pairs * atol(getenv("GC_CHURN")) / 1000 : 0;
    uint64_t x = CHURN_SEED;
    for (int r = 0; r < rounds; r++) {
        if (churn_k > 0)
            churn(roots, pairs, churn_k, &x);
        t0 = now_s();
        GC_gcollect();
        times[r] = now_s() - t0;
    }
    qsort(times, (size_t)rounds, sizeof *times, cmp_double);
    printf("impl=boehm objects=%ld markers=%d build_s=%.3f full_ns_per_obj=%.2f full_ms=%.1f "
           "min_ns_per_obj=%.2f live=%ld peak_rss_kib=%ld\n",
           n, GC_get_parallel() + 1, build,
           times[rounds / 2] * 1e9 / (double)n, times[rounds / 2] * 1e3, times[0] * 1e9 / (double)n,
           roots[pairs - 1]->other->other == roots[pairs - 1] ? n : -1, peak_rss_kib());
    free(times);
    return 0;
}
