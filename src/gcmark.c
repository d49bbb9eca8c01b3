/*
 * gcmark.c — steps 1-4 of a collection (see the protocol at the top of
 * gc.c), in passes over the members of G:
 *   WALK      walk G's list into an array; each member's scratch word
 *             (its prefix prev) becomes TAG | its index in the array;
 *   COUNT     for each member, snapshot its count (c1) and add one to the
 *             internal-reference count of each referent that is in G;
 *   MARK      mark from each member referenced from outside G (c1 above
 *             its internal references), forced, or shaded;
 *   (H2)
 *   VALIDATE  validate each unmarked member; give every member that is
 *             settled (marked, or dead) its list link back and its new
 *             generation at once, so no pass of its own relinks G.  What
 *             is left is the garbage, relinked by ouro__gc_mark_end once
 *             the driver is done with it.
 * A member's collection state lives in dense arrays indexed by its index,
 * not in its header, so that markers never need an atomic read-modify-
 * write (on this kind of machine a locked RMW per object costs as much as
 * a second marker gains):
 *   cnt[i]  c1 and the internal count: written only by the marker whose
 *           slice of the array holds i; a reference to a member of another
 *           slice is buffered during COUNT and added by that slice's
 *           marker in APPLY, after a barrier;
 *   st[i]   FORCE, SKIP (dead), RELINKED: written only by i's slice's
 *           marker (or the driver alone);
 *   mark[i] reachable: a byte any marker may set, with relaxed atomic
 *           byte loads and stores; two markers that both see it clear both
 *           traverse the member, which is harmless (marking is idempotent).
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
#define S_PEND 2ull /* one marker, before the walk reaches it: PEND | references from inside G << 2 */

/* Relaxed: between the walk and its relink, a member's scratch word is
 * written only by the driver (the walk, before the passes: gcpool.c's
 * mk_lock orders it before them) and by its slice's marker (relink); other
 * markers only read it, and a relink racing such a read is harmless: the
 * reader sees either the index or a pointer (settled), both right. */
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

/* ================================================================== */
/* work: the G array, mark stacks, markers                             */
/* ================================================================== */
/* A chunk of marking work shared between markers. */
#define CHUNK 256
typedef struct chunk_s {
    struct cds_lfs_node node;
    size_t n;
    gc_head_t *v[CHUNK];
} chunk_t;

/* A growable array of indices into the G array. */
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

/* Each on its own cache lines (two: the adjacent-line prefetcher): a
 * marker writes its stack's length and counters at every object, and a
 * neighbour's line ping-ponging between cores made 2 markers' MARK slower
 * than one's. */
typedef struct marker_s {
    _Alignas(128) hvec_t stack;
    ivec_t cand;           /* VALIDATE: members left unmarked, by index */
    ivec_t *out;           /* COUNT: out[k]: references to members of marker k's slice (parallel) */
    size_t lo, hi;         /* this marker's slice of the G array */
    bool oom;
    size_t deaths;         /* validation: members found dead */
    unsigned since_qs;     /* objects handled since this marker's last quiescent state */
} marker_t;

/* One collection's shared work state. */
typedef struct work_s {
    hvec_t g;              /* every member of G */
    mcount_t *cnt;         /* the dense state, as long as g.cap: see the top */
    uint8_t *st;
    uint8_t *mark;
    size_t state_cap;
    int nmarkers;
    bool parallel;         /* several markers share the passes */
    uint32_t dirty;        /* this collection's GC_DIRTY bit */
    gc_head_t *G;          /* G's list head */
    uint32_t loc;          /* the gc location bits of a survivor (its new generation) */
    ivec_t garbage;        /* indices of the garbage, relinked at the end */
    struct cds_lfs_stack shared; /* chunks; pops take its mutex (ABA), pushes are lock-free */
    _Atomic int idle;
    bool oom;              /* [driver] gave up: everything survives */
    marker_t m[OURO_GC_MAX_MARKERS];
} work_t;

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

/* mark[i]: relaxed byte loads and stores, see the top of this file */
static inline bool is_marked(const work_t *w, size_t i)
{
    return __atomic_load_n(&w->mark[i], __ATOMIC_RELAXED) != 0;
}

static inline bool settled(const work_t *w, size_t i)
{
    return is_marked(w, i) || (w->st[i] & ST_SKIP);
}

typedef struct visit_ctx_s {
    work_t *w;
    marker_t *m;
    const gc_set_t *set; /* the fused walk's */
} visit_ctx_t;

/* Which marker's slice holds index i (slices are n*k/K .. n*(k+1)/K). */
static inline int owner_of(const work_t *w, size_t i)
{
    size_t n = w->g.n, K = (size_t)w->nmarkers;
    int k = (int)(i * K / n);
    while (k > 0 && i < n * (size_t)k / K)
        k--;
    while (k + 1 < (int)K && i >= n * (size_t)(k + 1) / K)
        k++;
    return k;
}

/* One more reference from inside G to member j, by j's slice's marker. */
static inline void count_in(work_t *w, size_t j)
{
    if (unlikely(w->cnt[j].in == IN_MAX))
        w->st[j] |= ST_FORCE; /* 2^32 references from inside G: a root */
    else
        w->cnt[j].in++;
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

/* COUNT fused with the walk (one marker): a referent the walk has not
 * reached has no index yet, so its count waits in its scratch word (PEND)
 * until the walk gives it one.  Only G members' words are written, found by
 * their gc bits. */
static int visit_count_walk(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    if (r == NULL || !ouro__is_container(r))
        return 0;
    /* relaxed: the location bits are stable (member_bits); r's memory
     * stays ours while we are an RCU reader */
    if (!member_bits(c->set, __atomic_load_n(&r->gc, __ATOMIC_RELAXED)))
        return 0;
    gc_head_t *h = gc_head_of(r);
    uint64_t s = sc_load(h);
    if (s & S_TAG)
        count_in(c->w, (size_t)(s >> 1));
    else
        sc_store(h, (s & S_PEND) ? s + 4 : (S_PEND | 4)); /* 2^62 references: not on this machine */
    return 0;
}

/* COUNT: one more reference to `r` from inside G. */
static int visit_count(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    size_t j = in_g(r);
    if (j == NO_MEMBER)
        return 0;
    marker_t *m = c->m;
    if (likely(j >= m->lo && j < m->hi))
        count_in(c->w, j);
    else if (!ivec_push(&m->out[owner_of(c->w, j)], j))
        m->oom = true;
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
    if (is_marked(w, i))
        return;
    __atomic_store_n(&w->mark[i], 1, __ATOMIC_RELAXED); /* see the top of this file */
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
    visit_ctx_t ctx = {w, m, NULL};
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

/* ---- the phases, each run by every marker over its slice of G ---- */
enum { PH_COUNT, PH_APPLY, PH_MARK, PH_VALIDATE };
#define PREFETCH_AHEAD 16

static inline void prefetch_member(const work_t *w, size_t i, size_t hi)
{
    /* the passes run over the array in order, the headers scattered: ask
     * for them ahead (the prefix and the object header share a line or
     * two) */
    if (i + PREFETCH_AHEAD < hi)
        __builtin_prefetch(w->g.v[i + PREFETCH_AHEAD], 1);
}

/* COUNT for member i: snapshot its count as c1, then count its
 * references into G. */
static inline void count_one(work_t *w, visit_ctx_t *ctx, size_t i, ouro_visit_fn *visit)
{
    ouro_object_t *o = gc_object_of(w->g.v[i]);
    /* the dirty bits are left as they are: this collection's only goes
     * from 0 to 1 until relink, so a barrier that sees it set may skip its
     * RMW (ouro__gc_shade) without losing a shade (object.h) */
    /* acquire: as ouro__gc_is_dead (a dead member is not traversed) */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
    int64_t c = (gc & GC_DEAD) ? 0 : gc_count(o);
    /* a count of zero: dying right now (GC_DEAD comes next); a root, so
     * that nothing it still holds is taken for garbage meanwhile; an
     * unstable or huge count: a root too */
    if (c <= 0 || c > (int64_t)C1_MAX)
        w->st[i] |= ST_FORCE;
    else
        w->cnt[i].c1 = (uint32_t)c;
    if (!(gc & GC_DEAD))
        o->type->traverse(o, visit, ctx);
}

/* A settled member (marked: it survives; or dead: a zombie) gets its list
 * link back and its new location: G's array is its list's order. */
static void relink_one(work_t *w, size_t i)
{
    gc_head_t *h = w->g.v[i];
    atomic_store_explicit(&h->prev, (uintptr_t)(i ? w->g.v[i - 1] : w->G),
                          memory_order_relaxed); /* ours: gc_mutex */
    ouro_object_t *o = gc_object_of(h);
    /* relaxed: see gc_bits_set */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if ((gc & (GC_LOC_MASK | GC_DIRTY)) != w->loc)
        ouro__gc_bits_set(o, GC_LOC_MASK | GC_DIRTY, w->loc);
    w->st[i] |= ST_RELINKED;
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
    gc_head_t *h = w->g.v[i];
    ouro_object_t *o = gc_object_of(h);
    /* acquire: as ouro__gc_is_dead; DIRTY was made visible by H2 */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
    if (gc & GC_DEAD) {
        w->st[i] |= ST_SKIP; /* its own dealloc frees it */
        m->deaths++;
        return;
    }
    int64_t c = gc_count(o);
    if (c <= 0 || c != (int64_t)w->cnt[i].c1 || (w->st[i] & ST_FORCE) || (gc & w->dirty)) {
        mark_push(w, m, i, h);
        if (!w->parallel)
            mark_drain(w, m);
    }
}

static void run_phase(work_t *w, int phase, int id)
{
    marker_t *m = &w->m[id];
    visit_ctx_t ctx = {w, m, NULL};
    size_t lo = m->lo, hi = m->hi;
    switch (phase) {
    case PH_COUNT:
        /* this slice's state is ours alone until APPLY: clear it here, in
         * parallel, rather than in the walk */
        memset(w->cnt + lo, 0, (hi - lo) * sizeof *w->cnt);
        memset(w->st + lo, 0, hi - lo);
        memset(w->mark + lo, 0, hi - lo);
        for (size_t i = lo; i < hi; i++) {
            prefetch_member(w, i, hi);
            marker_pause(m);
            count_one(w, &ctx, i, visit_count);
        }
        break;
    case PH_APPLY:
        /* the references the other markers met into this slice */
        for (int k = 0; k < w->nmarkers; k++) {
            if (k == id)
                continue;
            ivec_t *v = &w->m[k].out[id];
            for (size_t x = 0; x < v->n; x++)
                count_in(w, v->v[x]);
        }
        break;
    case PH_MARK:
        /* A member marked by now survives whatever validation finds (it
         * only ever marks more), so it is relinked here, while its header
         * is in cache, and VALIDATE skips it.  Members marked from a later
         * root of the slice, or by another marker, are relinked by
         * VALIDATE. */
        for (size_t i = lo; i < hi; i++) {
            prefetch_member(w, i, hi);
            marker_pause(m);
            gc_head_t *h = w->g.v[i];
            /* relaxed: the dirty bit is read again, after H2, by the validation */
            if (!is_marked(w, i) &&
                ((int64_t)w->cnt[i].c1 > (int64_t)w->cnt[i].in || (w->st[i] & ST_FORCE) ||
                 (__atomic_load_n(&gc_object_of(h)->gc, __ATOMIC_RELAXED) & w->dirty))) {
                mark_push(w, m, i, h);
                mark_drain_local(w, m);
            }
            if (is_marked(w, i))
                relink_one(w, i);
        }
        mark_drain(w, m);
        break;
    case PH_VALIDATE:
        for (size_t i = lo; i < hi; i++) {
            if (w->st[i] & ST_RELINKED)
                continue;
            marker_pause(m);
            validate_one(w, m, i);
            /* settled now (marked or dead): relink it at once; otherwise a
             * candidate, which a later rejection may still mark */
            if (settled(w, i))
                relink_one(w, i);
            else if (!ivec_push(&m->cand, i))
                m->oom = true;
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

/* Run `phase` on `w->nmarkers` markers: this thread is marker 0. */
static void parallel_phase(work_t *w, int phase)
{
    phase_arg_t a = {w, phase};
    ouro__gc_pool_run(w->nmarkers, phase_pass, &a);
    /* relaxed: the helpers are done (gcpool.c's mk_lock ordered their writes) */
    atomic_store_explicit(&w->idle, 0, memory_order_relaxed);
}


/* ================================================================== */
/* the driver's entry points                                           */
/* ================================================================== */
static work_t work; /* gc_mutex: one collection at a time */

/* Out of memory half-way: every member survives.  Walk G's list (its next
 * chain is intact) and give each its link and location back, whatever its
 * scratch word holds. */
static size_t relink_all(work_t *w)
{
    size_t n = 0;
    gc_head_t *prev = w->G;
    for (gc_head_t *h = (gc_head_t *)atomic_load_explicit(&w->G->next, memory_order_relaxed); h != w->G;
         h = (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed)) { /* relaxed: ours */
        atomic_store_explicit(&h->prev, (uintptr_t)prev, memory_order_relaxed);
        ouro_object_t *o = gc_object_of(h);
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED); /* see gc_bits_set */
        if ((gc & (GC_LOC_MASK | GC_DIRTY)) != w->loc)
            ouro__gc_bits_set(o, GC_LOC_MASK | GC_DIRTY, w->loc);
        prev = h;
        n++;
    }
    atomic_store_explicit(&w->G->prev, (uintptr_t)prev, memory_order_relaxed);
    return n;
}

/* The dense state for g.cap members (kept between collections). */
static bool state_reserve(work_t *w)
{
    size_t cap = w->g.cap;
    if (w->state_cap >= cap)
        return true;
    mcount_t *cnt = ouro_realloc(w->cnt, cap * sizeof *cnt);
    if (cnt == NULL)
        return false;
    w->cnt = cnt;
    uint8_t *st = ouro_realloc(w->st, cap);
    if (st == NULL)
        return false;
    w->st = st;
    uint8_t *mark = ouro_realloc(w->mark, cap);
    if (mark == NULL)
        return false;
    w->mark = mark;
    w->state_cap = cap;
    return true;
}

static void state_free(work_t *w)
{
    ouro_free(w->cnt);
    ouro_free(w->st);
    ouro_free(w->mark);
    w->cnt = NULL;
    w->st = w->mark = NULL;
    w->state_cap = 0;
}

/* Slices of the array, and COUNT's buffers for references into other
 * slices when there are several markers. */
static bool markers_setup(work_t *w)
{
    size_t n = w->g.n, K = (size_t)w->nmarkers;
    for (size_t k = 0; k < K; k++) {
        marker_t *m = &w->m[k];
        m->lo = n * k / K;
        m->hi = n * (k + 1) / K;
        if (K > 1 && (m->out = ouro_calloc(K, sizeof *m->out)) == NULL)
            return false;
    }
    return true;
}

bool ouro__gc_mark(gc_head_t *G, size_t expect, const gc_set_t *set, int dest, hvec_t *garbage,
                   uint32_t dirty, void (*h2)(void), void (*settle)(void), gc_mark_report_t *out)
{
    uint64_t *phase_ns = out->phase_ns;
    uint64_t t = ouro__gc_now_ns(), t1;
#define PHASE_END(ph) (t1 = ouro__gc_now_ns(), phase_ns[ph] = t1 - t, t = t1)
    work_t *w = &work;
    hvec_t gv = w->g; /* the arrays are kept between collections */
    mcount_t *cnt = w->cnt;
    uint8_t *st = w->st, *mark = w->mark;
    size_t state_cap = w->state_cap;
    memset(w, 0, sizeof *w);
    w->g = gv;
    w->g.n = 0;
    w->cnt = cnt;
    w->st = st;
    w->mark = mark;
    w->state_cap = state_cap;
    /* room for what the lists say G holds, so the walk does not realloc
     * (a hint: the young counts are allocations minus deallocations) */
    if (expect < ((size_t)1 << 32) && ouro__hvec_grow(&w->g, expect))
        (void)state_reserve(w);
    cds_lfs_init(&w->shared);
    w->dirty = dirty;
    w->G = G;
    w->loc = ouro__gc_loc_old(dest);
    w->nmarkers = ouro_gc_get_markers();
    bool oom = false;
    ouro_read_begin(); /* an RCU reader while traversing */
    /* The walk: each member's scratch word becomes its index.  With one
     * marker, COUNT is done on the way, while the header is in cache. */
    bool fused = w->nmarkers == 1;
    w->m[0].lo = 0;
    w->m[0].hi = SIZE_MAX; /* the fused walk's slice: every index */
    visit_ctx_t ctx0 = {w, &w->m[0], set};
    for (gc_head_t *h = (gc_head_t *)atomic_load_explicit(&G->next, memory_order_relaxed); h != G;
         h = (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed)) { /* relaxed: ours, gc_mutex */
        size_t i = w->g.n;
        if (!ouro__hvec_push(&w->g, h) || (w->state_cap <= i && !state_reserve(w))) {
            oom = true;
            break;
        }
        marker_pause(&w->m[0]);
        if (!fused) {
            sc_store(h, S_TAG | (uint64_t)i << 1);
            continue;
        }
        uint64_t s = sc_load(h);
        uint64_t pend = (s & S_PEND) ? s >> 2 : 0;
        sc_store(h, S_TAG | (uint64_t)i << 1);
        w->st[i] = pend > IN_MAX ? ST_FORCE : 0;
        w->mark[i] = 0;
        w->cnt[i].in = pend > IN_MAX ? 0 : (uint32_t)pend;
        count_one(w, &ctx0, i, visit_count_walk);
    }
    PHASE_END(OURO_GC_PHASE_WALK);
    if ((size_t)w->nmarkers * 4096 > w->g.n)
        w->nmarkers = w->g.n >= 8192 ? (int)(w->g.n / 4096) : 1; /* too little to share */
    if (oom || fused)
        w->nmarkers = 1;
    if (w->nmarkers > 1)
        w->nmarkers = ouro__gc_pool_ready(w->nmarkers);
    w->parallel = w->nmarkers > 1;
    out->examined = w->g.n;
    out->markers = (unsigned)w->nmarkers;
    out->user_code = false;
    if (!oom && !markers_setup(w))
        oom = true;
    if (!oom && !fused) {
        parallel_phase(w, PH_COUNT);
        if (w->parallel) {
            for (int i = 0; i < w->nmarkers; i++)
                oom |= w->m[i].oom;
            if (!oom)
                parallel_phase(w, PH_APPLY);
        }
    }
    PHASE_END(OURO_GC_PHASE_COUNT);
    if (!oom) {
        parallel_phase(w, PH_MARK);
        PHASE_END(OURO_GC_PHASE_MARK);
        ouro_read_end();
        h2();
        ouro_read_begin();
        PHASE_END(OURO_GC_PHASE_H2);
        for (int i = 0; i < w->nmarkers; i++)
            w->m[i].deaths = 0; /* deaths met while marking: H2 covered them */
        parallel_phase(w, PH_VALIDATE);
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
            } else if (!ivec_push(&w->garbage, i) || !ouro__hvec_push(garbage, w->g.v[i])) {
                oom = true;
            } else {
                /* while its header is in cache: will step 5 run user code?
                 * (relaxed: FINALIZED is the driver's; HAS_WEAKREFS cannot
                 * appear on garbage, which no one can reach) */
                ouro_object_t *o = gc_object_of(w->g.v[i]);
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
        n = w->g.n;
        if (n)
            atomic_store_explicit(&w->G->prev, (uintptr_t)w->g.v[n - 1], memory_order_relaxed);
    }
    for (int i = 0; i < OURO_GC_MAX_MARKERS; i++) {
        marker_t *m = &w->m[i];
        ouro__hvec_free(&m->stack);
        ivec_free(&m->cand);
        if (m->out) {
            for (int k = 0; k < w->nmarkers; k++)
                ivec_free(&m->out[k]);
            ouro_free(m->out);
            m->out = NULL;
        }
    }
    ivec_free(&w->garbage);
    cds_lfs_destroy(&w->shared);
    if (w->g.cap > 2 * w->g.n + 65536) {
        ouro__hvec_free(&w->g); /* do not keep big arrays after the heap shrank */
        state_free(w);
    }
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
