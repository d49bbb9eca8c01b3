/* test_alloc.c — the allocation API on one thread: sizes and classes,
 * alignment, calloc, realloc, bad sizes, ownership, statistics, purging. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"

/* Debug mode (OURO_DEBUG=1, or a library configured with --enable-debug):
 * blocks carry guards, so usable sizes, classes and in-place reallocation
 * differ from the default layout's, which these tests otherwise assert. */
static int debug_mode(void)
{
    return ouro_option_get(OURO_OPTION_DEBUG) == 1;
}

/* sizes through a volatile, so the compiler does not warn at the call */
static volatile size_t size_max = SIZE_MAX;

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 131u + i * 7u);
}

static int check_fill(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 131u + i * 7u))
            return 0;
    return 1;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

START_TEST(malloc_sizes_aligned_and_usable)
{
    for (size_t n = 0; n <= 300000; n = n < 1100 ? n + 1 : n * 9 / 8) {
        unsigned char *p = ouro_malloc(n);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % 16, 0);
        ck_assert_uint_ge(ouro_usable_size(p), n);
        ck_assert(ouro_owns(p));
        fill(p, n, (unsigned)n);
        ck_assert(check_fill(p, n, (unsigned)n));
        ouro_free(p);
    }
}
END_TEST

START_TEST(size_classes_are_pymalloc_then_geometric)
{
    for (int c = 1; c <= 32; c++)
        ck_assert_uint_eq(ouro_class_block_size(c), (size_t)c * 16);
    for (int c = 33; c < OURO_NUM_CLASSES; c++) {
        size_t prev = ouro_class_block_size(c - 1), cur = ouro_class_block_size(c);
        ck_assert_uint_gt(cur, prev);
        ck_assert_uint_le(cur * 4, prev * 5); /* at most 25% apart */
    }
    ck_assert_uint_eq(ouro_class_block_size(OURO_NUM_CLASSES - 1), 128 * 1024);
    ck_assert_uint_eq(ouro_class_block_size(OURO_NUM_CLASSES), 0);
    ck_assert_uint_eq(ouro_class_block_size(-1), 0);
    /* every request gets the smallest class that holds it */
    for (size_t n = 1; n <= 128 * 1024; n += (n < 600 ? 1 : 97)) {
        void *p = ouro_malloc(n);
        size_t u = ouro_usable_size(p);
        int c = 1;
        while (ouro_class_block_size(c) < n)
            c++;
        /* debug mode: exactly what was asked (guards follow) */
        ck_assert_uint_eq(u, debug_mode() ? n : ouro_class_block_size(c));
        ouro_free(p);
    }
}
END_TEST

START_TEST(malloc_zero_gives_distinct_blocks)
{
    void *a = ouro_malloc(0), *b = ouro_malloc(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    ouro_free(a);
    ouro_free(b);
}
END_TEST

START_TEST(freed_block_is_reused_first)
{
    void *a = ouro_malloc(100);
    ouro_free(a);
    void *b = ouro_malloc(100);
    ck_assert_ptr_eq(a, b);
    ouro_free(b);
}
END_TEST

START_TEST(many_blocks_distinct_and_intact)
{
    enum { N = 20000 };
    unsigned char **v = calloc(N, sizeof *v);
    for (unsigned i = 0; i < N; i++) {
        size_t n = 1 + (i * 2654435761u) % 700;
        v[i] = ouro_malloc(n);
        ck_assert_ptr_nonnull(v[i]);
        fill(v[i], n, i);
    }
    for (unsigned i = 0; i < N; i += 2) {
        ck_assert(check_fill(v[i], 1 + (i * 2654435761u) % 700, i));
        ouro_free(v[i]);
    }
    for (unsigned i = 1; i < N; i += 2) {
        ck_assert(check_fill(v[i], 1 + (i * 2654435761u) % 700, i));
        ouro_free(v[i]);
    }
    free(v);
}
END_TEST

START_TEST(calloc_zeroes_reused_and_fresh_memory)
{
    enum { N = 512 };
    void *v[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            size_t n = (size_t)(16 + (i % 40) * 16);
            unsigned char *p = ouro_calloc(1, n);
            ck_assert_ptr_nonnull(p);
            for (size_t k = 0; k < n; k++)
                ck_assert_uint_eq(p[k], 0);
            memset(p, 0xAB, n);
            v[i] = p;
        }
        for (int i = 0; i < N; i++)
            ouro_free(v[i]);
    }
    unsigned char *big = ouro_calloc(3, 200000);
    ck_assert_ptr_nonnull(big);
    for (size_t k = 0; k < 600000; k += 4096)
        ck_assert_uint_eq(big[k], 0);
    ouro_free(big);
}
END_TEST

START_TEST(calloc_overflow_is_enomem)
{
    errno = 0;
    ck_assert_ptr_null(ouro_calloc(size_max / 2, 3));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(ouro_calloc(size_max >> 31, size_max >> 31));
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

START_TEST(huge_malloc_is_enomem)
{
    errno = 0;
    ck_assert_ptr_null(ouro_malloc(size_max));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(ouro_malloc(size_max / 2));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(ouro_malloc((size_t)1 << 47));
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

START_TEST(aligned_alloc_every_power_of_two)
{
    for (size_t a = 1; a <= ((size_t)8 << 20); a *= 2) {
        size_t sizes[] = {1, a / 2 + 1, a, a + 1, 3 * a + 5, 1000};
        for (unsigned k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t n = sizes[k];
            if (n > ((size_t)40 << 20))
                continue;
            unsigned char *p = ouro_aligned_alloc(a, n);
            ck_assert_msg(p != NULL, "align %zu size %zu", a, n);
            ck_assert_msg((uintptr_t)p % a == 0, "align %zu size %zu -> %p", a, n, (void *)p);
            ck_assert_uint_ge(ouro_usable_size(p), n);
            ck_assert(ouro_owns(p));
            fill(p, n < 4096 ? n : 4096, (unsigned)a);
            ck_assert(check_fill(p, n < 4096 ? n : 4096, (unsigned)a));
            ouro_free(p);
        }
    }
}
END_TEST

START_TEST(aligned_alloc_bad_alignment_is_einval)
{
    size_t bad[] = {0, 3, 24, 48, 100, ((size_t)1 << 20) + 1};
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        ck_assert_ptr_null(ouro_aligned_alloc(bad[i], 64));
        ck_assert_int_eq(errno, EINVAL);
    }
    errno = 0;
    ck_assert_ptr_null(ouro_aligned_alloc(64, size_max - 10));
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

START_TEST(realloc_null_and_zero)
{
    void *p = ouro_realloc(NULL, 40);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(ouro_usable_size(p), 40);
    ck_assert_ptr_null(ouro_realloc(p, 0));
    ck_assert(!ouro_owns(p));
}
END_TEST

START_TEST(realloc_in_place_within_class)
{
    if (debug_mode())
        return; /* debug mode moves every block, checking the old one's guards */
    unsigned char *p = ouro_malloc(100); /* class of 112 */
    fill(p, 100, 5);
    ck_assert_ptr_eq(ouro_realloc(p, 112), p);
    ck_assert_ptr_eq(ouro_realloc(p, 60), p);
    ck_assert(check_fill(p, 60, 5));
    unsigned char *q = ouro_realloc(p, 20); /* far smaller: moves to a fitting class */
    ck_assert_uint_lt(ouro_usable_size(q), 112);
    ck_assert(check_fill(q, 20, 5));
    ouro_free(q);
}
END_TEST

START_TEST(realloc_grow_and_shrink_keep_contents)
{
    size_t n = 1;
    unsigned char *p = ouro_malloc(n);
    fill(p, n, 9);
    while (n < ((size_t)20 << 20)) {
        size_t m = n * 3 / 2 + 1;
        p = ouro_realloc(p, m);
        ck_assert_ptr_nonnull(p);
        ck_assert_msg(check_fill(p, n, 9), "lost contents growing %zu -> %zu", n, m);
        fill(p, m, 9);
        n = m;
    }
    while (n > 1) {
        size_t m = n / 3;
        p = ouro_realloc(p, m ? m : 1);
        n = m ? m : 1;
        ck_assert(check_fill(p, n, 9));
    }
    ouro_free(p);
}
END_TEST

START_TEST(realloc_large_grows_in_place_within_mapping)
{
    if (debug_mode())
        return; /* debug mode moves every block, checking the old one's guards */
    unsigned char *p = ouro_malloc(300000);
    fill(p, 300000, 3);
    unsigned char *q = ouro_realloc(p, 1000000); /* same 4 MiB mapping */
    ck_assert_ptr_eq(p, q);
    ck_assert(check_fill(q, 300000, 3));
    ouro_free(q);
}
END_TEST

START_TEST(owns_rejects_foreign_pointers_safely)
{
    int local;
    static int global;
    void *libc = malloc(32);
    unsigned char *p = ouro_malloc(64);
    ck_assert(ouro_owns(p));
    ck_assert(!ouro_owns(p + 16));
    ck_assert(!ouro_owns(p + 1));
    ck_assert(!ouro_owns(&local));
    ck_assert(!ouro_owns(&global));
    ck_assert(!ouro_owns(libc));
    ck_assert(!ouro_owns(NULL));
    ck_assert(!ouro_owns((void *)1));
    ck_assert(!ouro_owns((void *)-1));
    ck_assert(!ouro_owns((void *)((uintptr_t)1 << 50)));
    ouro_free(p);
    ck_assert(!ouro_owns(p));
    unsigned char *big = ouro_malloc(1 << 20);
    ck_assert(ouro_owns(big));
    ck_assert(!ouro_owns(big + 4096));
    ouro_free(big);
    ck_assert_uint_eq(ouro_usable_size(NULL), 0);
    free(libc);
}
END_TEST

/* Every free and ouro_owns decide "the start of a carved block" with one
 * multiply and rotate (internal.h, ouro__pool_is_block): each class's block
 * starts are known, every 16-byte step inside a block is not, and neither
 * is a block start past the part of the pool carved so far, whose memory is
 * zero (a zero cookie looks like a live block: only the bound rejects it). */
START_TEST(owns_knows_the_block_starts_of_every_class)
{
    if (debug_mode())
        return; /* guarded blocks: ouro_owns takes any address inside one */
    const char *fork_mode = getenv("CK_FORK");
    bool fresh = fork_mode == NULL || strcmp(fork_mode, "no") != 0; /* each test its own process */
    if (ouro_option_get(OURO_OPTION_HARDENED) == 0 && fresh) {
        /* first, while the process is fresh: classes of 8 KiB and up carve
         * 4 blocks at a time, in address order, and a pool holds at least
         * 8, so the first block of the class has 3 carved blocks after it
         * (fresh cookies: not live), then 4 uncarved ones, all zero */
        for (size_t size = 8 << 10; size <= (128 << 10); size *= 2) {
            unsigned char *p = ouro_malloc(size);
            ck_assert(ouro_owns(p));
            for (int i = 1; i < 8; i++)
                ck_assert_msg(!ouro_owns(p + (size_t)i * size), "block %d of the %zu-byte class", i, size);
            ouro_free(p);
        }
    }
    for (int c = 1; c < OURO_NUM_CLASSES; c++) {
        size_t bs = ouro_class_block_size(c);
        unsigned char *p[3];
        for (int i = 0; i < 3; i++) {
            p[i] = ouro_malloc(bs);
            ck_assert_uint_eq(ouro_usable_size(p[i]), bs);
            ck_assert(ouro_owns(p[i]));
        }
        /* every offset inside a block for classes up to 1 KiB, 64 spread
         * ones (and the last) for the rest */
        size_t step = bs <= 1024 ? 16 : (bs / 64 + 15) & ~(size_t)15;
        for (size_t off = 16; off < bs; off += step) {
            ck_assert_msg(!ouro_owns(p[1] + off), "class %zu: offset %zu passes for a block start", bs, off);
            ck_assert(!ouro_owns(p[1] + off - 8));
        }
        if (bs > 16)
            ck_assert(!ouro_owns(p[1] + bs - 16));
        ck_assert(!ouro_owns(p[1] + 1));
        for (int i = 0; i < 3; i++)
            ouro_free(p[i]);
    }
}
END_TEST

START_TEST(free_null_and_free_sized)
{
    ouro_free(NULL);
    ouro_free_sized(NULL, 10);
    void *p = ouro_malloc(300);
    ouro_free_sized(p, 300);
    void *q = ouro_malloc(500000);
    ouro_free_sized(q, 500000);
}
END_TEST

START_TEST(stats_follow_allocations)
{
    ouro_stats_t a, b, c;
    enum { N = 1000 };
    void *v[N];
    /* class 13: 208 bytes; in debug mode 200 + 64 bytes of guards: class 17 */
    int k = debug_mode() ? 17 : 13;
    size_t bs = (size_t)k * 16;
    ouro_stats_get(&a);
    for (int i = 0; i < N; i++)
        v[i] = ouro_malloc(200);
    void *big = ouro_malloc(1 << 20);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.classes[k].block_size, bs);
    ck_assert_uint_eq(b.classes[k].blocks_used - a.classes[k].blocks_used, N);
    ck_assert_uint_ge(b.in_use - a.in_use, (size_t)N * bs + (1 << 20));
    ck_assert_uint_eq(b.large_count, a.large_count + 1);
    ck_assert_uint_ge(b.reserved, b.committed);
    ck_assert_uint_ge(b.committed, b.in_use - b.large_bytes);
    ck_assert_uint_ge(b.threads, 1);
    for (int i = 0; i < N; i++)
        ouro_free(v[i]);
    ouro_free(big);
    ouro_stats_get(&c);
    ck_assert_uint_eq(c.classes[k].blocks_used, a.classes[k].blocks_used);
    ck_assert_uint_eq(c.large_count, a.large_count);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ouro_stats_print(f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "reserved"));
    free(buf);
    f = open_memstream(&buf, &len);
    ouro_stats_print_json(f);
    fclose(f);
    ck_assert_int_eq(buf[0], '{');
    ck_assert_int_eq(buf[len - 2], '}');
    ck_assert_ptr_nonnull(strstr(buf, "\"in_use\":"));
    ck_assert_ptr_nonnull(strstr(buf, "\"objects\":{"));
    free(buf);
}
END_TEST

START_TEST(idle_memory_goes_back_to_the_os)
{
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 0), 0);
    enum { N = 64 * 1024 };
    void **v = malloc(N * sizeof *v);
    for (int i = 0; i < N; i++) {
        v[i] = ouro_malloc(256);
        memset(v[i], 1, 256); /* 16 MiB touched */
    }
    ouro_stats_t a, b;
    ouro_stats_get(&a);
    size_t rss_full = rss_bytes();
    for (int i = 0; i < N; i++)
        ouro_free(v[i]);
    ouro_collect(1);
    ouro_stats_get(&b);
    size_t rss_empty = rss_bytes();
    ck_assert_uint_gt(b.purged_bytes, a.purged_bytes);
    ck_assert_uint_ge(b.purged_bytes - a.purged_bytes, (size_t)12 << 20);
    ck_assert_uint_le(b.committed + ((size_t)12 << 20), a.committed);
    ck_assert_msg(rss_full > rss_empty + ((size_t)12 << 20), "rss %zu -> %zu", rss_full, rss_empty);
    /* and it is usable again */
    for (int i = 0; i < N; i++)
        v[i] = ouro_calloc(1, 256);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(((unsigned char *)v[i])[255], 0);
        ouro_free(v[i]);
    }
    free(v);
}
END_TEST

/* A freed large block's mapping waits for the next large block of its
 * mapping size (the newest first), at most 16 of them; calloc takes one up
 * to 1 MiB and clears it; ouro_collect(1) unmaps them, as does the purge
 * delay passing.  Debug
 * and hardened modes keep none: an access to a freed large block must fault
 * there. */
START_TEST(freed_large_mappings_are_reused_then_unmapped)
{
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 3600000), 0); /* no aging here */
    ouro_collect(1);
    ouro_stats_t a, b;
    ouro_stats_get(&a);
    ck_assert_uint_eq(a.large_cached, 0);
    unsigned char *p = ouro_malloc(1 << 20);
    fill(p, 1 << 20, 5);
    ouro_free(p);
    ouro_stats_get(&b);
    if (debug_mode() || ouro_option_get(OURO_OPTION_HARDENED) == 1) {
        ck_assert_uint_eq(b.large_cached, 0);
        ck_assert_uint_eq(b.reserved, a.reserved);
        return;
    }
    ck_assert_uint_eq(b.large_cached, 1);
    ck_assert_uint_eq(b.large_count, a.large_count);
    ck_assert_uint_ge(b.reserved, a.reserved + (1 << 20)); /* still mapped ... */
    ck_assert_uint_ge(b.committed, a.committed + (1 << 20)); /* ... and its pages in RAM */
    /* a block of the same mapping size (a unit, 4 MiB) takes it: same address */
    unsigned char *q = ouro_malloc(3 << 20);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_ge(ouro_usable_size(q), 3 << 20);
    fill(q, 3 << 20, 6);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 0);
    ck_assert_uint_eq(b.large_count, a.large_count + 1);
    ouro_free(q);
    /* calloc up to 1 MiB takes it too, and clears what the last block wrote */
    unsigned char *z = ouro_calloc(1, 1 << 20);
    ck_assert_ptr_eq(z, q);
    for (size_t i = 0; i < 1 << 20; i += 4093)
        ck_assert_uint_eq(z[i], 0);
    ck_assert_uint_eq(z[(1 << 20) - 1], 0);
    ck_assert_uint_ge(ouro_usable_size(z), 2 << 20); /* the mapping's rest is the block's */
    /* (the bytes asked for only: UBSan's object-size check holds a write
     * past them to be an overflow, whatever ouro_usable_size says) */
    fill(z, 1 << 20, 7);
    ouro_free(z);
    /* a larger calloc maps afresh (zero until touched) and leaves it */
    z = ouro_calloc(1, 2 << 20);
    ck_assert_ptr_ne(z, q);
    ck_assert_uint_eq(z[0], 0);
    ck_assert_uint_eq(z[(2 << 20) - 1], 0);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 1);
    ouro_free(z);
    ouro_collect(1);
    /* the newest first, and at most 16 kept: the oldest go back to the OS */
    enum { N = 20 };
    unsigned char *v[N];
    for (int i = 0; i < N; i++)
        v[i] = ouro_malloc(1 << 20);
    for (int i = 0; i < N; i++)
        ouro_free(v[i]);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 16);
    unsigned char *w = ouro_malloc(1 << 20);
    ck_assert_ptr_eq(w, v[N - 1]);
    ouro_free(w);
    /* ouro_collect(1) unmaps them all */
    ouro_collect(1);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 0);
    ck_assert_uint_eq(b.reserved, a.reserved);
    ck_assert_uint_eq(b.committed, a.committed);
    /* and a mapping that waited longer than the purge delay goes at the next scan */
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 20), 0);
    ouro_free(ouro_malloc(1 << 20));
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 1);
    usleep(32 * 20 * 1000 + 50 * 1000); /* past the longest delay in force: 32 times the option */
    ouro_collect(0);
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 0);
    ck_assert_uint_eq(b.reserved, a.reserved);
    /* with a purge delay of 0 nothing waits */
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 0), 0);
    ouro_free(ouro_malloc(1 << 20));
    ouro_stats_get(&b);
    ck_assert_uint_eq(b.large_cached, 0);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 10), 0);
}
END_TEST

/* A new pool goes where a freed one left its pages in RAM before it goes
 * to a slot whose pages were given back: reusing the clean slot would
 * fault its pages in again while the dirty one waits for its purge. */
START_TEST(new_pools_reuse_dirty_slots_before_purged_ones)
{
    if (debug_mode())
        return; /* debug mode keeps freed blocks a while: pools do not empty */
    long delay = ouro_option_get(OURO_OPTION_PURGE_DELAY);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 3600000), 0); /* only ouro_collect(1) purges */
    enum { N = 1024, BS = 1024 };
    static void *v[N];
    for (int i = 0; i < N; i++)
        v[i] = ouro_malloc(BS);
    /* the pools, by 64 KiB slot, in address order: A, a full one low in
     * the list, and B, a full one above it that is not the last (the heap's
     * current pool, which stays when empty) */
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < N; i++) {
        uintptr_t s = (uintptr_t)v[i] >> 16;
        lo = s < lo ? s : lo;
        hi = s > hi ? s : hi;
    }
    uintptr_t a = 0, b = 0;
    int full = 65536 / BS;
    for (uintptr_t s = lo; s < hi; s++) {
        int n = 0;
        for (int i = 0; i < N; i++)
            n += ((uintptr_t)v[i] >> 16) == s;
        if (n == full && a == 0)
            a = s;
        else if (n == full && a != 0 && s > a + 1)
            b = s;
    }
    ck_assert_msg(a != 0 && b != 0, "two full pools apart: %#lx %#lx", (unsigned long)a, (unsigned long)b);
    for (int i = 0; i < N; i++)
        if (((uintptr_t)v[i] >> 16) == a) {
            ouro_free(v[i]);
            v[i] = NULL;
        }
    ouro_collect(1); /* A's slot is free and purged: clean */
    for (int i = 0; i < N; i++)
        if (((uintptr_t)v[i] >> 16) == b) {
            ouro_free(v[i]);
            v[i] = NULL;
        }
    ouro_stats_t before, after;
    ouro_stats_get(&before); /* B's slot is free and dirty */
    static void *w[64];
    for (int i = 0; i < full; i++) {
        w[i] = ouro_malloc(BS);
        ck_assert_msg(((uintptr_t)w[i] >> 16) != a, "a new block in the purged slot");
    }
    ouro_stats_get(&after);
    ck_assert_uint_eq(after.committed, before.committed); /* no slot was dirtied */
    ck_assert_int_eq(ouro_test_check_arenas(), 0);
    for (int i = 0; i < full; i++)
        ouro_free(w[i]);
    for (int i = 0; i < N; i++)
        ouro_free(v[i]);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, delay), 0);
}
END_TEST

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static long delay_in_force(void)
{
    ouro_stats_t st;
    ouro_stats_get(&st);
    return st.purge_delay_ms;
}

/* A pool purged and claimed again soon after doubles the delay in force,
 * so the next pool freed keeps its memory past the option's delay; a
 * second without that halves it back. */
START_TEST(purge_delay_grows_when_purged_memory_comes_back)
{
    const char *fork_mode = getenv("CK_FORK");
    if (debug_mode() || (fork_mode && strcmp(fork_mode, "no") == 0))
        return; /* needs a fresh process: slots in address order, the delay not raised yet */
    enum { D = 100, BS = 1024, PER = 65536 / BS };
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, D), 0);
    ck_assert_int_eq(delay_in_force(), D);
    static void *v[3 * PER];
    for (int i = 0; i < 3 * PER; i++)
        v[i] = ouro_malloc(BS); /* three pools: the first two full */
    /* the first pool freed: released, and purged once the delay passed */
    ouro_stats_t a, b;
    for (int i = 0; i < PER; i++)
        ouro_free(v[i]);
    usleep(2 * D * 1000);
    ouro_stats_get(&a);
    ouro_collect(0);
    ouro_stats_get(&b);
    ck_assert_uint_gt(b.purges, a.purges);
    ck_assert_int_eq(b.purge_delay_ms, D);
    /* a pool's worth again: the purged slot (the only free one below the
     * arena's unused ones) comes back within 4 delays of its purge */
    for (int i = 0; i < PER; i++)
        v[i] = ouro_malloc(BS);
    ck_assert_int_eq(delay_in_force(), 2 * D);
    /* the second pool freed now waits for the longer delay */
    for (int i = PER; i < 2 * PER; i++)
        ouro_free(v[i]);
    uint64_t freed = now_ms();
    usleep(D * 1000 * 3 / 2);
    ouro_stats_get(&a);
    ouro_collect(0);
    ouro_stats_get(&b);
    if (now_ms() - freed < 2 * D) /* a loaded machine may oversleep: then nothing is shown */
        ck_assert_uint_eq(b.purges, a.purges);
    /* a second without a premature purge halves it back */
    usleep(1100 * 1000);
    ouro_collect(0);
    ck_assert_int_eq(delay_in_force(), D);
    /* memory the program had purged (ouro_collect(1)) and claims again
     * never counts */
    usleep(2 * D * 1000);
    for (int i = 0; i < PER; i++)
        ouro_free(v[i]);
    ouro_collect(1);
    ck_assert_int_eq(ouro_test_check_arenas(), 0);
    for (int i = 0; i < PER; i++)
        v[i] = ouro_malloc(BS);
    ck_assert_int_eq(delay_in_force(), D);
    ck_assert_int_eq(ouro_test_check_arenas(), 0);
    for (int i = 0; i < PER; i++)
        ouro_free(v[i]);
    for (int i = 2 * PER; i < 3 * PER; i++)
        ouro_free(v[i]);
}
END_TEST

/* Lowering the purge delay acts at once: a purge scan that the old, longer
 * delay set for later runs by the new one's time. */
START_TEST(lowered_purge_delay_acts_at_once)
{
    const char *fork_mode = getenv("CK_FORK");
    if (debug_mode() || (fork_mode && strcmp(fork_mode, "no") == 0))
        return; /* debug mode keeps freed blocks a while: pools do not empty; and it needs a
                 * fresh process, where the first PER blocks fill a pool of their own */
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 3600000), 0);
    enum { BS = 1024, PER = 65536 / BS };
    static void *v[2 * PER];
    for (int i = 0; i < 2 * PER; i++)
        v[i] = ouro_malloc(BS); /* two pools, the first full */
    for (int i = 0; i < PER; i++)
        ouro_free(v[i]); /* released: a scan now, the next in an hour */
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 10), 0);
    usleep(32 * 10 * 1000 + 100 * 1000); /* past the longest delay in force: 32 times the option */
    ouro_stats_t a, b;
    ouro_stats_get(&a);
    ouro_collect(0);
    ouro_stats_get(&b);
    ck_assert_uint_gt(b.purges, a.purges);
    for (int i = PER; i < 2 * PER; i++)
        ouro_free(v[i]);
}
END_TEST

/* Blocks of a dozen arenas or more: with a small reservation
 * (tests/reserve.sh: OURO_ARENA_RESERVE=8) the first two lie in it and the
 * rest were mapped one by one; free, usable_size and owns treat them alike,
 * and a block freed twice or an interior pointer is reported in either
 * (test_errors under the same script). */
static int cmp_uintptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Pools of the classes above 2 KiB span enough slots for 32 blocks (pool.c,
 * POOL_MIN_BLOCKS): a new thread that allocates 32 blocks of each of three
 * such sizes claims one pool for each.  At 8 blocks to a pool (before) it
 * claimed 2, 4 and 4. */
typedef struct {
    void *v[3 * 32];
    size_t pools, claimed;
} span_probe_t;

static void *alloc_32_of_each(void *arg)
{
    static const size_t sizes[3] = {3000, 6000, 12000};
    span_probe_t *p = arg;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 32; i++)
            p->v[k * 32 + i] = ouro_malloc(sizes[k]);
    static ouro_thread_stats_t st[64];
    size_t n = ouro_stats_threads(st, 64);
    for (size_t i = 0; i < n && i < 64; i++)
        if (st[i].thread == (uintptr_t)pthread_self()) {
            p->pools = st[i].pools;
            p->claimed = st[i].pools_claimed;
        }
    return NULL;
}

START_TEST(pools_above_2k_hold_32_blocks)
{
    if (debug_mode())
        return; /* debug mode's blocks come from pools of its own */
    static span_probe_t p;
    p.pools = p.claimed = 99;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, alloc_32_of_each, &p), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(p.pools, 3);
    ck_assert_uint_eq(p.claimed, 3);
    for (int i = 0; i < 3 * 32; i++) {
        ck_assert_ptr_nonnull(p.v[i]);
        ouro_free(p.v[i]);
    }
}
END_TEST

START_TEST(blocks_in_many_arenas_are_all_alike)
{
    enum { BS = 1024, N = 48 << 10 }; /* 48 MiB */
    void **v = malloc(N * sizeof *v);
    ouro_stats_t a, b;
    ouro_stats_get(&a);
    for (int i = 0; i < N; i++) {
        v[i] = ouro_malloc(BS);
        ck_assert_ptr_nonnull(v[i]);
        memset(v[i], (int)(i & 0xff), 64);
    }
    /* arenas (4 MiB units) holding them: 48 MiB does not fit in fewer
     * than 13, whatever earlier tests of this process left free */
    uintptr_t *unit = malloc(N * sizeof *unit);
    for (int i = 0; i < N; i++)
        unit[i] = (uintptr_t)v[i] >> 22;
    qsort(unit, N, sizeof *unit, cmp_uintptr);
    size_t units = 1;
    for (int i = 1; i < N; i++)
        units += unit[i] != unit[i - 1];
    free(unit);
    ck_assert_uint_ge(units, 12);
    /* free in an order that mixes arenas: every 7th block, then the rest */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < N; i++) {
            if ((i % 7 == 0) != (pass == 0) || v[i] == NULL)
                continue;
            ck_assert(ouro_owns(v[i]));
            ck_assert_uint_eq(ouro_usable_size(v[i]), BS); /* a class of its own */
            ck_assert_uint_eq(((unsigned char *)v[i])[63], (unsigned char)(i & 0xff));
            ouro_free(v[i]);
            v[i] = NULL;
        }
    ouro_stats_get(&b);
    ck_assert_uint_le(b.in_use, a.in_use);
    free(v);
}
END_TEST

START_TEST(options_reject_bad_values)
{
    long old = ouro_option_get(OURO_OPTION_PURGE_DELAY);
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, -5), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_PURGE_DELAY), old);
    errno = 0;
    ck_assert_int_eq(ouro_option_set((ouro_option_t)99, 1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_PURGE_DELAY, 250), 0);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_PURGE_DELAY), 250);
    ck_assert_str_eq(ouro_version(), "0.1.0");
}
END_TEST

/* Options read once at start: a change the library could not act on is
 * refused, and the collector's two are views of its own settings. */
START_TEST(options_read_at_start_are_refused_or_act_on_the_collector)
{
    ouro_free(ouro_malloc(16)); /* an arena exists: NUMA placement was chosen */
    long numa = ouro_option_get(OURO_OPTION_NUMA);
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_NUMA, !numa), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_NUMA), numa);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_NUMA, numa), 0); /* no change: accepted */
    long reserve = ouro_option_get(OURO_OPTION_ARENA_RESERVE);
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_ARENA_RESERVE, reserve + 4), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_ARENA_RESERVE), reserve);
    ouro_stats_t st;
    ouro_stats_get(&st); /* the reservation made: the option's, or less if the kernel refused */
    ck_assert_uint_le(st.arena_reserve, (size_t)reserve << 20);
    ck_assert_uint_eq(st.arena_reserve % ((size_t)4 << 20), 0); /* whole arenas */

    ck_assert_int_eq(ouro_option_set(OURO_OPTION_GC, 0), 0);
    ck_assert_int_eq(ouro_gc_is_enabled(), 0);
    ouro_gc_enable(); /* the API and the option agree */
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_GC), 1);
    ouro_gc_disable();
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_GC), 0);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_GC, 1), 0);
    ck_assert_int_eq(ouro_gc_is_enabled(), 1);

    long t[3], u[3];
    ouro_gc_get_threshold(t);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_GC_THRESHOLD, 1234), 0);
    ouro_gc_get_threshold(u);
    ck_assert_int_eq(u[0], 1234);
    ck_assert_int_eq(u[1], t[1]); /* the older generations' are kept */
    ck_assert_int_eq(u[2], t[2]);
    ck_assert_int_eq(ouro_gc_set_threshold(t[0], t[1], t[2]), 0);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_GC_THRESHOLD), t[0]);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--reserve") == 0) {
        /* for tests/reserve.sh: the address space reserved for arenas */
        ouro_free(ouro_malloc(16));
        ouro_stats_t st;
        ouro_stats_get(&st);
        printf("%zu\n", st.arena_reserve);
        return 0;
    }
    const TTest *const tests[] = {
        malloc_sizes_aligned_and_usable,
        size_classes_are_pymalloc_then_geometric,
        malloc_zero_gives_distinct_blocks,
        freed_block_is_reused_first,
        many_blocks_distinct_and_intact,
        calloc_zeroes_reused_and_fresh_memory,
        calloc_overflow_is_enomem,
        huge_malloc_is_enomem,
        aligned_alloc_every_power_of_two,
        aligned_alloc_bad_alignment_is_einval,
        realloc_null_and_zero,
        realloc_in_place_within_class,
        realloc_grow_and_shrink_keep_contents,
        realloc_large_grows_in_place_within_mapping,
        owns_rejects_foreign_pointers_safely,
        owns_knows_the_block_starts_of_every_class,
        free_null_and_free_sized,
        stats_follow_allocations,
        idle_memory_goes_back_to_the_os,
        new_pools_reuse_dirty_slots_before_purged_ones,
        freed_large_mappings_are_reused_then_unmapped,
        purge_delay_grows_when_purged_memory_comes_back,
        lowered_purge_delay_acts_at_once,
        blocks_in_many_arenas_are_all_alike,
        pools_above_2k_hold_32_blocks,
        options_reject_bad_values,
        options_read_at_start_are_refused_or_act_on_the_collector,
        NULL};
    return tu_run_case("alloc", tests);
}
