/*
 * internal.h — every internal type of the allocator, with the invariants
 * each field keeps, and the static inline fast paths.
 *
 * Memory is layered as pymalloc's:
 *
 *   unit   4 MiB aligned region of address space.  The unit map (one byte per
 *          unit of the 47-bit user address space) says what a unit is, so a
 *          pointer is classified in O(1) without touching memory ouro does
 *          not own.
 *   arena  a unit whose first 64 KiB slot holds the arena header (the pool
 *          headers of all its slots); slots 1..63 hold pools.
 *   pool   1..16 aligned slots serving one size class, owned by one thread
 *          heap at a time.
 *   block  one allocation.
 *
 * Large requests (> OURO_LARGE_MAX) get a mapping of their own whose header
 * sits at the base of the unit of the user pointer (unit kind LARGE), or, for
 * alignments of a unit or more, one unit below it (LARGE_PREV).
 *
 * Concurrency: fields are annotated [owner] (only the thread owning the
 * pool/heap touches them, plain accesses), [init] (written before the
 * structure is published, read-only while published), [shared] (atomics,
 * each access names its order and why).
 */
#ifndef OURO_INTERNAL_H
#define OURO_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* configure's choices (OURO_DEBUG for --enable-debug): every file of the
 * library sees them through this header, so the assertions below really
 * are on in every file of a debug build */
#include "config.h"
/* ouro is LGPL-2.1-or-later like liburcu, so it may inline liburcu's
 * lock-free stack and queue fast paths. */
#define _LGPL_SOURCE
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <urcu/lfstack.h>
#include <urcu/wfcqueue.h>

#include "ouro.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ouro_noinline __attribute__((noinline))
#define ouro_hidden __attribute__((visibility("hidden")))
#define ouro_cold __attribute__((cold, noinline))

/* ---- ThreadSanitizer and liburcu ----
 * liburcu 0.13's x86 atomics are inline asm, which TSan cannot see.  Where a
 * liburcu stack or queue carries a happens-before edge that ouro relies on
 * (a block's contents written before its push, read after the pop), we state
 * that edge to TSan by hand on the address of the stack or queue.  Races
 * inside liburcu's own inline functions are listed in tests/tsan.supp. */
#if defined(__SANITIZE_THREAD__)
#define OURO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OURO_TSAN 1
#endif
#endif
#ifdef OURO_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ouro_tsan_release(a) __tsan_release((void *)(a))
#define ouro_tsan_acquire(a) __tsan_acquire((void *)(a))
#else
#define ouro_tsan_release(a) ((void)0)
#define ouro_tsan_acquire(a) ((void)0)
#endif

/* ---- assertions, in levels (mimalloc's) ---- */
#ifdef OURO_DEBUG
#define ouro_assert(c) ((c) ? (void)0 : ouro__assert_fail(#c, __FILE__, __LINE__))
#else
#define ouro_assert(c) ((void)0)
#endif
#if defined(OURO_DEBUG) && OURO_DEBUG > 1
#define ouro_assert_expensive(c) ouro_assert(c)
#else
#define ouro_assert_expensive(c) ((void)0)
#endif

/* ---- geometry ---- */
#define OURO_UNIT_SHIFT 22                       /* 4 MiB units and arenas */
#define OURO_UNIT_SIZE ((size_t)1 << OURO_UNIT_SHIFT)
#define OURO_UNIT_MASK (OURO_UNIT_SIZE - 1)
#define OURO_SLOT_SHIFT 16                       /* 64 KiB slots */
#define OURO_SLOT_SIZE ((size_t)1 << OURO_SLOT_SHIFT)
#define OURO_SLOTS (OURO_UNIT_SIZE / OURO_SLOT_SIZE) /* 64, slot 0 = header */
#define OURO_USER_BITS 47                        /* x86-64 user space */
#define OURO_MAP_ENTRIES ((size_t)1 << (OURO_USER_BITS - OURO_UNIT_SHIFT))

#define OURO_SMALL_MAX 512                       /* 16-byte classes up to here */
#define OURO_DIRECT_MAX 1024                     /* malloc's inline path serves up to here */
#define OURO_LARGE_MAX ((size_t)128 << 10)       /* classes up to here, then the OS */
#define OURO_NCLASSES OURO_NUM_CLASSES           /* 0..32 small, 33..64 geometric */
#define OURO_EXTEND_BYTES 4096                   /* carve a fresh pool a page at a time */
#define OURO_MAX_NODES 64

/* Each thread has one heap per kind, and pools serve one kind: objects live
 * apart from plain malloc blocks, so walking a thread's objects (at its exit)
 * never meets a plain block.  Containers (types with `traverse`) have a kind
 * of their own: each block starts with the collector's 16-byte link prefix
 * (gc.h), and the object follows it. */
enum { OURO_KIND_PLAIN = 0, OURO_KIND_OBJECT = 1, OURO_KIND_GC = 2, OURO_KINDS = 3 };

enum { OURO_UNIT_NONE = 0, OURO_UNIT_ARENA = 1, OURO_UNIT_LARGE = 2, OURO_UNIT_LARGE_PREV = 3 };

/* ---- blocks ---- */
/* A free block: word 0 links it in a free list (or a pool's remote stack,
 * or a heap's delayed stack), word 1 holds the free cookie: block address ^ the
 * process key.  Allocation clears the cookie, so finding it on free means
 * the block is already free (a double free), barring a 2^-64 coincidence. */
typedef struct ouro_block_s {
    struct cds_lfs_node node;  /* next free block */
    uintptr_t cookie;          /* ouro__hot.key ^ address while free, 0 while allocated */
} ouro_block_t;

struct ouro_heap_s;

/* ---- pools ---- */
#define OURO_POOL_FULL 0x80000000u /* bit of `used`: the pool is on its heap's full list */
/* The word `remote`: the last block freed by another thread (16-byte
 * aligned, below 2^47, so its low 4 and top 17 bits are free), how many
 * blocks its stack holds in the top 16 bits (a pool has at most 4096), and
 * the NOTIFY bit: the owner put the pool on its full list and will not
 * look at it again until told (pool.c). */
#define OURO_REMOTE_NOTIFY ((uintptr_t)1)
#define OURO_REMOTE_COUNT_SHIFT 48
#define OURO_REMOTE_BLOCK(w) ((ouro_block_t *)((w) & ((((uintptr_t)1) << OURO_REMOTE_COUNT_SHIFT) - 16)))
#define OURO_REMOTE_COUNT(w) ((uint32_t)((w) >> OURO_REMOTE_COUNT_SHIFT))

typedef struct ouro_pool_s {
    /* line 0: read by every free (the owner's and other threads'); written
     * only when the pool is set up or carved further, so remote frees
     * never pull it away from the owner */
    uint8_t *start;              /* [init] first block */
    _Atomic uint32_t carved;     /* [owner] blocks carved so far (= capacity): every free checks
                                  * against it, so atomic (relaxed) */
    _Atomic uint32_t block_size; /* [init]; atomic (relaxed) only so stats may read it */
    uint64_t binv;               /* [init] the inverse mod 2^64 of block_size's odd part, and */
    _Atomic uintptr_t owner_tp;  /* [shared] thread pointer of the owning thread, 0 if none: the
                                  * free fast path compares it with its own in one load */
    uint32_t reserved;           /* [init] blocks the pool can hold */
    uint8_t bshift;              /* [init] its power of two: ouro__pool_is_block */
    uint8_t cls;                 /* [init] size class */
    uint8_t mem_is_zero;         /* [init, owner] the pool's memory was zero when claimed (fresh
                                  * from the OS or purged), and the pool has not been carved
                                  * afresh since: then a block on `free` with the fresh cookie
                                  * was never handed out, and is zero but for its link word */
    uint8_t span;                /* [init] slots covered */
    uint8_t slot;                /* [arena] index of the first slot in the arena */
    uint8_t kind;                /* [init] OURO_KIND_*: which kind of heap it serves */
    uint32_t nonce;              /* [init] debug mode only: a number no earlier pool set up in
                                  * this memory had, mixed into the mark of debug-freed blocks
                                  * (debug.c), so a stale mark of an earlier pool never counts */

    /* line 1: the owner's, written by its every malloc and free */
    ouro_block_t *free __attribute__((aligned(64))); /* [owner] blocks ready to hand out (the
                                  * pointer itself is plain; the links in the blocks are encoded) */
    _Atomic uint32_t used;       /* [owner] blocks handed out and not taken back, | OURO_POOL_FULL
                                  * while on the full list (so free tests both with one branch).
                                  * Only the owner writes it (relaxed load and store, no RMW);
                                  * stats read it relaxed. */
    uint32_t capacity;           /* [owner] blocks carved so far (lazily, a page at a time) */
    struct ouro_pool_s *next, *prev;     /* [owner] in the heap's avail or full list of this class */
    uintptr_t key;               /* [owner] free-list links are stored as link ^ key: 0 in the
                                  * default mode (plain links, the XOR costs no branch), random
                                  * and never 0 in hardened mode, so key != 0 means hardened */
    uintptr_t head_lo;           /* [owner] = start, and head_len = carved bytes / 16: the bounds that */
    uint64_t head_len;           /* ouro__pool_head_ok checks the head of `free` against, kept
                                  * here so that malloc reads one line of the pool */

    /* line 2: written by other threads */
    _Atomic uintptr_t remote __attribute__((aligned(64))); /* [shared] blocks freed by other
                                  * threads (a stack linked through word 0, plainly): the last
                                  * one, the count, NOTIFY (OURO_REMOTE_*; pool.c) */
    _Atomic(struct ouro_heap_s *) owner; /* [shared] the owning heap, or NULL when abandoned/free:
                                  * read by the freer that notifies, next to the word it just
                                  * wrote; written only when the pool changes hands */
    struct cds_lfs_node anode;   /* link in the abandoned stack of its class */
} ouro_pool_t;

_Static_assert(offsetof(ouro_pool_t, free) == 64 && offsetof(ouro_pool_t, remote) == 128 &&
                   offsetof(ouro_pool_t, head_len) + sizeof(uint64_t) <= 128,
               "pool header: read-mostly, owner and shared fields on three cache lines");



/* ---- arenas ---- */
typedef struct ouro_arena_s {
    _Atomic uint64_t used;       /* [shared] bit i: slot i claimed (bit 0, the header, always) */
    _Atomic uint64_t dirty;      /* [shared] bit i: slot i may hold non-zero pages (touched, not purged) */
    _Atomic uint64_t free_at[OURO_SLOTS]; /* [shared] ms when slot i was freed, while dirty and free;
                                  * when it was purged, while clean (0: never used) */
    struct ouro_arena_s *_Atomic next; /* [shared] next arena of the node (append-only list) */
    int node;                    /* NUMA node [init] */
    uint32_t guard;              /* [init] bytes at the end of the unit made inaccessible
                                  * (PROT_NONE): a page in hardened mode, else 0.  The pool
                                  * covering the last slot holds that much less, and purging
                                  * leaves the guard alone. */
    _Atomic(ouro_pool_t *) slot_pool[OURO_SLOTS]; /* [shared] pool covering slot i, or
                                  * &ouro__no_pool (ouro__pool_of says NULL) */
    ouro_pool_t pools[OURO_SLOTS];                /* header of the pool starting at slot i */
} ouro_arena_t;

_Static_assert(sizeof(ouro_arena_t) <= OURO_SLOT_SIZE, "arena header fits slot 0");

/* ---- large blocks ---- */
#define OURO_LARGE_MAGIC 0x6f75726f4c524745ull   /* "ouroLRGE" */
typedef struct ouro_large_s {
    uint64_t magic;
    void *user;          /* the pointer handed out */
    void *map_base;      /* the mapping */
    size_t map_size;
    size_t usable;       /* bytes usable at `user` (to the end of the mapping) */
    size_t size;         /* bytes last requested */
    size_t resident;     /* bytes from map_base that may be backed by RAM: the most any block
                          * in this mapping reached, page-rounded (the cache counts them) */
    size_t dbg_size;     /* debug mode: bytes the user requested (size holds the guard too) */
    const void *dbg_site;/* debug mode: return address of the allocating call */
    struct ouro_large_s *next, *prev; /* [large lock] the list of live large blocks (heap walks) */
    void *trace_site;    /* trace.c: the call-site record of a traced block, else NULL */
    size_t trace_size;   /* trace.c: bytes requested, as counted at the site */
    uint64_t trace_weight; /* trace.c: blocks the sample stands for (16.16 fixed point) */
} ouro_large_t;

/* ---- thread heaps ---- */
/* Batched remote frees (pool.c): blocks a thread freed to one pool it does
 * not own, waiting to be pushed on the pool's remote stack together. */
#define OURO_RC_WAYS 8      /* pools a thread gathers for at once (direct-mapped) */
#define OURO_RC_BATCH 16    /* blocks pushed with one CAS, at most ... */
#define OURO_RC_BYTES 4096  /* ... and fewer than this many bytes of them */
typedef struct ouro_rc_way_s {
    ouro_pool_t *pool;          /* NULL when the way is empty (then the rest is stale) */
    ouro_block_t *head, *tail;  /* linked through word 0; tail's link is set at the push */
    uint32_t n;
} ouro_rc_way_t;

typedef struct ouro_heap_s {
    ouro_pool_t *cur[OURO_NCLASSES];   /* [owner] pool to allocate from (ouro__empty_pool if none) */
    /* [owner] for requests up to OURO_DIRECT_MAX bytes, indexed by
     * (size + 15) / 16: cur[] of that size's class (mimalloc's direct
     * pages), so malloc's inline path needs no class computation */
    ouro_pool_t *direct[OURO_DIRECT_MAX / 16 + 1];
    ouro_pool_t *avail[OURO_NCLASSES]; /* [owner] pools that may have free blocks (cur among them) */
    ouro_pool_t *avail_last[OURO_NCLASSES]; /* [owner] the last pool of avail[] */
    ouro_pool_t *full[OURO_NCLASSES];  /* [owner] pools found with nothing to hand out */
    int node;                          /* [owner] NUMA node, -1 until known */
    int kind;                          /* [init] OURO_KIND_* */
    bool alive;                        /* [registry lock] in use by a thread */
    pthread_t thread;                  /* [init] */
    uintptr_t tid;                     /* [init] the thread's thread pointer (pool->owner_tp) */
    struct ouro_heap_s *reg_next;      /* [registry lock] all heaps ever made */
    struct ouro_heap_s *free_next;     /* [registry lock] heaps free for reuse */
    struct ouro_heap_s **tls_slot;     /* [registry lock] plain heaps: the thread's ouro__heap, which
                                        * the tracer may point at the sentinel (trace.c) */
    /* per-thread statistics, counted on slow paths only: [owner] writes
     * (relaxed load and store, ouro__heap_stat_add), stats read relaxed */
    _Atomic size_t st_slow;            /* allocations that took the slow path */
    _Atomic size_t st_claimed;         /* pools claimed fresh from the arena layer */
    _Atomic size_t st_adopted;         /* pools of exited threads adopted */
    _Atomic size_t st_released;        /* empty pools given back to the arena layer */
    _Atomic size_t st_remote;          /* blocks other threads freed to its pools, taken back */
    /* blocks other threads freed to pools of this heap that sat on its full
     * list (pool.c): a stack linked through word 0, each link ^ dkey.  On
     * a line of its own: pushed by other threads, taken by the owner on
     * its slow path.  May hold late blocks after the heap's thread exited
     * (sweep_abandoned and the heap's next thread pass them on). */
    _Atomic(ouro_block_t *) delayed __attribute__((aligned(64))); /* [shared] */
    uintptr_t dkey;                    /* [init] once, when the heap is first made: 0 in the
                                        * default mode, random in hardened mode (so a write after
                                        * free cannot forge a link it does not know the key of) */
    /* [owner] plain heaps only: the blocks its thread freed to other threads'
     * pools, not yet pushed (pool.c); in the heap rather than in TLS so that
     * abandoning the heap pushes them, in a fork child too */
    ouro_rc_way_t rcache[OURO_RC_WAYS];
} ouro_heap_t;

/* A live heap as the registry knows it (ouro__heap_list). */
typedef struct ouro_heap_ref_s {
    ouro_heap_t *heap;
    uintptr_t tid; /* its thread's thread pointer, (uintptr_t)pthread_self() */
    int kind;
} ouro_heap_ref_t;

/* Count `n` on a heap statistic: only the owner writes it (no RMW needed);
 * relaxed, as readers only sum a snapshot. */
static inline void ouro__heap_stat_add(_Atomic size_t *c, size_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* ---- globals ---- */
extern _Atomic uint8_t ouro__unit_map[OURO_MAP_ENTRIES] ouro_hidden;
/* What every free reads before it reaches the pool, on one line of its own
 * (init.c) that is written at start-up and when the reservation grows. */
typedef struct __attribute__((aligned(64))) ouro_hot_s {
    /* Arenas mapped in the address space reserved for them when the first
     * one was (OURO_OPTION_ARENA_RESERVE; arena.c) lie in [lo, lo + span):
     * span grows by a unit as each is mapped there, in address order. */
    _Atomic uintptr_t arenas_lo, arenas_span;
    uintptr_t key; /* random and odd, set once at start-up: a free block's cookie is its address ^ key */
} ouro_hot_t;
extern ouro_hot_t ouro__hot ouro_hidden;
extern ouro_pool_t ouro__empty_pool ouro_hidden;
/* What a slot no pool covers points to (arena.c): all zero, so that no
 * address is a block of it (ouro__pool_is_block) and free's fast path
 * needs no test for a missing pool. */
extern ouro_pool_t ouro__no_pool ouro_hidden;
extern ouro_heap_t ouro__empty_heap ouro_hidden;  /* sentinel: no thread heap yet (plain) */
extern ouro_heap_t ouro__empty_oheap ouro_hidden; /* sentinel: no thread heap yet (objects) */
extern ouro_heap_t ouro__empty_gheap ouro_hidden; /* sentinel: no thread heap yet (containers) */
extern __thread ouro_heap_t *ouro__heap ouro_hidden __attribute__((tls_model("initial-exec")));
extern __thread ouro_heap_t *ouro__oheap ouro_hidden __attribute__((tls_model("initial-exec")));
extern __thread ouro_heap_t *ouro__gheap ouro_hidden __attribute__((tls_model("initial-exec")));
/* The thread's plain heap.  ouro__heap, the front pointer malloc's inline
 * paths read, is the same heap, or the sentinel: in debug mode always (every
 * inline allocation path misses and reaches a slow path that hands the
 * request to debug.c, which allocates from this heap), and while tracing
 * (trace.c, same mechanism).  Only the owner writes ouro__dheap; another
 * thread may store the sentinel into ouro__heap (ouro__heap_route_all), so
 * every access to ouro__heap is atomic (relaxed for the owner's loads). */
extern __thread ouro_heap_t *ouro__dheap ouro_hidden __attribute__((tls_model("initial-exec")));

/* The front pointer, for malloc's inline paths: one plain load on x86-64. */
static inline ouro_heap_t *ouro__heap_front(void)
{
    return __atomic_load_n(&ouro__heap, __ATOMIC_RELAXED);
}

/* counters kept by the arena layer, relaxed atomics: only summed for stats */
typedef struct ouro_counters_s {
    _Atomic size_t reserved, arenas, large_count, large_bytes, large_mapped, large_cached, purges,
        purged_bytes, threads, abandoned;
} ouro_counters_t;
extern ouro_counters_t ouro__counters ouro_hidden;

/* ---- options (options.c) ---- */
extern long ouro__options[OURO_OPTION_COUNT_] ouro_hidden;
void ouro__options_init(void) ouro_hidden;
void ouro__warn(const char *fmt, ...) ouro_hidden __attribute__((format(printf, 1, 2)));

/* Debug mode (OURO_DEBUG): fixed once the options are read at start. */
static inline bool ouro__debug_on(void)
{
    return ouro__options[OURO_OPTION_DEBUG] != 0;
}

/* Hardened mode (OURO_HARDENED): fixed once the options are read at start. */
static inline bool ouro__hardened_on(void)
{
    return ouro__options[OURO_OPTION_HARDENED] != 0;
}

/* ---- hardened.c: keys, random carving order, corruption reports ---- */
void ouro__hardened_init(uint64_t seed) ouro_hidden;
uint64_t ouro__random(void) ouro_hidden;
uintptr_t ouro__pool_new_key(const ouro_pool_t *pool) ouro_hidden;
void ouro__shuffle_u16(uint16_t *v, uint32_t n) ouro_hidden;
size_t ouro__guard_size(void) ouro_hidden;
_Noreturn void ouro__report_corrupt_link(const ouro_pool_t *pool, const void *link, const char *where)
    ouro_hidden;

/* ---- init and errors (init.c) ---- */
void ouro__init(void) ouro_hidden;
_Noreturn void ouro__fatal(const char *fmt, ...) ouro_hidden __attribute__((format(printf, 1, 2)));
_Noreturn void ouro__assert_fail(const char *cond, const char *file, int line) ouro_hidden;
uint64_t ouro__now_ms(void) ouro_hidden;
int ouro__hw_cores(void) ouro_hidden;

/* ---- os.c: the platform boundary ---- */
void *ouro__os_map(size_t size) ouro_hidden;
void *ouro__os_map_aligned(size_t size, size_t align) ouro_hidden;
void *ouro__os_reserve(size_t size, size_t align) ouro_hidden;
bool ouro__os_commit(void *p, size_t size) ouro_hidden;
bool ouro__os_decommit(void *p, size_t size) ouro_hidden;
void ouro__os_unmap(void *p, size_t size) ouro_hidden;
void ouro__os_purge(void *p, size_t size) ouro_hidden;
bool ouro__os_guard(void *p, size_t size) ouro_hidden;
size_t ouro__os_page_size(void) ouro_hidden;

/* ---- arena.c: the shared arena layer ---- */
ouro_pool_t *ouro__arena_claim_pool(int node, unsigned span) ouro_hidden;
void ouro__arena_release_pool(ouro_pool_t *pool) ouro_hidden;
void ouro__arena_purge(bool force) ouro_hidden;
void ouro__arena_fork_prepare(void) ouro_hidden;
void ouro__arena_fork_parent(void) ouro_hidden;
void ouro__arena_fork_child(void) ouro_hidden;
int ouro__arena_current_node(void) ouro_hidden;
bool ouro__arena_numa_read(void) ouro_hidden;
typedef void ouro_pool_visit_fn(ouro_pool_t *pool, void *arg);
void ouro__arena_visit_pools(ouro_pool_visit_fn *fn, void *arg) ouro_hidden;
size_t ouro__arena_dirty_bytes(void) ouro_hidden;
/* The purge delay in force, ms (arena.c: the option's, or longer while
 * purges turn out premature); 0 purges at once, -1 never. */
long ouro__arena_purge_delay(void) ouro_hidden;
size_t ouro__arena_reserve_bytes(void) ouro_hidden;

/* ---- pool.c: one size class's blocks ---- */
void ouro__pool_init(ouro_pool_t *pool, int cls, bool mem_is_zero) ouro_hidden;
bool ouro__pool_extend(ouro_pool_t *pool) ouro_hidden;
uint32_t ouro__pool_collect_remote(ouro_pool_t *pool) ouro_hidden;
bool ouro__pool_arm_notify(ouro_pool_t *pool) ouro_hidden;
/* Block `b` of `pool` freed by a thread that does not own it (free's fast
 * path checked it; `key` is ouro__hot.key): its cookie set, it is gathered in
 * the thread's plain heap and pushed on the pool's remote stack in batches
 * (pool.c).  ouro__pool_flush_remote pushes what `heap` holds: its thread
 * calls it, or whoever abandons the heap of a dead thread. */
void ouro__pool_free_remote(ouro_pool_t *pool, ouro_block_t *b, uintptr_t key) ouro_hidden;
void ouro__pool_flush_remote(ouro_heap_t *heap) ouro_hidden;
/* The calling thread's: after it frees blocks that others wait for (a
 * collector phase, a batch of deferred frees, ouro_collect, exit). */
static inline void ouro__pool_flush_remote_mine(void)
{
    if (ouro__dheap != &ouro__empty_heap)
        ouro__pool_flush_remote(ouro__dheap);
}
void ouro__pool_notify(ouro_pool_t *pool, ouro_block_t *b) ouro_hidden;
unsigned ouro__class_span(int cls) ouro_hidden;
size_t ouro__class_size(int cls) ouro_hidden;
_Noreturn void ouro__report_double_free(const void *p, const ouro_pool_t *pool) ouro_hidden;
_Noreturn void ouro__report_invalid(const char *fn, const void *p) ouro_hidden;

/* ---- heap.c: per-thread pool caches ---- */
void *ouro__heap_alloc_slow(ouro_heap_t *heap, int cls, bool *zero) ouro_hidden;
void ouro__heap_set_owner(ouro_pool_t *pool, ouro_heap_t *heap) ouro_hidden;
void ouro__heap_set_cur(ouro_heap_t *heap, int cls, ouro_pool_t *pool) ouro_hidden;
void ouro__heap_free_slow(ouro_heap_t *heap, ouro_pool_t *pool) ouro_hidden;
void ouro__heap_push_delayed(ouro_heap_t *heap, ouro_block_t *b) ouro_hidden;
void ouro__heap_collect(bool release_empty) ouro_hidden;
/* Called in an exiting thread before its heap of `kind` is abandoned. */
void ouro__heap_set_exit_hook(int kind, void (*fn)(ouro_heap_t *heap)) ouro_hidden;
typedef void ouro_block_visit_fn(void *block, ouro_pool_t *pool, void *arg);
void ouro__heap_visit_live(ouro_heap_t *heap, ouro_block_visit_fn *fn, void *arg) ouro_hidden;
ouro_heap_t *ouro__heap_find(uintptr_t tid, int kind) ouro_hidden;
void ouro__heap_global_init(void) ouro_hidden;
void ouro__heap_fork_prepare(void) ouro_hidden;
void ouro__heap_fork_parent(void) ouro_hidden;
void ouro__heap_fork_child_unlock(void) ouro_hidden;
void ouro__heap_fork_child(void) ouro_hidden;
size_t ouro__heap_count(void) ouro_hidden;
void ouro__heap_route_all(void) ouro_hidden;
/* Copy up to `cap` live heaps into `out` (under the registry lock); returns how many there are. */
size_t ouro__heap_list(ouro_heap_ref_t *out, size_t cap) ouro_hidden;

/* ---- large.c: blocks straight from the OS ---- */
void *ouro__large_alloc(size_t size, size_t align, bool *zero) ouro_hidden;
void ouro__large_free(ouro_large_t *l) ouro_hidden;
void *ouro__large_realloc(ouro_large_t *l, size_t size) ouro_hidden;
ouro_large_t *ouro__large_find(const void *p, int kind) ouro_hidden;
/* Call fn on every live large block, holding the large lock: fn must not
 * allocate or free large blocks. */
void ouro__large_visit(void (*fn)(ouro_large_t *l, void *arg), void *arg) ouro_hidden;
/* Unmap the cached freed mappings (large.c) that waited longer than the
 * purge delay, or all of them if `force`. */
void ouro__large_trim(bool force) ouro_hidden;
size_t ouro__large_cached(void) ouro_hidden; /* freed mappings in the cache */
void ouro__large_fork_prepare(void) ouro_hidden;
void ouro__large_fork_parent(void) ouro_hidden; /* also the child's: the child is the forking thread */

/* ---- debug.c: debug mode's guarded blocks and misuse reports ----
 * Every plain allocation and free of a debug-mode process goes through
 * these (alloc.c routes them); `site` is the return address of the public
 * call, `fn` its name for reports. */
void *ouro__debug_alloc(size_t size, size_t align, bool zero, const void *site) ouro_hidden;
void ouro__debug_free(void *p, const char *fn) ouro_hidden;
void *ouro__debug_realloc(void *p, size_t size, const void *site) ouro_hidden;
size_t ouro__debug_usable_size(const void *p) ouro_hidden;
int ouro__debug_owns(const void *p) ouro_hidden;
/* The user pointer and size of the live debug block at `block` (block size
 * `bs`), for heap walks; false if its header is not (yet) sane. */
bool ouro__debug_block_user(uint8_t *block, size_t bs, void **user, size_t *size) ouro_hidden;
_Noreturn void ouro__report_decref_below_zero(const ouro_object_t *o) ouro_hidden;
const char *ouro__site_str(const void *site, char *buf, size_t n) ouro_hidden;

/* ---- trace.c: allocation tracing ----
 * alloc.c routes to these only from paths that are slow already: the
 * sentinel's slow path (a traced thread's every small allocation, and each
 * thread's first), large allocations, and frees, reallocs and sizes of
 * pointers that are not the start of a block. */
extern _Atomic int ouro__tracing ouro_hidden; /* frames recorded while tracing, 0 when off */
static inline bool ouro__trace_on(void)
{
    /* relaxed: a thread that sees the change late traces (or not) a little
     * longer; ouro_trace_start's nudge makes every thread look soon */
    return atomic_load_explicit(&ouro__tracing, memory_order_relaxed) != 0;
}
void ouro__trace_init(void) ouro_hidden;
void ouro__trace_at_exit(void) ouro_hidden;
void *ouro__trace_alloc(int cls, size_t size, size_t align, bool *zero, const void *site) ouro_hidden;
void *ouro__trace_large(size_t size, size_t align, bool *zero, const void *site) ouro_hidden;
bool ouro__trace_free(void *p) ouro_hidden;                 /* false: not a traced block */
void ouro__trace_internal_begin(void) ouro_hidden; /* allocations until _end are untraced (nestable) */
void ouro__trace_internal_end(void) ouro_hidden;
void ouro__trace_forget_large(ouro_large_t *l) ouro_hidden; /* before a traced large block is freed */
bool ouro__trace_usable(const void *p, size_t *out) ouro_hidden;
bool ouro__trace_realloc(void *p, size_t size, const void *site, void **out) ouro_hidden;
/* The user pointer and usable size of the traced block at `block`, for heap walks. */
bool ouro__trace_block_user(uint8_t *block, size_t bs, void **user, size_t *size) ouro_hidden;
void ouro__trace_fork_prepare(void) ouro_hidden;
void ouro__trace_fork_parent(void) ouro_hidden; /* also the child's */
/* Objects (ouro_new), whose records trace.c keeps in a table by address:
 * ouro__trace_object records the object at `o` (not yet published) if it
 * is to be traced, and says whether it did; the object layer then marks
 * the object (GC_TRACED) and, when its memory is freed, calls
 * ouro__trace_object_forget.  ouro__trace_objects: records in the table. */
bool ouro__trace_object(const void *o, size_t size, const void *site) ouro_hidden;
void ouro__trace_object_forget(const void *o) ouro_hidden;
extern _Atomic size_t ouro__trace_objects ouro_hidden;

/* ------------------------------------------------------------------ */
/* fast paths                                                           */
/* ------------------------------------------------------------------ */

/* Size class of a request of at most OURO_LARGE_MAX bytes. */
static inline int ouro__size_class(size_t n)
{
    if (likely(n <= OURO_SMALL_MAX))
        return (int)((n + 15) >> 4);
    /* four classes per doubling: for n in (2^b, 2^(b+1)], steps of 2^(b-2) */
    unsigned b = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
    unsigned sub = (unsigned)((n - 1) >> (b - 2)) & 3u;
    return (int)(33u + (b - 9u) * 4u + sub);
}

/* The unit kind of an address; any value is safe to pass. */
static inline int ouro__unit_kind(uintptr_t u)
{
    if (unlikely(u >> OURO_USER_BITS))
        return OURO_UNIT_NONE;
    /* acquire: pairs with the release store of an arena's entry (arena.c),
     * so ARENA comes with the header set up, even for a garbage pointer
     * read while the arena is being made (a plain load on x86-64).  A
     * pointer ouro handed out came through some synchronisation with the
     * allocating thread, which set the entry before the pointer existed;
     * for others any value read is fine, as units are only ever mapped. */
    return atomic_load_explicit(&ouro__unit_map[u >> OURO_UNIT_SHIFT], memory_order_acquire);
}

static inline ouro_arena_t *ouro__arena_of(uintptr_t u)
{
    return (ouro_arena_t *)(u & ~(uintptr_t)OURO_UNIT_MASK);
}

/* Whether `u` lies in an arena mapped in the reserved range: one compare,
 * no load from the unit map (free's fast path).  Arenas mapped elsewhere
 * (the range used up, or none reserved) answer false: ouro__unit_kind
 * knows them.  Acquire on span: pairs with arena.c's release store, so a
 * span that covers an arena comes with the lo it was measured from (lo is
 * stored once, before the first span); a stale span only sends an arena's
 * block to the unit map.  Both compile to plain loads on x86-64. */
static inline bool ouro__in_reserved_arena(uintptr_t u)
{
    uintptr_t span = atomic_load_explicit(&ouro__hot.arenas_span, memory_order_acquire);
    return u - atomic_load_explicit(&ouro__hot.arenas_lo, memory_order_relaxed) < span;
}

/* The pool covering `u` in an arena unit, or &ouro__no_pool if its slot
 * is free (or the header's). */
static inline ouro_pool_t *ouro__pool_at(uintptr_t u)
{
    /* &arena->slot_pool[slot], with the slot's byte offset taken from `u`
     * in one shift and mask, and slot_pool's offset folded into the load
     * (written as &a->slot_pool[i], gcc 12 adds it to the index apart) */
    char *slots = (char *)ouro__arena_of(u)->slot_pool;
    size_t off = (u >> (OURO_SLOT_SHIFT - 3)) & ((OURO_SLOTS - 1) * sizeof(ouro_pool_t *));
    /* acquire pairs with the release store in arena claim: the pool's [init]
     * fields are visible before the pool is */
    return atomic_load_explicit((_Atomic(ouro_pool_t *) *)(slots + off), memory_order_acquire);
}

/* The pool covering `u` in an arena unit, or NULL if its slot is free. */
static inline ouro_pool_t *ouro__pool_of(uintptr_t u)
{
    ouro_pool_t *p = ouro__pool_at(u);
    return p == &ouro__no_pool ? NULL : p;
}

/* Whether `u` is the start of a carved block of `pool`, in one compare.
 * With block size d = d0 * 2^k (d0 odd) and binv = d0^-1 mod 2^64, the
 * offset off = u - start maps to ror(off * binv, k): for off = q * d that
 * is q itself (q * 2^k * d0 * binv, no wrap as off < 2^64), the block's
 * index, which must be below the carved count; for any other 64-bit off it
 * is at least 2^64 / d > 2^46, far above any count (a multiple of 2^k but
 * not of d0 lands above (2^(64-k) - 1) / d0, the rest keep low bits that
 * the rotation moves to the top).  An address below `start` is such a huge
 * offset.  This is the divisibility test compilers emit for constant
 * divisors (Hacker's Delight 10-17), with the bound folded in. */
static inline bool ouro__pool_is_block(const ouro_pool_t *pool, uintptr_t u)
{
    uint64_t t = (uint64_t)(u - (uintptr_t)pool->start) * pool->binv;
    unsigned k = pool->bshift;
    /* relaxed: a valid block was carved before its pointer reached us */
    return ((t >> k) | (t << ((64 - k) & 63))) < atomic_load_explicit(&pool->carved, memory_order_relaxed);
}

/* Whether `u` is a carved block of `pool` that carries the free cookie: the
 * hardened checks of a link read from a block that waits off the owner's
 * free list (heap.c's delayed stack, pool.c's batches).  Relaxed atomic
 * load of the cookie: another thread may be freeing the block (ouro__pool_free_remote
 * stores it atomically); only the value matters. */
static inline bool ouro__pool_is_free_block(const ouro_pool_t *pool, uintptr_t u)
{
    return ouro__pool_is_block(pool, u) &&
           __atomic_load_n(&((const ouro_block_t *)u)->cookie, __ATOMIC_RELAXED) == (u ^ ouro__hot.key);
}

/* Bytes carved so far: [start, start + this) holds the carved blocks.
 * Relaxed, as in ouro__pool_is_block. */
static inline uint64_t ouro__pool_limit(const ouro_pool_t *pool)
{
    return (uint64_t)atomic_load_explicit(&pool->carved, memory_order_relaxed) *
           atomic_load_explicit(&pool->block_size, memory_order_relaxed);
}

/* Add `d` to the pool's used count and return the new value (with the FULL
 * bit).  Only the owner writes `used`: a relaxed load and store, no RMW, is
 * exact; relaxed because stats readers only need some recent value. */
static inline uint32_t ouro__pool_used_add(ouro_pool_t *pool, int32_t d)
{
    uint32_t u = atomic_load_explicit(&pool->used, memory_order_relaxed) + (uint32_t)d;
    atomic_store_explicit(&pool->used, u, memory_order_relaxed);
    return u;
}

/* Steps of one, for the owner's mallocs and frees, fast and slow paths
 * alike (one test of "now empty or on the full list").  Only the owner
 * writes `used`, so one unlocked x86 `add`/`sub` on memory is exactly the
 * relaxed load and store
 * of ouro__pool_used_add (its load and its store are each single-copy
 * atomic, and no other thread writes in between), in one instruction where
 * the compiler emits three for the atomic pair (it never fuses atomics).
 * ThreadSanitizer cannot see into asm, so its builds keep the pair. */
static inline void ouro__pool_used_inc(ouro_pool_t *pool)
{
#if defined(__x86_64__) && !defined(OURO_TSAN)
    __asm__("addl $1, %0" : "+m"(pool->used) : : "cc");
#else
    ouro__pool_used_add(pool, 1);
#endif
}

/* Take one from `used`; true if the pool is now empty or on the full list
 * (the new value is <= 0 as a signed number, FULL being the sign bit). */
static inline bool ouro__pool_used_dec_ends(ouro_pool_t *pool)
{
#if defined(__x86_64__) && !defined(OURO_TSAN)
    bool le;
    /* "le" after sub: the old value, as a signed number, is <= 1.  It
     * differs from testing (int32_t)(old - 1) <= 0 only for old ==
     * FULL | 0, which a free of a live block never meets (its block is
     * counted), and then it takes the slow path */
    __asm__("subl $1, %0" : "+m"(pool->used), "=@ccle"(le));
    return le;
#else
    return (int32_t)ouro__pool_used_add(pool, -1) <= 0;
#endif
}

/* Blocks handed out and not taken back. */
static inline uint32_t ouro__pool_used(const ouro_pool_t *pool)
{
    return atomic_load_explicit(&pool->used, memory_order_relaxed) & ~OURO_POOL_FULL;
}

static inline bool ouro__pool_in_full(const ouro_pool_t *pool)
{
    return (atomic_load_explicit(&pool->used, memory_order_relaxed) & OURO_POOL_FULL) != 0;
}

/* The owner flips the FULL bit (relaxed: as ouro__pool_used_add). */
static inline void ouro__pool_set_full(ouro_pool_t *pool, bool full)
{
    uint32_t u = atomic_load_explicit(&pool->used, memory_order_relaxed);
    u = full ? (u | OURO_POOL_FULL) : (u & ~OURO_POOL_FULL);
    atomic_store_explicit(&pool->used, u, memory_order_relaxed);
}

/* The calling thread's thread pointer: a per-thread word, one instruction. */
static inline uintptr_t ouro__thread_id(void)
{
    return (uintptr_t)__builtin_thread_pointer();
}

/* A block carved but never handed out, in a pool whose memory is zero,
 * carries the fresh cookie (pool.c's extend writes it): address ^ key ^
 * this salt.  It tells calloc that the block is still zero, which a freed
 * block's cookie cannot.  Heap walks skip blocks with either cookie.
 * Allocation clears it as it clears the free cookie.  In any other pool
 * (its memory was not zero, or it was carved afresh), extend writes the
 * free cookie. */
#define OURO_FRESH_SALT 0x6672657368626c6bull /* "freshblk" */

/* Whether the carved block `b` is handed out: it carries neither the free
 * cookie nor the fresh one.  Relaxed atomic load: heap walks read blocks
 * other threads may be freeing (ouro__pool_free_remote stores the cookie
 * atomically). */
static inline bool ouro__block_is_live(const ouro_block_t *b)
{
    uintptr_t c = __atomic_load_n(&b->cookie, __ATOMIC_RELAXED), free_c = (uintptr_t)b ^ ouro__hot.key;
    return c != free_c && c != (free_c ^ OURO_FRESH_SALT);
}

/* ---- free lists ----
 * A free block's link (word 0) holds the next free block XORed with its
 * pool's key: in the default mode the key is 0 and the XOR leaves the link
 * plain, so both modes run the same instructions and the fast paths gain no
 * branch.  (A pool's remote stack links blocks plainly while they wait
 * there, its freers not knowing the key: pool.c checks and encodes them
 * when the owner takes them back.) */
static inline ouro_block_t *ouro__link_decode(const ouro_pool_t *pool, const ouro_block_t *b)
{
    return (ouro_block_t *)((uintptr_t)b->node.next ^ pool->key);
}

static inline void ouro__link_encode(const ouro_pool_t *pool, ouro_block_t *b, const ouro_block_t *next)
{
    b->node.next = (struct cds_lfs_node *)((uintptr_t)next ^ pool->key);
}

/* Whether `b`, the head of `pool`'s free list, may be handed out: it lies in
 * the carved part of the pool, [start, start + limit), and is 16-byte
 * aligned.  One subtraction, one rotation and one compare: rotating the
 * offset right by 4 moves misaligned low bits to the top, where they make it
 * too large, as an offset below `start` is.  NULL fails (start is never 0),
 * and so does every pointer of the empty sentinel pool (head_len 0), so this
 * replaces the fast paths' test for NULL at the cost of two loads from the
 * line `free` is on.  A link that a write after free or an overflow changed
 * fails with all but a tiny chance in hardened mode (it decodes with a
 * random key to a random address), and in the default mode unless it was
 * changed into another block's address; the slow path then reports it
 * (ouro__heap_alloc_slow).  The slow paths check the exact block start too
 * (ouro__pool_is_block). */
static inline bool ouro__pool_head_ok(const ouro_pool_t *pool, const ouro_block_t *b)
{
    uint64_t off = (uint64_t)((uintptr_t)b - pool->head_lo);
    return ((off >> 4) | (off << 60)) < pool->head_len;
}

/* Whether block `b`, on the free list of `pool`, is zero but for its link
 * and cookie words: carved from zero memory and never handed out since (it
 * still carries the fresh cookie).  `b` is checked first, as callers pass
 * the head of the free list unchecked. */
static inline bool ouro__block_is_fresh(const ouro_pool_t *pool, const ouro_block_t *b)
{
    return pool->mem_is_zero && ouro__pool_head_ok(pool, b) &&
           b->cookie == ((uintptr_t)b ^ ouro__hot.key ^ OURO_FRESH_SALT);
}

/* Pop a block of class `cls`; NULL if the heap's current pool has nothing
 * to hand out (or its head is corrupt: the slow path reports it). */
static inline void *ouro__heap_pop(ouro_heap_t *heap, size_t cls)
{
    ouro_pool_t *pool = heap->cur[cls];
    ouro_block_t *b = pool->free;
    if (unlikely(!ouro__pool_head_ok(pool, b)))
        return NULL;
    pool->free = ouro__link_decode(pool, b);
    b->cookie = 0;
    ouro__pool_used_inc(pool);
    return b;
}

/* Push block `b` (its cookie already set) on the remote stack of `pool`,
 * which another thread owns or nobody does; if the owner asked to be told
 * (NOTIFY), pool.c's notify takes over. */
static inline void ouro__pool_push_remote(ouro_pool_t *pool, ouro_block_t *b)
{
    /* relaxed: the CAS below checks the value we link to */
    uintptr_t old = atomic_load_explicit(&pool->remote, memory_order_relaxed);
    do {
        if (unlikely(old & OURO_REMOTE_NOTIFY)) {
            ouro__pool_notify(pool, b);
            return;
        }
        /* relaxed atomic store (a plain mov): the CAS below publishes it.
         * Atomic because the owner, exiting, may be reading this word at
         * the same time: its walk over live blocks can find the block just
         * before our free and compare-exchange word 0 as an object's tid
         * (brc.c merge_owned), which no link ever equals */
        __atomic_store_n(&b->node.next, (struct cds_lfs_node *)OURO_REMOTE_BLOCK(old), __ATOMIC_RELAXED);
        /* release: the link, the cookie and the block's last contents are
         * visible to the owner's exchange (acquire) that takes the block */
    } while (!atomic_compare_exchange_weak_explicit(
        &pool->remote, &old, (uintptr_t)b + (((old >> OURO_REMOTE_COUNT_SHIFT) + 1) << OURO_REMOTE_COUNT_SHIFT),
        memory_order_release, memory_order_relaxed));
}

#endif /* OURO_INTERNAL_H */
