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
 *   H1. gc_active = 1, then a handshake (membarrier(), then wait until no
 *       thread is inside an ouro_store that began before: see handshake()):
 *       from now on every reference store through ouro_store() shades
 *       (GC_DIRTY) both the value it stores and the one it overwrites, and
 *       every container that dies shades its referents before its dealloc
 *       drops them.  Then G is taken.
 *   1.  For each x in G: clear DIRTY, then snapshot c1(x) = its count.
 *   2.  Trial deletion: gc_refs(x) = c1(x) minus the references from G
 *       objects, found by traverse.
 *   3.  Mark from every x with gc_refs > 0 or DIRTY.  Unmarked: U.
 *   H2. A grace period (synchronize_rcu) and a handshake: no thread still
 *       holds a pointer into U that it read without a reference before
 *       now, every store and count change made before is visible, and every
 *       store that began before has shaded what it had to.  (A membarrier
 *       alone is not enough: a store preempted between its slot write and
 *       its shading could straddle the whole mark and validation; the
 *       concurrent test found exactly that.)
 *   4.  Validate (Bacon and Rajan's Delta and Sigma tests): reject every u
 *       in U whose count differs from c1(u), or that is DIRTY or dead, and
 *       everything reachable from a rejected one.  The rest is garbage.
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
#include "object.h"

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
#include <urcu/lfstack.h>

/* ---- the write barrier's switch (read inline by ouro_store) ---- */
int ouro__gc_barrier;     /* [atomic] non-zero: ouro_store calls ouro__gc_shade */
__thread unsigned long ouro__bseq __attribute__((tls_model("initial-exec")));
static _Atomic int gc_active; /* [gc_mutex writes] a collection is between H1 and its end */
enum { MB_PRIVATE = 1, MB_GLOBAL = 2, MB_FENCE = 3 };
static int mb_mode;       /* [init] how membarrier_all() reaches every thread */

/* ---- stripes of young lists ---- */
#define NSTRIPES 64
typedef struct stripe_s {
    _Atomic int lock;
    int parity;            /* [lock] the current list is young[parity] */
    _Atomic long count;    /* [lock] writes; tracked minus freed since the last hand-over */
    gc_head_t young[2];    /* [lock] */
} __attribute__((aligned(64))) stripe_t;
static stripe_t stripes[NSTRIPES];
static _Atomic unsigned next_stripe;

/* ---- the collector's state, [gc_mutex] unless said otherwise ---- */
static pthread_mutex_t gc_mutex = PTHREAD_MUTEX_INITIALIZER;
static gc_head_t gens[4];          /* 1, 2 and 3 (permanent); 0 unused */
static size_t gen_size[4];
static _Atomic long gen_count[3];  /* 1: gen-0 collections since a gen-1 one; 2: gen-1 since gen-2 */
static _Atomic long threshold[3] = {700, 10, 10};
static _Atomic int enabled = 1;
static _Atomic unsigned debug_flags;
static size_t long_lived_total, long_lived_pending;
static ouro_gc_stats_t stats;
static ouro_object_t **saved;      /* OURO_GC_DEBUG_SAVEALL: garbage kept, with a reference each */
static size_t saved_n, saved_cap;
static __thread bool in_collector; /* this thread holds gc_mutex for a collection */

/* ---- zombies: containers that died on lists the collector owns ---- */
typedef struct zombie_s {
    struct cds_lfs_node node;
    ouro_object_t *o;
} zombie_t;
static struct __cds_lfs_stack zombies;
static _Atomic size_t nzombies;
#define ZOMBIE_DRAIN 4096

/* ---- callbacks ---- */
#define MAX_CALLBACKS 16
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    ouro_gc_callback *fn;
    void *arg;
} callbacks[MAX_CALLBACKS];
static int ncallbacks;

/* ---- background collections and markers (parallel.c-like, below) ---- */
static sem_t bg_sem;
static _Atomic int bg_requested;
static bool bg_started;            /* [bg_lock] */
static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;

/* ================================================================== */
/* lists (relaxed atomics: see object.h)                               */
/* ================================================================== */
static inline gc_head_t *NEXT(gc_head_t *h)
{
    return (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed);
}
static inline gc_head_t *PREV(gc_head_t *h)
{
    return (gc_head_t *)atomic_load_explicit(&h->prev, memory_order_relaxed);
}
static inline void SET_NEXT(gc_head_t *h, gc_head_t *v)
{
    atomic_store_explicit(&h->next, (uintptr_t)v, memory_order_relaxed);
}
static inline void SET_PREV(gc_head_t *h, gc_head_t *v)
{
    atomic_store_explicit(&h->prev, (uintptr_t)v, memory_order_relaxed);
}

static void list_init(gc_head_t *l)
{
    SET_NEXT(l, l);
    SET_PREV(l, l);
}

static inline bool list_empty(gc_head_t *l)
{
    return NEXT(l) == l;
}

static inline void list_append(gc_head_t *l, gc_head_t *h)
{
    gc_head_t *last = PREV(l);
    SET_PREV(h, last);
    SET_NEXT(h, l);
    SET_NEXT(last, h);
    SET_PREV(l, h);
}

static inline void list_unlink(gc_head_t *h)
{
    gc_head_t *p = PREV(h), *n = NEXT(h);
    SET_NEXT(p, n);
    SET_PREV(n, p);
    SET_NEXT(h, NULL);
    SET_PREV(h, NULL);
}

/* Append all of `from` to `to`; `from` becomes empty. */
static void list_splice(gc_head_t *from, gc_head_t *to)
{
    if (list_empty(from))
        return;
    gc_head_t *first = NEXT(from), *last = PREV(from), *tail = PREV(to);
    SET_NEXT(tail, first);
    SET_PREV(first, tail);
    SET_NEXT(last, to);
    SET_PREV(to, last);
    list_init(from);
}

/* ================================================================== */
/* locks                                                               */
/* ================================================================== */
static inline void spin_lock(_Atomic int *l)
{
    /* acquire: the list operations of the previous holder happen before ours */
    while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
        for (int i = 0; atomic_load_explicit(l, memory_order_relaxed); i++) {
            if (i < 64)
                __builtin_ia32_pause();
            else
                sched_yield();
        }
    }
}

static inline void spin_unlock(_Atomic int *l)
{
    /* release: pairs with spin_lock's acquire */
    atomic_store_explicit(l, 0, memory_order_release);
}

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

/* ================================================================== */
/* initialisation                                                      */
/* ================================================================== */
void ouro__gc_init(void)
{
    for (int i = 0; i < NSTRIPES; i++) {
        list_init(&stripes[i].young[0]);
        list_init(&stripes[i].young[1]);
    }
    for (int g = 0; g < 4; g++)
        list_init(&gens[g]);
    __cds_lfs_init(&zombies);
    sem_init(&bg_sem, 0, 0);
    membarrier_init();
    if (ouro__options[OURO_OPTION_GC] == 0)
        atomic_store_explicit(&enabled, 0, memory_order_relaxed);
    atomic_store_explicit(&threshold[0], ouro__options[OURO_OPTION_GC_THRESHOLD], memory_order_relaxed);
}

unsigned ouro__gc_next_stripe(void)
{
    /* relaxed: any spread of threads over stripes is correct */
    return atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % NSTRIPES;
}

static inline unsigned stripe_of(uint32_t gc)
{
    return (gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT;
}

/* Set the gc bits under `mask` to `bits` (other threads may be setting
 * DIRTY, DEAD or HAS_WEAKREFS meanwhile, hence the CAS; relaxed: the lock
 * that makes us the list's owner orders what matters). */
static inline void gc_bits_set(ouro_object_t *o, uint32_t mask, uint32_t bits)
{
    uint32_t old = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    while ((old & mask) != bits &&
           !__atomic_compare_exchange_n(&o->gc, &old, (old & ~mask) | bits, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
}

#define LOC_MASK (GC_TRACKED | GC_OLD | GC_PARITY | GC_GEN_MASK | GC_STRIPE_MASK)
static inline uint32_t loc_old(int gen)
{
    return GC_TRACKED | GC_OLD | ((uint32_t)gen << GC_GEN_SHIFT);
}

/* ================================================================== */
/* tracking                                                            */
/* ================================================================== */
static void maybe_collect(void);

static void track_young(ouro_tstate_t *ts, ouro_object_t *o)
{
    unsigned si = ts->gc_stripe;
    stripe_t *s = &stripes[si];
    spin_lock(&s->lock);
    int p = s->parity;
    gc_bits_set(o, LOC_MASK, GC_TRACKED | (p ? GC_PARITY : 0) | (si << GC_STRIPE_SHIFT));
    list_append(&s->young[p], gc_head_of(o));
    long n = atomic_load_explicit(&s->count, memory_order_relaxed) + 1;
    atomic_store_explicit(&s->count, n, memory_order_relaxed);
    spin_unlock(&s->lock);
    if ((n & 31) == 0)
        maybe_collect();
}

void ouro__gc_track_new(ouro_tstate_t *ts, ouro_object_t *o)
{
    track_young(ts, o);
}

/* If `o` is on its stripe's current young list, unlink it and return true.
 * Otherwise it belongs to the collector (or is not tracked). */
static bool untrack_young(ouro_object_t *o, uint32_t gc)
{
    stripe_t *s = &stripes[stripe_of(gc)];
    spin_lock(&s->lock);
    /* relaxed: OLD and PARITY change only under this lock or for objects
     * whose parity no longer matches (taken by the collector) */
    gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    bool mine = (gc & (GC_TRACKED | GC_OLD)) == GC_TRACKED && ((gc & GC_PARITY) != 0) == s->parity;
    if (mine) {
        list_unlink(gc_head_of(o));
        atomic_store_explicit(&s->count, atomic_load_explicit(&s->count, memory_order_relaxed) - 1,
                              memory_order_relaxed);
        gc_bits_set(o, LOC_MASK, 0);
    }
    spin_unlock(&s->lock);
    return mine;
}

static inline size_t list_gen(uint32_t gc)
{
    return (gc & GC_GEN_MASK) >> GC_GEN_SHIFT;
}

/* gc_mutex held: unlink a collector-owned object. */
static void untrack_old_locked(ouro_object_t *o)
{
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    list_unlink(gc_head_of(o));
    gen_size[list_gen(gc)]--;
    gc_bits_set(o, LOC_MASK, 0);
}

static void drain_zombies_locked(void)
{
    struct cds_lfs_head *head = __cds_lfs_pop_all(&zombies);
    if (head == NULL)
        return;
    ouro_tsan_acquire(&zombies); /* liburcu's atomics are invisible to TSan */
    ouro_tstate_t *ts = ouro__tstate_get();
    size_t n = 0;
    for (struct cds_lfs_node *node = &head->node, *next; node; node = next) {
        next = node->next;
        zombie_t *z = caa_container_of(node, zombie_t, node);
        ouro_object_t *o = z->o;
        ouro_free(z);
        untrack_old_locked(o);
        if (ts)
            ouro__defer_free(ts, ouro__object_block(o));
        n++;
    }
    /* relaxed: a statistic and a drain hint */
    atomic_fetch_sub_explicit(&nzombies, n, memory_order_relaxed);
}

bool ouro__gc_untrack_dead(ouro_object_t *o)
{
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (!(gc & GC_TRACKED))
        return true;
    if (!(gc & GC_OLD) && untrack_young(o, gc))
        return true;
    /* the collector owns its list: leave it a zombie */
    zombie_t *z = ouro_malloc(sizeof *z);
    if (z == NULL) {
        if (in_collector) {
            /* we are the collector, in a collection of o's set: its relink
             * pass frees it */
            __atomic_fetch_or(&o->gc, GC_ORPHAN, __ATOMIC_RELAXED);
            return false;
        }
        pthread_mutex_lock(&gc_mutex);
        untrack_old_locked(o);
        pthread_mutex_unlock(&gc_mutex);
        return true;
    }
    z->o = o;
    /* cds_lfs_push is a full barrier: the collector that pops sees the dead object */
    ouro_tsan_release(&zombies);
    cds_lfs_push(&zombies, &z->node);
    size_t n = atomic_fetch_add_explicit(&nzombies, 1, memory_order_relaxed) + 1;
    if (n >= ZOMBIE_DRAIN && !in_collector && pthread_mutex_trylock(&gc_mutex) == 0) {
        drain_zombies_locked();
        pthread_mutex_unlock(&gc_mutex);
    }
    return false;
}

int ouro_gc_track(ouro_object_t *o)
{
    if (o == NULL || !ouro__is_container(o)) {
        errno = EINVAL;
        return -1;
    }
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL) {
        errno = ENOMEM;
        return -1;
    }
    /* relaxed: the caller owns a reference; tracking races only with
     * itself, which the caller must not do concurrently on one object */
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED)
        return 0;
    track_young(ts, o);
    return 0;
}

int ouro_gc_untrack(ouro_object_t *o)
{
    if (o == NULL || !ouro__is_container(o)) {
        errno = EINVAL;
        return -1;
    }
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (!(gc & GC_TRACKED))
        return 0;
    if (!(gc & GC_OLD) && untrack_young(o, gc))
        return 0;
    if (in_collector) {
        errno = EDEADLK; /* from a finalizer or callback: the lists are in use */
        return -1;
    }
    pthread_mutex_lock(&gc_mutex);
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED)
        untrack_old_locked(o);
    pthread_mutex_unlock(&gc_mutex);
    return 0;
}

int ouro_gc_is_tracked(const ouro_object_t *o)
{
    return o && ouro__is_container(o) && (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED) != 0;
}

/* ================================================================== */
/* the write barrier                                                   */
/* ================================================================== */
static inline void shade(ouro_object_t *o)
{
    if (o == NULL || !ouro__is_container(o))
        return;
    /* relaxed: H2's membarrier and grace period make it visible to the
     * validation; a first load spares the RMW when already shaded */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if ((gc & (GC_TRACKED | GC_DIRTY)) == GC_TRACKED)
        __atomic_fetch_or(&o->gc, GC_DIRTY, __ATOMIC_RELAXED);
}

static inline bool barrier_active(void)
{
    if (mb_mode == MB_FENCE)
        /* the mutator's half of Dekker's protocol: our store before the
         * collector's flag read */
        atomic_thread_fence(memory_order_seq_cst);
    /* relaxed: membarrier_all() after the collector's store orders it */
    return atomic_load_explicit(&gc_active, memory_order_relaxed) != 0;
}

void ouro__gc_shade(ouro_object_t *old, ouro_object_t *value)
{
    if (ouro__tstate == NULL)
        ouro__tstate_get(); /* register: collections must see our stores in flight */
    if (!barrier_active())
        return;
    shade(old);
    shade(value);
}

static int shade_visit(ouro_object_t *r, void *arg)
{
    (void)arg;
    shade(r);
    return 0;
}

void ouro__gc_dying(ouro_object_t *o)
{
    /* relaxed: see ouro_store; a collection that starts after this load
     * sees the counts our dealloc changes */
    unsigned long seq = ouro__bseq;
    __atomic_store_n(&ouro__bseq, seq + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ouro__gc_barrier, __ATOMIC_RELAXED) && barrier_active())
        o->type->traverse(o, shade_visit, NULL);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&ouro__bseq, seq + 2, __ATOMIC_RELEASE);
}

/* ================================================================== */
/* counts                                                              */
/* ================================================================== */
#define COUNT_UNSTABLE (-1)
/* The object's count, consistent across the owner/shared split: retried
 * while a merge is half done (tid cleared, shared not yet MERGED).
 * Acquire loads: read in this order, as a seqlock reads. */
static int64_t gc_count(ouro_object_t *o)
{
    for (int tries = 0; tries < 1000; tries++) {
        int64_t s1 = __atomic_load_n(&o->shared, __ATOMIC_ACQUIRE);
        uint32_t local = __atomic_load_n(&o->local, __ATOMIC_ACQUIRE);
        uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_ACQUIRE);
        int64_t s2 = __atomic_load_n(&o->shared, __ATOMIC_ACQUIRE);
        if (local == OURO_IMMORTAL)
            return COUNT_UNSTABLE;
        /* tid 0 before MERGED: a merge is between its stores and its CAS
         * (local already moved out, not yet added to shared) */
        if (s1 != s2 || (tid == 0 && (s1 & REF_STATE_MASK) != REF_MERGED))
            continue;
        int64_t rc = (s1 >> REF_SHIFT) + (tid ? (int64_t)local : 0);
        if ((s1 & REF_STATE_MASK) == REF_QUEUED)
            rc -= 1;
        return rc;
    }
    return COUNT_UNSTABLE;
}

/* ================================================================== */
/* the scratch word (prefix prev of a G member during a collection)    */
/* ================================================================== */
#define S_TAG 1ull        /* in G */
#define S_MARK 2ull       /* reachable (or rejected) */
#define S_FORCE 4ull      /* a root whatever its count says */
#define S_SKIP 8ull       /* dead: neither traversed nor collected */
#define S_REFS_SHIFT 8    /* gc_refs + 2^31, 32 bits */
#define S_REFS_BIAS ((int64_t)1 << 31)
#define S_C1_SHIFT 40     /* c1, 24 bits */
#define S_C1_MAX (((int64_t)1 << 24) - 1)
#define S_ONE_REF ((uint64_t)1 << S_REFS_SHIFT)

static inline uint64_t sc_load(gc_head_t *h)
{
    return atomic_load_explicit(&h->prev, memory_order_relaxed);
}
static inline void sc_store(gc_head_t *h, uint64_t w)
{
    atomic_store_explicit(&h->prev, w, memory_order_relaxed);
}
static inline int64_t sc_refs(uint64_t w)
{
    return (int64_t)((w >> S_REFS_SHIFT) & 0xffffffffu) - S_REFS_BIAS;
}
static inline int64_t sc_c1(uint64_t w)
{
    return (int64_t)(w >> S_C1_SHIFT);
}
static inline uint64_t sc_make(int64_t c)
{
    if (c < 0 || c > S_C1_MAX)
        return S_TAG | S_FORCE;
    return S_TAG | ((uint64_t)(c + S_REFS_BIAS) << S_REFS_SHIFT) | ((uint64_t)c << S_C1_SHIFT);
}

/* The G member that `r` is, or NULL.  `r` is a referent read from a live
 * object's slot during a pass: its memory is not reused before our next
 * quiescent state (see the top of the file). */
static inline gc_head_t *in_g(ouro_object_t *r)
{
    if (r == NULL || !ouro__is_container(r))
        return NULL;
    gc_head_t *h = gc_head_of(r);
    return (sc_load(h) & S_TAG) ? h : NULL;
}

static inline bool is_dead(ouro_object_t *o)
{
    /* acquire: pairs with dealloc's seq_cst RMW (see object.c) */
    return (__atomic_load_n(&o->gc, __ATOMIC_ACQUIRE) & GC_DEAD) != 0;
}

/* ================================================================== */
/* work: the G array, mark stacks, markers                             */
/* ================================================================== */
typedef struct hvec_s {
    gc_head_t **v;
    size_t n, cap;
} hvec_t;

static bool hvec_push(hvec_t *s, gc_head_t *h)
{
    if (unlikely(s->n == s->cap)) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        gc_head_t **v = ouro_realloc(s->v, cap * sizeof *v);
        if (v == NULL)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = h;
    return true;
}

static void hvec_free(hvec_t *s)
{
    ouro_free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* A chunk of marking work shared between markers. */
#define CHUNK 256
typedef struct chunk_s {
    struct cds_lfs_node node;
    size_t n;
    gc_head_t *v[CHUNK];
} chunk_t;

typedef struct marker_s {
    hvec_t stack;
    bool oom;
    size_t found;          /* validation: rejections */
} marker_t;

/* One collection's shared work state. */
typedef struct work_s {
    hvec_t g;              /* every member of G */
    int nmarkers;
    bool parallel;         /* scratch updates must be atomic RMWs */
    struct cds_lfs_stack shared; /* chunks; pops take its mutex (ABA), pushes are lock-free */
    _Atomic int idle;
    _Atomic bool oom;
    marker_t m[OURO_GC_MAX_MARKERS];
} work_t;

static inline bool mark_head(work_t *w, gc_head_t *h)
{
    if (w->parallel) {
        /* relaxed: the winner of the RMW traverses; the referents it
         * reads are the mutators' (ouro_load) */
        return !(atomic_fetch_or_explicit(&h->prev, S_MARK, memory_order_relaxed) & S_MARK);
    }
    uint64_t s = sc_load(h);
    if (s & S_MARK)
        return false;
    sc_store(h, s | S_MARK);
    return true;
}

typedef struct visit_ctx_s {
    work_t *w;
    marker_t *m;
} visit_ctx_t;

static int visit_subtract(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    gc_head_t *h = in_g(r);
    if (h == NULL)
        return 0;
    if (c->w->parallel)
        atomic_fetch_sub_explicit(&h->prev, S_ONE_REF, memory_order_relaxed); /* a count only */
    else
        sc_store(h, sc_load(h) - S_ONE_REF);
    return 0;
}

static void share_work(work_t *w, marker_t *m)
{
    chunk_t *c = ouro_malloc(sizeof *c);
    if (c == NULL)
        return;
    c->n = CHUNK;
    m->stack.n -= CHUNK;
    memcpy(c->v, m->stack.v + m->stack.n, sizeof c->v);
    /* cds_lfs_push is a full barrier: the popper sees the chunk's contents */
    ouro_tsan_release(&w->shared);
    cds_lfs_push(&w->shared, &c->node);
}

static int visit_mark(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    gc_head_t *h = in_g(r);
    if (h == NULL || !mark_head(c->w, h))
        return 0;
    if (!hvec_push(&c->m->stack, h))
        c->m->oom = true;
    return 0;
}

/* Traverse everything on the marker's stack (and, in parallel, what the
 * others share) until no marker has work left. */
static void mark_drain(work_t *w, marker_t *m)
{
    visit_ctx_t ctx = {w, m};
    for (;;) {
        while (m->stack.n) {
            gc_head_t *h = m->stack.v[--m->stack.n];
            ouro_object_t *o = gc_object_of(h);
            if (!is_dead(o))
                o->type->traverse(o, visit_mark, &ctx);
            /* relaxed: a hint; a stale read only delays sharing */
            if (w->parallel && m->stack.n >= 2 * CHUNK && atomic_load_explicit(&w->idle, memory_order_relaxed))
                share_work(w, m);
        }
        if (!w->parallel)
            return;
        struct cds_lfs_node *n = cds_lfs_pop_blocking(&w->shared);
        if (n) {
            ouro_tsan_acquire(&w->shared);
            chunk_t *c = caa_container_of(n, chunk_t, node);
            for (size_t i = 0; i < c->n; i++)
                if (!hvec_push(&m->stack, c->v[i]))
                    m->oom = true;
            ouro_free(c);
            continue;
        }
        /* seq_cst: ordered with the pushes and the others' idle counts, so
         * the last marker to go idle sees any chunk still shared */
        atomic_fetch_add_explicit(&w->idle, 1, memory_order_seq_cst);
        for (;;) {
            if (!cds_lfs_empty(&w->shared)) {
                atomic_fetch_sub_explicit(&w->idle, 1, memory_order_seq_cst);
                break;
            }
            if (atomic_load_explicit(&w->idle, memory_order_seq_cst) == w->nmarkers)
                return;
            __builtin_ia32_pause();
        }
    }
}

static void push_root(work_t *w, marker_t *m, gc_head_t *h)
{
    if (mark_head(w, h) && !hvec_push(&m->stack, h))
        m->oom = true;
}

/* ---- the phases, each run by every marker over its slice of G ---- */
enum { PH_SNAPSHOT, PH_SUBTRACT, PH_MARK, PH_VALIDATE };

static void slice(work_t *w, int id, size_t *lo, size_t *hi)
{
    size_t n = w->g.n, k = (size_t)w->nmarkers;
    *lo = n * (size_t)id / k;
    *hi = n * (size_t)(id + 1) / k;
}

static void snapshot_one(gc_head_t *h)
{
    ouro_object_t *o = gc_object_of(h);
    /* seq_cst RMW before the count loads: a barrier after it shades again */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (gc & GC_DIRTY)
        gc = __atomic_fetch_and(&o->gc, ~GC_DIRTY, __ATOMIC_SEQ_CST);
    int64_t c = (gc & GC_DEAD) ? 0 : gc_count(o);
    /* a count of zero: dying right now (GC_DEAD comes next); a root, so
     * that nothing it still holds is taken for garbage meanwhile */
    sc_store(h, c == 0 ? (S_TAG | S_FORCE) : sc_make(c));
}

static void run_phase(work_t *w, int phase, int id)
{
    marker_t *m = &w->m[id];
    visit_ctx_t ctx = {w, m};
    size_t lo, hi;
    slice(w, id, &lo, &hi);
    switch (phase) {
    case PH_SNAPSHOT:
        for (size_t i = lo; i < hi; i++)
            snapshot_one(w->g.v[i]);
        break;
    case PH_SUBTRACT:
        for (size_t i = lo; i < hi; i++) {
            gc_head_t *h = w->g.v[i];
            ouro_object_t *o = gc_object_of(h);
            if (!(sc_load(h) & S_SKIP) && !is_dead(o))
                o->type->traverse(o, visit_subtract, &ctx);
        }
        break;
    case PH_MARK:
        for (size_t i = lo; i < hi; i++) {
            gc_head_t *h = w->g.v[i];
            uint64_t s = sc_load(h);
            if (s & (S_MARK | S_SKIP))
                continue;
            /* relaxed: DIRTY is read again, after H2, by the validation */
            if (sc_refs(s) > 0 || (s & S_FORCE) ||
                (__atomic_load_n(&gc_object_of(h)->gc, __ATOMIC_RELAXED) & GC_DIRTY)) {
                push_root(w, m, h);
                if (!w->parallel)
                    mark_drain(w, m);
            }
        }
        mark_drain(w, m);
        break;
    case PH_VALIDATE:
        for (size_t i = lo; i < hi; i++) {
            gc_head_t *h = w->g.v[i];
            uint64_t s = sc_load(h);
            if (s & (S_MARK | S_SKIP))
                continue;
            ouro_object_t *o = gc_object_of(h);
            uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
            if (gc & GC_DEAD) {
                /* dead meanwhile: its own dealloc frees it; in parallel
                 * mode only the SKIP bit is added, by RMW */
                if (w->parallel)
                    atomic_fetch_or_explicit(&h->prev, S_SKIP, memory_order_relaxed);
                else
                    sc_store(h, s | S_SKIP);
                continue;
            }
            int64_t c = gc_count(o);
            if (c == 0) {
                if (w->parallel)
                    atomic_fetch_or_explicit(&h->prev, S_SKIP, memory_order_relaxed);
                else
                    sc_store(h, s | S_SKIP);
                continue;
            }
            if (c < 0 || c != sc_c1(s) || (s & S_FORCE) || (gc & GC_DIRTY)) {
                m->found++;
                push_root(w, m, h);
                if (!w->parallel)
                    mark_drain(w, m);
            }
        }
        mark_drain(w, m);
        break;
    }
}

/* ---- marker threads ---- */
static pthread_mutex_t mk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mk_go = PTHREAD_COND_INITIALIZER, mk_done = PTHREAD_COND_INITIALIZER;
static int mk_threads;            /* [mk_lock] helper threads running */
static unsigned long mk_epoch;    /* [mk_lock] bumped per phase */
static int mk_pending;            /* [mk_lock] helpers still in the phase */
static work_t *mk_work;           /* [mk_lock] */
static int mk_phase, mk_active;   /* [mk_lock] helpers 1..mk_active-1 take part */
static _Atomic int markers_wanted; /* 0: the core count */

static void *marker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    ouro_thread_register();
    unsigned long seen = 0;
    pthread_mutex_lock(&mk_lock);
    for (;;) {
        while (mk_epoch == seen)
            pthread_cond_wait(&mk_go, &mk_lock);
        seen = mk_epoch;
        if (id >= mk_active)
            continue;
        work_t *w = mk_work;
        int phase = mk_phase;
        pthread_mutex_unlock(&mk_lock);
        ouro_read_begin(); /* an RCU reader while traversing */
        run_phase(w, phase, id);
        ouro_read_end();
        pthread_mutex_lock(&mk_lock);
        if (--mk_pending == 0)
            pthread_cond_signal(&mk_done);
    }
    return NULL;
}

static int cores(void)
{
    static int n;
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = ouro__hw_cores();
        if (n <= 0)
            n = c > 0 ? (int)c : 1;
    }
    return n;
}

int ouro_gc_get_markers(void)
{
    int n = atomic_load_explicit(&markers_wanted, memory_order_relaxed);
    if (n == 0)
        n = (int)ouro__options[OURO_OPTION_GC_MARKERS];
    if (n == 0)
        n = 1; /* not cores(): see ouro.h, parallel marking has an open race */
    if (n < 0)
        n = cores();
    return n < 1 ? 1 : n > OURO_GC_MAX_MARKERS ? OURO_GC_MAX_MARKERS : n;
}

int ouro_gc_set_markers(int n)
{
    if (n < 0 || n > OURO_GC_MAX_MARKERS) {
        errno = EINVAL;
        return -1;
    }
    atomic_store_explicit(&markers_wanted, n, memory_order_relaxed);
    return 0;
}

/* Start helper threads until `want` markers (this thread included) can
 * run; returns how many can. */
static int markers_ready(int want)
{
    pthread_mutex_lock(&mk_lock);
    while (mk_threads < want - 1) {
        pthread_t t;
        if (pthread_create(&t, NULL, marker_main, (void *)(intptr_t)(mk_threads + 1)) != 0)
            break;
        pthread_detach(t);
        mk_threads++;
    }
    int n = mk_threads + 1 < want ? mk_threads + 1 : want;
    pthread_mutex_unlock(&mk_lock);
    return n;
}

/* Run `phase` on `w->nmarkers` markers: this thread is marker 0. */
static void parallel_phase(work_t *w, int phase)
{
    int helpers = w->nmarkers - 1;
    if (helpers > 0) {
        pthread_mutex_lock(&mk_lock);
        mk_work = w;
        mk_phase = phase;
        mk_active = w->nmarkers;
        mk_pending = helpers;
        mk_epoch++;
        pthread_cond_broadcast(&mk_go);
        pthread_mutex_unlock(&mk_lock);
    }
    run_phase(w, phase, 0);
    if (helpers > 0) {
        pthread_mutex_lock(&mk_lock);
        while (mk_pending)
            pthread_cond_wait(&mk_done, &mk_lock);
        pthread_mutex_unlock(&mk_lock);
    }
    /* relaxed: the helpers are done (mk_lock ordered their writes) */
    atomic_store_explicit(&w->idle, 0, memory_order_relaxed);
}

/* ================================================================== */
/* the collection                                                      */
/* ================================================================== */
static void run_callbacks(int phase, int gen, size_t collected, size_t uncollectable)
{
    pthread_mutex_lock(&cb_lock);
    int n = ncallbacks;
    __typeof__(callbacks[0]) copy[MAX_CALLBACKS];
    memcpy(copy, callbacks, sizeof copy);
    pthread_mutex_unlock(&cb_lock);
    for (int i = 0; i < n; i++)
        copy[i].fn(phase, gen, collected, uncollectable, copy[i].arg);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Take the current young lists of every stripe onto `to`. */
static size_t take_young(gc_head_t *to)
{
    size_t n = 0;
    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &stripes[i];
        spin_lock(&s->lock);
        list_splice(&s->young[s->parity], to);
        s->parity ^= 1;
        n += (size_t)atomic_load_explicit(&s->count, memory_order_relaxed);
        atomic_store_explicit(&s->count, 0, memory_order_relaxed);
        spin_unlock(&s->lock);
    }
    return n;
}

static long young_count(void)
{
    long n = 0;
    for (int i = 0; i < NSTRIPES; i++)
        n += atomic_load_explicit(&stripes[i].count, memory_order_relaxed);
    return n < 0 ? 0 : n;
}

/* Re-validate the garbage after user code ran (weak reference callbacks,
 * finalizers): a count changed, a store shaded, or a death. */
static void revalidate(work_t *w, hvec_t *garbage)
{
    marker_t *m = &w->m[0];
    bool par = w->parallel;
    w->parallel = false;
    for (size_t i = 0; i < garbage->n; i++) {
        gc_head_t *h = garbage->v[i];
        uint64_t s = sc_load(h);
        if (s & (S_MARK | S_SKIP))
            continue;
        ouro_object_t *o = gc_object_of(h);
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
        if (gc & GC_DEAD) {
            sc_store(h, s | S_SKIP);
            continue;
        }
        int64_t c = gc_count(o);
        if (c == 0) {
            sc_store(h, s | S_SKIP);
            continue;
        }
        if (c != sc_c1(s) || (gc & GC_DIRTY)) {
            push_root(w, m, h);
            mark_drain(w, m);
        }
    }
    w->parallel = par;
    size_t k = 0;
    for (size_t i = 0; i < garbage->n; i++)
        if (!(sc_load(garbage->v[i]) & (S_MARK | S_SKIP)))
            garbage->v[k++] = garbage->v[i];
    garbage->n = k;
}

/* Restore the links of G (its `next` chain is intact), set each member's
 * new location, free orphans, and move G to generation `dest`. */
static size_t relink(gc_head_t *G, int dest, ouro_tstate_t *ts)
{
    size_t n = 0;
    gc_head_t *prev = G;
    for (gc_head_t *h = NEXT(G), *next; h != G; h = next) {
        next = NEXT(h);
        ouro_object_t *o = gc_object_of(h);
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
        if ((gc & (GC_DEAD | GC_ORPHAN)) == (GC_DEAD | GC_ORPHAN)) {
            SET_NEXT(prev, next);
            if (ts)
                ouro__defer_free(ts, ouro__object_block(o));
            continue;
        }
        SET_PREV(h, prev);
        if ((gc & (LOC_MASK | GC_DIRTY)) != loc_old(dest))
            gc_bits_set(o, LOC_MASK | GC_DIRTY, loc_old(dest));
        prev = h;
        n++;
    }
    SET_PREV(G, prev);
    SET_NEXT(prev, G);
    list_splice(G, &gens[dest]);
    gen_size[dest] += n;
    return n;
}

static void pause_record(uint64_t ns)
{
    int b = 0;
    for (uint64_t us = ns / 1000; us > 1 && b < OURO_GC_PAUSE_BUCKETS - 1; us >>= 1)
        b++;
    stats.pause_hist[b]++;
    if (ns > stats.pause_max_ns)
        stats.pause_max_ns = ns;
    stats.total_ns += ns;
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
    run_callbacks(OURO_GC_START, gen, 0, 0);
    uint64_t t0 = now_ns();
    in_collector = true;
    drain_zombies_locked();

    /* H1: the barrier is on everywhere before we read anything */
    atomic_store_explicit(&gc_active, 1, memory_order_seq_cst);
    if (mb_mode != MB_FENCE)
        __atomic_store_n(&ouro__gc_barrier, 1, __ATOMIC_SEQ_CST);
    handshake();

    gc_head_t G;
    list_init(&G);
    take_young(&G);
    for (int g = 1; g <= gen; g++) {
        list_splice(&gens[g], &G);
        gen_size[g] = 0;
    }
    int dest = gen < 2 ? gen + 1 : 2;

    static work_t w; /* gc_mutex: one collection at a time */
    hvec_t gv = w.g;
    memset(&w, 0, sizeof w);
    w.g = gv;
    w.g.n = 0;
    cds_lfs_init(&w.shared);
    bool oom = false;
    ouro_read_begin();
    for (gc_head_t *h = NEXT(&G); h != &G; h = NEXT(h))
        if (!hvec_push(&w.g, h)) {
            oom = true;
            break;
        }
    w.nmarkers = oom ? 1 : ouro_gc_get_markers();
    if ((size_t)w.nmarkers * 4096 > w.g.n)
        w.nmarkers = 1; /* too little to share */
    if (w.nmarkers > 1)
        w.nmarkers = markers_ready(w.nmarkers);
    w.parallel = w.nmarkers > 1;

    size_t found = 0, uncollectable = 0;
    hvec_t garbage = {0};
    if (!oom) {
        parallel_phase(&w, PH_SNAPSHOT);
        parallel_phase(&w, PH_SUBTRACT);
        parallel_phase(&w, PH_MARK);
        /* H2: a grace period and a fence on every thread */
        ouro_read_end();
        urcu_qsbr_synchronize_rcu();
        handshake();
        ouro_read_begin();
        parallel_phase(&w, PH_VALIDATE);
        for (int i = 0; i < w.nmarkers; i++)
            oom |= w.m[i].oom;
    }
    if (!oom) {
        for (size_t i = 0; i < w.g.n; i++)
            if (!(sc_load(w.g.v[i]) & (S_MARK | S_SKIP)) && !hvec_push(&garbage, w.g.v[i]))
                oom = true;
    }
    ouro_read_end();
    if (oom)
        garbage.n = 0;

    if (garbage.n) {
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
            if (o->type->finalize &&
                !(__atomic_fetch_or(&o->gc, GC_FINALIZED, __ATOMIC_RELAXED) & GC_FINALIZED)) {
                o->type->finalize(o);
                user_code = true;
            }
        }
        if (user_code)
            revalidate(&w, &garbage);
        found = garbage.n;
        /* 6. break the cycles; the objects die as their counts reach zero */
        unsigned dbg = atomic_load_explicit(&debug_flags, memory_order_relaxed);
        for (size_t i = 0; i < garbage.n; i++)
            ouro_incref(gc_object_of(garbage.v[i]));
        if (dbg & OURO_GC_DEBUG_SAVEALL) {
            for (size_t i = 0; i < garbage.n; i++) {
                if (saved_n == saved_cap) {
                    size_t cap = saved_cap ? saved_cap * 2 : 64;
                    ouro_object_t **v = ouro_realloc(saved, cap * sizeof *v);
                    if (v == NULL) {
                        ouro_decref(gc_object_of(garbage.v[i]));
                        continue;
                    }
                    saved = v;
                    saved_cap = cap;
                }
                saved[saved_n++] = gc_object_of(garbage.v[i]); /* keeps our reference */
            }
        } else {
            for (size_t i = 0; i < garbage.n; i++) {
                ouro_object_t *o = gc_object_of(garbage.v[i]);
                if (o->type->clear)
                    o->type->clear(o);
            }
            for (size_t i = 0; i < garbage.n; i++)
                ouro_decref(gc_object_of(garbage.v[i]));
            /* dead objects keep their memory until the zombie drain below */
            for (size_t i = 0; i < garbage.n; i++)
                if (!is_dead(gc_object_of(garbage.v[i])))
                    uncollectable++;
        }
    }
    hvec_free(&garbage);

    for (int i = 0; i < OURO_GC_MAX_MARKERS; i++)
        hvec_free(&w.m[i].stack);
    cds_lfs_destroy(&w.shared);
    size_t survivors = relink(&G, dest, ts);
    if (w.g.cap > 2 * w.g.n + 65536)
        hvec_free(&w.g); /* do not keep a big array after the heap shrank */

    /* the end: the barrier goes off (release: after our last scratch use) */
    if (mb_mode != MB_FENCE)
        __atomic_store_n(&ouro__gc_barrier, 0, __ATOMIC_RELEASE);
    atomic_store_explicit(&gc_active, 0, memory_order_release);
    drain_zombies_locked();
    in_collector = false;

    /* bookkeeping, as CPython's */
    if (gen < 2)
        atomic_fetch_add_explicit(&gen_count[gen + 1], 1, memory_order_relaxed);
    for (int g = 1; g <= gen; g++)
        atomic_store_explicit(&gen_count[g], 0, memory_order_relaxed);
    if (gen == 2) {
        long_lived_total = survivors;
        long_lived_pending = 0;
    } else if (gen == 1) {
        long_lived_pending += survivors;
    }
    stats.gen[gen].collections++;
    stats.gen[gen].collected += found;
    stats.gen[gen].uncollectable += uncollectable;
    stats.last_objects = w.g.n;
    stats.last_markers = (unsigned)w.nmarkers;
    uint64_t dt = now_ns() - t0;
    stats.last_ns = dt;
    pause_record(dt);
    ouro__defer_flush(ts);
    run_callbacks(OURO_GC_STOP, gen, found, uncollectable);
    if (oom) {
        errno = ENOMEM;
        return -1;
    }
    return (long)found;
}

/* Which generation an automatic collection takes (CPython's rule), or -1. */
static int auto_generation(void)
{
    for (int g = 2; g >= 0; g--) {
        long c = g ? atomic_load_explicit(&gen_count[g], memory_order_relaxed) : young_count();
        long t = atomic_load_explicit(&threshold[g], memory_order_relaxed);
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
        pthread_mutex_lock(&gc_mutex);
        int g;
        if (atomic_load_explicit(&enabled, memory_order_relaxed) && (g = auto_generation()) >= 0)
            collect_locked(g);
        pthread_mutex_unlock(&gc_mutex);
        ouro_quiescent();
    }
    return NULL;
}

static void maybe_collect(void)
{
    /* relaxed: heuristics; a stale read only shifts a collection */
    long t = atomic_load_explicit(&threshold[0], memory_order_relaxed);
    if (!atomic_load_explicit(&enabled, memory_order_relaxed) || t <= 0 || young_count() <= t)
        return;
    if (in_collector || atomic_exchange_explicit(&bg_requested, 1, memory_order_relaxed))
        return;
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

/* ================================================================== */
/* the API                                                             */
/* ================================================================== */
long ouro_gc_collect(int generation)
{
    if (generation < 0 || generation > 2) {
        errno = EINVAL;
        return -1;
    }
    if (in_collector)
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
    pthread_mutex_lock(&gc_mutex);
    long r = collect_locked(generation);
    pthread_mutex_unlock(&gc_mutex);
    if (online)
        ouro_thread_online();
    return r;
}

void ouro_gc_enable(void)
{
    atomic_store_explicit(&enabled, 1, memory_order_relaxed);
}

void ouro_gc_disable(void)
{
    atomic_store_explicit(&enabled, 0, memory_order_relaxed);
}

int ouro_gc_is_enabled(void)
{
    return atomic_load_explicit(&enabled, memory_order_relaxed);
}

int ouro_gc_set_threshold(long t0, long t1, long t2)
{
    if (t0 < 0 || t1 < 0 || t2 < 0) {
        errno = EINVAL;
        return -1;
    }
    /* relaxed: independent settings read as heuristics */
    atomic_store_explicit(&threshold[0], t0, memory_order_relaxed);
    atomic_store_explicit(&threshold[1], t1, memory_order_relaxed);
    atomic_store_explicit(&threshold[2], t2, memory_order_relaxed);
    return 0;
}

void ouro_gc_get_threshold(long out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = atomic_load_explicit(&threshold[i], memory_order_relaxed);
}

void ouro_gc_get_count(long out[3])
{
    out[0] = young_count();
    out[1] = atomic_load_explicit(&gen_count[1], memory_order_relaxed);
    out[2] = atomic_load_explicit(&gen_count[2], memory_order_relaxed);
}

void ouro_gc_get_stats(ouro_gc_stats_t *out)
{
    pthread_mutex_lock(&gc_mutex);
    *out = stats;
    out->young = (size_t)young_count();
    for (int g = 1; g < 4; g++)
        out->objects[g] = gen_size[g];
    out->zombies = atomic_load_explicit(&nzombies, memory_order_relaxed);
    out->saved = saved_n;
    pthread_mutex_unlock(&gc_mutex);
}

static void move_list_locked(gc_head_t *from, int to)
{
    size_t n = 0;
    for (gc_head_t *h = NEXT(from); h != from; h = NEXT(h)) {
        gc_bits_set(gc_object_of(h), LOC_MASK, loc_old(to));
        n++;
    }
    list_splice(from, &gens[to]);
    gen_size[to] += n;
}

int ouro_gc_freeze(void)
{
    if (in_collector) {
        errno = EDEADLK;
        return -1;
    }
    pthread_mutex_lock(&gc_mutex);
    drain_zombies_locked();
    gc_head_t young;
    list_init(&young);
    take_young(&young);
    move_list_locked(&young, 3);
    for (int g = 1; g <= 2; g++) {
        move_list_locked(&gens[g], 3);
        gen_size[g] = 0;
    }
    pthread_mutex_unlock(&gc_mutex);
    return 0;
}

int ouro_gc_unfreeze(void)
{
    if (in_collector) {
        errno = EDEADLK;
        return -1;
    }
    pthread_mutex_lock(&gc_mutex);
    drain_zombies_locked();
    move_list_locked(&gens[3], 2);
    gen_size[3] = 0;
    pthread_mutex_unlock(&gc_mutex);
    return 0;
}

size_t ouro_gc_get_freeze_count(void)
{
    pthread_mutex_lock(&gc_mutex);
    drain_zombies_locked();
    size_t n = gen_size[3];
    pthread_mutex_unlock(&gc_mutex);
    return n;
}

int ouro_gc_callback_add(ouro_gc_callback *fn, void *arg)
{
    if (fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&cb_lock);
    int r = -1;
    if (ncallbacks < MAX_CALLBACKS) {
        callbacks[ncallbacks].fn = fn;
        callbacks[ncallbacks].arg = arg;
        ncallbacks++;
        r = 0;
    }
    pthread_mutex_unlock(&cb_lock);
    if (r)
        errno = ENOSPC;
    return r;
}

int ouro_gc_callback_remove(ouro_gc_callback *fn, void *arg)
{
    pthread_mutex_lock(&cb_lock);
    int r = -1;
    for (int i = 0; i < ncallbacks; i++)
        if (callbacks[i].fn == fn && callbacks[i].arg == arg) {
            memmove(&callbacks[i], &callbacks[i + 1], (size_t)(ncallbacks - i - 1) * sizeof callbacks[0]);
            ncallbacks--;
            r = 0;
            break;
        }
    pthread_mutex_unlock(&cb_lock);
    if (r)
        errno = ENOENT;
    return r;
}

int ouro_gc_get_referents(ouro_object_t *o, ouro_visit_fn *visit, void *arg)
{
    if (o == NULL || visit == NULL) {
        errno = EINVAL;
        return -1;
    }
    return o->type->traverse ? o->type->traverse(o, visit, arg) : 0;
}

typedef struct referrers_s {
    ouro_object_t *target;
    bool hit;
} referrers_t;

static int find_target(ouro_object_t *r, void *arg)
{
    referrers_t *f = arg;
    if (r == f->target) {
        f->hit = true;
        return 1;
    }
    return 0;
}

static size_t referrers_in(gc_head_t *l, ouro_object_t *target, ouro_visit_fn *visit, void *arg)
{
    size_t n = 0;
    for (gc_head_t *h = NEXT(l); h != l; h = NEXT(h)) {
        ouro_object_t *o = gc_object_of(h);
        if (is_dead(o))
            continue;
        referrers_t f = {target, false};
        o->type->traverse(o, find_target, &f);
        if (f.hit) {
            n++;
            if (visit)
                visit(o, arg);
        }
    }
    return n;
}

long ouro_gc_get_referrers(ouro_object_t *target, ouro_visit_fn *visit, void *arg)
{
    if (target == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (in_collector) {
        errno = EDEADLK;
        return -1;
    }
    size_t n = 0;
    pthread_mutex_lock(&gc_mutex);
    drain_zombies_locked();
    ouro_read_begin();
    for (int g = 1; g < 4; g++)
        n += referrers_in(&gens[g], target, visit, arg);
    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &stripes[i];
        spin_lock(&s->lock);
        n += referrers_in(&s->young[s->parity], target, visit, arg);
        spin_unlock(&s->lock);
    }
    ouro_read_end();
    pthread_mutex_unlock(&gc_mutex);
    return (long)n;
}

void ouro_gc_set_debug(unsigned flags)
{
    atomic_store_explicit(&debug_flags, flags, memory_order_relaxed);
}

unsigned ouro_gc_get_debug(void)
{
    return atomic_load_explicit(&debug_flags, memory_order_relaxed);
}

size_t ouro_gc_garbage(ouro_object_t **out, size_t max)
{
    pthread_mutex_lock(&gc_mutex);
    size_t n = saved_n;
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = saved[i];
    pthread_mutex_unlock(&gc_mutex);
    return n;
}

void ouro_gc_garbage_clear(void)
{
    pthread_mutex_lock(&gc_mutex);
    ouro_object_t **v = saved;
    size_t n = saved_n;
    saved = NULL;
    saved_n = saved_cap = 0;
    pthread_mutex_unlock(&gc_mutex);
    for (size_t i = 0; i < n; i++)
        ouro_decref(v[i]);
    ouro_free(v);
}

/* ================================================================== */
/* fork                                                                */
/* ================================================================== */
void ouro__gc_fork_prepare(void)
{
    pthread_mutex_lock(&bg_lock);
    pthread_mutex_lock(&gc_mutex);
    pthread_mutex_lock(&mk_lock);
    for (int i = 0; i < NSTRIPES; i++)
        spin_lock(&stripes[i].lock);
}

void ouro__gc_fork_parent(void)
{
    for (int i = NSTRIPES - 1; i >= 0; i--)
        spin_unlock(&stripes[i].lock);
    pthread_mutex_unlock(&mk_lock);
    pthread_mutex_unlock(&gc_mutex);
    pthread_mutex_unlock(&bg_lock);
}

/* The child has no background collector and no marker threads. */
void ouro__gc_fork_child(void)
{
    ouro__gc_fork_parent();
    bg_started = false;
    atomic_store_explicit(&bg_requested, 0, memory_order_relaxed);
    sem_init(&bg_sem, 0, 0);
    mk_threads = 0;
    mk_pending = 0;
    pthread_cond_init(&mk_go, NULL);
    pthread_cond_init(&mk_done, NULL);
}
