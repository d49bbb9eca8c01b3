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
 * Whether `p` points to the start of a block ouro handed out and has not
 * seen freed.  Never crashes, whatever `p` is; for diagnostics and tests.
 */
int ouro_owns(const void *p);

/* ------------------------------------------------------------------ */
/* Memory return and options                                            */
/* ------------------------------------------------------------------ */

/*
 * Give memory back to the OS now: take back blocks other threads freed to
 * this thread's pools, return this thread's empty pools to the arena layer,
 * and purge every free pool whose purge delay has passed (all of them if
 * `force` is non-zero).
 */
void ouro_collect(int force);

/* Options, each also settable by environment variable (read once at start). */
typedef enum ouro_option_e {
    /* Milliseconds a free pool keeps its memory before it is purged
     * (returned to the OS with madvise).  Env: OURO_PURGE_DELAY.  Default 10;
     * 0 purges at once; -1 never purges. */
    OURO_OPTION_PURGE_DELAY = 0,
    /* Print statistics to stderr at exit (1) or not (0).  Env: OURO_SHOW_STATS. */
    OURO_OPTION_SHOW_STATS,
    /* Verbosity of warnings: 0 silent, 1 warnings (default), 2 informational. Env: OURO_VERBOSE. */
    OURO_OPTION_VERBOSE,
    /* Place arenas per NUMA node found with hwloc (1, default) or use one set (0). Env: OURO_NUMA. */
    OURO_OPTION_NUMA,
    OURO_OPTION_COUNT_
} ouro_option_t;

/* The current value of an option. */
long ouro_option_get(ouro_option_t option);

/* Set an option; returns 0, or -1 with errno = EINVAL for an unknown option
 * or an out-of-range value (the old value is kept). */
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
} ouro_stats_t;

/* Fill `out` with a snapshot of the heap.  Safe to call from any thread at
 * any time; costs a walk over the arenas. */
void ouro_stats_get(ouro_stats_t *out);

/* Print the statistics to `out` (stderr if NULL) as readable text. */
void ouro_stats_print(FILE *out);

/* The block size of size class `cls`, or 0 if out of range. */
size_t ouro_class_block_size(int cls);

/* The version string, "MAJOR.MINOR.PATCH". */
const char *ouro_version(void);

#ifdef __cplusplus
}
#endif
#endif /* OURO_H */
