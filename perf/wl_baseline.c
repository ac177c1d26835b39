/* cfutures-bench: the thread-pool workloads on the mutex+condvar baseline
 * (baseline_pool.c): the same work, sizes and checks as wl_thread.c. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "baseline_pool.h"
#include "wl.h"

/* ---- tasks ---- */

static int bt_ret_arg(const void *arg, size_t len, void *res, size_t *res_len)
{
    (void)len;
    memcpy(res, arg, sizeof(int64_t));
    *res_len = sizeof(int64_t);
    return 0;
}

static int bt_empty(const void *arg, size_t len, void *res, size_t *res_len)
{
    (void)arg, (void)len, (void)res, (void)res_len;
    return 0;
}

static int bt_square(const void *arg, size_t len, void *res, size_t *res_len)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    v *= v;
    memcpy(res, &v, sizeof v);
    *res_len = sizeof v;
    return 0;
}

static int bt_spin(const void *arg, size_t len, void *res, size_t *res_len)
{
    struct cfb_spin_arg a;
    (void)len;
    memcpy(&a, arg, sizeof a);
    cfb_spin_ns(a.ns);
    memcpy(res, &a.idx, sizeof a.idx);
    *res_len = sizeof a.idx;
    return 0;
}

static int bt_hold(const void *arg, size_t len, void *res, size_t *res_len)
{
    struct cfb_hold *h;
    (void)len, (void)res, (void)res_len;
    memcpy(&h, arg, sizeof h);
    /* relaxed: a count only; the submitter polls it. */
    atomic_fetch_add_explicit(&h->started, 1, memory_order_relaxed);
    cfb_flag_wait(&h->release);
    return 0;
}

/* The i64 result of f (which must be done or will be); false if the task
 * failed or returned something else. */
static bool result_i64(struct bl_future *f, int64_t *v)
{
    const void *data;
    size_t len;
    if (bl_future_result(f, &data, &len) != 0 || len != sizeof *v) return false;
    memcpy(v, data, sizeof *v);
    return true;
}

static struct bl_pool *pool(struct cfb_result *r)
{
    struct bl_pool *p = bl_pool_new(cfb_workers());
    if (!p) cfb_fail(r, "baseline pool: cannot start workers");
    return p;
}

/* ---- submit_flat ---- */

static void submit_flat(struct cfb_result *r)
{
    long n = cfb_size("CFB_SUBMIT_FLAT_N", 1000000, 1);
    struct bl_future **fs = calloc((size_t)n, sizeof *fs);
    struct bl_pool *p = fs ? pool(r) : NULL;
    if (!p) {
        free(fs);
        return cfb_fail(r, "out of memory or no threads");
    }
    double t0 = cfb_now();
    for (long i = 0; i < n; i++) {
        int64_t v = i;
        if (!(fs[i] = bl_submit(p, bt_ret_arg, &v, sizeof v))) {
            cfb_fail(r, "baseline submit: out of memory");
            break;
        }
    }
    /* wait(ALL_COMPLETED), then read every result and release */
    for (long i = 0; i < n && fs[i]; i++) bl_future_result(fs[i], NULL, NULL);
    uint64_t sum = 0;
    for (long i = 0; i < n && fs[i]; i++) {
        int64_t v = 0;
        if (!result_i64(fs[i], &v)) cfb_fail(r, "baseline submit_flat: a task failed");
        sum += (uint64_t)v;
        bl_future_release(fs[i]);
    }
    double wall = cfb_now() - t0;
    bl_pool_free(p);
    free(fs);
    if (r->status != CFB_OK) return;
    if (sum != (uint64_t)n * (uint64_t)(n - 1) / 2)
        return cfb_fail(r, "baseline submit_flat: wrong sum %lu", (unsigned long)sum);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_task", wall * 1e9 / (double)n);
}

static void fib_skip(struct cfb_result *r)
{
    cfb_skip(r, "skipped: a mutex+condvar pool deadlocks on fib by design (a task blocked in "
                "result() holds its worker; once every worker waits nothing runs)");
}

/* ---- pingpong, pingpong_cold ---- */

/* As cfutures' pingpong_run (wl_thread.c), on the baseline pool. */
static void pingpong_run(struct cfb_result *r, long m, long sleep_ns, bool p999, int load)
{
    uint64_t *ns = malloc((size_t)m * sizeof *ns);
    struct cfb_load *busy = ns && load > 0 ? cfb_load_start(load) : NULL;
    struct bl_pool *p = ns && (load == 0 || busy) ? pool(r) : NULL;
    if (!p) {
        cfb_load_stop(busy);
        free(ns);
        return cfb_fail(r, "out of memory or no threads");
    }
    for (long i = 0; i < m; i++) {
        if (sleep_ns) cfb_sleep_ns(sleep_ns);
        uint64_t t0 = cfb_now_ns();
        struct bl_future *f = bl_submit(p, bt_empty, NULL, 0);
        if (!f) {
            cfb_fail(r, "baseline submit: out of memory");
            break;
        }
        size_t len = 1;
        int rc = bl_future_result(f, NULL, &len);
        uint64_t t1 = cfb_now_ns();
        bl_future_release(f);
        if (rc || len) {
            cfb_fail(r, "baseline pingpong: wrong result");
            break;
        }
        ns[i] = t1 - t0;
    }
    bl_pool_free(p);
    cfb_load_stop(busy);
    if (r->status == CFB_OK) cfb_pingpong_counters(r, ns, (size_t)m, p999);
    free(ns);
}

static void pingpong(struct cfb_result *r)
{
    pingpong_run(r, cfb_size("CFB_PINGPONG_M", 200000, 1), 0, true, 0);
}

static void pingpong_cold(struct cfb_result *r)
{
    pingpong_run(r, cfb_size("CFB_PINGPONG_COLD_M", 2000, 1),
                 (long)cfb_param("CFB_COLD_SLEEP_US", 1000, 0) * 1000, false, 0);
}

static void pingpong_loaded(struct cfb_result *r)
{
    pingpong_run(r, cfb_size("CFB_PINGPONG_LOADED_M", 20000, 1), 0, true, cfb_load_threads());
}

/* ---- map: what a pool without map does (and CPython's map does):
 * submit every item, then take the results in input order ---- */

static void map_bench(struct cfb_result *r)
{
    long n = cfb_size("CFB_MAP_N", 1000000, 1);
    int64_t *args = cfb_iota(n);
    struct bl_future **fs = calloc((size_t)n, sizeof *fs);
    struct bl_pool *p = args && fs ? pool(r) : NULL;
    if (!p) {
        free(args), free(fs);
        return cfb_fail(r, "out of memory or no threads");
    }
    uint64_t sum = 0;
    long count = 0;
    double t0 = cfb_now();
    for (long i = 0; i < n; i++)
        if (!(fs[i] = bl_submit(p, bt_square, &args[i], sizeof args[i]))) {
            cfb_fail(r, "baseline submit: out of memory");
            break;
        }
    for (long i = 0; i < n && fs[i]; i++) {
        int64_t v = 0;
        if (!result_i64(fs[i], &v) || v != args[i] * args[i])
            cfb_fail(r, "baseline map: item %ld wrong", i);
        sum += (uint64_t)v;
        count++;
        bl_future_release(fs[i]);
    }
    double wall = cfb_now() - t0;
    bl_pool_free(p);
    free(args), free(fs);
    if (r->status != CFB_OK) return;
    if (count != n || sum != cfb_sum_squares(n)) return cfb_fail(r, "baseline map: wrong sum");
    r->wall_s = wall;
    cfb_counter(r, "ns_per_item", wall * 1e9 / (double)n);
}

/* ---- as_completed ---- */

static void as_completed(struct cfb_result *r)
{
    long n = cfb_size("CFB_AS_COMPLETED_N", 100000, 1);
    uint64_t total_ns;
    struct cfb_spin_arg *args = cfb_spin_args(n, &total_ns);
    struct bl_future **fs = calloc((size_t)n, sizeof *fs);
    unsigned char *seen = calloc((size_t)n, 1);
    struct bl_waiter *w = bl_waiter_new((size_t)n);
    struct bl_pool *p = args && fs && seen && w ? pool(r) : NULL;
    if (!p) {
        free(args), free(fs), free(seen), bl_waiter_free(w);
        return cfb_fail(r, "out of memory or no threads");
    }
    long count = 0, got = 0;
    double t0 = cfb_now();
    for (; got < n; got++)
        if (!(fs[got] = bl_submit(p, bt_spin, &args[got], sizeof args[got]))) {
            cfb_fail(r, "baseline submit: out of memory");
            break;
        }
    if (got == n) {
        for (long i = 0; i < n; i++) bl_waiter_watch(w, fs[i]);
        for (long i = 0; i < n; i++) {
            struct bl_future *f = bl_waiter_next(w);
            int64_t idx = -1;
            if (!f || !result_i64(f, &idx) || idx < 0 || idx >= n || seen[idx]) {
                cfb_fail(r, "baseline as_completed: future %ld wrong or seen twice", (long)idx);
                break;
            }
            seen[idx] = 1;
            count++;
        }
    }
    double wall = cfb_now() - t0;
    for (long i = 0; i < got; i++) {
        bl_future_result(fs[i], NULL, NULL);
        bl_future_release(fs[i]);
    }
    bl_pool_free(p);
    bl_waiter_free(w);
    free(args), free(fs), free(seen);
    if (r->status != CFB_OK) return;
    if (count != n) return cfb_fail(r, "baseline as_completed: %ld of %ld seen", count, n);
    r->wall_s = wall;
    cfb_counter(r, "efficiency", ((double)total_ns * 1e-9 / cfb_workers()) / wall);
}

/* ---- future_bytes ---- */

static void future_bytes(struct cfb_result *r)
{
    long n = cfb_size("CFB_FUTURE_BYTES_N", 1000000, 1);
    int w = cfb_workers();
    static struct cfb_hold hold;
    struct bl_future **fs = calloc((size_t)n + (size_t)w, sizeof *fs);
    struct bl_pool *p = fs ? pool(r) : NULL;
    if (!p) {
        free(fs);
        return cfb_fail(r, "out of memory or no threads");
    }
    cfb_touch(fs, ((size_t)n + (size_t)w) * sizeof *fs); /* resident: not counted below */
    atomic_store_explicit(&hold.release, 0, memory_order_relaxed);
    atomic_store_explicit(&hold.started, 0, memory_order_relaxed);
    for (int i = 0; i < w; i++) {
        struct cfb_hold *h = &hold;
        fs[n + i] = bl_submit(p, bt_hold, &h, sizeof h);
    }
    long rss0 = 0, rss1 = 0;
    double wall = 0;
    if (cfb_wait_started(r, &hold.started, (unsigned)w)) {
        cfb_purge_memory();
        rss0 = cfb_rss_bytes();
        double t0 = cfb_now();
        for (long i = 0; i < n; i++) {
            int64_t v = i;
            if (!(fs[i] = bl_submit(p, bt_ret_arg, &v, sizeof v))) {
                cfb_fail(r, "baseline submit: out of memory");
                break;
            }
        }
        wall = cfb_now() - t0;
        rss1 = cfb_rss_bytes();
    }
    cfb_flag_set(&hold.release);
    uint64_t sum = 0;
    for (long i = 0; i < n + w; i++) {
        if (!fs[i]) continue;
        int64_t v = 0;
        if (i < n && result_i64(fs[i], &v)) sum += (uint64_t)v;
        else bl_future_result(fs[i], NULL, NULL);
        bl_future_release(fs[i]);
    }
    bl_pool_free(p);
    free(fs);
    if (r->status != CFB_OK) return;
    if (sum != (uint64_t)n * (uint64_t)(n - 1) / 2)
        return cfb_fail(r, "baseline future_bytes: wrong sum");
    if (rss0 < 0 || rss1 < 0) return cfb_fail(r, "future_bytes: cannot read /proc/self/statm");
    r->wall_s = wall;
    cfb_counter(r, "bytes_per_future", (double)(rss1 - rss0) / (double)n);
}

/* ---- idle_cpu ---- */

static void idle_cpu(struct cfb_result *r)
{
    long burst = cfb_size("CFB_IDLE_BURST", 10000, 1);
    double secs = cfb_real("CFB_IDLE_S", 1.0);
    struct bl_future **fs = calloc((size_t)burst, sizeof *fs);
    struct bl_pool *p = fs ? pool(r) : NULL;
    if (!p) {
        free(fs);
        return cfb_fail(r, "out of memory or no threads");
    }
    uint64_t sum = 0;
    for (long i = 0; i < burst; i++) {
        int64_t v = i;
        fs[i] = bl_submit(p, bt_ret_arg, &v, sizeof v);
    }
    for (long i = 0; i < burst; i++) {
        int64_t v = 0;
        if (!fs[i] || !result_i64(fs[i], &v)) cfb_fail(r, "baseline idle_cpu: a burst task failed");
        sum += (uint64_t)v;
        bl_future_release(fs[i]);
    }
    free(fs);
    if (r->status == CFB_OK && sum != (uint64_t)burst * (uint64_t)(burst - 1) / 2)
        cfb_fail(r, "baseline idle_cpu: wrong burst sum");
    if (r->status == CFB_OK) cfb_idle_measure(r, secs);
    bl_pool_free(p);
}

const struct cfb_workload cfb_bl_thread_workloads[] = {
    {"baseline/submit_flat", submit_flat},
    {"baseline/fib", fib_skip},
    {"baseline/pingpong", pingpong},
    {"baseline/pingpong_cold", pingpong_cold},
    {"baseline/pingpong_loaded", pingpong_loaded},
    {"baseline/map", map_bench},
    {"baseline/as_completed", as_completed},
    {"baseline/future_bytes", future_bytes},
    {"baseline/idle_cpu", idle_cpu},
    {NULL, NULL},
};
