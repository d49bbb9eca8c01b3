/*
 * trace.c — allocation tracing, Python's tracemalloc for C: the call stack
 * of every (or of sampled) allocation, plain or object, counted per call
 * site.  Its reports (snapshots, top sites, differences between
 * snapshots, and a leak report at exit) are tracereport.c's, which reads
 * the site table through trace.h.  Owns the layout of a traced block, the
 * site table, the table of traced objects' records and the sampler; takes
 * blocks from, and gives them back to, the thread's plain heap
 * (ouro__dheap) through heap.c's and alloc.c's own paths.  Objects are
 * made and freed by the object layer, which asks here (see "objects"
 * below).
 *
 * Costs nothing when off.  As debug mode does (alloc.c), a traced thread's
 * front pointer ouro__heap is the sentinel, whose pools are all empty: its
 * every small allocation misses the inline path and reaches alloc_slow,
 * which already tests for the sentinel, and comes here.  ouro_trace_start
 * points every live thread's front pointer at the sentinel
 * (ouro__heap_route_all); a thread's first allocation after ouro_trace_stop
 * points it back at its heap.  Large allocations are slow anyway and look
 * at the flag.  A traced block's pointer is never the start of a block, so
 * every free of one misses ouro_free's inline path and reaches
 * free_generic, which asks here; untraced blocks, even of a traced thread,
 * are freed by the inline path as ever.
 *
 * A traced block (a block of a size class, in a plain pool):
 *
 *   0        8        16           24       32 (or more, to align)
 *   | site   | tag    | size,offset | weight | user bytes ...
 *
 *   site    the call-site record (trace_site_t) its bytes are counted at
 *   tag     block address ^ process key ^ TRACE_SALT: in the cookie word,
 *           so it is neither the free nor the fresh cookie (the block is
 *           live) and tells a traced block from any other
 *   weight  blocks this sample stands for, 16.16 fixed point (1.0 when
 *           every allocation is traced): estimates are exact sums at free
 * A traced large block keeps the large layout; its header holds the same
 * three figures (ouro_large_t's trace_*).
 *
 * Sampling (OURO_TRACE_SAMPLE = S bytes, tcmalloc's): each thread counts
 * down the bytes it allocates, and the allocation that takes the count to
 * zero or below is traced; the next count is drawn from an exponential
 * distribution of mean S.  A block of n bytes is then traced with
 * probability p = 1 - exp(-n/S), whichever allocations surround it, and
 * stands for 1/p blocks (n/p bytes) in the estimates.  S <= 1 traces every
 * allocation.
 *
 * The tracer's own memory (site records, snapshots) comes from the OS,
 * never from the heap it describes; allocations made while the tracer runs
 * on a thread (backtrace's first call loads libgcc_s, stdio buffers of a
 * report) go to the plain heap untraced: a thread-local guard, `busy`.
 *
 * Counters: each site counts its live traced blocks and their bytes with
 * relaxed atomics.  Enough: a block's free happens after its allocation
 * (its pointer went from one to the other), so in each counter's
 * modification order the decrement follows the increment, and no counter
 * goes below zero; a snapshot wants no order among counters.
 */
#include "object.h" /* objects: GC_DEAD, read at exit */
#include "trace.h"

#include <errno.h>
#include <execinfo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_SALT 0x7472616365626c6bull /* "traceblk" */
#define TRACE_HDR 32u                     /* user pointer - block start, unaligned requests */
#define SKIP_MAX 16                       /* frames of ouro between backtrace() and the call site */
#define DEFAULT_LEAK_FRAMES 16            /* OURO_TRACE_LEAKS without OURO_TRACE */

typedef struct trace_head_s {
    trace_site_t *site;
    uintptr_t tag;
    uint32_t size, offset;
    uint64_t weight;
} trace_head_t;

_Static_assert(sizeof(trace_head_t) == TRACE_HDR, "the user bytes follow the trace header");

_Atomic int ouro__tracing;

/* the site table: chains hang from buckets; a site is never freed (blocks
 * point at it for as long as they live), so readers walk chains without a
 * lock: acquire loads pair with the release that publishes a new head */
trace_site_t *_Atomic *_Atomic ouro__trace_buckets;
_Atomic size_t ouro__trace_nsites;
static pthread_mutex_t site_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *bump, *bump_end; /* [site_lock] site memory, 1 MiB chunks from the OS */

static __thread int busy __attribute__((tls_model("initial-exec")));          /* in the tracer */
static __thread int64_t countdown __attribute__((tls_model("initial-exec")));  /* bytes to the next sample */
static __thread bool countdown_set __attribute__((tls_model("initial-exec")));
static __thread uint64_t rng __attribute__((tls_model("initial-exec")));

/* The library's own bookkeeping allocations (e.g. the batches of deferred
 * frees) are not the program's: they are made untraced, or the leak report
 * would list them under whatever user call freed an object last. */
void ouro__trace_internal_begin(void)
{
    busy++;
}

void ouro__trace_internal_end(void)
{
    busy--;
}

/* ---- sampling ---- */

static uint64_t rng_next(void)
{
    if (rng == 0)
        rng = (ouro__thread_id() ^ ouro__hot.key ^ ouro__now_ms()) | 1;
    uint64_t x = rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static long sample_bytes(void)
{
    return ouro__options[OURO_OPTION_TRACE_SAMPLE];
}

/* Bytes to the next sample: exponential with mean `s`. */
static ouro_noinline int64_t draw(long s)
{
    double u = ((double)(rng_next() >> 11) + 1.0) * 0x1p-53; /* (0, 1] */
    double v = -log(u) * (double)s;
    return v > 4e18 ? (int64_t)4e18 : (int64_t)v + 1;
}

/* Whether this allocation of `size` bytes is traced.  Inline: a sampled
 * thread's every small allocation comes this way. */
static inline __attribute__((always_inline)) bool sample_due(size_t size)
{
    long s = sample_bytes();
    if (s <= 1)
        return true;
    if (!countdown_set) {
        countdown = draw(s);
        countdown_set = true;
    }
    countdown -= (int64_t)(size ? size : 1);
    if (countdown > 0)
        return false;
    countdown = draw(s);
    return true;
}

/* 1/p in 16.16, p the probability that a block of `size` bytes is traced. */
static uint64_t weight_of(size_t size)
{
    long s = sample_bytes();
    if (s <= 1)
        return ONE_WEIGHT;
    double p = -expm1(-(double)(size ? size : 1) / (double)s);
    double w = (double)ONE_WEIGHT / p;
    return w > 1e15 ? (uint64_t)1e15 : (uint64_t)w;
}

/* ---- sites ---- */

static uint64_t frames_hash(const void *const *f, unsigned n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (unsigned i = 0; i < n; i++) {
        h ^= (uint64_t)(uintptr_t)f[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h;
}

static trace_site_t *chain_find(trace_site_t *s, uint64_t h, const void *const *f, unsigned n)
{
    /* acquire: pairs with the release that published each node */
    for (; s; s = atomic_load_explicit(&s->next, memory_order_acquire))
        if (s->hash == h && s->nframes == n && memcmp(s->frames, f, n * sizeof *f) == 0)
            return s;
    return NULL;
}

/* Memory for a site, from chunks of our own.  [site_lock] */
static void *site_mem(size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63; /* own cache lines: sites' counters are hot */
    if ((size_t)(bump_end - bump) < bytes) {
        size_t chunk = (size_t)1 << 20;
        uint8_t *m = ouro__os_map(chunk);
        if (m == NULL)
            return NULL;
        bump = m;
        bump_end = m + chunk;
    }
    void *p = bump;
    bump += bytes;
    return p;
}

/* The site of frames f[0..n), made if new; NULL without memory. */
static trace_site_t *site_intern(const void *const *f, unsigned n)
{
    uint64_t h = frames_hash(f, n);
    trace_site_t *_Atomic *b = &ouro__trace_buckets[h & (NBUCKETS - 1)];
    trace_site_t *s = chain_find(atomic_load_explicit(b, memory_order_acquire), h, f, n);
    if (s)
        return s;
    pthread_mutex_lock(&site_lock);
    trace_site_t *head = atomic_load_explicit(b, memory_order_acquire);
    s = chain_find(head, h, f, n); /* another thread may have made it meanwhile */
    if (s == NULL) {
        s = site_mem(sizeof *s + n * sizeof *f);
        if (s) {
            /* relaxed: the release store below publishes all of it */
            atomic_store_explicit(&s->next, head, memory_order_relaxed);
            s->hash = h;
            s->nframes = n;
            memcpy(s->frames, f, n * sizeof *f);
            /* release: pairs with the acquire loads of chain_find */
            atomic_store_explicit(b, s, memory_order_release);
            /* relaxed: only sizes a snapshot's first try (which retries) */
            atomic_fetch_add_explicit(&ouro__trace_nsites, 1, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&site_lock);
    return s;
}

/* The site of the allocation whose public call returns to `site`: the
 * stack from `site` outwards, `frames` deep.  [busy] */
static trace_site_t *site_capture(int frames, const void *site)
{
    if (frames == 1) /* the call site is all we need, and we have it: no unwinding */
        return site_intern(&site, 1);
    void *buf[OURO_TRACE_MAX_FRAMES + SKIP_MAX];
    int n = backtrace(buf, frames + SKIP_MAX);
    int from = -1;
    for (int i = 0; i < n; i++)
        if (buf[i] == site) {
            from = i;
            break;
        }
    if (from < 0) { /* not found (the public call was reached oddly): the call site alone */
        buf[0] = (void *)site;
        from = 0;
        n = 1;
    }
    int len = n - from < frames ? n - from : frames;
    return site_intern((const void *const *)buf + from, (unsigned)len);
}

static void count(trace_site_t *s, int64_t sign, size_t size, uint64_t weight)
{
    /* relaxed: see the top of the file */
    atomic_fetch_add_explicit(&s->count, sign, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->size, sign * (int64_t)size, memory_order_relaxed);
    if (weight == ONE_WEIGHT)
        return; /* stands for itself alone */
    atomic_fetch_add_explicit(&s->extra_count, sign * (int64_t)(weight - ONE_WEIGHT), memory_order_relaxed);
    int64_t est = (int64_t)(((unsigned __int128)size * weight) >> 16);
    atomic_fetch_add_explicit(&s->extra_size, sign * (est - (int64_t)size), memory_order_relaxed);
}

/* ---- blocks ---- */

/* A block of class `cls` from the thread's plain heap (made on first use).
 * Inline, as sample_due. */
static inline __attribute__((always_inline)) void *plain_alloc(int cls, bool *zero)
{
    ouro_heap_t *heap = ouro__dheap;
    ouro_pool_t *pool = heap->cur[cls];
    if (pool->free) {
        if (zero)
            *zero = ouro__block_is_fresh(pool, pool->free);
        return ouro__heap_pop(heap, (size_t)cls);
    }
    return ouro__heap_alloc_slow(heap, cls, zero);
}

/* Make the thread's front pointer agree with the tracing state. */
static inline void route_update(void)
{
    ouro_heap_t *h = ouro__dheap;
    if (h == &ouro__empty_heap)
        return; /* no heap yet (out of memory): the front stays the sentinel */
    if (ouro__trace_on()) {
        if (ouro__heap_front() != &ouro__empty_heap)
            __atomic_store_n(&ouro__heap, &ouro__empty_heap, __ATOMIC_RELAXED);
        return;
    }
    /* seq_cst store, then seq_cst load of the flag; ouro_trace_start stores
     * the flag, then the sentinel here (seq_cst both): if we read the flag
     * clear, its store of the sentinel comes after ours and wins */
    __atomic_store_n(&ouro__heap, h, __ATOMIC_SEQ_CST);
    if (atomic_load_explicit(&ouro__tracing, memory_order_seq_cst))
        __atomic_store_n(&ouro__heap, &ouro__empty_heap, __ATOMIC_RELAXED);
}

static void *traced_large(size_t size, size_t align, bool *zero, trace_site_t *s, uint64_t w)
{
    void *p = ouro__large_alloc(size, align, zero);
    if (p == NULL)
        return NULL;
    ouro_large_t *l = ouro__large_find(p, ouro__unit_kind((uintptr_t)p));
    l->trace_site = s;
    l->trace_size = size;
    l->trace_weight = w;
    count(s, 1, size, w);
    return p;
}

static void *traced_small(size_t size, size_t align, bool *zero, trace_site_t *s, uint64_t w)
{
    size_t slack = align > 16 ? align - 16 : 0;
    if (size > OURO_LARGE_MAX - TRACE_HDR - slack)
        return traced_large(size, align, zero, s, w);
    bool fresh = false;
    uint8_t *b = plain_alloc(ouro__size_class(TRACE_HDR + slack + size), zero ? &fresh : NULL);
    if (b == NULL)
        return NULL;
    uintptr_t a = align > 16 ? align : 16;
    uintptr_t user = ((uintptr_t)b + TRACE_HDR + slack) & ~(a - 1);
    trace_head_t *h = (trace_head_t *)b;
    h->site = s;
    h->size = (uint32_t)size;
    h->offset = (uint32_t)(user - (uintptr_t)b);
    h->weight = w;
    /* relaxed atomic: heap walks read the cookie word of live blocks */
    __atomic_store_n(&h->tag, (uintptr_t)b ^ ouro__hot.key ^ TRACE_SALT, __ATOMIC_RELAXED);
    if (zero)
        *zero = fresh; /* a fresh block is zero past its first two words */
    count(s, 1, size, w);
    return (void *)user;
}

/* A traced allocation of `size` bytes; `large` when the caller is the
 * large path.  NULL with errno ENOMEM. */
static void *traced_alloc(size_t size, size_t align, bool *zero, const void *site, int frames, bool large)
{
    busy++;
    trace_site_t *s = site_capture(frames, site);
    void *p;
    if (s == NULL) /* no memory for the site: the block goes untraced */
        p = large ? ouro__large_alloc(size, align, zero) : NULL;
    else
        p = large ? traced_large(size, align, zero, s, weight_of(size))
                  : traced_small(size, align, zero, s, weight_of(size));
    busy--;
    return p;
}

void *ouro__trace_alloc(int cls, size_t size, size_t align, bool *zero, const void *site)
{
    /* relaxed: as ouro__trace_on; route_update orders what must be */
    int frames = atomic_load_explicit(&ouro__tracing, memory_order_relaxed);
    void *p = NULL;
    if (frames && !busy && sample_due(size))
        p = traced_alloc(size, align, zero, site, frames, false);
    if (p == NULL)
        p = plain_alloc(cls, zero);
    route_update();
    return p;
}

void *ouro__trace_large(size_t size, size_t align, bool *zero, const void *site)
{
    /* relaxed: as ouro__trace_on */
    int frames = atomic_load_explicit(&ouro__tracing, memory_order_relaxed);
    if (frames && !busy && sample_due(size))
        return traced_alloc(size, align, zero, site, frames, true);
    return ouro__large_alloc(size, align, zero);
}

/* The header of the traced block whose user pointer is `p`, or NULL. */
static trace_head_t *traced_head(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    if (ouro__unit_kind(u) != OURO_UNIT_ARENA)
        return NULL;
    ouro_pool_t *pool = ouro__pool_of(u);
    if (pool == NULL || pool->kind != OURO_KIND_PLAIN)
        return NULL;
    uint8_t *b;
    if (ouro__pool_is_block(pool, u - TRACE_HDR)) {
        b = (uint8_t *)(u - TRACE_HDR); /* the usual offset: no division */
    } else {
        /* relaxed: [init] fields and the carved limit; a valid block was
         * carved before its pointer reached us */
        size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
        uintptr_t start = (uintptr_t)pool->start;
        if (u - start >= ouro__pool_limit(pool))
            return NULL;
        b = (uint8_t *)(start + (u - start) / bs * bs);
    }
    trace_head_t *h = (trace_head_t *)b;
    /* relaxed atomic: a racing (double) free may store the cookie now */
    if (__atomic_load_n(&h->tag, __ATOMIC_RELAXED) != ((uintptr_t)b ^ ouro__hot.key ^ TRACE_SALT) ||
        (uintptr_t)b + h->offset != u)
        return NULL;
    return h;
}

bool ouro__trace_free(void *p)
{
    trace_head_t *h = traced_head(p);
    if (h == NULL)
        return false;
    count(h->site, -1, h->size, h->weight);
    /* the block start is a live block of its pool: the ordinary free takes
     * it (its inline path, or the remote one from another thread), and its
     * cookie overwrites the tag */
    ouro_free(h);
    return true;
}

void ouro__trace_forget_large(ouro_large_t *l)
{
    count(l->trace_site, -1, l->trace_size, l->trace_weight);
    l->trace_site = NULL;
}

bool ouro__trace_usable(const void *p, size_t *out)
{
    trace_head_t *h = traced_head(p);
    if (h == NULL)
        return false;
    ouro_pool_t *pool = ouro__pool_of((uintptr_t)p);
    /* relaxed: an [init] field, published with the pool (release on slot_pool) */
    *out = atomic_load_explicit(&pool->block_size, memory_order_relaxed) - h->offset;
    return true;
}

bool ouro__trace_block_user(uint8_t *block, size_t bs, void **user, size_t *size)
{
    trace_head_t *h = (trace_head_t *)block;
    /* relaxed atomics: a walk may read a header its owner writes right now
     * (it then reports the block or not, either is allowed) */
    if (__atomic_load_n(&h->tag, __ATOMIC_RELAXED) != ((uintptr_t)block ^ ouro__hot.key ^ TRACE_SALT))
        return false;
    uint32_t off = __atomic_load_n(&h->offset, __ATOMIC_RELAXED);
    if (off < TRACE_HDR || off >= bs)
        return false;
    *user = block + off;
    *size = bs - off;
    return true;
}

bool ouro__trace_realloc(void *p, size_t size, const void *site, void **out)
{
    size_t old;
    trace_head_t *h = traced_head(p);
    if (h) {
        old = h->size;
    } else {
        int kind = ouro__unit_kind((uintptr_t)p);
        ouro_large_t *l = kind == OURO_UNIT_LARGE || kind == OURO_UNIT_LARGE_PREV ? ouro__large_find(p, kind) : NULL;
        if (l == NULL || l->trace_site == NULL)
            return false;
        old = l->size;
    }
    /* a new allocation at the realloc's own call site (as tracemalloc): the
     * decision to trace it is made afresh */
    void *q;
    if (size > OURO_LARGE_MAX)
        q = ouro__trace_large(size, 16, NULL, site);
    else
        q = ouro__trace_alloc(ouro__size_class(size), size, 16, NULL, site);
    if (q == NULL) {
        *out = NULL; /* p is untouched */
        return true;
    }
    memcpy(q, p, old < size ? old : size);
    ouro_free(p);
    *out = q;
    return true;
}

/* ---- objects ----
 *
 * An object (ouro_new) has no room for a trace header: its block is laid
 * out by object.c and found at fixed offsets by the collector, biased
 * counting and the heap walk, and its pointer is a block start that the
 * deferred free hands straight to ouro_free.  So a traced object carries
 * one bit in its header (GC_TRACED, object.h), and its record (site, size,
 * weight) lives here, in a table keyed by the object's address: SHARDS
 * open-addressing tables (linear probing, deletion by backward shift), each
 * under its own lock, in memory from the OS.  ouro_new adds the record;
 * the object layer forgets it when the object's memory is freed, after
 * its grace period (qsbr.c), so the counts are those of memory in use.
 *
 * ouro__trace_objects counts the records: the free path asks here only
 * while it is not zero.  Relaxed is enough: a record is added before its
 * object is published (ouro_new has not returned), and its free comes
 * after the publication, so in the counter's modification order the
 * increment precedes that free's load, and no later decrement can take the
 * count to zero while the record is still in the table. */

#define SHARDS 16u   /* few: fork holds them all (TSan tracks at most 64 locks held at once) */
#define SHARD_SHIFT 60 /* the top 4 bits of a key's hash pick its shard */
#define SHARD_MIN 256u /* slots of a shard's first table */

typedef struct obj_rec_s {
    uintptr_t key;       /* the object's address; 0: an empty slot */
    trace_site_t *site;
    uint64_t size;       /* the type's basic_size, as counted at the site */
    uint64_t weight;     /* 16.16, as a block's; 0: no longer counted (dead at exit) */
} obj_rec_t;

typedef struct obj_shard_s {
    pthread_mutex_t lock;
    obj_rec_t *v;         /* [lock] cap slots, at most half of them used */
    size_t cap, n;        /* [lock] */
} __attribute__((aligned(64))) obj_shard_t;

_Static_assert(SHARDS == 1u << (64 - SHARD_SHIFT), "every hash picks a shard");
static obj_shard_t shards[SHARDS] = {[0 ... SHARDS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};
_Atomic size_t ouro__trace_objects;

static uint64_t key_hash(uintptr_t key)
{
    uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static obj_shard_t *shard_of(uint64_t h)
{
    return &shards[h >> SHARD_SHIFT]; /* the low bits pick the slot */
}

/* Double a shard's table (or make its first).  [lock] */
static bool shard_grow(obj_shard_t *sh)
{
    size_t cap = sh->cap ? sh->cap * 2 : SHARD_MIN;
    obj_rec_t *v = ouro__os_map(cap * sizeof *v); /* zero: every slot empty */
    if (v == NULL)
        return false;
    for (size_t i = 0; i < sh->cap; i++) {
        if (sh->v[i].key == 0)
            continue;
        size_t j = key_hash(sh->v[i].key) & (cap - 1);
        while (v[j].key)
            j = (j + 1) & (cap - 1);
        v[j] = sh->v[i];
    }
    if (sh->v)
        ouro__os_unmap(sh->v, sh->cap * sizeof *sh->v);
    sh->v = v;
    sh->cap = cap;
    return true;
}

static bool rec_add(const obj_rec_t *r)
{
    uint64_t h = key_hash(r->key);
    obj_shard_t *sh = shard_of(h);
    bool ok = true;
    pthread_mutex_lock(&sh->lock);
    if ((sh->n + 1) * 2 > sh->cap)
        ok = shard_grow(sh);
    if (ok) {
        size_t j = h & (sh->cap - 1);
        while (sh->v[j].key)
            j = (j + 1) & (sh->cap - 1);
        sh->v[j] = *r;
        sh->n++;
    }
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

/* Take the record of `key` out of the table into `out`; false if none. */
static bool rec_take(uintptr_t key, obj_rec_t *out)
{
    uint64_t h = key_hash(key);
    obj_shard_t *sh = shard_of(h);
    bool found = false;
    pthread_mutex_lock(&sh->lock);
    size_t mask = sh->cap - 1, j = h & mask;
    for (; sh->cap && sh->v[j].key; j = (j + 1) & mask)
        if (sh->v[j].key == key) {
            found = true;
            break;
        }
    if (found) {
        *out = sh->v[j];
        /* backward shift: move up each later record of the run whose home
         * slot does not lie cyclically in (j, k], so that no probe meets a
         * hole before its key */
        for (size_t k = (j + 1) & mask; sh->v[k].key; k = (k + 1) & mask) {
            size_t home = key_hash(sh->v[k].key) & mask;
            if (((k - home) & mask) >= ((k - j) & mask)) {
                sh->v[j] = sh->v[k];
                j = k;
            }
        }
        sh->v[j].key = 0;
        sh->n--;
    }
    pthread_mutex_unlock(&sh->lock);
    return found;
}

bool ouro__trace_object(const void *o, size_t size, const void *site)
{
    /* relaxed: as ouro__trace_on */
    int frames = atomic_load_explicit(&ouro__tracing, memory_order_relaxed);
    if (frames == 0 || busy || !sample_due(size))
        return false;
    busy++;
    bool traced = false;
    obj_rec_t r = {(uintptr_t)o, site_capture(frames, site), size, weight_of(size)};
    if (r.site && rec_add(&r)) {
        count(r.site, 1, size, r.weight);
        /* relaxed: see the top of this section */
        atomic_fetch_add_explicit(&ouro__trace_objects, 1, memory_order_relaxed);
        traced = true;
    }
    busy--;
    return traced;
}

void ouro__trace_object_forget(const void *o)
{
    obj_rec_t r;
    if (!rec_take((uintptr_t)o, &r))
        ouro__fatal("object %p is marked traced but has no trace record", o);
    if (r.weight)
        count(r.site, -1, r.size, r.weight);
    /* relaxed: see the top of this section */
    atomic_fetch_sub_explicit(&ouro__trace_objects, 1, memory_order_relaxed);
}

/* For the leak report: an object whose count reached zero is no leak, even
 * if its memory still waits for a grace period (the exiting thread's last
 * frees always do).  Uncount those now; their records stay, marked, until
 * the memory is freed.  Reading the gc word is safe under the shard lock:
 * the record is taken before the memory is freed (qsbr.c). */
void ouro__trace_uncount_dead_objects(void)
{
    /* relaxed: see the top of this section */
    if (atomic_load_explicit(&ouro__trace_objects, memory_order_relaxed) == 0)
        return;
    for (unsigned i = 0; i < SHARDS; i++) {
        obj_shard_t *sh = &shards[i];
        pthread_mutex_lock(&sh->lock);
        for (size_t j = 0; j < sh->cap; j++) {
            obj_rec_t *r = &sh->v[j];
            /* relaxed atomic: its owner may be freeing it right now; a
             * death we miss is reported, as if it came after the report */
            if (r->key && r->weight &&
                (__atomic_load_n(&((ouro_object_t *)r->key)->gc, __ATOMIC_RELAXED) & GC_DEAD)) {
                count(r->site, -1, r->size, r->weight);
                r->weight = 0;
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

/* ---- starting and stopping ---- */

/* The site table, mapped once: at the first start.  [site_lock] */
static bool table_ready(void)
{
    if (atomic_load_explicit(&ouro__trace_buckets, memory_order_acquire))
        return true;
    pthread_mutex_lock(&site_lock);
    if (atomic_load_explicit(&ouro__trace_buckets, memory_order_relaxed) == NULL) { /* relaxed: under the lock */
        void *b = ouro__os_map(NBUCKETS * sizeof *ouro__trace_buckets);
        /* release: the zeroed table before its pointer (fresh mappings are zero) */
        if (b)
            atomic_store_explicit(&ouro__trace_buckets, b, memory_order_release);
    }
    pthread_mutex_unlock(&site_lock);
    return atomic_load_explicit(&ouro__trace_buckets, memory_order_acquire) != NULL;
}

int ouro_trace_start(int frames)
{
    ouro__init();
    if (frames < 1 || frames > OURO_TRACE_MAX_FRAMES) {
        errno = EINVAL;
        return -1;
    }
    if (ouro__debug_on()) { /* debug blocks have a layout of their own */
        errno = EPERM;
        return -1;
    }
    if (!table_ready()) {
        errno = ENOMEM;
        return -1;
    }
    /* glibc's backtrace loads the unwinder on its first call, which
     * allocates: here, not in the middle of someone's malloc */
    busy++;
    void *warm[4];
    (void)backtrace(warm, 4);
    busy--;
    ouro__options[OURO_OPTION_TRACE] = frames;
    /* seq_cst: before the nudge below (see route_update and heap_init_thread) */
    atomic_store_explicit(&ouro__tracing, frames, memory_order_seq_cst);
    ouro__heap_route_all();
    return 0;
}

void ouro_trace_stop(void)
{
    ouro__options[OURO_OPTION_TRACE] = 0;
    /* seq_cst: pairs with route_update's; each thread points its front
     * back at its heap on its next allocation */
    atomic_store_explicit(&ouro__tracing, 0, memory_order_seq_cst);
}

int ouro_trace_is_tracing(void)
{
    /* relaxed: a report of the state, which may change right after anyway */
    return atomic_load_explicit(&ouro__tracing, memory_order_relaxed);
}

/* At start, from the options (no thread has a heap yet). */
void ouro__trace_init(void)
{
    long frames = ouro__options[OURO_OPTION_TRACE];
    if (frames == 0 && ouro__options[OURO_OPTION_TRACE_LEAKS])
        frames = DEFAULT_LEAK_FRAMES;
    if (frames == 0)
        return;
    if (ouro__debug_on()) {
        ouro__warn("OURO_TRACE: tracing is not available in debug mode (OURO_DEBUG=1); not tracing");
        ouro__options[OURO_OPTION_TRACE] = 0;
        return;
    }
    if (!table_ready()) {
        ouro__warn("OURO_TRACE: no memory for the site table; not tracing");
        ouro__options[OURO_OPTION_TRACE] = 0;
        return;
    }
    ouro__options[OURO_OPTION_TRACE] = frames;
    /* seq_cst as in ouro_trace_start; backtrace is warmed by the first
     * traced allocation, under the guard */
    atomic_store_explicit(&ouro__tracing, (int)frames, memory_order_seq_cst);
}

/* The site lock, then the object shards in order (no path holds two of
 * these at once, so any order would do). */
void ouro__trace_fork_prepare(void)
{
    pthread_mutex_lock(&site_lock);
    for (unsigned i = 0; i < SHARDS; i++)
        pthread_mutex_lock(&shards[i].lock);
}

void ouro__trace_fork_parent(void)
{
    for (unsigned i = SHARDS; i-- > 0;)
        pthread_mutex_unlock(&shards[i].lock);
    pthread_mutex_unlock(&site_lock);
}
