/*
 * pool.c — one size class's blocks in 1..16 slots: carving fresh blocks a
 * page at a time, taking back blocks other threads freed, and the protocol
 * by which those threads tell the pool's owner.  Owns the pool's fields;
 * never touches a heap's lists (heap.c) or arena bitmaps (arena.c).
 *
 * Remote frees, without a lock.  `remote` is one word: a stack of the blocks
 * other threads freed (the last one's address; each block's word 0 links
 * the one before), how many it holds, and the NOTIFY bit (internal.h).
 *
 *   freer:  CAS remote from `old` to the block, linked to old's blocks, and
 *           old's count + 1 (ouro__pool_push_remote), or to a batch of its
 *           blocks and old's count + their number (batched remote frees,
 *           below); if `old` has NOTIFY, CAS NOTIFY away and hand the block
 *           to the owner (notify, below).
 *   owner:  takes every waiting block with one exchange (the count bounds
 *           its walk to the last one, and lets hardened mode check it);
 *           when it puts the pool on its full list it sets NOTIFY, with a
 *           CAS from exactly 0: if blocks are waiting, it takes them instead
 *           (ouro__pool_arm_notify).
 *
 * NOTIFY is only ever set on a word without blocks, and a push needs it
 * clear, so "NOTIFY set" means "no block waits".  The common remote free is
 * one CAS on this line and reads nothing the owner writes; the owner hears
 * only of pools it no longer looks at (on the full list), and finds the
 * blocks of the others (its avail list) itself, when their free lists run
 * out.  mimalloc's delayed free is the same idea.
 *
 * Notifying: the freer that took NOTIFY pushes its block on the owner
 * heap's `delayed` stack (heap.c); the owner, on its next slow path, frees
 * each block there into its pool as its own free would, which moves the
 * pool back to the avail list.  So a pool on a full list has NOTIFY set or
 * a block on its way to the owner: none is forgotten there.  The block is
 * the message: nothing per pool is queued, so nothing can be queued twice.
 * A notifier may read an owner that is exiting (or gone): its block then
 * lands on a dead heap's stack, and whoever takes it (the heap's next
 * thread, or sweep_abandoned) frees it into its pool if that is theirs,
 * else pushes it on the pool's remote stack like any remote free.
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

/* Slots per pool: the fewest (a power of two, at most 16) that hold at
 * least this many blocks.  Only classes above 2 KiB span more than one
 * slot.  A pool of few blocks runs out after few mallocs, and each time
 * its owner takes the slow path to another pool (or to the arena for a new
 * one), and other threads' frees into it find it on the full list and
 * notify: at 8 blocks, rptest (sizes to 16000 bytes) spent a third of its
 * time there.  At 32, rptest ran 1.44x faster at 1 thread and 1.25x at 2,
 * with less peak RSS (14.3 -> 12.3 MiB at 1 thread), and mstress and
 * alloc-test as before.  The larger span costs address space only: pools
 * are carved a page at a time. */
#define POOL_MIN_BLOCKS 32

unsigned ouro__class_span(int cls)
{
    size_t bs = ouro__class_size(cls);
    unsigned span = 1;
    while (span < 16 && span * OURO_SLOT_SIZE / bs < POOL_MIN_BLOCKS)
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
    atomic_store_explicit(&pool->carved, 0, memory_order_relaxed);
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
    pool->bshift = (uint8_t)__builtin_ctzll(bs);
    uint64_t d0 = bs >> pool->bshift, inv = d0; /* correct to 3 bits: d0 * d0 = 1 mod 8 */
    for (int i = 0; i < 5; i++)
        inv *= 2 - d0 * inv; /* Newton's step doubles the correct bits: 6, 12, ..., 96 */
    pool->binv = inv;
    pool->next = pool->prev = NULL;
    if (unlikely(ouro__debug_on())) {
        static _Atomic uint32_t nonces;
        /* relaxed: only uniqueness matters, the pool is published below */
        pool->nonce = atomic_fetch_add_explicit(&nonces, 1, memory_order_relaxed) + 1;
    }
    /* no block of the pool is outstanding, so none waits here: at most a
     * NOTIFY bit its last owner left (it emptied a pool that it had
     * armed, with frees of its own); relaxed, as for the fields above */
    ouro_assert(OURO_REMOTE_BLOCK(atomic_load_explicit(&pool->remote, memory_order_relaxed)) == NULL);
    ouro_assert(pool->reserved < (1u << (64 - OURO_REMOTE_COUNT_SHIFT))); /* the count fits */
    atomic_store_explicit(&pool->remote, 0, memory_order_relaxed);
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
     * is written to anyway: heap walks then skip blocks never handed out.
     * Only calloc needs to tell it from the free cookie, and only in a pool
     * whose memory is zero; in any other the free cookie serves, so that
     * freeing a block before it is handed out (after pool_recarve: a
     * second free of a block handed out before) is caught as a double free */
    uintptr_t fresh = ouro__hot.key ^ (pool->mem_is_zero ? OURO_FRESH_SALT : 0);
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
    atomic_store_explicit(&pool->carved, pool->capacity, memory_order_relaxed);
    pool->head_len = (uint64_t)pool->capacity * bs / 16;
    return true;
}

/* Every block the pool handed out is free again, and other threads freed
 * the last of them: forget its free blocks and carve it afresh, from its
 * start, a page at a time.  Taking those blocks back one by one costs a read
 * of each block's line twice: once to walk the stack, once more when malloc
 * hands it out, the walk's lines long gone from the cache by then when the
 * pool is large (xmalloc's consumer frees a whole producer's pool).  Carved
 * afresh, each block costs a write, where the line is already in the
 * cache when malloc hands the block out, as mimalloc's pages do (they are
 * set up again once all their blocks are free).
 *
 * Safe for every reader of the pool: no block of it is live, so no free of
 * one can be under way (every one of them is counted in `used` until it is
 * on the stack we took), and the heap walk skips a pool with no live block
 * whatever its carved count.  A second free of a block handed out before
 * is still caught: carved again, the block carries the free cookie (extend
 * writes it, the pool's memory no longer being zero); not carved again
 * yet, it lies past the carved blocks (ouro__report_invalid says it is not
 * in use).  Hardened mode: the links on the stack are dropped unread, so a
 * forged one leads nowhere. */
static void pool_recarve(ouro_pool_t *pool)
{
    pool->free = NULL;
    pool->capacity = 0;
    /* relaxed, as in ouro__pool_extend: a block handed out from here on
     * reaches another thread only through a synchronisation of the user's,
     * which orders this store (and the extension's after it) too */
    atomic_store_explicit(&pool->carved, 0, memory_order_relaxed);
    pool->head_len = 0;
    pool->mem_is_zero = false;
}

/* Move the blocks other threads freed onto the free list; returns how many.
 * Leaves NOTIFY as it is (it is never set while blocks wait). */
uint32_t ouro__pool_collect_remote(ouro_pool_t *pool)
{
    /* relaxed: a peek, to skip the exchange, and taking the line from the
     * freers, when nothing waits (0, or NOTIFY alone); a block pushed just
     * after it is found by the owner's next look, as if pushed later */
    uintptr_t top = atomic_load_explicit(&pool->remote, memory_order_relaxed);
    if (OURO_REMOTE_BLOCK(top) == NULL)
        return 0;
    /* acquire: pairs with each freer's release CAS, so the links and the
     * blocks' last contents written before each push are visible.  Blocks
     * wait, so NOTIFY is clear: only a push or another exchange of ours can
     * change the word, and 0 is the right thing to leave */
    top = atomic_exchange_explicit(&pool->remote, 0, memory_order_acquire);
    ouro_assert(OURO_REMOTE_BLOCK(top) != NULL && (top & OURO_REMOTE_NOTIFY) == 0);
    ouro_block_t *head = OURO_REMOTE_BLOCK(top);
    uint32_t n = OURO_REMOTE_COUNT(top);
    ouro_assert(n >= 1 && ouro__pool_used(pool) >= n);
    if (ouro__pool_used(pool) == n) {
        pool_recarve(pool);
        ouro__pool_used_add(pool, -(int32_t)n);
        return n;
    }
    /* Find the last block, to link the free list after it.  The walk reads
     * every block's line once, in a tight loop, into our cache ahead of the
     * mallocs that hand the blocks out (the hardware prefetcher can run
     * ahead of it): measured on xmalloc, taking the stack as the free list
     * without the walk was 7-13% slower, each malloc then waiting for its
     * block's line from the freer's cache (one session favoured it).  In
     * the default mode the walk only reads.  Hardened mode: the freers
     * linked these blocks plainly (a push links to whatever its CAS finds
     * there, and freers do not know the pool's key: it is [owner]).  Check
     * each link before following it (a block of this pool, as every block
     * freed to it was when it was pushed) and encode it as it joins the
     * free list; the n-th link must end the stack.  A write after free into
     * a block waiting here is caught unless it wrote the address of another
     * block of the same pool: that, only the owner's own list would have
     * caught. */
    ouro_block_t *last = head;
    for (uint32_t i = 1; i < n; i++) {
        ouro_block_t *next = (ouro_block_t *)last->node.next;
        if (pool->key != 0) {
            if (unlikely(!ouro__pool_is_block(pool, (uintptr_t)next)))
                ouro__report_corrupt_link(pool, next, "a block freed by another thread");
            ouro__link_encode(pool, last, next);
        }
        last = next;
    }
    if (unlikely(pool->key != 0 && last->node.next != NULL))
        ouro__report_corrupt_link(pool, last->node.next, "a block freed by another thread (past the last)");
    ouro_assert(last->node.next == NULL);
    ouro__link_encode(pool, last, pool->free);
    pool->free = head;
    ouro__pool_used_add(pool, -(int32_t)n);
    return n;
}

/* The owner puts the pool on its full list: ask to be told of its next
 * remote free.  False if blocks are waiting: the caller takes them instead. */
bool ouro__pool_arm_notify(ouro_pool_t *pool)
{
    /* relaxed, and a plain load first: a pool the owner freed into since
     * it last armed it (moving it back to the avail list) is often armed
     * still, and then needs no locked instruction.  Once NOTIFY is seen,
     * only a push can change the word, and that push notifies. */
    uintptr_t seen = atomic_load_explicit(&pool->remote, memory_order_relaxed);
    if (seen == OURO_REMOTE_NOTIFY)
        return true;
    if (seen != 0)
        return false;
    /* relaxed: the CAS's atomicity is the whole protocol (either no block
     * waits and the next push sees NOTIFY, or we fail and see the block);
     * no other data is published with the bit */
    if (atomic_compare_exchange_strong_explicit(&pool->remote, &seen, OURO_REMOTE_NOTIFY,
                                                memory_order_relaxed, memory_order_relaxed))
        return true;
    return seen == OURO_REMOTE_NOTIFY;
}

/* Called by a freer of block `b` (its cookie set) that found NOTIFY set:
 * take the bit and hand the block to the owner (see the top of the file). */
void ouro__pool_notify(ouro_pool_t *pool, ouro_block_t *b)
{
    uintptr_t seen = OURO_REMOTE_NOTIFY;
    /* relaxed: the CAS decides only who notifies (NOTIFY means no block
     * waits, so the word is exactly the bit); the block is published by
     * the release push below */
    if (!atomic_compare_exchange_strong_explicit(&pool->remote, &seen, 0, memory_order_relaxed,
                                                 memory_order_relaxed)) {
        ouro__pool_push_remote(pool, b); /* another freer took it first */
        return;
    }
    /* acquire: pairs with the release in ouro__heap_set_owner, so the
     * heap's [init] fields (dkey) are visible */
    ouro_heap_t *heap = atomic_load_explicit(&pool->owner, memory_order_acquire);
    if (heap == NULL) {
        /* abandoned since it was armed: an adopter puts it on its avail
         * list, a sweeper looks at every abandoned pool; either takes
         * blocks from the remote stack itself */
        ouro__pool_push_remote(pool, b);
        return;
    }
    ouro__heap_push_delayed(heap, b);
}

/* ---- batched remote frees ----
 * Each CAS on a pool's `remote` word is a locked instruction, which waits
 * for the freer's earlier stores (the cookie and link it just wrote into
 * the block, on a line the owner's cache may hold) to complete: on xmalloc
 * that CAS was nine tenths of a remote free.  So a thread gathers the blocks
 * it frees to pools it does not own, per pool, in its plain heap
 * (OURO_RC_WAYS ways, direct-mapped by pool), and pushes a way's blocks
 * with one CAS when it holds OURO_RC_BATCH of them (or OURO_RC_BYTES' worth:
 * blocks above half of that go at once), when another pool needs
 * the way, and when it calls ouro_collect, ends a collector phase (marker
 * threads), frees a batch of deferred blocks (qsbr.c), or exits; whoever
 * abandons a heap (its thread, or a fork child for the threads that did not
 * come along) pushes what it holds.  snmalloc batches its remote frees the
 * same way.
 *
 * The cost: a thread that stops freeing keeps at most OURO_RC_WAYS *
 * (OURO_RC_BATCH - 1) blocks (less than OURO_RC_WAYS * OURO_RC_BYTES bytes)
 * of at most OURO_RC_WAYS pools out of their owners' reach until it frees
 * again, collects or exits; those blocks count
 * as used meanwhile.  They carry the free cookie from the start (double
 * frees and heap walks see them as free).  A thread without a plain heap
 * (it never allocated, or late in its exit, after the heap was abandoned)
 * pushes each block at once. */

static inline ouro_rc_way_t *rc_way(ouro_heap_t *heap, const ouro_pool_t *pool)
{
    /* pool headers lie 3 lines apart in their arena's header: consecutive
     * pools take different ways */
    return &heap->rcache[((uintptr_t)pool >> 6) % OURO_RC_WAYS];
}

/* Push the way's blocks on its pool's remote stack, and empty the way. */
static void rc_push(ouro_rc_way_t *w)
{
    ouro_pool_t *pool = w->pool;
    w->pool = NULL;
    /* relaxed: the CAS below checks the value we link to */
    uintptr_t old = atomic_load_explicit(&pool->remote, memory_order_relaxed);
    do {
        if (unlikely(old & OURO_REMOTE_NOTIFY)) {
            /* the owner wants telling: block by block, the first one takes
             * NOTIFY to the owner and the rest follow onto the stack.
             * Exactly n of them: the tail's link may hold a value from a
             * failed CAS below.  The links were written by us, but a write
             * after free may have changed one since: hardened mode checks
             * each before following it, as the owner's collect does */
            ouro_block_t *b = w->head;
            for (uint32_t i = 0; i < w->n; i++) {
                /* relaxed atomic load: word 0, as in ouro__pool_push_remote */
                ouro_block_t *next = (ouro_block_t *)__atomic_load_n(&b->node.next, __ATOMIC_RELAXED);
                if (unlikely(pool->key != 0) && i + 1 < w->n && !ouro__pool_is_free_block(pool, (uintptr_t)next))
                    ouro__report_corrupt_link(pool, next, "a block freed by another thread (not yet pushed)");
                ouro__pool_push_remote(pool, b);
                b = next;
            }
            return;
        }
        /* relaxed atomic store: as in ouro__pool_push_remote */
        __atomic_store_n(&w->tail->node.next, (struct cds_lfs_node *)OURO_REMOTE_BLOCK(old), __ATOMIC_RELAXED);
        /* release: as in ouro__pool_push_remote, for every block of the
         * way (their links and cookies were stored before this CAS) */
    } while (!atomic_compare_exchange_weak_explicit(
        &pool->remote, &old, (uintptr_t)w->head + (((old >> OURO_REMOTE_COUNT_SHIFT) + w->n) << OURO_REMOTE_COUNT_SHIFT),
        memory_order_release, memory_order_relaxed));
}

void ouro__pool_free_remote(ouro_pool_t *pool, ouro_block_t *b, uintptr_t key)
{
    /* relaxed atomic: the owner's heap walk may read the word meanwhile.
     * Here, not in ouro_free, so that a remote free is one call deep */
    __atomic_store_n(&b->cookie, (uintptr_t)b ^ key, __ATOMIC_RELAXED);
    ouro_heap_t *heap = ouro__dheap;
    /* relaxed: [init], as every free reads it */
    uint32_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    /* no heap: nothing would push a batch; blocks above 2 KiB: a batch would
     * be one block, and they are few to a pool (rptest lost 5-10% when a
     * peer held its large blocks back) */
    if (unlikely(heap == &ouro__empty_heap) || bs > OURO_RC_BYTES / 2) {
        ouro__pool_push_remote(pool, b);
        return;
    }
    ouro_rc_way_t *w = rc_way(heap, pool);
    if (likely(w->pool == pool)) {
        /* relaxed atomic store: as in ouro__pool_push_remote (the owner,
         * exiting, may compare-exchange word 0 of a block it saw live) */
        __atomic_store_n(&b->node.next, (struct cds_lfs_node *)w->head, __ATOMIC_RELAXED);
        w->head = b;
        if (++w->n == OURO_RC_BATCH || (w->n + 1) * bs > OURO_RC_BYTES)
            rc_push(w);
        return;
    }
    if (w->pool != NULL)
        rc_push(w);
    __atomic_store_n(&b->node.next, NULL, __ATOMIC_RELAXED); /* as above */
    w->pool = pool;
    w->head = w->tail = b;
    w->n = 1;
}

void ouro__pool_flush_remote(ouro_heap_t *heap)
{
    for (int i = 0; i < OURO_RC_WAYS; i++)
        if (heap->rcache[i].pool != NULL)
            rc_push(&heap->rcache[i]);
}

/* ---- misuse reports ---- */
void ouro__report_double_free(const void *p, const ouro_pool_t *pool)
{
    ouro__fatal("double free of %p (size class %d, block size %u): the block is already free", p,
                pool->cls, atomic_load_explicit(&pool->block_size, memory_order_relaxed));
}

void ouro__report_invalid(const char *fn, const void *p)
{
    uintptr_t u = (uintptr_t)p;
    ouro_pool_t *pool = ouro__unit_kind(u) == OURO_UNIT_ARENA ? ouro__pool_of(u) : NULL;
    if (pool != NULL) {
        /* relaxed, and plain reads of the [init] fields: only the message
         * depends on them, and the pool may be another thread's */
        size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
        uintptr_t off = u - (uintptr_t)pool->start;
        /* past the blocks carved since the pool was last emptied */
        if (bs != 0 && u >= (uintptr_t)pool->start && off % bs == 0 && off / bs < pool->reserved)
            ouro__fatal("%s(%p): pointer is a block not in use: its pool emptied and has not handed it "
                        "out since (a double free?)",
                        fn, p);
    }
    ouro__fatal("%s(%p): pointer was not allocated by ouro (or is not the start of a block)", fn, p);
}
