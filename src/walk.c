/*
 * walk.c — the heap walk (ouro_heap_walk): every live block, whoever owns
 * it: the pools of every thread heap and of exited threads (found through
 * the arena layer's slot tables, not through heap lists, which only their
 * owners may read), and the large blocks.  Reads pools through their [init]
 * and atomic fields and blocks through their cookie word; writes nothing.
 *
 * Why a block live for the whole walk is visited exactly once, even while
 * other threads allocate and free: its pool stays claimed (its used count
 * is not zero, so it is neither released nor set up again), so the arena
 * walk meets the pool once, at its first slot; the carved limit only grows
 * while the pool holds a live block (a pool is carved afresh only when it
 * holds none: pool.c); and the block's cookie word holds neither the free
 * nor the fresh cookie (either would mean it was free).  Blocks that change
 * during the walk may be seen either way; a pool released and set up again
 * for another class under the walk is left at once (its block size or its
 * slot entry changed), so no block is reported at an offset that was never
 * a block of the pool that holds it.
 */
#include "object.h"

#include <errno.h>
#include <string.h>

typedef struct walk_s {
    ouro_heap_visit_fn *visit;
    void *arg;
    int stop; /* the visitor's first non-zero return */
} walk_t;

/* ---- large blocks: copied under the large lock, visited after ---- */
typedef struct large_copy_s {
    ouro_block_info_t *v;
    size_t n, cap;
} large_copy_t;

static void copy_large(ouro_large_t *l, void *arg)
{
    large_copy_t *c = arg;
    if (c->n < c->cap)
        c->v[c->n] = (ouro_block_info_t){
            .ptr = l->user,
            .size = ouro__debug_on() ? l->dbg_size : l->usable, /* as ouro_usable_size */
            .kind = OURO_BLOCK_PLAIN,
            .flags = OURO_BLOCK_LARGE | (l->trace_site ? OURO_BLOCK_TRACED : 0),
            .owner = 0,
        };
    c->n++;
}

/* The large blocks into a mapping of our own (the walk must not allocate
 * from the heap it reports); -1 if none could be had. */
static int walk_large(walk_t *w)
{
    size_t page = ouro__os_page_size();
    for (size_t want = 64;;) {
        size_t bytes = (want * sizeof(ouro_block_info_t) + page - 1) & ~(page - 1);
        large_copy_t c = {ouro__os_map(bytes), 0, bytes / sizeof(ouro_block_info_t)};
        if (c.v == NULL) {
            errno = ENOMEM;
            return -1;
        }
        ouro__large_visit(copy_large, &c);
        if (c.n > c.cap) { /* more than room for: again, with room for all */
            ouro__os_unmap(c.v, bytes);
            want = c.n + c.n / 4;
            continue;
        }
        for (size_t i = 0; i < c.n && !w->stop; i++)
            w->stop = w->visit(&c.v[i], w->arg);
        ouro__os_unmap(c.v, bytes);
        return 0;
    }
}

/* ---- pools ---- */

/* Fill `info` for the live block `b` of a pool of `kind` and block size
 * `bs`; false if the block holds nothing to report (a debug block whose
 * header is not written yet). */
static bool describe(uint8_t *b, int kind, size_t bs, ouro_block_info_t *info)
{
    info->flags = 0;
    if (kind == OURO_KIND_GC || kind == OURO_KIND_OBJECT) {
        bool gc = kind == OURO_KIND_GC;
        ouro_object_t *o = (ouro_object_t *)(b + (gc ? GC_HEAD_SIZE : 0));
        info->kind = gc ? OURO_BLOCK_CONTAINER : OURO_BLOCK_OBJECT;
        info->ptr = o;
        info->size = bs - (gc ? GC_HEAD_SIZE : 0);
        /* relaxed atomic: the owner may be making the object right now
         * (then either answer is allowed, see the top of the file) */
        if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACED)
            info->flags = OURO_BLOCK_TRACED;
        return true;
    }
    info->ptr = b;
    info->size = bs;
    info->kind = OURO_BLOCK_PLAIN;
    if (ouro__debug_on())
        return ouro__debug_block_user(b, bs, &info->ptr, &info->size);
    if (ouro__trace_block_user(b, bs, &info->ptr, &info->size))
        info->flags = OURO_BLOCK_TRACED;
    return true;
}

static void walk_pool(ouro_pool_t *pool, void *arg)
{
    walk_t *w = arg;
    if (w->stop)
        return;
    /* [init] fields, published with the pool by the release store to
     * slot_pool that the arena walk acquired; block_size and limit are
     * atomic (relaxed): any thread may read them */
    size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    /* relaxed atomic: the header may be set up again under us (pool_fresh) */
    int kind = __atomic_load_n(&pool->kind, __ATOMIC_RELAXED);
    /* the pool's first block, from its slot (written once, when the arena
     * was made) rather than from `start`, which each claim rewrites */
    ouro_arena_t *a = ouro__arena_of((uintptr_t)pool);
    uint8_t *start = (uint8_t *)a + ((size_t)pool->slot << OURO_SLOT_SHIFT);
    /* relaxed: blocks carved after this load are new during the walk.  The
     * carved count times our block size, and never past the arena: a pool
     * set up again under us may pair one life's count with another's size */
    uint64_t limit = (uint64_t)atomic_load_explicit(&pool->carved, memory_order_relaxed) * bs;
    uint64_t room = (uint64_t)(OURO_SLOTS - pool->slot) << OURO_SLOT_SHIFT;
    if (limit > room)
        limit = room;
    for (uint64_t off = 0; bs && off + bs <= limit && !w->stop; off += bs) {
        uint8_t *b = start + off;
        if (!ouro__block_is_live((ouro_block_t *)b))
            continue;
        /* acquire: pairs with the release in ouro__pool_init; a pool set up
         * again since (for another class, or released) ends its walk */
        if (atomic_load_explicit(&a->slot_pool[pool->slot], memory_order_acquire) != pool ||
            atomic_load_explicit(&pool->block_size, memory_order_relaxed) != bs)
            return;
        ouro_block_info_t info;
        if (!describe(b, kind, bs, &info))
            continue;
        /* relaxed: the owner of the pool now; only a hint for the visitor */
        info.owner = atomic_load_explicit(&pool->owner_tp, memory_order_relaxed);
        w->stop = w->visit(&info, w->arg);
    }
}

int ouro_heap_walk(ouro_heap_visit_fn *visit, void *arg)
{
    if (visit == NULL) {
        errno = EINVAL;
        return -1;
    }
    ouro__init();
    walk_t w = {visit, arg, 0};
    if (walk_large(&w) != 0)
        return -1;
    if (!w.stop)
        ouro__arena_visit_pools(walk_pool, &w);
    return w.stop;
}
