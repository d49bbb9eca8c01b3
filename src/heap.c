/*
 * heap.c — per-thread pool caches.  A thread's heap holds, per size class,
 * the pool it allocates from, the pools that may still have free blocks, and
 * the pools found full; and a stack of blocks other threads freed to its
 * full pools (pool.c tells why).  Owns those lists, the heap registry and
 * the abandoned pools of exited threads; never touches an arena's bitmaps
 * (arena.c) or carves blocks (pool.c).
 *
 * Life of a pool: claimed fresh from the arena layer, or adopted from the
 * abandoned stack of its class; owned by one heap; released to the arena
 * layer when the owner finds it empty (unless it is the class's current
 * pool), or abandoned when the owner exits.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

__thread ouro_heap_t *ouro__heap __attribute__((tls_model("initial-exec"))) = &ouro__empty_heap;
__thread ouro_heap_t *ouro__oheap __attribute__((tls_model("initial-exec"))) = &ouro__empty_oheap;
__thread ouro_heap_t *ouro__gheap __attribute__((tls_model("initial-exec"))) = &ouro__empty_gheap;
__thread ouro_heap_t *ouro__dheap __attribute__((tls_model("initial-exec"))) = &ouro__empty_heap;

/* The pool every class of a heap starts on: nothing to hand out, so the
 * first allocation takes the slow path. */
ouro_pool_t ouro__empty_pool;
ouro_heap_t ouro__empty_heap = {.cur = {[0 ... OURO_NCLASSES - 1] = &ouro__empty_pool},
                                 .direct = {[0 ... OURO_DIRECT_MAX / 16] = &ouro__empty_pool},
                                 .node = -1,
                                 .kind = OURO_KIND_PLAIN};
ouro_heap_t ouro__empty_oheap = {.cur = {[0 ... OURO_NCLASSES - 1] = &ouro__empty_pool},
                                  .direct = {[0 ... OURO_DIRECT_MAX / 16] = &ouro__empty_pool},
                                  .node = -1,
                                  .kind = OURO_KIND_OBJECT};
ouro_heap_t ouro__empty_gheap = {.cur = {[0 ... OURO_NCLASSES - 1] = &ouro__empty_pool},
                                  .direct = {[0 ... OURO_DIRECT_MAX / 16] = &ouro__empty_pool},
                                  .node = -1,
                                  .kind = OURO_KIND_GC};

/* Set the class's current pool, and the direct entries of the sizes it serves. */
void ouro__heap_set_cur(ouro_heap_t *heap, int cls, ouro_pool_t *pool)
{
    heap->cur[cls] = pool;
    if (cls <= 32) {
        heap->direct[cls] = pool;
        return;
    }
    size_t hi = ouro__class_size(cls);
    if (hi > OURO_DIRECT_MAX)
        return;
    size_t lo = ouro__class_size(cls - 1) + 1;
    for (size_t i = (lo + 15) / 16; i <= hi / 16; i++)
        heap->direct[i] = pool;
}

static inline bool heap_is_sentinel(const ouro_heap_t *h)
{
    return h == &ouro__empty_heap || h == &ouro__empty_oheap || h == &ouro__empty_gheap;
}

/* The thread's heap of `kind`.  The plain heap lives in ouro__dheap; its
 * front pointer ouro__heap, which malloc's inline paths read, is the same
 * heap, or the sentinel in debug mode and while tracing (see internal.h). */
static inline ouro_heap_t **tls_heap(int kind)
{
    return kind == OURO_KIND_GC       ? &ouro__gheap
           : kind == OURO_KIND_OBJECT ? &ouro__oheap
                                      : &ouro__dheap;
}

static inline ouro_heap_t *sentinel(int kind)
{
    return kind == OURO_KIND_GC       ? &ouro__empty_gheap
           : kind == OURO_KIND_OBJECT ? &ouro__empty_oheap
                                      : &ouro__empty_heap;
}

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static ouro_heap_t *reg_all;   /* every heap ever made; heaps are never unmapped */
static ouro_heap_t *reg_free;  /* heaps of exited threads, for reuse */
static pthread_key_t heap_key[OURO_KINDS]; /* destructors abandon the heaps at thread exit */
static void (*exit_hook[OURO_KINDS])(ouro_heap_t *heap);
/* pools of exited threads still holding blocks, per kind and class; push
 * is lock-free, pops (adoption and sweeping, slow paths) take one lock */
static struct __cds_lfs_stack abandoned[OURO_KINDS][OURO_NCLASSES];
static pthread_mutex_t abandoned_lock = PTHREAD_MUTEX_INITIALIZER;

static void heap_thread_done(void *arg);
static void sweep_abandoned(bool force);

void ouro__heap_global_init(void)
{
    for (int k = 0; k < OURO_KINDS; k++) {
        for (int c = 0; c < OURO_NCLASSES; c++)
            __cds_lfs_init(&abandoned[k][c]);
        if (pthread_key_create(&heap_key[k], heap_thread_done) != 0)
            ouro__fatal("pthread_key_create failed");
    }
}

void ouro__heap_set_exit_hook(int kind, void (*fn)(ouro_heap_t *heap))
{
    exit_hook[kind] = fn;
}

/* ---- lists ----
 * Doubly linked, NULL at both ends.  `last` points at the last pool where
 * the list keeps one (the avail lists), else is NULL (the full lists). */
static void list_remove(ouro_pool_t **head, ouro_pool_t **last, ouro_pool_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        *head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else if (last)
        *last = p->prev;
    p->next = p->prev = NULL;
}

/* at the front */
static void list_push(ouro_pool_t **head, ouro_pool_t **last, ouro_pool_t *p)
{
    p->prev = NULL;
    p->next = *head;
    if (*head)
        (*head)->prev = p;
    else if (last)
        *last = p;
    *head = p;
}

/* at the back (a list that keeps `last`) */
static void list_append(ouro_pool_t **head, ouro_pool_t **last, ouro_pool_t *p)
{
    p->next = NULL;
    p->prev = *last;
    if (*last)
        (*last)->next = p;
    else
        *head = p;
    *last = p;
}

#define AVAIL(heap, c) &(heap)->avail[c], &(heap)->avail_last[c]
#define FULL(heap, c) &(heap)->full[c], NULL

/* A pool leaves the full list for the back of the avail list: the slow
 * path tries the pools that came back longest ago first, which by then
 * have gathered the most frees.  (The pool that just came back is often
 * the one another thread is freeing into right now: taking its blocks a
 * few at a time would pull each block's line from under that thread, as
 * mimalloc avoids by the same order.) */
static void pool_unfull(ouro_heap_t *heap, ouro_pool_t *pool)
{
    list_remove(FULL(heap, pool->cls), pool);
    ouro__pool_set_full(pool, false);
    list_append(AVAIL(heap, pool->cls), pool);
}

/* A pool whose remote frees were just taken: back to the avail list if it
 * was on the full list and has blocks to hand out now.  (Left on the full
 * list, it is still watched: taking blocks never clears NOTIFY, and a pool
 * whose NOTIFY was taken has a block on its way to us: pool.c.) */
static void full_pool_recheck(ouro_heap_t *heap, ouro_pool_t *pool)
{
    if (ouro__pool_in_full(pool) && pool->free)
        pool_unfull(heap, pool);
}

/* ---- heap life ---- */
static ouro_heap_t *heap_new(int kind)
{
    pthread_mutex_lock(&reg_lock);
    ouro_heap_t *h = reg_free;
    if (h) {
        reg_free = h->free_next;
    } else {
        h = ouro__os_map(sizeof *h);
        if (h == NULL) {
            pthread_mutex_unlock(&reg_lock);
            return NULL;
        }
        h->reg_next = reg_all;
        reg_all = h;
        /* once per heap memory, never changed: a late notifier may still
         * encode a link with it after the heap changed threads */
        h->dkey = ouro__hardened_on() ? (uintptr_t)ouro__random() | 1 : 0;
    }
    for (int c = 0; c < OURO_NCLASSES; c++) {
        ouro__heap_set_cur(h, c, &ouro__empty_pool);
        h->avail[c] = h->avail_last[c] = h->full[c] = NULL;
    }
    for (int i = 0; i < OURO_RC_WAYS; i++)
        ouro_assert(h->rcache[i].pool == NULL); /* pushed when the heap was abandoned */
    /* `delayed` is not reset: a late notifier may have handed the heap's
     * previous thread a block after it exited; our first slow path passes
     * such blocks on (delayed_take) */
    h->node = -1;
    h->kind = kind;
    h->alive = true;
    h->thread = pthread_self();
    h->tid = ouro__thread_id();
    h->free_next = NULL;
    /* the plain heap's front pointer, which the tracer may redirect (trace.c) */
    h->tls_slot = kind == OURO_KIND_PLAIN ? &ouro__heap : NULL;
    /* relaxed: statistics; a reader may see the old thread's figures a moment longer */
    atomic_store_explicit(&h->st_slow, 0, memory_order_relaxed);
    atomic_store_explicit(&h->st_claimed, 0, memory_order_relaxed);
    atomic_store_explicit(&h->st_adopted, 0, memory_order_relaxed);
    atomic_store_explicit(&h->st_released, 0, memory_order_relaxed);
    atomic_store_explicit(&h->st_remote, 0, memory_order_relaxed);
    pthread_mutex_unlock(&reg_lock);
    atomic_fetch_add_explicit(&ouro__counters.threads, 1, memory_order_relaxed);
    return h;
}

static ouro_heap_t *heap_init_thread(int kind)
{
    ouro__init();
    ouro_heap_t *h = heap_new(kind);
    if (h == NULL)
        return NULL;
    *tls_heap(kind) = h;
    /* seq_cst: trace.c reads the tracing flag after this store, and sends
     * the thread back to the sentinel if tracing started meanwhile (its
     * starter stores the flag, then the sentinel here: one of the two sees
     * the other's store) */
    if (kind == OURO_KIND_PLAIN && !ouro__debug_on())
        __atomic_store_n(&ouro__heap, h, __ATOMIC_SEQ_CST);
    pthread_setspecific(heap_key[kind], h);
    return h;
}

/* Make `heap` (or nobody) the pool's owner. */
void ouro__heap_set_owner(ouro_pool_t *pool, ouro_heap_t *heap)
{
    /* relaxed: owner_tp only answers "is it mine?" for the thread whose id
     * it holds, and that thread wrote it itself (or it was cleared before
     * the pool reached anyone else, through a release/acquire hand-off) */
    atomic_store_explicit(&pool->owner_tp, heap ? heap->tid : 0, memory_order_relaxed);
    /* release: pairs with the acquire load of the freer that notifies
     * (pool.c), which then reads the heap's [init] fields.  Nothing else
     * needs ordering: a notifier that reads a stale owner hands its block
     * to a heap that passes it on (delayed_take) */
    atomic_store_explicit(&pool->owner, heap, memory_order_release);
}

/* Give a pool up: it goes back to the arena layer.  Only with used == 0:
 * then no block of it is outstanding and no thread may push to it. */
static void pool_release(ouro_heap_t *heap, ouro_pool_t *pool)
{
    ouro_assert(ouro__pool_used(pool) == 0);
    if (ouro__pool_in_full(pool))
        list_remove(FULL(heap, pool->cls), pool);
    else
        list_remove(AVAIL(heap, pool->cls), pool);
    ouro__pool_set_full(pool, false);
    if (heap->cur[pool->cls] == pool)
        ouro__heap_set_cur(heap, pool->cls, &ouro__empty_pool);
    ouro__heap_set_owner(pool, NULL);
    ouro__arena_release_pool(pool);
    ouro__heap_stat_add(&heap->st_released, 1);
}

/* pool.c's notify: hand block `b`, freed by another thread to a pool that
 * `heap` owned (when the caller looked) and had on its full list, to the
 * heap's delayed stack. */
void ouro__heap_push_delayed(ouro_heap_t *heap, ouro_block_t *b)
{
    /* relaxed: the CAS below checks the value we link to */
    ouro_block_t *old = atomic_load_explicit(&heap->delayed, memory_order_relaxed);
    do
        /* relaxed atomic store: see ouro__pool_push_remote (an odd value
         * in hardened mode, dkey being odd: never a thread pointer) */
        __atomic_store_n(&b->node.next, (struct cds_lfs_node *)((uintptr_t)old ^ heap->dkey),
                         __ATOMIC_RELAXED);
    /* release: the link, the cookie and the block's last contents are
     * visible to the taker's exchange (acquire) */
    while (!atomic_compare_exchange_weak_explicit(&heap->delayed, &old, b, memory_order_release,
                                                  memory_order_relaxed));
}

/* Hardened mode: `next`, a link read from a block on a delayed stack, must
 * be a block that was freed (it carries the free cookie).  A write after
 * free into the block could only forge one knowing the heap's key. */
static void check_delayed_link(ouro_block_t *b, ouro_block_t *next)
{
    uintptr_t u = (uintptr_t)next;
    ouro_pool_t *np = ouro__unit_kind(u) == OURO_UNIT_ARENA ? ouro__pool_of(u) : NULL;
    if (np == NULL || !ouro__pool_is_free_block(np, u))
        ouro__report_corrupt_link(ouro__pool_of((uintptr_t)b), next,
                                  "a block freed by another thread to a full pool");
}

/* Take the blocks on `from`'s delayed stack.  Each block of a pool `mine`
 * owns goes back to its pool as the owner's own free would put it (which
 * moves a full pool back to the avail list, or releases an empty one);
 * any other (the pool changed hands since its notifier looked, or `from`
 * is a dead heap and `mine` NULL) is pushed on its pool's remote stack,
 * like any remote free. */
static void delayed_take(ouro_heap_t *from, ouro_heap_t *mine)
{
    /* relaxed: a peek, to skip the exchange when nothing waits; a block
     * pushed just after it is taken on a later call */
    if (atomic_load_explicit(&from->delayed, memory_order_relaxed) == NULL)
        return;
    /* acquire: pairs with the pushers' release CAS */
    ouro_block_t *b = atomic_exchange_explicit(&from->delayed, NULL, memory_order_acquire);
    size_t n = 0;
    while (b) {
        ouro_block_t *next = (ouro_block_t *)((uintptr_t)b->node.next ^ from->dkey);
        if (unlikely(ouro__hardened_on()) && next)
            check_delayed_link(b, next);
        /* the pool is still there: b is outstanding, so it is not released */
        ouro_pool_t *pool = ouro__pool_of((uintptr_t)b);
        /* relaxed: if the pool is ours, we wrote its owner ourselves; and no
         * older value can be `mine` (a heap's previous thread cleared its
         * owners before the registry lock handed the heap on) */
        if (mine && atomic_load_explicit(&pool->owner, memory_order_relaxed) == mine) {
            ouro__link_encode(pool, b, pool->free);
            pool->free = b;
            n++;
            if (ouro__pool_used_dec_ends(pool))
                ouro__heap_free_slow(mine, pool);
        } else {
            ouro__pool_push_remote(pool, b);
        }
        b = next;
    }
    if (mine)
        ouro__heap_stat_add(&mine->st_remote, n);
}

/* Hand every pool of `heap` to the abandoned stacks (or the arena layer when
 * empty).  Run by the exiting thread, or in a fork child for dead threads. */
static void heap_abandon(ouro_heap_t *heap)
{
    /* 0. push the remote frees the heap gathered (pool.c; plain heaps only),
     * some perhaps to pools of its own (adopted since), which step 4 takes */
    ouro__pool_flush_remote(heap);
    /* 1. take back what other threads handed us, while the pools are ours */
    delayed_take(heap, heap);
    /* 2. no new notification may target this heap: clear every owner, and
     * every NOTIFY (an ownerless pool's remote frees are taken by whoever
     * adopts or sweeps it); relaxed fetch_and: only the bit matters, and
     * a freer that still takes it finds no owner and pushes as usual */
    for (int c = 0; c < OURO_NCLASSES; c++)
        for (int l = 0; l < 2; l++)
            for (ouro_pool_t *p = l ? heap->full[c] : heap->avail[c]; p; p = p->next) {
                ouro__heap_set_owner(p, NULL);
                atomic_fetch_and_explicit(&p->remote, ~OURO_REMOTE_NOTIFY, memory_order_relaxed);
            }
    /* 3. blocks handed over before step 2: now that the pools are nobody's
     * they go to the pools' remote stacks, which step 4 takes.  A notifier
     * that read us as the owner before step 2 may still push here later:
     * the heap's next thread or sweep_abandoned passes that block on. */
    delayed_take(heap, heap);
    /* 4. take what was freed to our pools, and hand them on */
    for (int c = 0; c < OURO_NCLASSES; c++) {
        for (int l = 0; l < 2; l++) {
            ouro_pool_t *p = l ? heap->full[c] : heap->avail[c];
            while (p) {
                ouro_pool_t *next = p->next;
                ouro__pool_collect_remote(p);
                p->next = p->prev = NULL;
                ouro__pool_set_full(p, false);
                if (ouro__pool_used(p) == 0) {
                    ouro__arena_release_pool(p);
                } else {
                    atomic_fetch_add_explicit(&ouro__counters.abandoned, 1, memory_order_relaxed);
                    /* liburcu's push is a full barrier: the adopter's pop sees
                     * the pool's private fields as we leave them */
                    ouro_tsan_release(&abandoned[heap->kind][c]);
                    cds_lfs_push(&abandoned[heap->kind][c], &p->anode);
                }
                p = next;
            }
            if (l)
                heap->full[c] = NULL;
            else
                heap->avail[c] = heap->avail_last[c] = NULL;
        }
        ouro__heap_set_cur(heap, c, &ouro__empty_pool);
    }
}

static void heap_retire(ouro_heap_t *heap)
{
    pthread_mutex_lock(&reg_lock);
    heap->alive = false;
    heap->free_next = reg_free;
    reg_free = heap;
    pthread_mutex_unlock(&reg_lock);
    atomic_fetch_sub_explicit(&ouro__counters.threads, 1, memory_order_relaxed);
}

static void heap_thread_done(void *arg)
{
    ouro_heap_t *heap = arg;
    if (exit_hook[heap->kind])
        exit_hook[heap->kind](heap);
    heap_abandon(heap);
    /* frees after this point (later TLS destructors) take the remote path */
    *tls_heap(heap->kind) = sentinel(heap->kind);
    if (heap->kind == OURO_KIND_PLAIN)
        /* relaxed: only a nudge (ouro__heap_route_all) may store here too,
         * and it stores the same sentinel */
        __atomic_store_n(&ouro__heap, &ouro__empty_heap, __ATOMIC_RELAXED);
    heap_retire(heap);
    sweep_abandoned(false);
    ouro__arena_purge(false);
}

/* ---- abandoned pools ---- */
static _Atomic uint64_t next_sweep_ms;

/* Take back what other threads freed to abandoned pools, and release those
 * that are empty now to the arena layer, so memory of exited threads is not
 * stranded until some thread happens to adopt a pool of the same class.
 * Rate-limited to once per purge delay unless `force`. */
static void sweep_abandoned(bool force)
{
    if (!force) {
        uint64_t now = ouro__now_ms(), next = atomic_load_explicit(&next_sweep_ms, memory_order_relaxed);
        long delay = ouro__options[OURO_OPTION_PURGE_DELAY];
        if (now < next)
            return;
        /* relaxed: only rate-limits sweeps; losing the race skips one */
        if (!atomic_compare_exchange_strong_explicit(&next_sweep_ms, &next,
                                                     now + (uint64_t)(delay > 0 ? delay : 1),
                                                     memory_order_relaxed, memory_order_relaxed))
            return;
    }
    /* blocks late notifiers handed to heaps whose threads have exited (to
     * the pools' remote stacks: the loop below takes those of abandoned
     * pools) */
    pthread_mutex_lock(&reg_lock);
    for (ouro_heap_t *h = reg_all; h; h = h->reg_next)
        if (!h->alive)
            delayed_take(h, NULL);
    pthread_mutex_unlock(&reg_lock);
    for (int k = 0; k < OURO_KINDS; k++)
    for (int c = 0; c < OURO_NCLASSES; c++) {
        if (cds_lfs_empty(&abandoned[k][c]))
            continue;
        pthread_mutex_lock(&abandoned_lock);
        struct cds_lfs_head *head = __cds_lfs_pop_all(&abandoned[k][c]);
        pthread_mutex_unlock(&abandoned_lock);
        if (head == NULL)
            continue;
        ouro_tsan_acquire(&abandoned[k][c]);
        struct cds_lfs_node *n, *next;
        for (n = &head->node; n; n = next) {
            next = n->next;
            ouro_pool_t *pool = caa_container_of(n, ouro_pool_t, anode);
            /* popped: its private fields are ours until we push it back */
            ouro__pool_collect_remote(pool);
            if (ouro__pool_used(pool) == 0) {
                atomic_fetch_sub_explicit(&ouro__counters.abandoned, 1, memory_order_relaxed);
                ouro__arena_release_pool(pool);
            } else {
                ouro_tsan_release(&abandoned[k][c]);
                cds_lfs_push(&abandoned[k][c], &pool->anode);
            }
        }
    }
}

/* ---- getting a pool ---- */
static ouro_pool_t *pool_adopt(ouro_heap_t *heap, int cls)
{
    struct __cds_lfs_stack *stack = &abandoned[heap->kind][cls];
    if (cds_lfs_empty(stack))
        return NULL;
    pthread_mutex_lock(&abandoned_lock);
    struct cds_lfs_node *n = __cds_lfs_pop(stack);
    pthread_mutex_unlock(&abandoned_lock);
    if (n == NULL)
        return NULL;
    ouro_tsan_acquire(stack);
    atomic_fetch_sub_explicit(&ouro__counters.abandoned, 1, memory_order_relaxed);
    ouro_pool_t *pool = caa_container_of(n, ouro_pool_t, anode);
    /* a freer that saw no owner pushed its block on the remote stack:
     * taken below, or later from the avail list, like any remote free */
    ouro__heap_set_owner(pool, heap);
    ouro__pool_collect_remote(pool);
    ouro__heap_stat_add(&heap->st_adopted, 1);
    return pool;
}

static ouro_pool_t *pool_fresh(ouro_heap_t *heap, int cls)
{
    sweep_abandoned(false); /* empty abandoned pools make room first */
    if (heap->node < 0)
        heap->node = ouro__arena_current_node();
    ouro_pool_t *pool = ouro__arena_claim_pool(heap->node < 0 ? 0 : heap->node, ouro__class_span(cls));
    if (pool == NULL)
        return NULL;
    /* before ouro__pool_init publishes the pool (release on slot_pool):
     * walks and statistics read the kind of any pool they find; relaxed
     * atomic, as they may still read it in the header's last life */
    __atomic_store_n(&pool->kind, (uint8_t)heap->kind, __ATOMIC_RELAXED);
    ouro__pool_init(pool, cls, pool->mem_is_zero);
    ouro__heap_set_owner(pool, heap);
    ouro__heap_stat_add(&heap->st_claimed, 1);
    return pool;
}

static inline void *pool_pop(ouro_pool_t *pool, bool *zero)
{
    ouro_block_t *b = pool->free;
    /* the slow path checks the head exactly: a block start, not only
     * 16-byte aligned as the fast paths check */
    if (unlikely(!ouro__pool_is_block(pool, (uintptr_t)b)))
        ouro__report_corrupt_link(pool, b, "the next free block");
    pool->free = ouro__link_decode(pool, b);
    if (zero)
        *zero = ouro__block_is_fresh(pool, b);
    b->cookie = 0;
    ouro__pool_used_inc(pool);
    return b;
}

void *ouro__heap_alloc_slow(ouro_heap_t *heap, int cls, bool *zero)
{
    if (heap_is_sentinel(heap)) {
        heap = heap_init_thread(heap->kind);
        if (heap == NULL) {
            errno = ENOMEM;
            return NULL;
        }
    }
    ouro__heap_stat_add(&heap->st_slow, 1);
    /* the inline pop refused a head that is not NULL: a link of the free
     * list was corrupt (a write after free, or an overflow into a free block) */
    ouro_pool_t *cur = heap->cur[cls];
    if (unlikely(cur->free != NULL && !ouro__pool_head_ok(cur, cur->free)))
        ouro__report_corrupt_link(cur, cur->free, "the next free block");
    delayed_take(heap, heap);
    for (int attempt = 0;; attempt++) {
        ouro_pool_t *pool = heap->avail[cls];
        while (pool) {
            /* a pool about to become the current one takes what waits on
             * its remote stack even if it has free blocks of its own: if
             * that is all it handed out, it is carved afresh (pool.c) */
            if (pool->free == NULL || heap->cur[cls] != pool)
                ouro__heap_stat_add(&heap->st_remote, ouro__pool_collect_remote(pool));
            if (pool->free == NULL)
                ouro__pool_extend(pool);
            if (pool->free) {
                if (heap->cur[cls] != pool)
                    ouro__heap_set_cur(heap, cls, pool);
                return pool_pop(pool, zero);
            }
            /* nothing to hand out: to the full list, where the next remote
             * free will tell us of it; unless blocks arrived meanwhile */
            if (!ouro__pool_arm_notify(pool))
                continue; /* take them: the loop collects this pool again */
            ouro_pool_t *next = pool->next;
            list_remove(AVAIL(heap, cls), pool);
            list_push(FULL(heap, cls), pool);
            ouro__pool_set_full(pool, true);
            pool = next;
        }
        ouro__heap_set_cur(heap, cls, &ouro__empty_pool);
        pool = pool_adopt(heap, cls);
        if (pool == NULL)
            pool = pool_fresh(heap, cls);
        if (pool == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        list_push(AVAIL(heap, cls), pool);
    }
}

/* The owner freed into a pool that is empty now, or that sits on the full list. */
void ouro__heap_free_slow(ouro_heap_t *heap, ouro_pool_t *pool)
{
    if (ouro__pool_used(pool) == 0 && !ouro__pool_in_full(pool) && heap->cur[pool->cls] == pool)
        return; /* the current pool stays, empty or not */
    if (ouro__pool_in_full(pool))
        pool_unfull(heap, pool);
    if (ouro__pool_used(pool) == 0 && heap->cur[pool->cls] != pool)
        pool_release(heap, pool);
}

/* Take back remote frees of this thread's pools and release empty pools
 * (the current ones too when `release_empty`). */
static void heap_collect(ouro_heap_t *heap, bool release_empty)
{
    if (heap_is_sentinel(heap))
        return;
    delayed_take(heap, heap);
    for (int c = 0; c < OURO_NCLASSES; c++) {
        for (int l = 0; l < 2; l++) {
            ouro_pool_t *p = l ? heap->full[c] : heap->avail[c];
            while (p) {
                ouro_pool_t *next = p->next;
                ouro__heap_stat_add(&heap->st_remote, ouro__pool_collect_remote(p));
                full_pool_recheck(heap, p);
                if (ouro__pool_used(p) == 0 &&
                    (release_empty || heap->cur[c] != p))
                    pool_release(heap, p);
                p = next;
            }
        }
    }
}

void ouro__heap_collect(bool release_empty)
{
    ouro__pool_flush_remote_mine(); /* our own gathered remote frees first */
    sweep_abandoned(true);
    heap_collect(ouro__dheap, release_empty);
    heap_collect(ouro__oheap, release_empty);
    heap_collect(ouro__gheap, release_empty);
}

/* Visit every block of `heap`'s pools that is handed out: carved, and not
 * free (free blocks, local or remote, carry the free cookie; blocks never
 * handed out the fresh one).  Only the owning thread may call it: it reads
 * blocks other threads may be freeing, and a block being freed
 * concurrently may be seen either way. */
void ouro__heap_visit_live(ouro_heap_t *heap, ouro_block_visit_fn *fn, void *arg)
{
    for (int c = 0; c < OURO_NCLASSES; c++)
        for (int l = 0; l < 2; l++)
            for (ouro_pool_t *p = l ? heap->full[c] : heap->avail[c]; p; p = p->next) {
                size_t bs = atomic_load_explicit(&p->block_size, memory_order_relaxed);
                for (uint32_t i = 0; i < p->capacity; i++) {
                    ouro_block_t *b = (ouro_block_t *)(p->start + (size_t)i * bs);
                    if (ouro__block_is_live(b))
                        fn(b, p, arg);
                }
            }
}

/* The live heap of `kind` of the thread with thread pointer `tid`, or NULL.
 * For a fork child, where no other thread runs. */
ouro_heap_t *ouro__heap_find(uintptr_t tid, int kind)
{
    for (ouro_heap_t *h = reg_all; h; h = h->reg_next)
        if (h->alive && h->tid == tid && h->kind == kind)
            return h;
    return NULL;
}

size_t ouro__heap_count(void)
{
    return atomic_load_explicit(&ouro__counters.threads, memory_order_relaxed);
}

/* Point every live thread's front pointer (ouro__heap) at the sentinel, so
 * that its next allocation takes alloc.c's slow path, which asks trace.c.
 * A heap alive under the registry lock belongs to a running thread (its
 * exit retires it under the lock), so its ouro__heap is mapped.  seq_cst:
 * see heap_init_thread and trace.c; the owner reads it relaxed. */
void ouro__heap_route_all(void)
{
    pthread_mutex_lock(&reg_lock);
    for (ouro_heap_t *h = reg_all; h; h = h->reg_next)
        if (h->alive && h->tls_slot)
            __atomic_store_n(h->tls_slot, &ouro__empty_heap, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&reg_lock);
}

size_t ouro__heap_list(ouro_heap_ref_t *out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&reg_lock);
    for (ouro_heap_t *h = reg_all; h; h = h->reg_next) {
        if (!h->alive)
            continue;
        if (n < cap)
            out[n] = (ouro_heap_ref_t){h, h->tid, h->kind};
        n++;
    }
    pthread_mutex_unlock(&reg_lock);
    return n;
}

/* ---- fork: the child keeps only the forking thread ---- */
void ouro__heap_fork_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
    pthread_mutex_lock(&abandoned_lock);
}

void ouro__heap_fork_parent(void)
{
    pthread_mutex_unlock(&abandoned_lock);
    pthread_mutex_unlock(&reg_lock);
}

/* The child is a copy of the forking thread, which holds both locks. */
void ouro__heap_fork_child_unlock(void)
{
    pthread_mutex_unlock(&abandoned_lock);
    pthread_mutex_unlock(&reg_lock);
}

/* The other threads are gone in the child: their pools pass to the
 * abandoned stacks, so nothing they held is stranded. */
void ouro__heap_fork_child(void)
{
    size_t alive = 0;
    for (ouro_heap_t *h = reg_all; h; h = h->reg_next) {
        if (!h->alive)
            continue;
        if (h == ouro__dheap || h == ouro__oheap || h == ouro__gheap) {
            alive += h == ouro__dheap;
            continue;
        }
        heap_abandon(h);
        h->alive = false;
        h->free_next = reg_free;
        reg_free = h;
    }
    atomic_store_explicit(&ouro__counters.threads, alive, memory_order_relaxed);
}
