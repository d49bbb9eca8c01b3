/*
 * arena.c — the shared arena layer: 4 MiB arenas of 64 KiB slots, one list
 * of arenas per NUMA node (found with hwloc), pools claimed and released
 * with a CAS on an arena's slot bitmap, and purging of free slots after the
 * purge delay.  Owns the unit map and the arena headers; never touches a
 * pool's blocks or a heap's lists.
 *
 * No lock on a common path: claiming and releasing a pool is a CAS on one
 * bitmap.  A per-node mutex serialises only the mapping of a new arena (so
 * that two threads do not both map one when a single one would do).
 *
 * An arena is never unmapped: when all its slots are free and purged its
 * physical memory is back with the OS and only its address space (and the
 * pages of its header that were touched) remains.  This keeps every arena
 * header readable for ever, which the unit map, the free path and the heap
 * walk rely on without any reclamation protocol.
 */
#include "internal.h"

#include <errno.h>
#include <hwloc.h>
#include <string.h>
#include <sys/mman.h>

_Atomic uint8_t ouro__unit_map[OURO_MAP_ENTRIES];
ouro_pool_t ouro__no_pool; /* never written: all zero */

typedef struct node_arenas_s {
    ouro_arena_t *_Atomic head;   /* append-only list; acquire loads see a full header */
    ouro_arena_t *_Atomic tail;   /* [grow_lock] */
    ouro_arena_t *_Atomic hint;   /* where the last claim succeeded: start looking there */
    /* written at every release and dirty claim: a line of its own */
    _Atomic long dirty_free __attribute__((aligned(64))); /* slots of the node's arenas that
                                   * are free and dirty (their pages still in RAM): claims
                                   * take those first.  A count kept beside the bits, so it
                                   * may lag them for a moment */
} node_arenas_t;

static node_arenas_t nodes[OURO_MAX_NODES];
/* Serialises mapping new arenas (once per 4 MiB of growth, never on a
 * common path), so two threads do not both map one when one would do. */
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- topology (hwloc) ---- */
static hwloc_topology_t topo;
/* 0 unknown, 1 being loaded (allocations made meanwhile use node 0), 2 loaded */
static _Atomic int topo_state;
static int topo_nodes = 1;

static void topology_load(void)
{
    int expected = 0;
    /* acq_rel: the winner alone loads; others read node 0 until state 2 */
    if (!atomic_compare_exchange_strong_explicit(&topo_state, &expected, 1, memory_order_acq_rel,
                                                 memory_order_acquire))
        return;
    int n = 1;
    if (ouro__options[OURO_OPTION_NUMA] && hwloc_topology_init(&topo) == 0) {
        if (hwloc_topology_load(topo) == 0) {
            n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
            if (n < 1)
                n = 1;
            if (n > OURO_MAX_NODES)
                n = OURO_MAX_NODES;
        } else {
            hwloc_topology_destroy(topo);
            topo = NULL;
        }
    }
    topo_nodes = n;
    /* release: topo and topo_nodes are visible to whoever reads state 2 */
    atomic_store_explicit(&topo_state, 2, memory_order_release);
}

/* Physical cores, from hwloc (a topology of its own, loaded once: the
 * collector asks before its first parallel collection); 0 if unknown. */
int ouro__hw_cores(void)
{
    static _Atomic int cores_known;
    /* relaxed: racing loaders compute the same number */
    int n = atomic_load_explicit(&cores_known, memory_order_relaxed);
    if (n)
        return n;
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0)
        return 0;
    if (hwloc_topology_load(t) == 0)
        n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
    hwloc_topology_destroy(t);
    if (n > 0)
        atomic_store_explicit(&cores_known, n, memory_order_relaxed);
    return n > 0 ? n : 0;
}

/* The NUMA node of the calling thread's CPU; -1 while the topology is not
 * known yet (the caller asks again later). */
/* Whether OURO_OPTION_NUMA and OURO_OPTION_ARENA_RESERVE have been read
 * (the topology is loaded, or being loaded, at the first arena's mapping,
 * before the reservation is made). */
bool ouro__arena_numa_read(void)
{
    /* acquire: pairs with topology_load's CAS; a load that races it may
     * miss it, and the option then set changes nothing (options.c says so) */
    return atomic_load_explicit(&topo_state, memory_order_acquire) != 0;
}

int ouro__arena_current_node(void)
{
    if (atomic_load_explicit(&topo_state, memory_order_acquire) != 2)
        return -1;
    if (topo_nodes <= 1 || !topo)
        return 0;
    int node = 0;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (set && hwloc_get_last_cpu_location(topo, set, HWLOC_CPUBIND_THREAD) == 0) {
        hwloc_obj_t obj = hwloc_get_next_obj_covering_cpuset_by_type(topo, set, HWLOC_OBJ_NUMANODE, NULL);
        if (obj && obj->logical_index < OURO_MAX_NODES)
            node = (int)obj->logical_index;
    }
    hwloc_bitmap_free(set);
    return node;
}

static void arena_bind(void *base, int node)
{
    /* acquire: topo and topo_nodes are written before state 2 (release) */
    if (atomic_load_explicit(&topo_state, memory_order_acquire) != 2 || topo_nodes <= 1 || !topo)
        return;
    hwloc_obj_t obj = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)node);
    if (obj)
        hwloc_set_area_membind(topo, base, OURO_UNIT_SIZE, obj->nodeset, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_BYNODESET);
}

/* ---- arena creation ---- */
/* The address space reserved for arenas when the first is mapped
 * (OURO_OPTION_ARENA_RESERVE MiB, rounded down to whole arenas), handed
 * out a unit at a time upwards: [resv_lo, resv_next) holds arenas,
 * [resv_next, resv_end) is still reserved.  One compare then tells free that a pointer lies in an arena
 * (ouro__in_reserved_arena), where the unit map costs a dependent load.
 * Arenas beyond it, or all of them if the kernel refused the reservation
 * (RLIMIT_AS, say) or the option is 0, are mapped one by one as before.
 * [grow_lock] */
#define RESERVE_MIN ((size_t)256 << 20) /* 64 arenas */
static uint8_t *resv_lo, *resv_next, *resv_end;
static bool resv_tried;
static _Atomic size_t resv_bytes; /* resv_end - resv_lo, for statistics */

static ouro_arena_t *arena_map(void)
{
    if (!resv_tried) {
        resv_tried = true;
        size_t size = ((size_t)ouro__options[OURO_OPTION_ARENA_RESERVE] << 20) & ~OURO_UNIT_MASK;
        if (size) {
            /* refused (RLIMIT_AS, or valgrind, which takes no 64 GiB
             * mapping): half as much, down to RESERVE_MIN */
            while ((resv_lo = ouro__os_reserve(size, OURO_UNIT_SIZE)) == NULL && size / 2 >= RESERVE_MIN)
                size = (size / 2) & ~OURO_UNIT_MASK;
            resv_next = resv_lo;
            if (resv_lo) {
                resv_end = resv_lo + size;
                /* relaxed: statistics only */
                atomic_store_explicit(&resv_bytes, size, memory_order_relaxed);
                /* relaxed: published by the first release store of the span */
                atomic_store_explicit(&ouro__hot.arenas_lo, (uintptr_t)resv_lo, memory_order_relaxed);
            } else {
                if (ouro__options[OURO_OPTION_VERBOSE] >= 2)
                    ouro__warn("could not reserve %ld MiB of address space for arenas: mapping them one by one",
                               ouro__options[OURO_OPTION_ARENA_RESERVE]);
            }
        }
    }
    if (resv_next != resv_end) {
        if (!ouro__os_commit(resv_next, OURO_UNIT_SIZE))
            return NULL;
        resv_next += OURO_UNIT_SIZE;
        return (ouro_arena_t *)(resv_next - OURO_UNIT_SIZE);
    }
    return ouro__os_map_aligned(OURO_UNIT_SIZE, OURO_UNIT_SIZE);
}

/* Bytes of address space reserved for arenas (mapped as arenas or not). */
size_t ouro__arena_reserve_bytes(void)
{
    /* relaxed: stored once; a reader that misses it reads 0, as before
     * the first arena */
    return atomic_load_explicit(&resv_bytes, memory_order_relaxed);
}

/* Give back an arena that never held a pool (its guard was refused). */
static void arena_unmap(ouro_arena_t *a)
{
    if ((uint8_t *)a + OURO_UNIT_SIZE == resv_next) {
        /* the last unit taken from the reservation: reserved again, or,
         * if the kernel refused that, left mapped and skipped */
        if (ouro__os_decommit(a, OURO_UNIT_SIZE))
            resv_next -= OURO_UNIT_SIZE;
        return;
    }
    ouro__os_unmap(a, OURO_UNIT_SIZE);
}

static ouro_arena_t *arena_new(int node)
{
    ouro_arena_t *a = arena_map();
    if (a == NULL)
        return NULL;
    /* hardened mode: the last page of the unit is a guard, so an overflow
     * running off the end of the last pool faults instead of reaching the
     * next unit (often another arena's header: the reservation hands out
     * units upwards, and mmap others downwards).  The end, not the start,
     * so the header keeps offset 0 and the unit map and every fast path
     * stay as they are; the guards of the arenas and large mappings below
     * protect the headers. */
    size_t guard = ouro__guard_size();
    if (guard && !ouro__os_guard((uint8_t *)a + OURO_UNIT_SIZE - guard, guard)) {
        arena_unmap(a);
        errno = ENOMEM; /* no arena without its guard: hardened mode is all or nothing */
        return NULL;
    }
    a->guard = (uint32_t)guard;
    arena_bind(a, node);
    atomic_init(&a->used, 1); /* slot 0 is the header */
    atomic_init(&a->dirty, 1);
    a->node = node;
    for (unsigned i = 0; i < OURO_SLOTS; i++) {
        ouro_pool_t *p = &a->pools[i];
        atomic_init(&p->remote, 0);
        cds_lfs_node_init(&p->anode);
        atomic_init(&p->owner, NULL);
        p->slot = (uint8_t)i;
        /* published with the arena (the release stores of arena_append and
         * of the span) */
        atomic_init(&a->slot_pool[i], &ouro__no_pool);
    }
    /* release: pairs with the acquire in ouro__unit_kind, so a thread that
     * reads ARENA there (even for a garbage pointer, racing this) finds
     * the header set up: slot_pool all &ouro__no_pool, never NULL */
    atomic_store_explicit(&ouro__unit_map[(uintptr_t)a >> OURO_UNIT_SHIFT], OURO_UNIT_ARENA,
                          memory_order_release);
    if ((uint8_t *)a >= resv_lo && (uint8_t *)a < resv_end)
        /* release: pairs with the acquire in ouro__in_reserved_arena: the
         * header is set up (slot_pool all &ouro__no_pool: garbage pointers
         * into the new arena are reported) and lo was stored before */
        atomic_store_explicit(&ouro__hot.arenas_span, (uintptr_t)resv_next - (uintptr_t)resv_lo,
                              memory_order_release);
    atomic_fetch_add_explicit(&ouro__counters.reserved, OURO_UNIT_SIZE, memory_order_relaxed);
    atomic_fetch_add_explicit(&ouro__counters.arenas, 1, memory_order_relaxed);
    return a;
}

/* Append under the grow lock; the release store publishes the header. */
static void arena_append(node_arenas_t *na, ouro_arena_t *a)
{
    ouro_arena_t *tail = atomic_load_explicit(&na->tail, memory_order_relaxed);
    if (tail == NULL)
        atomic_store_explicit(&na->head, a, memory_order_release);
    else
        atomic_store_explicit(&tail->next, a, memory_order_release);
    atomic_store_explicit(&na->tail, a, memory_order_relaxed);
}

/* ---- slot claiming ---- */
static inline uint64_t span_mask(unsigned span)
{
    return span >= 64 ? ~0ull : ((1ull << span) - 1);
}

/* Claim `span` free slots aligned to `span` in `a`, only where one of them
 * is dirty if `dirty_only`; returns the first slot or -1. */
static int arena_try_claim(ouro_arena_t *a, unsigned span, bool dirty_only)
{
    /* relaxed: the CAS below validates what we saw; the dirty bits only
     * steer the choice (a purge that clears one meanwhile costs page faults) */
    uint64_t used = atomic_load_explicit(&a->used, memory_order_relaxed);
    uint64_t want = dirty_only ? atomic_load_explicit(&a->dirty, memory_order_relaxed) : ~0ull;
    for (;;) {
        int found = -1;
        for (unsigned i = span; i + span <= OURO_SLOTS; i += span) {
            if ((used & (span_mask(span) << i)) == 0 && (want & (span_mask(span) << i)) != 0) {
                found = (int)i;
                break;
            }
        }
        if (found < 0)
            return -1;
        /* acquire: we see what the thread that freed these slots wrote
         * (free_at, purge state) before its release of the bits */
        if (atomic_compare_exchange_weak_explicit(&a->used, &used,
                                                  used | (span_mask(span) << found),
                                                  memory_order_acquire, memory_order_relaxed))
            return found;
    }
}

/* ---- the purge delay in force ----
 * OURO_PURGE_DELAY is where it starts.  A purge is premature when the slot
 * is claimed again within PURGE_PREMATURE delays of it (claims take free
 * dirty slots first, so mostly when none was left, or none fitted the
 * pool's span): its pages were given back only to fault in again.  A
 * program that frees and reallocates in waves longer than the delay does
 * that at each wave (mstress: its threads end
 * every 12 ms, and their successors fault in what they left).  Each
 * premature purge doubles the delay, at most once per delay and up to
 * PURGE_DELAY_MAX_MULT times the option; a second without one halves it
 * again, so a program that settles keeps its memory for the option's
 * delay.  Relaxed atomics: two threads racing to raise or lower it only
 * move it one step more or less.  Times are compared as signed
 * differences: another thread may have stored a later delay_moved than
 * the `now` we read. */
#define PURGE_PREMATURE 4
#define PURGE_DELAY_MAX_MULT 32 /* 4 did as well on mstress; 32 leaves room for slower waves */
#define PURGE_DECAY_MS 1000
static _Atomic long delay_now;       /* ms; below the option means the option */
static _Atomic uint64_t delay_moved; /* ms when delay_now last changed */

/* The delay in force: 0 purges at once, -1 never (the option's own). */
static long purge_delay(void)
{
    long base = ouro__options[OURO_OPTION_PURGE_DELAY];
    if (base <= 0)
        return base;
    long cur = atomic_load_explicit(&delay_now, memory_order_relaxed);
    long max = base * PURGE_DELAY_MAX_MULT;
    return cur < base ? base : cur > max ? max : cur;
}

long ouro__arena_purge_delay(void)
{
    return purge_delay();
}

/* A clean slot was claimed: if it was purged (at `purged_at`, 0 for never)
 * a short while ago, purge later. */
static void purge_delay_claimed(uint64_t purged_at)
{
    long cur = purge_delay();
    if (purged_at == 0 || cur <= 0)
        return;
    uint64_t now = ouro__now_ms();
    if ((int64_t)(now - purged_at) >= (int64_t)cur * PURGE_PREMATURE ||
        (int64_t)(now - atomic_load_explicit(&delay_moved, memory_order_relaxed)) < (int64_t)cur)
        return;
    long max = ouro__options[OURO_OPTION_PURGE_DELAY] * PURGE_DELAY_MAX_MULT;
    atomic_store_explicit(&delay_now, cur * 2 < max ? cur * 2 : max, memory_order_relaxed);
    atomic_store_explicit(&delay_moved, now, memory_order_relaxed);
}

/* A purge scan at `now`: halve a raised delay that has not been raised
 * for PURGE_DECAY_MS. */
static void purge_delay_decay(uint64_t now)
{
    long cur = purge_delay();
    if (cur <= ouro__options[OURO_OPTION_PURGE_DELAY] ||
        (int64_t)(now - atomic_load_explicit(&delay_moved, memory_order_relaxed)) < PURGE_DECAY_MS)
        return;
    atomic_store_explicit(&delay_now, cur / 2, memory_order_relaxed);
    atomic_store_explicit(&delay_moved, now, memory_order_relaxed);
}

static ouro_pool_t *pool_at(ouro_arena_t *a, int slot, unsigned span)
{
    ouro_pool_t *p = &a->pools[slot];
    uint64_t bits = span_mask(span) << slot;
    /* acq_rel: dirty bits are set by claimers and cleared by purgers; both
     * hold the slots claimed in `used`, so any order would do for the bits
     * themselves; acquire keeps the purge's madvise before our first write */
    uint64_t was = atomic_fetch_or_explicit(&a->dirty, bits, memory_order_acq_rel);
    if (was & bits)
        /* relaxed: a count that steers claims, ordered with nothing */
        atomic_fetch_sub_explicit(&nodes[a->node].dirty_free, __builtin_popcountll(was & bits),
                                  memory_order_relaxed);
    p->start = (uint8_t *)a + ((size_t)slot << OURO_SLOT_SHIFT);
    p->span = (uint8_t)span;
    p->mem_is_zero = (was & bits) == 0;
    if (p->mem_is_zero)
        /* relaxed: the purge stored it before its release of `used`,
         * which our claim's CAS acquired */
        purge_delay_claimed(atomic_load_explicit(&a->free_at[slot], memory_order_relaxed));
    return p;
}

/* Arenas a claim looks through for a free dirty slot. */
#define DIRTY_SCAN 64

ouro_pool_t *ouro__arena_claim_pool(int node, unsigned span)
{
    if (node < 0 || node >= OURO_MAX_NODES)
        node = 0;
    node_arenas_t *na = &nodes[node];
    /* Slots freed not long ago and not purged yet come first: their pages
     * are still in RAM, where a clean slot costs a page fault for each page
     * touched and grows RSS while the dirty ones wait for their purge
     * (rptest at 1 thread: half the page faults, peak RSS 18.0 -> 14.4 MiB).
     * The lowest arena first, so the heap packs to the front of the list.
     * Relaxed: the count only says whether looking may pay; the arenas are
     * reached by acquire loads as below. */
    if (atomic_load_explicit(&na->dirty_free, memory_order_relaxed) > 0) {
        /* the first DIRTY_SCAN arenas only: a claim stays cheap on a heap
         * of thousands, where a dirty slot beyond them waits for its purge.
         * (Trying the arena of the last release first, rather than the
         * lowest, gave rptest at 1 thread 6% more peak RSS.) */
        unsigned seen = 0;
        for (ouro_arena_t *a = atomic_load_explicit(&na->head, memory_order_acquire); a && seen < DIRTY_SCAN;
             a = atomic_load_explicit(&a->next, memory_order_acquire), seen++) {
            int s = arena_try_claim(a, span, true);
            if (s >= 0)
                return pool_at(a, s, span);
        }
    }
    /* acquire: pairs with the release that stored the hint, so the arena's
     * header is whole (it was appended before it became a hint) */
    ouro_arena_t *hint = atomic_load_explicit(&na->hint, memory_order_acquire);
    if (hint) {
        int s = arena_try_claim(hint, span, false);
        if (s >= 0)
            return pool_at(hint, s, span);
    }
    /* acquire: pairs with the release in arena_append, so headers are whole */
    for (ouro_arena_t *a = atomic_load_explicit(&na->head, memory_order_acquire); a;
         a = atomic_load_explicit(&a->next, memory_order_acquire)) {
        if (a == hint)
            continue;
        int s = arena_try_claim(a, span, false);
        if (s >= 0) {
            /* release: pairs with the acquire load of the hint above */
            atomic_store_explicit(&na->hint, a, memory_order_release);
            return pool_at(a, s, span);
        }
    }
    /* none free: map a new arena.  The first growth also learns the topology
     * (hwloc allocates; its allocations meanwhile see state 1 and use node 0). */
    if (atomic_load_explicit(&topo_state, memory_order_acquire) == 0)
        topology_load();
    pthread_mutex_lock(&grow_lock);
    /* another thread may have grown the node while we waited */
    ouro_arena_t *tail = atomic_load_explicit(&na->tail, memory_order_acquire);
    if (tail) {
        int s = arena_try_claim(tail, span, false);
        if (s >= 0) {
            pthread_mutex_unlock(&grow_lock);
            return pool_at(tail, s, span);
        }
    }
    ouro_arena_t *a = arena_new(node);
    if (a == NULL) {
        pthread_mutex_unlock(&grow_lock);
        return NULL;
    }
    int s = arena_try_claim(a, span, false); /* cannot fail on a fresh arena: span <= 32 */
    arena_append(na, a);
    atomic_store_explicit(&na->hint, a, memory_order_release);
    pthread_mutex_unlock(&grow_lock);
    return pool_at(a, s, span);
}

/* ---- release and purge ---- */
static _Atomic uint64_t next_purge_ms;

/* Whether a purge scan is due at `now` (next_purge_ms read as `next`) under
 * `delay` (>= 0).  A scan set for later than a delay from now was set under
 * a longer delay that ouro_option_set has since lowered: due now, or the
 * new delay would not act until the old one had passed. */
static bool purge_due(uint64_t now, uint64_t next, long delay)
{
    return now >= next || next - now > (uint64_t)delay;
}

void ouro__arena_release_pool(ouro_pool_t *pool)
{
    ouro_arena_t *a = ouro__arena_of((uintptr_t)pool->start);
    unsigned slot = pool->slot, span = pool->span;
    for (unsigned i = 0; i < span; i++)
        /* relaxed: nothing may use these entries once the pool is free; the
         * release on `used` below orders them before any reclaimer */
        atomic_store_explicit(&a->slot_pool[slot + i], &ouro__no_pool, memory_order_relaxed);
    uint64_t now = ouro__now_ms();
    for (unsigned i = 0; i < span; i++)
        atomic_store_explicit(&a->free_at[slot + i], now, memory_order_relaxed);
    /* release: pairs with the acquire CAS of the next claimer */
    atomic_fetch_and_explicit(&a->used, ~(span_mask(span) << slot), memory_order_release);
    /* relaxed: see ouro__arena_claim_pool (a claimed slot is always dirty) */
    atomic_fetch_add_explicit(&nodes[a->node].dirty_free, (long)span, memory_order_relaxed);
    long delay = purge_delay();
    if (delay == 0)
        ouro__arena_purge(false);
    /* relaxed: a peek to skip the call; ouro__arena_purge decides with its CAS */
    else if (delay > 0 && purge_due(now, atomic_load_explicit(&next_purge_ms, memory_order_relaxed), delay))
        ouro__arena_purge(false);
}

/* Slots a purge that was not forced gives back per call: it runs on
 * whichever thread released a pool, in the middle of its malloc or free,
 * and madvise costs ~60-70 us per MiB here (a whole arena's 4 MiB took
 * 0.27 ms, and a mutator saw it as a pause).  The rest waits for the next
 * release. */
#define PURGE_BUDGET 16

/* Purge the free dirty slots of `a` freed at least `delay` ms ago, at most
 * *budget of them (forced: all). */
static void arena_purge_one(ouro_arena_t *a, uint64_t now, long delay, bool force, unsigned *budget)
{
    uint64_t dirty = atomic_load_explicit(&a->dirty, memory_order_relaxed);
    uint64_t used = atomic_load_explicit(&a->used, memory_order_relaxed);
    uint64_t cand = dirty & ~used & ~1ull;
    if (!cand)
        return;
    uint64_t want = 0;
    for (unsigned i = 1; i < OURO_SLOTS; i++) {
        if (!(cand >> i & 1))
            continue;
        /* relaxed: a stale time only purges a slot a little early or late;
         * the CAS on `used` below decides whether it is still free */
        uint64_t t = atomic_load_explicit(&a->free_at[i], memory_order_relaxed);
        if (force || now >= t + (uint64_t)delay) {
            if (!force && *budget == 0)
                break;
            want |= 1ull << i;
            if (!force)
                --*budget;
        }
    }
    if (!want)
        return;
    /* claim the slots so no thread allocates in them while we madvise;
     * acquire: we see the writes of their last owner before we discard them */
    uint64_t cur = atomic_load_explicit(&a->used, memory_order_relaxed);
    uint64_t got;
    do {
        got = want & ~cur;
        if (!got)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&a->used, &cur, cur | got, memory_order_acquire,
                                                    memory_order_relaxed));
    /* holding the slots, we alone may clear their dirty bits: a purge
     * that raced ours may have cleaned some since we looked, and those
     * stay as they are (relaxed: the holder's own view of the bits) */
    uint64_t purge = got & atomic_load_explicit(&a->dirty, memory_order_relaxed);
    for (unsigned i = 1; i < OURO_SLOTS;) {
        if (!(purge >> i & 1)) {
            i++;
            continue;
        }
        unsigned j = i;
        while (j < OURO_SLOTS && (purge >> j & 1))
            j++;
        /* the guard page has no memory to give back: leave it out, so the
         * madvise stays on the readable pages of the arena */
        size_t guard = j == OURO_SLOTS ? a->guard : 0;
        ouro__os_purge((uint8_t *)a + ((size_t)i << OURO_SLOT_SHIFT),
                       ((size_t)(j - i) << OURO_SLOT_SHIFT) - guard);
        atomic_fetch_add_explicit(&ouro__counters.purges, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ouro__counters.purged_bytes,
                                  ((size_t)(j - i) << OURO_SLOT_SHIFT) - guard, memory_order_relaxed);
        i = j;
    }
    for (unsigned i = 1; i < OURO_SLOTS; i++)
        if (purge >> i & 1)
            /* relaxed: the release of `used` below publishes it to the
             * next claimer (purge_delay_claimed); a forced purge (the
             * program asked) never counts as premature */
            atomic_store_explicit(&a->free_at[i], force ? 0 : now, memory_order_relaxed);
    /* the slots are clean now; the claimer that next sets them dirty sees this */
    atomic_fetch_and_explicit(&a->dirty, ~purge, memory_order_release);
    /* relaxed: as in ouro__arena_claim_pool */
    atomic_fetch_sub_explicit(&nodes[a->node].dirty_free, __builtin_popcountll(purge), memory_order_relaxed);
    /* release: the madvise is done before anyone claims the slots again */
    atomic_fetch_and_explicit(&a->used, ~got, memory_order_release);
}

/* The walks below load list links and slot_pool with acquire: they pair with
 * the release stores of arena_append and ouro__pool_init, so every header
 * and pool reached is seen whole. */
void ouro__arena_purge(bool force)
{
    long delay = purge_delay();
    if (delay < 0 && !force)
        return;
    uint64_t now = ouro__now_ms();
    uint64_t next = atomic_load_explicit(&next_purge_ms, memory_order_relaxed);
    if (!force) {
        if (!purge_due(now, next, delay))
            return;
        /* relaxed: only rate-limits scans; a lost race just skips one */
        if (!atomic_compare_exchange_strong_explicit(&next_purge_ms, &next,
                                                     now + (uint64_t)(delay > 0 ? delay : 0),
                                                     memory_order_relaxed, memory_order_relaxed))
            return;
        purge_delay_decay(now);
    }
    ouro__large_trim(force); /* freed large mappings age by the same delay */
    unsigned budget = PURGE_BUDGET;
    for (int n = 0; n < OURO_MAX_NODES && (force || budget); n++)
        for (ouro_arena_t *a = atomic_load_explicit(&nodes[n].head, memory_order_acquire); a && (force || budget);
             a = atomic_load_explicit(&a->next, memory_order_acquire))
            arena_purge_one(a, now, delay < 0 ? 0 : delay, force, &budget);
    if (!force && budget == 0)
        /* relaxed: as above; more may be due, so the next release looks again */
        atomic_store_explicit(&next_purge_ms, now, memory_order_relaxed);
}

/* ---- walking ---- */
void ouro__arena_visit_pools(ouro_pool_visit_fn *fn, void *arg)
{
    for (int n = 0; n < OURO_MAX_NODES; n++)
        for (ouro_arena_t *a = atomic_load_explicit(&nodes[n].head, memory_order_acquire); a;
             a = atomic_load_explicit(&a->next, memory_order_acquire))
            for (unsigned i = 1; i < OURO_SLOTS; i++) {
                ouro_pool_t *p = atomic_load_explicit(&a->slot_pool[i], memory_order_acquire);
                if (p != &ouro__no_pool && p->slot == i)
                    fn(p, arg);
            }
}

int ouro_test_check_arenas(void)
{
    int ok = 0;
    for (int n = 0; n < OURO_MAX_NODES; n++) {
        long bits = 0;
        /* relaxed: the caller promises no other thread is at work */
        for (ouro_arena_t *a = atomic_load_explicit(&nodes[n].head, memory_order_acquire); a;
             a = atomic_load_explicit(&a->next, memory_order_acquire))
            bits += __builtin_popcountll(atomic_load_explicit(&a->dirty, memory_order_relaxed) &
                                         ~atomic_load_explicit(&a->used, memory_order_relaxed));
        long count = atomic_load_explicit(&nodes[n].dirty_free, memory_order_relaxed);
        if (count != bits) {
            ouro__warn("node %d: %ld free dirty slots counted, %ld in the bitmaps", n, count, bits);
            ok = -1;
        }
    }
    return ok;
}

/* Bytes of arena memory that may be backed by RAM: headers and dirty slots. */
size_t ouro__arena_dirty_bytes(void)
{
    size_t n = 0;
    for (int i = 0; i < OURO_MAX_NODES; i++)
        for (ouro_arena_t *a = atomic_load_explicit(&nodes[i].head, memory_order_acquire); a;
             a = atomic_load_explicit(&a->next, memory_order_acquire))
            /* relaxed: a snapshot; the bits change under us anyway */
            n += (size_t)__builtin_popcountll(atomic_load_explicit(&a->dirty, memory_order_relaxed))
                 << OURO_SLOT_SHIFT;
    return n;
}

/* ---- fork ---- */
void ouro__arena_fork_prepare(void)
{
    pthread_mutex_lock(&grow_lock);
}

void ouro__arena_fork_parent(void)
{
    pthread_mutex_unlock(&grow_lock);
}

/* The child is a copy of the forking thread, which holds the lock. */
void ouro__arena_fork_child(void)
{
    pthread_mutex_unlock(&grow_lock);
}
