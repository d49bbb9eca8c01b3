/*
 * fastpath.c — single-threaded malloc/free fast-path micro-benchmark.
 *
 * Uses plain malloc and free, so it measures whichever allocator is linked
 * or preloaded (LD_PRELOAD); bench/run-fastpath.sh runs it under each one.
 *
 * Tests, all reported in ns per malloc+free pair:
 *   pair<n>          p = malloc(n); escape(p); free(p);   for n = 16, 64, 256, 1024
 *   batch1000_fwd    1000 mixed sizes in 8..512 (fixed-seed RNG, drawn before
 *                    timing) all allocated, then all freed in allocation order
 *   batch1000_rev    the same, freed in reverse order
 *
 * Each test is calibrated and warmed up, then timed over several runs of a
 * fixed iteration count (CLOCK_MONOTONIC); the median and the minimum of the
 * runs are printed.
 *
 * Usage: fastpath [--quick] [--csv]
 *   --quick  fewer, shorter runs (for CI)
 *   --csv    print a header and one line per test: name,ns_median,ns_min
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000
#define MAX_RUNS 15

/* Keep the compiler from eliding or merging allocations: it must assume p
 * is read and any memory changed. */
#define escape(p) __asm__ volatile("" : : "r"(p) : "memory")

static size_t batch_sizes[BATCH];
static void *batch_ptrs[BATCH];

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die_oom(size_t n)
{
    fprintf(stderr, "fastpath: malloc(%zu) returned NULL\n", n);
    exit(1);
}

/* ---- the measured loops; each returns the number of malloc+free pairs ---- */

static __attribute__((noinline)) uint64_t loop_pair(size_t n, uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++) {
        void *p = malloc(n);
        escape(p);
        if (__builtin_expect(p == NULL, 0))
            die_oom(n);
        free(p);
    }
    return iters;
}

static __attribute__((noinline)) uint64_t loop_batch(int reverse, uint64_t batches)
{
    for (uint64_t b = 0; b < batches; b++) {
        for (int i = 0; i < BATCH; i++) {
            void *p = malloc(batch_sizes[i]);
            escape(p);
            if (__builtin_expect(p == NULL, 0))
                die_oom(batch_sizes[i]);
            batch_ptrs[i] = p;
        }
        if (reverse) {
            for (int i = BATCH - 1; i >= 0; i--)
                free(batch_ptrs[i]);
        } else {
            for (int i = 0; i < BATCH; i++)
                free(batch_ptrs[i]);
        }
        escape(batch_ptrs);
    }
    return batches * BATCH;
}

typedef struct test_s {
    const char *name;
    size_t size;     /* pair tests: the request size */
    int kind;        /* 0 pair, 1 batch forward, 2 batch reverse */
} test_t;

static const test_t tests[] = {
    {"pair16", 16, 0},
    {"pair64", 64, 0},
    {"pair256", 256, 0},
    {"pair1024", 1024, 0},
    {"batch1000_fwd", 0, 1},
    {"batch1000_rev", 0, 2},
};

/* Run `test` for `units` units (pair iterations or batches); ns elapsed and
 * the pair count through *pairs. */
static double run_once(const test_t *t, uint64_t units, uint64_t *pairs)
{
    double t0 = now_ns();
    *pairs = t->kind == 0 ? loop_pair(t->size, units) : loop_batch(t->kind == 2, units);
    return now_ns() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Calibrate, warm up and time one test: median and min ns per pair. */
static void measure(const test_t *t, int runs, double run_ns, double *median, double *min)
{
    uint64_t pairs;
    /* calibrate: grow the unit count until one run takes a tenth of the
     * target (this is also most of the warm-up) */
    uint64_t units = 1;
    double ns;
    for (;;) {
        ns = run_once(t, units, &pairs);
        if (ns >= run_ns / 10 || units >= ((uint64_t)1 << 40))
            break;
        units *= 2;
    }
    double per_unit = ns > 0 ? ns / (double)units : 1;
    units = (uint64_t)(run_ns / per_unit);
    if (units < 1)
        units = 1;
    /* warm-up at full length: caches, branch predictors, CPU frequency */
    run_once(t, units, &pairs);

    double r[MAX_RUNS];
    for (int i = 0; i < runs; i++)
        r[i] = run_once(t, units, &pairs) / (double)pairs;
    qsort(r, (size_t)runs, sizeof r[0], cmp_double);
    *median = runs % 2 ? r[runs / 2] : (r[runs / 2 - 1] + r[runs / 2]) / 2;
    *min = r[0];
}

/* splitmix64: a fixed-seed generator, so every allocator sees the same sizes */
static uint64_t rng_state = 0x6f75726f2d626e63ull;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fastpath [--quick] [--csv]\n"
               "  --quick  fewer, shorter runs (for CI)\n"
               "  --csv    machine-readable output: name,ns_median,ns_min\n");
}

int main(int argc, char **argv)
{
    int quick = 0, csv = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--csv") == 0) {
            csv = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "fastpath: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    int runs = quick ? 3 : 7;
    double run_ns = quick ? 20e6 : 100e6; /* 20 ms or 100 ms per timed run */

    for (int i = 0; i < BATCH; i++)
        batch_sizes[i] = 8 + (size_t)(rng_next() % (512 - 8 + 1));

    if (csv)
        printf("name,ns_median,ns_min\n");
    else
        printf("%-16s %12s %12s   (%d runs of ~%.0f ms each)\n", "test", "ns/pair med", "ns/pair min",
               runs, run_ns / 1e6);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        double med, min;
        measure(&tests[i], runs, run_ns, &med, &min);
        if (csv)
            printf("%s,%.3f,%.3f\n", tests[i].name, med, min);
        else
            printf("%-16s %12.2f %12.2f\n", tests[i].name, med, min);
        fflush(stdout);
    }
    return 0;
}
