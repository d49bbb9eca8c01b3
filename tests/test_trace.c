/* test_trace.c — allocation tracing (ouro_trace_*): call sites are
 * recorded and ranked by size and by count; a diff shows the growth of one
 * site and not of another; freed blocks (by their thread or another) leave
 * the snapshot; stop and start; sampling traces about the expected share
 * and estimates the totals; threads already running are traced from the
 * start on; traced blocks keep every promise of the API (calloc, aligned,
 * realloc, large, usable size, heap walk); the leak report at exit names a
 * leaked block's call site (a helper program).  Objects and containers
 * (ouro_new) are traced too: per site, in the heap walk, until their memory
 * is freed after its grace period, whichever way they die.
 *
 * The allocation sites are functions of their own, with external linkage:
 * the test is linked with -rdynamic, so dladdr names them and the test
 * finds each site's figures by the function its first frame lies in. */
#define _GNU_SOURCE
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"
#include "tuchild.h"

#define FRAMES 8
#define NOINLINE __attribute__((noinline))
/* keep the compiler from moving or merging the calls */
#define BARRIER() __asm__ volatile("" ::: "memory")

static int debug_mode(void)
{
    return ouro_option_get(OURO_OPTION_DEBUG) == 1;
}

/* ---- the sites ---- */
NOINLINE void trace_site_a(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(1000);
    BARRIER();
}

NOINLINE void trace_site_b(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(16);
    BARRIER();
}

NOINLINE void trace_site_c(void **out, int n, size_t size)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(size);
    BARRIER();
}

NOINLINE void trace_site_d(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(48);
    BARRIER();
}

NOINLINE void trace_site_e(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(64);
    BARRIER();
}

NOINLINE void trace_site_sampled(void **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc(256);
    BARRIER();
}

NOINLINE void trace_site_thread(void **out, int n, int seed)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_malloc((size_t)(seed * 7 + i) % 300 + 1);
    BARRIER();
}

NOINLINE void *trace_site_calloc(size_t n, size_t size)
{
    void *volatile p = ouro_calloc(n, size);
    return p;
}

NOINLINE void *trace_site_aligned(size_t align, size_t size)
{
    void *volatile p = ouro_aligned_alloc(align, size);
    return p;
}

NOINLINE void *trace_site_realloc(void *p, size_t size)
{
    void *volatile q = ouro_realloc(p, size);
    return q;
}

NOINLINE void *trace_site_large(size_t size)
{
    void *volatile p = ouro_malloc(size);
    return p;
}

/* objects: a plain object type and a container type (traverse) */
typedef struct tobj_s {
    ouro_object_t ob;
    char body[64];
} tobj_t;
static const ouro_type_t tobj_type = {"tobj", sizeof(tobj_t), NULL, NULL, NULL, NULL, 0};

typedef struct tcont_s {
    ouro_object_t ob;
    ouro_object_t *ref;
} tcont_t;
static int tcont_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    ouro_object_t *r = ouro_load(&((tcont_t *)self)->ref);
    return r ? visit(r, arg) : 0;
}
static void tcont_clear(ouro_object_t *self)
{
    ouro_setref(&((tcont_t *)self)->ref, NULL);
}
static const ouro_type_t tcont_type = {"tcont", sizeof(tcont_t), tcont_traverse, tcont_clear, NULL, tcont_clear, 0};

NOINLINE void trace_site_obj(ouro_object_t **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_new(&tobj_type);
    BARRIER();
}

NOINLINE void trace_site_container(ouro_object_t **out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = ouro_new(&tcont_type);
    BARRIER();
}

/* ---- finding sites ---- */

static int in_function(const void *addr, void *fn)
{
    Dl_info d;
    return dladdr(addr, &d) && d.dli_saddr == fn;
}

/* The index of the stat whose call site lies in `fn`, or -1. */
static long find_site(const ouro_trace_stat_t *v, size_t n, void *fn)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].nframes > 0 && in_function(v[i].frames[0], fn))
            return (long)i;
    return -1;
}

#define MAXSTATS 4096
static ouro_trace_stat_t stats[MAXSTATS];

/* The sites of a fresh snapshot ranked by `key`; returns how many. */
static size_t top_now(int key)
{
    ouro_trace_snapshot_t *s = ouro_trace_snapshot_take();
    ck_assert_ptr_nonnull(s);
    size_t n = ouro_trace_top(s, key, stats, MAXSTATS);
    ck_assert_uint_le(n, MAXSTATS);
    ouro_trace_snapshot_free(s);
    return n;
}

static void free_all(void **v, int n)
{
    for (int i = 0; i < n; i++) {
        ouro_free(v[i]);
        v[i] = NULL;
    }
}

/* ---- tests ---- */

START_TEST(top_ranks_sites_by_size_and_by_count)
{
    static void *a[100], *b[1000];
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    ck_assert_int_eq(ouro_trace_is_tracing(), FRAMES);
    trace_site_a(a, 100); /* 100 000 bytes in 100 blocks */
    trace_site_b(b, 1000); /* 16 000 bytes in 1000 blocks */

    size_t n = top_now(OURO_TRACE_BY_SIZE);
    long ia = find_site(stats, n, (void *)trace_site_a), ib = find_site(stats, n, (void *)trace_site_b);
    ck_assert_int_ge(ia, 0);
    ck_assert_int_ge(ib, 0);
    ck_assert_uint_eq(stats[ia].count, 100);
    ck_assert_uint_eq(stats[ia].size, 100000);
    ck_assert_uint_eq(stats[ia].sampled_count, 100);
    ck_assert_uint_eq(stats[ia].sampled_size, 100000);
    ck_assert_uint_eq(stats[ib].count, 1000);
    ck_assert_uint_eq(stats[ib].size, 16000);
    ck_assert_int_lt(ia, ib); /* by size: a first */
    for (size_t i = 1; i < n; i++)
        ck_assert_uint_ge(stats[i - 1].size, stats[i].size);
    /* the stack: the site, then its caller (this test), at most FRAMES deep */
    ck_assert_uint_ge(stats[ia].nframes, 2);
    ck_assert_uint_le(stats[ia].nframes, FRAMES);

    n = top_now(OURO_TRACE_BY_COUNT);
    ia = find_site(stats, n, (void *)trace_site_a);
    ib = find_site(stats, n, (void *)trace_site_b);
    ck_assert_int_ge(ia, 0);
    ck_assert_int_ge(ib, 0);
    ck_assert_int_lt(ib, ia); /* by count: b first */
    for (size_t i = 1; i < n; i++)
        ck_assert_uint_ge(stats[i - 1].count, stats[i].count);

    ouro_trace_snapshot_t *s = ouro_trace_snapshot_take();
    ouro_trace_stat_t total;
    ouro_trace_snapshot_total(s, &total);
    ck_assert_uint_ge(total.size, 116000);
    ck_assert_uint_ge(total.count, 1100);
    ck_assert_uint_eq(ouro_trace_top(s, OURO_TRACE_BY_SIZE, NULL, 0), n);
    ouro_trace_snapshot_free(s);

    free_all(a, 100);
    free_all(b, 1000);
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_a), -1);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_b), -1);
    ouro_trace_stop();
}
END_TEST

START_TEST(diff_shows_growth_of_one_site_only)
{
    static void *a[60], *b[10];
    /* one frame per allocation (Python's default): a site is the call site alone */
    ck_assert_int_eq(ouro_trace_start(1), 0);
    trace_site_a(a, 10);
    trace_site_b(b, 10);
    ouro_trace_snapshot_t *s1 = ouro_trace_snapshot_take();
    trace_site_a(a + 10, 50); /* one frame: the same site as the first 10 */
    ouro_trace_snapshot_t *s2 = ouro_trace_snapshot_take();
    ck_assert_ptr_nonnull(s1);
    ck_assert_ptr_nonnull(s2);
    size_t n = ouro_trace_diff(s2, s1, OURO_TRACE_BY_SIZE, stats, MAXSTATS);
    long ia = find_site(stats, n, (void *)trace_site_a), ib = find_site(stats, n, (void *)trace_site_b);
    ck_assert_int_ge(ia, 0);
    ck_assert_int_ge(ib, 0);
    ck_assert_int_eq(stats[ia].size_diff, 50000);
    ck_assert_int_eq(stats[ia].count_diff, 50);
    ck_assert_uint_eq(stats[ia].size, 60000);
    ck_assert_int_eq(stats[ib].size_diff, 0);
    ck_assert_int_eq(stats[ib].count_diff, 0);
    ck_assert_uint_eq(stats[ib].count, 10);
    ck_assert_int_lt(ia, ib); /* the largest change first */

    /* the printed diff names the site and its growth */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_int_eq(ouro_trace_print(f, s2, s1, OURO_TRACE_BY_SIZE, 10), 0);
    fclose(f);
    ck_assert_msg(strstr(buf, "trace_site_a") != NULL, "the diff lacks the site: %s", buf);
    ck_assert_msg(strstr(buf, "+50 blocks") != NULL, "the diff lacks the growth: %s", buf);
    free(buf);

    /* shrinking shows too: the older snapshot against the newer */
    n = ouro_trace_diff(s1, s2, OURO_TRACE_BY_COUNT, stats, MAXSTATS);
    ia = find_site(stats, n, (void *)trace_site_a);
    ck_assert_int_eq(stats[ia].count_diff, -50);
    ouro_trace_snapshot_free(s1);
    ouro_trace_snapshot_free(s2);
    free_all(a, 60);
    free_all(b, 10);
    ouro_trace_stop();
}
END_TEST

static void *free_some(void *arg)
{
    void **v = arg;
    free_all(v, 30);
    return NULL;
}

START_TEST(freed_blocks_leave_the_snapshot_whoever_frees_them)
{
    static void *c[100];
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    trace_site_c(c, 100, 200);
    size_t n = top_now(OURO_TRACE_BY_SIZE);
    long ic = find_site(stats, n, (void *)trace_site_c);
    ck_assert_int_ge(ic, 0);
    ck_assert_uint_eq(stats[ic].count, 100);
    free_all(c, 30);                     /* by this thread */
    pthread_t t;                         /* and by another */
    ck_assert_int_eq(pthread_create(&t, NULL, free_some, c + 30), 0);
    pthread_join(t, NULL);
    n = top_now(OURO_TRACE_BY_SIZE);
    ic = find_site(stats, n, (void *)trace_site_c);
    ck_assert_int_ge(ic, 0);
    ck_assert_uint_eq(stats[ic].count, 40);
    ck_assert_uint_eq(stats[ic].size, 8000);
    free_all(c + 60, 40);
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_c), -1);
    ouro_trace_stop();
}
END_TEST

static int count_traced(const ouro_block_info_t *b, void *arg)
{
    void **v = ((void ***)arg)[0];
    long *traced = ((long **)arg)[1];
    for (int i = 0; i < 10; i++)
        if (b->ptr == v[i] && (b->flags & OURO_BLOCK_TRACED))
            (*traced)++;
    return 0;
}

static long traced_among(void **v)
{
    long traced = 0;
    void *arg[2] = {v, &traced};
    ck_assert_int_eq(ouro_heap_walk(count_traced, arg), 0);
    return traced;
}

START_TEST(stop_and_start_again)
{
    static void *d[10], *e[10], *e2[10];
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    trace_site_d(d, 10);
    ouro_trace_stop();
    ck_assert_int_eq(ouro_trace_is_tracing(), 0);
    trace_site_e(e, 10); /* not traced */
    size_t n = top_now(OURO_TRACE_BY_SIZE);
    long id = find_site(stats, n, (void *)trace_site_d);
    ck_assert_int_ge(id, 0);
    ck_assert_uint_eq(stats[id].count, 10); /* traced blocks stay counted */
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_e), -1);
    ck_assert_int_eq(traced_among(d), 10);
    ck_assert_int_eq(traced_among(e), 0);
    free_all(d, 10); /* leave the counts even while not tracing */
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_d), -1);

    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    trace_site_e(e2, 10);
    n = top_now(OURO_TRACE_BY_SIZE);
    long ie = find_site(stats, n, (void *)trace_site_e);
    ck_assert_int_ge(ie, 0);
    ck_assert_uint_eq(stats[ie].count, 10); /* e2 only: e was allocated while stopped */
    free_all(e, 10);
    free_all(e2, 10);
    ouro_trace_stop();

    /* the option is the same switch */
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE, 3), 0);
    ck_assert_int_eq(ouro_trace_is_tracing(), 3);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_TRACE), 3);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE, 0), 0);
    ck_assert_int_eq(ouro_trace_is_tracing(), 0);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_TRACE), 0);
}
END_TEST

START_TEST(sampling_traces_the_expected_share)
{
    const long S = 4096;
    const int K = (int)tu_scale(40000, 10000);
    void **v = calloc((size_t)K, sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE_SAMPLE, S), 0);
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    trace_site_sampled(v, K);
    size_t n = top_now(OURO_TRACE_BY_SIZE);
    long i = find_site(stats, n, (void *)trace_site_sampled);
    ck_assert_int_ge(i, 0);
    /* each 256-byte block is traced with probability 1 - exp(-256/S), about
     * 6%: with K blocks the count is within 25% of that with a margin of
     * more than five standard deviations */
    double p = -expm1(-256.0 / (double)S), want = K * p;
    ck_assert_msg(fabs((double)stats[i].sampled_count - want) < 0.25 * want, "%zu blocks traced, expected about %.0f",
                  stats[i].sampled_count, want);
    ck_assert_uint_eq(stats[i].sampled_size, stats[i].sampled_count * 256);
    /* and the estimates stand for all K */
    ck_assert_msg(fabs((double)stats[i].count - K) < 0.25 * K, "estimated %zu blocks of %d", stats[i].count, K);
    ck_assert_msg(fabs((double)stats[i].size - 256.0 * K) < 0.25 * 256.0 * K, "estimated %zu bytes of %d",
                  stats[i].size, 256 * K);
    ouro_trace_stop();
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE_SAMPLE, 1), 0);
    free_all(v, K);
    free(v);
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_sampled), -1);
}
END_TEST

/* ---- threads: already running when tracing starts, freeing each other's blocks ---- */
#define NT 4
#define PER 500
static void *tblocks[NT][PER];
static pthread_barrier_t bar;

static void *trace_worker(void *arg)
{
    int me = (int)(uintptr_t)arg;
    /* warm up: the fast path serves these, before tracing starts */
    for (int i = 0; i < 1000; i++)
        ouro_free(ouro_malloc((size_t)(i % 300) + 1));
    pthread_barrier_wait(&bar); /* 1: warm */
    pthread_barrier_wait(&bar); /* 2: tracing started */
    trace_site_thread(tblocks[me], PER, me);
    pthread_barrier_wait(&bar); /* 3: allocated */
    pthread_barrier_wait(&bar); /* 4: main looked */
    free_all(tblocks[(me + 1) % NT], PER); /* the next thread's */
    pthread_barrier_wait(&bar); /* 5: freed */
    return NULL;
}

START_TEST(threads_running_before_start_are_traced_and_free_each_others_blocks)
{
    pthread_t t[NT];
    pthread_barrier_init(&bar, NULL, NT + 1);
    for (int i = 0; i < NT; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, trace_worker, (void *)(uintptr_t)i), 0);
    pthread_barrier_wait(&bar);
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    size_t n = top_now(OURO_TRACE_BY_COUNT);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (in_function(stats[i].frames[0], (void *)trace_site_thread))
            total += stats[i].count;
    ck_assert_uint_eq(total, NT * PER); /* every block of every thread */
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    n = top_now(OURO_TRACE_BY_COUNT);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_thread), -1);
    for (int i = 0; i < NT; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    ouro_trace_stop();
}
END_TEST

/* ---- traced blocks of a thread that exited ---- */
static void *exited_blocks[50];

static void *alloc_and_exit(void *arg)
{
    (void)arg;
    trace_site_c(exited_blocks, 50, 333);
    return NULL;
}

static int count_exited(const ouro_block_info_t *b, void *arg)
{
    int *n = arg;
    for (int i = 0; i < 50; i++)
        if (b->ptr == exited_blocks[i] && (b->flags & OURO_BLOCK_TRACED) && b->owner == 0)
            (*n)++;
    return 0;
}

START_TEST(traced_blocks_of_an_exited_thread)
{
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, alloc_and_exit, NULL), 0);
    pthread_join(t, NULL);
    /* in an abandoned pool now: walked with no owner, counted at their site */
    int n = 0;
    ck_assert_int_eq(ouro_heap_walk(count_exited, &n), 0);
    ck_assert_int_eq(n, 50);
    size_t ns = top_now(OURO_TRACE_BY_SIZE);
    long ic = find_site(stats, ns, (void *)trace_site_c);
    ck_assert_int_ge(ic, 0);
    ck_assert_uint_eq(stats[ic].count, 50);
    ck_assert_uint_eq(stats[ic].size, 50 * 333);
    free_all(exited_blocks, 50);
    ns = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, ns, (void *)trace_site_c), -1);
    ouro_trace_stop();
}
END_TEST

/* ---- traced blocks keep the API's promises ---- */
typedef struct walk_find_s {
    void *ptr;
    size_t size;
    unsigned flags;
    int seen;
} walk_find_t;

static int find_block(const ouro_block_info_t *b, void *arg)
{
    walk_find_t *w = arg;
    if (b->ptr == w->ptr) {
        w->size = b->size;
        w->flags = b->flags;
        w->seen++;
    }
    return 0;
}

static void expect_walk(void *p, unsigned flags)
{
    walk_find_t w = {p, 0, 0, 0};
    ck_assert_int_eq(ouro_heap_walk(find_block, &w), 0);
    ck_assert_int_eq(w.seen, 1);
    ck_assert_uint_eq(w.size, ouro_usable_size(p));
    ck_assert_uint_eq(w.flags & flags, flags);
}

START_TEST(traced_blocks_keep_the_api)
{
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    unsigned char *z = trace_site_calloc(100, 3);
    ck_assert_ptr_nonnull(z);
    ck_assert(tu_is_zero(z, 300));
    ck_assert_uint_ge(ouro_usable_size(z), 300);
    ck_assert(ouro_owns(z));
    expect_walk(z, OURO_BLOCK_TRACED);

    for (size_t align = 32; align <= 8192; align *= 2) {
        void *p = trace_site_aligned(align, 100);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % align, 0);
        ck_assert_uint_ge(ouro_usable_size(p), 100);
        memset(p, 0xab, ouro_usable_size(p));
        expect_walk(p, OURO_BLOCK_TRACED);
        ouro_free(p);
    }

    /* realloc: the contents move, and so do the counts, to the realloc's site */
    void *rv[1];
    trace_site_c(rv, 1, 100);
    unsigned char *r = rv[0];
    fill_pattern(r, 100, 5);
    unsigned char *q = trace_site_realloc(r, 5000);
    ck_assert_ptr_nonnull(q);
    ck_assert(check_pattern(q, 100, 5));
    size_t n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_c), -1);
    long ir = find_site(stats, n, (void *)trace_site_realloc);
    ck_assert_int_ge(ir, 0);
    ck_assert_uint_eq(stats[ir].size, 5000);

    /* large blocks, grown and shrunk */
    unsigned char *l = trace_site_large(300000);
    ck_assert_ptr_nonnull(l);
    fill_pattern(l, 300000, 9);
    expect_walk(l, OURO_BLOCK_TRACED | OURO_BLOCK_LARGE);
    n = top_now(OURO_TRACE_BY_SIZE);
    long il = find_site(stats, n, (void *)trace_site_large);
    ck_assert_int_ge(il, 0);
    ck_assert_uint_eq(stats[il].size, 300000);
    unsigned char *l2 = trace_site_realloc(l, 9000000);
    ck_assert_ptr_nonnull(l2);
    ck_assert(check_pattern(l2, 300000, 9));
    l2 = trace_site_realloc(l2, 1000); /* small again */
    ck_assert(check_pattern(l2, 1000, 9));
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_large), -1);
    ouro_trace_stop();
    /* freed after tracing stopped: they still leave the counts */
    ouro_free_sized(z, 300);
    ouro_free(q);
    ouro_free(l2);
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_calloc), -1);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_realloc), -1);
}
END_TEST

/* ---- objects (ouro_new) ---- */
static void decref_all(ouro_object_t **v, int n)
{
    for (int i = 0; i < n; i++)
        ouro_decref(v[i]);
}

typedef struct obj_walk_s {
    ouro_object_t **v;
    int n, kind;
    int seen, traced;
} obj_walk_t;

static int walk_objects(const ouro_block_info_t *b, void *arg)
{
    obj_walk_t *w = arg;
    for (int i = 0; i < w->n; i++)
        if (b->ptr == w->v[i] && b->kind == w->kind) {
            w->seen++;
            w->traced += (b->flags & OURO_BLOCK_TRACED) != 0;
        }
    return 0;
}

/* How many of v[0..n) the heap walk reports as traced objects of `kind`
 * (after checking it reports each of them once). */
static int traced_objects(ouro_object_t **v, int n, int kind)
{
    obj_walk_t w = {v, n, kind, 0, 0};
    ck_assert_int_eq(ouro_heap_walk(walk_objects, &w), 0);
    ck_assert_int_eq(w.seen, n);
    return w.traced;
}

START_TEST(objects_and_containers_are_traced_per_site)
{
    static ouro_object_t *o[120], *c[50];
    ouro_gc_disable(); /* the containers die by their counts here, not by a collection */
    ouro_barrier();    /* no earlier frees pending: this thread's batch is empty */
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    trace_site_obj(o, 100);
    trace_site_container(c, 50);

    size_t n = top_now(OURO_TRACE_BY_SIZE);
    long io = find_site(stats, n, (void *)trace_site_obj), ic = find_site(stats, n, (void *)trace_site_container);
    ck_assert_int_ge(io, 0);
    ck_assert_int_ge(ic, 0);
    ck_assert_uint_eq(stats[io].count, 100);
    ck_assert_uint_eq(stats[io].size, 100 * sizeof(tobj_t)); /* the type's size, not the block's */
    ck_assert_uint_eq(stats[ic].count, 50);
    ck_assert_uint_eq(stats[ic].size, 50 * sizeof(tcont_t));
    ck_assert_int_lt(io, ic);
    /* the stack: the call of ouro_new, then its caller (this test) */
    ck_assert_uint_ge(stats[io].nframes, 2);
    ck_assert_uint_ge(stats[ic].nframes, 2);
    ck_assert_int_eq(traced_objects(o, 100, OURO_BLOCK_OBJECT), 100);
    ck_assert_int_eq(traced_objects(c, 50, OURO_BLOCK_CONTAINER), 50);

    /* growth of one site shows in a diff */
    ouro_trace_snapshot_t *s1 = ouro_trace_snapshot_take();
    trace_site_obj(o + 100, 20);
    ouro_trace_snapshot_t *s2 = ouro_trace_snapshot_take();
    n = ouro_trace_diff(s2, s1, OURO_TRACE_BY_SIZE, stats, MAXSTATS);
    io = find_site(stats, n, (void *)trace_site_obj);
    ic = find_site(stats, n, (void *)trace_site_container);
    ck_assert_int_eq(stats[io].count_diff, 20);
    ck_assert_int_eq(stats[io].size_diff, 20 * (ptrdiff_t)sizeof(tobj_t));
    ck_assert_int_eq(stats[ic].count_diff, 0);
    ouro_trace_snapshot_free(s1);
    ouro_trace_snapshot_free(s2);

    /* dead, their memory waits for a grace period: still counted (170
     * frees do not fill this thread's batch, so nothing hands them over) */
    decref_all(o, 120);
    decref_all(c, 50);
    n = top_now(OURO_TRACE_BY_SIZE);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) /* two stacks: the test calls the site from two lines */
        if (in_function(stats[i].frames[0], (void *)trace_site_obj))
            count += stats[i].count;
    ck_assert_uint_eq(count, 120);
    /* freed: gone */
    ouro_barrier();
    n = top_now(OURO_TRACE_BY_SIZE);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_obj), -1);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_container), -1);
    ouro_trace_stop();
    ouro_gc_enable();
}
END_TEST

static void *decref_objects(void *arg)
{
    decref_all(arg, 40);
    return NULL;
}

START_TEST(objects_leave_the_counts_however_they_are_freed)
{
    static ouro_object_t *cyc[60], *o[40], *late[10];
    ouro_gc_disable();
    ouro_gc_collect(2);
    ouro_barrier();
    ck_assert_int_eq(ouro_trace_start(FRAMES), 0);
    /* 2-cycles of containers: only a collection frees them */
    trace_site_container(cyc, 60);
    for (int i = 0; i < 60; i += 2) {
        ouro_incref(cyc[i + 1]);
        ouro_setref(&((tcont_t *)cyc[i])->ref, cyc[i + 1]);
        ouro_incref(cyc[i]);
        ouro_setref(&((tcont_t *)cyc[i + 1])->ref, cyc[i]);
    }
    decref_all(cyc, 60);
    ouro_barrier();
    size_t n = top_now(OURO_TRACE_BY_COUNT);
    long ic = find_site(stats, n, (void *)trace_site_container);
    ck_assert_int_ge(ic, 0);
    ck_assert_uint_eq(stats[ic].count, 60); /* held by their cycles */
    ck_assert_int_ge(ouro_gc_collect(2), 60);
    ouro_barrier();
    n = top_now(OURO_TRACE_BY_COUNT);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_container), -1);

    /* objects whose last reference another thread drops */
    trace_site_obj(o, 40);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, decref_objects, o), 0);
    pthread_join(t, NULL);
    ouro_barrier(); /* merges what the other thread queued to us, then waits */
    n = top_now(OURO_TRACE_BY_COUNT);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_obj), -1);

    /* made while tracing, freed after it stopped; made after: not traced */
    trace_site_obj(o, 10);
    ouro_trace_stop();
    trace_site_obj(late, 10);
    ck_assert_int_eq(traced_objects(o, 10, OURO_BLOCK_OBJECT), 10);
    ck_assert_int_eq(traced_objects(late, 10, OURO_BLOCK_OBJECT), 0);
    n = top_now(OURO_TRACE_BY_COUNT);
    long io = find_site(stats, n, (void *)trace_site_obj);
    ck_assert_int_ge(io, 0);
    ck_assert_uint_eq(stats[io].count, 10);
    decref_all(o, 10);
    decref_all(late, 10);
    ouro_barrier();
    n = top_now(OURO_TRACE_BY_COUNT);
    ck_assert_int_eq(find_site(stats, n, (void *)trace_site_obj), -1);
    ouro_gc_enable();
}
END_TEST

START_TEST(bad_arguments_are_refused)
{
    ck_assert_int_eq(ouro_trace_start(0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_trace_start(OURO_TRACE_MAX_FRAMES + 1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_trace_is_tracing(), 0);
    errno = 0;
    ck_assert_uint_eq(ouro_trace_top(NULL, OURO_TRACE_BY_SIZE, NULL, 0), 0);
    ck_assert_int_eq(errno, EINVAL);
    ouro_trace_snapshot_t *s = ouro_trace_snapshot_take();
    ck_assert_ptr_nonnull(s);
    errno = 0;
    ck_assert_uint_eq(ouro_trace_top(s, 7, NULL, 0), 0);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_trace_print(NULL, s, NULL, 7, 1), -1);
    ouro_trace_snapshot_free(s);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE, OURO_TRACE_MAX_FRAMES + 1), -1);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_TRACE_SAMPLE, -1), -1);
}
END_TEST

/* ---- the leak report at exit ---- */
/* In a child: tests/trace_leaker with tracing and the leak report on. */
static void exec_leaker(void *path)
{
    setenv("OURO_TRACE", "4", 1);
    setenv("OURO_TRACE_LEAKS", "1", 1);
    setenv("OURO_DEBUG", "0", 1); /* the default of a --enable-debug build is 1 */
    execl((const char *)path, (const char *)path, (char *)NULL);
    perror("execl");
    _exit(99);
}

START_TEST(leak_report_at_exit_names_the_leaking_site)
{
    const char *top = getenv("top_builddir");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/trace_leaker", top ? top : ".");
    int status;
    const char *buf = tu_run_child(exec_leaker, path, &status);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (status %#x): %s", path, status, buf);
    ck_assert_msg(strstr(buf, "leak report") != NULL, "no leak report: %s", buf);
    ck_assert_msg(strstr(buf, "(4242 B) in 1 blocks") != NULL, "the leaked block is missing: %s", buf);
    ck_assert_msg(strstr(buf, "trace_leaker_site") != NULL, "the leaking site is not named: %s", buf);
    ck_assert_msg(strstr(buf, "trace_leaker_freed") == NULL, "a freed block is reported: %s", buf);
    /* an object too; not one whose count reached zero (its memory waits
     * for a grace period at exit, but the program let it go) */
    ck_assert_msg(strstr(buf, "(424 B) in 1 blocks") != NULL, "the leaked object is missing: %s", buf);
    ck_assert_msg(strstr(buf, "trace_leaker_object_site") != NULL, "the leaking object's site is not named: %s",
                  buf);
    ck_assert_msg(strstr(buf, "trace_leaker_object_freed") == NULL, "a freed object is reported: %s", buf);
}
END_TEST

START_TEST(debug_mode_refuses_tracing)
{
    ck_assert_int_eq(ouro_trace_start(FRAMES), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ouro_trace_is_tracing(), 0);
}
END_TEST

int main(int argc, char **argv)
{
    (void)argc;
    if (debug_mode()) {
        /* debug mode (OURO_DEBUG=1, or --enable-debug as in CI's sanitizer
         * builds) refuses tracing; then start again without it, so the
         * sanitizer builds trace too */
        const TTest *const tests[] = {debug_mode_refuses_tracing, NULL};
        if (tu_run_case("trace-debug", tests) != 0)
            return EXIT_FAILURE;
        setenv("OURO_DEBUG", "0", 1);
        execv("/proc/self/exe", argv);
        perror("test_trace: execv /proc/self/exe");
        return 99;
    }
    const TTest *const tests[] = {
        /* first: under TSan the tests share one process (CK_FORK=no), and
         * once objects were freed liburcu has a call_rcu thread, which its
         * fork handler starts again in the child; TSan kills a child that
         * starts threads after a multi-threaded fork (exit 66), before
         * the exec */
        leak_report_at_exit_names_the_leaking_site,
        top_ranks_sites_by_size_and_by_count,
        diff_shows_growth_of_one_site_only,
        freed_blocks_leave_the_snapshot_whoever_frees_them,
        stop_and_start_again,
        sampling_traces_the_expected_share,
        threads_running_before_start_are_traced_and_free_each_others_blocks,
        traced_blocks_of_an_exited_thread,
        traced_blocks_keep_the_api,
        objects_and_containers_are_traced_per_site,
        objects_leave_the_counts_however_they_are_freed,
        bad_arguments_are_refused,
        NULL};
    return tu_run_case("trace", tests);
}
