/* trees-ouro.c — GCBench and binary-trees (trees.h) on ouro objects.
 *
 *   trees-ouro gcbench|binarytrees[-cyclic] [depth]
 *
 * A node is a container (its type has traverse and clear), so every node
 * is tracked by the collector from ouro_new on and automatic collections
 * (the defaults: thresholds 700, 10, 10, on the background thread) run as
 * the program allocates.  Its slots follow the container contract of
 * ouro.h: written with ouro_store/ouro_setref, read with ouro_load.  In the
 * plain variants reference counting frees each tree when its root is
 * dropped; in the -cyclic ones every child holds a counted reference to
 * its parent, so a dropped tree is one cycle only the collector reclaims.
 * Prints collections= (all generations), collected= (objects the collector
 * found unreachable) and gc_s= (the collections' summed durations). */
#include <stdio.h>
#include <stdlib.h>

#include "ouro.h"

typedef struct node_s {
    ouro_object_t ob;
    ouro_object_t *left, *right;
    ouro_object_t *parent; /* -cyclic only, else NULL */
    int i, j;              /* GCBench's two integer fields, unused */
} tree_t;

static int node_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    tree_t *n = (tree_t *)self;
    ouro_object_t *slots[3] = {ouro_load(&n->left), ouro_load(&n->right), ouro_load(&n->parent)};
    for (int k = 0; k < 3; k++) {
        int r = slots[k] ? visit(slots[k], arg) : 0;
        if (r)
            return r;
    }
    return 0;
}

static void node_clear(ouro_object_t *self)
{
    tree_t *n = (tree_t *)self;
    ouro_setref(&n->left, NULL);
    ouro_setref(&n->right, NULL);
    ouro_setref(&n->parent, NULL);
}

static const ouro_type_t node_type = {.name = "tree-node",
                                      .basic_size = sizeof(tree_t),
                                      .traverse = node_traverse,
                                      .clear = node_clear,
                                      .dealloc = node_clear};

static int cyclic;
static const char *impl_name = "ouro";

static void impl_init(void)
{
    ouro_thread_register();
}

static tree_t *tree_new(void)
{
    tree_t *n = (tree_t *)ouro_new(&node_type);
    if (n == NULL) {
        perror("ouro_new");
        exit(1);
    }
    return n;
}

static void tree_link(tree_t *n, tree_t *l, tree_t *r)
{
    ouro_store(&n->left, &l->ob); /* takes over the caller's references */
    ouro_store(&n->right, &r->ob);
    if (cyclic) {
        ouro_incref(&n->ob);
        ouro_store(&l->parent, &n->ob);
        ouro_incref(&n->ob);
        ouro_store(&r->parent, &n->ob);
    }
}

static tree_t *tree_left(tree_t *n)
{
    return (tree_t *)ouro_load(&n->left);
}

static tree_t *tree_right(tree_t *n)
{
    return (tree_t *)ouro_load(&n->right);
}

static void tree_drop(tree_t *n)
{
    ouro_decref(&n->ob);
}

static double *array_new(long n)
{
    double *a = ouro_malloc(sizeof *a * (size_t)n);
    if (a == NULL) {
        perror("ouro_malloc");
        exit(1);
    }
    return a;
}

/* Wait for the collection in flight (ouro_gc_get_stats takes the
 * collector's lock, which a collection holds from start to end), then merge
 * the counts of the garbage it queued to this thread, the owner of every
 * node, so that the garbage is freed (see ouro_quiescent). */
static void impl_settle(void)
{
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    ouro_quiescent();
}

static void impl_report(void)
{
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    size_t collections = 0, collected = 0;
    for (int g = 0; g < 3; g++) {
        collections += st.gen[g].collections;
        collected += st.gen[g].collected;
    }
    printf(" collections=%zu collected=%zu gc_s=%.3f", collections, collected, (double)st.total_ns * 1e-9);
}

#include "trees.h"
