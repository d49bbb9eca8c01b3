/*
 * os.c — the platform boundary: every mmap, munmap and madvise of ouro goes
 * through here.  Owns nothing else; never touches pools or heaps.
 */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

size_t ouro__os_page_size(void)
{
    /* relaxed: every thread computes the same value */
    static _Atomic size_t page;
    size_t p = atomic_load_explicit(&page, memory_order_relaxed);
    if (p == 0) {
        p = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&page, p, memory_order_relaxed);
    }
    return p;
}

/* Fresh zeroed read-write memory, or NULL with errno = ENOMEM. */
void *ouro__os_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* Fresh zeroed memory aligned to `align` (a power of two, at least a page):
 * map more and trim both ends. */
void *ouro__os_map_aligned(size_t size, size_t align)
{
    if (size + align < size) {
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *raw = ouro__os_map(size + align);
    if (raw == NULL)
        return NULL;
    uintptr_t base = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = base - (uintptr_t)raw;
    size_t tail = align - head;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((uint8_t *)base + size, tail);
    return (void *)base;
}

void ouro__os_unmap(void *p, size_t size)
{
    if (munmap(p, size) != 0)
        ouro__warn("munmap(%p, %zu) failed: errno %d", p, size, errno);
}

/* Give the pages back to the OS; they read as zero afterwards. */
void ouro__os_purge(void *p, size_t size)
{
    if (madvise(p, size, MADV_DONTNEED) != 0)
        ouro__warn("madvise(%p, %zu, DONTNEED) failed: errno %d", p, size, errno);
}
