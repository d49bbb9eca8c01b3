/*
 * gc.h — internals shared by the collector's files: gc.c (the protocol,
 * the write barrier, handshakes, the collection's driver, background
 * collections), gctrack.c (membership: young stripes, old lists, zombies),
 * gcapi.c (the settings and inspection API), gcmark.c and gcwalk.c
 * (steps 1-4 of a collection: count snapshots, trial deletion, marking on
 * marker threads, validation; what only those two share is in gcmark.h)
 * and gcpool.c (the marker threads themselves).  The protocol is at the
 * top of gc.c.
 */
#ifndef OURO_GC_H
#define OURO_GC_H

#include "object.h"

#include <sched.h>

/* ================================================================== */
/* lists (relaxed atomics: see object.h)                               */
/* ================================================================== */
static inline gc_head_t *NEXT(gc_head_t *h)
{
    return (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed);
}
static inline gc_head_t *PREV(gc_head_t *h)
{
    return (gc_head_t *)atomic_load_explicit(&h->prev, memory_order_relaxed);
}
static inline void SET_NEXT(gc_head_t *h, gc_head_t *v)
{
    atomic_store_explicit(&h->next, (uintptr_t)v, memory_order_relaxed);
}
static inline void SET_PREV(gc_head_t *h, gc_head_t *v)
{
    atomic_store_explicit(&h->prev, (uintptr_t)v, memory_order_relaxed);
}

static inline void list_init(gc_head_t *l)
{
    SET_NEXT(l, l);
    SET_PREV(l, l);
}

static inline bool list_empty(gc_head_t *l)
{
    return NEXT(l) == l;
}

static inline void list_append(gc_head_t *l, gc_head_t *h)
{
    gc_head_t *last = PREV(l);
    SET_PREV(h, last);
    SET_NEXT(h, l);
    SET_NEXT(last, h);
    SET_PREV(l, h);
}

static inline void list_unlink(gc_head_t *h)
{
    gc_head_t *p = PREV(h), *n = NEXT(h);
    SET_NEXT(p, n);
    SET_PREV(n, p);
    SET_NEXT(h, NULL);
    SET_PREV(h, NULL);
}

/* Append all of `from` to `to`; `from` becomes empty. */
static inline void list_splice(gc_head_t *from, gc_head_t *to)
{
    if (list_empty(from))
        return;
    gc_head_t *first = NEXT(from), *last = PREV(from), *tail = PREV(to);
    SET_NEXT(tail, first);
    SET_PREV(first, tail);
    SET_NEXT(last, to);
    SET_PREV(to, last);
    list_init(from);
}

/* ================================================================== */
/* spin locks (the stripes')                                          */
/* ================================================================== */
static inline void spin_lock(_Atomic int *l)
{
    /* acquire: the list operations of the previous holder happen before ours */
    while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
        for (int i = 0; atomic_load_explicit(l, memory_order_relaxed); i++) {
            if (i < 64)
                __builtin_ia32_pause();
            else
                sched_yield();
        }
    }
}

static inline void spin_unlock(_Atomic int *l)
{
    /* release: pairs with spin_lock's acquire */
    atomic_store_explicit(l, 0, memory_order_release);
}

/* A growable array of list heads (the collector's own memory). */
typedef struct hvec_s {
    gc_head_t **v;
    size_t n, cap;
} hvec_t;

bool ouro__hvec_grow(hvec_t *s, size_t min_cap) ouro_hidden; /* false: out of memory */
void ouro__hvec_free(hvec_t *s) ouro_hidden;

/* Append `h`; false if out of memory (the array is left as it was). */
static inline bool ouro__hvec_push(hvec_t *s, gc_head_t *h)
{
    if (unlikely(s->n == s->cap) && !ouro__hvec_grow(s, s->n + 1))
        return false;
    s->v[s->n++] = h;
    return true;
}

static inline bool ouro__gc_is_dead(ouro_object_t *o)
{
    /* acquire: pairs with dealloc's seq_cst RMW (see object.c) */
    return (__atomic_load_n(&o->gc, __ATOMIC_ACQUIRE) & GC_DEAD) != 0;
}

/* Which containers are in G, by their gc bits: young ones whose parity is
 * their stripe's taken list's (bit s of young_parity for stripe s), old
 * ones of generations up to maxgen. */
typedef struct gc_set_s {
    uint64_t young_parity;
    int maxgen;
} gc_set_t;

/* Set the gc bits under `mask` to `bits` (other threads may be setting
 * DIRTY, DEAD or HAS_WEAKREFS meanwhile, hence the CAS; relaxed: the lock
 * that makes us the list's owner orders what matters). */
static inline void ouro__gc_bits_set(ouro_object_t *o, uint32_t mask, uint32_t bits)
{
    uint32_t old = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    while ((old & mask) != bits &&
           !__atomic_compare_exchange_n(&o->gc, &old, (old & ~mask) | bits, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
}

/* The bits that say which list a container is on, and their value for a
 * list the collector owns (generation 1, 2, or 3: permanent). */
#define GC_LOC_MASK (GC_TRACKED | GC_OLD | GC_PARITY | GC_GEN_MASK | GC_STRIPE_MASK)
static inline uint32_t ouro__gc_loc_old(int gen)
{
    return GC_TRACKED | GC_OLD | ((uint32_t)gen << GC_GEN_SHIFT);
}

/* Generation 2's ids.  An old object does not use the stripe bits, so in
 * generation 2 they hold an id, 0..GC_IDS-1, that never decreases along
 * the list: a full collection gives its survivors ids by position (equal
 * groups, gcmark.c) when the groups have drifted unequal (spread_ids,
 * gcwalk.c), else each keeps its own, and whatever joins the list (a
 * collection's survivors from younger generations, unfrozen objects) is
 * appended with the last id.
 * ouro__gc.id_first[id] is the first member with that id, NULL if none;
 * unlinking keeps it so (gctrack.c).  A full collection with K markers
 * walks G in K segments, one per group of ids, in parallel: each member's
 * segment is known from its gc bits, before the walk reaches it. */
#define GC_ID_BITS 6
#define GC_IDS (1u << GC_ID_BITS)
_Static_assert(GC_IDS - 1 == GC_STRIPE_MASK >> GC_STRIPE_SHIFT, "an id fills the stripe bits");
static inline uint32_t ouro__gc_id_loc(uint32_t id)
{
    return id << GC_STRIPE_SHIFT;
}

/* Steps 1-4 over the members of list G (gc_mutex held, the barrier on;
 * `expect`: about how many members it has, a hint):
 * append the garbage found to `garbage` (`dirty`: the barrier's GC_DIRTY
 * bit this time), calling h2() between the mark and the validation, and
 * settle() (wait until no death's barrier sequence that began before is
 * still open) when the validation met deaths.  Members that survive are
 * relinked on the way, located in generation `dest`.  False if out of
 * memory (then everything survives).  Fills `out`.
 * The garbage keeps its scratch words
 * until ouro__gc_mark_end. */
typedef struct gc_mark_report_s {
    size_t examined;                    /* members of G */
    unsigned markers;                   /* marker threads used */
    bool user_code;                     /* some garbage has weak references or a finalizer to run */
    uint64_t phase_ns[OURO_GC_NPHASES]; /* WALK..VALIDATE filled */
} gc_mark_report_t;
bool ouro__gc_mark(gc_head_t *G, size_t expect, const gc_set_t *set, int dest, hvec_t *garbage,
                   uint32_t dirty, void (*h2)(void), void (*settle)(void), gc_mark_report_t *out) ouro_hidden;
uint64_t ouro__gc_now_ns(void) ouro_hidden; /* CLOCK_MONOTONIC */
/* Step 5's second look: drop from `garbage` what user code made reachable
 * or what a concurrent death still holds. */
void ouro__gc_revalidate(hvec_t *garbage, void (*settle)(void)) ouro_hidden;
/* The driver is done with the garbage: relink it too (G is a whole list
 * again, every member located in `dest`), release the work's memory, and
 * return how many members G has. */
size_t ouro__gc_mark_end(void) ouro_hidden;

/* ================================================================== */
/* marker threads (gcpool.c)                                           */
/* ================================================================== */
/* One marker's share of a pass: `id` 0 is the thread that runs the pass,
 * 1.. the helpers. */
typedef void gc_pass_fn(void *arg, int id);
/* Start helper threads until `want` markers (the calling thread included)
 * can run; returns how many can (at least 1, at most `want`). */
int ouro__gc_pool_ready(int want) ouro_hidden;
/* How many markers a collection of about `members` members uses: the
 * number set, else the cores that no other thread is running on (and
 * this one's); fewer for a small collection. */
int ouro__gc_markers_for(size_t members) ouro_hidden;
/* Run fn(arg, id) for each id in 0..n-1 (n at most what
 * ouro__gc_pool_ready returned), 0 on this thread, and return once every
 * marker has returned: a barrier.  The pool's lock orders what the caller
 * wrote before the pass before each helper's share, and what the helpers
 * wrote before the return.  Helpers run their share as RCU readers
 * (ouro_read_begin); the caller is expected to be one as well. */
void ouro__gc_pool_run(int n, gc_pass_fn *fn, void *arg) ouro_hidden;
/* fork: the pool's lock is held across it; the child has no helpers */
void ouro__gc_mark_fork_prepare(void) ouro_hidden;
void ouro__gc_mark_fork_parent(void) ouro_hidden;
void ouro__gc_mark_fork_child(void) ouro_hidden;

/* ================================================================== */
/* the state the collector's files share                               */
/* ================================================================== */
/* Stripes of young lists (the protocol at the top of gc.c). */
#define NSTRIPES 64
typedef struct stripe_s {
    _Atomic int lock;
    int parity;            /* [lock] the current list is young[parity] */
    _Atomic long count;    /* [lock] writes (relaxed load+store, no RMW: one writer at a
                            * time); read relaxed without it, as a heuristic or a
                            * statistic: tracked minus freed since the last hand-over */
    gc_head_t young[2];    /* [lock] */
} __attribute__((aligned(64))) stripe_t;

/* What more than one of gc.c, gctrack.c and gcapi.c reads or writes (what
 * one file alone uses stays static there): one instance, ouro__gc, defined
 * in gc.c.  Grouped by who writes it, each group on cache lines of its
 * own: mutators read the settings every 32nd container they track and
 * bump the counters, and should not miss on lines the collector writes. */
struct ouro__gc_state {
    /* Settings, written by the API without a lock: independent words read
     * as heuristics, relaxed loads and stores */
    _Atomic int enabled;
    _Atomic long threshold[3];
    _Atomic unsigned debug_flags;

    /* statistics mutators bump (relaxed RMWs) */
    _Atomic size_t nzombies __attribute__((aligned(64))); /* zombies not yet drained (a drain hint) */
    _Atomic size_t pressure_waits;    /* times a thread waited for a background round (backpressure) */

    /* the collector's, [gc_mutex] unless said otherwise */
    pthread_mutex_t gc_mutex __attribute__((aligned(64)));
    gc_head_t gens[4];          /* 1, 2 and 3 (permanent); 0 unused */
    gc_head_t *id_first[GC_IDS]; /* generation 2's ids (above) */
    size_t gen_size[4];
    _Atomic long gen_count[3];  /* 1: gen-0 collections since a gen-1 one; 2: gen-1 since gen-2
                                 * (read relaxed without the lock, as a heuristic) */
    ouro_gc_stats_t stats;
    ouro_object_t **saved;      /* OURO_GC_DEBUG_SAVEALL: garbage kept, with a reference each */
    size_t saved_n, saved_cap;
    size_t orphans;             /* containers that died on the collector thread unrecorded (no memory for `dying`) */
    hvec_t dying;               /* collector-owned containers that died on the collector's
                                 * thread during its collection: unlinked at its end */

    stripe_t stripes[NSTRIPES]; /* each under its own lock (stripe_t) */
};
extern struct ouro__gc_state ouro__gc ouro_hidden;
/* this thread is inside a collection (steps H1 to the end) */
extern __thread bool ouro__gc_in_collector ouro_hidden __attribute__((tls_model("initial-exec")));

/* ---- calls between the collector's files ---- */
/* gc.c: gc_mutex for an API call; false (nothing to unlock) when this
 * thread already holds it (a callback or finalizer) */
bool ouro__gc_lock(void) ouro_hidden;
void ouro__gc_unlock(bool locked) ouro_hidden;
/* gc.c: start a background collection if generation 0 is over its
 * threshold (every 32nd container a stripe tracks; a cold path) */
void ouro__gc_maybe_collect(ouro_tstate_t *ts) ouro_hidden;
/* gctrack.c */
void ouro__gc_track_init(void) ouro_hidden; /* stripes and zombie stack, at init */
size_t ouro__gc_take_young(gc_head_t *to, uint64_t *parity) ouro_hidden; /* the hand-over of generation 0 */
long ouro__gc_young_count(void) ouro_hidden; /* generation 0's size (relaxed: a heuristic) */
void ouro__gc_untrack_old_locked(ouro_object_t *o) ouro_hidden; /* gc_mutex held */
void ouro__gc_drain_zombies_locked(void) ouro_hidden; /* gc_mutex held: unlink and free the zombies */
/* gcapi.c: call the registered callbacks (from a copy of the table) */
void ouro__gc_run_callbacks(int phase, int gen, size_t collected, size_t uncollectable) ouro_hidden;

#endif /* OURO_GC_H */
