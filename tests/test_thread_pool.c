/* The thread pool: SEMANTICS 17-22 (submit after shutdown / broken,
 * shutdown's modes, max_workers, initializer, thread names, waiting inside a
 * worker), per-worker stats, and a rough cost print (no timing asserts). */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "support/test_env.h"

/* ---- small tasks ---- */

static int ident(const void *arg, size_t len, cf_out *out)
{
    int64_t x = 0;
    memcpy(&x, arg, len < sizeof x ? len : sizeof x);
    return cf_out_i64(out, x);
}

static _Atomic long g_count;
static int count_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    /* Relaxed: read after the futures are done or the pool joined. */
    atomic_fetch_add_explicit(&g_count, 1, memory_order_relaxed);
    return 0;
}

/* A task that holds its worker until the test opens the gate. It spins on a
 * flag rather than waiting on a future, because a worker waiting on a
 * future would run the queued tasks meanwhile (SEMANTICS 22). */
static _Atomic int g_gate;
static cf_future *g_started; /* set by the blocker when it runs */
static int blocker(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    cf_future_set_result(g_started, NULL, 0);
    /* Acquire: pairs with the release store in gate_open. */
    while (!atomic_load_explicit(&g_gate, memory_order_acquire)) sched_yield();
    return 0;
}
static cf_future *start_blocker(cf_executor *ex)
{
    atomic_store(&g_gate, 0);
    g_started = cf_test_future();
    assert_non_null(g_started);
    cf_future *b;
    assert_int_equal(cf_submit(ex, blocker, NULL, 0, &b), 0);
    assert_int_equal(cf_future_result(g_started, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g_started);
    return b;
}
static void gate_open(void)
{
    atomic_store_explicit(&g_gate, 1, memory_order_release);
}

static cf_executor *pool(int n)
{
    int err = 1;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = n});
    assert_non_null(ex);
    assert_int_equal(err, 0);
    return ex;
}

/* ---- basics ---- */

static void test_submit_many(void **state)
{
    (void)state;
    cf_executor *ex = pool(0);
    size_t n = (size_t)(20000 * cf_test_scale());
    cf_future **fs = calloc(n, sizeof *fs);
    assert_non_null(fs);
    for (size_t i = 0; i < n; i++) {
        int64_t x = (int64_t)i;
        assert_int_equal(cf_submit(ex, ident, &x, sizeof x, &fs[i]), 0);
    }
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t y;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &y), 0);
        sum += y;
        cf_future_release(fs[i]);
    }
    assert_int_equal(sum, (int64_t)(n * (n - 1) / 2));
    free(fs);
    cf_executor_free(ex);
}

/* One worker runs outside submissions in submission order (the injected
 * batch is pushed so that the owner's pops are FIFO). */
static _Atomic int g_seq;
static int g_order[256];
static int order_task(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    int i;
    memcpy(&i, arg, sizeof i);
    g_order[i] = atomic_fetch_add(&g_seq, 1);
    return 0;
}

static void test_fifo_one_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *b = start_blocker(ex);
    atomic_store(&g_seq, 0);
    cf_future *fs[256];
    for (int i = 0; i < 256; i++)
        assert_int_equal(cf_submit(ex, order_task, &i, sizeof i, &fs[i]), 0);
    gate_open();
    for (int i = 0; i < 256; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    for (int i = 0; i < 256; i++) assert_int_equal(g_order[i], i);
    cf_future_release(b);
    cf_executor_free(ex);
}

/* Several outside threads submit at once while tasks also submit nested
 * work and submitters cancel some: every task runs exactly once unless it
 * was cancelled before it started. */
enum { MS_THREADS = 4 };
static _Atomic uint8_t *g_ran;
static size_t g_ms_n;
static cf_executor *g_ms_ex;

static int ms_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    uint64_t id;
    memcpy(&id, arg, sizeof id);
    atomic_fetch_add_explicit(&g_ran[id], 1, memory_order_relaxed);
    if (id % 7 == 0 && id + 1 < g_ms_n * MS_THREADS * 2 && (id & 1) == 0) {
        /* Nested child with the odd id next to ours. */
        uint64_t child = id + 1;
        cf_future *f;
        int rc = cf_submit(g_ms_ex, ms_task, &child, sizeof child, &f);
        if (rc) return rc;
        rc = cf_future_result(f, CF_FOREVER, NULL, NULL);
        cf_future_release(f);
        if (rc) return rc;
    }
    return cf_out_i64(out, (int64_t)id);
}

struct ms_ctx {
    int t;
    cf_future **fs;
};

static void *ms_submitter(void *arg)
{
    struct ms_ctx *c = arg;
    uint64_t rng = 1234 + (uint64_t)c->t;
    for (size_t i = 0; i < g_ms_n; i++) {
        uint64_t id = 2 * ((uint64_t)c->t * g_ms_n + i); /* even: outside */
        if (cf_submit(g_ms_ex, ms_task, &id, sizeof id, &c->fs[i]) != 0) return (void *)1;
        if (cf_test_rand(&rng) % 16 == 0) cf_future_cancel(c->fs[i]);
    }
    return NULL;
}

static void test_many_submitters(void **state)
{
    (void)state;
    g_ms_n = (size_t)(20000 * cf_test_scale());
    g_ran = calloc(g_ms_n * MS_THREADS * 2, sizeof *g_ran);
    assert_non_null(g_ran);
    g_ms_ex = pool(0);
    pthread_t t[MS_THREADS];
    struct ms_ctx c[MS_THREADS];
    for (int i = 0; i < MS_THREADS; i++) {
        c[i].t = i;
        c[i].fs = calloc(g_ms_n, sizeof(cf_future *));
        assert_non_null(c[i].fs);
        assert_int_equal(pthread_create(&t[i], NULL, ms_submitter, &c[i]), 0);
    }
    for (int i = 0; i < MS_THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    for (int i = 0; i < MS_THREADS; i++) {
        for (size_t k = 0; k < g_ms_n; k++) {
            cf_future *f = c[i].fs[k];
            uint64_t id = 2 * ((uint64_t)i * g_ms_n + k);
            int rc = cf_future_result(f, CF_FOREVER, NULL, NULL);
            if (rc == CF_ECANCELLED) {
                assert_int_equal(atomic_load(&g_ran[id]), 0);
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(atomic_load(&g_ran[id]), 1);
                if (id % 7 == 0) assert_int_equal(atomic_load(&g_ran[id + 1]), 1);
            }
            cf_future_release(f);
        }
        free(c[i].fs);
    }
    cf_executor_free(g_ms_ex);
    free(g_ran);
}

/* ---- SEMANTICS 17 ---- */

static void test_submit_after_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_future *f = (cf_future *)0x1;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), CF_ESHUTDOWN);
    assert_ptr_equal(f, (cf_future *)0x1);                       /* a failed call changes nothing */
    assert_int_equal(cf_executor_shutdown(ex, false, false), 0); /* idempotent */
    cf_executor_free(ex);
}

/* ---- SEMANTICS 18 ---- */

static void test_shutdown_wait_runs_queued(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *b = start_blocker(ex);
    atomic_store(&g_count, 0);
    enum { N = 200 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    gate_open();
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    /* Every queued task ran before shutdown(wait) returned. */
    assert_int_equal(atomic_load(&g_count), N);
    for (int i = 0; i < N; i++) {
        assert_true(cf_future_done(fs[i]));
        assert_false(cf_future_cancelled(fs[i]));
        cf_future_release(fs[i]);
    }
    cf_future_release(b);
    cf_executor_free(ex);
}

static void test_shutdown_nowait(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *b = start_blocker(ex);
    atomic_store(&g_count, 0);
    enum { N = 50 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    /* Returns while the only worker is still held by the blocker: it did
     * not wait (if it did, this test would hang here). */
    assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
    assert_false(cf_future_done(b));
    gate_open();
    /* The queued work still completes. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    assert_int_equal(atomic_load(&g_count), N);
    assert_int_equal(cf_future_result(b, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(b);
    cf_executor_free(ex);
}

static void test_cancel_futures(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *b = start_blocker(ex);
    atomic_store(&g_count, 0);
    enum { N = 30 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    for (int i = 0; i < N; i++) {
        assert_true(cf_future_cancelled(fs[i]));
        assert_int_equal(cf_future_result(fs[i], CF_POLL, NULL, NULL), CF_ECANCELLED);
    }
    /* The running one is not interrupted. */
    assert_false(cf_future_cancelled(b));
    gate_open();
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    assert_int_equal(cf_future_result(b, CF_POLL, NULL, NULL), 0);
    assert_int_equal(atomic_load(&g_count), 0);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    cf_future_release(b);
    cf_executor_free(ex);
}

static cf_executor *g_ex;
static void *shutdown_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++)
        if (cf_executor_shutdown(g_ex, true, i == 1) != 0) return (void *)1;
    return NULL;
}

static void test_shutdown_concurrent(void **state)
{
    (void)state;
    g_ex = pool(2);
    atomic_store(&g_count, 0);
    enum { N = 1000, T = 4 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(g_ex, count_task, NULL, 0, &fs[i]), 0);
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&t[i], NULL, shutdown_thread, NULL), 0);
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    /* Every future ran or was cancelled (cancel_futures in the mix). */
    long ran = 0;
    for (int i = 0; i < N; i++) {
        assert_true(cf_future_done(fs[i]));
        if (!cf_future_cancelled(fs[i])) ran++;
        cf_future_release(fs[i]);
    }
    assert_int_equal(ran, atomic_load(&g_count));
    cf_executor_free(g_ex);
}

/* Outside submits racing shutdown: each one either fails with
 * CF_ESHUTDOWN (and never runs) or is accepted and has run by the time
 * shutdown(wait=true) returns - none is stranded in a queue. */
enum { RACE_T = 3, RACE_MAX = 200000 };
static _Atomic long g_race_submitted;
static _Atomic bool g_race_shutdown_begun;
struct race_ctx {
    cf_future **fs;
    size_t n;
};
static void *race_submitter(void *arg)
{
    struct race_ctx *c = arg;
    for (c->n = 0; c->n < RACE_MAX; c->n++) {
        /* A submitter that outruns a descheduled main thread keeps its
         * last submit for the race with shutdown. */
        if (c->n == RACE_MAX - 1)
            while (!atomic_load(&g_race_shutdown_begun)) sched_yield();
        int rc = cf_submit(g_ex, count_task, NULL, 0, &c->fs[c->n]);
        if (rc == CF_ESHUTDOWN) break;
        if (rc != 0) return (void *)1;
        atomic_fetch_add(&g_race_submitted, 1);
    }
    return NULL;
}

static void test_submit_races_shutdown(void **state)
{
    (void)state;
    int rounds = (int)(10 * cf_test_scale());
    for (int r = 0; r < rounds; r++) {
        g_ex = pool(2);
        atomic_store(&g_count, 0);
        atomic_store(&g_race_submitted, 0);
        atomic_store(&g_race_shutdown_begun, false);
        pthread_t t[RACE_T];
        struct race_ctx c[RACE_T];
        for (int i = 0; i < RACE_T; i++) {
            c[i].fs = calloc(RACE_MAX, sizeof(cf_future *));
            assert_non_null(c[i].fs);
            assert_int_equal(pthread_create(&t[i], NULL, race_submitter, &c[i]), 0);
        }
        while (atomic_load(&g_race_submitted) < 100 * (r + 1)) sched_yield();
        atomic_store(&g_race_shutdown_begun, true);
        assert_int_equal(cf_executor_shutdown(g_ex, true, false), 0);
        long accepted = 0;
        for (int i = 0; i < RACE_T; i++) {
            void *ret;
            pthread_join(t[i], &ret);
            assert_null(ret);
            assert_true(c[i].n <= RACE_MAX);
            for (size_t k = 0; k < c[i].n; k++) {
                assert_true(cf_future_done(c[i].fs[k]));
                assert_false(cf_future_cancelled(c[i].fs[k]));
                cf_future_release(c[i].fs[k]);
            }
            accepted += (long)c[i].n;
            free(c[i].fs);
        }
        assert_int_equal(atomic_load(&g_count), accepted);
        cf_executor_free(g_ex);
    }
}

/* shutdown(wait=true) from inside one of the pool's own tasks acts as
 * wait=false (it cannot join itself). */
static int shutdown_self_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    int rc = cf_executor_shutdown(ex, true, false);
    return cf_out_i64(out, rc);
}

static void test_shutdown_from_task(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    cf_future *f;
    assert_int_equal(cf_submit(ex, shutdown_self_task, &ex, sizeof ex, &f), 0);
    int64_t rc = -1;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &rc), 0);
    assert_int_equal(rc, 0);
    cf_future *g;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &g), CF_ESHUTDOWN);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ... and from a done-callback running on a worker. */
static _Atomic int g_cb_rc = 99;
static void shutdown_cb(cf_future *f, void *ud)
{
    (void)f;
    atomic_store(&g_cb_rc, cf_executor_shutdown(ud, true, false));
}

static void test_shutdown_from_callback(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *b = start_blocker(ex);
    /* b is running, so the callback runs in the worker that completes it. */
    assert_int_equal(cf_future_add_done_callback(b, shutdown_cb, ex), 0);
    gate_open();
    assert_int_equal(cf_future_result(b, CF_FOREVER, NULL, NULL), 0);
    cf_executor_free(ex); /* joins: the callback has returned by then */
    assert_int_equal(atomic_load(&g_cb_rc), 0);
    cf_future_release(b);
}

/* cf_executor_free from inside one of the pool's own tasks: it cannot join
 * itself; the pool drains, its threads leave and the last one frees it
 * (ASan's leak check would see it otherwise). */
static int free_self_task(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    cf_executor_free(ex);
    return 0;
}

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    assert_non_null(f);
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    assert_non_null(p);
    int field = 2, threads = -1;
    for (const char *q = p + 1; *q; q++)
        if (*q == ' ' && ++field == 20) {
            threads = atoi(q + 1);
            break;
        }
    return threads;
}

static void test_free_from_task(void **state)
{
    (void)state;
    /* A sanitizer starts its helper thread with the first thread the
     * process makes: make one first, so the count works when run alone. */
    cf_executor_free(pool(1));
    int before = thread_count();
    cf_executor *ex = pool(2);
    atomic_store(&g_count, 0);
    cf_future *fs[50];
    for (int i = 0; i < 50; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    cf_future *f;
    assert_int_equal(cf_submit(ex, free_self_task, &ex, sizeof ex, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    /* Queued work still completes. */
    for (int i = 0; i < 50; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    /* The workers leave on their own (detached); wait until they have. */
    while (thread_count() > before) sched_yield();
}

/* Nested submits from a running task still work after shutdown, so a
 * fork-join computation is not cut in half; outside submits are refused. */
static int nested_after_shutdown(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    cf_future_set_result(g_started, NULL, 0);
    while (!atomic_load_explicit(&g_gate, memory_order_acquire)) sched_yield();
    enum { K = 20 };
    cf_future *fs[K];
    int64_t sum = 0;
    for (int i = 0; i < K; i++) {
        int64_t x = i;
        int rc = cf_submit(ex, ident, &x, sizeof x, &fs[i]);
        if (rc) return cf_out_error(out, 1, "nested submit %d: %s", i, cf_strerror(rc));
    }
    for (int i = 0; i < K; i++) {
        int64_t y = 0;
        if (cf_future_result_i64(fs[i], CF_FOREVER, &y) != 0) return 2;
        sum += y;
        cf_future_release(fs[i]);
    }
    return cf_out_i64(out, sum);
}

static void test_nested_submit_during_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    atomic_store(&g_gate, 0);
    g_started = cf_test_future();
    cf_future *f;
    assert_int_equal(cf_submit(ex, nested_after_shutdown, &ex, sizeof ex, &f), 0);
    assert_int_equal(cf_future_result(g_started, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g_started);
    assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
    cf_future *g;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &g), CF_ESHUTDOWN);
    gate_open();
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    int64_t sum = -1;
    int code = 0;
    const char *msg = NULL;
    cf_future_exception(f, CF_POLL, &code, &msg);
    if (code) print_message("nested task failed: %d %s\n", code, msg ? msg : "");
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &sum), 0);
    assert_int_equal(sum, 190);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- SEMANTICS 19 ---- */

static void test_max_workers(void **state)
{
    (void)state;
    cf_executor *bad = (cf_executor *)0x1;
    assert_int_equal(cf_thread_pool_new(&bad, &(cf_thread_pool_opts){.max_workers = -1}),
                     CF_EINVAL);
    assert_null(bad);
    assert_int_equal(cf_thread_pool_new(&bad, &(cf_thread_pool_opts){.max_workers = -5}),
                     CF_EINVAL);
    assert_null(bad);
    /* 0 (a zeroed struct) and NULL: one worker per allowed core. */
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int cpus = CPU_COUNT(&set);
    cf_executor *a;
    assert_int_equal(cf_thread_pool_new(&a, &(cf_thread_pool_opts){0}), 0);
    cf_executor *b;
    assert_int_equal(cf_thread_pool_new(&b, NULL), 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_in_range(cf_executor_workers(a), 1, cpus);
    assert_int_equal(cf_executor_workers(a), cf_executor_workers(b));
    cf_executor_free(a);
    cf_executor_free(b);
    cf_executor *c = pool(3);
    assert_int_equal(cf_executor_workers(c), 3);
    cf_executor_free(c);
}

/* The environment sets defaults; an option set in code wins (SEMANTICS 16b). */
static void test_options_override_env(void **state)
{
    (void)state;
    assert_int_equal(setenv("CFUTURES_WORKERS", "3", 1), 0);
    assert_int_equal(setenv("CFUTURES_STATS", "0", 1), 0);
    cf_executor *a;
    assert_int_equal(cf_thread_pool_new(&a, NULL), 0);
    cf_executor *b;
    assert_int_equal(
        cf_thread_pool_new(&b, &(cf_thread_pool_opts){.max_workers = 2, .stats = CF_SWITCH_ON}), 0);
    unsetenv("CFUTURES_WORKERS");
    unsetenv("CFUTURES_STATS");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(cf_executor_workers(a), 3);
    assert_int_equal(cf_executor_workers(b), 2);
    /* stats on in code (the environment said off): counters move. */
    cf_future *f;
    assert_int_equal(cf_submit(b, count_task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    cf_executor_shutdown(b, true, false);
    cf_worker_stats st[2];
    size_t n;
    assert_int_equal(cf_executor_stats(b, st, 2, &n), 0);
    assert_int_equal(st[0].tasks_run + st[1].tasks_run, 1);
    cf_executor_free(a);
    cf_executor_free(b);
}

/* A (synthetic) machine with two NUMA nodes: two injection queues, steal
 * tiers with remote victims. Pinning fails on CPUs this machine lacks,
 * which is not fatal: the logic runs all the same. */
static int nested_sum_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    enum { K = 16 };
    cf_future *fs[K];
    int64_t sum = 0;
    for (int64_t i = 0; i < K; i++)
        if (cf_submit(ex, ident, &i, sizeof i, &fs[i]) != 0) return 1;
    for (int i = 0; i < K; i++) {
        int64_t y = 0;
        if (cf_future_result_i64(fs[i], CF_FOREVER, &y) != 0) return 2;
        sum += y;
        cf_future_release(fs[i]);
    }
    return cf_out_i64(out, sum);
}

static void test_two_numa_nodes(void **state)
{
    (void)state;
    assert_int_equal(setenv("HWLOC_SYNTHETIC", "pack:2 numa:1 l3:1 core:2 pu:1", 1), 0);
    /* The counts below are the workers': the waiting main thread would
     * otherwise run some tasks itself (SEMANTICS 22c), and their children
     * would come from outside. */
    assert_int_equal(setenv("CFUTURES_WAIT_HELP", "0", 1), 0);
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(
                         &ex, &(cf_thread_pool_opts){.stats = CF_SWITCH_ON, .numa = CF_SWITCH_ON}),
                     0);
    unsetenv("HWLOC_SYNTHETIC");
    unsetenv("CFUTURES_WAIT_HELP");
    assert_non_null(ex);
    assert_int_equal(cf_executor_workers(ex), 4);
    enum { N = 2000 };
    cf_future **fs = calloc(N, sizeof *fs);
    assert_non_null(fs);
    for (int i = 0; i < N; i++)
        assert_int_equal(cf_submit(ex, nested_sum_task, &ex, sizeof ex, &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        int64_t v = 0;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &v), 0);
        assert_int_equal(v, 120);
        cf_future_release(fs[i]);
    }
    free(fs);
    cf_executor_shutdown(ex, true, false);
    cf_worker_stats st[4];
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 4, &n), 0);
    assert_int_equal(n, 4);
    uint64_t run = 0, inj = 0;
    int nodes[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        run += st[i].tasks_run;
        inj += st[i].injected_taken;
        assert_in_range(st[i].numa_node, 0, 1);
        nodes[st[i].numa_node]++;
    }
    assert_int_equal(nodes[0], 2);
    assert_int_equal(nodes[1], 2);
    assert_int_equal(inj, N);
    assert_int_equal(run, N * 17);
    cf_executor_free(ex);
}

/* ---- SEMANTICS 20 ---- */

static _Atomic int g_inits;
static _Thread_local int t_inited;
static int good_init(void *arg)
{
    assert_ptr_equal(arg, &g_inits);
    atomic_fetch_add(&g_inits, 1);
    t_inited++;
    return 0;
}
static int check_inited(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, t_inited);
}

static void test_initializer_once_per_worker(void **state)
{
    (void)state;
    atomic_store(&g_inits, 0);
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 3,
                                                                    .initializer = good_init,
                                                                    .initializer_arg = &g_inits}),
                     0);
    assert_non_null(ex);
    enum { N = 300 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, check_inited, NULL, 0, &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        int64_t v = 0;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &v), 0);
        assert_int_equal(v, 1); /* ran after its worker's initializer, once */
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&g_inits), 3);
}

static int bad_init(void *arg)
{
    (void)arg;
    return 7;
}

static void test_initializer_failure_breaks(void **state)
{
    (void)state;
    atomic_store(&g_count, 0);
    cf_executor *ex;
    assert_int_equal(
        cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2, .initializer = bad_init}),
        0);
    assert_non_null(ex);
    enum { N = 20 };
    cf_future *fs[N];
    int ok = 0;
    for (int i = 0; i < N; i++) {
        int rc = cf_submit(ex, count_task, NULL, 0, &fs[ok]);
        assert_true(rc == 0 || rc == CF_EBROKEN);
        if (rc == 0) ok++;
    }
    for (int i = 0; i < ok; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        int code = 0;
        const char *msg = NULL;
        assert_int_equal(cf_future_exception(fs[i], CF_POLL, &code, &msg), 0);
        assert_int_equal(code, CF_EBROKEN);
        assert_non_null(msg);
        assert_non_null(strstr(msg, "initializer"));
        assert_non_null(strstr(msg, "code 7"));
        cf_future_release(fs[i]);
    }
    /* Broken is visible before any queued future fails, so from here on
     * (and certainly after one failed) submits fail; broken wins over
     * shutdown. */
    cf_future *g;
    if (ok > 0) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &g), CF_EBROKEN);
    assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
    /* Wait for the pool to have seen the failure, then check the order. */
    cf_executor_shutdown(ex, true, false);
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &g), CF_EBROKEN);
    assert_int_equal(atomic_load(&g_count), 0); /* nothing ran */
    cf_executor_free(ex);
}

/* ---- SEMANTICS 21 ---- */

static int name_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    return cf_out_set(out, name, strlen(name) + 1);
}

static void check_names(cf_executor *ex, const char *prefix, int n)
{
    enum { N = 64 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, name_task, NULL, 0, &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t len;
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, &d, &len), 0);
        const char *name = d;
        size_t pl = strlen(prefix);
        assert_int_equal(strncmp(name, prefix, pl), 0);
        assert_int_equal(name[pl], '-');
        int k = atoi(name + pl + 1);
        assert_in_range(k, 0, n - 1);
        cf_future_release(fs[i]);
    }
}

static void test_thread_names(void **state)
{
    (void)state;
    /* Only workers run these: a waiting thread outside the pool would run
     * some itself while the workers are busy (SEMANTICS 22c). */
    assert_int_equal(setenv("CFUTURES_WAIT_HELP", "0", 1), 0);
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(
                         &ex, &(cf_thread_pool_opts){.max_workers = 2, .thread_name_prefix = "tp"}),
                     0);
    assert_non_null(ex);
    check_names(ex, "tp", 2);
    cf_executor_free(ex);
    ex = pool(2);
    check_names(ex, "cf", 2);
    cf_executor_free(ex);
    unsetenv("CFUTURES_WAIT_HELP");
}

/* ---- SEMANTICS 22 ---- */

static int wait_child_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    int64_t x = 41, y = 0;
    cf_future *f;
    int rc = cf_submit(ex, ident, &x, sizeof x, &f);
    if (rc) return rc;
    rc = cf_future_result_i64(f, CF_FOREVER, &y);
    cf_future_release(f);
    return rc ? rc : cf_out_i64(out, y + 1);
}

/* A task that waits on a future submitted from outside after it started:
 * that one sits in the injection queue, and the waiting worker takes it. */
static cf_future *g_outside;
static int wait_outside_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    cf_future_set_result(g_started, NULL, 0);
    while (!atomic_load_explicit(&g_gate, memory_order_acquire)) sched_yield();
    int64_t y = 0;
    int rc = cf_future_result_i64(g_outside, CF_FOREVER, &y);
    return rc ? rc : cf_out_i64(out, y);
}

static void test_wait_inside_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, wait_child_task, &ex, sizeof ex, &f), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 42);
    cf_future_release(f);

    atomic_store(&g_gate, 0);
    g_started = cf_test_future();
    assert_int_equal(cf_submit(ex, wait_outside_task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(g_started, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g_started);
    int64_t x = 7;
    assert_int_equal(cf_submit(ex, ident, &x, sizeof x, &g_outside), 0);
    gate_open();
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 7);
    cf_future_release(f);
    cf_future_release(g_outside);

    /* A timed wait inside a worker times out like anywhere else. */
    cf_executor_free(ex);
}

static int timed_wait_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    cf_future *never = cf_test_future();
    int rc = cf_future_result(never, 0.01, NULL, NULL);
    cf_future_release(never);
    return cf_out_i64(out, rc);
}

static void test_timed_wait_inside_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, timed_wait_task, NULL, 0, &f), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, CF_ETIMEDOUT);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- stats ---- */

static void test_stats(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(
        cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2, .stats = CF_SWITCH_ON}),
        0);
    assert_non_null(ex);
    enum { N = 500 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    cf_executor_shutdown(ex, true, false); /* prints the counters */
    cf_worker_stats st[4];
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 4, &n), 0);
    assert_int_equal(n, 2);
    uint64_t run = 0, inj = 0;
    for (size_t i = 0; i < n; i++) {
        run += st[i].tasks_run;
        inj += st[i].injected_taken;
    }
    assert_int_equal(run, N);
    assert_int_equal(inj, N);
    assert_int_equal(cf_executor_stats(ex, NULL, 0, &n), 0);
    assert_int_equal(n, 2);
    cf_executor_free(ex);
}

/* Wake-ups: submit when every worker is parked (or about to): the work is
 * run (a lost wake-up hangs here). Then nested work from a task that busy
 * waits (not through a future, so it cannot run the child itself) must wake
 * the parked second worker. */
static void wait_all_parked(cf_executor *ex)
{
    for (;;) {
        cf_worker_stats st[2];
        size_t n;
        assert_int_equal(cf_executor_stats(ex, st, 2, &n), 0);
        if (st[0].parks > st[0].wakeups && st[1].parks > st[1].wakeups) return;
        sched_yield();
    }
}

static _Atomic int g_child_ran;
static int child_flag(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_store_explicit(&g_child_ran, 1, memory_order_release);
    return 0;
}
static int parent_spins(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    cf_future *f;
    int rc = cf_submit(ex, child_flag, NULL, 0, &f);
    if (rc) return rc;
    while (!atomic_load_explicit(&g_child_ran, memory_order_acquire)) sched_yield();
    cf_future_release(f);
    return 0;
}

static void test_wakeups_after_park(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(
        cf_thread_pool_new(
            &ex, &(cf_thread_pool_opts){.max_workers = 2, .stats = CF_SWITCH_ON, .spin_ns = 1000}),
        0);
    assert_non_null(ex);
    int rounds = (int)(30 * cf_test_scale());
    for (int r = 0; r < rounds; r++) {
        wait_all_parked(ex);
        cf_future *f;
        assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), 0);
        assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
        cf_future_release(f);

        wait_all_parked(ex);
        atomic_store(&g_child_ran, 0);
        assert_int_equal(cf_submit(ex, parent_spins, &ex, sizeof ex, &f), 0);
        assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
        cf_future_release(f);
    }
    cf_executor_free(ex);
}

/* ---- rough cost (printed, never asserted) ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_rough_cost(void **state)
{
    (void)state;
    cf_executor *ex = pool(0);
    size_t n = (size_t)(100000 * cf_test_scale());
    cf_future **fs = calloc(n, sizeof *fs);
    assert_non_null(fs);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        int64_t x = (int64_t)i;
        assert_int_equal(cf_submit(ex, ident, &x, sizeof x, &fs[i]), 0);
    }
    double t1 = now_s();
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t y;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &y), 0);
        sum += y;
        cf_future_release(fs[i]);
    }
    double t2 = now_s();
    assert_int_equal(sum, (int64_t)(n * (n - 1) / 2));
    print_message(
        "cost: %zu tasks, %d workers: submit %.0f ns/task, submit+complete+release %.0f ns/task\n",
        n, cf_executor_workers(ex), (t1 - t0) * 1e9 / n, (t2 - t0) * 1e9 / n);
    /* Ping-pong: one task at a time, round trip. */
    int m = (int)(20000 * cf_test_scale());
    double p0 = now_s();
    for (int i = 0; i < m; i++) {
        cf_future *f;
        assert_int_equal(cf_submit(ex, count_task, NULL, 0, &f), 0);
        assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
        cf_future_release(f);
    }
    double p1 = now_s();
    print_message("cost: pingpong %d round trips, mean %.0f ns\n", m, (p1 - p0) * 1e9 / m);
    /* Idle CPU after a burst: measured, not asserted. */
    double c0 = cpu_s(), w0 = now_s();
    struct timespec d = {0, 200 * 1000 * 1000};
    nanosleep(&d, NULL);
    double c1 = cpu_s(), w1 = now_s();
    print_message("cost: idle pool %.3f ms CPU per s\n", (c1 - c0) * 1e3 / (w1 - w0));
    free(fs);
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_many),
        cmocka_unit_test(test_fifo_one_worker),
        cmocka_unit_test(test_many_submitters),
        cmocka_unit_test(test_submit_after_shutdown),
        cmocka_unit_test(test_shutdown_wait_runs_queued),
        cmocka_unit_test(test_shutdown_nowait),
        cmocka_unit_test(test_cancel_futures),
        cmocka_unit_test(test_shutdown_concurrent),
        cmocka_unit_test(test_submit_races_shutdown),
        cmocka_unit_test(test_shutdown_from_task),
        cmocka_unit_test(test_shutdown_from_callback),
        cmocka_unit_test(test_nested_submit_during_shutdown),
        cmocka_unit_test(test_free_from_task),
        cmocka_unit_test(test_max_workers),
        cmocka_unit_test(test_options_override_env),
        cmocka_unit_test(test_two_numa_nodes),
        cmocka_unit_test(test_initializer_once_per_worker),
        cmocka_unit_test(test_initializer_failure_breaks),
        cmocka_unit_test(test_thread_names),
        cmocka_unit_test(test_wait_inside_worker),
        cmocka_unit_test(test_timed_wait_inside_worker),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_wakeups_after_park),
        cmocka_unit_test(test_rough_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
