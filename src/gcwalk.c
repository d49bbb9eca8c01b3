/*
 * gcwalk.c — the walk of a collection (see the top of gcmark.c) and the
 * segments it walks: WALK with COUNT fused, which gives each member of G
 * its index, its c1 and its references from inside G; APPLY, which counts
 * the references one segment's walk met into another; where the segments
 * start (generation 2's id groups) and lie in G's order afterwards; and
 * where each generation-2 id starts in that order (id_at, which relink
 * calls for every member, is inline in gcmark.h).  Marking, relink and
 * validation are in gcmark.c.
 */
#include "config.h"
#include "gcmark.h"

/* ================================================================== */
/* a segment's arrays                                                  */
/* ================================================================== */
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

void ouro__gc_seg_free(seg_t *s)
{
    ouro__hvec_free(&s->g);
    ouro_free(s->cnt);
    ouro_free(s->st);
    ouro_free(s->mark);
    s->cnt = NULL;
    s->st = s->mark = NULL;
    s->state_cap = 0;
}

/* WALK with COUNT fused: a referent in our own segment that the walk has
 * not reached has no index yet, so its count waits in its scratch word
 * (PEND) until the walk gives it one; only we write our segment's scratch
 * words.  A referent in another segment is handed to that segment's
 * marker (APPLY).  Members are found by their gc bits. */
static int visit_count_walk_segs(ouro_object_t *r, void *arg)
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
    int k = member_seg(c->w, gc);
    if (k != c->k) {
        if (!ouro__hvec_push(&c->m->out[k], h))
            c->m->oom = true;
        return 0;
    }
    uint64_t s = sc_load(h);
    if (s & S_TAG) {
        if (likely(idx_seg((size_t)(s >> 1)) == c->k))
            count_in(c->cnt, c->st, idx_local((size_t)(s >> 1)));
        else
            c->m->misplaced = true;
    } else {
        sc_store(h, (s & S_PEND) ? s + 4 : (S_PEND | 4)); /* 2^62 references: not on this machine */
    }
    return 0;
}

/* The same with one segment (every collection but a full one with several
 * markers), where an index is a rank.  A tagged scratch word is a member's
 * that the walk has reached (only members of G have one, as in_g): no need
 * to read its gc bits; an untagged one may belong to any container, so
 * membership is checked before it becomes a pending count. */
static int visit_count_walk(ouro_object_t *r, void *arg)
{
    visit_ctx_t *c = arg;
    if (r == NULL || !ouro__is_container(r))
        return 0;
    gc_head_t *h = gc_head_of(r);
    uint64_t s = sc_load(h);
    if (s & S_TAG) {
        count_in(c->cnt, c->st, (size_t)(s >> 1));
        return 0;
    }
    /* relaxed: as in visit_count_walk_segs */
    if (member_bits(c->set, __atomic_load_n(&r->gc, __ATOMIC_RELAXED)))
        sc_store(h, (s & S_PEND) ? s + 4 : (S_PEND | 4));
    return 0;
}

/* The walk's prefetch follows the order of the last walk of its segment,
 * kept in g.v.  Between two full collections generation 2's members only
 * leave that order (deaths) or join it at the end: the member of rank l
 * lay at l + off then, off the members that died before it since.  Where
 * it is not there, look further, up to RESYNC_FAR places (a run of deaths:
 * a freed structure); a member not found is new (the young lists, at the
 * end) or beyond a longer run: look again only RESYNC_PAUSE members later
 * (a look costs about as much as walking a few members). */
#define RESYNC_EVERY 16
#define RESYNC_FAR 4096
#define RESYNC_PAUSE 1024

/* How much further than position p member h lies in v[0..n), 0 if not
 * within RESYNC_FAR. */
static ouro_noinline size_t walk_resync(gc_head_t *const *v, size_t p, size_t n, const gc_head_t *h)
{
    size_t end = p + RESYNC_FAR < n ? p + RESYNC_FAR : n;
    for (size_t q = p + 1; q < end; q++)
        if (v[q] == h)
            return q - p;
    return 0;
}

/* Room for the member of rank l in segment s: its slot in g and its
 * dense state.  False: out of memory. */
static ouro_noinline bool walk_room(seg_t *s, size_t l)
{
    s->g.n = l;
    return ouro__hvec_grow(&s->g, l + 1) && seg_reserve(s);
}

/* WALK (fused with COUNT) over segment k: give each member its index, its
 * pending count, and its c1; count its references. */
void ouro__gc_walk_segment(work_t *w, int k)
{
    marker_t *m = &w->m[k];
    seg_t *s = &w->seg[k];
    const bool several = w->nsegs > 1;
    visit_ctx_t ctx = {.w = w, .m = m, .k = k, .several = several, .set = w->set, .cnt = s->cnt, .st = s->st};
    /* the segment's arrays in locals: a byte store may alias any field, so
     * fields would be loaded again after each */
    gc_head_t **gv = s->g.v;
    mcount_t *cnt = s->cnt;
    uint8_t *st = s->st, *mk = s->mark;
    size_t room = s->g.cap < s->state_cap ? s->g.cap : s->state_cap, l = 0;
    /* the last walk's order, in gv[l + off ..) until overwritten (off >= 0) */
    size_t hint_n = s->hint_n < room ? s->hint_n : room, off = 0, retry = 0;
    uintptr_t last_step = 0;
    for (gc_head_t *h = s->from; h != s->to;
         h = (gc_head_t *)atomic_load_explicit(&h->next, memory_order_relaxed), l++) { /* relaxed: ours, gc_mutex */
        if (unlikely(l == room)) {
            if (!walk_room(s, l)) {
                m->oom = true;
                return;
            }
            gv = s->g.v;
            cnt = ctx.cnt = s->cnt;
            st = ctx.st = s->st;
            mk = s->mark;
            room = s->g.cap < s->state_cap ? s->g.cap : s->state_cap;
        }
        /* the list chased node by node is a chain of dependent loads: ask
         * ahead for the member the last walk had WALK_AHEAD places further
         * (above; a stale guess, even freed memory, costs a useless
         * prefetch, never a fault).  Read before gv[l] is overwritten. */
        if (likely(l + off < hint_n)) {
            /* checked every RESYNC_EVERY members: off is then behind by
             * the deaths since, at most that many places, and the prefetch
             * still runs ahead */
            if (unlikely((l & (RESYNC_EVERY - 1)) == 0) && gv[l + off] != h && l >= retry) {
                size_t d = walk_resync(gv, l + off, hint_n, h);
                off += d;
                if (d == 0)
                    retry = l + RESYNC_PAUSE;
            }
            if (l + off + WALK_AHEAD < hint_n)
                __builtin_prefetch(gv[l + off + WALK_AHEAD], 1);
        } else {
            /* no order to go by (a first collection, members new since
             * the last): a list built by one thread allocating in a row
             * follows addresses, one block size apart, so while the step
             * to the next member repeats, ask for the member WALK_AHEAD
             * steps on (a scattered list rarely repeats a step: little
             * asked for in vain) */
            uintptr_t step = atomic_load_explicit(&h->next, memory_order_relaxed) - (uintptr_t)h; /* ours */
            if (step == last_step)
                __builtin_prefetch((const void *)((uintptr_t)h + step * WALK_AHEAD), 1); /* any address: no fault */
            last_step = step;
        }
        gv[l] = h;
        if (unlikely((l & (PAUSE_EVERY - 1)) == PAUSE_EVERY - 1))
            ouro__qsbr_pause(); /* as marker_pause */
        uint64_t sc = sc_load(h);
        uint64_t pend = (sc & S_PEND) ? sc >> 2 : 0;
        sc_store(h, S_TAG | (uint64_t)idx_make(k, l) << 1);
        mk[l] = 0;
        ouro_object_t *o = gc_object_of(h);
        /* the dirty bits are left as they are: this collection's only goes
         * from 0 to 1 until relink, so a barrier that sees it set may skip
         * its RMW (ouro__gc_shade) without losing a shade (object.h) */
        /* acquire: as ouro__gc_is_dead (a dead member is not traversed) */
        uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_ACQUIRE);
        if (unlikely(several && member_seg(w, gc) != k))
            m->misplaced = true;
        int64_t c = (gc & GC_DEAD) ? 0 : gc_count(o);
        /* a count of zero: dying right now (GC_DEAD comes next); a root, so
         * that nothing it still holds is taken for garbage meanwhile; an
         * unstable or huge count, or 2^32 references from inside G: a root
         * too (c1 is then not read) */
        uint8_t force = ((uint64_t)c - 1 >= C1_MAX || pend > IN_MAX) ? ST_FORCE : 0; /* c outside [1, C1_MAX] */
        cnt[l] = (mcount_t){.c1 = (uint32_t)c, .in = pend > IN_MAX ? 0 : (uint32_t)pend};
        st[l] = force;
        if (!(gc & GC_DEAD))
            o->type->traverse(o, several ? visit_count_walk_segs : visit_count_walk, &ctx);
    }
    s->g.n = l;
}

/* APPLY by marker `id`: the references the other segments' walks met into
 * its segment; by now each has its index (ours: we walked it). */
void ouro__gc_apply_segment(work_t *w, int id)
{
    marker_t *m = &w->m[id];
    for (int k = 0; k < w->nsegs; k++) {
        if (k == id)
            continue;
        hvec_t *v = &w->m[k].out[id];
        for (size_t x = 0; x < v->n; x++) {
            uint64_t s = sc_load(v->v[x]);
            if (likely((s & S_TAG) && idx_seg((size_t)(s >> 1)) == id))
                count_in(w->seg[id].cnt, w->seg[id].st, idx_local((size_t)(s >> 1)));
            else
                m->misplaced = true;
        }
    }
}

/* ================================================================== */
/* where the segments lie                                              */
/* ================================================================== */
/* Before the walk: the segments.  In a full collection with several
 * markers, segment k starts at the first member of generation 2 whose id
 * is in group k (ouro__gc.id_first; segment 0 at G's first member), and
 * the last segment that is not empty also holds the young lists and
 * generation 1, which come last in G (member_seg); otherwise segment 0 is
 * all of G.  Then room for about `expect`
 * members, and the buffers for references between segments. */
bool ouro__gc_segments_setup(work_t *w, size_t expect)
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
    w->young_seg = 0;
    for (int k = K - 1; k > 0; k--)
        if (w->seg[k].from != G) {
            w->young_seg = k;
            break;
        }
    for (int k = 0; k < OURO_GC_MAX_MARKERS; k++) {
        w->seg[k].hint_n = w->seg[k].g.n;
        w->seg[k].g.n = 0;
    }
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

/* Whether a full collection gives its survivors the ids of their
 * positions again, in equal groups (a CAS on each member whose id
 * changes: with 1% of the members replaced between collections, a third
 * of them), rather than let each keep its own: when many join generation 2
 * now (they are given an id anyway), or when this walk's segments came out
 * unequal (their walks take unequal times), as deaths, and members joining
 * at the end with the last id, make them over a few collections. */
static bool spread_ids(const work_t *w)
{
    if (w->young * 8 > w->n)
        return true;
    if (w->nsegs < 2)
        return false;
    size_t fair = w->n / (size_t)w->nsegs;
    for (int k = 0; k < w->nsegs; k++) {
        size_t g = w->seg[k].g.n;
        if ((g > fair ? g - fair : fair - g) * 10 > fair)
            return true;
    }
    return false;
}

/* After the walk: where each segment lies in G's order, and the markers'
 * shares of it: in MARK each marker's own segment if each walked one
 * (its dense state and the headers are then the ones its walk wrote), an
 * equal slice otherwise; in VALIDATE an equal slice, whatever the
 * segments. */
void ouro__gc_slices_setup(work_t *w)
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
    /* generation 2 comes first in a full collection's G: the others are
     * the members from the first that is not in it (found in log n steps) */
    size_t lo = 0, hi = w->ids ? n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        /* relaxed: the location bits are stable (member_bits) */
        if (gen2_bits(__atomic_load_n(&gc_object_of(ouro__gc_head_at(w, mid))->gc, __ATOMIC_RELAXED)))
            lo = mid + 1;
        else
            hi = mid;
    }
    w->young = n - lo;
    w->respread = w->ids && spread_ids(w);
    w->id_mul = n ? ((uint64_t)GC_IDS << 32) / n : 0;
    if ((size_t)w->nmarkers * 4096 > n)
        w->nmarkers = n >= 8192 ? (int)(n / 4096) : 1; /* too little to share */
    size_t K = (size_t)w->nmarkers;
    for (size_t k = 0; k < K; k++) {
        marker_t *m = &w->m[k];
        m->lo = n * k / K;
        m->hi = n * (k + 1) / K;
        bool own = w->nsegs == (int)K;
        m->mlo = own ? w->seg[k].base : m->lo;
        m->mhi = own ? w->seg[k].base + w->seg[k].g.n : m->hi;
        /* fewer than 2^32 grains: G is not 2^44 members on this machine */
        uint64_t ng = (m->mhi - m->mlo + MARK_GRAIN - 1) / MARK_GRAIN;
        /* relaxed: the markers start MARK after the pool's barrier */
        atomic_store_explicit(&m->grains, ng << 32, memory_order_relaxed);
        m->claimed = 0;
    }
    w->parallel = K > 1;
}

/* The member at position `pos` of G's order. */
gc_head_t *ouro__gc_head_at(const work_t *w, size_t pos)
{
    for (int j = 0; j < w->nsegs; j++) {
        const seg_t *s = &w->seg[j];
        if (pos < s->base + s->g.n)
            return s->g.v[pos - s->base];
    }
    return NULL;
}

/* ================================================================== */
/* generation-2 ids                                                    */
/* ================================================================== */
/* The first position with id `id` (or n if none): the inverse of id_at. */
size_t ouro__gc_id_start(const work_t *w, uint32_t id)
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
