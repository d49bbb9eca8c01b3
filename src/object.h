/*
 * object.h — internals shared by the object layer: object.c (objects and
 * their counts), brc.c (biased counting: per-thread states, merge queues),
 * qsbr.c (RCU registration and deferred reuse), weakref.c.
 *
 * The shared count field holds (count << 2) | state, as in CPython's
 * free-threaded build:
 *   state 0  NONE        owner alive, nobody asked for lock-free reads
 *   state 1  READABLE    ouro_share()d: try_incref may add to a zero count
 *   state 2  QUEUED      a non-owner dropped a reference that took the
 *                        shared count below zero: instead of counting -1 it
 *                        queued the object to its owner, and the queue holds
 *                        that reference until the owner merges (-1 then)
 *   state 3  MERGED      counts merged into `shared`; tid is 0; the object
 *                        dies when the shared count reaches 0
 * Invariants: tid == 0 iff MERGED, immortal, or a merge half made (every
 * merger claims the merge, then clears tid, then local, then marks shared
 * MERGED: a reader that sees tid 0 without MERGED waits or retries); once
 * MERGED, `local` is 0 and no merge writes it again (only
 * ouro_make_immortal does); an object is freed exactly once, by the
 * thread whose operation took its total to zero.  (A dead object waiting
 * in its thread's trash list has its tid word reused as the link.)
 */
#ifndef OURO_OBJECT_H
#define OURO_OBJECT_H

#include "internal.h"

#include <urcu/lfstack.h>
#include <urcu/rculfhash.h>

#define REF_SHIFT 2
#define REF_STATE_MASK 3
#define REF_NONE 0
#define REF_READABLE 1
#define REF_QUEUED 2
#define REF_MERGED 3
#define REF_ONE ((int64_t)1 << REF_SHIFT)

/* The header's gc bits.  The object layer's: */
#define GC_DEAD 0x80000000u       /* count reached zero: memory waits for a grace period */
#define GC_HAS_WEAKREFS 0x40000000u
#define GC_IMMORTAL 0x20000000u
/* Allocation tracing recorded it (trace.c keeps the record): set by
 * ouro_new before the object is published, read when its memory is freed
 * (qsbr.c) and by heap walks; never cleared, as ouro_new stores the whole
 * word.  Bit 22: between ORPHAN and the generation, used by nothing else
 * (the collector changes only the bits under GC_LOC_MASK | GC_DIRTY, and
 * those named here, each by an RMW that keeps the others). */
#define GC_TRACED 0x00400000u
/* The collector's (gc.c says who writes each, and when): */
#define GC_TRACKED 0x10000000u    /* on a generation list */
#define GC_OLD 0x08000000u        /* on a list the collector owns (not a young stripe list) */
#define GC_PARITY 0x04000000u     /* young: which of its stripe's two lists */
#define GC_FINALIZED 0x02000000u  /* its finalizer has run */
/* A reference to it was stored or overwritten during a collection: two
 * bits, one per collection parity, so that a collection never clears the
 * bit the running barrier sets (a barrier that sees its bit set skips the
 * RMW, so the bit must stay set until the validation); relink clears both
 * for the survivors, and a bit left from two collections ago only makes a
 * root once. */
#define GC_DIRTY_A 0x01000000u
#define GC_DIRTY_B 0x00040000u
#define GC_DIRTY (GC_DIRTY_A | GC_DIRTY_B)
#define GC_ORPHAN 0x00800000u     /* died collector-owned with no zombie record (out of memory) */
#define GC_GEN_SHIFT 20           /* old: generation 1, 2, or 3 (permanent) */
#define GC_GEN_MASK (3u << GC_GEN_SHIFT)
#define GC_STRIPE_SHIFT 12        /* young: the stripe whose lists hold it */
#define GC_STRIPE_MASK (63u << GC_STRIPE_SHIFT)
_Static_assert((GC_TRACED & (GC_DEAD | GC_HAS_WEAKREFS | GC_IMMORTAL | GC_TRACKED | GC_OLD | GC_PARITY |
                             GC_FINALIZED | GC_DIRTY | GC_ORPHAN | GC_GEN_MASK | GC_STRIPE_MASK)) == 0,
               "the traced bit is no other bit");

/* Containers (types with traverse) live in pools of kind OURO_KIND_GC, each
 * block starting with this prefix, then the object.  Relaxed atomics: the
 * collector reads the prefix of objects it meets while their owners may be
 * linking or unlinking them (it only compares the word, see gc.c). */
typedef struct gc_head_s {
    _Atomic uintptr_t next;  /* gc_head_t * */
    _Atomic uintptr_t prev;  /* gc_head_t *, or the collector's scratch word (bit 0 set) */
} gc_head_t;
#define GC_HEAD_SIZE sizeof(gc_head_t)
_Static_assert(sizeof(gc_head_t) == 16, "the link prefix keeps objects 16-byte aligned");

static inline bool ouro__is_container(const ouro_object_t *o)
{
    return o->type->traverse != NULL;
}

static inline gc_head_t *gc_head_of(ouro_object_t *o)
{
    return (gc_head_t *)o - 1;
}

static inline ouro_object_t *gc_object_of(gc_head_t *h)
{
    return (ouro_object_t *)(h + 1);
}

/* The object in a block of `pool`, and the block of an object. */
static inline ouro_object_t *ouro__block_object(void *block, const ouro_pool_t *pool)
{
    return pool->kind == OURO_KIND_GC ? (ouro_object_t *)((char *)block + GC_HEAD_SIZE) : block;
}

static inline void *ouro__object_block(ouro_object_t *o)
{
    return ouro__is_container(o) ? (void *)gc_head_of(o) : (void *)o;
}

#define OBJ_HEADER_SIZE sizeof(ouro_object_t)
_Static_assert(sizeof(ouro_object_t) == 32, "object header is 32 bytes");

/* Per-thread state of the object layer. */
typedef struct ouro_tstate_s {
    uintptr_t tid;                     /* [init] the thread pointer */
    struct cds_lfht_node node;         /* [RCU] in the table of owners, by tid */
    struct ouro_tstate_s *all_next;    /* [registry] all states ever made (never freed) */
    /* objects other threads queued to us (liburcu wait-free queue: any
     * thread enqueues, only we dequeue), and a hint that there are some */
    struct __cds_wfcq_head mq_head;
    struct cds_wfcq_tail mq_tail;
    _Atomic int merge_pending;         /* [shared] set (release) after an enqueue */
    /* RCU */
    bool registered, online;           /* [owner] */
    int read_depth;                    /* [owner] ouro_read_begin nesting */
    struct defer_batch_s *batch;       /* [owner] freed objects awaiting call_rcu */
    /* batches whose grace period is over, handed back by call_rcu's thread
     * for us to free (qsbr.c): pushes lock-free, pops under its mutex */
    struct cds_lfs_stack ready;
    _Atomic bool accepting;            /* [owner] ready takes batches (cleared at exit) */
    _Atomic uint64_t active_ms;        /* [owner writes] when it last started a batch */
    /* dealloc without deep recursion */
    int dealloc_depth;                 /* [owner] */
    ouro_object_t *trash;              /* [owner] deallocs postponed, linked through tid */
    bool alive;                        /* [registry] */
    unsigned gc_stripe;                /* [init] the collector's stripe its new containers join */
    unsigned long *bseq;               /* [init] the thread's ouro__bseq (ouro_store's sequence) */
    /* statistics: owner writes (relaxed load+store), stats read relaxed */
    _Atomic size_t created, freed, merges_queued, merges_done;
} ouro_tstate_t;

extern __thread ouro_tstate_t *ouro__tstate ouro_hidden __attribute__((tls_model("initial-exec")));
/* statistics counters: relaxed RMWs, only summed for a snapshot */
extern _Atomic size_t ouro__deferred ouro_hidden, ouro__weakrefs ouro_hidden;

static inline void stat_inc(_Atomic size_t *c)
{
    /* relaxed load and store: only the owning thread writes its counters */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* brc.c */
ouro_tstate_t *ouro__tstate_get(void) ouro_hidden;      /* the caller's, registering it if needed */
void ouro__brc_queue(ouro_object_t *o) ouro_hidden;     /* a non-owner's stolen reference */
void ouro__brc_merge_pending(ouro_tstate_t *ts) ouro_hidden;
int64_t ouro__brc_explicit_merge(ouro_object_t *o, int64_t extra) ouro_hidden;
void ouro__brc_merge_unreachable(ouro_object_t *o) ouro_hidden; /* the collector's garbage */
void ouro__brc_init(void) ouro_hidden;
void ouro__brc_fork_prepare(void) ouro_hidden;
void ouro__brc_fork_parent(void) ouro_hidden; /* also the child's: the child is the forking thread */
void ouro__brc_fork_child_merge(void) ouro_hidden;   /* before the heaps are abandoned */
void ouro__brc_fork_child_finish(void) ouro_hidden;  /* after RCU is restarted */
void ouro__tstates_visit(void (*fn)(ouro_tstate_t *ts, void *arg), void *arg) ouro_hidden;

/* qsbr.c */
void ouro__qsbr_register(ouro_tstate_t *ts) ouro_hidden;
void ouro__qsbr_unregister(ouro_tstate_t *ts) ouro_hidden;
void ouro__defer_free(ouro_tstate_t *ts, void *block) ouro_hidden;
void ouro__defer_flush(ouro_tstate_t *ts) ouro_hidden;
/* Free the batches call_rcu's thread handed back to `ts` (its owner). */
void ouro__defer_reclaim(ouro_tstate_t *ts) ouro_hidden;
/* `ts` stops taking batches back (its thread exits): frees what it has. */
void ouro__defer_close(ouro_tstate_t *ts) ouro_hidden;
/* `ts` (new or recycled) takes batches back. */
void ouro__defer_open(ouro_tstate_t *ts) ouro_hidden;
/* A fork child: `ts`'s ready stack is usable again; `gone`: its thread did
 * not come along, so it takes no batches back. */
void ouro__defer_fork_child(ouro_tstate_t *ts, bool gone) ouro_hidden;
/* A quiescent state inside a read section (ouro_read_begin): the caller
 * holds no pointer it read under RCU protection, except to objects kept
 * alive by other means.  Lets grace periods, and so the reuse of freed
 * memory, go on during a long read section such as a collection's. */
void ouro__qsbr_pause(void) ouro_hidden;
void ouro__qsbr_fork_prepare(void) ouro_hidden;
void ouro__qsbr_fork_parent(void) ouro_hidden;
void ouro__qsbr_fork_child(void) ouro_hidden;

/* object.c */
void ouro__object_dealloc(ouro_object_t *o) ouro_hidden;
void ouro__decref_last_local(ouro_object_t *o) ouro_hidden; /* the owner's local count goes 1 -> 0 */
/* ouro_test_set_merge_hook's hook, called by an owner that has claimed
 * the merge of an object's counts and not yet made it (tests only) */
extern void (*ouro__test_merge_hook)(ouro_object_t *o) ouro_hidden;
static inline void ouro__merge_hook(ouro_object_t *o)
{
    /* relaxed: a test sets it before the thread it tests merges */
    void (*h)(ouro_object_t *) = __atomic_load_n(&ouro__test_merge_hook, __ATOMIC_RELAXED);
    if (unlikely(h != NULL))
        h(o);
}

/* gc.c, gctrack.c */
void ouro__gc_init(void) ouro_hidden;
void ouro__gc_track_new(ouro_tstate_t *ts, ouro_object_t *o) ouro_hidden;
uint32_t ouro__gc_die(ouro_object_t *o) ouro_hidden;      /* set GC_DEAD and shade its referents; the old bits */
bool ouro__gc_untrack_dead(ouro_object_t *o) ouro_hidden; /* false: the collector frees its memory */
void ouro__gc_fork_prepare(void) ouro_hidden;
void ouro__gc_fork_parent(void) ouro_hidden;
void ouro__gc_fork_child(void) ouro_hidden;
unsigned ouro__gc_next_stripe(void) ouro_hidden;

/* weakref.c */
void ouro__weakrefs_clear(ouro_object_t *o) ouro_hidden;
void ouro__weakref_fork_prepare(void) ouro_hidden;
void ouro__weakref_fork_parent(void) ouro_hidden; /* also the child's */

#endif /* OURO_OBJECT_H */
