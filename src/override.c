/*
 * override.c — libouro-malloc: the standard allocation functions, all served
 * by ouro, for LD_PRELOAD or linking ahead of libc.  C++ new and delete reach
 * ouro through malloc and free.  Only argument conventions live here.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

#define OVERRIDE __attribute__((visibility("default")))

OVERRIDE void *malloc(size_t n)
{
    return ouro_malloc(n);
}

OVERRIDE void free(void *p)
{
    ouro_free(p);
}

OVERRIDE void *calloc(size_t n, size_t size)
{
    return ouro_calloc(n, size);
}

OVERRIDE void *realloc(void *p, size_t n)
{
    return ouro_realloc(p, n);
}

OVERRIDE void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return ouro_realloc(p, total);
}

OVERRIDE void *aligned_alloc(size_t align, size_t n)
{
    return ouro_aligned_alloc(align, n);
}

/* glibc's memalign rounds an alignment that is not a power of two up */
OVERRIDE void *memalign(size_t align, size_t n)
{
    if (align & (align - 1))
        align = align > ((size_t)1 << 62) ? 0 : (size_t)1 << (64 - __builtin_clzll(align));
    if (align == 0) {
        errno = EINVAL;
        return NULL;
    }
    return ouro_aligned_alloc(align, n);
}

OVERRIDE int posix_memalign(void **out, size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = ouro_aligned_alloc(align, n);
    if (p == NULL) {
        int e = errno;
        errno = saved;
        return e ? e : ENOMEM;
    }
    *out = p;
    return 0;
}

OVERRIDE void *valloc(size_t n)
{
    return ouro_aligned_alloc(ouro__os_page_size(), n);
}

OVERRIDE void *pvalloc(size_t n)
{
    size_t page = ouro__os_page_size();
    if (n > SIZE_MAX - page) {
        errno = ENOMEM;
        return NULL;
    }
    return ouro_aligned_alloc(page, (n + page - 1) & ~(page - 1));
}

OVERRIDE size_t malloc_usable_size(void *p)
{
    return ouro_usable_size(p);
}

OVERRIDE void free_sized(void *p, size_t n)
{
    ouro_free_sized(p, n);
}

OVERRIDE void free_aligned_sized(void *p, size_t align, size_t n)
{
    (void)align;
    ouro_free_sized(p, n);
}

OVERRIDE void cfree(void *p)
{
    ouro_free(p);
}
