/* demo.c — shows what the allocator does, step by step, and prints the
 * statistics ouro keeps: per-thread pools, cross-thread frees without a
 * lock, pools of exited threads adopted by others, memory back to the OS. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ouro.h"

enum { THREADS = 4, PER_THREAD = 200000 };

static void *blocks[THREADS][PER_THREAD];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *producer(void *arg)
{
    int t = (int)(long)arg;
    unsigned x = 12345u + (unsigned)t;
    for (int i = 0; i < PER_THREAD; i++) {
        x = x * 1103515245u + 12345u;
        size_t n = 8 + (x >> 16) % 500;
        blocks[t][i] = ouro_malloc(n);
        memset(blocks[t][i], t, n);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    int t = (int)(long)arg;
    /* frees the blocks of the *next* thread: all cross-thread frees */
    int victim = (t + 1) % THREADS;
    for (int i = 0; i < PER_THREAD; i++)
        ouro_free(blocks[victim][i]);
    return NULL;
}

static void show(const char *what)
{
    ouro_stats_t s;
    ouro_stats_get(&s);
    printf("%-44s reserved %7.1f MiB  committed %7.1f MiB  in use %7.1f MiB  pools %5zu  abandoned %4zu\n",
           what, s.reserved / 1048576.0, s.committed / 1048576.0, s.in_use / 1048576.0, s.pools,
           s.abandoned_pools);
}

static void run(void *(*fn)(void *), const char *what)
{
    pthread_t th[THREADS];
    double t0 = now();
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, fn, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    double dt = now() - t0;
    char line[128];
    snprintf(line, sizeof line, "%s (%.1f Mops/s)", what, THREADS * PER_THREAD / dt / 1e6);
    show(line);
}

int main(void)
{
    printf("ouro %s allocator demo: %d threads x %d blocks of 8..508 bytes\n\n", ouro_version(), THREADS,
           PER_THREAD);
    show("start");
    run(producer, "allocated and filled; threads exited");
    run(consumer, "freed by other threads; threads exited");
    void *again = ouro_malloc(100); /* this thread adopts pools of exited threads */
    show("main thread allocated once more");
    ouro_free(again);
    ouro_option_set(OURO_OPTION_PURGE_DELAY, 0);
    ouro_collect(1);
    show("after ouro_collect(1): memory back to OS");
    printf("\n");
    ouro_stats_print(stdout);
    return 0;
}
