/*
 * qsbr.c — registration with RCU (liburcu, QSBR flavor) and the deferred
 * reuse of freed objects' memory.  Owns the per-thread batches of freed
 * blocks; never touches counts.
 *
 * A freed object's block goes into its thread's batch; a full batch (or
 * one flushed at a quiescent state or exit) is handed to call_rcu as one
 * callback, which runs after a grace period: no online thread can still be
 * reading any of the blocks.  The callback (on liburcu's call_rcu thread)
 * does not free them: it hands the batch back to the thread that made it
 * (a lock-free stack in its state), which frees the blocks at its next
 * batch, quiescent state or exit, mostly into its own pools (local frees).
 * liburcu runs its callbacks in bursts (it sleeps ~10 ms between rounds),
 * and a burst that freed a busy thread's blocks took 1-2 ms, during which
 * it preempted that very thread (issue 4's mutator gap).  The callback
 * frees a batch itself only when its thread is gone or idle (no batch
 * started for IDLE_MS), so memory does not wait for a thread that may not
 * come back soon; ouro_barrier frees every handed-back batch.
 */
#include "object.h"

#include <urcu-qsbr.h>

#define BATCH 254

typedef struct defer_batch_s {
    struct rcu_head rcu;
    struct cds_lfs_node ready;  /* on owner->ready once its grace period is over */
    ouro_tstate_t *owner;       /* the thread that made it (states are never unmapped) */
    size_t n;
    void *blocks[BATCH];
} defer_batch_t;

#define IDLE_MS 50

_Atomic size_t ouro__deferred;

/* If `block` holds a traced object, its trace record goes.  Plain blocks
 * (ouro_free_deferred) come this way too: the pool's kind tells them apart. */
static ouro_noinline void trace_forget(void *block)
{
    uintptr_t u = (uintptr_t)block;
    if (ouro__unit_kind(u) != OURO_UNIT_ARENA)
        return;
    ouro_pool_t *pool = ouro__pool_of(u);
    /* relaxed atomic: the kind is [init], published with the pool (the
     * acquire in ouro__pool_of); heap walks read it the same way */
    int kind = pool ? __atomic_load_n(&pool->kind, __ATOMIC_RELAXED) : OURO_KIND_PLAIN;
    if (kind != OURO_KIND_OBJECT && kind != OURO_KIND_GC)
        return;
    ouro_object_t *o = (ouro_object_t *)(u + (kind == OURO_KIND_GC ? GC_HEAD_SIZE : 0));
    /* relaxed: nobody has written the word since the grace period began
     * (the bit itself was set before the object was published) */
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACED)
        ouro__trace_object_forget(o);
}

/* For TSan: a grace period orders every reader's accesses before its
 * quiescent state (or read_end, or going offline) ahead of the callbacks
 * that run after it.  liburcu's QSBR is not instrumented, so we state that
 * edge on this address: release at each quiescent point, acquire in the
 * callback.  Compiles to nothing outside TSan builds. */
static char gp_edge __attribute__((unused));

void ouro__qsbr_register(ouro_tstate_t *ts)
{
    if (ts->registered)
        return;
    urcu_qsbr_register_thread();
    /* offline by default: such a thread never holds up a grace period */
    urcu_qsbr_thread_offline();
    ts->registered = true;
    ts->online = false;
}

void ouro__qsbr_unregister(ouro_tstate_t *ts)
{
    if (!ts->registered)
        return;
    if (!ts->online && ts->read_depth == 0)
        urcu_qsbr_thread_online();
    ouro_tsan_release(&gp_edge);
    urcu_qsbr_unregister_thread();
    ts->registered = ts->online = false;
    ts->read_depth = 0;
}

/* Free an object's block (or a block of ouro_free_deferred) after its
 * grace period; a traced object first leaves the tracer's counts.
 * Relaxed load of the count of traced objects: see trace.c ("objects"). */
static inline void block_free(void *block)
{
    if (unlikely(atomic_load_explicit(&ouro__trace_objects, memory_order_relaxed) != 0))
        trace_forget(block);
    ouro_free(block);
}

/* Free a batch whose grace period is over, on any thread. */
static void batch_release(defer_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        block_free(b->blocks[i]);
    /* those of other threads' pools reach them now, not with our next
     * batch: ouro_barrier waits for this batch to be free */
    ouro__pool_flush_remote_mine();
    ouro_tsan_release(&ouro__deferred); /* ouro_barrier acquires it */
    atomic_fetch_sub_explicit(&ouro__deferred, b->n, memory_order_relaxed);
    ouro_free(b);
}

/* Free every batch on a ready stack.  Under its pop mutex (liburcu's
 * blocking pop_all), so that a thread freeing some of them meanwhile
 * (ouro__defer_reclaim) finishes first: ouro_barrier then returns only when
 * they are all free.  The pop is a full barrier: we see the batches as
 * their pushers left them. */
static void ready_release(struct cds_lfs_stack *s)
{
    struct cds_lfs_head *h = cds_lfs_pop_all_blocking(s);
    if (h == NULL)
        return;
    ouro_tsan_acquire(s);
    for (struct cds_lfs_node *n = &h->node, *next; n; n = next) {
        next = n->next;
        batch_release(caa_container_of(n, defer_batch_t, ready));
    }
}

/* call_rcu's callback: the grace period is over. */
static void batch_done(struct rcu_head *head)
{
    defer_batch_t *b = caa_container_of(head, defer_batch_t, rcu);
    ouro_tsan_acquire(b);
    ouro_tsan_acquire(&gp_edge);
    ouro_tstate_t *ts = b->owner;
    /* relaxed: both are hints here; the seq_cst load below decides */
    if (atomic_load_explicit(&ts->accepting, memory_order_relaxed) &&
        ouro__now_ms() - atomic_load_explicit(&ts->active_ms, memory_order_relaxed) < IDLE_MS) {
        ouro_tsan_release(&ts->ready);
        cds_lfs_push(&ts->ready, &b->ready); /* a full barrier */
        /* seq_cst, paired with ouro__defer_close's store and pop_all: if we
         * still see it accepting, its closing pop_all comes after our push
         * and frees the batch; otherwise we free what is there ourselves */
        if (atomic_load_explicit(&ts->accepting, memory_order_seq_cst))
            return;
        ready_release(&ts->ready);
        return;
    }
    batch_release(b);
}

/* Batches a thread frees per call: the callbacks hand back a whole round
 * (~10 ms of its frees) at once, and freeing them in one go would be the
 * same millisecond pause on this thread.  Called once per batch it starts,
 * so 2 a call drain a round in half the time it took to make. */
#define RECLAIM_PER_CALL 2

void ouro__defer_reclaim(ouro_tstate_t *ts)
{
    /* a relaxed peek (CMM_LOAD_SHARED) before taking the pop mutex */
    if (cds_lfs_empty(&ts->ready))
        return;
    cds_lfs_pop_lock(&ts->ready);
    for (int k = 0; k < RECLAIM_PER_CALL; k++) {
        /* under the pop mutex, as liburcu requires of __cds_lfs_pop */
        struct cds_lfs_node *n = __cds_lfs_pop(&ts->ready);
        if (n == NULL)
            break;
        ouro_tsan_acquire(&ts->ready);
        batch_release(caa_container_of(n, defer_batch_t, ready));
    }
    cds_lfs_pop_unlock(&ts->ready);
}

void ouro__defer_close(ouro_tstate_t *ts)
{
    /* seq_cst: see batch_done */
    atomic_store_explicit(&ts->accepting, false, memory_order_seq_cst);
    ready_release(&ts->ready);
}

void ouro__defer_fork_child(ouro_tstate_t *ts, bool gone)
{
    /* a thread that did not come along may have held the pop mutex */
    pthread_mutex_init(&ts->ready.lock, NULL);
    if (gone)
        atomic_store_explicit(&ts->accepting, false, memory_order_relaxed); /* no other thread runs */
}

/* A (recycled or new) state takes batches back from now on; batches a
 * previous thread of this state left on `ready` are freed by the new one. */
void ouro__defer_open(ouro_tstate_t *ts)
{
    atomic_store_explicit(&ts->active_ms, ouro__now_ms(), memory_order_relaxed);
    /* relaxed: a callback that misses it frees its batch itself */
    atomic_store_explicit(&ts->accepting, true, memory_order_relaxed);
}

void ouro__defer_flush(ouro_tstate_t *ts)
{
    defer_batch_t *b = ts->batch;
    if (b == NULL || b->n == 0)
        return;
    ts->batch = NULL;
    /* call_rcu's enqueue publishes the batch (its implementation orders it
     * with a full barrier); the callback runs after a grace period */
    ouro_tsan_release(b);
    urcu_qsbr_call_rcu(&b->rcu, batch_done);
}

void ouro__defer_free(ouro_tstate_t *ts, void *block)
{
    defer_batch_t *b = ts->batch;
    if (b == NULL) {
        ouro__trace_internal_begin(); /* ours, not the program's */
        b = ouro_malloc(sizeof *b);
        ouro__trace_internal_end();
        if (b == NULL) {
            /* no memory for a batch: wait for the grace period here */
            bool online = ts->online || ts->read_depth;
            if (online)
                urcu_qsbr_thread_offline();
            urcu_qsbr_synchronize_rcu();
            if (online)
                urcu_qsbr_thread_online();
            block_free(block);
            return;
        }
        b->n = 0;
        b->owner = ts;
        ts->batch = b;
        /* relaxed: the owner's clock, read by batch_done as a hint */
        atomic_store_explicit(&ts->active_ms, ouro__now_ms(), memory_order_relaxed);
        ouro__defer_reclaim(ts);
    }
    b->blocks[b->n++] = block;
    atomic_fetch_add_explicit(&ouro__deferred, 1, memory_order_relaxed);
    if (b->n == BATCH)
        ouro__defer_flush(ts);
}

int ouro_thread_register(void)
{
    return ouro__tstate_get() ? 0 : -1;
}

void ouro_quiescent(void)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL)
        return;
    if (ts->online) {
        ouro_tsan_release(&gp_edge);
        urcu_qsbr_quiescent_state();
    }
    ouro__brc_merge_pending(ts);
    ouro__defer_flush(ts);
    ouro__defer_reclaim(ts);
}

void ouro_thread_online(void)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL || ts->online)
        return;
    if (ts->read_depth == 0)
        urcu_qsbr_thread_online();
    ts->online = true;
}

void ouro_thread_offline(void)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (ts == NULL || !ts->online)
        return;
    ts->online = false;
    if (ts->read_depth == 0) {
        ouro_tsan_release(&gp_edge);
        urcu_qsbr_thread_offline();
    }
}

void ouro_read_begin(void)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL)
        return;
    if (ts->read_depth++ == 0 && !ts->online)
        urcu_qsbr_thread_online();
}

void ouro_read_end(void)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (ts == NULL || ts->read_depth == 0)
        return;
    if (--ts->read_depth == 0 && !ts->online) {
        ouro_tsan_release(&gp_edge);
        urcu_qsbr_thread_offline();
    }
}

void ouro__qsbr_pause(void)
{
    ouro_tstate_t *ts = ouro__tstate;
    if (ts == NULL || (ts->read_depth == 0 && !ts->online))
        return; /* offline: holds up no grace period anyway */
    ouro_tsan_release(&gp_edge);
    urcu_qsbr_quiescent_state();
}

/* Every state, alive or not: a recycled or dead one may hold batches. */
static void release_visit(ouro_tstate_t *ts, void *arg)
{
    (void)arg;
    ready_release(&ts->ready);
}

void ouro_barrier(void)
{
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL)
        return;
    ouro__brc_merge_pending(ts);
    ouro__defer_flush(ts);
    /* rcu_barrier waits for grace periods: we must not hold one up */
    bool online = ts->online || ts->read_depth;
    if (online)
        urcu_qsbr_thread_offline();
    ouro_tsan_release(&gp_edge);
    urcu_qsbr_barrier();
    /* the batches the callbacks handed back to their threads */
    ouro__tstates_visit(release_visit, NULL);
    ouro_tsan_acquire(&ouro__deferred); /* the frees it waited for */
    if (online)
        urcu_qsbr_thread_online();
}

/* call_rcu's worker threads and fork (liburcu's documented protocol) */
void ouro__qsbr_fork_prepare(void)
{
    urcu_qsbr_call_rcu_before_fork();
}

void ouro__qsbr_fork_parent(void)
{
    urcu_qsbr_call_rcu_after_fork_parent();
}

void ouro__qsbr_fork_child(void)
{
    urcu_qsbr_call_rcu_after_fork_child();
}

void ouro_free_deferred(void *p)
{
    if (p == NULL)
        return;
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL) {
        /* no thread state (out of memory): wait for the grace period here */
        urcu_qsbr_synchronize_rcu();
        block_free(p);
        return;
    }
    ouro__defer_free(ts, p);
}
