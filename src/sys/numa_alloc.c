/* Memory bound to a NUMA node: our own mappings, and (CF_JEMALLOC) one
 * jemalloc arena per node.
 *
 * Binding a mapping: mmap anonymous memory, bind the range with
 * hwloc_set_area_membind(HWLOC_MEMBIND_BIND) before any page is touched
 * (the kernel then faults pages in on the node), give it back with munmap.
 * Binding that the system refuses (no NUMA support, a container without
 * mbind) is counted and otherwise ignored: the memory is still valid, just
 * not placed. cf__numa_map hands such mappings out directly (the slabs'
 * chunks and the deque buffers, in the default build).
 *
 * With CF_JEMALLOC, why arenas with extent hooks (rather than binding each
 * record): jemalloc carves small blocks out of extents it asks its hooks
 * for, so binding every extent when it is mapped puts every block of the
 * arena on the node at no per-allocation cost. Design: jemalloc's extent
 * hooks (its manual, "arena.<i>.extent_hooks"), one arena per NUMA node.
 *
 * Contract: everything here may be called from any thread at any time.
 * Mapping is lock-free apart from loading the topology once. The hwloc
 * topology used for binding is this machine's, loaded once (racers each
 * load one, a CAS keeps one) and never freed: it lives as long as the
 * mappings, and the arenas, which jemalloc never frees either. With
 * CF_JEMALLOC, once a node's arena exists finding it is one atomic load
 * (lock-free); creating it, once per node, takes a mutex: a one-time slow
 * path where racing creators would waste arenas, and where TSan cannot see
 * jemalloc's own synchronisation of a new arena without it. Hooks are
 * called by jemalloc from any thread, concurrently: they touch only their
 * arguments, the read-only topology and relaxed counters. */
#include "sys/numa_alloc.h"

#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef CF_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* ---- this machine's topology, loaded once ---- */

static _Atomic(hwloc_topology_t) g_topo;
static _Atomic bool g_topo_failed;

static hwloc_topology_t machine(void)
{
    /* Acquire pairs with the release of the winning CAS below: the
     * topology hwloc built is complete before we read it. */
    hwloc_topology_t t = atomic_load_explicit(&g_topo, memory_order_acquire);
    /* relaxed: the flag only stops retries; it publishes no data. */
    if (t || atomic_load_explicit(&g_topo_failed, memory_order_relaxed)) return t;
    hwloc_topology_t mine;
    if (hwloc_topology_init(&mine) < 0) goto failed;
    if (hwloc_topology_load(mine) < 0) {
        hwloc_topology_destroy(mine);
        goto failed;
    }
    /* hwloc's documented step before concurrent reads of one topology. */
    hwloc_topology_refresh(mine);
    hwloc_topology_t expected = NULL;
    /* Release publishes the loaded topology to the acquire loads above;
     * on failure, acquire reads the winner's. */
    if (!atomic_compare_exchange_strong_explicit(&g_topo, &expected, mine, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        hwloc_topology_destroy(mine);
        return expected;
    }
    return mine;
failed:
    atomic_store_explicit(&g_topo_failed, true, memory_order_relaxed);
    return NULL;
}

/* Binding makes sense only when the topology describes this machine (not a
 * synthetic or XML one from HWLOC_SYNTHETIC / HWLOC_XMLFILE). */
static hwloc_obj_t node_obj(int node)
{
    hwloc_topology_t t = machine();
    if (!t || !hwloc_topology_is_thissystem(t)) return NULL;
    return hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)node);
}

/* ---- counters (statistics only: relaxed) ---- */

static _Atomic uint64_t st_extents, st_bound, st_bind_failed;

void cf__numa_alloc_stats(struct cf__numa_alloc_stats *out)
{
    out->extents = atomic_load_explicit(&st_extents, memory_order_relaxed);
    out->bound = atomic_load_explicit(&st_bound, memory_order_relaxed);
    out->bind_failed = atomic_load_explicit(&st_bind_failed, memory_order_relaxed);
}

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/* size bytes at a multiple of alignment (both multiples of the page). */
static void *map_aligned(void *new_addr, size_t size, size_t alignment)
{
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (new_addr) {
        /* jemalloc wants to grow in place: only that address will do. */
        void *p = mmap(new_addr, size, prot, flags, -1, 0);
        if (p == MAP_FAILED) return NULL;
        if (p != new_addr) {
            munmap(p, size);
            return NULL;
        }
        return p;
    }
    size_t page = page_size();
    if (alignment < page) alignment = page;
    size_t span = size + alignment - page;
    if (span < size) return NULL;
    char *raw = mmap(NULL, span, prot, flags, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + alignment - 1) & ~(uintptr_t)(alignment - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + span > p + size) munmap(p + size, (size_t)(raw + span - (p + size)));
    return p;
}

size_t cf__numa_page_round(size_t size)
{
    size_t page = page_size();
    return (size + page - 1) & ~(page - 1);
}

/* Bind the untouched mapping [p, p+size) to `node` (-1: leave it alone),
 * counting the outcome. */
static void bind_to_node(void *p, size_t size, int node)
{
    if (node < 0) return;
    hwloc_obj_t n = node_obj(node);
    if (n && hwloc_set_area_membind(machine(), p, size, n->nodeset, HWLOC_MEMBIND_BIND,
                                    HWLOC_MEMBIND_BYNODESET) == 0)
        atomic_fetch_add_explicit(&st_bound, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&st_bind_failed, 1, memory_order_relaxed);
}

void *cf__numa_map(size_t size, size_t align, int node)
{
    if (!size || size % page_size() != 0) return NULL;
    void *p = map_aligned(NULL, size, align);
    if (!p) return NULL;
    atomic_fetch_add_explicit(&st_extents, 1, memory_order_relaxed); /* statistics only */
    bind_to_node(p, size, node);
    return p;
}

void cf__numa_unmap(void *p, size_t size)
{
    if (p) munmap(p, size);
}

#ifdef CF_JEMALLOC
/* ---- extent hooks: one static hooks struct per node; the node is the
 * struct's index, so the hooks need no other state ---- */

struct node_hooks {
    extent_hooks_t hooks; /* first: jemalloc passes &hooks back to us */
};

static struct node_hooks g_hooks[CF__NUMA_MAX_NODES];

static int hooks_node(extent_hooks_t *h)
{
    return (int)((struct node_hooks *)(void *)h - g_hooks);
}

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                        bool *zero, bool *commit, unsigned arena_ind)
{
    (void)arena_ind;
    void *p = map_aligned(new_addr, size, alignment);
    if (!p) return NULL;
    atomic_fetch_add_explicit(&st_extents, 1, memory_order_relaxed);
    bind_to_node(p, size, hooks_node(h));
    *zero = true;   /* fresh anonymous pages read as zero */
    *commit = true; /* and are committed (Linux overcommits) */
    return p;
}

static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
                        unsigned arena_ind)
{
    (void)h, (void)committed, (void)arena_ind;
    return munmap(addr, size) != 0; /* false: done */
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
                         unsigned arena_ind)
{
    (void)h, (void)committed, (void)arena_ind;
    munmap(addr, size);
}

/* Memory is always committed: commit has nothing to do, and decommit opts
 * out (true), so jemalloc keeps the pages and purges them instead. */
static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                        unsigned arena_ind)
{
    (void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
    return false;
}

static bool hook_decommit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                          unsigned arena_ind)
{
    (void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
    return true;
}

/* Purging keeps the mapping and its binding (a VMA property): pages come
 * back on the node when touched again. */
static bool hook_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                            size_t length, unsigned arena_ind)
{
    (void)h, (void)size, (void)arena_ind;
#ifdef MADV_FREE
    return madvise((char *)addr + offset, length, MADV_FREE) != 0;
#else
    (void)addr, (void)offset, (void)length;
    return true;
#endif
}

static bool hook_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                              size_t length, unsigned arena_ind)
{
    (void)h, (void)size, (void)arena_ind;
    return madvise((char *)addr + offset, length, MADV_DONTNEED) != 0;
}

/* Anonymous mappings split and merge freely (munmap may span several). */
static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    (void)h, (void)addr, (void)size, (void)size_a, (void)size_b, (void)committed, (void)arena_ind;
    return false;
}

static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    (void)h, (void)addr_a, (void)size_a, (void)addr_b, (void)size_b, (void)committed;
    (void)arena_ind;
    return false;
}

static struct node_hooks g_hooks[CF__NUMA_MAX_NODES] = {
    [0 ... CF__NUMA_MAX_NODES - 1] = {{
        .alloc = hook_alloc,
        .dalloc = hook_dalloc,
        .destroy = hook_destroy,
        .commit = hook_commit,
        .decommit = hook_decommit,
        .purge_lazy = hook_purge_lazy,
        .purge_forced = hook_purge_forced,
        .split = hook_split,
        .merge = hook_merge,
    }},
};

/* ---- arenas, created on first use ---- */

#define ARENA_FAILED UINT32_MAX

/* 0: not created yet; ARENA_FAILED: jemalloc refused (do not retry).
 * Written once per node, under g_create_lock; read lock-free. */
static _Atomic unsigned g_arena[CF__NUMA_MAX_NODES];
static pthread_mutex_t g_create_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned create_arena(int node)
{
    unsigned ind;
    size_t len = sizeof ind;
    extent_hooks_t *hooks = &g_hooks[node].hooks;
    if (mallctl("arenas.create", &ind, &len, &hooks, sizeof hooks) != 0 || ind == 0)
        return ARENA_FAILED;
    return ind;
}

unsigned cf__numa_arena(int node)
{
    if (node < 0 || node >= CF__NUMA_MAX_NODES) return 0;
    /* Acquire pairs with the release store below: a thread that sees the
     * index also sees (for TSan too) everything jemalloc did to create the
     * arena. */
    unsigned a = atomic_load_explicit(&g_arena[node], memory_order_acquire);
    if (a) return a == ARENA_FAILED ? 0 : a;
    if (!node_obj(node)) return 0; /* not a node of this machine */
    /* Creation, once per node: serialised, so no arena is created twice
     * and jemalloc's own (uninstrumented) synchronisation of a new arena is
     * backed by one TSan can see. */
    pthread_mutex_lock(&g_create_lock);
    a = atomic_load_explicit(&g_arena[node], memory_order_relaxed); /* under the lock */
    if (!a) {
        a = create_arena(node);
        /* Release: publishes the created arena to the acquire load above. */
        atomic_store_explicit(&g_arena[node], a, memory_order_release);
    }
    pthread_mutex_unlock(&g_create_lock);
    return a == ARENA_FAILED ? 0 : a;
}

unsigned cf__numa_bind_thread(int node)
{
    unsigned a = cf__numa_arena(node);
    if (a && mallctl("thread.arena", NULL, NULL, &a, sizeof a) != 0) return 0;
    return a;
}

#endif /* CF_JEMALLOC */

int cf__numa_node_of(const void *p, size_t len)
{
    hwloc_topology_t t = machine();
    if (!t || !p || !len) return -1;
    hwloc_nodeset_t ns = hwloc_bitmap_alloc();
    int node = -1;
    if (ns && hwloc_get_area_memlocation(t, p, len, ns, HWLOC_MEMBIND_BYNODESET) == 0 &&
        hwloc_bitmap_weight(ns) == 1) {
        hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(t, (unsigned)hwloc_bitmap_first(ns));
        if (n) node = (int)n->logical_index;
    }
    hwloc_bitmap_free(ns);
    return node;
}
