/* Placement, settings and NUMA memory seen through a real thread pool on
 * this machine: the pool's workers sit where cf__placement_compute says,
 * tasks run pinned there (when the system lets us pin), records a worker
 * allocates land on its node, a bad CFUTURES_* value gives its one-line
 * message and the default, and a bad option fails the constructor.
 *
 * Environment: clears CFUTURES_* and HWLOC_XMLFILE / HWLOC_SYNTHETIC, then
 * sets what each case needs. Needs no particular core count (cases that
 * need two allowed CPUs skip on one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "sys/numa_alloc.h"
#include "sys/topology.h"
#include "support/test_env.h"

/* These tests ask where a task ran, so a worker must run it: a wait without
 * a timeout may run a task nobody has started on the waiting thread itself
 * (which has no node: -1), a timed wait never does. */
#define ON_A_WORKER 60.0

static void clear_env(void)
{
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
    unsetenv("HWLOC_XMLFILE");
    unsetenv("HWLOC_SYNTHETIC");
}

static int allowed_cpus(int *first, int *second)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            if (n == 0) *first = c;
            if (n == 1) *second = c;
            n++;
        }
    return n;
}

/* Where the task ran and whether its thread is bound to exactly one CPU:
 * cpu * 2 + (pinned ? 1 : 0). */
static int where_am_i(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    cpu_set_t set;
    int pinned = sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) == 1;
    return cf_out_i64(out, (int64_t)sched_getcpu() * 2 + pinned);
}

static void test_workers_where_placed(void **state)
{
    (void)state;
    clear_env();
    cf_thread_pool_opts o = {.stats = CF_SWITCH_ON};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);

    struct cf__config c;
    cf__config_load(&c);
    assert_int_equal(cf__config_apply_thread_opts(&c, &o), 0);
    hwloc_topology_t t;
    struct cf__placement p;
    assert_int_equal(cf__topology_load(&c, &t), 0);
    assert_int_equal(cf__placement_compute(t, &c, &p), 0);

    cf_worker_stats st[64];
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 64, &n), 0);
    assert_int_equal((int)n, p.n_workers);
    assert_int_equal(cf_executor_workers(ex), p.n_workers);
    for (size_t i = 0; i < n && i < 64; i++) {
        assert_int_equal(st[i].cpu, p.w[i].cpu);
        assert_int_equal(st[i].numa_node, p.w[i].numa_node);
    }

    /* Every task runs on one of the placed CPUs; pinned unless the
     * system refused (then it says so and the check is skipped). */
    int pinned = 0, total = 0;
    for (int k = 0; k < 8; k++) {
        cf_future *f;
        assert_int_equal(cf_submit(ex, where_am_i, NULL, 0, &f), 0);
        int64_t v;
        assert_int_equal(cf_future_result_i64(f, ON_A_WORKER, &v), 0);
        cf_future_release(f);
        int cpu = (int)(v / 2);
        bool placed = false;
        for (int i = 0; i < p.n_workers; i++) placed |= p.w[i].cpu == cpu;
        pinned += (int)(v % 2);
        total++;
        if ((v % 2) && !placed) fail_msg("pinned task ran on cpu %d, not a placed one", cpu);
    }
    if (pinned < total)
        print_message("pinning refused for %d of %d tasks\n", total - pinned, total);
    cf__placement_free(&p);
    hwloc_topology_destroy(t);
    cf_executor_free(ex);
}

static void test_cpu_list_pool(void **state)
{
    (void)state;
    int a = -1, b = -1;
    if (allowed_cpus(&a, &b) < 2) skip();
    clear_env();
    char list[32];
    snprintf(list, sizeof list, "%d", b);
    cf_thread_pool_opts o = {.cpu_list = list};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    assert_int_equal(cf_executor_workers(ex), 1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, where_am_i, NULL, 0, &f), 0);
    int64_t v;
    assert_int_equal(cf_future_result_i64(f, ON_A_WORKER, &v), 0);
    if (v % 2) assert_int_equal(v / 2, b); /* pinned: on the listed CPU */
    cf_future_release(f);
    cf_executor_free(ex);
}

/* Records a worker allocates come from its node (node 0 here). */
static int alloc_here(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    const size_t sz = (size_t)256 << 10;
    char *m = cf__alloc(sz);
    if (!m) return cf_out_error(out, 1, "no memory");
    memset(m, 7, sz);
    int node = cf__numa_node_of(m, sz);
    int thread_node = cf__alloc_thread_node();
    cf__free(m, sz);
    return cf_out_i64(out, (int64_t)node * 1000 + thread_node);
}

static void test_worker_memory_on_its_node(void **state)
{
    (void)state;
    clear_env();
    cf_thread_pool_opts o = {.max_workers = 1};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    cf_future *f;
    assert_int_equal(cf_submit(ex, alloc_here, NULL, 0, &f), 0);
    int64_t v;
    assert_int_equal(cf_future_result_i64(f, ON_A_WORKER, &v), 0);
    assert_int_equal(v % 1000, 0); /* the worker's preferred node */
    assert_int_equal(v / 1000, 0); /* where hwloc says the pages are */
    cf_future_release(f);
    cf_executor_free(ex);

    /* NUMA off: no preferred node. */
    o.numa = CF_SWITCH_OFF;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    assert_int_equal(cf_submit(ex, alloc_here, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result_i64(f, ON_A_WORKER, &v), 0);
    assert_int_equal((int)(v - (v / 1000) * 1000), -1);
    cf_future_release(f);
    cf_executor_free(ex);
}

static void test_bad_env_value_uses_default(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_WORKERS", "lots", 1);
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, NULL), 0);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_non_null(ex);
    char buf[1024] = {0};
    rewind(tmp);
    size_t got = fread(buf, 1, sizeof buf - 1, tmp);
    fclose(tmp);
    assert_true(got > 0);
    assert_non_null(strstr(buf, "CFUTURES_WORKERS=\"lots\""));
    assert_non_null(strstr(buf, "[0, 4096]"));
    assert_non_null(strchr(buf, '\n'));
    assert_int_equal(strchr(buf, '\n')[1], '\0'); /* one line */

    struct cf__config c;
    cf__config_load(&c);
    hwloc_topology_t t;
    struct cf__placement p;
    assert_int_equal(cf__topology_load(&c, &t), 0);
    assert_int_equal(cf__placement_compute(t, &c, &p), 0);
    assert_int_equal(cf_executor_workers(ex), p.n_workers); /* the default */
    cf__placement_free(&p);
    hwloc_topology_destroy(t);
    cf_executor_free(ex);
    clear_env();
}

static void test_bad_options_fail(void **state)
{
    (void)state;
    clear_env();
    cf_thread_pool_opts bad[] = {
        {.max_workers = -1},
        {.spin_ns = -5},
        {.pin = CF_PIN_LIST},
        {.cpu_list = "1-0"},
        {.cpu_list = "8191"}, /* not a CPU this process may use */
        {.pin = (enum cf_pin_policy)42},
        {.numa = (enum cf_switch)9},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int err = 0;
        cf_executor *ex;
        err = cf_thread_pool_new(&ex, &bad[i]);
        if (ex) fail_msg("bad option %zu accepted", i);
        assert_int_equal(err, CF_EINVAL);
    }
    cf_process_pool_opts pbad = {.ring_depth = 3};
    cf_executor *pex;
    assert_int_equal(cf_process_pool_new(&pex, &pbad), CF_EINVAL);
    assert_null(pex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_where_placed),
        cmocka_unit_test(test_cpu_list_pool),
        cmocka_unit_test(test_worker_memory_on_its_node),
        cmocka_unit_test(test_bad_env_value_uses_default),
        cmocka_unit_test(test_bad_options_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
