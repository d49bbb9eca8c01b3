/* trace_leaker.c — a program that leaks one block on purpose, for
 * test_trace's leak-report test: run with OURO_TRACE_LEAKS=1, its stderr
 * must name trace_leaker_site (linked with -rdynamic, so dladdr finds it)
 * and the 4242 bytes, and must not name the block it frees; the same for
 * objects (trace_leaker_object_site, 424 bytes). */
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

/* an object of 424 bytes, leaked; another one released just before exit */
typedef struct leaker_obj_s {
    ouro_object_t ob;
    char body[424 - sizeof(ouro_object_t)];
} leaker_obj_t;
static const ouro_type_t leaker_type = {"leaker", sizeof(leaker_obj_t), 0, 0, 0, 0, 0};

ouro_object_t *volatile trace_leaker_object;

__attribute__((noinline)) void trace_leaker_object_site(void)
{
    trace_leaker_object = ouro_new(&leaker_type);
}

__attribute__((noinline)) void trace_leaker_object_freed(void)
{
    ouro_object_t *volatile o = ouro_new(&leaker_type);
    ouro_decref(o); /* no ouro_barrier: its memory is still held at exit */
}

int main(void)
{
    trace_leaker_site();
    trace_leaker_freed();
    trace_leaker_object_site();
    trace_leaker_object_freed();
    return 0;
}
