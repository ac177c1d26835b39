/* Stress: many tasks with random cancels, timeouts, callbacks and nested
 * submits; checks that nothing is lost and nothing runs twice.
 *
 * Environment: CFUTURES_STRESS_SCALE multiplies the task count (1 = the
 * CI size, ~40k top-level tasks; 100 = a few million). Any executor kind
 * runs it; the thread pool is used here, with 1, 2 and 4 workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfutures.h"
#include "support/test_env.h"

#define MAX_CHILDREN 3

struct stress {
    size_t n;
    _Atomic uint32_t *runs;       /* per top-level task: times its body ran */
    _Atomic uint32_t *child_runs; /* per top-level task: child bodies run */
    _Atomic uint32_t *child_subs; /* per top-level task: children submitted */
    _Atomic uint32_t *callbacks;  /* per top-level task: callbacks run */
    cf_executor *ex;
};

static struct stress S;

struct task_arg {
    uint32_t index;
    uint32_t flags; /* bit 0: submit children; bit 1: wait on them */
};

static int child_task(const void *arg, size_t len, cf_out *out)
{
    uint32_t index;
    /* cmocka's asserts must not run off the test's thread: report instead */
    if (len != sizeof index) return cf_out_error(out, 97, "bad child argument");
    memcpy(&index, arg, sizeof index);
    /* relaxed: only the final count matters, read after every future is done
     * (cf_wait's acquire on each future orders it) */
    atomic_fetch_add_explicit(&S.child_runs[index], 1, memory_order_relaxed);
    return cf_out_i64(out, index);
}

static int top_task(const void *arg, size_t len, cf_out *out)
{
    struct task_arg a;
    if (len != sizeof a) return cf_out_error(out, 97, "bad argument");
    memcpy(&a, arg, sizeof a);
    atomic_fetch_add_explicit(&S.runs[a.index], 1, memory_order_relaxed);
    if (a.flags & 1) {
        cf_future *kids[MAX_CHILDREN];
        size_t k = 0;
        for (; k < 1 + a.index % MAX_CHILDREN; k++) {
            /* Nested submits from a running task are allowed even while the
             * pool shuts down, so these never fail here. */
            int rc = cf_submit(S.ex, child_task, &a.index, sizeof a.index, &kids[k]);
            if (rc != 0) return cf_out_error(out, 99, "nested submit failed: %s", cf_strerror(rc));
            atomic_fetch_add_explicit(&S.child_subs[a.index], 1, memory_order_relaxed);
        }
        for (size_t i = 0; i < k; i++) {
            if (a.flags & 2) {
                int64_t v = -1;
                /* waits inside a worker: the worker helps instead of idling */
                int rc = cf_future_result_i64(kids[i], CF_FOREVER, &v);
                if (rc != 0 || v != a.index) return cf_out_error(out, 98, "child result %d", rc);
            }
            cf_future_release(kids[i]);
        }
    }
    if (a.index % 97 == 13) return cf_out_error(out, 7, "task %u fails on purpose", a.index);
    return cf_out_i64(out, (int64_t)a.index * 2);
}

static void on_done(cf_future *f, void *ud)
{
    uint32_t index = (uint32_t)(uintptr_t)ud;
    /* a callback on a not-done future would be a bug: count it as a second run */
    atomic_fetch_add_explicit(&S.callbacks[index], cf_future_done(f) ? 1 : 2, memory_order_relaxed);
}

static void run_stress(int workers, uint64_t seed)
{
    size_t n = (size_t)(40000 * cf_test_scale());
    S.n = n;
    S.runs = calloc(n, sizeof *S.runs);
    S.child_runs = calloc(n, sizeof *S.child_runs);
    S.child_subs = calloc(n, sizeof *S.child_subs);
    S.callbacks = calloc(n, sizeof *S.callbacks);
    uint8_t *want_cb = calloc(n, 1);
    cf_future **fs = calloc(n, sizeof *fs);
    assert_non_null(S.runs);
    assert_non_null(fs);
    assert_int_equal(cf_thread_pool_new(&S.ex, &(cf_thread_pool_opts){.max_workers = workers}), 0);
    assert_non_null(S.ex);

    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = cf_test_rand(&rng);
        struct task_arg a = {.index = (uint32_t)i, .flags = (uint32_t)(r & 3)};
        if ((r >> 8) % 4 != 0) a.flags = 0; /* a quarter of the tasks nest */
        assert_int_equal(cf_submit(S.ex, top_task, &a, sizeof a, &fs[i]), 0);
        switch ((r >> 16) % 8) {
        case 0: /* cancel right away: it either wins (never runs) or not */
            cf_future_cancel(fs[i]);
            break;
        case 1: /* a callback */
        case 2:
            want_cb[i] = 1;
            assert_int_equal(cf_future_add_done_callback(fs[i], on_done, (void *)(uintptr_t)i), 0);
            break;
        case 3: { /* poll */
            const void *d;
            size_t l;
            int rc = cf_future_result(fs[i], CF_POLL, &d, &l);
            assert_true(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_ETASK || rc == CF_ECANCELLED);
            break;
        }
        case 4: { /* a short timeout on an earlier future */
            size_t j = (size_t)((r >> 24) % (i + 1));
            int64_t v;
            int rc = cf_future_result_i64(fs[j], 1e-5, &v);
            assert_true(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_ETASK || rc == CF_ECANCELLED);
            if (rc == 0) assert_int_equal(v, (int64_t)j * 2);
            break;
        }
        default: break;
        }
    }

    size_t done = 0;
    assert_int_equal(cf_wait(fs, n, CF_ALL_COMPLETED, CF_FOREVER, &done), 0);
    assert_int_equal(done, n);
    /* cf_wait permuted fs; look at each future through its own argument. */
    size_t cancelled = 0, failed = 0;
    for (size_t k = 0; k < n; k++) {
        cf_future *f = fs[k];
        int64_t v = -1;
        int rc = cf_future_result_i64(f, CF_POLL, &v);
        if (rc == CF_ECANCELLED) {
            cancelled++;
            continue;
        }
        if (rc == CF_ETASK) {
            int code = 0;
            const char *msg = NULL;
            assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
            assert_int_equal(code, 7);
            assert_non_null(msg);
            failed++;
            continue;
        }
        assert_int_equal(rc, 0);
        assert_true(v >= 0 && v % 2 == 0 && (size_t)(v / 2) < n);
    }
    /* Every future is done: every task body either ran exactly once or was
     * cancelled before it started; children ran exactly as often as they
     * were submitted (shutdown(wait) below lets un-awaited ones finish). */
    assert_int_equal(cf_executor_shutdown(S.ex, true, false), 0);
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t runs = atomic_load_explicit(&S.runs[i], memory_order_relaxed);
        assert_true(runs <= 1);
        ran += runs;
        assert_int_equal(atomic_load_explicit(&S.child_runs[i], memory_order_relaxed),
                         atomic_load_explicit(&S.child_subs[i], memory_order_relaxed));
        if (want_cb[i])
            assert_int_equal(atomic_load_explicit(&S.callbacks[i], memory_order_relaxed), 1);
        else assert_int_equal(atomic_load_explicit(&S.callbacks[i], memory_order_relaxed), 0);
    }
    assert_int_equal(ran + cancelled, n);
    assert_true(failed <= ran);
    for (size_t k = 0; k < n; k++) cf_future_release(fs[k]);
    cf_executor_free(S.ex);
    free(S.runs);
    free(S.child_runs);
    free(S.child_subs);
    free(S.callbacks);
    free(want_cb);
    free(fs);
}

static void stress_1_worker(void **state)
{
    (void)state;
    run_stress(1, 0x9E3779B97F4A7C15ULL);
}
static void stress_2_workers(void **state)
{
    (void)state;
    run_stress(2, 0xD1B54A32D192ED03ULL);
}
static void stress_4_workers(void **state)
{
    (void)state;
    run_stress(4, 0x94D049BB133111EBULL);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stress_1_worker),
        cmocka_unit_test(stress_2_workers),
        cmocka_unit_test(stress_4_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
