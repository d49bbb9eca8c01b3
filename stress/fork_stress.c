/*
 * fork_stress.c — fork while other threads allocate and free.
 *
 * T worker threads allocate blocks of random sizes (pattern-filled), swap
 * them through a shared slot array (so most frees are cross-thread) and
 * check and free what they take out.  Meanwhile the main thread forks
 * repeatedly.  Each child allocates a block in every size class
 * (ouro_class_block_size) and some large ones, checks their patterns, runs
 * ouro_collect(1) and ouro_stats_get, starts a thread that does the same,
 * joins it and _exit(0)s.  The parent checks every child exits with 0.
 * Watchdogs: the parent has an alarm for the whole run, each child one of
 * its own, so a hang (a lock held across fork) becomes a failure.
 *
 * Not run under ThreadSanitizer (fork with threads is not supported
 * there): it prints a SKIP line and exits 0.
 *
 * Usage: fork_stress [-t THREADS] [-d SECONDS] [-s SEED]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "testutil.h"

#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
/* Skipped under ASan: clang 14's ASan runtime can hang a fork child by
 * itself.  With the skip removed, 2 of 4 five-second runs had a child hang
 * on the first fork; its stacks (gdb, thread apply all bt) hold no ouro
 * frame: the child's new thread waits forever in ASan's own allocator
 * (SizeClassAllocator64::GetFromAllocator, from calloc in
 * pthread_getattr_np during AsanThread::Init) on a lock some parent thread
 * held at the fork, and the forking thread waits in pthread_join.  The
 * plain build runs it (thousands of forks a run). */
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif

#define NAME "fork"
#define NSLOTS 1024
#define MAX_THREADS 256
#define CHILD_TIMEOUT_S 20
#define PARENT_SLACK_S 60

/* failures: the recorder of tests/testutil.h, without source locations */
#define fail(...) TFAIL_PLAIN(__VA_ARGS__)
#define now_s tu_now_s
#define sleep_us tu_sleep_us

/* ---- the parent's workers ---- */
typedef struct rec_s {
    void *p;
    size_t size;
    uint64_t seed;
} rec_t;

static rec_t *_Atomic slots[NSLOTS];
static _Atomic int stop;
static _Atomic unsigned long total_ops;

static size_t random_size(tu_rng_t *rng)
{
    unsigned r = (unsigned)tu_rng_range(rng, 0, 99);
    if (r < 75)
        return (size_t)tu_rng_range(rng, 1, 512);
    if (r < 97)
        return (size_t)tu_rng_range(rng, 513, 16384);
    return (size_t)tu_rng_range(rng, 16385, 300000);
}

static void *worker(void *arg)
{
    tu_rng_t rng = tu_rng_make((uint64_t)(uintptr_t)arg);
    unsigned long ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed) &&
           !atomic_load_explicit(&failures, memory_order_relaxed)) {
        size_t size = random_size(&rng);
        rec_t *r = ouro_malloc(sizeof *r);
        void *p = ouro_malloc(size);
        if (!r || !p) {
            fail("ouro_malloc failed in a worker: %s", strerror(errno));
            break;
        }
        r->p = p;
        r->size = size;
        r->seed = tu_rng_next(&rng);
        fill_pattern(p, size, r->seed);
        rec_t *old = atomic_exchange(&slots[tu_rng_range(&rng, 0, NSLOTS - 1)], r);
        if (old) {
            size_t bad = pattern_mismatch(old->p, old->size, old->seed);
            if (bad != old->size) {
                fail("block %p of %zu bytes: pattern broken at %zu", old->p, old->size, bad);
                break;
            }
            ouro_free(old->p);
            ouro_free(old);
        }
        ops++;
    }
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

/* ---- the child ---- */
static void child_fail(const char *msg)
{
    (void)!write(2, msg, strlen(msg));
    _exit(3);
}

static void child_alarm(int sig)
{
    (void)sig;
    static const char m[] = "stress fork: child hung (watchdog)\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(4);
}

/* Allocate in every class plus large blocks, check, free; 0 if fine. */
static int child_allocs(uint64_t seed)
{
    enum { PER_CLASS = 3 };
    void *blocks[OURO_NUM_CLASSES][PER_CLASS];
    size_t sizes[OURO_NUM_CLASSES];
    for (int c = 0; c < OURO_NUM_CLASSES; c++) {
        size_t bs = ouro_class_block_size(c);
        if (bs == 0)
            return 1;
        sizes[c] = bs;
        for (int k = 0; k < PER_CLASS; k++) {
            void *p = ouro_malloc(bs);
            if (!p || ouro_usable_size(p) < bs)
                return 2;
            fill_pattern(p, bs, seed + (uint64_t)c * PER_CLASS + (uint64_t)k);
            blocks[c][k] = p;
        }
    }
    void *big = ouro_malloc(300000);
    if (!big)
        return 3;
    fill_pattern(big, 300000, seed ^ 0xb16);
    for (int c = 0; c < OURO_NUM_CLASSES; c++)
        for (int k = 0; k < PER_CLASS; k++) {
            if (!check_pattern(blocks[c][k], sizes[c], seed + (uint64_t)c * PER_CLASS + (uint64_t)k))
                return 4;
            ouro_free(blocks[c][k]);
        }
    if (!check_pattern(big, 300000, seed ^ 0xb16))
        return 5;
    ouro_free(big);
    return 0;
}

static void *child_thread(void *arg)
{
    return (void *)(intptr_t)child_allocs((uint64_t)(uintptr_t)arg);
}

static void child_main(uint64_t seed)
{
    signal(SIGALRM, child_alarm);
    alarm(CHILD_TIMEOUT_S);
    if (child_allocs(seed) != 0)
        child_fail("stress fork: child: allocation check failed on the forking thread\n");
    pthread_t th;
    if (pthread_create(&th, NULL, child_thread, (void *)(uintptr_t)(seed + 1)) != 0)
        child_fail("stress fork: child: pthread_create failed\n");
    void *ret;
    pthread_join(th, &ret);
    if (ret != NULL)
        child_fail("stress fork: child: allocation check failed on a new thread\n");
    ouro_collect(1);
    ouro_stats_t st;
    ouro_stats_get(&st);
    if (child_allocs(seed + 2) != 0)
        child_fail("stress fork: child: allocation check failed after ouro_collect\n");
    _exit(0);
}

static void parent_alarm(int sig)
{
    (void)sig;
    static const char m[] = "stress fork: FAILED watchdog: the run hung (a child or the parent)\n";
    (void)!write(1, m, sizeof m - 1);
    _exit(1);
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-t THREADS] [-d SECONDS] [-s SEED]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    int threads = 4;
    double seconds = 10;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int opt;
    while ((opt = getopt(argc, argv, "t:d:s:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        default: usage(argv[0]);
        }
    }
    if (threads < 1 || threads > MAX_THREADS || seconds <= 0)
        usage(argv[0]);
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifdef STRESS_TSAN
    printf("stress " NAME ": SKIP under TSan\n");
    return 0;
#endif
#ifdef STRESS_ASAN
    printf("stress " NAME ": SKIP under ASan (its runtime's allocator can hang a fork child)\n");
    return 0;
#endif
    signal(SIGALRM, parent_alarm);
    alarm((unsigned)seconds + PARENT_SLACK_S);

    static pthread_t th[MAX_THREADS];
    tu_rng_t rng = tu_rng_make(seed);
    for (int i = 0; i < threads; i++) {
        int e = pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)tu_rng_next(&rng));
        if (e) {
            printf("stress " NAME ": FAILED pthread_create: %s\n", strerror(e));
            return 1;
        }
    }
    double t0 = now_s();
    unsigned long forks = 0;
    while (now_s() - t0 < seconds && atomic_load(&failures) == 0) {
        uint64_t cseed = tu_rng_next(&rng);
        pid_t pid = fork();
        if (pid < 0) {
            fail("fork: %s", strerror(errno));
            break;
        }
        if (pid == 0)
            child_main(cseed);
        int status;
        pid_t got;
        while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
            ;
        if (got < 0) {
            fail("waitpid: %s", strerror(errno));
            break;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (WIFSIGNALED(status))
                fail("child %lu (pid %d) killed by signal %d (%s)", forks, (int)pid,
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
            else
                fail("child %lu (pid %d) exited with status %d", forks, (int)pid,
                     WEXITSTATUS(status));
            break;
        }
        forks++;
        /* also allocate on the forking thread between forks */
        void *p = ouro_malloc((size_t)tu_rng_range(&rng, 1, 4096));
        ouro_free(p);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;
    for (int i = 0; i < NSLOTS; i++) {
        rec_t *r = atomic_exchange(&slots[i], NULL);
        if (r) {
            if (!check_pattern(r->p, r->size, r->seed))
                fail("drain: block %p of %zu bytes: pattern broken", r->p, r->size);
            ouro_free(r->p);
            ouro_free(r);
        }
    }
    alarm(0);
    unsigned long nf = atomic_load(&failures);
    if (nf) {
        printf("stress " NAME ": FAILED seed=%#llx threads=%d after %lu fork(s): %s\n",
               (unsigned long long)seed, threads, forks, first_failure);
        return 1;
    }
    if (getenv("STRESS_VERBOSE"))
        fprintf(stderr, "fork: %lu children, all exited 0\n", forks);
    printf("stress " NAME ": OK threads=%d seconds=%.1f ops=%lu\n", threads, elapsed,
           atomic_load(&total_ops) + forks);
    return 0;
}
