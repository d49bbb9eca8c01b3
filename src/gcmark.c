/*
 * gcmark.c — steps 1-4 of a collection (see the protocol at the top of
 * gc.c), in passes over the members of G:
 *   WALK      walk G's list into arrays, one per segment (below); each
 *             member's scratch word (its prefix prev) becomes TAG | its
 *             index, its count is snapshot (c1), and one is added to the
 *             internal-reference count of each referent in G (COUNT, fused
 *             with the walk while the header is in cache);
 *   APPLY     (several segments) add the references the walk of one
 *             segment met into another;
 *   MARK      mark from each member referenced from outside G (c1 above
 *             its internal references), forced, or shaded;
 *   (H2)
 *   VALIDATE  validate each unmarked member; give every member that is
 *             settled (marked, or dead) its list link back and its new
 *             generation at once, so no pass of its own relinks G.  What
 *             is left is the garbage, relinked by ouro__gc_mark_end once
 *             the driver is done with it.
 * Segments: a full collection with K markers walks G in K segments in
 * parallel, marker k the members whose generation-2 id (gc.h) falls in the
 * k-th share of the id groups, and segment 0 also the young lists and
 * generation 1, which come first in G.  Any other collection walks G in
 * one segment.  A member's segment is known from its gc bits before the
 * walk reaches it (member_seg): that is what lets each marker keep its
 * own members' pending counts in their scratch words (PEND: only it writes
 * them) and hand references into other segments to their markers.
 * A member's collection state lives in dense arrays of its segment,
 * indexed by its rank there, not in its header, so that markers never
 * need an atomic read-modify-write (on this kind of machine a locked RMW
 * per object costs as much as a second marker gains):
 *   cnt     c1 and the internal count: written during WALK and APPLY only
 *           by the member's segment's marker;
 *   st      FORCE, SKIP (dead), RELINKED: by the segment's marker in WALK,
 *           then by the marker whose slice (an equal share of G's order,
 *           whatever the segments) holds the member in MARK and VALIDATE,
 *           or the driver alone;
 *   mark    reachable: a byte any marker may set, with relaxed atomic
 *           byte loads and stores; two markers that both see it clear both
 *           traverse the member, which is harmless (marking is idempotent).
 * The passes are separated by barriers (gcpool.c), which order one pass's
 * writes before the next pass's reads.
 * Membership of a referent in G is read from the TAG bit of its scratch
 * word (a relinked member has a pointer there again: settled).
 * Runs on `nmarkers` threads: the collecting one and helpers parked
 * between passes (gcpool.c); marking work is shared in chunks on a liburcu
 * lock-free stack.
 */
#include "config.h"
#include "gc.h"

#include <sched.h>
#include <string.h>
#include <urcu/lfstack.h>

/* ================================================================== */
/* arrays of list heads                                                */
/* ================================================================== */
bool ouro__hvec_grow(hvec_t *s, size_t min_cap)
{
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < min_cap)
        cap *= 2;
    if (cap == s->cap)
        return true;
    gc_head_t **v = ouro_realloc(s->v, cap * sizeof *v);
    if (v == NULL)
        return false;
    s->v = v;
    s->cap = cap;
    return true;
}

void ouro__hvec_free(hvec_t *s)
{
    ouro_free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* ================================================================== */
/* counts                                                              */
/* ================================================================== */
#define COUNT_UNSTABLE (-1)
/* The object's count, consistent across the owner/shared split: retried
 * while a merge is half done (tid cleared, shared not yet MERGED).
 * Acquire loads: read in this order, as a seqlock reads. */
static int64_t gc_count(ouro_object_t *o)
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
 * then: member_seg), and afterwards by the marker whose slice holds it
 * (relink); other markers only read it, after the walk's barrier
 * (gcpool.c's mk_lock orders it), and a relink racing such a read is
 * harmless: the reader sees either the index or a pointer (settled), both
 * right. */
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

/* ---- the dense per-member state (see the top of this file) ---- */
typedef struct mcount_s {
    uint32_t c1; /* the count at snapshot (valid unless FORCE) */
    uint32_t in; /* references from inside G */
} mcount_t;
#define C1_MAX UINT32_MAX
#define IN_MAX UINT32_MAX

#define ST_FORCE 1    /* a root whatever its count says */
#define ST_SKIP 2     /* dead: neither traversed nor collected */
#define ST_RELINKED 4 /* has its list link back (settled) */

/* A member's index: local << IDX_SHIFT | k, where k is the segment (the
 * marker whose walk reached it) and local its rank there. */
#define IDX_SHIFT 6
_Static_assert(OURO_GC_MAX_MARKERS == 1 << IDX_SHIFT, "a segment number fits below the rank");
static inline int idx_seg(size_t i)
{
    return (int)(i & (OURO_GC_MAX_MARKERS - 1));
}
static inline size_t idx_local(size_t i)
{
    return i >> IDX_SHIFT;
}
static inline size_t idx_make(int k, size_t local)
{
    return local << IDX_SHIFT | (size_t)k;
}

/* ================================================================== */
/* work: segments, mark stacks, markers                                */
/* ================================================================== */
/* A chunk of marking work shared between markers. */
#define CHUNK 256
typedef struct chunk_s {
    struct cds_lfs_node node;
    size_t n;
    gc_head_t *v[CHUNK];
} chunk_t;

/* A growable array of indices. */
typedef struct ivec_s {
    size_t *v;
    size_t n, cap;
} ivec_t;

static ouro_noinline bool ivec_grow(ivec_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 256;
    size_t *v = ouro_realloc(s->v, cap * sizeof *v);
    if (v == NULL)
        return false;
    s->v = v;
    s->cap = cap;
    return true;
}

static inline bool ivec_push(ivec_t *s, size_t i)
{
    if (unlikely(s->n == s->cap) && !ivec_grow(s))
        return false;
    s->v[s->n++] = i;
    return true;
}

static void ivec_free(ivec_t *s)
{
    ouro_free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* Segment k: the members marker k's walk reached, in list order, and
 * their dense state (arrays kept between collections).  Written by marker
 * k during the walk and APPLY; afterwards g is read-only and the state is
 * written by the marker whose slice holds the member (see the top). */
typedef struct seg_s {
    _Alignas(128) hvec_t g;
    mcount_t *cnt;
    uint8_t *st, *mark;
    size_t state_cap;
    gc_head_t *from, *to;  /* [driver] the walk: from `from` up to, not including, `to` */
    gc_head_t *before;     /* [driver] what precedes g.v[0] in the list: a member or G */
    size_t base;           /* [driver] position of g.v[0] in G's list order */
} seg_t;
static seg_t segs[OURO_GC_MAX_MARKERS]; /* gc_mutex: one collection at a time */

/* Each on its own cache lines (two: the adjacent-line prefetcher): a
 * marker writes its stack's length and counters at every object, and a
 * neighbour's line ping-ponging between cores made 2 markers' MARK slower
 * than one's. */
typedef struct marker_s {
    _Alignas(128) hvec_t stack;
    ivec_t cand;           /* VALIDATE: members left unmarked, by index */
    hvec_t *out;           /* WALK: out[j]: referents the walk met in segment j (several segments) */
    size_t lo, hi;         /* MARK, VALIDATE: this marker's slice of G, by position */
    bool oom;
    bool misplaced;        /* met a member outside the segment its gc bits name (a bug) */
    size_t deaths;         /* validation: members found dead */
    unsigned since_qs;     /* objects handled since this marker's last quiescent state */
} marker_t;

/* One collection's shared work state. */
typedef struct work_s {
    seg_t *seg;            /* segs */
    size_t n;              /* members of G */
    uint64_t id_mul;       /* see id_at */
    int nmarkers;
    int nsegs;             /* segments walked in parallel (1: marker 0 walks G alone) */
    bool parallel;         /* several markers share the passes */
    bool ids;              /* a full collection: survivors get the id of their position */
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

/* mark bytes: relaxed atomic byte loads and stores, see the top of this file */
static inline bool is_marked(const work_t *w, size_t i)
{
    return __atomic_load_n(&w->seg[idx_seg(i)].mark[idx_local(i)], __ATOMIC_RELAXED) != 0;
}

static inline bool settled(const work_t *w, size_t i)
{
    return is_marked(w, i) || (*member_st(w, i) & ST_SKIP);
}

typedef struct visit_ctx_s {
    work_t *w;
    marker_t *m;
    int k;                 /* the walk: the segment being walked */
    const gc_set_t *set;   /* the walk: w->set */
} visit_ctx_t;

/* One more reference from inside G to member j, by the marker that owns
 * j's state in this pass. */
static inline void count_in(work_t *w, size_t j)
{
    mcount_t *c = member_cnt(w, j);
    if (unlikely(c->in == IN_MAX))
        *member_st(w, j) |= ST_FORCE; /* 2^32 references from inside G: a root */
    else
        c->in++;
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

/* The segment of a member with these gc bits: a member of generation 2
 * in a full collection lies in the segment of its id's group (gc.h), and
 * every other member in segment 0 (young lists and generation 1 come
 * first in G). */
static inline int member_seg(const work_t *w, uint32_t gc)
{
    if ((gc & (GC_OLD | GC_GEN_MASK)) != (GC_OLD | 2u << GC_GEN_SHIFT))
        return 0;
    return (int)((((gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT) * (unsigned)w->nsegs) >> GC_ID_BITS);
}

/* WALK with COUNT fused: a referent in our own segment that the walk has
 * not reached has no index yet, so its count waits in its scratch word
 * (PEND) until the walk gives it one; only we write our segment's scratch
 * words.  A referent in another segment is handed to that segment's
 * marker (APPLY).  Members are found by their gc bits. */
static int visit_count_walk(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    if (r == NULL || !ouro__is_container(r))
        return 0;
    /* relaxed: the location bits are stable (member_bits); r's memory
     * stays ours while we are an RCU reader */
    uint32_t gc = __atomic_load_n(&r->gc, __ATOMIC_RELAXED);
    if (!member_bits(c->set, gc))
        return 0;
    gc_head_t *h = gc_head_of(r);
    if (c->w->nsegs > 1) {
        int k = member_seg(c->w, gc);
        if (k != c->k) {
            if (!ouro__hvec_push(&c->m->out[k], h))
                c->m->oom = true;
            return 0;
        }
    }
    uint64_t s = sc_load(h);
    if (s & S_TAG) {
        if (likely(idx_seg((size_t)(s >> 1)) == c->k))
            count_in(c->w, (size_t)(s >> 1));
        else
            c->m->misplaced = true;
    } else {
        sc_store(h, (s & S_PEND) ? s + 4 : (S_PEND | 4)); /* 2^62 references: not on this machine */
    }
    return 0;
}

static void share_work(work_t *w, marker_t *m)
{
    chunk_t *c = ouro_malloc(sizeof *c);
    if (c == NULL)
        return;
    c->n = CHUNK;
    m->stack.n -= CHUNK;
    memcpy(c->v, m->stack.v + m->stack.n, sizeof c->v);
    /* cds_lfs_push is a full barrier: the popper sees the chunk's contents */
    ouro_tsan_release(&w->shared);
    cds_lfs_push(&w->shared, &c->node);
}

/* Mark member i (head h) and put it on the marker's stack, unless it is
 * marked already. */
static inline void mark_push(work_t *w, marker_t *m, size_t i, gc_head_t *h)
{
    uint8_t *mk = &w->seg[idx_seg(i)].mark[idx_local(i)];
    /* relaxed atomic byte load and store: see the top of this file */
    if (__atomic_load_n(mk, __ATOMIC_RELAXED))
        return;
    __atomic_store_n(mk, 1, __ATOMIC_RELAXED);
    if (!ouro__hvec_push(&m->stack, h))
        m->oom = true;
}

static int visit_mark(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    size_t j = in_g(r);
    if (j != NO_MEMBER)
        mark_push(c->w, c->m, j, gc_head_of(r));
    return 0;
}

/* Traverse everything on the marker's own stack (sharing chunks of it
 * with idle markers).  Called after each root, so the stack stays small
 * and the objects on it are still in cache. */
static void mark_drain_local(work_t *w, marker_t *m)
{
    visit_ctx_t ctx = {w, m, 0, NULL};
    while (m->stack.n) {
        gc_head_t *h = m->stack.v[--m->stack.n];
        ouro_object_t *o = gc_object_of(h);
        marker_pause(m);
        if (!ouro__gc_is_dead(o))
            o->type->traverse(o, visit_mark, &ctx);
        else
            m->deaths++; /* its referents: see validate_one */
        /* relaxed: a hint; a stale read only delays sharing */
        if (w->parallel && m->stack.n >= 2 * CHUNK && atomic_load_explicit(&w->idle, memory_order_relaxed))
            share_work(w, m);
    }
}

/* Traverse everything on the marker's stack and, in parallel, what the
 * others share, until no marker has work left. */
static void mark_drain(work_t *w, marker_t *m)
{
    for (;;) {
        mark_drain_local(w, m);
        if (!w->parallel)
            return;
        struct cds_lfs_node *n = cds_lfs_pop_blocking(&w->shared);
        if (n) {
            ouro_tsan_acquire(&w->shared);
            chunk_t *c = caa_container_of(n, chunk_t, node);
            for (size_t i = 0; i < c->n; i++)
                if (!ouro__hvec_push(&m->stack, c->v[i]))
                    m->oom = true;
            ouro_free(c);
            continue;
        }
        /* seq_cst: ordered with the pushes and the others' idle counts, so
         * the last marker to go idle sees any chunk still shared */
        atomic_fetch_add_explicit(&w->idle, 1, memory_order_seq_cst);
        for (unsigned spins = 0;; spins++) {
            if (!cds_lfs_empty(&w->shared)) {
                atomic_fetch_sub_explicit(&w->idle, 1, memory_order_seq_cst); /* as the add above */
                break;
            }
            if (atomic_load_explicit(&w->idle, memory_order_seq_cst) == w->nmarkers)
                return;
            /* spin briefly, then give the core away: with more runnable
             * threads than cores (mutators, other markers) a spinning idle
             * marker would take the time of the one that has the work */
            if (spins < 1024)
                __builtin_ia32_pause();
            else
                sched_yield();
        }
    }
}


/* ---- the passes ---- */
enum { PH_WALK, PH_APPLY, PH_MARK, PH_VALIDATE };
#define PREFETCH_AHEAD 16

/* The dense state for g.cap members of segment s. */
static bool seg_reserve(seg_t *s)
{
    size_t cap = s->g.cap;
    if (s->state_cap >= cap)
        return true;
    mcount_t *cnt = ouro_realloc(s->cnt, cap * sizeof *cnt);
    if (cnt == NULL)
        return false;
    s->cnt = cnt;
    uint8_t *st = ouro_realloc(s->st, cap);
    if (st == NULL)
        return false;
    s->st = st;
    uint8_t *mark = ouro_realloc(s->mark, cap);
    if (mark == NULL)
        return false;
    s->mark = mark;
    s->state_cap = cap;
    return true;
}

static void seg_free(seg_t *s)
{
    ouro__hvec_free(&s->g);
    ouro_free(s->cnt);
    ouro_free(s->st);
    ouro_free(s->mark);
    s->cnt = NULL;
    s->st = s->mark = NULL;
    s->state_cap = 0;
}

/* WALK (fused with COUNT) over segment k: give each member its index, its
 * pending count, and its c1; count its references. */
static void walk_segment(work_t *w, int k)
{
    marker_t *m = &w->m[k];
    seg_t *s = &w->seg[k];
    visit_ctx_t ctx = {w, m, k, w->set};
    s->g.n = 0;
    for (gc_head_t *h = s->from; h != s->to;
         h = (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed)) { /* relaxed: ours, gc_mutex */
        size_t l = s->g.n;
        if (!ouro__hvec_push(&s->g, h) || (s->state_cap <= l && !seg_reserve(s))) {
            m->oom = true;
            return;
        }
        marker_pause(m);
        uint64_t sc = sc_load(h);
        uint64_t pend = (sc & S_PEND) ? sc >> 2 : 0;
        sc_store(h, S_TAG | (uint64_t)idx_make(k, l) << 1);
        s->st[l] = pend > IN_MAX ? ST_FORCE : 0;
        s->mark[l] = 0;
        s->cnt[l].in = pend > IN_MAX ? 0 : (uint32_t)pend;
        ouro_object_t *o = gc_object_of(h);
        /* the dirty bits are left as they are: this collection's only goes
         * from 0 to 1 until relink, so a barrier that sees it set may skip
         * its RMW (ouro__gc_shade) without losing a shade (object.h) */
        /* acquire: as ouro__gc_is_dead (a dead member is not traversed) */
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
        if (unlikely(w->nsegs > 1 && member_seg(w, gc) != k))
            m->misplaced = true;
        int64_t c = (gc & GC_DEAD) ? 0 : gc_count(o);
        /* a count of zero: dying right now (GC_DEAD comes next); a root, so
         * that nothing it still holds is taken for garbage meanwhile; an
         * unstable or huge count: a root too */
        if (c <= 0 || c > (int64_t)C1_MAX)
            s->st[l] |= ST_FORCE;
        else
            s->cnt[l].c1 = (uint32_t)c;
        if (!(gc & GC_DEAD))
            o->type->traverse(o, visit_count_walk, &ctx);
    }
}

/* The generation-2 id (gc.h) of the member at position `pos` of G's list
 * order, in a full collection: ids rise with the position, in about equal
 * groups.  A multiply, not a division (relink runs it for every member);
 * id_mul = 2^32 * GC_IDS / n, so pos * id_mul < 2^38 for every pos < n. */
static inline uint32_t id_at(const work_t *w, size_t pos)
{
    return (uint32_t)((pos * w->id_mul) >> 32);
}

/* The first position with id `id` (or n if none): the inverse of id_at. */
static size_t id_start(const work_t *w, uint32_t id)
{
    size_t pos = w->id_mul ? ((size_t)id << 32) / w->id_mul : 0;
    if (pos > w->n)
        pos = w->n;
    while (pos > 0 && id_at(w, pos - 1) >= id)
        pos--;
    while (pos < w->n && id_at(w, pos) < id)
        pos++;
    return pos;
}

/* A settled member (marked: it survives; or dead: a zombie) gets its list
 * link back and its new location: the segments, one after the other, are
 * the list's order. */
static inline void relink_at(work_t *w, seg_t *s, size_t l)
{
    gc_head_t *h = s->g.v[l];
    atomic_store_explicit(&h->prev, (uintptr_t)(l ? s->g.v[l - 1] : s->before),
                          memory_order_relaxed); /* ours: gc_mutex */
    uint32_t loc = w->loc;
    if (w->ids)
        loc |= ouro__gc_id_loc(id_at(w, s->base + l));
    ouro_object_t *o = gc_object_of(h);
    /* relaxed: see gc_bits_set */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if ((gc & (GC_LOC_MASK | GC_DIRTY)) != loc)
        ouro__gc_bits_set(o, GC_LOC_MASK | GC_DIRTY, loc);
    s->st[l] |= ST_RELINKED;
}

static void relink_one(work_t *w, size_t i)
{
    relink_at(w, &w->seg[idx_seg(i)], idx_local(i));
}

/* Validate one unmarked member of G after H2 (step 4): reject it (mark it
 * and what it reaches) if its count changed, it was shaded, it was a
 * forced root, or its count is zero: a dying object whose own dealloc
 * will drop what it holds, so what it holds is not ours to collect.
 * A dead member is skipped and counted in m->deaths, as is a dead one
 * that marking meets (mark_drain): after H2 its death's shading may still
 * be under way, so what it held is validated again (ouro__gc_mark).
 * Called by i's slice's marker, or by the driver alone. */
static void validate_one(work_t *w, marker_t *m, size_t i)
{
    if (settled(w, i))
        return;
    gc_head_t *h = member_head(w, i);
    ouro_object_t *o = gc_object_of(h);
    uint8_t *st = member_st(w, i);
    /* acquire: as ouro__gc_is_dead; DIRTY was made visible by H2 */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
    if (gc & GC_DEAD) {
        *st |= ST_SKIP; /* its own dealloc frees it */
        m->deaths++;
        return;
    }
    int64_t c = gc_count(o);
    if (c <= 0 || c != (int64_t)member_cnt(w, i)->c1 || (*st & ST_FORCE) || (gc & w->dirty)) {
        mark_push(w, m, i, h);
        if (!w->parallel)
            mark_drain(w, m);
    }
}

/* The part of segment j inside positions [lo, hi), as ranks [*a, *b). */
static inline bool seg_piece(const work_t *w, int j, size_t lo, size_t hi, size_t *a, size_t *b)
{
    const seg_t *s = &w->seg[j];
    size_t x = lo > s->base ? lo : s->base, y = hi < s->base + s->g.n ? hi : s->base + s->g.n;
    if (x >= y)
        return false;
    *a = x - s->base;
    *b = y - s->base;
    return true;
}

static void run_phase(work_t *w, int phase, int id)
{
    marker_t *m = &w->m[id];
    size_t a, b;
    switch (phase) {
    case PH_WALK:
        walk_segment(w, id);
        break;
    case PH_APPLY:
        /* the references the other segments' walks met into ours: by now
         * each has its index (ours: we walked it) */
        for (int k = 0; k < w->nsegs; k++) {
            if (k == id)
                continue;
            hvec_t *v = &w->m[k].out[id];
            for (size_t x = 0; x < v->n; x++) {
                uint64_t s = sc_load(v->v[x]);
                if (likely((s & S_TAG) && idx_seg((size_t)(s >> 1)) == id))
                    count_in(w, (size_t)(s >> 1));
                else
                    m->misplaced = true;
            }
        }
        break;
    case PH_MARK:
        /* A member marked by now survives whatever validation finds (it
         * only ever marks more), so it is relinked here, while its header
         * is in cache, and VALIDATE skips it.  Members marked from a later
         * root of the slice, or by another marker, are relinked by
         * VALIDATE. */
        for (int j = 0; j < w->nsegs; j++) {
            if (!seg_piece(w, j, m->lo, m->hi, &a, &b))
                continue;
            seg_t *s = &w->seg[j];
            gc_head_t **gv = s->g.v;
            const mcount_t *cnt = s->cnt;
            const uint8_t *st = s->st, *mk = s->mark;
            for (size_t l = a; l < b; l++) {
                /* the headers are scattered: ask for them ahead (the
                 * prefix and the object header share a line or two) */
                if (l + PREFETCH_AHEAD < b)
                    __builtin_prefetch(gv[l + PREFETCH_AHEAD], 1);
                marker_pause(m);
                gc_head_t *h = gv[l];
                /* mark bytes: see the top; relaxed: the dirty bit is read
                 * again, after H2, by the validation */
                if (!__atomic_load_n(&mk[l], __ATOMIC_RELAXED) &&
                    ((int64_t)cnt[l].c1 > (int64_t)cnt[l].in || (st[l] & ST_FORCE) ||
                     (__atomic_load_n(&gc_object_of(h)->gc, __ATOMIC_RELAXED) & w->dirty))) {
                    mark_push(w, m, idx_make(j, l), h);
                    mark_drain_local(w, m);
                }
                if (__atomic_load_n(&mk[l], __ATOMIC_RELAXED))
                    relink_at(w, s, l);
            }
        }
        mark_drain(w, m);
        break;
    case PH_VALIDATE:
        for (int j = 0; j < w->nsegs; j++) {
            if (!seg_piece(w, j, m->lo, m->hi, &a, &b))
                continue;
            seg_t *s = &w->seg[j];
            for (size_t l = a; l < b; l++) {
                if (s->st[l] & ST_RELINKED)
                    continue;
                marker_pause(m);
                size_t i = idx_make(j, l);
                validate_one(w, m, i);
                /* settled now (marked or dead): relink it at once;
                 * otherwise a candidate, which a later rejection may still
                 * mark */
                if (settled(w, i))
                    relink_one(w, i);
                else if (!ivec_push(&m->cand, i))
                    m->oom = true;
            }
        }
        mark_drain(w, m);
        break;
    }
}

/* ---- running a phase on the markers (gcpool.c) ---- */
typedef struct phase_arg_s {
    work_t *w;
    int phase;
} phase_arg_t;

static void phase_pass(void *arg, int id)
{
    phase_arg_t *a = arg;
    run_phase(a->w, a->phase, id);
}

/* Run `phase` on `n` markers: this thread is marker 0. */
static void parallel_phase(work_t *w, int phase, int n)
{
    phase_arg_t a = {w, phase};
    ouro__gc_pool_run(n, phase_pass, &a);
    /* relaxed: the helpers are done (gcpool.c's mk_lock ordered their writes) */
    atomic_store_explicit(&w->idle, 0, memory_order_relaxed);
}


/* ================================================================== */
/* the driver's entry points                                           */
/* ================================================================== */
static work_t work; /* gc_mutex: one collection at a time */

/* Out of memory half-way (or a member met outside its segment): every
 * member survives.  Walk G's list (its next chain is intact) and give each
 * its link and location back, whatever its scratch word holds; in a full
 * collection every member gets the last id (one group: the next full
 * collection walks generation 2 in one segment and spreads the ids
 * again). */
static size_t relink_all(work_t *w)
{
    size_t n = 0;
    uint32_t loc = w->loc | (w->ids ? ouro__gc_id_loc(GC_IDS - 1) : 0);
    gc_head_t *prev = w->G;
    for (gc_head_t *h = (gc_head_t *)atomic_load_explicit(&w->G->next, memory_order_relaxed); h != w->G;
         h = (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed)) { /* relaxed: ours */
        atomic_store_explicit(&h->prev, (uintptr_t)prev, memory_order_relaxed);
        ouro_object_t *o = gc_object_of(h);
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED); /* see gc_bits_set */
        if ((gc & (GC_LOC_MASK | GC_DIRTY)) != loc)
            ouro__gc_bits_set(o, GC_LOC_MASK | GC_DIRTY, loc);
        prev = h;
        n++;
    }
    atomic_store_explicit(&w->G->prev, (uintptr_t)prev, memory_order_relaxed);
    if (w->ids)
        memset(ouro__gc.id_first, 0, sizeof ouro__gc.id_first);
    return n;
}

/* Before the walk: the segments.  In a full collection with several
 * markers, segment k starts at the first member of generation 2 whose id
 * is in group k (ouro__gc.id_first; segment 0 at G's first member, so it
 * also holds the young lists and generation 1, which come first in G);
 * otherwise segment 0 is all of G.  Then room for about `expect`
 * members, and the buffers for references between segments. */
static bool segments_setup(work_t *w, size_t expect)
{
    int K = w->nsegs;
    gc_head_t *G = w->G;
    w->seg[0].from = (gc_head_t *)atomic_load_explicit(&G->next, memory_order_relaxed); /* ours */
    for (int k = 1; k < K; k++) {
        gc_head_t *start = G;
        for (unsigned id = ((unsigned)k * GC_IDS + (unsigned)K - 1) / (unsigned)K; id < GC_IDS; id++)
            if (ouro__gc.id_first[id]) {
                start = ouro__gc.id_first[id];
                break;
            }
        w->seg[k].from = w->seg[k - 1].to = start;
    }
    w->seg[K - 1].to = G;
    for (int k = 0; k < OURO_GC_MAX_MARKERS; k++)
        w->seg[k].g.n = 0;
    /* room for what the lists say G holds, so the walk seldom reallocs (a
     * hint: the young counts are allocations minus deallocations) */
    size_t want = expect / (size_t)K;
    for (int k = 0; k < K && want < ((size_t)1 << 32); k++)
        if (ouro__hvec_grow(&w->seg[k].g, want))
            (void)seg_reserve(&w->seg[k]);
    if (K > 1)
        for (int k = 0; k < K; k++)
            if ((w->m[k].out = ouro_calloc((size_t)K, sizeof *w->m[k].out)) == NULL)
                return false;
    return true;
}

/* After the walk: where each segment lies in G's order, and the markers'
 * slices of it for MARK and VALIDATE (equal, whatever the segments). */
static void slices_setup(work_t *w)
{
    size_t n = 0;
    gc_head_t *before = w->G;
    for (int k = 0; k < w->nsegs; k++) {
        seg_t *s = &w->seg[k];
        s->base = n;
        s->before = before;
        if (s->g.n)
            before = s->g.v[s->g.n - 1];
        n += s->g.n;
    }
    w->n = n;
    w->id_mul = n ? ((uint64_t)GC_IDS << 32) / n : 0;
    if ((size_t)w->nmarkers * 4096 > n)
        w->nmarkers = n >= 8192 ? (int)(n / 4096) : 1; /* too little to share */
    size_t K = (size_t)w->nmarkers;
    for (size_t k = 0; k < K; k++) {
        w->m[k].lo = n * k / K;
        w->m[k].hi = n * (k + 1) / K;
    }
    w->parallel = K > 1;
}

/* The member at position `pos` of G's order. */
static gc_head_t *head_at(const work_t *w, size_t pos)
{
    for (int j = 0; j < w->nsegs; j++) {
        const seg_t *s = &w->seg[j];
        if (pos < s->base + s->g.n)
            return s->g.v[pos - s->base];
    }
    return NULL;
}

bool ouro__gc_mark(gc_head_t *G, size_t expect, const gc_set_t *set, int dest, hvec_t *garbage,
                   uint32_t dirty, void (*h2)(void), void (*settle)(void), gc_mark_report_t *out)
{
    uint64_t *phase_ns = out->phase_ns;
    uint64_t t = ouro__gc_now_ns(), t1;
#define PHASE_END(ph) (t1 = ouro__gc_now_ns(), phase_ns[ph] = t1 - t, t = t1)
    work_t *w = &work;
    memset(w, 0, sizeof *w);
    w->seg = segs;
    cds_lfs_init(&w->shared);
    w->dirty = dirty;
    w->G = G;
    w->set = set;
    w->dest = dest;
    /* a full collection spreads generation 2's ids over its survivors; any
     * other collection into generation 2 appends with the last id */
    w->ids = set->maxgen == 2;
    w->loc = ouro__gc_loc_old(dest) | (dest == 2 && !w->ids ? ouro__gc_id_loc(GC_IDS - 1) : 0);
    int K = ouro_gc_get_markers();
    if ((size_t)K * 4096 > expect)
        K = expect >= 8192 ? (int)(expect / 4096) : 1; /* too little to share */
    if (K > 1)
        K = ouro__gc_pool_ready(K);
    w->nmarkers = K;
    w->nsegs = w->ids ? K : 1;
    bool oom = !segments_setup(w, expect), misplaced = false;
    ouro_read_begin(); /* an RCU reader while traversing */
    if (!oom) {
        /* The walk: each member's scratch word becomes its index; COUNT is
         * done on the way, while the header is in cache */
        if (w->nsegs > 1)
            parallel_phase(w, PH_WALK, w->nsegs);
        else
            walk_segment(w, 0);
        for (int k = 0; k < w->nsegs; k++)
            oom |= w->m[k].oom;
    }
    PHASE_END(OURO_GC_PHASE_WALK);
    if (!oom && w->nsegs > 1)
        parallel_phase(w, PH_APPLY, w->nsegs);
    for (int k = 0; k < w->nsegs; k++)
        misplaced |= w->m[k].misplaced;
    /* the segments are generation 2's id groups, kept by gctrack.c and
     * gcapi.c: a member met outside its group's segment means a broken
     * invariant (its counts may be wrong): everything survives, and the
     * ids start again from one group */
    ouro_assert(!misplaced);
    oom |= misplaced;
    slices_setup(w);
    out->examined = w->n;
    out->markers = (unsigned)w->nmarkers;
    out->user_code = false;
    PHASE_END(OURO_GC_PHASE_COUNT);
    if (!oom) {
        parallel_phase(w, PH_MARK, w->nmarkers);
        PHASE_END(OURO_GC_PHASE_MARK);
        ouro_read_end();
        h2();
        ouro_read_begin();
        PHASE_END(OURO_GC_PHASE_H2);
        for (int i = 0; i < w->nmarkers; i++)
            w->m[i].deaths = 0; /* deaths met while marking: H2 covered them */
        parallel_phase(w, PH_VALIDATE, w->nmarkers);
        size_t deaths = 0;
        for (int i = 0; i < w->nmarkers; i++) {
            deaths += w->m[i].deaths;
            oom |= w->m[i].oom;
        }
        /* the candidates, in one array (marker 0's) */
        for (int i = 1; !oom && i < w->nmarkers; i++)
            for (size_t k = 0; k < w->m[i].cand.n; k++)
                if (!ivec_push(&w->m[0].cand, w->m[i].cand.v[k]))
                    oom = true;
        bool par = w->parallel;
        w->parallel = false;
        ivec_t *cand = &w->m[0].cand;
        /* A member that died after H2 may be inside its death's barrier
         * sequence, its referents not shaded yet: wait until every such
         * sequence has closed, then look at the candidates again (a death
         * seen now began after its referents were validated as garbage
         * together with it, so the loop ends). */
        while (!oom && deaths) {
            ouro_read_end();
            settle();
            ouro_read_begin();
            w->m[0].deaths = 0;
            for (size_t k = 0; k < cand->n; k++)
                validate_one(w, &w->m[0], cand->v[k]);
            deaths = w->m[0].deaths;
        }
        oom |= w->m[0].oom;
        w->parallel = par;
        /* settled candidates are relinked; the rest is garbage */
        for (size_t k = 0; !oom && k < cand->n; k++) {
            size_t i = cand->v[k];
            if (settled(w, i)) {
                relink_one(w, i);
            } else if (!ivec_push(&w->garbage, i) || !ouro__hvec_push(garbage, member_head(w, i))) {
                oom = true;
            } else {
                /* while its header is in cache: will step 5 run user code?
                 * (relaxed: FINALIZED is the driver's; HAS_WEAKREFS cannot
                 * appear on garbage, which no one can reach) */
                ouro_object_t *o = gc_object_of(member_head(w, i));
                uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
                if ((gc & GC_HAS_WEAKREFS) || (o->type->finalize && !(gc & GC_FINALIZED)))
                    out->user_code = true;
            }
        }
    } else {
        PHASE_END(OURO_GC_PHASE_MARK);
    }
    ouro_read_end();
    PHASE_END(OURO_GC_PHASE_VALIDATE);
#undef PHASE_END
    w->oom = oom;
    if (oom)
        garbage->n = 0;
    return !oom;
}

size_t ouro__gc_mark_end(void)
{
    work_t *w = &work;
    size_t n;
    if (w->oom) {
        n = relink_all(w);
    } else {
        for (size_t k = 0; k < w->garbage.n; k++)
            relink_one(w, w->garbage.v[k]);
        n = w->n;
        atomic_store_explicit(&w->G->prev, (uintptr_t)(n ? head_at(w, n - 1) : w->G),
                              memory_order_relaxed); /* ours: gc_mutex */
        if (w->ids)
            /* the first member of each id (relink_one gave them), or NULL
             * for an id no position got */
            for (uint32_t id = 0; id < GC_IDS; id++) {
                size_t pos = id_start(w, id);
                ouro__gc.id_first[id] = pos < n && id_at(w, pos) == id ? head_at(w, pos) : NULL;
            }
    }
    /* appended to generation 2 with the last id: the first of them starts
     * that id if no member had it */
    gc_head_t *first = (gc_head_t *)atomic_load_explicit(&w->G->next, memory_order_relaxed); /* ours */
    if (w->dest == 2 && first != w->G && ouro__gc.id_first[GC_IDS - 1] == NULL &&
        (!w->ids || w->oom))
        ouro__gc.id_first[GC_IDS - 1] = first;
    for (int i = 0; i < OURO_GC_MAX_MARKERS; i++) {
        marker_t *m = &w->m[i];
        ouro__hvec_free(&m->stack);
        ivec_free(&m->cand);
        if (m->out) {
            for (int k = 0; k < w->nsegs; k++)
                ouro__hvec_free(&m->out[k]);
            ouro_free(m->out);
            m->out = NULL;
        }
        seg_t *s = &w->seg[i];
        /* do not keep big arrays after the heap shrank (room is asked
         * for in powers of two, and segments differ in size from one
         * collection to the next) */
        if (i < w->nsegs && s->g.cap > 4 * s->g.n + 65536)
            seg_free(s);
    }
    ivec_free(&w->garbage);
    cds_lfs_destroy(&w->shared);
    return n;
}

/* Re-validate the garbage after user code ran (weak reference callbacks,
 * finalizers): a count changed, a store shaded, or a death.  The garbage
 * keeps its scratch words (its index) until ouro__gc_mark_end. */
void ouro__gc_revalidate(hvec_t *garbage, void (*settle)(void))
{
    work_t *w = &work;
    bool par = w->parallel;
    w->parallel = false;
    size_t deaths;
    do {
        w->m[0].deaths = 0;
        for (size_t i = 0; i < garbage->n; i++)
            validate_one(w, &w->m[0], (size_t)(sc_load(garbage->v[i]) >> 1));
        deaths = w->m[0].deaths;
        size_t k = 0;
        for (size_t i = 0; i < garbage->n; i++)
            if (!settled(w, (size_t)(sc_load(garbage->v[i]) >> 1)))
                garbage->v[k++] = garbage->v[i];
        garbage->n = k;
        if (deaths)
            settle(); /* as in ouro__gc_mark */
    } while (deaths);
    w->parallel = par;
}
