/* The bound on helping: a pool worker whose task waits on a future runs
 * other tasks on its own stack meanwhile, but only so deep (a nesting
 * depth cap for unrelated work, and a stack reserve for any work); past
 * the bound it sleeps on the future. Fork-join still completes, also on a
 * one-worker pool and deeper than the cap (a waiting task still runs its
 * own children).
 *
 * Depth is measured by the tasks themselves: a thread-local counter that
 * every task raises while it runs, so nested runs on one worker's stack
 * show up as depth > 1. */
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "support/test_env.h"
#include "thread/thread_pool.h"

#define HANG_S 60 /* a hang detector for the polling loops */

static _Thread_local int depth;
static _Atomic int max_depth;
static _Atomic long started;

static void enter(void)
{
    int d = ++depth;
    int m = atomic_load(&max_depth);
    while (d > m && !atomic_compare_exchange_weak(&max_depth, &m, d))
        ;
    atomic_fetch_add(&started, 1);
}

static void reset_counts(void)
{
    atomic_store(&max_depth, 0);
    atomic_store(&started, 0);
}

/* ---- blockers: occupy every worker (not through a future) ---- */

static sem_t blockers_go;
static _Atomic int blockers_in;

static int blocker_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_fetch_add(&blockers_in, 1);
    sem_wait(&blockers_go);
    return 0;
}

/* Submit one blocker per worker and wait until each worker holds one. */
static void block_workers(cf_executor *ex, int n, cf_future **b)
{
    sem_init(&blockers_go, 0, 0);
    atomic_store(&blockers_in, 0);
    for (int i = 0; i < n; i++) assert_int_equal(cf_submit(ex, blocker_task, NULL, 0, &b[i]), 0);
    for (int i = 0; i < HANG_S * 1000 && atomic_load(&blockers_in) < n; i++) usleep(1000);
    assert_int_equal(atomic_load(&blockers_in), n);
}

static void release_workers(int n, cf_future **b)
{
    for (int i = 0; i < n; i++) sem_post(&blockers_go);
    for (int i = 0; i < n; i++) {
        assert_int_equal(cf_future_result(b[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(b[i]);
    }
    sem_destroy(&blockers_go);
}

/* Wait until someone sleeps on the gate's futex word: a worker that
 * reached the bound (or, with no bound, ran out of queued work). */
static void wait_for_sleeper(cf_future *gate)
{
    for (int i = 0; i < HANG_S * 1000; i++) {
        if (atomic_load(&gate->state) & CF__SLEEPERS) return;
        usleep(1000);
    }
    fail_msg("nobody went to sleep on the gate");
}

/* ---- tasks that wait on a gate ---- */

static int gate_waiter(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    cf_future *gate = *(cf_future *const *)arg;
    enter();
    int rc = cf_future_result(gate, CF_FOREVER, NULL, NULL);
    depth--;
    return rc;
}

static cf_executor *pool_n(int n)
{
    cf_thread_pool_opts o = {.max_workers = n, .pin = CF_PIN_NONE};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    return ex;
}

/* Queue `n` gate waiters behind blocked workers, release the workers, let
 * them run into the bound, then open the gate; everything must finish. */
static void run_gate_waiters(cf_executor *ex, int workers, long n, cf_task_fn *fn)
{
    cf_future *gate = cf_test_future();
    assert_non_null(gate);
    cf_future *blk[8];
    block_workers(ex, workers, blk);
    cf_future **fs = malloc(sizeof *fs * (size_t)n);
    assert_non_null(fs);
    for (long i = 0; i < n; i++) assert_int_equal(cf_submit(ex, fn, &gate, sizeof gate, &fs[i]), 0);
    reset_counts();
    release_workers(workers, blk);
    wait_for_sleeper(gate);
    int64_t one = 1;
    assert_int_equal(cf_future_set_result(gate, &one, sizeof one), 0);
    for (long i = 0; i < n; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    free(fs);
    cf_future_release(gate);
}

/* (a) 100,000 queued tasks (scaled) that each wait on one future: the
 * waits must not nest without bound (that overflowed the stack). */
static void test_many_queued_waiters(void **state)
{
    (void)state;
    long n = (long)(100000 * cf_test_scale());
    if (n < 1000) n = 1000;
    cf_executor *ex = pool_n(2);
    run_gate_waiters(ex, 2, n, gate_waiter);
    assert_true(atomic_load(&max_depth) <= CF__HELP_DEPTH_MAX);
    assert_int_equal(atomic_load(&started), n);
    cf_executor_free(ex);
}

/* Thread-pool requests that each wait on a process-pool task: the waits
 * nest within the bound too, and everything completes. */
static int pp_square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return 1;
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

struct pp_req {
    cf_executor *pp;
    int64_t x;
};

static int pp_request(const void *arg, size_t len, cf_out *out)
{
    struct pp_req r;
    if (len != sizeof r) return 1;
    memcpy(&r, arg, sizeof r);
    enter();
    cf_future *f;
    int64_t v = -1;
    int rc = cf_submit(r.pp, pp_square, &r.x, sizeof r.x, &f);
    if (!rc) {
        rc = cf_future_result_i64(f, CF_FOREVER, &v);
        cf_future_release(f);
    }
    depth--;
    return rc ? 1 : cf_out_i64(out, v);
}

static void test_requests_waiting_on_process_pool(void **state)
{
    (void)state;
    long n = (long)(20000 * cf_test_scale());
    if (n < 500) n = 500;
    cf_executor *pp;
    assert_int_equal(cf_process_pool_new(&pp, &(cf_process_pool_opts){.max_workers = 1}), 0);
    assert_non_null(pp);
    cf_executor *ex = pool_n(2);
    cf_future *blk[2];
    block_workers(ex, 2, blk); /* queue every request before any runs */
    cf_future **fs = malloc(sizeof *fs * (size_t)n);
    assert_non_null(fs);
    for (long i = 0; i < n; i++) {
        struct pp_req r = {pp, i % 1000};
        assert_int_equal(cf_submit(ex, pp_request, &r, sizeof r, &fs[i]), 0);
    }
    reset_counts();
    release_workers(2, blk);
    for (long i = 0; i < n; i++) {
        int64_t v = -1;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &v), 0);
        assert_int_equal(v, (i % 1000) * (i % 1000));
        cf_future_release(fs[i]);
    }
    free(fs);
    print_message("%ld requests, max nesting depth %d (cap %d)\n", n, atomic_load(&max_depth),
                  CF__HELP_DEPTH_MAX);
    assert_true(atomic_load(&max_depth) <= CF__HELP_DEPTH_MAX);
    cf_executor_free(ex);
    cf_executor_free(pp);
}

/* (c) The depth cap holds exactly: one worker, more waiters than the cap.
 * It nests unrelated waiting tasks up to the cap, then sleeps. */
static void test_depth_cap(void **state)
{
    (void)state;
    cf_executor *ex = pool_n(1);
    run_gate_waiters(ex, 1, 4 * CF__HELP_DEPTH_MAX, gate_waiter);
    print_message("max nesting depth %d (cap %d)\n", atomic_load(&max_depth), CF__HELP_DEPTH_MAX);
    assert_int_equal(atomic_load(&max_depth), CF__HELP_DEPTH_MAX);
    cf_executor_free(ex);
}

/* (c) The stack reserve holds: tasks with large frames stop nesting when
 * the stack left below the waiting frame falls under the reserve, well
 * before the depth cap (without the reserve they overflowed it). */
#define BIG_FRAME (512 * 1024)
static _Atomic uintptr_t min_left = UINTPTR_MAX;

static uintptr_t stack_lo(void)
{
    pthread_attr_t a;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0) return 0;
    pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_destroy(&a);
    return (uintptr_t)lo;
}

static int __attribute__((noinline)) big_frame_waiter(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    volatile char buf[BIG_FRAME];
    for (size_t i = 0; i < sizeof buf; i += 4096) buf[i] = (char)i;
    uintptr_t lo = stack_lo(), at = (uintptr_t)&buf[0];
    if (lo && at > lo) { /* on the thread's stack (not a sanitizer's fake stack) */
        uintptr_t left = at - lo, m = atomic_load(&min_left);
        while (left < m && !atomic_compare_exchange_weak(&min_left, &m, left))
            ;
    }
    cf_future *gate = *(cf_future *const *)arg;
    enter();
    int rc = cf_future_result(gate, CF_FOREVER, NULL, NULL);
    depth--;
    return rc + buf[4096];
}

static void test_stack_reserve(void **state)
{
    (void)state;
    cf_executor *ex = pool_n(1);
    atomic_store(&min_left, UINTPTR_MAX);
    run_gate_waiters(ex, 1, 2 * CF__HELP_DEPTH_MAX, big_frame_waiter);
    uintptr_t left = atomic_load(&min_left);
    print_message("max nesting depth %d with %d KiB frames; least stack left %lu KiB\n",
                  atomic_load(&max_depth), BIG_FRAME / 1024,
                  left == UINTPTR_MAX ? 0ul : (unsigned long)(left / 1024));
    assert_true(atomic_load(&max_depth) <= CF__HELP_DEPTH_MAX);
    if (left != UINTPTR_MAX) /* frames on the real stack: the reserve stopped it */
        assert_true(atomic_load(&max_depth) < CF__HELP_DEPTH_MAX);
    cf_executor_free(ex);
}

/* ---- (b) fork-join still completes ---- */

struct fj {
    cf_executor *ex;
    int64_t n;
};

static int fib_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    struct fj a;
    memcpy(&a, arg, sizeof a);
    if (a.n < 2) return cf_out_i64(out, a.n);
    struct fj l = {a.ex, a.n - 1}, r = {a.ex, a.n - 2};
    cf_future *fl, *fr;
    if (cf_submit(a.ex, fib_task, &l, sizeof l, &fl)) return 1;
    if (cf_submit(a.ex, fib_task, &r, sizeof r, &fr)) return 1;
    int64_t x = 0, y = 0;
    int rc = cf_future_result_i64(fl, CF_FOREVER, &x) | cf_future_result_i64(fr, CF_FOREVER, &y);
    cf_future_release(fl);
    cf_future_release(fr);
    return rc ? 1 : cf_out_i64(out, x + y);
}

static void test_fib_two_workers(void **state)
{
    (void)state;
    cf_executor *ex = pool_n(2);
    struct fj a = {ex, 20};
    cf_future *f;
    assert_int_equal(cf_submit(ex, fib_task, &a, sizeof a, &f), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 6765);
    cf_future_release(f);
    cf_executor_free(ex);
}

/* A chain of nested waits deeper than the cap, on ONE worker: each link
 * submits the next and waits for it (through result(), or through
 * cf_wait(FIRST_COMPLETED) on every other link, which waits on a trigger
 * future rather than on the child itself). Past the cap the worker still
 * runs its own children, so the chain completes. */
static int chain_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    struct fj a;
    memcpy(&a, arg, sizeof a);
    enter();
    int rc = 0;
    int64_t v = 0;
    if (a.n > 0) {
        struct fj next = {a.ex, a.n - 1};
        cf_future *f;
        rc = cf_submit(a.ex, chain_task, &next, sizeof next, &f);
        if (!rc) {
            if (a.n % 2) {
                cf_future *fs[1] = {f};
                rc = cf_wait(fs, 1, CF_FIRST_COMPLETED, CF_FOREVER, NULL);
            }
            if (!rc) rc = cf_future_result_i64(f, CF_FOREVER, &v);
            cf_future_release(f);
        }
    }
    depth--;
    return rc ? 1 : cf_out_i64(out, v + 1);
}

static void test_chain_deeper_than_cap_one_worker(void **state)
{
    (void)state;
    reset_counts();
    cf_executor *ex = pool_n(1);
    int64_t links = 4 * CF__HELP_DEPTH_MAX;
    struct fj a = {ex, links};
    cf_future *f;
    assert_int_equal(cf_submit(ex, chain_task, &a, sizeof a, &f), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, links + 1);
    assert_int_equal(atomic_load(&max_depth), links + 1); /* all on one stack */
    cf_future_release(f);
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv); /* run one case: test_x <name> */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_queued_waiters),
        cmocka_unit_test(test_requests_waiting_on_process_pool),
        cmocka_unit_test(test_depth_cap),
        cmocka_unit_test(test_stack_reserve),
        cmocka_unit_test(test_fib_two_workers),
        cmocka_unit_test(test_chain_deeper_than_cap_one_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
