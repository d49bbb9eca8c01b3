/* trace_leaker.c — a program that leaks one block on purpose, for
 * test_trace's leak-report test: run with OURO_TRACE_LEAKS=1, its stderr
 * must name trace_leaker_site (linked with -rdynamic, so dladdr finds it)
 * and the 4242 bytes, and must not name the block it frees. */
#include <ouro.h>

void *volatile trace_leaker_keep;

/* noinline, and the result stored rather than returned: the allocation's
 * return address lies in this function, not in main (no tail call) */
__attribute__((noinline)) void trace_leaker_site(void)
{
    trace_leaker_keep = ouro_malloc(4242);
}

__attribute__((noinline)) void trace_leaker_freed(void)
{
    void *volatile p = ouro_malloc(777);
    ouro_free(p);
}

int main(void)
{
    trace_leaker_site();
    trace_leaker_freed();
    return 0;
}
