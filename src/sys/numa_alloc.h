/* Memory bound to a NUMA node (numa_alloc.c): mappings of our own, bound to
 * one node (hwloc memory binding) before any page is touched, for the
 * blocks that must live on a node; and, with CF_JEMALLOC, one jemalloc
 * arena per node whose extent hooks take their memory the same way, so
 * everything allocated through the arena lives on that node. */
#ifndef CF_NUMA_ALLOC_H
#define CF_NUMA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define CF__NUMA_MAX_NODES 64

/* size bytes (a multiple of the page size) at a multiple of `align` (a
 * power of two; 0 or anything below the page: the page), mapped for the
 * caller alone, zeroed, and bound to hwloc logical NUMA node `node` when it
 * is one of this machine's (node -1: not bound; pages land where they are
 * first touched). Binding the system refuses is counted, not fatal. NULL
 * when out of memory. Free with cf__numa_unmap and the same size. Any
 * thread; lock-free apart from the first call, which loads the topology. */
void *cf__numa_map(size_t size, size_t align, int node);
void cf__numa_unmap(void *p, size_t size);
/* size rounded up to the page size. */
size_t cf__numa_page_round(size_t size);

#ifdef CF_JEMALLOC
/* The jemalloc arena index for hwloc logical NUMA node `node` of this
 * machine, created on first use (any thread; lock-free once created).
 * 0 means "no node arena" (node < 0, no such node on this machine, or
 * jemalloc refused): the caller then uses jemalloc's default selection.
 *
 * jemalloc's thread cache is shared by all arenas: an allocation with
 * MALLOCX_ARENA(a) may reuse a small region the thread freed earlier from
 * another arena. A worker that always allocates from its own node's arena
 * stays node-local; memory that must be on the node for sure (deque
 * buffers) should add MALLOCX_TCACHE_NONE. */
unsigned cf__numa_arena(int node);

/* Make `node`'s arena the calling thread's own (jemalloc "thread.arena"),
 * so its plain mallocx(size, 0) calls use it: jemalloc's fast path, about
 * as cheap as the default arena, where MALLOCX_ARENA(a) costs a few ns more
 * per call. For threads that stay on one node (pool workers). Returns the
 * arena, or 0 (nothing changed) when the node has none. There is no way
 * back to automatic arena selection for the thread. */
unsigned cf__numa_bind_thread(int node);
#endif

/* The hwloc logical index of the NUMA node holding the (touched) pages of
 * [p, p+len), or -1 when unknown or spread over several nodes. */
int cf__numa_node_of(const void *p, size_t len);

/* What the extent hooks did, process-wide (tests, cfutures-info). */
struct cf__numa_alloc_stats {
    uint64_t extents;     /* mappings made (cf__numa_map, or jemalloc's extent hooks) */
    uint64_t bound;       /* of which bound to their node */
    uint64_t bind_failed; /* binding refused by the system (not fatal) */
};
void cf__numa_alloc_stats(struct cf__numa_alloc_stats *out);

#endif
