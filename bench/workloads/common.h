/*
 * common.h — shared helpers of the allocator workloads in bench/workloads:
 * timing, a xorshift RNG, argument parsing, pinning threads to cores with
 * hwloc, block tagging (write a pattern into every block, check it before
 * the free) and the final RESULT line.
 *
 * Every workload calls only malloc/free/realloc of the C library, so the
 * allocator preloaded with LD_PRELOAD is the one measured.  Helpers here
 * allocate nothing while a workload runs.
 *
 * Common options:  -t THREADS  -d SECONDS (timed workloads)  -s SCALE (work
 * workloads)  --quick  --no-pin  -h.
 */
#ifndef OURO_BENCH_COMMON_H
#define OURO_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_UNUSED __attribute__((unused))
#define BENCH_CACHELINE 64

/* ---- timing ---- */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds used by all threads of the process so far */
static inline double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void bench_sleep(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- RNG: xorshift64* (Marsaglia; Vigna's multiplier) ---- */
typedef struct {
    uint64_t s;
} bench_rng_t;

static inline void bench_rng_seed(bench_rng_t *r, uint64_t seed)
{
    /* splitmix64 step so nearby seeds give unrelated streams; never 0 */
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545f4914f6cdd1dull;
}

static inline uint64_t bench_rng_next(bench_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* uniform in [0, n), n > 0 (multiply-shift, no division) */
static inline uint64_t bench_rng_below(bench_rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)bench_rng_next(r) * n) >> 64);
}

/* uniform in [lo, hi] */
static inline size_t bench_rng_range(bench_rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)bench_rng_below(r, (uint64_t)(hi - lo + 1));
}

/* ---- failure: a corrupted block makes the run fail, never post a number ---- */
static void bench_fail(const char *workload, const char *what, const void *p, size_t size)
    __attribute__((noreturn, cold, unused));
static void bench_fail(const char *workload, const char *what, const void *p, size_t size)
{
    fprintf(stderr, "%s: CORRUPTION: %s (block %p, size %zu)\n", workload, what, p, size);
    fflush(stderr);
    _exit(3);
}

static void bench_die(const char *workload, const char *what) __attribute__((noreturn, cold, unused));
static void bench_die(const char *workload, const char *what)
{
    fprintf(stderr, "%s: %s\n", workload, what);
    fflush(stderr);
    _exit(2);
}

static const char *bench_name = "workload";

/* malloc that treats NULL as a failure of the run */
static inline void *bench_malloc(size_t n)
{
    void *p = malloc(n);
    if (__builtin_expect(p == NULL, 0))
        bench_die(bench_name, "malloc returned NULL");
    return p;
}

/* ---- block tags ----
 * A live block of `size` >= 1 bytes carries a 64-bit tag: its first
 * min(size, 8) bytes hold the tag's low bytes and its last byte the tag's
 * top byte.  The caller keeps the tag (or can recompute it) and checks the
 * block before freeing it: an allocator that hands the same memory to two
 * live blocks, or lets its metadata overwrite a live block, fails the check. */
static inline uint64_t bench_tag_make(uint64_t seed, size_t size)
{
    uint64_t t = (seed ^ ((uint64_t)size << 32)) * 0x9e3779b97f4a7c15ull;
    return t ^ (t >> 29);
}

static inline void bench_tag_write(void *p, size_t size, uint64_t tag)
{
    unsigned char *b = (unsigned char *)p;
    size_t n = size < 8 ? size : 8;
    memcpy(b, &tag, n);
    if (size > 8)
        b[size - 1] = (unsigned char)(tag >> 56);
}

static inline bool bench_tag_ok(const void *p, size_t size, uint64_t tag)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t got = 0;
    size_t n = size < 8 ? size : 8;
    memcpy(&got, b, n);
    uint64_t mask = n == 8 ? ~0ull : ((1ull << (8 * n)) - 1);
    if ((got & mask) != (tag & mask))
        return false;
    if (size > 8 && b[size - 1] != (unsigned char)(tag >> 56))
        return false;
    return true;
}

static inline void bench_tag_check(const void *p, size_t size, uint64_t tag)
{
    if (__builtin_expect(!bench_tag_ok(p, size, tag), 0))
        bench_fail(bench_name, "block pattern changed while the block was live", p, size);
}

/* ---- options ---- */
typedef struct {
    int threads;    /* -t */
    double seconds; /* -d (timed workloads) */
    double scale;   /* -s (fixed-work workloads) */
    bool quick;     /* --quick */
    bool pin;       /* false with --no-pin */
    uint64_t seed;  /* --seed */
    bool seconds_set, scale_set; /* -d / -s given: --quick leaves them alone */
} bench_opts_t;

/* usage: one line of what the workload does and what its options mean */
static void bench_parse(int argc, char **argv, bench_opts_t *o, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: %s [-t THREADS] [-d SECONDS] [-s SCALE] [--quick] [--no-pin] [--seed N]\n%s",
                   argv[0], usage);
            exit(0);
        } else if (!strcmp(a, "--quick")) {
            o->quick = true;
        } else if (!strcmp(a, "--no-pin")) {
            o->pin = false;
        } else if (!strcmp(a, "-t") && v) {
            o->threads = (int)strtol(v, &end, 10);
            i++;
            if (*end || o->threads < 1 || o->threads > 1024)
                bench_die(bench_name, "-t wants a thread count in 1..1024");
        } else if (!strcmp(a, "-d") && v) {
            o->seconds = strtod(v, &end);
            o->seconds_set = true;
            i++;
            if (*end || !(o->seconds > 0))
                bench_die(bench_name, "-d wants a positive number of seconds");
        } else if (!strcmp(a, "-s") && v) {
            o->scale = strtod(v, &end);
            o->scale_set = true;
            i++;
            if (*end || !(o->scale > 0))
                bench_die(bench_name, "-s wants a positive scale");
        } else if (!strcmp(a, "--seed") && v) {
            o->seed = strtoull(v, &end, 0);
            i++;
            if (*end)
                bench_die(bench_name, "--seed wants a number");
        } else {
            fprintf(stderr, "%s: unknown or incomplete argument '%s' (try -h)\n", bench_name, a);
            exit(2);
        }
    }
}

/* ---- pinning: thread i runs on core i mod cores (PUs if hwloc sees no cores) ---- */
static hwloc_topology_t bench_topo;
static int bench_ncpus;        /* cores (or PUs) to spread over; 0: no pinning */
static hwloc_obj_type_t bench_pin_type;

static void bench_pin_init(bool pin)
{
    if (!pin)
        return;
    if (hwloc_topology_init(&bench_topo) != 0 || hwloc_topology_load(bench_topo) != 0) {
        fprintf(stderr, "%s: hwloc failed; threads not pinned\n", bench_name);
        return;
    }
    bench_pin_type = HWLOC_OBJ_CORE;
    int n = hwloc_get_nbobjs_by_type(bench_topo, HWLOC_OBJ_CORE);
    if (n <= 0) {
        bench_pin_type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_by_type(bench_topo, HWLOC_OBJ_PU);
    }
    bench_ncpus = n > 0 ? n : 0;
}

/* pin the calling thread; idx is the workload's thread index */
static BENCH_UNUSED void bench_pin_self(int idx)
{
    if (bench_ncpus <= 0)
        return;
    hwloc_obj_t obj = hwloc_get_obj_by_type(bench_topo, bench_pin_type, (unsigned)(idx % bench_ncpus));
    if (obj && obj->cpuset)
        (void)hwloc_set_cpubind(bench_topo, obj->cpuset, HWLOC_CPUBIND_THREAD);
}

static BENCH_UNUSED void bench_pin_fini(void)
{
    if (bench_ncpus > 0)
        hwloc_topology_destroy(bench_topo);
    bench_ncpus = 0;
}

/* ---- threads ---- */
static BENCH_UNUSED void bench_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int err = pthread_create(t, NULL, fn, arg);
    if (err != 0)
        bench_die(bench_name, "pthread_create failed");
}

/* ---- the result line ---- */
static inline long bench_maxrss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss; /* kilobytes on Linux */
}

/* print "RESULT workload=... threads=... metric=... value=... rss_kb=... <extra>" */
static BENCH_UNUSED void bench_result(const bench_opts_t *o, const char *metric, double value, const char *extra)
{
    printf("RESULT workload=%s threads=%d metric=%s value=%.6g rss_kb=%ld%s%s\n", bench_name, o->threads,
           metric, value, bench_maxrss_kb(), extra && *extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

#endif /* OURO_BENCH_COMMON_H */
