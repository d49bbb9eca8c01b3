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
 * k-th share of the id groups, and the last segment also the young lists
 * and generation 1, which come last in G.  Any other collection walks G in
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
 *           then by the marker that claimed the member's grain in MARK
 *           (claim_grain: each grain goes to one marker), by the marker
 *           whose slice (an equal share of G's order, whatever the
 *           segments) holds it in VALIDATE, or the driver alone;
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
 * Files: this one holds marking (MARK), relink, validation (VALIDATE), the
 * passes' dispatch and the driver's entry points; gcwalk.c the walk
 * (WALK, APPLY), the segments and where generation 2's ids start;
 * gcmark.h what both share: the scratch word, the dense state, the work
 * state, and the static inline helpers both call per object.
 */
#include "config.h"
#include "gcmark.h"

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
/* marking: mark stacks, shared chunks                                 */
/* ================================================================== */
/* A chunk of marking work shared between markers. */
#define CHUNK 256
typedef struct chunk_s {
    struct cds_lfs_node node;
    size_t n;
    gc_head_t *v[CHUNK];
} chunk_t;

/* growing the arrays of indices (ivec_t: gcmark.h) */
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

/* Mark the member whose mark byte is *mk (head h) and put it on the
 * marker's stack, unless it is marked already. */
static ouro_noinline void mark_stack_grow_push(marker_t *m, gc_head_t *h)
{
    if (!ouro__hvec_push(&m->stack, h))
        m->oom = true;
}

static inline void mark_push_at(marker_t *m, uint8_t *mk, gc_head_t *h)
{
    /* relaxed atomic byte load and store: see the top of this file */
    if (__atomic_load_n(mk, __ATOMIC_RELAXED))
        return;
    __atomic_store_n(mk, 1, __ATOMIC_RELAXED);
    /* the growth out of line: a visitor that calls nothing saves no registers */
    if (likely(m->stack.n < m->stack.cap))
        m->stack.v[m->stack.n++] = h;
    else
        mark_stack_grow_push(m, h);
}

/* The same for member i, in any segment. */
static inline void mark_push(work_t *w, marker_t *m, size_t i, gc_head_t *h)
{
    mark_push_at(m, &w->seg[idx_seg(i)].mark[idx_local(i)], h);
}

static int visit_mark(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    size_t j = in_g(r);
    if (j == NO_MEMBER)
        return 0;
    /* one segment: j is a rank in it (a load and a shift less per referent) */
    if (c->mark0)
        mark_push_at(c->m, &c->mark0[j], gc_head_of(r));
    else
        mark_push(c->w, c->m, j, gc_head_of(r));
    return 0;
}

/* Traverse everything on the marker's own stack (sharing chunks of it
 * with idle markers).  Called after each root, so the stack stays small
 * and the objects on it are still in cache. */
static void mark_drain_local(work_t *w, marker_t *m)
{
    visit_ctx_t *ctx = &m->vc;
    while (m->stack.n) {
        gc_head_t *h = m->stack.v[--m->stack.n];
        ouro_object_t *o = gc_object_of(h);
        marker_pause(m);
        if (!ouro__gc_is_dead(o))
            o->type->traverse(o, visit_mark, ctx);
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
/* How far ahead MARK prefetches headers: far enough to cover a miss to
 * memory when the members lie scattered (a churned heap: 16 ahead left one
 * marker at 25 ns per member there, 128 at 10-11; see the notes on issue 4) */
#define PREFETCH_AHEAD 128

/* What relinking the members of segment s needs, read once: a byte store
 * may alias any field, so in a loop the fields would be loaded again for
 * each member. */
typedef struct relink_s {
    gc_head_t **gv;
    gc_head_t *before;
    uint8_t *st;
    size_t base;
    uint64_t id_mul;
    uint32_t loc;
    bool ids, respread;
} relink_t;

static inline relink_t relink_of(const work_t *w, const seg_t *s)
{
    return (relink_t){s->g.v, s->before, s->st, s->base, w->id_mul, w->loc, w->ids, w->respread};
}

/* A settled member (marked: it survives; or dead: a zombie) gets its list
 * link back and its new location: the segments, one after the other, are
 * the list's order. */
static inline void relink_at(const relink_t *r, size_t l)
{
    gc_head_t *h = r->gv[l];
    atomic_store_explicit(&h->prev, (uintptr_t)(l ? r->gv[l - 1] : r->before),
                          memory_order_relaxed); /* ours: gc_mutex */
    ouro_object_t *o = gc_object_of(h);
    /* relaxed: see gc_bits_set */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    uint32_t loc = r->loc;
    /* a full collection: the id of its position, or the member keeps its
     * own (the last id for one that joins generation 2: it comes last in
     * G), which spares most members the CAS (see spread_ids, gcwalk.c) */
    if (r->ids && r->respread)
        loc |= ouro__gc_id_loc(id_by_mul(r->id_mul, r->base + l));
    else if (r->ids)
        loc |= gen2_bits(gc) ? (gc & GC_STRIPE_MASK) : ouro__gc_id_loc(GC_IDS - 1);
    if ((gc & (GC_LOC_MASK | GC_DIRTY)) != loc)
        ouro__gc_bits_set(o, GC_LOC_MASK | GC_DIRTY, loc);
    r->st[l] |= ST_RELINKED;
}

static void relink_one(work_t *w, size_t i)
{
    relink_t r = relink_of(w, &w->seg[idx_seg(i)]);
    relink_at(&r, idx_local(i));
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
        m->rejects++;
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

/* A grain of MARK positions [*lo, *hi) from marker t's share: the first
 * one left if t is the claimer's own marker, else the last one. */
static bool claim_grain(marker_t *t, bool own, size_t *lo, size_t *hi)
{
    /* relaxed: the counter only decides who gets which grain; the pass's
     * data is ordered by the barriers around it */
    uint64_t g = atomic_load_explicit(&t->grains, memory_order_relaxed);
    for (;;) {
        uint64_t front = g & UINT32_MAX, back = g >> 32;
        if (front >= back)
            return false;
        uint64_t next = own ? g + 1 : g - ((uint64_t)1 << 32);
        /* relaxed: as the load */
        if (atomic_compare_exchange_weak_explicit(&t->grains, &g, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *lo = t->mlo + (size_t)(own ? front : back - 1) * MARK_GRAIN;
            *hi = *lo + MARK_GRAIN < t->mhi ? *lo + MARK_GRAIN : t->mhi;
            return true;
        }
    }
}

/* MARK over positions [lo, hi) of G, prefetching up to position pf (a
 * marker that goes on with the next grain of its share asks for it ahead
 * too: the members not asked for at the start of each grain cost one
 * marker 5% when it asked only 16 ahead): mark from each root there, and
 * relink each member marked by now.  A member marked by now survives
 * whatever validation finds (it only ever marks more), so it is relinked
 * here, while its header is in cache, and VALIDATE skips it.  Members
 * marked from a later root, or by another marker, are relinked by
 * VALIDATE. */
static void mark_roots(work_t *w, marker_t *m, size_t lo, size_t hi, size_t pf)
{
    size_t a, b;
    for (int j = 0; j < w->nsegs; j++) {
        if (!seg_piece(w, j, lo, hi, &a, &b))
            continue;
        seg_t *s = &w->seg[j];
        /* pf >= hi > s->base, the piece being there */
        size_t pf_end = pf - s->base < s->g.n ? pf - s->base : s->g.n;
        gc_head_t **gv = s->g.v;
        const mcount_t *cnt = s->cnt;
        const uint8_t *st = s->st, *mk = s->mark;
        const uint32_t dirty = w->dirty;
        const relink_t rl = relink_of(w, s);
        for (size_t l = a; l < b; l++) {
            /* the headers are scattered: ask for them ahead (the prefix
             * and the object header share a line or two) */
            if (l + PREFETCH_AHEAD < pf_end)
                __builtin_prefetch(gv[l + PREFETCH_AHEAD], 1);
            marker_pause(m);
            gc_head_t *h = gv[l];
            /* mark bytes: see the top; relaxed: the dirty bit is read
             * again, after H2, by the validation */
            if (!__atomic_load_n(&mk[l], __ATOMIC_RELAXED) &&
                ((int64_t)cnt[l].c1 > (int64_t)cnt[l].in || (st[l] & ST_FORCE) ||
                 (__atomic_load_n(&gc_object_of(h)->gc, __ATOMIC_RELAXED) & dirty))) {
                mark_push(w, m, idx_make(j, l), h);
                mark_drain_local(w, m);
            }
            if (__atomic_load_n(&mk[l], __ATOMIC_RELAXED))
                relink_at(&rl, l);
        }
    }
}

static void run_phase(work_t *w, int phase, int id)
{
    marker_t *m = &w->m[id];
    size_t a, b;
    switch (phase) {
    case PH_WALK:
        ouro__gc_walk_segment(w, id);
        break;
    case PH_APPLY:
        ouro__gc_apply_segment(w, id);
        break;
    case PH_MARK:
        /* its own share first, grain by grain, then the others' last
         * grains: with fixed shares a marker on a slower vCPU (its host
         * core shared) kept the other waiting at the end of the pass (2
         * markers, 4M members: 10.8 and 12.4 ms); stealing from the back
         * leaves each marker the state its walk wrote, in its own caches
         * (claiming grains in turn made both WALK and MARK slower) */
        for (int d = 0; d < w->nmarkers; d++) {
            int v = (id + d) % w->nmarkers;
            /* a thief prefetches nothing past its grain: the owner may be
             * working there (a prefetch for writing takes the line) */
            while (claim_grain(&w->m[v], d == 0, &a, &b)) {
                m->claimed += b - a;
                mark_roots(w, m, a, b, d == 0 ? w->m[v].mhi : b);
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
/* gc_mutex: one collection at a time.  Full collections and the others
 * keep their arrays apart: a young collection's few members would
 * otherwise shrink a full one's arrays and overwrite the order its walk
 * prefetches by. */
static seg_t segs_full[OURO_GC_MAX_MARKERS], segs_young[OURO_GC_MAX_MARKERS];
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

bool ouro__gc_mark(gc_head_t *G, size_t expect, const gc_set_t *set, int dest, hvec_t *garbage,
                   uint32_t dirty, void (*h2)(void), void (*settle)(void), gc_mark_report_t *out)
{
    uint64_t *phase_ns = out->phase_ns;
    uint64_t t = ouro__gc_now_ns(), t1;
#define PHASE_END(ph) (t1 = ouro__gc_now_ns(), phase_ns[ph] = t1 - t, t = t1)
    work_t *w = &work;
    memset(w, 0, sizeof *w);
    cds_lfs_init(&w->shared);
    w->dirty = dirty;
    w->G = G;
    w->set = set;
    w->dest = dest;
    /* a full collection gives its survivors generation-2 ids (spread by
     * position or kept: spread_ids); any other collection into generation
     * 2 appends with the last id */
    w->ids = set->maxgen == 2;
    w->seg = w->ids ? segs_full : segs_young;
    w->loc = ouro__gc_loc_old(dest) | (dest == 2 && !w->ids ? ouro__gc_id_loc(GC_IDS - 1) : 0);
    int K = ouro__gc_markers_for(expect);
    if (K > 1)
        K = ouro__gc_pool_ready(K);
    w->nmarkers = K;
    w->nsegs = w->ids ? K : 1;
    bool oom = !ouro__gc_segments_setup(w, expect), misplaced = false;
    ouro_read_begin(); /* an RCU reader while traversing */
    if (!oom) {
        /* The walk: each member's scratch word becomes its index; COUNT is
         * done on the way, while the header is in cache */
        if (w->nsegs > 1)
            parallel_phase(w, PH_WALK, w->nsegs);
        else
            ouro__gc_walk_segment(w, 0);
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
    ouro__gc_slices_setup(w);
    /* marking's visits: with one segment an index is a rank in segment 0
     * (the walk is the only pass that reallocates its arrays) */
    for (int i = 0; i < OURO_GC_MAX_MARKERS; i++)
        w->m[i].vc = (visit_ctx_t){.w = w, .m = &w->m[i], .mark0 = w->nsegs == 1 ? w->seg[0].mark : NULL};
    out->examined = w->n;
    out->markers = (unsigned)w->nmarkers;
    out->user_code = false;
    PHASE_END(OURO_GC_PHASE_COUNT);
    if (!oom) {
        parallel_phase(w, PH_MARK, w->nmarkers);
        size_t claimed = 0;
        for (int i = 0; i < w->nmarkers; i++)
            claimed += w->m[i].claimed;
        ouro_assert(claimed == w->n); /* the grains cover G once */
        (void)claimed;
        PHASE_END(OURO_GC_PHASE_MARK);
        ouro_read_end();
        h2();
        ouro_read_begin();
        PHASE_END(OURO_GC_PHASE_H2);
        for (int i = 0; i < w->nmarkers; i++)
            w->m[i].deaths = 0; /* deaths met while marking: H2 covered them */
        parallel_phase(w, PH_VALIDATE, w->nmarkers);
        size_t deaths = 0, rejects = 0;
        for (int i = 0; i < w->nmarkers; i++) {
            deaths += w->m[i].deaths;
            rejects += w->m[i].rejects;
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
        /* Look at the candidates again, after waiting until every store
         * and death sequence open now has closed, for as long as a look
         * met a death or rejected a member:
         *   - a member that died after H2 may be inside its death's
         *     sequence, its referents not shaded yet;
         *   - a rejection marks what the rejected member reaches *now*:
         *     a mutator that held it (the reason it was rejected) may have
         *     cut its edge to a candidate validated before, and dropped
         *     the candidate's last reference: the candidate was live, and
         *     its owner frees it (gc_stress found the collector freeing
         *     it again).  The cut shaded the candidate before its sequence
         *     closed (ouro_store: the slot is written first, then shaded),
         *     so after settle() the next look rejects it, or sees it dead.
         *     A cut made after the rejected member's traversal did not
         *     hide the candidate: the traversal marked it.
         * Each look that goes on settles members for good (marked or
         * dead), so the loop ends. */
        while (!oom && (deaths || rejects)) {
            ouro_read_end();
            settle();
            ouro_read_begin();
            w->m[0].deaths = w->m[0].rejects = 0;
            for (size_t k = 0; k < cand->n; k++)
                validate_one(w, &w->m[0], cand->v[k]);
            deaths = w->m[0].deaths;
            rejects = w->m[0].rejects;
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
        atomic_store_explicit(&w->G->prev, (uintptr_t)(n ? ouro__gc_head_at(w, n - 1) : w->G),
                              memory_order_relaxed); /* ours: gc_mutex */
        if (w->ids && w->respread)
            /* the first member of each id (relink_one gave them), or NULL
             * for an id no position got */
            for (uint32_t id = 0; id < GC_IDS; id++) {
                size_t pos = ouro__gc_id_start(w, id);
                ouro__gc.id_first[id] = pos < n && id_at(w, pos) == id ? ouro__gc_head_at(w, pos) : NULL;
            }
        else if (w->ids && w->young && ouro__gc.id_first[GC_IDS - 1] == NULL)
            /* ids kept: those of generation 2 start where they did (its
             * unlinks keep id_first so), and the members that joined it,
             * last in G, have the last id */
            ouro__gc.id_first[GC_IDS - 1] = ouro__gc_head_at(w, n - w->young);
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
            ouro__gc_seg_free(s);
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
    bool again;
    do {
        w->m[0].deaths = w->m[0].rejects = 0;
        ouro_read_begin(); /* an RCU reader while traversing */
        for (size_t i = 0; i < garbage->n; i++)
            validate_one(w, &w->m[0], (size_t)(sc_load(garbage->v[i]) >> 1));
        ouro_read_end();
        again = w->m[0].deaths || w->m[0].rejects;
        size_t k = 0;
        for (size_t i = 0; i < garbage->n; i++)
            if (!settled(w, (size_t)(sc_load(garbage->v[i]) >> 1)))
                garbage->v[k++] = garbage->v[i];
        garbage->n = k;
        if (again)
            settle(); /* as in ouro__gc_mark */
    } while (again);
    w->parallel = par;
}