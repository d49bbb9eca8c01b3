/*
 * hardened.c — hardened mode (OURO_HARDENED=1, or configure
 * --enable-hardened): the random numbers it draws on (the keys of pools'
 * free lists, the order in which fresh blocks are handed out) and the
 * report of a corrupt free list.  Owns the per-thread generator; the
 * mechanisms themselves live where the structures they guard do:
 *
 *   free-list keys     internal.h (encode, decode, the head check), alloc.c,
 *                      heap.c and pool.c (every place a link is written)
 *   random order       pool.c (ouro__pool_extend shuffles a fresh page)
 *   guard pages        os.c (mprotect), arena.c (the last page of every
 *                      arena), large.c (the last page of every mapping)
 *
 * The default mode runs the same fast paths with a key of 0 (see the top of
 * alloc.c), so it pays nothing for what is here.
 */
#include "internal.h"

#include <stdio.h>

/* A secret of the process, from getrandom at start (init.c). */
static uint64_t process_seed;
/* Threads that seeded their generator: makes each seed different. */
static _Atomic uint64_t seeded;
/* The thread's generator state (splitmix64), 0 until first used. */
static __thread uint64_t rng __attribute__((tls_model("initial-exec")));

void ouro__hardened_init(uint64_t seed)
{
    process_seed = seed;
}

static inline uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The next number of the calling thread's generator: splitmix64, seeded
 * from the process secret, the thread pointer and a count of seeded
 * threads.  Not a cryptographic generator: what it protects is that the
 * keys and orders are unknown outside the process, which holds as long as
 * the secret and the states stay in the process. */
uint64_t ouro__random(void)
{
    if (unlikely(rng == 0)) {
        /* relaxed: only distinctness matters */
        uint64_t n = atomic_fetch_add_explicit(&seeded, 1, memory_order_relaxed);
        rng = mix64(process_seed ^ mix64(ouro__thread_id() + n * 0x9e3779b97f4a7c15ull)) | 1;
    }
    rng += 0x9e3779b97f4a7c15ull;
    return mix64(rng);
}

uintptr_t ouro__pool_new_key(const ouro_pool_t *pool)
{
    uintptr_t k = (uintptr_t)mix64(ouro__random() ^ (uintptr_t)pool->start);
    return k ? k : 1; /* never 0: a key of 0 means the default mode */
}

/* Shuffle v[0..n), n < 2^16 (Fisher-Yates).  It runs for every page a pool
 * carves, so it must cost a few cycles a block, not a division: each random
 * 64-bit number gives two 32-bit draws, and a draw r becomes an index below
 * i as (r * i) >> 32 (Lemire's multiply-shift; its bias, i / 2^32, is far
 * below anything an observer could use). */
void ouro__shuffle_u16(uint16_t *v, uint32_t n)
{
    uint64_t r = 0;
    for (uint32_t i = n, k = 0; i > 1; i--, k++) {
        if ((k & 1) == 0)
            r = ouro__random();
        else
            r >>= 32;
        uint32_t j = (uint32_t)(((r & 0xffffffffull) * i) >> 32);
        uint16_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Bytes of the guard at the end of every arena and large mapping: a page in
 * hardened mode, none otherwise. */
size_t ouro__guard_size(void)
{
    return ouro__hardened_on() ? ouro__os_page_size() : 0;
}

void ouro__report_corrupt_link(const ouro_pool_t *pool, const void *link, const char *where)
{
    uint32_t bs = atomic_load_explicit(&pool->block_size, memory_order_relaxed);
    /* relaxed: the owner reads the limit it wrote */
    uint64_t limit = ouro__pool_limit(pool);
    ouro__fatal("corrupt free list: %s of a pool of size class %d (%u-byte blocks, carved at %p..%p) "
                "would be %p, which is not a free block of the pool: a write after free or an "
                "overflow changed a free block%s",
                where, pool->cls, bs, (void *)pool->start, (void *)(pool->start + limit), link,
                pool->key ? " (hardened mode: its links are encoded)" : "");
}
