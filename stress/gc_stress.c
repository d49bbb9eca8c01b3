/*
 * gc_stress.c — threads rewire a shared graph of containers while the
 * cycle collector runs, with an oracle.
 *
 * A table container holds ROOTS counted references.  Worker threads pick
 * two table slots (locking them, in order) and: put a new node there that
 * points at what the slot held; add an edge a -> b (cycles form); move one
 * of a's referents into a slot; drop a root; or read a's children.  Every
 * slot of a node is written by one thread at a time (the node's lock), as
 * ouro_store's contract asks.  About one worker in three also reads the
 * table without locks, inside ouro_read_begin/ouro_read_end (borrowed
 * pointers, the RCU contract), checking that no node it meets is reused
 * memory.
 * Workers exit after a random number of steps and new ones replace them
 * (thread churn).  Meanwhile a collector thread runs collections of every
 * generation, and automatic collections run in the background.
 *
 * The oracle: a node's dealloc poisons it (magic) and records its death;
 * every node met through a live reference or a read section must be
 * alive; nobody dies twice (ouro also aborts on that).  At the end the
 * table goes and two full collections must free every node ever made.
 *
 * Usage: gc_stress [-t THREADS] [-d SECONDS] [-s SEED]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
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

#define NAME "gc_stress"
#define ROOTS 128
#define SLOTS 4
#define MAX_THREADS 64
#define MAGIC_LIVE 0x90de11feu
#define MAGIC_DEAD 0xdeadbeefu

typedef struct node_s {
    ouro_object_t ob;
    _Atomic uint32_t magic;
    _Atomic uint32_t nslots; /* set after ouro_new: traverse may already run */
    ouro_object_t *slot[]; /* SLOTS in a node, ROOTS in the table */
} node_t;

static _Atomic unsigned long born, died, ops;
static _Atomic int stop;

static int node_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    node_t *n = (node_t *)self;
    /* relaxed: the oracle's word; a node may be traversed while it dies */
    uint32_t m = atomic_load_explicit(&n->magic, memory_order_relaxed);
    if (m != MAGIC_LIVE && m != MAGIC_DEAD && m != 0)
        TFAIL("traverse of reused memory: magic %#x", m);
    /* relaxed: 0 until set after ouro_new, then fixed */
    uint32_t ns = atomic_load_explicit(&n->nslots, memory_order_relaxed);
    for (uint32_t i = 0; i < ns; i++) {
        ouro_object_t *r = ouro_load(&n->slot[i]);
        if (r) {
            int rc = visit(r, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void node_clear(ouro_object_t *self)
{
    node_t *n = (node_t *)self;
    uint32_t ns = atomic_load_explicit(&n->nslots, memory_order_relaxed); /* as in traverse */
    for (uint32_t i = 0; i < ns; i++)
        ouro_setref(&n->slot[i], NULL);
}

static void node_dealloc(ouro_object_t *self)
{
    node_t *n = (node_t *)self;
    /* relaxed: the oracle's counters and word */
    if (atomic_exchange_explicit(&n->magic, MAGIC_DEAD, memory_order_relaxed) != MAGIC_LIVE)
        TFAIL("node %p deallocated while not alive", (void *)n);
    node_clear(self);
    atomic_fetch_add_explicit(&died, 1, memory_order_relaxed);
}

static const ouro_type_t node_type = {.name = "stress-node",
                                      .basic_size = sizeof(node_t) + SLOTS * sizeof(ouro_object_t *),
                                      .traverse = node_traverse,
                                      .clear = node_clear,
                                      .dealloc = node_dealloc};
static const ouro_type_t table_type = {.name = "stress-table",
                                       .basic_size = sizeof(node_t) + ROOTS * sizeof(ouro_object_t *),
                                       .traverse = node_traverse,
                                       .clear = node_clear,
                                       .dealloc = node_dealloc};

static node_t *table;
static pthread_mutex_t root_lock[ROOTS], node_lock[64];

static pthread_mutex_t *lock_of(node_t *n)
{
    return &node_lock[((uintptr_t)n >> 6) % 64];
}

static node_t *node_new(void)
{
    node_t *n = (node_t *)ouro_new(&node_type);
    if (n == NULL)
        return NULL;
    atomic_store_explicit(&n->nslots, SLOTS, memory_order_relaxed); /* relaxed: see traverse */
    atomic_store_explicit(&n->magic, MAGIC_LIVE, memory_order_relaxed);
    atomic_fetch_add_explicit(&born, 1, memory_order_relaxed);
    return n;
}

static void check_alive(node_t *n, const char *where)
{
    if (n && atomic_load_explicit(&n->magic, memory_order_relaxed) != MAGIC_LIVE)
        TFAIL("%s: node %p is dead (magic %#x)", where, (void *)n,
              atomic_load_explicit(&n->magic, memory_order_relaxed));
}

/* Every referent of a node we hold locked is alive. */
static void check_children(node_t *a)
{
    check_alive(a, "a root");
    for (int k = 0; k < SLOTS; k++)
        check_alive((node_t *)ouro_load(&a->slot[k]), "a child of a live node");
}

/* Lock-free: walk a few edges from random roots inside a read section.
 * A node met this way may have died meanwhile (a borrowed pointer keeps
 * its memory, not its life: ouro_try_incref would say), but its memory is
 * never reused before ouro_read_end: it is a node, live or poisoned. */
static void read_walk(tu_rng_t *rng)
{
    ouro_read_begin();
    node_t *n = (node_t *)ouro_load(&table->slot[tu_rng_range(rng, 0, ROOTS - 1)]);
    for (int depth = 0; n && depth < 8; depth++) {
        /* relaxed: the oracle's word */
        uint32_t m = atomic_load_explicit(&n->magic, memory_order_relaxed);
        if (m != MAGIC_LIVE && m != MAGIC_DEAD)
            TFAIL("a node read without locks was reused memory (magic %#x)", m);
        n = (node_t *)ouro_load(&n->slot[tu_rng_range(rng, 0, SLOTS - 1)]);
    }
    ouro_read_end();
}

typedef struct worker_s {
    pthread_t th;
    uint64_t seed;
    bool running;
    _Atomic bool done;
} worker_t;

static void *worker(void *arg)
{
    worker_t *me = arg;
    tu_rng_t rng = tu_rng_make(me->seed);
    ouro_thread_register();
    bool reader = tu_rng_chance(&rng, 33);
    unsigned long steps = tu_rng_range(&rng, 1000, 200000);
    for (unsigned long s = 0; s < steps && !atomic_load_explicit(&stop, memory_order_relaxed); s++) {
        int i = (int)tu_rng_range(&rng, 0, ROOTS - 1), j = (int)tu_rng_range(&rng, 0, ROOTS - 1);
        if (i > j) {
            int t = i;
            i = j;
            j = t;
        }
        pthread_mutex_lock(&root_lock[i]);
        if (j != i)
            pthread_mutex_lock(&root_lock[j]);
        node_t *a = (node_t *)ouro_load(&table->slot[i]);
        node_t *b = (node_t *)ouro_load(&table->slot[j]);
        switch (tu_rng_range(&rng, 0, 5)) {
        case 0: { /* a new node in slot i, pointing at what was there */
            node_t *n = node_new();
            if (n == NULL)
                break;
            if (a) {
                ouro_incref(&a->ob);
                ouro_store(&n->slot[0], &a->ob);
            }
            ouro_setref(&table->slot[i], &n->ob);
            break;
        }
        case 1: /* an edge a -> b: cycles */
        case 2:
            if (a && b) {
                pthread_mutex_lock(lock_of(a));
                check_children(a);
                ouro_incref(&b->ob);
                ouro_setref(&a->slot[tu_rng_range(&rng, 0, SLOTS - 1)], &b->ob);
                pthread_mutex_unlock(lock_of(a));
            }
            break;
        case 3: /* slot i takes one of a's referents; a loses it */
            if (a) {
                pthread_mutex_lock(lock_of(a));
                check_children(a);
                ouro_object_t *r = ouro_store(&a->slot[tu_rng_range(&rng, 0, SLOTS - 1)], NULL);
                pthread_mutex_unlock(lock_of(a));
                if (r)
                    ouro_setref(&table->slot[i], r);
            }
            break;
        case 4: /* drop the root */
            ouro_setref(&table->slot[i], NULL);
            break;
        default:
            if (a) {
                pthread_mutex_lock(lock_of(a));
                check_children(a);
                pthread_mutex_unlock(lock_of(a));
            }
            break;
        }
        if (j != i)
            pthread_mutex_unlock(&root_lock[j]);
        pthread_mutex_unlock(&root_lock[i]);
        if (reader)
            read_walk(&rng);
        ouro_quiescent();
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    atomic_store(&me->done, true);
    return NULL;
}

static void *collector(void *arg)
{
    (void)arg;
    ouro_thread_register();
    for (long n = 0; !atomic_load_explicit(&stop, memory_order_relaxed); n++) {
        if (ouro_gc_collect((int)(n % 3)) < 0)
            TFAIL("ouro_gc_collect failed");
        tu_sleep_us(500);
    }
    return NULL;
}

static void start_worker(worker_t *w, uint64_t seed)
{
    w->seed = seed;
    atomic_store(&w->done, false);
    w->running = pthread_create(&w->th, NULL, worker, w) == 0;
    if (!w->running)
        TFAIL("pthread_create failed");
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
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int opt;
    while ((opt = getopt(argc, argv, "t:d:s:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        default: usage(argv[0]);
        }
    }
    if (threads < 1 || threads > MAX_THREADS || seconds <= 0)
        usage(argv[0]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* the core count of markers (two at least) as a number set, whatever
     * else runs: by default a collection would leave the running threads
     * their cores, and the stress is there to race parallel marking
     * (OURO_GC_MARKERS sets another number) */
    if (!getenv("OURO_GC_MARKERS")) {
        int m = ouro_gc_get_markers();
        ouro_gc_set_markers(m < 2 ? 2 : m);
    }
    for (int i = 0; i < ROOTS; i++)
        pthread_mutex_init(&root_lock[i], NULL);
    for (int i = 0; i < 64; i++)
        pthread_mutex_init(&node_lock[i], NULL);
    table = (node_t *)ouro_new(&table_type);
    if (table == NULL) {
        printf("stress " NAME ": FAILED cannot make the table\n");
        return 1;
    }
    atomic_store_explicit(&table->nslots, ROOTS, memory_order_relaxed); /* as node_new */
    atomic_store_explicit(&table->magic, MAGIC_LIVE, memory_order_relaxed);
    atomic_fetch_add_explicit(&born, 1, memory_order_relaxed);

    static worker_t w[MAX_THREADS];
    /* now, not only in the last line: a run that ouro aborts (a count
     * dropped twice, say) prints no last line */
    fprintf(stderr, "stress " NAME ": seed=%#llx threads=%d\n", (unsigned long long)seed, threads);
    tu_rng_t rng = tu_rng_make(seed);
    pthread_t ct;
    pthread_create(&ct, NULL, collector, NULL);
    for (int i = 0; i < threads; i++)
        start_worker(&w[i], tu_rng_next(&rng));
    double t0 = tu_now_s();
    unsigned long churn = 0;
    while (tu_now_s() - t0 < seconds && atomic_load(&failures) == 0) {
        for (int i = 0; i < threads; i++)
            if (w[i].running && atomic_load(&w[i].done)) {
                pthread_join(w[i].th, NULL);
                start_worker(&w[i], tu_rng_next(&rng));
                churn++;
            }
        tu_sleep_us(2000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        if (w[i].running)
            pthread_join(w[i].th, NULL);
    pthread_join(ct, NULL);
    double elapsed = tu_now_s() - t0;
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    unsigned long collections = st.gen[0].collections + st.gen[1].collections + st.gen[2].collections;

    /* everything is unreachable once the table goes: two full collections,
     * then our quiescent state frees what was queued to us */
    ouro_decref(&table->ob);
    ouro_gc_collect(2);
    ouro_gc_collect(2);
    ouro_quiescent();
    ouro_barrier();
    unsigned long b = atomic_load(&born), d = atomic_load(&died);
    if (atomic_load(&failures) == 0 && b != d)
        TFAIL("%lu of %lu nodes were not freed by two full collections", b - d, b);
    if (atomic_load(&failures)) {
        printf("stress " NAME ": FAILED seed=%#llx threads=%d: %lu failure(s); first: %s\n",
               (unsigned long long)seed, threads, atomic_load(&failures), first_failure);
        return 1;
    }
    printf("stress " NAME ": OK threads=%d seconds=%.1f ops=%lu nodes=%lu collections=%lu thread_churn=%lu "
           "markers=%d seed=%#llx\n",
           threads, elapsed, atomic_load(&ops), b, collections, churn, ouro_gc_get_markers(),
           (unsigned long long)seed);
    return 0;
}
