/*
 * gctrack.c — the tracking layer: which list each container is on.  New
 * containers go on their thread's stripe of young lists; a container
 * that dies is unlinked by the thread that frees it if it is still on a
 * young list, and otherwise (the collector owns its list) pushed on the
 * zombie stack for the collector to unlink and free.  It owns the zombie
 * stack and the stripe counter; the lists and stripes themselves are the
 * collector's shared state (gc.h), and who writes what is stated at the
 * top of gc.c.  Its fast paths (track_young, untrack_young) take only
 * their stripe's spin lock, never gc_mutex.
 */
#include "config.h"
#include "gc.h"

#include <errno.h>
#include <pthread.h>
#include <urcu/lfstack.h>

static _Atomic unsigned next_stripe;

/* ---- zombies: containers that died on lists the collector owns ---- */
typedef struct zombie_s {
    struct cds_lfs_node node;
    ouro_object_t *o;
} zombie_t;
static struct __cds_lfs_stack zombies;
#define ZOMBIE_DRAIN 4096

/* The stripes' lists and the zombie stack, at ouro's init once. */
void ouro__gc_track_init(void)
{
    for (int i = 0; i < NSTRIPES; i++) {
        list_init(&ouro__gc.stripes[i].young[0]);
        list_init(&ouro__gc.stripes[i].young[1]);
    }
    __cds_lfs_init(&zombies);
}

unsigned ouro__gc_next_stripe(void)
{
    /* relaxed: any spread of threads over stripes is correct */
    return atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % NSTRIPES;
}

static inline unsigned stripe_of(uint32_t gc)
{
    return (gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT;
}

#define LOC_MASK GC_LOC_MASK
#define gc_bits_set ouro__gc_bits_set
#define loc_old ouro__gc_loc_old

/* ================================================================== */
/* tracking                                                            */
/* ================================================================== */
/* `fresh`: o comes from ouro_new and is not published, so no other thread
 * writes its gc word (the collector may read it through a stale pointer,
 * hence atomic, relaxed: the stripe lock's release publishes it to the
 * collector that takes the list); otherwise mutators' read-modify-writes
 * of other bits (shading, weak references) may race ours: a CAS. */
static void track_young(ouro_tstate_t *ts, ouro_object_t *o, bool fresh)
{
    unsigned si = ts->gc_stripe;
    stripe_t *s = &ouro__gc.stripes[si];
    spin_lock(&s->lock);
    int p = s->parity;
    uint32_t loc = GC_TRACKED | (p ? GC_PARITY : 0) | (si << GC_STRIPE_SHIFT);
    if (fresh)
        __atomic_store_n(&o->gc, (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & ~LOC_MASK) | loc, __ATOMIC_RELAXED);
    else
        gc_bits_set(o, LOC_MASK, loc);
    list_append(&s->young[p], gc_head_of(o));
    long n = atomic_load_explicit(&s->count, memory_order_relaxed) + 1;
    atomic_store_explicit(&s->count, n, memory_order_relaxed);
    spin_unlock(&s->lock);
    if ((n & 31) == 0)
        ouro__gc_maybe_collect(ts);
}

void ouro__gc_track_new(ouro_tstate_t *ts, ouro_object_t *o)
{
    track_young(ts, o, true);
}

/* If `o` is on its stripe's current young list, unlink it and return true.
 * Otherwise it belongs to the collector (or is not tracked).  `dead`: o
 * died on this thread (its GC_DEAD set by us), so no other thread writes
 * its gc word any more: a store clears the location bits, no CAS.  (Every
 * other writer needs a reference to o, or o in a slot it overwrites: a
 * shade, a weak reference, immortality; the collector relinks only members
 * of G, and o, on a current young list, is none.) */
static bool untrack_young(ouro_object_t *o, uint32_t gc, bool dead)
{
    stripe_t *s = &ouro__gc.stripes[stripe_of(gc)];
    spin_lock(&s->lock);
    /* relaxed: OLD and PARITY change only under this lock or for objects
     * whose parity no longer matches (taken by the collector) */
    gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    bool mine = (gc & (GC_TRACKED | GC_OLD)) == GC_TRACKED && ((gc & GC_PARITY) != 0) == s->parity;
    if (mine) {
        list_unlink(gc_head_of(o));
        atomic_store_explicit(&s->count, atomic_load_explicit(&s->count, memory_order_relaxed) - 1,
                              memory_order_relaxed);
        if (dead)
            /* relaxed: as the load above; the collector may read the word
             * through a stale pointer, and sees the bits either way */
            __atomic_store_n(&o->gc, gc & ~LOC_MASK, __ATOMIC_RELAXED);
        else
            gc_bits_set(o, LOC_MASK, 0);
    }
    spin_unlock(&s->lock);
    return mine;
}

static inline size_t list_gen(uint32_t gc)
{
    return (gc & GC_GEN_MASK) >> GC_GEN_SHIFT;
}

/* The id of a generation-2 member (gc.h). */
static inline uint32_t id_of(uint32_t gc)
{
    return (gc & GC_STRIPE_MASK) >> GC_STRIPE_SHIFT;
}

/* gc_mutex held: unlink a collector-owned object. */
void ouro__gc_untrack_old_locked(ouro_object_t *o)
{
    /* relaxed: the location bits are ours (gc_mutex); see gc_bits_set */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    gc_head_t *h = gc_head_of(o);
    if (list_gen(gc) == 2 && ouro__gc.id_first[id_of(gc)] == h) {
        /* the first of its id: the next member takes over if it has the
         * same id (ids never decrease along the list), else none has it */
        gc_head_t *next = NEXT(h);
        ouro__gc.id_first[id_of(gc)] =
            next != &ouro__gc.gens[2] && id_of(__atomic_load_n(&gc_object_of(next)->gc, __ATOMIC_RELAXED)) == id_of(gc)
                ? next
                : NULL;
    }
    list_unlink(h);
    ouro__gc.gen_size[list_gen(gc)]--;
    gc_bits_set(o, LOC_MASK, 0);
}

void ouro__gc_drain_zombies_locked(void)
{
    struct cds_lfs_head *head = __cds_lfs_pop_all(&zombies);
    if (head == NULL)
        return;
    ouro_tsan_acquire(&zombies); /* liburcu's atomics are invisible to TSan */
    ouro_tstate_t *ts = ouro__tstate_get();
    size_t n = 0;
    for (struct cds_lfs_node *node = &head->node, *next; node; node = next) {
        next = node->next;
        zombie_t *z = caa_container_of(node, zombie_t, node);
        ouro_object_t *o = z->o;
        ouro_free(z);
        ouro__gc_untrack_old_locked(o);
        if (ts)
            ouro__defer_free(ts, ouro__object_block(o));
        n++;
    }
    /* relaxed: a statistic and a drain hint */
    atomic_fetch_sub_explicit(&ouro__gc.nzombies, n, memory_order_relaxed);
}

bool ouro__gc_untrack_dead(ouro_object_t *o)
{
    /* relaxed: a first look; untrack_young decides under the stripe lock,
     * and OLD is set only on objects that are already the collector's */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (!(gc & GC_TRACKED))
        return true;
    if (!(gc & GC_OLD) && untrack_young(o, gc, true))
        return true;
    if (ouro__gc_in_collector) {
        /* we are the collector: o's list may hold scratch words now, so
         * it is unlinked once the lists are whole again (collect_locked);
         * out of memory, collect_locked frees it at the end (free_orphans) */
        if (!ouro__hvec_push(&ouro__gc.dying, gc_head_of(o))) {
            __atomic_fetch_or(&o->gc, GC_ORPHAN, __ATOMIC_RELAXED); /* relaxed: read by this thread */
            ouro__gc.orphans++;
        }
        return false;
    }
    /* the collector owns its list: leave it a zombie */
    zombie_t *z = ouro_malloc(sizeof *z);
    if (z == NULL) {
        bool locked = ouro__gc_lock(); /* from a callback: the lists are at rest */
        ouro__gc_untrack_old_locked(o);
        ouro__gc_unlock(locked);
        return true;
    }
    z->o = o;
    /* cds_lfs_push is a full barrier: the collector that pops sees the dead object */
    ouro_tsan_release(&zombies);
    cds_lfs_push(&zombies, &z->node);
    size_t n = atomic_fetch_add_explicit(&ouro__gc.nzombies, 1, memory_order_relaxed) + 1;
    if (n >= ZOMBIE_DRAIN && !ouro__gc_in_collector && pthread_mutex_trylock(&ouro__gc.gc_mutex) == 0) {
        ouro__gc_drain_zombies_locked();
        pthread_mutex_unlock(&ouro__gc.gc_mutex);
    }
    return false;
}

int ouro_gc_track(ouro_object_t *o)
{
    if (o == NULL || !ouro__is_container(o)) {
        errno = EINVAL;
        return -1;
    }
    ouro_tstate_t *ts = ouro__tstate_get();
    if (ts == NULL) {
        errno = ENOMEM;
        return -1;
    }
    /* relaxed: the caller owns a reference; tracking races only with
     * itself, which the caller must not do concurrently on one object */
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED)
        return 0;
    track_young(ts, o, false);
    return 0;
}

int ouro_gc_untrack(ouro_object_t *o)
{
    if (o == NULL || !ouro__is_container(o)) {
        errno = EINVAL;
        return -1;
    }
    /* relaxed: as in ouro__gc_untrack_dead; the caller holds a reference */
    uint32_t gc = __atomic_load_n(&o->gc, __ATOMIC_RELAXED);
    if (!(gc & GC_TRACKED))
        return 0;
    if (!(gc & GC_OLD) && untrack_young(o, gc, false))
        return 0;
    if (ouro__gc_in_collector) {
        errno = EDEADLK; /* from a finalizer: the lists are in use */
        return -1;
    }
    bool locked = ouro__gc_lock();
    if (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED)
        ouro__gc_untrack_old_locked(o);
    ouro__gc_unlock(locked);
    return 0;
}

int ouro_gc_is_tracked(const ouro_object_t *o)
{
    /* relaxed: a snapshot for the caller, who holds a reference */
    return o && ouro__is_container(o) && (__atomic_load_n(&o->gc, __ATOMIC_RELAXED) & GC_TRACKED) != 0;
}

/* ================================================================== */
/* the hand-over of generation 0 to a collection                       */
/* ================================================================== */
/* Take the current young lists of every stripe onto `to`; bit s of
 * *parity is the parity of stripe s's taken list. */
size_t ouro__gc_take_young(gc_head_t *to, uint64_t *parity)
{
    size_t n = 0;
    *parity = 0;
    for (int i = 0; i < NSTRIPES; i++) {
        stripe_t *s = &ouro__gc.stripes[i];
        spin_lock(&s->lock);
        list_splice(&s->young[s->parity], to);
        *parity |= (uint64_t)s->parity << i;
        s->parity ^= 1;
        n += (size_t)atomic_load_explicit(&s->count, memory_order_relaxed);
        atomic_store_explicit(&s->count, 0, memory_order_relaxed);
        spin_unlock(&s->lock);
    }
    return n;
}

long ouro__gc_young_count(void)
{
    long n = 0;
    for (int i = 0; i < NSTRIPES; i++)
        n += atomic_load_explicit(&ouro__gc.stripes[i].count, memory_order_relaxed);
    return n < 0 ? 0 : n;
}
