/*
 * debug.c — debug mode (OURO_DEBUG=1, or configure --enable-debug): guarded
 * blocks with fill patterns, and the reports of misuse (with, at the end,
 * the owner's check for a decref below zero, which every mode makes because
 * it costs nothing: see ouro_decref in ouro.h).  Owns the layout of
 * a debug block and nothing else: it takes blocks from, and gives them back
 * to, the ordinary heap of its thread (ouro__dheap) through heap.c's and
 * alloc.c's own paths, so pools, remote frees and thread exit work as in
 * the default mode.  Debug mode is chosen once per process, before the
 * first allocation; alloc.c routes every plain allocation and free here
 * without a test on its fast paths (see the top of alloc.c).
 *
 * A debug block (a block of a size class, in a plain pool):
 *
 *   0       8        16            24           32    offset          offset+size    bs
 *   | link  | cookie | size,offset  | site       | 0xfd ... | user bytes | 0xfd ...   |
 *   |-- the allocator's --|-- debug header, kept while free --| front  |  0xcd fresh  |  tail
 *
 *   link, cookie  the allocator's words: free-list link and free cookie
 *                 while free (the cookie finds double frees), 0 while live
 *   size          bytes requested; offset: user pointer minus block start
 *                 (48, or more to align the user pointer)
 *   site          return address of the public call that allocated it
 *   guards        at least 16 bytes 0xfd before the user bytes, and from
 *                 their end to the end of the block (at least 16)
 *
 * A freed block keeps words 0..3 (the allocator writes only link and
 * cookie), holds at byte 32 a mark (its address ^ the process key ^ its
 * pool's nonce), and 0xdd in every byte after.  When a block is handed out
 * again and carries the mark, every 0xdd is checked: a difference is a
 * write after free.  The mark lies in the front guard, which no in-bounds
 * write through the old pointer reaches; the nonce is new for every pool
 * set up, so blocks carved fresh from memory another pool used before
 * never pass for freed ones.
 *
 * Large blocks (above OURO_LARGE_MAX with the header) keep the large
 * layout: the user size and call site sit in the large header, 16 guard
 * bytes follow the user bytes; a freed large block is unmapped, so a later
 * access faults, and a double free reads as a free of a pointer ouro never
 * handed out.
 */
#include "object.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DBG_OFFSET 48   /* user pointer - block start, unaligned requests */
#define DBG_TAIL 16     /* guard bytes after the user bytes, at least */
#define DBG_MARK_AT 32  /* where a freed block keeps its mark */
#define DBG_DEAD_AT 40  /* and where its 0xdd fill starts */
#define BYTE_CLEAN 0xcd /* fresh memory */
#define BYTE_DEAD 0xdd  /* freed memory */
#define BYTE_GUARD 0xfd /* guard bytes */
#define WORD(b) (0x0101010101010101ull * (b))

typedef struct dbg_head_s {
    uintptr_t link;   /* the allocator's: free-list link while free */
    uintptr_t cookie; /* the allocator's: free cookie while free, 0 while live */
    uint32_t size;    /* bytes requested */
    uint32_t offset;  /* user pointer - block start */
    const void *site; /* return address of the allocating call */
} dbg_head_t;

_Static_assert(sizeof(dbg_head_t) == DBG_MARK_AT, "the mark follows the header");
_Static_assert(DBG_OFFSET - DBG_MARK_AT >= 16, "at least 16 guard bytes before the user bytes");

/* ---- reports ---- */

/* "0x... (symbol+0x..)" or "0x... (file+0x..)" for a call site (trace.c's
 * reports use it too). */
const char *ouro__site_str(const void *site, char *buf, size_t n)
{
    if (site == NULL)
        return "an unknown call site";
    Dl_info info;
    if (dladdr(site, &info) && info.dli_sname && info.dli_saddr)
        snprintf(buf, n, "%p (%s+%#lx)", site, info.dli_sname,
                 (unsigned long)((uintptr_t)site - (uintptr_t)info.dli_saddr));
    else if (dladdr(site, &info) && info.dli_fname && info.dli_fbase) {
        const char *base = strrchr(info.dli_fname, '/');
        snprintf(buf, n, "%p (%s+%#lx)", site, base ? base + 1 : info.dli_fname,
                 (unsigned long)((uintptr_t)site - (uintptr_t)info.dli_fbase));
    } else
        snprintf(buf, n, "%p", site);
    return buf;
}

static size_t block_size_of(const ouro_pool_t *pool)
{
    /* relaxed: an [init] field, published with the pool (release on slot_pool) */
    return atomic_load_explicit(&pool->block_size, memory_order_relaxed);
}

/* What the reports say about a debug block: class, sizes, call site. */
static const char *describe(const dbg_head_t *h, const ouro_pool_t *pool, char *buf, size_t n)
{
    char site[160];
    snprintf(buf, n, "size class %d, %zu-byte blocks; %u bytes requested, allocated at %s", pool->cls,
             block_size_of(pool), h->size, ouro__site_str(h->site, site, sizeof site));
    return buf;
}

/* "invalid free" for the functions that free, else "invalid pointer". */
static const char *invalid(const char *fn)
{
    return strcmp(fn, "ouro_usable_size") == 0 ? "invalid pointer" : "invalid free";
}

_Noreturn static void report_not_ours(const char *fn, const void *p)
{
    ouro__fatal("%s: %s(%p): pointer was not allocated by ouro (size class: none, the address is in "
                "no pool of ouro: a large block freed already, or memory of another allocator)",
                invalid(fn), fn, p);
}

/* First byte of [from, to) of `b` that is not `byte`, or `to`. */
static size_t find_not(const uint8_t *b, size_t from, size_t to, uint8_t byte)
{
    size_t i = from;
    for (; i + 8 <= to; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        if (w != WORD(byte))
            break;
    }
    for (; i < to; i++)
        if (b[i] != byte)
            return i;
    return to;
}

/* ---- blocks ---- */

static uint64_t freed_mark(const uint8_t *block, const ouro_pool_t *pool)
{
    return (uintptr_t)block ^ ouro__hot.key ^ ((uint64_t)pool->nonce * 0x9e3779b97f4a7c15ull);
}

/* The block of `pool` holding address `u`, or NULL if `u` lies beyond the
 * blocks carved so far. */
static uint8_t *block_holding(const ouro_pool_t *pool, uintptr_t u, size_t bs)
{
    uintptr_t start = (uintptr_t)pool->start;
    /* relaxed: a block handed out was carved before its pointer reached us */
    if (u < start || u - start >= ouro__pool_limit(pool))
        return NULL;
    return (uint8_t *)(start + (u - start) / bs * bs);
}

static bool head_sane(const dbg_head_t *h, size_t bs)
{
    return h->offset >= DBG_OFFSET && h->offset < bs && h->size <= bs - h->offset - DBG_TAIL;
}

static bool is_freed(const uint8_t *block)
{
    /* relaxed atomic: a racing (double) free by another thread may be
     * storing the cookie right now (ouro__pool_free_remote stores it atomically) */
    return __atomic_load_n(&((const dbg_head_t *)block)->cookie, __ATOMIC_RELAXED) ==
           ((uintptr_t)block ^ ouro__hot.key);
}

/* The live debug block at user pointer `p`, its guards checked; reports
 * and aborts for anything else.  *pool_out: its pool. */
static dbg_head_t *check_live(const void *p, const char *fn, ouro_pool_t **pool_out)
{
    uintptr_t u = (uintptr_t)p;
    ouro_pool_t *pool = ouro__unit_kind(u) == OURO_UNIT_ARENA ? ouro__pool_of(u) : NULL;
    if (pool == NULL)
        report_not_ours(fn, p);
    size_t bs = block_size_of(pool);
    uint8_t *block = block_holding(pool, u, bs);
    if (block == NULL)
        ouro__fatal("%s: %s(%p): pointer was not allocated by ouro (size class %d: the address is in a "
                    "pool of %zu-byte blocks, past the blocks carved so far)",
                    invalid(fn), fn, p, pool->cls, bs);
    if (pool->kind != OURO_KIND_PLAIN)
        ouro__fatal("%s: %s(%p): pointer was not allocated by ouro's malloc: it lies in an object's "
                    "block %p (size class %d, %zu-byte blocks), and objects go with ouro_decref",
                    invalid(fn), fn, p, (void *)block, pool->cls, bs);
    dbg_head_t *h = (dbg_head_t *)block;
    char what[320];
    bool sane = head_sane(h, bs);
    if (is_freed(block)) {
        if (sane && u == (uintptr_t)block + h->offset)
            ouro__fatal("double free: %s(%p): the block is free already (%s)", fn, p,
                        describe(h, pool, what, sizeof what));
        ouro__fatal("%s: %s(%p): pointer was not allocated by ouro (it is not the start of a block): "
                    "it lies inside block %p, which is free (size class %d, %zu-byte blocks)",
                    invalid(fn), fn, p, (void *)block, pool->cls, bs);
    }
    if (!sane)
        ouro__fatal("%s(%p): the debug header of block %p is corrupt (size class %d, %zu-byte blocks): "
                    "an underflow of this block or an overflow of the block before it",
                    fn, p, (void *)block, pool->cls, bs);
    if (u != (uintptr_t)block + h->offset)
        ouro__fatal("%s: %s(%p): pointer was not allocated by ouro (it is not the start of a block): "
                    "it lies %ld bytes from %p, the start of the block holding it (%s)",
                    invalid(fn), fn, p, (long)(u - ((uintptr_t)block + h->offset)),
                    (void *)(block + h->offset), describe(h, pool, what, sizeof what));
    size_t bad = find_not(block, DBG_MARK_AT, h->offset, BYTE_GUARD);
    if (bad < h->offset)
        ouro__fatal("buffer underflow: %s(%p): guard byte -%zu before the start was overwritten "
                    "(0x%02x, not 0x%02x) (%s)",
                    fn, p, h->offset - bad, block[bad], BYTE_GUARD, describe(h, pool, what, sizeof what));
    size_t end = h->offset + h->size;
    bad = find_not(block, end, bs, BYTE_GUARD);
    if (bad < bs)
        ouro__fatal("buffer overflow: %s(%p): guard byte +%zu past the end was overwritten "
                    "(0x%02x, not 0x%02x) (%s)",
                    fn, p, bad - end, block[bad], BYTE_GUARD, describe(h, pool, what, sizeof what));
    *pool_out = pool;
    return h;
}

/* A block about to be handed out: if it carries the freed mark, its 0xdd
 * fill must be intact. */
static void check_reused(uint8_t *block, const ouro_pool_t *pool, size_t bs)
{
    uint64_t mark;
    memcpy(&mark, block + DBG_MARK_AT, 8);
    if (mark != freed_mark(block, pool))
        return; /* carved fresh: never handed out since the pool was set up */
    size_t bad = find_not(block, DBG_DEAD_AT, bs, BYTE_DEAD);
    if (bad == bs)
        return;
    dbg_head_t *h = (dbg_head_t *)block;
    char what[320];
    if (!head_sane(h, bs))
        ouro__fatal("write after free: block %p (size class %d, %zu-byte blocks) was written after it "
                    "was freed: its byte %zu is 0x%02x, not 0x%02x (found when it was handed out again)",
                    (void *)block, pool->cls, bs, bad, block[bad], BYTE_DEAD);
    ouro__fatal("write after free: %p was written after it was freed: its byte %ld is 0x%02x, not "
                "0x%02x (found when the block was handed out again) (%s)",
                (void *)(block + h->offset), (long)bad - (long)h->offset, block[bad], BYTE_DEAD,
                describe(h, pool, what, sizeof what));
}

/* ---- large blocks ---- */

static void *large_alloc(size_t size, size_t align, bool zero, const void *site)
{
    if (size > SIZE_MAX - DBG_TAIL) {
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *p = ouro__large_alloc(size + DBG_TAIL, align, NULL);
    if (p == NULL)
        return NULL;
    ouro_large_t *l = ouro__large_find(p, ouro__unit_kind((uintptr_t)p));
    l->dbg_size = size;
    l->dbg_site = site;
    if (!zero) /* fresh from the OS: zero already */
        memset(p, BYTE_CLEAN, size);
    memset(p + size, BYTE_GUARD, DBG_TAIL);
    return p;
}

static void large_check(const ouro_large_t *l, const char *fn)
{
    const uint8_t *p = l->user;
    size_t bad = find_not(p, l->dbg_size, l->dbg_size + DBG_TAIL, BYTE_GUARD);
    if (bad < l->dbg_size + DBG_TAIL) {
        char site[160];
        ouro__fatal("buffer overflow: %s(%p): guard byte +%zu past the end was overwritten "
                    "(0x%02x, not 0x%02x) (size class: large, %zu bytes requested, allocated at %s)",
                    fn, (void *)p, bad - l->dbg_size, p[bad], BYTE_GUARD, l->dbg_size,
                    ouro__site_str(l->dbg_site, site, sizeof site));
    }
}

/* The large block at `p`, or NULL if `p` is not in a large unit. */
static ouro_large_t *large_of(const void *p)
{
    int kind = ouro__unit_kind((uintptr_t)p);
    if (kind != OURO_UNIT_LARGE && kind != OURO_UNIT_LARGE_PREV)
        return NULL;
    return ouro__large_find(p, kind);
}

/* ---- the API of debug mode ---- */

void *ouro__debug_alloc(size_t size, size_t align, bool zero, const void *site)
{
    size_t slack = align > 16 ? align - 16 : 0;
    if (size > OURO_LARGE_MAX || DBG_OFFSET + slack + size + DBG_TAIL > OURO_LARGE_MAX)
        return large_alloc(size, align, zero, site);
    int cls = ouro__size_class(DBG_OFFSET + slack + size + DBG_TAIL);
    ouro_heap_t *heap = ouro__dheap;
    uint8_t *block = ouro__heap_pop(heap, (size_t)cls);
    if (block == NULL)
        block = ouro__heap_alloc_slow(heap, cls, NULL); /* makes the thread's heap first */
    if (block == NULL)
        return NULL;
    ouro_pool_t *pool = ouro__pool_of((uintptr_t)block);
    size_t bs = block_size_of(pool);
    check_reused(block, pool, bs);
    uintptr_t user = ((uintptr_t)block + DBG_OFFSET + slack) & ~(uintptr_t)(align > 16 ? align - 1 : 15);
    dbg_head_t *h = (dbg_head_t *)block;
    h->link = 0;
    h->size = (uint32_t)size;
    h->offset = (uint32_t)(user - (uintptr_t)block);
    h->site = site;
    memset(block + DBG_MARK_AT, BYTE_GUARD, h->offset - DBG_MARK_AT);
    memset((void *)user, zero ? 0 : BYTE_CLEAN, size);
    memset((void *)(user + size), BYTE_GUARD, bs - h->offset - size);
    return (void *)user;
}

void ouro__debug_free(void *p, const char *fn)
{
    ouro_large_t *l = large_of(p);
    if (l != NULL) {
        large_check(l, fn);
        ouro__large_free(l);
        return;
    }
    ouro_pool_t *pool;
    dbg_head_t *h = check_live(p, fn, &pool);
    uint8_t *block = (uint8_t *)h;
    size_t bs = block_size_of(pool);
    uint64_t mark = freed_mark(block, pool);
    memcpy(block + DBG_MARK_AT, &mark, 8);
    memset(block + DBG_DEAD_AT, BYTE_DEAD, bs - DBG_DEAD_AT);
    /* the block start is a live block of its pool: the ordinary free takes
     * it (its inline path, or the remote one from another thread) */
    ouro_free(block);
}

/* The bytes requested for the live block at `p`, checked as a free checks. */
static size_t usable(const void *p, const char *fn)
{
    ouro_large_t *l = large_of(p);
    if (l != NULL) {
        large_check(l, fn);
        return l->dbg_size;
    }
    ouro_pool_t *pool;
    return check_live(p, fn, &pool)->size;
}

void *ouro__debug_realloc(void *p, size_t size, const void *site)
{
    size_t old = usable(p, "ouro_realloc");
    void *q = ouro__debug_alloc(size, 16, false, site);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    ouro__debug_free(p, "ouro_realloc");
    return q;
}

size_t ouro__debug_usable_size(const void *p)
{
    return usable(p, "ouro_usable_size");
}

int ouro__debug_owns(const void *p)
{
    if (large_of(p) != NULL)
        return 1;
    uintptr_t u = (uintptr_t)p;
    ouro_pool_t *pool = ouro__unit_kind(u) == OURO_UNIT_ARENA ? ouro__pool_of(u) : NULL;
    if (pool == NULL || pool->kind != OURO_KIND_PLAIN)
        return 0;
    size_t bs = block_size_of(pool);
    uint8_t *block = block_holding(pool, u, bs);
    if (block == NULL || is_freed(block))
        return 0;
    const dbg_head_t *h = (const dbg_head_t *)block;
    return head_sane(h, bs) && u == (uintptr_t)block + h->offset;
}

bool ouro__debug_block_user(uint8_t *block, size_t bs, void **user, size_t *size)
{
    /* relaxed atomics: a walk may read the header of a block its owner is
     * writing right now (it then skips or reports it, either is allowed) */
    uint32_t sz = __atomic_load_n(&((dbg_head_t *)block)->size, __ATOMIC_RELAXED);
    uint32_t off = __atomic_load_n(&((dbg_head_t *)block)->offset, __ATOMIC_RELAXED);
    dbg_head_t h = {.size = sz, .offset = off};
    if (!head_sane(&h, bs))
        return false;
    *user = block + off;
    *size = sz;
    return true;
}

/* ---- objects: a decref below zero ---- */

/* The report, with the object's size class: the owner's path (below) and
 * the shared one (ouro__decref_shared, for merged counts). */
void ouro__report_decref_below_zero(const ouro_object_t *o)
{
    uintptr_t u = (uintptr_t)o;
    ouro_pool_t *pool = ouro__unit_kind(u) == OURO_UNIT_ARENA ? ouro__pool_of(u) : NULL;
    if (pool == NULL)
        ouro__fatal("ouro_decref(%p): reference count below zero (size class: none, not an object of "
                    "ouro)", (const void *)o);
    ouro__fatal("ouro_decref(%p): reference count below zero: a reference was dropped that nobody "
                "held (type %s; size class %d, %zu-byte blocks; allocated at an unknown call site: "
                "objects record none)",
                (const void *)o, o->type && o->type->name ? o->type->name : "?", pool->cls,
                block_size_of(pool));
}

/* The owner's decref found its count at 1 or 0 (ouro_decref in ouro.h). */
void ouro__decref_local_last(ouro_object_t *o, uint32_t local)
{
    if (likely(local == 1)) {
        ouro__decref_last_local(o);
        return;
    }
    /* local 0 with the owner's tid still set: the owner dropped its last
     * reference already, and the object is dead (its memory waits for a
     * grace period); once merged, tid is 0 and the shared path checks */
    ouro__report_decref_below_zero(o);
}
