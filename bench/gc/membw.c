/* membw.c — how much a second marker can gain on this machine when the
 * collection's work is only moving its bytes: the memory ceiling that
 * gc-ouro's two-marker figure meets (see the notes on issue 4).
 *
 *   membw [nodes] [threads] [reps] [rw|ro]
 *
 * Lays out `nodes` 64-byte nodes in address order, linked in that order
 * and paired (node 2i and 2i+1 point to each other), as gc-ouro's fresh
 * heap lays out its members: the 16-byte gc prefix and a 40-byte pair in
 * a 64-byte block.  Then times two passes, each split in `threads` equal
 * contiguous parts, one thread each, as a full collection's segments:
 *   walk  follow the list, read each node's header words, write its
 *         scratch word (rw) or not (ro), append it to an array and write
 *         18 bytes of dense state per node, as ouro's walk does;
 *   mark  go over the array, read each node and its partner's scratch
 *         word, and write the scratch word back (rw) or not (ro), as
 *         marking and relink do.
 * No counting, no traversal through function pointers: the time left is
 * what moving the bytes costs.  `rw` moves what ouro's collector moves;
 * `ro` what a collector that never writes a member would.  Prints the
 * median of `reps` runs per pass, and the bytes per second of rw.
 * Compare `membw N 1` with `membw N 2`: where they are about equal, one
 * core already takes the memory system's whole bandwidth and no second
 * marker can gain much on a collection that moves these bytes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct node_s {
    struct node_s *next; /* the gc prefix: list links ... */
    uint64_t scratch;    /* ... prev, the collector's scratch word during a collection */
    uint64_t tid;        /* the object header: owner, counts, gc bits, type */
    uint32_t local, gc;
    int64_t shared;
    const void *type;
    struct node_s *other; /* the pair's reference */
    uint64_t pad;         /* the rest of the 64-byte block */
} node_t;
_Static_assert(sizeof(node_t) == 64, "a node is a 64-byte block");

typedef struct dense_s {
    uint32_t c1, in;
} dense_t;

static node_t *nodes;
static node_t **order; /* the walk's array: node pointers in list order */
static dense_t *cnt;
static uint8_t *st, *mk;
static size_t n;
static int nthreads, rw;
static pthread_barrier_t barrier;
static double t_walk, t_mark;

#define AHEAD 128 /* prefetch distance, as the collector's */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void walk(size_t lo, size_t hi)
{
    node_t *end = hi < n ? &nodes[hi] : NULL;
    size_t l = lo;
    for (node_t *h = &nodes[lo]; h != end; h = h->next, l++) {
        if (l + AHEAD < hi)
            __builtin_prefetch(&nodes[l + AHEAD], 1);
        order[l] = h;
        if (rw)
            h->scratch = 1 | (uint64_t)l << 1;
        cnt[l] = (dense_t){.c1 = (uint32_t)(h->local + (uint64_t)h->shared + (h->tid != 0)), .in = h->gc};
        st[l] = 0;
        mk[l] = 0;
    }
}

static uint64_t mark(size_t lo, size_t hi)
{
    uint64_t sum = 0;
    for (size_t l = lo; l < hi; l++) {
        if (l + AHEAD < hi)
            __builtin_prefetch(order[l + AHEAD], 1);
        node_t *h = order[l];
        sum += h->other->scratch + (uint64_t)h->type + cnt[l].c1;
        mk[l] = 1;
        if (rw)
            h->scratch = (uint64_t)(l ? order[l - 1] : NULL);
    }
    return sum;
}

/* what mark() read, so that the compiler keeps the reads; relaxed: only
 * its final value matters, and nothing reads it */
static _Atomic uint64_t sink;

static void *thread_main(void *arg)
{
    /* whole pairs per thread: mark() reads the partner's scratch word */
    size_t k = (size_t)(uintptr_t)arg, lo = n / 2 * k / (size_t)nthreads * 2,
           hi = n / 2 * (k + 1) / (size_t)nthreads * 2;
    pthread_barrier_wait(&barrier);
    double t0 = now_s();
    walk(lo, hi);
    pthread_barrier_wait(&barrier);
    double t1 = now_s();
    atomic_fetch_add_explicit(&sink, mark(lo, hi), memory_order_relaxed);
    pthread_barrier_wait(&barrier);
    if (k == 0) {
        t_walk = t1 - t0;
        t_mark = now_s() - t1;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    n = argc > 1 ? strtoul(argv[1], NULL, 10) : 4000000;
    nthreads = argc > 2 ? atoi(argv[2]) : 1;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    rw = !(argc > 4 && strcmp(argv[4], "ro") == 0);
    if (n < 2 || nthreads < 1 || nthreads > 64 || reps < 1) {
        fprintf(stderr, "usage: membw [nodes >= 2] [threads 1..64] [reps >= 1] [rw|ro]\n");
        return 2;
    }
    n &= ~(size_t)1; /* whole pairs */
    nodes = aligned_alloc(64, n * sizeof *nodes);
    order = malloc(n * sizeof *order);
    cnt = malloc(n * sizeof *cnt);
    st = malloc(n);
    mk = malloc(n);
    double *tw = malloc((size_t)reps * sizeof *tw), *tm = malloc((size_t)reps * sizeof *tm);
    if (!nodes || !order || !cnt || !st || !mk || !tw || !tm) {
        fprintf(stderr, "membw: out of memory\n");
        return 1;
    }
    memset(nodes, 0, n * sizeof *nodes);
    for (size_t i = 0; i < n; i++) {
        nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
        nodes[i].tid = 1;
        nodes[i].local = 1;
        nodes[i].shared = i % 2 == 0; /* the pair's first is held from outside too */
        nodes[i].type = &nodes;
        nodes[i].other = &nodes[i ^ 1];
    }
    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
    pthread_t th[64];
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < nthreads; k++)
            if (pthread_create(&th[k], NULL, thread_main, (void *)(uintptr_t)k) != 0) {
                fprintf(stderr, "membw: cannot start a thread\n");
                return 1;
            }
        for (int k = 0; k < nthreads; k++)
            pthread_join(th[k], NULL);
        tw[r] = t_walk;
        tm[r] = t_mark;
    }
    qsort(tw, (size_t)reps, sizeof *tw, cmp_double);
    qsort(tm, (size_t)reps, sizeof *tm, cmp_double);
    double w = tw[reps / 2], m = tm[reps / 2];
    /* rw: the nodes read and written back in each pass; ro: read in each
     * pass; both: the dense state (order, cnt, st, mk) written by the walk
     * and read by mark */
    const double dense = sizeof *order + sizeof *cnt + 2;
    double bytes = (double)n * ((rw ? 4 * 64 : 2 * 64) + 2 * dense);
    printf("impl=membw mode=%s nodes=%zu threads=%d walk_ms=%.2f mark_ms=%.2f total_ms=%.2f ns_per_node=%.2f "
           "gb_per_s=%.1f\n",
           rw ? "rw" : "ro", n, nthreads, w * 1e3, m * 1e3, (w + m) * 1e3, (w + m) * 1e9 / (double)n,
           bytes / (w + m) / 1e9);
    return 0;
}
