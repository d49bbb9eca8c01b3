/*
 * init.c — process start and fork: the one-time setup (options, the free
 * cookie key and hardened mode's seed, the thread-exit key, fork handlers)
 * and fatal reports.
 */
#include "config.h"
#include "object.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

ouro_hot_t ouro__hot;
ouro_counters_t ouro__counters;

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Fork holds every lock of ouro (38 in all), always in this order, so the
 * child starts with consistent structures; the child then hands the pools of
 * the threads it lost to the abandoned stacks. */
static void fork_prepare(void)
{
    ouro__gc_fork_prepare();
    ouro__qsbr_fork_prepare();
    ouro__weakref_fork_prepare();
    ouro__brc_fork_prepare();
    ouro__heap_fork_prepare();
    ouro__trace_fork_prepare();
    ouro__large_fork_prepare();
    ouro__arena_fork_prepare();
}

static void fork_parent(void)
{
    ouro__arena_fork_parent();
    ouro__large_fork_parent();
    ouro__trace_fork_parent();
    ouro__heap_fork_parent();
    ouro__brc_fork_parent();
    ouro__weakref_fork_parent();
    ouro__qsbr_fork_parent();
    ouro__gc_fork_parent();
}

static void fork_child(void)
{
    /* first every lock (the child is the forking thread, which holds them) */
    ouro__arena_fork_child();
    ouro__large_fork_parent();
    ouro__trace_fork_parent();
    ouro__heap_fork_child_unlock();
    ouro__brc_fork_parent();
    ouro__weakref_fork_parent();
    ouro__brc_fork_child_merge(); /* while the dead threads' heaps are intact */
    ouro__heap_fork_child();
    ouro__qsbr_fork_child();
    ouro__brc_fork_child_finish();
    ouro__gc_fork_child();
}

static void init_once(void)
{
    ouro__options_init();
    /* the cookie key, and the seed of hardened mode's generators */
    uint64_t rnd[2] = {0, 0};
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rnd[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&rnd ^ (uintptr_t)getpid();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rnd[1] = ((uint64_t)ts.tv_nsec << 32 ^ (uint64_t)ts.tv_sec) * 0xd6e8feb86659fd93ull ^ rnd[0];
        if (ouro__hardened_on())
            ouro__warn("hardened mode: getrandom failed, keys are seeded from the clock");
    }
    ouro__hot.key = (uintptr_t)rnd[0] | 1; /* never 0: a zero cookie means "allocated" */
    ouro__hardened_init(rnd[1]);
    ouro__heap_global_init();
    ouro__trace_init();
    ouro__brc_init();
    ouro__gc_init();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void ouro__init(void)
{
    pthread_once(&once, init_once);
}

__attribute__((constructor)) static void ouro_ctor(void)
{
    ouro__init();
}

__attribute__((destructor)) static void ouro_dtor(void)
{
    /* the exiting thread (usually main) runs no heap destructor: its
     * gathered remote frees would show as used in the statistics */
    ouro__pool_flush_remote_mine();
    ouro__trace_at_exit();
    if (ouro__options[OURO_OPTION_SHOW_STATS] == 1)
        ouro_stats_print(stderr);
    else if (ouro__options[OURO_OPTION_SHOW_STATS] == 2)
        ouro_stats_print_json(stderr);
}

static void vreport(const char *kind, const char *fmt, va_list ap)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "ouro: %s", kind);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
}

void ouro__fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport("error: ", fmt, ap);
    va_end(ap);
    abort();
}

void ouro__assert_fail(const char *cond, const char *file, int line)
{
    ouro__fatal("assertion failed: %s (%s:%d)", cond, file, line);
}

uint64_t ouro__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *ouro_version(void)
{
    return PACKAGE_VERSION;
}
