/*
 * weakref.c — weak references.  A side table, striped by the referent's
 * address, lists each object's weak references; the object's GC_HAS_WEAKREFS
 * bit spares objects without any a lookup when they die.  Owns the table;
 * never touches counts except through ouro_try_incref.
 *
 * get and clear meet under the stripe's lock: a get that finds the referent
 * still set takes a reference with try_incref, which fails once the count
 * has reached zero (the referent is made readable when its first weak
 * reference is made), so no get returns a dying object.
 */
#include "object.h"

#include <errno.h>

#define STRIPES 16 /* few: fork holds them all (TSan tracks at most 64 locks) */

struct ouro_weakref_s {
    ouro_object_t *referent;       /* [stripe lock] NULL once the referent is gone */
    ouro_weakref_callback *callback;
    void *arg;
    unsigned stripe;               /* [init] */
    struct ouro_weakref_s *next;   /* [stripe lock] in the stripe's list */
    struct ouro_weakref_s *cb_next;/* [dying thread] callbacks to run */
};

static struct {
    pthread_mutex_t lock;
    ouro_weakref_t *head;
} stripes[STRIPES] = {[0 ... STRIPES - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};

_Atomic size_t ouro__weakrefs;

static unsigned stripe_of(const ouro_object_t *o)
{
    return (unsigned)(((uintptr_t)o >> 4) * 0x9e3779b1u >> 7) % STRIPES;
}

ouro_weakref_t *ouro_weakref_new(ouro_object_t *o, ouro_weakref_callback *callback, void *arg)
{
    if (o == NULL) {
        errno = EINVAL;
        return NULL;
    }
    ouro_weakref_t *r = ouro_malloc(sizeof *r);
    if (r == NULL)
        return NULL;
    ouro_share(o);
    r->referent = o;
    r->callback = callback;
    r->arg = arg;
    r->stripe = stripe_of(o);
    r->cb_next = NULL;
    pthread_mutex_lock(&stripes[r->stripe].lock);
    /* under the lock: the dying thread tests the bit after taking it */
    __atomic_fetch_or(&o->gc, GC_HAS_WEAKREFS, __ATOMIC_RELAXED);
    r->next = stripes[r->stripe].head;
    stripes[r->stripe].head = r;
    pthread_mutex_unlock(&stripes[r->stripe].lock);
    atomic_fetch_add_explicit(&ouro__weakrefs, 1, memory_order_relaxed);
    return r;
}

ouro_object_t *ouro_weakref_get(ouro_weakref_t *r)
{
    pthread_mutex_lock(&stripes[r->stripe].lock);
    ouro_object_t *o = r->referent;
    if (o && !ouro_try_incref(o))
        o = NULL;
    pthread_mutex_unlock(&stripes[r->stripe].lock);
    return o;
}

void ouro_weakref_free(ouro_weakref_t *r)
{
    pthread_mutex_lock(&stripes[r->stripe].lock);
    ouro_weakref_t **pp = &stripes[r->stripe].head;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    pthread_mutex_unlock(&stripes[r->stripe].lock);
    atomic_fetch_sub_explicit(&ouro__weakrefs, 1, memory_order_relaxed);
    ouro_free(r);
}

void ouro__weakref_fork_prepare(void)
{
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_lock(&stripes[i].lock);
}

void ouro__weakref_fork_parent(void)
{
    for (int i = STRIPES - 1; i >= 0; i--)
        pthread_mutex_unlock(&stripes[i].lock);
}

/* `o` is dying: clear its weak references, then run their callbacks. */
void ouro__weakrefs_clear(ouro_object_t *o)
{
    unsigned s = stripe_of(o);
    ouro_weakref_t *cbs = NULL;
    pthread_mutex_lock(&stripes[s].lock);
    for (ouro_weakref_t *r = stripes[s].head; r; r = r->next) {
        if (r->referent != o)
            continue;
        r->referent = NULL;
        if (r->callback) {
            r->cb_next = cbs;
            cbs = r;
        }
    }
    pthread_mutex_unlock(&stripes[s].lock);
    /* a callback may free its weak reference: read the link first */
    while (cbs) {
        ouro_weakref_t *next = cbs->cb_next;
        cbs->callback(cbs, cbs->arg);
        cbs = next;
    }
}
