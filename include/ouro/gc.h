/*
 * ouro/gc.h — the cycle collector (Python's gc module, for C): part of
 * ouro's public API.  Include <ouro.h>, which includes this header; the
 * declarations are documented here.
 */
#ifndef OURO_API_GC_H
#define OURO_API_GC_H

#ifndef OURO_H
#error "include <ouro.h>, not <ouro/gc.h>"
#endif

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

#endif /* OURO_API_GC_H */
