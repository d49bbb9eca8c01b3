/*
 * alloc.c — the public allocation API: malloc, calloc, realloc, free,
 * aligned allocation, usable size.  Fast paths are the inline helpers of
 * internal.h; everything else is a call to heap.c, pool.c or large.c.
 *
 * Hardened mode costs the fast paths no branch either: the free-list links
 * are XORed with the pool's key, which is 0 in the default mode, and the
 * test of the free list's head (ouro__pool_head_ok) replaces the test for
 * NULL in both modes.
 *
 * Debug mode (debug.c) costs the fast paths nothing: its thread heaps stay
 * the sentinel, whose pools are all empty, so every inline allocation path
 * misses and reaches alloc_slow, which tests the flag only where it already
 * tests for the sentinel; and its pointers are never the start of a block,
 * so every free misses the inline path and reaches free_generic.  Tracing
 * (trace.c) works the same way, for the threads and the blocks it traces.
 * The slow paths carry the call site (the public function's return
 * address) for debug mode's reports and tracing; the fast paths never read
 * it.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static inline ouro_pool_t *checked_pool(uintptr_t u, const char *fn)
{
    ouro_pool_t *pool = ouro__pool_of(u);
    if (unlikely(pool == NULL || !ouro__pool_is_block(pool, u)))
        ouro__report_invalid(fn, (void *)u);
    if (unlikely(((ouro_block_t *)u)->cookie == (u ^ ouro__hot.key)))
        ouro__report_double_free((void *)u, pool);
    return pool;
}

/* The return address of the public function: the caller's call site. */
#define CALLER() __builtin_return_address(0)

/* The slow path of every plain allocation up to OURO_LARGE_MAX bytes: the
 * current pool of class `cls` has nothing to hand out.  The heap is the
 * sentinel on the thread's first allocation, always in debug mode, and
 * while tracing: the one place that tests those modes (heap_alloc_slow
 * tests for the sentinel again; the duplicate compare is all this costs
 * the default mode). */
static ouro_noinline void *alloc_slow(ouro_heap_t *heap, int cls, size_t size, size_t align, bool *zero,
                                      const void *site)
{
    if (unlikely(heap == &ouro__empty_heap)) {
        if (ouro__dheap == &ouro__empty_heap)
            ouro__init(); /* the thread's first allocation: the options decide the mode */
        if (ouro__debug_on()) {
            if (zero)
                *zero = false; /* calloc clears the bytes it asked for */
            return ouro__debug_alloc(size, align, zero != NULL, site);
        }
        return ouro__trace_alloc(cls, size, align, zero, site); /* traced, sampled, or the first */
    }
    return ouro__heap_alloc_slow(heap, cls, zero);
}

/* Requests above OURO_LARGE_MAX (and those debug mode's layout makes so). */
static ouro_noinline void *large_alloc(size_t size, size_t align, bool *zero, const void *site)
{
    ouro__init(); /* a large request may be the process's first */
    if (unlikely(ouro__debug_on()))
        return ouro__debug_alloc(size, align, zero != NULL, site);
    if (unlikely(ouro__trace_on()))
        return ouro__trace_large(size, align, zero, site);
    return ouro__large_alloc(size, align, zero);
}

/* Medium and large requests, out of line so ouro_malloc stays small. */
static ouro_noinline void *malloc_generic(size_t size, const void *site)
{
    if (size <= OURO_LARGE_MAX) {
        ouro_heap_t *heap = ouro__heap_front();
        int cls = ouro__size_class(size);
        void *p = ouro__heap_pop(heap, (size_t)cls);
        if (likely(p != NULL))
            return p;
        return alloc_slow(heap, cls, size, 16, NULL, site);
    }
    return large_alloc(size, 16, NULL, site);
}

/* ouro_malloc's body, also inlined into the functions that allocate on
 * their caller's behalf (realloc, aligned_alloc).  CALLER() in an inlined
 * function is the return address of the function it is inlined into (gcc
 * and clang alike), and written on the slow branches, the compiler reads it
 * there only: passed in as an argument, gcc 12 loads it on entry. */
static inline __attribute__((always_inline)) void *malloc_inline(size_t size)
{
    if (likely(size <= OURO_DIRECT_MAX)) {
        ouro_heap_t *heap = ouro__heap_front();
        ouro_pool_t *pool = heap->direct[(size + 15) >> 4];
        ouro_block_t *b = pool->free;
        if (likely(ouro__pool_head_ok(pool, b))) {
            pool->free = ouro__link_decode(pool, b);
            b->cookie = 0;
            ouro__pool_used_inc(pool);
            return b;
        }
        return alloc_slow(heap, ouro__size_class(size), size, 16, NULL, CALLER());
    }
    return malloc_generic(size, CALLER());
}

#define OURO_FAST __attribute__((aligned(64))) /* steady timings: see bench/README */

OURO_FAST void *ouro_malloc(size_t size)
{
    return malloc_inline(size);
}

/* Everything but a valid small block: NULL, large blocks, and misuse.
 * Not noreturn, so ouro_free reaches it by a plain tail call. */
static ouro_noinline void free_generic(void *p)
{
    if (p == NULL)
        return;
    if (unlikely(ouro__debug_on())) {
        ouro__debug_free(p, "ouro_free"); /* every block of debug mode comes here */
        return;
    }
    uintptr_t u = (uintptr_t)p;
    int kind = ouro__unit_kind(u);
    if (kind == OURO_UNIT_ARENA) {
        if (ouro__trace_free(p)) /* a traced block: its pointer is not a block start */
            return;
        (void)checked_pool(u, "ouro_free"); /* reports what is wrong */
        ouro__fatal("ouro_free(%p): inconsistent block", p);
    }
    if (kind == OURO_UNIT_LARGE || kind == OURO_UNIT_LARGE_PREV) {
        ouro_large_t *l = ouro__large_find(p, kind);
        if (l != NULL) {
            if (unlikely(l->trace_site != NULL))
                ouro__trace_forget_large(l);
            ouro__large_free(l);
            return;
        }
    }
    ouro__report_invalid("ouro_free", p);
}

/* The owner emptied its pool, or freed into a pool on the full list. */
static ouro_noinline void free_owner_slow(ouro_pool_t *pool)
{
    /* relaxed: the pool is ours, we wrote its owner ourselves */
    ouro__heap_free_slow(atomic_load_explicit(&pool->owner, memory_order_relaxed), pool);
}

OURO_FAST void ouro_free(void *p)
{
    uintptr_t u = (uintptr_t)p;
    /* an arena in the reserved range in one compare, others by the unit map */
    if (likely(ouro__in_reserved_arena(u)) || ouro__unit_kind(u) == OURO_UNIT_ARENA) {
        /* &ouro__no_pool for a free slot: no address is a block of it */
        ouro_pool_t *pool = ouro__pool_at(u);
        ouro_block_t *b = p;
        uintptr_t key = ouro__hot.key;
        if (likely(ouro__pool_is_block(pool, u) && b->cookie != (u ^ key))) {
            /* relaxed: if the pool is ours, we wrote owner_tp ourselves */
            if (likely(atomic_load_explicit(&pool->owner_tp, memory_order_relaxed) == ouro__thread_id())) {
                ouro__link_encode(pool, b, pool->free);
                b->cookie = u ^ key;
                pool->free = b;
                /* one branch for "now empty" and "on the full list" */
                if (unlikely(ouro__pool_used_dec_ends(pool)))
                    free_owner_slow(pool);
                return;
            }
            /* not ours: on to the pool's remote stack, in batches (pool.c) */
            ouro__pool_free_remote(pool, b, key);
            return;
        }
    }
    free_generic(p);
}

/* The pool of `u` (in an arena unit) if `u` is a live block of it, else NULL. */
static inline ouro_pool_t *live_pool(uintptr_t u)
{
    ouro_pool_t *pool = ouro__pool_of(u);
    if (likely(pool != NULL && ouro__pool_is_block(pool, u) && ((ouro_block_t *)u)->cookie != (u ^ ouro__hot.key)))
        return pool;
    return NULL;
}

/* Large blocks, debug mode, and misuse. */
static ouro_noinline size_t usable_size_generic(const void *p, int kind)
{
    if (unlikely(ouro__debug_on()))
        return ouro__debug_usable_size(p);
    uintptr_t u = (uintptr_t)p;
    size_t traced;
    if (kind == OURO_UNIT_ARENA && ouro__trace_usable(p, &traced))
        return traced;
    if (kind == OURO_UNIT_ARENA)
        (void)checked_pool(u, "ouro_usable_size"); /* reports what is wrong */
    if (kind == OURO_UNIT_LARGE || kind == OURO_UNIT_LARGE_PREV) {
        ouro_large_t *l = ouro__large_find(p, kind);
        if (l)
            return l->usable;
    }
    ouro__report_invalid("ouro_usable_size", p);
}

size_t ouro_usable_size(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    if (p == NULL)
        return 0;
    int kind = ouro__unit_kind(u);
    if (likely(kind == OURO_UNIT_ARENA)) {
        ouro_pool_t *pool = live_pool(u);
        if (likely(pool != NULL))
            /* relaxed: an [init] field, published with the pool (release on slot_pool) */
            return atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    }
    return usable_size_generic(p, kind);
}

void ouro_free_sized(void *p, size_t size)
{
    if (p == NULL)
        return;
    size_t usable = ouro_usable_size(p);
    if (unlikely(size > usable))
        ouro__fatal("ouro_free_sized(%p, %zu): the block holds only %zu bytes", p, size, usable);
    ouro_free(p);
}

int ouro_owns(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    int kind = ouro__unit_kind(u);
    if (kind == OURO_UNIT_ARENA) {
        ouro_pool_t *pool = ouro__pool_of(u);
        if (pool && pool->kind == OURO_KIND_GC)
            u -= 16; /* a container object: its block starts with the collector's prefix */
        if (pool && ouro__pool_is_block(pool, u) && ouro__block_is_live((ouro_block_t *)u))
            return 1; /* an object, or a block of the default mode */
        return (ouro__debug_on() && ouro__debug_owns(p)) || ouro__trace_usable(p, &(size_t){0});
    }
    if (kind == OURO_UNIT_LARGE || kind == OURO_UNIT_LARGE_PREV)
        return ouro__large_find(p, kind) != NULL;
    return 0;
}

void *ouro_calloc(size_t n, size_t size)
{
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    bool zero = false;
    void *p;
    if (likely(total <= OURO_LARGE_MAX)) {
        ouro_heap_t *heap = ouro__heap_front();
        int cls = ouro__size_class(total);
        ouro_pool_t *pool = heap->cur[cls];
        zero = pool->free != NULL && ouro__block_is_fresh(pool, pool->free);
        p = ouro__heap_pop(heap, (size_t)cls);
        if (p == NULL)
            p = alloc_slow(heap, cls, total, 16, &zero, CALLER());
        if (p == NULL)
            return NULL;
        if (zero)
            ((ouro_block_t *)p)->node.next = NULL; /* the only word a fresh block had written */
        else
            memset(p, 0, total);
        return p;
    }
    return large_alloc(total, 16, &zero, CALLER()); /* fresh from the OS: zero */
}

/* The size class serving `size` bytes at `align` (> 16), or -1 for the large path. */
static int aligned_class(size_t size, size_t align)
{
    size_t n = size < align ? align : size;
    if (n > OURO_LARGE_MAX)
        return -1;
    int cls = ouro__size_class(n);
    if (ouro__class_size(cls) & (align - 1)) {
        /* power-of-two blocks sit at multiples of their size: aligned */
        size_t pow2 = (size_t)1 << (64 - __builtin_clzll((unsigned long long)(n - 1)));
        if (pow2 > OURO_LARGE_MAX)
            return -1;
        cls = ouro__size_class(pow2);
    }
    return cls;
}

void *ouro_aligned_alloc(size_t align, size_t size)
{
    if (unlikely(align == 0 || (align & (align - 1)) != 0)) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= 16)
        return malloc_inline(size);
    int cls = aligned_class(size, align);
    if (cls < 0)
        return large_alloc(size, align, NULL, CALLER());
    ouro_heap_t *heap = ouro__heap_front();
    void *p = ouro__heap_pop(heap, (size_t)cls);
    if (p == NULL)
        p = alloc_slow(heap, cls, size, align, NULL, CALLER());
    ouro_assert(p == NULL || ((uintptr_t)p & (align - 1)) == 0);
    return p;
}

/* Debug mode's blocks, traced blocks, and misuse. */
static ouro_noinline void *realloc_generic(void *p, size_t size, const void *site)
{
    if (ouro__debug_on())
        return ouro__debug_realloc(p, size, site);
    void *q;
    if (ouro__trace_realloc(p, size, site, &q))
        return q;
    uintptr_t u = (uintptr_t)p;
    if (ouro__unit_kind(u) == OURO_UNIT_ARENA)
        (void)checked_pool(u, "ouro_realloc"); /* reports what is wrong */
    ouro__report_invalid("ouro_realloc", p);
}

void *ouro_realloc(void *p, size_t size)
{
    if (p == NULL)
        return malloc_inline(size);
    if (size == 0) {
        ouro_free(p);
        return NULL;
    }
    uintptr_t u = (uintptr_t)p;
    int kind = ouro__unit_kind(u);
    size_t old;
    if (likely(kind == OURO_UNIT_ARENA)) {
        ouro_pool_t *pool = live_pool(u);
        if (unlikely(pool == NULL))
            return realloc_generic(p, size, CALLER());
        /* relaxed: an [init] field, published with the pool (release on slot_pool) */
        old = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
        /* in place while the block holds it and is not more than twice too big */
        if (size <= old && (size > old / 2 || old <= 16))
            return p;
    } else if ((kind == OURO_UNIT_LARGE || kind == OURO_UNIT_LARGE_PREV) && !ouro__debug_on()) {
        ouro_large_t *l = ouro__large_find(p, kind);
        if (l == NULL)
            ouro__report_invalid("ouro_realloc", p);
        if (unlikely(l->trace_site != NULL))
            return realloc_generic(p, size, CALLER());
        old = l->size;
        if (size > OURO_LARGE_MAX || size > l->usable / 2) {
            void *q = ouro__large_realloc(l, size);
            if (q)
                return q;
        }
    } else {
        return realloc_generic(p, size, CALLER());
    }
    void *q = malloc_inline(size);
    if (q == NULL)
        return NULL;
    memcpy(q, p, size < old ? size : old);
    ouro_free(p);
    return q;
}

void ouro_collect(int force)
{
    ouro__heap_collect(force != 0);
    ouro__arena_purge(force != 0);
}

size_t ouro_class_block_size(int cls)
{
    return cls < 0 || cls >= OURO_NCLASSES ? 0 : ouro__class_size(cls);
}
