/*
 * gcapi.c — the collector's settings and inspection API: switching it on
 * and off, thresholds, counts and statistics, freezing, callbacks, the
 * referents and referrers of an object, debug flags and the garbage kept
 * by OURO_GC_DEBUG_SAVEALL.  It owns the callback table; everything else
 * it reads or moves is the collector's shared state (gc.h), under the
 * locks that state names.  Collections themselves are gc.c's.
 */
#include "config.h"
#include "gc.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

/* ---- callbacks ---- */
#define MAX_CALLBACKS 16
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    ouro_gc_callback *fn;
    void *arg;
} callbacks[MAX_CALLBACKS];
static int ncallbacks;

void ouro__gc_run_callbacks(int phase, int gen, size_t collected, size_t uncollectable)
{
    pthread_mutex_lock(&cb_lock);
    int n = ncallbacks;
    __typeof__(callbacks[0]) copy[MAX_CALLBACKS];
    memcpy(copy, callbacks, sizeof copy);
    pthread_mutex_unlock(&cb_lock);
    for (int i = 0; i < n; i++)
        copy[i].fn(phase, gen, collected, uncollectable, copy[i].arg);
}

/* Settings (enabled, thresholds, debug flags) and the generation counts
 * are independent words read as heuristics: relaxed loads and stores. */
void ouro_gc_enable(void)
{
    atomic_store_explicit(&ouro__gc.enabled, 1, memory_order_relaxed);
}

void ouro_gc_disable(void)
{
    atomic_store_explicit(&ouro__gc.enabled, 0, memory_order_relaxed);
}

int ouro_gc_is_enabled(void)
{
    return atomic_load_explicit(&ouro__gc.enabled, memory_order_relaxed);
}

int ouro_gc_set_threshold(long t0, long t1, long t2)
{
    if (t0 < 0 || t1 < 0 || t2 < 0) {
        errno = EINVAL;
        return -1;
    }
    /* relaxed: independent settings read as heuristics */
    atomic_store_explicit(&ouro__gc.threshold[0], t0, memory_order_relaxed);
    atomic_store_explicit(&ouro__gc.threshold[1], t1, memory_order_relaxed);
    atomic_store_explicit(&ouro__gc.threshold[2], t2, memory_order_relaxed);
    return 0;
}

void ouro_gc_get_threshold(long out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = atomic_load_explicit(&ouro__gc.threshold[i], memory_order_relaxed);
}

void ouro_gc_get_count(long out[3])
{
    out[0] = ouro__gc_young_count();
    out[1] = atomic_load_explicit(&ouro__gc.gen_count[1], memory_order_relaxed);
    out[2] = atomic_load_explicit(&ouro__gc.gen_count[2], memory_order_relaxed);
}

void ouro_gc_get_stats(ouro_gc_stats_t *out)
{
    bool locked = ouro__gc_lock();
    *out = ouro__gc.stats;
    out->young = (size_t)ouro__gc_young_count();
    for (int g = 1; g < 4; g++)
        out->objects[g] = ouro__gc.gen_size[g];
    out->zombies = atomic_load_explicit(&ouro__gc.nzombies, memory_order_relaxed); /* a statistic */
    out->saved = ouro__gc.saved_n;
    out->pressure_waits = atomic_load_explicit(&ouro__gc.pressure_waits, memory_order_relaxed); /* a statistic */
    ouro__gc_unlock(locked);
}

/* Take gc_mutex for an API call that walks or moves the lists, with the
 * zombies drained: returns whether to unlock (false from a collection's
 * callback: this thread holds it, the lists are at rest), or -1 with
 * EDEADLK from a finalizer (the lists are in use). */
static int lists_lock(void)
{
    if (ouro__gc_in_collector) {
        errno = EDEADLK;
        return -1;
    }
    bool locked = ouro__gc_lock();
    ouro__gc_drain_zombies_locked();
    return locked;
}

/* Append every member of list `from` to generation `to`.  Into generation
 * 2 they come with the last id (gc.h); out of it, its ids go. */
static void move_list_locked(gc_head_t *from, int to)
{
    size_t n = 0;
    uint32_t loc = ouro__gc_loc_old(to) | (to == 2 ? ouro__gc_id_loc(GC_IDS - 1) : 0);
    gc_head_t *first = NEXT(from);
    for (gc_head_t *h = first; h != from; h = NEXT(h)) {
        ouro__gc_bits_set(gc_object_of(h), GC_LOC_MASK, loc);
        n++;
    }
    if (from == &ouro__gc.gens[2])
        memset(ouro__gc.id_first, 0, sizeof ouro__gc.id_first);
    if (to == 2 && n && ouro__gc.id_first[GC_IDS - 1] == NULL)
        ouro__gc.id_first[GC_IDS - 1] = first;
    list_splice(from, &ouro__gc.gens[to]);
    ouro__gc.gen_size[to] += n;
}

int ouro_gc_freeze(void)
{
    int locked = lists_lock();
    if (locked < 0)
        return -1;
    gc_head_t young;
    list_init(&young);
    uint64_t parity;
    ouro__gc_take_young(&young, &parity);
    move_list_locked(&young, 3);
    for (int g = 1; g <= 2; g++) {
        move_list_locked(&ouro__gc.gens[g], 3);
        ouro__gc.gen_size[g] = 0;
    }
    ouro__gc_unlock(locked);
    return 0;
}

int ouro_gc_unfreeze(void)
{
    int locked = lists_lock();
    if (locked < 0)
        return -1;
    move_list_locked(&ouro__gc.gens[3], 2);
    ouro__gc.gen_size[3] = 0;
    ouro__gc_unlock(locked);
    return 0;
}

size_t ouro_gc_get_freeze_count(void)
{
    int locked = lists_lock();
    if (locked < 0)
        return ouro__gc.gen_size[3]; /* from a finalizer: this thread holds gc_mutex */
    size_t n = ouro__gc.gen_size[3];
    ouro__gc_unlock(locked);
    return n;
}

int ouro_gc_callback_add(ouro_gc_callback *fn, void *arg)
{
    if (fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&cb_lock);
    int r = -1;
    if (ncallbacks < MAX_CALLBACKS) {
        callbacks[ncallbacks].fn = fn;
        callbacks[ncallbacks].arg = arg;
        ncallbacks++;
        r = 0;
    }
    pthread_mutex_unlock(&cb_lock);
    if (r)
        errno = ENOSPC;
    return r;
}

int ouro_gc_callback_remove(ouro_gc_callback *fn, void *arg)
{
    pthread_mutex_lock(&cb_lock);
    int r = -1;
    for (int i = 0; i < ncallbacks; i++)
        if (callbacks[i].fn == fn && callbacks[i].arg == arg) {
            memmove(&callbacks[i], &callbacks[i + 1], (size_t)(ncallbacks - i - 1) * sizeof callbacks[0]);
            ncallbacks--;
            r = 0;
            break;
        }
    pthread_mutex_unlock(&cb_lock);
    if (r)
        errno = ENOENT;
    return r;
}

int ouro_gc_get_referents(ouro_object_t *o, ouro_visit_fn *visit, void *arg)
{
    if (o == NULL || visit == NULL) {
        errno = EINVAL;
        return -1;
    }
    return o->type->traverse ? o->type->traverse(o, visit, arg) : 0;
}

typedef struct referrers_s {
    ouro_object_t *target;
    bool hit;
} referrers_t;

static int find_target(ouro_object_t *r, void *arg)
{
    referrers_t *f = arg;
    if (r == f->target) {
        f->hit = true;
        return 1;
    }
    return 0;
}

static size_t referrers_in(gc_head_t *l, ouro_object_t *target, ouro_visit_fn *visit, void *arg)
{
    size_t n = 0;
    for (gc_head_t *h = NEXT(l); h != l; h = NEXT(h)) {
        ouro_object_t *o = gc_object_of(h);
        if (ouro__gc_is_dead(o))
            continue;
        referrers_t f = {target, false};
        o->type->traverse(o, find_target, &f);
        if (f.hit) {
            n++;
            if (visit)
                visit(o, arg);
        }
    }
    return n;
}

long ouro_gc_get_referrers(ouro_object_t *target, ouro_visit_fn *visit, void *arg)
{
    if (target == NULL) {
        errno = EINVAL;
        return -1;
    }
    int locked = lists_lock();
    if (locked < 0)
        return -1;
    size_t n = 0;
    ouro_read_begin();
    for (int g = 1; g < 4; g++)
        n += referrers_in(&ouro__gc.gens[g], target, visit, arg);
    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &ouro__gc.stripes[i];
        spin_lock(&s->lock);
        n += referrers_in(&s->young[s->parity], target, visit, arg);
        spin_unlock(&s->lock);
    }
    ouro_read_end();
    ouro__gc_unlock(locked);
    return (long)n;
}

void ouro_gc_set_debug(unsigned flags)
{
    atomic_store_explicit(&ouro__gc.debug_flags, flags, memory_order_relaxed);
}

unsigned ouro_gc_get_debug(void)
{
    return atomic_load_explicit(&ouro__gc.debug_flags, memory_order_relaxed);
}

size_t ouro_gc_garbage(ouro_object_t **out, size_t max)
{
    bool locked = ouro__gc_lock();
    size_t n = ouro__gc.saved_n;
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = ouro__gc.saved[i];
    ouro__gc_unlock(locked);
    return n;
}

void ouro_gc_garbage_clear(void)
{
    bool locked = ouro__gc_lock();
    ouro_object_t **v = ouro__gc.saved;
    size_t n = ouro__gc.saved_n;
    ouro__gc.saved = NULL;
    ouro__gc.saved_n = ouro__gc.saved_cap = 0;
    ouro__gc_unlock(locked);
    for (size_t i = 0; i < n; i++)
        ouro_decref(v[i]);
    ouro_free(v);
}
