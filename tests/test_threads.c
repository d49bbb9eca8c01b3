/*
 * test_threads.c — the allocator under several threads: blocks freed by a
 * thread other than their owner, threads that exit with blocks still live
 * (their pools are abandoned and adopted), every size class and alignment
 * at once, realloc across threads, a randomized stress, and fork while
 * other threads allocate.
 *
 * Every block is filled with a pattern derived from its seed when it is
 * allocated and checked before it is freed, so a block handed out twice, a
 * lost link in a free list, or a realloc that drops bytes shows up as a
 * corrupted pattern.
 *
 * Assertions in worker threads are recorded (note_failure) and asserted on
 * the test's own thread after the join: Check's ck_assert must run there
 * (in CK_NOFORK mode it longjmps).
 *
 * Exact accounting.  Stats count a block freed by another thread as used
 * until the pool's owner takes it back (and while the freeing thread holds
 * it in a batch: a thread with a heap pushes its remote frees per pool in
 * batches, and at the latest when it exits or calls ouro_collect).  When the owner has exited, its
 * pools are abandoned, and frees that reach them afterwards sit on their
 * remote stacks until a thread adopts the pool or ouro_collect sweeps the
 * abandoned pools (taking back their remote frees and releasing those that
 * became empty).  So after a test whose blocks are all freed and whose
 * threads are joined, ouro_collect(1) on the test's thread (which also takes
 * back what was freed to its own pools and releases them) makes the summed
 * blocks_used, in_use, pools and abandoned_pools exact: they must equal
 * what they were before the test.  A block lost anywhere on the remote-free
 * path (a dropped notification, a pool stranded on a dead heap's queue)
 * would keep its pool's count up.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)


/* ------------------------------------------------------------------ */
/* blocks with a pattern                                                */
/* ------------------------------------------------------------------ */

typedef struct blk_s {
    void *p;
    size_t size;   /* bytes asked for, and filled */
    uint64_t seed; /* of the pattern */
    unsigned tag;  /* for the test's own use */
} blk_t;

static uint64_t blk_seed(uint64_t a, uint64_t b, uint64_t c)
{
    return tu_mix64(tu_mix64(a) ^ tu_mix64(b + 0x51ed270b27ull) ^ (c << 1));
}

/* Check a live block: ouro knows it, it holds what was asked, its pattern
 * is intact.  Records a failure and returns false otherwise. */
static bool blk_ok(const blk_t *b, const char *where)
{
    if (b->p == NULL) {
        TFAIL("%s: NULL block", where);
        return false;
    }
    if (!ouro_owns(b->p)) {
        TFAIL("%s: ouro_owns(%p) == 0 for a live block of %zu bytes", where, b->p, b->size);
        return false;
    }
    size_t u = ouro_usable_size(b->p);
    if (u < b->size) {
        TFAIL("%s: ouro_usable_size(%p) = %zu < %zu asked", where, b->p, u, b->size);
        return false;
    }
    size_t at = pattern_mismatch(b->p, b->size, b->seed);
    if (at != b->size) {
        TFAIL("%s: block %p of %zu bytes (seed %#llx) corrupted at offset %zu", where, b->p,
              b->size, (unsigned long long)b->seed, at);
        return false;
    }
    return true;
}

/* Allocate `size` bytes and fill them; records a failure on NULL. */
static blk_t blk_new(size_t size, uint64_t seed)
{
    blk_t b = {ouro_malloc(size), size, seed, 0};
    if (b.p == NULL)
        TFAIL("ouro_malloc(%zu) failed: errno %d", size, errno);
    else
        fill_pattern(b.p, size, seed);
    return b;
}

/* Check and free; free_sized every other call, to cover both. */
static void blk_free(blk_t *b, const char *where)
{
    if (b->p == NULL)
        return;
    blk_ok(b, where);
    if (b->seed & 1)
        ouro_free_sized(b->p, b->size);
    else
        ouro_free(b->p);
    b->p = NULL;
}

/* A size: mostly small (1..2048), some up to 128 KiB (medium classes), a
 * few above (large blocks straight from the OS). */
static size_t mixed_size(tu_rng_t *r, size_t small_max, unsigned medium_pm, unsigned large_pm,
                         size_t large_max)
{
    unsigned k = (unsigned)(tu_rng_next(r) % 1000);
    if (k < large_pm)
        return (size_t)tu_rng_range(r, 128 * KiB + 1, large_max);
    if (k < large_pm + medium_pm)
        return (size_t)tu_rng_range(r, small_max + 1, 128 * KiB);
    return (size_t)tu_rng_range(r, 1, small_max);
}

/* ------------------------------------------------------------------ */
/* stats                                                                */
/* ------------------------------------------------------------------ */

static size_t used_blocks(const ouro_stats_t *s)
{
    size_t n = 0;
    for (int c = 0; c < OURO_NUM_CLASSES; c++)
        n += s->classes[c].blocks_used;
    return n;
}

/* The class serving `size` (> 0) bytes with plain malloc. */
static int class_of(size_t size)
{
    for (int c = 1; c < OURO_NUM_CLASSES; c++)
        if (ouro_class_block_size(c) >= size)
            return c;
    return -1;
}

/* Bring the heap to a state where the accounting is exact (see the top). */
static void settle(ouro_stats_t *out)
{
    ouro_collect(1);
    ouro_stats_get(out);
}

/* After a test whose blocks are all freed and whose threads are joined:
 * the accounting is back where it was.  `main_allocated`: the test's own
 * thread allocated, so it may have a heap it had not before. */
static void assert_back_to(const ouro_stats_t *base, const ouro_stats_t *now, bool main_allocated)
{
    ck_assert_msg(used_blocks(now) == used_blocks(base),
                  "blocks_used summed over classes: %zu now, %zu before the test", used_blocks(now),
                  used_blocks(base));
    for (int c = 0; c < OURO_NUM_CLASSES; c++)
        ck_assert_msg(now->classes[c].blocks_used == base->classes[c].blocks_used,
                      "class %d (%zu bytes): blocks_used %zu now, %zu before", c,
                      now->classes[c].block_size, now->classes[c].blocks_used,
                      base->classes[c].blocks_used);
    ck_assert_msg(now->in_use == base->in_use, "in_use %zu now, %zu before", now->in_use,
                  base->in_use);
    ck_assert_msg(now->large_count == base->large_count, "large_count %zu now, %zu before",
                  now->large_count, base->large_count);
    ck_assert_msg(now->large_bytes == base->large_bytes, "large_bytes %zu now, %zu before",
                  now->large_bytes, base->large_bytes);
    ck_assert_msg(now->abandoned_pools == base->abandoned_pools,
                  "abandoned_pools %zu now, %zu before", now->abandoned_pools, base->abandoned_pools);
    ck_assert_msg(now->pools == base->pools, "pools %zu now, %zu before (a pool neither held nor released?)",
                  now->pools, base->pools);
    ck_assert_msg(now->threads == base->threads || (main_allocated && now->threads == base->threads + 1),
                  "threads %zu now, %zu before", now->threads, base->threads);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    ck_assert_int_eq(pthread_create(t, NULL, fn, arg), 0);
}

static void join(pthread_t t)
{
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

/* ------------------------------------------------------------------ */
/* a bounded blocking queue of blocks (mutex + condition variables)     */
/* ------------------------------------------------------------------ */

typedef struct bqueue_s {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    blk_t *items;
    size_t cap, head, count;
    int producers; /* pop returns false once this is 0 and the queue is empty */
} bqueue_t;

static void bq_init(bqueue_t *q, size_t cap, int producers)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->items = calloc(cap, sizeof *q->items);
    ck_assert_ptr_nonnull(q->items);
    q->cap = cap;
    q->head = q->count = 0;
    q->producers = producers;
}

static void bq_destroy(bqueue_t *q)
{
    free(q->items);
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->not_empty);
    pthread_mutex_destroy(&q->lock);
}

static void bq_push(bqueue_t *q, blk_t b)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == q->cap)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->items[(q->head + q->count) % q->cap] = b;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static bool bq_pop(bqueue_t *q, blk_t *out)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && q->producers > 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    bool got = q->count > 0;
    if (got) {
        *out = q->items[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->lock);
    return got;
}

static void bq_producer_done(bqueue_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->producers--;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

/* ================================================================== */
/* 1. producers allocate, consumers (other threads) free               */
/* ================================================================== */

#define PC_HOLD 200 /* last blocks of each producer, freed after it exited */

typedef struct pc_shared_s {
    bqueue_t q;
    atomic_bool producers_exited;
} pc_shared_t;

typedef struct pc_arg_s {
    pc_shared_t *sh;
    unsigned id;
    unsigned long n;     /* producer: blocks to make */
    unsigned long freed; /* consumer: blocks freed */
} pc_arg_t;

static void *producer_main(void *a)
{
    pc_arg_t *arg = a;
    tu_rng_t r = tu_rng_make(0x7e57000 + arg->id);
    for (unsigned long i = 0; i < arg->n; i++) {
        /* 1..2048 mostly, 4% medium, 1% large up to 200000 */
        size_t size = mixed_size(&r, 2048, 40, 10, 200000);
        blk_t b = blk_new(size, blk_seed(1, arg->id, i));
        b.tag = i + PC_HOLD >= arg->n;
        if (b.p)
            bq_push(&arg->sh->q, b);
    }
    bq_producer_done(&arg->sh->q);
    return NULL;
}

static void *consumer_main(void *a)
{
    pc_arg_t *arg = a;
    blk_t b, *hold = malloc(2 * PC_HOLD * sizeof *hold);
    unsigned nhold = 0;
    if (hold == NULL) {
        TFAIL("consumer: out of memory");
        return NULL;
    }
    while (bq_pop(&arg->sh->q, &b)) {
        if (b.tag && nhold < 2 * PC_HOLD) {
            hold[nhold++] = b;
            continue;
        }
        blk_free(&b, "consumer");
        arg->freed++;
    }
    /* the held blocks go to pools whose owner has exited */
    while (!atomic_load(&arg->sh->producers_exited))
        sched_yield();
    for (unsigned i = 0; i < nhold; i++) {
        blk_free(&hold[i], "consumer: after the producers exited");
        arg->freed++;
    }
    free(hold);
    return NULL;
}

START_TEST(test_producer_consumer_remote_free)
{
    reset_failures();
    ouro_stats_t base, joined, after;
    settle(&base);

    enum { NPROD = 2, NCONS = 2 };
    unsigned long n = tu_scale(40000, 8000);
    pc_shared_t sh;
    bq_init(&sh.q, 128, NPROD);
    atomic_init(&sh.producers_exited, false);
    pc_arg_t prod[NPROD], cons[NCONS];
    pthread_t pt[NPROD], ct[NCONS];
    for (unsigned i = 0; i < NCONS; i++) {
        cons[i] = (pc_arg_t){.sh = &sh, .id = i};
        start(&ct[i], consumer_main, &cons[i]);
    }
    for (unsigned i = 0; i < NPROD; i++) {
        prod[i] = (pc_arg_t){.sh = &sh, .id = i, .n = n};
        start(&pt[i], producer_main, &prod[i]);
    }
    for (unsigned i = 0; i < NPROD; i++)
        join(pt[i]);
    atomic_store(&sh.producers_exited, true);
    for (unsigned i = 0; i < NCONS; i++)
        join(ct[i]);
    bq_destroy(&sh.q);
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(cons[0].freed + cons[1].freed, NPROD * n);

    ouro_stats_get(&joined);
    /* large blocks go back to the OS at once, whoever frees them */
    ck_assert_uint_eq(joined.large_count, base.large_count);
    ck_assert_uint_eq(joined.large_bytes, base.large_bytes);
    ck_assert_uint_eq(joined.threads, base.threads);
    /* the producers exited with blocks live (the held ones): their pools
     * were abandoned, and those blocks were freed to abandoned pools */
    ck_assert_msg(joined.abandoned_pools > base.abandoned_pools,
                  "no pool abandoned by the exited producers (%zu)", joined.abandoned_pools);

    /* take back what was freed to abandoned pools: exact again */
    ouro_collect(1);
    ouro_stats_get(&after);
    assert_back_to(&base, &after, false);
}
END_TEST

/* ================================================================== */
/* 2. thread churn: short-lived threads allocate, main frees later      */
/* ================================================================== */

typedef struct churn_arg_s {
    blk_t *blocks;
    unsigned n, round;
} churn_arg_t;

static void *churn_main(void *a)
{
    churn_arg_t *arg = a;
    /* the same sizes every round (so every round needs the same memory),
     * a pattern of its own per round */
    tu_rng_t r = tu_rng_make(0xc4u);
    for (unsigned i = 0; i < arg->n; i++) {
        size_t size = mixed_size(&r, 1024, 80, 5, 160 * KiB);
        arg->blocks[i] = blk_new(size, blk_seed(2, arg->round, i));
    }
    return NULL; /* blocks still live: the pools are abandoned */
}

START_TEST(test_thread_churn_reuses_memory)
{
    reset_failures();
    ouro_stats_t base, st, after, at5 = {0};
    settle(&base);

    unsigned rounds = (unsigned)tu_scale(50, 30), n = (unsigned)tu_scale(3000, 1500);
    const unsigned early = 5;
    blk_t *arr[2] = {calloc(n, sizeof(blk_t)), calloc(n, sizeof(blk_t))};
    ck_assert(arr[0] && arr[1]);
    size_t max_arenas = 0, max_reserved = 0;
    for (unsigned round = 0; round < rounds; round++) {
        churn_arg_t arg = {arr[round % 2], n, round};
        pthread_t t;
        start(&t, churn_main, &arg);
        /* meanwhile free the previous round's blocks: their pools are
         * abandoned, and being adopted by the new thread as we free */
        if (round > 0) {
            blk_t *prev = arr[(round + 1) % 2];
            for (unsigned i = 0; i < n; i++)
                blk_free(&prev[i], "churn: previous round");
        }
        join(t);
        ouro_stats_get(&st);
        ck_assert_msg(st.threads == base.threads, "round %u: threads %zu after the join, %zu before",
                      round, st.threads, base.threads);
        if (round + 1 == early)
            at5 = st;
        if (round + 1 >= early) {
            if (st.arenas > max_arenas)
                max_arenas = st.arenas;
            if (st.reserved > max_reserved)
                max_reserved = st.reserved;
        }
    }
    for (unsigned i = 0; i < n; i++)
        blk_free(&arr[(rounds - 1) % 2][i], "churn: last round");
    ASSERT_NO_FAILURES();

    /* Memory is reused: a round needs the same memory as the one before,
     * and at most two rounds' blocks are live at once, so after the first
     * rounds the arenas stop growing.  Timing decides how much of the
     * previous round is freed when the new thread adopts its pools, so
     * allow up to twice the early figure (a leak of a round's memory per
     * round would grow it several times over the run). */
    ck_assert_msg(max_arenas <= 2 * at5.arenas + 1,
                  "arenas grew with the rounds: %zu at round %u, up to %zu later", at5.arenas, early,
                  max_arenas);
    ck_assert_msg(max_reserved <= 2 * at5.reserved + 8 * MiB,
                  "reserved grew with the rounds: %zu at round %u, up to %zu later", at5.reserved,
                  early, max_reserved);

    settle(&after);
    ASSERT_NO_FAILURES();
    assert_back_to(&base, &after, false);
    free(arr[0]);
    free(arr[1]);
}
END_TEST

/* ================================================================== */
/* 3. adoption of the pools of an exited thread                         */
/* ================================================================== */

#define ADOPT_CLASSES 6
static const size_t adopt_size[ADOPT_CLASSES] = {32, 256, 1000, 4096, 20000, 100000};
static const unsigned adopt_count[ADOPT_CLASSES] = {3000, 600, 200, 60, 40, 30};
#define ADOPT_LARGE 2

typedef struct adopt_arg_s {
    blk_t *blocks[ADOPT_CLASSES];
    blk_t large[ADOPT_LARGE];
} adopt_arg_t;

static void *adopt_thread_main(void *a)
{
    adopt_arg_t *arg = a;
    for (int k = 0; k < ADOPT_CLASSES; k++)
        for (unsigned i = 0; i < adopt_count[k]; i++)
            arg->blocks[k][i] = blk_new(adopt_size[k] - (i % 7), blk_seed(3, k, i));
    for (int j = 0; j < ADOPT_LARGE; j++)
        arg->large[j] = blk_new(200000 + j, blk_seed(3, 99, j));
    /* free every other block ourselves: every pool keeps live blocks */
    for (int k = 0; k < ADOPT_CLASSES; k++)
        for (unsigned i = 0; i < adopt_count[k]; i += 2)
            blk_free(&arg->blocks[k][i], "adopt: owner frees half");
    return NULL;
}

START_TEST(test_adoption_of_abandoned_pools)
{
    reset_failures();
    ouro_stats_t s0, s1, s2, s3, after;
    settle(&s0);

    adopt_arg_t arg;
    size_t live = 0;
    for (int k = 0; k < ADOPT_CLASSES; k++) {
        arg.blocks[k] = calloc(adopt_count[k], sizeof(blk_t));
        ck_assert_ptr_nonnull(arg.blocks[k]);
        live += adopt_count[k] / 2;
    }
    pthread_t t;
    start(&t, adopt_thread_main, &arg);
    join(t);
    ASSERT_NO_FAILURES();

    ouro_stats_get(&s1);
    ck_assert_uint_eq(s1.threads, s0.threads);
    /* the exited thread's pools with live blocks are abandoned, not lost */
    ck_assert_msg(s1.abandoned_pools > s0.abandoned_pools,
                  "abandoned_pools %zu after the exit, %zu before", s1.abandoned_pools,
                  s0.abandoned_pools);
    /* and each of its pools is abandoned or released: none held by nobody */
    ck_assert_msg(s1.pools - s0.pools == s1.abandoned_pools - s0.abandoned_pools,
                  "pools +%zu but abandoned_pools +%zu after the exit", s1.pools - s0.pools,
                  s1.abandoned_pools - s0.abandoned_pools);
    /* it freed its half locally: the count is exact */
    ck_assert_msg(used_blocks(&s1) - used_blocks(&s0) == live,
                  "blocks_used +%zu after the exit, %zu blocks live", used_blocks(&s1) - used_blocks(&s0),
                  live);
    ck_assert_uint_eq(s1.large_count, s0.large_count + ADOPT_LARGE);

    /* the live blocks survived their thread */
    for (int k = 0; k < ADOPT_CLASSES; k++)
        for (unsigned i = 1; i < adopt_count[k]; i += 2)
            blk_ok(&arg.blocks[k][i], "adopt: after the exit");
    for (int j = 0; j < ADOPT_LARGE; j++)
        blk_ok(&arg.large[j], "adopt: large after the exit");
    ASSERT_NO_FAILURES();

    /* allocating in those classes adopts a pool per class */
    bool fresh = true; /* no pool of these classes before the test: the drop is exact */
    blk_t mine[ADOPT_CLASSES];
    for (int k = 0; k < ADOPT_CLASSES; k++)
        if (s0.classes[class_of(adopt_size[k])].pools != 0)
            fresh = false;
    for (int k = 0; k < ADOPT_CLASSES; k++)
        mine[k] = blk_new(adopt_size[k], blk_seed(3, 100, k));
    ouro_stats_get(&s2);
    ck_assert_msg(s2.abandoned_pools < s1.abandoned_pools,
                  "allocating in the classes of abandoned pools adopted none (%zu abandoned)",
                  s2.abandoned_pools);
    if (fresh) {
        ck_assert_msg(s1.abandoned_pools - s2.abandoned_pools == ADOPT_CLASSES,
                      "one allocation per class adopted %zu pools, not %d",
                      s1.abandoned_pools - s2.abandoned_pools, ADOPT_CLASSES);
        /* the adopted pools had room: no new pool was claimed */
        ck_assert_uint_eq(s2.pools, s1.pools);
    }
    ck_assert_uint_eq(used_blocks(&s2), used_blocks(&s1) + ADOPT_CLASSES);

    /* the blocks handed out of adopted pools overlap no live block */
    for (int k = 0; k < ADOPT_CLASSES; k++) {
        blk_ok(&mine[k], "adopt: new block");
        for (unsigned i = 1; i < adopt_count[k]; i += 2)
            blk_ok(&arg.blocks[k][i], "adopt: after adoption");
    }
    ASSERT_NO_FAILURES();

    /* free the rest from here: local frees into adopted pools, remote into
     * the pools still abandoned */
    for (int k = 0; k < ADOPT_CLASSES; k++)
        for (unsigned i = 1; i < adopt_count[k]; i += 2)
            blk_free(&arg.blocks[k][i], "adopt: main frees the rest");
    for (int j = 0; j < ADOPT_LARGE; j++)
        blk_free(&arg.large[j], "adopt: main frees large");
    for (int k = 0; k < ADOPT_CLASSES; k++)
        blk_free(&mine[k], "adopt: main frees its own");
    ASSERT_NO_FAILURES();
    ouro_collect(1);
    ouro_stats_get(&s3);
    ck_assert_uint_eq(s3.large_count, s0.large_count);
    ck_assert_uint_ge(used_blocks(&s3), used_blocks(&s0));
    /* the adopted pools are empty now and ouro_collect(1) released them:
     * every pool left of the test is one still abandoned */
    ck_assert_msg(s3.pools - s0.pools == s3.abandoned_pools - s0.abandoned_pools,
                  "pools +%zu but abandoned_pools +%zu after freeing all and collecting",
                  s3.pools - s0.pools, s3.abandoned_pools - s0.abandoned_pools);

    settle(&after);
    ASSERT_NO_FAILURES();
    assert_back_to(&s0, &after, true);
    for (int k = 0; k < ADOPT_CLASSES; k++)
        free(arg.blocks[k]);
}
END_TEST

/* ================================================================== */
/* 3b. full pools come back through remote frees                        */
/* ================================================================== */

/* The owner fills several pools: all but the last go to its full list,
 * where it no longer looks at them.  Another thread frees every block.
 * The first free into each full pool must tell the owner (pool.c's NOTIFY
 * bit and the heap's delayed stack), so the owner's next allocations of
 * that size get exactly those blocks back: no block from anywhere else,
 * and no new pool.  A lost notification leaves a pool unseen on the full
 * list, and the owner would claim new pools instead.  In odd rounds the
 * freer has a heap and the blocks are small enough to be batched (3c
 * below): it pushes them in batches, each batch's first block telling the
 * owner. */
#define FB_N 210     /* ten pools of 21 blocks of 3 KiB, in the default mode */
#define FB_SIZE 3000
#define FB_SIZE_BATCHED 1400 /* five pools of 42 blocks of 1.5 KiB (debug mode too) */

static bool fb_with_heap;

static void *free_blocks_main(void *a)
{
    blk_t *v = a;
    if (fb_with_heap)
        ouro_free(ouro_malloc(16));
    for (unsigned i = 0; i < FB_N; i++)
        blk_free(&v[i], "full pools: the other thread frees");
    return NULL;
}

static int cmp_addr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_full_pools_come_back_after_remote_frees)
{
    reset_failures();
    ouro_stats_t base, filled, refilled, after;
    settle(&base);
    static blk_t v[FB_N], w[FB_N];
    static uintptr_t addr[FB_N];
    for (unsigned round = 0; round < 3; round++) {
        for (unsigned i = 0; i < FB_N; i++) {
            v[i] = blk_new(round % 2 ? FB_SIZE_BATCHED : FB_SIZE, blk_seed(8, round, i));
            addr[i] = (uintptr_t)v[i].p;
        }
        ASSERT_NO_FAILURES();
        ouro_stats_get(&filled);
        pthread_t t;
        fb_with_heap = round % 2;
        start(&t, free_blocks_main, v);
        join(t);
        ASSERT_NO_FAILURES();
        qsort(addr, FB_N, sizeof addr[0], cmp_addr);
        unsigned elsewhere = 0;
        for (unsigned i = 0; i < FB_N; i++) {
            w[i] = blk_new(round % 2 ? FB_SIZE_BATCHED : FB_SIZE, blk_seed(9, round, i));
            uintptr_t u = (uintptr_t)w[i].p;
            elsewhere += bsearch(&u, addr, FB_N, sizeof addr[0], cmp_addr) == NULL;
        }
        ASSERT_NO_FAILURES();
        ouro_stats_get(&refilled);
        ck_assert_msg(elsewhere == 0, "round %u: %u of %d blocks came from elsewhere than the %d freed",
                      round, elsewhere, FB_N, FB_N);
        ck_assert_msg(refilled.pools == filled.pools, "round %u: pools %zu after the refill, %zu before",
                      round, refilled.pools, filled.pools);
        /* every freed block was taken back and handed out again */
        ck_assert_msg(used_blocks(&refilled) == used_blocks(&filled),
                      "round %u: blocks_used %zu after the refill, %zu before", round,
                      used_blocks(&refilled), used_blocks(&filled));
        for (unsigned i = 0; i < FB_N; i++)
            blk_free(&w[i], "full pools: the owner frees");
        ASSERT_NO_FAILURES();
    }
    settle(&after);
    assert_back_to(&base, &after, true);
}
END_TEST

/* ================================================================== */
/* 3b'. a pool another thread freed whole is carved afresh               */
/* ================================================================== */

/* Once other threads have freed every block the owner handed out of a
 * pool, the owner carves the pool afresh from its start (pool.c,
 * pool_recarve) instead of taking the blocks back one by one.  So, in the
 * default mode, the blocks it hands out next come in address order within
 * each pool, however the other thread freed them (here in address order,
 * which the blocks' stack would give back reversed); and calloc clears
 * them, because the pool's memory is no longer zero as it was when the
 * pool was new.  The owner is a thread of its own, so that no pool an
 * earlier test left to the main thread (CK_FORK=no) is in the way. */
#define RC_N 256 /* four pools of 64 blocks of 1 KiB */
#define RC_SIZE 1000

static void *rc_free_all(void *a)
{
    uintptr_t *v = a;
    for (unsigned i = 0; i < RC_N; i++)
        ouro_free((void *)v[i]);
    return NULL;
}

typedef struct rc_result_s {
    unsigned dirty, up, down, failed;
} rc_result_t;

static void *rc_owner(void *a)
{
    rc_result_t *r = a;
    static uintptr_t v[RC_N];
    for (unsigned i = 0; i < RC_N; i++) {
        void *p = ouro_malloc(RC_SIZE);
        if (p == NULL) {
            r->failed++;
            return NULL;
        }
        memset(p, 0xab, RC_SIZE);
        v[i] = (uintptr_t)p;
    }
    qsort(v, RC_N, sizeof v[0], cmp_addr);
    pthread_t t;
    if (pthread_create(&t, NULL, rc_free_all, v) != 0 || pthread_join(t, NULL) != 0) {
        r->failed++;
        return NULL;
    }
    unsigned char *prev = NULL;
    for (unsigned i = 0; i < RC_N; i++) {
        unsigned char *p = ouro_calloc(1, RC_SIZE);
        if (p == NULL) {
            r->failed++;
            return NULL;
        }
        for (unsigned k = 0; k < RC_SIZE; k++)
            if (p[k] != 0) {
                r->dirty++;
                break;
            }
        /* pairs in one 64 KiB slot: one pool of this class */
        if (prev != NULL && (uintptr_t)prev >> 16 == (uintptr_t)p >> 16) {
            if (p > prev)
                r->up++;
            else
                r->down++;
        }
        prev = p;
        v[i] = (uintptr_t)p;
    }
    for (unsigned i = 0; i < RC_N; i++)
        ouro_free((void *)v[i]);
    return NULL;
}

START_TEST(test_pool_freed_whole_by_others_is_carved_afresh)
{
    reset_failures();
    rc_result_t r = {0};
    pthread_t t;
    start(&t, rc_owner, &r);
    join(t);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_msg(r.dirty == 0, "%u of %d calloc blocks were not cleared", r.dirty, RC_N);
    if (ouro_option_get(OURO_OPTION_DEBUG) == 0 && ouro_option_get(OURO_OPTION_HARDENED) == 0)
        /* (hardened mode shuffles each page's blocks; debug mode has pools of its own) */
        ck_assert_msg(r.down == 0 && r.up >= RC_N / 2,
                      "blocks handed out after the pools were freed whole: %u pairs up, %u down "
                      "(carved afresh, every pair in a pool goes up)", r.up, r.down);
}
END_TEST

/* ================================================================== */
/* 3c. remote frees reach the owner in batches                          */
/* ================================================================== */

/* A thread with a heap gathers the blocks it frees to other threads'
 * pools and pushes them per pool in batches (pool.c): at most 15 blocks of
 * at most 8 pools wait with it, and its ouro_collect and its exit push
 * them.  A thread that never allocated pushes each block at once. */
#define RB_N 1000
#define RB_HELD_MAX (8 * 15)

typedef struct rb_job_s {
    blk_t *v;
    unsigned n;
    bool has_heap;       /* allocate once first */
    bool stay;           /* stay, in step with the owner at the barrier, instead of exiting */
    pthread_barrier_t *bar;
} rb_job_t;

static void *rb_free(void *a)
{
    rb_job_t *j = a;
    if (j->has_heap)
        ouro_free(ouro_malloc(64));
    for (unsigned i = 0; i < j->n; i++)
        blk_free(&j->v[i], "batches: another thread frees");
    if (j->stay) {
        pthread_barrier_wait(j->bar); /* 1: freed */
        pthread_barrier_wait(j->bar); /* 2: the owner looked */
        if (j->has_heap)
            ouro_collect(0); /* push what we hold */
        pthread_barrier_wait(j->bar); /* 3: pushed, the owner looks again */
        pthread_barrier_wait(j->bar); /* 4: it looked (before our exit pushes anything) */
    }
    return NULL;
}

/* Blocks in use, after the owner took back what waits.  (Summed over the
 * classes: debug mode's blocks are larger than the 64 bytes asked for.) */
static size_t rb_used(void)
{
    ouro_stats_t s;
    ouro_collect(0);
    ouro_stats_get(&s);
    return used_blocks(&s);
}

START_TEST(test_remote_frees_reach_the_owner_in_batches)
{
    reset_failures();
    ouro_stats_t base, after;
    settle(&base);
    size_t before = used_blocks(&base);
    static blk_t v[RB_N];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    static const struct {
        unsigned n;
        bool has_heap, stay;
        size_t held_min, held_max; /* while it stays, before it collects */
    } phases[] = {
        {5, true, true, 1, 5},          /* fewer than a batch: all wait with it (the last way
                                         * it used holds 1 to 5 whatever the pools) */
        {RB_N, true, true, 0, RB_HELD_MAX}, /* many: batches go, at most the bound waits */
        {RB_N, false, true, 0, 0},      /* no heap: each block goes at once */
        {RB_N, true, false, 0, 0},      /* exits: its exit pushes what it held */
    };
    for (unsigned ph = 0; ph < sizeof phases / sizeof *phases; ph++) {
        unsigned n = phases[ph].n;
        for (unsigned i = 0; i < n; i++)
            v[i] = blk_new(64, blk_seed(10, ph, i));
        ASSERT_NO_FAILURES();
        ck_assert_uint_eq(rb_used(), before + n);
        rb_job_t job = {v, n, phases[ph].has_heap, phases[ph].stay, &bar};
        pthread_t t;
        start(&t, rb_free, &job);
        if (!phases[ph].stay) {
            join(t);
            ck_assert_msg(rb_used() == before, "phase %u: %zu blocks still used after the freer's exit",
                          ph, rb_used() - before);
            continue;
        }
        pthread_barrier_wait(&bar);
        size_t held = rb_used() - before;
        pthread_barrier_wait(&bar);
        ck_assert_msg(held >= phases[ph].held_min && held <= phases[ph].held_max,
                      "phase %u: the freeing thread holds %zu of %u blocks (expected %zu to %zu)", ph, held,
                      n, phases[ph].held_min, phases[ph].held_max);
        pthread_barrier_wait(&bar);
        size_t left = rb_used() - before;
        pthread_barrier_wait(&bar);
        join(t);
        ck_assert_msg(left == 0, "phase %u: %zu blocks still used after the freer's ouro_collect", ph, left);
        ASSERT_NO_FAILURES();
    }
    pthread_barrier_destroy(&bar);
    settle(&after);
    assert_back_to(&base, &after, true);
}
END_TEST

/* ================================================================== */
/* 4. every class and alignment, freed by another thread half the time  */
/* ================================================================== */

#define CA_THREADS 3
#define CA_MAX 256

typedef struct ca_blk_s {
    blk_t b;
    size_t align;
} ca_blk_t;

typedef struct ca_shared_s {
    pthread_barrier_t barrier;
    ca_blk_t blocks[CA_THREADS][CA_MAX];
    unsigned count[CA_THREADS];
    unsigned rounds;
} ca_shared_t;

typedef struct ca_arg_s {
    ca_shared_t *sh;
    unsigned id;
} ca_arg_t;

static void ca_add(ca_blk_t *v, unsigned *n, void *p, size_t size, size_t align, uint64_t seed)
{
    if (p == NULL) {
        TFAIL("allocation of %zu bytes aligned to %zu failed: errno %d", size, align, errno);
        return;
    }
    if ((uintptr_t)p % align != 0)
        TFAIL("%p (%zu bytes) is not aligned to %zu", p, size, align);
    size_t usable = ouro_usable_size(p);
    if (usable < size)
        TFAIL("ouro_usable_size(%p) = %zu < %zu asked (alignment %zu)", p, usable, size, align);
    if (!ouro_owns(p))
        TFAIL("ouro_owns(%p) == 0 for a fresh block", p);
    /* write all the usable bytes (up to 64 KiB past the request, to spare
     * the RAM of large mappings): ouro_usable_size must be honest, and a
     * neighbour's pattern would show the overlap */
    size_t fill = usable < size + 64 * KiB ? usable : size + 64 * KiB;
    if (*n >= CA_MAX) {
        TFAIL("CA_MAX too small");
        ouro_free(p);
        return;
    }
    v[(*n)++] = (ca_blk_t){{p, fill, seed, 0}, align};
    fill_pattern(p, fill, seed);
}

static void *ca_main(void *a)
{
    ca_arg_t *arg = a;
    ca_shared_t *sh = arg->sh;
    unsigned me = arg->id, left = (arg->id + CA_THREADS - 1) % CA_THREADS;
    for (unsigned round = 0; round < sh->rounds; round++) {
        ca_blk_t *v = sh->blocks[me];
        unsigned n = 0;
        uint64_t s = 0;
        /* every class at its block size, and one byte over the one below */
        ca_add(v, &n, ouro_malloc(0), 0, 16, blk_seed(4, me, s++));
        for (int c = 0; c < OURO_NUM_CLASSES; c++) {
            size_t bs = ouro_class_block_size(c);
            ca_add(v, &n, ouro_malloc(bs), bs, 16, blk_seed(4, me, s++));
            if (c > 1)
                ca_add(v, &n, ouro_malloc(ouro_class_block_size(c - 1) + 1),
                       ouro_class_block_size(c - 1) + 1, 16, blk_seed(4, me, s++));
        }
        /* alignments 16 .. 64 KiB with sizes around them, then some beyond
         * (the large path; 4 MiB puts the header one unit below the block) */
        for (size_t al = 16; al <= 64 * KiB; al *= 2) {
            const size_t sizes[] = {0, 1, al / 2 + 1, al - 1, al, al + 1, al + al / 2, 3 * al};
            for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++)
                ca_add(v, &n, ouro_aligned_alloc(al, sizes[i]), sizes[i], al, blk_seed(4, me, s++));
        }
        const size_t big_al[] = {128 * KiB, MiB, 4 * MiB};
        for (unsigned i = 0; i < 3; i++) {
            size_t al = big_al[i];
            const size_t sizes[] = {1, 100, 128 * KiB + 1, al};
            for (unsigned j = 0; j < 4; j++)
                ca_add(v, &n, ouro_aligned_alloc(al, sizes[j]), sizes[j], al, blk_seed(4, me, s++));
        }
        sh->count[me] = n;
        pthread_barrier_wait(&sh->barrier);
        /* everybody allocated: nothing of ours was overwritten */
        for (unsigned i = 0; i < n; i++)
            blk_ok(&v[i].b, "classes: after all threads allocated");
        pthread_barrier_wait(&sh->barrier);
        /* free our even blocks, and the odd blocks of the thread on our left */
        for (unsigned i = 0; i < n; i += 2)
            blk_free(&v[i].b, "classes: own block");
        ca_blk_t *lv = sh->blocks[left];
        for (unsigned i = 1; i < sh->count[left]; i += 2)
            blk_free(&lv[i].b, "classes: neighbour's block");
        pthread_barrier_wait(&sh->barrier);
    }
    return NULL;
}

START_TEST(test_all_classes_and_alignments)
{
    reset_failures();
    ouro_stats_t base, after;
    settle(&base);
    ca_shared_t *sh = calloc(1, sizeof *sh);
    ck_assert_ptr_nonnull(sh);
    sh->rounds = (unsigned)tu_scale(10, 5);
    pthread_barrier_init(&sh->barrier, NULL, CA_THREADS);
    ca_arg_t args[CA_THREADS];
    pthread_t t[CA_THREADS];
    for (unsigned i = 0; i < CA_THREADS; i++) {
        args[i] = (ca_arg_t){sh, i};
        start(&t[i], ca_main, &args[i]);
    }
    for (unsigned i = 0; i < CA_THREADS; i++)
        join(t[i]);
    pthread_barrier_destroy(&sh->barrier);
    ASSERT_NO_FAILURES();
    settle(&after);
    ASSERT_NO_FAILURES();
    assert_back_to(&base, &after, false);
    free(sh);
}
END_TEST

/* ================================================================== */
/* 5. realloc: growing and shrinking, and across threads                */
/* ================================================================== */

static size_t grow_step(size_t s)
{
    return s + s / 8 + 1;
}

static size_t shrink_step(size_t s)
{
    return s - s / 8 - 1;
}

/* realloc b to `size`, checking the prefix kept and refilling; false on failure */
static bool blk_realloc(blk_t *b, size_t size, const char *where)
{
    void *old = b->p;
    void *q = ouro_realloc(old, size);
    if (q == NULL) {
        TFAIL("%s: ouro_realloc(%p, %zu) failed: errno %d", where, old, size, errno);
        return false;
    }
    size_t keep = size < b->size ? size : b->size;
    size_t at = pattern_mismatch(q, keep, b->seed);
    if (at != keep) {
        TFAIL("%s: realloc %zu -> %zu bytes (%p -> %p) lost the contents at offset %zu", where,
              b->size, size, old, q, at);
        return false;
    }
    size_t u = ouro_usable_size(q);
    if (u < size) {
        TFAIL("%s: ouro_usable_size(%p) = %zu after realloc to %zu", where, q, u, size);
        return false;
    }
    b->p = q;
    if (size > b->size)
        fill_pattern(q, size, b->seed); /* the prefix rewritten with the same bytes */
    b->size = size;
    return true;
}

typedef struct grow_arg_s {
    unsigned id, rounds;
    size_t steps;
} grow_arg_t;

static void *grow_main(void *a)
{
    grow_arg_t *arg = a;
    const size_t top = 300 * KiB;
    for (unsigned round = 0; round < arg->rounds; round++) {
        blk_t b = blk_new(1, blk_seed(5, arg->id, round));
        if (b.p == NULL)
            return NULL;
        /* 1 byte up to 300 KiB: small, medium and large classes */
        while (b.size < top) {
            size_t next = grow_step(b.size);
            if (!blk_realloc(&b, next < top ? next : top, "realloc: grow"))
                return NULL;
            arg->steps++;
        }
        /* and back down to 1 byte */
        while (b.size > 1) {
            size_t next = shrink_step(b.size);
            if (!blk_realloc(&b, next ? next : 1, "realloc: shrink"))
                return NULL;
            arg->steps++;
        }
        blk_free(&b, "realloc: after shrinking");
    }
    return NULL;
}

typedef struct pingpong_arg_s {
    bqueue_t *in, *out;
    unsigned id, hops;
} pingpong_arg_t;

/* Take a block the other thread allocated or last resized, check it,
 * resize it (often to another class or the large path), pass it back. */
static void *pingpong_main(void *a)
{
    pingpong_arg_t *arg = a;
    tu_rng_t r = tu_rng_make(0x9090 + arg->id);
    for (unsigned h = 0; h < arg->hops; h++) {
        blk_t b;
        if (!bq_pop(arg->in, &b)) {
            TFAIL("ping-pong: queue closed early");
            return NULL;
        }
        blk_ok(&b, "ping-pong: received");
        size_t size = mixed_size(&r, 4096, 150, 30, 400 * KiB);
        if (tu_rng_chance(&r, 3)) {
            /* realloc(p, 0) frees (here, a remote free); realloc(NULL, n) allocates */
            if (ouro_realloc(b.p, 0) != NULL)
                TFAIL("ping-pong: ouro_realloc(p, 0) returned non-NULL");
            b.p = ouro_realloc(NULL, size);
            if (b.p == NULL) {
                TFAIL("ping-pong: ouro_realloc(NULL, %zu) failed", size);
                return NULL;
            }
            b.size = size;
            fill_pattern(b.p, size, b.seed);
        } else if (!blk_realloc(&b, size, "ping-pong: resize")) {
            return NULL;
        }
        bq_push(arg->out, b);
    }
    return NULL;
}

START_TEST(test_realloc_across_threads)
{
    reset_failures();
    ouro_stats_t base, after;
    settle(&base);

    /* two threads grow and shrink blocks at once */
    grow_arg_t g[2] = {{.id = 0, .rounds = (unsigned)tu_scale(8, 4)},
                       {.id = 1, .rounds = (unsigned)tu_scale(8, 4)}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        start(&t[i], grow_main, &g[i]);
    for (int i = 0; i < 2; i++)
        join(t[i]);
    ASSERT_NO_FAILURES();
    ck_assert_uint_gt(g[0].steps, 100);

    /* blocks resized by a thread other than the one that allocated them */
    enum { K = 32 };
    bqueue_t q[2];
    bq_init(&q[0], 2 * K + 1, 1);
    bq_init(&q[1], 2 * K + 1, 1);
    tu_rng_t r = tu_rng_make(55);
    for (unsigned i = 0; i < 2 * K; i++) {
        blk_t b = blk_new(mixed_size(&r, 4096, 150, 30, 400 * KiB), blk_seed(5, 77, i));
        ck_assert_ptr_nonnull(b.p);
        bq_push(&q[i % 2], b);
    }
    unsigned hops = (unsigned)tu_scale(4000, 1500);
    pingpong_arg_t pp[2] = {{&q[0], &q[1], 0, hops}, {&q[1], &q[0], 1, hops}};
    for (int i = 0; i < 2; i++)
        start(&t[i], pingpong_main, &pp[i]);
    for (int i = 0; i < 2; i++)
        join(t[i]);
    ASSERT_NO_FAILURES();
    unsigned drained = 0;
    for (int i = 0; i < 2; i++) {
        bq_producer_done(&q[i]);
        blk_t b;
        while (bq_pop(&q[i], &b)) {
            blk_free(&b, "ping-pong: drain");
            drained++;
        }
        bq_destroy(&q[i]);
    }
    ck_assert_uint_eq(drained, 2 * K);

    settle(&after);
    ASSERT_NO_FAILURES();
    assert_back_to(&base, &after, true);
}
END_TEST

/* ================================================================== */
/* 6. randomized stress over shared slots                               */
/* ================================================================== */

/* Blocks that travel anonymously carry their size and seed in a 16-byte
 * header; the pattern covers the rest. */
typedef struct hdr_s {
    uint64_t size;
    uint64_t seed;
} hdr_t;

#define HDR ((size_t)sizeof(hdr_t))
#define STRESS_MAX (300 * KiB)

static size_t stress_size(tu_rng_t *r)
{
    size_t s = mixed_size(r, 1024, 60, 5, STRESS_MAX);
    return s < HDR ? HDR : s;
}

static void hdr_fill(void *p, size_t size, uint64_t seed)
{
    hdr_t h = {size, seed};
    memcpy(p, &h, HDR);
    fill_pattern((char *)p + HDR, size - HDR, seed);
}

/* Check a headed block; returns its size, or 0 (failure recorded). */
static size_t hdr_check(const void *p, const char *where)
{
    hdr_t h;
    memcpy(&h, p, HDR);
    if (h.size < HDR || h.size > STRESS_MAX) {
        TFAIL("%s: block %p has a corrupt header (size %llu)", where, p, (unsigned long long)h.size);
        return 0;
    }
    if (!ouro_owns(p)) {
        TFAIL("%s: ouro_owns(%p) == 0 for a live block", where, p);
        return 0;
    }
    if (ouro_usable_size(p) < h.size) {
        TFAIL("%s: ouro_usable_size(%p) = %zu < %llu", where, p, ouro_usable_size(p),
              (unsigned long long)h.size);
        return 0;
    }
    size_t at = pattern_mismatch((const char *)p + HDR, h.size - HDR, h.seed);
    if (at != h.size - HDR) {
        TFAIL("%s: block %p of %llu bytes corrupted at offset %zu", where, p,
              (unsigned long long)h.size, at + HDR);
        return 0;
    }
    return h.size;
}

static void hdr_free(void *p, const char *where)
{
    size_t size = hdr_check(p, where);
    if (size && (((uintptr_t)p >> 4) & 1))
        ouro_free_sized(p, size);
    else
        ouro_free(p);
}

/* A new headed block by malloc, calloc or aligned_alloc. */
static void *hdr_new(tu_rng_t *r, uint64_t seed)
{
    size_t size = stress_size(r);
    unsigned k = (unsigned)(tu_rng_next(r) % 100);
    void *p;
    if (k < 15) {
        p = ouro_calloc(1, size);
        if (p && !tu_is_zero(p, size))
            TFAIL("ouro_calloc(1, %zu) = %p is not zeroed", size, p);
    } else if (k < 25) {
        size_t al = (size_t)32 << (tu_rng_next(r) % 8);
        p = ouro_aligned_alloc(al, size);
        if (p && (uintptr_t)p % al)
            TFAIL("ouro_aligned_alloc(%zu, %zu) = %p misaligned", al, size, p);
    } else {
        p = ouro_malloc(size);
    }
    if (p == NULL) {
        TFAIL("allocating %zu bytes failed: errno %d", size, errno);
        return NULL;
    }
    hdr_fill(p, size, seed);
    return p;
}

/* Resize a headed block, checking the header and the prefix kept. */
static void *hdr_realloc(void *p, tu_rng_t *r)
{
    hdr_t h;
    memcpy(&h, p, HDR);
    size_t size = stress_size(r);
    void *q = ouro_realloc(p, size);
    if (q == NULL) {
        TFAIL("ouro_realloc(%p, %zu) failed: errno %d", p, size, errno);
        return NULL;
    }
    size_t keep = (size < h.size ? size : h.size) - HDR;
    hdr_t h2;
    memcpy(&h2, q, HDR);
    size_t at = pattern_mismatch((char *)q + HDR, keep, h.seed);
    if (h2.size != h.size || h2.seed != h.seed || at != keep)
        TFAIL("realloc %llu -> %zu bytes (%p -> %p) lost the contents (offset %zu)",
              (unsigned long long)h.size, size, p, q, at + HDR);
    hdr_fill(q, size, h.seed);
    return q;
}

#define SLOTS 4096

typedef struct stress_shared_s {
    _Atomic(void *) slot[SLOTS];
    atomic_bool stop;
    _Atomic unsigned long steps;
    size_t max_threads, max_large;
} stress_shared_t;

typedef struct stress_arg_s {
    stress_shared_t *sh;
    unsigned id;
} stress_arg_t;

static void *stress_main(void *a)
{
    stress_arg_t *arg = a;
    stress_shared_t *sh = arg->sh;
    tu_rng_t r = tu_rng_make(0x5157 + arg->id);
    uint64_t made = 0;
    unsigned long steps = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        for (int inner = 0; inner < 64; inner++, steps++) {
            unsigned i = (unsigned)(tu_rng_next(&r) % SLOTS);
            void *old = atomic_exchange(&sh->slot[i], NULL);
            void *nw = NULL;
            unsigned k = (unsigned)(tu_rng_next(&r) % 100);
            if (old && k < 20) {
                if (hdr_check(old, "stress: before realloc"))
                    nw = hdr_realloc(old, &r);
            } else {
                if (old)
                    hdr_free(old, "stress: taken out");
                if (k < 90)
                    nw = hdr_new(&r, blk_seed(6, arg->id, made++));
            }
            void *other = atomic_exchange(&sh->slot[i], nw);
            if (other)
                hdr_free(other, "stress: put in meanwhile");
        }
    }
    atomic_fetch_add(&sh->steps, steps);
    return NULL;
}

/* Reads the stats while the others allocate: they stay sane. */
static void *stress_monitor(void *a)
{
    stress_shared_t *sh = a;
    FILE *devnull = fopen("/dev/null", "w");
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        ouro_stats_t st;
        ouro_stats_get(&st);
        if (st.threads > sh->max_threads)
            sh->max_threads = st.threads;
        if (st.large_count > sh->max_large)
            sh->max_large = st.large_count;
        if (st.in_use > st.reserved)
            TFAIL("stats: in_use %zu > reserved %zu", st.in_use, st.reserved);
        if (devnull)
            ouro_stats_print(devnull);
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (devnull)
        fclose(devnull);
    return NULL;
}

START_TEST(test_random_stress)
{
    reset_failures();
    ouro_stats_t base, after;
    settle(&base);

    enum { NT = 3 };
    stress_shared_t *sh = calloc(1, sizeof *sh);
    ck_assert_ptr_nonnull(sh);
    stress_arg_t args[NT];
    pthread_t t[NT], mon;
    for (unsigned i = 0; i < NT; i++) {
        args[i] = (stress_arg_t){sh, i};
        start(&t[i], stress_main, &args[i]);
    }
    start(&mon, stress_monitor, sh);
    double until = now_s() + 2.0;
    while (now_s() < until && atomic_load(&failures) == 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh->stop, true);
    for (unsigned i = 0; i < NT; i++)
        join(t[i]);
    join(mon);
    ASSERT_NO_FAILURES();
    ck_assert_uint_gt(atomic_load(&sh->steps), 1000);
    /* the monitor allocates nothing: only the workers have heaps */
    ck_assert_uint_le(sh->max_threads, base.threads + NT);
    ck_assert_uint_le(sh->max_large, base.large_count + SLOTS + 2 * NT);

    /* drain from here (remote frees, mostly into abandoned pools) */
    for (unsigned i = 0; i < SLOTS; i++) {
        void *p = atomic_exchange(&sh->slot[i], NULL);
        if (p)
            hdr_free(p, "stress: drain");
    }
    ASSERT_NO_FAILURES();
    settle(&after);
    ASSERT_NO_FAILURES();
    assert_back_to(&base, &after, false);
    free(sh);
}
END_TEST

/* ================================================================== */
/* 7. fork while other threads allocate                                 */
/* ================================================================== */

#define FORK_WORKERS 2
#define FORK_SET 64
#define FORK_SHARED 64

typedef struct fork_shared_s {
    atomic_bool stop;
    _Atomic unsigned long iters;
    _Atomic(void *) shared[FORK_SHARED]; /* blocks the workers swap (remote frees) */
} fork_shared_t;

typedef struct fork_arg_s {
    fork_shared_t *sh;
    unsigned id;
} fork_arg_t;

static void *fork_worker(void *a)
{
    fork_arg_t *arg = a;
    fork_shared_t *sh = arg->sh;
    tu_rng_t r = tu_rng_make(0xf0f0 + arg->id);
    void *set[FORK_SET] = {0};
    uint64_t made = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        unsigned i = (unsigned)(tu_rng_next(&r) % FORK_SET);
        if (set[i])
            hdr_free(set[i], "fork worker");
        set[i] = hdr_new(&r, blk_seed(7, arg->id, made++));
        if (tu_rng_chance(&r, 10)) {
            /* swap with the other worker: it frees what we allocated */
            unsigned j = (unsigned)(tu_rng_next(&r) % FORK_SHARED);
            set[i] = atomic_exchange(&sh->shared[j], set[i]);
        }
        atomic_fetch_add_explicit(&sh->iters, 1, memory_order_relaxed);
    }
    for (unsigned i = 0; i < FORK_SET; i++)
        if (set[i])
            hdr_free(set[i], "fork worker: end");
    return NULL;
}

static void *fork_child_thread(void *a)
{
    blk_t *v = a;
    for (unsigned i = 0; i < 500; i++)
        v[i] = blk_new(16 + i * 8, blk_seed(7, 1000, i));
    return NULL;
}

/* The body of a child forked while the workers ran; its exit status says
 * what failed (0 all well). */
static int fork_child_body(const blk_t *pre, unsigned npre)
{
    ouro_stats_t st;
    ouro_stats_get(&st);
    if (st.threads != 1) {
        fprintf(stderr, "fork child: threads %zu, not 1\n", st.threads);
        return 10;
    }
    /* the workers' pools, with their live blocks, passed to the abandoned stacks */
    if (st.abandoned_pools == 0) {
        fprintf(stderr, "fork child: no abandoned pools\n");
        return 11;
    }
    for (unsigned i = 0; i < npre; i++)
        if (!blk_ok(&pre[i], "fork child: block allocated before the fork"))
            return 12;
    /* allocate in every class (adopting the dead workers' pools), and large */
    enum { PER = 8 };
    static blk_t v[OURO_NUM_CLASSES * PER + 16];
    unsigned n = 0;
    for (int c = 0; c < OURO_NUM_CLASSES; c++)
        for (unsigned j = 0; j < PER; j++)
            v[n++] = blk_new(c == 0 ? 0 : ouro_class_block_size(c) - j, blk_seed(7, 500 + c, j));
    for (unsigned j = 0; j < 4; j++)
        v[n++] = blk_new(200000 + j * 100000, blk_seed(7, 600, j));
    for (unsigned i = 0; i < n; i++)
        if (!blk_ok(&v[i], "fork child: new block"))
            return 13;
    for (unsigned i = 0; i < npre; i++)
        if (!blk_ok(&pre[i], "fork child: pre-fork block after allocating"))
            return 14;
    for (unsigned i = 0; i < n; i++)
        blk_free(&v[i], "fork child: free");
    for (unsigned i = 0; i < npre; i++) {
        blk_t b = pre[i];
        blk_free(&b, "fork child: free a pre-fork block");
    }
    if (!tu_sanitized()) {
        /* a thread of the child: its blocks freed here after it exits
         * (TSan does not support threads after a multithreaded fork) */
        static blk_t tv[500];
        pthread_t t;
        if (pthread_create(&t, NULL, fork_child_thread, tv) != 0 || pthread_join(t, NULL) != 0)
            return 15;
        for (unsigned i = 0; i < 500; i++)
            blk_free(&tv[i], "fork child: thread's block");
    }
    ouro_collect(1);
    ouro_stats_get(&st);
    if (st.threads != 1) {
        fprintf(stderr, "fork child: threads %zu at the end, not 1\n", st.threads);
        return 16;
    }
    if (atomic_load(&failures) != 0)
        return 17;
    return 0;
}

/* A watchdog for the fork test: should fork() itself hang (the atfork
 * handlers run in it), the process is killed rather than hanging the suite
 * (Check's timeout does not apply with CK_FORK=no).  It makes raw system
 * calls only: a thread stuck in fork() may hold the locks of a sanitizer's
 * interceptors, and alarm() would run Check's SIGALRM handler. */
typedef struct watchdog_s {
    int fd[2];
    int seconds;
    pthread_t thread;
} watchdog_t;

static void *watchdog_main(void *a)
{
    watchdog_t *w = a;
    struct pollfd pfd = {.fd = w->fd[0], .events = POLLIN};
    struct timespec ts = {w->seconds, 0}; /* the kernel leaves the time remaining in it */
    long r;
    while ((r = syscall(SYS_ppoll, &pfd, 1, &ts, NULL, 0)) < 0 && errno == EINTR)
        ;
    if (r == 0) {
        static const char msg[] = "test_threads: watchdog: the fork test hung (in fork() or "
                                  "waiting for a child); killing the process\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        syscall(SYS_kill, syscall(SYS_getpid), SIGKILL);
    }
    return NULL;
}

static void watchdog_start(watchdog_t *w, int seconds)
{
    ck_assert_int_eq(pipe(w->fd), 0);
    w->seconds = seconds;
    start(&w->thread, watchdog_main, w);
}

static void watchdog_stop(watchdog_t *w)
{
    ck_assert_int_eq(syscall(SYS_write, w->fd[1], "x", 1), 1);
    join(w->thread);
    close(w->fd[0]);
    close(w->fd[1]);
}

START_TEST(test_fork_while_allocating)
{
    reset_failures();
    fork_shared_t *sh = calloc(1, sizeof *sh);
    ck_assert_ptr_nonnull(sh);
    /* blocks of the forking thread, live across the forks */
    enum { NPRE = 100 };
    blk_t pre[NPRE];
    tu_rng_t r = tu_rng_make(7);
    for (unsigned i = 0; i < NPRE; i++) {
        pre[i] = blk_new(mixed_size(&r, 2048, 100, 20, 300 * KiB), blk_seed(7, 2000, i));
        ck_assert_ptr_nonnull(pre[i].p);
    }
    fork_arg_t args[FORK_WORKERS];
    pthread_t t[FORK_WORKERS];
    for (unsigned i = 0; i < FORK_WORKERS; i++) {
        args[i] = (fork_arg_t){sh, i};
        start(&t[i], fork_worker, &args[i]);
    }
    while (atomic_load(&sh->iters) < 2000)
        sched_yield();

    unsigned forks = (unsigned)tu_scale(20, 8);
    int wait_s = tu_sanitized() ? 60 : 30;
    watchdog_t wd;
    watchdog_start(&wd, (int)forks * 5 + wait_s + 30);
    /* no ck_assert until the threads are stopped (CK_FORK=no would leave
     * them running): the first problem ends the loop */
    char err[256] = "";
    for (unsigned f = 0; f < forks && !err[0]; f++) {
        struct timespec ts = {0, (long)(tu_rng_next(&r) % 3000000)};
        nanosleep(&ts, NULL);
        pid_t pid = fork();
        if (pid < 0) {
            snprintf(err, sizeof err, "fork %u: fork failed: errno %d", f, errno);
            break;
        }
        if (pid == 0) {
            /* a hung child dies (Check's SIGALRM handler, inherited, would
             * kill the whole process group) */
            signal(SIGALRM, SIG_DFL);
            alarm((unsigned)wait_s);
            int rc = fork_child_body(pre, NPRE);
            if (rc != 0 && atomic_load(&failures) != 0)
                fprintf(stderr, "fork child: %s\n", first_failure);
            _exit(rc);
        }
        int status = 0;
        double until = now_s() + wait_s + 5;
        pid_t w;
        while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < until) {
            struct timespec p = {0, 1000000};
            nanosleep(&p, NULL);
        }
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(err, sizeof err, "fork %u: the child hung", f);
        } else if (w != pid) {
            snprintf(err, sizeof err, "fork %u: waitpid returned %d, errno %d", f, (int)w, errno);
        } else if (!WIFEXITED(status)) {
            snprintf(err, sizeof err, "fork %u: the child died of signal %d", f,
                     WIFSIGNALED(status) ? WTERMSIG(status) : -1);
        } else if (WEXITSTATUS(status) != 0) {
            snprintf(err, sizeof err, "fork %u: the child exited with %d (see its stderr)", f,
                     WEXITSTATUS(status));
        }
    }

    watchdog_stop(&wd);
    atomic_store(&sh->stop, true);
    for (unsigned i = 0; i < FORK_WORKERS; i++)
        join(t[i]);
    for (unsigned i = 0; i < FORK_SHARED; i++) {
        void *p = atomic_exchange(&sh->shared[i], NULL);
        if (p)
            hdr_free(p, "fork: shared slot");
    }
    for (unsigned i = 0; i < NPRE; i++)
        blk_free(&pre[i], "fork: parent's block");
    free(sh);
    ck_assert_msg(!err[0], "%s", err);
    ASSERT_NO_FAILURES();
}
END_TEST

/* ------------------------------------------------------------------ */
/* The arena layer's count of free dirty slots (claims look for those
 * first) against its bitmaps, after threads released pools and purged
 * them all at once, racing each other: a purge that counted slots another
 * purge had cleaned first, or a release or claim not counted, shows here. */

static void *purge_racer(void *arg)
{
    unsigned rounds = *(unsigned *)arg;
    enum { PER = 64, POOLS = 3 }; /* 1 KiB blocks: 64 a pool */
    static _Thread_local void *v[PER * POOLS];
    for (unsigned r = 0; r < rounds; r++) {
        for (int i = 0; i < PER * POOLS; i++)
            v[i] = ouro_malloc(1024);
        for (int i = 0; i < PER * POOLS; i++)
            ouro_free(v[i]); /* the full pools go back to their arenas, dirty */
        ouro_collect(1);     /* and are purged, while the others purge too */
    }
    return NULL;
}

START_TEST(test_arena_books_balance_after_racing_purges)
{
    ck_assert_int_eq(ouro_test_check_arenas(), 0);
    unsigned rounds = (unsigned)tu_scale(400, 40);
    enum { T = 4 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        start(&t[i], purge_racer, &rounds);
    for (int i = 0; i < T; i++)
        join(t[i]);
    ck_assert_int_eq(ouro_test_check_arenas(), 0);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"producer_consumer", test_producer_consumer_remote_free},
        {"thread_churn", test_thread_churn_reuses_memory},
        {"adoption", test_adoption_of_abandoned_pools},
        {"full_pools_remote", test_full_pools_come_back_after_remote_frees},
        {"freed_whole", test_pool_freed_whole_by_others_is_carved_afresh},
        {"remote_batches", test_remote_frees_reach_the_owner_in_batches},
        {"classes_alignments", test_all_classes_and_alignments},
        {"realloc", test_realloc_across_threads},
        {"stress", test_random_stress},
        {"fork", test_fork_while_allocating},
        {"arena_books", test_arena_books_balance_after_racing_purges},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        /* a few seconds normally; sanitizers are 5-15x slower */
        tcase_set_timeout(tc, 120);
        /* CK_EXCLUDE_TAGS=fork leaves it out: clang 14's ASan can deadlock
         * a child forked while other threads allocate, once the child starts
         * a thread (liburcu restarts call_rcu's there), its allocator lock
         * having been held at the fork (.ci/run) */
        if (cases[i].test == test_fork_while_allocating)
            tcase_set_tags(tc, "fork");
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(threads_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
