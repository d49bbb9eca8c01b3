/*
 * object.c — objects: creation, the slow paths of incref and decref under
 * biased counting, try_incref for lock-free readers, immortal objects, and
 * deallocation (weak references cleared, type's dealloc, memory deferred to
 * RCU).  The count states are described in object.h.
 *
 * Memory orders: increments are relaxed (a thread can only add a reference
 * to an object it already reaches through one); every decrement and merge
 * that may reach zero is acq_rel, so the thread that frees the object sees
 * every write made to it by threads that dropped their references.
 */
#include "object.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

static inline _Atomic int64_t *shared_of(ouro_object_t *o)
{
    return (_Atomic int64_t *)&o->shared;
}

ouro_object_t *ouro_new(const ouro_type_t *type)
{
    if (unlikely(type == NULL || type->basic_size < sizeof(ouro_object_t) ||
                 type->basic_size > OURO_LARGE_MAX - GC_HEAD_SIZE)) {
        errno = EINVAL;
        return NULL;
    }
    ouro_tstate_t *ts = ouro__tstate_get();
    if (unlikely(ts == NULL)) {
        errno = ENOMEM;
        return NULL;
    }
    ouro__brc_merge_pending(ts);
    /* containers come from their own heap, with the collector's prefix */
    bool container = type->traverse != NULL;
    size_t prefix = container ? GC_HEAD_SIZE : 0;
    ouro_heap_t *heap = container ? ouro__gheap : ouro__oheap;
    int cls = ouro__size_class(type->basic_size + prefix);
    ouro_pool_t *pool = heap->cur[cls];
    bool zero = pool->free != NULL && ouro__block_is_fresh(pool, pool->free);
    void *block = ouro__heap_pop(heap, (size_t)cls);
    if (block == NULL)
        block = ouro__heap_alloc_slow(heap, cls, &zero);
    if (unlikely(block == NULL))
        return NULL;
    ouro_object_t *o = (ouro_object_t *)((char *)block + prefix);
    if (!zero)
        memset((char *)o + sizeof *o, 0, type->basic_size - sizeof *o);
    o->tid = ts->tid;
    o->local = 1;
    /* relaxed atomic: the collector may read the gc word of a block it
     * reached through a stale pointer (see gc.c); it is not published yet */
    __atomic_store_n(&o->gc, 0, __ATOMIC_RELAXED);
    o->shared = (type->flags & OURO_TYPE_SHARED_READS) ? REF_READABLE : REF_NONE;
    o->type = type;
    stat_inc(&ts->created);
    /* allocation tracing: one predictable branch while off (trace.c) */
    if (unlikely(ouro__trace_on()) && ouro__trace_object(o, type->basic_size, __builtin_return_address(0)))
        __atomic_store_n(&o->gc, GC_TRACED, __ATOMIC_RELAXED); /* as the store above: not yet published */
    if (container) {
        gc_head_t *h = gc_head_of(o);
        atomic_store_explicit(&h->next, 0, memory_order_relaxed);
        atomic_store_explicit(&h->prev, 0, memory_order_relaxed);
        ouro__gc_track_new(ts, o);
    }
    return o;
}

static inline bool is_immortal(const ouro_object_t *o)
{
    /* relaxed: immortality is set once, before the object is shared, or
     * by a thread that holds a reference (see ouro_make_immortal) */
    return __atomic_load_n(&o->local, __ATOMIC_RELAXED) == OURO_IMMORTAL;
}

void ouro__incref_shared(ouro_object_t *o)
{
    if (is_immortal(o))
        return;
    /* relaxed: see the top of the file */
    atomic_fetch_add_explicit(shared_of(o), REF_ONE, memory_order_relaxed);
}

void ouro__decref_shared(ouro_object_t *o)
{
    if (is_immortal(o))
        return;
    _Atomic int64_t *sh = shared_of(o);
    /* relaxed: only a first guess, the CAS below validates it */
    int64_t shared = atomic_load_explicit(sh, memory_order_relaxed), nw;
    bool queue;
    do {
        /* the shared count is at zero and the owner holds the rest: rather
         * than go negative, queue the object to its owner, who merges */
        queue = shared == REF_NONE || shared == REF_READABLE;
        nw = queue ? REF_QUEUED : shared - REF_ONE;
        if (unlikely((shared & REF_STATE_MASK) == REF_MERGED && nw < REF_MERGED))
            ouro__report_decref_below_zero(o); /* names the size class too (debug.c) */
    } while (!atomic_compare_exchange_weak_explicit(sh, &shared, nw, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (queue)
        ouro__brc_queue(o);
    else if (nw == REF_MERGED)
        ouro__object_dealloc(o);
}

void (*ouro__test_merge_hook)(ouro_object_t *o);

void ouro_test_set_merge_hook(void (*hook)(ouro_object_t *o))
{
    /* relaxed: a test sets it while no thread merges, or races harmlessly */
    __atomic_store_n(&ouro__test_merge_hook, hook, __ATOMIC_RELAXED);
}

/* The owner drops its last local reference (`local` is 1).  If no other
 * thread ever counted, the object dies here.  Otherwise the counts are
 * merged into `shared`, and the owner must first claim the merge: the
 * collector merges garbage owned by other threads
 * (ouro__brc_merge_unreachable), and an object whose last local reference
 * is gone is garbage as soon as the rest of its count comes from a garbage
 * cycle.  The claim is a CAS of tid from us to 0 made while `local` still
 * holds our reference, so that exactly one of the two merges, and each
 * knows what it merged:
 *   - we win: local goes to 0 only now (release: a reader of the count
 *     that sees it sees tid 0 too, and retries until MERGED, gc_count);
 *     until then the count still holds our reference, so the collector
 *     cannot take the object for garbage in between (before this order,
 *     local went to 0 first, and a collection that came between that store
 *     and the merge merged and freed the object, then the owner's merge
 *     freed it again: found by gc_stress);
 *   - the collector won: it merged our reference too (local was still 1),
 *     so we drop it like any other thread's. */
void ouro__decref_last_local(ouro_object_t *o)
{
    _Atomic int64_t *sh = shared_of(o);
    /* acquire: if no other thread ever counted, nothing to merge */
    int64_t shared = atomic_load_explicit(sh, memory_order_acquire);
    if (shared == REF_NONE) {
        /* only the owner writes local: relaxed, as in ouro_decref */
        __atomic_store_n(&o->local, 0, __ATOMIC_RELAXED);
        ouro__object_dealloc(o);
        return;
    }
    /* relaxed: only the claim's atomicity matters (as in merge_owned,
     * brc.c); the decrement that follows a lost claim orders itself */
    uintptr_t me = ouro__thread_id();
    if (!__atomic_compare_exchange_n(&o->tid, &me, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        ouro__decref_shared(o);
        return;
    }
    ouro__merge_hook(o);
    /* release: see above */
    __atomic_store_n(&o->local, 0, __ATOMIC_RELEASE);
    int64_t nw;
    do {
        nw = (shared & ~(int64_t)REF_STATE_MASK) | REF_MERGED;
    } while (!atomic_compare_exchange_weak_explicit(sh, &shared, nw, memory_order_acq_rel,
                                                    memory_order_relaxed));
    ouro_tstate_t *ts = ouro__tstate;
    if (ts)
        stat_inc(&ts->merges_done);
    if (nw == REF_MERGED)
        ouro__object_dealloc(o);
}

int ouro_try_incref(ouro_object_t *o)
{
    /* relaxed loads of local and tid: as in ouro_incref (only the owner
     * writes local; a thread only ever compares tid with itself) */
    uint32_t local = __atomic_load_n(&o->local, __ATOMIC_RELAXED);
    if (local == OURO_IMMORTAL)
        return 1;
    if (__atomic_load_n(&o->tid, __ATOMIC_RELAXED) == ouro__thread_id()) {
        if (local == 0)
            return 0; /* we are freeing it */
        __atomic_store_n(&o->local, local + 1, __ATOMIC_RELAXED);
        return 1;
    }
    _Atomic int64_t *sh = shared_of(o);
    int64_t shared = atomic_load_explicit(sh, memory_order_relaxed);
    for (;;) {
        /* NONE: not made readable, the owner may free it without a CAS;
         * MERGED with count 0 (or less): dead */
        if (shared == REF_NONE || ((shared & REF_STATE_MASK) == REF_MERGED && (shared >> REF_SHIFT) <= 0))
            return 0;
        /* acquire: the object's contents are those of its last writer */
        if (atomic_compare_exchange_weak_explicit(sh, &shared, shared + REF_ONE, memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    }
}

void ouro_share(ouro_object_t *o)
{
    _Atomic int64_t *sh = shared_of(o);
    /* relaxed: a first guess, the CAS validates it */
    int64_t shared = atomic_load_explicit(sh, memory_order_relaxed);
    /* NONE -> READABLE; the other states already make try_incref safe.
     * release: a reader that sees READABLE sees the object initialised */
    while ((shared & REF_STATE_MASK) == REF_NONE &&
           !atomic_compare_exchange_weak_explicit(sh, &shared, shared | REF_READABLE, memory_order_release,
                                                  memory_order_relaxed))
        ;
}

/* A snapshot: relaxed loads, exact only when no thread changes the counts. */
size_t ouro_refcount(const ouro_object_t *o)
{
    uint32_t local = __atomic_load_n(&o->local, __ATOMIC_RELAXED);
    if (local == OURO_IMMORTAL)
        return (size_t)1 << 62;
    int64_t shared = __atomic_load_n(&o->shared, __ATOMIC_RELAXED);
    int64_t rc = (shared >> REF_SHIFT) + (__atomic_load_n(&o->tid, __ATOMIC_RELAXED) ? (int64_t)local : 0);
    if ((shared & REF_STATE_MASK) == REF_QUEUED)
        rc -= 1; /* the queue holds a reference that was dropped */
    return rc > 0 ? (size_t)rc : 0;
}

size_t ouro_sizeof(const ouro_object_t *o)
{
    if (ouro__is_container(o))
        return ouro_usable_size((const char *)o - GC_HEAD_SIZE) - GC_HEAD_SIZE;
    return ouro_usable_size(o);
}

int ouro_make_immortal(ouro_object_t *o)
{
    if (ouro_is_immortal(o))
        return 0;
    /* relaxed: we hold a reference; only the owner (or a merge) writes tid,
     * and we compare it with ourselves or with 0 */
    uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_RELAXED);
    if (tid != 0 && tid != ouro__thread_id()) {
        /* its owner counts in `local` with plain stores: we cannot take
         * that field from under it */
        errno = EPERM;
        return -1;
    }
    /* tid 0: the counts are merged, or a merge is half made on another
     * thread (it clears tid first, then local, then marks shared MERGED:
     * brc.c, ouro__decref_last_local); its store to local would undo
     * ours, so wait until it is done (a few instructions, unless that
     * thread is preempted).  Acquire: pairs with the merge's CAS, after
     * its store to local.  Once MERGED no merge writes local again
     * (ouro__brc_explicit_merge). */
    for (unsigned i = 0; tid == 0 && (atomic_load_explicit(shared_of(o), memory_order_acquire) & REF_STATE_MASK) !=
                                        REF_MERGED;
         i++) {
        if (i < 64)
            __builtin_ia32_pause();
        else
            sched_yield();
    }
    __atomic_fetch_or(&o->gc, GC_IMMORTAL, __ATOMIC_RELAXED);
    /* local first, then tid: a thread that still sees its own tid counts
     * in local once more, harmlessly; one that sees tid 0 goes to the slow
     * path and stops at IMMORTAL.  Relaxed: the caller holds a reference,
     * so no thread can be freeing the object meanwhile. */
    __atomic_store_n(&o->local, OURO_IMMORTAL, __ATOMIC_RELAXED);
    __atomic_store_n(&o->tid, 0, __ATOMIC_RELAXED);
    return 0;
}

int ouro_is_immortal(const ouro_object_t *o)
{
    return __atomic_load_n(&o->local, __ATOMIC_RELAXED) == OURO_IMMORTAL;
}

/* ---- deallocation ---- */
#define DEALLOC_MAX_DEPTH 64

static void dealloc_one(ouro_tstate_t *ts, ouro_object_t *o)
{
    const ouro_type_t *type = o->type;
    bool container = type->traverse != NULL;
    /* dead first, before the type's dealloc drops what the object holds:
     * the collector never traverses an object it has seen dead, and one
     * it saw alive cannot have its referents' memory reused before the
     * collector's next quiescent state (gc.c).  A container also shades
     * its referents, in one step with the death as a collection sees it
     * (ouro__gc_die).  seq_cst: a locked RMW on x86 either way; it also
     * orders the loads below after it. */
    uint32_t gc = container ? ouro__gc_die(o) : __atomic_fetch_or(&o->gc, GC_DEAD, __ATOMIC_SEQ_CST);
    if (unlikely(gc & GC_DEAD))
        ouro__fatal("object %p (type %s) deallocated twice: a reference count was dropped once too often",
                    (void *)o, type->name ? type->name : "?");
    if (gc & GC_HAS_WEAKREFS)
        ouro__weakrefs_clear(o);
    if (type->dealloc)
        type->dealloc(o);
    if (ts) {
        stat_inc(&ts->freed);
        /* a container still on a list the collector owns is left to it */
        if (!container || ouro__gc_untrack_dead(o))
            ouro__defer_free(ts, ouro__object_block(o));
    }
}

/* The object's count reached zero: release it.  A chain of objects freeing
 * each other is unrolled here instead of recursing (CPython's trashcan). */
void ouro__object_dealloc(ouro_object_t *o)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL)
        ouro__fatal("out of memory registering a thread to free %p", (void *)o);
    if (ts->dealloc_depth >= DEALLOC_MAX_DEPTH) {
        o->tid = (uintptr_t)ts->trash; /* dead: the tid word links the postponed */
        ts->trash = o;
        return;
    }
    ts->dealloc_depth++;
    dealloc_one(ts, o);
    if (ts->dealloc_depth == 1) {
        while (ts->trash) {
            ouro_object_t *t = ts->trash;
            ts->trash = (ouro_object_t *)t->tid;
            dealloc_one(ts, t);
        }
    }
    ts->dealloc_depth--;
}

/* ---- statistics ---- */
static void sum_tstate(ouro_tstate_t *ts, void *arg)
{
    ouro_object_stats_t *out = arg;
    out->created += atomic_load_explicit(&ts->created, memory_order_relaxed);
    out->freed += atomic_load_explicit(&ts->freed, memory_order_relaxed);
    out->merges_queued += atomic_load_explicit(&ts->merges_queued, memory_order_relaxed);
    out->merges_done += atomic_load_explicit(&ts->merges_done, memory_order_relaxed);
}

void ouro_object_stats_get(ouro_object_stats_t *out)
{
    memset(out, 0, sizeof *out);
    ouro__tstates_visit(sum_tstate, out);
    out->deferred = atomic_load_explicit(&ouro__deferred, memory_order_relaxed);
    out->weakrefs = atomic_load_explicit(&ouro__weakrefs, memory_order_relaxed);
}
