/*
 * object_stress.c — a long randomized refcount storm with an oracle.
 *
 * Test objects carry an id and a magic word (and a small pattern).  The
 * type's dealloc records the death of its id (an atomic counter), checks
 * that the test holds no reference it tracks (refs[id], +1 before/at each
 * reference taken, -1 before each dropped), and poisons the object.
 *
 * T worker threads share an array of slots (each slot holds one reference)
 * and a mailbox array for handing references from thread to thread.  Each
 * step is one of: take a reference from a random slot with ouro_try_incref
 * inside ouro_read_begin/ouro_read_end (objects are ouro_share()'d before
 * they are published); make a new object and exchange it into a slot,
 * dropping the old one; hand a held reference to the mailbox, or take one
 * from it; duplicate a held reference (ouro_incref); drop one.  Offline
 * workers call ouro_quiescent every few steps; about one worker in four
 * goes online and calls it after every step.  Every use of an object
 * checks it is alive (magic, pattern, no death recorded, a tracked
 * reference held).  Workers exit after a random number of steps (handing
 * or dropping what they hold) and are replaced by new threads.
 *
 * At the end the slots and mailbox are cleared, the workers joined,
 * ouro_barrier() called: every object born must have died exactly once.
 *
 * Usage: object_stress [-t THREADS] [-d SECONDS] [-s SEED]
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

#define NAME "object"
#define NSLOTS 1024
#define NMAIL 64
#define HELD_MAX 16
#define MAX_THREADS 256
#define MAX_IDS (1u << 25)
#define MAGIC_LIVE 0x4f55524f4c495645ull /* "OUROLIVE" */
#define MAGIC_DEAD 0xdeadbeefdeadbeefull

/* failures: the recorder of tests/testutil.h, without source locations */
#define fail(...) TFAIL_PLAIN(__VA_ARGS__)
#define now_s tu_now_s
#define sleep_us tu_sleep_us

/* ---- the oracle ---- */
typedef struct tobj_s {
    ouro_object_t hdr;
    uint32_t id;
    uint32_t spare;
    uint64_t magic;
    uint64_t data[2]; /* pattern of seed id + 1 */
} tobj_t;

static void tobj_dealloc(ouro_object_t *self);
static const ouro_type_t tobj_type = {
    .name = "stress-object", .basic_size = sizeof(tobj_t), .dealloc = tobj_dealloc};

static _Atomic uint32_t next_id;
static _Atomic int ids_exhausted;
static atomic_uchar *deaths;  /* [MAX_IDS] deallocs run per id */
static _Atomic int32_t *refs; /* [MAX_IDS] references the test tracks per id */

static void tobj_dealloc(ouro_object_t *self)
{
    tobj_t *t = (tobj_t *)self;
    uint32_t id = t->id;
    if (t->magic != MAGIC_LIVE) {
        fail("dealloc of %p (id %u): magic %#llx: freed twice or corrupt", (void *)t, id,
             (unsigned long long)t->magic);
        return;
    }
    if (id >= atomic_load(&next_id)) {
        fail("dealloc of %p: id %u never born", (void *)t, id);
        return;
    }
    if (!check_pattern(t->data, sizeof t->data, (uint64_t)id + 1))
        fail("dealloc of object %u: payload corrupt", id);
    int32_t held = atomic_load(&refs[id]);
    if (held != 0)
        fail("object %u freed while the test holds %d reference(s) to it", id, (int)held);
    unsigned d = atomic_fetch_add(&deaths[id], 1);
    if (d != 0)
        fail("object %u freed %u times", id, d + 1);
    t->magic = MAGIC_DEAD;
    memset(t->data, 0xdb, sizeof t->data);
}

static bool check_live(const tobj_t *t, const char *where)
{
    uint64_t magic = t->magic;
    uint32_t id = t->id;
    if (magic != MAGIC_LIVE) {
        fail("%s: object %p (id %u) has magic %#llx: used after free", where, (const void *)t, id,
             (unsigned long long)magic);
        return false;
    }
    if (id >= atomic_load(&next_id)) {
        fail("%s: object %p has id %u, never born", where, (const void *)t, id);
        return false;
    }
    if (!check_pattern(t->data, sizeof t->data, (uint64_t)id + 1)) {
        fail("%s: object %u: payload corrupt", where, id);
        return false;
    }
    if (atomic_load(&deaths[id]) != 0) {
        fail("%s: object %u used after its dealloc ran", where, id);
        return false;
    }
    if (atomic_load(&refs[id]) <= 0) {
        fail("%s: object %u used while the test tracks no reference", where, id);
        return false;
    }
    return true;
}

static tobj_t *tobj_new(void)
{
    uint32_t id = atomic_fetch_add(&next_id, 1);
    if (id >= MAX_IDS - 4096) {
        atomic_fetch_sub(&next_id, 1);
        atomic_store(&ids_exhausted, 1);
        return NULL;
    }
    tobj_t *t = (tobj_t *)ouro_new(&tobj_type);
    if (t == NULL) {
        fail("ouro_new failed: %s (id %u will never die)", strerror(errno), id);
        return NULL;
    }
    if (t->id != 0 || t->magic != 0 || !tu_is_zero(t->data, sizeof t->data))
        fail("ouro_new returned %p not zeroed beyond the header (magic %#llx)", (void *)t,
             (unsigned long long)t->magic);
    if (ouro_refcount(&t->hdr) != 1)
        fail("new object: refcount %zu, not 1", ouro_refcount(&t->hdr));
    t->id = id;
    t->magic = MAGIC_LIVE;
    fill_pattern(t->data, sizeof t->data, (uint64_t)id + 1);
    atomic_store(&refs[id], 1);
    return t;
}

static void ref_inc(tobj_t *t)
{
    atomic_fetch_add(&refs[t->id], 1);
    ouro_incref(&t->hdr);
}

static void ref_dec(tobj_t *t)
{
    check_live(t, "drop");
    int32_t before = atomic_fetch_sub(&refs[t->id], 1);
    if (before <= 0)
        fail("object %u: the test dropped more references than it took", t->id);
    ouro_decref(&t->hdr);
}

/* ---- shared state ---- */
static tobj_t *_Atomic slots[NSLOTS];
static tobj_t *_Atomic mailbox[NMAIL];
static _Atomic int stop;
static _Atomic unsigned long total_ops, threads_started, n_try_ok, n_try_fail, n_new, n_hand;

typedef struct worker_s {
    pthread_t th;
    _Atomic int done;
    bool running;
    uint64_t seed;
} worker_t;

typedef struct local_s {
    tobj_t *held[HELD_MAX];
    int n;
    tu_rng_t rng;
} local_t;

static void held_push(local_t *l, tobj_t *t)
{
    if (l->n == HELD_MAX) {
        int i = (int)tu_rng_range(&l->rng, 0, HELD_MAX - 1);
        ref_dec(l->held[i]);
        l->held[i] = t;
    } else {
        l->held[l->n++] = t;
    }
}

static tobj_t *held_pop(local_t *l)
{
    if (l->n == 0)
        return NULL;
    int i = (int)tu_rng_range(&l->rng, 0, (uint64_t)l->n - 1);
    tobj_t *t = l->held[i];
    l->held[i] = l->held[--l->n];
    return t;
}

static void step(local_t *l)
{
    unsigned r = (unsigned)tu_rng_range(&l->rng, 0, 99);
    if (r < 35) {
        /* lock-free read of a slot */
        tobj_t *got = NULL;
        ouro_read_begin();
        tobj_t *t = atomic_load(&slots[tu_rng_range(&l->rng, 0, NSLOTS - 1)]);
        if (t && ouro_try_incref(&t->hdr)) {
            atomic_fetch_add(&refs[t->id], 1);
            check_live(t, "try_incref success");
            got = t;
        } else if (t) {
            atomic_fetch_add_explicit(&n_try_fail, 1, memory_order_relaxed);
        }
        ouro_read_end();
        if (got) {
            atomic_fetch_add_explicit(&n_try_ok, 1, memory_order_relaxed);
            check_live(got, "after the read section");
            held_push(l, got);
        }
    } else if (r < 55) {
        /* replace a slot with a new object (or, rarely, empty it) */
        tobj_t *t = NULL;
        if (!tu_rng_chance(&l->rng, 3)) {
            t = tobj_new();
            if (t == NULL)
                return;
            atomic_fetch_add_explicit(&n_new, 1, memory_order_relaxed);
            ouro_share(&t->hdr);
            if (tu_rng_chance(&l->rng, 20)) /* keep one more for ourselves */
                ref_inc(t), held_push(l, t);
        }
        tobj_t *old = atomic_exchange(&slots[tu_rng_range(&l->rng, 0, NSLOTS - 1)], t);
        if (old)
            ref_dec(old);
    } else if (r < 65) {
        /* hand a reference over */
        tobj_t *t = held_pop(l);
        if (t) {
            check_live(t, "hand over");
            atomic_fetch_add_explicit(&n_hand, 1, memory_order_relaxed);
            tobj_t *back = atomic_exchange(&mailbox[tu_rng_range(&l->rng, 0, NMAIL - 1)], t);
            if (back) {
                check_live(back, "mailbox swap");
                held_push(l, back);
            }
        }
    } else if (r < 75) {
        /* take a reference from the mailbox */
        tobj_t *t = atomic_exchange(&mailbox[tu_rng_range(&l->rng, 0, NMAIL - 1)], NULL);
        if (t) {
            check_live(t, "taken from mailbox");
            held_push(l, t);
        }
    } else if (r < 85) {
        /* duplicate a held reference */
        if (l->n > 0 && l->n < HELD_MAX) {
            tobj_t *t = l->held[tu_rng_range(&l->rng, 0, (uint64_t)l->n - 1)];
            check_live(t, "incref");
            ref_inc(t);
            l->held[l->n++] = t;
        }
    } else {
        tobj_t *t = held_pop(l);
        if (t)
            ref_dec(t);
    }
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    local_t l;
    memset(&l, 0, sizeof l);
    l.rng = tu_rng_make(w->seed);
    bool online = tu_rng_chance(&l.rng, 25);
    if (tu_rng_chance(&l.rng, 50) || online)
        ouro_thread_register();
    if (online)
        ouro_thread_online();
    unsigned long steps = tu_rng_range(&l.rng, 50, 20000), i;
    for (i = 0; i < steps; i++) {
        if (atomic_load_explicit(&stop, memory_order_relaxed) ||
            atomic_load_explicit(&failures, memory_order_relaxed) ||
            atomic_load_explicit(&ids_exhausted, memory_order_relaxed))
            break;
        step(&l);
        if (online || i % 64 == 63)
            ouro_quiescent();
    }
    /* hand over or drop what we hold */
    while (l.n > 0) {
        tobj_t *t = held_pop(&l);
        if (tu_rng_chance(&l.rng, 50)) {
            tobj_t *back = atomic_exchange(&mailbox[tu_rng_range(&l.rng, 0, NMAIL - 1)], t);
            if (back)
                ref_dec(back);
        } else {
            ref_dec(t);
        }
    }
    if (online)
        ouro_thread_offline();
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
    deaths = calloc(MAX_IDS, sizeof *deaths);
    refs = calloc(MAX_IDS, sizeof *refs);
    if (!deaths || !refs) {
        printf("stress " NAME ": FAILED cannot allocate the oracle's arrays\n");
        return 1;
    }

    ouro_object_stats_t before, after;
    ouro_object_stats_get(&before);
    static worker_t w[MAX_THREADS];
    tu_rng_t rng = tu_rng_make(seed);
    for (int i = 0; i < threads; i++)
        start_worker(&w[i], tu_rng_next(&rng));
    double t0 = now_s();
    while (now_s() - t0 < seconds && atomic_load(&failures) == 0 &&
           atomic_load(&ids_exhausted) == 0) {
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

    /* clear the slots and the mailbox */
    for (int i = 0; i < NSLOTS; i++) {
        tobj_t *t = atomic_exchange(&slots[i], NULL);
        if (t)
            ref_dec(t);
    }
    for (int i = 0; i < NMAIL; i++) {
        tobj_t *t = atomic_exchange(&mailbox[i], NULL);
        if (t)
            ref_dec(t);
    }
    ouro_quiescent();
    ouro_barrier();

    uint32_t n = atomic_load(&next_id), bad = 0, first = 0;
    unsigned first_d = 0;
    for (uint32_t i = 0; i < n; i++) {
        unsigned d = atomic_load(&deaths[i]);
        if (d != 1 && bad++ == 0) {
            first = i;
            first_d = d;
        }
        if (atomic_load(&refs[i]) != 0 && atomic_load(&failures) == 0)
            fail("object %u: the test still tracks %d reference(s) at the end", i,
                 (int)atomic_load(&refs[i]));
    }
    if (bad)
        fail("%u of %u objects did not die exactly once (first: id %u, %u deaths)", bad, n, first,
             first_d);
    ouro_object_stats_get(&after);
    if (atomic_load(&failures) == 0 &&
        (after.created - before.created != n || after.freed - before.freed != n))
        fail("object stats: created %zu freed %zu during the run, objects born %u",
             after.created - before.created, after.freed - before.freed, n);

    unsigned long nf = atomic_load(&failures);
    if (nf) {
        printf("stress " NAME ": FAILED seed=%#llx threads=%d: %lu failure(s); first: %s\n",
               (unsigned long long)seed, threads, nf, first_failure);
        return 1;
    }
    if (getenv("STRESS_VERBOSE"))
        fprintf(stderr,
                "object: threads started %lu, objects %u, try_incref ok %lu failed %lu, "
                "handed %lu%s\n",
                atomic_load(&threads_started), n, atomic_load(&n_try_ok),
                atomic_load(&n_try_fail), atomic_load(&n_hand),
                atomic_load(&ids_exhausted) ? " (ran out of ids: stopped early)" : "");
    printf("stress " NAME ": OK threads=%d seconds=%.1f ops=%lu\n", threads, elapsed,
           atomic_load(&total_ops));
    return 0;
}
