/*
 * tuchild.h — running a scenario in a forked child and reading what it
 * printed, for the tests that check how ouro reports misuse or corruption
 * (the report ends the process).  Check tests only: it asserts with Check.
 */
#ifndef OURO_TUCHILD_H
#define OURO_TUCHILD_H

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void tu_child_fn(void *arg);

/* Run fn(arg) in a forked child with its stdout and stderr into a pipe;
 * wait for it and return its output (a static buffer, overwritten by the
 * next call) and its wait status.  A child whose fn returns exits 0. */
static inline const char *tu_run_child(tu_child_fn *fn, void *arg, int *status)
{
    static char buf[65536];
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        fn(arg);
        fflush(NULL);
        _exit(0); /* not reached if the misuse was caught */
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, status, 0), pid);
    return buf;
}

/* fn(arg) must die of signal `sig`; returns its output. */
static inline const char *tu_run_death(tu_child_fn *fn, void *arg, int sig)
{
    int status;
    const char *out = tu_run_child(fn, arg, &status);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sig, "child did not die of signal %d (status %#x): %s",
                  sig, status, out);
    return out;
}

static inline void tu_expect_in(const char *out, const char *needle)
{
    ck_assert_msg(strstr(out, needle) != NULL, "output lacks \"%s\": %s", needle, out);
}

/* "%p" of p, as ouro's reports print addresses (a static buffer). */
static inline const char *tu_addr(const void *p)
{
    static char s[64];
    snprintf(s, sizeof s, "%p", p);
    return s;
}

#endif /* OURO_TUCHILD_H */
