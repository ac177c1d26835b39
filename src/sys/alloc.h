/* The library's allocator for tasks, futures and results: jemalloc through
 * its non-standard API (mallocx/sdallocx), never by replacing the user's
 * malloc. Records are allocated from an arena bound to a NUMA node when the
 * caller knows its node (see alloc.c for how arenas are bound). */
#ifndef CF_ALLOC_H
#define CF_ALLOC_H

#include <stddef.h>

/* Allocate/free from the calling thread's preferred arena (the node arena
 * its worker is bound to, else jemalloc's default). NULL on failure. */
void *cf__alloc(size_t size);
void *cf__calloc(size_t size);
void *cf__realloc(void *p, size_t old_size, size_t new_size);
void cf__free(void *p, size_t size); /* size: what was asked for, or 0 if unknown */
char *cf__strdup(const char *s);
/* printf into a new cf__alloc'd string (free with cf__free_str); NULL on
 * out of memory or a bad format. */
#include <stdarg.h>
char *cf__vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
void cf__free_str(char *s);

/* Bind the calling thread's allocations to NUMA node `node` (an hwloc
 * logical NUMA index; -1 = no preference). Called by workers at start. */
void cf__alloc_set_thread_node(int node);
int cf__alloc_thread_node(void);

/* Allocate on a given node regardless of the calling thread (deque
 * buffers a worker owns, allocated before it starts). */
void *cf__alloc_on_node(size_t size, int node);

/* size bytes aligned to `align` (a power of two, at most size), on `node`
 * as cf__alloc_on_node, bypassing the thread cache (big blocks: the
 * slabs' chunks). Free with cf__free_aligned. */
void *cf__alloc_aligned_on_node(size_t size, size_t align, int node);
void cf__free_aligned(void *p, size_t size);

#endif
