/* cfutures-info: the topology a pool would see, the placement it would get
 * (every worker's cpu, core, node, package, L3 and steal tiers) and every
 * setting in effect with its source. Reads the same CFUTURES_* and HWLOC_*
 * variables as the library; binds nothing.
 *
 *   HWLOC_SYNTHETIC="pack:2 numa:2 l3:1 core:8 pu:2" CFUTURES_WORKERS=32 cfutures-info */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "sys/cgroup.h"
#include "sys/config.h"
#include "sys/topology.h"

static int usage(FILE *f)
{
    fputs("usage: cfutures-info [--help]\n"
          "Prints the topology, the thread-pool placement and the CFUTURES_* settings.\n"
          "Try: HWLOC_SYNTHETIC=\"pack:2 numa:2 l3:1 core:8 pu:2\" CFUTURES_WORKERS=32 "
          "cfutures-info\n",
          f);
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return usage(strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? stderr : stdout);
    printf("cfutures %s\n\n", cf_version());

    struct cf__config cfg;
    cf__config_load(&cfg);
    printf("settings (value and source):\n");
    cf__config_print(&cfg, stdout);
    printf("  steal attempts in effect: %s\n\n",
           cfg.steal_attempts ? "as set" : "2 x (workers - 1)");

    hwloc_topology_t topo;
    int rc = cf__topology_load(&cfg, &topo);
    if (rc) {
        if (rc == CF_EINVAL && cfg.cpu_list[0])
            fprintf(stderr,
                    "cfutures-info: no CPU left: CFUTURES_CPUS (%s) and the process's "
                    "affinity mask do not intersect\n",
                    cfg.cpu_list);
        else fprintf(stderr, "cfutures-info: cannot load the topology: %s\n", cf_strerror(rc));
        return 1;
    }
    struct cf__placement p;
    rc = cf__placement_compute(topo, &cfg, &p);
    if (rc) {
        fprintf(stderr, "cfutures-info: no placement: %s%s\n", cf_strerror(rc),
                rc == CF_EINVAL ? " (a listed CPU is not in the allowed topology)" : "");
        hwloc_topology_destroy(topo);
        return 1;
    }
    cf__placement_print(topo, &p, stdout);
    const struct hwloc_topology_support *sup = hwloc_topology_get_support(topo);
    bool this_machine = hwloc_topology_is_thissystem(topo);
    printf("binding: threads to CPUs %s, memory to NUMA nodes %s%s\n",
           this_machine && sup->cpubind->set_thisthread_cpubind ? "yes" : "no",
           this_machine && sup->membind->set_area_membind && sup->membind->bind_membind ? "yes"
                                                                                        : "no",
           this_machine ? "" : " (the topology is not this machine: nothing is bound)");
    printf("remote steal attempts per round: %d\n", cf__steal_attempts(&cfg, p.n_workers));
    int quota = cf__cgroup_cpu_limit();
    if (quota > 0)
        printf("cgroup CPU quota: %d CPU%s (caps the default worker count%s)\n", quota,
               quota == 1 ? "" : "s", this_machine ? "" : "; not applied to another machine");
    else printf("cgroup CPU quota: none\n");
    cf__placement_free(&p);
    hwloc_topology_destroy(topo);
    return 0;
}
