/* libFuzzer target: the topology file loader (cf__topology_load with
 * CFUTURES_TOPOLOGY, src/sys/topology.c) and the placement computed from
 * whatever it accepts.
 *
 * The input is the file's content, handed over as a memfd (a regular file
 * in memory, named /proc/self/fd/N) so nothing is written to disk. An
 * accepted topology then goes through cf__placement_compute under each pin
 * policy, with NUMA on and off and a few worker counts, and every worker's
 * steal order must be a permutation of the other workers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sys/config.h"
#include "sys/topology.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stdout, "fuzz_topology: %s failed (line %d)\n", #cond, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static int memfd = -1;
static char path[64];
static struct cf__config base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
    unsetenv("HWLOC_XMLFILE");
    unsetenv("HWLOC_SYNTHETIC");
    cf__config_load(&base);
    memfd = memfd_create("fuzz_topology", MFD_CLOEXEC);
    if (memfd < 0) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    if (cf__config_parse(&base, CF__SET_TOPOLOGY, path, NULL)) abort();
    return 0;
}

static void check_placement(const struct cf__placement *p)
{
    CHECK(p->n_workers >= 1);
    CHECK(p->n_numa >= 1);
    int n = p->n_workers;
    char *seen = calloc((size_t)n, 1);
    CHECK(seen);
    for (int i = 0; i < n; i++) {
        CHECK(p->w[i].node_slot >= 0 && p->w[i].node_slot < p->n_numa);
        CHECK(p->tier_end[i][0] <= p->tier_end[i][1] && p->tier_end[i][1] <= p->tier_end[i][2]);
        CHECK(p->tier_end[i][2] == n - 1);
        memset(seen, 0, (size_t)n);
        for (int k = 0; k < n - 1; k++) {
            int v = p->steal_order[i][k];
            CHECK(v >= 0 && v < n && v != i && !seen[v]);
            seen[v] = 1;
        }
    }
    free(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) return 0;
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size) abort();
    hwloc_topology_t t;
    if (cf__topology_load(&base, &t) != 0) return 0;
    static const enum cf_pin_policy pins[] = {CF_PIN_COMPACT, CF_PIN_SCATTER, CF_PIN_NONE};
    static const int workers[] = {0, 1, 5};
    for (size_t a = 0; a < sizeof pins / sizeof pins[0]; a++)
        for (size_t b = 0; b < sizeof workers / sizeof workers[0]; b++)
            for (int numa = 0; numa < 2; numa++) {
                struct cf__config c = base;
                c.pin = pins[a];
                c.workers = workers[b];
                c.numa = numa;
                struct cf__placement p;
                int rc = cf__placement_compute(t, &c, &p);
                CHECK(rc == 0 || rc == CF_EINVAL || rc == CF_ENOMEM);
                if (rc == 0) {
                    check_placement(&p);
                    cf__placement_free(&p);
                }
            }
    hwloc_topology_destroy(t);
    return 0;
}
