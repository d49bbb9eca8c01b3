/* churn.h — what gc-ouro.c and gc-boehm.c share for GC_SCATTER and
 * GC_CHURN (gc-python.py does the same with its own random module): a
 * random order that is the same at every run. */
#ifndef OURO_BENCH_GC_CHURN_H
#define OURO_BENCH_GC_CHURN_H

#include <stdint.h>

#define CHURN_SEED UINT64_C(88172645463325252)

/* The next number of an xorshift64 sequence. */
static inline uint64_t churn_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Put v[0..n) in a random order (Fisher-Yates). */
static inline void churn_shuffle(void **v, long n)
{
    uint64_t x = CHURN_SEED;
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(churn_next(&x) % (uint64_t)(i + 1));
        void *t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

#endif
