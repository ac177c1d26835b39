/* The MPI executor, run by ctest under `mpirun -n 3` and `-n 2`: the
 * executor behaviour tested for the two pools (results, errors, sizes,
 * wait, as_completed, map order, callbacks, cancel, shutdown, futures of
 * several executors in one wait), against serving ranks in other
 * processes. Rank 0 runs the cmocka cases; the other ranks serve inside
 * cf_mpi_executor_new, once per executor the root makes.
 *
 * Tasks run in other processes (on this host), so gates are files in a
 * directory the root makes: a gate task announces that it started by
 * creating a file and waits until another exists. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

#include "support/file_gates.h"

#define LONG_WAIT 60.0 /* a hang fails the case instead of blocking */

static cf_executor *ex; /* the default executor (cases of group 1) */
static int n_serving;   /* ranks that serve */

/* ---- tasks ---- */

static int square_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, CF_EINVAL, "square wants an int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

static int fail_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x = 0;
    if (len == sizeof x) memcpy(&x, arg, sizeof x);
    return cf_out_error(out, 7, "failed on %lld in pid %d", (long long)x, (int)getpid());
}

/* Result: every argument byte xor 0x5a (any length, 0 included). */
static int flip_task(const void *arg, size_t len, cf_out *out)
{
    void *buf;
    int rc = cf_out_alloc(out, len, &buf);
    if (rc) return rc;
    const unsigned char *a = arg;
    unsigned char *b = buf;
    for (size_t i = 0; i < len; i++) b[i] = a[i] ^ 0x5a;
    return 0;
}

/* Even items square, odd items fail: for cf_map's per-item errors. */
static int odd_fails_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, sizeof x);
    (void)len;
    if (x % 2) return cf_out_error(out, 3, "odd %lld", (long long)x);
    return cf_out_i64(out, x * x);
}

static int pid_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    return cf_out_i64(out, getpid());
}

/* ---- helpers ---- */

static cf_future *submit_i64(cf_executor *e, cf_task_fn *fn, int64_t x)
{
    cf_future *f = NULL;
    assert_int_equal(cf_submit(e, fn, &x, sizeof x, &f), 0);
    return f;
}

static int64_t result_i64(cf_future *f)
{
    int64_t v = -1;
    assert_int_equal(cf_future_result_i64(f, LONG_WAIT, &v), 0);
    return v;
}

/* ---- group 1: the default executor ---- */

static void test_results(void **state)
{
    (void)state;
    enum { N = 2000 };
    cf_future **fs = calloc(N, sizeof *fs);
    for (int i = 0; i < N; i++) fs[i] = submit_i64(ex, square_task, i);
    for (int i = 0; i < N; i++) {
        assert_int_equal(result_i64(fs[i]), (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    free(fs);
    assert_true(cf_executor_workers(ex) >= n_serving);
}

static void test_tasks_run_on_serving_ranks(void **state)
{
    (void)state;
    cf_future *f = submit_i64(ex, pid_task, 0);
    assert_int_not_equal(result_i64(f), (int64_t)getpid());
    cf_future_release(f);
}

static void test_task_error_crosses_ranks(void **state)
{
    (void)state;
    cf_future *f = submit_i64(ex, fail_task, 41);
    assert_int_equal(cf_future_result(f, LONG_WAIT, NULL, NULL), CF_ETASK);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, 7);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "failed on 41 in pid "));
    cf_future_release(f);
    /* The executor goes on. */
    f = submit_i64(ex, square_task, 9);
    assert_int_equal(result_i64(f), 81);
    cf_future_release(f);
}

static void check_flip(size_t len)
{
    unsigned char *arg = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++) arg[i] = (unsigned char)(i * 131 + (i >> 13));
    cf_future *f = NULL;
    assert_int_equal(cf_submit(ex, flip_task, arg, len, &f), 0);
    const void *data = NULL;
    size_t got = 1;
    assert_int_equal(cf_future_result(f, LONG_WAIT, &data, &got), 0);
    assert_int_equal(got, len);
    assert_non_null(data);
    const unsigned char *r = data;
    size_t bad = 0;
    for (size_t i = 0; i < len; i++) bad += r[i] != (arg[i] ^ 0x5a);
    assert_int_equal(bad, 0);
    cf_future_release(f);
    free(arg);
}

static void test_sizes(void **state)
{
    (void)state;
    check_flip(0);
    check_flip(8);
    check_flip(4096);
    check_flip(65536 + 1); /* the first size that goes in bulk messages */
    check_flip((size_t)1 << 20);
    check_flip((size_t)64 << 20); /* about 64 bulk messages each way */
}

static void test_unnameable_function_fails_at_submit(void **state)
{
    (void)state;
    static unsigned char not_code[64];
    cf_future *f = NULL;
    assert_int_equal(cf_submit(ex, (cf_task_fn *)(void *)not_code, NULL, 0, &f), CF_ENOTSUP);
    assert_null(f);
}

/* A module loaded on the root after the executor was made is not loaded
 * on the serving ranks: its functions are refused at submit. */
static void test_module_loaded_later_fails_at_submit(void **state)
{
    (void)state;
    void *h = dlopen(CF_MPI_LATE_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    cf_task_fn *fn = (cf_task_fn *)dlsym(h, "late_plugin_task");
    assert_non_null(fn);
    cf_future *f = NULL;
    assert_int_equal(cf_submit(ex, fn, NULL, 0, &f), CF_ENOTSUP);
    assert_null(f);
    dlclose(h);
}

static void test_wait_and_as_completed(void **state)
{
    (void)state;
    enum { N = 64 };
    cf_future *fs[N], *copy[N];
    for (int i = 0; i < N; i++) copy[i] = fs[i] = submit_i64(ex, square_task, i);
    size_t n_done = 0;
    assert_int_equal(cf_wait(copy, N, CF_ALL_COMPLETED, LONG_WAIT, &n_done), 0);
    assert_int_equal(n_done, N);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);

    for (int i = 0; i < N; i++) fs[i] = submit_i64(ex, square_task, i);
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, N, LONG_WAIT, &it), 0);
    int seen[N] = {0};
    cf_future *f;
    int count = 0;
    while (cf_as_completed_next(it, &f) == 0) {
        int64_t v = result_i64(f);
        for (int i = 0; i < N; i++)
            if (fs[i] == f) {
                assert_int_equal(v, (int64_t)i * i);
                seen[i]++;
            }
        count++; /* f is borrowed from the iterator */
    }
    cf_as_completed_free(it);
    assert_int_equal(count, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(seen[i], 1);
        cf_future_release(fs[i]);
    }
}

static void test_map_order_and_errors(void **state)
{
    (void)state;
    enum { N = 5000 };
    int64_t *xs = malloc(N * sizeof *xs);
    for (int i = 0; i < N; i++) xs[i] = i;
    cf_map_iter *it;
    cf_map_opts mo = {.chunksize = 100};
    assert_int_equal(cf_map(ex, square_task, xs, sizeof xs[0], N, &mo, &it), 0);
    for (int i = 0; i < N; i++) {
        int64_t v = -1;
        assert_int_equal(cf_map_next_i64(it, &v), 0);
        assert_int_equal(v, (int64_t)i * i);
    }
    int64_t v;
    assert_int_equal(cf_map_next_i64(it, &v), CF_END);
    cf_map_free(it);

    assert_int_equal(cf_map(ex, odd_fails_task, xs, sizeof xs[0], 10, NULL, &it), 0);
    for (int i = 0; i < 10; i++) {
        int rc = cf_map_next_i64(it, &v);
        if (i % 2) {
            assert_int_equal(rc, CF_ETASK);
            int code;
            const char *msg;
            assert_int_equal(cf_map_exception(it, &code, &msg), 0);
            assert_int_equal(code, 3);
            assert_non_null(msg);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(v, (int64_t)i * i);
        }
    }
    cf_map_free(it);
    free(xs);
}

static _Atomic int callbacks;
static void count_cb(cf_future *f, void *ud)
{
    (void)f;
    (void)ud;
    atomic_fetch_add_explicit(&callbacks, 1, memory_order_relaxed);
}

static cf_future *_Atomic nested;
/* A callback that submits to the same executor (in its progress thread). */
static void submit_cb(cf_future *f, void *ud)
{
    (void)f;
    cf_future *g = NULL;
    int64_t x = 12;
    if (cf_submit(ud, square_task, &x, sizeof x, &g) == 0)
        atomic_store_explicit(&nested, g, memory_order_release);
}

static void test_callbacks(void **state)
{
    (void)state;
    enum { N = 32 };
    cf_future *fs[N];
    atomic_store(&callbacks, 0);
    for (int i = 0; i < N; i++) {
        fs[i] = submit_i64(ex, square_task, i);
        assert_int_equal(cf_future_add_done_callback(fs[i], count_cb, NULL), 0);
    }
    for (int i = 0; i < N; i++) (void)result_i64(fs[i]);
    /* Callbacks run after waiters are released: give the last one time. */
    for (int i = 0; i < 10000 && atomic_load(&callbacks) < N; i++) usleep(1000);
    assert_int_equal(atomic_load(&callbacks), N);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);

    atomic_store(&nested, NULL);
    cf_future *f = submit_i64(ex, square_task, 2);
    assert_int_equal(cf_future_add_done_callback(f, submit_cb, ex), 0);
    (void)result_i64(f);
    cf_future *g = NULL;
    for (int i = 0; i < 10000 && !(g = atomic_load_explicit(&nested, memory_order_acquire)); i++)
        usleep(1000);
    assert_non_null(g);
    assert_int_equal(result_i64(g), 144);
    cf_future_release(g);
    cf_future_release(f);
}

static void test_mixed_executors(void **state)
{
    (void)state;
    cf_executor *tp;
    assert_int_equal(cf_thread_pool_new(&tp, NULL), 0);
    enum { N = 16 };
    cf_future *fs[2 * N];
    for (int i = 0; i < N; i++) {
        fs[2 * i] = submit_i64(ex, square_task, i);
        fs[2 * i + 1] = submit_i64(tp, square_task, i);
    }
    cf_future *copy[2 * N];
    memcpy(copy, fs, sizeof fs);
    size_t n_done = 0;
    assert_int_equal(cf_wait(copy, 2 * N, CF_ALL_COMPLETED, LONG_WAIT, &n_done), 0);
    assert_int_equal(n_done, 2 * N);
    for (int i = 0; i < 2 * N; i++) {
        assert_int_equal(result_i64(fs[i]), (int64_t)(i / 2) * (i / 2));
        cf_future_release(fs[i]);
    }
    cf_executor_free(tp);
}

static void test_stats(void **state)
{
    (void)state;
    cf_worker_stats st[16];
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 16, &n), 0);
    assert_int_equal(n, (size_t)n_serving);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += st[i].tasks_run;
    assert_true(total > 0);
}

/* ---- group 2: a small executor (window 2, one thread per rank) ---- */

static cf_executor *small;

/* One gate task per serving rank is running (its file exists), one more
 * per rank is queued in that rank's pool, one more per rank is queued at
 * the root: the window of 2 is full. */
static void fill(const char *round, cf_future **run, cf_future **remote, cf_future **local)
{
    char arg[256], name[32];
    char gate[32];
    snprintf(gate, sizeof gate, "open-%s", round);
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "%s-run-%d", round, i);
        size_t len = gate_arg(arg, sizeof arg, name, gate);
        assert_int_equal(cf_submit(small, gate_task, arg, len, &run[i]), 0);
    }
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "%s-run-%d", round, i);
        gate_await_file(name);
    }
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "%s-remote-%d", round, i);
        size_t len = gate_arg(arg, sizeof arg, name, gate);
        assert_int_equal(cf_submit(small, gate_task, arg, len, &remote[i]), 0);
    }
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "%s-local-%d", round, i);
        size_t len = gate_arg(arg, sizeof arg, name, gate);
        assert_int_equal(cf_submit(small, gate_task, arg, len, &local[i]), 0);
    }
}

static void test_cancel_until_begun(void **state)
{
    (void)state;
    cf_future *run[8], *remote[8], *local[8];
    fill("c", run, remote, local);
    atomic_store(&callbacks, 0);
    for (int i = 0; i < n_serving; i++) {
        assert_int_equal(cf_future_add_done_callback(remote[i], count_cb, NULL), 0);
        /* Queued at the root: decided there. */
        assert_true(cf_future_cancel(local[i]));
        /* Queued in a serving rank's pool: decided there, by a round trip. */
        assert_true(cf_future_cancel(remote[i]));
        assert_true(cf_future_cancelled(remote[i]));
        /* Begun on its rank: cannot be cancelled. */
        assert_false(cf_future_cancel(run[i]));
    }
    /* The callback runs in whichever thread cancelled it (the caller, or
     * the progress thread on the serving rank's answer). */
    for (int i = 0; i < 10000 && atomic_load(&callbacks) < n_serving; i++) usleep(1000);
    assert_int_equal(atomic_load(&callbacks), n_serving);
    gate_touch("open-c");
    for (int i = 0; i < n_serving; i++) {
        assert_true(result_i64(run[i]) > 0);
        assert_int_equal(cf_future_result(remote[i], 0, NULL, NULL), CF_ECANCELLED);
        assert_int_equal(cf_future_result(local[i], 0, NULL, NULL), CF_ECANCELLED);
        cf_future_release(run[i]);
        cf_future_release(remote[i]);
        cf_future_release(local[i]);
    }
    /* The credits came back: the executor still runs tasks. */
    cf_future *f = submit_i64(small, square_task, 5);
    assert_int_equal(result_i64(f), 25);
    cf_future_release(f);
}

static void test_shutdown_cancel_futures(void **state)
{
    (void)state;
    cf_future *run[8], *remote[8], *local[8];
    fill("s", run, remote, local);
    assert_int_equal(cf_executor_shutdown(small, false, true), 0);
    cf_future *f = NULL;
    int64_t x = 1;
    assert_int_equal(cf_submit(small, square_task, &x, sizeof x, &f), CF_ESHUTDOWN);
    for (int i = 0; i < n_serving; i++) {
        /* Not begun: cancelled by the shutdown, where they were. */
        assert_int_equal(cf_future_result(local[i], LONG_WAIT, NULL, NULL), CF_ECANCELLED);
        assert_int_equal(cf_future_result(remote[i], LONG_WAIT, NULL, NULL), CF_ECANCELLED);
    }
    gate_touch("open-s");
    assert_int_equal(cf_executor_shutdown(small, true, false), 0);
    for (int i = 0; i < n_serving; i++) {
        /* Begun: it finished before shutdown(wait) returned. */
        assert_true(cf_future_done(run[i]));
        assert_true(result_i64(run[i]) > 0);
        cf_future_release(run[i]);
        cf_future_release(remote[i]);
        cf_future_release(local[i]);
    }
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    n_serving = size - 1;

    /* Executor 1: defaults, but a small bulk chunk so 64 MiB crosses in
     * many messages with an uneven last one. */
    cf_mpi_opts o = CF_MPI_OPTS_INIT;
    o.chunk_bytes = ((size_t)1 << 20) + 4099;
    int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, &o);
    int failed = 0;
    if (rc == 0) {
        const struct CMUnitTest group1[] = {
            cmocka_unit_test(test_results),
            cmocka_unit_test(test_tasks_run_on_serving_ranks),
            cmocka_unit_test(test_task_error_crosses_ranks),
            cmocka_unit_test(test_sizes),
            cmocka_unit_test(test_unnameable_function_fails_at_submit),
            cmocka_unit_test(test_module_loaded_later_fails_at_submit),
            cmocka_unit_test(test_wait_and_as_completed),
            cmocka_unit_test(test_map_order_and_errors),
            cmocka_unit_test(test_callbacks),
            cmocka_unit_test(test_mixed_executors),
            cmocka_unit_test(test_stats),
        };
        failed += cmocka_run_group_tests_name("mpi executor", group1, NULL, NULL);
        cf_executor_free(ex);
    } else if (rc != CF_MPI_SERVED) {
        fprintf(stderr, "cf_mpi_executor_new: %s\n", cf_strerror(rc));
        failed++;
    }

    /* Executor 2: window 2, one thread per serving rank. */
    o = (cf_mpi_opts)CF_MPI_OPTS_INIT;
    o.window = 2;
    o.threads = 1;
    rc = cf_mpi_executor_new(&small, MPI_COMM_WORLD, 0, &o);
    if (rc == 0) {
        if (gates_make("/tmp/cf-mpi-test-XXXXXX") != 0) {
            failed++;
        } else {
            const struct CMUnitTest group2[] = {
                cmocka_unit_test(test_cancel_until_begun),
                cmocka_unit_test(test_shutdown_cancel_futures),
            };
            failed += cmocka_run_group_tests_name("mpi executor, window 2", group2, NULL, NULL);
        }
        cf_executor_free(small);
        gates_remove();
    } else if (rc != CF_MPI_SERVED) {
        fprintf(stderr, "cf_mpi_executor_new (small): %s\n", cf_strerror(rc));
        failed++;
    }
    MPI_Finalize();
    return failed ? 1 : 0;
}
