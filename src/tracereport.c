/*
 * tracereport.c — what allocation tracing reports: snapshots of the site
 * table, the top sites of a snapshot, differences between two, printing
 * them, and the leak report at exit.  Reads the site table trace.c
 * records (trace.h), never a traced block; takes its own memory from the
 * OS, and what its library calls allocate (qsort, stdio) is made
 * untraced, between ouro__trace_internal_begin and _end.
 */
#include "trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- snapshots ---- */

typedef struct snap_entry_s {
    const trace_site_t *site;
    int64_t count, size, est_count, est_size;
} snap_entry_t;

struct ouro_trace_snapshot_s {
    size_t n;         /* entries, sorted by site address */
    size_t map_bytes; /* the mapping holding all of it */
    snap_entry_t e[];
};

static int entry_by_site(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const snap_entry_t *)a)->site, y = (uintptr_t)((const snap_entry_t *)b)->site;
    return x < y ? -1 : x > y;
}

ouro_trace_snapshot_t *ouro_trace_snapshot_take(void)
{
    ouro__init();
    size_t page = ouro__os_page_size();
    trace_site_t *_Atomic *tab = atomic_load_explicit(&ouro__trace_buckets, memory_order_acquire);
    /* relaxed: a first guess at the room needed; a short guess retries */
    for (size_t cap = atomic_load_explicit(&ouro__trace_nsites, memory_order_relaxed) + 16;;) {
        size_t bytes = (sizeof(ouro_trace_snapshot_t) + cap * sizeof(snap_entry_t) + page - 1) & ~(page - 1);
        ouro_trace_snapshot_t *s = ouro__os_map(bytes);
        if (s == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        s->map_bytes = bytes;
        size_t n = 0, want = 0;
        for (size_t i = 0; tab && i < NBUCKETS; i++)
            for (trace_site_t *t = atomic_load_explicit(&tab[i], memory_order_acquire); t;
                 t = atomic_load_explicit(&t->next, memory_order_acquire)) {
                /* relaxed: see the top of trace.c */
                snap_entry_t e = {t, atomic_load_explicit(&t->count, memory_order_relaxed),
                                  atomic_load_explicit(&t->size, memory_order_relaxed), 0, 0};
                e.est_count = e.count * ONE_WEIGHT + atomic_load_explicit(&t->extra_count, memory_order_relaxed);
                e.est_size = e.size + atomic_load_explicit(&t->extra_size, memory_order_relaxed);
                if (e.count <= 0 && e.size <= 0)
                    continue; /* nothing live from there */
                if (n < cap)
                    s->e[n++] = e;
                want++;
            }
        if (want > cap) { /* sites came meanwhile: again, with room */
            ouro__os_unmap(s, bytes);
            cap = want + want / 4 + 16;
            continue;
        }
        s->n = n;
        ouro__trace_internal_begin(); /* qsort may allocate */
        qsort(s->e, n, sizeof *s->e, entry_by_site);
        ouro__trace_internal_end();
        return s;
    }
}

void ouro_trace_snapshot_free(ouro_trace_snapshot_t *s)
{
    if (s)
        ouro__os_unmap(s, s->map_bytes);
}

static void stat_of(const snap_entry_t *e, ouro_trace_stat_t *out)
{
    memset(out, 0, sizeof *out);
    if (e == NULL)
        return;
    out->size = e->est_size > 0 ? (size_t)e->est_size : 0;
    out->count = e->est_count > 0 ? (size_t)((e->est_count + ONE_WEIGHT / 2) >> 16) : 0;
    out->sampled_size = e->size > 0 ? (size_t)e->size : 0;
    out->sampled_count = e->count > 0 ? (size_t)e->count : 0;
    out->nframes = e->site->nframes;
    out->frames = e->site->frames;
}

void ouro_trace_snapshot_total(const ouro_trace_snapshot_t *s, ouro_trace_stat_t *total)
{
    memset(total, 0, sizeof *total);
    for (size_t i = 0; s && i < s->n; i++) {
        ouro_trace_stat_t t;
        stat_of(&s->e[i], &t);
        total->size += t.size;
        total->count += t.count;
        total->sampled_size += t.sampled_size;
        total->sampled_count += t.sampled_count;
    }
}

/* ---- ranking ---- */

static int by_key(const void *a, const void *b, void *keyp)
{
    const ouro_trace_stat_t *x = a, *y = b;
    int key = *(const int *)keyp;
    size_t kx = key == OURO_TRACE_BY_COUNT ? x->count : x->size;
    size_t ky = key == OURO_TRACE_BY_COUNT ? y->count : y->size;
    if (kx != ky)
        return kx > ky ? -1 : 1;
    return x->size > y->size ? -1 : x->size < y->size;
}

static size_t abs_diff(ptrdiff_t d)
{
    return d < 0 ? (size_t)-d : (size_t)d;
}

static int by_diff(const void *a, const void *b, void *keyp)
{
    const ouro_trace_stat_t *x = a, *y = b;
    int key = *(const int *)keyp;
    size_t kx = abs_diff(key == OURO_TRACE_BY_COUNT ? x->count_diff : x->size_diff);
    size_t ky = abs_diff(key == OURO_TRACE_BY_COUNT ? y->count_diff : y->size_diff);
    if (kx != ky)
        return kx > ky ? -1 : 1;
    return by_key(a, b, keyp);
}

/* Sort v[0..n) with `cmp` for `key` and copy the first `max` to `out`. */
static void rank(ouro_trace_stat_t *v, size_t n, int key, int (*cmp)(const void *, const void *, void *),
                 ouro_trace_stat_t *out, size_t max)
{
    ouro__trace_internal_begin(); /* qsort may allocate */
    qsort_r(v, n, sizeof *v, cmp, &key);
    ouro__trace_internal_end();
    if (out)
        memcpy(out, v, (n < max ? n : max) * sizeof *v);
}

static ouro_trace_stat_t *work_map(size_t n, size_t *bytes)
{
    size_t page = ouro__os_page_size();
    *bytes = ((n ? n : 1) * sizeof(ouro_trace_stat_t) + page - 1) & ~(page - 1);
    return ouro__os_map(*bytes);
}

size_t ouro_trace_top(const ouro_trace_snapshot_t *s, int key, ouro_trace_stat_t *out, size_t max)
{
    if (s == NULL || (key != OURO_TRACE_BY_SIZE && key != OURO_TRACE_BY_COUNT)) {
        errno = EINVAL;
        return 0;
    }
    size_t bytes;
    ouro_trace_stat_t *v = work_map(s->n, &bytes);
    if (v == NULL) {
        errno = ENOMEM;
        return 0;
    }
    for (size_t i = 0; i < s->n; i++)
        stat_of(&s->e[i], &v[i]);
    rank(v, s->n, key, by_key, out, max);
    ouro__os_unmap(v, bytes);
    return s->n;
}

size_t ouro_trace_diff(const ouro_trace_snapshot_t *newer, const ouro_trace_snapshot_t *older, int key,
                       ouro_trace_stat_t *out, size_t max)
{
    if (newer == NULL || older == NULL || (key != OURO_TRACE_BY_SIZE && key != OURO_TRACE_BY_COUNT)) {
        errno = EINVAL;
        return 0;
    }
    size_t bytes;
    ouro_trace_stat_t *v = work_map(newer->n + older->n, &bytes);
    if (v == NULL) {
        errno = ENOMEM;
        return 0;
    }
    /* merge the two by site address: a site in one only has zeros in the other */
    size_t n = 0;
    for (size_t i = 0, j = 0; i < newer->n || j < older->n;) {
        const snap_entry_t *a = i < newer->n ? &newer->e[i] : NULL, *b = j < older->n ? &older->e[j] : NULL;
        if (a && b && a->site != b->site) {
            if ((uintptr_t)a->site < (uintptr_t)b->site)
                b = NULL;
            else
                a = NULL;
        }
        ouro_trace_stat_t na, ob;
        stat_of(a, &na);
        stat_of(b, &ob);
        if (a == NULL) {
            na.nframes = ob.nframes;
            na.frames = ob.frames;
        }
        na.size_diff = (ptrdiff_t)na.size - (ptrdiff_t)ob.size;
        na.count_diff = (ptrdiff_t)na.count - (ptrdiff_t)ob.count;
        v[n++] = na;
        i += a != NULL;
        j += b != NULL;
    }
    rank(v, n, key, by_diff, out, max);
    ouro__os_unmap(v, bytes);
    return n;
}

/* ---- reports ---- */

static void human(char *buf, size_t n, double bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = bytes < 0 ? -bytes : bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%s%.1f %s" : "%s%.0f %s", bytes < 0 ? "-" : "", v, unit[u]);
}

static void print_frames(FILE *out, const ouro_trace_stat_t *t)
{
    char buf[256];
    for (size_t f = 0; f < t->nframes; f++)
        fprintf(out, "    #%zu %s\n", f, ouro__site_str(t->frames[f], buf, sizeof buf));
}

static void print_stats(FILE *out, const ouro_trace_stat_t *v, size_t shown, bool diff)
{
    for (size_t i = 0; i < shown; i++) {
        const ouro_trace_stat_t *t = &v[i];
        char sz[32], d[32];
        human(sz, sizeof sz, (double)t->size);
        fprintf(out, "#%zu: %s (%zu B) in %zu blocks", i + 1, sz, t->size, t->count);
        if (diff) {
            human(d, sizeof d, (double)t->size_diff);
            fprintf(out, " (%s%s, %+td blocks)", t->size_diff >= 0 ? "+" : "", d, t->count_diff);
        }
        if (t->sampled_count != t->count || t->sampled_size != t->size)
            fprintf(out, " [sampled: %zu B in %zu blocks]", t->sampled_size, t->sampled_count);
        fprintf(out, ", allocated at:\n");
        print_frames(out, t);
    }
}

int ouro_trace_print(FILE *out, const ouro_trace_snapshot_t *s, const ouro_trace_snapshot_t *older, int key,
                     size_t max)
{
    if (out == NULL)
        out = stderr;
    if (s == NULL || (key != OURO_TRACE_BY_SIZE && key != OURO_TRACE_BY_COUNT)) {
        errno = EINVAL;
        return -1;
    }
    size_t cap = s->n + (older ? older->n : 0), bytes;
    ouro_trace_stat_t *v = work_map(cap, &bytes);
    if (v == NULL) {
        errno = ENOMEM;
        return -1;
    }
    size_t n = older ? ouro_trace_diff(s, older, key, v, cap) : ouro_trace_top(s, key, v, cap);
    ouro_trace_stat_t total;
    ouro_trace_snapshot_total(s, &total);
    char sz[32];
    human(sz, sizeof sz, (double)total.size);
    ouro__trace_internal_begin(); /* stdio may allocate */
    fprintf(out, "ouro: trace: %s %zu of %zu sites by %s%s; %s in %zu blocks traced in all\n",
            older ? "differences," : "top", n < max ? n : max, n, key == OURO_TRACE_BY_COUNT ? "count" : "size",
            older ? " change" : "", sz, total.count);
    print_stats(out, v, n < max ? n : max, older != NULL);
    ouro__trace_internal_end();
    ouro__os_unmap(v, bytes);
    return 0;
}

#define LEAK_SITES_MAX 100

void ouro__trace_at_exit(void)
{
    if (!ouro__options[OURO_OPTION_TRACE_LEAKS])
        return;
    ouro__trace_uncount_dead_objects();
    ouro_trace_snapshot_t *s = ouro_trace_snapshot_take();
    if (s == NULL)
        return;
    size_t bytes;
    ouro_trace_stat_t *v = work_map(s->n, &bytes);
    if (v) {
        size_t n = ouro_trace_top(s, OURO_TRACE_BY_SIZE, v, s->n);
        ouro_trace_stat_t total;
        ouro_trace_snapshot_total(s, &total);
        char sz[32];
        human(sz, sizeof sz, (double)total.size);
        ouro__trace_internal_begin();
        fprintf(stderr, "ouro: trace: leak report: %zu blocks (%s) traced and still allocated at exit, from %zu sites%s\n",
                total.count, sz, n, n > LEAK_SITES_MAX ? " (the largest 100 below)" : "");
        print_stats(stderr, v, n < LEAK_SITES_MAX ? n : LEAK_SITES_MAX, false);
        fflush(stderr);
        ouro__trace_internal_end();
        ouro__os_unmap(v, bytes);
    }
    ouro_trace_snapshot_free(s);
}
