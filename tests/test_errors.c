/* test_errors.c — misuse is reported, never a crash: each test runs the
 * misuse in a child process and checks that it aborts with a message naming
 * the address.  The messages hold in both modes (debug mode's own reports
 * are tested in test_debug.c). */
#include <check.h>
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

/* Run fn(arg) in a child; assert it dies of SIGABRT and that its output
 * contains needle1 and, unless NULL, needle2. */
static void expect_abort(misuse_fn *fn, void *arg, const char *needle1, const char *needle2)
{
    const char *out = tu_run_death(fn, arg, SIGABRT);
    tu_expect_in(out, needle1);
    if (needle2)
        tu_expect_in(out, needle2);
}


static void do_free(void *p)
{
    ouro_free(p);
}

static void do_double_free(void *p)
{
    ouro_free(p);
    ouro_free(p);
}

START_TEST(free_of_stack_pointer_aborts)
{
    int local;
    expect_abort(do_free, &local, "not allocated by ouro", tu_addr(&local));
}
END_TEST

START_TEST(free_of_libc_pointer_aborts)
{
    void *p = malloc(64);
    expect_abort(do_free, p, "not allocated by ouro", tu_addr(p));
    free(p);
}
END_TEST

START_TEST(free_of_interior_pointer_aborts)
{
    char *p = ouro_malloc(64);
    expect_abort(do_free, p + 16, "not allocated by ouro", tu_addr(p + 16));
    expect_abort(do_free, p + 1, "not allocated by ouro", tu_addr(p + 1));
    char *big = ouro_malloc(1 << 20);
    expect_abort(do_free, big + 4096, "not allocated by ouro", tu_addr(big + 4096));
    ouro_free(p);
    ouro_free(big);
}
END_TEST

START_TEST(free_of_wild_pointers_aborts)
{
    expect_abort(do_free, (void *)0x10, "not allocated by ouro", tu_addr((void *)0x10));
    expect_abort(do_free, (void *)-16, "not allocated by ouro", tu_addr((void *)-16));
    /* inside an arena but in a slot no pool holds */
    char *p = ouro_malloc(32);
    char *arena_tail = (char *)(((uintptr_t)p & ~(uintptr_t)((4 << 20) - 1)) + (4 << 20) - 4096);
    expect_abort(do_free, arena_tail, "not allocated by ouro", tu_addr(arena_tail));
    /* the units after this arena's: other arenas' headers, then the
     * address space reserved for more arenas (OURO_OPTION_ARENA_RESERVE),
     * not mapped yet; and far past them */
    for (size_t k = 1; k <= 8; k++) {
        char *ahead = (char *)((uintptr_t)p & ~(uintptr_t)((4 << 20) - 1)) + (k << 22) + 4096;
        expect_abort(do_free, ahead, "not allocated by ouro", tu_addr(ahead));
    }
    char *far = (char *)((uintptr_t)p & ~(uintptr_t)((4 << 20) - 1)) + ((size_t)1 << 30);
    expect_abort(do_free, far, "not allocated by ouro", tu_addr(far));
    /* in a slot whose pool went back to the arena: two pools' worth and
     * more of 1536-byte blocks (42 a pool, a class no other test here
     * uses), the first pool emptied (so released: it is not the current
     * one), then its lowest block freed again */
    enum { PER = 43 };
    static char *q[2 * PER];
    for (int i = 0; i < 2 * PER; i++)
        q[i] = ouro_malloc(1536);
    uintptr_t first = (uintptr_t)q[0] >> 16;
    char *gone = NULL;
    for (int i = 0; i < 2 * PER; i++)
        if ((uintptr_t)q[i] >> 16 == first) {
            gone = gone && gone < q[i] ? gone : q[i];
            ouro_free(q[i]);
            q[i] = NULL;
        }
    if (ouro_option_get(OURO_OPTION_DEBUG) == 0)
        expect_abort(do_free, gone, "not allocated by ouro", tu_addr(gone));
    for (int i = 0; i < 2 * PER; i++)
        ouro_free(q[i]);
    ouro_free(p);
}
END_TEST

START_TEST(double_free_small_aborts)
{
    void *p = ouro_malloc(48);
    expect_abort(do_double_free, p, "double free", tu_addr(p));
    ouro_free(p);
}
END_TEST

START_TEST(double_free_after_other_frees_aborts)
{
    /* the block is deep in its pool's free list, not on top */
    void *v[10];
    for (int i = 0; i < 10; i++)
        v[i] = ouro_malloc(1000);
    ouro_free(v[3]);
    for (int i = 4; i < 10; i++)
        ouro_free(v[i]);
    expect_abort(do_free, v[3], "double free", tu_addr(v[3]));
}
END_TEST

static void *free_in_thread(void *p)
{
    ouro_free(p);
    return NULL;
}

static void do_remote_double_free(void *p)
{
    pthread_t t;
    pthread_create(&t, NULL, free_in_thread, p);
    pthread_join(t, NULL);
    ouro_free(p); /* second free, by the owner, of a block freed remotely */
}

START_TEST(double_free_across_threads_aborts)
{
    void *p = ouro_malloc(80);
    expect_abort(do_remote_double_free, p, "double free", tu_addr(p));
}
END_TEST

START_TEST(double_free_large_aborts)
{
    void *p = ouro_malloc(1 << 20);
    expect_abort(do_double_free, p, "not allocated by ouro", tu_addr(p));
    ouro_free(p);
}
END_TEST

/* Once another thread has freed every block of a pool, the owner carves
 * the pool afresh (pool.c, pool_recarve).  A second free of one of those
 * blocks is still caught: carved again and not handed out, the block has
 * the free cookie ("double free"); not carved again yet, it is past the
 * pool's carved blocks (a message that says the block is not in use). */
#define FW_N 64 /* two pools of 32 blocks of 2 KiB, a class no other test here uses */
#define FW_SIZE 2000

static void *free_all_in_thread(void *a)
{
    void **v = a;
    for (int i = 0; i < FW_N; i++)
        ouro_free(v[i]);
    return NULL;
}

static void do_free_whole_then_again(void *arg)
{
    size_t k = (size_t)(uintptr_t)arg; /* the block of the pool to free again */
    static void *v[FW_N];
    for (int i = 0; i < FW_N; i++)
        v[i] = ouro_malloc(FW_SIZE);
    pthread_t t;
    pthread_create(&t, NULL, free_all_in_thread, v);
    pthread_join(t, NULL);
    /* the current pool is carved afresh: four blocks (at least four are
     * carved at a time), of which this is the first (hardened mode: one of
     * the four, in a random order) */
    char *w = ouro_malloc(FW_SIZE);
    char *slot = (char *)((uintptr_t)w & ~(uintptr_t)0xffff);
    char *again = slot + k * 2048;
    if (again == w)
        again += 2048; /* hardened mode: another of the four */
    fprintf(stderr, "freeing %p again\n", (void *)again);
    ouro_free(again);
}

START_TEST(double_free_after_pool_freed_whole_aborts)
{
    if (ouro_option_get(OURO_OPTION_DEBUG) == 1)
        return; /* debug mode's pools are its own (test_debug.c checks its reports) */
    /* the child prints the address: the tests above name theirs, known here */
    expect_abort(do_free_whole_then_again, (void *)(uintptr_t)1, "double free", "freeing 0x");
    expect_abort(do_free_whole_then_again, (void *)(uintptr_t)10, "not in use", "freeing 0x");
}
END_TEST

static void do_realloc_freed(void *p)
{
    ouro_free(p);
    void *q = ouro_realloc(p, 100);
    (void)q;
}

START_TEST(realloc_of_freed_block_aborts)
{
    void *p = ouro_malloc(64);
    expect_abort(do_realloc_freed, p, "double free", tu_addr(p));
}
END_TEST

static void do_usable_size(void *p)
{
    (void)ouro_usable_size(p);
}

START_TEST(usable_size_of_foreign_pointer_aborts)
{
    int local;
    expect_abort(do_usable_size, &local, "not allocated by ouro", tu_addr(&local));
}
END_TEST

static void do_free_sized_wrong(void *p)
{
    ouro_free_sized(p, 4000);
}

START_TEST(free_sized_with_wrong_size_aborts)
{
    void *p = ouro_malloc(100);
    /* 112, its class's block size; 100 in debug mode (--enable-debug) */
    char holds[64];
    snprintf(holds, sizeof holds, "holds only %zu bytes", ouro_usable_size(p));
    ck_assert_uint_eq(ouro_usable_size(p), ouro_option_get(OURO_OPTION_DEBUG) ? 100 : 112);
    expect_abort(do_free_sized_wrong, p, holds, tu_addr(p));
    ouro_free(p);
}
END_TEST

static const ouro_type_t plain_type = {.name = "plain", .basic_size = 40};

static void do_decref_twice(void *o)
{
    ouro_decref(o);
    ouro_decref(o);
}

START_TEST(decref_below_zero_on_owner_aborts)
{
    /* the owner's path (plain instructions) checks too, in every mode */
    ouro_object_t *o = ouro_new(&plain_type);
    expect_abort(do_decref_twice, o, "reference count below zero", tu_addr(o));
    expect_abort(do_decref_twice, o, "size class 3,", "type plain");
    ouro_decref(o);
}
END_TEST

int main(void)
{
#ifdef UNDER_TSAN
    /* Every test here forks a child and watches it abort; under TSan the
     * child's abort is reported as TSan's own failure.  The messages are
     * checked in the plain and ASan builds; TSan adds nothing to them. */
    puts("SKIP: death tests (fork + abort) run in the plain and ASan builds");
    return 77;
#endif
    const TTest *const tests[] = {
        free_of_stack_pointer_aborts,
        free_of_libc_pointer_aborts,
        free_of_interior_pointer_aborts,
        free_of_wild_pointers_aborts,
        double_free_small_aborts,
        double_free_after_other_frees_aborts,
        double_free_across_threads_aborts,
        double_free_large_aborts,
        double_free_after_pool_freed_whole_aborts,
        realloc_of_freed_block_aborts,
        usable_size_of_foreign_pointer_aborts,
        free_sized_with_wrong_size_aborts,
        decref_below_zero_on_owner_aborts,
        NULL};
    return tu_run_case("errors", tests);
}
