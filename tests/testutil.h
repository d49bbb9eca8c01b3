/*
 * testutil.h — small helpers shared by the tests: a deterministic byte
 * pattern to fill blocks with and check them against, a tiny xorshift RNG,
 * and the scale-down switch for sanitizer builds.  Everything is static
 * inline, so each test includes only what it uses.
 */
#ifndef OURO_TESTUTIL_H
#define OURO_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* UNDER_TSAN: this build runs under ThreadSanitizer (gcc says so with
 * __SANITIZE_THREAD__, clang with __has_feature); tests that fork a child
 * to die, or that race on purpose, skip themselves there. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* ---- mixing ---- */

/* splitmix64's finaliser: a bijection on 64-bit words with good avalanche. */
static inline uint64_t tu_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- pattern ---- */

/* The pattern word at word index `i` for `seed`.  Byte j of a pattern is
 * byte (j % 8) of word j / 8, so the pattern of n bytes is a prefix of the
 * pattern of any m > n bytes (what a realloc must preserve). */
static inline uint64_t tu_pattern_word(uint64_t seed, size_t i)
{
    return tu_mix64(seed * 0xd6e8feb86659fd93ull + (uint64_t)i);
}

/* Fill `n` bytes at `p` with the pattern of `seed`. */
static inline void fill_pattern(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    size_t words = n / 8, i;
    for (i = 0; i < words; i++) {
        uint64_t w = tu_pattern_word(seed, i);
        memcpy(b + i * 8, &w, 8);
    }
    if (n % 8) {
        uint64_t w = tu_pattern_word(seed, words);
        memcpy(b + words * 8, &w, n % 8); /* little-endian or not: same as check */
    }
}

/* Offset of the first byte of the `n` bytes at `p` that differs from the
 * pattern of `seed`, or `n` if they all match. */
static inline size_t pattern_mismatch(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t words = n / 8, i;
    for (i = 0; i < words; i++) {
        uint64_t w = tu_pattern_word(seed, i);
        if (memcmp(b + i * 8, &w, 8) != 0)
            break;
    }
    size_t from = i * 8;
    for (size_t j = from; j < n; j++) {
        uint64_t w = tu_pattern_word(seed, j / 8);
        unsigned char want;
        memcpy(&want, (const unsigned char *)&w + j % 8, 1);
        if (b[j] != want)
            return j;
    }
    return n;
}

/* Whether the `n` bytes at `p` hold the pattern of `seed`. */
static inline bool check_pattern(const void *p, size_t n, uint64_t seed)
{
    return pattern_mismatch(p, n, seed) == n;
}

/* Whether the `n` bytes at `p` are all zero. */
static inline bool tu_is_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- random numbers: xorshift64* ---- */

typedef struct tu_rng_s {
    uint64_t s;
} tu_rng_t;

static inline tu_rng_t tu_rng_make(uint64_t seed)
{
    tu_rng_t r = {tu_mix64(seed) | 1}; /* never 0: xorshift's fixed point */
    return r;
}

static inline uint64_t tu_rng_next(tu_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [lo, hi] (hi >= lo; a negligible modulo bias is fine here). */
static inline uint64_t tu_rng_range(tu_rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + tu_rng_next(r) % (hi - lo + 1);
}

/* True with probability `percent` / 100. */
static inline bool tu_rng_chance(tu_rng_t *r, unsigned percent)
{
    return tu_rng_next(r) % 100 < percent;
}

/* ---- sizing ---- */

/* Whether the tests run under a sanitizer (make check exports
 * OURO_SANITIZED with the sanitizer flags, empty otherwise). */
static inline bool tu_sanitized(void)
{
    const char *s = getenv("OURO_SANITIZED");
    return s && *s;
}

/* `normal` iterations, or `sanitized` under a sanitizer. */
static inline unsigned long tu_scale(unsigned long normal, unsigned long sanitized)
{
    return tu_sanitized() ? sanitized : normal;
}

/* ---- failures seen by worker threads (Check asserts only on the test's
 * own thread: workers record, the test asserts after joining) ---- */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static _Atomic unsigned long failures;
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[1024];

__attribute__((format(printf, 3, 4), unused)) static void note_failure(const char *file, int line,
                                                                       const char *fmt, ...)
{
    if (atomic_fetch_add(&failures, 1) != 0)
        return;
    pthread_mutex_lock(&failure_lock);
    int n = file ? snprintf(first_failure, sizeof first_failure, "%s:%d: ", file, line) : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_failure + n, sizeof first_failure - (size_t)n, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&failure_lock);
}

#define TFAIL(...) note_failure(__FILE__, __LINE__, __VA_ARGS__)
#define TCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TFAIL(__VA_ARGS__);                                                                    \
    } while (0)

__attribute__((unused)) static void reset_failures(void)
{
    atomic_store(&failures, 0);
    first_failure[0] = 0;
}


/* Record a failure without a source location (stress programs print it). */
#define TFAIL_PLAIN(...) note_failure(NULL, 0, __VA_ARGS__)

#include <time.h>

/* Seconds on the monotonic clock. */
__attribute__((unused)) static double tu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleep `us` microseconds. */
__attribute__((unused)) static void tu_sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

#ifdef CHECK_H

#define ASSERT_NO_FAILURES()                                                                       \
    do {                                                                                           \
        unsigned long nf_ = atomic_load(&failures);                                                \
        pthread_mutex_lock(&failure_lock);                                                         \
        ck_assert_msg(nf_ == 0, "%lu failure(s) in threads; first: %s", nf_, first_failure);       \
        pthread_mutex_unlock(&failure_lock);                                                       \
    } while (0)

/* Run one test case made of `tests` (NULL-terminated) as suite `name`, with
 * a timeout per test; the exit status of main. */
static inline int tu_run_case(const char *name, const TTest *const *tests)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 120);
    for (; *tests; tests++)
        _tcase_add_test(tc, *tests, 0, 0, 0, 1);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif

#endif /* OURO_TESTUTIL_H */
