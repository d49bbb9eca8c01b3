/* gcnode.h — what the collector's tests share: a container type with
 * reference slots and a magic word checked on every traverse, counters of
 * deaths, finalizations and clears, and a clean start for each test.
 * Static: each test program has its own copy. */
#ifndef OURO_TESTS_GCNODE_H
#define OURO_TESTS_GCNODE_H

#include <check.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ouro.h"
#include "testutil.h"

#define MAGIC_LIVE 0x1fe0b1u
#define MAGIC_DEAD 0xdeadu

/* A container with `nslots` reference slots. */
typedef struct gnode_s {
    ouro_object_t ob;
    uint32_t magic;
    uint32_t nslots;
    long id;

    ouro_object_t *slot[];
} gnode_t;

static _Atomic long deaths, finalized, cleared;
static ouro_object_t *resurrected __attribute__((unused)); /* a counted reference held by a C global */

static inline int g_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    gnode_t *n = (gnode_t *)self;
    /* traverse may meet a node not initialised yet (0: tracking starts at
     * ouro_new) or one whose dealloc another thread is running (DEAD); any
     * other value would be memory reused under the collector's feet */
    uint32_t m = __atomic_load_n(&n->magic, __ATOMIC_RELAXED);
    if (m != MAGIC_LIVE && m != MAGIC_DEAD && m != 0)
        TFAIL("traverse of reused memory: magic %#x", m);
    uint32_t ns = __atomic_load_n(&n->nslots, __ATOMIC_RELAXED); /* set after ouro_new */
    for (uint32_t i = 0; i < ns; i++) {
        ouro_object_t *r = ouro_load(&n->slot[i]);
        if (r) {
            int rc = visit(r, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static inline void g_clear(ouro_object_t *self)
{
    gnode_t *n = (gnode_t *)self;
    atomic_fetch_add(&cleared, 1);

    for (uint32_t i = 0; i < n->nslots; i++)
        ouro_setref(&n->slot[i], NULL);
}

static inline void g_dealloc(ouro_object_t *self)
{
    gnode_t *n = (gnode_t *)self;
    if (__atomic_load_n(&n->magic, __ATOMIC_RELAXED) != MAGIC_LIVE)
        TFAIL("dealloc of node %ld twice", n->id);
    atomic_fetch_add(&deaths, 1);
    for (uint32_t i = 0; i < n->nslots; i++)
        ouro_setref(&n->slot[i], NULL);
    __atomic_store_n(&n->magic, MAGIC_DEAD, __ATOMIC_RELAXED);
}

static inline void g_finalize(ouro_object_t *self)
{
    (void)self;
    atomic_fetch_add(&finalized, 1);
}

/* Resurrects itself into `resurrected` the first time. */
static inline void g_finalize_resurrect(ouro_object_t *self)
{
    atomic_fetch_add(&finalized, 1);
    ouro_incref(self);
    resurrected = self;
}

#define GTYPE(name_, n_, fin_)                                                                     \
    {.name = name_,                                                                                \
     .basic_size = sizeof(gnode_t) + (n_) * sizeof(ouro_object_t *),                               \
     .traverse = g_traverse,                                                                       \
     .clear = g_clear,                                                                             \
     .finalize = fin_,                                                                             \
     .dealloc = g_dealloc}
static const ouro_type_t t4 __attribute__((unused)) = GTYPE("gnode4", 4, NULL);
static const ouro_type_t t32 __attribute__((unused)) = GTYPE("gnode32", 32, NULL);
static const ouro_type_t tfin __attribute__((unused)) = GTYPE("gnode-fin", 4, g_finalize);
static const ouro_type_t tres __attribute__((unused)) = GTYPE("gnode-resurrect", 4, g_finalize_resurrect);
/* no clear: a cycle of these cannot be broken */
static const ouro_type_t tnoclear __attribute__((unused)) = {.name = "gnode-noclear",
                                     .basic_size = sizeof(gnode_t) + 4 * sizeof(ouro_object_t *),
                                     .traverse = g_traverse,
                                     .dealloc = g_dealloc};

static long next_id;

static inline gnode_t *gnew(const ouro_type_t *t)
{
    gnode_t *n = (gnode_t *)ouro_new(t);
    ck_assert_ptr_nonnull(n);
    __atomic_store_n(&n->magic, MAGIC_LIVE, __ATOMIC_RELAXED);
    __atomic_store_n(&n->nslots, (uint32_t)((t->basic_size - sizeof(gnode_t)) / sizeof(ouro_object_t *)),
                     __ATOMIC_RELAXED);
    n->id = next_id++;
    return n;
}

/* a->slot[i] = b, with a new reference to b */
static inline void link_(gnode_t *a, int i, gnode_t *b)
{
    ouro_incref(&b->ob);
    ouro_setref(&a->slot[i], &b->ob);
}

/* A 2-cycle of new containers that nothing else refers to: garbage. */
static inline void garbage_2_cycle(void)
{
    gnode_t *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
}

/* A clean start: every test collects what earlier ones (in this process,
 * under TSan's no-fork mode) left, with automatic collections off. */
static inline void setup(void)
{
    ouro_gc_disable();
    ouro_gc_set_threshold(700, 10, 10);
    ouro_gc_set_debug(0);
    ouro_gc_set_markers(1);
    ouro_gc_collect(2);
    ouro_barrier();
    atomic_store(&deaths, 0);
    atomic_store(&finalized, 0);
    atomic_store(&cleared, 0);
    reset_failures();
}

#endif /* OURO_TESTS_GCNODE_H */
