/* test_faults.c — when the OS refuses memory, every API fails cleanly
 * (NULL and ENOMEM, nothing lost, nothing corrupted) and works again once
 * memory is available.  Uses ouro_test_fail_maps. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "testutil.h"

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 13u);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 13u))
            return 0;
    return 1;
}

START_TEST(large_allocation_fails_then_recovers)
{
    ouro_collect(1); /* no freed large mapping kept for reuse: the next block needs the OS */
    ouro_test_fail_maps(0, 1);
    errno = 0;
    ck_assert_ptr_null(ouro_malloc(1 << 20));
    ck_assert_int_eq(errno, ENOMEM);
    void *p = ouro_malloc(1 << 20); /* the fault was one request */
    ck_assert_ptr_nonnull(p);
    ouro_free(p);
}
END_TEST

START_TEST(exhausted_small_heap_returns_enomem_and_recovers)
{
    enum { MAX = 1 << 16 };
    void **v = malloc(MAX * sizeof *v);
    ouro_stats_t before, after;
    ouro_collect(1);
    ouro_stats_get(&before);
    ouro_test_fail_maps(0, 1L << 30); /* every mapping fails from now on */
    size_t n = 0;
    errno = 0;
    while (n < MAX) {
        void *p = ouro_malloc(32768);
        if (p == NULL)
            break;
        fill(p, 64, (unsigned)n);
        v[n++] = p;
    }
    ck_assert_uint_lt(n, MAX); /* it ran out: no arena could be mapped */
    ck_assert_int_eq(errno, ENOMEM);
    /* other sizes and entry points fail cleanly too, or succeed from what is left */
    void *c = ouro_calloc(1, 100000);
    void *a = ouro_aligned_alloc(1 << 20, 1 << 20);
    ck_assert_ptr_null(a);
    ouro_test_fail_maps(0, 0); /* memory is back */
    for (size_t i = 0; i < n; i++) {
        ck_assert(intact(v[i], 64, (unsigned)i));
        ouro_free(v[i]);
    }
    ouro_free(c);
    void *p = ouro_malloc(32768);
    ck_assert_ptr_nonnull(p);
    ouro_free(p);
    ouro_collect(1);
    ouro_stats_get(&after);
    ck_assert_uint_eq(after.in_use, before.in_use);
    ck_assert_uint_eq(after.large_count, before.large_count);
    free(v);
}
END_TEST

START_TEST(failed_realloc_keeps_the_block)
{
    unsigned char *p = ouro_malloc(3 << 20);
    fill(p, 3 << 20, 7);
    ouro_test_fail_maps(0, 2); /* the move and the fallback both fail */
    errno = 0;
    ck_assert_ptr_null(ouro_realloc(p, 9 << 20));
    ck_assert_int_eq(errno, ENOMEM);
    ouro_test_fail_maps(0, 0);
    ck_assert(intact(p, 3 << 20, 7));
    unsigned char *q = ouro_realloc(p, 9 << 20);
    ck_assert_ptr_nonnull(q);
    ck_assert(intact(q, 3 << 20, 7));
    ouro_free(q);
}
END_TEST

static void *alloc_in_new_thread(void *arg)
{
    (void)arg;
    errno = 0;
    void *p = ouro_malloc(100);
    int e = errno;
    if (p)
        ouro_free(p);
    return (void *)(intptr_t)(p ? 0 : e);
}

START_TEST(new_thread_without_memory_gets_enomem)
{
    /* a thread whose heap cannot even be created; and pools cannot be had */
    ouro_test_fail_maps(0, 1L << 30);
    pthread_t t;
    void *r = NULL;
    pthread_create(&t, NULL, alloc_in_new_thread, NULL);
    pthread_join(t, &r);
    ouro_test_fail_maps(0, 0);
    /* either it found a heap and a pool to reuse (0), or it failed cleanly */
    ck_assert((intptr_t)r == 0 || (intptr_t)r == ENOMEM);
    pthread_create(&t, NULL, alloc_in_new_thread, NULL);
    pthread_join(t, &r);
    ck_assert_int_eq((int)(intptr_t)r, 0);
}
END_TEST

typedef struct {
    ouro_object_t ob;
    char body[30000];
} big_t;
static const ouro_type_t big_type = {.name = "big", .basic_size = sizeof(big_t)};

START_TEST(object_creation_fails_cleanly)
{
    ouro_object_t *keep[4096];
    size_t n = 0;
    ouro_test_fail_maps(0, 1L << 30);
    errno = 0;
    while (n < 4096) {
        ouro_object_t *o = ouro_new(&big_type);
        if (o == NULL)
            break;
        keep[n++] = o;
    }
    ck_assert_uint_lt(n, 4096);
    ck_assert_int_eq(errno, ENOMEM);
    ouro_test_fail_maps(0, 0);
    for (size_t i = 0; i < n; i++)
        ouro_decref(keep[i]);
    ouro_object_t *o = ouro_new(&big_type);
    ck_assert_ptr_nonnull(o);
    ouro_decref(o);
    ouro_barrier();
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {
        large_allocation_fails_then_recovers,
        exhausted_small_heap_returns_enomem_and_recovers,
        failed_realloc_keeps_the_block,
        new_thread_without_memory_gets_enomem,
        object_creation_fails_cleanly,
        NULL};
    return tu_run_case("faults", tests);
}
