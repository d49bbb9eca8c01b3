/*
 * rptest — random sizes with a working set and a cross-thread share (after
 * the description of the rpmalloc benchmark in ../../../shared/WORKLOADS.md;
 * written afresh).
 *
 * Each of P threads keeps a working set of 1000 blocks of random size in
 * [8, 16000] (linear distribution).  A pass is 500 loops of 100 operations;
 * an operation replaces the block of a random slot: the old block is checked
 * and freed, a new one allocated and tagged.  One old block in 8 is not freed
 * by its thread but passed to the next thread (in batches of 64, through a
 * lock-free stack per thread), which checks and frees it at its next loop.
 * An inbox holds at most 16 batches: a thread whose peer lags (descheduled)
 * waits, freeing what it was passed, rather than let passed blocks pile up.
 * A thread runs PASSES = 4 x SCALE passes; at the end it frees its working
 * set, and what it is passed until every thread is done.
 *
 * Result: ops_per_cpu_s = memory operations (mallocs + frees) per CPU second
 * of the whole process (all threads).  Higher is better.  Peak RSS is the
 * other number this workload is about.
 */
#include "common.h"

#define WSET 1000
#define MIN_SIZE 8
#define MAX_SIZE 16000
#define LOOPS 500
#define OPS_PER_LOOP 100
#define CROSS_ONE_IN 8
#define XBATCH 64
#define XPENDING_MAX 16 /* batches an inbox may hold (1024 blocks, one working set) */

typedef struct {
    void *p;
    uint32_t size;
    uint64_t tag;
} slot_t;

typedef struct xbatch_s {
    struct xbatch_s *next;
    int n;
    slot_t items[XBATCH];
} xbatch_t;

typedef struct {
    _Atomic(xbatch_t *) inbox __attribute__((aligned(BENCH_CACHELINE)));
    atomic_int pending;  /* batches in the inbox, for back-pressure */
    int idx, nthreads;
    uint64_t passes, seed;
    uint64_t ops;
    pthread_t thread;
    char pad[BENCH_CACHELINE];
} worker_t;

static worker_t *workers;
static pthread_barrier_t start_line;
static atomic_int finished;

static uint64_t inbox_drain(worker_t *w);

/* Pass a batch to `to`; while its inbox is full (the peer is descheduled or
 * slow), free what we were passed and sleep, so a lagging peer cannot make
 * the passed blocks, and the peak RSS, pile up without bound. */
static uint64_t inbox_push(worker_t *self, worker_t *to, xbatch_t *b)
{
    uint64_t ops = 0;
    while (atomic_load_explicit(&to->pending, memory_order_acquire) >= XPENDING_MAX) {
        if (self)
            ops += inbox_drain(self);
        bench_sleep(20e-6);
    }
    atomic_fetch_add_explicit(&to->pending, 1, memory_order_relaxed);
    xbatch_t *head = atomic_load_explicit(&to->inbox, memory_order_relaxed);
    do
        b->next = head;
    while (!atomic_compare_exchange_weak_explicit(&to->inbox, &head, b, memory_order_release,
                                                  memory_order_relaxed));
    return ops;
}

/* free everything passed to w; returns the frees done */
static uint64_t inbox_drain(worker_t *w)
{
    uint64_t n = 0;
    xbatch_t *b = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
    int batches = 0;
    while (b) {
        batches++;
        xbatch_t *next = b->next;
        for (int i = 0; i < b->n; i++) {
            bench_tag_check(b->items[i].p, b->items[i].size, b->items[i].tag);
            free(b->items[i].p);
        }
        n += (uint64_t)b->n + 1;
        free(b);
        b = next;
    }
    if (batches)
        atomic_fetch_sub_explicit(&w->pending, batches, memory_order_release);
    return n;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    bench_rng_t r;
    bench_rng_seed(&r, w->seed);
    worker_t *peer = &workers[(w->idx + 1) % w->nthreads];
    bool cross = w->nthreads > 1;
    slot_t *ws = bench_malloc(sizeof(slot_t) * WSET);
    for (int i = 0; i < WSET; i++) {
        ws[i].size = (uint32_t)bench_rng_range(&r, MIN_SIZE, MAX_SIZE);
        ws[i].tag = bench_rng_next(&r);
        ws[i].p = bench_malloc(ws[i].size);
        bench_tag_write(ws[i].p, ws[i].size, ws[i].tag);
    }
    pthread_barrier_wait(&start_line); /* the timed part starts here */
    uint64_t ops = 0;
    xbatch_t *out = NULL;
    for (uint64_t pass = 0; pass < w->passes; pass++) {
        for (int loop = 0; loop < LOOPS; loop++) {
            ops += inbox_drain(w);
            for (int k = 0; k < OPS_PER_LOOP; k++) {
                slot_t *s = &ws[bench_rng_below(&r, WSET)];
                if (cross && bench_rng_below(&r, CROSS_ONE_IN) == 0) {
                    if (!out) {
                        out = bench_malloc(sizeof *out);
                        out->n = 0;
                        ops++;
                    }
                    out->items[out->n++] = *s;
                    if (out->n == XBATCH) {
                        ops += inbox_push(w, peer, out);
                        out = NULL;
                    }
                } else {
                    bench_tag_check(s->p, s->size, s->tag);
                    free(s->p);
                    ops++;
                }
                s->size = (uint32_t)bench_rng_range(&r, MIN_SIZE, MAX_SIZE);
                s->tag = bench_rng_next(&r);
                s->p = bench_malloc(s->size);
                bench_tag_write(s->p, s->size, s->tag);
                ops++;
            }
        }
    }
    if (out)
        ops += inbox_push(w, peer, out);
    for (int i = 0; i < WSET; i++) {
        bench_tag_check(ws[i].p, ws[i].size, ws[i].tag);
        free(ws[i].p);
    }
    free(ws);
    ops += WSET + 1;
    /* keep freeing what the others pass until every thread is done, so a
     * thread that finished early does not let its inbox pile up */
    atomic_fetch_add_explicit(&finished, 1, memory_order_acq_rel);
    while (atomic_load_explicit(&finished, memory_order_acquire) < w->nthreads) {
        ops += inbox_drain(w);
        bench_sleep(20e-6);
    }
    ops += inbox_drain(w); /* every batch for us has been pushed */
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "rptest";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 0, .scale = 1,
                      .pin = true, .seed = 99};
    bench_parse(argc, argv, &o,
                "rpmalloc-style test: P threads replace random blocks (8..16000 bytes, linear) in a\n"
                "working set of 1000, 500 loops of 100 ops a pass, passing 1 in 8 old blocks to the\n"
                "next thread.  -s: SCALE, 4*SCALE passes (default 1; --quick: 0.25).\n"
                "Prints ops_per_cpu_s (mallocs+frees per CPU second).\n");
    if (o.quick && !o.scale_set)
        o.scale = 0.25;
    bench_pin_init(o.pin);
    int P = o.threads;
    uint64_t passes = (uint64_t)(4.0 * o.scale + 0.5);
    if (passes < 1)
        passes = 1;
    workers = aligned_alloc(BENCH_CACHELINE, sizeof(worker_t) * (size_t)P);
    if (!workers)
        bench_die(bench_name, "aligned_alloc returned NULL");
    pthread_barrier_init(&start_line, NULL, (unsigned)P + 1);
    for (int i = 0; i < P; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        atomic_init(&workers[i].inbox, NULL);
        workers[i].idx = i;
        workers[i].nthreads = P;
        workers[i].passes = passes;
        workers[i].seed = o.seed * 7919u + (uint64_t)i;
    }
    for (int i = 0; i < P; i++)
        bench_thread_start(&workers[i].thread, worker, &workers[i]);
    pthread_barrier_wait(&start_line);
    double c0 = bench_cpu_now(), t0 = bench_now();
    uint64_t ops = 0;
    for (int i = 0; i < P; i++) {
        pthread_join(workers[i].thread, NULL);
        ops += workers[i].ops;
    }
    double cpu = bench_cpu_now() - c0, elapsed = bench_now() - t0;
    pthread_barrier_destroy(&start_line);
    free(workers);
    char extra[128];
    snprintf(extra, sizeof extra, "cpu_s=%.4f elapsed_s=%.4f ops=%llu", cpu, elapsed, (unsigned long long)ops);
    bench_result(&o, "ops_per_cpu_s", (double)ops / cpu, extra);
    bench_pin_fini();
    return 0;
}
