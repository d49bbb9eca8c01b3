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
 *
 * Freed mappings wait in a small cache for the next large block of the same
 * mapping size, and go back to the OS once they have waited longer than the
 * purge delay (below).
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

/* ---- the cache of freed mappings ----
 * Without it, a program that frees a large block and soon allocates another
 * (a buffer per request) pays an mmap, a munmap (which interrupts every
 * other core running the process to flush its TLB) and a page fault per
 * page it touches: 17-22 us per malloc/free pair of 256 KiB to 4 MB here,
 * where glibc (whose mmap threshold rises after the first such free) takes
 * 20 ns and mimalloc 0.8-1.2 us.  So a freed mapping of up to
 * LCACHE_MAX_MAP bytes waits here, newest last, at most LCACHE_SLOTS of
 * them; a large allocation needing a mapping of exactly that size takes the
 * newest (its pages the most likely to be in cache).  A mapping that waited
 * longer than the purge delay in force (OURO_PURGE_DELAY, as for free
 * arena slots) is unmapped at the next large free or purge scan, and
 * ouro_collect(1) unmaps them all.  Not in debug or hardened mode, where an
 * access to a freed large block must fault, nor with a purge delay of 0.
 * A cached mapping holds whatever its last blocks wrote, so calloc clears
 * the bytes it asked for, as glibc, mimalloc, jemalloc and tcmalloc do with
 * reused memory (calloc of 512 KiB: 5-8 us for those four here, 20 us for a
 * fresh mapping and its munmap), but only up to LCACHE_CALLOC_MAX: past
 * that it maps afresh, as a memset would cost more than the mapping and
 * bring in pages the program may never touch.  Everything under large_lock.
 * The ouro__counters updates in this file are relaxed atomics: statistics,
 * ordered with nothing. */
#define LCACHE_SLOTS 16
#define LCACHE_MAX_MAP ((size_t)32 << 20)    /* glibc's largest mmap threshold */
/* bench/micro CallocFree: clearing 512 KiB of a cached mapping took 5-7 us
 * here, a fresh mapping and its munmap 17-22 us, so 1 MiB still gains */
#define LCACHE_CALLOC_MAX ((size_t)1 << 20)

typedef struct lcache_entry_s {
    uint8_t *base;
    size_t map_size;
    size_t resident;   /* bytes from base that may be backed by RAM */
    uint64_t freed_at; /* ms */
} lcache_entry_t;

static lcache_entry_t lcache[LCACHE_SLOTS]; /* [large_lock] oldest first */
static unsigned lcache_n;                   /* [large_lock] */
/* entries, readable without the lock: a peek that lets an allocation or a
 * purge scan skip the lock when the cache is empty (relaxed: a stale count
 * only makes an allocation map afresh or look for nothing, or a scan leave
 * aging to the next one; the entries themselves are read under the lock) */
static _Atomic unsigned lcache_count;

static bool lcache_on(void)
{
    return !ouro__debug_on() && !ouro__hardened_on() && ouro__options[OURO_OPTION_PURGE_DELAY] != 0;
}

/* Whether a mapping of `map_size` bytes, its block `off` bytes in, may be
 * cached: unit-aligned (not LARGE_PREV), so any offset below a unit fits
 * the next block that takes it. */
static bool lcache_fits(size_t off, size_t map_size)
{
    return off < OURO_UNIT_SIZE && map_size <= LCACHE_MAX_MAP;
}

static void lcache_remove_locked(unsigned i)
{
    memmove(&lcache[i], &lcache[i + 1], (lcache_n - i - 1) * sizeof lcache[0]);
    lcache_n--;
    atomic_store_explicit(&lcache_count, lcache_n, memory_order_relaxed);
}

/* The newest cached mapping of `map_size` bytes (its resident bytes in
 * *resident), taken out of the cache; NULL if there is none. */
static uint8_t *lcache_take_locked(size_t map_size, size_t *resident)
{
    for (unsigned i = lcache_n; i-- > 0;)
        if (lcache[i].map_size == map_size) {
            uint8_t *base = lcache[i].base;
            *resident = lcache[i].resident;
            /* relaxed, as every counter here: statistics, ordered with nothing */
            atomic_fetch_sub_explicit(&ouro__counters.large_cached, lcache[i].resident, memory_order_relaxed);
            lcache_remove_locked(i);
            return base;
        }
    return NULL;
}

/* Move the entries to unmap (all if `force`, else those older than the
 * purge delay) into out[]; returns how many.  The caller unmaps them after
 * dropping the lock (lcache_unmap). */
static unsigned lcache_expire_locked(uint64_t now, bool force, lcache_entry_t *out)
{
    long delay = ouro__arena_purge_delay();
    unsigned n = 0;
    /* `now` and every freed_at are read under the lock from a monotonic
     * clock, so the difference is never negative */
    while (lcache_n > 0 && (force || (delay >= 0 && now - lcache[0].freed_at >= (uint64_t)delay))) {
        out[n++] = lcache[0];
        lcache_remove_locked(0);
    }
    return n;
}

static void lcache_unmap(const lcache_entry_t *e, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        atomic_fetch_sub_explicit(&ouro__counters.large_cached, e[i].resident, memory_order_relaxed);
        atomic_fetch_sub_explicit(&ouro__counters.reserved, e[i].map_size, memory_order_relaxed);
        ouro__os_unmap(e[i].base, e[i].map_size);
    }
}

size_t ouro__large_cached(void)
{
    return atomic_load_explicit(&lcache_count, memory_order_relaxed);
}

void ouro__large_trim(bool force)
{
    if (atomic_load_explicit(&lcache_count, memory_order_relaxed) == 0)
        return;
    lcache_entry_t gone[LCACHE_SLOTS];
    pthread_mutex_lock(&large_lock);
    unsigned n = lcache_expire_locked(ouro__now_ms(), force, gone);
    pthread_mutex_unlock(&large_lock);
    lcache_unmap(gone, n);
}

/* Count the first `end` bytes of l's mapping (page-rounded) as resident. */
static void resident_cover(ouro_large_t *l, size_t end, size_t page)
{
    if (round_up(end, page) > l->resident)
        l->resident = round_up(end, page);
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
    size_t page = ouro__os_page_size();
    size_t resident = 0;
    uint8_t *base = NULL;
    if ((zero == NULL || size <= LCACHE_CALLOC_MAX) && lcache_fits(off, map_size) &&
        atomic_load_explicit(&lcache_count, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&large_lock);
        base = lcache_take_locked(map_size, &resident);
        pthread_mutex_unlock(&large_lock);
    }
    if (base == NULL) {
        size_t map_align = align > OURO_UNIT_SIZE ? align : OURO_UNIT_SIZE;
        base = ouro__os_map_aligned(map_size, map_align);
        if (base == NULL)
            return NULL;
        if (guard && !ouro__os_guard(base + map_size - guard, guard)) {
            ouro__os_unmap(base, map_size);
            errno = ENOMEM;
            return NULL;
        }
        atomic_fetch_add_explicit(&ouro__counters.reserved, map_size, memory_order_relaxed);
        if (zero)
            *zero = true;
    } else if (zero) {
        memset(base + off, 0, size); /* what the mapping's last blocks wrote */
        *zero = true;
    }
    uint8_t *user = base + off;
    ouro_large_t *l = (ouro_large_t *)(off >= OURO_UNIT_SIZE ? user - OURO_UNIT_SIZE : base);
    l->magic = OURO_LARGE_MAGIC;
    l->user = user;
    l->map_base = base;
    l->map_size = map_size;
    l->usable = map_size - off - guard;
    l->size = size;
    l->resident = resident; /* what the mapping's earlier blocks left in RAM */
    resident_cover(l, off + size, page);
    l->dbg_size = size;
    l->dbg_site = NULL;
    l->trace_site = NULL;
    l->trace_size = 0;
    l->trace_weight = 0;
    pthread_mutex_lock(&large_lock);
    list_add(l);
    pthread_mutex_unlock(&large_lock);
    unit_set(user, off >= OURO_UNIT_SIZE ? OURO_UNIT_LARGE_PREV : OURO_UNIT_LARGE);
    atomic_fetch_add_explicit(&ouro__counters.large_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_bytes, l->usable, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.large_mapped, round_up(off + size, page), memory_order_relaxed);
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
    atomic_fetch_sub_explicit(&ouro__counters.large_count, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ouro__counters.large_bytes, l->usable, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ouro__counters.large_mapped, round_up(off + l->size, ouro__os_page_size()),
                              memory_order_relaxed);
    unit_set(l->user, OURO_UNIT_NONE);
    lcache_entry_t gone[LCACHE_SLOTS + 1];
    unsigned n = 0;
    uint8_t *base = l->map_base;
    size_t map_size = l->map_size;
    bool keep = lcache_fits(off, map_size) && lcache_on();
    pthread_mutex_lock(&large_lock);
    list_del(l);
    l->magic = 0; /* a second free finds no header */
    if (keep) {
        uint64_t now = ouro__now_ms();
        n = lcache_expire_locked(now, false, gone);
        if (lcache_n == LCACHE_SLOTS) { /* full: the oldest makes room */
            gone[n++] = lcache[0];
            lcache_remove_locked(0);
        }
        lcache[lcache_n++] = (lcache_entry_t){base, map_size, l->resident, now};
        atomic_store_explicit(&lcache_count, lcache_n, memory_order_relaxed); /* see lcache_count */
        atomic_fetch_add_explicit(&ouro__counters.large_cached, l->resident, memory_order_relaxed);
    }
    pthread_mutex_unlock(&large_lock);
    lcache_unmap(gone, n);
    if (!keep) {
        atomic_fetch_sub_explicit(&ouro__counters.reserved, map_size, memory_order_relaxed);
        ouro__os_unmap(base, map_size);
    }
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
        resident_cover(l, off + size, page);
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
    resident_cover(nl, off + size, page);
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
