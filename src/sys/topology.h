/* Where workers go, and whom they steal from (topology.c, hwloc).
 *
 * A placement lists, for each worker, the core it is pinned to and its
 * place in the machine (package, NUMA node, L3), and a steal order: victims
 * sorted by distance (same L3 first, then same NUMA node, then other
 * nodes), with the tier boundaries, so a worker bounds its remote
 * attempts. Computable on topologies we do not have (HWLOC_SYNTHETIC,
 * HWLOC_XMLFILE, CFUTURES_TOPOLOGY) without binding anything. */
#ifndef CF_TOPOLOGY_H
#define CF_TOPOLOGY_H

#include <hwloc.h>
#include "sys/config.h"

struct cf__worker_place {
    int cpu;       /* OS index of the PU to pin to; -1 = not pinned */
    int core;      /* hwloc logical index of the core; -1 if unknown */
    int numa_node; /* hwloc logical index of the NUMA node; -1 if unknown */
    int package;
    int l3;                /* logical index of the L3 cache (or -1) */
    int node_slot;         /* 0..n_numa-1: dense index of its node among the nodes the
                    * workers span (injection queue index); 0 when NUMA is off */
    hwloc_bitmap_t cpuset; /* what to bind to (NULL when not pinned) */
};

struct cf__placement {
    int n_workers;
    int n_numa;     /* NUMA nodes the workers span (>= 1); 1 when off */
    int *slot_numa; /* n_numa entries: node_slot -> hwloc logical
                                      * NUMA index (-1 when unknown or NUMA off) */
    int n_cpu_slot; /* cpu_slot[os cpu] -> node_slot, -1 if none */
    int *cpu_slot;
    struct cf__worker_place *w; /* n_workers entries */
    /* steal_order[i] holds n_workers-1 victims for worker i, nearest first;
     * tier_end[i][0..2]: end of the same-L3, same-node, and all tiers. */
    int **steal_order;
    int (*tier_end)[3];
};

/* Load the topology: CFUTURES_TOPOLOGY (XML) if set in cfg, else hwloc's
 * own rules (HWLOC_XMLFILE / HWLOC_SYNTHETIC env, or this machine),
 * restricted to the process's allowed CPU set (its affinity mask, when the
 * topology is this machine) and to cfg->cpu_list when one is set. Returns 0,
 * CF_ESYS (hwloc failed, e.g. an unreadable XML file) or CF_EINVAL (no
 * allowed CPU is left). */
int cf__topology_load(const struct cf__config *cfg, hwloc_topology_t *out);

/* Compute where `cfg->workers` (0 = one per allowed core) workers go. */
int cf__placement_compute(hwloc_topology_t topo, const struct cf__config *cfg,
                          struct cf__placement *out);
void cf__placement_free(struct cf__placement *p);

/* The injection-queue slot for a thread running on OS CPU `cpu` (e.g. from
 * sched_getcpu()): its node's slot, else 0. */
int cf__placement_slot_of_cpu(const struct cf__placement *p, int cpu);

/* Pin the calling thread to place->cpuset (no-op when NULL). 0 or CF_ESYS;
 * failure to pin is not fatal to a pool. */
int cf__pin_self(hwloc_topology_t topo, const struct cf__worker_place *place);

/* Print the topology summary and placement (cfutures-info). */
void cf__placement_print(hwloc_topology_t topo, const struct cf__placement *p, void *FILE_stream);

#endif
