/*
 * brc.c — biased reference counting across threads (Choi, Shull, Torrellas,
 * PACT 2018; CPython's free-threaded build): per-thread states found by
 * thread id, the queues through which other threads hand an owner the
 * objects whose shared count would go below zero, merging, and what a thread
 * does at exit so that none of its objects is stranded or freed early.
 * Owns the thread-state registry; never touches pools or counts' fast paths.
 *
 * No lock on the queueing path: owners are found in liburcu's RCU hash table
 * and objects reach them on liburcu's wait-free queue.  One mutex guards
 * the list of all thread states (registration, exit, statistics).
 */
#include "object.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

__thread ouro_tstate_t *ouro__tstate __attribute__((tls_model("initial-exec")));

/* Thread states by tid: liburcu's RCU lock-free hash table (QSBR flavor).
 * A thief looks its object's owner up inside a read section and enqueues
 * on the owner's wait-free queue; an exiting owner removes itself and waits
 * a grace period, after which no thief can still hold it. */
static struct cds_lfht *owners;
static pthread_once_t owners_once = PTHREAD_ONCE_INIT;

static void owners_create(void)
{
    /* created lazily, not in ouro__init: it allocates, and under the malloc
     * override an allocation inside ouro__init would re-enter it */
    owners = cds_lfht_new_flavor(64, 64, 0, CDS_LFHT_AUTO_RESIZE, &urcu_qsbr_flavor, NULL);
    if (owners == NULL)
        ouro__fatal("cannot create the thread-state table");
}

static unsigned long tid_hash(uintptr_t tid)
{
    return (unsigned long)((tid >> 12) * 0x9e3779b97f4a7c15ull);
}

static int tid_match(struct cds_lfht_node *node, const void *key)
{
    return caa_container_of(node, ouro_tstate_t, node)->tid == *(const uintptr_t *)key;
}

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static ouro_tstate_t *all_states; /* every state ever made; recycled, never freed */

/* One object queued to its owner. */
typedef struct merge_node_s {
    struct cds_wfcq_node node;
    ouro_object_t *o;
} merge_node_t;

static void tstate_exit(ouro_heap_t *heap);
static void tstate_key_done(void *arg);
/* Its destructor unregisters a thread that registered but never made an
 * object; otherwise the object heap's exit hook does it first, so that the
 * merge walk runs before the heap's pools are abandoned. */
static pthread_key_t tstate_key;

void ouro__brc_init(void)
{
    /* whichever of the two object heaps' destructors runs first does it */
    ouro__heap_set_exit_hook(OURO_KIND_OBJECT, tstate_exit);
    ouro__heap_set_exit_hook(OURO_KIND_GC, tstate_exit);
    if (pthread_key_create(&tstate_key, tstate_key_done) != 0)
        ouro__fatal("pthread_key_create failed");
}

ouro_tstate_t *ouro__tstate_get(void)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (likely(ts != NULL))
        return ts;
    ouro__init();
    pthread_once(&owners_once, owners_create);
    pthread_mutex_lock(&all_lock);
    for (ts = all_states; ts; ts = ts->all_next)
        if (!ts->alive)
            break;
    if (ts == NULL) {
        ts = ouro__os_map(sizeof *ts);
        if (ts == NULL) {
            pthread_mutex_unlock(&all_lock);
            return NULL;
        }
        ts->all_next = all_states;
        all_states = ts;
        cds_lfs_init(&ts->ready); /* a recycled state keeps its batches: the new thread frees them */
    }
    /* Every field another thread may read once `alive` is set, set first,
     * under the lock that those readers hold (ouro__tstates_visit: the
     * collector's handshake reads bseq; a fork child drains the queue of
     * every alive state).  A recycled state still holds an exited thread's
     * values, and that thread's bseq points into its freed TLS. */
    ts->tid = ouro__thread_id();
    ts->gc_stripe = ouro__gc_next_stripe();
    ts->bseq = &ouro__bseq;
    ts->read_depth = ts->dealloc_depth = 0;
    ts->trash = NULL;
    ts->batch = NULL;
    __cds_wfcq_init(&ts->mq_head, &ts->mq_tail);
    cds_lfht_node_init(&ts->node);
    /* relaxed: the state is not published to thieves yet (cds_lfht_add
     * below is), and the registry's readers hold the lock */
    atomic_store_explicit(&ts->merge_pending, 0, memory_order_relaxed);
    ts->alive = true;
    pthread_mutex_unlock(&all_lock);
    ouro__tstate = ts;
    pthread_setspecific(tstate_key, ts);
    ouro__qsbr_register(ts);
    ouro__defer_open(ts);
    /* publish: thieves find us from now on (cds_lfht_add is a full barrier;
     * the TSan edge pairs with the acquire after a thief's lookup) */
    ouro_tsan_release(ts);
    ouro_read_begin();
    cds_lfht_add(owners, tid_hash(ts->tid), &ts->node);
    ouro_read_end();
    return ts;
}

/* Every state ever made, exited threads' too (their statistics count):
 * `fn` runs under the registry lock and must test `alive` before it reads
 * anything of the thread's own (bseq points into its TLS). */
void ouro__tstates_visit(void (*fn)(ouro_tstate_t *ts, void *arg), void *arg)
{
    pthread_mutex_lock(&all_lock);
    for (ouro_tstate_t *ts = all_states; ts; ts = ts->all_next)
        fn(ts, arg);
    pthread_mutex_unlock(&all_lock);
}

/* fork: hold the registry lock across it */
void ouro__brc_fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
}

void ouro__brc_fork_parent(void)
{
    pthread_mutex_unlock(&all_lock);
}

/* ---- fork child: the threads that did not come along ----
 * Their objects must not keep their tids (a new thread of the child may
 * get the same thread pointer and count in `local` as if it owned them),
 * and what was queued to them must be merged.  No other thread runs in the
 * child, so no grace period is needed (and none could end: dead threads
 * that were online stay so in liburcu's registry, see the notes). */
static ouro_object_t **child_dead;
static size_t child_dead_n, child_dead_cap;

static void child_keep_dead(ouro_object_t *o)
{
    if (child_dead_n == child_dead_cap) {
        size_t cap = child_dead_cap ? child_dead_cap * 2 : 64;
        ouro_object_t **v = ouro_realloc(child_dead, cap * sizeof *v);
        if (v == NULL)
            return; /* out of memory in a fork child: the object leaks */
        child_dead = v;
        child_dead_cap = cap;
    }
    child_dead[child_dead_n++] = o;
}

static void child_merge_owned(void *block, ouro_pool_t *pool, void *arg)
{
    ouro_object_t *o = ouro__block_object(block, pool);
    uintptr_t tid = *(uintptr_t *)arg;
    /* relaxed: a fork child, no other thread runs */
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & (GC_DEAD | GC_IMMORTAL) ||
        __atomic_load_n(&o->tid, __ATOMIC_RELAXED) != tid)
        return;
    if (ouro__brc_explicit_merge(o, 0) == 0)
        child_keep_dead(o);
}

void ouro__brc_fork_child_merge(void)
{
    ouro_tstate_t *me = ouro__tstate;
    for (ouro_tstate_t *ts = all_states; ts; ts = ts->all_next) {
        ouro__defer_fork_child(ts, ts != me);
        if (!ts->alive || ts == me)
            continue;
        for (int kind = OURO_KIND_OBJECT; kind <= OURO_KIND_GC; kind++) {
            ouro_heap_t *heap = ouro__heap_find(ts->tid, kind);
            if (heap)
                ouro__heap_visit_live(heap, child_merge_owned, &ts->tid);
        }
        /* its queue: a half-done enqueue of a dead thread ends the drain */
        for (;;) {
            struct cds_wfcq_node *n = __cds_wfcq_dequeue_nonblocking(&ts->mq_head, &ts->mq_tail);
            if (n == NULL || n == CDS_WFCQ_WOULDBLOCK)
                break;
            merge_node_t *mn = caa_container_of(n, merge_node_t, node);
            if (ouro__brc_explicit_merge(mn->o, -1) == 0)
                child_keep_dead(mn->o);
            ouro_free(mn);
        }
        if (owners) {
            ouro_read_begin();
            cds_lfht_del(owners, &ts->node);
            ouro_read_end();
        }
        ts->alive = false;
        ts->bseq = NULL; /* that thread's TLS is not ours to read */
    }
}

/* Free what the merges left without references, once RCU works again. */
void ouro__brc_fork_child_finish(void)
{
    for (size_t i = 0; i < child_dead_n; i++)
        ouro__object_dealloc(child_dead[i]);
    ouro_free(child_dead);
    child_dead = NULL;
    child_dead_n = child_dead_cap = 0;
}

/* Merge the owner's count into the shared one (adding `extra`), mark the
 * object MERGED and ownerless; returns the merged count, and the caller
 * frees the object if it is 0.  Run by the owner, or by anyone once the
 * owner has gone (then every write to the object is a CAS or follows one).
 *
 * Every write to the object happens before the CAS: once the merged count
 * is published another thread may take it to zero and free the object, and
 * a late store would land in a freed (or reused) block.  A thief that reads
 * tid == 0 early decrements the shared count itself instead of queueing,
 * which the CAS below folds in. */
int64_t ouro__brc_explicit_merge(ouro_object_t *o, int64_t extra)
{
    _Atomic int64_t *sh = (_Atomic int64_t *)&o->shared;
    /* relaxed: only the owner (or, once it has gone, nobody) writes local,
     * and ouro_make_immortal, which waits until the counts are MERGED */
    int64_t local = (int64_t)__atomic_load_n(&o->local, __ATOMIC_RELAXED);
    if (local == OURO_IMMORTAL)
        return 1; /* made immortal after it was queued: no count, never freed */
    int64_t shared = atomic_load_explicit(sh, memory_order_relaxed), rc, nw;
    if ((shared & REF_STATE_MASK) == REF_MERGED) {
        /* merged before (a queue entry met after the owner's own merge, or
         * a thief's after its exit): local is 0 or, once immortal, not
         * ours to write; only our extra is left to add */
        local = 0;
    } else {
        /* Nobody else merges now (every merger claims first, or is the
         * owner itself).  tid 0 sends the former owner's own calls to the
         * shared path.  tid first, then local (release): a reader of the
         * count (gc_count) that sees local 0 sees tid 0 too and retries
         * until MERGED; the other order let it read local 0 with the
         * owner's tid, a count short by the owner's references */
        __atomic_store_n(&o->tid, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&o->local, 0, __ATOMIC_RELEASE);
    }
    do {
        rc = (shared >> REF_SHIFT) + local + extra;
        nw = (rc << REF_SHIFT) | REF_MERGED;
        /* acq_rel: a merge that reaches zero frees the object, so it must
         * see every write made before the other threads' decrements
         * (release), and publish ours */
    } while (!atomic_compare_exchange_weak_explicit(sh, &shared, nw, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return rc;
}

/* The collector's garbage: no thread can reach `o` any more.  Merge its
 * count on this thread (unless it is ours, merged, or queued to its owner,
 * whose merge of the queue entry is due), so that the collector's
 * decrefs free it here instead of queueing it, one malloc and one lookup
 * each, to an owner that frees it at its next quiescent state. */
void ouro__brc_merge_unreachable(ouro_object_t *o)
{
    /* relaxed loads: hints that the claim below validates; nobody but the
     * collector touches unreachable objects, but an exiting owner and an
     * owner finishing its last local decref (ouro__decref_last_local),
     * which claim the same way */
    uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_RELAXED);
    if (tid == 0 || tid == ouro__thread_id())
        return;
    if ((__atomic_load_n(&o->shared, __ATOMIC_RELAXED) & REF_STATE_MASK) == REF_QUEUED)
        return;
    /* acquire: the owner's last writes to `local` (made visible to us by
     * the collection's handshakes anyway) come before our read of it */
    if (!__atomic_compare_exchange_n(&o->tid, &tid, 0, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return; /* its exiting owner merged it */
    int64_t rc = ouro__brc_explicit_merge(o, 0);
    ouro_assert(rc > 0); /* garbage is referenced from inside the garbage */
    (void)rc;
    ouro_tstate_t *ts = ouro__tstate;
    if (ts)
        stat_inc(&ts->merges_done);
}

/* A non-owner took the shared count of `o` to zero-and-below and marked it
 * QUEUED: hand the stolen reference to the owner. */
void ouro__brc_queue(ouro_object_t *o)
{
    ouro_tstate_t *me = ouro__tstate_get();
    merge_node_t *mn = me ? ouro_malloc(sizeof *mn) : NULL;
    if (mn == NULL)
        ouro__fatal("out of memory queueing %p to its owner", (void *)o);
    /* acquire: a zero tid means the owner merged; its stores to local and
     * tid precede the merge's CAS, which our decref path then reads */
    uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_ACQUIRE);
    if (tid == 0) {
        /* the owner merged concurrently: the count is shared now; drop the
         * reference like any other */
        ouro_free(mn);
        ouro__decref_shared(o);
        return;
    }
    struct cds_lfht_iter iter;
    ouro_read_begin();
    cds_lfht_lookup(owners, tid_hash(tid), tid_match, &tid, &iter);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&iter);
    if (node == NULL) {
        ouro_read_end();
        ouro_free(mn);
        /* the owner has exited: it merged all its objects before leaving
         * the table, so we merge ourselves, subtracting the reference we
         * stole */
        if (ouro__brc_explicit_merge(o, -1) == 0)
            ouro__object_dealloc(o);
        return;
    }
    ouro_tstate_t *ts = caa_container_of(node, ouro_tstate_t, node);
    ouro_tsan_acquire(ts);
    mn->o = o;
    cds_wfcq_node_init(&mn->node);
    ouro_tsan_release(&ts->mq_head);
    cds_wfcq_enqueue(&ts->mq_head, &ts->mq_tail, &mn->node);
    /* release: the owner's acquire load then finds the node */
    atomic_store_explicit(&ts->merge_pending, 1, memory_order_release);
    ouro_read_end(); /* after this the owner may leave and drain */
    stat_inc(&me->merges_queued);
}

/* The owner merges what other threads queued to it.  `blocking`: wait for
 * enqueues in progress (at exit, after the grace period, none are). */
static void merge_queue(ouro_tstate_t *ts, bool blocking)
{
    for (;;) {
        struct cds_wfcq_node *n =
            blocking ? __cds_wfcq_dequeue_blocking(&ts->mq_head, &ts->mq_tail)
                     : __cds_wfcq_dequeue_nonblocking(&ts->mq_head, &ts->mq_tail);
        if (n == NULL || n == CDS_WFCQ_WOULDBLOCK)
            return;
        ouro_tsan_acquire(&ts->mq_head);
        merge_node_t *mn = caa_container_of(n, merge_node_t, node);
        ouro_object_t *o = mn->o;
        ouro_free(mn);
        /* the queue held one reference: subtract it as we merge */
        if (ouro__brc_explicit_merge(o, -1) == 0)
            ouro__object_dealloc(o);
        stat_inc(&ts->merges_done);
    }
}

void ouro__brc_merge_pending(ouro_tstate_t *ts)
{
    /* acquire: pairs with the thief's release store */
    if (!atomic_load_explicit(&ts->merge_pending, memory_order_acquire))
        return;
    /* cleared first: a thief that enqueues after our dequeue sets it again */
    atomic_store_explicit(&ts->merge_pending, 0, memory_order_seq_cst);
    merge_queue(ts, false);
    if (!cds_wfcq_empty(&ts->mq_head, &ts->mq_tail))
        atomic_store_explicit(&ts->merge_pending, 1, memory_order_relaxed); /* half-done enqueue: later */
}

/* ---- thread exit ---- */
static void merge_owned(void *block, ouro_pool_t *pool, void *arg)
{
    ouro_tstate_t *ts = arg;
    ouro_object_t *o = ouro__block_object(block, pool);
    /* relaxed: GC_DEAD is set by whoever frees one, after which it is
     * skipped either way.  The walk may also hand us a dead object whose
     * block another thread is freeing right now (its deferred free came
     * due): the free writes words 0 and 1 (link and cookie, atomically,
     * for this reason), so gc may read cookie bits and the CAS below meet
     * a link, which never equals a thread pointer: it fails, as it should */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (gc & (GC_DEAD | GC_IMMORTAL))
        return;
    /* claim it (tid ours -> 0): the collector may be merging it at the
     * same time (ouro__brc_merge_unreachable), and one merge only must
     * happen; relaxed: only the claim's atomicity matters, our own writes
     * to the object are ours */
    uintptr_t tid = ts->tid;
    if (!__atomic_compare_exchange_n(&o->tid, &tid, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return; /* already merged */
    /* zero: other threads dropped every reference, decrementing directly
     * once they saw tid 0; an object queued to us keeps the queue's
     * reference until step 3 below */
    if (ouro__brc_explicit_merge(o, 0) == 0)
        ouro__object_dealloc(o);
    stat_inc(&ts->merges_done);
}

/* Before the thread's object heaps are abandoned: make every object it owns
 * shared, take what was queued to it, hand its freed objects to RCU.  Runs
 * from the first of the two object heaps' exit hooks, with both heaps alive
 * (a heap already gone is the sentinel, and the walk finds nothing). */
static void tstate_exit(ouro_heap_t *heap)
{
    (void)heap;
    ouro_tstate_t *ts = ouro__tstate;
    if (ts == NULL)
        return;
    pthread_setspecific(tstate_key, NULL);
    ouro__brc_merge_pending(ts);
    /* 1. merge every live object we own: after this no decref queues to us */
    ouro__heap_visit_live(ouro__oheap, merge_owned, ts);
    ouro__heap_visit_live(ouro__gheap, merge_owned, ts);
    /* 2. leave the table, and wait until no thief can still hold us */
    ouro_read_begin();
    cds_lfht_del(owners, &ts->node);
    ouro_read_end();
    bool online = ts->online;
    if (online)
        ouro_thread_offline();
    urcu_qsbr_synchronize_rcu();
    /* 3. what was queued before we left (merged in step 1 already) */
    merge_queue(ts, true);
    atomic_store_explicit(&ts->merge_pending, 0, memory_order_relaxed);
    /* 4. RCU: pending frees go to call_rcu; leave QSBR */
    ouro__defer_flush(ts);
    ouro__defer_close(ts);
    ouro__qsbr_unregister(ts);
    ouro__tstate = NULL;
    /* under the lock: a visitor that saw us alive is done with our bseq
     * before we return (and our TLS goes away with the thread) */
    pthread_mutex_lock(&all_lock);
    ts->alive = false;
    ts->bseq = NULL;
    pthread_mutex_unlock(&all_lock);
}

void ouro_thread_unregister(void)
{
    /* a thread that never made an object has an empty (sentinel) heap:
     * the walk then finds nothing to merge */
    tstate_exit(ouro__oheap);
}

static void tstate_key_done(void *arg)
{
    (void)arg;
    ouro_thread_unregister();
}
