/* The process pool: the executor behaviour of SEMANTICS 1-26 that applies
 * to it (submit, results and errors, cancel, wait, as_completed, map,
 * callbacks, shutdown's modes, initializer, max_workers) and 27, 29, 30,
 * 31, 31b specifically: results and arguments of any size intact, the fork
 * snapshot (globals, a MAP_SHARED mapping made before the pool), an error
 * code is not a crash, max_tasks_per_child, terminate, cancelling a task
 * still queued in a ring.
 *
 * Tasks run in other processes, so the tests coordinate through one
 * MAP_SHARED page mapped before any pool exists (which SEMANTICS 27 says
 * workers share). Gates are spun on (or futex-waited) there, never slept. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sys/cgroup.h"
#include "sync/futex.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

struct shared {
    _Atomic uint32_t gate;    /* tasks in gate_task wait until it is non-zero */
    _Atomic uint32_t started; /* gate_task entries */
    _Atomic uint32_t ran;     /* count_task runs */
    _Atomic uint32_t inits;   /* initializer runs */
    _Atomic int32_t pids[64];
    _Atomic uint32_t npids;
    _Atomic uint32_t gate2; /* gate2_task waits until it is non-zero */
};
static struct shared *sh;

static int g_snapshot = 1; /* set to 2 before the pool, 3 after */

static void reset_shared(void)
{
    memset(sh, 0, sizeof *sh);
}

static void open_gate(void)
{
    atomic_store_explicit(&sh->gate, 1, memory_order_release);
    cf__futex_wake(&sh->gate, INT32_MAX, true);
}

static void wait_started(uint32_t n)
{
    while (atomic_load_explicit(&sh->started, memory_order_acquire) < n) sched_yield();
}

/* ---- tasks ---- */

static int double_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, 7, "bad length %zu", len);
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, 2 * x);
}

static int pid_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, getpid());
}

static int gate_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    atomic_fetch_add_explicit(&sh->started, 1, memory_order_acq_rel);
    while (!atomic_load_explicit(&sh->gate, memory_order_acquire))
        cf__futex_wait(&sh->gate, 0, cf__now_ns() + 50000000, true);
    return cf_out_i64(out, 1);
}

static int gate2_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    while (!atomic_load_explicit(&sh->gate2, memory_order_acquire))
        cf__futex_wait(&sh->gate2, 0, cf__now_ns() + 50000000, true);
    return cf_out_i64(out, 2);
}

static int count_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_fetch_add_explicit(&sh->ran, 1, memory_order_acq_rel);
    return 0;
}

static int fail_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_error(out, 42, "task failed on purpose (%d)", 42);
}

static int snapshot_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, g_snapshot);
}

/* Result of n bytes (n in the argument), byte i = (i * 31 + n) & 0xff. */
static int sized_task(const void *arg, size_t len, cf_out *out)
{
    uint64_t n;
    if (len != sizeof n) return 1;
    memcpy(&n, arg, sizeof n);
    void *buf;
    if (cf_out_alloc(out, n, &buf) != 0)
        return cf_out_error(out, 2, "cannot allocate %llu", (unsigned long long)n);
    unsigned char *b = buf;
    for (uint64_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 31 + n);
    return 0;
}

/* Echo the argument back after checking its pattern. */
static int echo_task(const void *arg, size_t len, cf_out *out)
{
    const unsigned char *a = arg;
    for (size_t i = 0; i < len; i++)
        if (a[i] != (unsigned char)(i * 7 + len))
            return cf_out_error(out, 3, "arg byte %zu wrong", i);
    return cf_out_set(out, arg, len);
}

static int big_error_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    char m[6000];
    memset(m, 'x', sizeof m - 1);
    m[sizeof m - 1] = 0;
    return cf_out_error(out, 9, "%s", m);
}

static cf_executor *pool(int n)
{
    int err = 0;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = n});
    assert_int_equal(err, 0);
    assert_non_null(ex);
    return ex;
}

static int64_t result_i64(cf_future *f)
{
    int64_t v = -1;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    return v;
}

/* ---- tests ---- */

static void test_submit_many(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    assert_int_equal(cf_executor_workers(ex), 2);
    enum { N = 2000 };
    cf_future **fs = calloc(N, sizeof *fs);
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(cf_submit(ex, double_task, &i, sizeof i, &fs[i]), 0);
    for (int64_t i = 0; i < N; i++) {
        assert_int_equal(result_i64(fs[i]), 2 * i);
        cf_future_release(fs[i]);
    }
    free(fs);
    cf_future *f;
    assert_int_equal(cf_submit(ex, pid_task, NULL, 0, &f), 0);
    int64_t pid = result_i64(f);
    assert_true(pid > 0 && pid != getpid()); /* a separate process */
    cf_future_release(f);
    cf_executor_free(ex);
}

static void check_sized(cf_future *f, uint64_t n)
{
    const void *d = NULL;
    size_t len = 99;
    assert_int_equal(cf_future_result(f, CF_FOREVER, &d, &len), 0);
    assert_int_equal(len, n);
    assert_non_null(d);
    const unsigned char *b = d;
    for (uint64_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(i * 31 + n))
            fail_msg("byte %llu of %llu wrong", (unsigned long long)i, (unsigned long long)n);
}

static void run_sizes(cf_executor *ex, size_t slot)
{
    uint64_t sizes[] = {0, 1, slot - 1, slot, slot + 1, 2 * slot + 3, 3u << 20, (5u << 20) + 17};
    size_t k = sizeof sizes / sizeof sizes[0];
    cf_future *fs[16];
    for (size_t i = 0; i < k; i++)
        assert_int_equal(cf_submit(ex, sized_task, &sizes[i], sizeof sizes[i], &fs[i]), 0);
    for (size_t i = 0; i < k; i++) {
        check_sized(fs[i], sizes[i]);
        cf_future_release(fs[i]);
    }
    /* Arguments of the same sizes travel intact and come back. */
    for (size_t i = 0; i < k; i++) {
        size_t n = sizes[i];
        unsigned char *a = malloc(n ? n : 1);
        for (size_t j = 0; j < n; j++) a[j] = (unsigned char)(j * 7 + n);
        assert_int_equal(cf_submit(ex, echo_task, a, n, &fs[i]), 0);
        free(a); /* the pool copied it */
    }
    for (size_t i = 0; i < k; i++) {
        const void *d;
        size_t len;
        int code = 0;
        const char *msg = NULL;
        int rc = cf_future_result(fs[i], CF_FOREVER, &d, &len);
        if (rc) cf_future_exception(fs[i], 0, &code, &msg);
        if (rc)
            fail_msg("size %llu: rc %d code %d %s", (unsigned long long)sizes[i], rc, code,
                     msg ? msg : "");
        assert_int_equal(len, sizes[i]);
        const unsigned char *b = d;
        for (size_t j = 0; j < len; j++) assert_int_equal(b[j], (unsigned char)(j * 7 + len));
        cf_future_release(fs[i]);
    }
}

static void test_result_sizes(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    run_sizes(ex, 256); /* the default slot size */
    cf_executor_free(ex);
    int err;
    err = cf_process_pool_new(
        &ex, &(cf_process_pool_opts){.max_workers = 1, .slot_size = 64, .ring_depth = 2});
    assert_int_equal(err, 0);
    assert_non_null(ex);
    run_sizes(ex, 64);
    cf_executor_free(ex);
}

/* Small spill rings: records wrap around many times. */
static void test_spill_wraparound(void **state)
{
    (void)state;
    cf__proc_test_spill_size = 64 << 10;
    cf_executor *ex = pool(2);
    cf__proc_test_spill_size = 0;
    enum { N = 200 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        uint64_t n = 1000 + (uint64_t)i * 211 % 30000;
        assert_int_equal(cf_submit(ex, sized_task, &n, sizeof n, &fs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        check_sized(fs[i], 1000 + (uint64_t)i * 211 % 30000);
        cf_future_release(fs[i]);
    }
    for (int i = 0; i < N; i++) {
        size_t n = 1000 + (size_t)i * 397 % 30000;
        unsigned char *a = malloc(n);
        for (size_t j = 0; j < n; j++) a[j] = (unsigned char)(j * 7 + n);
        assert_int_equal(cf_submit(ex, echo_task, a, n, &fs[i]), 0);
        free(a);
    }
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t len;
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, &d, &len), 0);
        assert_int_equal(len, 1000 + (size_t)i * 397 % 30000);
        cf_future_release(fs[i]);
    }
    /* Larger than the whole ring: a clear error, not a hang. */
    uint64_t huge = 1 << 20;
    cf_future *f;
    assert_int_equal(cf_submit(ex, sized_task, &huge, sizeof huge, &f), 0);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, CF_ETOOBIG);
    assert_non_null(strstr(msg, "exceeds"));
    cf_future_release(f);
    unsigned char *a = calloc(1, 1 << 20);
    assert_int_equal(cf_submit(ex, echo_task, a, 1 << 20, &f), CF_ETOOBIG);
    free(a);
    cf_executor_free(ex);
}

static void test_task_error_is_not_a_crash(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, fail_task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, 42);
    assert_string_equal(msg, "task failed on purpose (42)");
    cf_future_release(f);
    /* A long message arrives (truncated to the carried maximum). */
    assert_int_equal(cf_submit(ex, big_error_task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), CF_ETASK);
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, 9);
    assert_int_equal(strlen(msg), CF__PMSG_MAX);
    cf_future_release(f);
    int64_t x = 5;
    assert_int_equal(cf_submit(ex, double_task, &x, sizeof x, &f), 0);
    assert_int_equal(result_i64(f), 10); /* still usable */
    cf_future_release(f);
    cf_executor_free(ex);
}

static void test_snapshot(void **state)
{
    (void)state;
    reset_shared();
    g_snapshot = 2;
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(
                         &ex, &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 1}),
                     0);
    assert_non_null(ex);
    g_snapshot = 3;               /* after creation: workers do not see it */
    for (int i = 0; i < 3; i++) { /* each task in a new worker: the same snapshot */
        cf_future *f;
        assert_int_equal(cf_submit(ex, snapshot_task, NULL, 0, &f), 0);
        assert_int_equal(result_i64(f), 2);
        cf_future_release(f);
        assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), 0);
        assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
        cf_future_release(f);
    }
    /* The MAP_SHARED page made before the pool is shared both ways. */
    assert_int_equal(atomic_load(&sh->ran), 3);
    cf_executor_free(ex);
    g_snapshot = 1;
}

static void test_max_tasks_per_child(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(
                         &ex, &(cf_process_pool_opts){.max_workers = 2, .max_tasks_per_child = 3}),
                     0);
    assert_non_null(ex);
    enum { N = 60 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, pid_task, NULL, 0, &fs[i]), 0);
    int64_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = result_i64(fs[i]);
        cf_future_release(fs[i]);
    }
    /* No process ran more than 3 tasks. */
    for (int i = 0; i < N; i++) {
        int same = 0;
        for (int j = 0; j < N; j++) same += pids[j] == pids[i];
        assert_true(same <= 3);
    }
    cf_executor_free(ex);
}

static void test_cancel_queued_in_ring(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(1);
    cf_future *g, *fs[5];
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    wait_started(1);
    for (int i = 0; i < 5; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    /* Queued in the ring, not begun: cancellable (31b). */
    assert_true(cf_future_cancel(fs[1]));
    assert_true(cf_future_cancel(fs[3]));
    assert_true(cf_future_cancelled(fs[1]));
    /* The collector marks g running once it sees the worker began it. */
    while (!cf_future_running(g)) sched_yield();
    assert_false(cf_future_cancel(g)); /* running: not interrupted (5) */
    open_gate();
    assert_int_equal(result_i64(g), 1);
    for (int i = 0; i < 5; i++) {
        int rc = cf_future_result(fs[i], CF_FOREVER, NULL, NULL);
        assert_int_equal(rc, (i == 1 || i == 3) ? CF_ECANCELLED : 0);
        cf_future_release(fs[i]);
    }
    cf_future_release(g);
    cf_executor_shutdown(ex, true, false);
    assert_int_equal(atomic_load(&sh->ran), 3); /* the cancelled ones never ran */
    cf_executor_free(ex);
}

/* 31b, the other side: once a worker has begun a task, cancel() refuses
 * it, even before the parent has noticed and marked it RUNNING (the slot's
 * state word decides, not the parent's view). The collector thread is held
 * inside a done-callback meanwhile, so it cannot mark anything running. */
static _Atomic int collector_held, collector_release;

static void hold_collector_cb(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    atomic_store_explicit(&collector_held, 1, memory_order_release);
    while (!atomic_load_explicit(&collector_release, memory_order_acquire)) sched_yield();
}

static void test_cancel_after_worker_started(void **state)
{
    (void)state;
    reset_shared();
    atomic_store(&collector_held, 0);
    atomic_store(&collector_release, 0);
    cf_executor *ex = pool(1);
    cf_future *q, *g;
    /* q cannot finish before its callback is registered (it waits on gate2),
     * so the callback runs where q completes: in the collector thread. */
    assert_int_equal(cf_submit(ex, gate2_task, NULL, 0, &q), 0);
    assert_int_equal(cf_future_add_done_callback(q, hold_collector_cb, NULL), 0);
    atomic_store_explicit(&sh->gate2, 1, memory_order_release);
    cf__futex_wake(&sh->gate2, INT32_MAX, true);
    /* Not result(): this thread must not collect (and so run the callback). */
    while (!atomic_load_explicit(&collector_held, memory_order_acquire)) sched_yield();
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    wait_started(1); /* the worker is inside the task; nobody marked it running */
    assert_false(cf_future_cancel(g));
    assert_false(cf_future_cancelled(g));
    atomic_store_explicit(&collector_release, 1, memory_order_release);
    open_gate();
    assert_int_equal(result_i64(g), 1);
    assert_int_equal(result_i64(q), 2);
    cf_future_release(g);
    cf_future_release(q);
    cf_executor_free(ex);
}

static void test_overflow_and_cancel(void **state)
{
    (void)state;
    reset_shared();
    int err;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 1, .ring_depth = 2});
    assert_int_equal(err, 0);
    assert_non_null(ex);
    cf_future *g;
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    wait_started(1);
    enum { N = 300 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    int cancelled = 0;
    for (int i = 0; i < N; i += 3) cancelled += cf_future_cancel(fs[i]);
    assert_true(cancelled >= N / 3 - 2);
    open_gate();
    for (int i = 0; i < N; i++) {
        int rc = cf_future_result(fs[i], CF_FOREVER, NULL, NULL);
        assert_true(rc == 0 || (rc == CF_ECANCELLED && i % 3 == 0));
        cf_future_release(fs[i]);
    }
    cf_future_release(g);
    cf_executor_shutdown(ex, true, false);
    assert_int_equal(atomic_load(&sh->ran), N - cancelled);
    cf_executor_free(ex);
}

static _Atomic int cb_runs;
static _Thread_local int cb_thread_marker;
static void cb_count(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    atomic_fetch_add(&cb_runs, 1);
}

static void cb_shutdown(cf_future *f, void *ud)
{
    (void)f;
    /* From the collector: acts as wait=false, no deadlock (18). */
    assert_int_equal(cf_executor_shutdown(ud, true, false), 0);
    cb_thread_marker = 1;
    atomic_fetch_add(&cb_runs, 1);
}

static void test_callbacks(void **state)
{
    (void)state;
    atomic_store(&cb_runs, 0);
    cf_executor *ex = pool(2);
    cf_future *fs[50];
    for (int64_t i = 0; i < 50; i++) {
        assert_int_equal(cf_submit(ex, double_task, &i, sizeof i, &fs[i]), 0);
        assert_int_equal(cf_future_add_done_callback(fs[i], cb_count, NULL), 0);
    }
    size_t nd = 0;
    assert_int_equal(cf_wait(fs, 50, CF_ALL_COMPLETED, CF_FOREVER, &nd), 0);
    assert_int_equal(nd, 50);
    while (atomic_load(&cb_runs) < 50) sched_yield(); /* callbacks run after waiters are released */
    for (int i = 0; i < 50; i++) cf_future_release(fs[i]);
    cf_future *f;
    reset_shared();
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_add_done_callback(f, cb_shutdown, ex), 0);
    open_gate();
    /* Not result(): a thread waiting there may complete the future itself
     * (and run the callback); here the collector thread must. */
    while (atomic_load(&cb_runs) < 51) sched_yield();
    assert_int_equal(cb_thread_marker, 0); /* it ran in the collector, not here */
    assert_int_equal(result_i64(f), 1);
    cf_future_release(f);
    cf_future *g;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &g), CF_ESHUTDOWN);
    cf_executor_free(ex);
}

/* The thread waiting in result() may complete the future itself (it
 * collects while it waits); a callback it runs that shuts the pool down
 * with wait=true must not deadlock (it acts as wait=false there). */
static void test_callback_shutdown_while_helping(void **state)
{
    (void)state;
    atomic_store(&cb_runs, 0);
    for (int round = 0; round < 20; round++) {
        cf_executor *ex = pool(1);
        cf_future *f;
        int64_t x = round;
        assert_int_equal(cf_submit(ex, double_task, &x, sizeof x, &f), 0);
        assert_int_equal(cf_future_add_done_callback(f, cb_shutdown, ex), 0);
        assert_int_equal(result_i64(f), 2 * round);
        cf_future_release(f);
        cf_executor_free(ex);
    }
    assert_int_equal(atomic_load(&cb_runs), 20);
}

struct waiter_arg {
    cf_future **fs;
    int n;
};
static void *result_waiter(void *a)
{
    struct waiter_arg *w = a;
    for (int i = 0; i < w->n; i++) cf_future_result(w->fs[i], CF_FOREVER, NULL, NULL);
    return NULL;
}

/* shutdown(wait=true) returns with every future done, even while another
 * thread collects results in result(). */
static void test_shutdown_wait_with_helper(void **state)
{
    (void)state;
    for (int round = 0; round < 10; round++) {
        cf_executor *ex = pool(2);
        enum { N = 400 };
        cf_future *fs[N];
        for (int64_t i = 0; i < N; i++)
            assert_int_equal(cf_submit(ex, double_task, &i, sizeof i, &fs[i]), 0);
        struct waiter_arg w = {fs, N};
        pthread_t t;
        pthread_create(&t, NULL, result_waiter, &w);
        assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
        for (int i = 0; i < N; i++) assert_true(cf_future_done(fs[i]));
        pthread_join(t, NULL);
        for (int64_t i = 0; i < N; i++) {
            assert_int_equal(result_i64(fs[i]), 2 * i);
            cf_future_release(fs[i]);
        }
        cf_executor_free(ex);
    }
}

static void test_wait_as_completed_map(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(2);
    cf_future *fs[20];
    for (int64_t i = 0; i < 20; i++)
        assert_int_equal(cf_submit(ex, double_task, &i, sizeof i, &fs[i]), 0);
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, 20, CF_FOREVER, &it), 0);
    int seen = 0;
    cf_future *f;
    while (cf_as_completed_next(it, &f) == 0) seen++;
    assert_int_equal(seen, 20);
    cf_as_completed_free(it);
    for (int i = 0; i < 20; i++) cf_future_release(fs[i]);

    int64_t items[1000];
    for (int i = 0; i < 1000; i++) items[i] = i;
    for (size_t chunk = 0; chunk <= 7; chunk += 7) {
        cf_map_iter *mi;
        assert_int_equal(
            cf_map(ex, double_task, items, sizeof items[0], 1000,
                   &(cf_map_opts){.chunksize = chunk, .has_timeout = true, .timeout = -1}, &mi),
            0);
        int64_t v;
        for (int i = 0; i < 1000; i++) {
            assert_int_equal(cf_map_next_i64(mi, &v), 0);
            assert_int_equal(v, 2 * i);
        }
        assert_int_equal(cf_map_next_i64(mi, &v), CF_END);
        cf_map_free(mi);
    }
    /* FIRST_COMPLETED with one blocked task */
    cf_future *two[2];
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &two[0]), 0);
    int64_t x = 1;
    assert_int_equal(cf_submit(ex, double_task, &x, sizeof x, &two[1]), 0);
    size_t nd;
    assert_int_equal(cf_wait(two, 2, CF_FIRST_COMPLETED, CF_FOREVER, &nd), 0);
    assert_true(nd >= 1);
    open_gate();
    assert_int_equal(cf_wait(two, 2, CF_ALL_COMPLETED, CF_FOREVER, &nd), 0);
    assert_int_equal(nd, 2);
    cf_future_release(two[0]);
    cf_future_release(two[1]);
    cf_executor_free(ex);
}

/* result() with a timeout on a task that does not finish: "timed out",
 * also for the thread that collects while it waits (SEMANTICS 6); map's
 * one deadline cancels the rest, and freeing a map early cancels what has
 * not started (24, 25), with tasks queued in the rings. */
static void test_timeouts_and_map_cancel(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(1);
    cf_future *g;
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    assert_int_equal(cf_future_result(g, 0.0, NULL, NULL), CF_ETIMEDOUT);
    assert_int_equal(cf_future_result(g, 0.02, NULL, NULL), CF_ETIMEDOUT);
    int code;
    assert_int_equal(cf_future_exception(g, 0.01, &code, NULL), CF_ETIMEDOUT);
    wait_started(1);

    int64_t items[50];
    for (int i = 0; i < 50; i++) items[i] = i;
    cf_map_iter *mi;
    assert_int_equal(cf_map(ex, double_task, items, sizeof items[0], 50,
                            &(cf_map_opts){.has_timeout = true, .timeout = 0.05, .chunksize = 1},
                            &mi),
                     0);
    int64_t v;
    assert_int_equal(cf_map_next_i64(mi, &v), CF_ETIMEDOUT); /* the worker is held */
    assert_int_equal(cf_map_next_i64(mi, &v), CF_ETIMEDOUT);
    cf_map_free(mi);
    assert_int_equal(cf_map(ex, count_task, items, sizeof items[0], 50, NULL, &mi), 0);
    cf_map_free(mi); /* nothing has started: all cancelled */
    open_gate();
    assert_int_equal(result_i64(g), 1);
    cf_future_release(g);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    assert_int_equal(atomic_load(&sh->ran), 0); /* no count_task ran */
    cf_executor_free(ex);
}

static void test_shutdown_modes(void **state)
{
    (void)state;
    /* wait=true runs every queued task */
    reset_shared();
    cf_executor *ex = pool(2);
    cf_future *fs[100];
    for (int i = 0; i < 100; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    assert_int_equal(atomic_load(&sh->ran), 100);
    for (int i = 0; i < 100; i++) {
        assert_true(cf_future_done(fs[i]));
        cf_future_release(fs[i]);
    }
    cf_future *f;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), CF_ESHUTDOWN);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0); /* idempotent */
    cf_executor_free(ex);

    /* wait=false: returns at once, the queued work still completes */
    reset_shared();
    ex = pool(1);
    cf_future *g;
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    for (int i = 0; i < 10; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
    assert_false(cf_future_done(fs[9]));
    open_gate();
    for (int i = 0; i < 10; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    cf_future_release(g);
    cf_executor_free(ex);

    /* cancel_futures: what has not started is cancelled */
    reset_shared();
    ex = pool(1);
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g), 0);
    wait_started(1);
    for (int i = 0; i < 10; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_ECANCELLED);
        cf_future_release(fs[i]);
    }
    open_gate();
    assert_int_equal(result_i64(g), 1);
    cf_future_release(g);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&sh->ran), 0);
}

struct sd_arg {
    cf_executor *ex;
};
static void *shutdown_thread(void *a)
{
    cf_executor_shutdown(((struct sd_arg *)a)->ex, true, false);
    return NULL;
}

static void test_shutdown_concurrent(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(2);
    cf_future *fs[50];
    for (int i = 0; i < 50; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    pthread_t t[4];
    struct sd_arg a = {ex};
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, shutdown_thread, &a);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&sh->ran), 50);
    for (int i = 0; i < 50; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
}

static int init_ok(void *arg)
{
    if (arg != &g_snapshot) return 1; /* the snapshot of the parent's pointer */
    atomic_fetch_add(&sh->inits, 1);
    return 0;
}
static int init_bad(void *arg)
{
    (void)arg;
    return 5;
}

static void test_initializer(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex;
    assert_int_equal(
        cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2,
                                                         .initializer = init_ok,
                                                         .initializer_arg = &g_snapshot}),
        0);
    cf_future *fs[40];
    for (int i = 0; i < 40; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&sh->inits), 2); /* once per worker */

    assert_int_equal(cf_process_pool_new(
                         &ex, &(cf_process_pool_opts){.max_workers = 2, .initializer = init_bad}),
                     0);
    assert_non_null(ex);
    /* The pool may break while we submit: from then on submits say so. */
    int n = 0;
    for (; n < 10; n++) {
        int rc = cf_submit(ex, count_task, NULL, 0, &fs[n]);
        if (rc == CF_EBROKEN) break;
        assert_int_equal(rc, 0);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        int code;
        const char *msg;
        assert_int_equal(cf_future_exception(fs[i], 0, &code, &msg), 0);
        assert_int_equal(code, CF_EBROKEN);
        assert_non_null(strstr(msg, "initializer"));
        cf_future_release(fs[i]);
    }
    cf_future *f;
    int rc;
    while ((rc = cf_submit(ex, count_task, NULL, 0, &f)) == 0) { /* until the pool noticed */
        assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), CF_EBROKEN);
        cf_future_release(f);
        sched_yield();
    }
    assert_int_equal(rc, CF_EBROKEN);
    cf_executor_free(ex);
}

/* Inside a worker, the parent's pool object is a fork snapshot: using it
 * is refused (CF_ENOTSUP); a pool the worker creates itself works. */
static int nested_task(const void *arg, size_t len, cf_out *out)
{
    cf_executor *parent_pool;
    if (len != sizeof parent_pool) return 1;
    memcpy(&parent_pool, arg, sizeof parent_pool);
    cf_future *f;
    int rc = cf_submit(parent_pool, double_task, NULL, 0, &f);
    if (rc != CF_ENOTSUP) return cf_out_error(out, 2, "submit to the snapshot: %d", rc);
    cf_executor *mine;
    assert_int_equal(cf_process_pool_new(&mine, &(cf_process_pool_opts){.max_workers = 1}), 0);
    if (!mine) return cf_out_error(out, 3, "no nested pool");
    int64_t x = 21, v = 0;
    rc = cf_submit(mine, double_task, &x, sizeof x, &f);
    if (rc == 0) {
        rc = cf_future_result_i64(f, CF_FOREVER, &v);
        cf_future_release(f);
    }
    cf_executor_free(mine);
    if (rc) return cf_out_error(out, 4, "nested pool: %d", rc);
    return cf_out_i64(out, v);
}

static void test_nested_pool_in_worker(void **state)
{
    (void)state;
#ifdef CF_TSAN
    /* ThreadSanitizer refuses to start threads in a child of a
     * multi-threaded process (die_after_fork): the nested pool's collector
     * thread would be one. Only this case is skipped under TSan. */
    skip();
#endif
    cf_executor *ex = pool(1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, nested_task, &ex, sizeof ex, &f), 0);
    int64_t v = 0;
    int rc = cf_future_result_i64(f, CF_FOREVER, &v);
    if (rc) {
        int code;
        const char *msg = NULL;
        cf_future_exception(f, 0, &code, &msg);
        fail_msg("nested: %d %d %s", rc, code, msg ? msg : "");
    }
    assert_int_equal(v, 42);
    cf_future_release(f);
    cf_executor_free(ex);
}

static void test_max_workers(void **state)
{
    (void)state;
    cf_executor *ex = (cf_executor *)0x1;
    assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = -1}),
                     CF_EINVAL);
    assert_null(ex);
    assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_tasks_per_child = -1}),
                     CF_EINVAL);
    assert_null(ex);
    assert_int_equal(cf_process_pool_new(&ex, NULL), 0);
    assert_non_null(ex);
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    if (!getenv("CFUTURES_WORKERS")) /* a container's CPU quota caps it (sys/cgroup.h) */
        assert_int_equal(cf_executor_workers(ex), cf__cgroup_cpu_cap(CPU_COUNT(&set)));
    cf_worker_stats st[64];
    memset(st, 0xa5, sizeof st);
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 64, &n), 0);
    assert_int_equal(n, (size_t)cf_executor_workers(ex));
    for (size_t i = 0; i < n && i < 64; i++) /* reserved room: written zero */
        for (size_t r = 0; r < sizeof st[i].reserved / sizeof st[i].reserved[0]; r++)
            assert_true(st[i].reserved[r] == 0);
    cf_executor_free(ex);
}

static void test_terminate(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(2);
    cf_future *g[2], *fs[10];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g[i]), 0);
    wait_started(2);
    for (int i = 0; i < 10; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    assert_int_equal(cf_process_pool_terminate(ex, SIGTERM), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cf_future_result(g[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        int code;
        const char *msg;
        cf_future_exception(g[i], 0, &code, &msg);
        assert_non_null(strstr(msg, "SIGTERM"));
        cf_future_release(g[i]);
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_ECANCELLED);
        cf_future_release(fs[i]);
    }
    cf_future *f;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), CF_ESHUTDOWN);
    assert_int_equal(cf_process_pool_terminate(ex, SIGKILL), 0); /* again: harmless */
    assert_int_equal(cf_process_pool_terminate(ex, 0), CF_EINVAL);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&sh->ran), 0);
}

static int group_setup(void **state)
{
    (void)state;
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return sh == MAP_FAILED ? -1 : 0;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_many),
        cmocka_unit_test(test_result_sizes),
        cmocka_unit_test(test_spill_wraparound),
        cmocka_unit_test(test_task_error_is_not_a_crash),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_max_tasks_per_child),
        cmocka_unit_test(test_cancel_queued_in_ring),
        cmocka_unit_test(test_overflow_and_cancel),
        cmocka_unit_test(test_cancel_after_worker_started),
        cmocka_unit_test(test_callbacks),
        cmocka_unit_test(test_callback_shutdown_while_helping),
        cmocka_unit_test(test_shutdown_wait_with_helper),
        cmocka_unit_test(test_wait_as_completed_map),
        cmocka_unit_test(test_timeouts_and_map_cancel),
        cmocka_unit_test(test_shutdown_modes),
        cmocka_unit_test(test_shutdown_concurrent),
        cmocka_unit_test(test_initializer),
        cmocka_unit_test(test_nested_pool_in_worker),
        cmocka_unit_test(test_max_workers),
        cmocka_unit_test(test_terminate),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
