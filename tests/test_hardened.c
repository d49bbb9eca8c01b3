/* test_hardened.c — hardened mode (OURO_HARDENED=1): a forged or garbage
 * free-list link is reported with the size class and the pool's address,
 * and the process aborts; blocks freed by other threads are checked and
 * encoded when the owner takes them back; fresh pages are handed out in a
 * random order; the last page of an arena and of a large mapping faults.
 *
 * The mode is chosen when the library starts, so main() re-executes the
 * test with OURO_HARDENED=1 (and OURO_DEBUG=0, which a --enable-debug
 * build would otherwise turn on: debug mode's own checks would see the
 * misuse first).  The controls run the same scenario in a fresh process in
 * the default mode (main's --control), to show what hardened mode changes:
 * a test that passed there too would prove nothing.  Each misuse runs in a
 * forked child whose stderr comes back through a pipe, as in test_debug.c. */
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

#define UNIT ((uintptr_t)4 << 20) /* arenas and large mappings are whole 4 MiB units */
#define PAGE ((uintptr_t)4096)

typedef tu_child_fn scenario_fn;





/* In a child: this binary again, in the default mode (OURO_HARDENED=0),
 * as `test_hardened --control NAME`. */
static void exec_control(void *name)
{
    setenv("OURO_HARDENED", "0", 1);
    execl("/proc/self/exe", "test_hardened", "--control", (const char *)name, (char *)NULL);
    _exit(127);
}

/* Run control NAME; returns its stdout and stderr (static buffer) and its
 * wait status. */
static const char *run_control_status(const char *name, int *status)
{
    return tu_run_child(exec_control, (void *)name, status);
}

/* The same, for a control that must succeed: returns its output. */
static const char *run_control(const char *name)
{
    int status;
    const char *out = run_control_status(name, &status);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "control %s failed (status %#x): %s", name,
                  status, out);
    return out;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the mode ---- */

START_TEST(hardened_mode_is_on_and_fixed)
{
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_HARDENED), 1);
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_HARDENED, 0), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ouro_option_get(OURO_OPTION_HARDENED), 1);
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_HARDENED, 1), 0); /* no change: accepted */
    errno = 0;
    ck_assert_int_eq(ouro_option_set(OURO_OPTION_HARDENED, 2), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* ---- encoded free lists ---- */

/* A write after free puts `forged` into the link of a freed block; two
 * allocations later the list would hand out what the link says.  Prints
 * both blocks it got and the live block, for the control. */
static void forge_link(size_t size, int garbage)
{
    char *a = ouro_malloc(size);
    char *live = ouro_malloc(size);
    ouro_free(a);
    /* the attack: the freed block's first word now names a live block
     * (an attacker knows addresses, not the key), or plain garbage */
    memcpy(a, garbage ? &(uintptr_t){0x4141414141414140ull} : (void *)&live, sizeof(void *));
    char *x = ouro_malloc(size); /* a: the head of the list */
    char *y = ouro_malloc(size); /* what a's link says */
    printf("a=%p live=%p x=%p y=%p\n", (void *)a, (void *)live, (void *)x, (void *)y);
}

static void forge_link_to_live_block(void *arg)
{
    (void)arg;
    forge_link(48, 0);
}

START_TEST(forged_link_is_reported)
{
    /* the parent's heap is in the child's state: learn the pool's address */
    char *p = ouro_malloc(48);
    uintptr_t slot = (uintptr_t)p & ~(uintptr_t)0xffff; /* a 48-byte pool spans one 64 KiB slot */
    ouro_free(p);
    const char *msg = tu_run_death(forge_link_to_live_block, NULL, SIGABRT);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "size class 3 (48-byte blocks");
    tu_expect_in(msg, tu_addr((void *)slot));
    tu_expect_in(msg, "hardened mode");
    ck_assert_msg(strstr(msg, "y=") == NULL, "the forged block was handed out: %s", msg);
}
END_TEST

START_TEST(forged_link_in_the_default_mode_hands_out_a_live_block)
{
    /* the control: without the key, the forged link works, and the live
     * block is handed out a second time (what the test above prevents) */
    const char *out = run_control("forged-link");
    void *live = NULL, *y = NULL, *a = NULL, *x = NULL;
    ck_assert_int_eq(sscanf(out, "a=%p live=%p x=%p y=%p", &a, &live, &x, &y), 4);
    ck_assert_ptr_eq(x, a);
    ck_assert_ptr_eq(y, live);
}
END_TEST

static void garbage_link(void *arg)
{
    (void)arg;
    forge_link(80, 1);
}

START_TEST(garbage_link_is_reported)
{
    const char *msg = tu_run_death(garbage_link, NULL, SIGABRT);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "size class 5 (80-byte blocks");
    /* the default mode checks the head of the list with the same
     * instructions: its plain links are caught when they are garbage */
    int status;
    msg = run_control_status("garbage-link", &status);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "default mode: status %#x: %s", status, msg);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "would be 0x4141414141414140");
    ck_assert_msg(strstr(msg, "hardened mode") == NULL, "%s", msg);
}
END_TEST

/* ---- blocks freed by other threads ---- */

static void *free_all(void *arg)
{
    void **v = arg;
    for (size_t i = 0; v[i]; i++)
        ouro_free(v[i]);
    return NULL;
}

/* After another thread freed every block, the owner gets them all back,
 * through the remote stack, checked and encoded: the same blocks, each once. */
START_TEST(remote_frees_come_back_encoded)
{
    enum { N = 3000 }; /* more than a page: several pages of the pool, and a second pool */
    static void *v[N + 1], *w[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            v[i] = ouro_malloc(144);
            ck_assert_ptr_nonnull(v[i]);
            fill_pattern(v[i], 144, (uint64_t)i);
        }
        v[N] = NULL;
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, free_all, v), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        ouro_collect(0); /* take the remote frees back */
        for (int i = 0; i < N; i++) {
            w[i] = ouro_malloc(144);
            ck_assert_ptr_nonnull(w[i]);
            ck_assert(ouro_owns(w[i]));
            fill_pattern(w[i], 144, (uint64_t)i + 7);
        }
        for (int i = 0; i < N; i++)
            ck_assert(check_pattern(w[i], 144, (uint64_t)i + 7));
        /* every block handed out once: sorted, no two are equal */
        qsort(w, N, sizeof *w, cmp_ptr);
        for (int i = 1; i < N; i++)
            ck_assert_ptr_ne(w[i], w[i - 1]);
        for (int i = 0; i < N; i++)
            ouro_free(w[i]);
    }
}
END_TEST

static void *free_one(void *p)
{
    ouro_free(p);
    return NULL;
}

static void corrupt_remote_link(void *arg)
{
    (void)arg;
    char *a = ouro_malloc(208);
    char *keep = ouro_malloc(208); /* keeps the pool from being released */
    (void)keep;
    pthread_t t;
    pthread_create(&t, NULL, free_one, a);
    pthread_join(t, NULL);
    /* a waits on the pool's remote stack, its link plain (freers do not
     * know the pool's key): a write after free changes it */
    uintptr_t garbage = 0x4242424242424240ull;
    memcpy(a, &garbage, sizeof garbage);
    ouro_collect(0); /* the owner takes the remote frees back */
    printf("collected\n");
}

START_TEST(corrupt_remote_link_is_reported)
{
    const char *msg = tu_run_death(corrupt_remote_link, NULL, SIGABRT);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "a block freed by another thread");
    tu_expect_in(msg, "size class 13 (208-byte blocks");
    tu_expect_in(msg, "0x4242424242424240");
}
END_TEST

/* Another thread frees one block of each of two full pools: each is the
 * first free into its pool since the owner put it on its full list, so each
 * goes to the owner's delayed stack (pool.c), the second linked to the
 * first with the heap's key.  A write after free into the second changes
 * that link; the owner's next look at the stack must report it. */
static void corrupt_delayed_link(void *arg)
{
    (void)arg;
    enum { N = 100, SIZE = 2048 }; /* 32 blocks to a pool of one 64 KiB slot, the
                                     * largest class whose pools are one slot */
    char *v[N];
    for (int i = 0; i < N; i++)
        v[i] = ouro_malloc(SIZE);
    /* the pools were used one after the other: each but the last one's
     * ran out while we allocated, and went to the full list */
    uintptr_t mask = ~(uintptr_t)0xffff, last = (uintptr_t)v[N - 1] & mask, prev = 0;
    char *x[2];
    int nx = 0;
    for (int i = 0; i < N && nx < 2; i++) {
        uintptr_t pool = (uintptr_t)v[i] & mask;
        if (pool != last && pool != prev) {
            x[nx++] = v[i];
            prev = pool;
        }
    }
    if (nx < 2) {
        printf("fewer than two full pools\n");
        exit(3);
    }
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        pthread_create(&t, NULL, free_one, x[i]);
        pthread_join(t, NULL);
    }
    uintptr_t garbage = 0x4242424242424240ull;
    memcpy(x[1], &garbage, sizeof garbage);
    ouro_collect(0); /* the owner takes its delayed stack */
    printf("collected\n");
}

/* A thread with a heap gathers its remote frees before pushing them (pool.c,
 * batched remote frees), linked plainly in the blocks.  It frees three
 * blocks of a full pool; a write after free changes the link of the last
 * one while they wait with it; when it pushes them (its ouro_collect) the
 * pool wants its owner told, so it hands them on one by one, following the
 * links: the changed one must be reported. */
static pthread_barrier_t batch_bar;

static void *free_three_then_collect(void *arg)
{
    char **x = arg;
    ouro_free(ouro_malloc(16)); /* a heap of our own: our remote frees wait in it */
    for (int i = 0; i < 3; i++)
        ouro_free(x[i]);
    pthread_barrier_wait(&batch_bar); /* 1: freed */
    pthread_barrier_wait(&batch_bar); /* 2: one was overwritten */
    ouro_collect(0);
    return NULL;
}

static void corrupt_batch_link(void *arg)
{
    (void)arg;
    enum { N = 200, SIZE = 1024 }; /* 64 blocks to a pool of one 64 KiB slot; batches hold
                                    * blocks up to 2 KiB, three of these */
    static char *v[N];
    for (int i = 0; i < N; i++)
        v[i] = ouro_malloc(SIZE);
    /* three blocks of the first pool, which went to the full list */
    uintptr_t mask = ~(uintptr_t)0xffff, first = (uintptr_t)v[0] & mask;
    char *x[3];
    int nx = 0;
    for (int i = 0; i < N && nx < 3; i++)
        if (((uintptr_t)v[i] & mask) == first)
            x[nx++] = v[i];
    if (nx < 3 || ((uintptr_t)v[N - 1] & mask) == first) {
        printf("no full pool\n");
        exit(3);
    }
    pthread_barrier_init(&batch_bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, free_three_then_collect, x);
    pthread_barrier_wait(&batch_bar);
    uintptr_t garbage = 0x4242424242424240ull;
    memcpy(x[2], &garbage, sizeof garbage); /* the last freed: the head of the batch */
    pthread_barrier_wait(&batch_bar);
    pthread_join(t, NULL);
    printf("pushed\n");
}

START_TEST(corrupt_batch_link_is_reported)
{
    const char *msg = tu_run_death(corrupt_batch_link, NULL, SIGABRT);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "a block freed by another thread (not yet pushed)");
    tu_expect_in(msg, "0x4242424242424240");
}
END_TEST

START_TEST(corrupt_delayed_link_is_reported)
{
    const char *msg = tu_run_death(corrupt_delayed_link, NULL, SIGABRT);
    tu_expect_in(msg, "corrupt free list");
    tu_expect_in(msg, "a block freed by another thread to a full pool");
    tu_expect_in(msg, "(2048-byte blocks");
}
END_TEST

/* ---- random order ---- */

/* Allocate two pages' worth of blocks of each of several sizes from fresh
 * pools; count the consecutive pairs in which the second block is the
 * address successor of the first (as carving in address order makes every
 * pair), out of all pairs; check that each page's blocks are exactly a
 * page of the pool (a shuffle, not a scatter).  Leaks the blocks. */
static void count_successors(unsigned long *succ, unsigned long *pairs)
{
    static const size_t sizes[] = {16, 32, 64, 96, 112, 128, 160, 256};
    *succ = *pairs = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t bs = sizes[k], n = 4096 / bs;
        uintptr_t v[2 * 256];
        for (size_t i = 0; i < 2 * n; i++) {
            v[i] = (uintptr_t)ouro_malloc(bs);
            if (i > 0) {
                *pairs += 1;
                *succ += v[i] == v[i - 1] + bs;
            }
        }
        for (size_t page = 0; page < 2; page++) {
            qsort(v + page * n, n, sizeof v[0], cmp_ptr);
            for (size_t i = 1; i < n; i++)
                if (v[page * n + i] != v[page * n + i - 1] + bs) {
                    fprintf(stderr, "blocks of %zu bytes: page %zu is not %zu consecutive blocks\n", bs, page, n);
                    exit(3);
                }
        }
    }
}

START_TEST(fresh_pages_are_handed_out_in_random_order)
{
    unsigned long succ, pairs;
    count_successors(&succ, &pairs);
    /* a random order makes a pair successive with a chance of 1 in n (4096
     * / size): about 20 of the ~1000 pairs; address order makes all */
    ck_assert_uint_gt(pairs, 900);
    ck_assert_msg(succ * 10 < pairs, "%lu of %lu pairs in address order", succ, pairs);
    /* and the control: the default mode carves in address order */
    unsigned long csucc, cpairs;
    const char *out = run_control("order");
    ck_assert_int_eq(sscanf(out, "%lu %lu", &csucc, &cpairs), 2);
    ck_assert_uint_eq(cpairs, pairs);
    ck_assert_msg(csucc * 10 > cpairs * 9, "default mode: only %lu of %lu pairs in address order", csucc, cpairs);
}
END_TEST

/* ---- guard pages ---- */

typedef struct overflow_s {
    char *block;   /* the block to run off the end of */
    size_t size;   /* its usable size */
} overflow_t;

/* Write the block's last byte, say so, then the byte after it. */
static void overflow(void *arg)
{
    overflow_t *o = arg;
    /* the fault must kill the child: a sanitizer's handler (ASan) would
     * report it and exit instead */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGSEGV, &dfl, NULL);
    o->block[o->size - 1] = 1;
    printf("in bounds\n");
    fflush(stdout);
    o->block[o->size] = 1;
    printf("past the end\n");
}

START_TEST(overflow_off_the_last_pool_of_an_arena_faults)
{
    /* 4 KiB blocks, 16 to a slot; fill arenas until a block lies right
     * below the arena's last page: the last block of the last slot's pool */
    enum { MAX = 8 * 1024 };
    static char *v[MAX];
    overflow_t o = {NULL, 4096};
    int n = 0;
    while (n < MAX && o.block == NULL) {
        v[n] = ouro_malloc(4096);
        ck_assert_ptr_nonnull(v[n]);
        uintptr_t u = (uintptr_t)v[n++];
        if ((u & (UNIT - 1)) == UNIT - 2 * PAGE)
            o.block = (char *)u;
        /* in hardened mode no block ends at the end of a unit */
        ck_assert_uint_ne((u + 4096) & (UNIT - 1), 0);
    }
    ck_assert_msg(o.block != NULL, "no 4 KiB block below an arena's last page in %d blocks", n);
    /* free everything and purge: the guard stays a guard */
    for (int i = 0; i < n; i++)
        ouro_free(v[i]);
    ouro_collect(1);
    ouro_stats_t st;
    ouro_stats_get(&st);
    ck_assert_uint_gt(st.purged_bytes, 0);
    const char *out = tu_run_death(overflow, &o, SIGSEGV);
    tu_expect_in(out, "in bounds");
    ck_assert_msg(strstr(out, "past the end") == NULL, "%s", out);
}
END_TEST

START_TEST(overflow_off_a_large_block_faults)
{
    size_t sizes[] = {200 << 10, (4 << 20) - 64 - 100, 5 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = ouro_malloc(sizes[i]);
        ck_assert_ptr_nonnull(p);
        overflow_t o = {p, ouro_usable_size(p)};
        ck_assert_uint_ge(o.size, sizes[i]);
        /* the usable bytes end at the guard: the end of the mapping but a page */
        ck_assert_uint_eq(((uintptr_t)p + o.size) & (UNIT - 1), UNIT - PAGE);
        const char *out = tu_run_death(overflow, &o, SIGSEGV);
        tu_expect_in(out, "in bounds");
        ouro_free(p);
    }
}
END_TEST

START_TEST(large_realloc_moves_the_guard)
{
    size_t n = 1 << 20;
    char *p = ouro_malloc(n);
    fill_pattern(p, n, 5);
    /* beyond the unit: the pages move to a bigger mapping (mremap) */
    char *q = ouro_realloc(p, 9 << 20);
    ck_assert_ptr_nonnull(q);
    ck_assert(check_pattern(q, n, 5));
    overflow_t o = {q, ouro_usable_size(q)};
    ck_assert_uint_ge(o.size, 9 << 20);
    ck_assert_uint_eq(((uintptr_t)q + o.size) & (UNIT - 1), UNIT - PAGE);
    memset(q + n, 7, o.size - n); /* every usable byte is writable */
    const char *out = tu_run_death(overflow, &o, SIGSEGV);
    tu_expect_in(out, "in bounds");
    ouro_free(q);
}
END_TEST

/* ---- main ---- */

/* The controls, in the default mode (see run_control). */
static int control(const char *name)
{
    if (ouro_option_get(OURO_OPTION_HARDENED) != 0) {
        fprintf(stderr, "control %s: not in the default mode\n", name);
        return 2;
    }
    if (strcmp(name, "forged-link") == 0) {
        forge_link(48, 0);
        return 0;
    }
    if (strcmp(name, "garbage-link") == 0) {
        forge_link(80, 1);
        return 0;
    }
    if (strcmp(name, "order") == 0) {
        unsigned long succ, pairs;
        count_successors(&succ, &pairs);
        printf("%lu %lu\n", succ, pairs);
        return 0;
    }
    fprintf(stderr, "control %s: unknown\n", name);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--control") == 0)
        return control(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--mode") == 0) {
        /* for tests/hardened.sh: is OURO_HARDENED read as it should be? */
        puts(ouro_option_get(OURO_OPTION_HARDENED) ? "hardened" : "default");
        return 0;
    }
    if (ouro_option_get(OURO_OPTION_HARDENED) != 1 || ouro_option_get(OURO_OPTION_DEBUG) != 0) {
        /* the mode is read once, at start: start again in it */
        setenv("OURO_HARDENED", "1", 1);
        setenv("OURO_DEBUG", "0", 1);
        execv("/proc/self/exe", argv);
        perror("test_hardened: execv /proc/self/exe");
        return 99;
    }
    const TTest *const deaths[] = {
        forged_link_is_reported,
        garbage_link_is_reported,
        corrupt_remote_link_is_reported,
        corrupt_delayed_link_is_reported,
        corrupt_batch_link_is_reported,
        overflow_off_the_last_pool_of_an_arena_faults,
        overflow_off_a_large_block_faults,
        large_realloc_moves_the_guard,
        NULL};
    const TTest *const lives[] = {
        hardened_mode_is_on_and_fixed,
        forged_link_in_the_default_mode_hands_out_a_live_block,
        remote_frees_come_back_encoded,
        fresh_pages_are_handed_out_in_random_order,
        NULL};
#ifdef UNDER_TSAN
    /* As in test_debug, the death tests are left to the plain and ASan
     * builds: under TSan a child's abort reads as TSan's own failure. */
    puts("test_hardened: under TSan, only the tests without a misuse run");
    (void)deaths;
    return tu_run_case("hardened", lives);
#else
    int failed = tu_run_case("hardened", lives);
    return tu_run_case("hardened-misuse", deaths) || failed;
#endif
}
