/* Placement and steal order from the hwloc topology.
 *
 * Not concurrent: a pool computes its placement once, before its workers
 * start, and frees it after they are joined; the result is then read-only.
 * The one shared object is this machine's topology (machine_base), built
 * once per process by whichever pool gets there first, published by a CAS
 * (lock-free), read-only afterwards and never freed.
 * Nothing here binds anything except cf__pin_self, so placements can be
 * computed for machines we do not have (HWLOC_SYNTHETIC, HWLOC_XMLFILE,
 * CFUTURES_TOPOLOGY).
 *
 * Units: one worker per core (hwloc Core objects; PUs when a topology has
 * no cores), not per hardware thread. Policies:
 *   compact  cores in topology order: fills a package / NUMA node first;
 *   scatter  round-robin over NUMA nodes (or packages on one node), the
 *            node order alternating packages, so 4 workers on 2 packages x
 *            2 nodes land on 4 different nodes, two per package;
 *   list     exactly the OS CPUs of the cpu list, one worker each, in order;
 *   none     no binding (cpu -1, place unknown).
 * More workers than units wraps around: the second round goes to each
 * core's second hardware thread (in the same order), and so on; a list
 * wraps to its start.
 *
 * Steal order, per worker: victims sharing its core or L3 first, then the
 * rest of its NUMA node, then other nodes by hwloc's latency matrix when
 * the topology has one (else same package first); inside a tier, workers
 * after the thief come first (a rotation, so thieves do not all hammer
 * worker 0). With NUMA off there is one flat tier. */
#include "sys/topology.h"

#include "sys/alloc.h"
#include "sys/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Setup-time arrays (freed by cf__placement_free), from the library's
 * allocator like every record; zeroed; at least one element. */
static void *t_calloc(long long n, size_t size)
{
    size_t k = n > 0 ? (size_t)n : 1;
    if (size && k > SIZE_MAX / size) return NULL;
    return cf__calloc(k * size);
}
#define T_CALLOC(n, type) ((type *)t_calloc((long long)(n), sizeof(type)))
#define T_FREE(p) cf__free((p), 0)

static hwloc_bitmap_t cpu_list_bitmap(const char *list)
{
    int n = cf__cpu_list_parse(list, NULL, 0);
    if (n <= 0) return NULL;
    int *cpus = T_CALLOC(n, int);
    hwloc_bitmap_t b = hwloc_bitmap_alloc();
    if (!cpus || !b) {
        T_FREE(cpus);
        hwloc_bitmap_free(b);
        return NULL;
    }
    cf__cpu_list_parse(list, cpus, n);
    for (int i = 0; i < n; i++) hwloc_bitmap_set(b, (unsigned)cpus[i]);
    T_FREE(cpus);
    return b;
}

/* hwloc reads these itself and then describes another machine. */
static bool env_redirects(void)
{
    static const char *const vars[] = {"HWLOC_XMLFILE", "HWLOC_SYNTHETIC", "HWLOC_FSROOT",
                                       "HWLOC_CPUID_PATH", "HWLOC_COMPONENTS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return true;
    return false;
}

/* This machine's topology, discovered once per process (a few ms from
 * sysfs) and never freed; each pool gets a copy (tens of us) that it may
 * restrict. Lock-free: racers each load one, one CAS wins, the others
 * destroy theirs. Changes to the machine after the first pool (CPU
 * hotplug, a new cgroup cpuset) are not seen; the affinity mask is read
 * again for every pool. */
static _Atomic(hwloc_topology_t) g_machine;

static hwloc_topology_t machine_base(void)
{
    /* Acquire pairs with the release of the winning CAS: a topology seen
     * here is completely built. */
    hwloc_topology_t t = atomic_load_explicit(&g_machine, memory_order_acquire);
    if (t) return t;
    if (hwloc_topology_init(&t) < 0) return NULL;
    if (hwloc_topology_load(t) < 0 || !hwloc_topology_is_thissystem(t)) {
        hwloc_topology_destroy(t);
        return NULL;
    }
    hwloc_topology_refresh(t); /* hwloc's step before concurrent reads (dup) */
    hwloc_topology_t expected = NULL;
    /* Release publishes the built topology; on failure, acquire reads the
     * winner's. */
    if (!atomic_compare_exchange_strong_explicit(&g_machine, &expected, t, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        hwloc_topology_destroy(t);
        return expected;
    }
    return t;
}

/* CFUTURES_TOPOLOGY's file, read into memory without ever blocking: opened
 * O_NONBLOCK (a FIFO with no writer would block open() and read()), then
 * only a regular file of a sane size is read. Returns a NUL-terminated
 * cf__alloc'd buffer and its size with the NUL, or NULL with *why set. */
static char *read_topology_file(const char *path, size_t *size, const char **why)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *why = "cannot open it";
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
    } else if (st.st_size <= 0 || st.st_size > CF__TOPOLOGY_MAX_BYTES) {
        *why = st.st_size <= 0 ? "empty file" : "larger than 64 MiB";
    } else if (!(buf = cf__alloc((size_t)st.st_size + 1))) {
        *why = "out of memory";
    } else {
        size_t n = 0, want = (size_t)st.st_size;
        while (n < want) {
            ssize_t r = read(fd, buf + n, want - n);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break; /* error, or the file shrank: take what was read */
            n += (size_t)r;
        }
        if (n == 0) {
            cf__free(buf, want + 1);
            buf = NULL;
            *why = "cannot read it";
        } else {
            buf[n] = '\0';
            *size = n + 1;
        }
    }
    close(fd);
    return buf;
}

/* hwloc 2.9 crashes on some malformed files (a PU without a
 * complete_cpuset dereferences NULL; fixed in later hwloc), and a file
 * named by CFUTURES_TOPOLOGY must not take the process down. So hwloc
 * first reads the bytes in a forked child that reports success through a
 * pipe (not its exit status: the application may ignore SIGCHLD, or reap
 * children itself) and is silenced; only what the child read cleanly is
 * loaded here. t is initialised already, so hwloc's components are loaded
 * before the fork and the child only parses. Costs one fork per pool that
 * uses CFUTURES_TOPOLOGY. Returns 0 (safe), 1 (hwloc rejects it), 2 (hwloc
 * crashed on it) or -1 (no fork or pipe). */
static int xml_loads_safely(hwloc_topology_t t, const char *xml, size_t size)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /* A crash must end this child: the application's handlers (a
         * test framework's longjmp, a crash reporter) must not run here. */
        static const int crash[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP};
        for (size_t i = 0; i < sizeof crash / sizeof crash[0]; i++) signal(crash[i], SIG_DFL);
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) dup2(null, STDERR_FILENO);
        char verdict = hwloc_topology_set_xmlbuffer(t, xml, (int)size) == 0 &&
                               hwloc_topology_load(t) == 0
                           ? 'y'
                           : 'n';
        ssize_t w = write(fds[1], &verdict, 1);
        _exit(w == 1 ? 0 : 1);
    }
    close(fds[1]);
    char verdict = 0;
    ssize_t r;
    while ((r = read(fds[0], &verdict, 1)) < 0 && errno == EINTR) {
    }
    close(fds[0]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (r != 1) return 2; /* it died before answering */
    return verdict == 'y' ? 0 : 1;
}

static int load_fresh(const struct cf__config *cfg, hwloc_topology_t *out)
{
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) < 0) return CF_ESYS;
    /* Without an XML source of ours, hwloc_topology_load honours
     * HWLOC_XMLFILE and HWLOC_SYNTHETIC from the environment itself. */
    if (!cfg || !cfg->topology[0]) {
        if (hwloc_topology_load(t) < 0) {
            hwloc_topology_destroy(t);
            return CF_ESYS;
        }
        *out = t;
        return 0;
    }
    /* hwloc is given the bytes, not the path: it would open a FIFO and
     * block, and it reports a bad file without saying so. */
    _Static_assert(CF__TOPOLOGY_MAX_BYTES < INT_MAX,
                   "a file's size (with its NUL) fits hwloc's int");
    const char *why = NULL;
    size_t size = 0;
    char *xml = read_topology_file(cfg->topology, &size, &why);
    int rc = 0, safe;
    if (!xml) {
        rc = CF_ESYS;
    } else if ((safe = xml_loads_safely(t, xml, size)) == 1) {
        why = "hwloc cannot read it as a topology XML file";
        rc = CF_ESYS;
    } else if (safe == 2) {
        why = "hwloc crashed reading it (a malformed topology file)";
        rc = CF_ESYS;
    } else if (safe < 0) {
        why = "cannot fork to check it";
        rc = CF_ESYS;
    } else if (hwloc_topology_set_xmlbuffer(t, xml, (int)size) < 0 || hwloc_topology_load(t) < 0) {
        why = "hwloc cannot read it as a topology XML file";
        rc = CF_ESYS;
    }
    if (xml) cf__free(xml, size);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s; the pool is not created", why);
        cf__config_warn(cfg, CF__SET_TOPOLOGY, msg);
        hwloc_topology_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

int cf__topology_load(const struct cf__config *cfg, hwloc_topology_t *out)
{
    hwloc_topology_t t, base;
    if (!out) return CF_EINVAL;
    *out = NULL;
    if ((cfg && cfg->topology[0]) || env_redirects() || !(base = machine_base()) ||
        hwloc_topology_dup(&t, base) < 0) {
        int rc = load_fresh(cfg, &t);
        if (rc) return rc;
    }
    /* Arrays indexed by OS CPU number (cpu_slot here, the pool's
     * cpu_worker) are sized by the largest one: a topology file naming CPU
     * 32000000 would cost hundreds of MiB. Linux numbers CPUs below 8192,
     * the bound of a CPU list too. */
    int last_cpu = hwloc_bitmap_last(hwloc_topology_get_topology_cpuset(t));
    if (last_cpu < 0 || last_cpu > CF__MAX_CPU) {
        char msg[160];
        snprintf(msg, sizeof msg, "it has %s; the pool is not created",
                 last_cpu < 0 ? "no CPU" : "CPU indexes above 8191");
        cf__config_warn(cfg, CF__SET_TOPOLOGY, msg);
        hwloc_topology_destroy(t);
        return CF_EINVAL;
    }

    hwloc_bitmap_t allowed = hwloc_bitmap_dup(hwloc_topology_get_topology_cpuset(t));
    if (!allowed) goto fail;
    if (hwloc_topology_is_thissystem(t)) {
        /* The process's affinity mask (taskset, sched_setaffinity): the
         * union over its threads, so a pool created from a pinned thread
         * still sees every CPU the process may use. cgroup cpusets are
         * already excluded by hwloc. */
        hwloc_bitmap_t bind = hwloc_bitmap_alloc();
        if (bind && hwloc_get_cpubind(t, bind, HWLOC_CPUBIND_PROCESS) == 0 &&
            !hwloc_bitmap_iszero(bind))
            hwloc_bitmap_and(allowed, allowed, bind);
        hwloc_bitmap_free(bind);
    }
    if (cfg && cfg->cpu_list[0]) {
        hwloc_bitmap_t l = cpu_list_bitmap(cfg->cpu_list);
        if (!l) {
            hwloc_bitmap_free(allowed);
            hwloc_topology_destroy(t);
            return CF_EINVAL;
        }
        hwloc_bitmap_and(allowed, allowed, l);
        hwloc_bitmap_free(l);
    }
    if (hwloc_bitmap_iszero(allowed)) {
        if (cfg && cfg->cpu_list[0])
            cf__config_warn(cfg, CF__SET_CPU_LIST,
                            "none of these CPUs is in the topology and the process's affinity "
                            "mask; the pool is not created");
        hwloc_bitmap_free(allowed);
        hwloc_topology_destroy(t);
        return CF_EINVAL;
    }
    if (!hwloc_bitmap_isequal(allowed, hwloc_topology_get_topology_cpuset(t)) &&
        hwloc_topology_restrict(t, allowed, 0) < 0) {
        hwloc_bitmap_free(allowed);
        goto fail;
    }
    hwloc_bitmap_free(allowed);
    *out = t;
    return 0;
fail:
    hwloc_topology_destroy(t);
    return CF_ESYS;
}

/* The NUMA node holding `set` (the first node whose CPUs include it). */
static hwloc_obj_t node_of(hwloc_topology_t t, hwloc_const_cpuset_t set)
{
    hwloc_obj_t n = NULL, partial = NULL;
    while ((n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, n))) {
        if (!n->cpuset || hwloc_bitmap_iszero(n->cpuset)) continue;
        if (hwloc_bitmap_isincluded(set, n->cpuset)) return n;
        if (!partial && hwloc_bitmap_intersects(set, n->cpuset)) partial = n;
    }
    return partial;
}

static int ancestor_index(hwloc_topology_t t, hwloc_obj_type_t type, hwloc_obj_t o)
{
    if (o->type == type) return (int)o->logical_index;
    hwloc_obj_t a = hwloc_get_ancestor_obj_by_type(t, type, o);
    return a ? (int)a->logical_index : -1;
}

static void describe(hwloc_topology_t t, hwloc_obj_t pu, struct cf__worker_place *w)
{
    hwloc_obj_t n = node_of(t, pu->cpuset);
    w->cpu = (int)pu->os_index;
    w->core = ancestor_index(t, HWLOC_OBJ_CORE, pu);
    w->numa_node = n ? (int)n->logical_index : -1;
    w->package = ancestor_index(t, HWLOC_OBJ_PACKAGE, pu);
    w->l3 = ancestor_index(t, HWLOC_OBJ_L3CACHE, pu);
}

/* The units (cores, else PUs) in topology order. */
static int units(hwloc_topology_t t, hwloc_obj_t **out)
{
    hwloc_obj_type_t type = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                                            : HWLOC_OBJ_PU;
    int n = hwloc_get_nbobjs_by_type(t, type);
    hwloc_obj_t *u = T_CALLOC(n, hwloc_obj_t);
    if (!u) return CF_ENOMEM;
    int k = 0;
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, type, (unsigned)i);
        if (o && o->cpuset && !hwloc_bitmap_iszero(o->cpuset)) u[k++] = o;
    }
    *out = u;
    return k;
}

/* Scatter: reorder u[0..n) round-robin over groups (NUMA nodes, or packages
 * when one node holds them all); group order alternates packages. */
static int scatter(hwloc_topology_t t, hwloc_obj_t *u, int n)
{
    int *grp = T_CALLOC(n, int), *pkg = T_CALLOC(n, int), *node = T_CALLOC(n, int);
    hwloc_obj_t *res = T_CALLOC(n, hwloc_obj_t);
    int *gid = T_CALLOC(n, int), *gpkg = T_CALLOC(n, int), *grank = T_CALLOC(n, int);
    int *gorder = T_CALLOC(n, int), *gnext = T_CALLOC(n, int);
    int rc = CF_ENOMEM;
    if (!grp || !pkg || !node || !res || !gid || !gpkg || !grank || !gorder || !gnext) goto out;
    bool many_nodes = false;
    for (int i = 0; i < n; i++) {
        hwloc_obj_t nd = node_of(t, u[i]->cpuset);
        node[i] = nd ? (int)nd->logical_index : -1;
        pkg[i] = ancestor_index(t, HWLOC_OBJ_PACKAGE, u[i]);
        if (node[i] != node[0]) many_nodes = true;
    }
    /* Groups in order of first appearance (= topology order). */
    int ng = 0;
    for (int i = 0; i < n; i++) {
        int key = many_nodes ? node[i] : pkg[i], g;
        for (g = 0; g < ng && gid[g] != key; g++) {
        }
        if (g == ng) {
            gid[ng] = key;
            gpkg[ng] = pkg[i];
            ng++;
        }
        grp[i] = g;
    }
    /* A group's rank among its package's groups; visit by (rank, package). */
    for (int g = 0; g < ng; g++)
        for (int h = 0; h < g; h++)
            if (gpkg[h] == gpkg[g]) grank[g]++;
    int k = 0;
    for (int r = 0; k < ng; r++)
        for (int g = 0; g < ng; g++)
            if (grank[g] == r) gorder[k++] = g;
    /* Round-robin: each group's next unit, in group order. */
    k = 0;
    while (k < n) {
        for (int j = 0; j < ng; j++) {
            int g = gorder[j];
            while (gnext[g] < n && grp[gnext[g]] != g) gnext[g]++;
            if (gnext[g] < n) res[k++] = u[gnext[g]++];
        }
    }
    memcpy(u, res, (size_t)n * sizeof *u);
    rc = 0;
out:
    T_FREE(grp);
    T_FREE(pkg);
    T_FREE(node);
    T_FREE(res);
    T_FREE(gid);
    T_FREE(gpkg);
    T_FREE(grank);
    T_FREE(gorder);
    T_FREE(gnext);
    return rc;
}

/* Latency between two NUMA nodes (logical indexes): hwloc's matrix when
 * the topology has one, else 1 within a package and 2 across. */
struct node_dist {
    struct hwloc_distances_s *d;
};

static uint64_t node_distance(hwloc_topology_t t, const struct node_dist *nd, int a, int b, int pa,
                              int pb)
{
    if (a == b) return 0;
    if (nd->d && a >= 0 && b >= 0) {
        hwloc_obj_t oa = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)a);
        hwloc_obj_t ob = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)b);
        hwloc_uint64_t v1, v2;
        if (oa && ob && hwloc_distances_obj_pair_values(nd->d, oa, ob, &v1, &v2) == 0)
            return v1 < (1u << 20) ? v1 : (1u << 20);
    }
    return (pa >= 0 && pa == pb) ? 1 : 2;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Victims of worker i, keyed (tier, distance, rotation) and sorted. */
static void steal_order(hwloc_topology_t t, const struct node_dist *nd, struct cf__placement *p,
                        bool numa, int i, uint64_t *keys)
{
    int n = p->n_workers;
    const struct cf__worker_place *a = &p->w[i];
    int m = 0;
    for (int j = 0; j < n; j++) {
        if (j == i) continue;
        const struct cf__worker_place *b = &p->w[j];
        bool same_core = a->core >= 0 && a->core == b->core;
        bool same_l3 = a->l3 >= 0 && a->l3 == b->l3;
        bool same_node = a->numa_node < 0 || b->numa_node < 0 || a->numa_node == b->numa_node;
        uint64_t tier, dist = 0, rot = (uint64_t)((j - i + n) % n);
        if (!numa) tier = 1;
        else if (same_core || same_l3) tier = 0, dist = same_core ? 0 : 1;
        else if (same_node) tier = 1;
        else
            tier = 2,
            dist = node_distance(t, nd, a->numa_node, b->numa_node, a->package, b->package);
        /* tier: 2 bits, distance: 21 bits, rotation: 13 bits (< 8192),
         * worker index: low 16 bits. */
        keys[m++] = tier << 62 | dist << 41 | rot << 16 | (uint64_t)j;
    }
    qsort(keys, (size_t)m, sizeof *keys, cmp_u64);
    p->tier_end[i][0] = p->tier_end[i][1] = p->tier_end[i][2] = m;
    for (int k = m - 1; k >= 0; k--) {
        int tier = (int)(keys[k] >> 62);
        p->steal_order[i][k] = (int)(keys[k] & 0xffff);
        if (tier >= 2) p->tier_end[i][1] = k;
        if (tier >= 1) p->tier_end[i][0] = k;
    }
}

/* Dense node slots and the cpu -> slot map. */
static int node_slots(hwloc_topology_t t, struct cf__placement *p, bool numa)
{
    int nn = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    int *slot_of = T_CALLOC(nn, int);
    if (!slot_of) return CF_ENOMEM;
    for (int k = 0; k < nn; k++) slot_of[k] = -1;
    p->n_numa = 0;
    if (numa) {
        for (int i = 0; i < p->n_workers; i++)
            if (p->w[i].numa_node >= 0 && p->w[i].numa_node < nn) slot_of[p->w[i].numa_node] = 0;
        for (int k = 0; k < nn; k++)
            if (slot_of[k] == 0) slot_of[k] = p->n_numa++;
    }
    bool known = p->n_numa > 0;
    if (!known) p->n_numa = 1;
    p->slot_numa = T_CALLOC(p->n_numa, int);
    int last = hwloc_bitmap_last(hwloc_topology_get_topology_cpuset(t));
    p->n_cpu_slot = last >= 0 ? last + 1 : 0;
    p->cpu_slot = T_CALLOC(p->n_cpu_slot, int);
    if (!p->slot_numa || !p->cpu_slot) {
        T_FREE(slot_of);
        return CF_ENOMEM;
    }
    p->slot_numa[0] = -1;
    for (int k = 0; k < nn; k++)
        if (known && slot_of[k] >= 0) p->slot_numa[slot_of[k]] = k;
    for (int i = 0; i < p->n_workers; i++) {
        int nd = p->w[i].numa_node;
        p->w[i].node_slot = known && nd >= 0 && nd < nn && slot_of[nd] >= 0 ? slot_of[nd] : 0;
    }
    for (int c = 0; c < p->n_cpu_slot; c++) {
        p->cpu_slot[c] = -1;
        hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t, (unsigned)c);
        if (!pu) continue;
        hwloc_obj_t nd = known ? node_of(t, pu->cpuset) : NULL;
        p->cpu_slot[c] = nd && slot_of[nd->logical_index] >= 0 ? slot_of[nd->logical_index] : 0;
    }
    T_FREE(slot_of);
    return 0;
}

int cf__placement_slot_of_cpu(const struct cf__placement *p, int cpu)
{
    if (!p || cpu < 0 || cpu >= p->n_cpu_slot || p->cpu_slot[cpu] < 0) return 0;
    return p->cpu_slot[cpu];
}

/* The r-th hardware thread of unit u (wrapping). */
static hwloc_obj_t nth_pu(hwloc_topology_t t, hwloc_obj_t u, int r)
{
    int k = hwloc_get_nbobjs_inside_cpuset_by_type(t, u->cpuset, HWLOC_OBJ_PU);
    if (k <= 0) return NULL;
    return hwloc_get_obj_inside_cpuset_by_type(t, u->cpuset, HWLOC_OBJ_PU, (unsigned)(r % k));
}

/* One per unit by default, but no more than a worker count may be set to
 * (a topology file may describe 8192 cores; the steal orders alone grow
 * with the square of the count), nor than the CPU time the process's
 * cgroups grant it (a container's CPU quota: more workers would only be
 * throttled). The quota belongs to this machine: a topology of another
 * one (a file, HWLOC_SYNTHETIC) is not capped by it. */
static int default_workers(hwloc_topology_t t, int units)
{
    int n = units < CF__MAX_WORKERS ? units : CF__MAX_WORKERS;
    return hwloc_topology_is_thissystem(t) ? cf__cgroup_cpu_cap(n) : n;
}

static int place_workers(hwloc_topology_t t, const struct cf__config *cfg, struct cf__placement *p)
{
    if (cfg->pin == CF_PIN_LIST) {
        int n = cf__cpu_list_parse(cfg->cpu_list, NULL, 0);
        if (n <= 0) return CF_EINVAL;
        int *cpus = T_CALLOC(n, int);
        if (!cpus) return CF_ENOMEM;
        cf__cpu_list_parse(cfg->cpu_list, cpus, n);
        int rc = 0;
        /* Every listed CPU must be there, even with fewer workers than CPUs. */
        for (int k = 0; k < n; k++) {
            if (hwloc_get_pu_obj_by_os_index(t, (unsigned)cpus[k])) continue;
            /* Not in the (allowed) topology. */
            char msg[160];
            snprintf(msg, sizeof msg,
                     "CPU %d is not in the topology or the process's affinity mask "
                     "(pin=list needs every CPU); the pool is not created",
                     cpus[k]);
            cf__config_warn(cfg, CF__SET_CPU_LIST, msg);
            T_FREE(cpus);
            return CF_EINVAL;
        }
        /* A list names its CPUs: one worker each, quota or not. */
        p->n_workers = cfg->workers > 0 ? cfg->workers
                                        : (n < CF__MAX_WORKERS ? n : CF__MAX_WORKERS);
        p->w = T_CALLOC(p->n_workers, struct cf__worker_place);
        if (!p->w) rc = CF_ENOMEM;
        for (int i = 0; !rc && i < p->n_workers; i++) {
            hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t, (unsigned)cpus[i % n]);
            describe(t, pu, &p->w[i]);
            p->w[i].cpuset = hwloc_bitmap_dup(pu->cpuset);
            if (!p->w[i].cpuset) rc = CF_ENOMEM;
        }
        T_FREE(cpus);
        return rc;
    }
    hwloc_obj_t *u;
    int nu = units(t, &u);
    if (nu < 0) return nu;
    if (nu == 0) {
        T_FREE(u);
        return CF_EINVAL;
    }
    int rc = cfg->pin == CF_PIN_SCATTER ? scatter(t, u, nu) : 0;
    p->n_workers = cfg->workers > 0 ? cfg->workers : default_workers(t, nu);
    p->w = T_CALLOC(p->n_workers, struct cf__worker_place);
    if (!rc && !p->w) rc = CF_ENOMEM;
    for (int i = 0; !rc && i < p->n_workers; i++) {
        struct cf__worker_place *w = &p->w[i];
        if (cfg->pin == CF_PIN_NONE) {
            *w = (struct cf__worker_place){-1, -1, -1, -1, -1, 0, NULL};
            continue;
        }
        hwloc_obj_t pu = nth_pu(t, u[i % nu], i / nu);
        if (!pu) {
            rc = CF_EINVAL;
            break;
        }
        describe(t, pu, w);
        w->cpuset = hwloc_bitmap_dup(pu->cpuset);
        if (!w->cpuset) rc = CF_ENOMEM;
    }
    T_FREE(u);
    return rc;
}

int cf__placement_compute(hwloc_topology_t topo, const struct cf__config *cfg,
                          struct cf__placement *out)
{
    if (!topo || !cfg || !out) return CF_EINVAL;
    memset(out, 0, sizeof *out);
    int rc = place_workers(topo, cfg, out);
    if (!rc) rc = node_slots(topo, out, cfg->numa && cfg->pin != CF_PIN_NONE);
    if (rc) goto fail;
    int n = out->n_workers;
    out->steal_order = T_CALLOC(n, int *);
    out->tier_end = t_calloc(n, sizeof *out->tier_end);
    size_t nv = n > 1 ? (size_t)n * (size_t)(n - 1) : 1;
    int *victims = T_CALLOC(nv, int);
    uint64_t *keys = T_CALLOC(n, uint64_t);
    if (!out->steal_order || !out->tier_end || !victims || !keys) {
        T_FREE(victims);
        T_FREE(keys);
        rc = CF_ENOMEM;
        goto fail;
    }
    struct node_dist nd = {NULL};
    unsigned nr = 1;
    if (hwloc_distances_get_by_type(topo, HWLOC_OBJ_NUMANODE, &nr, &nd.d,
                                    HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) < 0 ||
        nr == 0)
        nd.d = NULL;
    for (int i = 0; i < n; i++) {
        out->steal_order[i] = victims + (size_t)i * (size_t)(n - 1);
        steal_order(topo, &nd, out, cfg->numa, i, keys);
    }
    if (nd.d) hwloc_distances_release(topo, nd.d);
    T_FREE(keys);
    return 0;
fail:
    cf__placement_free(out);
    return rc;
}

void cf__placement_free(struct cf__placement *p)
{
    if (!p) return;
    for (int i = 0; p->w && i < p->n_workers; i++) hwloc_bitmap_free(p->w[i].cpuset);
    T_FREE(p->w);
    if (p->steal_order) T_FREE(p->steal_order[0]);
    T_FREE(p->steal_order);
    T_FREE(p->tier_end);
    T_FREE(p->slot_numa);
    T_FREE(p->cpu_slot);
    memset(p, 0, sizeof *p);
}

int cf__pin_self(hwloc_topology_t topo, const struct cf__worker_place *place)
{
    if (!topo || !place || !place->cpuset) return 0;
    return hwloc_set_cpubind(topo, place->cpuset, HWLOC_CPUBIND_THREAD) < 0 ? CF_ESYS : 0;
}

/* "3-7,0" style: ascending runs collapsed. */
static void print_list(FILE *f, const int *v, int from, int to)
{
    if (from >= to) {
        fputs("-", f);
        return;
    }
    for (int k = from; k < to;) {
        int e = k;
        while (e + 1 < to && v[e + 1] == v[e] + 1) e++;
        fprintf(f, "%s%d", k > from ? "," : "", v[k]);
        if (e > k) fprintf(f, "-%d", v[e]);
        k = e + 1;
    }
}

void cf__placement_print(hwloc_topology_t topo, const struct cf__placement *p, void *FILE_stream)
{
    FILE *f = FILE_stream ? FILE_stream : stdout;
    hwloc_obj_t root = hwloc_get_root_obj(topo);
    const char *backend = hwloc_obj_get_info_by_name(root, "Backend");
    char cpus[256];
    hwloc_bitmap_list_snprintf(cpus, sizeof cpus, hwloc_topology_get_topology_cpuset(topo));
    fprintf(f,
            "topology: %d packages, %d NUMA nodes, %d L3 caches, %d cores, %d PUs "
            "(backend %s, %s)\n",
            hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE),
            hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE),
            hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_L3CACHE),
            hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE),
            hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU), backend ? backend : "?",
            hwloc_topology_is_thissystem(topo) ? "this machine" : "not this machine");
    fprintf(f, "allowed CPUs: %s\n", cpus);
    fprintf(f, "placement: %d workers over %d NUMA node(s)\n", p->n_workers, p->n_numa);
    fprintf(f, "%6s %5s %5s %5s %4s %4s %4s  %-14s %-14s %s\n", "worker", "cpu", "core", "node",
            "slot", "pkg", "L3", "steal:L3/core", "steal:node", "steal:remote");
    for (int i = 0; i < p->n_workers; i++) {
        const struct cf__worker_place *w = &p->w[i];
        fprintf(f, "%6d %5d %5d %5d %4d %4d %4d  ", i, w->cpu, w->core, w->numa_node, w->node_slot,
                w->package, w->l3);
        char buf[3][512];
        int from = 0;
        for (int t = 0; t < 3; t++) {
            FILE *m = fmemopen(buf[t], sizeof buf[t], "w");
            if (m) {
                print_list(m, p->steal_order[i], from, p->tier_end[i][t]);
                fclose(m);
            } else {
                strcpy(buf[t], "?");
            }
            from = p->tier_end[i][t];
        }
        fprintf(f, "%-14s %-14s %s\n", buf[0], buf[1], buf[2]);
    }
}
