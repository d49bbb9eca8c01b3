/*
 * mstress — mixed lifetimes and blocks migrating between threads (after the
 * description of mimalloc's stress test in ../../../shared/WORKLOADS.md;
 * written afresh).
 *
 * 25 iterations; each starts P threads and waits for them.  A thread runs
 * STEPS = 2000 x SCALE steps (SCALE 50 by default); every step:
 *   - 50%: allocate a block of 16 << k bytes (k in 0..6), one in 100 of them
 *     64 times larger and one in 10000 1024 times larger, into its local
 *     array (grown with realloc);  25%: allocate one into its retained array,
 *     freed only when the thread ends;  25%: allocate nothing;
 *   - with probability 2/3: free the block in a random local slot;
 *   - with probability 1/4: swap a random local slot with a random slot of
 *     the shared transfer array (atomic exchange), so blocks migrate and are
 *     freed by other threads, in this or a later iteration.
 * Threads of one iteration run different step counts (STEPS x 0.5..1.5), so
 * some stop while others still run; each iteration starts new threads.
 * Every block carries its size and a tag (first 16 bytes) and a tail byte;
 * every free checks them.
 *
 * Result: elapsed_s = wall time of all iterations.  Lower is better.  The
 * work per thread is fixed: ideal time stays flat as P grows.
 */
#include "common.h"

#define ITERATIONS 25
#define TRANSFER 1000
#define UNIT 16
#define KEY 0x6d73747265737321ull /* "mstress!" */

static _Atomic(uint64_t *) transfer[TRANSFER];

typedef struct {
    uint64_t **items;
    size_t n, cap;
} arr_t;

typedef struct {
    int idx;
    uint64_t steps;
    uint64_t seed;
    uint64_t allocs, frees;
    pthread_t thread;
} worker_t;

/* a block: word 0 = its size, word 1 = its tag ^ KEY, last byte (past word 1) = the tag's top byte */
static uint64_t *block_new(bench_rng_t *r, uint64_t serial)
{
    size_t size = (size_t)UNIT << bench_rng_below(r, 7);
    uint64_t roll = bench_rng_below(r, 10000);
    if (roll == 0)
        size *= 1024;
    else if (roll < 100)
        size *= 64;
    uint64_t *b = bench_malloc(size);
    uint64_t tag = bench_tag_make(serial, size);
    b[0] = size;
    b[1] = tag ^ KEY;
    if (size > 16)
        ((unsigned char *)b)[size - 1] = (unsigned char)(tag >> 56);
    return b;
}

static void block_free(uint64_t *b)
{
    if (!b)
        return;
    size_t size = (size_t)b[0];
    if (size < UNIT || size > ((size_t)UNIT << 6) * 1024)
        bench_fail(bench_name, "size word of a live block changed", b, size);
    uint64_t tag = b[1] ^ KEY;
    if (size > 16 && ((const unsigned char *)b)[size - 1] != (unsigned char)(tag >> 56))
        bench_fail(bench_name, "tail byte of a live block changed", b, size);
    free(b);
}

static void arr_push(arr_t *a, uint64_t *b)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint64_t **items = realloc(a->items, cap * sizeof *items);
        if (!items)
            bench_die(bench_name, "realloc returned NULL");
        a->items = items;
        a->cap = cap;
    }
    a->items[a->n++] = b;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    bench_rng_t r;
    bench_rng_seed(&r, w->seed);
    arr_t local = {0}, retained = {0};
    uint64_t serial = w->seed << 32, allocs = 0, frees = 0;
    for (uint64_t s = 0; s < w->steps; s++) {
        uint64_t roll = bench_rng_below(&r, 4);
        if (roll < 2) {
            arr_push(&local, block_new(&r, ++serial));
            allocs++;
        } else if (roll == 2) {
            arr_push(&retained, block_new(&r, ++serial));
            allocs++;
        }
        if (local.n > 0 && bench_rng_below(&r, 3) < 2) {
            size_t i = bench_rng_below(&r, local.n);
            if (local.items[i]) {
                block_free(local.items[i]);
                frees++;
            }
            local.items[i] = local.items[--local.n]; /* keep the array dense */
        }
        if (local.n > 0 && bench_rng_below(&r, 4) == 0) {
            size_t i = bench_rng_below(&r, local.n);
            size_t j = bench_rng_below(&r, TRANSFER);
            local.items[i] = atomic_exchange_explicit(&transfer[j], local.items[i], memory_order_acq_rel);
        }
    }
    for (size_t i = 0; i < local.n; i++)
        if (local.items[i]) {
            block_free(local.items[i]);
            frees++;
        }
    for (size_t i = 0; i < retained.n; i++) {
        block_free(retained.items[i]);
        frees++;
    }
    free(local.items);
    free(retained.items);
    w->allocs = allocs;
    w->frees = frees;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "mstress";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 0, .scale = 50,
                      .pin = true, .seed = 42};
    bench_parse(argc, argv, &o,
                "mimalloc-style stress: 25 iterations of P threads doing a random mix of allocations\n"
                "(16..1024 bytes, rarely 64 KiB / 1 MiB), retained blocks, frees and swaps with a\n"
                "shared transfer array.  -s: SCALE, 2000*SCALE steps a thread (default 50; --quick: 5).\n"
                "Prints elapsed_s.\n");
    if (o.quick && !o.scale_set)
        o.scale = 5;
    bench_pin_init(o.pin);
    int P = o.threads;
    uint64_t steps = (uint64_t)(2000.0 * o.scale);
    if (steps < 1)
        steps = 1;
    worker_t *w = bench_malloc(sizeof(worker_t) * (size_t)P);
    bench_rng_t r;
    bench_rng_seed(&r, o.seed);
    uint64_t allocs = 0, frees = 0;
    double t0 = bench_now();
    for (int it = 0; it < ITERATIONS; it++) {
        for (int i = 0; i < P; i++) {
            uint64_t n = steps / 2 + bench_rng_below(&r, steps + 1);
            w[i] = (worker_t){.idx = i, .steps = n, .seed = (uint64_t)it * 1024 + (uint64_t)i + o.seed};
            bench_thread_start(&w[i].thread, worker, &w[i]);
        }
        for (int i = 0; i < P; i++) {
            pthread_join(w[i].thread, NULL);
            allocs += w[i].allocs;
            frees += w[i].frees;
        }
    }
    for (int j = 0; j < TRANSFER; j++) {
        uint64_t *b = atomic_exchange(&transfer[j], NULL);
        if (b) {
            block_free(b);
            frees++;
        }
    }
    double elapsed = bench_now() - t0;
    free(w);
    if (allocs != frees)
        bench_die(bench_name, "blocks allocated and freed do not match");
    char extra[96];
    snprintf(extra, sizeof extra, "allocs=%llu steps_per_thread=%llu", (unsigned long long)allocs,
             (unsigned long long)steps);
    bench_result(&o, "elapsed_s", elapsed, extra);
    bench_pin_fini();
    return 0;
}
