/*
 * ouro.h — the public API of libouro.
 *
 * ouro is a managed heap for multithreaded C programs: a per-thread pool
 * allocator over a shared arena layer (this header, today), and, as they
 * land, objects with biased reference counts and a concurrent cycle
 * collector.  Every public symbol starts with `ouro_`.
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
 * purge every free pool whose purge delay has passed (all of them if
 * `force` is non-zero).
 */
void ouro_collect(int force);

/* Options, each also settable by environment variable (read once at start). */
typedef enum ouro_option_e {
    /* Milliseconds a free pool keeps its memory before it is purged
     * (returned to the OS with madvise).  Env: OURO_PURGE_DELAY.  Default 10;
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
/* Objects with biased reference counts                                 */
/* ------------------------------------------------------------------ */

typedef struct ouro_object_s ouro_object_t;
typedef struct ouro_type_s ouro_type_t;

/* Called by traverse for each object `self` refers to; a non-zero return
 * stops the traversal and is returned by it. */
typedef int ouro_visit_fn(ouro_object_t *referent, void *arg);

/* Type flags. */
#define OURO_TYPE_SHARED_READS 0x1u /* every object is born ready for ouro_try_incref (see ouro_share) */

/* A type descriptor: one per kind of object, usually static. */
struct ouro_type_s {
    const char *name;         /* for messages and statistics */
    size_t basic_size;        /* bytes of an object, header included (>= sizeof(ouro_object_t)) */
    /* Containers: call visit(ref, arg) for each object this one holds a
     * reference to.  NULL for objects that hold none. */
    int (*traverse)(ouro_object_t *self, ouro_visit_fn *visit, void *arg);
    /* Drop the references this object holds (the collector's way to break
     * cycles); may be NULL. */
    void (*clear)(ouro_object_t *self);
    /* Runs at most once in the object's life, before it is collected as
     * cyclic garbage; may be NULL. */
    void (*finalize)(ouro_object_t *self);
    /* Releases what the object holds (drop its references, free buffers)
     * when its count reaches zero; ouro frees the memory itself.  May be NULL. */
    void (*dealloc)(ouro_object_t *self);
    unsigned flags;           /* OURO_TYPE_* */
};

/*
 * The object header, at the start of every object (32 bytes).
 *   tid     the owner's thread pointer: the owner counts in `local` with plain
 *           instructions; 0 once the counts are merged, and for immortals.
 *   local   the owner's count; OURO_IMMORTAL for objects never freed.
 *   gc      the collector's bits (tracked, generation, finalized, dead).
 *   shared  (count << 2) | flags: the count of all other threads, atomic; it
 *           may go negative while the owner holds the balance in `local`.
 *   type    the type descriptor.
 * Read the fields through the API; they are public only so that incref and
 * decref can be inlined.
 */
struct ouro_object_s {
    uintptr_t tid;
    uint32_t local;
    uint32_t gc;
    int64_t shared;
    const ouro_type_t *type;
};

#define OURO_IMMORTAL 0xffffffffu

/*
 * Allocate an object of `type` (basic_size bytes, at most 128 KiB), zeroed
 * beyond the header, with one reference owned by the calling thread.
 * Registers the thread with ouro on first use.  NULL with errno = ENOMEM, or
 * EINVAL for a bad type.
 */
ouro_object_t *ouro_new(const ouro_type_t *type);

/* Slow paths of the inline functions below. */
void ouro__incref_shared(ouro_object_t *o);
void ouro__decref_shared(ouro_object_t *o);
void ouro__decref_local_last(ouro_object_t *o, uint32_t local);

static inline uintptr_t ouro__tid(void)
{
    return (uintptr_t)__builtin_thread_pointer();
}

/* Take a reference: plain instructions on the owning thread, an atomic add
 * elsewhere.  `o` must be alive (the caller holds a reference).  Immortal
 * objects have no owner (tid 0) and stop in the slow path, before any atomic. */
static inline void ouro_incref(ouro_object_t *o)
{
    if (__builtin_expect(__atomic_load_n(&o->tid, __ATOMIC_RELAXED) == ouro__tid(), 1))
        /* only the owner writes local: relaxed load and store, no RMW */
        __atomic_store_n(&o->local, __atomic_load_n(&o->local, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    else
        ouro__incref_shared(o);
}

/* Drop a reference; the object is freed (its type's dealloc) when none are left
 * (its memory is reused only after an RCU grace period).  A decref below
 * zero is reported on stderr and aborts: on the owning thread always (with
 * the size class), on others once the counts are merged. */
static inline void ouro_decref(ouro_object_t *o)
{
    if (__builtin_expect(__atomic_load_n(&o->tid, __ATOMIC_RELAXED) == ouro__tid(), 1)) {
        uint32_t local = __atomic_load_n(&o->local, __ATOMIC_RELAXED);
        /* one test for two rare cases: 1, the owner's last reference (merge
         * or free); 0, none left (the object is dead: a decref below zero) */
        if (__builtin_expect(local <= 1, 0))
            ouro__decref_local_last(o, local);
        else
            /* only the owner writes local: relaxed load and store, no RMW */
            __atomic_store_n(&o->local, local - 1, __ATOMIC_RELAXED);
    } else {
        ouro__decref_shared(o);
    }
}

/* ouro_decref for a pointer that may be NULL. */
static inline void ouro_xdecref(ouro_object_t *o)
{
    if (o)
        ouro_decref(o);
}

/*
 * For lock-free readers: take a reference to `o` if it is still alive, and
 * return 1; return 0 if its count has reached zero.  `o` may be an object
 * whose last reference another thread is dropping right now: its memory
 * stays valid until the caller's next quiescent state (see the RCU
 * contract below).  The object must have been made readable this way with
 * ouro_share() before it was published (or its type has
 * OURO_TYPE_SHARED_READS).
 */
int ouro_try_incref(ouro_object_t *o);

/* Make `o` safe for ouro_try_incref by other threads.  Call before
 * publishing it where lock-free readers may find it. */
void ouro_share(ouro_object_t *o);

/* The reference count (like sys.getrefcount, without its extra reference):
 * exact when no other thread changes it concurrently. */
size_t ouro_refcount(const ouro_object_t *o);

/* Testing: call `hook` (NULL: none) on the owning thread when it drops its
 * last local reference to an object that other threads also counted,
 * after it has claimed the merge of the two counts and before it makes
 * it: the window where a collection once freed such an object behind its
 * owner's back.  For tests of the collector only. */
void ouro_test_set_merge_hook(void (*hook)(ouro_object_t *o));

/* The object's size in bytes (like sys.getsizeof): its block's usable size. */
size_t ouro_sizeof(const ouro_object_t *o);

/* Make `o` immortal: its count never changes again and it is never freed.
 * Only its owner (the creating thread) may do it, or any thread once the
 * object's counts are merged (its owner exited, or dropped its last
 * reference while others held some; a merge in progress on another thread
 * is waited for); otherwise returns -1 with errno = EPERM.  0 if it is
 * immortal already. */
int ouro_make_immortal(ouro_object_t *o);

/* Whether `o` is immortal. */
int ouro_is_immortal(const ouro_object_t *o);

/* ---- weak references ---- */
typedef struct ouro_weakref_s ouro_weakref_t;
typedef void ouro_weakref_callback(ouro_weakref_t *ref, void *arg);

/* A weak reference to `o`, with an optional callback run (once, by the
 * thread that frees `o`) after `o` is gone.  NULL with errno = ENOMEM. */
ouro_weakref_t *ouro_weakref_new(ouro_object_t *o, ouro_weakref_callback *callback, void *arg);

/* A new reference to the referent, or NULL once it is gone. */
ouro_object_t *ouro_weakref_get(ouro_weakref_t *ref);

/* Free the weak reference (not its referent).  Its callback is not run. */
void ouro_weakref_free(ouro_weakref_t *ref);

/* ------------------------------------------------------------------ */
/* Threads, quiescent states and RCU                                    */
/* ------------------------------------------------------------------ */
/*
 * The contract.  A thread that uses objects is registered with ouro (by
 * ouro_thread_register, or by its first ouro_new) and is unregistered when
 * it exits.  A registered thread is *offline* by default: it may use
 * objects it holds references to freely, and it reads shared slots without
 * a reference (for ouro_try_incref) only between ouro_read_begin() and
 * ouro_read_end().  A thread that wants free reads instead goes online
 * once with ouro_thread_online() and then must call ouro_quiescent() at
 * points where it holds no pointer it read without a reference (between
 * requests, once per loop iteration...) and go offline before blocking.
 * Memory of freed objects is reused only after every online thread has
 * passed such a point (an RCU grace period, liburcu QSBR).
 *
 * fork: the child gets the forking thread only.  Objects owned by the other
 * threads become shared in the child (their counts merged), so it may use
 * and drop them.  But liburcu QSBR keeps the lost threads in its registry,
 * so if other threads had used objects, the child must not wait for a
 * grace period (ouro_barrier, or many frees): exec or _exit instead.  The
 * allocator alone has no such limit.
 */

/* Register the calling thread (idempotent); returns 0. */
int ouro_thread_register(void);

/* Unregister the calling thread: merge the counts of the objects it owns
 * (they become shared), hand over its pending frees.  Done at thread exit
 * automatically. */
void ouro_thread_unregister(void);

/* A quiescent state: the thread holds no pointer it read without taking a
 * reference.  Also merges counts other threads queued to this thread and
 * hands freed objects to RCU. */
void ouro_quiescent(void);

/* Go online (reads need no bracket, ouro_quiescent required) or offline. */
void ouro_thread_online(void);
void ouro_thread_offline(void);

/* Bracket a lock-free read on an offline thread (nestable; no-ops online). */
void ouro_read_begin(void);
void ouro_read_end(void);

/* Wait until every object freed before the call has had its memory handed
 * back to the allocator (for tests and orderly shutdown): those freed by
 * this thread, and those another thread freed before its last
 * ouro_quiescent() or its exit (a thread's last few hundred frees wait in
 * its own batch until then). */
void ouro_barrier(void);

/* Object statistics, summed over threads. */
typedef struct ouro_object_stats_s {
    size_t created;        /* objects allocated */
    size_t freed;          /* objects whose count reached zero */
    size_t merges_queued;  /* objects queued to their owner by another thread */
    size_t merges_done;    /* counts merged (queued, at owner's zero, or at thread exit) */
    size_t deferred;       /* objects freed whose memory waits for a grace period */
    size_t weakrefs;       /* weak references alive */
} ouro_object_stats_t;

void ouro_object_stats_get(ouro_object_stats_t *out);

/* ------------------------------------------------------------------ */
/* The cycle collector (Python's gc module, for C)                      */
/* ------------------------------------------------------------------ */
/*
 * Objects whose type has `traverse` are containers: they are tracked by the
 * collector from creation, in generation 0.  A collection finds groups of
 * containers that only refer to each other (cycles no counted reference
 * outside reaches), runs their finalizers, clears their weak references,
 * and calls `clear` on them to break the cycles; the counts then fall to
 * zero and they are freed as usual.  Collections run concurrently with the
 * program: automatic ones on a background thread, and ouro_gc_collect on
 * the caller's.  No thread is stopped.
 *
 * The contract for container types, because traverse runs on the
 * collector's threads while other threads use the object:
 *   - write reference slots with ouro_store() (or ouro_setref()), which
 *     tells a running collection about the change (a write barrier), even
 *     in a new object: the collector sees a container from ouro_new on;
 *   - read them in traverse with ouro_load();
 *   - free memory that traverse reads (a variable-size array of
 *     references) only with ouro_free_deferred(), so a traversal in flight
 *     never reads freed memory; and keep what traverse reads consistent
 *     (e.g. a length that never exceeds the array it counts).
 * A container's `clear` runs only on garbage, which no other thread can
 * reach; it should drop each reference with ouro_setref(self, &slot, NULL).
 */

/* The collector's write barrier switch, and this thread's barrier
 * sequence (odd while a store is between its two halves); for ouro_store. */
extern int ouro__gc_barrier;
extern __thread unsigned long ouro__bseq __attribute__((tls_model("initial-exec")));
void ouro__gc_shade(ouro_object_t *old, ouro_object_t *value);

/* Read a reference slot of a container (an acquire load). */
static inline ouro_object_t *ouro_load(ouro_object_t *const *slot)
{
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

/* Store `value` in a container's reference slot and return the value it
 * held.  Counts are the caller's: incref `value` first (unless passing on
 * a reference already counted) and decref the returned value afterwards.
 * One writer per slot at a time; the thread must be registered with ouro
 * (it is once it has created an object, or by ouro_thread_register).
 * Outside collections: a store, two thread-local stores, a load and a
 * branch.  The sequence number lets a collection wait for stores in flight
 * (gc.c): relaxed stores with compiler fences, ordered for the collector by
 * membarrier(). */
static inline ouro_object_t *ouro_store(ouro_object_t **slot, ouro_object_t *value)
{
    unsigned long seq = ouro__bseq;
    __atomic_store_n(&ouro__bseq, seq + 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    ouro_object_t *old = __atomic_load_n(slot, __ATOMIC_RELAXED);
    /* release: a reader that loads `value` sees it initialised */
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (__builtin_expect(__atomic_load_n(&ouro__gc_barrier, __ATOMIC_RELAXED) != 0, 0))
        ouro__gc_shade(old, value);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&ouro__bseq, seq + 2, __ATOMIC_RELEASE);
    return old;
}

/* Store `value` (whose reference the slot takes over) and drop the
 * reference the slot held: Py_SETREF for containers. */
static inline void ouro_setref(ouro_object_t **slot, ouro_object_t *value)
{
    ouro_xdecref(ouro_store(slot, value));
}

/* Free `p` (from ouro_malloc) once no collector traversal or lock-free
 * reader can still read it: after an RCU grace period. */
void ouro_free_deferred(void *p);

/* Collect generations 0..generation (0, 1 or 2; 2 is a full collection).
 * Returns the number of unreachable objects found, 0 when called from a
 * finalizer or callback during a collection, or -1 with errno EINVAL (bad
 * generation), EBUSY (inside ouro_read_begin/end: it waits for a grace
 * period) or ENOMEM (no memory for the collector's work; nothing was
 * freed).  The call is a quiescent state for the calling thread. */
long ouro_gc_collect(int generation);

/* Automatic collections on (the default) or off, and which. */
void ouro_gc_enable(void);
void ouro_gc_disable(void);
int ouro_gc_is_enabled(void);

/* Thresholds (defaults 700, 10, 10, as CPython).  Generation 0 is collected
 * when tracked allocations minus deallocations exceed t0 (0 disables
 * automatic collections); generation 1 after t1 collections of generation
 * 0; generation 2 after t2 collections of generation 1, and only once the
 * objects promoted to it since the last full collection exceed 25% of
 * those that survived it.  -1 with errno EINVAL for a negative value. */
int ouro_gc_set_threshold(long t0, long t1, long t2);
void ouro_gc_get_threshold(long out[3]);

/* The counts compared with the thresholds: out[0] tracked allocations
 * minus deallocations since the last collection, out[1] and out[2]
 * collections of the younger generation since the last of this one. */
void ouro_gc_get_count(long out[3]);

/* Start tracking a container (one created untracked by ouro_gc_untrack, for
 * example) in generation 0; or stop.  -1 with errno EINVAL if `o` is not a
 * container; untrack gives EDEADLK from a finalizer of an old object.
 * Untracking an old object may wait for a collection in progress to end. */
int ouro_gc_track(ouro_object_t *o);
int ouro_gc_untrack(ouro_object_t *o);
int ouro_gc_is_tracked(const ouro_object_t *o);

/* Move every tracked object to the permanent generation, which collections
 * ignore (for long-lived objects: python's gc.freeze); back to the oldest
 * generation; how many it holds.  -1 with EDEADLK from a finalizer (the
 * lists are in use); from a callback they work (the lists are at rest). */
int ouro_gc_freeze(void);
int ouro_gc_unfreeze(void);
size_t ouro_gc_get_freeze_count(void);

/* Callbacks run before (OURO_GC_START) and after (OURO_GC_STOP) each
 * collection, on the collecting thread, with the generation and, after,
 * the numbers of objects collected and found uncollectable.  At most 16;
 * add gives -1 with ENOSPC when full, remove -1 with ENOENT if absent. */
enum { OURO_GC_START = 0, OURO_GC_STOP = 1 };
typedef void ouro_gc_callback(int phase, int generation, size_t collected, size_t uncollectable, void *arg);
int ouro_gc_callback_add(ouro_gc_callback *fn, void *arg);
int ouro_gc_callback_remove(ouro_gc_callback *fn, void *arg);

/* Call visit for each object `o` refers to (its traverse); returns what
 * traverse returned. */
int ouro_gc_get_referents(ouro_object_t *o, ouro_visit_fn *visit, void *arg);

/* Call visit (if not NULL) for each tracked container that refers to
 * `target`, and return how many.  A debugging aid: it walks every tracked
 * object, holding the collector's locks, so visit must not create, track
 * or untrack containers; the pointers are valid during the call only. */
long ouro_gc_get_referrers(ouro_object_t *target, ouro_visit_fn *visit, void *arg);

/* Debug flags.  OURO_GC_DEBUG_SAVEALL: garbage found is kept (with a
 * reference each, not cleared) for inspection with ouro_gc_garbage(). */
#define OURO_GC_DEBUG_SAVEALL 0x20u
void ouro_gc_set_debug(unsigned flags);
unsigned ouro_gc_get_debug(void);

/* Copy up to `max` saved garbage objects to `out` (borrowed pointers, valid
 * until ouro_gc_garbage_clear) and return how many there are. */
size_t ouro_gc_garbage(ouro_object_t **out, size_t max);
/* Drop the saved garbage's references. */
void ouro_gc_garbage_clear(void);

/* Marker threads for the next collections: 0 = the default (OURO_GC_MARKERS,
 * else the core count), 1..OURO_GC_MAX_MARKERS; -1 with EINVAL otherwise.
 * get returns the number the next collection will ask for.  With the core
 * count (neither set), a collection uses only the cores that no other
 * thread of the machine is running on when it starts, and its own (from
 * /proc/loadavg): a marker sharing a core with a running thread would take
 * that thread's time slices.  A number set is used as set.  Either way a
 * collection of fewer than 4096 objects per marker uses fewer
 * (ouro_gc_stats_t.last_markers: how many the last one used). */
#define OURO_GC_MAX_MARKERS 64
int ouro_gc_set_markers(int n);
int ouro_gc_get_markers(void);

/* The steps of a collection, for ouro_gc_stats_t.last_phase_ns (the
 * protocol is described in docs/collector.md). */
typedef enum ouro_gc_phase_e {
    OURO_GC_PHASE_H1,       /* taking the generations and the first handshake */
    OURO_GC_PHASE_WALK,     /* listing the members and counting their references (a full
                             * collection: in parallel segments, one per marker) */
    OURO_GC_PHASE_COUNT,    /* adding the references between segments (0 with one segment) */
    OURO_GC_PHASE_MARK,     /* marking from the members referenced from outside */
    OURO_GC_PHASE_H2,       /* the grace period and second handshake */
    OURO_GC_PHASE_VALIDATE, /* checking the rest against concurrent changes */
    OURO_GC_PHASE_FINISH,   /* weak references, finalizers, clearing, relinking */
    OURO_GC_NPHASES
} ouro_gc_phase_t;

/* Collector statistics (a snapshot). */
#define OURO_GC_PAUSE_BUCKETS 24
typedef struct ouro_gc_stats_s {
    struct {
        size_t collections;   /* collections of this generation (and the younger) */
        size_t collected;     /* unreachable objects found */
        size_t uncollectable; /* of those, still alive after their clear (no clear, or resurrected) */
    } gen[3];
    size_t young;             /* tracked objects in generation 0 (allocations minus deallocations) */
    size_t objects[4];        /* [1], [2]: in generations 1 and 2; [3]: permanent */
    size_t zombies;           /* dead containers whose memory the collector has yet to free */
    size_t saved;             /* garbage kept by OURO_GC_DEBUG_SAVEALL */
    size_t pressure_waits;    /* times a thread making containers waited for a background
                               * collection: generation 0 had outgrown 64 thresholds
                               * and 16384 objects */
    size_t last_objects;      /* objects examined by the last collection */
    unsigned last_markers;    /* marker threads it used */
    uint64_t last_ns;         /* its duration */
    uint64_t total_ns;        /* all collections' durations */
    uint64_t pause_max_ns;    /* the longest collection (mutators are not stopped meanwhile) */
    /* collections by duration: bucket 0 < 2 us, bucket b in [2^b, 2^(b+1)) us */
    size_t pause_hist[OURO_GC_PAUSE_BUCKETS];
    uint64_t last_phase_ns[OURO_GC_NPHASES]; /* the last collection's duration by step */
} ouro_gc_stats_t;
void ouro_gc_get_stats(ouro_gc_stats_t *out);


#ifdef __cplusplus
}
#endif
#endif /* OURO_H */
