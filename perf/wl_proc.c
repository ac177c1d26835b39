/* cfutures-bench: the process-pool workloads (proc_submit, proc_pingpong,
 * primes) on cfutures and on the fork+pipes baseline (baseline_forkpipe.c).
 * primes runs on both kinds of pool: cfutures' thread and process pools,
 * and the mutex+condvar and fork+pipes baselines. */
#include <stdlib.h>
#include <string.h>

#include "baseline_pool.h"
#include "cfb_lib.h"
#include "wl.h"

/* ---- tasks, cfutures' and the baselines' ---- */

static int task_blob(const void *arg, size_t len, cf_out *out)
{
    if (len != CFB_BLOB) return cf_out_error(out, 1, "blob of %zu bytes", len);
    void *buf;
    if (cf_out_alloc(out, CFB_BLOB, &buf) != 0) return CF_ENOMEM;
    unsigned char *res = buf;
    cfb_blob_derive(arg, res);
    return 0;
}

static int bt_blob(const void *arg, size_t len, void *res, size_t *res_len)
{
    if (len != CFB_BLOB) return 1;
    cfb_blob_derive(arg, res);
    *res_len = CFB_BLOB;
    return 0;
}

static int task_inc(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v + 1);
}

static int bt_inc(const void *arg, size_t len, void *res, size_t *res_len)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    v++;
    memcpy(res, &v, sizeof v);
    *res_len = sizeof v;
    return 0;
}

static int task_is_prime(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    (void)len;
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, cfb_is_prime(n));
}

static int bt_is_prime(const void *arg, size_t len, void *res, size_t *res_len)
{
    int64_t n;
    (void)len;
    memcpy(&n, arg, sizeof n);
    n = cfb_is_prime(n);
    memcpy(res, &n, sizeof n);
    *res_len = sizeof n;
    return 0;
}

static unsigned char *blob_args(long n)
{
    unsigned char *a = malloc((size_t)n * CFB_BLOB);
    if (a)
        for (long i = 0; i < n; i++) cfb_blob_make((uint64_t)i, a + (size_t)i * CFB_BLOB);
    return a;
}

/* ---- proc_submit ---- */

static void proc_submit(struct cfb_result *r)
{
    long n = cfb_size("CFB_PROC_SUBMIT_N", 200000, 1);
    unsigned char *args = blob_args(n);
    cf_future **fs = calloc((size_t)n, sizeof *fs), **ws = calloc((size_t)n, sizeof *ws);
    cf_executor *ex = NULL;
    if (!args || !fs || !ws) cfb_fail(r, "out of memory");
    else ex = cfb_process_pool(r, 0);
    if (!ex) {
        free(args), free(fs), free(ws);
        return;
    }
    long got = 0;
    double t0 = cfb_now();
    for (; got < n; got++) {
        int rc = cf_submit(ex, task_blob, args + (size_t)got * CFB_BLOB, CFB_BLOB, &fs[got]);
        if (rc) {
            cfb_submit_failed(r, "process pool", rc);
            break;
        }
    }
    /* cf_wait permutes its array: give it a copy, keep fs in input order. */
    size_t done = 0;
    if (got) memcpy(ws, fs, (size_t)got * sizeof *fs);
    int rc = cf_wait(ws, (size_t)got, CF_ALL_COMPLETED, CF_FOREVER, &done);
    double wall = cfb_now() - t0;
    if (rc) cfb_call_failed(r, "cf_wait", rc);
    long bad = 0;
    for (long i = 0; i < got; i++) {
        const void *data = NULL;
        size_t len = 0;
        rc = cf_future_result(fs[i], CF_POLL, &data, &len);
        if (rc || len != CFB_BLOB || !cfb_blob_check((uint64_t)i, data)) bad++;
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    free(args), free(fs), free(ws);
    if (r->status != CFB_OK) return;
    if (done != (size_t)n || bad)
        return cfb_fail(r, "proc_submit: %zu of %ld done, %ld bad results", done, n, bad);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_task", wall * 1e9 / (double)n);
}

static void bl_proc_submit(struct cfb_result *r)
{
    long n = cfb_size("CFB_PROC_SUBMIT_N", 200000, 1);
    unsigned char *args = blob_args(n);
    struct bl_future **fs = calloc((size_t)n, sizeof *fs);
    struct bl_fp_pool *p = args && fs ? bl_fp_new(cfb_workers()) : NULL;
    if (!p) {
        free(args), free(fs);
        return cfb_fail(r, "baseline fork+pipes pool: out of memory or fork failed");
    }
    long got = 0;
    double t0 = cfb_now();
    for (; got < n; got++)
        if (!(fs[got] = bl_fp_submit(p, bt_blob, args + (size_t)got * CFB_BLOB, CFB_BLOB))) {
            cfb_fail(r, "baseline fork+pipes submit failed");
            break;
        }
    for (long i = 0; i < got; i++) bl_future_result(fs[i], NULL, NULL);
    double wall = cfb_now() - t0;
    long bad = 0;
    for (long i = 0; i < got; i++) {
        const void *data;
        size_t len;
        if (bl_future_result(fs[i], &data, &len) != 0 || len != CFB_BLOB ||
            !cfb_blob_check((uint64_t)i, data))
            bad++;
        bl_future_release(fs[i]);
    }
    bl_fp_free(p);
    free(args), free(fs);
    if (r->status != CFB_OK) return;
    if (bad) return cfb_fail(r, "baseline proc_submit: %ld bad results", bad);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_task", wall * 1e9 / (double)n);
}

/* ---- proc_pingpong ---- */

static void proc_pingpong(struct cfb_result *r)
{
    long m = cfb_size("CFB_PROC_PINGPONG_M", 100000, 1);
    uint64_t *ns = malloc((size_t)m * sizeof *ns);
    if (!ns) return cfb_fail(r, "out of memory");
    cf_executor *ex = cfb_process_pool(r, 0);
    if (!ex) {
        free(ns);
        return;
    }
    for (long i = 0; i < m; i++) {
        cf_future *f;
        int64_t v = i, w = -1;
        uint64_t t0 = cfb_now_ns();
        int rc = cf_submit(ex, task_inc, &v, sizeof v, &f);
        if (rc) {
            cfb_submit_failed(r, "process pool", rc);
            break;
        }
        rc = cf_future_result_i64(f, CF_FOREVER, &w);
        uint64_t t1 = cfb_now_ns();
        cf_future_release(f);
        if (rc || w != i + 1) {
            cfb_fail(r, "proc_pingpong: round %ld: result %d, %ld", i, rc, (long)w);
            break;
        }
        ns[i] = t1 - t0;
    }
    cf_executor_free(ex);
    if (r->status == CFB_OK) cfb_pingpong_counters(r, ns, (size_t)m, false);
    free(ns);
}

static void bl_proc_pingpong(struct cfb_result *r)
{
    long m = cfb_size("CFB_PROC_PINGPONG_M", 100000, 1);
    uint64_t *ns = malloc((size_t)m * sizeof *ns);
    struct bl_fp_pool *p = ns ? bl_fp_new(cfb_workers()) : NULL;
    if (!p) {
        free(ns);
        return cfb_fail(r, "baseline fork+pipes pool: out of memory or fork failed");
    }
    for (long i = 0; i < m; i++) {
        int64_t v = i, w = -1;
        uint64_t t0 = cfb_now_ns();
        struct bl_future *f = bl_fp_submit(p, bt_inc, &v, sizeof v);
        if (!f) {
            cfb_fail(r, "baseline fork+pipes submit failed");
            break;
        }
        const void *data;
        size_t len;
        int rc = bl_future_result(f, &data, &len);
        uint64_t t1 = cfb_now_ns();
        if (rc == 0 && len == sizeof w) memcpy(&w, data, sizeof w);
        bl_future_release(f);
        if (w != i + 1) {
            cfb_fail(r, "baseline proc_pingpong: round %ld wrong", i);
            break;
        }
        ns[i] = t1 - t0;
    }
    bl_fp_free(p);
    if (r->status == CFB_OK) cfb_pingpong_counters(r, ns, (size_t)m, false);
    free(ns);
}

/* ---- primes: the seed's example, through map, on 1 and on W workers ---- */

enum pool_kind { CF_THREADS, CF_PROCS, BL_THREADS, BL_PROCS };

/* One map of is_prime over the six PRIMES; returns the wall seconds, or a
 * negative value with r failed. */
static double primes_once(struct cfb_result *r, enum pool_kind kind, int workers)
{
    bool got[6];
    double t0 = 0, wall = -1;
    if (kind == CF_THREADS || kind == CF_PROCS) {
        cf_executor *ex = kind == CF_THREADS ? cfb_thread_pool(r, workers)
                                             : cfb_process_pool(r, workers);
        if (!ex) return -1;
        cf_map_iter *it = NULL;
        t0 = cfb_now();
        int rc = cf_map(ex, task_is_prime, cfb_primes, sizeof cfb_primes[0], 6,
                        &(cf_map_opts){.chunksize = 1}, &it);
        for (int i = 0; rc == 0 && i < 6; i++) {
            int64_t v;
            rc = cf_map_next_i64(it, &v);
            got[i] = v != 0;
        }
        if (rc == 0) {
            int64_t v;
            rc = cf_map_next_i64(it, &v) == CF_END ? 0 : CF_ESTATE;
        }
        if (it) cf_map_free(it);
        wall = cfb_now() - t0;
        cf_executor_free(ex);
        if (rc) {
            cfb_call_failed(
                r, kind == CF_THREADS ? "primes (threads): cf_map" : "primes (processes): cf_map",
                rc);
            return -1;
        }
    } else {
        struct bl_pool *tp = kind == BL_THREADS ? bl_pool_new(workers) : NULL;
        struct bl_fp_pool *pp = kind == BL_PROCS ? bl_fp_new(workers) : NULL;
        if (!tp && !pp) {
            cfb_fail(r, "baseline pool did not start");
            return -1;
        }
        struct bl_future *fs[6];
        t0 = cfb_now();
        for (int i = 0; i < 6; i++)
            fs[i] = tp ? bl_submit(tp, bt_is_prime, &cfb_primes[i], sizeof cfb_primes[i])
                       : bl_fp_submit(pp, bt_is_prime, &cfb_primes[i], sizeof cfb_primes[i]);
        bool ok = true;
        for (int i = 0; i < 6; i++) {
            const void *data;
            size_t len;
            int64_t v = 0;
            if (!fs[i] || bl_future_result(fs[i], &data, &len) != 0 || len != sizeof v) ok = false;
            else memcpy(&v, data, sizeof v);
            got[i] = v != 0;
            bl_future_release(fs[i]);
        }
        wall = cfb_now() - t0;
        if (tp) bl_pool_free(tp);
        else bl_fp_free(pp);
        if (!ok) {
            cfb_fail(r, "baseline primes: a task failed");
            return -1;
        }
    }
    for (int i = 0; i < 6; i++)
        if (got[i] != cfb_primes_expected[i]) {
            cfb_fail(r, "primes: is_prime(%ld) = %s, expected %s", (long)cfb_primes[i],
                     got[i] ? "True" : "False", cfb_primes_expected[i] ? "True" : "False");
            return -1;
        }
    return wall;
}

/* Best (shortest) wall of `rounds` maps on 1 worker and on w workers,
 * alternated, so that a burst of load from elsewhere on a shared machine
 * does not land on one side of the ratio only. False if r was skipped or
 * failed. */
static bool primes_best(struct cfb_result *r, enum pool_kind kind, int w, long rounds, double *t1,
                        double *tw)
{
    *t1 = *tw = -1;
    for (long i = 0; i < rounds; i++) {
        double a = primes_once(r, kind, 1);
        double b = a >= 0 ? primes_once(r, kind, w) : -1;
        if (b < 0) return false;
        if (*t1 < 0 || a < *t1) *t1 = a;
        if (*tw < 0 || b < *tw) *tw = b;
    }
    return true;
}

static void primes_run(struct cfb_result *r, enum pool_kind threads, enum pool_kind procs)
{
    int w = cfb_workers();
    long rounds = cfb_param("CFB_PRIMES_ROUNDS", 3, 1);
    double t1, tw, p1, pw;
    if (!primes_best(r, threads, w, rounds, &t1, &tw)) return;
    r->wall_s = tw;
    cfb_counter(r, "wall_thread_ms", tw * 1e3);
    cfb_counter(r, "speedup_thread", t1 / tw);
    struct cfb_result pr = {0};
    if (!primes_best(&pr, procs, w, rounds, &p1, &pw))
        return cfb_fail(r, "process pool: %s", pr.msg);
    r->wall_s += pw;
    cfb_counter(r, "wall_process_ms", pw * 1e3);
    cfb_counter(r, "speedup_process", p1 / pw);
}

static void primes(struct cfb_result *r)
{
    primes_run(r, CF_THREADS, CF_PROCS);
}

static void bl_primes(struct cfb_result *r)
{
    primes_run(r, BL_THREADS, BL_PROCS);
}

const struct cfb_workload cfb_proc_workloads[] = {
    {"proc_submit", proc_submit},
    {"baseline/proc_submit", bl_proc_submit},
    {"proc_pingpong", proc_pingpong},
    {"baseline/proc_pingpong", bl_proc_pingpong},
    {"primes", primes},
    {"baseline/primes", bl_primes},
    {NULL, NULL},
};
