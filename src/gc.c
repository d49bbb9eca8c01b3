/*
 * gc.c — the concurrent, generational cycle collector.
 *
 * Membership.  Every container (a type with `traverse`) carries a 16-byte
 * link prefix (object.h) and sits on one list:
 *   - young lists: 64 stripes, each with a spin lock and two lists; a
 *     thread links its new containers into the current list (young[parity])
 *     of its stripe.  The lock is uncontended but for the collector's
 *     hand-over and frees from other threads.
 *   - old lists: generations 1 and 2 and the permanent (frozen) one, which
 *     only the collector touches, under gc_mutex.
 * A collection takes the current young lists (flipping each stripe's
 * parity under its lock, O(1) per stripe), so from then on a young object
 * whose parity differs from its stripe's belongs to the collector, and the
 * collector marks it GC_OLD before the next hand-over.  A container that
 * dies on a list the collector owns is not unlinked by the thread freeing
 * it: it is pushed on the zombie stack (lock-free) and the collector
 * unlinks it and frees its memory, so mutators never wait for a
 * collection.  Who writes what:
 *   prefix links   young: the stripe lock holder; old: the gc_mutex holder
 *   prefix prev    during a collection, the collector's scratch word
 *   gc bits        the owner at creation (plain store, unpublished); then
 *                  only atomic RMWs: DEAD, HAS_WEAKREFS, IMMORTAL by the
 *                  object layer, DIRTY by the write barrier, and TRACKED,
 *                  OLD, PARITY, GEN, STRIPE, FINALIZED by the lock holders
 *
 * The protocol of a collection of set G (generations 0..g), with mutators
 * running throughout:
 *   H1. gc_active = this collection's dirty bit, then a handshake (membarrier(), then wait until no
 *       thread is inside an ouro_store that began before: see handshake()):
 *       from now on every reference store through ouro_store() shades
 *       (GC_DIRTY) both the value it stores and the one it overwrites, and
 *       every container that dies shades its referents before its dealloc
 *       drops them (its GC_DEAD and that shading are one barrier sequence,
 *       ouro__gc_die).  G was taken just before (so that what the handshake
 *       waits for does not make new members dirty).
 *   1.  For each x in G: snapshot c1(x) = its count, and count one
 *       internal reference for each G member x refers to (traverse).  One
 *       pass: a member's snapshot may come before or after the counting
 *       of the references to it, since a change to either after H1 shades
 *       (this collection's dirty bit is never cleared before its end).
 *   2.  Trial deletion: gc_refs(x) = c1(x) minus its internal references.
 *   3.  Mark from every x with gc_refs > 0 or DIRTY.  Unmarked: U.
 *       What is marked now survives (validation only marks more), so it
 *       is relinked in this pass already (gcmark.c).
 *   H2. A grace period (synchronize_rcu) and a handshake: no thread still
 *       holds a pointer into U that it read without a reference before
 *       now, every store and count change made before is visible, and every
 *       store or death that began before has shaded what it had to.  (A
 *       membarrier alone is not enough: a store preempted between its slot
 *       write and its shading could straddle the whole mark and validation;
 *       the concurrent test found exactly that.  Nor is the grace period:
 *       threads are offline outside ouro_read_begin/end, and a grace period
 *       does not wait for them; the test found a death whose GC_DEAD came
 *       before its barrier sequence straddling H2 that way.)
 *   4.  Validate (Bacon and Rajan's Delta and Sigma tests): reject every u
 *       in U whose count differs from c1(u), that is DIRTY, or whose count
 *       is zero (dying: its own dealloc will drop what it holds, so that
 *       is not ours to collect), and everything reachable from a rejected
 *       one.  Dead members are skipped.  If this pass met a dead one (its
 *       referents may not be shaded yet) or rejected one (marking from it
 *       reads its edges as they are now, and a mutator may have cut one to
 *       a candidate validated before, then dropped that candidate's last
 *       reference), wait until every store and death sequence open now
 *       has closed (the cut has shaded its old value then) and validate
 *       what is left again, until a pass does neither.  The rest is
 *       garbage: nothing outside it holds a reference to it.  Members that
 *       are settled now (marked or dead) and not yet relinked are relinked
 *       in the same pass (gcmark.c); the garbage is relinked after step 6.
 *   5.  Clear its weak references, run finalizers (once per object), and
 *       if any user code ran, validate again (resurrection).
 *   6.  Take a reference to each, `clear` each, drop the references: the
 *       counts fall to zero and the objects die; the collector frees their
 *       memory, through RCU like every other object's.
 * Why a live object is never collected: it is reachable from some counted
 * reference.  A path that existed at step 2 is traversed (a reference
 * counted at snapshot and not inside G makes a root).  A change after H1
 * to any edge into an object shades it (store barrier, or the dying
 * container's shading), and a change to a count is seen by step 4's
 * comparison; a rejection spreads over every edge of the current graph.
 * Objects reached only through pointers read without a reference are
 * covered by H2 (the RCU contract in ouro.h).  Collectors never stop a
 * mutator: the handshakes are membarrier() (an IPI the kernel sends) and a
 * grace period (each online thread's next quiescent state).
 *
 * Concurrent traversal.  traverse runs while other threads use the object,
 * so types must read their reference slots with ouro_load(), write them
 * with ouro_store(), and free any memory traverse reads through RCU (the
 * contract in ouro.h).  The collector is an RCU reader while it traverses:
 * it never traverses an object it saw dead (GC_DEAD is set before the
 * type's dealloc runs), so the referents it reads cannot be reused before
 * its next quiescent state.  Membership of a referent in G is read from
 * its prefix: bit 0 of `prev` set means "in G, scratch word".
 */
#include "config.h"
#include "gc.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

/* ---- the write barrier's switch (read inline by ouro_store) ---- */
int ouro__gc_barrier;     /* [atomic] non-zero: ouro_store calls ouro__gc_shade */
__thread unsigned long ouro__bseq __attribute__((tls_model("initial-exec")));
/* [gc_mutex writes] while a collection is between H1 and its end, the
 * GC_DIRTY bit (A or B, alternately) its barrier sets; 0 otherwise */
static _Atomic uint32_t gc_active;
static unsigned long collections_begun; /* [gc_mutex] */
enum { MB_PRIVATE = 1, MB_GLOBAL = 2, MB_FENCE = 3 };
static int mb_mode;       /* [init] how membarrier_all() reaches every thread */

/* ---- the state shared with gctrack.c and gcapi.c (gc.h) ---- */
struct ouro__gc_state ouro__gc = {
    .enabled = 1,
    .threshold = {700, 10, 10},
    .gc_mutex = PTHREAD_MUTEX_INITIALIZER,
};
__thread bool ouro__gc_in_collector __attribute__((tls_model("initial-exec")));

/* ---- the collector's own state, [gc_mutex] unless said otherwise ---- */
static size_t long_lived_total, long_lived_pending;
/* initial-exec, as every thread variable of ouro's: read on every death of
 * a container, and the default model calls __tls_get_addr in a shared
 * library (0.8% of binary-trees' samples) */
static __thread bool gc_clearing __attribute__((tls_model("initial-exec"))); /* step 6 on the collector's
                                    * thread: its stores and deaths need not shade (the validation they
                                    * would inform is over) */
static __thread bool gc_held __attribute__((tls_model("initial-exec"))); /* this thread holds gc_mutex: a
                                    * collection, its callbacks included */

/* gc_mutex for an API call; false (nothing to unlock) when this thread
 * already holds it, from a callback or finalizer: then the collector's
 * state is this thread's to read. */
bool ouro__gc_lock(void)
{
    if (gc_held)
        return false;
    pthread_mutex_lock(&ouro__gc.gc_mutex);
    return true;
}

void ouro__gc_unlock(bool locked)
{
    if (locked)
        pthread_mutex_unlock(&ouro__gc.gc_mutex);
}

/* gc_mutex for a collection (gc_held is set while it is held). */
static void collector_lock(void)
{
    pthread_mutex_lock(&ouro__gc.gc_mutex);
    gc_held = true;
}

static void collector_unlock(void)
{
    gc_held = false;
    pthread_mutex_unlock(&ouro__gc.gc_mutex);
}

#define CLEAR_BATCH 256  /* garbage cleared, then released, a batch at a time (step 6) */

/* ---- background collections and markers (parallel.c-like, below) ---- */
static sem_t bg_sem;
static _Atomic int bg_requested;
static bool bg_started;            /* [bg_lock] */
static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_done;     /* broadcast when a background round ends (CLOCK_MONOTONIC) */
static unsigned long bg_rounds;    /* [bg_lock] background rounds finished */
/* Backpressure: a thread that makes containers while generation 0 holds
 * more than PRESSURE_FACTOR thresholds (and PRESSURE_MIN) waits for the
 * background round in progress to end, at most PRESSURE_WAIT_MS: without
 * it a thread making cyclic garbage outruns the collector and the heap
 * grows without bound.  Bounded, so a collection that needs a lock the
 * waiting thread holds (a finalizer's) only delays it. */
#define PRESSURE_FACTOR 64
#define PRESSURE_MIN 16384
#define PRESSURE_WAIT_MS 20

/* ================================================================== */
/* membarrier: the asymmetric fence of the handshakes                  */
/* ================================================================== */
static void membarrier_init(void)
{
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
        mb_mode = MB_PRIVATE;
    else if (cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL))
        mb_mode = MB_GLOBAL;
    else
        mb_mode = MB_FENCE;
    if (mb_mode == MB_FENCE)
        /* no way to fence other threads from here: every store takes the
         * barrier's slow path, which fences itself (relaxed: set before any
         * thread can create an object, under ouro's init once) */
        __atomic_store_n(&ouro__gc_barrier, 1, __ATOMIC_RELAXED);
}

/* Every thread of the process executes a full memory barrier before this
 * returns (or, in MB_FENCE mode, every barrier fences on its own side). */
static void membarrier_all(void)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (mb_mode == MB_PRIVATE)
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
    else if (mb_mode == MB_GLOBAL)
        syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0);
    atomic_thread_fence(memory_order_seq_cst);
}

/* A handshake: after a fence on every thread, wait until no registered
 * thread is inside ouro_store (or a dying container's shading) that began
 * before it.  A store whose flag check came before the fence has then
 * landed, and one that saw the flag has shaded: no store straddles the
 * handshake.  Only the collector waits (a thread preempted mid-store
 * delays the collection, never another mutator). */
static void wait_store(ouro_tstate_t *ts, void *arg)
{
    (void)arg;
    if (!ts->alive || ts->bseq == NULL)
        return;
    /* acquire: pairs with the release of the store's second half */
    unsigned long s = __atomic_load_n(ts->bseq, __ATOMIC_ACQUIRE);
    for (int i = 0; (s & 1) && __atomic_load_n(ts->bseq, __ATOMIC_ACQUIRE) == s; i++) {
        if (i < 100)
            __builtin_ia32_pause();
        else
            sched_yield();
    }
}

static void handshake(void)
{
    membarrier_all();
    ouro__tstates_visit(wait_store, NULL);
}

/* Wait until no store's or death's barrier sequence that is open now
 * stays open.  No fence is needed first: the validation saw GC_DEAD, which
 * its sequence's odd value precedes (the locked RMW that set it drained
 * the dying thread's stores), or read a slot's new value, whose release
 * store comes after the odd value (ouro_store), with an acquire load. */
static void settle(void)
{
    ouro__tstates_visit(wait_store, NULL);
}

/* H2: a grace period (no borrowed pointer from before survives it), then
 * a handshake.  The caller is not an RCU reader here. */
static void handshake_h2(void)
{
    urcu_qsbr_synchronize_rcu();
    handshake();
}

/* ================================================================== */
/* initialisation                                                      */
/* ================================================================== */
static void bg_cond_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&bg_done, &a);
    pthread_condattr_destroy(&a);
}

void ouro__gc_init(void)
{
    ouro__gc_track_init();
    for (int g = 0; g < 4; g++)
        list_init(&ouro__gc.gens[g]);
    sem_init(&bg_sem, 0, 0);
    bg_cond_init();
    membarrier_init();
    /* relaxed: ouro's init once, before any thread uses the collector */
    if (ouro__options[OURO_OPTION_GC] == 0)
        atomic_store_explicit(&ouro__gc.enabled, 0, memory_order_relaxed);
    atomic_store_explicit(&ouro__gc.threshold[0], ouro__options[OURO_OPTION_GC_THRESHOLD], memory_order_relaxed);
}

/* ================================================================== */
/* the write barrier                                                   */
/* ================================================================== */
static inline void shade(ouro_object_t *o, uint32_t bit)
{
    if (o == NULL || !ouro__is_container(o))
        return;
    /* relaxed: H2's membarrier and grace period make it visible to the
     * validation; a first load spares the RMW when already shaded (the
     * collection never clears its own bit, see object.h) */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if ((gc & (GC_TRACKED | bit)) == GC_TRACKED)
        __atomic_fetch_or(&o->gc, bit, __ATOMIC_RELAXED);
}

/* The dirty bit of the running collection, or 0. */
static inline uint32_t barrier_active(void)
{
    if (mb_mode == MB_FENCE)
        /* the mutator's half of Dekker's protocol: our store before the
         * collector's flag read */
        atomic_thread_fence(memory_order_seq_cst);
    /* relaxed: membarrier_all() after the collector's store orders it */
    return atomic_load_explicit(&gc_active, memory_order_relaxed);
}

void ouro__gc_shade(ouro_object_t *old, ouro_object_t *value)
{
    if (ouro__tstate == NULL)
        ouro__tstate_get(); /* register: collections must see our stores in flight */
    uint32_t bit = barrier_active();
    if (!bit || gc_clearing)
        return;
    shade(old, bit);
    shade(value, bit);
}

static int shade_visit(ouro_object_t *r, void *arg)
{
    shade(r, (uint32_t)(uintptr_t)arg);
    return 0;
}

/* A container dies: set GC_DEAD and, during a collection, shade its
 * referents before its dealloc drops them; returns the gc bits before.
 * Both happen inside one barrier sequence (as ouro_store's, ouro.h), so a
 * collector that saw the object dead, and so stopped traversing it, waits
 * in its next handshake until the referents are shaded.  Mutators run
 * offline by default: the grace period of H2 does not wait for them, only
 * the handshake does (the concurrent test found a death straddling H2
 * when GC_DEAD was set before the sequence opened).  No user code runs
 * inside: a nested ouro_store would close the sequence early. */
uint32_t ouro__gc_die(ouro_object_t *o)
{
    /* relaxed stores with compiler fences, as in ouro_store: ordered for
     * the collector by its membarrier; the closing store is a release */
    unsigned long seq = ouro__bseq;
    __atomic_store_n(&ouro__bseq, seq + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    /* seq_cst: see dealloc_one (object.c) */
    uint32_t gc = __atomic_fetch_or(&o->gc, GC_DEAD, __ATOMIC_SEQ_CST);
    /* relaxed: see ouro__gc_shade; a collection that starts after this
     * load sees the counts our dealloc changes */
    uint32_t bit;
    if (!(gc & GC_DEAD) && __atomic_load_n(&ouro__gc_barrier, __ATOMIC_RELAXED) && (bit = barrier_active()) &&
        !gc_clearing)
        o->type->traverse(o, shade_visit, (void *)(uintptr_t)bit);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&ouro__bseq, seq + 2, __ATOMIC_RELEASE);
    return gc;
}

/* ================================================================== */
/* the collection                                                      */
/* ================================================================== */
uint64_t ouro__gc_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Free the containers that died on this thread during the collection
 * without a record in `dying` (out of memory): members of G, now on
 * generation `dest`'s list, and old objects outside G alike.  The lists
 * are whole again.  Out of memory only, so a walk of every old list is
 * fine. */
static void free_orphans(ouro_tstate_t *ts)
{
    for (int g = 1; g <= 3 && ouro__gc.orphans; g++) {
        gc_head_t *l = &ouro__gc.gens[g];
        for (gc_head_t *h = NEXT(l), *next; h != l; h = next) {
            next = NEXT(h);
            ouro_object_t *o = gc_object_of(h);
            /* relaxed: ORPHAN is set by this thread */
            if ((__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & (GC_DEAD | GC_ORPHAN)) == (GC_DEAD | GC_ORPHAN)) {
                ouro__gc_untrack_old_locked(o);
                if (ts)
                    ouro__defer_free(ts, ouro__object_block(o));
                ouro__gc.orphans--;
            }
        }
    }
}

static void pause_record(uint64_t ns)
{
    int b = 0;
    for (uint64_t us = ns / 1000; us > 1 && b < OURO_GC_PAUSE_BUCKETS - 1; us >>= 1)
        b++;
    ouro__gc.stats.pause_hist[b]++;
    if (ns > ouro__gc.stats.pause_max_ns)
        ouro__gc.stats.pause_max_ns = ns;
    ouro__gc.stats.total_ns += ns;
}

/* One collection of generations 0..gen; gc_mutex held.  Returns the number
 * of unreachable objects found, or -1 (ENOMEM) if it had to give up (then
 * every object survives). */
static long collect_locked(int gen)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL) {
        errno = ENOMEM;
        return -1;
    }
    ouro__gc_run_callbacks(OURO_GC_START, gen, 0, 0);
    uint64_t t0 = ouro__gc_now_ns();
    ouro__gc_in_collector = true;
    ouro__gc_drain_zombies_locked();

    /* G is taken first: containers made or changed after this and before
     * H1 are not in it, or are counted as H1 leaves them; the protocol
     * needs only that G is fixed before the first snapshot */
    gc_head_t G;
    list_init(&G);
    gc_set_t set = {.maxgen = gen};
    /* generation 2 first, in a full collection: its members then keep
     * their positions from one full collection to the next, less the
     * deaths, whatever the younger generations hold (the walk prefetches
     * by the last collection's order, gcwalk.c) */
    size_t expect = 0;
    if (gen == 2) {
        list_splice(&ouro__gc.gens[2], &G);
        expect += ouro__gc.gen_size[2];
        ouro__gc.gen_size[2] = 0;
    }
    expect += ouro__gc_take_young(&G, &set.young_parity);
    for (int g = 1; g <= gen && g < 2; g++) {
        list_splice(&ouro__gc.gens[g], &G);
        expect += ouro__gc.gen_size[g];
        ouro__gc.gen_size[g] = 0;
    }

    /* H1: the barrier is on everywhere before we read anything */
    uint32_t dirty = (++collections_begun & 1) ? GC_DIRTY_A : GC_DIRTY_B;
    atomic_store_explicit(&gc_active, dirty, memory_order_seq_cst);
    if (mb_mode != MB_FENCE)
        __atomic_store_n(&ouro__gc_barrier, 1, __ATOMIC_SEQ_CST);
    handshake();

    int dest = gen < 2 ? gen + 1 : 2;

    size_t found = 0, uncollectable = 0;
    hvec_t garbage = {0};
    gc_mark_report_t rep = {.markers = 1};
    uint64_t *phase_ns = rep.phase_ns;
    uint64_t t_phase = ouro__gc_now_ns();
    phase_ns[OURO_GC_PHASE_H1] = t_phase - t0;
    /* steps 1-4, with H2 between the mark and the validation */
    ouro__gc.orphans = 0;
    ouro__gc.dying.n = 0;
    bool oom = !ouro__gc_mark(&G, expect, &set, dest, &garbage, dirty, handshake_h2, settle, &rep);
    for (int p = OURO_GC_PHASE_WALK; p <= OURO_GC_PHASE_VALIDATE; p++)
        t_phase += phase_ns[p];
    if (oom)
        garbage.n = 0;

    if (garbage.n && rep.user_code) {
        /* 5. weak references first, then finalizers, then look again */
        bool user_code = false;
        for (size_t i = 0; i < garbage.n; i++) {
            ouro_object_t *o = gc_object_of(garbage.v[i]);
            if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_HAS_WEAKREFS) {
                ouro__weakrefs_clear(o);
                user_code = true;
            }
        }
        for (size_t i = 0; i < garbage.n; i++) {
            ouro_object_t *o = gc_object_of(garbage.v[i]);
            /* relaxed: FINALIZED is set only here, under gc_mutex */
            if (o->type->finalize &&
                !(__atomic_fetch_or(&o->gc, GC_FINALIZED, __ATOMIC_RELAXED) & GC_FINALIZED)) {
                o->type->finalize(o);
                user_code = true;
            }
        }
        if (user_code)
            ouro__gc_revalidate(&garbage, settle);
    }
    if (garbage.n) {
        found = garbage.n;
        /* 6. break the cycles; the objects die as their counts reach zero,
         * here: their counts are merged on this thread first (brc.c), and
         * each gets a reference of ours so that none dies before its clear */
        for (size_t i = 0; i < garbage.n; i++) {
            ouro_object_t *o = gc_object_of(garbage.v[i]);
            ouro_assert(!ouro__gc_is_dead(o)); /* validation settles the dead ones */
            ouro__brc_merge_unreachable(o);
            ouro_incref(o);
        }
        unsigned dbg = atomic_load_explicit(&ouro__gc.debug_flags, memory_order_relaxed);
        if (dbg & OURO_GC_DEBUG_SAVEALL) {
            for (size_t i = 0; i < garbage.n; i++) {
                if (ouro__gc.saved_n == ouro__gc.saved_cap) {
                    size_t cap = ouro__gc.saved_cap ? ouro__gc.saved_cap * 2 : 64;
                    ouro_object_t **v = ouro_realloc(ouro__gc.saved, cap * sizeof *v);
                    if (v == NULL) {
                        ouro_decref(gc_object_of(garbage.v[i]));
                        continue;
                    }
                    ouro__gc.saved = v;
                    ouro__gc.saved_cap = cap;
                }
                ouro__gc.saved[ouro__gc.saved_n++] = gc_object_of(garbage.v[i]); /* keeps our reference */
            }
        } else {
            /* clear, then drop our references, a batch at a time so that
             * the batch is still in cache: an object of a later batch
             * cannot die before its clear, as it holds our reference */
            gc_clearing = true;
            for (size_t b = 0; b < garbage.n; b += CLEAR_BATCH) {
                size_t e = b + CLEAR_BATCH < garbage.n ? b + CLEAR_BATCH : garbage.n;
                for (size_t i = b; i < e; i++) {
                    ouro_object_t *o = gc_object_of(garbage.v[i]);
                    if (o->type->clear)
                        o->type->clear(o);
                }
                for (size_t i = b; i < e; i++)
                    ouro_decref(gc_object_of(garbage.v[i]));
            }
            gc_clearing = false;
            /* garbage of ours whose last reference another thread dropped
             * went to our merge queue (ouro__brc_merge_unreachable leaves
             * it queued): merge it now, so that it dies in this collection
             * like the rest (a callback after it would see it alive with
             * a count of zero) */
            if (ts)
                ouro__brc_merge_pending(ts);
            /* dead objects keep their memory until `dying` is unlinked below */
            /* still referenced after clear (no clear, or it resurrected);
             * not those whose last reference went to another owner's merge
             * queue (count zero: they die at that owner's next quiescent
             * state) */
            for (size_t i = 0; i < garbage.n; i++) {
                ouro_object_t *o = gc_object_of(garbage.v[i]);
                if (!ouro__gc_is_dead(o) && ouro_refcount(o) > 0)
                    uncollectable++;
            }
        }
    }
    ouro__hvec_free(&garbage);

    size_t survivors = ouro__gc_mark_end();
    list_splice(&G, &ouro__gc.gens[dest]);
    ouro__gc.gen_size[dest] += survivors;
    if (ouro__gc.orphans)
        free_orphans(ts);
    /* the lists are whole again: unlink and free what died on this thread */
    for (size_t i = 0; i < ouro__gc.dying.n; i++) {
        ouro_object_t *o = gc_object_of(ouro__gc.dying.v[i]);
        ouro__gc_untrack_old_locked(o);
        if (ts)
            ouro__defer_free(ts, ouro__object_block(o));
    }
    ouro__gc.dying.n = 0;
    if (ouro__gc.dying.cap > 65536)
        ouro__hvec_free(&ouro__gc.dying);

    /* the end: the barrier goes off (release: after our last scratch use) */
    if (mb_mode != MB_FENCE)
        __atomic_store_n(&ouro__gc_barrier, 0, __ATOMIC_RELEASE);
    atomic_store_explicit(&gc_active, 0, memory_order_release);
    ouro__gc_drain_zombies_locked();
    ouro__gc_in_collector = false;

    /* bookkeeping, as CPython's */
    if (gen < 2)
        atomic_fetch_add_explicit(&ouro__gc.gen_count[gen + 1], 1, memory_order_relaxed);
    for (int g = 1; g <= gen; g++)
        atomic_store_explicit(&ouro__gc.gen_count[g], 0, memory_order_relaxed);
    if (gen == 2) {
        long_lived_total = survivors;
        long_lived_pending = 0;
    } else if (gen == 1) {
        long_lived_pending += survivors;
    }
    ouro__gc.stats.gen[gen].collections++;
    ouro__gc.stats.gen[gen].collected += found;
    ouro__gc.stats.gen[gen].uncollectable += uncollectable;
    ouro__gc.stats.last_objects = rep.examined;
    ouro__gc.stats.last_markers = rep.markers;
    uint64_t t_end = ouro__gc_now_ns(), dt = t_end - t0;
    phase_ns[OURO_GC_PHASE_FINISH] = t_end - t_phase;
    memcpy(ouro__gc.stats.last_phase_ns, phase_ns, sizeof rep.phase_ns);
    ouro__gc.stats.last_ns = dt;
    pause_record(dt);
    ouro__defer_flush(ts);
    ouro__gc_run_callbacks(OURO_GC_STOP, gen, found, uncollectable);
    if (oom) {
        errno = ENOMEM;
        return -1;
    }
    return (long)found;
}

/* Which generation an automatic collection takes (CPython's rule), or -1. */
static int auto_generation(void)
{
    /* relaxed: thresholds and counts are independent heuristics */
    for (int g = 2; g >= 0; g--) {
        long c = g ? atomic_load_explicit(&ouro__gc.gen_count[g], memory_order_relaxed) : ouro__gc_young_count();
        long t = atomic_load_explicit(&ouro__gc.threshold[g], memory_order_relaxed);
        if (t <= 0 || c <= t)
            continue;
        /* a full collection waits for 25% growth of the long-lived objects */
        if (g == 2 && long_lived_pending < long_lived_total / 4)
            continue;
        return g;
    }
    return -1;
}

/* ---- automatic collections run on a background thread ---- */
static void *bg_main(void *arg)
{
    (void)arg;
    ouro_thread_register();
    for (;;) {
        while (sem_wait(&bg_sem) != 0)
            ;
        /* relaxed: a request made after this store posts again */
        atomic_store_explicit(&bg_requested, 0, memory_order_relaxed);
        collector_lock();
        int g;
        if (atomic_load_explicit(&ouro__gc.enabled, memory_order_relaxed) && (g = auto_generation()) >= 0)
            collect_locked(g);
        collector_unlock();
        ouro_quiescent();
        pthread_mutex_lock(&bg_lock);
        bg_rounds++;
        pthread_cond_broadcast(&bg_done);
        pthread_mutex_unlock(&bg_lock);
    }
    return NULL;
}

/* Backpressure (see PRESSURE_FACTOR): wait for the background round in
 * progress to end.  Not from a thread the collection could wait for: one
 * online or inside a read section (H2's grace period needs it), or one
 * inside a collection (a callback, a finalizer). */
static ouro_noinline void pressure_wait(ouro_tstate_t *ts)
{
    if (gc_held || ouro__gc_in_collector || ts->online || ts->read_depth)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += PRESSURE_WAIT_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&bg_lock);
    unsigned long seen = bg_rounds;
    while (bg_started && bg_rounds == seen)
        if (pthread_cond_timedwait(&bg_done, &bg_lock, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&bg_lock);
    atomic_fetch_add_explicit(&ouro__gc.pressure_waits, 1, memory_order_relaxed); /* a statistic */
}

void ouro__gc_maybe_collect(ouro_tstate_t *ts)
{
    /* relaxed: heuristics; a stale read only shifts a collection */
    long t = atomic_load_explicit(&ouro__gc.threshold[0], memory_order_relaxed), y;
    if (!atomic_load_explicit(&ouro__gc.enabled, memory_order_relaxed) || t <= 0 ||
        (y = ouro__gc_young_count()) <= t)
        return;
    if (ouro__gc_in_collector)
        return;
    if (!atomic_exchange_explicit(&bg_requested, 1, memory_order_relaxed)) {
        pthread_mutex_lock(&bg_lock);
        if (!bg_started) {
            pthread_t th;
            if (pthread_create(&th, NULL, bg_main, NULL) == 0) {
                pthread_detach(th);
                bg_started = true;
            }
        }
        pthread_mutex_unlock(&bg_lock);
        sem_post(&bg_sem);
    }
    if (y > PRESSURE_MIN && y / PRESSURE_FACTOR > t)
        pressure_wait(ts);
}

/* ================================================================== */
/* the API: a collection on demand (the rest is in gcapi.c)           */
/* ================================================================== */
long ouro_gc_collect(int generation)
{
    if (generation < 0 || generation > 2) {
        errno = EINVAL;
        return -1;
    }
    if (gc_held)
        return 0; /* from a callback or finalizer: one at a time, as Python */
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if (ts->read_depth) {
        errno = EBUSY; /* waiting for a grace period inside a read section */
        return -1;
    }
    bool online = ts->online;
    if (online)
        ouro_thread_offline();
    collector_lock();
    long r = collect_locked(generation);
    collector_unlock();
    if (online)
        ouro_thread_online();
    return r;
}

/* ================================================================== */
/* fork                                                                */
/* ================================================================== */
void ouro__gc_fork_prepare(void)
{
    pthread_mutex_lock(&bg_lock);
    pthread_mutex_lock(&ouro__gc.gc_mutex);
    ouro__gc_mark_fork_prepare();
    for (int i = 0; i < NSTRIPES; i++)
        spin_lock(&ouro__gc.stripes[i].lock);
}

void ouro__gc_fork_parent(void)
{
    for (int i = NSTRIPES - 1; i >= 0; i--)
        spin_unlock(&ouro__gc.stripes[i].lock);
    ouro__gc_mark_fork_parent();
    pthread_mutex_unlock(&ouro__gc.gc_mutex);
    pthread_mutex_unlock(&bg_lock);
}

/* The child has no background collector and no marker threads. */
void ouro__gc_fork_child(void)
{
    ouro__gc_fork_parent();
    bg_started = false;
    atomic_store_explicit(&bg_requested, 0, memory_order_relaxed); /* the child is single-threaded */
    sem_init(&bg_sem, 0, 0);
    bg_cond_init();
    ouro__gc_mark_fork_child();
}
