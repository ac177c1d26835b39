/* cfutures-bench: the thread-pool workloads of docs/WORKLOADS.md, on cfutures.
 * Pool creation and tear-down are outside the measured section; every
 * workload checks its answer. */
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "cfb_lib.h"
#include "wl.h"

/* ---- tasks ---- */

static int task_ret_arg(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v);
}

static int task_empty(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

static int task_square(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v * v);
}

static int task_spin(const void *arg, size_t len, cf_out *out)
{
    struct cfb_spin_arg a;
    (void)len;
    memcpy(&a, arg, sizeof a);
    cfb_spin_ns(a.ns);
    return cf_out_i64(out, a.idx);
}

static int task_hold(const void *arg, size_t len, cf_out *out)
{
    struct cfb_hold *h;
    (void)len, (void)out;
    memcpy(&h, arg, sizeof h);
    /* relaxed: a count only; the submitter polls it. */
    atomic_fetch_add_explicit(&h->started, 1, memory_order_relaxed);
    cfb_flag_wait(&h->release);
    return 0;
}

/* ---- submit_flat ---- */

static void submit_flat(struct cfb_result *r)
{
    long n = cfb_size("CFB_SUBMIT_FLAT_N", 1000000, 1);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    if (!fs) return cfb_fail(r, "out of memory");
    cf_executor *ex = cfb_thread_pool(r, 0);
    if (!ex) {
        free(fs);
        return;
    }
    long got = 0;
    double t0 = cfb_now();
    for (; got < n; got++) {
        int64_t v = got;
        int rc = cf_submit(ex, task_ret_arg, &v, sizeof v, &fs[got]);
        if (rc) {
            cfb_submit_failed(r, "thread pool", rc);
            break;
        }
    }
    size_t done = 0;
    int rc = cf_wait(fs, (size_t)got, CF_ALL_COMPLETED, CF_FOREVER, &done);
    if (rc) cfb_call_failed(r, "cf_wait", rc);
    uint64_t sum = 0;
    for (long i = 0; i < got; i++) {
        int64_t v = 0;
        rc = cf_future_result_i64(fs[i], CF_FOREVER, &v);
        if (rc) cfb_call_failed(r, "cf_future_result_i64", rc);
        sum += (uint64_t)v;
        cf_future_release(fs[i]);
    }
    double wall = cfb_now() - t0;
    cf_executor_free(ex);
    free(fs);
    if (r->status != CFB_OK) return;
    uint64_t want = (uint64_t)n * (uint64_t)(n - 1) / 2;
    if (done != (size_t)n || sum != want)
        return cfb_fail(r, "submit_flat: %zu of %ld done, sum %lu, expected %lu", done, n,
                        (unsigned long)sum, (unsigned long)want);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_task", wall * 1e9 / (double)n);
}

/* ---- fib ---- */

static cf_executor *fib_ex;
static _Atomic int fib_err;

static int task_fib(const void *arg, size_t len, cf_out *out);

static int64_t fib(int64_t n)
{
    if (n < 2) return n;
    cf_future *f;
    int64_t m = n - 1, a = 0;
    int rc = cf_submit(fib_ex, task_fib, &m, sizeof m, &f);
    int64_t b = fib(n - 2);
    if (rc == 0) {
        rc = cf_future_result_i64(f, CF_FOREVER, &a);
        cf_future_release(f);
    }
    if (rc) /* relaxed: read after the pool has been joined. */
        atomic_store_explicit(&fib_err, rc, memory_order_relaxed);
    return a + b;
}

static int task_fib(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    (void)len;
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, fib(n));
}

/* The same recursion through the scoped fork-join (cfutures/fork_join.h):
 * the child fib(n-1) is a frame on this stack, pushed on the worker's deque
 * and, unless stolen, run by the join itself. */
struct fj_fib {
    int64_t n, result;
};

static int fj_fib(void *arg)
{
    struct fj_fib *a = arg;
    if (a->n < 2) {
        a->result = a->n;
        return 0;
    }
    struct fj_fib x = {a->n - 1, 0}, y = {a->n - 2, 0};
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, fj_fib, &x);
    int rc = fj_fib(&y);
    int rc2 = cf_fj_end(&s);
    a->result = x.result + y.result;
    return rc ? rc : rc2;
}

static void fib_bench(struct cfb_result *r)
{
    int64_t n = cfb_param("CFB_FIB_N", 30, 1);
    if (n > 45) return cfb_fail(r, "CFB_FIB_N=%ld: at most 45", (long)n);
    if (!(fib_ex = cfb_thread_pool(r, 0))) return;
    atomic_store_explicit(&fib_err, 0, memory_order_relaxed);
    /* The reference answer and the number of calls, computed serially. */
    int64_t fa = 0, fb = 1; /* F(k), F(k+1) */
    for (int64_t k = 0; k < n; k++) {
        int64_t t = fa + fb;
        fa = fb;
        fb = t;
    }
    int64_t want = fa, calls = 2 * fb - 1; /* calls(n) = 2 F(n+1) - 1 */

    cf_future *f;
    int64_t v = -1;
    double t0 = cfb_now();
    int rc = cf_submit(fib_ex, task_fib, &n, sizeof n, &f);
    if (rc == 0) {
        rc = cf_future_result_i64(f, CF_FOREVER, &v);
        cf_future_release(f);
    }
    double wall = cfb_now() - t0;
    /* The scoped fork-join, on the same (warm) pool. */
    struct fj_fib root = {n, -1};
    double t1 = cfb_now();
    int rc_fj = rc ? 0 : cf_fj_run(fib_ex, fj_fib, &root);
    double wall_fj = cfb_now() - t1;
    cf_executor_free(fib_ex);
    fib_ex = NULL;
    if (rc) return cfb_call_failed(r, "fib root", rc);
    if (rc_fj) return cfb_call_failed(r, "scoped fib (cf_fj_run)", rc_fj);
    if (root.result != want)
        return cfb_fail(r, "scoped fib(%ld) = %ld, expected %ld", (long)n, (long)root.result,
                        (long)want);
    int err = atomic_load_explicit(&fib_err, memory_order_relaxed);
    if (err) return cfb_call_failed(r, "fib: a nested submit or result", err);
    if (v != want) return cfb_fail(r, "fib(%ld) = %ld, expected %ld", (long)n, (long)v, (long)want);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_call", wall * 1e9 / (double)calls);
    cfb_counter(r, "ns_per_call_scoped", wall_fj * 1e9 / (double)calls);
}

/* ---- pingpong, pingpong_cold ---- */

/* m timed round trips; sleep_ns (untimed) before each; with `load`
 * CPU-bound threads busy from before the pool is made until it is freed. */
static void pingpong_run(struct cfb_result *r, long m, long sleep_ns, bool p999, int load)
{
    uint64_t *ns = malloc((size_t)m * sizeof *ns);
    if (!ns) return cfb_fail(r, "out of memory");
    struct cfb_load *busy = load > 0 ? cfb_load_start(load) : NULL;
    if (load > 0 && !busy) {
        free(ns);
        return cfb_fail(r, "pingpong_loaded: cannot start the load threads");
    }
    cf_executor *ex = cfb_thread_pool(r, 0);
    if (!ex) {
        cfb_load_stop(busy);
        free(ns);
        return;
    }
    for (long i = 0; i < m; i++) {
        if (sleep_ns) cfb_sleep_ns(sleep_ns);
        cf_future *f;
        size_t len = 1;
        uint64_t t0 = cfb_now_ns();
        int rc = cf_submit(ex, task_empty, NULL, 0, &f);
        if (rc) {
            cfb_submit_failed(r, "thread pool", rc);
            break;
        }
        rc = cf_future_result(f, CF_FOREVER, NULL, &len);
        uint64_t t1 = cfb_now_ns();
        cf_future_release(f);
        if (rc || len != 0) {
            cfb_fail(r, "pingpong: result %d, %zu bytes; expected 0, 0 bytes", rc, len);
            break;
        }
        ns[i] = t1 - t0;
    }
    cf_executor_free(ex);
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

/* ---- map ---- */

static void map_bench(struct cfb_result *r)
{
    long n = cfb_size("CFB_MAP_N", 1000000, 1);
    int64_t *args = cfb_iota(n);
    if (!args) return cfb_fail(r, "out of memory");
    cf_executor *ex = cfb_thread_pool(r, 0);
    if (!ex) {
        free(args);
        return;
    }
    uint64_t sum = 0;
    long count = 0;
    cf_map_iter *it = NULL;
    double t0 = cfb_now();
    int rc = cf_map(ex, task_square, args, sizeof *args, (size_t)n, NULL, &it);
    if (rc) cfb_call_failed(r, "cf_map", rc);
    /* Results a chunk at a time (cf_map_next_batch), as a consumer that
     * cares for speed reads them; each one still checked in order. */
    while (rc == 0 && r->status == CFB_OK) {
        const void *data;
        size_t len, stride, got;
        rc = cf_map_next_batch(it, SIZE_MAX, &data, &len, &stride, &got);
        if (rc == 0 && len != sizeof(int64_t)) {
            cfb_fail(r, "map: item %ld has %zu bytes", count, len);
        } else if (rc == 0) {
            for (size_t i = 0; i < got; i++, count++) {
                int64_t v;
                memcpy(&v, (const char *)data + i * stride, sizeof v);
                if (v != args[count] * args[count]) {
                    cfb_fail(r, "map: item %ld = %ld, expected %ld", count, (long)v,
                             (long)(args[count] * args[count]));
                    break;
                }
                sum += (uint64_t)v;
            }
        } else if (rc != CF_END) {
            cfb_call_failed(r, "cf_map_next_batch", rc);
        }
    }
    if (it) cf_map_free(it);
    double wall = cfb_now() - t0;
    cf_executor_free(ex);
    free(args);
    if (r->status != CFB_OK) return;
    if (count != n || sum != cfb_sum_squares(n))
        return cfb_fail(r, "map: %ld of %ld items, sum %lu, expected %lu", count, n,
                        (unsigned long)sum, (unsigned long)cfb_sum_squares(n));
    r->wall_s = wall;
    cfb_counter(r, "ns_per_item", wall * 1e9 / (double)n);
}

/* ---- as_completed ---- */

static void as_completed(struct cfb_result *r)
{
    long n = cfb_size("CFB_AS_COMPLETED_N", 100000, 1);
    uint64_t total_ns;
    struct cfb_spin_arg *args = cfb_spin_args(n, &total_ns);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    unsigned char *seen = calloc((size_t)n, 1);
    cf_executor *ex = NULL;
    if (!args || !fs || !seen) cfb_fail(r, "out of memory");
    else ex = cfb_thread_pool(r, 0);
    if (!ex) {
        free(args), free(fs), free(seen);
        return;
    }
    long got = 0, count = 0;
    double t0 = cfb_now();
    for (; got < n; got++) {
        int rc = cf_submit(ex, task_spin, &args[got], sizeof args[got], &fs[got]);
        if (rc) {
            cfb_submit_failed(r, "thread pool", rc);
            break;
        }
    }
    cf_as_completed *it = NULL;
    int rc = r->status == CFB_OK ? cf_as_completed_new(fs, (size_t)got, CF_FOREVER, &it) : -1;
    if (rc == 0) {
        for (;;) {
            cf_future *f;
            rc = cf_as_completed_next(it, &f);
            if (rc == CF_END) break;
            int64_t idx = -1;
            if (rc || (rc = cf_future_result_i64(f, CF_POLL, &idx))) {
                cfb_call_failed(r, "cf_as_completed_next/result", rc);
                break;
            }
            if (idx < 0 || idx >= n || seen[idx]) {
                cfb_fail(r, "as_completed: future %ld seen twice or out of range", (long)idx);
                break;
            }
            seen[idx] = 1;
            count++;
        }
        cf_as_completed_free(it);
    } else if (r->status == CFB_OK) {
        cfb_call_failed(r, "cf_as_completed_new", rc);
    }
    double wall = cfb_now() - t0;
    if (r->status != CFB_OK) cf_wait(fs, (size_t)got, CF_ALL_COMPLETED, CF_FOREVER, NULL);
    for (long i = 0; i < got; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
    free(args), free(fs), free(seen);
    if (r->status != CFB_OK) return;
    if (count != n) return cfb_fail(r, "as_completed: %ld of %ld futures seen", count, n);
    r->wall_s = wall;
    cfb_counter(r, "efficiency", ((double)total_ns * 1e-9 / cfb_workers()) / wall);
}

/* ---- future_bytes ---- */

static void future_bytes(struct cfb_result *r)
{
    long n = cfb_size("CFB_FUTURE_BYTES_N", 1000000, 1);
    int w = cfb_workers();
    static struct cfb_hold hold;
    cf_future **fs = calloc((size_t)n + (size_t)w, sizeof *fs);
    if (!fs) return cfb_fail(r, "out of memory");
    cfb_touch(fs, ((size_t)n + (size_t)w) * sizeof *fs); /* resident: not counted below */
    cf_executor *ex = cfb_thread_pool(r, w);
    if (!ex) {
        free(fs);
        return;
    }
    atomic_store_explicit(&hold.release, 0, memory_order_relaxed);
    atomic_store_explicit(&hold.started, 0, memory_order_relaxed);
    long got = 0;
    for (int i = 0; i < w; i++) {
        struct cfb_hold *h = &hold;
        int rc = cf_submit(ex, task_hold, &h, sizeof h, &fs[n + i]);
        if (rc) {
            cfb_submit_failed(r, "thread pool", rc);
            break;
        }
        got++;
    }
    long rss0 = 0, rss1 = 0;
    double wall = 0;
    if (r->status == CFB_OK && cfb_wait_started(r, &hold.started, (unsigned)w)) {
        cfb_purge_memory();
        rss0 = cfb_rss_bytes();
        double t0 = cfb_now();
        for (long i = 0; i < n; i++) {
            int64_t v = i;
            int rc = cf_submit(ex, task_ret_arg, &v, sizeof v, &fs[i]);
            if (rc) {
                cfb_submit_failed(r, "thread pool", rc);
                break;
            }
        }
        wall = cfb_now() - t0;
        rss1 = cfb_rss_bytes();
    }
    cfb_flag_set(&hold.release);
    /* Collect: the held tasks and every submitted one. */
    uint64_t sum = 0;
    for (long i = 0; i < n + w; i++) {
        if (!fs[i]) continue;
        int64_t v = 0;
        int rc = cf_future_result_i64(fs[i], CF_FOREVER, &v);
        if (i < n) {
            if (rc) cfb_call_failed(r, "cf_future_result_i64", rc);
            sum += (uint64_t)v;
        }
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    free(fs);
    if (r->status != CFB_OK) return;
    if (sum != (uint64_t)n * (uint64_t)(n - 1) / 2)
        return cfb_fail(r, "future_bytes: wrong sum %lu", (unsigned long)sum);
    if (rss0 < 0 || rss1 < 0) return cfb_fail(r, "future_bytes: cannot read /proc/self/statm");
    r->wall_s = wall;
    cfb_counter(r, "bytes_per_future", (double)(rss1 - rss0) / (double)n);
}

/* ---- idle_cpu ---- */

static void idle_cpu(struct cfb_result *r)
{
    long burst = cfb_size("CFB_IDLE_BURST", 10000, 1);
    double secs = cfb_real("CFB_IDLE_S", 1.0);
    cf_future **fs = calloc((size_t)burst, sizeof *fs);
    if (!fs) return cfb_fail(r, "out of memory");
    cf_executor *ex = cfb_thread_pool(r, 0);
    if (!ex) {
        free(fs);
        return;
    }
    long got = 0;
    for (; got < burst; got++) {
        int64_t v = got;
        int rc = cf_submit(ex, task_ret_arg, &v, sizeof v, &fs[got]);
        if (rc) {
            cfb_submit_failed(r, "thread pool", rc);
            break;
        }
    }
    cf_wait(fs, (size_t)got, CF_ALL_COMPLETED, CF_FOREVER, NULL);
    uint64_t sum = 0;
    for (long i = 0; i < got; i++) {
        int64_t v = 0;
        if (cf_future_result_i64(fs[i], CF_POLL, &v) != 0)
            cfb_fail(r, "idle_cpu: a burst task failed");
        sum += (uint64_t)v;
        cf_future_release(fs[i]);
    }
    free(fs);
    if (r->status == CFB_OK && sum != (uint64_t)burst * (uint64_t)(burst - 1) / 2)
        cfb_fail(r, "idle_cpu: wrong burst sum");
    if (r->status == CFB_OK) cfb_idle_measure(r, secs);
    cf_executor_free(ex);
}

const struct cfb_workload cfb_cf_thread_workloads[] = {
    {"submit_flat", submit_flat},
    {"fib", fib_bench},
    {"pingpong", pingpong},
    {"pingpong_cold", pingpong_cold},
    {"pingpong_loaded", pingpong_loaded},
    {"map", map_bench},
    {"as_completed", as_completed},
    {"future_bytes", future_bytes},
    {"idle_cpu", idle_cpu},
    {NULL, NULL},
};
