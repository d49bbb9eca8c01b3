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
 * Invariants: tid == 0 iff MERGED (or immortal); once MERGED, `local` is 0
 * and is never written again; an object is freed exactly once, by the
 * thread whose operation took its total to zero.
 */
#ifndef OURO_OBJECT_H
#define OURO_OBJECT_H

#include "internal.h"

#include <urcu/rculfhash.h>

#define REF_SHIFT 2
#define REF_STATE_MASK 3
#define REF_NONE 0
#define REF_READABLE 1
#define REF_QUEUED 2
#define REF_MERGED 3
#define REF_ONE ((int64_t)1 << REF_SHIFT)

/* gc bits (the collector's later; these are the object layer's) */
#define GC_DEAD 0x80000000u       /* count reached zero: memory waits for a grace period */
#define GC_HAS_WEAKREFS 0x40000000u
#define GC_IMMORTAL 0x20000000u

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
    /* dealloc without deep recursion */
    int dealloc_depth;                 /* [owner] */
    ouro_object_t *trash;              /* [owner] deallocs postponed, linked through tid */
    bool alive;                        /* [registry] */
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
void ouro__qsbr_fork_prepare(void) ouro_hidden;
void ouro__qsbr_fork_parent(void) ouro_hidden;
void ouro__qsbr_fork_child(void) ouro_hidden;

/* object.c */
void ouro__object_dealloc(ouro_object_t *o) ouro_hidden;

/* weakref.c */
void ouro__weakrefs_clear(ouro_object_t *o) ouro_hidden;
void ouro__weakref_fork_prepare(void) ouro_hidden;
void ouro__weakref_fork_parent(void) ouro_hidden; /* also the child's */

#endif /* OURO_OBJECT_H */
