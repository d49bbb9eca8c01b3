/*
 * xmalloc — producer/consumer cross-thread frees (after the description of
 * Lever & Boreham's xmalloc-test in ../../../shared/WORKLOADS.md; written
 * afresh).
 *
 * P producer threads allocate batches of 4096 blocks of 64 bytes, tag each
 * block (its first and last bytes), and push the batch on a shared bounded
 * queue (at most 100 batches); P consumer threads pop batches, check every
 * block and free it, then free the batch itself.  After -d seconds the
 * producers stop and the consumers drain the queue.  Producer i and
 * consumer i are pinned to core i mod cores.
 *
 * Result: frees_per_s = blocks freed by the consumers per second of wall
 * time (start to drained).  Higher is better.
 */
#include "common.h"

#define BATCH 4096
#define QUEUE_MAX 100
#define BLOCK_SIZE 64

typedef struct batch_s {
    uint64_t seq;
    void *blocks[BATCH];
} batch_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    batch_t *ring[QUEUE_MAX];
    int head, count;
    int producers_left;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .not_full = PTHREAD_COND_INITIALIZER,
       .not_empty = PTHREAD_COND_INITIALIZER};

static atomic_bool stop;
static atomic_uint_fast64_t next_seq;

typedef struct {
    int idx;
    uint64_t count; /* blocks allocated (producer) or freed (consumer) */
    char pad[BENCH_CACHELINE];
} worker_t;

static inline uint64_t block_tag(uint64_t seq, int i)
{
    return bench_tag_make(seq * BATCH + (uint64_t)i, BLOCK_SIZE);
}

static void *producer(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    uint64_t n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        batch_t *b = bench_malloc(sizeof *b);
        b->seq = atomic_fetch_add_explicit(&next_seq, 1, memory_order_relaxed);
        for (int i = 0; i < BATCH; i++) {
            void *p = bench_malloc(BLOCK_SIZE);
            bench_tag_write(p, BLOCK_SIZE, block_tag(b->seq, i));
            b->blocks[i] = p;
        }
        n += BATCH;
        pthread_mutex_lock(&q.lock);
        while (q.count == QUEUE_MAX)
            pthread_cond_wait(&q.not_full, &q.lock);
        q.ring[(q.head + q.count) % QUEUE_MAX] = b;
        q.count++;
        pthread_cond_signal(&q.not_empty);
        pthread_mutex_unlock(&q.lock);
    }
    pthread_mutex_lock(&q.lock);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    w->count = n;
    return NULL;
}

static void *consumer(void *arg)
{
    worker_t *w = arg;
    bench_pin_self(w->idx);
    uint64_t n = 0;
    for (;;) {
        pthread_mutex_lock(&q.lock);
        while (q.count == 0 && q.producers_left > 0)
            pthread_cond_wait(&q.not_empty, &q.lock);
        if (q.count == 0) { /* no producer left and nothing queued */
            pthread_mutex_unlock(&q.lock);
            break;
        }
        batch_t *b = q.ring[q.head];
        q.head = (q.head + 1) % QUEUE_MAX;
        q.count--;
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.lock);
        for (int i = 0; i < BATCH; i++) {
            bench_tag_check(b->blocks[i], BLOCK_SIZE, block_tag(b->seq, i));
            free(b->blocks[i]);
        }
        free(b);
        n += BATCH;
    }
    w->count = n;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_name = "xmalloc";
    bench_opts_t o = {.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .seconds = 5, .scale = 1,
                      .pin = true, .seed = 1};
    bench_parse(argc, argv, &o,
                "xmalloc-test: P producers allocate batches of 4096 64-byte blocks onto a bounded\n"
                "queue (100 batches), P consumers free them.  -d: seconds to run (default 5;\n"
                "--quick: 0.3).  Prints frees_per_s.\n");
    if (o.quick && !o.seconds_set)
        o.seconds = 0.3;
    bench_pin_init(o.pin);
    int P = o.threads;
    q.producers_left = P;
    worker_t *prod = bench_malloc(sizeof(worker_t) * (size_t)P);
    worker_t *cons = bench_malloc(sizeof(worker_t) * (size_t)P);
    pthread_t *tp = bench_malloc(sizeof(pthread_t) * (size_t)P);
    pthread_t *tc = bench_malloc(sizeof(pthread_t) * (size_t)P);

    double t0 = bench_now();
    for (int i = 0; i < P; i++) {
        prod[i] = (worker_t){.idx = i};
        cons[i] = (worker_t){.idx = i};
        bench_thread_start(&tc[i], consumer, &cons[i]);
        bench_thread_start(&tp[i], producer, &prod[i]);
    }
    bench_sleep(o.seconds);
    atomic_store(&stop, true);
    for (int i = 0; i < P; i++)
        pthread_join(tp[i], NULL);
    for (int i = 0; i < P; i++)
        pthread_join(tc[i], NULL);
    double elapsed = bench_now() - t0;

    uint64_t made = 0, freed = 0;
    for (int i = 0; i < P; i++) {
        made += prod[i].count;
        freed += cons[i].count;
    }
    if (made != freed)
        bench_die(bench_name, "consumers freed a different number of blocks than were made");
    free(prod);
    free(cons);
    free(tp);
    free(tc);
    char extra[96];
    snprintf(extra, sizeof extra, "elapsed_s=%.4f frees=%llu", elapsed, (unsigned long long)freed);
    bench_result(&o, "frees_per_s", (double)freed / elapsed, extra);
    bench_pin_fini();
    return 0;
}
