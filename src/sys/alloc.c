/* The library's allocator. Three builds of it:
 *
 * - Default: libc's malloc/free for ordinary blocks, and mappings of our
 *   own (numa_alloc.c: mmap, bound to the node before the first touch) for
 *   the few blocks that must live on a NUMA node, the slabs' 2 MiB chunks
 *   and the workers' deque buffers. No allocator is linked in, so the
 *   library dlopens, links fully -static and leaves the program's malloc
 *   alone (docs/LINKING.md).
 * - CF_JEMALLOC: jemalloc through its non-standard API (mallocx/sdallocx/
 *   rallocx), every block from the arena of the thread's node (numa_alloc.c
 *   creates one per node). The user's malloc is still left alone: we never
 *   call malloc/free on library blocks, and the user's memory never reaches
 *   sdallocx.
 * - Sanitizer builds (CF_ASAN, CF_TSAN): libc's malloc for everything, node
 *   blocks included: ASan and LSan then see every block (use-after-free,
 *   leaks), and TSan sees the hand-over of reused memory between threads,
 *   which it cannot see inside an uninstrumented jemalloc.
 *
 * Thread safety: everything here may be called from any thread; the
 * preferred node is per thread. */
#include "sys/alloc.h"
#include "sys/numa_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(CF_ASAN) || defined(CF_TSAN)
#define CF__ALLOC_SANITIZER 1
#elif defined(CF_JEMALLOC)
#define CF__ALLOC_JEMALLOC 1
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

/* mallocx(0) is undefined and malloc(0) may return NULL: every size is at
 * least 1, on both sides. */
static inline size_t nz(size_t size)
{
    return size ? size : 1;
}

#ifdef CF__ALLOC_JEMALLOC
/* The flags that select `node`'s arena (numa_alloc.c creates one per node
 * on first use), or 0: jemalloc's default selection. */
static inline int flags_for_node(int node)
{
    unsigned a = cf__numa_arena(node);
    return a ? (int)MALLOCX_ARENA(a) : 0;
}
#endif

/* ---- blocks on a node ---- */

void *cf__alloc_on_node(size_t size, int node)
{
#if defined(CF__ALLOC_JEMALLOC)
    return mallocx(nz(size), flags_for_node(node));
#elif defined(CF__ALLOC_SANITIZER)
    (void)node;
    return malloc(nz(size));
#else
    return cf__numa_map(cf__numa_page_round(nz(size)), 0, node);
#endif
}

void cf__free_on_node(void *p, size_t size)
{
    if (!p) return;
#if defined(CF__ALLOC_JEMALLOC)
    sdallocx(p, nz(size), 0);
#elif defined(CF__ALLOC_SANITIZER)
    (void)size;
    free(p);
#else
    cf__numa_unmap(p, cf__numa_page_round(nz(size)));
#endif
}

void *cf__alloc_aligned_on_node(size_t size, size_t align, int node)
{
#if defined(CF__ALLOC_JEMALLOC)
    return mallocx(nz(size), flags_for_node(node) | MALLOCX_ALIGN(align) | MALLOCX_TCACHE_NONE);
#elif defined(CF__ALLOC_SANITIZER)
    (void)node;
    return aligned_alloc(align, nz(size));
#else
    return cf__numa_map(cf__numa_page_round(nz(size)), align, node);
#endif
}

void cf__free_aligned(void *p, size_t size)
{
    if (!p) return;
#if defined(CF__ALLOC_JEMALLOC)
    (void)size;
    dallocx(p, MALLOCX_TCACHE_NONE);
#elif defined(CF__ALLOC_SANITIZER)
    (void)size;
    free(p);
#else
    cf__numa_unmap(p, cf__numa_page_round(nz(size)));
#endif
}

/* ---- ordinary blocks ---- */

void *cf__alloc(size_t size)
{
#ifdef CF__ALLOC_JEMALLOC
    return mallocx(nz(size), flags_for_node(cf__tls_node));
#else
    return malloc(nz(size));
#endif
}

void *cf__alloc_aligned(size_t size, size_t align)
{
#ifdef CF__ALLOC_JEMALLOC
    return mallocx(nz(size), flags_for_node(cf__tls_node) | MALLOCX_ALIGN(align));
#else
    void *p;
    if (align < sizeof(void *)) align = sizeof(void *);
    return posix_memalign(&p, align, nz(size)) == 0 ? p : NULL;
#endif
}

void *cf__calloc(size_t size)
{
#ifdef CF__ALLOC_JEMALLOC
    return mallocx(nz(size), flags_for_node(cf__tls_node) | MALLOCX_ZERO);
#else
    return calloc(1, nz(size));
#endif
}

void *cf__realloc(void *p, size_t old_size, size_t new_size)
{
    (void)old_size;
    if (!p) return cf__alloc(new_size);
#ifdef CF__ALLOC_JEMALLOC
    return rallocx(p, nz(new_size), flags_for_node(cf__tls_node));
#else
    return realloc(p, nz(new_size));
#endif
}

void cf__free(void *p, size_t size)
{
    if (!p) return;
#ifdef CF__ALLOC_JEMALLOC
    if (size) sdallocx(p, size, 0);
    else dallocx(p, 0);
#else
    (void)size;
    free(p);
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
