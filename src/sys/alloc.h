/* The library's allocator for tasks, futures and results. By default libc's
 * malloc for ordinary blocks, and memory of its own (mmap, bound to a NUMA
 * node) for the blocks that must live on a node; with CF_JEMALLOC, jemalloc
 * through its non-standard API (mallocx/sdallocx) with one arena per node.
 * Either way the program's malloc stays the program's (docs/LINKING.md). */
#ifndef CF_ALLOC_H
#define CF_ALLOC_H

#include <stddef.h>

/* Allocate/free an ordinary block. With CF_JEMALLOC it comes from the node
 * arena the calling thread prefers (cf__alloc_set_thread_node); with libc
 * it comes from the thread's malloc arena and lands, page by page, where
 * it is first touched (a pinned worker's node, for what the worker
 * touches first). NULL on failure. */
void *cf__alloc(size_t size);
void *cf__calloc(size_t size);
void *cf__realloc(void *p, size_t old_size, size_t new_size);
void cf__free(void *p, size_t size); /* size: what was asked for, or 0 if unknown */
/* An ordinary block (freed with cf__free) aligned to `align`, a power of
 * two: cf__alloc promises only 16 bytes. */
void *cf__alloc_aligned(size_t size, size_t align);
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

/* size bytes on NUMA node `node` regardless of the calling thread (deque
 * buffers a worker owns, allocated before it starts); node -1: no node.
 * Free with cf__free_on_node and the same size, never with cf__free. */
void *cf__alloc_on_node(size_t size, int node);
void cf__free_on_node(void *p, size_t size);

/* size bytes aligned to `align` (a power of two, at most size), on `node`
 * as cf__alloc_on_node, bypassing any thread cache (big blocks: the
 * slabs' chunks). Free with cf__free_aligned and the same size. */
void *cf__alloc_aligned_on_node(size_t size, size_t align, int node);
void cf__free_aligned(void *p, size_t size);

#endif
