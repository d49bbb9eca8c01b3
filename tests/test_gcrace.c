/* test_gcrace.c — the cycle collector against mutators that act while
 * it runs: at chosen points inside a collection (a mutator thread acts on
 * cue from a traverse or from ouro's merge hook, and the collection waits
 * for it), where two collector bugs once freed a live object or freed one
 * twice, and where ouro_make_immortal once lost to an owner's merge; and
 * at random, threads rewiring a shared graph while another collects. */
#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "gcnode.h"

/* ---- a mutator thread acting on cue ---- */
/* The thread waits for a cue, runs the action, and signals it has: the
 * thread that gave the cue (inside a collection) waits meanwhile.  An
 * action of NULL ends the thread. */
static sem_t cue_go, cue_done;
static void (*cue_action)(void);

/* sem_wait, again after a signal */
static void sem_take(sem_t *s)
{
    while (sem_wait(s) != 0)
        ;
}

static void *cue_thread(void *arg)
{
    void (*first)(void) = (void (*)(void))arg;
    ouro_thread_register();
    first(); /* its objects are made and owned here */
    sem_post(&cue_done);
    for (;;) {
        sem_take(&cue_go);
        void (*act)(void) = cue_action;
        if (act == NULL)
            break;
        act();
        sem_post(&cue_done);
    }
    return NULL;
}

/* Run `act` on the cue thread and wait until it has, or until it parks
 * (cue_park) in the middle. */
static void cue(void (*act)(void))
{
    cue_action = act;
    sem_post(&cue_go);
    sem_take(&cue_done);
}

/* On the cue thread, inside an action (from one of ouro's hooks): hand
 * control back to the thread that gave the cue, and wait for cue_resume. */
static void cue_park(void)
{
    sem_post(&cue_done);
    sem_take(&cue_go);
}

/* Let the parked cue thread go on, and wait until its action is done. */
static void cue_resume(void)
{
    sem_post(&cue_go);
    sem_take(&cue_done);
}

static pthread_t cue_start(void (*first)(void))
{
    sem_init(&cue_go, 0, 0);
    sem_init(&cue_done, 0, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cue_thread, (void *)first), 0);
    sem_take(&cue_done);
    return t;
}

static void cue_stop(pthread_t t)
{
    cue_action = NULL;
    sem_post(&cue_go);
    pthread_join(t, NULL);
    sem_destroy(&cue_go);
    sem_destroy(&cue_done);
}

/* A node type whose traverse gives a cue on its n-th call for one chosen
 * node (the collector traverses a member once in the walk, and again when
 * it marks from it). */
static _Atomic(gnode_t *) cued_node[2];
static _Atomic int cued_calls[2];
static int cued_at[2];
static void (*cued_action[2])(void);

static int cue_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    for (int k = 0; k < 2; k++)
        if ((ouro_object_t *)atomic_load(&cued_node[k]) == self && atomic_fetch_add(&cued_calls[k], 1) + 1 == cued_at[k])
            cue(cued_action[k]);
    return g_traverse(self, visit, arg);
}

static const ouro_type_t tcue = {.name = "gnode-cue",
                                 .basic_size = sizeof(gnode_t) + 4 * sizeof(ouro_object_t *),
                                 .traverse = cue_traverse,
                                 .clear = g_clear,
                                 .dealloc = g_dealloc};

/* ---- a reference cut while the validation marks from a rejected member ---- */
/* On the cue thread, in list order (the order of marking and validation):
 * o <- p <- a (a chain: a holds p, p holds o, the thread holds a), and z,
 * a root whose traverse in the mark gives the first cue. */
static gnode_t *o_, *p_, *z_, *a_;
static ouro_object_t *held; /* the cue thread's counted reference, taken out of a */

static void cut_make(void)
{
    o_ = gnew(&t4);
    p_ = gnew(&tcue);
    z_ = gnew(&tcue);
    a_ = gnew(&t4);
    link_(p_, 0, o_);
    link_(a_, 0, p_);
    ouro_decref(&o_->ob); /* o: p's reference only; p: a's only */
    ouro_decref(&p_->ob);
}

/* Cue 1, while the mark traverses z (after it passed p and o, before it
 * reaches a): take p out of a.  p is ours now, so neither is a root, and
 * the mark reaches neither. */
static void cut_take_p(void)
{
    held = ouro_store(&a_->slot[0], NULL);
}

/* Cue 2, while the validation marks from p (rejected: shaded by cue 1),
 * after it validated o as garbage: drop o's only reference.  o was live
 * until now (reached through p); its owner frees it here. */
static void cut_drop_o(void)
{
    ouro_setref(&((gnode_t *)held)->slot[0], NULL);
}

static void cut_release(void)
{
    ouro_decref(held);
    ouro_decref(&a_->ob);
    ouro_decref(&z_->ob);
}

START_TEST(a_reference_cut_during_validation_frees_nothing_twice)
{
    setup();
    atomic_store(&cued_node[0], NULL);
    atomic_store(&cued_node[1], NULL);
    pthread_t t = cue_start(cut_make);
    /* z: cue 1 on its second traverse (the mark); p: cue 2 on its second
     * (the validation marking from it; the mark never reaches it) */
    cued_at[0] = 2;
    cued_action[0] = cut_take_p;
    atomic_store(&cued_calls[0], 0);
    atomic_store(&cued_node[0], z_);
    cued_at[1] = 2;
    cued_action[1] = cut_drop_o;
    atomic_store(&cued_calls[1], 0);
    atomic_store(&cued_node[1], p_);
    /* one marker: the passes go in list order */
    ck_assert_int_eq(ouro_gc_collect(0), 0); /* o died by its count, not as garbage */
    ck_assert_int_eq(atomic_load(&cued_calls[0]), 2);
    ck_assert_int_ge(atomic_load(&cued_calls[1]), 2);
    ck_assert_int_eq(atomic_load(&deaths), 1); /* o, once */
    atomic_store(&cued_node[0], NULL);
    atomic_store(&cued_node[1], NULL);
    cue(cut_release);
    cue_stop(t);
    ck_assert_int_eq(atomic_load(&deaths), 4);
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    ASSERT_NO_FAILURES();
}
END_TEST

/* ---- an owner's merge that a collection comes between ---- */
/* mo, made on the cue thread, and mp, made here, in a 2-cycle: each holds
 * the other through the other thread's count (shared).  The cue thread
 * then drops its own reference to mo, its last local one: mo and mp are
 * cyclic garbage from then on.  In the middle of that drop (ouro's merge
 * hook: the owner has claimed the merge of mo's counts, not made it) a
 * collection runs. */
static gnode_t *mo, *mp;
static _Atomic int merge_hooks;

static void merge_make(void)
{
    mo = gnew(&t4);
}

static void merge_link(void)
{
    link_(mo, 0, mp); /* mp counted by a thread that does not own it */
}

static void merge_collect_inside(ouro_object_t *o)
{
    if (o != &mo->ob)
        return;
    atomic_fetch_add(&merge_hooks, 1);
    cue_park(); /* the collection runs on the main thread meanwhile */
}

static void merge_drop(void)
{
    ouro_test_set_merge_hook(merge_collect_inside);
    ouro_decref(&mo->ob);
    ouro_test_set_merge_hook(NULL);
}

START_TEST(a_collection_inside_an_owners_merge_frees_nothing_twice)
{
    setup();
    atomic_store(&merge_hooks, 0);
    pthread_t t = cue_start(merge_make);
    mp = gnew(&t4);
    link_(mp, 0, mo); /* mo counted here: shared */
    cue(merge_link);
    ouro_decref(&mp->ob); /* mp: mo's reference only */
    /* the cue thread drops mo and stops in the hook: collect meanwhile */
    cue(merge_drop);
    ck_assert_int_eq(atomic_load(&merge_hooks), 1);
    /* mo's merge is half made: its count is not to be trusted, so the
     * collection keeps it, and mp with it (it does not wait for the owner,
     * parked here: gc_count gives up after a bounded number of tries and
     * the member counts as a root) */
    ck_assert_int_eq(ouro_gc_collect(0), 0);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    cue_resume(); /* the owner finishes its merge */
    cue_stop(t);
    ck_assert_int_eq(atomic_load(&deaths), 0); /* mp still holds mo */
    /* now plain cyclic garbage (promoted by the collection above) */
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ASSERT_NO_FAILURES();
}
END_TEST

/* ---- ouro_make_immortal inside an owner's merge ---- */
/* The owner drops its last local reference to im, which another thread
 * (here) still counts, and stops in the merge hook (tid cleared, local
 * not yet).  Another thread makes im immortal meanwhile: once the owner
 * finishes its merge, im must still be immortal (the merge's store to
 * local would otherwise undo it, and the next decref free it).  Not a
 * container: an immortal container would stay in the collector's
 * generations for the rest of the process (CK_FORK=no runs the tests in
 * one). */
static _Atomic int im_deaths;
static void im_dealloc(ouro_object_t *self)
{
    (void)self;
    atomic_fetch_add(&im_deaths, 1);
}
static const ouro_type_t tplain = {.name = "plain", .basic_size = sizeof(ouro_object_t), .dealloc = im_dealloc};
static ouro_object_t *im;
static sem_t im_calling;
static _Atomic int im_rc = -2;

static void im_make(void)
{
    im = ouro_new(&tplain);
    ck_assert_ptr_nonnull(im);
}

static void im_park(ouro_object_t *o)
{
    if (o != im)
        return;
    cue_park();
}

static void im_drop(void)
{
    ouro_test_set_merge_hook(im_park);
    ouro_decref(im);
    ouro_test_set_merge_hook(NULL);
}

static void *im_immortalize(void *arg)
{
    (void)arg;
    sem_post(&im_calling);
    atomic_store(&im_rc, ouro_make_immortal(im));
    return NULL;
}

START_TEST(make_immortal_during_an_owners_merge_sticks)
{
    setup();
    atomic_store(&im_deaths, 0);
    pthread_t t = cue_start(im_make);
    ouro_incref(im); /* counted here, on the shared side */
    cue(im_drop); /* the owner drops its reference, parks mid-merge */
    sem_init(&im_calling, 0, 0);
    pthread_t m;
    ck_assert_int_eq(pthread_create(&m, NULL, im_immortalize, NULL), 0);
    sem_take(&im_calling);
    tu_sleep_us(20000); /* let it reach the half-made merge (it waits there) */
    cue_resume(); /* the owner finishes its merge */
    pthread_join(m, NULL);
    cue_stop(t);
    sem_destroy(&im_calling);
    ck_assert_int_eq(atomic_load(&im_rc), 0);
    ck_assert(ouro_is_immortal(im));
    ouro_decref(im); /* immortal: nothing happens */
    ouro_decref(im);
    ck_assert(ouro_is_immortal(im));
    ck_assert_int_eq(atomic_load(&im_deaths), 0);
    ASSERT_NO_FAILURES();
}
END_TEST

/* ---- mutators racing collections ---- */
/* A shared table of roots (counted references in a container) and threads
 * that keep moving references between nodes, dropping and making cycles,
 * while another thread collects.  The oracle: a node reached from a root is
 * never dead (traverse and every access check its magic), and once the
 * threads stop, everything unreachable is freed by two full collections. */
enum { ROOTS = 64 };
static gnode_t *table;      /* a container with ROOTS slots */
static _Atomic int stop_flag;
static pthread_mutex_t table_lock[ROOTS];
static const ouro_type_t troots = GTYPE("roots", ROOTS, NULL);

/* Writers of a node's slots hold its stripe lock (one writer per slot, the
 * contract of ouro_store), taken after the table locks. */
static pthread_mutex_t node_lock[ROOTS];
static pthread_mutex_t *lock_of(gnode_t *n)
{
    return &node_lock[((uintptr_t)n >> 6) % ROOTS];
}

/* Every referent of a live node is alive: check a's, holding a's lock (so
 * none of its slots changes) while the table holds a. */
static void check_children(gnode_t *a)
{
    TCHECK(__atomic_load_n(&a->magic, __ATOMIC_RELAXED) == MAGIC_LIVE, "a node held by the table is dead");
    for (int k = 0; k < 4; k++) {
        gnode_t *c = (gnode_t *)ouro_load(&a->slot[k]);
        TCHECK(c == NULL || __atomic_load_n(&c->magic, __ATOMIC_RELAXED) == MAGIC_LIVE,
               "a node referenced by a live node is dead");
    }
}

static void *mutator(void *arg)
{
    tu_rng_t rng = tu_rng_make((uint64_t)(uintptr_t)arg);
    ouro_thread_register();
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int i = (int)tu_rng_range(&rng, 0, ROOTS - 1), j = (int)tu_rng_range(&rng, 0, ROOTS - 1);
        if (i > j) {
            int t = i;
            i = j;
            j = t;
        }
        pthread_mutex_lock(&table_lock[i]);
        if (j != i)
            pthread_mutex_lock(&table_lock[j]);
        gnode_t *a = (gnode_t *)ouro_load(&table->slot[i]);
        gnode_t *b = (gnode_t *)ouro_load(&table->slot[j]);
        switch (tu_rng_range(&rng, 0, 4)) {
        case 0: { /* a new node in slot i, pointing at what was there */
            gnode_t *n = (gnode_t *)ouro_new(&t4);
            if (n == NULL)
                break;
            __atomic_store_n(&n->magic, MAGIC_LIVE, __ATOMIC_RELAXED);
            __atomic_store_n(&n->nslots, 4, __ATOMIC_RELAXED);
            if (a) {
                ouro_incref(&a->ob);
                ouro_store(&n->slot[0], &a->ob); /* the collector may see n already */
            }
            ouro_setref(&table->slot[i], &n->ob);
            break;
        }
        case 1: /* an edge a -> b (cycles form) */
            if (a && b) {
                pthread_mutex_lock(lock_of(a));
                check_children(a);
                ouro_incref(&b->ob);
                ouro_setref(&a->slot[tu_rng_range(&rng, 0, 3)], &b->ob);
                pthread_mutex_unlock(lock_of(a));
            }
            break;
        case 2: /* move: slot i takes one of a's referents, a loses it */
            if (a) {
                pthread_mutex_lock(lock_of(a));
                check_children(a);
                ouro_object_t *r = ouro_store(&a->slot[tu_rng_range(&rng, 0, 3)], NULL); /* ours now */
                pthread_mutex_unlock(lock_of(a));
                if (r)
                    ouro_setref(&table->slot[i], r); /* drops a, perhaps the last reference */
            }
            break;
        case 3: /* drop the root */
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
            pthread_mutex_unlock(&table_lock[j]);
        pthread_mutex_unlock(&table_lock[i]);
        ouro_quiescent();
    }
    return NULL;
}

static void *collector(void *arg)
{
    (void)arg;
    ouro_thread_register();
    long gen = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        TCHECK(ouro_gc_collect((int)(gen++ % 3)) >= 0, "collect failed");
        tu_sleep_us(200);
    }
    return NULL;
}

START_TEST(mutators_racing_collections_never_lose_a_live_object)
{
    setup();
    /* two markers (a number set: by default the running mutators would
     * leave one), OURO_TEST_MARKERS another count */
    ouro_gc_set_markers(getenv("OURO_TEST_MARKERS") ? atoi(getenv("OURO_TEST_MARKERS")) : 2);
    for (int i = 0; i < ROOTS; i++) {
        pthread_mutex_init(&table_lock[i], NULL);
        pthread_mutex_init(&node_lock[i], NULL);
    }
    table = gnew(&troots);
    /* ballast: a static chain big enough that full collections share
     * their work between markers (gcmark.c gives each at least 4096) */
    enum { BALLAST = 12000 };
    gnode_t *ballast = gnew(&t4);
    for (int i = 1; i < BALLAST; i++) {
        gnode_t *n = gnew(&t4);
        link_(n, 0, ballast);
        ouro_decref(&ballast->ob);
        ballast = n;
    }
    atomic_store(&stop_flag, 0);
    enum { NT = 3 };
    pthread_t t[NT], c;
    for (int i = 0; i < NT; i++)
        pthread_create(&t[i], NULL, mutator, (void *)(uintptr_t)(i + 1));
    pthread_create(&c, NULL, collector, NULL);
    /* OURO_TEST_RACE_SECONDS: race longer when hunting a bug */
    long us = getenv("OURO_TEST_RACE_SECONDS") ? atol(getenv("OURO_TEST_RACE_SECONDS")) * 1000000L
                                               : (long)tu_scale(3000000, 2000000);
    tu_sleep_us(us);
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < NT; i++)
        pthread_join(t[i], NULL);
    pthread_join(c, NULL);
    ASSERT_NO_FAILURES();
    /* the ballast made full collections share their work */
    ouro_gc_stats_t st;
    ck_assert_int_ge(ouro_gc_collect(2), 0);
    ouro_gc_get_stats(&st);
    size_t share = st.last_objects / 4096; /* gcmark.c: 4096 objects a marker at least */
    unsigned want = (unsigned)ouro_gc_get_markers();
    ck_assert_uint_eq(st.last_markers, share < 2 ? 1 : share < want ? share : want);
    /* everything is unreachable once the table goes: two full collections */
    ouro_decref(&table->ob);
    ouro_decref(&ballast->ob);
    ouro_gc_collect(2);
    ouro_gc_collect(2);
    ouro_gc_get_stats(&st);
    ck_assert_uint_eq(st.young + st.objects[1] + st.objects[2], 0);
    ASSERT_NO_FAILURES();
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        a_reference_cut_during_validation_frees_nothing_twice,
        a_collection_inside_an_owners_merge_frees_nothing_twice,
        make_immortal_during_an_owners_merge_sticks,
        mutators_racing_collections_never_lose_a_live_object,
        NULL};
    return tu_run_case("gcrace", tests);
}
