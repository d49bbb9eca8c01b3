/*
 * stats.c — statistics: a snapshot of the heap readable by programs
 * (ouro_stats_get, and per thread ouro_stats_threads) and printable
 * (ouro_stats_print).  Reads pools only through their atomic fields; never
 * changes anything.  Per-thread figures come from the pools each heap owns
 * and from counters its slow paths keep: the fast paths count nothing.
 */
#include "object.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void visit_pool(ouro_pool_t *pool, void *arg)
{
    ouro_stats_t *st = arg;
    /* relaxed: a snapshot; the pool was reached through an acquire of slot_pool */
    size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    if (bs == 0)
        return;
    /* the class is derived from the (atomic) block size; malloc(0)'s class 0
     * shares class 1's block size and is counted there */
    int cls = ouro__size_class(bs);
    size_t used = ouro__pool_used(pool);
    size_t total = ((size_t)ouro__class_span(cls) << OURO_SLOT_SHIFT) / bs;
    ouro_class_stats_t *c = &st->classes[cls];
    c->pools++;
    c->blocks_used += used;
    c->blocks_total += total;
    st->pools++;
    st->in_use += used * bs;
}

void ouro_stats_get(ouro_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (int c = 0; c < OURO_NCLASSES; c++)
        out->classes[c].block_size = ouro__class_size(c);
    ouro__arena_visit_pools(visit_pool, out);
    ouro_counters_t *k = &ouro__counters;
    /* relaxed: independent counters, a snapshot needs no order among them */
    out->reserved = atomic_load_explicit(&k->reserved, memory_order_relaxed);
    out->arenas = atomic_load_explicit(&k->arenas, memory_order_relaxed);
    out->large_count = atomic_load_explicit(&k->large_count, memory_order_relaxed);
    out->large_bytes = atomic_load_explicit(&k->large_bytes, memory_order_relaxed);
    out->purges = atomic_load_explicit(&k->purges, memory_order_relaxed);
    out->purged_bytes = atomic_load_explicit(&k->purged_bytes, memory_order_relaxed);
    out->purge_delay_ms = ouro__arena_purge_delay();
    out->arena_reserve = ouro__arena_reserve_bytes();
    out->threads = atomic_load_explicit(&k->threads, memory_order_relaxed);
    out->abandoned_pools = atomic_load_explicit(&k->abandoned, memory_order_relaxed);
    out->in_use += out->large_bytes;
    out->large_cached = ouro__large_cached();
    out->committed = ouro__arena_dirty_bytes() + atomic_load_explicit(&k->large_mapped, memory_order_relaxed) +
                     atomic_load_explicit(&k->large_cached, memory_order_relaxed);
}

/* ouro_gc_phase_t's names, as the text and JSON reports print them */
static const char *const phase_names[OURO_GC_NPHASES] = {
    [OURO_GC_PHASE_H1] = "h1",       [OURO_GC_PHASE_WALK] = "walk", [OURO_GC_PHASE_COUNT] = "count",
    [OURO_GC_PHASE_MARK] = "mark",   [OURO_GC_PHASE_H2] = "h2",     [OURO_GC_PHASE_VALIDATE] = "validate",
    [OURO_GC_PHASE_FINISH] = "finish",
};

/* ---- per thread ---- */

/* Work memory straight from the OS: stats must not allocate from the heap
 * they describe (nor be traced). */
typedef struct thread_work_s {
    ouro_heap_ref_t *refs;   /* live heaps, sorted by address */
    size_t nrefs;
    ouro_thread_stats_t *acc; /* [i]: figures of refs[i]; [nrefs]: pools no heap owns */
    size_t bytes;
} thread_work_t;

static int ref_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const ouro_heap_ref_t *)a)->heap, y = (uintptr_t)((const ouro_heap_ref_t *)b)->heap;
    return x < y ? -1 : x > y;
}

static void visit_pool_owner(ouro_pool_t *pool, void *arg)
{
    thread_work_t *w = arg;
    /* relaxed: a snapshot; the pool was reached through an acquire of slot_pool */
    size_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    ouro_heap_t *owner = atomic_load_explicit(&pool->owner, memory_order_relaxed);
    size_t lo = 0, hi = w->nrefs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((uintptr_t)w->refs[mid].heap < (uintptr_t)owner)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* a heap that was born after the list was taken counts as nobody's */
    ouro_thread_stats_t *t = owner && lo < w->nrefs && w->refs[lo].heap == owner ? &w->acc[lo] : &w->acc[w->nrefs];
    /* [init], published with the pool; relaxed atomic: the header may be
     * set up again for another heap while we look (heap.c's pool_fresh) */
    int kind = __atomic_load_n(&pool->kind, __ATOMIC_RELAXED);
    size_t used = ouro__pool_used(pool);
    t->pools++;
    if (kind >= 0 && kind < OURO_KINDS) {
        t->blocks[kind] += used;
        t->bytes[kind] += used * bs;
    }
}

size_t ouro_stats_threads(ouro_thread_stats_t *out, size_t max)
{
    ouro__init();
    thread_work_t w = {0};
    size_t page = ouro__os_page_size(), cap = 64, n;
    for (;;) { /* the heap list, in memory of our own; again if threads came meanwhile */
        w.bytes = (cap * (sizeof(ouro_heap_ref_t) + sizeof(ouro_thread_stats_t)) + sizeof(ouro_thread_stats_t) +
                   page - 1) & ~(page - 1);
        void *mem = ouro__os_map(w.bytes);
        if (mem == NULL) {
            errno = ENOMEM;
            return 0;
        }
        w.acc = mem; /* cap + 1 entries, then the refs */
        w.refs = (ouro_heap_ref_t *)(w.acc + cap + 1);
        n = ouro__heap_list(w.refs, cap);
        if (n <= cap)
            break;
        ouro__os_unmap(mem, w.bytes);
        cap = n + n / 4 + 8;
    }
    w.nrefs = n;
    qsort(w.refs, n, sizeof *w.refs, ref_cmp);
    ouro__arena_visit_pools(visit_pool_owner, &w);
    /* counters of each heap, then one entry per thread: the refs of a thread
     * (up to three heaps, one per kind) fold into the first of them */
    size_t nout = 0;
    for (size_t i = 0; i < n; i++) {
        ouro_heap_t *h = w.refs[i].heap;
        ouro_thread_stats_t *t = &w.acc[i];
        /* relaxed: a snapshot of counters only their owners write */
        t->slow_allocs = atomic_load_explicit(&h->st_slow, memory_order_relaxed);
        t->pools_claimed = atomic_load_explicit(&h->st_claimed, memory_order_relaxed);
        t->pools_adopted = atomic_load_explicit(&h->st_adopted, memory_order_relaxed);
        t->pools_released = atomic_load_explicit(&h->st_released, memory_order_relaxed);
        t->remote_frees = atomic_load_explicit(&h->st_remote, memory_order_relaxed);
        t->thread = w.refs[i].tid;
    }
    for (size_t i = 0; i < n; i++) {
        ouro_thread_stats_t *t = &w.acc[i];
        if (t->thread == 0)
            continue; /* folded already */
        for (size_t j = i + 1; j < n; j++) {
            ouro_thread_stats_t *u = &w.acc[j];
            if (u->thread != t->thread)
                continue;
            t->pools += u->pools;
            for (int k = 0; k < 3; k++) {
                t->blocks[k] += u->blocks[k];
                t->bytes[k] += u->bytes[k];
            }
            t->slow_allocs += u->slow_allocs;
            t->pools_claimed += u->pools_claimed;
            t->pools_adopted += u->pools_adopted;
            t->pools_released += u->pools_released;
            t->remote_frees += u->remote_frees;
            u->thread = 0;
        }
        if (nout < max)
            out[nout] = *t;
        nout++;
    }
    if (w.acc[n].pools) {
        w.acc[n].thread = 0;
        if (nout < max)
            out[nout] = w.acc[n];
        nout++;
    }
    ouro__os_unmap(w.acc, w.bytes);
    return nout;
}

static void human(char *buf, size_t n, size_t bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/* The modes the process runs in (both fixed at start), for the reports. */
static const char *mode_name(void)
{
    return ouro__debug_on() ? (ouro__hardened_on() ? "debug+hardened" : "debug")
                            : (ouro__hardened_on() ? "hardened" : "default");
}

/* Every thread's figures, in memory of our own (release with threads_free). */
static ouro_thread_stats_t *threads_get(size_t *n, size_t *bytes)
{
    size_t page = ouro__os_page_size();
    for (size_t want = ouro_stats_threads(NULL, 0) + 4;;) {
        *bytes = (want * sizeof(ouro_thread_stats_t) + page - 1) & ~(page - 1);
        ouro_thread_stats_t *v = ouro__os_map(*bytes);
        if (v == NULL) {
            *n = 0;
            return NULL;
        }
        size_t got = ouro_stats_threads(v, *bytes / sizeof *v);
        if (got <= *bytes / sizeof *v) {
            *n = got;
            return v;
        }
        ouro__os_unmap(v, *bytes);
        want = got + 8;
    }
}

static void threads_free(ouro_thread_stats_t *v, size_t bytes)
{
    if (v)
        ouro__os_unmap(v, bytes);
}

#define PRINT_THREADS_MAX 64 /* the text shows this many threads, the JSON all */

static void print_threads(FILE *out)
{
    size_t n, bytes;
    ouro_thread_stats_t *v = threads_get(&n, &bytes);
    fprintf(out, "  %-18s %6s %10s %10s %9s %9s %8s %8s %8s %8s %9s\n", "thread", "pools", "blocks", "bytes",
            "objects", "obj bytes", "slow", "claimed", "adopted", "released", "remote");
    for (size_t i = 0; i < n && i < PRINT_THREADS_MAX; i++) {
        const ouro_thread_stats_t *t = &v[i];
        char id[24], b[32], ob[32];
        if (t->thread)
            snprintf(id, sizeof id, "%#lx", (unsigned long)t->thread);
        else
            snprintf(id, sizeof id, "(exited threads)");
        human(b, sizeof b, t->bytes[0]);
        human(ob, sizeof ob, t->bytes[1] + t->bytes[2]);
        fprintf(out, "  %-18s %6zu %10zu %10s %9zu %9s %8zu %8zu %8zu %8zu %9zu\n", id, t->pools, t->blocks[0], b,
                t->blocks[1] + t->blocks[2], ob, t->slow_allocs, t->pools_claimed, t->pools_adopted,
                t->pools_released, t->remote_frees);
    }
    if (n > PRINT_THREADS_MAX)
        fprintf(out, "  ... and %zu more threads (ouro_stats_threads, or the JSON, has them all)\n",
                n - PRINT_THREADS_MAX);
    threads_free(v, bytes);
}

static void print_threads_json(FILE *out)
{
    size_t n, bytes;
    ouro_thread_stats_t *v = threads_get(&n, &bytes);
    fprintf(out, "\"per_thread\":[");
    for (size_t i = 0; i < n; i++) {
        const ouro_thread_stats_t *t = &v[i];
        fprintf(out,
                "%s{\"thread\":%lu,\"pools\":%zu,\"blocks\":[%zu,%zu,%zu],\"bytes\":[%zu,%zu,%zu],"
                "\"slow_allocs\":%zu,\"pools_claimed\":%zu,\"pools_adopted\":%zu,\"pools_released\":%zu,"
                "\"remote_frees\":%zu}",
                i ? "," : "", (unsigned long)t->thread, t->pools, t->blocks[0], t->blocks[1], t->blocks[2],
                t->bytes[0], t->bytes[1], t->bytes[2], t->slow_allocs, t->pools_claimed, t->pools_adopted,
                t->pools_released, t->remote_frees);
    }
    fprintf(out, "],");
    threads_free(v, bytes);
}

void ouro_stats_print(FILE *out)
{
    if (out == NULL)
        out = stderr;
    ouro_stats_t st;
    ouro_stats_get(&st);
    char a[32], b[32], c[32];
    human(a, sizeof a, st.reserved);
    human(b, sizeof b, st.committed);
    human(c, sizeof c, st.in_use);
    fprintf(out, "ouro %s (%s mode): reserved %s, committed %s, in use %s\n", ouro_version(), mode_name(), a,
            b, c);
    human(a, sizeof a, st.arena_reserve);
    fprintf(out, "  arenas %zu (address space reserved for them %s), pools %zu (abandoned %zu), threads %zu, "
            "large blocks %zu (%zu bytes; %zu freed mappings kept)\n",
            st.arenas, a, st.pools, st.abandoned_pools, st.threads, st.large_count, st.large_bytes, st.large_cached);
    fprintf(out, "  purges %zu (%zu bytes returned), purge delay %ld ms\n", st.purges, st.purged_bytes,
            st.purge_delay_ms);
    fprintf(out, "  %5s %9s %7s %12s %12s\n", "class", "block", "pools", "used", "capacity");
    for (int i = 0; i < OURO_NCLASSES; i++) {
        const ouro_class_stats_t *k = &st.classes[i];
        if (k->pools == 0)
            continue;
        fprintf(out, "  %5d %9zu %7zu %12zu %12zu\n", i, k->block_size, k->pools, k->blocks_used,
                k->blocks_total);
    }
    fprintf(out, "threads: blocks and bytes in use (plain; objects and containers), slow-path counts\n");
    print_threads(out);
    ouro_object_stats_t ob;
    ouro_object_stats_get(&ob);
    fprintf(out, "objects: created %zu, freed %zu, merges queued %zu and done %zu, deferred %zu, weakrefs %zu\n",
            ob.created, ob.freed, ob.merges_queued, ob.merges_done, ob.deferred, ob.weakrefs);
    ouro_gc_stats_t g;
    ouro_gc_get_stats(&g);
    fprintf(out,
            "collector: young %zu, generation 1 %zu, generation 2 %zu, permanent %zu, zombies %zu, "
            "backpressure waits %zu\n",
            g.young, g.objects[1], g.objects[2], g.objects[3], g.zombies, g.pressure_waits);
    /* the counts that start automatic collections (Python's gc.get_count()
     * and get_threshold()): of generation 0, its containers tracked minus
     * freed; of 1 and 2, collections of the younger one since its last */
    long count[3], threshold[3];
    ouro_gc_get_count(count);
    ouro_gc_get_threshold(threshold);
    for (int i = 0; i < 3; i++)
        fprintf(out,
                "  generation %d: %zu collections, %zu collected, %zu uncollectable; "
                "count %ld of threshold %ld\n",
                i, g.gen[i].collections, g.gen[i].collected, g.gen[i].uncollectable, count[i], threshold[i]);
    fprintf(out, "  collection time: total %.3f ms, longest %.3f ms, last %.3f ms (%zu objects, %u markers)\n",
            (double)g.total_ns / 1e6, (double)g.pause_max_ns / 1e6, (double)g.last_ns / 1e6, g.last_objects,
            g.last_markers);
    fprintf(out, "  last collection by step (ms):");
    for (int p = 0; p < OURO_GC_NPHASES; p++)
        fprintf(out, " %s %.3f", phase_names[p], (double)g.last_phase_ns[p] / 1e6);
    fprintf(out, "\n");
    fprintf(out, "  durations (us: count):");
    for (int b = 0; b < OURO_GC_PAUSE_BUCKETS; b++)
        if (g.pause_hist[b])
            fprintf(out, " %s%lu: %zu", b ? "" : "<", b ? 1ul << b : 2ul, g.pause_hist[b]);
    fprintf(out, "\n");
}

/* The same figures as JSON, one object, for programs and dashboards. */
void ouro_stats_print_json(FILE *out)
{
    if (out == NULL)
        out = stderr;
    ouro_stats_t st;
    ouro_object_stats_t ob;
    ouro_stats_get(&st);
    ouro_object_stats_get(&ob);
    fprintf(out,
            "{\"version\":\"%s\",\"mode\":\"%s\",\"reserved\":%zu,\"committed\":%zu,\"in_use\":%zu,"
            "\"arenas\":%zu,\"pools\":%zu,\"abandoned_pools\":%zu,\"threads\":%zu,"
            "\"large_count\":%zu,\"large_bytes\":%zu,\"purges\":%zu,\"purged_bytes\":%zu,"
            "\"purge_delay_ms\":%ld,\"arena_reserve\":%zu,\"large_cached\":%zu,",
            ouro_version(), mode_name(), st.reserved, st.committed, st.in_use, st.arenas, st.pools, st.abandoned_pools,
            st.threads, st.large_count, st.large_bytes, st.purges, st.purged_bytes, st.purge_delay_ms, st.arena_reserve,
            st.large_cached);
    print_threads_json(out);
    fprintf(out,
            "\"objects\":{\"created\":%zu,\"freed\":%zu,\"merges_queued\":%zu,\"merges_done\":%zu,"
            "\"deferred\":%zu,\"weakrefs\":%zu},\"classes\":[",
            ob.created, ob.freed, ob.merges_queued, ob.merges_done, ob.deferred, ob.weakrefs);
    int first = 1;
    for (int i = 0; i < OURO_NCLASSES; i++) {
        const ouro_class_stats_t *k = &st.classes[i];
        if (k->pools == 0)
            continue;
        fprintf(out, "%s{\"class\":%d,\"block_size\":%zu,\"pools\":%zu,\"blocks_used\":%zu,\"blocks_total\":%zu}",
                first ? "" : ",", i, k->block_size, k->pools, k->blocks_used, k->blocks_total);
        first = 0;
    }
    ouro_gc_stats_t g;
    ouro_gc_get_stats(&g);
    fprintf(out,
            "],\"gc\":{\"young\":%zu,\"objects\":[%zu,%zu,%zu],\"zombies\":%zu,\"saved\":%zu,"
            "\"pressure_waits\":%zu,\"generations\":[",
            g.young, g.objects[1], g.objects[2], g.objects[3], g.zombies, g.saved, g.pressure_waits);
    long count[3], threshold[3]; /* as in ouro_stats_print */
    ouro_gc_get_count(count);
    ouro_gc_get_threshold(threshold);
    for (int i = 0; i < 3; i++)
        fprintf(out,
                "%s{\"collections\":%zu,\"collected\":%zu,\"uncollectable\":%zu,"
                "\"count\":%ld,\"threshold\":%ld}",
                i ? "," : "", g.gen[i].collections, g.gen[i].collected, g.gen[i].uncollectable, count[i],
                threshold[i]);
    fprintf(out,
            "],\"last_objects\":%zu,\"last_markers\":%u,\"last_ns\":%llu,\"total_ns\":%llu,"
            "\"max_ns\":%llu,\"duration_hist_us_log2\":[",
            g.last_objects, g.last_markers, (unsigned long long)g.last_ns, (unsigned long long)g.total_ns,
            (unsigned long long)g.pause_max_ns);
    for (int b = 0; b < OURO_GC_PAUSE_BUCKETS; b++)
        fprintf(out, "%s%zu", b ? "," : "", g.pause_hist[b]);
    fprintf(out, "],\"last_phase_ns\":{");
    for (int p = 0; p < OURO_GC_NPHASES; p++)
        fprintf(out, "%s\"%s\":%llu", p ? "," : "", phase_names[p], (unsigned long long)g.last_phase_ns[p]);
    fprintf(out, "}}}\n");
}
