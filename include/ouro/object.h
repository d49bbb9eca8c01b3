/*
 * ouro/object.h — objects with biased reference counts, weak references,
 * threads and RCU: part of ouro's public API.  Include <ouro.h>, which
 * includes this header; the declarations are documented here.
 */
#ifndef OURO_API_OBJECT_H
#define OURO_API_OBJECT_H

#ifndef OURO_H
#error "include <ouro.h>, not <ouro/object.h>"
#endif

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

#endif /* OURO_API_OBJECT_H */
