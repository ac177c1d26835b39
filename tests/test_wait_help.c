/* A thread outside the pool that waits runs the tasks it waits for
 * (SEMANTICS 22c): cf_future_result, cf_wait and cf_as_completed run a
 * task nobody has started in the waiting thread while every worker is
 * busy, without a deadline only, never on a pool with an initializer or
 * with CFUTURES_WAIT_HELP=0, nested at most CF__HELP_DEPTH_MAX deep; and
 * the forced interleaving where the waiter has decided to run a task that
 * a worker runs (and the pool is freed) before the waiter's start.
 *
 * The single worker is held by a "gate" task. A watchdog opens the gate
 * after a while, so that code which does not help still finishes (its
 * tasks then ran on the worker, and the assertions say so): the watchdog
 * is a hang breaker, not a timing assertion. */
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
#include "thread/task.h"
#include "thread/thread_pool.h"
#include "support/test_env.h"

static _Atomic int gate;       /* 1: the gate task may return */
static _Atomic int gate_in;    /* the gate task has started */
static _Atomic long ran_main;  /* tasks run by the test's main thread */
static _Atomic long ran_other; /* tasks run elsewhere (a worker) */
static pthread_t main_thread;

static int gate_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_store(&gate_in, 1);
    while (!atomic_load(&gate)) sched_yield();
    return 0;
}

static void note_thread(void)
{
    if (pthread_equal(pthread_self(), main_thread)) atomic_fetch_add(&ran_main, 1);
    else atomic_fetch_add(&ran_other, 1);
}

static int ident_task(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    note_thread();
    return cf_out_i64(out, v);
}

/* Opens the gate after `ms` milliseconds (a hang breaker); leaves at once
 * when the test opened it. */
static void *watchdog(void *arg)
{
    long ms = (long)(intptr_t)arg;
    for (long i = 0; i < ms && !atomic_load(&gate); i++) usleep(1000);
    atomic_store(&gate, 1);
    return NULL;
}

/* A one-worker pool whose worker is held by the gate (its start waited
 * for), and a watchdog that opens the gate after ms (dog_fn if not
 * NULL). */
static cf_executor *held_pool(const cf_thread_pool_opts *o, long ms, void *(*dog_fn)(void *),
                              pthread_t *dog, cf_future **g)
{
    main_thread = pthread_self();
    atomic_store(&gate, 0);
    atomic_store(&gate_in, 0);
    atomic_store(&ran_main, 0);
    atomic_store(&ran_other, 0);
    cf_thread_pool_opts one = o ? *o : (cf_thread_pool_opts)CF_THREAD_POOL_OPTS_INIT;
    one.max_workers = 1;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &one), 0);
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, g), 0);
    while (!atomic_load(&gate_in)) sched_yield();
    assert_int_equal(pthread_create(dog, NULL, dog_fn ? dog_fn : watchdog, (void *)(intptr_t)ms),
                     0);
    return ex;
}

static void release_pool(cf_executor *ex, pthread_t dog, cf_future *g)
{
    atomic_store(&gate, 1);
    pthread_join(dog, NULL);
    assert_int_equal(cf_future_result(g, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g);
    cf_executor_free(ex);
}

static cf_future *submit_ident(cf_executor *ex, int64_t v)
{
    cf_future *f;
    assert_int_equal(cf_submit(ex, ident_task, &v, sizeof v, &f), 0);
    return f;
}

#define DOG_MS 3000 /* long enough that a helping waiter never meets it */

static void test_result_runs_awaited(void **state)
{
    (void)state;
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(NULL, DOG_MS, NULL, &dog, &g);
    cf_future *f = submit_ident(ex, 7);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(atomic_load(&ran_main), 1); /* here, while the worker was held */
    assert_false(atomic_load(&gate));            /* before the watchdog */
    cf_future_release(f);
    release_pool(ex, dog, g);
}

enum { N = 40 };

static void test_wait_all_and_first_run_awaited(void **state)
{
    (void)state;
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(NULL, DOG_MS, NULL, &dog, &g);
    cf_future *fs[N];
    for (int i = 0; i < N; i++) fs[i] = submit_ident(ex, i);
    size_t done = 0;
    /* FIRST_COMPLETED runs one (the last), ALL_COMPLETED the rest; more
     * than 16 futures take the one-pass path. */
    assert_int_equal(cf_wait(fs, N, CF_FIRST_COMPLETED, CF_FOREVER, &done), 0);
    assert_int_equal(done, 1);
    assert_int_equal(atomic_load(&ran_main), 1);
    assert_int_equal(cf_wait(fs, N, CF_ALL_COMPLETED, CF_FOREVER, &done), 0);
    assert_int_equal(done, N);
    assert_int_equal(atomic_load(&ran_main), N);
    assert_false(atomic_load(&gate));
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    release_pool(ex, dog, g);
}

static void test_as_completed_runs_awaited(void **state)
{
    (void)state;
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(NULL, DOG_MS, NULL, &dog, &g);
    cf_future *fs[N + 1];
    for (int i = 0; i < N; i++) fs[i] = submit_ident(ex, i);
    fs[N] = fs[0]; /* a duplicate: yielded once */
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, N + 1, CF_FOREVER, &it), 0);
    unsigned char seen[N] = {0};
    cf_future *f;
    int count = 0;
    while (cf_as_completed_next(it, &f) == 0) {
        int64_t v = -1;
        assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
        assert_in_range(v, 0, N - 1);
        assert_false(seen[v]);
        seen[v] = 1;
        count++;
    }
    assert_int_equal(count, N);
    assert_int_equal(atomic_load(&ran_main), N);
    assert_false(atomic_load(&gate));
    cf_as_completed_free(it);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
    release_pool(ex, dog, g);
}

/* Where the waiter must not run anything: the task runs on the worker,
 * once the watchdog opens the gate. */
static void expect_worker_runs(const cf_thread_pool_opts *o, double timeout)
{
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(o, 200, NULL, &dog, &g);
    cf_future *f = submit_ident(ex, 5);
    int64_t v = 0;
    int rc;
    while ((rc = cf_future_result_i64(f, timeout, &v)) == CF_ETIMEDOUT)
        ; /* timed waits run nothing: again until the watchdog frees the worker */
    assert_int_equal(rc, 0);
    assert_int_equal(v, 5);
    assert_int_equal(atomic_load(&ran_main), 0);
    assert_int_equal(atomic_load(&ran_other), 1);
    cf_future_release(f);
    release_pool(ex, dog, g);
}

static int init_ok(void *arg)
{
    (void)arg;
    return 0;
}

static void test_no_run_with_initializer_timeout_or_opt_out(void **state)
{
    (void)state;
    cf_thread_pool_opts o = CF_THREAD_POOL_OPTS_INIT;
    o.initializer = init_ok;
    expect_worker_runs(&o, CF_FOREVER);
    expect_worker_runs(NULL, 0.05); /* a deadline: the waiter never runs a task */
    assert_int_equal(setenv("CFUTURES_WAIT_HELP", "0", 1), 0);
    expect_worker_runs(NULL, CF_FOREVER);
    unsetenv("CFUTURES_WAIT_HELP");
}

/* ---- nesting bound ---- */

static cf_executor *chain_ex;
static _Thread_local int chain_depth;
static _Atomic int chain_max_main;

static int chain_task(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    (void)len;
    memcpy(&n, arg, sizeof n);
    chain_depth++;
    if (pthread_equal(pthread_self(), main_thread) && chain_depth > atomic_load(&chain_max_main))
        atomic_store(&chain_max_main, chain_depth);
    int64_t v = 0;
    int rc = 0;
    if (n > 0) {
        int64_t m = n - 1;
        cf_future *f;
        rc = cf_submit(chain_ex, chain_task, &m, sizeof m, &f);
        if (!rc) {
            rc = cf_future_result_i64(f, CF_FOREVER, &v);
            cf_future_release(f);
        }
    }
    chain_depth--;
    return rc ? rc : cf_out_i64(out, v + 1);
}

/* Opens the gate once the main thread has nested CF__HELP_DEPTH_MAX runs
 * (it cannot go deeper, and waits for the worker), or after DOG_MS. */
static void *depth_dog(void *arg)
{
    (void)arg;
    for (int i = 0; i < DOG_MS && atomic_load(&chain_max_main) < CF__HELP_DEPTH_MAX; i++)
        usleep(1000);
    atomic_store(&gate, 1);
    return NULL;
}

static void test_nesting_bounded(void **state)
{
    (void)state;
    pthread_t dog;
    cf_future *g;
    atomic_store(&chain_max_main, 0);
    cf_executor *ex = held_pool(NULL, 0, depth_dog, &dog, &g);
    chain_ex = ex;
    int64_t links = 2 * CF__HELP_DEPTH_MAX, v = 0;
    cf_future *f;
    assert_int_equal(cf_submit(ex, chain_task, &links, sizeof links, &f), 0);
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, links + 1);
    assert_int_equal(atomic_load(&chain_max_main), CF__HELP_DEPTH_MAX);
    cf_future_release(f);
    release_pool(ex, dog, g);
}

/* ---- a task run by a waiting thread frees its own pool ---- */

static int free_own_pool_task(const void *arg, size_t len, cf_out *out)
{
    cf_executor *ex;
    (void)len;
    memcpy(&ex, arg, sizeof ex);
    note_thread();
    atomic_store(&gate, 1); /* the worker must be able to leave */
    cf_executor_free(ex);   /* joins the worker; the pool goes when this run ends */
    return cf_out_i64(out, 1);
}

static void test_task_run_outside_frees_its_pool(void **state)
{
    (void)state;
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(NULL, DOG_MS, NULL, &dog, &g);
    cf_future *f;
    assert_int_equal(cf_submit(ex, free_own_pool_task, &ex, sizeof ex, &f), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(atomic_load(&ran_main), 1);
    pthread_join(dog, NULL);
    assert_int_equal(cf_future_result(g, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g);
    cf_future_release(f);
}

/* ---- the forced interleaving ---- */

static cf_executor *race_ex;
static pthread_t freer;
static _Atomic int freed;

static void *free_pool(void *arg)
{
    (void)arg;
    cf_executor_free(race_ex); /* waits for the waiter's counted run */
    atomic_store(&freed, 1);
    return NULL;
}

static _Atomic int race_point;

/* In the waiter, at race_point (after it saw f PENDING, or after it
 * counted its run and just before its start CAS): let the worker run f to
 * the end, then free the pool from another thread. */
static void worker_takes_it(cf_future *f, int point)
{
    if (point != atomic_load(&race_point)) {
        /* Held at LOOKED, the waiter must not get as far as its start: if
         * it does, it counted a run the joiner never saw; the pool is
         * then freed under it. */
        for (int i = 0; i < 500 && !atomic_load(&freed); i++) usleep(1000);
        assert_false(atomic_load(&freed));
        return;
    }
    if (point == CF__TEST_RA_START) atomic_store(&cf__test_run_awaited_hook, NULL);
    atomic_store(&gate, 1);
    while (!cf_future_done(f)) sched_yield();
    assert_int_equal(pthread_create(&freer, NULL, free_pool, NULL), 0);
    /* The free cannot finish while we look at the pool or our run is
     * counted: give it time to (it would, without the count, and the
     * waiter would then touch a freed pool), then go on: the second look
     * or the start CAS fails. */
    for (int i = 0; i < 500 && !atomic_load(&freed); i++) usleep(1000);
    assert_false(atomic_load(&freed));
}

static void waiter_loses_to_worker_then_pool_freed(int point)
{
    atomic_store(&race_point, point);
    pthread_t dog;
    cf_future *g;
    cf_executor *ex = held_pool(NULL, DOG_MS, NULL, &dog, &g);
    race_ex = ex;
    atomic_store(&freed, 0);
    cf_future *f = submit_ident(ex, 9);
    atomic_store(&cf__test_run_awaited_hook, worker_takes_it);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 9);
    atomic_store(&cf__test_run_awaited_hook, NULL);
    assert_int_equal(atomic_load(&ran_main), 0); /* the worker won: it ran once */
    assert_int_equal(atomic_load(&ran_other), 1);
    pthread_join(freer, NULL); /* the pool is gone: the waiter touched nothing of it */
    assert_true(atomic_load(&freed));
    pthread_join(dog, NULL);
    assert_int_equal(cf_future_result(g, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g);
    cf_future_release(f);
}

static void test_waiter_loses_to_worker_then_pool_freed(void **state)
{
    (void)state;
    waiter_loses_to_worker_then_pool_freed(CF__TEST_RA_START);
    waiter_loses_to_worker_then_pool_freed(CF__TEST_RA_LOOKED);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_runs_awaited),
        cmocka_unit_test(test_wait_all_and_first_run_awaited),
        cmocka_unit_test(test_as_completed_runs_awaited),
        cmocka_unit_test(test_no_run_with_initializer_timeout_or_opt_out),
        cmocka_unit_test(test_nesting_bounded),
        cmocka_unit_test(test_task_run_outside_frees_its_pool),
        cmocka_unit_test(test_waiter_loses_to_worker_then_pool_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
