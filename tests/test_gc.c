/* test_gc.c — the cycle collector: cycles of every shape, generations,
 * freeze, finalizers that resurrect, weak references, thresholds and
 * automatic collections, callbacks, referents and referrers, the debug
 * list and parallel markers.  Mutators racing a collection: test_gcrace.c. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcnode.h"

START_TEST(self_loop_is_collected)
{
    setup();
    gnode_t *a = gnew(&t4);
    link_(a, 0, a);
    ck_assert_uint_eq(ouro_refcount(&a->ob), 2);
    ouro_decref(&a->ob);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_int_eq(ouro_gc_collect(0), 1);
    ck_assert_int_eq(atomic_load(&deaths), 1);
    ouro_barrier();
    ck_assert(!ouro_owns(a));
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(two_cycle_and_long_ring_are_collected)
{
    setup();
    gnode_t *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    enum { RING = 20000 };
    gnode_t *first = gnew(&t4), *prev = first;
    for (int i = 1; i < RING; i++) {
        gnode_t *n = gnew(&t4);
        link_(prev, 0, n);
        ouro_decref(&n->ob); /* prev's slot holds it */
        prev = n;
    }
    link_(prev, 0, first);
    ouro_decref(&first->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 2 + RING);
    ck_assert_int_eq(atomic_load(&deaths), 2 + RING);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(clique_is_collected)
{
    setup();
    enum { K = 32 };
    gnode_t *v[K];
    for (int i = 0; i < K; i++)
        v[i] = gnew(&t32);
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            link_(v[i], j, v[j]);
    for (int i = 0; i < K; i++)
        ouro_decref(&v[i]->ob);
    ck_assert_int_eq(ouro_gc_collect(2), K);
    ck_assert_int_eq(atomic_load(&deaths), K);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(cycle_hanging_off_a_live_object_survives_until_cut)
{
    setup();
    gnode_t *root = gnew(&t4), *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    link_(root, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    /* only root is counted from outside: the cycle is reachable */
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_uint_eq(ouro_refcount(&a->ob), 2);
    ck_assert_uint_eq(a->magic, MAGIC_LIVE);
    /* a live 2-cycle whose members are counted from outside also stays */
    gnode_t *c = gnew(&t4), *d = gnew(&t4);
    link_(c, 0, d);
    link_(d, 0, c);
    ouro_decref(&d->ob); /* we keep c */
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    /* cut the edge: now a and b are garbage */
    ouro_setref(&root->slot[0], NULL);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ouro_decref(&c->ob);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ouro_decref(&root->ob); /* no cycle: freed by its count */
    ck_assert_int_eq(atomic_load(&deaths), 5);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(cycles_in_older_generations_wait_for_their_collection)
{
    setup();
    gnode_t *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    /* survives a gen-0 collection: promoted to generation 1 */
    ck_assert_int_eq(ouro_gc_collect(0), 0);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 0); /* not in generation 0 any more */
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_int_eq(ouro_gc_collect(1), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);

    /* and one promoted twice is found only by a full collection */
    gnode_t *c = gnew(&t4), *d = gnew(&t4);
    link_(c, 0, d);
    link_(d, 0, c);
    ouro_gc_collect(0);
    ouro_gc_collect(1);
    ouro_decref(&c->ob);
    ouro_decref(&d->ob);
    ck_assert_int_eq(ouro_gc_collect(1), 0);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    ck_assert_uint_ge(st.gen[2].collected, 2);
    ck_assert_uint_ge(st.gen[1].collections, 3);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(cycle_across_generations_is_collected_whole)
{
    setup();
    gnode_t *old = gnew(&t4);
    ouro_gc_collect(0); /* old is in generation 1 now */
    gnode_t *young = gnew(&t4);
    link_(old, 0, young);
    link_(young, 0, old);
    ouro_decref(&old->ob);
    ouro_decref(&young->ob);
    /* generation 0 alone sees a reference from outside it (old's) */
    ck_assert_int_eq(ouro_gc_collect(0), 0);
    ck_assert_int_eq(ouro_gc_collect(1), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(frozen_objects_are_never_collected_until_unfrozen)
{
    setup();
    size_t base = ouro_gc_get_freeze_count();
    gnode_t *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    ck_assert_int_eq(ouro_gc_freeze(), 0);
    ck_assert_uint_ge(ouro_gc_get_freeze_count(), base + 2);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_int_eq(ouro_gc_unfreeze(), 0);
    ck_assert_uint_eq(ouro_gc_get_freeze_count(), 0);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    /* a frozen object that dies of its count leaves the permanent list */
    gnode_t *c = gnew(&t4);
    ouro_gc_freeze();
    ck_assert_uint_eq(ouro_gc_get_freeze_count(), 1);
    ouro_decref(&c->ob);
    ck_assert_uint_eq(ouro_gc_get_freeze_count(), 0);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(finalizers_run_once_and_may_resurrect)
{
    setup();
    /* plain finalizers: run once, then the cycle goes */
    gnode_t *a = gnew(&tfin), *b = gnew(&tfin);
    link_(a, 0, b);
    link_(b, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 2);
    ck_assert_int_eq(atomic_load(&finalized), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);

    /* a resurrecting finalizer: the object and what it reaches survive */
    atomic_store(&finalized, 0);
    atomic_store(&deaths, 0);
    gnode_t *r = gnew(&tres), *s = gnew(&t4);
    link_(r, 0, s);
    link_(s, 0, r);
    ouro_decref(&r->ob);
    ouro_decref(&s->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 0);
    ck_assert_int_eq(atomic_load(&finalized), 1);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_ptr_eq(resurrected, &r->ob);
    ck_assert_uint_eq(s->magic, MAGIC_LIVE);
    ck_assert_ptr_eq(ouro_load(&s->slot[0]), &r->ob);
    /* dropped again: collected, and the finalizer does not run twice */
    ouro_object_t *keep = resurrected;
    resurrected = NULL;
    ouro_decref(keep);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ck_assert_int_eq(atomic_load(&finalized), 1);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ASSERT_NO_FAILURES();
}
END_TEST

static ouro_weakref_t *fin_ref;
static _Atomic int fin_saw_cleared, cb_calls;
static void g_finalize_checks_weakref(ouro_object_t *self)
{
    (void)self;
    atomic_fetch_add(&finalized, 1);
    ouro_object_t *o = ouro_weakref_get(fin_ref);
    atomic_store(&fin_saw_cleared, o == NULL);
    ouro_xdecref(o);
}
static void weak_cb(ouro_weakref_t *ref, void *arg)
{
    (void)ref;
    (void)arg;
    atomic_fetch_add(&cb_calls, 1);
}
static const ouro_type_t tweak = GTYPE("gnode-weak", 4, g_finalize_checks_weakref);

START_TEST(weak_references_are_cleared_before_finalizers)
{
    setup();
    gnode_t *a = gnew(&tweak), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    fin_ref = ouro_weakref_new(&b->ob, weak_cb, NULL);
    ck_assert_ptr_nonnull(fin_ref);
    ouro_object_t *got = ouro_weakref_get(fin_ref);
    ck_assert_ptr_eq(got, &b->ob);
    ouro_decref(got);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 2);
    ck_assert_int_eq(atomic_load(&finalized), 1);
    ck_assert_int_eq(atomic_load(&fin_saw_cleared), 1);
    ck_assert_int_eq(atomic_load(&cb_calls), 1);
    ck_assert_ptr_null(ouro_weakref_get(fin_ref));
    ouro_weakref_free(fin_ref);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(objects_without_clear_are_uncollectable)
{
    setup();
    gnode_t *a = gnew(&tnoclear), *b = gnew(&tnoclear);
    link_(a, 0, b);
    link_(b, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ouro_gc_stats_t s0, s1;
    ouro_gc_get_stats(&s0);
    ck_assert_int_eq(ouro_gc_collect(2), 2); /* found ... */
    ouro_gc_get_stats(&s1);
    ck_assert_uint_eq(s1.gen[2].uncollectable, s0.gen[2].uncollectable + 2); /* ... but not freed */
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ck_assert_uint_eq(a->magic, MAGIC_LIVE);
    /* break it by hand and it goes */
    ouro_incref(&a->ob);
    ouro_setref(&a->slot[0], NULL);
    ouro_decref(&a->ob);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(untracked_objects_are_not_collected)
{
    setup();
    gnode_t *a = gnew(&t4);
    ck_assert(ouro_gc_is_tracked(&a->ob));
    link_(a, 0, a);
    ck_assert_int_eq(ouro_gc_untrack(&a->ob), 0);
    ck_assert(!ouro_gc_is_tracked(&a->ob));
    ouro_decref(&a->ob);
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    ck_assert_int_eq(ouro_gc_track(&a->ob), 0);
    ck_assert(ouro_gc_is_tracked(&a->ob));
    ck_assert_int_eq(ouro_gc_collect(2), 1);
    ck_assert_int_eq(atomic_load(&deaths), 1);
    /* untrack an old object, then free it by its count */
    gnode_t *b = gnew(&t4);
    ouro_gc_collect(1);
    ck_assert_int_eq(ouro_gc_untrack(&b->ob), 0);
    ouro_decref(&b->ob);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    /* not containers */
    static const ouro_type_t leaf = {.name = "leaf", .basic_size = 48};
    ouro_object_t *l = ouro_new(&leaf);
    ck_assert(!ouro_gc_is_tracked(l));
    errno = 0;
    ck_assert_int_eq(ouro_gc_track(l), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_gc_untrack(l), -1);
    ouro_decref(l);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(api_rejects_bad_arguments_and_reports_settings)
{
    setup();
    errno = 0;
    ck_assert_int_eq(ouro_gc_collect(3), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ouro_gc_collect(-1), -1);
    ck_assert_int_eq(ouro_gc_set_threshold(-1, 1, 1), -1);
    ck_assert_int_eq(ouro_gc_set_threshold(100, 5, 2), 0);
    long t[3];
    ouro_gc_get_threshold(t);
    ck_assert(t[0] == 100 && t[1] == 5 && t[2] == 2);
    ouro_gc_enable();
    ck_assert(ouro_gc_is_enabled());
    ouro_gc_disable();
    ck_assert(!ouro_gc_is_enabled());
    ck_assert_int_eq(ouro_gc_set_markers(OURO_GC_MAX_MARKERS + 1), -1);
    ck_assert_int_eq(ouro_gc_set_markers(3), 0);
    ck_assert_int_eq(ouro_gc_get_markers(), 3);
    ck_assert_int_eq(ouro_gc_get_referrers(NULL, NULL, NULL), -1);
    ck_assert_int_eq(ouro_gc_callback_add(NULL, NULL), -1);
    ck_assert_int_eq(ouro_gc_callback_remove((ouro_gc_callback *)setup, NULL), -1);
    ck_assert_int_eq(errno, ENOENT);
    /* read sections: a collection would wait for a grace period in it */
    ouro_read_begin();
    ck_assert_int_eq(ouro_gc_collect(0), -1);
    ck_assert_int_eq(errno, EBUSY);
    ouro_read_end();
    /* counts: generation 0 counts tracked allocations minus deallocations */
    ouro_gc_collect(2);
    long c0[3], c1[3];
    ouro_gc_get_count(c0);
    ck_assert_int_eq(c0[0], 0);
    gnode_t *v[10];
    for (int i = 0; i < 10; i++)
        v[i] = gnew(&t4);
    ouro_gc_get_count(c1);
    ck_assert_int_eq(c1[0], 10);
    for (int i = 0; i < 4; i++)
        ouro_decref(&v[i]->ob);
    ouro_gc_get_count(c1);
    ck_assert_int_eq(c1[0], 6);
    ouro_gc_collect(0);
    ouro_gc_get_count(c1);
    ck_assert_int_eq(c1[0], 0);
    ck_assert_int_eq(c1[1], 1); /* one gen-0 collection since the last gen-1 one */
    for (int i = 4; i < 10; i++)
        ouro_decref(&v[i]->ob);
    ASSERT_NO_FAILURES();
}
END_TEST

static _Atomic int cb_start, cb_stop;
static _Atomic long cb_collected;
static void gc_cb(int phase, int gen, size_t collected, size_t uncollectable, void *arg)
{
    (void)uncollectable;
    ck_assert_ptr_eq(arg, (void *)&cb_start);
    if (phase == OURO_GC_START) {
        atomic_fetch_add(&cb_start, 1);
    } else {
        atomic_fetch_add(&cb_stop, 1);
        if (gen == 1)
            atomic_store(&cb_collected, (long)collected);
    }
    /* the collector's API from a callback: answers, never deadlocks */
    ck_assert_int_eq(ouro_gc_collect(2), 0);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    ck_assert_uint_ge(st.gen[gen].collections, phase == OURO_GC_STOP ? 1 : 0);
    ck_assert_uint_eq(ouro_gc_get_freeze_count(), 0);
    ck_assert_uint_eq(ouro_gc_garbage(NULL, 0), 0);
    ouro_gc_garbage_clear();
    ck_assert_int_eq(ouro_gc_unfreeze(), 0);
}

START_TEST(callbacks_see_each_collection)
{
    setup();
    ck_assert_int_eq(ouro_gc_callback_add(gc_cb, &cb_start), 0);
    gnode_t *a = gnew(&t4);
    link_(a, 0, a);
    ouro_decref(&a->ob);
    ck_assert_int_eq(ouro_gc_collect(1), 1);
    ck_assert_int_eq(atomic_load(&cb_start), 1);
    ck_assert_int_eq(atomic_load(&cb_stop), 1);
    ck_assert_int_eq(atomic_load(&cb_collected), 1);
    ck_assert_int_eq(ouro_gc_callback_remove(gc_cb, &cb_start), 0);
    ouro_gc_collect(0);
    ck_assert_int_eq(atomic_load(&cb_start), 1);
    ASSERT_NO_FAILURES();
}
END_TEST

/* ouro_stats_print and its JSON carry the collector's figures. */
START_TEST(statistics_print_the_collector)
{
    setup();
    gnode_t *a = gnew(&t4);
    link_(a, 0, a);
    ouro_decref(&a->ob);
    ck_assert_int_eq(ouro_gc_collect(2), 1);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    char *buf = NULL, want[128];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ouro_stats_print_json(f);
    fclose(f);
    ck_assert_int_eq(buf[len - 2], '}');
    snprintf(want, sizeof want, "{\"collections\":%zu,\"collected\":%zu,", st.gen[2].collections,
             st.gen[2].collected);
    ck_assert_msg(strstr(buf, "\"gc\":{") && strstr(buf, want), "no %s in %s", want, buf);
    snprintf(want, sizeof want, "\"last_phase_ns\":{\"h1\":%llu,", (unsigned long long)st.last_phase_ns[0]);
    ck_assert_msg(strstr(buf, want), "no %s in %s", want, buf);
    free(buf);
    /* the steps partition the collection's time, and one that found
     * garbage listed, marked and finished */
    uint64_t sum = 0;
    for (int p = 0; p < OURO_GC_NPHASES; p++)
        sum += st.last_phase_ns[p];
    ck_assert_uint_eq(sum, st.last_ns);
    ck_assert_uint_gt(st.last_phase_ns[OURO_GC_PHASE_WALK], 0);
    ck_assert_uint_gt(st.last_phase_ns[OURO_GC_PHASE_FINISH], 0);
    f = open_memstream(&buf, &len);
    ouro_stats_print(f);
    fclose(f);
    snprintf(want, sizeof want, "generation 2: %zu collections, %zu collected", st.gen[2].collections,
             st.gen[2].collected);
    ck_assert_msg(strstr(buf, want), "no '%s' in %s", want, buf);
    ck_assert_msg(strstr(buf, "last collection by step (ms): h1 "), "no steps in %s", buf);
    free(buf);
    /* each generation's count and threshold (gc.get_count(), get_threshold()) */
    ck_assert_int_eq(ouro_gc_set_threshold(321, 9, 8), 0);
    gnode_t *b = gnew(&t4); /* tracked: generation 0 counts it */
    long count[3];
    ouro_gc_get_count(count);
    ck_assert_int_ge(count[0], 1);
    f = open_memstream(&buf, &len);
    ouro_stats_print(f);
    fclose(f);
    snprintf(want, sizeof want, "uncollectable; count %ld of threshold 321\n", count[0]);
    ck_assert_msg(strstr(buf, want), "no '%s' in %s", want, buf);
    snprintf(want, sizeof want, "uncollectable; count %ld of threshold 8\n", count[2]);
    ck_assert_msg(strstr(buf, want), "no '%s' in %s", want, buf);
    free(buf);
    f = open_memstream(&buf, &len);
    ouro_stats_print_json(f);
    fclose(f);
    snprintf(want, sizeof want, "\"count\":%ld,\"threshold\":321}", count[0]);
    ck_assert_msg(strstr(buf, want), "no %s in %s", want, buf);
    free(buf);
    ouro_decref(&b->ob);
    ouro_gc_set_threshold(700, 10, 10);
    ASSERT_NO_FAILURES();
}
END_TEST

static int collect_ptr(ouro_object_t *o, void *arg)
{
    ouro_object_t **out = arg;
    for (int i = 0; i < 8; i++)
        if (out[i] == NULL) {
            out[i] = o;
            break;
        }
    return 0;
}

START_TEST(referents_and_referrers)
{
    setup();
    gnode_t *a = gnew(&t4), *b = gnew(&t4), *c = gnew(&t4);
    link_(a, 0, b);
    link_(a, 1, c);
    link_(c, 0, b);
    ouro_object_t *got[8] = {0};
    ck_assert_int_eq(ouro_gc_get_referents(&a->ob, collect_ptr, got), 0);
    ck_assert_ptr_eq(got[0], &b->ob);
    ck_assert_ptr_eq(got[1], &c->ob);
    ck_assert_ptr_null(got[2]);
    ouro_gc_collect(0); /* a, b, c old now: referrers looks everywhere */
    gnode_t *d = gnew(&t4);
    link_(d, 0, b);
    memset(got, 0, sizeof got);
    ck_assert_int_eq(ouro_gc_get_referrers(&b->ob, collect_ptr, got), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++)
        seen |= (got[i] == &a->ob) | (got[i] == &c->ob) << 1 | (got[i] == &d->ob) << 2;
    ck_assert_int_eq(seen, 7);
    ck_assert_int_eq(ouro_gc_get_referrers(&a->ob, NULL, NULL), 0);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ouro_decref(&c->ob);
    ouro_decref(&d->ob);
    ck_assert_int_eq(atomic_load(&deaths), 4);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(debug_saveall_keeps_garbage_for_inspection)
{
    setup();
    ouro_gc_set_debug(OURO_GC_DEBUG_SAVEALL);
    gnode_t *a = gnew(&t4), *b = gnew(&t4);
    link_(a, 0, b);
    link_(b, 0, a);
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    ck_assert_int_eq(ouro_gc_collect(0), 2);
    ck_assert_int_eq(atomic_load(&deaths), 0);
    ouro_object_t *g[4] = {0};
    ck_assert_uint_eq(ouro_gc_garbage(g, 4), 2);
    ck_assert((g[0] == &a->ob && g[1] == &b->ob) || (g[0] == &b->ob && g[1] == &a->ob));
    ck_assert_uint_eq(a->magic, MAGIC_LIVE);
    ouro_gc_set_debug(0);
    ouro_gc_garbage_clear();
    ck_assert_uint_eq(ouro_gc_garbage(g, 4), 0);
    ck_assert_int_eq(ouro_gc_collect(2), 2);
    ck_assert_int_eq(atomic_load(&deaths), 2);
    ASSERT_NO_FAILURES();
}
END_TEST

START_TEST(automatic_collections_follow_the_threshold)
{
    setup();
    ouro_gc_set_threshold(200, 10, 10);
    ouro_gc_enable();
    ouro_gc_stats_t s0, s1;
    ouro_gc_get_stats(&s0);
    enum { CYCLES = 3000 };
    for (int i = 0; i < CYCLES; i++) {
        garbage_2_cycle();
    }
    /* the background collector catches up */
    double t0 = tu_now_s();
    while (atomic_load(&deaths) < 2 * CYCLES - 400 && tu_now_s() - t0 < 30) {
        ouro_quiescent();
        tu_sleep_us(1000);
    }
    ouro_gc_get_stats(&s1);
    ouro_gc_disable();
    ck_assert_msg(atomic_load(&deaths) >= 2 * CYCLES - 400,
                  "only %ld of %d freed (collections %zu/%zu/%zu, young %zu, gen1 %zu, gen2 %zu, zombies %zu)",
                  atomic_load(&deaths), 2 * CYCLES, s1.gen[0].collections - s0.gen[0].collections,
                  s1.gen[1].collections - s0.gen[1].collections, s1.gen[2].collections - s0.gen[2].collections,
                  s1.young, s1.objects[1], s1.objects[2], s1.zombies);
    ck_assert_uint_gt(s1.gen[0].collections + s1.gen[1].collections, s0.gen[0].collections + s0.gen[1].collections);
    /* every unreachable cycle goes within two full collections (a cycle
     * shaded during the collection before last may still carry this
     * collection's dirty bit: object.h); garbage the background thread
     * released was queued to us, its owner (biased counting): we free it
     * at our next quiescent state */
    ouro_gc_collect(2);
    ouro_gc_collect(2);
    ouro_quiescent();
    ck_assert_int_eq(atomic_load(&deaths), 2 * CYCLES);
    ASSERT_NO_FAILURES();
}
END_TEST

/* A thread making cyclic garbage as fast as it can does not outrun the
 * background collector: past 64 thresholds (at least 65536 objects) in
 * generation 0 it waits for the round in progress (backpressure), so
 * generation 0 stays bounded instead of growing with the garbage made
 * (without it: millions here). */
/* Backpressure: a thread that makes containers faster than the background
 * collector frees them waits, past 64 thresholds and 16384 objects in
 * generation 0, for the round in progress, so generation 0 stays bounded.
 * Here every background collection lags on purpose: its start callback
 * waits until generation 0 is past that bound (without backpressure
 * nothing would wait, and generation 0 would grow with the garbage). */
enum { PRESSURE_BOUND = 16384 };
static void lagging_collection(int phase, int generation, size_t collected, size_t uncollectable, void *arg)
{
    (void)generation, (void)collected, (void)uncollectable;
    if (phase != OURO_GC_START || pthread_self() == *(pthread_t *)arg)
        return;
    double t0 = tu_now_s();
    long c[3];
    do {
        tu_sleep_us(200);
        ouro_gc_get_count(c);
    } while (c[0] <= PRESSURE_BOUND && tu_now_s() - t0 < 2);
}

START_TEST(backpressure_bounds_generation_0)
{
    setup();
    pthread_t self = pthread_self();
    ck_assert_int_eq(ouro_gc_callback_add(lagging_collection, &self), 0);
    ouro_gc_set_threshold(100, 10, 10);
    ouro_gc_enable();
    ouro_gc_stats_t s0, s1;
    ouro_gc_get_stats(&s0);
    long pairs = (long)tu_scale(100000, 50000), max_young = 0;
    for (long i = 0; i < pairs; i++) {
        garbage_2_cycle();
        if ((i & 63) == 0) {
            long c[3];
            ouro_gc_get_count(c);
            if (c[0] > max_young)
                max_young = c[0];
        }
    }
    ouro_gc_get_stats(&s1);
    ouro_gc_disable();
    ck_assert_int_eq(ouro_gc_callback_remove(lagging_collection, &self), 0);
    size_t waits = s1.pressure_waits - s0.pressure_waits;
    ck_assert_msg(max_young < 3 * PRESSURE_BOUND && waits > 0,
                  "generation 0 grew to %ld objects of %ld made (%zu backpressure waits, %zu collections)", max_young,
                  2 * pairs, waits, s1.gen[0].collections - s0.gen[0].collections);
    ouro_gc_collect(2);
    ouro_gc_collect(2);
    ouro_quiescent();
    ASSERT_NO_FAILURES();
}
END_TEST

/* Many small 2-cycles, half of them garbage: the same answer with 1 and 2
 * markers (2 markers take the parallel path). */
static long build_and_collect(int markers, int pairs)
{
    ouro_gc_set_markers(markers);
    gnode_t **keep = malloc(sizeof *keep * (size_t)pairs);
    for (int i = 0; i < pairs; i++) {
        gnode_t *a = gnew(&t4), *b = gnew(&t4);
        link_(a, 0, b);
        link_(b, 0, a);
        /* plus a chain of 3 hanging off each pair, for the mark to follow */
        gnode_t *c = gnew(&t4);
        link_(b, 1, c);
        ouro_decref(&c->ob);
        ouro_decref(&b->ob);
        keep[i] = a;
    }
    for (int i = 0; i < pairs; i += 2)
        ouro_decref(&keep[i]->ob);
    long found = ouro_gc_collect(2);
    for (int i = 1; i < pairs; i += 2) {
        ck_assert_uint_eq(keep[i]->magic, MAGIC_LIVE);
        ouro_decref(&keep[i]->ob);
    }
    free(keep);
    ouro_gc_collect(2);
    return found;
}

START_TEST(parallel_markers_find_the_same_garbage)
{
    setup();
    int pairs = (int)tu_scale(40000, 10000);
    long one = build_and_collect(1, pairs);
    long two = build_and_collect(2, pairs);
    long four = build_and_collect(4, pairs);
    ck_assert_int_eq(one, 3L * pairs / 2);
    ck_assert_int_eq(two, one);
    ck_assert_int_eq(four, one);
    ck_assert_uint_eq(atomic_load(&deaths), 3L * 3 * pairs);
    ASSERT_NO_FAILURES();
}
END_TEST

/* A random graph whose edges go anywhere in the list order (forward
 * references exercise the fused walk's pending counts with one marker,
 * references between slices the buffered counts with several), a few nodes
 * held as roots: every marker count finds exactly the garbage that a
 * search from the roots says is unreachable, and no reachable node dies. */
static long random_graph_collect(int markers, int n, uint64_t seed, bool old, long *expect)
{
    ouro_gc_set_markers(markers);
    tu_rng_t rng = tu_rng_make(seed);
    gnode_t **node = malloc(sizeof *node * (size_t)n);
    int *edge = malloc(sizeof *edge * (size_t)n * 4);
    bool *root = calloc((size_t)n, 1), *seen = calloc((size_t)n, 1);
    int *stack = malloc(sizeof *stack * (size_t)n);
    ck_assert(node && edge && root && seen && stack);
    /* groups of about 50 nodes scattered over the list (so their edges
     * cross the markers' slices), edges mostly inside the group (cycles),
     * a few to any node, a root in one group of 16 */
    int ngroups = n / 50 + 1;
    int *group = malloc(sizeof *group * (size_t)n), *first = calloc((size_t)ngroups + 1, sizeof *first);
    int *member = malloc(sizeof *member * (size_t)n);
    ck_assert(group && first && member);
    for (int i = 0; i < n; i++) {
        node[i] = gnew(&t4);
        group[i] = (int)tu_rng_range(&rng, 0, (uint64_t)ngroups - 1);
        first[group[i] + 1]++;
    }
    for (int g = 0; g < ngroups; g++)
        first[g + 1] += first[g];
    int *fill = calloc((size_t)ngroups, sizeof *fill);
    ck_assert(fill);
    for (int i = 0; i < n; i++)
        member[first[group[i]] + fill[group[i]]++] = i;
    for (int i = 0; i < n; i++) {
        int g = group[i], size = first[g + 1] - first[g];
        for (int k = 0; k < 4; k++) {
            int j = -1;
            if (tu_rng_chance(&rng, 1))
                j = (int)tu_rng_range(&rng, 0, (uint64_t)n - 1);
            else if (tu_rng_chance(&rng, 60))
                j = member[first[g] + (int)tu_rng_range(&rng, 0, (uint64_t)size - 1)];
            edge[i * 4 + k] = j;
            if (j >= 0)
                link_(node[i], k, node[j]);
        }
    }
    for (int i = 0; i < n; i++)
        root[i] = group[i] % 16 == 0 && member[first[group[i]]] == i;
    if (old) {
        /* all held: it survives into generation 2, its ids spread by
         * position; through the permanent generation and back (the last
         * id for all, one segment); then a full collection spreads them
         * again and the next walks generation 2 in segments, one per
         * marker.  -1 would be a member met outside its segment. */
        ck_assert_int_ge(ouro_gc_collect(2), 0);
        ck_assert_int_eq(ouro_gc_freeze(), 0);
        ck_assert_int_eq(ouro_gc_unfreeze(), 0);
        ck_assert_int_ge(ouro_gc_collect(2), 0);
        ck_assert_int_ge(ouro_gc_collect(2), 0);
    }
    free(group);
    free(first);
    free(member);
    free(fill);
    /* the oracle: what the roots reach */
    int sp = 0;
    long reached = 0;
    for (int i = 0; i < n; i++)
        if (root[i] && !seen[i]) {
            seen[i] = true;
            stack[sp++] = i;
        }
    while (sp) {
        int i = stack[--sp];
        reached++;
        for (int k = 0; k < 4; k++) {
            int j = edge[i * 4 + k];
            if (j >= 0 && !seen[j]) {
                seen[j] = true;
                stack[sp++] = j;
            }
        }
    }
    long died = atomic_load(&deaths);
    for (int i = 0; i < n; i++)
        if (!root[i])
            ouro_decref(&node[i]->ob);
    /* unreachable nodes that no cycle holds die now, by their counts; the
     * collector must find exactly the rest */
    *expect = n - reached - (atomic_load(&deaths) - died);
    long found = ouro_gc_collect(2);
    for (int i = 0; i < n; i++)
        if (seen[i])
            ck_assert_msg(node[i]->magic == MAGIC_LIVE, "node %d reachable from a root died", i);
    for (int i = 0; i < n; i++)
        if (root[i])
            ouro_decref(&node[i]->ob);
    ouro_gc_collect(2);
    free(node);
    free(edge);
    free(root);
    free(seen);
    free(stack);
    return found;
}

START_TEST(random_graphs_same_garbage_with_any_marker_count)
{
    setup();
    int n = (int)tu_scale(60000, 20000);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        int counts[] = {1, 2, 4};
        for (int c = 0; c < 3; c++) {
            long expect = -1;
            long found = random_graph_collect(counts[c], n, seed, false, &expect);
            if (getenv("OURO_TEST_VERBOSE"))
                fprintf(stderr, "seed %lu markers %d found %ld expect %ld\n", (unsigned long)seed, counts[c], found, expect);
            ck_assert_msg(found == expect, "seed %lu, %d markers: found %ld garbage, the oracle says %ld",
                          (unsigned long)seed, counts[c], found, expect);
        }
    }
    ASSERT_NO_FAILURES();
}
END_TEST

/* The same graphs in generation 2, collected with segmented walks: each
 * marker walks the members of its group of ids (gc.h) and counts the
 * references into other segments for their markers.  The nodes that die
 * by their counts before the collection unlink from generation 2, moving
 * the first member of their id on. */
START_TEST(old_random_graphs_walked_in_segments)
{
    setup();
    int n = (int)tu_scale(60000, 20000);
    for (uint64_t seed = 1; seed <= 2; seed++) {
        int counts[] = {2, 4};
        for (int c = 0; c < 2; c++) {
            long expect = -1;
            long found = random_graph_collect(counts[c], n, seed, true, &expect);
            ck_assert_msg(found == expect, "seed %lu, %d markers: found %ld garbage, the oracle says %ld",
                          (unsigned long)seed, counts[c], found, expect);
        }
    }
    ASSERT_NO_FAILURES();
}
END_TEST

/* A full collection with several markers meets generation 2 (walked in
 * segments by id) and, after it in G, the young members: the last segment
 * holds those.  Cycles through both, live ones (the young node held by
 * us) and garbage ones; an old member's place in the last collection's order
 * moves as others die (the walk's prefetch follows that order). */
START_TEST(full_collection_walks_young_members_in_the_last_segment)
{
    setup();
    int n = (int)tu_scale(40000, 20000);
    for (int markers = 2; markers <= 4; markers += 2) {
        ouro_gc_set_markers(markers);
        gnode_t **old = malloc(sizeof *old * (size_t)n), **young = calloc((size_t)n, sizeof *young);
        ck_assert_ptr_nonnull(old);
        ck_assert_ptr_nonnull(young);
        for (int i = 0; i < n; i++)
            old[i] = gnew(&t4);
        /* generation 2, ids spread by position: the next walk is in segments */
        ck_assert_int_eq(ouro_gc_collect(2), 0);
        ck_assert_int_eq(ouro_gc_collect(2), 0);
        /* churn: some die, new ones join at the end (the last id), and the
         * members keep their ids until the segments come out unequal */
        for (int round = 0; round < 12; round++) {
            for (int i = round; i < n; i += 50) {
                ouro_decref(&old[i]->ob);
                old[i] = gnew(&t4);
            }
            ck_assert_int_eq(ouro_gc_collect(2), 0);
        }
        /* a few die (holes in the last order), then young nodes: every
         * third old node in a cycle with a young one that nothing else
         * holds (garbage), every third in one with a young one we hold */
        for (int i = 5; i < n; i += 97) {
            ouro_decref(&old[i]->ob);
            old[i] = NULL;
        }
        long expect = 0;
        for (int i = 0; i < n; i++) {
            if (old[i] == NULL)
                continue;
            if (i % 3 == 0) {
                gnode_t *y = gnew(&t4);
                link_(y, 0, old[i]);
                link_(old[i], 0, y);
                ouro_decref(&y->ob);
                ouro_decref(&old[i]->ob);
                expect += 2;
            } else if (i % 3 == 1) {
                gnode_t *y = young[i] = gnew(&t4);
                link_(y, 0, old[i]);
                link_(old[i], 0, y);
                ouro_decref(&old[i]->ob);
            }
        }
        long found = ouro_gc_collect(2);
        ck_assert_msg(found == expect, "%d markers: found %ld garbage, expected %ld", markers, found, expect);
        for (int i = 0; i < n; i++)
            if (old[i] && i % 3 == 1)
                ck_assert_msg(old[i]->magic == MAGIC_LIVE, "live node %d died", i);
        for (int i = 0; i < n; i++) {
            if (young[i])
                ouro_decref(&young[i]->ob);
            if (old[i] && i % 3 == 2)
                ouro_decref(&old[i]->ob);
        }
        ouro_gc_collect(2);
        free(old);
        free(young);
    }
    ASSERT_NO_FAILURES();
}
END_TEST

/* By default a collection uses only the cores that no other thread is
 * running on (and its own): with a thread spinning on every core, one
 * marker; a marker sharing a core with a running mutator would take its
 * time slices.  A number set (ouro_gc_set_markers, OURO_GC_MARKERS) is
 * used as set. */
static atomic_bool spin_stop;
static atomic_int spinning;
static void *spinner(void *arg)
{
    (void)arg;
    atomic_fetch_add(&spinning, 1);
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        ;
    return NULL;
}

START_TEST(default_markers_leave_running_threads_their_cores)
{
    setup();
    int n = 4 * 8192;
    gnode_t **v = malloc(sizeof *v * (size_t)n);
    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < n; i++)
        v[i] = gnew(&t4);
    ouro_gc_set_markers(2);
    ouro_gc_collect(2);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    ck_assert_uint_eq(st.last_markers, 2); /* as set, whatever runs */
    ouro_gc_set_markers(0);
    int cores = ouro_gc_get_markers();
    if (ouro_option_get(OURO_OPTION_GC_MARKERS) <= 0 && cores > 1) {
        enum { MAXSPIN = 64 };
        pthread_t t[MAXSPIN];
        int k = cores < MAXSPIN ? cores : MAXSPIN;
        atomic_store(&spin_stop, false);
        atomic_store(&spinning, 0);
        for (int i = 0; i < k; i++)
            ck_assert_int_eq(pthread_create(&t[i], NULL, spinner, NULL), 0);
        while (atomic_load(&spinning) < k)
            sched_yield();
        ouro_gc_collect(2);
        ouro_gc_get_stats(&st);
        atomic_store(&spin_stop, true);
        for (int i = 0; i < k; i++)
            pthread_join(t[i], NULL);
        ck_assert_msg(st.last_markers == 1, "%u markers beside %d running threads on %d cores", st.last_markers, k,
                      cores);
    }
    for (int i = 0; i < n; i++)
        ouro_decref(&v[i]->ob);
    free(v);
    ASSERT_NO_FAILURES();
}
END_TEST

/* Garbage whose last outside reference another thread dropped: that
 * decref queued it to us, its owner (biased counts), to die at our next
 * quiescent state.  The collection merges our queue after clearing its
 * garbage, so it dies within the collection, as the rest, and is not
 * left alive with a count of zero when the callbacks run (found by the
 * API fuzzer). */
static void *drop_ref(void *arg)
{
    ouro_decref(arg);
    return NULL;
}

START_TEST(garbage_queued_to_the_collector_dies_in_the_collection)
{
    setup();
    gnode_t *a = gnew(&t4);
    link_(a, 0, a);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, drop_ref, &a->ob), 0);
    pthread_join(t, NULL);
    long d0 = atomic_load(&deaths);
    ck_assert_int_eq(ouro_gc_collect(0), 1);
    long died = atomic_load(&deaths) - d0;
    ck_assert_int_eq(died, 1);
    ASSERT_NO_FAILURES();
}
END_TEST

/* Out of memory while containers die on the collector's thread: those
 * it cannot record (the array of deaths cannot grow) are freed at the end
 * of that collection all the same, old ones outside G included; none is
 * left dead on a generation's list. */
static void arm_map_faults(ouro_object_t *self)
{
    (void)self;
    /* the next 1000 requests to the OS fail: the collector's array of
     * deaths cannot grow past 128 KiB (16384 deaths) meanwhile */
    ouro_test_fail_maps(0, 1000);
}
static const ouro_type_t tarm = GTYPE("gnode-arm-faults", 4, arm_map_faults);

START_TEST(deaths_on_the_collector_thread_out_of_memory_are_freed)
{
    setup();
    ouro_gc_collect(2);
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    size_t base = st.last_objects; /* what other tests left alive */
    enum { VICTIMS = 40000, PER = 31 };
    /* victims: old (generation 2), each held only by a garbage node */
    gnode_t **v = malloc(sizeof *v * VICTIMS);
    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < VICTIMS; i++)
        v[i] = gnew(&t4);
    ouro_gc_collect(2);
    long holders = 0;
    for (int i = 0; i < VICTIMS; i += PER) {
        gnode_t *g = gnew(&t32);
        link_(g, PER, g); /* garbage: a self-loop */
        for (int k = 0; k < PER && i + k < VICTIMS; k++)
            link_(g, k, v[i + k]);
        ouro_decref(&g->ob);
        holders++;
    }
    gnode_t *arm = gnew(&tarm);
    link_(arm, 0, arm);
    ouro_decref(&arm->ob);
    for (int i = 0; i < VICTIMS; i++)
        ouro_decref(&v[i]->ob);
    free(v);
    long died = atomic_load(&deaths);
    /* generation 0 only: the victims are old, outside G */
    long found = ouro_gc_collect(0);
    ouro_test_fail_maps(0, 0);
    ck_assert_int_eq(found, holders + 1);
    ck_assert_int_eq(atomic_load(&deaths) - died, holders + 1 + VICTIMS);
    ouro_gc_collect(2);
    ouro_gc_get_stats(&st);
    ck_assert_msg(st.last_objects == base, "%zu dead containers left on the lists", st.last_objects - base);
    ouro_barrier();
    ASSERT_NO_FAILURES();
}
END_TEST


int main(void)
{
    const TTest *const tests[] = {
        self_loop_is_collected,
        two_cycle_and_long_ring_are_collected,
        clique_is_collected,
        cycle_hanging_off_a_live_object_survives_until_cut,
        cycles_in_older_generations_wait_for_their_collection,
        cycle_across_generations_is_collected_whole,
        frozen_objects_are_never_collected_until_unfrozen,
        finalizers_run_once_and_may_resurrect,
        weak_references_are_cleared_before_finalizers,
        objects_without_clear_are_uncollectable,
        untracked_objects_are_not_collected,
        api_rejects_bad_arguments_and_reports_settings,
        callbacks_see_each_collection,
        statistics_print_the_collector,
        referents_and_referrers,
        debug_saveall_keeps_garbage_for_inspection,
        automatic_collections_follow_the_threshold,
        backpressure_bounds_generation_0,
        parallel_markers_find_the_same_garbage,
        random_graphs_same_garbage_with_any_marker_count,
        old_random_graphs_walked_in_segments,
        full_collection_walks_young_members_in_the_last_segment,
        default_markers_leave_running_threads_their_cores,
        garbage_queued_to_the_collector_dies_in_the_collection,
        deaths_on_the_collector_thread_out_of_memory_are_freed,
        NULL};
    return tu_run_case("gc", tests);
}
