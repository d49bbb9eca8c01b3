/*
 * pool.c — one size class's blocks in 1..16 slots: carving fresh blocks a
 * page at a time, taking back blocks other threads freed, and the protocol
 * by which those threads tell the pool's owner.  Owns the pool's fields;
 * never touches a heap's lists (heap.c) or arena bitmaps (arena.c).
 *
 * Remote frees, without a lock (all orders seq_cst where marked, because two
 * of these steps form a store-then-load pattern on each side (Dekker):
 *
 *   freer:  push block on pool->remote      (liburcu cmpxchg: full barrier)
 *           if queued == 0 (seq_cst load) and exchange(queued, 1) == 0:
 *               enqueue the pool on its owner's queue (see ouro__pool_notify)
 *   owner:  dequeue pool; queued = 0 (seq_cst store)
 *           pop_all pool->remote            (liburcu xchg: full barrier)
 *
 * Either the owner's pop_all sees the block, or the freer's load sees
 * queued == 0 and queues the pool again: no block is left unseen.
 * `queued` is 1 exactly while one thread holds the pool's queue node (it is
 * notifying, or the node sits in a heap's queue), so the node is never in
 * two queues.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

size_t ouro__class_size(int cls)
{
    if (cls <= 32)
        return cls == 0 ? 16 : (size_t)cls * 16;
    unsigned k = (unsigned)cls - 33, b = 9 + k / 4, sub = k % 4;
    return ((size_t)1 << b) + ((size_t)(sub + 1) << (b - 2));
}

/* Slots per pool: the fewest (a power of two) that hold at least 8 blocks. */
unsigned ouro__class_span(int cls)
{
    size_t bs = ouro__class_size(cls);
    unsigned span = 1;
    while (span < 16 && span * OURO_SLOT_SIZE / bs < 8)
        span *= 2;
    return span;
}

void ouro__pool_init(ouro_pool_t *pool, int cls, bool mem_is_zero)
{
    size_t bs = ouro__class_size(cls);
    /* relaxed stores: the pool is published below by the release stores to
     * slot_pool, which order all of these before any reader finds it */
    pool->free = NULL;
    atomic_store_explicit(&pool->used, 0, memory_order_relaxed);
    pool->capacity = 0;
    atomic_store_explicit(&pool->limit, 0, memory_order_relaxed);
    ouro_arena_t *a = ouro__arena_of((uintptr_t)pool->start);
    size_t bytes = (size_t)pool->span << OURO_SLOT_SHIFT;
    if (pool->slot + pool->span == OURO_SLOTS)
        bytes -= a->guard; /* the arena's last page is its guard (hardened mode) */
    pool->reserved = (uint32_t)(bytes / bs);
    /* hardened mode: a new key for every pool set up, so a link learnt in
     * one pool (or an earlier life of this one) says nothing of another */
    pool->key = ouro__hardened_on() ? ouro__pool_new_key(pool) : 0;
    pool->head_lo = (uintptr_t)pool->start;
    pool->head_len = 0;
    atomic_store_explicit(&pool->block_size, (uint32_t)bs, memory_order_relaxed);
    pool->cls = (uint8_t)cls;
    pool->mem_is_zero = mem_is_zero;
    pool->divc = UINT64_MAX / bs + 1;
    pool->next = pool->prev = NULL;
    if (unlikely(ouro__debug_on())) {
        static _Atomic uint32_t nonces;
        /* relaxed: only uniqueness matters, the pool is published below */
        pool->nonce = atomic_fetch_add_explicit(&nonces, 1, memory_order_relaxed) + 1;
    }
    ouro_assert(cds_lfs_empty(&pool->remote));
    for (unsigned i = 0; i < pool->span; i++)
        /* release: pairs with the acquire in ouro__pool_of, so a thread that
         * finds the pool by address sees the fields set above */
        atomic_store_explicit(&a->slot_pool[pool->slot + i], pool, memory_order_release);
}

/* Hardened mode: link the `n` fresh blocks at `first` in a random order
 * (Fisher-Yates with the thread's generator), links encoded, so that where
 * the next block of a fresh page lies cannot be predicted from where the
 * last one did.  n <= OURO_EXTEND_BYTES / 16. */
static void extend_shuffled(ouro_pool_t *pool, uint8_t *first, size_t bs, uint32_t n, uintptr_t fresh)
{
    uint16_t order[OURO_EXTEND_BYTES / 16];
    for (uint32_t i = 0; i < n; i++)
        order[i] = (uint16_t)i;
    ouro__shuffle_u16(order, n);
    ouro_block_t *next = NULL;
    for (uint32_t i = n; i-- > 0;) {
        ouro_block_t *b = (ouro_block_t *)(first + (size_t)order[i] * bs);
        ouro__link_encode(pool, b, next);
        b->cookie = (uintptr_t)b ^ fresh;
        next = b;
    }
    pool->free = next;
}

/* Carve up to a page's worth of fresh blocks onto the (empty) free list. */
bool ouro__pool_extend(ouro_pool_t *pool)
{
    ouro_assert(pool->free == NULL);
    if (pool->capacity >= pool->reserved)
        return false;
    size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    /* a page's worth, but at least 4 blocks: classes above 1 KiB would
     * otherwise take the slow path for every block or two */
    uint32_t n = (uint32_t)(OURO_EXTEND_BYTES / bs);
    if (n < 4)
        n = 4;
    if (n > pool->reserved - pool->capacity)
        n = pool->reserved - pool->capacity;
    uint8_t *first = pool->start + (size_t)pool->capacity * bs;
    /* each block gets the fresh cookie (internal.h), on the line its link
     * is written to anyway: heap walks then skip blocks never handed out */
    uintptr_t fresh = ouro__key ^ OURO_FRESH_SALT;
    if (pool->key != 0) {
        extend_shuffled(pool, first, bs, n, fresh);
    } else {
        uint8_t *b = first;
        for (uint32_t i = 1; i < n; i++, b += bs) {
            ((ouro_block_t *)b)->node.next = (struct cds_lfs_node *)(b + bs);
            ((ouro_block_t *)b)->cookie = (uintptr_t)b ^ fresh;
        }
        ((ouro_block_t *)b)->node.next = NULL;
        ((ouro_block_t *)b)->cookie = (uintptr_t)b ^ fresh;
        pool->free = (ouro_block_t *)first;
    }
    pool->capacity += n;
    /* relaxed: the new blocks reach other threads only through some later
     * synchronisation of the user's, which orders this store too */
    atomic_store_explicit(&pool->limit, (uint64_t)pool->capacity * bs, memory_order_relaxed);
    pool->head_len = (uint64_t)pool->capacity * bs / 16;
    return true;
}

/* Move the blocks other threads freed onto the free list; returns how many. */
uint32_t ouro__pool_collect_remote(ouro_pool_t *pool)
{
    if (cds_lfs_empty(&pool->remote))
        return 0;
    /* liburcu's xchg is a full barrier: the blocks' links written before
     * each push are visible (and see the Dekker note at the top) */
    struct cds_lfs_head *head = __cds_lfs_pop_all(&pool->remote);
    if (head == NULL)
        return 0;
    ouro_tsan_acquire(&pool->remote);
    uint32_t n = 1;
    struct cds_lfs_node *last = &head->node;
    if (pool->key == 0) {
        while (last->next) {
            last = last->next;
            n++;
        }
    } else {
        /* hardened mode: liburcu linked these blocks plainly (its push
         * writes the link itself, inside its CAS loop, so it cannot store
         * our encoding).  Check each link before following it (a block of
         * this pool, as every block freed to it was when it was pushed) and
         * encode it as it joins the free list.  A write after free into a
         * block waiting here is caught unless it wrote the address of
         * another block of the same pool: that, only the owner's own list
         * would have caught. */
        for (;;) {
            struct cds_lfs_node *next = last->next;
            if (next == NULL)
                break;
            if (unlikely(!ouro__pool_is_block(pool, (uintptr_t)next)))
                ouro__report_corrupt_link(pool, next, "a block freed by another thread");
            /* more blocks than are handed out: the links run in a circle */
            if (unlikely(n >= ouro__pool_used(pool)))
                ouro__report_corrupt_link(pool, next, "a block freed by another thread (a cycle)");
            ouro__link_encode(pool, (ouro_block_t *)last, (ouro_block_t *)next);
            last = next;
            n++;
        }
    }
    ouro__link_encode(pool, (ouro_block_t *)last, pool->free);
    pool->free = (ouro_block_t *)&head->node;
    ouro_assert(ouro__pool_used(pool) >= n);
    ouro__pool_used_add(pool, -(int32_t)n);
    return n;
}

void ouro__pool_notify(ouro_pool_t *pool)
{
    /* No owner: nobody to tell.  seq_cst, pairing with the adopter's
     * seq_cst store of itself as owner, which precedes its pop_all: if we
     * read NULL, that store comes later, so its pop_all sees our push.  A
     * sweeper or adopter collects remote frees of ownerless pools itself. */
    if (atomic_load_explicit(&pool->owner, memory_order_seq_cst) == NULL)
        return;
    /* seq_cst: the load side of the Dekker pattern above */
    if (atomic_load_explicit(&pool->queued, memory_order_seq_cst))
        return;
    if (atomic_exchange_explicit(&pool->queued, 1, memory_order_seq_cst))
        return;
    /* we hold the queue node now */
    for (;;) {
        ouro_heap_t *heap = atomic_load_explicit(&pool->owner, memory_order_seq_cst);
        if (heap) {
            /* announce ourselves before re-reading the owner: an exiting
             * heap first clears its pools' owners, then waits for its
             * notifiers to drain (seq_cst on both sides: either it sees our
             * increment, or we see its cleared owner) */
            atomic_fetch_add_explicit(&heap->notifiers, 1, memory_order_seq_cst);
            if (atomic_load_explicit(&pool->owner, memory_order_seq_cst) == heap) {
                cds_wfcq_node_init(&pool->qnode);
                ouro_tsan_release(&heap->rq_head);
                cds_wfcq_enqueue(&heap->rq_head, &heap->rq_tail, &pool->qnode);
                /* release: the enqueue is complete before the heap sees 0 */
                atomic_fetch_sub_explicit(&heap->notifiers, 1, memory_order_release);
                return;
            }
            atomic_fetch_sub_explicit(&heap->notifiers, 1, memory_order_release);
            continue;
        }
        /* no owner: whoever adopts the pool takes its remote frees itself */
        atomic_store_explicit(&pool->queued, 0, memory_order_seq_cst);
        /* adopted meanwhile with frees the adopter may have missed? */
        if (cds_lfs_empty(&pool->remote) ||
            atomic_load_explicit(&pool->owner, memory_order_seq_cst) == NULL)
            return;
        if (atomic_exchange_explicit(&pool->queued, 1, memory_order_seq_cst))
            return;
    }
}

/* The caller dequeued the pool's node from a heap queue: give it up.  If the
 * caller does not own the pool (it changed hands while queued), pass the
 * news on to the current owner. */
void ouro__pool_unqueue(ouro_pool_t *pool, ouro_heap_t *heap)
{
    /* seq_cst: the store side of the Dekker pattern; the caller's pop_all follows */
    atomic_store_explicit(&pool->queued, 0, memory_order_seq_cst);
    if (atomic_load_explicit(&pool->owner, memory_order_seq_cst) != heap &&
        !cds_lfs_empty(&pool->remote))
        ouro__pool_notify(pool);
}

/* ---- misuse reports ---- */
void ouro__report_double_free(const void *p, const ouro_pool_t *pool)
{
    ouro__fatal("double free of %p (size class %d, block size %u): the block is already free", p,
                pool->cls, atomic_load_explicit(&pool->block_size, memory_order_relaxed));
}

void ouro__report_invalid(const char *fn, const void *p)
{
    ouro__fatal("%s(%p): pointer was not allocated by ouro (or is not the start of a block)", fn, p);
}
