/* The library's allocator: jemalloc through its non-standard API
 * (mallocx/sdallocx/rallocx), so records can later come from per-NUMA-node
 * arenas and sized deallocation skips a size lookup. The user's malloc is
 * left alone: we never call malloc/free on library records, and the user's
 * memory never reaches sdallocx.
 *
 * Sanitizer builds (CF_ASAN, CF_TSAN) use libc's malloc instead: ASan and
 * LSan then see every record (use-after-free, leaks), and TSan sees the
 * hand-over of reused memory between threads, which it cannot see inside
 * an uninstrumented jemalloc (it would report false races).
 *
 * Thread safety: everything here may be called from any thread; the
 * preferred node is per thread. */
#include "sys/alloc.h"
#include "sys/numa_alloc.h"

#include <stdio.h>
#include <string.h>

#if defined(CF_ASAN) || defined(CF_TSAN)
#define CF__ALLOC_LIBC 1
#include <stdlib.h>
#else
#include <jemalloc/jemalloc.h>
#endif

static _Thread_local int cf__tls_node = -1;

void cf__alloc_set_thread_node(int node)
{
    cf__tls_node = node < 0 ? -1 : node;
}

int cf__alloc_thread_node(void)
{
    return cf__tls_node;
}

/* ---- NUMA hook ----
 * The jemalloc arena that serves `node` (-1: no preference). 0 means "the
 * default arena selection" (jemalloc picks per thread). numa_alloc.c
 * creates one arena per node on first use (arenas.create with extent
 * hooks that bind its memory to the node) and returns its index. */
static unsigned arena_for_node(int node)
{
    return cf__numa_arena(node); /* numa_alloc.c: arenas bound to the node */
}

#ifndef CF__ALLOC_LIBC
static inline int flags_for_node(int node)
{
    unsigned a = arena_for_node(node);
    return a ? (int)MALLOCX_ARENA(a) : 0;
}
#endif

/* mallocx(0) is undefined: every size is at least 1, on both sides. */
static inline size_t nz(size_t size)
{
    return size ? size : 1;
}

void *cf__alloc_on_node(size_t size, int node)
{
#ifdef CF__ALLOC_LIBC
    (void)arena_for_node(node);
    return malloc(nz(size));
#else
    return mallocx(nz(size), flags_for_node(node));
#endif
}

void *cf__alloc_aligned_on_node(size_t size, size_t align, int node)
{
#ifdef CF__ALLOC_LIBC
    (void)arena_for_node(node);
    return aligned_alloc(align, nz(size));
#else
    return mallocx(nz(size), flags_for_node(node) | MALLOCX_ALIGN(align) | MALLOCX_TCACHE_NONE);
#endif
}

void cf__free_aligned(void *p, size_t size)
{
    if (!p) return;
#ifdef CF__ALLOC_LIBC
    (void)size;
    free(p);
#else
    (void)size;
    dallocx(p, MALLOCX_TCACHE_NONE);
#endif
}

void *cf__alloc(size_t size)
{
    return cf__alloc_on_node(size, cf__tls_node);
}

void *cf__calloc(size_t size)
{
#ifdef CF__ALLOC_LIBC
    return calloc(1, nz(size));
#else
    return mallocx(nz(size), flags_for_node(cf__tls_node) | MALLOCX_ZERO);
#endif
}

void *cf__realloc(void *p, size_t old_size, size_t new_size)
{
    (void)old_size;
    if (!p) return cf__alloc(new_size);
#ifdef CF__ALLOC_LIBC
    return realloc(p, nz(new_size));
#else
    return rallocx(p, nz(new_size), flags_for_node(cf__tls_node));
#endif
}

void cf__free(void *p, size_t size)
{
    if (!p) return;
#ifdef CF__ALLOC_LIBC
    (void)size;
    free(p);
#else
    if (size) sdallocx(p, size, 0);
    else dallocx(p, 0);
#endif
}

char *cf__strdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = cf__alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char *cf__vformat(const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *msg = n >= 0 ? cf__alloc((size_t)n + 1) : NULL;
    /* The analyzer does not see va_copy initialise `again` (a false
     * positive of clang-analyzer-valist). */
    if (msg)
        vsnprintf(msg, (size_t)n + 1, fmt, again); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(again);
    return msg;
}

void cf__free_str(char *s)
{
    if (s) cf__free(s, strlen(s) + 1);
}
