/*
 * fuzz_api.c — a libFuzzer harness that reads its input as a program of
 * calls to ouro's public API (include/ouro.h) and checks every result
 * against a model of what the call must do.
 *
 * Build and run: `make fuzz` (FUZZ_SECONDS=60 by default; see Makefile.am).
 * By hand, from a build directory:
 *   ./tests/fuzz/fuzz_api -max_total_time=60 corpus-copy/
 *   ./tests/fuzz/fuzz_api crash-file          (replay one input)
 *   FUZZ_API_TRACE=1 ./tests/fuzz/fuzz_api crash-file   (print each call)
 * The seeds in tests/fuzz/corpus/ are written, with names for what each
 * exercises, by tests/fuzz/make-seeds.py.
 *
 * ---- The byte format ----
 * The input is a sequence of operations.  Each is one opcode byte (taken
 * modulo 21), followed by a fixed number of operand bytes; an input that
 * ends inside an operation reads zeros for the missing bytes, so every byte
 * string is a valid program.  Operands name entries of three tables: a
 * block slot `s` (byte % 32), an object handle `h` (byte % 32; each handle
 * holds one counted reference), and a reference slot `i` (byte % 4) of a
 * container.  An operation that writes into an occupied block slot or
 * handle first frees the block or drops the reference held there.  A size
 * is two bytes, big-endian, v: its top two bits choose the range
 *   00: v & 63 (0..63)            01: v & 1023 (the small classes)
 *   10: (v & 0x3fff) * 8 (to 128 KiB)
 *   11: 128 KiB + w * w / 64 with w = v & 0x3fff (to 4.1 MiB: past a
 *       4 MiB unit, so that a realloc can outgrow a large block's mapping;
 *       squared, so that most large blocks stay small and cheap)
 *
 *   op  name     operands     what it does
 *    0  MALLOC   s szH szL    ouro_malloc
 *    1  CALLOC   s n szH szL  ouro_calloc(n % 5, size); checks the zeros
 *    2  REALLOC  s szH szL    ouro_realloc (of NULL if s is empty; size 0 frees)
 *    3  FREE     s how        how % 3: ouro_free, ouro_free_sized, ouro_free_deferred
 *    4  ALIGNED  s a szH szL  ouro_aligned_alloc(1 << (a % 24), size)
 *    5  BLOCK    s            ouro_usable_size, ouro_owns, the pattern
 *    6  BAD      k x          a call the API documents as an error (k % 14),
 *                             with its errno checked: huge sizes, calloc
 *                             overflow, bad alignments, ouro_new of bad
 *                             types, bad generations, thresholds, markers,
 *                             options, callbacks, referents, ouro_owns of
 *                             foreign and interior pointers
 *    7  NEW      h t          ouro_new of type t % 7 (4 containers, 3 plain)
 *    8  DUP      h1 h2 f      h2 = h1 with ouro_incref (f & 1: ouro_share,
 *                             then ouro_try_incref, which must succeed)
 *    9  DECREF   h            ouro_decref
 *   10  LINK     a i b f      container a's slot i = object b (NULL if b is
 *                             empty) by ouro_setref (f & 1: ouro_store and
 *                             ouro_xdecref of what it returns)
 *   11  LOAD     a i h        h = a new reference to what a's slot i holds
 *   12  TRACK    h f          f & 1: ouro_gc_untrack, else ouro_gc_track
 *   13  COLLECT  g            ouro_gc_collect(g % 5; 3 and 4 mean -1 and 3: EINVAL)
 *   14  FREEZE   f            f % 3: ouro_gc_freeze, _unfreeze, _get_freeze_count
 *   15  CHECK    h            refcount, tracking, sizeof, owns, referents,
 *                             referrers of h; the collector's statistics
 *   16  FAULT    p f          ouro_test_fail_maps(p % 8, f % 4): the next
 *                             mappings fail and every call must fail cleanly
 *                             (ignored while the second thread lives: a
 *                             decref that queues to an owner cannot fail)
 *   17  MISC     k x          k % 13: ouro_collect, quiescent, barrier,
 *                             markers, thresholds, purge option, SAVEALL,
 *                             saved garbage, lazy merging, statistics,
 *                             online/offline, a collect inside a read
 *                             section (EBUSY), a full callback table (ENOSPC)
 *   18  REMOTE   k a b c      the same calls made by a second thread (k % 10):
 *                             incref, decref, free, malloc, new, setref,
 *                             make_immortal (EPERM), exit, collect, quiesce
 *   19  SETTLE                let every thread merge what was queued to it
 *   20  WEAKREF  k h w        k % 3: w = ouro_weakref_new(h) (with a callback),
 *                             h = ouro_weakref_get(w), ouro_weakref_free(w)
 *
 * ---- The oracles ----
 * Blocks: each block is filled over its usable size (over what was asked
 * for, for large blocks; above 64 KiB both ends and a word per 16 KiB) with a
 * pattern derived from a serial number of its own, and the pattern is
 * checked before every free and realloc and on BLOCK: two blocks that
 * overlap, or a write by ouro into a live block, abort.  calloc's zeros,
 * realloc's preserved prefix, alignments and usable sizes are checked too.
 *
 * Objects: a model mirrors every object of the input: its true reference
 * count (what ouro_refcount must say), its slots, whether it is tracked and
 * in which generation.  The types' callbacks check it as ouro calls them:
 * dealloc only for an object whose model count is zero, clear and finalize
 * only for the garbage the model predicted for this collection.  A
 * collection's result must be exactly the model's count of unreachable
 * objects of the collected generations (CPython's rule: a container is
 * garbage when every reference to it comes from garbage), its STOP callback
 * must count as uncollectable exactly the garbage still alive.  At settle
 * points (after each call, unless the input asked for lazy merging) every
 * object whose count is zero must be dead: biased counting may defer a
 * free to the owner's next merge, never forget it.  At the end of each
 * input every object must be gone and the collector's lists empty.  A
 * weak reference's callback must run only for an object whose count is zero
 * or that the collector found to be garbage, and ouro_weakref_get must
 * return every object whose count is above zero.  Calls that ouro.h allows
 * from a finalizer are made from one, and their results checked.
 *
 * ---- Why the library is compiled into this binary ----
 * The harness compiles libouro's sources itself (Makefile.am passes them),
 * with the harness's flags: -fsanitize=fuzzer adds the coverage feedback to
 * ouro's code, not only to this file, and ASan and UBSan check ouro's own
 * loads and stores; linking the configured libouro.la would give neither
 * (it is built with gcc, or without the sanitizers, or with TSan).
 * Note: ouro maps its own memory, so ASan's redzones do not cover ouro's
 * blocks; the patterns above are what detect a corrupted block.
 *
 * ---- Why the harness never misuses the API ----
 * It decrefs only references its handles hold, frees only blocks its table
 * holds, touches an object only through a handle (or, at the end of an
 * input, an object the model proves alive: its count is above zero and
 * nothing else runs), and runs the automatic collector never (ouro_gc_disable),
 * so that every collection is one the input asked for and the model can
 * predict it.  The second thread runs one call at a time while this one
 * waits, so the model sees a sequential history.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"

/* ================================================================== */
/* failures                                                            */
/* ================================================================== */
static long cur_op = -1; /* index of the operation being run, for messages */
static int cur_code = -1;
static bool trace;
static FILE *devnull; /* where the statistics are printed */

#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
__attribute__((noreturn, format(printf, 2, 3))) static void fail_at(int line, const char *fmt, ...)
{
    fprintf(stderr, "fuzz_api.c:%d: operation %ld (opcode %d): ", line, cur_op, cur_code);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
#define CHECK(c, ...) ((c) ? (void)0 : FAIL(__VA_ARGS__))

__attribute__((format(printf, 1, 2))) static void tr(const char *fmt, ...)
{
    if (!trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  [%ld] ", cur_op);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ================================================================== */
/* patterns                                                            */
/* ================================================================== */
static uint64_t next_serial = 1;

/* The pattern loops run over the bytes of every block: left out of
 * libFuzzer's comparison tracing, which would make them the bulk of the
 * run time and teach the fuzzer nothing about ouro. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

NO_COVERAGE static inline uint64_t pat_word(uint64_t serial, size_t k)
{
    uint64_t x = serial * 0x9e3779b97f4a7c15ull + (uint64_t)k * 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 29);
}

/* Blocks up to PAT_DENSE bytes are patterned in full; larger ones at both
 * ends (PAT_EDGE bytes each) and one word per PAT_STEP between, which still
 * catches a misplaced or lost mapping at a bounded cost. */
#define PAT_DENSE ((size_t)64 << 10)
#define PAT_EDGE ((size_t)16 << 10)
#define PAT_STEP ((size_t)16 << 10)

/* The offset of the patterned word after the one at k (multiples of 8). */
NO_COVERAGE static inline size_t pat_next(size_t k, size_t n)
{
    k += 8;
    if (n <= PAT_DENSE || k < PAT_EDGE)
        return k;
    size_t tail = (n - PAT_EDGE) & ~(size_t)7;
    if (k >= tail)
        return k;
    size_t page = (k + PAT_STEP - 1) / PAT_STEP * PAT_STEP;
    return page < tail ? page : tail;
}

/* Pattern the words of an n-byte area that pat_next visits. */
NO_COVERAGE static void pat_fill(unsigned char *p, size_t n, uint64_t serial)
{
    for (size_t k = 0; k < n; k = pat_next(k, n)) {
        uint64_t w = pat_word(serial, k >> 3);
        memcpy(p + k, &w, n - k < 8 ? n - k : 8);
    }
}

/* Check the first `limit` bytes of an area patterned as n bytes: the
 * offset of the first byte that differs, or limit. */
NO_COVERAGE static size_t pat_check_prefix(const unsigned char *p, size_t n, size_t limit, uint64_t serial)
{
    for (size_t k = 0; k < limit; k = pat_next(k, n)) {
        uint64_t w = pat_word(serial, k >> 3);
        size_t len = limit - k < 8 ? limit - k : 8;
        if (memcmp(p + k, &w, len) != 0)
            for (size_t b = 0; b < len; b++)
                if (p[k + b] != ((const unsigned char *)&w)[b])
                    return k + b;
    }
    return limit;
}

NO_COVERAGE static size_t pat_check(const unsigned char *p, size_t n, uint64_t serial)
{
    return pat_check_prefix(p, n, n, serial);
}

/* The offset of the first non-zero byte, or n (in full up to 256 KiB;
 * above, where the memory comes straight from mmap, as the pattern). */
NO_COVERAGE static size_t zero_check(const unsigned char *p, size_t n)
{
    static const unsigned char zeros[8];
    size_t dense = (size_t)256 << 10;
    for (size_t k = 0; k < n; k = n <= dense ? k + 8 : pat_next(k, n)) {
        size_t len = n - k < 8 ? n - k : 8;
        if (memcmp(p + k, zeros, len) != 0)
            for (size_t b = 0; b < len; b++)
                if (p[k + b])
                    return k + b;
    }
    return n;
}

/* ================================================================== */
/* the input                                                           */
/* ================================================================== */
typedef struct rd_s {
    const uint8_t *d;
    size_t n, i;
} rd_t;

static uint8_t u8(rd_t *r)
{
    return r->i < r->n ? r->d[r->i++] : 0;
}

static size_t size_of(rd_t *r)
{
    unsigned hi = u8(r);
    unsigned v = hi << 8 | u8(r);
    switch (v >> 14) {
    case 0:
        return v & 63;
    case 1:
        return v & 1023;
    case 2:
        return (size_t)(v & 0x3fff) * 8;
    default:
        return ((size_t)128 << 10) + (size_t)(v & 0x3fff) * (v & 0x3fff) / 64;
    }
}

/* ================================================================== */
/* blocks                                                              */
/* ================================================================== */
#define NBLK 32
typedef struct blk_s {
    unsigned char *p; /* NULL: empty */
    size_t size;      /* asked for */
    size_t usable;    /* ouro_usable_size at allocation */
    size_t fill;      /* bytes under the pattern */
    uint64_t serial;
} blk_t;
static blk_t blk[NBLK];
/* mappings may fail (FAULT armed it): NULL from an allocation is then allowed */
static bool faults_armed;

static void faults_off(void)
{
    ouro_test_fail_maps(0, 0);
    faults_armed = false;
}

static void blk_check(int s, const char *when)
{
    blk_t *b = &blk[s];
    size_t k = pat_check(b->p, b->fill, b->serial);
    CHECK(k == b->fill, "%s: block %p (slot %d, %zu bytes asked, %zu usable) corrupt at offset %zu", when,
          (void *)b->p, s, b->size, b->usable, k);
}

/* A fresh block from any allocation call: check what the API promises of
 * it and put it under a pattern. */
static void blk_adopt(int s, void *p, size_t size, size_t align, const char *fn)
{
    CHECK(((uintptr_t)p & (align - 1)) == 0, "%s(%zu) = %p: not aligned to %zu", fn, size, p, align);
    size_t usable = ouro_usable_size(p);
    CHECK(usable >= size, "%s(%zu) = %p: usable size %zu", fn, size, p, usable);
    CHECK(ouro_owns(p), "%s(%zu) = %p: ouro_owns says no", fn, size, p);
    blk_t *b = &blk[s];
    b->p = p;
    b->size = size;
    b->usable = usable;
    /* large blocks round up to whole 4 MiB units: pattern what was asked */
    b->fill = usable <= ((size_t)256 << 10) ? usable : size;
    b->serial = next_serial++;
    pat_fill(b->p, b->fill, b->serial);
}

static void alloc_failed(void *p, const char *fn, size_t size)
{
    CHECK(p == NULL, "%s", fn);
    CHECK(errno == ENOMEM, "%s(%zu) = NULL with errno %d, not ENOMEM", fn, size, errno);
    CHECK(faults_armed, "%s(%zu) failed with no fault injected", fn, size);
}

static void worker_free(void *p);

/* how: 0 ouro_free, 1 ouro_free_sized, 2 ouro_free_deferred, 3 by the worker */
static void blk_release(int s, int how)
{
    blk_t *b = &blk[s];
    if (b->p == NULL)
        return;
    blk_check(s, "before free");
    CHECK(ouro_usable_size(b->p) == b->usable, "usable size of %p changed: %zu, was %zu", (void *)b->p,
          ouro_usable_size(b->p), b->usable);
    tr("free %p slot %d how %d", (void *)b->p, s, how);
    switch (how) {
    case 0:
        ouro_free(b->p);
        break;
    case 1:
        ouro_free_sized(b->p, b->size);
        break;
    case 2:
        ouro_free_deferred(b->p);
        break;
    default:
        worker_free(b->p);
        break;
    }
    b->p = NULL;
}

/* ================================================================== */
/* object types                                                        */
/* ================================================================== */
#define NSLOT 4
#define MAGIC_LIVE 0x6f75726fu /* "ouro" */
#define MAGIC_DEAD 0xdeadbeefu

/* Every object of the harness: containers use the slots, plain objects
 * leave them NULL.  The payload is under a pattern. */
typedef struct node_s {
    ouro_object_t ob;
    uint32_t magic;
    uint32_t idx; /* its model entry */
    uint64_t serial;
    ouro_object_t *slot[NSLOT];
    unsigned char payload[];
} node_t;

static int c_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg);
static void c_clear(ouro_object_t *self);
static void c_finalize(ouro_object_t *self);
static void n_dealloc(ouro_object_t *self);

#define NTYPES 7
static const ouro_type_t types[NTYPES] = {
    /* containers: with finalize; middle size; without clear (a cycle of
     * these is uncollectable); near the 128 KiB limit */
    {.name = "fz-fin", .basic_size = sizeof(node_t) + 8, .traverse = c_traverse, .clear = c_clear,
     .finalize = c_finalize, .dealloc = n_dealloc},
    {.name = "fz-mid", .basic_size = sizeof(node_t) + 2000, .traverse = c_traverse, .clear = c_clear,
     .dealloc = n_dealloc},
    {.name = "fz-noclear", .basic_size = sizeof(node_t) + 8, .traverse = c_traverse, .dealloc = n_dealloc},
    {.name = "fz-big", .basic_size = ((size_t)128 << 10) - 16, .traverse = c_traverse, .clear = c_clear,
     .dealloc = n_dealloc},
    /* plain objects */
    {.name = "fz-plain", .basic_size = sizeof(node_t) + 8, .dealloc = n_dealloc},
    {.name = "fz-plain-big", .basic_size = sizeof(node_t) + 5000, .dealloc = n_dealloc},
    {.name = "fz-shared", .basic_size = sizeof(node_t) + 24, .dealloc = n_dealloc,
     .flags = OURO_TYPE_SHARED_READS},
};

static bool is_container_type(const ouro_type_t *t)
{
    return t->traverse != NULL;
}

/* ================================================================== */
/* the model                                                           */
/* ================================================================== */
#define NOBJ 256
#define NHND 32
#define GEN_UNTRACKED (-1)
#define GEN_FROZEN 3

typedef struct mobj_s {
    node_t *n;
    const ouro_type_t *type;
    long rc;           /* the true count: handles, slots, the saved list */
    int slot[NSLOT];   /* model index, or -1 */
    int gen;           /* GEN_UNTRACKED, 0..2, GEN_FROZEN */
    bool dead;         /* its dealloc ran */
    bool in_m;         /* garbage the model predicts for the collection running */
    bool cleared;      /* clear ran in this collection */
    bool finalized;    /* finalize ran (ever) */
    bool worker_owned; /* created by the worker */
} mobj_t;

static mobj_t obj[NOBJ];
static int nobj;
static int hnd[NHND];                /* model index, or -1 */
static int saved[NOBJ], nsaved;      /* OURO_GC_DEBUG_SAVEALL's list, as the model has it */
static bool saveall;
static long deaths;                  /* dealloc calls, all threads */
static bool lazy;                    /* no settle after each operation */
static bool online;                  /* this thread is online (ouro_thread_online) */
static bool collecting;              /* inside a collection the model predicted */
static long cb_start, cb_stop;       /* START and STOP callbacks seen */
static int cb_gen;
static size_t cb_collected, cb_uncollectable, cb_alive_garbage;

static mobj_t *model_of(ouro_object_t *o)
{
    node_t *n = (node_t *)o;
    CHECK(n->magic == MAGIC_LIVE, "object %p: magic %#x, not a live object", (void *)o, n->magic);
    CHECK(n->idx < (uint32_t)nobj && obj[n->idx].n == n, "object %p: index %u is not its model entry",
          (void *)o, n->idx);
    return &obj[n->idx];
}

static void node_check(mobj_t *m)
{
    node_t *n = m->n;
    size_t len = m->type->basic_size - sizeof(node_t);
    size_t k = pat_check(n->payload, len, n->serial);
    CHECK(k == len, "object %p (%s): payload corrupt at offset %zu", (void *)n, m->type->name, k);
    CHECK(n->ob.type == m->type, "object %p: type %p, made as %p", (void *)n, (const void *)n->ob.type,
          (const void *)m->type);
}

/* Model first, then ouro: a dealloc that the call triggers must find the
 * model count at zero already. */
static void ref_drop(int x, const char *why)
{
    CHECK(x >= 0 && x < nobj && !obj[x].dead, "%s: model object %d is not alive", why, x);
    obj[x].rc--;
    CHECK(obj[x].rc >= 0, "%s: model count of object %d below zero", why, x);
}

static int c_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    node_t *n = (node_t *)self;
    /* the collector must never traverse memory that is not a live object */
    CHECK(n->magic == MAGIC_LIVE, "traverse of %p: magic %#x", (void *)self, n->magic);
    for (int i = 0; i < NSLOT; i++) {
        ouro_object_t *r = ouro_load(&n->slot[i]);
        if (r) {
            int rc = visit(r, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void c_clear(ouro_object_t *self)
{
    mobj_t *m = model_of(self);
    CHECK(collecting && m->in_m, "clear of object %d, which the model says is reachable", (int)(m - obj));
    CHECK(!m->cleared, "clear of object %d twice in one collection", (int)(m - obj));
    m->cleared = true;
    for (int i = 0; i < NSLOT; i++) {
        if (m->slot[i] >= 0) {
            ref_drop(m->slot[i], "clear");
            m->slot[i] = -1;
        }
        ouro_setref(&m->n->slot[i], NULL);
    }
}

static void c_finalize(ouro_object_t *self)
{
    mobj_t *m = model_of(self);
    CHECK(collecting && m->in_m, "finalize of object %d, which the model says is reachable", (int)(m - obj));
    CHECK(!m->finalized, "finalize of object %d a second time", (int)(m - obj));
    m->finalized = true;
    /* what ouro.h promises of calls made from a finalizer */
    CHECK(ouro_gc_collect(0) == 0, "ouro_gc_collect from a finalizer did not return 0");
    errno = 0;
    CHECK(ouro_gc_untrack(self) == -1 && errno == EDEADLK, "ouro_gc_untrack from a finalizer: errno %d", errno);
    errno = 0;
    CHECK(ouro_gc_freeze() == -1 && errno == EDEADLK, "ouro_gc_freeze from a finalizer: errno %d", errno);
    errno = 0;
    CHECK(ouro_gc_get_referrers(self, NULL, NULL) == -1 && errno == EDEADLK,
          "ouro_gc_get_referrers from a finalizer: errno %d", errno);
}

static void n_dealloc(ouro_object_t *self)
{
    mobj_t *m = model_of(self);
    int x = (int)(m - obj);
    CHECK(m->rc == 0, "dealloc of object %d (%s) whose model count is %ld", x, m->type->name, m->rc);
    node_check(m);
    m->dead = true;
    m->gen = GEN_UNTRACKED;
    deaths++;
    for (int i = 0; i < NSLOT; i++) {
        if (m->slot[i] >= 0) {
            ref_drop(m->slot[i], "dealloc");
            m->slot[i] = -1;
        }
        ouro_setref(&m->n->slot[i], NULL);
    }
    m->n->magic = MAGIC_DEAD;
}

/* ouro.h: from a callback the collector's API answers (ouro_gc_collect
 * returns 0).  This fuzzer found them deadlocking there (the seed
 * corpus/gc-callback-reentry); FUZZ_CPPFLAGS=-DFUZZ_REENTRANT_CALLBACKS=0
 * turns the check off. */
#ifndef FUZZ_REENTRANT_CALLBACKS
#define FUZZ_REENTRANT_CALLBACKS 1
#endif

static void gc_callback(int phase, int gen, size_t collected, size_t uncollectable, void *arg)
{
    (void)arg;
    if (FUZZ_REENTRANT_CALLBACKS) {
        /* the collector's API answers from a callback (the lists are at
         * rest); freeze would move the model's objects, so not that */
        CHECK(ouro_gc_collect(0) == 0, "ouro_gc_collect from a callback did not return 0");
        ouro_gc_stats_t st;
        ouro_gc_get_stats(&st);
        /* it drains zombies first: never more than the statistics said */
        CHECK(ouro_gc_get_freeze_count() <= st.objects[3], "ouro_gc_get_freeze_count from a callback");
    }
    if (phase == OURO_GC_START) {
        cb_start++;
        cb_gen = gen;
        return;
    }
    cb_stop++;
    cb_gen = gen;
    cb_collected = collected;
    cb_uncollectable = uncollectable;
    /* the garbage still alive now with references left (no clear, or
     * resurrected) is what ouro must call uncollectable.  Garbage alive
     * with none left had its last reference queued to its owner's merge
     * queue by another thread (biased counts): when the owner is not the
     * collecting thread it dies at the owner's next quiescent state, which
     * settle() checks */
    cb_alive_garbage = 0;
    for (int x = 0; x < nobj; x++)
        if (obj[x].in_m && !obj[x].dead && obj[x].rc > 0)
            cb_alive_garbage++;
}

/* Weak references: the model knows each one's referent, and its callback
 * says when ouro cleared it. */
#define NWR 8
typedef struct wref_s {
    ouro_weakref_t *r; /* NULL: empty */
    int target;        /* model index of the referent */
    bool gone;         /* its callback ran: the referent is dying or garbage */
} wref_t;
static wref_t wr[NWR];

static void wr_callback(ouro_weakref_t *ref, void *arg)
{
    wref_t *w = arg;
    CHECK(w->r == ref, "weak reference callback with %p, registered for %p", (void *)ref, (void *)w->r);
    CHECK(!w->gone, "weak reference callback of object %d twice", w->target);
    mobj_t *m = &obj[w->target];
    CHECK(!m->dead && (m->rc == 0 || (collecting && m->in_m)),
          "weak reference to object %d cleared while it is reachable (count %ld)", w->target, m->rc);
    w->gone = true;
}

static size_t count_wr(void)
{
    size_t n = 0;
    for (int i = 0; i < NWR; i++)
        n += wr[i].r != NULL;
    return n;
}

static void wr_free(int i)
{
    if (wr[i].r == NULL)
        return;
    ouro_weakref_free(wr[i].r);
    wr[i].r = NULL;
}

/* ================================================================== */
/* the second thread                                                   */
/* ================================================================== */
enum { W_INCREF, W_TRYINCREF, W_DECREF, W_FREE, W_MALLOC, W_NEW, W_SETREF, W_IMMORTAL, W_COLLECT, W_QUIESCE, W_EXIT };

typedef struct job_s {
    int kind;
    ouro_object_t *o, *v;
    ouro_object_t **slot;
    void *p;
    size_t n;
    const ouro_type_t *t;
    int gen;
    void *ret;
    long lret;
    int err;
} job_t;

static pthread_t w_th;
static bool w_alive;
static uintptr_t w_tid;
static pthread_mutex_t w_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w_cv = PTHREAD_COND_INITIALIZER;
static job_t *w_job;
static bool w_done;

static void *worker_main(void *arg)
{
    (void)arg;
    ouro_thread_register();
    pthread_mutex_lock(&w_mu);
    w_tid = ouro__tid();
    for (;;) {
        while (w_job == NULL)
            pthread_cond_wait(&w_cv, &w_mu);
        job_t *j = w_job;
        pthread_mutex_unlock(&w_mu);
        errno = 0;
        switch (j->kind) {
        case W_INCREF:
            ouro_incref(j->o);
            break;
        case W_TRYINCREF:
            j->lret = ouro_try_incref(j->o);
            break;
        case W_DECREF:
            ouro_decref(j->o);
            break;
        case W_FREE:
            ouro_free(j->p);
            break;
        case W_MALLOC:
            j->ret = ouro_malloc(j->n);
            break;
        case W_NEW:
            j->ret = ouro_new(j->t);
            break;
        case W_SETREF:
            if (j->v)
                ouro_incref(j->v);
            ouro_setref(j->slot, j->v);
            break;
        case W_IMMORTAL:
            j->lret = ouro_make_immortal(j->o);
            break;
        case W_COLLECT:
            j->lret = ouro_gc_collect(j->gen);
            break;
        default:
            break;
        }
        j->err = errno;
        /* after every call, as a well-behaved thread does now and then */
        ouro_quiescent();
        pthread_mutex_lock(&w_mu);
        w_job = NULL;
        w_done = true;
        pthread_cond_broadcast(&w_cv);
        if (j->kind == W_EXIT)
            break;
    }
    pthread_mutex_unlock(&w_mu);
    return NULL; /* the thread's exit merges the counts of what it owns */
}

static void worker_run(job_t *j)
{
    /* the worker may wait for a grace period (at exit, or out of memory):
     * this thread must not hold one up while it waits for the worker */
    if (online)
        ouro_thread_offline();
    if (!w_alive) {
        w_tid = 0;
        CHECK(pthread_create(&w_th, NULL, worker_main, NULL) == 0, "pthread_create");
        w_alive = true;
    }
    pthread_mutex_lock(&w_mu);
    w_done = false;
    w_job = j;
    pthread_cond_broadcast(&w_cv);
    while (!w_done)
        pthread_cond_wait(&w_cv, &w_mu);
    pthread_mutex_unlock(&w_mu);
    if (j->kind == W_EXIT) {
        pthread_join(w_th, NULL);
        w_alive = false;
        w_tid = 0;
    }
    if (online)
        ouro_thread_online();
}

static void worker_free(void *p)
{
    job_t j = {.kind = W_FREE, .p = p};
    worker_run(&j);
}

/* ================================================================== */
/* settling and model checks                                           */
/* ================================================================== */
/* Let every thread merge what other threads queued to it, until a round
 * frees nothing (a free can queue more), then every object whose count is
 * zero must be dead. */
static bool worker_owns_live(void)
{
    for (int x = 0; x < nobj; x++)
        if (obj[x].worker_owned && !obj[x].dead)
            return true;
    return false;
}

static void settle(void)
{
    for (int round = 0;; round++) {
        long d0 = deaths;
        ouro_quiescent();
        /* only the objects it made are queued to the worker */
        if (w_alive && worker_owns_live()) {
            job_t j = {.kind = W_QUIESCE};
            worker_run(&j);
        }
        if (deaths == d0)
            break;
        CHECK(round < 4 * NOBJ, "settle does not end");
    }
    for (int x = 0; x < nobj; x++)
        CHECK(obj[x].dead || obj[x].rc > 0, "object %d (%s) has no references left but is alive", x,
              obj[x].type->name);
}

static size_t count_gen(int g)
{
    size_t n = 0;
    for (int x = 0; x < nobj; x++)
        if (!obj[x].dead && obj[x].gen == g)
            n++;
    return n;
}

/* The collector's lists and the object counters against the model. */
static void check_gc_stats(void)
{
    size_t frozen = ouro_gc_get_freeze_count(); /* drains the zombies first */
    CHECK(frozen == count_gen(GEN_FROZEN), "freeze count %zu, model %zu", frozen, count_gen(GEN_FROZEN));
    ouro_gc_stats_t st;
    ouro_gc_get_stats(&st);
    CHECK(st.young == count_gen(0), "young %zu, model %zu", st.young, count_gen(0));
    for (int g = 1; g <= 3; g++)
        CHECK(st.objects[g] == count_gen(g), "generation %d holds %zu, model %zu", g, st.objects[g],
              count_gen(g));
    CHECK(st.zombies == 0, "%zu zombies after a drain", st.zombies);
    CHECK(st.saved == (size_t)nsaved, "saved %zu, model %d", st.saved, nsaved);
    ouro_object_stats_t os;
    ouro_object_stats_get(&os);
    size_t alive = 0;
    for (int x = 0; x < nobj; x++)
        alive += !obj[x].dead;
    CHECK(os.created - os.freed == alive, "created %zu - freed %zu != %zu alive in the model", os.created,
          os.freed, alive);
    CHECK(os.weakrefs == count_wr(), "%zu weak references, model %zu", os.weakrefs, count_wr());
}

/* ================================================================== */
/* handles                                                             */
/* ================================================================== */
static ouro_object_t *hobj(int h)
{
    return hnd[h] >= 0 ? &obj[hnd[h]].n->ob : NULL;
}

static void hnd_drop(int h)
{
    int x = hnd[h];
    if (x < 0)
        return;
    hnd[h] = -1;
    tr("decref object %d (count %ld)", x, obj[x].rc);
    ref_drop(x, "decref");
    ouro_decref(&obj[x].n->ob);
}

/* h takes over a reference to model object x the caller already counted */
static void hnd_put(int h, int x)
{
    hnd_drop(h);
    hnd[h] = x;
}

/* A new object from ouro_new (by this thread or the worker): check what
 * ouro_new promises, put its payload under a pattern, enter it in the
 * model with its one reference, in handle h. */
static void obj_adopt(int h, ouro_object_t *o, const ouro_type_t *t, bool by_worker)
{
    CHECK(nobj < NOBJ, "model full");
    node_t *n = (node_t *)o;
    CHECK(((uintptr_t)o & 15) == 0, "ouro_new = %p: not 16-byte aligned", (void *)o);
    CHECK(o->type == t, "ouro_new: type %p, asked %p", (const void *)o->type, (const void *)t);
    size_t rest = t->basic_size - sizeof(ouro_object_t);
    size_t k = zero_check((const unsigned char *)o + sizeof(ouro_object_t), rest);
    CHECK(k == rest, "ouro_new(%s) = %p: byte %zu beyond the header is not zero", t->name, (void *)o, k);
    CHECK(ouro_refcount(o) == 1, "new object: refcount %zu", ouro_refcount(o));
    CHECK(ouro_gc_is_tracked(o) == is_container_type(t), "new object: tracked %d", ouro_gc_is_tracked(o));
    CHECK(ouro_sizeof(o) >= t->basic_size, "ouro_sizeof %zu < basic_size %zu", ouro_sizeof(o), t->basic_size);
    CHECK(ouro_owns(o), "ouro_owns(new object %p) = 0", (void *)o);
    int x = nobj++;
    mobj_t *m = &obj[x];
    memset(m, 0, sizeof *m);
    m->n = n;
    m->type = t;
    m->rc = 1;
    for (int i = 0; i < NSLOT; i++)
        m->slot[i] = -1;
    m->gen = is_container_type(t) ? 0 : GEN_UNTRACKED;
    m->worker_owned = by_worker;
    n->idx = (uint32_t)x;
    n->serial = next_serial++;
    pat_fill(n->payload, t->basic_size - sizeof(node_t), n->serial);
    n->magic = MAGIC_LIVE;
    tr("new object %d (%s) %p in handle %d", x, t->name, (void *)o, h);
    hnd_put(h, x);
}

/* ================================================================== */
/* collections                                                         */
/* ================================================================== */
/* Predict the garbage of a collection of generations 0..g: in the set S of
 * live tracked containers of those generations, an object is reachable if
 * its count exceeds the references from S, or is zero, or a reachable one
 * refers to it.  Marks in_m on the rest and returns how many. */
static long predict(int g)
{
    static long refs[NOBJ];
    static bool in_s[NOBJ], mark[NOBJ];
    static int stack[NOBJ * (NSLOT + 1)];
    for (int x = 0; x < nobj; x++) {
        mobj_t *m = &obj[x];
        in_s[x] = !m->dead && m->gen >= 0 && m->gen <= g;
        refs[x] = m->rc;
        mark[x] = false;
        m->in_m = m->cleared = false;
    }
    for (int x = 0; x < nobj; x++)
        if (in_s[x])
            for (int i = 0; i < NSLOT; i++)
                if (obj[x].slot[i] >= 0 && in_s[obj[x].slot[i]])
                    refs[obj[x].slot[i]]--;
    /* a count of zero is an object dying right now (biased counting may
     * defer its free to its owner's next merge): the collector takes it for
     * a root, so that nothing it still holds is taken for garbage */
    int sp = 0;
    for (int x = 0; x < nobj; x++)
        if (in_s[x] && (refs[x] > 0 || obj[x].rc == 0)) {
            mark[x] = true;
            stack[sp++] = x;
        }
    while (sp) {
        int x = stack[--sp];
        for (int i = 0; i < NSLOT; i++) {
            int y = obj[x].slot[i];
            if (y >= 0 && in_s[y] && !mark[y]) {
                mark[y] = true;
                stack[sp++] = y;
            }
        }
    }
    long n = 0;
    for (int x = 0; x < nobj; x++)
        if (in_s[x] && !mark[x]) {
            obj[x].in_m = true;
            n++;
        }
    /* survivors move to the next generation (2 stays 2) */
    int dest = g < 2 ? g + 1 : 2;
    for (int x = 0; x < nobj; x++)
        if (in_s[x])
            obj[x].gen = dest; /* the dead are reset by their dealloc */
    return n;
}

static void collect(int g, bool remote)
{
    if (saveall)
        faults_off(); /* a failed realloc of the saved list is not modelled */
    bool armed = faults_armed;
    long expect = predict(g);
    long s0 = cb_start, t0 = cb_stop;
    collecting = true;
    errno = 0;
    long r;
    int err;
    if (remote) {
        job_t j = {.kind = W_COLLECT, .gen = g};
        worker_run(&j);
        r = j.lret;
        err = j.err;
    } else {
        r = ouro_gc_collect(g);
        err = errno;
    }
    collecting = false;
    tr("collect(%d)%s = %ld, model %ld", g, remote ? " by the worker" : "", r, expect);
    CHECK(cb_start == s0 + 1 && cb_stop == t0 + 1, "callbacks: %ld starts, %ld stops for one collection",
          cb_start - s0, cb_stop - t0);
    CHECK(cb_gen == g, "callback generation %d, collected %d", cb_gen, g);
    long found = expect;
    if (r < 0) {
        /* out of memory for the collector's work: nothing may be freed */
        CHECK(r == -1 && err == ENOMEM && armed, "ouro_gc_collect(%d) = %ld errno %d", g, r, err);
        found = 0;
        for (int x = 0; x < nobj; x++) {
            CHECK(!obj[x].in_m || (!obj[x].cleared && !obj[x].dead),
                  "a collection that failed cleared or freed object %d", x);
            obj[x].in_m = false;
        }
    }
    CHECK(r < 0 || r == expect, "ouro_gc_collect(%d) found %ld unreachable, the model %ld", g, r, expect);
    CHECK((long)cb_collected == found, "STOP callback: %zu collected, expected %ld", cb_collected, found);
    for (int x = 0; x < nobj; x++) {
        mobj_t *m = &obj[x];
        if (!m->in_m)
            continue;
        if (m->type->finalize)
            CHECK(m->finalized, "garbage object %d was not finalized", x);
        if (saveall) {
            CHECK(!m->cleared && !m->dead, "SAVEALL: object %d was cleared or freed", x);
            m->rc++; /* the saved list's reference */
            saved[nsaved++] = x;
        } else if (m->type->clear) {
            CHECK(m->cleared, "garbage object %d (%s) was not cleared", x, m->type->name);
        }
    }
    if (saveall)
        CHECK(cb_uncollectable == 0, "SAVEALL: %zu uncollectable", cb_uncollectable);
    else
        CHECK(cb_uncollectable == cb_alive_garbage, "STOP callback: %zu uncollectable, %zu garbage alive",
              cb_uncollectable, cb_alive_garbage);
    for (int x = 0; x < nobj; x++)
        obj[x].in_m = obj[x].cleared = false;
}

/* ================================================================== */
/* operations                                                          */
/* ================================================================== */
static void op_malloc(rd_t *r)
{
    int s = u8(r) % NBLK;
    size_t size = size_of(r);
    blk_release(s, 0);
    errno = 0;
    void *p = ouro_malloc(size);
    tr("malloc(%zu) = %p slot %d", size, p, s);
    if (p == NULL)
        return alloc_failed(p, "ouro_malloc", size);
    blk_adopt(s, p, size, 16, "ouro_malloc");
}

static void op_calloc(rd_t *r)
{
    int s = u8(r) % NBLK;
    size_t n = u8(r) % 5;
    size_t size = size_of(r);
    blk_release(s, 0);
    errno = 0;
    unsigned char *p = ouro_calloc(n, size);
    tr("calloc(%zu, %zu) = %p slot %d", n, size, (void *)p, s);
    if (p == NULL)
        return alloc_failed(p, "ouro_calloc", n * size);
    size_t k = zero_check(p, n * size);
    CHECK(k == n * size, "ouro_calloc(%zu, %zu) = %p: byte %zu is not zero", n, size, (void *)p, k);
    blk_adopt(s, p, n * size, 16, "ouro_calloc");
}

static void op_realloc(rd_t *r)
{
    int s = u8(r) % NBLK;
    size_t size = size_of(r);
    blk_t *b = &blk[s];
    if (b->p)
        blk_check(s, "before realloc");
    blk_t old = *b;
    errno = 0;
    unsigned char *q = ouro_realloc(b->p, size);
    tr("realloc(%p, %zu) = %p slot %d", (void *)old.p, size, (void *)q, s);
    if (old.p && size == 0) {
        CHECK(q == NULL, "ouro_realloc(p, 0) = %p, not NULL", (void *)q);
        b->p = NULL;
        return;
    }
    if (q == NULL) {
        alloc_failed(q, "ouro_realloc", size);
        if (old.p)
            blk_check(s, "after a failed realloc");
        return;
    }
    size_t keep = old.p ? (old.size < size ? old.size : size) : 0;
    size_t k = pat_check_prefix(q, old.fill, keep, old.serial);
    CHECK(k == keep, "ouro_realloc(%p, %zu) = %p: byte %zu of the %zu kept differs", (void *)old.p, size,
          (void *)q, k, keep);
    b->p = NULL;
    blk_adopt(s, q, size, 16, "ouro_realloc");
}

static void op_aligned(rd_t *r)
{
    int s = u8(r) % NBLK;
    size_t align = (size_t)1 << (u8(r) % 24);
    size_t size = size_of(r);
    blk_release(s, 0);
    errno = 0;
    void *p = ouro_aligned_alloc(align, size);
    tr("aligned_alloc(%zu, %zu) = %p slot %d", align, size, p, s);
    if (p == NULL)
        return alloc_failed(p, "ouro_aligned_alloc", size);
    blk_adopt(s, p, size, align < 16 ? 16 : align, "ouro_aligned_alloc");
}

static void op_block(rd_t *r)
{
    int s = u8(r) % NBLK;
    blk_t *b = &blk[s];
    if (b->p == NULL)
        return;
    blk_check(s, "BLOCK");
    CHECK(ouro_usable_size(b->p) == b->usable, "usable size of %p changed", (void *)b->p);
    CHECK(ouro_owns(b->p), "ouro_owns(%p) = 0 for a live block", (void *)b->p);
    CHECK(!ouro_owns(b->p + 1), "ouro_owns(%p + 1) = 1 inside a block", (void *)b->p);
}

static void expect_errno(bool failed, int err, int want, const char *what)
{
    CHECK(failed, "%s did not fail", what);
    CHECK(err == want, "%s: errno %d, expected %d", what, err, want);
}

static void op_bad(rd_t *r)
{
    int k = u8(r) % 14;
    unsigned x = u8(r);
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 15, (size_t)1 << 63, (size_t)1 << 47, PTRDIFF_MAX};
    size_t hv = huge[x % 5];
    void *p;
    long v;
    errno = 0;
    switch (k) {
    case 0:
        p = ouro_malloc(hv);
        expect_errno(p == NULL, errno, ENOMEM, "ouro_malloc(huge)");
        break;
    case 1: {
        size_t n = (size_t)1 << (33 + x % 30), sz = n; /* n * sz overflows */
        p = ouro_calloc(n, sz);
        expect_errno(p == NULL, errno, ENOMEM, "ouro_calloc(overflow)");
        errno = 0;
        p = ouro_calloc(1, hv);
        expect_errno(p == NULL, errno, ENOMEM, "ouro_calloc(1, huge)");
        break;
    }
    case 2: {
        static const size_t bad[] = {0, 3, 24, 48, 1000, 4097, SIZE_MAX, ((size_t)1 << 20) + 16};
        p = ouro_aligned_alloc(bad[x % 8], 16);
        expect_errno(p == NULL, errno, EINVAL, "ouro_aligned_alloc(bad alignment)");
        break;
    }
    case 3:
        p = ouro_aligned_alloc((size_t)64 << (x % 16), hv);
        expect_errno(p == NULL, errno, ENOMEM, "ouro_aligned_alloc(huge size)");
        break;
    case 4: {
        int s = (int)(x % NBLK);
        if (blk[s].p == NULL)
            break;
        p = ouro_realloc(blk[s].p, hv);
        expect_errno(p == NULL, errno, ENOMEM, "ouro_realloc(p, huge)");
        blk_check(s, "after ouro_realloc(p, huge)");
        break;
    }
    case 5: {
        static const ouro_type_t small = {.name = "fz-small", .basic_size = sizeof(ouro_object_t) - 1};
        static const ouro_type_t large = {.name = "fz-large", .basic_size = (size_t)128 << 10};
        static const ouro_type_t *bad[] = {NULL, &small, &large};
        ouro_object_t *o = ouro_new(bad[x % 3]);
        expect_errno(o == NULL, errno, EINVAL, "ouro_new(bad type)");
        break;
    }
    case 6:
        v = ouro_gc_collect(x & 1 ? 3 : -1 - (int)(x % 100));
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_collect(bad generation)");
        break;
    case 7: {
        /* track and untrack of a plain object or NULL */
        ouro_object_t *o = NULL;
        for (int h = 0; h < NHND; h++)
            if (hnd[h] >= 0 && !is_container_type(obj[hnd[h]].type))
                o = hobj(h);
        v = x & 1 ? ouro_gc_untrack(o) : ouro_gc_track(o);
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_track/untrack(not a container)");
        CHECK(!ouro_gc_is_tracked(o), "ouro_gc_is_tracked(not a container)");
        break;
    }
    case 8: {
        long before[3], after[3];
        ouro_gc_get_threshold(before);
        v = ouro_gc_set_threshold(x & 1 ? -1 : 5, x & 2 ? -1 : 5, -(long)(x % 7) - (x & 3 ? 0 : 1));
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_set_threshold(negative)");
        ouro_gc_get_threshold(after);
        CHECK(!memcmp(before, after, sizeof before), "a rejected threshold changed the thresholds");
        break;
    }
    case 9: {
        int before = ouro_gc_get_markers();
        v = ouro_gc_set_markers(x & 1 ? -1 - (int)(x % 50) : OURO_GC_MAX_MARKERS + 1 + (int)(x % 50));
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_set_markers(out of range)");
        CHECK(ouro_gc_get_markers() == before, "a rejected marker count changed it");
        break;
    }
    case 10: {
        long before = ouro_option_get(OURO_OPTION_PURGE_DELAY);
        /* OURO_OPTION_COUNT_ is the one bad option an ouro_option_t can hold */
        v = x & 1 ? ouro_option_set(OURO_OPTION_COUNT_, 1)
                  : ouro_option_set(OURO_OPTION_PURGE_DELAY, x & 2 ? -2 : 3600001);
        expect_errno(v == -1, errno, EINVAL, "ouro_option_set(bad)");
        CHECK(ouro_option_get(OURO_OPTION_PURGE_DELAY) == before, "a rejected option changed it");
        errno = 0;
        v = ouro_option_get(OURO_OPTION_COUNT_);
        expect_errno(v == -1, errno, EINVAL, "ouro_option_get(bad)");
        break;
    }
    case 11: {
        static int cookie;
        v = ouro_gc_callback_add(NULL, NULL);
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_callback_add(NULL)");
        errno = 0;
        v = ouro_gc_callback_remove(gc_callback, &cookie);
        expect_errno(v == -1, errno, ENOENT, "ouro_gc_callback_remove(absent)");
        break;
    }
    case 12:
        v = ouro_gc_get_referents(NULL, NULL, NULL);
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_get_referents(NULL)");
        errno = 0;
        v = ouro_gc_get_referrers(NULL, NULL, NULL);
        expect_errno(v == -1, errno, EINVAL, "ouro_gc_get_referrers(NULL)");
        break;
    default: {
        /* ouro_owns of pointers it never handed out, and the NULL cases */
        int local;
        static char global[64];
        CHECK(!ouro_owns(&local) && !ouro_owns(global) && !ouro_owns(NULL) && !ouro_owns((void *)(uintptr_t)x),
              "ouro_owns of a foreign pointer");
        CHECK(ouro_usable_size(NULL) == 0, "ouro_usable_size(NULL)");
        ouro_free(NULL);
        ouro_free_sized(NULL, 10);
        for (int h = 0; h < NHND; h++)
            if (hnd[h] >= 0) {
                CHECK(!ouro_owns((char *)hobj(h) + 8), "ouro_owns inside an object");
                break;
            }
        break;
    }
    }
}

static void op_new(rd_t *r, bool remote)
{
    int h = u8(r) % NHND;
    const ouro_type_t *t = &types[u8(r) % NTYPES];
    if (nobj >= NOBJ)
        return;
    errno = 0;
    ouro_object_t *o;
    int err;
    if (remote) {
        job_t j = {.kind = W_NEW, .t = t};
        worker_run(&j);
        o = j.ret;
        err = j.err;
    } else {
        o = ouro_new(t);
        err = errno;
    }
    if (o == NULL) {
        CHECK(err == ENOMEM && faults_armed, "ouro_new(%s) = NULL, errno %d", t->name, err);
        return;
    }
    obj_adopt(h, o, t, remote);
}

static void op_dup(rd_t *r)
{
    int a = u8(r) % NHND, b = u8(r) % NHND;
    unsigned f = u8(r);
    int x = hnd[a];
    if (x < 0 || a == b)
        return;
    ouro_object_t *o = hobj(a);
    if (f & 1) {
        ouro_share(o);
        CHECK(ouro_try_incref(o) == 1, "ouro_try_incref of a live object failed");
    } else {
        ouro_incref(o);
    }
    obj[x].rc++;
    tr("dup object %d into handle %d (count %ld)", x, b, obj[x].rc);
    hnd_put(b, x);
}

static void op_link(rd_t *r, bool remote)
{
    int a = u8(r) % NHND, i = u8(r) % NSLOT, b = u8(r) % NHND;
    unsigned f = u8(r);
    int x = hnd[a];
    if (x < 0 || !is_container_type(obj[x].type))
        return;
    int y = hnd[b];
    mobj_t *m = &obj[x];
    tr("link object %d slot %d = %d (was %d)%s", x, i, y, m->slot[i], remote ? " by the worker" : "");
    ouro_object_t *v = y >= 0 ? &obj[y].n->ob : NULL;
    int old = m->slot[i];
    if (y >= 0)
        obj[y].rc++;
    m->slot[i] = y;
    if (old >= 0)
        ref_drop(old, "link");
    if (remote) {
        job_t j = {.kind = W_SETREF, .v = v, .slot = &m->n->slot[i]};
        worker_run(&j);
    } else if (f & 1) {
        if (v)
            ouro_incref(v);
        ouro_object_t *prev = ouro_store(&m->n->slot[i], v);
        CHECK(prev == (old >= 0 ? &obj[old].n->ob : NULL), "ouro_store returned %p, the slot held %p",
              (void *)prev, old >= 0 ? (void *)obj[old].n : NULL);
        ouro_xdecref(prev);
    } else {
        if (v)
            ouro_incref(v);
        ouro_setref(&m->n->slot[i], v);
    }
}

static void op_load(rd_t *r)
{
    int a = u8(r) % NHND, i = u8(r) % NSLOT, h = u8(r) % NHND;
    int x = hnd[a];
    if (x < 0 || !is_container_type(obj[x].type))
        return;
    ouro_object_t *v = ouro_load(&obj[x].n->slot[i]);
    int y = obj[x].slot[i];
    CHECK(v == (y >= 0 ? &obj[y].n->ob : NULL), "slot %d of object %d holds %p, the model says %d", i, x,
          (void *)v, y);
    if (v == NULL)
        return;
    ouro_incref(v); /* before handle h lets go of what it held: that could be x */
    obj[y].rc++;
    hnd_put(h, y);
}

static void op_track(rd_t *r)
{
    int h = u8(r) % NHND;
    unsigned f = u8(r);
    int x = hnd[h];
    if (x < 0)
        return;
    mobj_t *m = &obj[x];
    ouro_object_t *o = hobj(h);
    errno = 0;
    int v = f & 1 ? ouro_gc_untrack(o) : ouro_gc_track(o);
    tr("%s object %d = %d", f & 1 ? "untrack" : "track", x, v);
    if (!is_container_type(m->type)) {
        expect_errno(v == -1, errno, EINVAL, "track/untrack of a plain object");
        return;
    }
    CHECK(v == 0, "ouro_gc_%strack = %d errno %d", f & 1 ? "un" : "", v, errno);
    if (f & 1)
        m->gen = GEN_UNTRACKED;
    else if (m->gen == GEN_UNTRACKED)
        m->gen = 0;
    CHECK(ouro_gc_is_tracked(o) == (m->gen != GEN_UNTRACKED), "ouro_gc_is_tracked = %d", ouro_gc_is_tracked(o));
}

static void op_freeze(rd_t *r)
{
    int f = u8(r) % 3;
    if (f == 0) {
        CHECK(ouro_gc_freeze() == 0, "ouro_gc_freeze");
        for (int x = 0; x < nobj; x++)
            if (!obj[x].dead && obj[x].gen >= 0)
                obj[x].gen = GEN_FROZEN;
    } else if (f == 1) {
        CHECK(ouro_gc_unfreeze() == 0, "ouro_gc_unfreeze");
        for (int x = 0; x < nobj; x++)
            if (!obj[x].dead && obj[x].gen == GEN_FROZEN)
                obj[x].gen = 2;
    } else {
        CHECK(ouro_gc_get_freeze_count() == count_gen(GEN_FROZEN), "freeze count %zu, model %zu",
              ouro_gc_get_freeze_count(), count_gen(GEN_FROZEN));
    }
}

static int count_visit(ouro_object_t *r, void *arg)
{
    (void)r;
    ++*(long *)arg;
    return 0;
}

static void op_check(rd_t *r)
{
    int h = u8(r) % NHND;
    check_gc_stats();
    int x = hnd[h];
    if (x < 0)
        return;
    mobj_t *m = model_of(hobj(h));
    ouro_object_t *o = hobj(h);
    node_check(m);
    CHECK(ouro_refcount(o) == (size_t)m->rc, "object %d: ouro_refcount %zu, model %ld", x, ouro_refcount(o),
          m->rc);
    CHECK(ouro_gc_is_tracked(o) == (m->gen != GEN_UNTRACKED), "object %d: tracked %d, model gen %d", x,
          ouro_gc_is_tracked(o), m->gen);
    CHECK(ouro_sizeof(o) >= m->type->basic_size, "ouro_sizeof");
    CHECK(ouro_owns(o), "ouro_owns(live object)");
    CHECK(!ouro_is_immortal(o), "object %d is immortal", x);
    long nref = 0, want = 0;
    for (int i = 0; i < NSLOT; i++)
        want += m->slot[i] >= 0;
    CHECK(ouro_gc_get_referents(o, count_visit, &nref) == 0 && nref == want,
          "object %d: %ld referents, model %ld", x, nref, want);
    want = 0;
    for (int y = 0; y < nobj; y++) {
        if (obj[y].dead || obj[y].gen == GEN_UNTRACKED)
            continue;
        for (int i = 0; i < NSLOT; i++)
            if (obj[y].slot[i] == x) {
                want++;
                break;
            }
    }
    nref = 0;
    long v = ouro_gc_get_referrers(o, count_visit, &nref);
    CHECK(v == want && nref == want, "object %d: %ld referrers (%ld visits), model %ld", x, v, nref, want);
    /* another live thread owns it: make_immortal must refuse */
    if (w_alive && o->tid == w_tid) {
        errno = 0;
        v = ouro_make_immortal(o);
        expect_errno(v == -1, errno, EPERM, "ouro_make_immortal of another thread's object");
    }
}

static void op_fault(rd_t *r)
{
    long pass = u8(r) % 8, fail = u8(r) % 4;
    /* not while the worker lives: a decref that queues an object to its
     * owner allocates, and aborts if it cannot (it has no way to fail) */
    if (w_alive)
        return;
    tr("fail maps: pass %ld fail %ld", pass, fail);
    ouro_test_fail_maps(pass, fail);
    faults_armed = fail > 0;
}

static void saved_clear(void)
{
    for (int i = 0; i < nsaved; i++)
        ref_drop(saved[i], "garbage_clear");
    nsaved = 0;
    ouro_gc_garbage_clear();
}

static void op_misc(rd_t *r)
{
    int k = u8(r) % 13;
    unsigned x = u8(r);
    switch (k) {
    case 0:
        ouro_collect(x & 1);
        break;
    case 1:
        ouro_quiescent();
        break;
    case 2:
        ouro_barrier();
        break;
    case 3: {
        int n = (int)(x % 3);
        CHECK(ouro_gc_set_markers(n) == 0, "ouro_gc_set_markers(%d)", n);
        if (n)
            CHECK(ouro_gc_get_markers() == n, "ouro_gc_get_markers %d, set %d", ouro_gc_get_markers(), n);
        break;
    }
    case 4: {
        long t[3] = {x, x % 7, x % 13}, out[3];
        CHECK(ouro_gc_set_threshold(t[0], t[1], t[2]) == 0, "ouro_gc_set_threshold");
        ouro_gc_get_threshold(out);
        CHECK(!memcmp(t, out, sizeof t), "thresholds read back differ");
        long cnt[3];
        ouro_gc_get_count(cnt);
        CHECK(cnt[0] == (long)count_gen(0), "ouro_gc_get_count young %ld, model %zu", cnt[0], count_gen(0));
        break;
    }
    case 5: {
        static const long delays[] = {0, 10, -1};
        long d = delays[x % 3];
        CHECK(ouro_option_set(OURO_OPTION_PURGE_DELAY, d) == 0, "ouro_option_set(PURGE_DELAY, %ld)", d);
        CHECK(ouro_option_get(OURO_OPTION_PURGE_DELAY) == d, "purge delay read back");
        break;
    }
    case 6:
        saveall = x & 1;
        ouro_gc_set_debug(saveall ? OURO_GC_DEBUG_SAVEALL : 0);
        CHECK(ouro_gc_get_debug() == (saveall ? OURO_GC_DEBUG_SAVEALL : 0u), "ouro_gc_get_debug");
        break;
    case 7: {
        ouro_object_t *out[NOBJ];
        size_t n = ouro_gc_garbage(out, NOBJ);
        CHECK(n == (size_t)nsaved, "ouro_gc_garbage: %zu, model %d", n, nsaved);
        /* the same objects, in any order */
        static int seen[NOBJ];
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < nsaved; i++)
            seen[saved[i]]++;
        for (size_t i = 0; i < n; i++) {
            int y = (int)(model_of(out[i]) - obj);
            CHECK(seen[y]-- > 0, "ouro_gc_garbage[%zu] = object %d, not saved in the model", i, y);
        }
        if (x & 1)
            saved_clear();
        break;
    }
    case 8:
        lazy = x & 1;
        break;
    case 9: {
        ouro_stats_t st;
        ouro_stats_get(&st);
        size_t mine = 0;
        for (int s = 0; s < NBLK; s++)
            if (blk[s].p && blk[s].usable <= ((size_t)128 << 10))
                mine += blk[s].usable;
        CHECK(st.in_use >= mine, "stats: in_use %zu < the %zu bytes of small blocks held", st.in_use, mine);
        CHECK(st.committed <= st.reserved, "stats: committed %zu > reserved %zu", st.committed, st.reserved);
        if (devnull) {
            ouro_stats_print(devnull);
            ouro_stats_print_json(devnull);
        }
        CHECK(ouro_class_block_size(-1) == 0 && ouro_class_block_size(OURO_NUM_CLASSES) == 0,
              "ouro_class_block_size out of range");
        for (int c = 1; c < OURO_NUM_CLASSES; c++) /* classes 0 (size 0) and 1 are both 16 bytes */
            CHECK(ouro_class_block_size(c) >= ouro_class_block_size(c - 1) + (c > 1) * 16 &&
                      ouro_class_block_size(c) % 16 == 0,
                  "class %d: block size %zu after %zu", c, ouro_class_block_size(c), ouro_class_block_size(c - 1));
        break;
    }
    case 10:
        online = x & 1;
        if (online)
            ouro_thread_online();
        else
            ouro_thread_offline();
        break;
    case 11: {
        ouro_read_begin();
        errno = 0;
        long v = ouro_gc_collect((int)(x % 3));
        int err = errno;
        ouro_read_end();
        expect_errno(v == -1, err, EBUSY, "ouro_gc_collect inside a read section");
        break;
    }
    default: {
        /* fill the table (ours is in it already): the 17th is refused */
        static int cookie[16];
        int n = 0, v;
        while ((v = ouro_gc_callback_add(gc_callback, &cookie[n])) == 0)
            CHECK(++n < 16, "ouro_gc_callback_add accepted a 17th callback");
        CHECK(n == 15 && errno == ENOSPC, "ouro_gc_callback_add: %d added, then errno %d", n, errno);
        for (int i = (int)(x % 15); n > 0; i = (i + 1) % 15, n--)
            CHECK(ouro_gc_callback_remove(gc_callback, &cookie[i]) == 0, "ouro_gc_callback_remove");
        errno = 0;
        v = ouro_gc_callback_remove(gc_callback, &cookie[0]);
        expect_errno(v == -1, errno, ENOENT, "ouro_gc_callback_remove twice");
        break;
    }
    }
}

static void op_remote(rd_t *r)
{
    int k = u8(r) % 10;
    unsigned a = u8(r), b = u8(r), c = u8(r);
    /* a decref queued to an owner allocates, and cannot fail cleanly */
    faults_off();
    switch (k) {
    case 0: { /* the worker takes a reference into handle b */
        int x = hnd[a % NHND];
        if (x < 0 || a % NHND == b % NHND)
            break;
        bool try = c & 1;
        if (try)
            ouro_share(&obj[x].n->ob);
        job_t j = {.kind = try ? W_TRYINCREF : W_INCREF, .o = &obj[x].n->ob};
        worker_run(&j);
        if (try)
            CHECK(j.lret == 1, "ouro_try_incref by another thread of a live object failed");
        obj[x].rc++;
        tr("worker incref object %d (count %ld)", x, obj[x].rc);
        hnd_put(b % NHND, x);
        break;
    }
    case 1: { /* the worker drops handle a's reference */
        int x = hnd[a % NHND];
        if (x < 0)
            break;
        hnd[a % NHND] = -1;
        tr("worker decref object %d (count %ld)", x, obj[x].rc);
        ref_drop(x, "worker decref");
        job_t j = {.kind = W_DECREF, .o = &obj[x].n->ob};
        worker_run(&j);
        break;
    }
    case 2:
        blk_release((int)(a % NBLK), 3);
        break;
    case 3: {
        int s = (int)(a % NBLK);
        size_t size = (size_t)b << 8 | c;
        blk_release(s, 0);
        job_t j = {.kind = W_MALLOC, .n = size};
        worker_run(&j);
        CHECK(j.ret != NULL, "ouro_malloc(%zu) by the worker failed", size);
        blk_adopt(s, j.ret, size, 16, "ouro_malloc (worker)");
        break;
    }
    case 4: {
        uint8_t buf[2] = {(uint8_t)a, (uint8_t)b};
        rd_t sub = {buf, 2, 0};
        op_new(&sub, true);
        break;
    }
    case 5: {
        uint8_t buf[4] = {(uint8_t)a, (uint8_t)b, (uint8_t)c, 0};
        rd_t sub = {buf, 4, 0};
        op_link(&sub, true);
        break;
    }
    case 6: { /* make_immortal by a thread that does not own the object */
        int x = hnd[a % NHND];
        if (x < 0)
            break;
        ouro_object_t *o = &obj[x].n->ob;
        /* tid 0 (merged) would let it succeed: the model has no immortals */
        if (o->tid == 0 || (w_alive && o->tid == w_tid))
            break;
        job_t j = {.kind = W_IMMORTAL, .o = o};
        worker_run(&j);
        expect_errno(j.lret == -1, j.err, EPERM, "ouro_make_immortal by a thread that does not own it");
        break;
    }
    case 7:
        if (w_alive) {
            tr("worker exits");
            job_t j = {.kind = W_EXIT};
            worker_run(&j);
            for (int x = 0; x < nobj; x++)
                obj[x].worker_owned = false;
        }
        break;
    case 8:
        collect((int)(a % 3), true);
        break;
    default: {
        job_t j = {.kind = W_QUIESCE};
        worker_run(&j);
        break;
    }
    }
}

static void op_weakref(rd_t *r)
{
    int k = u8(r) % 3, h = u8(r) % NHND, i = u8(r) % NWR;
    wref_t *w = &wr[i];
    switch (k) {
    case 0: {
        int x = hnd[h];
        if (x < 0)
            break;
        wr_free(i);
        errno = 0;
        ouro_weakref_t *ref = ouro_weakref_new(hobj(h), wr_callback, w);
        tr("weakref %d to object %d = %p", i, x, (void *)ref);
        if (ref == NULL) {
            alloc_failed(ref, "ouro_weakref_new", 0);
            break;
        }
        w->r = ref;
        w->target = x;
        w->gone = false;
        break;
    }
    case 1: {
        if (w->r == NULL)
            break;
        mobj_t *m = &obj[w->target];
        ouro_object_t *o = ouro_weakref_get(w->r);
        tr("weakref %d get = %p (object %d, count %ld%s)", i, (void *)o, w->target, m->rc, m->dead ? ", dead" : "");
        CHECK(w->gone || !m->dead, "weak reference %d outlived object %d without its callback", i, w->target);
        if (w->gone || m->dead) {
            CHECK(o == NULL, "ouro_weakref_get of a cleared reference = %p", (void *)o);
            break;
        }
        /* a count of zero: the object is dying (its free may wait for its
         * owner's merge): get may fail, or take a reference that saves it */
        CHECK(o != NULL || m->rc == 0, "ouro_weakref_get of live object %d (count %ld) = NULL", w->target, m->rc);
        if (o == NULL)
            break;
        CHECK(o == &m->n->ob, "ouro_weakref_get = %p, referent %p", (void *)o, (void *)m->n);
        m->rc++;
        hnd_put(h, w->target);
        break;
    }
    default:
        wr_free(i);
        break;
    }
}

/* ================================================================== */
/* one input                                                           */
/* ================================================================== */
static void reset_model(void)
{
    nobj = 0;
    nsaved = 0;
    for (int h = 0; h < NHND; h++)
        hnd[h] = -1;
    lazy = false;
}

/* Free everything the input left, and check that the heap of objects is
 * empty again: every object dead, the collector's lists empty. */
static void finish(void)
{
    cur_op = -1;
    cur_code = -1;
    faults_off();
    if (online) {
        ouro_thread_offline();
        online = false;
    }
    if (w_alive) {
        job_t j = {.kind = W_EXIT}; /* a fresh worker for each input */
        worker_run(&j);
    }
    for (int s = 0; s < NBLK; s++)
        blk_release(s, 0);
    saveall = false;
    ouro_gc_set_debug(0);
    saved_clear();
    settle();
    /* Objects still alive and held by no handle: cycles of uncollectable
     * or untracked containers, and frozen garbage.  Their counts are above
     * zero (settle checked) and no other thread runs, so a reference taken
     * now is sound; with it, empty their slots. */
    static int keep[NOBJ];
    int nkeep = 0;
    for (int x = 0; x < nobj; x++)
        if (!obj[x].dead) {
            ouro_incref(&obj[x].n->ob);
            obj[x].rc++;
            keep[nkeep++] = x;
        }
    for (int k = 0; k < nkeep; k++) {
        mobj_t *m = &obj[keep[k]];
        if (!is_container_type(m->type))
            continue;
        for (int i = 0; i < NSLOT; i++)
            if (m->slot[i] >= 0) {
                ref_drop(m->slot[i], "finish");
                m->slot[i] = -1;
                ouro_setref(&m->n->slot[i], NULL);
            }
    }
    for (int h = 0; h < NHND; h++)
        hnd_drop(h);
    for (int k = 0; k < nkeep; k++) {
        ref_drop(keep[k], "finish");
        ouro_decref(&obj[keep[k]].n->ob);
    }
    settle();
    for (int x = 0; x < nobj; x++)
        CHECK(obj[x].dead, "object %d (%s) outlived the input", x, obj[x].type->name);
    for (int i = 0; i < NWR; i++) {
        CHECK(wr[i].r == NULL || wr[i].gone, "weak reference %d: no callback, its referent is dead", i);
        wr_free(i);
    }
    CHECK(ouro_gc_unfreeze() == 0, "ouro_gc_unfreeze");
    check_gc_stats();
    ouro_gc_set_markers(0);
    ouro_gc_set_threshold(700, 10, 10);
    ouro_option_set(OURO_OPTION_PURGE_DELAY, 10);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    trace = getenv("FUZZ_API_TRACE") != NULL;
    devnull = fopen("/dev/null", "w");
    /* collections happen only when the input asks: the model predicts them */
    ouro_gc_disable();
    ouro_thread_register();
    if (ouro_gc_callback_add(gc_callback, NULL) != 0)
        abort();
    reset_model();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd_t r = {data, size, 0};
    reset_model();
    for (cur_op = 0; r.i < r.n; cur_op++) {
        cur_code = u8(&r) % 21;
        switch (cur_code) {
        case 0:
            op_malloc(&r);
            break;
        case 1:
            op_calloc(&r);
            break;
        case 2:
            op_realloc(&r);
            break;
        case 3: {
            int s = u8(&r) % NBLK;
            blk_release(s, u8(&r) % 3);
            break;
        }
        case 4:
            op_aligned(&r);
            break;
        case 5:
            op_block(&r);
            break;
        case 6:
            op_bad(&r);
            break;
        case 7:
            op_new(&r, false);
            break;
        case 8:
            op_dup(&r);
            break;
        case 9:
            hnd_drop(u8(&r) % NHND);
            break;
        case 10:
            op_link(&r, false);
            break;
        case 11:
            op_load(&r);
            break;
        case 12:
            op_track(&r);
            break;
        case 13: {
            int g = u8(&r) % 5;
            if (g <= 2) {
                collect(g, false);
            } else {
                errno = 0;
                long v = ouro_gc_collect(g == 3 ? -1 : 3);
                expect_errno(v == -1, errno, EINVAL, "ouro_gc_collect(bad generation)");
            }
            break;
        }
        case 14:
            op_freeze(&r);
            break;
        case 15:
            op_check(&r);
            break;
        case 16:
            op_fault(&r);
            break;
        case 17:
            op_misc(&r);
            break;
        case 18:
            op_remote(&r);
            break;
        case 19:
            settle();
            break;
        default:
            op_weakref(&r);
            break;
        }
        if (online)
            ouro_quiescent(); /* the contract of an online thread */
        if (!lazy)
            settle();
    }
    finish();
    return 0;
}
