/*
 * large.c — blocks above OURO_LARGE_MAX, each in a mapping of its own.
 *
 * The header sits at the base of the unit (4 MiB) that holds the user
 * pointer, so a pointer is classified through the unit map alone; for
 * alignments of a unit or more the user pointer is unit-aligned and the
 * header sits one unit below it (unit kind LARGE_PREV).  Mappings are rounded
 * up to whole units: the slack is address space only, never touched until a
 * realloc grows into it, so growing in place is free up to the unit's end.
 * Owns these mappings and their unit-map entries, and the list of live
 * large blocks (for heap walks; a mutex, as every operation on a large
 * block is a system call anyway); nothing else.
 *
 * Hardened mode: the last page of every mapping is a guard (PROT_NONE), so
 * an overflow running off the end of a large block faults.  `usable` stops
 * at the guard, so the guard's size is map_size - offset - usable: the
 * header needs no field of its own.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define LARGE_HDR 128u
_Static_assert(sizeof(ouro_large_t) <= LARGE_HDR, "the large header fits below the user pointer");

/* every live large block, for heap walks; the header moves with mremap,
 * so a realloc that moves one relinks it under the lock */
static pthread_mutex_t large_lock = PTHREAD_MUTEX_INITIALIZER;
static ouro_large_t *large_list;

static void list_add(ouro_large_t *l)
{
    l->prev = NULL;
    l->next = large_list;
    if (large_list)
        large_list->prev = l;
    large_list = l;
}

static void list_del(ouro_large_t *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        large_list = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) & ~(to - 1);
}

static void unit_set(const void *user, int kind)
{
    /* relaxed: see ouro__unit_kind; the entry is set before the pointer exists */
    atomic_store_explicit(&ouro__unit_map[(uintptr_t)user >> OURO_UNIT_SHIFT], (uint8_t)kind,
                          memory_order_relaxed);
}

/* Offset of the user pointer from the mapping's base for `align`. */
static size_t user_offset(size_t align)
{
    return align >= OURO_UNIT_SIZE ? align : round_up(LARGE_HDR, align < 16 ? 16 : align);
}

void *ouro__large_alloc(size_t size, size_t align, bool *zero)
{
    size_t off = user_offset(align);
    if (size > ((size_t)1 << OURO_USER_BITS) - off - OURO_UNIT_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t guard = ouro__guard_size();
    size_t map_size = round_up(off + size + guard, OURO_UNIT_SIZE);
    size_t map_align = align > OURO_UNIT_SIZE ? align : OURO_UNIT_SIZE;
    uint8_t *base = ouro__os_map_aligned(map_size, map_align);
    if (base == NULL)
        return NULL;
    if (guard && !ouro__os_guard(base + map_size - guard, guard)) {
        ouro__os_unmap(base, map_size);
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *user = base + off;
    ouro_large_t *l = (ouro_large_t *)(off >= OURO_UNIT_SIZE ? user - OURO_UNIT_SIZE : base);
    l->magic = OURO_LARGE_MAGIC;
    l->user = user;
    l->map_base = base;
    l->map_size = map_size;
    l->usable = map_size - off - guard;
    l->size = size;
    l->dbg_size = size;
    l->dbg_site = NULL;
    l->trace_site = NULL;
    l->trace_size = 0;
    l->trace_weight = 0;
    pthread_mutex_lock(&large_lock);
    list_add(l);
    pthread_mutex_unlock(&large_lock);
    unit_set(user, off >= OURO_UNIT_SIZE ? OURO_UNIT_LARGE_PREV : OURO_UNIT_LARGE);
    atomic_fetch_add_explicit(&ouro__counters.reserved, map_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_bytes, l->usable, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_mapped, round_up(off + size, ouro__os_page_size()),
                              memory_order_relaxed);
    if (zero)
        *zero = true;
    return user;
}

/* The header of the large block starting at `p` (unit kind `kind`), or NULL
 * if `p` is not the start of one. */
ouro_large_t *ouro__large_find(const void *p, int kind)
{
    uintptr_t u = (uintptr_t)p;
    uintptr_t unit = u & ~(uintptr_t)OURO_UNIT_MASK;
    if (kind == OURO_UNIT_LARGE_PREV) {
        if (u != unit)
            return NULL;
        unit -= OURO_UNIT_SIZE;
    }
    ouro_large_t *l = (ouro_large_t *)unit;
    if (l->magic != OURO_LARGE_MAGIC || l->user != p)
        return NULL;
    return l;
}

void ouro__large_free(ouro_large_t *l)
{
    size_t off = (size_t)((uint8_t *)l->user - (uint8_t *)l->map_base);
    atomic_fetch_sub_explicit(&ouro__counters.reserved, l->map_size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ouro__counters.large_count, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ouro__counters.large_bytes, l->usable, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ouro__counters.large_mapped, round_up(off + l->size, ouro__os_page_size()),
                              memory_order_relaxed);
    unit_set(l->user, OURO_UNIT_NONE);
    pthread_mutex_lock(&large_lock);
    list_del(l);
    l->magic = 0; /* a second free finds no header */
    pthread_mutex_unlock(&large_lock);
    ouro__os_unmap(l->map_base, l->map_size);
}

/* Resize in place when the mapping has room; else move the pages with
 * mremap into a fresh aligned reservation (no copy).  NULL if neither works. */
void *ouro__large_realloc(ouro_large_t *l, size_t size)
{
    size_t off = (size_t)((uint8_t *)l->user - (uint8_t *)l->map_base);
    size_t page = ouro__os_page_size();
    if (size <= l->usable) {
        atomic_fetch_add_explicit(&ouro__counters.large_mapped,
                                  round_up(off + size, page) - round_up(off + l->size, page),
                                  memory_order_relaxed);
        l->size = size;
        return l->user;
    }
    if (off >= OURO_UNIT_SIZE || size > ((size_t)1 << OURO_USER_BITS) - off - OURO_UNIT_SIZE)
        return NULL;
    size_t guard = l->map_size - off - l->usable;
    size_t new_map = round_up(off + size + guard, OURO_UNIT_SIZE);
    uint8_t *dst = ouro__os_map_aligned(new_map, OURO_UNIT_SIZE);
    if (dst == NULL)
        return NULL;
    /* the new guard first: mremap below replaces only the pages before it */
    if (guard && !ouro__os_guard(dst + new_map - guard, guard)) {
        ouro__os_unmap(dst, new_map);
        return NULL;
    }
    size_t old_map = l->map_size, old_size = l->size, old_usable = l->usable;
    void *old_base = l->map_base, *old_user = l->user;
    /* the header moves with the pages: no walk may follow a link to it
     * meanwhile.  mremap moves one mapping: the readable pages, without the
     * old guard (a mapping of its own, as its protection differs) */
    pthread_mutex_lock(&large_lock);
    list_del(l);
    uint8_t *moved =
        mremap(l->map_base, old_map - guard, new_map - guard, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    if (moved == MAP_FAILED) {
        list_add(l);
        pthread_mutex_unlock(&large_lock);
        ouro__os_unmap(dst, new_map);
        return NULL;
    }
    list_add((ouro_large_t *)moved);
    pthread_mutex_unlock(&large_lock);
    if (guard)
        ouro__os_unmap((uint8_t *)old_base + old_map - guard, guard);
    ouro_large_t *nl = (ouro_large_t *)moved;
    nl->user = moved + off;
    nl->map_base = moved;
    nl->map_size = new_map;
    nl->usable = new_map - off - guard;
    nl->size = size;
    unit_set(nl->user, OURO_UNIT_LARGE);
    unit_set(old_user, OURO_UNIT_NONE);
    atomic_fetch_add_explicit(&ouro__counters.reserved, new_map - old_map, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_bytes, nl->usable - old_usable, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_mapped,
                              round_up(off + size, page) - round_up(off + old_size, page),
                              memory_order_relaxed);
    return nl->user;
}

void ouro__large_visit(void (*fn)(ouro_large_t *l, void *arg), void *arg)
{
    pthread_mutex_lock(&large_lock);
    for (ouro_large_t *l = large_list; l; l = l->next)
        fn(l, arg);
    pthread_mutex_unlock(&large_lock);
}

void ouro__large_fork_prepare(void)
{
    pthread_mutex_lock(&large_lock);
}

void ouro__large_fork_parent(void)
{
    pthread_mutex_unlock(&large_lock);
}
