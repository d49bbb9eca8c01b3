/*
 * brc.c — biased reference counting across threads (Choi, Shull, Torrellas,
 * PACT 2018; CPython's free-threaded build): per-thread states found by
 * thread id, the queues through which other threads hand an owner the
 * objects whose shared count would go below zero, merging, and what a thread
 * does at exit so that none of its objects is stranded or freed early.
 * Owns the thread-state registry; never touches pools or counts' fast paths.
 *
 * Locking: one mutex per registry bucket, taken only on slow paths (a
 * queued object, a thread registering or exiting) and never while another
 * bucket's is held.
 */
#include "object.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

__thread ouro_tstate_t *ouro__tstate __attribute__((tls_model("initial-exec")));

#define BUCKETS 16 /* few: fork holds them all (TSan tracks at most 64 locks) */
static struct bucket_s {
    pthread_mutex_t lock;
    ouro_tstate_t *head;
} buckets[BUCKETS] = {[0 ... BUCKETS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static ouro_tstate_t *all_states; /* every state ever made; recycled, never freed */

static struct bucket_s *bucket_of(uintptr_t tid)
{
    return &buckets[(tid >> 12) % BUCKETS];
}

static void tstate_exit(ouro_heap_t *heap);
static void tstate_key_done(void *arg);
/* Its destructor unregisters a thread that registered but never made an
 * object; otherwise the object heap's exit hook does it first, so that the
 * merge walk runs before the heap's pools are abandoned. */
static pthread_key_t tstate_key;

void ouro__brc_init(void)
{
    ouro__heap_set_exit_hook(OURO_KIND_OBJECT, tstate_exit);
    if (pthread_key_create(&tstate_key, tstate_key_done) != 0)
        ouro__fatal("pthread_key_create failed");
}

ouro_tstate_t *ouro__tstate_get(void)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (likely(ts != NULL))
        return ts;
    ouro__init();
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
    }
    ts->alive = true;
    pthread_mutex_unlock(&all_lock);
    ts->tid = ouro__thread_id();
    ts->queue_len = 0;
    ts->read_depth = ts->dealloc_depth = 0;
    ts->trash = NULL;
    ts->batch = NULL;
    atomic_store_explicit(&ts->merge_pending, 0, memory_order_relaxed);
    struct bucket_s *b = bucket_of(ts->tid);
    pthread_mutex_lock(&b->lock);
    ts->bucket_next = b->head;
    b->head = ts;
    pthread_mutex_unlock(&b->lock);
    ouro__tstate = ts;
    pthread_setspecific(tstate_key, ts);
    ouro__qsbr_register(ts);
    return ts;
}

/* fork: hold every lock of the object layer across it */
void ouro__brc_fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (int i = 0; i < BUCKETS; i++)
        pthread_mutex_lock(&buckets[i].lock);
}

void ouro__brc_fork_parent(void)
{
    for (int i = BUCKETS - 1; i >= 0; i--)
        pthread_mutex_unlock(&buckets[i].lock);
    pthread_mutex_unlock(&all_lock);
}

void ouro__tstates_visit(void (*fn)(ouro_tstate_t *ts, void *arg), void *arg)
{
    pthread_mutex_lock(&all_lock);
    for (ouro_tstate_t *ts = all_states; ts; ts = ts->all_next)
        fn(ts, arg);
    pthread_mutex_unlock(&all_lock);
}

/* Merge the owner's count into the shared one (adding `extra`), mark the
 * object MERGED and ownerless; returns the merged count, and the caller
 * frees the object if it is 0.  Run by the owner, or by anyone once the
 * owner has gone (under its bucket lock).
 *
 * Every write to the object happens before the CAS: once the merged count
 * is published another thread may take it to zero and free the object, and
 * a late store would land in a freed (or reused) block.  A thief that reads
 * tid == 0 early decrements the shared count itself instead of queueing,
 * which the CAS below folds in. */
int64_t ouro__brc_explicit_merge(ouro_object_t *o, int64_t extra)
{
    _Atomic int64_t *sh = (_Atomic int64_t *)&o->shared;
    int64_t local = (int64_t)__atomic_load_n(&o->local, __ATOMIC_RELAXED);
    /* relaxed: only the owner (or, once it has gone, nobody) writes local;
     * tid 0 sends the former owner's own calls to the shared path */
    __atomic_store_n(&o->local, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&o->tid, 0, __ATOMIC_RELAXED);
    int64_t shared = atomic_load_explicit(sh, memory_order_relaxed), rc, nw;
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

/* A non-owner took the shared count of `o` to zero-and-below and marked it
 * QUEUED: hand the stolen reference to the owner. */
void ouro__brc_queue(ouro_object_t *o)
{
    uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_ACQUIRE);
    if (tid == 0) {
        /* the owner merged concurrently: the count is shared now; drop the
         * reference like any other */
        ouro__decref_shared(o);
        return;
    }
    struct bucket_s *b = bucket_of(tid);
    pthread_mutex_lock(&b->lock);
    ouro_tstate_t *ts = b->head;
    while (ts && ts->tid != tid)
        ts = ts->bucket_next;
    if (ts == NULL) {
        /* the owner has exited (it merged all its objects first, so this
         * object is MERGED unless we raced its walk): merge ourselves,
         * subtracting the reference we stole */
        int64_t rc = ouro__brc_explicit_merge(o, -1);
        pthread_mutex_unlock(&b->lock);
        if (rc == 0)
            ouro__object_dealloc(o);
        return;
    }
    if (ts->queue_len == ts->queue_cap) {
        size_t cap = ts->queue_cap ? ts->queue_cap * 2 : 64;
        ouro_object_t **q = ouro_realloc(ts->queue, cap * sizeof *q);
        if (q == NULL)
            ouro__fatal("out of memory queueing an object to its owner");
        ts->queue = q;
        ts->queue_cap = cap;
    }
    ts->queue[ts->queue_len++] = o;
    /* release: pairs with the owner's acquire load; the queue itself is
     * read under the bucket lock */
    atomic_store_explicit(&ts->merge_pending, 1, memory_order_release);
    pthread_mutex_unlock(&b->lock);
    ouro_tstate_t *me = ouro__tstate_get();
    if (me)
        stat_inc(&me->merges_queued);
}

/* The owner merges what other threads queued to it. */
void ouro__brc_merge_pending(ouro_tstate_t *ts)
{
    if (!atomic_load_explicit(&ts->merge_pending, memory_order_acquire))
        return;
    struct bucket_s *b = bucket_of(ts->tid);
    pthread_mutex_lock(&b->lock);
    ouro_object_t **q = ts->queue;
    size_t n = ts->queue_len;
    ts->queue = NULL;
    ts->queue_len = ts->queue_cap = 0;
    atomic_store_explicit(&ts->merge_pending, 0, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        /* the queue held one reference: subtract it as we merge */
        if (ouro__brc_explicit_merge(q[i], -1) == 0)
            ouro__object_dealloc(q[i]);
        stat_inc(&ts->merges_done);
    }
    ouro_free(q);
}

/* ---- thread exit ---- */
static void merge_owned(void *block, ouro_pool_t *pool, void *arg)
{
    ouro_tstate_t *ts = arg;
    ouro_object_t *o = block;
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (gc & (GC_DEAD | GC_IMMORTAL))
        return;
    if (__atomic_load_n(&o->tid, __ATOMIC_RELAXED) != ts->tid)
        return; /* already merged */
    /* zero: other threads dropped every reference, decrementing directly
     * once they saw tid 0; an object queued to us keeps the queue's
     * reference until step 3 below */
    if (ouro__brc_explicit_merge(o, 0) == 0)
        ouro__object_dealloc(o);
    stat_inc(&ts->merges_done);
}

/* Before the thread's object heap is abandoned: make every object it owns
 * shared, take what was queued to it, hand its freed objects to RCU. */
static void tstate_exit(ouro_heap_t *heap)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (ts == NULL)
        return;
    pthread_setspecific(tstate_key, NULL);
    ouro__brc_merge_pending(ts);
    /* 1. merge every live object we own: after this no decref queues to us */
    ouro__heap_visit_live(heap, merge_owned, ts);
    /* 2. leave the registry: from now on a late enqueuer merges itself */
    struct bucket_s *b = bucket_of(ts->tid);
    pthread_mutex_lock(&b->lock);
    ouro_tstate_t **pp = &b->head;
    while (*pp != ts)
        pp = &(*pp)->bucket_next;
    *pp = ts->bucket_next;
    pthread_mutex_unlock(&b->lock);
    /* 3. what was queued before we left (merged in step 1 already) */
    atomic_store_explicit(&ts->merge_pending, 1, memory_order_relaxed);
    ouro__brc_merge_pending(ts);
    /* 4. RCU: pending frees go to call_rcu; leave QSBR */
    ouro__defer_flush(ts);
    ouro__qsbr_unregister(ts);
    ouro__tstate = NULL;
    pthread_mutex_lock(&all_lock);
    ts->alive = false;
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
