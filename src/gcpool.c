/*
 * gcpool.c — the collector's marker threads: helpers parked between
 * passes, each running a pass with its id when the driver starts one
 * (ouro__gc_pool_run), with a barrier at its end; their start (as many as
 * a collection wants, never stopped: a pool kept for the process), their
 * number (ouro_gc_set_markers / ouro_gc_get_markers) and fork.  What a
 * pass does is gcmark.c's; this file knows nothing of G or marking.
 * Marker 0 is always the driver's own thread.
 */
#include "config.h"
#include "gc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- marker threads ---- */
static pthread_mutex_t mk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mk_go = PTHREAD_COND_INITIALIZER, mk_done = PTHREAD_COND_INITIALIZER;
static int mk_threads;            /* [mk_lock] helper threads running */
static unsigned long mk_epoch;    /* [mk_lock] bumped per phase */
static int mk_pending;            /* [mk_lock] helpers still in the phase */
static gc_pass_fn *mk_fn;         /* [mk_lock] the phase: mk_fn(mk_arg, id) */
static void *mk_arg;              /* [mk_lock] */
static int mk_active;             /* [mk_lock] helpers 1..mk_active-1 take part */
static _Atomic int markers_wanted; /* 0: the option, else the core count */

static void *marker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    ouro_thread_register();
    unsigned long seen = 0;
    pthread_mutex_lock(&mk_lock);
    for (;;) {
        while (mk_epoch == seen)
            pthread_cond_wait(&mk_go, &mk_lock);
        seen = mk_epoch;
        if (id >= mk_active)
            continue;
        gc_pass_fn *fn = mk_fn;
        void *fn_arg = mk_arg;
        pthread_mutex_unlock(&mk_lock);
        ouro_read_begin(); /* an RCU reader while traversing */
        fn(fn_arg, id);
        ouro_read_end();
        /* the work chunks we freed are other markers' blocks: push them
         * now, as we may sleep until the next collection */
        ouro__pool_flush_remote_mine();
        pthread_mutex_lock(&mk_lock);
        if (--mk_pending == 0)
            pthread_cond_signal(&mk_done);
    }
    return NULL;
}

static int cores(void)
{
    static int n;
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = ouro__hw_cores();
        if (n <= 0)
            n = c > 0 ? (int)c : 1;
    }
    return n;
}

static int clamp_markers(int n)
{
    return n < 1 ? 1 : n > OURO_GC_MAX_MARKERS ? OURO_GC_MAX_MARKERS : n;
}

/* The markers set (by ouro_gc_set_markers, else OURO_GC_MARKERS), 0 if
 * neither.  markers_wanted: a setting read as a heuristic, relaxed. */
static int markers_set(void)
{
    int n = atomic_load_explicit(&markers_wanted, memory_order_relaxed);
    if (n == 0)
        n = (int)ouro__options[OURO_OPTION_GC_MARKERS];
    return n > 0 ? n : 0;
}

int ouro_gc_get_markers(void)
{
    int n = markers_set();
    return clamp_markers(n ? n : cores());
}

/* Of n cores, this thread's and those no other thread of the machine
 * runs on now: n less the other runnable threads (the fourth field of
 * /proc/loadavg, "runnable/total", counts them all, this one included),
 * at least 1; n if that cannot be read. */
static int cores_free(int n)
{
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return n;
    char buf[128];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return n;
    buf[r] = '\0';
    char *p = buf;
    for (int field = 0; field < 3 && p; field++)
        if ((p = strchr(p, ' ')) != NULL)
            p++;
    long running = p ? strtol(p, NULL, 10) : 0;
    if (running < 1)
        return n;
    long f = (long)n - (running - 1);
    return f < 1 ? 1 : f > n ? n : (int)f;
}

int ouro__gc_markers_for(size_t members)
{
    int set = markers_set();
    int K = clamp_markers(set ? set : cores());
    if ((size_t)K * 4096 > members)
        K = members >= 8192 ? (int)(members / 4096) : 1; /* too little to share */
    /* By default, only the free cores, and this thread's: a marker
     * sharing a core with a running thread takes that thread's time slices
     * (a running mutator's longest pause was 4-8 ms with 2 markers on 2
     * cores, under 1 ms with one) and the collection gains nothing */
    if (!set && K > 1) {
        int f = cores_free(cores());
        K = f < K ? f : K;
    }
    return K;
}

int ouro_gc_set_markers(int n)
{
    if (n < 0 || n > OURO_GC_MAX_MARKERS) {
        errno = EINVAL;
        return -1;
    }
    atomic_store_explicit(&markers_wanted, n, memory_order_relaxed);
    return 0;
}

/* Start helper threads until `want` markers (this thread included) can
 * run; returns how many can. */
int ouro__gc_pool_ready(int want)
{
    pthread_mutex_lock(&mk_lock);
    while (mk_threads < want - 1) {
        pthread_t t;
        if (pthread_create(&t, NULL, marker_main, (void *)(intptr_t)(mk_threads + 1)) != 0)
            break;
        pthread_detach(t);
        mk_threads++;
    }
    int n = mk_threads + 1 < want ? mk_threads + 1 : want;
    pthread_mutex_unlock(&mk_lock);
    return n;
}

/* Run fn(arg, id) on `n` markers: this thread is marker 0. */
void ouro__gc_pool_run(int n, gc_pass_fn *fn, void *arg)
{
    int helpers = n - 1;
    if (helpers > 0) {
        pthread_mutex_lock(&mk_lock);
        mk_fn = fn;
        mk_arg = arg;
        mk_active = n;
        mk_pending = helpers;
        mk_epoch++;
        pthread_cond_broadcast(&mk_go);
        pthread_mutex_unlock(&mk_lock);
    }
    fn(arg, 0);
    if (helpers > 0) {
        pthread_mutex_lock(&mk_lock);
        while (mk_pending)
            pthread_cond_wait(&mk_done, &mk_lock);
        pthread_mutex_unlock(&mk_lock);
    }
}

void ouro__gc_mark_fork_prepare(void)
{
    pthread_mutex_lock(&mk_lock);
}

void ouro__gc_mark_fork_parent(void)
{
    pthread_mutex_unlock(&mk_lock);
}

/* The child has no marker threads (mk_lock is released by the parent
 * hook, which the child runs first). */
void ouro__gc_mark_fork_child(void)
{
    mk_threads = 0;
    mk_pending = 0;
    pthread_cond_init(&mk_go, NULL);
    pthread_cond_init(&mk_done, NULL);
}
