/*
 * glibc-thread — fixed-time per-thread loop over a working set of small
 * sizes (after the description of glibc's bench-malloc-thread in
 * ../../../shared/WORKLOADS.md; written afresh).
 *
 * Each of P threads fills a working set of 2048 blocks, then, until -d
 * seconds have passed, runs iterations: take the next entry of a table of
 * precomputed random slots and sizes (8..512 bytes, uniform; 8192 entries
 * per thread, so the random numbers cost nothing in the loop), check and
 * free the slot's block, allocate one of the new size and tag it.
 *
 * Result: iterations_per_s = iterations (one free + one malloc) of all
 * threads per second of wall time.  Higher is better.
 */
#include "common.h"

#define WSET 2048
#define TABLE 8192 /* power of two */
#define MIN_SIZE 8
#define MAX_SIZE 512

typedef struct {
    void *p;
    uint32_t size;
    uint32_t serial;
} slot_t;

typedef struct {
    int idx;
    uint64_t seed;
    uint64_t iters;
    double elapsed;
    pthread_t thread;
    char pad[BENCH_CACHELINE];
} worker_t;

static atomic_bool stop;
static pthread_barrier_t start_line;

static inline uint64_t tag_of(uint32_t serial, uint64_t seed)
{
    return bench_tag_make(seed ^ serial, serial);
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    bench_rng_t r;
    bench_rng_seed(&r, w->seed);
    slot_t *ws = bench_malloc(sizeof(slot_t) * WSET);
    uint16_t *slot_tab = bench_malloc(sizeof(uint16_t) * TABLE);
    uint16_t *size_tab = bench_malloc(sizeof(uint16_t) * TABLE);
    for (int i = 0; i < TABLE; i++) {
        slot_tab[i] = (uint16_t)bench_rng_below(&r, WSET);
        size_tab[i] = (uint16_t)bench_rng_range(&r, MIN_SIZE, MAX_SIZE);
    }
    uint32_t serial = 0;
    for (int i = 0; i < WSET; i++) {
        ws[i].size = size_tab[(i * 7) & (TABLE - 1)];
        ws[i].serial = ++serial;
        ws[i].p = bench_malloc(ws[i].size);
        bench_tag_write(ws[i].p, ws[i].size, tag_of(ws[i].serial, w->seed));
    }
    pthread_barrier_wait(&start_line);
    double t0 = bench_now();
    uint64_t it = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 256; k++, it++) {
            slot_t *s = &ws[slot_tab[it & (TABLE - 1)]];
            bench_tag_check(s->p, s->size, tag_of(s->serial, w->seed));
            free(s->p);
            s->size = size_tab[(it * 3 + 1) & (TABLE - 1)];
            s->serial = ++serial;
            s->p = bench_malloc(s->size);
            bench_tag_write(s->p, s->size, tag_of(s->serial, w->seed));
        }
    }
    w->elapsed = bench_now() - t0;
    w->iters = it;
    for (int i = 0; i < WSET; i++) {
        bench_tag_check(ws[i].p, ws[i].size, tag_of(ws[i].serial, w->seed));
        free(ws[i].p);
    }
    free(ws);
    free(slot_tab);
    free(size_tab);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "glibc-thread";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 5, .scale = 1,
                      .pin = true, .seed = 1234};
    bench_parse(argc, argv, &o,
                "glibc bench-malloc-thread style: each of P threads replaces blocks (8..512 bytes) of\n"
                "a 2048-block working set from precomputed random tables until time is up.\n"
                "-d: seconds (default 5; --quick: 0.3).  Prints iterations_per_s.\n");
    if (o.quick && !o.seconds_set)
        o.seconds = 0.3;
    bench_pin_init(o.pin);
    int P = o.threads;
    worker_t *w = bench_malloc(sizeof(worker_t) * (size_t)P);
    pthread_barrier_init(&start_line, NULL, (unsigned)P + 1);
    for (int i = 0; i < P; i++) {
        w[i] = (worker_t){.idx = i, .seed = o.seed * 65537u + (uint64_t)i};
        bench_thread_start(&w[i].thread, worker, &w[i]);
    }
    pthread_barrier_wait(&start_line);
    double t0 = bench_now();
    bench_sleep(o.seconds);
    atomic_store(&stop, true);
    uint64_t iters = 0;
    for (int i = 0; i < P; i++) {
        pthread_join(w[i].thread, NULL);
        iters += w[i].iters;
    }
    double elapsed = bench_now() - t0;
    pthread_barrier_destroy(&start_line);
    free(w);
    char extra[96];
    snprintf(extra, sizeof extra, "elapsed_s=%.4f iterations=%llu", elapsed, (unsigned long long)iters);
    bench_result(&o, "iterations_per_s", (double)iters / elapsed, extra);
    bench_pin_fini();
    return 0;
}
