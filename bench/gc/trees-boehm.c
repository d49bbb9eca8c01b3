/* trees-boehm.c — GCBench and binary-trees (trees.h) on Boehm GC.
 *
 *   trees-boehm gcbench|binarytrees[-cyclic] [depth]
 *
 * Nodes come from GC_MALLOC and are never freed by hand: Boehm's
 * stop-the-world mark and sweep reclaims dropped trees, cycles or not, so
 * the -cyclic variant only adds the parent field and its stores.  The
 * long-lived array is pointer-free (GC_MALLOC_ATOMIC).  Boehm's defaults
 * otherwise (GC_MARKERS and friends from the environment).  Prints
 * collections= (GC_get_gc_no, every one a full collection), gc_s= (time
 * inside them, see on_collection_event), markers= (marker threads,
 * counting the collecting one) and heap_kib= (Boehm's heap at the end). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define GC_THREADS 1 /* declares GC_get_parallel */
#include <gc/gc.h>   /* Boehm GC (not src/gc.h: -I./src is on the path) */

typedef struct node_s {
    struct node_s *left, *right;
    int i, j; /* GCBench's two integer fields, unused */
} node_t;

typedef struct cnode_s { /* -cyclic: with the parent */
    struct cnode_s *left, *right, *parent;
    int i, j;
} cnode_t;

typedef node_t tree_t; /* a cnode_t starts like a node_t */

static int cyclic;

static const char *impl_name = "boehm";

/* Time inside collections: from GC_EVENT_START to GC_EVENT_END (the
 * world stopped, marking; Boehm sweeps lazily, during allocation, so
 * most sweeping is not in it). */
static double gc_seconds, gc_started;

static void on_collection_event(GC_EventType ev)
{
    struct timespec t;
    if (ev != GC_EVENT_START && ev != GC_EVENT_END)
        return;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double s = (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
    if (ev == GC_EVENT_START)
        gc_started = s;
    else
        gc_seconds += s - gc_started;
}

static void impl_init(void)
{
    GC_INIT();
    GC_set_on_collection_event(on_collection_event);
}

static tree_t *tree_new(void)
{
    tree_t *n = GC_MALLOC(cyclic ? sizeof(cnode_t) : sizeof(node_t));
    if (n == NULL) {
        fprintf(stderr, "GC_MALLOC: out of memory\n");
        exit(1);
    }
    return n;
}

static void tree_link(tree_t *n, tree_t *l, tree_t *r)
{
    n->left = l;
    n->right = r;
    if (cyclic) {
        ((cnode_t *)l)->parent = (cnode_t *)n;
        ((cnode_t *)r)->parent = (cnode_t *)n;
    }
}

static tree_t *tree_left(tree_t *n)
{
    return n->left;
}

static tree_t *tree_right(tree_t *n)
{
    return n->right;
}

static void tree_drop(tree_t *n)
{
    (void)n; /* the collector finds it unreachable */
}

static double *array_new(long n)
{
    double *a = GC_MALLOC_ATOMIC(sizeof *a * (size_t)n);
    if (a == NULL) {
        fprintf(stderr, "GC_MALLOC_ATOMIC: out of memory\n");
        exit(1);
    }
    return a;
}

static void impl_settle(void)
{
    /* collections run on the allocating thread: none is in flight */
}

static void impl_report(void)
{
    printf(" collections=%lu gc_s=%.3f markers=%d heap_kib=%zu", (unsigned long)GC_get_gc_no(), gc_seconds,
           GC_get_parallel() + 1, GC_get_heap_size() / 1024);
}

#include "trees.h"
