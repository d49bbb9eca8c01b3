/*
 * alloc-test — random slot replacement with sizes skewed small (after the
 * description of Ignatchenko's alloc-test in ../../../shared/WORKLOADS.md;
 * written afresh).
 *
 * Each of P threads keeps an array of 8192 slots.  In a loop of
 * ITERS = 20,000,000 x SCALE iterations it picks a random slot, checks and
 * frees the block there (if any) and allocates a new one whose size is
 * drawn from a distribution skewed toward small sizes:
 *     75%  8..64 bytes,  20%  65..512 bytes,  5%  513..4096 bytes
 * (each range uniform).  The blocks left at the end are checked and freed.
 * The work per thread is fixed: ideal time stays flat as P grows.
 *
 * Result: elapsed_s = wall time until every thread is done.  Lower is better.
 */
#include "common.h"

#define SLOTS 8192
#define ITERS 20000000.0

typedef struct {
    void *p;
    uint32_t size;
    uint64_t tag;
} slot_t;

typedef struct {
    int idx;
    uint64_t iters, seed;
    pthread_t thread;
    char pad[BENCH_CACHELINE];
} worker_t;

static pthread_barrier_t start_line;

static inline size_t skewed_size(bench_rng_t *r)
{
    uint64_t u = bench_rng_below(r, 100);
    if (u < 75)
        return bench_rng_range(r, 8, 64);
    if (u < 95)
        return bench_rng_range(r, 65, 512);
    return bench_rng_range(r, 513, 4096);
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    bench_rng_t r;
    bench_rng_seed(&r, w->seed);
    slot_t *slots = calloc(SLOTS, sizeof *slots);
    if (!slots)
        bench_die(bench_name, "calloc returned NULL");
    pthread_barrier_wait(&start_line);
    for (uint64_t i = 0; i < w->iters; i++) {
        slot_t *s = &slots[bench_rng_below(&r, SLOTS)];
        if (s->p) {
            bench_tag_check(s->p, s->size, s->tag);
            free(s->p);
        }
        size_t size = skewed_size(&r);
        s->tag = bench_rng_next(&r);
        s->size = (uint32_t)size;
        s->p = bench_malloc(size);
        bench_tag_write(s->p, size, s->tag);
    }
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].p) {
            bench_tag_check(slots[i].p, slots[i].size, slots[i].tag);
            free(slots[i].p);
        }
    free(slots);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "alloc-test";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 0, .scale = 1,
                      .pin = true, .seed = 2718};
    bench_parse(argc, argv, &o,
                "alloc-test: each of P threads replaces the block of a random slot (8192 slots)\n"
                "2e7*SCALE times; sizes 75% 8..64, 20% 65..512, 5% 513..4096 bytes.\n"
                "-s: SCALE (default 1; --quick: 0.02).  Prints elapsed_s.\n");
    if (o.quick && !o.scale_set)
        o.scale = 0.02;
    bench_pin_init(o.pin);
    int P = o.threads;
    uint64_t iters = (uint64_t)(ITERS * o.scale);
    worker_t *w = bench_malloc(sizeof(worker_t) * (size_t)P);
    pthread_barrier_init(&start_line, NULL, (unsigned)P + 1);
    for (int i = 0; i < P; i++) {
        w[i] = (worker_t){.idx = i, .iters = iters, .seed = o.seed * 131u + (uint64_t)i};
        bench_thread_start(&w[i].thread, worker, &w[i]);
    }
    pthread_barrier_wait(&start_line);
    double t0 = bench_now();
    for (int i = 0; i < P; i++)
        pthread_join(w[i].thread, NULL);
    double elapsed = bench_now() - t0;
    pthread_barrier_destroy(&start_line);
    free(w);
    char extra[96];
    snprintf(extra, sizeof extra, "iters_per_thread=%llu", (unsigned long long)iters);
    bench_result(&o, "elapsed_s", elapsed, extra);
    bench_pin_fini();
    return 0;
}
