/*
 * options.c — every OURO_* option in one table: its variable, default,
 * range and meaning.  Read once at start; settable by API.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* --enable-debug (OURO_DEBUG in config.h) turns debug mode on by default */
#ifdef OURO_DEBUG
#define DEBUG_DEFAULT 1
#else
#define DEBUG_DEFAULT 0
#endif
/* --enable-hardened (OURO_HARDENED_DEFAULT in config.h) turns hardened mode on by default */
#ifdef OURO_HARDENED_DEFAULT
#define HARDENED_DEFAULT 1
#else
#define HARDENED_DEFAULT 0
#endif

typedef struct option_desc_s {
    const char *env;
    long def, min, max;
    const char *what;
} option_desc_t;

static const option_desc_t table[OURO_OPTION_COUNT_] = {
    [OURO_OPTION_PURGE_DELAY] = {"OURO_PURGE_DELAY", 10, -1, 3600000,
                                 "ms a free pool keeps its memory before it is returned to the OS (-1 never)"},
    [OURO_OPTION_SHOW_STATS] = {"OURO_SHOW_STATS", 0, 0, 2, "print statistics to stderr at exit: 1 text, 2 JSON"},
    [OURO_OPTION_VERBOSE] = {"OURO_VERBOSE", 1, 0, 2, "0 silent, 1 warnings, 2 informational"},
    [OURO_OPTION_NUMA] = {"OURO_NUMA", 1, 0, 1, "one set of arenas per NUMA node (hwloc)"},
    [OURO_OPTION_GC] = {"OURO_GC", 1, 0, 1, "automatic cycle collections"},
    [OURO_OPTION_GC_THRESHOLD] = {"OURO_GC_THRESHOLD", 700, 0, 1L << 40,
                                  "generation-0 threshold of the collector (0: no automatic collections)"},
    [OURO_OPTION_GC_MARKERS] = {"OURO_GC_MARKERS", 0, -1, 64,
                                "marker threads per collection (0 or -1: the core count)"},
    [OURO_OPTION_DEBUG] = {"OURO_DEBUG", DEBUG_DEFAULT, 0, 1,
                           "debug mode: guard bytes, fill patterns, misuse reports with call sites"},
    [OURO_OPTION_HARDENED] = {"OURO_HARDENED", HARDENED_DEFAULT, 0, 1,
                              "hardened mode: encoded free lists, random allocation order, guard pages"},
    [OURO_OPTION_TRACE] = {"OURO_TRACE", 0, 0, OURO_TRACE_MAX_FRAMES,
                           "allocation tracing: frames recorded per allocation (0 off)"},
    [OURO_OPTION_TRACE_SAMPLE] = {"OURO_TRACE_SAMPLE", 1, 0, 1L << 40,
                                  "tracing: mean bytes between traced allocations (0 or 1: every one)"},
    [OURO_OPTION_TRACE_LEAKS] = {"OURO_TRACE_LEAKS", 0, 0, 1,
                                 "print the traced blocks still allocated at exit, by call site"},
    [OURO_OPTION_ARENA_RESERVE] = {"OURO_ARENA_RESERVE", 65536, 0, 16777216,
                                   "MiB of address space reserved for arenas at start (0: none)"},
};

long ouro__options[OURO_OPTION_COUNT_] = {
    [OURO_OPTION_PURGE_DELAY] = 10,
    [OURO_OPTION_SHOW_STATS] = 0,
    [OURO_OPTION_VERBOSE] = 1,
    [OURO_OPTION_NUMA] = 1,
    [OURO_OPTION_GC] = 1,
    [OURO_OPTION_GC_THRESHOLD] = 700,
    [OURO_OPTION_DEBUG] = DEBUG_DEFAULT,
    [OURO_OPTION_HARDENED] = HARDENED_DEFAULT,
    [OURO_OPTION_TRACE_SAMPLE] = 1,
    [OURO_OPTION_ARENA_RESERVE] = 65536,
};

/* Option i from its variable, or its default (named in a warning if the
 * variable holds something else than a number in range). */
static void option_read(int i)
{
    ouro__options[i] = table[i].def;
    const char *s = getenv(table[i].env);
    if (s == NULL || *s == '\0')
        return;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < table[i].min || v > table[i].max) {
        ouro__warn("%s=\"%s\" is not a number in [%ld, %ld] (%s); keeping %ld", table[i].env, s, table[i].min,
                   table[i].max, table[i].what, table[i].def);
        return;
    }
    ouro__options[i] = v;
}

void ouro__options_init(void)
{
    /* OURO_VERBOSE first: it governs the warnings about the others (a bad
     * OURO_VERBOSE itself is reported at the default verbosity, 1) */
    option_read(OURO_OPTION_VERBOSE);
    for (int i = 0; i < OURO_OPTION_COUNT_; i++)
        if (i != OURO_OPTION_VERBOSE)
            option_read(i);
}

long ouro_option_get(ouro_option_t option)
{
    ouro__init(); /* the environment first */
    if ((unsigned)option >= OURO_OPTION_COUNT_) {
        errno = EINVAL;
        return -1;
    }
    /* the collector's settings, which its own API changes too */
    if (option == OURO_OPTION_GC)
        return ouro_gc_is_enabled();
    if (option == OURO_OPTION_GC_THRESHOLD) {
        long t[3];
        ouro_gc_get_threshold(t);
        return t[0];
    }
    return ouro__options[option];
}

int ouro_option_set(ouro_option_t option, long value)
{
    /* the environment first, so that it does not overwrite this value
     * (a call from a constructor that runs before ouro's) */
    ouro__init();
    if ((unsigned)option >= OURO_OPTION_COUNT_ || value < table[option].min || value > table[option].max) {
        errno = EINVAL;
        return -1;
    }
    /* the arenas' NUMA placement and reservation are chosen once, when the
     * first arena is mapped (usually before main): a later change would do
     * nothing */
    if ((option == OURO_OPTION_NUMA || option == OURO_OPTION_ARENA_RESERVE) && value != ouro__options[option] &&
        ouro__arena_numa_read()) {
        errno = EPERM;
        return -1;
    }
    /* the collector reads these two once, at start; later they are its
     * settings, which the option then sets (and ouro_option_get reads) */
    if (option == OURO_OPTION_GC) {
        if (value)
            ouro_gc_enable();
        else
            ouro_gc_disable();
        ouro__options[option] = value;
        return 0;
    }
    if (option == OURO_OPTION_GC_THRESHOLD) {
        long t[3];
        ouro_gc_get_threshold(t);
        ouro__options[option] = value;
        return ouro_gc_set_threshold(value, t[1], t[2]);
    }
    /* blocks already handed out have the layout of the mode they were
     * allocated in: the mode cannot change under them */
    /* hardened mode: pools keep the key they were set up with, arenas and
     * large mappings their guard page (or none); half the heap in each
     * mode would be no hardening at all */
    if ((option == OURO_OPTION_DEBUG || option == OURO_OPTION_HARDENED) && value != ouro__options[option]) {
        errno = EPERM;
        return -1;
    }
    /* tracing has a switch of its own, which keeps the option in step */
    if (option == OURO_OPTION_TRACE) {
        if (value == 0) {
            ouro_trace_stop();
            return 0;
        }
        return ouro_trace_start((int)value);
    }
    ouro__options[option] = value;
    return 0;
}

void ouro__warn(const char *fmt, ...)
{
    if (ouro__options[OURO_OPTION_VERBOSE] < 1)
        return;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "ouro: warning: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
}
