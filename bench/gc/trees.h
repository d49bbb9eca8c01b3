/*
 * trees.h — the two tree workloads of the collector benchmarks, GCBench and
 * binary-trees, written once over a small node interface.  trees-ouro.c and
 * trees-boehm.c each define that interface and then include this file
 * (once: it holds main); bench/gc/trees.py is the same program in Python.
 * Written from the workloads' public descriptions, not from any
 * benchmark's source.
 *
 * The interface an implementation defines before including this file:
 *   typedef ... tree_t;                       a node: two children (and a parent)
 *   static const char *impl_name;             "ouro", "boehm"
 *   static void impl_init(void);
 *   static tree_t *tree_new(void);            a childless node; the caller holds a reference
 *   static void tree_link(tree_t *n, tree_t *l, tree_t *r)
 *                                             n takes over the caller's references to l
 *                                             and r; in the cyclic variant each child
 *                                             also gets a counted reference to n
 *   static tree_t *tree_left(tree_t *n), *tree_right(tree_t *n)   borrowed, or NULL
 *   static void tree_drop(tree_t *n);         drop the caller's reference to a root
 *   static double *array_new(long n);         n doubles the program keeps to its end
 *   static void impl_settle(void);            wait for collector work still in flight
 *                                             when the workload ends (a concurrent
 *                                             collector's backlog); may do nothing
 *   static void impl_report(void);            print " key=value" fields of its own
 *                                             (collections=... at least) on stdout
 *   static int cyclic;                        set by main: the -cyclic variant runs
 *
 * Workloads (argument 1; argument 2 the depth D):
 *   gcbench      Ellis, Kovac and Boehm's GCBench.  D (default 16) is
 *                kLongLivedTreeDepth = kMaxTreeDepth; kStretchTreeDepth = D+2.
 *                Build and drop a stretch tree of depth D+2; build a
 *                long-lived tree of depth D top-down and an array of 500,000
 *                doubles, kept to the end; then for d = 4, 6, ..., D build
 *                2 * nodes(D+2) / nodes(d) trees top-down (a node, then its
 *                children filled in) and as many bottom-up (children first),
 *                dropping each at once.  nodes(d) = 2^(d+1) - 1.  The
 *                iteration count uses the stretch depth, as the original
 *                does, so each depth allocates about 4 * nodes(D+2) nodes.
 *   binarytrees  The Benchmarks Game's binary-trees, one thread.  D
 *                (default 21): build and check a stretch tree of depth D+1;
 *                build a long-lived tree of depth D; for d = 4, 6, ..., D
 *                build, check and drop 2^(D-d+4) trees of depth d (bottom-up);
 *                check the long-lived tree.  check = the number of nodes.
 * A "-cyclic" suffix (gcbench-cyclic, binarytrees-cyclic) gives every node
 * a counted back-pointer to its parent: each tree is then one big cycle, and
 * under reference counting only the cycle collector can reclaim it.
 *
 * Output, one line: impl= workload= depth= seconds= (wall time of the
 * workload) settle_s= (then the wall time of impl_settle) cpu_s=
 * (user+system of all threads, settling included: a concurrent collector's
 * work shows here) peak_rss_kib= (getrusage) check= (the same for every
 * implementation of a workload and depth), then the implementation's fields.
 */
#ifndef TREES_H
#define TREES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long tree_nodes(int depth)
{
    return (2L << depth) - 1;
}

/* A complete tree built top-down: `n` gets children, then they get theirs
 * (GCBench's Populate). */
static void tree_populate(int depth, tree_t *n)
{
    if (depth <= 0)
        return;
    tree_t *l = tree_new(), *r = tree_new();
    tree_link(n, l, r);
    tree_populate(depth - 1, l);
    tree_populate(depth - 1, r);
}

/* A complete tree built bottom-up: the children first (GCBench's MakeTree,
 * binary-trees' bottomUpTree). */
static tree_t *tree_make(int depth)
{
    if (depth <= 0)
        return tree_new();
    tree_t *l = tree_make(depth - 1);
    tree_t *r = tree_make(depth - 1);
    tree_t *n = tree_new();
    tree_link(n, l, r);
    return n;
}

static long tree_check(tree_t *n)
{
    tree_t *l = tree_left(n);
    return l ? 1 + tree_check(l) + tree_check(tree_right(n)) : 1;
}

static long run_gcbench(int depth)
{
    const int min_depth = 4;
    const int stretch_depth = depth + 2;
    const long array_size = 500000;

    tree_drop(tree_make(stretch_depth));

    tree_t *long_lived = tree_new();
    tree_populate(depth, long_lived);
    double *array = array_new(array_size);
    for (long i = 0; i < array_size / 2; i++)
        array[i] = 1.0 / (double)i;

    for (int d = min_depth; d <= depth; d += 2) {
        long iters = 2 * tree_nodes(stretch_depth) / tree_nodes(d);
        for (long i = 0; i < iters; i++) {
            tree_t *t = tree_new();
            tree_populate(d, t);
            tree_drop(t);
        }
        for (long i = 0; i < iters; i++)
            tree_drop(tree_make(d));
    }

    long check = tree_check(long_lived);
    if (array[1000] != 1.0 / 1000) {
        fprintf(stderr, "gcbench: the long-lived array lost its contents\n");
        exit(1);
    }
    tree_drop(long_lived);
    return check;
}

static long run_binarytrees(int depth)
{
    const int min_depth = 4;
    if (depth < min_depth + 2)
        depth = min_depth + 2;
    long sum = 0;

    tree_t *stretch = tree_make(depth + 1);
    sum += tree_check(stretch);
    tree_drop(stretch);

    tree_t *long_lived = tree_make(depth);
    for (int d = min_depth; d <= depth; d += 2) {
        long iters = 1L << (depth - d + min_depth), check = 0;
        for (long i = 0; i < iters; i++) {
            tree_t *t = tree_make(d);
            check += tree_check(t);
            tree_drop(t);
        }
        if (check != iters * tree_nodes(d)) {
            fprintf(stderr, "binarytrees: %ld trees of depth %d checked %ld\n", iters, d, check);
            exit(1);
        }
        sum += check;
    }
    sum += tree_check(long_lived);
    tree_drop(long_lived);
    return sum;
}

int main(int argc, char **argv)
{
    const char *workload = argc > 1 ? argv[1] : "gcbench";
    char base[32];
    size_t len = strlen(workload);
    cyclic = len > 7 && strcmp(workload + len - 7, "-cyclic") == 0;
    snprintf(base, sizeof base, "%.*s", (int)(cyclic ? len - 7 : len), workload);
    int is_gcbench = strcmp(base, "gcbench") == 0;
    if (!is_gcbench && strcmp(base, "binarytrees") != 0) {
        fprintf(stderr, "usage: %s gcbench|binarytrees[-cyclic] [depth]\n", argv[0]);
        return 2;
    }
    int depth = argc > 2 ? atoi(argv[2]) : is_gcbench ? 16 : 21;
    if (depth < 4 || depth > 28) {
        fprintf(stderr, "%s: depth %d out of range 4..28\n", argv[0], depth);
        return 2;
    }

    impl_init();
    double t0 = now_s();
    long check = is_gcbench ? run_gcbench(depth) : run_binarytrees(depth);
    double t1 = now_s();
    impl_settle();
    double seconds = t1 - t0, settle = now_s() - t1;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    printf("impl=%s workload=%s depth=%d seconds=%.3f settle_s=%.3f cpu_s=%.3f peak_rss_kib=%ld check=%ld",
           impl_name, workload, depth, seconds, settle, cpu, ru.ru_maxrss, check);
    impl_report();
    printf("\n");
    return 0;
}

#endif /* TREES_H */
