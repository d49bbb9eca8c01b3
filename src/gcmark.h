/*
 * gcmark.h — what gcmark.c (marking, relink, validation, the driver's
 * entry points) and gcwalk.c (the walk and its segments) share: a
 * member's scratch word and dense state, the work state of a collection,
 * and the small helpers both call per object, which stay static inline so
 * that no per-object call crosses the two files.  The design is at the top
 * of gcmark.c; included only by those two files.
 */
#ifndef OURO_GCMARK_H
#define OURO_GCMARK_H

#include "gc.h"

#include <urcu/lfstack.h>

/* ================================================================== */
/* counts                                                              */
/* ================================================================== */
#define COUNT_UNSTABLE (-1)
/* The object's count, consistent across the owner/shared split: retried
 * while a merge is half done (tid cleared, shared not yet MERGED).
 * Acquire loads: read in this order, as a seqlock reads.  Every merge
 * clears tid before local (local with a release store: brc.c, object.c),
 * so a reading of local after the merge cleared it also reads tid 0 and
 * retries; the other order could read local 0 with the owner's tid, a
 * count short by the owner's references. */
static inline int64_t gc_count(ouro_object_t *o)
{
    for (int tries = 0; tries < 1000; tries++) {
        int64_t s1 = __atomic_load_n(&o->shared, __ATOMIC_ACQUIRE);
        uint32_t local = __atomic_load_n(&o->local, __ATOMIC_ACQUIRE);
        uintptr_t tid = __atomic_load_n(&o->tid, __ATOMIC_ACQUIRE);
        int64_t s2 = __atomic_load_n(&o->shared, __ATOMIC_ACQUIRE);
        if (local == OURO_IMMORTAL)
            return COUNT_UNSTABLE;
        /* tid 0 before MERGED: a merge is between its stores and its CAS
         * (local already moved out, not yet added to shared) */
        if (s1 != s2 || (tid == 0 && (s1 & REF_STATE_MASK) != REF_MERGED))
            continue;
        int64_t rc = (s1 >> REF_SHIFT) + (tid ? (int64_t)local : 0);
        if ((s1 & REF_STATE_MASK) == REF_QUEUED)
            rc -= 1;
        return rc;
    }
    return COUNT_UNSTABLE;
}
/* ================================================================== */
/* the scratch word (prefix prev of a G member during a collection)    */
/* ================================================================== */
#define S_TAG 1ull /* a scratch word (TAG | index << 1), not a prev pointer */
#define S_PEND 2ull /* before the walk of its segment reaches it: PEND | references from inside G << 2 */

/* Relaxed: until its relink, a member's scratch word is written only by
 * its segment's marker during the walk (other markers do not read it
 * then: member_seg), and afterwards by the one marker that relinks it
 * (MARK's claimer of its grain, or VALIDATE's of its slice); other
 * markers only read it, after the walk's barrier (gcpool.c's mk_lock
 * orders it), and a relink racing such a read is harmless: the reader sees
 * either the index or a pointer (settled), both right. */
static inline uint64_t sc_load(gc_head_t *h)
{
    return atomic_load_explicit(&h->prev, memory_order_relaxed);
}
static inline void sc_store(gc_head_t *h, uint64_t w)
{
    atomic_store_explicit(&h->prev, w, memory_order_relaxed);
}

#define NO_MEMBER SIZE_MAX
/* The index of the unsettled G member that `r` is, or NO_MEMBER.  `r` is
 * a referent read from a live object's slot during a pass: its memory is
 * not reused before our next quiescent state (see the top of gc.c). */
static inline size_t in_g(ouro_object_t *r)
{
    if (r == NULL || !ouro__is_container(r))
        return NO_MEMBER;
    uint64_t s = sc_load(gc_head_of(r));
    return (s & S_TAG) ? (size_t)(s >> 1) : NO_MEMBER;
}

/* ---- the dense per-member state (see the top of gcmark.c) ---- */
typedef struct mcount_s {
    uint32_t c1; /* the count at snapshot (valid unless FORCE) */
    uint32_t in; /* references from inside G */
} mcount_t;
#define C1_MAX UINT32_MAX
#define IN_MAX UINT32_MAX

#define ST_FORCE 1    /* a root whatever its count says */
#define ST_SKIP 2     /* dead: neither traversed nor collected */
#define ST_RELINKED 4 /* has its list link back (settled) */

/* A member's index: k << IDX_SEG_SHIFT | local, where k is the segment
 * (the marker whose walk reached it) and local its rank there.  With one
 * segment (every collection but a full one with several markers) the
 * index is the rank itself, so marking indexes segment 0's mark bytes
 * directly (visit_ctx_t.mark0).  The scratch word holds index << 1: an
 * index stays below 2^63. */
#define IDX_SEG_SHIFT 57
_Static_assert((uint64_t)(OURO_GC_MAX_MARKERS - 1) << IDX_SEG_SHIFT < UINT64_C(1) << 63,
               "a segment number fits above the rank, below the scratch word's top bit");
static inline int idx_seg(size_t i)
{
    return (int)(i >> IDX_SEG_SHIFT);
}
static inline size_t idx_local(size_t i)
{
    return i & (((size_t)1 << IDX_SEG_SHIFT) - 1);
}
static inline size_t idx_make(int k, size_t local)
{
    return (size_t)k << IDX_SEG_SHIFT | local;
}

/* ================================================================== */
/* the work state: segments, markers                                   */
/* ================================================================== */
/* A growable array of indices. */
typedef struct ivec_s {
    size_t *v;
    size_t n, cap;
} ivec_t;

/* Segment k: the members marker k's walk reached, in list order, and
 * their dense state (arrays kept between collections).  Written by marker
 * k during the walk and APPLY; afterwards g is read-only and the state is
 * written by the marker that claimed the member's grain (MARK) or holds
 * it in its slice (VALIDATE) (see the top of gcmark.c). */
typedef struct seg_s {
    _Alignas(128) hvec_t g;
    mcount_t *cnt;
    uint8_t *st, *mark;
    size_t state_cap;
    gc_head_t *from, *to;  /* [driver] the walk: from `from` up to, not including, `to` */
    gc_head_t *before;     /* [driver] what precedes g.v[0] in the list: a member or G */
    size_t base;           /* [driver] position of g.v[0] in G's list order */
    size_t hint_n;         /* [driver] g.n of the last collection: g.v's entries the walk may prefetch */
} seg_t;

/* What a visit function gets (the walk's, marking's). */
typedef struct visit_ctx_s {
    struct work_s *w;
    struct marker_s *m;
    uint8_t *mark0;        /* marking with one segment: its mark bytes (an index is a rank); else NULL */
    int k;                 /* the walk: the segment being walked */
    bool several;          /* the walk: w->nsegs > 1 */
    const gc_set_t *set;   /* the walk: w->set */
    mcount_t *cnt;         /* the walk: segment k's counts and states (kept in step with its */
    uint8_t *st;           /* arrays when they grow) */
} visit_ctx_t;

/* Each on its own cache lines (two: the adjacent-line prefetcher): a
 * marker writes its stack's length and counters at every object, and a
 * neighbour's line ping-ponging between cores made 2 markers' MARK slower
 * than one's. */
typedef struct marker_s {
    _Alignas(128) hvec_t stack;
    ivec_t cand;           /* VALIDATE: members left unmarked, by index */
    hvec_t *out;           /* WALK: out[j]: referents the walk met in segment j (several segments) */
    size_t lo, hi;         /* VALIDATE: this marker's slice of G, by position */
    size_t mlo, mhi;       /* MARK: the positions it claims first (the segment it walked, if it walked one) */
    _Atomic uint64_t grains; /* MARK: its grains not claimed yet, [low 32 bits, high 32 bits): it claims
                              * from the front, idle markers steal from the back */
    size_t claimed;        /* MARK: positions it claimed (their sum is checked: each claimed once) */
    bool oom;
    bool misplaced;        /* met a member outside the segment its gc bits name (a bug) */
    size_t deaths;         /* validation: members found dead */
    size_t rejects;        /* validation: members it rejected (and marked from) */
    unsigned since_qs;     /* objects handled since this marker's last quiescent state */
    visit_ctx_t vc;        /* MARK, VALIDATE: what its visits of marking get (set after the walk),
                            * here on the marker's own lines: read at every visit */
} marker_t;

/* Positions a marker claims at a time in MARK (claim_grain). */
#define MARK_GRAIN 4096

/* How far ahead the walk prefetches (ouro__gc_walk_segment): as far as
 * MARK (PREFETCH_AHEAD, gcmark.c). */
#define WALK_AHEAD 128

/* One collection's shared work state. */
typedef struct work_s {
    seg_t *seg;            /* segs */
    size_t n;              /* members of G */
    uint64_t id_mul;       /* see id_at */
    int nmarkers;
    int nsegs;             /* segments walked in parallel (1: marker 0 walks G alone) */
    int young_seg;         /* the segment of the members not in generation 2: G's last */
    bool parallel;         /* several markers share the passes */
    bool ids;              /* a full collection: survivors get generation-2 ids (gc.h) */
    bool respread;         /* ... by their positions; else each keeps its own (gcwalk.c) */
    size_t young;          /* members of G not in generation 2 (the last ones) */
    uint32_t dirty;        /* this collection's GC_DIRTY bit */
    gc_head_t *G;          /* G's list head */
    const gc_set_t *set;
    uint32_t loc;          /* the gc location bits of a survivor (its new generation) */
    int dest;              /* that generation */
    ivec_t garbage;        /* indices of the garbage, relinked at the end */
    struct cds_lfs_stack shared; /* chunks; pops take its mutex (ABA), pushes are lock-free */
    _Atomic int idle;
    bool oom;              /* [driver] gave up: everything survives */
    marker_t m[OURO_GC_MAX_MARKERS];
} work_t;

static inline gc_head_t *member_head(const work_t *w, size_t i)
{
    return w->seg[idx_seg(i)].g.v[idx_local(i)];
}
static inline mcount_t *member_cnt(const work_t *w, size_t i)
{
    return &w->seg[idx_seg(i)].cnt[idx_local(i)];
}
static inline uint8_t *member_st(const work_t *w, size_t i)
{
    return &w->seg[idx_seg(i)].st[idx_local(i)];
}

/* Every PAUSE_EVERY objects a marker passes a quiescent state, so that
 * grace periods, and the mutators' reuse of the memory they free, need not
 * wait for the end of a pass (a mutator allocating meanwhile would map
 * fresh memory instead, and a page-table change waits for the kernel's
 * mm lock: milliseconds under load).  Safe: between two objects a marker
 * holds pointers only to members of G, which are not freed during a
 * collection (a member that dies is left to the collector: gc.c), and its
 * referents are read again from their slots when needed. */
#define PAUSE_EVERY 4096
static inline void marker_pause(marker_t *m)
{
    if (unlikely(++m->since_qs == PAUSE_EVERY)) {
        m->since_qs = 0;
        ouro__qsbr_pause();
    }
}

/* mark bytes: relaxed atomic byte loads and stores, see the top of gcmark.c */
static inline bool is_marked(const work_t *w, size_t i)
{
    return __atomic_load_n(&w->seg[idx_seg(i)].mark[idx_local(i)], __ATOMIC_RELAXED) != 0;
}

static inline bool settled(const work_t *w, size_t i)
{
    return is_marked(w, i) || (*member_st(w, i) & ST_SKIP);
}

/* One more reference from inside G to the member of rank l in a segment
 * whose counts and states are cnt and st, by the marker that owns its
 * state in this pass. */
static inline void count_in(mcount_t *cnt, uint8_t *st, size_t l)
{
    if (unlikely(cnt[l].in == IN_MAX))
        st[l] |= ST_FORCE; /* 2^32 references from inside G: a root */
    else
        cnt[l].in++;
}

/* Is an object with these gc bits in G?  (Stable during a collection: only
 * the collector moves members, and a container tracked or untracked
 * meanwhile is on a current young list, which is not in G.) */
static inline bool member_bits(const gc_set_t *set, uint32_t gc)
{
    if (!(gc & GC_TRACKED))
        return false;
    if (gc & GC_OLD)
        return ((gc & GC_GEN_MASK) >> GC_GEN_SHIFT) <= (uint32_t)set->maxgen;
    unsigned stripe = (gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT;
    return ((gc & GC_PARITY) != 0) == ((set->young_parity >> stripe) & 1);
}

/* Gc bits of a member of generation 2 (which holds an id, gc.h). */
static inline bool gen2_bits(uint32_t gc)
{
    return (gc & (GC_OLD | GC_GEN_MASK)) == (GC_OLD | 2u << GC_GEN_SHIFT);
}

/* The segment of a member with these gc bits: a member of generation 2
 * in a full collection lies in the segment of its id's group (gc.h), and
 * every other member in the last segment that is not empty (young lists
 * and generation 1 come last in G). */
static inline int member_seg(const work_t *w, uint32_t gc)
{
    if (!gen2_bits(gc))
        return w->young_seg;
    return (int)((((gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT) * (unsigned)w->nsegs) >> GC_ID_BITS);
}

/* The generation-2 id (gc.h) of the member at position `pos` of G's list
 * order, in a full collection: ids rise with the position, in about equal
 * groups.  A multiply, not a division (relink runs it for every member);
 * id_mul = 2^32 * GC_IDS / n, so pos * id_mul < 2^38 for every pos < n. */
static inline uint32_t id_by_mul(uint64_t id_mul, size_t pos)
{
    return (uint32_t)((pos * id_mul) >> 32);
}
static inline uint32_t id_at(const work_t *w, size_t pos)
{
    return id_by_mul(w->id_mul, pos);
}

/* ================================================================== */
/* gcwalk.c: the walk and the segments (called once per pass, not per  */
/* object)                                                             */
/* ================================================================== */
/* before the walk: where each segment starts, room; false: out of memory */
bool ouro__gc_segments_setup(work_t *w, size_t expect) ouro_hidden;
void ouro__gc_walk_segment(work_t *w, int k) ouro_hidden;   /* WALK (with COUNT) over segment k */
void ouro__gc_apply_segment(work_t *w, int id) ouro_hidden; /* APPLY: references into segment id */
void ouro__gc_slices_setup(work_t *w) ouro_hidden;          /* after the walk: G's order, the slices */
gc_head_t *ouro__gc_head_at(const work_t *w, size_t pos) ouro_hidden; /* the member at position pos */
size_t ouro__gc_id_start(const work_t *w, uint32_t id) ouro_hidden;   /* the first position with id */
void ouro__gc_seg_free(seg_t *s) ouro_hidden;               /* a segment's arrays */

#endif /* OURO_GCMARK_H */
