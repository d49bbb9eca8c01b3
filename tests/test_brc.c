/*
 * test_brc.c — the object layer under several threads: biased reference
 * counts (owner counts in `local`, others in the atomic `shared` count,
 * objects queued to their owner when a non-owner's decrement would take
 * the shared count below zero, counts merged at the owner's quiescent
 * state or exit), lock-free readers with ouro_try_incref, weak references,
 * and the deferred reuse of freed objects' memory (RCU, QSBR flavour).
 *
 * The oracle.  Every test object carries an id and a magic word.  Its
 * birth is recorded when it is made; the type's dealloc records its death
 * (deaths[id]++), checks the magic and the payload's pattern are intact and
 * that the test holds no reference to it any more (refs[id] == 0, a count
 * the test keeps next to the library's: +1 before each incref, -1 before
 * each decref), then poisons the payload.  Every holder checks the object
 * is intact (magic, pattern, not dead) each time it uses it.  At the end of
 * each test, with every thread joined and ouro_barrier() called, every
 * object born must have died exactly once.
 *
 * Assertions in worker threads are recorded (TFAIL) and asserted on the
 * test's own thread after the join: Check's ck_assert must run there (in
 * CK_NOFORK mode, which TSan builds use, it longjmps).  No test forks.
 *
 * Set OURO_TEST_VERBOSE=1 to get one line of figures per test on stderr.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"


static bool verbose(void)
{
    const char *s = getenv("OURO_TEST_VERBOSE");
    return s && *s && *s != '0';
}

#define now_s tu_now_s

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* the oracle: test objects with an id, a magic word and a pattern      */
/* ------------------------------------------------------------------ */

#define MAX_IDS (1u << 23)
#define MAGIC_LIVE 0x4f55524f4c495645ull /* "OUROLIVE" */
#define MAGIC_DEAD 0xdeadbeefdeadbeefull
#define POISON_BYTE 0xdb

typedef struct tobj_s {
    ouro_object_t hdr;
    uint32_t id;
    uint32_t spare;
    uint64_t magic;
    uint64_t data[4]; /* the pattern of seed id + 1 */
} tobj_t;

static void tobj_dealloc(ouro_object_t *self);

static const ouro_type_t tobj_type = {
    .name = "brc-test", .basic_size = sizeof(tobj_t), .dealloc = tobj_dealloc};
/* the same, born readable by ouro_try_incref (no ouro_share needed) */
static const ouro_type_t tobj_readable_type = {.name = "brc-test-readable",
                                               .basic_size = sizeof(tobj_t),
                                               .dealloc = tobj_dealloc,
                                               .flags = OURO_TYPE_SHARED_READS};

/* which thread ran a dealloc: each test's threads set their role */
enum { ROLE_NONE, ROLE_MAIN, ROLE_WORKER, ROLE_OWNER, ROLE_HOLDER, ROLE_PRODUCER, ROLE_CONSUMER,
       ROLE_READER, ROLE_WRITER, ROLE_GETTER, ROLE_DROPPER };
static _Thread_local unsigned char tl_role;
static _Thread_local unsigned tl_thread_no; /* unique per thread, 0 = not yet numbered */
static _Atomic unsigned thread_numbers;

static unsigned thread_no(void)
{
    if (tl_thread_no == 0)
        tl_thread_no = atomic_fetch_add(&thread_numbers, 1) + 1;
    return tl_thread_no;
}

static _Atomic uint32_t next_id;                   /* ids born in this test: [0, next_id) */
static atomic_uchar deaths[MAX_IDS];                /* deallocs run, per id */
static atomic_uchar death_role[MAX_IDS];            /* tl_role of the thread that ran it */
static _Atomic unsigned death_thread[MAX_IDS];      /* thread_no() of that thread */
static _Atomic int32_t refs[MAX_IDS];               /* references the test holds */

static void oracle_reset(void)
{
    uint32_t n = atomic_load(&next_id);
    if (n > MAX_IDS)
        n = MAX_IDS;
    for (uint32_t i = 0; i < n; i++) {
        atomic_store_explicit(&deaths[i], 0, memory_order_relaxed);
        atomic_store_explicit(&death_role[i], 0, memory_order_relaxed);
        atomic_store_explicit(&death_thread[i], 0, memory_order_relaxed);
        atomic_store_explicit(&refs[i], 0, memory_order_relaxed);
    }
    atomic_store(&next_id, 0);
    atomic_store(&failures, 0);
    first_failure[0] = 0;
    tl_role = ROLE_MAIN;
}

static void tobj_dealloc(ouro_object_t *self)
{
    tobj_t *t = (tobj_t *)self;
    uint32_t id = t->id;
    if (t->magic != MAGIC_LIVE) {
        TFAIL("dealloc of %p (id %u): magic %#llx, not live: freed twice or corrupt", (void *)t,
              id, (unsigned long long)t->magic);
        return;
    }
    if (id >= atomic_load(&next_id)) {
        TFAIL("dealloc of %p: id %u was never born", (void *)t, id);
        return;
    }
    if (!check_pattern(t->data, sizeof t->data, (uint64_t)id + 1))
        TFAIL("dealloc of object %u: payload corrupt", id);
    int32_t held = atomic_load(&refs[id]);
    TCHECK(held == 0, "object %u freed while the test holds %d reference(s) to it", id, (int)held);
    atomic_store(&death_role[id], tl_role);
    atomic_store(&death_thread[id], thread_no());
    unsigned char d = atomic_fetch_add(&deaths[id], 1);
    TCHECK(d == 0, "object %u freed %u times", id, (unsigned)d + 1);
    t->magic = MAGIC_DEAD;
    memset(t->data, POISON_BYTE, sizeof t->data);
}

/* Make an object (one reference, counted in refs[id]); NULL if out of ids. */
static tobj_t *tobj_new_of(const ouro_type_t *type)
{
    uint32_t id = atomic_fetch_add(&next_id, 1);
    if (id >= MAX_IDS) {
        atomic_fetch_sub(&next_id, 1);
        TFAIL("test ran out of object ids");
        return NULL;
    }
    tobj_t *t = (tobj_t *)ouro_new(type);
    if (t == NULL) {
        TFAIL("ouro_new failed: %s", strerror(errno));
        /* an id born that will never die: the test reports it too */
        return NULL;
    }
    TCHECK(t->id == 0 && t->magic == 0 && tu_is_zero(t->data, sizeof t->data),
           "ouro_new returned %p not zeroed beyond the header (id %u, magic %#llx, data[0] "
           "%#llx: %s)",
           (void *)t, t->id, (unsigned long long)t->magic, (unsigned long long)t->data[0],
           t->magic == MAGIC_DEAD ? "a dead test object's poisoned payload" : "?");
    TCHECK(ouro_refcount(&t->hdr) == 1, "new object: refcount %zu, not 1",
           ouro_refcount(&t->hdr));
    t->id = id;
    t->magic = MAGIC_LIVE;
    fill_pattern(t->data, sizeof t->data, (uint64_t)id + 1);
    atomic_store(&refs[id], 1);
    return t;
}

static tobj_t *tobj_new(void)
{
    return tobj_new_of(&tobj_type);
}

/* Called by a holder each time it uses `t`: the object must be alive. */
static bool check_live(const tobj_t *t, const char *where)
{
    uint64_t magic = t->magic;
    uint32_t id = t->id;
    if (magic != MAGIC_LIVE) {
        TFAIL("%s: object %p (id %u) has magic %#llx: used after it was freed", where,
              (const void *)t, id, (unsigned long long)magic);
        return false;
    }
    if (id >= atomic_load(&next_id)) {
        TFAIL("%s: object %p has id %u, never born", where, (const void *)t, id);
        return false;
    }
    if (!check_pattern(t->data, sizeof t->data, (uint64_t)id + 1)) {
        TFAIL("%s: object %u: payload corrupt", where, id);
        return false;
    }
    if (atomic_load(&deaths[id]) != 0) {
        TFAIL("%s: object %u used after its dealloc ran", where, id);
        return false;
    }
    if (atomic_load(&refs[id]) <= 0) {
        TFAIL("%s: object %u used while the test holds no reference", where, id);
        return false;
    }
    return true;
}

/* Take another reference to `t` (the caller holds one). */
static void ref_inc(tobj_t *t)
{
    atomic_fetch_add(&refs[t->id], 1);
    ouro_incref(&t->hdr);
}

/* Drop a reference to `t`; `t` must not be touched afterwards. */
static void ref_dec(tobj_t *t)
{
    check_live(t, "ref_dec");
    uint32_t id = t->id;
    int32_t before = atomic_fetch_sub(&refs[id], 1);
    TCHECK(before > 0, "object %u: the test dropped more references than it took", id);
    ouro_decref(&t->hdr);
}

/* A reference was taken with ouro_try_incref or ouro_weakref_get: count it. */
static void ref_taken(tobj_t *t)
{
    atomic_fetch_add(&refs[t->id], 1);
}

/* Every object born in this test died exactly once. */
#define ASSERT_ALL_DIED_ONCE()                                                                     \
    do {                                                                                           \
        uint32_t n_ = atomic_load(&next_id);                                                       \
        uint32_t bad_ = 0, first_ = 0;                                                             \
        unsigned first_deaths_ = 0;                                                                \
        for (uint32_t i_ = 0; i_ < n_; i_++) {                                                     \
            unsigned d_ = atomic_load(&deaths[i_]);                                                \
            if (d_ != 1 && bad_++ == 0) {                                                          \
                first_ = i_;                                                                       \
                first_deaths_ = d_;                                                                \
            }                                                                                      \
        }                                                                                          \
        ck_assert_msg(bad_ == 0, "%u of %u objects did not die exactly once (first: id %u, %u deaths)", \
                      bad_, n_, first_, first_deaths_);                                            \
    } while (0)

static void stats_now(ouro_object_stats_t *s)
{
    ouro_object_stats_get(s);
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    ck_assert_msg(e == 0, "pthread_create: %s", strerror(e));
}

/* ------------------------------------------------------------------ */
/* 1. a storm of cross-thread increfs and decrefs                       */
/* ------------------------------------------------------------------ */
/*
 * Main makes N objects and hands K references to each (incref on the
 * owner: local counts) to T workers.  Workers take references (shared
 * count), drop them (the first drop of a main-owned object takes shared
 * below zero: queued to main), and pass references to each other through
 * a mutex-protected exchange; at the end each drops all it holds.  Main
 * calls ouro_quiescent all along (merging what was queued to it) and drops
 * its own references halfway through.
 */

#define STORM_T 4
#define STORM_K 8
#define STORM_EXCH 4096

static struct {
    pthread_mutex_t lock;
    tobj_t *items[STORM_EXCH];
    size_t n;
} storm_exch = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct storm_arg_s {
    tobj_t **held;
    size_t n, cap;
    unsigned long iters;
    uint64_t seed;
    unsigned long increfs, decrefs, passes;
} storm_arg_t;

static _Atomic unsigned long storm_progress;
static _Atomic int storm_done;

static void *storm_worker(void *p)
{
    storm_arg_t *a = p;
    tl_role = ROLE_WORKER;
    tu_rng_t rng = tu_rng_make(a->seed);
    for (unsigned long it = 0; it < a->iters; it++) {
        if ((it & 1023) == 1023) {
            ouro_quiescent();
            atomic_fetch_add(&storm_progress, 1024);
        }
        if (a->n == 0) {
            pthread_mutex_lock(&storm_exch.lock);
            if (storm_exch.n)
                a->held[a->n++] = storm_exch.items[--storm_exch.n];
            pthread_mutex_unlock(&storm_exch.lock);
            if (a->n == 0) {
                sched_yield();
                continue;
            }
        }
        size_t j = (size_t)tu_rng_range(&rng, 0, a->n - 1);
        tobj_t *t = a->held[j];
        if (!check_live(t, "storm")) {
            a->held[j] = a->held[--a->n]; /* reported; don't touch it again */
            continue;
        }
        unsigned r = (unsigned)tu_rng_range(&rng, 0, 99);
        if (r < 42 && a->n < a->cap) {
            ref_inc(t);
            a->held[a->n++] = t;
            a->increfs++;
        } else if (r < 84) {
            a->held[j] = a->held[--a->n];
            ref_dec(t);
            a->decrefs++;
        } else if (r < 93) {
            pthread_mutex_lock(&storm_exch.lock);
            if (storm_exch.n < STORM_EXCH) {
                storm_exch.items[storm_exch.n++] = t;
                a->held[j] = a->held[--a->n];
                a->passes++;
            }
            pthread_mutex_unlock(&storm_exch.lock);
        } else {
            pthread_mutex_lock(&storm_exch.lock);
            if (storm_exch.n && a->n < a->cap) {
                size_t k = (size_t)tu_rng_range(&rng, 0, storm_exch.n - 1);
                a->held[a->n++] = storm_exch.items[k];
                storm_exch.items[k] = storm_exch.items[--storm_exch.n];
            }
            pthread_mutex_unlock(&storm_exch.lock);
        }
    }
    while (a->n)
        ref_dec(a->held[--a->n]);
    ouro_quiescent();
    atomic_fetch_add(&storm_done, 1);
    return NULL;
}

START_TEST(test_incref_decref_storm)
{
    oracle_reset();
    double t0 = now_s();
    const size_t N = tu_scale(1000, 300);
    const unsigned long iters = tu_scale(8000000, 500000);
    ouro_object_stats_t before, after;
    stats_now(&before);

    tobj_t **objs = calloc(N, sizeof *objs);
    ck_assert_ptr_nonnull(objs);
    storm_arg_t args[STORM_T];
    memset(args, 0, sizeof args);
    for (int i = 0; i < STORM_T; i++) {
        args[i].cap = 4 * N * STORM_K;
        args[i].held = malloc(args[i].cap * sizeof *args[i].held);
        ck_assert_ptr_nonnull(args[i].held);
        args[i].iters = iters;
        args[i].seed = 0x5702 + (uint64_t)i;
    }
    tu_rng_t rng = tu_rng_make(42);
    for (size_t i = 0; i < N; i++) {
        objs[i] = tobj_new();
        ck_assert_ptr_nonnull(objs[i]);
        for (int k = 0; k < STORM_K; k++) {
            ref_inc(objs[i]);
            storm_arg_t *a = &args[tu_rng_range(&rng, 0, STORM_T - 1)];
            a->held[a->n++] = objs[i];
        }
        ck_assert_uint_eq(ouro_refcount(&objs[i]->hdr), STORM_K + 1);
    }
    atomic_store(&storm_progress, 0);
    atomic_store(&storm_done, 0);
    storm_exch.n = 0;

    pthread_t th[STORM_T];
    for (int i = 0; i < STORM_T; i++)
        start_thread(&th[i], storm_worker, &args[i]);
    bool dropped = false;
    while (atomic_load(&storm_done) < STORM_T) {
        ouro_quiescent(); /* merge what the workers queued to us */
        if (!dropped && atomic_load(&storm_progress) >= iters * STORM_T / 2) {
            for (size_t i = 0; i < N; i++)
                ref_dec(objs[i]);
            dropped = true;
        }
        sleep_us(200);
    }
    for (int i = 0; i < STORM_T; i++)
        pthread_join(th[i], NULL);
    if (!dropped)
        for (size_t i = 0; i < N; i++)
            ref_dec(objs[i]);
    pthread_mutex_lock(&storm_exch.lock);
    while (storm_exch.n)
        ref_dec(storm_exch.items[--storm_exch.n]);
    pthread_mutex_unlock(&storm_exch.lock);
    ouro_quiescent();
    ouro_barrier();
    stats_now(&after);

    unsigned long inc = 0, dec = 0, pass = 0;
    for (int i = 0; i < STORM_T; i++) {
        inc += args[i].increfs;
        dec += args[i].decrefs;
        pass += args[i].passes;
        free(args[i].held);
    }
    free(objs);
    if (verbose())
        fprintf(stderr,
                "storm: %.2fs, %lu increfs, %lu decrefs, %lu passes; created %zu freed %zu "
                "queued %zu merged %zu deferred %zu\n",
                now_s() - t0, inc, dec, pass, after.created - before.created,
                after.freed - before.freed, after.merges_queued - before.merges_queued,
                after.merges_done - before.merges_done, after.deferred);
    ASSERT_NO_FAILURES();
    ASSERT_ALL_DIED_ONCE();
    ck_assert_uint_eq(atomic_load(&next_id), N);
    ck_assert_uint_eq(after.created - before.created, N);
    ck_assert_uint_eq(after.freed - before.freed, N);
    ck_assert_msg(after.merges_queued > before.merges_queued,
                  "no object was queued to its owner (merges_queued stayed %zu)",
                  after.merges_queued);
    ck_assert_uint_eq(after.deferred, 0);
    ck_assert_msg(inc > iters / 4 && dec > iters / 4, "too little traffic: %lu increfs, %lu decrefs",
                  inc, dec);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 2. a thread exits while another holds references to its objects      */
/* ------------------------------------------------------------------ */
/*
 * Each round, thread A makes M objects, takes K more references to each
 * (local counts), drops its own and hands the K to thread B.  Before A
 * exits, B drops one reference to every third object (queued to A, which
 * never calls ouro_quiescent) and takes one more to every other third
 * (shared count).  Then A exits: its counts are merged.  B checks that
 * ouro_refcount is exactly the number of references it holds, then drops
 * them: each object dies on its last drop, not before.  A new A each round
 * (likely on the same stack, so with the same thread pointer).
 */

#define EXIT_K 3

/* A stage number threads wait for, under a mutex and condition variable. */
typedef struct stage_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage;
} stage_t;
#define STAGE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static void stage_set(stage_t *s, int stage)
{
    pthread_mutex_lock(&s->lock);
    s->stage = stage;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void stage_wait(stage_t *s, int stage)
{
    pthread_mutex_lock(&s->lock);
    while (s->stage < stage)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

typedef struct exit_round_s {
    stage_t st; /* 1: objects published; 2: A may exit */
    tobj_t **objs;
    size_t m;
} exit_round_t;

static void *exit_owner(void *p)
{
    exit_round_t *r = p;
    tl_role = ROLE_OWNER;
    for (size_t i = 0; i < r->m; i++) {
        tobj_t *t = tobj_new();
        if (t == NULL)
            break;
        for (int k = 0; k < EXIT_K; k++)
            ref_inc(t);
        ref_dec(t); /* our own: local K+1 -> K */
        r->objs[i] = t;
    }
    stage_set(&r->st, 1);
    stage_wait(&r->st, 2);
    /* exit without a quiescent state: what B queued is merged at exit */
    return NULL;
}

typedef struct exit_holder_arg_s {
    unsigned rounds;
    size_t m;
    unsigned long checked;
} exit_holder_arg_t;

static void *exit_holder(void *p)
{
    exit_holder_arg_t *a = p;
    tl_role = ROLE_HOLDER;
    int *held = malloc(a->m * sizeof *held);
    uint32_t *ids = malloc(a->m * sizeof *ids);
    exit_round_t r;
    r.st = (stage_t)STAGE_INIT;
    r.objs = calloc(a->m, sizeof *r.objs);
    r.m = a->m;
    if (!held || !ids || !r.objs) {
        TFAIL("out of memory");
        return NULL;
    }
    for (unsigned round = 0; round < a->rounds && atomic_load(&failures) == 0; round++) {
        r.st.stage = 0;
        memset(r.objs, 0, a->m * sizeof *r.objs);
        pthread_t owner;
        if (pthread_create(&owner, NULL, exit_owner, &r) != 0) {
            TFAIL("pthread_create failed");
            break;
        }
        stage_wait(&r.st, 1);
        for (size_t i = 0; i < a->m; i++) {
            tobj_t *t = r.objs[i];
            if (t == NULL) {
                held[i] = 0;
                continue;
            }
            ids[i] = t->id;
            held[i] = EXIT_K;
            if (i % 3 == 1) {
                ref_dec(t); /* shared below zero: queued to A */
                held[i]--;
            } else if (i % 3 == 2) {
                ref_inc(t); /* counted in shared */
                held[i]++;
            }
            check_live(t, "holder, owner alive");
            size_t rc = ouro_refcount(&t->hdr);
            TCHECK(rc == (size_t)held[i], "round %u, object %u, owner alive: refcount %zu, holder has %d",
                   round, ids[i], rc, held[i]);
        }
        stage_set(&r.st, 2);
        pthread_join(owner, NULL);
        /* the owner is gone: its counts are merged, the objects shared */
        for (size_t i = 0; i < a->m; i++) {
            tobj_t *t = r.objs[i];
            if (t == NULL)
                continue;
            check_live(t, "holder, owner exited");
            size_t rc = ouro_refcount(&t->hdr);
            TCHECK(rc == (size_t)held[i], "round %u, object %u, owner exited: refcount %zu, holder has %d",
                   round, ids[i], rc, held[i]);
            a->checked++;
        }
        for (size_t i = 0; i < a->m; i++) {
            tobj_t *t = r.objs[i];
            if (t == NULL)
                continue;
            while (held[i] > 1) {
                ref_dec(t);
                held[i]--;
                TCHECK(atomic_load(&deaths[ids[i]]) == 0, "object %u died with %d reference(s) left",
                       ids[i], held[i]);
                size_t rc = ouro_refcount(&t->hdr);
                TCHECK(rc == (size_t)held[i], "object %u: refcount %zu after a drop, holder has %d",
                       ids[i], rc, held[i]);
            }
            ref_dec(t);
            /* a shared (merged) count reaching zero frees at once */
            TCHECK(atomic_load(&deaths[ids[i]]) == 1,
                   "object %u not freed by the drop of its last reference (owner exited)", ids[i]);
        }
    }
    free(held);
    free(ids);
    free(r.objs);
    pthread_mutex_destroy(&r.st.lock);
    pthread_cond_destroy(&r.st.cond);
    return NULL;
}

START_TEST(test_owner_exits_while_others_hold)
{
    oracle_reset();
    double t0 = now_s();
    ouro_object_stats_t before, after;
    stats_now(&before);
    exit_holder_arg_t a = {.rounds = (unsigned)tu_scale(1500, 100), .m = 3000};
    pthread_t b;
    start_thread(&b, exit_holder, &a);
    pthread_join(b, NULL);
    ouro_barrier();
    stats_now(&after);
    if (verbose())
        fprintf(stderr, "owner_exit: %.2fs, %lu refcounts checked; created %zu freed %zu queued %zu merged %zu\n",
                now_s() - t0, a.checked, after.created - before.created, after.freed - before.freed,
                after.merges_queued - before.merges_queued, after.merges_done - before.merges_done);
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(atomic_load(&next_id), a.rounds * a.m);
    ASSERT_ALL_DIED_ONCE();
    ck_assert_uint_eq(after.created - before.created, a.rounds * a.m);
    ck_assert_uint_eq(after.freed - before.freed, a.rounds * a.m);
    /* every object's counts were merged once: by its owner's exit (or, for
     * those B dropped early, by the owner taking its queue at exit) */
    ck_assert_msg(after.merges_done - before.merges_done >= a.rounds * a.m,
                  "only %zu merges for %zu objects whose owner exited",
                  after.merges_done - before.merges_done, a.rounds * a.m);
    ck_assert_uint_eq(after.deferred, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 3. producer/consumer: the only reference changes thread              */
/* ------------------------------------------------------------------ */
/*
 * The producer passes its only reference to each object to the consumer,
 * whose drop would take the shared count below zero: the object is queued
 * to the producer, which frees it when it merges at its next
 * ouro_quiescent (or ouro_new).  Second part: a producer that never calls
 * ouro_quiescent (nor ouro_new) after handing its objects over; they are
 * freed when it exits.
 */

typedef struct objq_s {
    pthread_mutex_t lock;
    pthread_cond_t nonempty, nonfull;
    tobj_t *ring[1024];
    size_t head, n;
    bool closed;
    /* the consumer has dropped everything */
    bool consumed;
    pthread_cond_t consumed_cond;
} objq_t;

static void objq_init(objq_t *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->nonempty, NULL);
    pthread_cond_init(&q->nonfull, NULL);
    pthread_cond_init(&q->consumed_cond, NULL);
}

static void objq_destroy(objq_t *q)
{
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->nonempty);
    pthread_cond_destroy(&q->nonfull);
    pthread_cond_destroy(&q->consumed_cond);
}

static void objq_push(objq_t *q, tobj_t *t)
{
    const size_t cap = sizeof q->ring / sizeof *q->ring;
    pthread_mutex_lock(&q->lock);
    while (q->n == cap)
        pthread_cond_wait(&q->nonfull, &q->lock);
    q->ring[(q->head + q->n++) % cap] = t;
    pthread_cond_signal(&q->nonempty);
    pthread_mutex_unlock(&q->lock);
}

static void objq_close(objq_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_cond_broadcast(&q->nonempty);
    pthread_mutex_unlock(&q->lock);
}

static tobj_t *objq_pop(objq_t *q)
{
    const size_t cap = sizeof q->ring / sizeof *q->ring;
    pthread_mutex_lock(&q->lock);
    while (q->n == 0 && !q->closed)
        pthread_cond_wait(&q->nonempty, &q->lock);
    tobj_t *t = NULL;
    if (q->n) {
        t = q->ring[q->head];
        q->head = (q->head + 1) % cap;
        q->n--;
        pthread_cond_signal(&q->nonfull);
    }
    pthread_mutex_unlock(&q->lock);
    return t;
}

static void objq_set_consumed(objq_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->consumed = true;
    pthread_cond_broadcast(&q->consumed_cond);
    pthread_mutex_unlock(&q->lock);
}

static void objq_wait_consumed(objq_t *q)
{
    pthread_mutex_lock(&q->lock);
    while (!q->consumed)
        pthread_cond_wait(&q->consumed_cond, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

typedef struct pc_arg_s {
    objq_t q;
    size_t n;
    bool quiesce;        /* the producer calls ouro_quiescent (part 1) or never does (part 2) */
    uint32_t first_id;   /* of the producer's objects, consecutive */
    unsigned long consumed;
} pc_arg_t;

static void *pc_producer(void *p)
{
    pc_arg_t *a = p;
    tl_role = ROLE_PRODUCER;
    if (a->quiesce) {
        for (size_t i = 0; i < a->n; i++) {
            tobj_t *t = tobj_new();
            if (t == NULL)
                break;
            objq_push(&a->q, t); /* our only reference goes with it */
            if (i % 64 == 63)
                ouro_quiescent();
        }
        objq_close(&a->q);
        /* merge what the consumer queued to us: no object may survive it */
        objq_wait_consumed(&a->q);
        ouro_quiescent();
        for (uint32_t id = 0; id < atomic_load(&next_id); id++)
            TCHECK(atomic_load(&deaths[id]) == 1,
                   "object %u not freed by its owner's quiescent state after the consumer "
                   "dropped it (%u deaths)", id, (unsigned)atomic_load(&deaths[id]));
    } else {
        /* all objects first: ouro_new also merges */
        tobj_t **objs = malloc(a->n * sizeof *objs);
        if (objs == NULL) {
            TFAIL("out of memory");
            objq_close(&a->q);
            return NULL;
        }
        size_t made = 0;
        for (; made < a->n; made++)
            if ((objs[made] = tobj_new()) == NULL)
                break;
        for (size_t i = 0; i < made; i++)
            objq_push(&a->q, objs[i]);
        objq_close(&a->q);
        free(objs);
        /* wait, without a quiescent state, until the consumer is done;
         * then exit: the queued objects are merged (and freed) at exit */
        objq_wait_consumed(&a->q);
    }
    return NULL;
}

static void *pc_consumer(void *p)
{
    pc_arg_t *a = p;
    tl_role = ROLE_CONSUMER;
    tobj_t *t;
    while ((t = objq_pop(&a->q)) != NULL) {
        check_live(t, "consumer");
        TCHECK(ouro_refcount(&t->hdr) == 1, "consumer: object %u has refcount %zu, not 1", t->id,
               ouro_refcount(&t->hdr));
        ref_dec(t); /* shared would go below zero: queued to the producer */
        a->consumed++;
    }
    objq_set_consumed(&a->q);
    return NULL;
}

START_TEST(test_producer_consumer_queued_merge)
{
    oracle_reset();
    double t0 = now_s();
    ouro_object_stats_t before, mid, after;

    /* part 1: a producer that calls ouro_quiescent */
    stats_now(&before);
    pc_arg_t *a = calloc(1, sizeof *a);
    ck_assert_ptr_nonnull(a);
    objq_init(&a->q);
    a->n = tu_scale(1500000, 150000);
    a->quiesce = true;
    pthread_t prod, cons;
    start_thread(&prod, pc_producer, a);
    start_thread(&cons, pc_consumer, a);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    stats_now(&mid);
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(a->consumed, a->n);
    uint32_t n1 = atomic_load(&next_id);
    ck_assert_uint_eq(n1, a->n);
    ASSERT_ALL_DIED_ONCE();
    uint32_t not_producer = 0;
    for (uint32_t id = 0; id < n1; id++)
        not_producer += atomic_load(&death_role[id]) != ROLE_PRODUCER;
    ck_assert_msg(not_producer == 0,
                  "%u of %u objects were not freed by their owner's merge (the producer)",
                  not_producer, n1);
    ck_assert_msg(mid.merges_queued - before.merges_queued >= a->n,
                  "merges_queued grew by %zu for %zu objects dropped by a non-owner",
                  mid.merges_queued - before.merges_queued, a->n);
    objq_destroy(&a->q);

    /* part 2: a producer that never reaches a quiescent state: merged at exit */
    memset(a, 0, sizeof *a);
    objq_init(&a->q);
    a->n = tu_scale(300000, 30000);
    a->quiesce = false;
    start_thread(&prod, pc_producer, a);
    start_thread(&cons, pc_consumer, a);
    pthread_join(cons, NULL);
    pthread_join(prod, NULL);
    /* no quiescent state or barrier here: the producer's exit freed them */
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(a->consumed, a->n);
    ck_assert_uint_eq(atomic_load(&next_id), n1 + a->n);
    ASSERT_ALL_DIED_ONCE();
    not_producer = 0;
    for (uint32_t id = n1; id < n1 + a->n; id++)
        not_producer += atomic_load(&death_role[id]) != ROLE_PRODUCER;
    ck_assert_msg(not_producer == 0, "%u of %zu objects were not freed at their owner's exit",
                  not_producer, a->n);
    ouro_barrier();
    stats_now(&after);
    if (verbose())
        fprintf(stderr, "producer_consumer: %.2fs; created %zu freed %zu queued %zu merged %zu\n",
                now_s() - t0, after.created - before.created, after.freed - before.freed,
                after.merges_queued - before.merges_queued, after.merges_done - before.merges_done);
    ck_assert_uint_eq(after.created - before.created, n1 + a->n);
    ck_assert_uint_eq(after.freed - before.freed, n1 + a->n);
    ck_assert_msg(after.merges_queued - mid.merges_queued >= a->n,
                  "merges_queued grew by %zu for %zu objects dropped by a non-owner",
                  after.merges_queued - mid.merges_queued, a->n);
    ck_assert_uint_eq(after.deferred, 0);
    objq_destroy(&a->q);
    free(a);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 4. ouro_try_incref racing with the final decref                     */
/* ------------------------------------------------------------------ */
/*
 * Writers make objects (made readable with ouro_share, or born readable),
 * swap them into random slots and drop what they swapped out.  Readers load
 * a slot inside ouro_read_begin/ouro_read_end (one reader instead stays
 * online and calls ouro_quiescent after each read) and ouro_try_incref what
 * they found: a success must give a live object.
 */

#define TRY_SLOTS 16
#define TRY_WRITERS 2
#define TRY_READERS 2

static tobj_t *_Atomic try_slots[TRY_SLOTS];
static _Atomic int try_stop;

typedef struct try_arg_s {
    int idx;
    unsigned long ops, successes, failures, empty;
} try_arg_t;

static void *try_writer(void *p)
{
    try_arg_t *a = p;
    tl_role = ROLE_WRITER;
    tu_rng_t rng = tu_rng_make(0x77a1 + (uint64_t)a->idx);
    const ouro_type_t *type = a->idx % 2 ? &tobj_readable_type : &tobj_type;
    while (!atomic_load_explicit(&try_stop, memory_order_relaxed)) {
        if (atomic_load_explicit(&next_id, memory_order_relaxed) >= MAX_IDS - 1024)
            break;
        tobj_t *t = tobj_new_of(type);
        if (t == NULL)
            break;
        if (type == &tobj_type)
            ouro_share(&t->hdr);
        tobj_t *old = atomic_exchange(&try_slots[tu_rng_range(&rng, 0, TRY_SLOTS - 1)], t);
        if (old)
            ref_dec(old); /* the slot's reference */
        if (++a->ops % 32 == 0)
            ouro_quiescent();
    }
    ouro_quiescent();
    return NULL;
}

static void *try_reader(void *p)
{
    try_arg_t *a = p;
    tl_role = ROLE_READER;
    bool online = a->idx % 2 == 1;
    tu_rng_t rng = tu_rng_make(0x4eade5 + (uint64_t)a->idx);
    ouro_thread_register();
    if (online)
        ouro_thread_online();
    while (!atomic_load_explicit(&try_stop, memory_order_relaxed)) {
        tobj_t *got = NULL;
        if (!online)
            ouro_read_begin();
        tobj_t *t = atomic_load(&try_slots[tu_rng_range(&rng, 0, TRY_SLOTS - 1)]);
        if (t == NULL) {
            a->empty++;
        } else if (ouro_try_incref(&t->hdr)) {
            /* the reference must be taken before the read section ends */
            got = t;
            ref_taken(got);
            check_live(got, "try_incref success");
            a->successes++;
        } else {
            a->failures++;
        }
        if (!online)
            ouro_read_end();
        if (got) {
            check_live(got, "after the read section");
            ref_dec(got);
        }
        if (online)
            ouro_quiescent();
        a->ops++;
    }
    if (online)
        ouro_thread_offline();
    return NULL;
}

START_TEST(test_try_incref_races_final_decref)
{
    oracle_reset();
    const double duration = tu_sanitized() ? 3.0 : 1.5;
    ouro_object_stats_t before, after;
    stats_now(&before);
    for (int i = 0; i < TRY_SLOTS; i++)
        atomic_store(&try_slots[i], NULL);
    atomic_store(&try_stop, 0);
    try_arg_t w[TRY_WRITERS], r[TRY_READERS];
    memset(w, 0, sizeof w);
    memset(r, 0, sizeof r);
    pthread_t wt[TRY_WRITERS], rt[TRY_READERS];
    for (int i = 0; i < TRY_READERS; i++) {
        r[i].idx = i;
        start_thread(&rt[i], try_reader, &r[i]);
    }
    for (int i = 0; i < TRY_WRITERS; i++) {
        w[i].idx = i;
        start_thread(&wt[i], try_writer, &w[i]);
    }
    double t0 = now_s();
    while (now_s() - t0 < duration && atomic_load(&failures) == 0)
        sleep_us(10000);
    atomic_store(&try_stop, 1);
    for (int i = 0; i < TRY_WRITERS; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < TRY_READERS; i++)
        pthread_join(rt[i], NULL);
    for (int i = 0; i < TRY_SLOTS; i++) {
        tobj_t *t = atomic_exchange(&try_slots[i], NULL);
        if (t)
            ref_dec(t);
    }
    ouro_quiescent();
    ouro_barrier();
    stats_now(&after);

    unsigned long succ = 0, fail = 0, empty = 0, writes = 0;
    for (int i = 0; i < TRY_READERS; i++) {
        succ += r[i].successes;
        fail += r[i].failures;
        empty += r[i].empty;
    }
    for (int i = 0; i < TRY_WRITERS; i++)
        writes += w[i].ops;
    if (verbose())
        fprintf(stderr,
                "try_incref: %.2fs, %lu writes, %lu successes, %lu failures, %lu empty; created %zu "
                "freed %zu queued %zu\n",
                now_s() - t0, writes, succ, fail, empty, after.created - before.created,
                after.freed - before.freed, after.merges_queued - before.merges_queued);
    ASSERT_NO_FAILURES();
    ASSERT_ALL_DIED_ONCE();
    uint32_t born = atomic_load(&next_id);
    ck_assert_uint_eq(after.created - before.created, born);
    ck_assert_uint_eq(after.freed - before.freed, born);
    ck_assert_uint_eq(after.deferred, 0);
    ck_assert_msg(succ >= tu_scale(10000, 500), "readers got only %lu successful try_increfs", succ);
    ck_assert_msg(born >= tu_scale(10000, 500), "writers made only %u objects", born);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 5. weak references across threads                                    */
/* ------------------------------------------------------------------ */
/*
 * Each round, a dropper thread makes an object with two weak references
 * (one with a callback).  Getters call ouro_weakref_get on both in a loop
 * while the last strong reference is dropped: by the dropper itself (its
 * local count reaches zero), or on odd rounds by a getter holding a
 * reference the dropper handed it (queued to the dropper, which merges at
 * its quiescent states).  A get returns a live object or, once one get
 * returned NULL, NULL forever; the callback runs exactly once, on the
 * thread that freed the object.
 *
 * Under load (the machine shared with other CPU-heavy work) a round can
 * stall for a long time while the dropper waits for a core, so every limit
 * is wall-clock time, not an iteration count: the test runs its rounds
 * until a time budget is spent (at least WR_MIN_ROUNDS of them), and a
 * round whose referent has not gone away after WR_ROUND_LIMIT_S seconds
 * fails.  Only the dropper decides whether another round starts, and tells
 * the getters before the start barrier: after a failure (or when the
 * budget is spent) they stop at once instead of running rounds on the
 * previous round's dead object and freed weak references.
 */

#define WR_GETTERS 2
#define WR_MAX_ROUNDS tu_scale(20000, 1500)
#define WR_MIN_ROUNDS tu_scale(100, 50)
#define WR_BUDGET_S ((double)tu_scale(10, 60))
#define WR_ROUND_LIMIT_S ((double)tu_scale(20, 120))

static struct {
    pthread_barrier_t start, end;
    unsigned rounds; /* rounds run: the dropper's, read after the joins */
    bool stop;       /* [start barrier] no more rounds: the getters return */
    atomic_bool dropped; /* the dropper has dropped its own reference */
    ouro_weakref_t *w1, *w2;
    tobj_t *obj;
    uint32_t id;
    tobj_t *given; /* odd rounds: a reference handed to getter 0 to drop */
    _Atomic int cb_calls;
    _Atomic unsigned cb_thread;
    _Atomic unsigned long gets_live, gets_null;
} wr;

static void wr_callback(ouro_weakref_t *ref, void *arg)
{
    TCHECK(arg == &wr, "weakref callback: wrong argument");
    TCHECK(ref == wr.w1, "weakref callback: wrong weak reference %p", (void *)ref);
    TCHECK(ouro_weakref_get(ref) == NULL, "weakref callback: ouro_weakref_get still gives the referent");
    atomic_store(&wr.cb_thread, thread_no());
    atomic_fetch_add(&wr.cb_calls, 1);
}

static void *wr_getter(void *p)
{
    int idx = (int)(intptr_t)p;
    tl_role = ROLE_GETTER;
    tu_rng_t rng = tu_rng_make(0x3e4 + (uint64_t)idx);
    for (unsigned round = 0;; round++) {
        pthread_barrier_wait(&wr.start);
        if (wr.stop)
            break;
        tobj_t *given = (idx == 0 && round % 2) ? wr.given : NULL;
        unsigned long drop_after = tu_rng_range(&rng, 0, 60);
        bool saw_null = false;
        unsigned nulls = 0;
        double deadline = now_s() + WR_ROUND_LIMIT_S;
        for (unsigned long i = 0; nulls < 16; i++) {
            if (given && i >= drop_after) {
                ref_dec(given); /* shared below zero: queued to the dropper */
                given = NULL;
            }
            ouro_weakref_t *w = (i & 1) ? wr.w2 : wr.w1;
            tobj_t *t = (tobj_t *)ouro_weakref_get(w);
            if (t) {
                ref_taken(t);
                TCHECK(!saw_null, "round %u: ouro_weakref_get gave object %u back after a NULL", round,
                       t->id);
                TCHECK(t == wr.obj, "round %u: ouro_weakref_get gave %p, not the referent %p", round,
                       (void *)t, (void *)wr.obj);
                check_live(t, "weakref_get");
                /* hold it a little, across the dropper's decref; not once
                 * that is done: two getters taking turns to hold it across
                 * yields would keep it alive as long as a loaded machine
                 * makes each yield last (every get legal, so no failure).
                 * Relaxed: a hint for pacing, nothing is read through it */
                if (!atomic_load_explicit(&wr.dropped, memory_order_relaxed) && tu_rng_chance(&rng, 30))
                    sched_yield();
                check_live(t, "weakref_get, held");
                ref_dec(t);
                atomic_fetch_add_explicit(&wr.gets_live, 1, memory_order_relaxed);
            } else {
                saw_null = true;
                nulls++;
                atomic_fetch_add_explicit(&wr.gets_null, 1, memory_order_relaxed);
            }
            if (i % 1024 == 1023 && now_s() > deadline) {
                TFAIL("round %u: the referent was still there after %.0f s", round, WR_ROUND_LIMIT_S);
                break;
            }
        }
        if (given)
            ref_dec(given);
        pthread_barrier_wait(&wr.end);
    }
    return NULL;
}

static void *wr_dropper(void *p)
{
    (void)p;
    tl_role = ROLE_DROPPER;
    tu_rng_t rng = tu_rng_make(0xd0);
    double t_start = now_s();
    unsigned round;
    for (round = 0;; round++) {
        tobj_t *t = NULL;
        /* another round?  Decided here alone, told to the getters by the
         * start barrier (which orders wr.stop before their reads) */
        if (round < WR_MAX_ROUNDS && atomic_load(&failures) == 0 &&
            (round < WR_MIN_ROUNDS || now_s() - t_start < WR_BUDGET_S))
            t = tobj_new();
        if (t == NULL) {
            wr.stop = true;
            pthread_barrier_wait(&wr.start);
            break;
        }
        wr.obj = t;
        wr.id = t->id;
        wr.w1 = ouro_weakref_new(&t->hdr, wr_callback, &wr);
        wr.w2 = ouro_weakref_new(&t->hdr, NULL, NULL);
        TCHECK(wr.w1 && wr.w2, "ouro_weakref_new failed");
        atomic_store(&wr.cb_calls, 0);
        atomic_store(&wr.cb_thread, 0);
        atomic_store(&wr.dropped, false);
        wr.given = NULL;
        if (round % 2) {
            ref_inc(t);
            wr.given = t;
        }
        pthread_barrier_wait(&wr.start);
        unsigned long spin = tu_rng_range(&rng, 0, 3000);
        for (volatile unsigned long s = 0; s < spin; s++)
            ;
        ref_dec(t); /* our own */
        /* relaxed: only a hint for the getters' pacing */
        atomic_store_explicit(&wr.dropped, true, memory_order_relaxed);
        /* on odd rounds the last reference is getter 0's, dropped into our
         * queue: merge until the object is gone */
        double t0 = now_s();
        while (atomic_load(&deaths[wr.id]) == 0 && now_s() - t0 < WR_ROUND_LIMIT_S) {
            ouro_quiescent();
            sched_yield();
        }
        pthread_barrier_wait(&wr.end);
        ouro_quiescent();
        TCHECK(atomic_load(&deaths[wr.id]) == 1, "round %u: object %u died %u times", round, wr.id,
               (unsigned)atomic_load(&deaths[wr.id]));
        TCHECK(atomic_load(&wr.cb_calls) == 1, "round %u: weakref callback ran %d times", round,
               atomic_load(&wr.cb_calls));
        TCHECK(atomic_load(&wr.cb_thread) == atomic_load(&death_thread[wr.id]),
               "round %u: callback ran on thread %u, the object was freed on thread %u", round,
               atomic_load(&wr.cb_thread), atomic_load(&death_thread[wr.id]));
        TCHECK(ouro_weakref_get(wr.w1) == NULL && ouro_weakref_get(wr.w2) == NULL,
               "round %u: a weak reference still gives the dead referent", round);
        ouro_weakref_free(wr.w1);
        ouro_weakref_free(wr.w2);
    }
    wr.rounds = round;
    return NULL;
}

START_TEST(test_weakref_get_races_last_decref)
{
    oracle_reset();
    double t0 = now_s();
    ouro_object_stats_t before, after;
    stats_now(&before);
    wr.rounds = 0;
    wr.stop = false;
    atomic_store(&wr.gets_live, 0);
    atomic_store(&wr.gets_null, 0);
    pthread_barrier_init(&wr.start, NULL, WR_GETTERS + 1);
    pthread_barrier_init(&wr.end, NULL, WR_GETTERS + 1);
    pthread_t g[WR_GETTERS], d;
    start_thread(&d, wr_dropper, NULL);
    for (int i = 0; i < WR_GETTERS; i++)
        start_thread(&g[i], wr_getter, (void *)(intptr_t)i);
    pthread_join(d, NULL);
    for (int i = 0; i < WR_GETTERS; i++)
        pthread_join(g[i], NULL);
    pthread_barrier_destroy(&wr.start);
    pthread_barrier_destroy(&wr.end);
    ouro_barrier();
    stats_now(&after);
    if (verbose())
        fprintf(stderr, "weakref: %.2fs, %u rounds, %lu live gets, %lu NULL gets; weakrefs %zu\n",
                now_s() - t0, wr.rounds, atomic_load(&wr.gets_live), atomic_load(&wr.gets_null),
                after.weakrefs);
    ASSERT_NO_FAILURES();
    ck_assert_uint_ge(wr.rounds, WR_MIN_ROUNDS);
    ck_assert_uint_eq(atomic_load(&next_id), wr.rounds);
    ASSERT_ALL_DIED_ONCE();
    ck_assert_uint_eq(after.weakrefs, before.weakrefs);
    ck_assert_uint_eq(after.deferred, 0);
    ck_assert_msg(atomic_load(&wr.gets_live) > wr.rounds / 4,
                  "getters saw the live referent only %lu times in %u rounds",
                  atomic_load(&wr.gets_live), wr.rounds);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 6. freed memory is reused only after a grace period                  */
/* ------------------------------------------------------------------ */
/*
 * An allocator thread publishes an object in a slot; a reader thread goes
 * online and reads the slot's raw pointer (no reference).  The allocator
 * then clears the slot and drops the object (it dies), flushes its freed
 * objects to RCU with ouro_quiescent, and makes (and drops) many objects of
 * the same type.  While the reader has not passed a quiescent state, no
 * memory freed after it went online may be handed out again: none of the
 * new objects may sit at the held address, and no address may come up
 * twice.  The reader then finds the dead object's memory untouched (type,
 * id, poisoned magic), calls ouro_quiescent and goes offline; after
 * ouro_barrier nothing is deferred any more.
 */

static struct {
    stage_t st; /* 1 published, 2 reader holds the pointer, 3 allocations done, 4 reader released */
    tobj_t *_Atomic slot;
    tobj_t *held;     /* the reader's raw pointer */
    uint32_t held_id;
    size_t allocs, hits, dups;
    size_t deferred_during;
    unsigned long reuse_after; /* for information */
} dr = {.st = STAGE_INIT};

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void *dr_reader(void *p)
{
    (void)p;
    tl_role = ROLE_READER;
    ouro_thread_register();
    stage_wait(&dr.st, 1);
    ouro_thread_online();
    tobj_t *t = atomic_load(&dr.slot); /* a raw pointer: no reference */
    if (t == NULL || !check_live(t, "reader")) {
        TFAIL("reader: the slot holds no live object");
        ouro_thread_offline();
        stage_set(&dr.st, 2);
        return NULL;
    }
    dr.held = t;
    dr.held_id = t->id;
    stage_set(&dr.st, 2);
    /* online, no quiescent state: the grace period cannot end.  (Blocking
     * while online is what holds it.) */
    stage_wait(&dr.st, 3);
    /* the object is dead (the allocator saw it die before stage 3), but its
     * memory must not have been reused */
    TCHECK(atomic_load(&deaths[dr.held_id]) == 1, "reader: held object not dead yet");
    TCHECK(t->hdr.type == &tobj_type && t->id == dr.held_id && t->magic == MAGIC_DEAD,
           "reader: the memory of dead object %u at %p was reused before a grace period "
           "(type %p, id %u, magic %#llx)",
           dr.held_id, (void *)t, (const void *)t->hdr.type, t->id, (unsigned long long)t->magic);
    ouro_quiescent();
    ouro_thread_offline();
    return NULL;
}

static void *dr_allocator(void *p)
{
    size_t n = (size_t)(uintptr_t)p;
    tl_role = ROLE_OWNER;
    tobj_t *v = tobj_new();
    if (v == NULL) {
        stage_set(&dr.st, 1);
        return NULL;
    }
    uint32_t vid = v->id;
    atomic_store(&dr.slot, v); /* the slot takes our reference */
    stage_set(&dr.st, 1);
    stage_wait(&dr.st, 2);
    tobj_t *old = atomic_exchange(&dr.slot, NULL);
    if (old != v || dr.held != v)
        TFAIL("allocator: slot changed under us");
    ref_dec(old);
    TCHECK(atomic_load(&deaths[vid]) == 1, "allocator: object %u did not die on its last drop", vid);
    ouro_quiescent(); /* its memory goes to RCU now */

    uintptr_t *addrs = malloc(n * sizeof *addrs);
    tobj_t **keep = malloc(64 * sizeof *keep);
    if (!addrs || !keep) {
        TFAIL("out of memory");
        stage_set(&dr.st, 3);
        return NULL;
    }
    size_t nkeep = 0;
    tu_rng_t rng = tu_rng_make(0xa110c);
    for (size_t i = 0; i < n; i++) {
        tobj_t *t = tobj_new();
        if (t == NULL)
            break;
        addrs[dr.allocs++] = (uintptr_t)t;
        if (t == dr.held)
            dr.hits++;
        /* keep a few alive for a while, drop the rest at once */
        if (nkeep < 64 && tu_rng_chance(&rng, 50)) {
            keep[nkeep++] = t;
        } else {
            ref_dec(t);
        }
        if (nkeep == 64 || tu_rng_chance(&rng, 1)) {
            while (nkeep)
                ref_dec(keep[--nkeep]);
        }
        if (i % 128 == 127) {
            ouro_quiescent(); /* hand the batch to RCU */
            if (i % 4096 == 4095)
                ouro_collect(0); /* take back whatever reached our pools */
        }
    }
    while (nkeep)
        ref_dec(keep[--nkeep]);
    ouro_quiescent();
    ouro_object_stats_t s;
    ouro_object_stats_get(&s);
    dr.deferred_during = s.deferred;
    qsort(addrs, dr.allocs, sizeof *addrs, cmp_ptr);
    for (size_t i = 1; i < dr.allocs; i++)
        dr.dups += addrs[i] == addrs[i - 1];
    free(addrs);
    free(keep);
    stage_set(&dr.st, 3);
    /* after the reader has passed a quiescent state (it is joined by main,
     * which then moves us to stage 4), memory may be reused */
    stage_wait(&dr.st, 4);
    ouro_barrier();
    for (size_t i = 0; i < 4096; i++) {
        tobj_t *t = tobj_new();
        if (t == NULL)
            break;
        dr.reuse_after += t == dr.held;
        ref_dec(t);
    }
    ouro_quiescent();
    return NULL;
}

START_TEST(test_deferred_reuse_after_grace_period)
{
    oracle_reset();
    double t0 = now_s();
    const unsigned rounds = (unsigned)tu_scale(4, 2);
    const size_t n = tu_scale(300000, 30000);
    unsigned long reuse_after = 0;
    for (unsigned round = 0; round < rounds; round++) {
        dr.st.stage = 0;
        atomic_store(&dr.slot, NULL);
        dr.held = NULL;
        dr.allocs = dr.hits = dr.dups = dr.deferred_during = 0;
        dr.reuse_after = 0;
        pthread_t rd, al;
        start_thread(&rd, dr_reader, NULL);
        start_thread(&al, dr_allocator, (void *)(uintptr_t)n);
        pthread_join(rd, NULL);
        stage_set(&dr.st, 4);
        pthread_join(al, NULL);
        ouro_barrier();
        ouro_object_stats_t s;
        ouro_object_stats_get(&s);
        reuse_after += dr.reuse_after;
        ASSERT_NO_FAILURES();
        ck_assert_uint_eq(dr.allocs, n);
        ck_assert_msg(dr.hits == 0,
                      "round %u: the held address %p was handed out %zu times while an online "
                      "reader held it", round, (void *)dr.held, dr.hits);
        ck_assert_msg(dr.dups == 0,
                      "round %u: %zu addresses came up twice while an online thread had not passed "
                      "a quiescent state", round, dr.dups);
        ck_assert_msg(dr.deferred_during >= n,
                      "round %u: only %zu objects deferred while the grace period was held (of %zu "
                      "freed)", round, dr.deferred_during, n);
        ck_assert_msg(s.deferred == 0, "round %u: %zu objects still deferred after ouro_barrier",
                      round, s.deferred);
    }
    if (verbose())
        fprintf(stderr,
                "deferred_reuse: %.2fs, %u rounds of %zu allocations while held; %lu reuses of the "
                "held address after the grace period\n",
                now_s() - t0, rounds, n, reuse_after);
    ASSERT_ALL_DIED_ONCE();
}
END_TEST

/* ------------------------------------------------------------------ */
/* 7. an owner's exit racing with other threads' drops                  */
/* ------------------------------------------------------------------ */
/*
 * Each round, an owner thread makes M objects with 1-3 references each,
 * hands them all to two dropper threads and exits at once (half the time
 * after dropping its own on some of them).  The droppers' drops race with
 * the owner's exit: queued to the live owner, queued while it merges, or
 * finding it gone.  Each object must die exactly once.
 */

#define EXR_DROPPERS 2

typedef struct exr_round_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tobj_t **objs;  /* each entry a reference; an object appears 1-3 times */
    size_t nrefs;
    size_t taken[EXR_DROPPERS];
    int published;
    unsigned round;
} exr_round_t;

typedef struct exr_dropper_arg_s {
    exr_round_t *r;
    int idx;
    unsigned rounds;
    pthread_barrier_t *bar;
} exr_dropper_arg_t;

static void *exr_owner(void *p)
{
    exr_round_t *r = p;
    tl_role = ROLE_OWNER;
    tu_rng_t rng = tu_rng_make(0xe1 + r->round);
    size_t m = r->nrefs; /* capacity on entry */
    size_t n = 0;
    tobj_t *own[512];
    size_t nown = 0;
    while (n + 3 <= m) {
        tobj_t *t = tobj_new();
        if (t == NULL)
            break;
        unsigned k = (unsigned)tu_rng_range(&rng, 1, 3);
        bool keep_own = nown < 512 && tu_rng_chance(&rng, 30);
        /* k references go to the droppers; keep our own on some */
        for (unsigned i = 1; i < k + keep_own; i++)
            ref_inc(t);
        for (unsigned i = 0; i < k; i++)
            r->objs[n++] = t;
        if (keep_own)
            own[nown++] = t;
    }
    /* shuffle so both droppers see each object */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)tu_rng_range(&rng, 0, i - 1);
        tobj_t *x = r->objs[i - 1];
        r->objs[i - 1] = r->objs[j];
        r->objs[j] = x;
    }
    pthread_mutex_lock(&r->lock);
    r->nrefs = n;
    r->published = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < nown; i++)
        ref_dec(own[i]);
    return NULL; /* exit now, while the droppers drop */
}

static void *exr_dropper(void *p)
{
    exr_dropper_arg_t *a = p;
    tl_role = ROLE_CONSUMER;
    for (unsigned round = 0; round < a->rounds; round++) {
        pthread_barrier_wait(a->bar); /* round set up */
        exr_round_t *r = a->r;
        pthread_mutex_lock(&r->lock);
        while (!r->published)
            pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
        /* dropper i takes entries i, i + D, ... */
        for (size_t i = (size_t)a->idx; i < r->nrefs; i += EXR_DROPPERS) {
            ref_dec(r->objs[i]);
            r->taken[a->idx]++;
        }
        if (round % 4 == 0)
            ouro_quiescent();
        pthread_barrier_wait(a->bar); /* round done */
    }
    return NULL;
}

START_TEST(test_owner_exit_races_remote_drops)
{
    oracle_reset();
    double t0 = now_s();
    ouro_object_stats_t before, after;
    stats_now(&before);
    const unsigned rounds = (unsigned)tu_scale(2500, 250);
    const size_t cap = 3000;
    exr_round_t r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    r.objs = malloc(cap * sizeof *r.objs);
    ck_assert_ptr_nonnull(r.objs);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, EXR_DROPPERS + 1);
    exr_dropper_arg_t da[EXR_DROPPERS];
    pthread_t dt[EXR_DROPPERS];
    for (int i = 0; i < EXR_DROPPERS; i++) {
        da[i] = (exr_dropper_arg_t){.r = &r, .idx = i, .rounds = rounds, .bar = &bar};
        start_thread(&dt[i], exr_dropper, &da[i]);
    }
    size_t total_refs = 0, total_taken = 0;
    for (unsigned round = 0; round < rounds; round++) {
        r.nrefs = cap;
        r.published = 0;
        r.round = round;
        for (int i = 0; i < EXR_DROPPERS; i++)
            r.taken[i] = 0;
        pthread_t owner;
        start_thread(&owner, exr_owner, &r);
        pthread_barrier_wait(&bar);
        pthread_barrier_wait(&bar);
        pthread_join(owner, NULL);
        total_refs += r.nrefs;
        for (int i = 0; i < EXR_DROPPERS; i++)
            total_taken += r.taken[i];
    }
    for (int i = 0; i < EXR_DROPPERS; i++)
        pthread_join(dt[i], NULL);
    pthread_barrier_destroy(&bar);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
    free(r.objs);
    ouro_barrier();
    stats_now(&after);
    uint32_t born = atomic_load(&next_id);
    if (verbose())
        fprintf(stderr, "exit_race: %.2fs, %u rounds, %u objects, %zu references dropped; queued %zu merged %zu\n",
                now_s() - t0, rounds, born, total_taken, after.merges_queued - before.merges_queued,
                after.merges_done - before.merges_done);
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(total_taken, total_refs);
    ASSERT_ALL_DIED_ONCE();
    ck_assert_uint_eq(after.created - before.created, born);
    ck_assert_uint_eq(after.freed - before.freed, born);
    ck_assert_uint_eq(after.deferred, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 8. threads registering while the collector's handshake runs          */
/* ------------------------------------------------------------------ */
/*
 * A spawner starts short-lived threads, two at a time: each registers,
 * makes an object and drops it (it dies on that thread), and exits, so
 * that its thread state is recycled by the next.  Meanwhile the test's
 * thread runs collections, whose handshake reads every live thread
 * state's pointer to that thread's store sequence (ouro_store's).  A state
 * must be complete when it is marked alive: a handshake that read a
 * recycled state's pointer into an exited thread's TLS, or an unset one,
 * is a data race (TSan builds report it) and could wait on garbage.
 * Every registration succeeds, every object dies once, on its own thread.
 */

#define REG_BATCH 2

static _Atomic bool reg_done;

static void *reg_worker(void *p)
{
    (void)p;
    tl_role = ROLE_WORKER;
    TCHECK(ouro_thread_register() == 0, "ouro_thread_register failed: %s", strerror(errno));
    tobj_t *t = tobj_new();
    if (t)
        ref_dec(t); /* local count to zero: dies here */
    return NULL; /* unregistered at exit */
}

static void *reg_spawner(void *p)
{
    unsigned long n = (unsigned long)(uintptr_t)p;
    for (unsigned long i = 0; i < n && atomic_load(&failures) == 0; i++) {
        pthread_t w[REG_BATCH];
        int started = 0;
        for (int k = 0; k < REG_BATCH; k++) {
            int e = pthread_create(&w[k], NULL, reg_worker, NULL);
            if (e != 0) {
                TFAIL("pthread_create: %s", strerror(e));
                break;
            }
            started++;
        }
        for (int k = 0; k < started; k++)
            pthread_join(w[k], NULL);
    }
    atomic_store(&reg_done, true);
    return NULL;
}

START_TEST(test_registration_races_handshake)
{
    oracle_reset();
    double t0 = now_s();
    ouro_object_stats_t before, after;
    stats_now(&before);
    atomic_store(&reg_done, false);
    unsigned long batches = tu_scale(1500, 300);
    pthread_t sp;
    start_thread(&sp, reg_spawner, (void *)(uintptr_t)batches);
    unsigned long collections = 0;
    do {
        ck_assert_int_ge(ouro_gc_collect(0), 0);
        collections++;
    } while (!atomic_load(&reg_done));
    pthread_join(sp, NULL);
    ouro_barrier();
    stats_now(&after);
    uint32_t born = atomic_load(&next_id);
    if (verbose())
        fprintf(stderr, "registration: %.2fs, %u threads, %lu collections\n", now_s() - t0, born,
                collections);
    ASSERT_NO_FAILURES();
    ck_assert_uint_eq(born, batches * REG_BATCH);
    ASSERT_ALL_DIED_ONCE();
    for (uint32_t i = 0; i < born; i++)
        ck_assert_uint_eq(atomic_load(&death_role[i]), ROLE_WORKER);
    ck_assert_uint_eq(after.created - before.created, born);
    ck_assert_uint_eq(after.freed - before.freed, born);
    ck_assert_uint_eq(after.deferred, 0);
}
END_TEST

/* Freed objects' memory is handed back to the thread that freed them once
 * their grace period is over (qsbr.c).  A thread that frees a lot and then
 * idles, alive, holds such batches: ouro_barrier from another thread must
 * still free them all, and a thread that exits must free its own. */
static const ouro_type_t idle_type = {.name = "idle", .basic_size = 48};
static stage_t idl = STAGE_INIT; /* 1 freed everything, 2 may exit */

static void *idle_freer(void *arg)
{
    long n = *(long *)arg;
    ouro_thread_register();
    /* in rounds, so that grace periods end and batches come back while it
     * is still freeing (some are freed here, the last ones wait) */
    for (long r = 0; r < 20; r++) {
        for (long i = 0; i < n / 20; i++)
            ouro_decref(ouro_new(&idle_type));
        usleep(2000);
    }
    ouro_quiescent(); /* hands its last batch to RCU (ouro_barrier does not reach it) */
    stage_set(&idl, 1);
    stage_wait(&idl, 2); /* alive and idle: no call into ouro */
    return NULL;
}

START_TEST(test_deferred_batches_of_an_idle_thread)
{
    long n = (long)tu_scale(400000, 40000);
    for (int round = 0; round < 2; round++) {
        idl.stage = 0;
        pthread_t t;
        start_thread(&t, idle_freer, &n);
        stage_wait(&idl, 1);
        ouro_object_stats_t st;
        ouro_barrier();
        stats_now(&st);
        ck_assert_msg(st.deferred == 0, "round %d: %zu objects' memory still deferred after ouro_barrier", round,
                      st.deferred);
        stage_set(&idl, 2);
        pthread_join(t, NULL);
        ouro_barrier();
        stats_now(&st);
        ck_assert_uint_eq(st.deferred, 0);
    }
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *brc_suite(void)
{
    Suite *s = suite_create("brc");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"storm", test_incref_decref_storm},
        {"owner_exit", test_owner_exits_while_others_hold},
        {"producer_consumer", test_producer_consumer_queued_merge},
        {"try_incref", test_try_incref_races_final_decref},
        {"weakref", test_weakref_get_races_last_decref},
        {"deferred_reuse", test_deferred_reuse_after_grace_period},
        {"exit_race", test_owner_exit_races_remote_drops},
        {"registration", test_registration_races_handshake},
        {"idle_batches", test_deferred_batches_of_an_idle_thread},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        /* a few seconds normally; sanitizers are 5-15x slower (and with
         * CK_FORK=no, Check's timeout does not apply) */
        tcase_set_timeout(tc, tu_sanitized() ? 600 : 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(brc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
