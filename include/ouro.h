/*
 * ouro.h — the public API of libouro.
 *
 * ouro is a managed heap for multithreaded C programs: a per-thread pool
 * allocator over a shared arena layer (this header), objects with biased
 * reference counts (ouro/object.h) and a concurrent cycle collector
 * (ouro/gc.h), both included here: include this header only.  Every public
 * symbol starts with `ouro_`.
 *
 * Threads need no registration to use the allocator: a thread's pool cache
 * is created on its first allocation and handed to the shared arena layer
 * when the thread exits.
 */
#ifndef OURO_H
#define OURO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OURO_VERSION_MAJOR 0
#define OURO_VERSION_MINOR 1
#define OURO_VERSION_PATCH 0

#if defined(__GNUC__)
#define OURO_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define OURO_ALLOC_SIZE(...) __attribute__((alloc_size(__VA_ARGS__)))
#else
#define OURO_MALLOC_ATTR
#define OURO_ALLOC_SIZE(...)
#endif

/* ------------------------------------------------------------------ */
/* Allocation                                                           */
/* ------------------------------------------------------------------ */

/*
 * Allocate `size` bytes, aligned to 16 bytes.  `size` 0 returns a unique
 * minimal block.  Returns NULL with errno = ENOMEM when memory cannot be
 * had.  Requests up to 512 bytes come from size classes 16 bytes apart;
 * larger ones from geometric classes (four per doubling) up to 128 KiB;
 * above that straight from the OS.
 */
OURO_MALLOC_ATTR OURO_ALLOC_SIZE(1) void *ouro_malloc(size_t size);

/*
 * Allocate an array of `n` elements of `size` bytes, zeroed.  Returns NULL
 * with errno = ENOMEM if n * size overflows or memory cannot be had.
 * Memory known to be fresh from the OS is not cleared a second time.
 */
OURO_MALLOC_ATTR OURO_ALLOC_SIZE(1, 2) void *ouro_calloc(size_t n, size_t size);

/*
 * Resize the block at `p` to `size` bytes, keeping its contents up to the
 * smaller of the two sizes.  Grows or shrinks in place when the block's
 * size class (or, for large blocks, its mapping) has room.  `p` NULL acts
 * as ouro_malloc(size); `size` 0 frees `p` and returns NULL (as glibc).
 * On failure returns NULL with errno = ENOMEM and leaves `p` untouched.
 * Aborts with a message if `p` was not handed out by ouro.
 */
OURO_ALLOC_SIZE(2) void *ouro_realloc(void *p, size_t size);

/*
 * Free the block at `p`.  NULL is ignored.  Any thread may free any block;
 * a block freed by a thread other than its pool's owner returns without a
 * lock.  A pointer ouro never handed out, and a block that is already free,
 * are reported on stderr with the address and abort the process.
 */
void ouro_free(void *p);

/*
 * Free `p`, which the caller promises was allocated with `size` bytes
 * (C23 free_sized).  A size larger than the block can hold is reported and
 * aborts: it means the caller's bookkeeping is wrong.
 */
void ouro_free_sized(void *p, size_t size);

/*
 * Allocate `size` bytes aligned to `alignment`, which must be a power of
 * two (any size, as C17 allows).  Returns NULL with errno = EINVAL for a
 * bad alignment and ENOMEM when memory cannot be had or size overflows.
 */
OURO_MALLOC_ATTR OURO_ALLOC_SIZE(2) void *ouro_aligned_alloc(size_t alignment, size_t size);

/*
 * The number of bytes usable at `p` (at least what was asked for);
 * 0 for NULL.  Aborts with a message if `p` was not handed out by ouro.
 */
size_t ouro_usable_size(const void *p);

/*
 * Whether `p` points to the start of a block ouro handed out (or to an object
 * ouro_new made) and has not
 * seen freed.  Never crashes, whatever `p` is; for diagnostics and tests.
 */
int ouro_owns(const void *p);

/* ------------------------------------------------------------------ */
/* Memory return and options                                            */
/* ------------------------------------------------------------------ */

/*
 * Give memory back to the OS now: hand on the blocks this thread freed to
 * other threads' pools and still holds (it gathers up to 15 per pool, less
 * than 4 KiB, for up to 8 pools, and pushes each pool's batch at once;
 * exiting pushes them too), take back blocks other threads freed to this
 * thread's pools and to the pools of exited threads, return the empty ones
 * to the arena layer (this thread's current pools too if `force`), and
 * purge every free pool, and unmap every freed large block's mapping kept
 * for reuse, whose purge delay has passed (all of them if `force` is
 * non-zero).
 */
void ouro_collect(int force);

/* Options, each also settable by environment variable (read once at start). */
typedef enum ouro_option_e {
    /* Milliseconds a free pool keeps its memory before it is purged
     * (returned to the OS with madvise), and a freed large block's mapping
     * waits for the next large block before it is unmapped (at most 16 such
     * mappings; not in debug or hardened mode).  Env: OURO_PURGE_DELAY.  Default 10;
     * 0 purges at once; -1 never purges.  A delay above 0 is where the
     * delay in force starts: it doubles, up to 32 times this, when a purged
     * pool's memory is claimed again within 4 delays of its purge, and
     * halves back after a second without that (ouro_stats_t's
     * purge_delay_ms). */
    OURO_OPTION_PURGE_DELAY = 0,
    /* Print statistics to stderr at exit: 0 no, 1 as text, 2 as JSON.  Env: OURO_SHOW_STATS. */
    OURO_OPTION_SHOW_STATS,
    /* Verbosity of warnings: 0 silent, 1 warnings (default), 2 informational. Env: OURO_VERBOSE. */
    OURO_OPTION_VERBOSE,
    /* Place arenas per NUMA node found with hwloc (1, default) or use one set (0).  Env: OURO_NUMA.
     * Read when the first arena is mapped (usually before main); after
     * that ouro_option_set refuses a change (EPERM). */
    OURO_OPTION_NUMA,
    /* Automatic cycle collections: 1 enabled (default), 0 disabled (as
     * ouro_gc_disable).  Env: OURO_GC, read at start; ouro_option_set and
     * ouro_option_get then act on the collector's setting, as
     * ouro_gc_enable, ouro_gc_disable and ouro_gc_is_enabled do. */
    OURO_OPTION_GC,
    /* The generation-0 threshold (tracked allocations minus deallocations
     * that start a collection); 0 never collects automatically.  Default 700.
     * Env: OURO_GC_THRESHOLD, read at start; ouro_option_set and
     * ouro_option_get then act on the collector's generation-0 threshold
     * (ouro_gc_set_threshold, ouro_gc_get_threshold). */
    OURO_OPTION_GC_THRESHOLD,
    /* Marker threads of a collection: 0 (default) or -1 the core count
     * found with hwloc, less the cores other threads are running on when
     * it starts, else 1..OURO_GC_MAX_MARKERS, as set.  Env: OURO_GC_MARKERS.
     * A collection of fewer than 4096 objects per marker uses fewer
     * (ouro_gc_set_markers). */
    OURO_OPTION_GC_MARKERS,
    /* Debug mode (PYTHONMALLOC=debug for C): 1 on, 0 off.  Env: OURO_DEBUG;
     * default 0, or 1 in a library configured with --enable-debug.  Fixed
     * at start: ouro_option_set refuses it (EPERM).  Every block handed out
     * by the allocation functions then carries a header and guard bytes
     * (0xfd) before and after the bytes requested; fresh memory is filled
     * with 0xcd (ouro_calloc still zeroes), freed memory with 0xdd.  Each
     * misuse below is reported on stderr with the address, the size class
     * and the call site that allocated the block (symbolized with dladdr
     * where it can be), then the process aborts:
     *   - a buffer overflow (or underflow): a guard byte changed, found when
     *     the block is freed or reallocated;
     *   - a write after free: the 0xdd fill of a freed block changed, found
     *     when the block is handed out again;
     *   - a double free, and the free or realloc of a pointer that is not
     *     the start of a live block.
     * Blocks cost 64 bytes more, and every allocation and free takes a slow
     * path that fills and checks whole blocks.  ouro_usable_size returns the
     * size requested.  Objects (ouro_new) keep their normal layout; a decref
     * below zero on an object is reported in every mode. */
    OURO_OPTION_DEBUG,
    /* Hardened mode: 1 on, 0 off.  Env: OURO_HARDENED; default 0, or 1 in a
     * library configured with --enable-hardened.  Fixed at start:
     * ouro_option_set refuses to change it (EPERM), because pools, arenas
     * and large blocks made in one mode keep that mode's layout.  It makes
     * heap corruption harder to exploit, at a small cost (see README.md):
     *   - the links of free lists are stored XORed with a random key of
     *     their pool, so a write after free cannot forge a link to an
     *     address of its choosing; a link that decodes outside its pool's
     *     carved blocks (or that is not 16-byte aligned) is reported on
     *     stderr with the address and the size class, and the process
     *     aborts.  Blocks freed by other threads wait on a lock-free stack
     *     whose links are plain (liburcu's); they are checked to be blocks
     *     of their pool when the owner takes them back, then encoded;
     *   - the blocks of each freshly carved page are handed out in a
     *     random order, not in address order;
     *   - the last page of every arena (4 MiB) and of every large block's
     *     mapping is inaccessible (PROT_NONE), so an overflow running off
     *     its end faults instead of reaching the next mapping.
     * The default mode also checks, at no extra cost, that a pool's next
     * free block lies among its carved blocks; its links are plain. */
    OURO_OPTION_HARDENED,
    /* Allocation tracing: 0 off (default), else on, recording that many
     * frames (1..OURO_TRACE_MAX_FRAMES) per allocation.  Env: OURO_TRACE
     * (read at start).  ouro_option_set starts (ouro_trace_start) or stops
     * tracing. */
    OURO_OPTION_TRACE,
    /* Tracing's sampling: about one allocation traced per this many bytes
     * allocated (mean of an exponential draw, as tcmalloc), the figures
     * then estimated; 0 or 1 (default) traces every allocation.  Env:
     * OURO_TRACE_SAMPLE; read at each sample. */
    OURO_OPTION_TRACE_SAMPLE,
    /* 1: at exit, print to stderr the traced blocks still allocated,
     * grouped by call site, largest first (the leak report).  Set at start
     * without OURO_TRACE it also starts tracing, 16 frames deep.  Env:
     * OURO_TRACE_LEAKS; read at exit. */
    OURO_OPTION_TRACE_LEAKS,
    /* MiB of address space reserved for arenas (4 MiB each) when the first
     * is mapped, usually before main: no memory, only addresses, so that
     * free tells a block of an arena from anything else with one compare.
     * If the kernel refuses it (RLIMIT_AS; valgrind), half as much is
     * tried, down to 256 MiB.  Arenas beyond it, and all of them if it is
     * 0 or refused, are mapped one by one and found through a table, a
     * dependent load more on each free.  Rounded down to whole arenas
     * (so 1 .. 3 reserve nothing).  Default 65536 (64 GiB), 0 ..
     * 16777216.  Env: OURO_ARENA_RESERVE.  Read when the first arena is
     * mapped; after that ouro_option_set refuses a change (EPERM). */
    OURO_OPTION_ARENA_RESERVE,
    OURO_OPTION_COUNT_
} ouro_option_t;

/* The current value of an option. */
long ouro_option_get(ouro_option_t option);

/* Set an option; returns 0, or -1 with errno = EINVAL for an unknown option
 * or an out-of-range value, EPERM for an option fixed at start
 * (OURO_OPTION_DEBUG, OURO_OPTION_HARDENED; OURO_OPTION_NUMA and
 * OURO_OPTION_ARENA_RESERVE once the first arena is mapped) set to another
 * value than its own; the old value is kept. */
int ouro_option_set(ouro_option_t option, long value);

/* ------------------------------------------------------------------ */
/* Statistics                                                           */
/* ------------------------------------------------------------------ */

/* Number of size classes (index 0 .. OURO_NUM_CLASSES-1). */
#define OURO_NUM_CLASSES 65

/* Figures for one size class, summed over all threads. */
typedef struct ouro_class_stats_s {
    size_t block_size;   /* bytes per block in this class */
    size_t pools;        /* pools of this class currently held by threads or abandoned */
    size_t blocks_used;  /* blocks handed out and not yet taken back */
    size_t blocks_total; /* blocks those pools can hold */
} ouro_class_stats_t;

/* A snapshot of the heap.  Fields are consistent enough for monitoring;
 * blocks freed by another thread count as used until their owner takes
 * them back. */
typedef struct ouro_stats_s {
    size_t reserved;       /* address space mapped from the OS (arenas and large blocks) */
    size_t committed;      /* of that, memory that may be backed by RAM (not purged) */
    size_t in_use;         /* bytes in blocks handed out (block sizes; large blocks by usable size) */
    size_t arenas;         /* arenas mapped */
    size_t pools;          /* pools in use (held by a thread or abandoned) */
    size_t large_count;    /* large blocks live */
    size_t large_bytes;    /* their usable bytes */
    size_t purges;         /* purge operations (madvise calls) done */
    size_t purged_bytes;   /* bytes returned to the OS by purging, in all */
    size_t threads;        /* thread heaps alive */
    size_t abandoned_pools;/* pools of exited threads not yet adopted */
    ouro_class_stats_t classes[OURO_NUM_CLASSES];
    size_t arena_reserve;  /* address space reserved for arenas (OURO_OPTION_ARENA_RESERVE), 0 if
                            * none; the arenas mapped in it count in `reserved` */
    long purge_delay_ms;   /* the purge delay in force: OURO_OPTION_PURGE_DELAY's, or up to 32
                            * times longer while purged memory keeps being needed again soon
                            * after its purge (it halves again after a second without that) */
    size_t large_cached;   /* mappings of freed large blocks kept for the next large blocks, until
                            * they have waited the purge delay: their address space counts in
                            * `reserved`, the pages their blocks touched in `committed` */
} ouro_stats_t;

/* Fill `out` with a snapshot of the heap.  Safe to call from any thread at
 * any time; costs a walk over the arenas. */
void ouro_stats_get(ouro_stats_t *out);

/* Print the statistics to `out` (stderr if NULL) as readable text: the
 * allocator's (with each thread's, ouro_stats_threads), the object layer's
 * and the collector's (ouro_gc_get_stats; it waits for a collection in
 * progress). */
void ouro_stats_print(FILE *out);

/* Print the allocator's (with each thread's), the object layer's and the
 * collector's statistics to `out` (stderr if NULL) as one JSON object on
 * one line. */
void ouro_stats_print_json(FILE *out);

/* Figures of one thread's heaps (its plain, object and container heaps
 * together).  Blocks and bytes are derived from its pools, the counters are
 * counted on slow paths only (the fast paths count nothing). */
typedef struct ouro_thread_stats_s {
    uintptr_t thread;      /* (uintptr_t)pthread_self() of the thread; 0 for the entry that sums
                            * the pools of exited threads no thread has adopted yet */
    size_t pools;          /* pools it holds */
    size_t blocks[3];      /* blocks handed out and not taken back, by kind (OURO_BLOCK_PLAIN,
                            * OURO_BLOCK_OBJECT, OURO_BLOCK_CONTAINER); a block another thread
                            * freed counts until this thread takes it back */
    size_t bytes[3];       /* their bytes, by block size */
    size_t slow_allocs;    /* allocations that found the current pool empty (refills, first use) */
    size_t pools_claimed;  /* pools taken fresh from the arena layer */
    size_t pools_adopted;  /* pools of exited threads adopted */
    size_t pools_released; /* empty pools given back to the arena layer */
    size_t remote_frees;   /* blocks other threads freed to its pools that it took back */
} ouro_thread_stats_t;

/* Fill out[0 .. max-1] with the figures of each thread that has a heap, then
 * (if any) one entry with thread 0 for the pools of exited threads; returns
 * the number of entries there are (call with max 0 to size the array).
 * Large blocks belong to no thread: they are in ouro_stats_t only.  Safe
 * from any thread at any time; costs a walk over the arenas.  Returns 0
 * with errno ENOMEM if it had no memory for its work. */
size_t ouro_stats_threads(ouro_thread_stats_t *out, size_t max);

/* The block size of size class `cls`, or 0 if out of range. */
size_t ouro_class_block_size(int cls);

/* ------------------------------------------------------------------ */
/* Heap walk                                                            */
/* ------------------------------------------------------------------ */

/* What a block holds, as ouro_heap_walk reports it. */
enum {
    OURO_BLOCK_PLAIN = 0,     /* from ouro_malloc and the other allocation functions */
    OURO_BLOCK_OBJECT = 1,    /* an object (ouro_new) whose type has no traverse */
    OURO_BLOCK_CONTAINER = 2  /* an object whose type has traverse (the collector's) */
};
#define OURO_BLOCK_LARGE 0x1u  /* a large block: a mapping of its own */
#define OURO_BLOCK_TRACED 0x2u /* it carries a trace record (allocated while tracing: ouro_trace_start) */

/* One live block. */
typedef struct ouro_block_info_s {
    void *ptr;        /* what the allocation call returned: the block, or the object */
    size_t size;      /* ouro_usable_size(ptr), for objects ouro_sizeof(ptr) */
    int kind;         /* OURO_BLOCK_PLAIN, OURO_BLOCK_OBJECT or OURO_BLOCK_CONTAINER */
    unsigned flags;   /* OURO_BLOCK_LARGE, OURO_BLOCK_TRACED */
    uintptr_t owner;  /* the thread whose heap holds the block's pool, as (uintptr_t)pthread_self()
                       * of that thread; 0 for large blocks and for the pools of exited threads
                       * that no thread has adopted yet */
} ouro_block_info_t;

/* Called once per block; a non-zero return stops the walk. */
typedef int ouro_heap_visit_fn(const ouro_block_info_t *block, void *arg);

/*
 * Call visit(block, arg) for each live block: plain blocks, objects and
 * containers, in the pools of every thread and of exited threads, and large
 * blocks (those first).  An object whose count reached zero stays until its
 * memory is reused after a grace period (ouro_barrier() waits for that).
 * Blocks ouro allocates for itself (the object layer's and the collector's
 * bookkeeping) are plain blocks too.  Returns 0 after the last block, the
 * first non-zero value visit returned (the walk stops there), or -1 with
 * errno ENOMEM (no memory to copy the list of large blocks: nothing was
 * visited) or EINVAL (visit NULL).
 *
 * Concurrency.  The walk holds no lock while visit runs and stops no thread.
 *   - When no other thread allocates, frees or exits during the walk, it
 *     visits every live block exactly once, and nothing else.
 *   - While other threads allocate and free, a block live for the whole
 *     walk is still visited exactly once; a block allocated or freed during
 *     the walk may be visited or not.  Another thread may free a block just
 *     after it is reported: visit must not read through the pointer of a
 *     block it does not keep alive itself.  The walk reads a word of every
 *     block that its owner writes without synchronisation, so
 *     ThreadSanitizer reports such concurrent walks as races.
 *   - visit may allocate and free (and walk again): what it allocates or
 *     frees is a change during the walk, as above.
 * In debug mode ptr and size are the user's (guard bytes excluded).
 */
int ouro_heap_walk(ouro_heap_visit_fn *visit, void *arg);

/* Testing: let the next `pass` requests for memory from the OS through, then
 * fail the `fail` after them (ENOMEM), then succeed again.  fail <= 0 turns
 * fault injection off.  For fault tests: every API must then fail cleanly. */
void ouro_test_fail_maps(long pass, long fail);

/* Testing: check the arena layer's books against its bitmaps (each NUMA
 * node's count of free slots still holding memory against those slots).
 * Only meaningful while no other thread allocates, frees or purges.
 * Returns 0 if they agree, else -1 after a warning that gives both. */
int ouro_test_check_arenas(void);

/* The version string, "MAJOR.MINOR.PATCH". */
const char *ouro_version(void);

/* ------------------------------------------------------------------ */
/* Allocation tracing (Python's tracemalloc)                            */
/* ------------------------------------------------------------------ */
/*
 * While tracing, each allocation (ouro_malloc, calloc, realloc,
 * aligned_alloc, the malloc override, and ouro_new) records its call
 * stack, and the bytes still allocated are counted per call site (a
 * distinct stack); an object counts its type's basic_size until its memory
 * is freed, after its grace period (ouro_barrier waits for that).  Every allocation is traced, or a sample
 * (OURO_OPTION_TRACE_SAMPLE: about one per that many bytes allocated; the
 * figures are then estimates).  Off by default; on by environment
 * (OURO_TRACE=frames, OURO_TRACE_LEAKS=1) or by ouro_trace_start.  Off, it
 * costs the fast paths nothing; on, a traced thread's allocations take a
 * slow path, and a traced block costs 32 bytes more and a backtrace()
 * (a traced object: a record in a table of the tracer's, no bytes in its
 * block).
 * Not available in debug mode.  Blocks allocated while not tracing are
 * never counted; blocks traced stay counted until freed, even after
 * ouro_trace_stop (unlike Python's stop, which forgets them: compare two
 * snapshots with ouro_trace_diff to see only what changed).
 */

#define OURO_TRACE_MAX_FRAMES 64

/* Start tracing, recording `frames` (1..OURO_TRACE_MAX_FRAMES) return
 * addresses per allocation, the call site first.  Every thread's next
 * allocation is traced (or sampled), threads already running included.
 * Returns 0, or -1 with errno EINVAL (frames out of range), EPERM (debug
 * mode), ENOMEM.  Starting again while tracing changes the depth. */
int ouro_trace_start(int frames);

/* Stop recording new allocations (each thread's allocations are back on
 * the fast path from its next one on).  Traced blocks stay counted until
 * freed. */
void ouro_trace_stop(void);

/* The frames recorded per allocation while tracing, 0 when not tracing. */
int ouro_trace_is_tracing(void);

/* A snapshot: the live traced bytes and blocks of every call site at one
 * moment (each site's figures read at once; sites are not frozen together
 * while other threads allocate).  Opaque; take and free it with these. */
typedef struct ouro_trace_snapshot_s ouro_trace_snapshot_t;

/* NULL with errno ENOMEM.  Allowed while not tracing (it holds the blocks
 * traced before that are still live). */
ouro_trace_snapshot_t *ouro_trace_snapshot_take(void);
void ouro_trace_snapshot_free(ouro_trace_snapshot_t *snapshot);

/* One call site's figures. */
typedef struct ouro_trace_stat_s {
    size_t size;           /* bytes allocated from here and not freed (estimated when sampling) */
    size_t count;          /* blocks (estimated when sampling) */
    ptrdiff_t size_diff;   /* ouro_trace_diff: size minus the older snapshot's; else 0 */
    ptrdiff_t count_diff;  /* ouro_trace_diff: count minus the older snapshot's; else 0 */
    size_t sampled_size;   /* the traced blocks themselves: equal to size when every allocation is traced */
    size_t sampled_count;
    size_t nframes;        /* frames[0] is the call site (the return address of the allocation call) */
    const void *const *frames; /* valid while the snapshot lives */
} ouro_trace_stat_t;

/* What ouro_trace_top and ouro_trace_diff rank by. */
enum { OURO_TRACE_BY_SIZE = 0, OURO_TRACE_BY_COUNT = 1 };

/* The sites of `snapshot` with live blocks, largest first by `key` (ties:
 * by size): copies the first `max` to out (which may be NULL when max is
 * 0) and returns how many sites there are.  0 with errno EINVAL for a NULL
 * snapshot or a bad key, ENOMEM. */
size_t ouro_trace_top(const ouro_trace_snapshot_t *snapshot, int key, ouro_trace_stat_t *out, size_t max);

/* The sites of either snapshot with their growth from `older` to `newer`
 * (size_diff, count_diff), largest change first by `key` (ties: by size),
 * sites that did not change included (last): copies the first `max` to out
 * and returns how many sites there are.  Errors as ouro_trace_top. */
size_t ouro_trace_diff(const ouro_trace_snapshot_t *newer, const ouro_trace_snapshot_t *older, int key,
                       ouro_trace_stat_t *out, size_t max);

/* The sums over all sites of `snapshot` (frames empty). */
void ouro_trace_snapshot_total(const ouro_trace_snapshot_t *snapshot, ouro_trace_stat_t *total);

/* Print the first `max` sites of ouro_trace_top(snapshot, key), or of
 * ouro_trace_diff(snapshot, older, key) when `older` is not NULL, to `out`
 * (stderr if NULL), each frame symbolized with dladdr (a program's own
 * functions need -rdynamic to have names).  0, or -1 with errno (as
 * ouro_trace_top). */
int ouro_trace_print(FILE *out, const ouro_trace_snapshot_t *snapshot, const ouro_trace_snapshot_t *older,
                     int key, size_t max);

/* ------------------------------------------------------------------ */
/* Objects, threads and RCU; the cycle collector                        */
/* ------------------------------------------------------------------ */
#include "ouro/object.h"
#include "ouro/gc.h"

#ifdef __cplusplus
}
#endif
#endif /* OURO_H */
