/* Per-NUMA-node jemalloc arenas (numa_alloc.c): each arena gets its memory
 * from extent hooks that mmap it and bind it to one node (hwloc memory
 * binding), so everything allocated through the arena lives on that node. */
#ifndef CF_NUMA_ALLOC_H
#define CF_NUMA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define CF__NUMA_MAX_NODES 64

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

/* The hwloc logical index of the NUMA node holding the (touched) pages of
 * [p, p+len), or -1 when unknown or spread over several nodes. */
int cf__numa_node_of(const void *p, size_t len);

/* What the extent hooks did, process-wide (tests, cfutures-info). */
struct cf__numa_alloc_stats {
    uint64_t extents;     /* extents mapped by the hooks */
    uint64_t bound;       /* of which bound to their node */
    uint64_t bind_failed; /* binding refused by the system (not fatal) */
};
void cf__numa_alloc_stats(struct cf__numa_alloc_stats *out);

#endif
