/*
 * cache-scratch — passive false sharing (after the description of the
 * Hoard suite's cache-scratch in ../../../shared/WORKLOADS.md; written
 * afresh).
 *
 * The main thread allocates P 8-byte objects back to back (so they likely
 * share a cache line) and hands one to each thread.  Each thread checks and
 * frees its object at once, then 1000 times allocates an 8-byte object,
 * writes it REPS/P times (REPS = 2,000,000 x SCALE), checks the final value
 * and frees it.  An allocator that hands a thread the block another
 * thread's object shares a line with makes the writes ping-pong the line
 * between cores.  The total work is fixed: ideal time falls as 1/P.
 * A write is an atomic add to the object's word (a locked read-modify-
 * write): it needs the line exclusively every time, so false sharing shows
 * even on CPUs that coalesce plain stores to one line in their store buffer
 * (which hides it: e.g. AMD Zen 5).  With --plain-stores a write stores
 * every byte of the object instead.
 *
 * Result: elapsed_s = wall time of the threads' work.  Lower is better.
 */
#include "common.h"

#define ITERATIONS 1000
#define REPETITIONS 2000000.0
#define OBJ_SIZE 8

typedef struct {
    int idx;
    unsigned char *handed; /* the object allocated by the main thread */
    uint64_t tag;
    uint64_t reps;
    char pad[BENCH_CACHELINE];
} worker_t;

static pthread_barrier_t start_line;
static bool plain_stores; /* --plain-stores: byte stores instead of atomic adds */

static void *worker(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    pthread_barrier_wait(&start_line);
    bench_tag_check(w->handed, OBJ_SIZE, w->tag);
    free(w->handed);
    for (int it = 0; it < ITERATIONS; it++) {
        void *obj = bench_malloc(OBJ_SIZE);
        if (plain_stores) {
            volatile unsigned char *p = obj;
            for (uint64_t r = 0; r < w->reps; r++)
                for (int k = 0; k < OBJ_SIZE; k++)
                    p[k] = (unsigned char)(r + (uint64_t)k);
            for (int k = 0; k < OBJ_SIZE; k++)
                if (p[k] != (unsigned char)(w->reps - 1 + (uint64_t)k))
                    bench_fail(bench_name, "object changed under its writer", obj, OBJ_SIZE);
        } else {
            uint64_t *p = obj;
            __atomic_store_n(p, 0, __ATOMIC_RELAXED);
            for (uint64_t r = 0; r < w->reps; r++)
                __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
            if (__atomic_load_n(p, __ATOMIC_RELAXED) != w->reps)
                bench_fail(bench_name, "object changed under its writer", obj, OBJ_SIZE);
        }
        free(obj);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "cache-scratch";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 0, .scale = 1,
                      .pin = true, .seed = 7};
    for (int i = 1; i < argc; i++) /* our own option; hide it from bench_parse */
        if (!strcmp(argv[i], "--plain-stores")) {
            plain_stores = true;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof *argv);
            argc--;
            i--;
        }
    bench_parse(argc, argv, &o,
                "Hoard cache-scratch: passive false sharing.  Each of P threads frees an 8-byte object\n"
                "the main thread allocated, then 1000 times allocates, writes (2e6*SCALE/P times) and\n"
                "frees an 8-byte object.  -s: SCALE (default 1; --quick: 0.005).  --plain-stores:\n"
                "write each byte with plain stores instead of an atomic add on the object (CPUs that\n"
                "coalesce stores hide false sharing then).  Prints elapsed_s.\n");
    if (o.quick && !o.scale_set)
        o.scale = 0.005;
    bench_pin_init(o.pin);
    int P = o.threads;
    uint64_t reps = (uint64_t)(REPETITIONS * o.scale / P);
    if (reps < 1)
        reps = 1;
    worker_t *w = bench_malloc(sizeof(worker_t) * (size_t)P);
    pthread_t *t = bench_malloc(sizeof(pthread_t) * (size_t)P);
    pthread_barrier_init(&start_line, NULL, (unsigned)P + 1);
    bench_rng_t rng;
    bench_rng_seed(&rng, o.seed);
    for (int i = 0; i < P; i++) { /* the P small objects, allocated back to back */
        w[i] = (worker_t){.idx = i, .reps = reps, .tag = bench_rng_next(&rng)};
        w[i].handed = bench_malloc(OBJ_SIZE);
        bench_tag_write(w[i].handed, OBJ_SIZE, w[i].tag);
    }
    for (int i = 0; i < P; i++)
        bench_thread_start(&t[i], worker, &w[i]);
    pthread_barrier_wait(&start_line);
    double t0 = bench_now();
    for (int i = 0; i < P; i++)
        pthread_join(t[i], NULL);
    double elapsed = bench_now() - t0;
    pthread_barrier_destroy(&start_line);
    free(w);
    free(t);
    char extra[96];
    snprintf(extra, sizeof extra, "reps_per_object=%llu objects_per_thread=%d", (unsigned long long)reps,
             ITERATIONS);
    bench_result(&o, "elapsed_s", elapsed, extra);
    bench_pin_fini();
    return 0;
}
