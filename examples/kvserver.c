/*
 * kvserver.c — a small multithreaded key-value "server" written against
 * ouro's public API (include/ouro.h), the way a program would use it.
 *
 * The data: a table (a container object with one reference slot per key)
 * of entries (plain objects holding a value buffer).  Worker threads serve
 * random requests:
 *   get      a lock-free read of a slot between ouro_read_begin() and
 *            ouro_read_end(): either taking a reference with
 *            ouro_try_incref() (get_counted) or using the entry in place
 *            without one (get_borrowed), as the RCU contract allows;
 *   put/del  replace a slot's entry with ouro_store()/ouro_setref(); one
 *            writer per slot (a striped mutex), readers never take it;
 *   session  two containers that refer to each other, dropped at once: a
 *            reference cycle that counting never frees, so the cycle
 *            collector must.
 * Every request ends with ouro_quiescent().  Meanwhile the main thread
 * collects on a schedule of its own with ouro_gc_collect() (automatic
 * collections are turned off), and a callback counts the collections.
 *
 * At the end the program drops the table and checks that everything was
 * reclaimed: every value read was intact, the collector freed exactly the
 * session objects, and no object, container or weak reference is left
 * (ouro_object_stats_get, ouro_gc_get_stats).  It exits 1 if not.
 *
 * Usage: kvserver [threads [requests-per-thread]]   (default 4 and 20000)
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ouro.h"

enum { NKEYS = 256, NSTRIPES = 16 };

/* ------------------------------------------------------------------ */
/* The object types                                                     */
/* ------------------------------------------------------------------ */

/* An entry: a plain object (it refers to no other object, so it has no
 * traverse and the collector never looks at it).  Immutable once it is
 * published in the table. */
typedef struct entry_s {
    ouro_object_t ob; /* the header comes first */
    unsigned key;
    unsigned version;
    size_t len;
    unsigned char *value; /* len bytes from ouro_malloc, each value_byte() */
} entry_t;

static unsigned char value_byte(unsigned key, unsigned version, size_t i)
{
    return (unsigned char)(key * 131u + version * 7u + i);
}

static void entry_dealloc(ouro_object_t *self)
{
    entry_t *e = (entry_t *)self;
    /* A borrowed reader (get_borrowed) may be reading the bytes right now:
     * ouro reuses the entry's own memory only after an RCU grace period,
     * and ouro_free_deferred() gives the buffer the same grace. */
    ouro_free_deferred(e->value);
}

static const ouro_type_t entry_type = {
    .name = "entry",
    .basic_size = sizeof(entry_t),
    .dealloc = entry_dealloc,
};

/* The table: a container, one slot per key.  The container contract
 * (ouro.h): slots are written with ouro_store()/ouro_setref() only, and
 * read in traverse with ouro_load(), because traverse runs on the
 * collector's thread while workers change the slots. */
typedef struct table_s {
    ouro_object_t ob;
    ouro_object_t *slot[NKEYS]; /* entry_t, or NULL */
} table_t;

static int table_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    table_t *t = (table_t *)self;
    for (int k = 0; k < NKEYS; k++) {
        ouro_object_t *e = ouro_load(&t->slot[k]);
        if (e != NULL) {
            int rc = visit(e, arg);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* clear (the collector breaking a cycle) and dealloc (count at zero) both
 * drop the references the table holds. */
static void table_drop(ouro_object_t *self)
{
    table_t *t = (table_t *)self;
    for (int k = 0; k < NKEYS; k++)
        ouro_setref(&t->slot[k], NULL);
}

static const ouro_type_t table_type = {
    .name = "table",
    .basic_size = sizeof(table_t),
    .traverse = table_traverse,
    .clear = table_drop,
    .dealloc = table_drop,
};

/* A session: a container that refers to its peer session and to the entry
 * it looked at.  Two peers form a cycle. */
typedef struct session_s {
    ouro_object_t ob;
    ouro_object_t *peer;  /* session_t */
    ouro_object_t *entry; /* entry_t, or NULL */
} session_t;

static int session_traverse(ouro_object_t *self, ouro_visit_fn *visit, void *arg)
{
    session_t *s = (session_t *)self;
    ouro_object_t *peer = ouro_load(&s->peer), *entry = ouro_load(&s->entry);
    int rc = peer ? visit(peer, arg) : 0;
    if (rc == 0 && entry)
        rc = visit(entry, arg);
    return rc;
}

static void session_drop(ouro_object_t *self)
{
    session_t *s = (session_t *)self;
    ouro_setref(&s->peer, NULL);
    ouro_setref(&s->entry, NULL);
}

static const ouro_type_t session_type = {
    .name = "session",
    .basic_size = sizeof(session_t),
    .traverse = session_traverse,
    .clear = session_drop,
    .dealloc = session_drop,
};

/* ------------------------------------------------------------------ */
/* The server                                                           */
/* ------------------------------------------------------------------ */

/* The main thread holds the table's reference until every worker is done,
 * so workers use the pointer without one. */
static table_t *table;
/* Writers of slot k hold stripe[k % NSTRIPES]: one writer per slot at a
 * time, as ouro_store() requires.  Readers take no lock. */
static pthread_mutex_t stripe[NSTRIPES];

typedef struct worker_s {
    pthread_t thread;
    unsigned id;
    long requests;
    uint64_t rng;
    /* what it did */
    long gets_counted, gets_borrowed, misses, puts, dels, sessions;
    long bad_values;  /* reads that found an entry not as it was written */
    long no_memory;   /* requests dropped for lack of memory */
} worker_t;

static _Atomic int workers_done;
/* Every worker registers with ouro before the first request is served. */
static pthread_barrier_t ready;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t next_random(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Whether entry `e` is the intact entry of key `k`. */
static bool entry_ok(const entry_t *e, unsigned k)
{
    if (e->key != k || e->value == NULL)
        return false;
    for (size_t i = 0; i < e->len; i++)
        if (e->value[i] != value_byte(k, e->version, i))
            return false;
    return true;
}

/* A counted reference to the entry of key k, or NULL. */
static entry_t *lookup(unsigned k)
{
    ouro_read_begin();
    ouro_object_t *o = ouro_load(&table->slot[k]);
    /* A writer may be dropping `o` right now: its memory stays valid until
     * ouro_read_end(), and ouro_try_incref() fails once its count is 0. */
    if (o != NULL && !ouro_try_incref(o))
        o = NULL;
    ouro_read_end();
    return (entry_t *)o;
}

static void get_counted(worker_t *w, unsigned k)
{
    entry_t *e = lookup(k);
    if (e == NULL) {
        w->misses++;
        return;
    }
    /* ours: usable for as long as we like, outside any read section */
    w->bad_values += !entry_ok(e, k);
    w->gets_counted++;
    ouro_decref(&e->ob);
}

static void get_borrowed(worker_t *w, unsigned k)
{
    ouro_read_begin();
    entry_t *e = (entry_t *)ouro_load(&table->slot[k]);
    /* No reference: the entry (and its value, see entry_dealloc) stays
     * readable until ouro_read_end() even if a writer drops it meanwhile.
     * The pointer must not be kept past the section. */
    if (e != NULL)
        w->bad_values += !entry_ok(e, k);
    ouro_read_end();
    if (e == NULL)
        w->misses++;
    else
        w->gets_borrowed++;
}

static void put(worker_t *w, unsigned k)
{
    entry_t *e = (entry_t *)ouro_new(&entry_type); /* one reference, ours */
    if (e == NULL) {
        w->no_memory++;
        return;
    }
    e->key = k;
    e->version = w->id << 24 | (unsigned)(w->puts & 0xffffff);
    e->len = 16 + next_random(&w->rng) % 112;
    e->value = ouro_malloc(e->len);
    if (e->value == NULL) {
        ouro_decref(&e->ob);
        w->no_memory++;
        return;
    }
    for (size_t i = 0; i < e->len; i++)
        e->value[i] = value_byte(k, e->version, i);
    /* before publishing: lock-free readers may ouro_try_incref() it */
    ouro_share(&e->ob);
    pthread_mutex_lock(&stripe[k % NSTRIPES]);
    /* the slot takes over our reference; we get the one it held */
    ouro_object_t *old = ouro_store(&table->slot[k], &e->ob);
    pthread_mutex_unlock(&stripe[k % NSTRIPES]);
    ouro_xdecref(old); /* the old entry goes when its readers' references do */
    w->puts++;
}

static void del(worker_t *w, unsigned k)
{
    pthread_mutex_lock(&stripe[k % NSTRIPES]);
    ouro_setref(&table->slot[k], NULL); /* store NULL, drop the slot's reference */
    pthread_mutex_unlock(&stripe[k % NSTRIPES]);
    w->dels++;
}

/* A "login": two sessions that refer to each other, one holding the entry
 * of key k.  Dropped at the end of the request, they form a cycle that
 * reference counting alone never frees. */
static void session(worker_t *w, unsigned k)
{
    session_t *a = (session_t *)ouro_new(&session_type);
    session_t *b = (session_t *)ouro_new(&session_type);
    if (a == NULL || b == NULL) {
        ouro_xdecref((ouro_object_t *)a); /* the header comes first: NULL stays NULL */
        ouro_xdecref((ouro_object_t *)b);
        w->no_memory++;
        return;
    }
    /* The collector sees a container from ouro_new() on, so even a new
     * object's slots are written with ouro_setref(). */
    ouro_incref(&b->ob);
    ouro_setref(&a->peer, &b->ob);
    ouro_incref(&a->ob);
    ouro_setref(&b->peer, &a->ob);
    ouro_setref(&a->entry, (ouro_object_t *)lookup(k)); /* passes lookup's reference on */
    /* Drop ours: each session is now held only by the other. */
    ouro_decref(&a->ob);
    ouro_decref(&b->ob);
    w->sessions++;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    /* Registered threads are offline by default: they bracket their
     * lock-free reads (as here) and never hold up a grace period.  A thread
     * that reads all the time could go online with ouro_thread_online() and
     * drop the brackets; then ouro_quiescent() below becomes mandatory, and
     * it must go offline (ouro_thread_offline) before it blocks. */
    ouro_thread_register();
    /* Known issue: a thread registering while a collection runs races with
     * it in brc.c (docs/api-objects.md, "Known issues"); the barrier keeps
     * this program clear of it. */
    pthread_barrier_wait(&ready);
    for (long i = 0; i < w->requests; i++) {
        uint64_t r = next_random(&w->rng);
        unsigned k = (unsigned)(r >> 32) % NKEYS;
        unsigned op = (unsigned)(r % 100);
        if (op < 35)
            get_counted(w, k);
        else if (op < 70)
            get_borrowed(w, k);
        else if (op < 88)
            put(w, k);
        else if (op < 94)
            del(w, k);
        else
            session(w, k);
        /* A request boundary: this thread holds no borrowed pointer.  It
         * also merges the counts other threads handed back to us (entries
         * we created and they dropped) and passes our freed memory to RCU. */
        ouro_quiescent();
    }
    /* relaxed: only the main thread's loop condition; pthread_join orders
     * everything this worker did before main reads its counters */
    atomic_fetch_add_explicit(&workers_done, 1, memory_order_relaxed);
    return NULL; /* ouro unregisters the thread at exit */
}

/* ------------------------------------------------------------------ */
/* The collector's side                                                 */
/* ------------------------------------------------------------------ */

/* Runs after every collection, on the collecting thread (the caller of
 * ouro_gc_collect, or ouro's background thread for automatic ones).  Relaxed counters: callbacks run
 * under the collector's lock, which main's last ouro_gc_collect() takes
 * after them, so main reads final values. */
static _Atomic size_t cb_collections, cb_collected;

static void on_collection(int phase, int generation, size_t collected, size_t uncollectable, void *arg)
{
    if (phase != OURO_GC_STOP)
        return;
    atomic_fetch_add_explicit(&cb_collections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cb_collected, collected, memory_order_relaxed);
}

static size_t sum_collections(const ouro_gc_stats_t *s)
{
    return s->gen[0].collections + s->gen[1].collections + s->gen[2].collections;
}

static size_t sum_collected(const ouro_gc_stats_t *s)
{
    return s->gen[0].collected + s->gen[1].collected + s->gen[2].collected;
}

static size_t sum_uncollectable(const ouro_gc_stats_t *s)
{
    return s->gen[0].uncollectable + s->gen[1].uncollectable + s->gen[2].uncollectable;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int failures;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "kvserver: FAILED: %s\n", what);
        failures++;
    }
}

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? atoi(argv[1]) : 4;
    long requests = argc > 2 ? atol(argv[2]) : 20000;
    if (nthreads < 1 || nthreads > 256 || requests < 0) {
        fprintf(stderr, "usage: kvserver [threads (1-256) [requests-per-thread]]\n");
        return 2;
    }

    if (ouro_gc_callback_add(on_collection, NULL) != 0)
        die("ouro_gc_callback_add");
    ouro_gc_stats_t gc0;
    ouro_gc_get_stats(&gc0);

    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&stripe[i], NULL);
    table = (table_t *)ouro_new(&table_type);
    if (table == NULL)
        die("ouro_new");
    /* to see the table go at the end */
    ouro_weakref_t *table_ref = ouro_weakref_new(&table->ob, NULL, NULL);
    if (table_ref == NULL)
        die("ouro_weakref_new");

    /* Collections on our own schedule, below: no automatic ones (by default
     * they run on ouro's background thread whenever more than 700 new
     * containers are alive: ouro_gc_set_threshold). */
    ouro_gc_disable();

    worker_t *w = calloc((size_t)nthreads, sizeof *w);
    if (w == NULL)
        die("calloc");
    if (pthread_barrier_init(&ready, NULL, (unsigned)nthreads + 1) != 0)
        die("pthread_barrier_init");
    for (int i = 0; i < nthreads; i++) {
        w[i].id = (unsigned)i;
        w[i].requests = requests;
        w[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        errno = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        if (errno != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&ready);
    double t0 = now_s();
    /* While the workers serve, the main thread collects: generation 0 every
     * 2 ms, generation 1 every tenth time, as CPython's thresholds would.
     * The collections run concurrently with the workers; none stops them. */
    long rounds = 0;
    while (atomic_load_explicit(&workers_done, memory_order_relaxed) < nthreads) {
        nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
        if (ouro_gc_collect(++rounds % 10 == 0 ? 1 : 0) < 0)
            die("ouro_gc_collect");
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(w[i].thread, NULL);
    double elapsed = now_s() - t0;

    /* Shutdown: drop the table.  Its count reaches zero at once (nothing
     * refers to it but us), and its dealloc drops every entry; what is left
     * are the session cycles no collection has found yet.  Every unreachable
     * cycle is freed within two full collections (a collection that reads a
     * count while its owner merges it keeps the object for the next one);
     * before each, merge the counts other threads queued to us. */
    ouro_decref(&table->ob);
    table = NULL;
    for (int k = 0; k < 2; k++) {
        ouro_quiescent();
        if (ouro_gc_collect(2) < 0)
            die("ouro_gc_collect");
    }
    ouro_quiescent();
    ouro_barrier(); /* and wait until freed memory is back in the allocator */

    /* ---- the summary, and the checks ---- */
    worker_t sum = {0};
    for (int i = 0; i < nthreads; i++) {
        sum.gets_counted += w[i].gets_counted;
        sum.gets_borrowed += w[i].gets_borrowed;
        sum.misses += w[i].misses;
        sum.puts += w[i].puts;
        sum.dels += w[i].dels;
        sum.sessions += w[i].sessions;
        sum.bad_values += w[i].bad_values;
        sum.no_memory += w[i].no_memory;
    }
    free(w);
    ouro_object_t *table_again = ouro_weakref_get(table_ref); /* NULL: the table is gone */
    ouro_xdecref(table_again);
    ouro_weakref_free(table_ref);
    ouro_gc_stats_t gc1;
    ouro_gc_get_stats(&gc1);
    ouro_object_stats_t obj;
    ouro_object_stats_get(&obj);

    size_t collections = sum_collections(&gc1) - sum_collections(&gc0);
    size_t collected = sum_collected(&gc1) - sum_collected(&gc0);
    size_t uncollectable = sum_uncollectable(&gc1) - sum_uncollectable(&gc0);
    size_t live_containers = gc1.young + gc1.objects[1] + gc1.objects[2] + gc1.objects[3];
    /* relaxed: the collections that wrote them are over (see on_collection) */
    size_t seen_collections = atomic_load_explicit(&cb_collections, memory_order_relaxed);
    size_t seen_collected = atomic_load_explicit(&cb_collected, memory_order_relaxed);

    printf("kvserver: %d workers, %ld requests in %.2f s: %ld gets (%ld counted, %ld borrowed, %ld misses), "
           "%ld puts, %ld deletes, %ld sessions\n",
           nthreads, (long)nthreads * requests, elapsed, sum.gets_counted + sum.gets_borrowed + sum.misses,
           sum.gets_counted, sum.gets_borrowed, sum.misses, sum.puts, sum.dels, sum.sessions);
    printf("  collector: %zu collections (the callback saw %zu), %zu cyclic objects freed, "
           "%zu counted uncollectable, longest %.2f ms\n",
           collections, seen_collections, collected, uncollectable, (double)gc1.pause_max_ns / 1e6);
    printf("  after shutdown: %zu live containers, %zu zombies, objects created %zu, freed %zu, "
           "%zu weak references\n",
           live_containers, gc1.zombies, obj.created, obj.freed, obj.weakrefs);

    fflush(stdout);
    check(sum.no_memory == 0, "no request ran out of memory");
    check(sum.bad_values == 0, "every value read was intact");
    check(collected == 2 * (size_t)sum.sessions, "the collector freed exactly the session objects");
    /* sessions have a clear: none of them is uncollectable (garbage whose
     * last reference went to its owner's merge queue is not counted) */
    check(uncollectable == 0, "no session was uncollectable");
    check(seen_collections == collections && seen_collected == collected,
          "the callback saw every collection");
    check(live_containers == 0 && gc1.zombies == 0, "no container is left");
    check(obj.created == obj.freed, "every object was freed");
    check(obj.deferred == 0, "every freed object's memory is back");
    check(table_again == NULL && obj.weakrefs == 0, "the table's weak reference is cleared");
    if (failures)
        return 1;
    printf("  OK: everything was reclaimed\n");
    return 0;
}
