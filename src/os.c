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

/* Fault injection (ouro_test_fail_maps): mapping requests to let through
 * before failing (-1: never fail), and how many to fail then. */
static _Atomic long fault_pass = -1, fault_fail;

void ouro_test_fail_maps(long pass, long fail)
{
    /* relaxed: a test sets this between its own calls */
    atomic_store_explicit(&fault_fail, fail, memory_order_relaxed);
    atomic_store_explicit(&fault_pass, fail > 0 ? pass : -1, memory_order_relaxed);
}

static bool fault_now(void)
{
    /* relaxed: set by a test between its own calls; no data depends on it */
    long pass = atomic_load_explicit(&fault_pass, memory_order_relaxed);
    if (likely(pass < 0))
        return false;
    if (pass > 0) {
        /* relaxed RMWs: exact on one thread, approximate under races (a
         * test of concurrent failures only needs some to fail); no order */
        atomic_fetch_sub_explicit(&fault_pass, 1, memory_order_relaxed);
        return false;
    }
    if (atomic_fetch_sub_explicit(&fault_fail, 1, memory_order_relaxed) <= 1)
        atomic_store_explicit(&fault_pass, -1, memory_order_relaxed);
    return true;
}

/* Fresh zeroed read-write memory, or NULL with errno = ENOMEM. */
void *ouro__os_map(size_t size)
{
    if (unlikely(fault_now())) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* The `size` bytes aligned to `align` inside `raw`, a mapping of size +
 * align bytes: unmap what lies before and after them. */
static void *trim_aligned(uint8_t *raw, size_t size, size_t align)
{
    uintptr_t base = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = base - (uintptr_t)raw;
    size_t tail = align - head;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((uint8_t *)base + size, tail);
    return (void *)base;
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
    return trim_aligned(raw, size, align);
}

void ouro__os_unmap(void *p, size_t size)
{
    if (munmap(p, size) != 0)
        ouro__warn("munmap(%p, %zu) failed: errno %d", p, size, errno);
}

/* Address space only: `size` bytes aligned to `align` (a power of two, at
 * least a page), no access and no memory behind them until committed; NULL
 * if the kernel refuses (RLIMIT_AS, say).  Not subject to fault injection:
 * it asks for no memory. */
void *ouro__os_reserve(size_t size, size_t align)
{
    if (size + align < size)
        return NULL;
    uint8_t *raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    return trim_aligned(raw, size, align);
}

/* Make [p, p + size), inside a reservation and not committed (never, or
 * decommitted since), fresh zeroed read-write memory; false with errno =
 * ENOMEM. */
bool ouro__os_commit(void *p, size_t size)
{
    if (unlikely(fault_now()) || mprotect(p, size, PROT_READ | PROT_WRITE) != 0) {
        errno = ENOMEM;
        return false;
    }
    return true;
}

/* Return committed [p, p + size) to the reservation: its memory to the OS,
 * no access.  False if the kernel refused (the range stays as it was). */
bool ouro__os_decommit(void *p, size_t size)
{
    ouro__os_purge(p, size);
    if (mprotect(p, size, PROT_NONE) != 0) {
        ouro__warn("mprotect(%p, %zu, PROT_NONE) failed: errno %d", p, size, errno);
        return false;
    }
    return true;
}

/* Give the pages back to the OS; they read as zero afterwards. */
void ouro__os_purge(void *p, size_t size)
{
    if (madvise(p, size, MADV_DONTNEED) != 0)
        ouro__warn("madvise(%p, %zu, DONTNEED) failed: errno %d", p, size, errno);
}

/* Make [p, p + size) inaccessible (hardened mode's guard pages): an access
 * faults.  Page-aligned.  False with errno set if the kernel refused (it
 * may, when the process reaches its limit of mappings: the guard splits a
 * mapping in two).  Not subject to fault injection: ouro_test_fail_maps
 * counts requests for memory, and a guard asks for none. */
bool ouro__os_guard(void *p, size_t size)
{
    if (mprotect(p, size, PROT_NONE) != 0) {
        int e = errno;
        ouro__warn("mprotect(%p, %zu, PROT_NONE) for a guard page failed: errno %d", p, size, e);
        errno = e;
        return false;
    }
    return true;
}
