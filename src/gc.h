/*
 * gc.h — internals shared by the collector's two files: gc.c (membership,
 * the write barrier, handshakes, the collection's driver, the API) and
 * gcmark.c (steps 1-4 of a collection: count snapshots, trial deletion,
 * marking on marker threads, validation).  The protocol is at the top of
 * gc.c.
 */
#ifndef OURO_GC_H
#define OURO_GC_H

#include "object.h"

/* A growable array of list heads (the collector's own memory). */
typedef struct hvec_s {
    gc_head_t **v;
    size_t n, cap;
} hvec_t;

bool ouro__hvec_push(hvec_t *s, gc_head_t *h) ouro_hidden; /* false: out of memory */
void ouro__hvec_free(hvec_t *s) ouro_hidden;

static inline bool ouro__gc_is_dead(ouro_object_t *o)
{
    /* acquire: pairs with dealloc's seq_cst RMW (see object.c) */
    return (__atomic_load_n(&o->gc, __ATOMIC_ACQUIRE) & GC_DEAD) != 0;
}

/* Steps 1-4 over the members of list G (gc_mutex held, the barrier on):
 * append the garbage found to `garbage` (`dirty`: the barrier's GC_DIRTY
 * bit this time), calling h2() between the mark and
 * the validation, and settle() (wait until no death's barrier sequence
 * that began before is still open) when the validation met deaths.  False
 * if out of memory (then everything survives).  Leaves each member's
 * scratch word in its prefix until ouro__gc_mark_end. */
bool ouro__gc_mark(gc_head_t *G, hvec_t *garbage, uint32_t dirty, void (*h2)(void), void (*settle)(void),
                   size_t *examined, unsigned *markers) ouro_hidden;
/* Step 5's second look: drop from `garbage` what user code made reachable
 * or what a concurrent death still holds. */
void ouro__gc_revalidate(hvec_t *garbage, void (*settle)(void)) ouro_hidden;
/* The scratch words are no longer needed; release the work's memory. */
void ouro__gc_mark_end(void) ouro_hidden;

void ouro__gc_mark_fork_prepare(void) ouro_hidden;
void ouro__gc_mark_fork_parent(void) ouro_hidden;
void ouro__gc_mark_fork_child(void) ouro_hidden;

#endif /* OURO_GC_H */
