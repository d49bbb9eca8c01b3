/*
 * alloc_stress.c — a long randomized multithreaded allocator stress with an
 * oracle.
 *
 * T worker threads share an array of slots (atomic pointers to records).
 * Each step picks a random slot and exchanges in a new block: a random size
 * (70% 1..512, 25% 513..16384, 5% up to 300000) from a random entry point
 * (ouro_malloc; ouro_calloc, checked zero; ouro_aligned_alloc with a random
 * power-of-two alignment up to 4096, checked; ouro_realloc of the block
 * taken out of the slot, checked to keep its prefix), filled with a pattern
 * derived from (slot, generation, seed).  Every block taken out is checked
 * (pattern intact, ouro_usable_size >= its size, alignment kept) before it
 * is freed (ouro_free, or ouro_free_sized with its size).  The records
 * themselves are ouro_malloc'd too, with a check word.
 *
 * Thread churn: each worker exits after a random number of steps and is
 * replaced by a new thread, so pools are abandoned and adopted all along.
 * At the end the slots are drained, ouro_collect(1) runs, and the blocks in
 * use (sum of classes[].blocks_used plus large_count) must be back at their
 * start value.
 *
 * Usage: alloc_stress [-t THREADS] [-d SECONDS] [-s SEED]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"

#define NAME "alloc"
#define NSLOTS 4096
#define MAX_THREADS 256
#define REC_MAGIC 0x5245434f52444f4bull

/* failures: the recorder of tests/testutil.h, without source locations */
#define fail(...) TFAIL_PLAIN(__VA_ARGS__)
#define now_s tu_now_s
#define sleep_us tu_sleep_us

/* ---- the records ---- */
typedef struct rec_s {
    uint64_t check;   /* REC_MAGIC ^ mix(p, size, seed) */
    void *p;
    size_t size;
    size_t align;     /* 0: default (16) */
    uint64_t seed;
} rec_t;

static uint64_t rec_check(const rec_t *r)
{
    return REC_MAGIC ^ tu_mix64((uint64_t)(uintptr_t)r->p ^ tu_mix64(r->size ^ (r->seed << 1)) ^
                                (r->align << 7));
}

static rec_t *_Atomic slots[NSLOTS];
static _Atomic uint64_t slot_gen[NSLOTS];
static uint64_t global_seed;
static _Atomic int stop;
static _Atomic unsigned long total_ops, total_bytes, threads_started;
static _Atomic unsigned long n_malloc, n_calloc, n_aligned, n_realloc, n_large;

static uint64_t block_seed(unsigned slot, uint64_t gen)
{
    return tu_mix64(global_seed ^ ((uint64_t)slot << 40) ^ tu_mix64(gen));
}

static size_t random_size(tu_rng_t *rng)
{
    unsigned r = (unsigned)tu_rng_range(rng, 0, 99);
    if (r < 70)
        return (size_t)tu_rng_range(rng, 1, 512);
    if (r < 95)
        return (size_t)tu_rng_range(rng, 513, 16384);
    return (size_t)tu_rng_range(rng, 16385, 300000);
}

/* Check a record and its block; returns false (after fail()) if broken. */
static bool check_rec(const rec_t *r, const char *what)
{
    if (r->check != rec_check(r)) {
        fail("%s: record %p corrupt (check %#llx)", what, (void *)r, (unsigned long long)r->check);
        return false;
    }
    size_t us = ouro_usable_size(r->p);
    if (us < r->size) {
        fail("%s: block %p of %zu bytes has usable size %zu", what, r->p, r->size, us);
        return false;
    }
    size_t align = r->align ? r->align : 16;
    if ((uintptr_t)r->p % align) {
        fail("%s: block %p not aligned to %zu", what, r->p, align);
        return false;
    }
    size_t bad = pattern_mismatch(r->p, r->size, r->seed);
    if (bad != r->size) {
        fail("%s: block %p of %zu bytes (align %zu): pattern broken at offset %zu", what, r->p,
             r->size, align, bad);
        return false;
    }
    return true;
}

static void free_rec(rec_t *r, tu_rng_t *rng)
{
    if (tu_rng_chance(rng, 20))
        ouro_free_sized(r->p, r->size);
    else
        ouro_free(r->p);
    r->check = 0;
    ouro_free(r);
}

static rec_t *new_rec(void)
{
    rec_t *r = ouro_malloc(sizeof *r);
    if (r == NULL)
        fail("ouro_malloc(%zu) for a record failed: %s", sizeof *r, strerror(errno));
    return r;
}

/* One step on a random slot. */
static void step(tu_rng_t *rng)
{
    unsigned s = (unsigned)tu_rng_range(rng, 0, NSLOTS - 1);
    uint64_t gen = atomic_fetch_add_explicit(&slot_gen[s], 1, memory_order_relaxed);
    uint64_t seed = block_seed(s, gen);
    size_t size = random_size(rng);
    unsigned how = (unsigned)tu_rng_range(rng, 0, 3);
    rec_t *r;
    if (size > 128 * 1024)
        atomic_fetch_add_explicit(&n_large, 1, memory_order_relaxed);

    if (how == 3) {
        /* realloc the block taken out of the slot */
        atomic_fetch_add_explicit(&n_realloc, 1, memory_order_relaxed);
        r = atomic_exchange(&slots[s], NULL);
        if (r == NULL) {
            r = new_rec();
            if (!r)
                return;
            r->p = NULL;
            r->size = 0;
            r->align = 0;
        } else if (!check_rec(r, "realloc source")) {
            return;
        }
        size_t keep = r->size < size ? r->size : size;
        uint64_t old_seed = r->seed;
        size_t old_align = r->align;
        void *p = ouro_realloc(r->p, size);
        if (p == NULL) {
            fail("ouro_realloc(%p, %zu) failed: %s", r->p, size, strerror(errno));
            return;
        }
        if (keep && !check_pattern(p, keep, old_seed)) {
            fail("ouro_realloc(%zu -> %zu): prefix of %zu bytes not kept (at %zu)", r->size, size,
                 keep, pattern_mismatch(p, keep, old_seed));
            return;
        }
        (void)old_align;
        r->p = p;
        r->size = size;
        r->align = 0; /* realloc guarantees only the default alignment */
    } else {
        void *p;
        size_t align = 0;
        if (how == 0) {
            atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
            p = ouro_malloc(size);
        } else if (how == 1) {
            atomic_fetch_add_explicit(&n_calloc, 1, memory_order_relaxed);
            size_t n = size, m = 1;
            if (size % 8 == 0 && tu_rng_chance(rng, 50)) {
                n = size / 8;
                m = 8;
            }
            p = ouro_calloc(n, m);
            if (p && !tu_is_zero(p, size)) {
                fail("ouro_calloc(%zu, %zu) = %p not zeroed", n, m, p);
                ouro_free(p);
                return;
            }
        } else {
            atomic_fetch_add_explicit(&n_aligned, 1, memory_order_relaxed);
            align = (size_t)1 << tu_rng_range(rng, 0, 12);
            p = ouro_aligned_alloc(align, size);
            if (p && (uintptr_t)p % align) {
                fail("ouro_aligned_alloc(%zu, %zu) = %p misaligned", align, size, p);
                return;
            }
            if (align < 16)
                align = 0;
        }
        if (p == NULL) {
            fail("allocation of %zu bytes (entry %u) failed: %s", size, how, strerror(errno));
            return;
        }
        r = new_rec();
        if (!r)
            return;
        r->p = p;
        r->size = size;
        r->align = align;
    }
    if (ouro_usable_size(r->p) < size) {
        fail("new block %p of %zu bytes has usable size %zu", r->p, size, ouro_usable_size(r->p));
        return;
    }
    fill_pattern(r->p, size, seed);
    r->seed = seed;
    r->check = rec_check(r);
    atomic_fetch_add_explicit(&total_bytes, size, memory_order_relaxed);

    rec_t *old = atomic_exchange(&slots[s], r);
    if (old) {
        if (tu_rng_chance(rng, 5) && !ouro_owns(old->p)) {
            fail("ouro_owns(%p) is false for a live block", old->p);
            return;
        }
        if (check_rec(old, "block taken out"))
            free_rec(old, rng);
    }
}

/* ---- workers with churn ---- */
typedef struct worker_s {
    pthread_t th;
    _Atomic int done;
    bool running;
    uint64_t seed;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    tu_rng_t rng = tu_rng_make(w->seed);
    unsigned long steps = tu_rng_range(&rng, 20, 3000), i;
    for (i = 0; i < steps; i++) {
        if (atomic_load_explicit(&stop, memory_order_relaxed) ||
            atomic_load_explicit(&failures, memory_order_relaxed))
            break;
        step(&rng);
    }
    if (tu_rng_chance(&rng, 10))
        ouro_collect(tu_rng_chance(&rng, 50));
    atomic_fetch_add_explicit(&total_ops, i, memory_order_relaxed);
    atomic_store(&w->done, 1);
    return NULL;
}

static void start_worker(worker_t *w, uint64_t seed)
{
    atomic_store(&w->done, 0);
    w->seed = seed;
    int e = pthread_create(&w->th, NULL, worker, w);
    if (e) {
        fail("pthread_create: %s", strerror(e));
        w->running = false;
        return;
    }
    w->running = true;
    atomic_fetch_add(&threads_started, 1);
}

static size_t blocks_in_use(void)
{
    ouro_stats_t st;
    ouro_stats_get(&st);
    size_t n = st.large_count;
    for (int c = 0; c < OURO_NUM_CLASSES; c++)
        n += st.classes[c].blocks_used;
    return n;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-t THREADS] [-d SECONDS] [-s SEED]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    int threads = 4;
    double seconds = 10;
    global_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int opt;
    while ((opt = getopt(argc, argv, "t:d:s:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 's': global_seed = strtoull(optarg, NULL, 0); break;
        default: usage(argv[0]);
        }
    }
    if (threads < 1 || threads > MAX_THREADS || seconds <= 0)
        usage(argv[0]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    ouro_collect(1);
    size_t start_used = blocks_in_use();
    static worker_t w[MAX_THREADS];
    tu_rng_t rng = tu_rng_make(global_seed);
    for (int i = 0; i < threads; i++)
        start_worker(&w[i], tu_rng_next(&rng));
    double t0 = now_s();
    while (now_s() - t0 < seconds && atomic_load(&failures) == 0) {
        for (int i = 0; i < threads; i++) {
            if (w[i].running && atomic_load(&w[i].done)) {
                pthread_join(w[i].th, NULL);
                w[i].running = false;
                start_worker(&w[i], tu_rng_next(&rng));
            }
        }
        sleep_us(1000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        if (w[i].running)
            pthread_join(w[i].th, NULL);
    double elapsed = now_s() - t0;

    if (atomic_load(&failures) == 0) {
        for (unsigned s = 0; s < NSLOTS; s++) {
            rec_t *r = atomic_exchange(&slots[s], NULL);
            if (r && check_rec(r, "drain"))
                free_rec(r, &rng);
        }
        ouro_collect(1);
        size_t end_used = blocks_in_use();
        if (end_used != start_used)
            fail("blocks in use after drain and ouro_collect(1): %zu, at start %zu", end_used,
                 start_used);
    }
    unsigned long nf = atomic_load(&failures);
    if (nf) {
        printf("stress " NAME ": FAILED seed=%#llx threads=%d: %lu failure(s); first: %s\n",
               (unsigned long long)global_seed, threads, nf, first_failure);
        return 1;
    }
    if (getenv("STRESS_VERBOSE"))
        fprintf(stderr,
                "alloc: threads started %lu, malloc %lu calloc %lu aligned %lu realloc %lu "
                "large %lu, %.1f MiB written\n",
                atomic_load(&threads_started), atomic_load(&n_malloc), atomic_load(&n_calloc),
                atomic_load(&n_aligned), atomic_load(&n_realloc), atomic_load(&n_large),
                (double)atomic_load(&total_bytes) / 1048576.0);
    printf("stress " NAME ": OK threads=%d seconds=%.1f ops=%lu\n", threads, elapsed,
           atomic_load(&total_ops));
    return 0;
}
