/*
 * larson — server simulation (after the description of Larson & Krishnan
 * 1998 in ../../../shared/WORKLOADS.md; written afresh).
 *
 * P chains run at once.  Each chain owns an array of 1000 slots filled with
 * blocks of random size in [8, 1000).  A thread of the chain runs rounds of
 * 5000 operations (pick a random slot, check and free its block, allocate a
 * new one of random size); after 100 rounds it starts a new thread, hands it
 * the array and exits, so blocks are freed by threads that did not allocate
 * them and threads keep being created.  The main thread fills the arrays,
 * so the first frees are cross-thread too.  After -d seconds every chain
 * stops at the end of its current round.
 *
 * Result: ops_per_s = slot replacements (one free + one malloc each) per
 * second of wall time, all threads together.  Higher is better.
 */
#include "common.h"

#include <semaphore.h>

#define SLOTS 1000
#define MIN_SIZE 8
#define MAX_SIZE 1000 /* exclusive */
#define OPS_PER_ROUND 5000
#define ROUNDS 100

typedef struct {
    void *p;
    uint32_t size;
    uint64_t tag;
} slot_t;

typedef struct {
    int idx;           /* chain index: the core its threads run on */
    slot_t *slots;     /* the array handed from thread to thread */
    bench_rng_t rng;
    uint64_t ops;      /* replacements done by the chain */
    uint64_t threads;  /* threads the chain has run */
    char pad[BENCH_CACHELINE];
} chain_t;

static atomic_bool stop;
static atomic_int live_chains;
static sem_t all_done;

static void *chain_thread(void *arg)
{
    chain_t *c = arg;
    bench_pin_self(c->idx);
    slot_t *s = c->slots;
    bench_rng_t rng = c->rng;
    uint64_t ops = 0;
    bool stopped = false;
    for (int round = 0; round < ROUNDS; round++) {
        if (atomic_load_explicit(&stop, memory_order_relaxed)) {
            stopped = true;
            break;
        }
        for (int i = 0; i < OPS_PER_ROUND; i++) {
            slot_t *sl = &s[bench_rng_below(&rng, SLOTS)];
            bench_tag_check(sl->p, sl->size, sl->tag);
            free(sl->p);
            size_t size = bench_rng_range(&rng, MIN_SIZE, MAX_SIZE - 1);
            uint64_t tag = bench_rng_next(&rng);
            sl->p = bench_malloc(size);
            sl->size = (uint32_t)size;
            sl->tag = tag;
            bench_tag_write(sl->p, size, tag);
        }
        ops += OPS_PER_ROUND;
    }
    c->ops += ops;
    c->rng = rng;
    c->threads++;
    if (!stopped && !atomic_load_explicit(&stop, memory_order_relaxed)) {
        /* hand the array to a fresh thread and exit */
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, chain_thread, c) != 0)
            bench_die(bench_name, "pthread_create failed");
        pthread_attr_destroy(&attr);
        return NULL;
    }
    if (atomic_fetch_sub(&live_chains, 1) == 1)
        sem_post(&all_done);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "larson";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 5, .scale = 1,
                      .pin = true, .seed = 4711};
    bench_parse(argc, argv, &o,
                "Larson server simulation: P chains of threads replace random blocks (8..999 bytes)\n"
                "in 1000 slots, 5000 ops a round, 100 rounds a thread, then hand the slots to a new\n"
                "thread.  -d: seconds to run (default 5; --quick: 0.3).  Prints ops_per_s.\n");
    if (o.quick && !o.seconds_set)
        o.seconds = 0.3;
    bench_pin_init(o.pin);
    sem_init(&all_done, 0, 0);

    int P = o.threads;
    chain_t *chains = bench_malloc(sizeof(chain_t) * (size_t)P);
    for (int c = 0; c < P; c++) {
        chains[c] = (chain_t){.idx = c};
        bench_rng_seed(&chains[c].rng, o.seed * 1000003u + (uint64_t)c);
        chains[c].slots = bench_malloc(sizeof(slot_t) * SLOTS);
        for (int i = 0; i < SLOTS; i++) {
            slot_t *sl = &chains[c].slots[i];
            sl->size = (uint32_t)bench_rng_range(&chains[c].rng, MIN_SIZE, MAX_SIZE - 1);
            sl->tag = bench_rng_next(&chains[c].rng);
            sl->p = bench_malloc(sl->size);
            bench_tag_write(sl->p, sl->size, sl->tag);
        }
    }

    atomic_store(&live_chains, P);
    double t0 = bench_now();
    for (int c = 0; c < P; c++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, chain_thread, &chains[c]) != 0)
            bench_die(bench_name, "pthread_create failed");
        pthread_attr_destroy(&attr);
    }
    bench_sleep(o.seconds);
    atomic_store(&stop, true);
    while (sem_wait(&all_done) != 0) {
    }
    double elapsed = bench_now() - t0;

    uint64_t ops = 0, threads = 0;
    for (int c = 0; c < P; c++) {
        ops += chains[c].ops;
        threads += chains[c].threads;
        for (int i = 0; i < SLOTS; i++) {
            slot_t *sl = &chains[c].slots[i];
            bench_tag_check(sl->p, sl->size, sl->tag);
            free(sl->p);
        }
        free(chains[c].slots);
    }
    free(chains);
    char extra[128];
    snprintf(extra, sizeof extra, "elapsed_s=%.4f ops=%llu threads_started=%llu", elapsed,
             (unsigned long long)ops, (unsigned long long)threads);
    bench_result(&o, "ops_per_s", (double)ops / elapsed, extra);
    bench_pin_fini();
    return 0;
}
