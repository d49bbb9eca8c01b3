/* test_debug.c — debug mode (OURO_DEBUG=1): each kind of misuse is reported
 * with the address, the size class and the allocating call site, then the
 * process aborts; and the debug layout keeps every promise of the API
 * (contents, alignment, zeroing, sizes), across threads too.
 *
 * The mode is chosen when the library starts, so main() re-executes the
 * test with OURO_DEBUG=1 when it is not set.  Each misuse runs in a forked
 * child whose stderr comes back through a pipe, as in test_errors.c. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"
#include "tuchild.h"

typedef tu_child_fn misuse_fn;

/* Run fn(arg) in a child; assert it dies of SIGABRT, and return its output. */
static const char *run_abort(misuse_fn *fn, void *arg)
{
    return tu_run_death(fn, arg, SIGABRT);
}



/* "size class N" for the class of a debug block holding `size` bytes: the
 * block holds 64 bytes of header and guards besides. */
static char *class_of(size_t size)
{
    static char s[64];
    size_t need = size + 64;
    ck_assert_uint_le(need, 512);
    snprintf(s, sizeof s, "size class %zu,", (need + 15) / 16);
    return s;
}

/* The call site the report names lies in [lo, lo + 512): the function that
 * called the allocator.  The report prints it as "allocated at 0x...". */
static void expect_site(const char *msg, const void *lo)
{
    const char *at = strstr(msg, "allocated at 0x");
    ck_assert_msg(at != NULL, "no call site in: %s", msg);
    uintptr_t site = (uintptr_t)strtoull(at + strlen("allocated at "), NULL, 16);
    ck_assert_msg(site > (uintptr_t)lo && site < (uintptr_t)lo + 512,
                  "call site %#lx is not in the allocating function at %p: %s", (unsigned long)site, lo, msg);
}

/* ---- the misuses, each in a child; noinline so the call site is theirs ---- */

static void *volatile last; /* the block the child allocated, for the parent's messages */

static __attribute__((noinline)) void *alloc_here(size_t n)
{
    void *p = ouro_malloc(n);
    /* a use after the call: no tail call, so the call site is in here */
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

START_TEST(overflow_is_reported_at_free)
{
    /* the child allocates through alloc_here, so the report names it */
    char *p = alloc_here(24);
    p[24] = 'x'; /* one byte past the end */
    const char *msg = run_abort((misuse_fn *)ouro_free, p);
    tu_expect_in(msg, "buffer overflow");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(24));
    tu_expect_in(msg, "guard byte +0 past the end");
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

START_TEST(overflow_into_slack_is_reported)
{
    /* 17 bytes: the block has room to spare past them, all of it guarded */
    char *p = alloc_here(17);
    p[20] = 0;
    const char *msg = run_abort((misuse_fn *)ouro_free, p);
    tu_expect_in(msg, "buffer overflow");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, "guard byte +3 past the end");
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

static void do_realloc(void *p)
{
    (void)!ouro_realloc(p, 1000);
}

START_TEST(overflow_is_reported_at_realloc)
{
    char *p = alloc_here(100);
    memset(p, 1, 101);
    const char *msg = run_abort(do_realloc, p);
    tu_expect_in(msg, "buffer overflow");
    tu_expect_in(msg, "ouro_realloc");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(100));
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

START_TEST(underflow_is_reported)
{
    char *p = alloc_here(32);
    p[-3] = 0;
    const char *msg = run_abort((misuse_fn *)ouro_free, p);
    tu_expect_in(msg, "buffer underflow");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(32));
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

START_TEST(large_overflow_is_reported)
{
    size_t n = (size_t)1 << 20;
    char *p = alloc_here(n);
    p[n + 5] = 0;
    const char *msg = run_abort((misuse_fn *)ouro_free, p);
    tu_expect_in(msg, "buffer overflow");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, "size class: large");
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

static __attribute__((noinline)) void write_after_free(void *arg)
{
    (void)arg;
    char *p = ouro_malloc(40);
    last = p;
    ouro_free(p);
    p[3] = 'x';
    /* the same class on the same thread: the block comes back first */
    (void)!ouro_malloc(40);
}

START_TEST(write_after_free_is_reported_when_reused)
{
    /* the child's block: the parent's heap is in the same state, so its
     * next block of the class is the one the child will get */
    void *p = ouro_malloc(40);
    ouro_free(p);
    const char *msg = run_abort(write_after_free, NULL);
    tu_expect_in(msg, "write after free");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(40));
    tu_expect_in(msg, "its byte 3 ");
    expect_site(msg, (const void *)write_after_free);
}
END_TEST

static void *free_remotely(void *p)
{
    ouro_free(p);
    return NULL;
}

static __attribute__((noinline)) void write_after_remote_free(void *arg)
{
    (void)arg;
    char *p = ouro_malloc(200);
    pthread_t t;
    pthread_create(&t, NULL, free_remotely, p);
    pthread_join(t, NULL);
    p[150] = 'y';
    /* the owner takes remote frees back when its pools run dry: allocate
     * until the block comes back (its check aborts us) */
    for (int i = 0; i < 100000; i++)
        (void)!ouro_malloc(200);
}

START_TEST(write_after_remote_free_is_reported)
{
    const char *msg = run_abort(write_after_remote_free, NULL);
    tu_expect_in(msg, "write after free");
    tu_expect_in(msg, class_of(200));
    tu_expect_in(msg, "its byte 150 ");
    expect_site(msg, (const void *)write_after_remote_free);
}
END_TEST

static void do_double_free(void *p)
{
    ouro_free(p);
    ouro_free(p);
}

START_TEST(double_free_is_reported)
{
    void *p = alloc_here(64);
    const char *msg = run_abort(do_double_free, p);
    tu_expect_in(msg, "double free");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(64));
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

START_TEST(double_free_from_another_thread_is_reported)
{
    void *p = alloc_here(300);
    pthread_t t;
    pthread_create(&t, NULL, free_remotely, p);
    pthread_join(t, NULL);
    const char *msg = run_abort((misuse_fn *)ouro_free, p);
    tu_expect_in(msg, "double free");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(300));
    expect_site(msg, (const void *)alloc_here);
}
END_TEST

START_TEST(invalid_free_of_interior_pointer_is_reported)
{
    char *p = alloc_here(80);
    const char *msg = run_abort((misuse_fn *)ouro_free, p + 8);
    tu_expect_in(msg, "invalid free");
    tu_expect_in(msg, tu_addr(p + 8));
    tu_expect_in(msg, class_of(80));
    tu_expect_in(msg, "8 bytes from");
    expect_site(msg, (const void *)alloc_here);
    /* an address in the block's header, before the user bytes */
    msg = run_abort((misuse_fn *)ouro_free, p - 16);
    tu_expect_in(msg, "invalid free");
    tu_expect_in(msg, tu_addr(p - 16));
    tu_expect_in(msg, class_of(80));
    ouro_free(p);
}
END_TEST

START_TEST(invalid_free_of_foreign_pointer_is_reported)
{
    int local;
    const char *msg = run_abort((misuse_fn *)ouro_free, &local);
    tu_expect_in(msg, "invalid free");
    tu_expect_in(msg, tu_addr(&local));
    tu_expect_in(msg, "size class: none");
    void *m = malloc(64);
    msg = run_abort((misuse_fn *)ouro_free, m);
    tu_expect_in(msg, "invalid free");
    tu_expect_in(msg, tu_addr(m));
    free(m);
}
END_TEST

static void do_realloc_freed(void *p)
{
    ouro_free(p);
    (void)!ouro_realloc(p, 10);
}

START_TEST(realloc_of_freed_block_is_reported)
{
    void *p = alloc_here(48);
    const char *msg = run_abort(do_realloc_freed, p);
    tu_expect_in(msg, "double free");
    tu_expect_in(msg, "ouro_realloc");
    tu_expect_in(msg, tu_addr(p));
    tu_expect_in(msg, class_of(48));
    ouro_free(p);
}
END_TEST

/* ---- objects ---- */
static const ouro_type_t plain_type = {.name = "plain", .basic_size = 48};

static void do_decref(void *o)
{
    ouro_decref(o);
}

static void do_decref_twice(void *o)
{
    ouro_decref(o);
    ouro_decref(o);
}

START_TEST(decref_below_zero_is_reported)
{
    ouro_object_t *o = ouro_new(&plain_type);
    ck_assert_ptr_nonnull(o);
    /* the owner drops its only reference twice */
    const char *msg = run_abort(do_decref_twice, o);
    tu_expect_in(msg, "below zero");
    tu_expect_in(msg, tu_addr(o));
    tu_expect_in(msg, "size class 3,"); /* 48 bytes: objects keep their layout */
    tu_expect_in(msg, "type plain");
    /* and with references left, dropping one too many */
    ouro_incref(o);
    ouro_decref(o);
    msg = run_abort(do_decref_twice, o);
    tu_expect_in(msg, "below zero");
    do_decref(o);
}
END_TEST

/* ---- what debug mode keeps of the API ---- */

START_TEST(debug_mode_is_on_and_fixed)
{
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_DEBUG), 1);
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_DEBUG, 0), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_DEBUG, 1), 0);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_DEBUG), 1);
}
END_TEST

START_TEST(blocks_are_filled_and_sized_as_asked)
{
    for (size_t n = 0; n <= 3000; n += n < 64 ? 1 : 37) {
        unsigned char *p = ouro_malloc(n);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % 16, 0);
        ck_assert_uint_eq(ouro_usable_size(p), n);
        ck_assert(ouro_owns(p));
        for (size_t i = 0; i < n; i++)
            ck_assert_uint_eq(p[i], 0xcd);
        unsigned char *z = ouro_calloc(1, n);
        for (size_t i = 0; i < n; i++)
            ck_assert_uint_eq(z[i], 0);
        fill_pattern(p, n, n);
        ouro_free(z);
        ck_assert(check_pattern(p, n, n));
        ouro_free(p);
    }
}
END_TEST

START_TEST(freed_blocks_are_filled_with_0xdd)
{
    unsigned char *p = ouro_malloc(100);
    memset(p, 0x11, 100);
    ouro_free(p);
    /* reading freed memory is what a buggy program does; ouro's own memory
     * stays mapped, and this is what it would see */
    for (size_t i = 0; i < 100; i++)
        ck_assert_uint_eq(p[i], 0xdd);
    ck_assert(!ouro_owns(p));
}
END_TEST

START_TEST(realloc_keeps_contents)
{
    size_t n = 10;
    unsigned char *p = ouro_malloc(n);
    fill_pattern(p, n, 7);
    for (size_t m = 11; m < (size_t)1 << 19; m = m * 3 + 1) {
        p = ouro_realloc(p, m);
        ck_assert_ptr_nonnull(p);
        ck_assert(check_pattern(p, n, 7));
        ck_assert_uint_eq(ouro_usable_size(p), m);
        fill_pattern(p, m, 7);
        n = m;
    }
    p = ouro_realloc(p, 5);
    ck_assert(check_pattern(p, 5, 7));
    ck_assert_ptr_null(ouro_realloc(p, 0));
}
END_TEST

START_TEST(aligned_blocks_are_aligned_and_guarded)
{
    for (size_t align = 32; align <= ((size_t)1 << 16); align *= 2) {
        size_t n = 3 * align / 2 + 1;
        unsigned char *p = ouro_aligned_alloc(align, n);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % align, 0);
        ck_assert_uint_eq(ouro_usable_size(p), n);
        memset(p, 0x5a, n);
        ouro_free(p);
    }
}
END_TEST

START_TEST(large_blocks_work)
{
    size_t n = (size_t)3 << 20;
    unsigned char *p = ouro_calloc(1, n);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p[0] | p[n / 2] | p[n - 1], 0);
    ck_assert_uint_eq(ouro_usable_size(p), n);
    ck_assert(ouro_owns(p));
    unsigned char *q = ouro_malloc(n);
    ck_assert_uint_eq(q[n - 1], 0xcd);
    memset(q, 1, n);
    q = ouro_realloc(q, 2 * n);
    ck_assert_uint_eq(q[n - 1], 1);
    ck_assert_uint_eq(q[n], 0xcd);
    ouro_free(q);
    ouro_free(p);
}
END_TEST

/* Blocks allocated by one thread and freed by another, many times over:
 * the remote path keeps the fills, and no false report fires. */
#define XT_N 2000
static void *xt_free(void *arg)
{
    unsigned char **v = arg;
    for (int i = 0; i < XT_N; i++) {
        ck_assert(check_pattern(v[i], (size_t)i % 700, (uint64_t)i));
        ouro_free(v[i]);
    }
    return NULL;
}

START_TEST(cross_thread_frees_are_clean)
{
    static unsigned char *v[XT_N];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < XT_N; i++) {
            v[i] = ouro_malloc((size_t)i % 700);
            fill_pattern(v[i], (size_t)i % 700, (uint64_t)i);
        }
        pthread_t t;
        pthread_create(&t, NULL, xt_free, v);
        pthread_join(t, NULL);
    }
    ouro_collect(1);
}
END_TEST

int main(int argc, char **argv)
{
    (void)argc;
    if (ouro_option_get(OURO_OPTION_DEBUG) != 1) {
        /* the mode is read once, at start: start again in it */
        setenv("OURO_DEBUG", "1", 1);
        execv("/proc/self/exe", argv);
        perror("test_debug: execv /proc/self/exe");
        return 99;
    }
    const TTest *const deaths[] = {
        overflow_is_reported_at_free,
        overflow_into_slack_is_reported,
        overflow_is_reported_at_realloc,
        underflow_is_reported,
        large_overflow_is_reported,
        write_after_free_is_reported_when_reused,
        write_after_remote_free_is_reported,
        double_free_is_reported,
        double_free_from_another_thread_is_reported,
        invalid_free_of_interior_pointer_is_reported,
        invalid_free_of_foreign_pointer_is_reported,
        realloc_of_freed_block_is_reported,
        decref_below_zero_is_reported,
        NULL};
    const TTest *const lives[] = {
        debug_mode_is_on_and_fixed,
        blocks_are_filled_and_sized_as_asked,
        freed_blocks_are_filled_with_0xdd,
        realloc_keeps_contents,
        aligned_blocks_are_aligned_and_guarded,
        large_blocks_work,
        cross_thread_frees_are_clean,
        NULL};
#ifdef UNDER_TSAN
    /* As in test_errors, the death tests are left to the plain and ASan
     * builds: under TSan a child's abort reads as TSan's own failure. */
    puts("test_debug: under TSan, only the tests without a misuse run");
    (void)deaths;
    return tu_run_case("debug", lives);
#else
    int failed = tu_run_case("debug", lives);
    return tu_run_case("debug-misuse", deaths) || failed;
#endif
}
