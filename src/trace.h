/*
 * trace.h — what the tracer's two files share, and no one else reads:
 * trace.c records (the hooks on the allocation paths, sampling, the site
 * table, objects' records) and tracereport.c reports (snapshots, top
 * sites, differences, printing, the leak report).  The rest of the
 * library calls the tracer through internal.h's ouro__trace_* entry
 * points.
 */
#ifndef OURO_TRACE_H
#define OURO_TRACE_H

#include "internal.h"

#define ONE_WEIGHT 65536u /* 1.0 in 16.16 fixed point */
#define NBUCKETS 16384u   /* site table chains, a power of two */

/* A call site: where traced blocks were allocated from, and what is live
 * from there.  Never freed (blocks point at it for as long as they live).
 * The counters are relaxed atomics: see the top of trace.c. */
typedef struct trace_site_s {
    struct trace_site_s *_Atomic next; /* [site_lock to write] the chain of its bucket */
    uint64_t hash;                     /* [init] of the frames */
    _Atomic int64_t count, size;       /* [shared] traced blocks live from here, their bytes */
    /* [shared] what sampled blocks stand for beyond themselves: the sums of
     * (weight - 1.0) in 16.16, and of (size * weight - size); zero, and
     * never touched, when every allocation is traced */
    _Atomic int64_t extra_count, extra_size;
    uint32_t nframes;                  /* [init] */
    const void *frames[];              /* [init] return addresses, the call site first */
} trace_site_t;

/* trace.c: the site table, NBUCKETS chains (NULL until the first start),
 * walked without a lock: acquire loads of a bucket and of each `next`
 * pair with the release that published the node (site_intern) */
extern trace_site_t *_Atomic *_Atomic ouro__trace_buckets ouro_hidden;
/* trace.c: sites made so far (relaxed: sizes a snapshot's first try) */
extern _Atomic size_t ouro__trace_nsites ouro_hidden;
/* trace.c: for the leak report, uncount traced objects already dead */
void ouro__trace_uncount_dead_objects(void) ouro_hidden;

#endif /* OURO_TRACE_H */
