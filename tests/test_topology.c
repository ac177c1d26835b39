/* topology.c on machines we do not have: placement (which cores, one
 * worker per core, in what order) and steal tiers for every policy, on
 * synthetic and XML topologies, without binding anything.
 *
 * Environment: the test sets HWLOC_SYNTHETIC / CFUTURES_* itself and clears
 * HWLOC_XMLFILE, HWLOC_SYNTHETIC and CFUTURES_* before each case.
 * Topologies: 2 packages x 2 NUMA nodes x 8 cores x SMT2 (synthetic, and as
 * XML with a latency matrix), a 1x1x4x2 laptop (XML), an asymmetric
 * 3-node machine with 6, 2 and 4 cores whose latency matrix puts node 2
 * (other package) nearer to node 0 than node 1 (XML), and CPU sets
 * restricted by CFUTURES_CPUS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sys/cgroup.h"
#include "sys/config.h"
#include "sys/topology.h"
#include "support/test_env.h"

#define BIG "pack:2 numa:2 l3:1 core:8 pu:2"
#define XML_BIG CF_TEST_DATA_DIR "/pack2-numa2-core8-smt2.xml"
#define XML_LAPTOP CF_TEST_DATA_DIR "/laptop-1x1x4x2.xml"
#define XML_ASYM CF_TEST_DATA_DIR "/asym-3node-6-2-4.xml"

static void clear_env(void)
{
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
    unsetenv("HWLOC_XMLFILE");
    unsetenv("HWLOC_SYNTHETIC");
}

/* Config from the (cleared) environment plus the synthetic description. */
static struct cf__config cfg_for(const char *synthetic, const char *xml)
{
    clear_env();
    if (synthetic) setenv("HWLOC_SYNTHETIC", synthetic, 1);
    struct cf__config c;
    cf__config_load(&c);
    if (xml) strcpy(c.topology, xml);
    return c;
}

struct setup {
    hwloc_topology_t topo;
    struct cf__placement p;
};

/* Invariants every placement keeps: each worker's victims are all the other
 * workers once, tiers are nested, a pinned worker binds to exactly its PU,
 * and the tier a victim sits in matches the places. */
static void check_invariants(const struct cf__placement *p, bool numa)
{
    int n = p->n_workers;
    assert_true(n >= 1);
    assert_true(p->n_numa >= 1);
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    for (int i = 0; i < n; i++) {
        const struct cf__worker_place *a = &p->w[i];
        if (a->cpu >= 0) {
            assert_non_null(a->cpuset);
            assert_int_equal(hwloc_bitmap_weight(a->cpuset), 1);
            assert_int_equal(hwloc_bitmap_first(a->cpuset), a->cpu);
        } else {
            assert_null(a->cpuset);
        }
        assert_true(a->node_slot >= 0 && a->node_slot < p->n_numa);
        assert_true(0 <= p->tier_end[i][0]);
        assert_true(p->tier_end[i][0] <= p->tier_end[i][1]);
        assert_true(p->tier_end[i][1] <= p->tier_end[i][2]);
        assert_int_equal(p->tier_end[i][2], n - 1);
        memset(seen, 0, (size_t)n);
        for (int k = 0; k < n - 1; k++) {
            int j = p->steal_order[i][k];
            assert_true(j >= 0 && j < n && j != i && !seen[j]);
            seen[j] = 1;
            const struct cf__worker_place *b = &p->w[j];
            bool near = (a->core >= 0 && a->core == b->core) || (a->l3 >= 0 && a->l3 == b->l3);
            bool same_node = a->numa_node < 0 || b->numa_node < 0 || a->numa_node == b->numa_node;
            int tier = k < p->tier_end[i][0] ? 0 : k < p->tier_end[i][1] ? 1 : 2;
            if (!numa) assert_int_equal(tier, 1);
            else if (near) assert_int_equal(tier, 0);
            else if (same_node) assert_int_equal(tier, 1);
            else assert_int_equal(tier, 2);
        }
    }
    free(seen);
}

static void load(struct setup *s, const struct cf__config *c)
{
    assert_int_equal(cf__topology_load(c, &s->topo), 0);
    assert_int_equal(cf__placement_compute(s->topo, c, &s->p), 0);
    check_invariants(&s->p, c->numa && c->pin != CF_PIN_NONE);
}

static void unload(struct setup *s)
{
    cf__placement_free(&s->p);
    hwloc_topology_destroy(s->topo);
}

/* Compact on 2x2x8x2: one worker per core (PU 2i, not 2i+1), in order. */
static void check_big_compact(const struct cf__placement *p)
{
    assert_int_equal(p->n_workers, 32);
    assert_int_equal(p->n_numa, 4);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(p->w[i].cpu, 2 * i);
        assert_int_equal(p->w[i].core, i);
        assert_int_equal(p->w[i].numa_node, i / 8);
        assert_int_equal(p->w[i].node_slot, i / 8);
        assert_int_equal(p->w[i].package, i / 16);
        assert_int_equal(p->w[i].l3, i / 8);
        /* Same L3 (= node here): the 7 others of its node, rotated. */
        assert_int_equal(p->tier_end[i][0], 7);
        assert_int_equal(p->tier_end[i][1], 7);
        assert_int_equal(p->steal_order[i][0], (i / 8) * 8 + (i % 8 + 1) % 8);
        /* Remote: the other node of its package first (by package when
         * there is no matrix; 12 vs 32 in the XML's matrix). */
        int sibling = (i / 8) ^ 1;
        for (int k = 7; k < 15; k++)
            assert_int_equal(p->w[p->steal_order[i][k]].numa_node, sibling);
    }
    for (int k = 0; k < 4; k++) assert_int_equal(p->slot_numa[k], k);
}

static void test_big_compact_synthetic(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    struct setup s;
    load(&s, &c);
    assert_false(hwloc_topology_is_thissystem(s.topo));
    check_big_compact(&s.p);
    /* An outside thread on CPU 40 (node 2) submits to slot 2. */
    assert_int_equal(cf__placement_slot_of_cpu(&s.p, 40), 2);
    assert_int_equal(cf__placement_slot_of_cpu(&s.p, 41), 2);
    assert_int_equal(cf__placement_slot_of_cpu(&s.p, 9999), 0);
    assert_int_equal(cf__placement_slot_of_cpu(&s.p, -1), 0);
    /* Binding is not needed (and not possible) on a synthetic machine. */
    int rc = cf__pin_self(s.topo, &s.p.w[0]);
    assert_true(rc == 0 || rc == CF_ESYS);
    unload(&s);
}

static void test_big_compact_xml(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, XML_BIG);
    struct setup s;
    load(&s, &c);
    check_big_compact(&s.p);
    unload(&s);
}

/* Through hwloc's own variable, as a user would run cfutures-info. */
static void test_big_via_hwloc_xmlfile(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, NULL);
    setenv("HWLOC_XMLFILE", XML_BIG, 1);
    struct setup s;
    load(&s, &c);
    check_big_compact(&s.p);
    unload(&s);
    clear_env();
}

static void test_big_scatter(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.pin = CF_PIN_SCATTER;
    c.workers = 4;
    struct setup s;
    load(&s, &c);
    /* Four workers on four nodes, alternating packages: 0, 2, 1, 3. */
    static const int node[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s.p.w[i].numa_node, node[i]);
        assert_int_equal(s.p.w[i].cpu, node[i] * 16);
        assert_int_equal(s.p.w[i].package, node[i] / 2);
        assert_int_equal(s.p.tier_end[i][1], 0); /* alone on its node */
    }
    /* Worker 0 (node 0) steals from node 1 (same package) before 2, 3. */
    assert_int_equal(s.p.steal_order[0][0], 2);
    unload(&s);

    c.workers = 0;
    load(&s, &c);
    assert_int_equal(s.p.n_workers, 32);
    int per_node[4] = {0};
    for (int i = 0; i < 32; i++) {
        per_node[s.p.w[i].numa_node]++;
        assert_int_equal(s.p.w[i].numa_node, node[i % 4]);
        assert_int_equal(s.p.w[i].cpu % 2, 0); /* one per core */
    }
    for (int k = 0; k < 4; k++) assert_int_equal(per_node[k], 8);
    unload(&s);
}

/* More workers than cores: the second round takes the SMT siblings. */
static void test_big_wrap(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.workers = 70;
    struct setup s;
    load(&s, &c);
    assert_int_equal(s.p.n_workers, 70);
    for (int i = 0; i < 70; i++) {
        int core = i % 32, round = i / 32;
        assert_int_equal(s.p.w[i].core, core);
        assert_int_equal(s.p.w[i].cpu, 2 * core + round % 2);
    }
    /* Worker 32 shares core 0 with worker 0 (and 64): nearest victims. */
    assert_true((s.p.steal_order[0][0] == 32 && s.p.steal_order[0][1] == 64) ||
                (s.p.steal_order[0][0] == 64 && s.p.steal_order[0][1] == 32));
    unload(&s);
}

static void test_list(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.pin = CF_PIN_LIST;
    strcpy(c.cpu_list, "33,0-1,16");
    struct setup s;
    load(&s, &c);
    /* Exactly the listed CPUs, in the order given, one worker each. */
    static const int cpu[4] = {33, 0, 1, 16};
    assert_int_equal(s.p.n_workers, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(s.p.w[i].cpu, cpu[i]);
    assert_int_equal(s.p.n_numa, 3);
    /* Worker 1 (cpu 0) shares its core with worker 2 (cpu 1). */
    assert_int_equal(s.p.steal_order[1][0], 2);
    assert_int_equal(s.p.w[1].core, s.p.w[2].core);
    unload(&s);

    /* A CPU outside the topology. */
    strcpy(c.cpu_list, "0,64");
    hwloc_topology_t t;
    struct cf__placement p;
    assert_int_equal(cf__topology_load(&c, &t), 0);
    assert_int_equal(cf__placement_compute(t, &c, &p), CF_EINVAL);
    hwloc_topology_destroy(t);
    strcpy(c.cpu_list, "100-101");
    assert_int_equal(cf__topology_load(&c, &t), CF_EINVAL); /* nothing left */
}

static void test_list_from_env(void **state)
{
    (void)state;
    clear_env();
    setenv("HWLOC_SYNTHETIC", BIG, 1);
    setenv("CFUTURES_CPUS", "4-5", 1);
    setenv("CFUTURES_WORKERS", "5", 1);
    struct cf__config c;
    cf__config_load(&c);
    assert_int_equal(c.pin, CF_PIN_LIST);
    struct setup s;
    load(&s, &c);
    /* A list wraps to its start. */
    static const int cpu[5] = {4, 5, 4, 5, 4};
    for (int i = 0; i < 5; i++) assert_int_equal(s.p.w[i].cpu, cpu[i]);
    unload(&s);
    clear_env();
}

/* CFUTURES_CPUS with a policy: a restricted CPU set (as taskset would). */
static void test_restricted(void **state)
{
    (void)state;
    clear_env();
    setenv("HWLOC_SYNTHETIC", BIG, 1);
    setenv("CFUTURES_CPUS", "0-3,32-35,38", 1);
    setenv("CFUTURES_PIN", "compact", 1);
    struct cf__config c;
    cf__config_load(&c);
    struct setup s;
    load(&s, &c);
    /* Cores of the allowed CPUs only, one worker per core. */
    static const int cpu[5] = {0, 2, 32, 34, 38};
    static const int node[5] = {0, 0, 2, 2, 2};
    assert_int_equal(s.p.n_workers, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s.p.w[i].cpu, cpu[i]);
        assert_int_equal(s.p.w[i].numa_node, node[i]);
        assert_int_equal(s.p.w[i].node_slot, node[i] / 2);
    }
    assert_int_equal(s.p.n_numa, 2);
    assert_int_equal(s.p.slot_numa[0], 0);
    assert_int_equal(s.p.slot_numa[1], 2);
    assert_int_equal(cf__placement_slot_of_cpu(&s.p, 33), 1);
    unload(&s);

    setenv("CFUTURES_PIN", "scatter", 1);
    cf__config_load(&c);
    load(&s, &c);
    static const int cpu2[5] = {0, 32, 2, 34, 38};
    for (int i = 0; i < 5; i++) assert_int_equal(s.p.w[i].cpu, cpu2[i]);
    unload(&s);
    clear_env();
}

static void test_laptop(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, XML_LAPTOP);
    struct setup s;
    load(&s, &c);
    assert_int_equal(s.p.n_workers, 4);
    assert_int_equal(s.p.n_numa, 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s.p.w[i].cpu, 2 * i);
        assert_int_equal(s.p.tier_end[i][0], 3); /* one L3: all local */
    }
    unload(&s);
    c.pin = CF_PIN_SCATTER; /* one node, one package: as compact */
    load(&s, &c);
    for (int i = 0; i < 4; i++) assert_int_equal(s.p.w[i].cpu, 2 * i);
    unload(&s);
}

static void test_asymmetric(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, XML_ASYM);
    struct setup s;
    load(&s, &c);
    /* Node 0: cores 0-5, node 1: 6-7 (package 0), node 2: PUs 12-15. */
    assert_int_equal(s.p.n_workers, 12);
    assert_int_equal(s.p.n_numa, 3);
    static const int node[12] = {0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2};
    for (int i = 0; i < 12; i++) assert_int_equal(s.p.w[i].numa_node, node[i]);
    assert_int_equal(s.p.w[8].cpu, 12);
    /* The matrix, not the package: node 0 -> 2 (20) before 1 (30). */
    assert_int_equal(s.p.tier_end[0][1], 5);
    for (int k = 5; k < 9; k++) assert_int_equal(s.p.w[s.p.steal_order[0][k]].numa_node, 2);
    for (int k = 9; k < 11; k++) assert_int_equal(s.p.w[s.p.steal_order[0][k]].numa_node, 1);
    /* Node 1 -> 2 (25) before 0 (30). */
    assert_int_equal(s.p.tier_end[6][1], 1);
    for (int k = 1; k < 5; k++) assert_int_equal(s.p.w[s.p.steal_order[6][k]].numa_node, 2);
    unload(&s);

    /* Scatter over unequal nodes: 0, 2, 1 (alternating packages) until a
     * node runs out, then the others continue. */
    c.pin = CF_PIN_SCATTER;
    load(&s, &c);
    static const int snode[12] = {0, 2, 1, 0, 2, 1, 0, 2, 0, 2, 0, 0};
    for (int i = 0; i < 12; i++) assert_int_equal(s.p.w[i].numa_node, snode[i]);
    unload(&s);
}

static void test_none_and_numa_off(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.pin = CF_PIN_NONE;
    struct setup s;
    load(&s, &c);
    assert_int_equal(s.p.n_workers, 32); /* one per core, unpinned */
    assert_int_equal(s.p.n_numa, 1);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(s.p.w[i].cpu, -1);
        assert_int_equal(s.p.w[i].node_slot, 0);
        assert_int_equal(cf__pin_self(s.topo, &s.p.w[i]), 0); /* nothing to do */
    }
    unload(&s);

    c = cfg_for(BIG, NULL);
    c.numa = false;
    load(&s, &c);
    assert_int_equal(s.p.n_numa, 1);
    assert_int_equal(s.p.slot_numa[0], -1);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(s.p.w[i].numa_node, i / 8); /* still reported */
        assert_int_equal(s.p.w[i].node_slot, 0);
        assert_int_equal(s.p.tier_end[i][0], 0);
        assert_int_equal(s.p.tier_end[i][1], 31);
        assert_int_equal(s.p.steal_order[i][0], (i + 1) % 32); /* flat rotation */
    }
    unload(&s);
}

static void test_one_worker(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.workers = 1;
    struct setup s;
    load(&s, &c);
    assert_int_equal(s.p.n_workers, 1);
    assert_int_equal(s.p.tier_end[0][2], 0);
    unload(&s);
}

/* What cfutures-info prints for the example machine (BIG). */
static void test_print(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(BIG, NULL);
    c.workers = 32;
    struct setup s;
    load(&s, &c);
    static char buf[16384];
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    assert_non_null(f);
    cf__placement_print(s.topo, &s.p, f);
    fclose(f);
    assert_non_null(strstr(buf, "2 packages, 4 NUMA nodes, 4 L3 caches, 32 cores, 64 PUs"));
    assert_non_null(strstr(buf, "placement: 32 workers over 4 NUMA node(s)"));
    /* worker 31: cpu 62, core 31, node 3, slot 3, package 1, L3 3; steals
     * from its L3 (24-30), then node 2 (same package), then package 0. */
    assert_non_null(strstr(buf, "    31    62    31     3    3    1    3  24-30"));
    assert_non_null(strstr(buf, "16-23,0-15\n"));
    unload(&s);
}

static void test_bad_topology_file(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, "/nonexistent/topo.xml");
    hwloc_topology_t t;
    assert_int_equal(cf__topology_load(&c, &t), CF_ESYS);
    assert_null(t);
    assert_int_equal(cf__topology_load(&c, NULL), CF_EINVAL);
}

/* This machine: the placement covers the allowed cores, and a worker
 * thread can pin itself (or fails cleanly with CF_ESYS). */
static void *pin_thread(void *arg)
{
    struct setup *s = arg;
    int rc = cf__pin_self(s->topo, &s->p.w[s->p.n_workers - 1]);
    return (void *)(intptr_t)(rc == 0 || rc == CF_ESYS);
}

static void test_this_machine(void **state)
{
    (void)state;
    struct cf__config c = cfg_for(NULL, NULL);
    struct setup s;
    load(&s, &c);
    assert_true(hwloc_topology_is_thissystem(s.topo));
    int cores = hwloc_get_nbobjs_by_type(s.topo, HWLOC_OBJ_CORE);
    if (cores <= 0) cores = hwloc_get_nbobjs_by_type(s.topo, HWLOC_OBJ_PU);
    assert_int_equal(s.p.n_workers, cf__cgroup_cpu_cap(cores)); /* a container's quota caps it */
    pthread_t th;
    void *ok;
    assert_int_equal(pthread_create(&th, NULL, pin_thread, &s), 0);
    assert_int_equal(pthread_join(th, &ok), 0);
    assert_true(ok != NULL);
    /* A second pool gets a copy of the same (cached) machine. */
    struct setup s2;
    load(&s2, &c);
    assert_int_equal(s2.p.n_workers, s.p.n_workers);
    for (int i = 0; i < s.p.n_workers; i++) assert_int_equal(s2.p.w[i].cpu, s.p.w[i].cpu);
    unload(&s2);
    unload(&s);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_compact_synthetic),
        cmocka_unit_test(test_big_compact_xml),
        cmocka_unit_test(test_big_via_hwloc_xmlfile),
        cmocka_unit_test(test_big_scatter),
        cmocka_unit_test(test_big_wrap),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_list_from_env),
        cmocka_unit_test(test_restricted),
        cmocka_unit_test(test_laptop),
        cmocka_unit_test(test_asymmetric),
        cmocka_unit_test(test_none_and_numa_off),
        cmocka_unit_test(test_one_worker),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_bad_topology_file),
        cmocka_unit_test(test_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
