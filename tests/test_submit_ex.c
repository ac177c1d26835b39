/* cf_submit_ex (a context pointer for the task, a done-callback in the
 * same call, fire and forget) and the cooperative cancel request
 * (cf_out_cancel_requested), on the thread pool and the process pool.
 *
 * Windows are held open with gates in a MAP_SHARED page made before any
 * pool (process-pool workers share it): a task that must be running when
 * something happens waits at a gate until the test has done it. A 10 s
 * limit on every wait is a hang detector, not a timing assertion. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_env.h"

#define HANG_S 10

struct shared {
    _Atomic int started;
    _Atomic int gate;
    _Atomic int saw_request;
};
static struct shared *sh;

static void wait_flag(_Atomic int *x, int want)
{
    for (int i = 0; i < HANG_S * 10000 && atomic_load(x) < want; i++) usleep(100);
    assert_true(atomic_load(x) >= want);
}

static void shared_reset(void)
{
    atomic_store(&sh->started, 0);
    atomic_store(&sh->gate, 0);
    atomic_store(&sh->saw_request, 0);
}

static cf_executor *make_pool(bool processes, int workers)
{
    cf_executor *ex;
    if (processes) {
        cf_process_pool_opts o = CF_PROCESS_POOL_OPTS_INIT;
        o.max_workers = workers;
        assert_int_equal(cf_process_pool_new(&ex, &o), 0);
    } else {
        cf_thread_pool_opts o = CF_THREAD_POOL_OPTS_INIT;
        o.max_workers = workers;
        o.pin = CF_PIN_NONE;
        assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    }
    return ex;
}

/* ---- the context pointer ---- */

/* Returns the sum of its argument bytes plus *(int64_t *)context. */
static int ctx_sum(const void *arg, size_t len, cf_out *out)
{
    const int64_t *ctx = cf_out_context(out);
    int64_t sum = ctx ? *ctx : -1000000;
    const unsigned char *b = arg;
    for (size_t i = 0; i < len; i++) sum += b[i];
    return cf_out_i64(out, sum);
}

static int64_t before_pool = 40; /* set before the pools are made */

static void context_reaches_task(bool processes)
{
    before_pool = 40;
    cf_executor *ex = make_pool(processes, 2);
    before_pool = 41; /* a process pool's workers still see 40 */
    static const size_t lens[] = {0, 1, 8, 16, 17, 100, 300, 5000};
    unsigned char buf[5000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 7);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        int64_t want = processes ? 40 : 41;
        for (size_t i = 0; i < lens[k]; i++) want += buf[i];
        cf_submit_opts o = CF_SUBMIT_OPTS_INIT;
        o.context = &before_pool;
        cf_future *f;
        assert_int_equal(cf_submit_ex(ex, ctx_sum, buf, lens[k], &o, &f), 0);
        int64_t v = 0;
        assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
        assert_int_equal(v, want);
        cf_future_release(f);
    }
    /* No context: NULL, with cf_submit and with cf_submit_ex. */
    cf_future *f;
    int64_t v = 0;
    assert_int_equal(cf_submit(ex, ctx_sum, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
    assert_int_equal(v, -1000000);
    cf_future_release(f);
    assert_int_equal(cf_submit_ex(ex, ctx_sum, "\x01", 1, NULL, &f), 0);
    assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
    assert_int_equal(v, -1000000 + 1);
    cf_future_release(f);
    cf_executor_free(ex);
}

static void context_threads(void **state)
{
    (void)state;
    context_reaches_task(false);
}

static void context_processes(void **state)
{
    (void)state;
    context_reaches_task(true);
}

/* ---- submit with a callback ---- */

static int square(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    int64_t x;
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

static int gated(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    atomic_fetch_add(&sh->started, 1);
    while (!atomic_load(&sh->gate)) sched_yield();
    return cf_out_i64(out, 7);
}

struct cb_log {
    _Atomic int calls;
    _Atomic int64_t sum;
    _Atomic int cancelled;
    _Atomic int on_submitter;
    pthread_t submitter;
};

static void on_done(cf_future *f, void *ud)
{
    struct cb_log *l = ud;
    assert_true(cf_future_done(f));
    if (pthread_equal(pthread_self(), l->submitter)) atomic_fetch_add(&l->on_submitter, 1);
    int64_t v;
    if (cf_future_cancelled(f)) atomic_fetch_add(&l->cancelled, 1);
    else if (cf_future_result_i64(f, CF_POLL, &v) == 0) atomic_fetch_add(&l->sum, v);
    atomic_fetch_add(&l->calls, 1);
}

static void fire_and_forget(bool processes)
{
    cf_executor *ex = make_pool(processes, 2);
    struct cb_log l = {.submitter = pthread_self()};
    int n = (int)(2000 * cf_test_scale()) + 10;
    int64_t want = 0;
    cf_submit_opts o = CF_SUBMIT_OPTS_INIT;
    o.on_done = on_done;
    o.on_done_arg = &l;
    for (int64_t i = 0; i < n; i++) {
        want += i * i;
        assert_int_equal(cf_submit_ex(ex, square, &i, sizeof i, &o, NULL), 0);
    }
    wait_flag(&l.calls, n);
    assert_int_equal(atomic_load(&l.sum), want);
    assert_int_equal(atomic_load(&l.cancelled), 0);
    /* Leak checkers (ASan) tell whether the futures were released. */
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&l.calls), n);
}

static void callback_threads(void **state)
{
    (void)state;
    fire_and_forget(false);
}

static void callback_processes(void **state)
{
    (void)state;
    fire_and_forget(true);
}

/* The task is held running when the callback is attached, so it finishes
 * later, in a worker (thread pool) or the collector (process pool), never
 * in the submitting thread; with out, the caller keeps a reference. */
static void callback_thread_of_completion(bool processes)
{
    shared_reset();
    cf_executor *ex = make_pool(processes, 1);
    struct cb_log l = {.submitter = pthread_self()};
    cf_submit_opts o = CF_SUBMIT_OPTS_INIT;
    o.on_done = on_done;
    o.on_done_arg = &l;
    cf_future *f;
    assert_int_equal(cf_submit_ex(ex, gated, NULL, 0, &o, &f), 0);
    wait_flag(&sh->started, 1);
    assert_int_equal(atomic_load(&l.calls), 0);
    atomic_store(&sh->gate, 1);
    /* Not through cf_future_result: a thread waiting there on a process
     * pool's future collects results itself (and runs their callbacks). */
    wait_flag(&l.calls, 1);
    assert_int_equal(atomic_load(&l.on_submitter), 0);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
    assert_int_equal(v, 7);
    assert_true(cf_future_done(f)); /* our reference is still good */
    cf_future_release(f);
    cf_executor_free(ex);
}

static void callback_thread(void **state)
{
    (void)state;
    callback_thread_of_completion(false);
    callback_thread_of_completion(true);
}

/* Shutdown with cancel_futures: every callback of a task that never ran
 * runs once, with a cancelled future, in the thread that shuts down. */
static void callback_on_shutdown(bool processes)
{
    shared_reset();
    cf_executor *ex = make_pool(processes, 1);
    struct cb_log l = {.submitter = pthread_self()};
    cf_submit_opts o = CF_SUBMIT_OPTS_INIT;
    o.on_done = on_done;
    o.on_done_arg = &l;
    assert_int_equal(cf_submit_ex(ex, gated, NULL, 0, &o, NULL), 0);
    wait_flag(&sh->started, 1); /* the only worker is held */
    int n = 50;
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(cf_submit_ex(ex, square, &i, sizeof i, &o, NULL), 0);
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    assert_int_equal(atomic_load(&l.cancelled), n);
    assert_int_equal(atomic_load(&l.on_submitter), n);
    atomic_store(&sh->gate, 1);
    wait_flag(&l.calls, n + 1);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&l.calls), n + 1);
    assert_int_equal(atomic_load(&l.sum), 7);
}

static void callback_shutdown(void **state)
{
    (void)state;
    callback_on_shutdown(false);
    callback_on_shutdown(true);
}

static void never_called(cf_future *f, void *ud)
{
    (void)f;
    (void)ud;
    fail_msg("the callback of a failed submit ran");
}

static void submit_ex_bad_input(void **state)
{
    (void)state;
    cf_executor *ex = make_pool(false, 1);
    cf_submit_opts o = CF_SUBMIT_OPTS_INIT;
    o.on_done = never_called;
    o.reserved[4] = 1;
    int64_t x = 3;
    cf_future *f = NULL;
    assert_int_equal(cf_submit_ex(ex, square, &x, sizeof x, &o, &f), CF_EINVAL);
    assert_null(f);
    o.reserved[4] = 0;
    assert_int_equal(cf_submit_ex(NULL, square, &x, sizeof x, &o, &f), CF_EINVAL);
    assert_int_equal(cf_submit_ex(ex, NULL, &x, sizeof x, &o, &f), CF_EINVAL);
    assert_int_equal(cf_submit_ex(ex, square, NULL, 8, &o, &f), CF_EINVAL);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    assert_int_equal(cf_submit_ex(ex, square, &x, sizeof x, &o, NULL), CF_ESHUTDOWN);
    o.context = &x;
    assert_int_equal(cf_submit_ex(ex, square, &x, sizeof x, &o, NULL), CF_ESHUTDOWN);
    cf_executor_free(ex);
}

/* ---- the cancel request ---- */

/* Starts, waits at the gate, then reports whether cancel was requested. */
static int poll_cancel(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    bool early = cf_out_cancel_requested(out);
    atomic_fetch_add(&sh->started, 1);
    while (!atomic_load(&sh->gate)) sched_yield();
    bool req = cf_out_cancel_requested(out);
    atomic_store(&sh->saw_request, req ? 1 : 0);
    if (early) return cf_out_error(out, 99, "requested before cancel was called");
    return req ? cf_out_error(out, 42, "stopped on request") : cf_out_i64(out, 1);
}

static void cancel_request(bool processes)
{
    cf_executor *ex = make_pool(processes, 1);
    /* Requested: cancel() while the task is held running. */
    shared_reset();
    cf_future *f;
    assert_int_equal(cf_submit(ex, poll_cancel, NULL, 0, &f), 0);
    wait_flag(&sh->started, 1);
    assert_false(cf_future_cancel(f)); /* running: not cancelled, only asked */
    assert_false(cf_future_cancelled(f));
    atomic_store(&sh->gate, 1);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, HANG_S, &code, &msg), 0);
    assert_int_equal(code, 42);
    assert_int_equal(atomic_load(&sh->saw_request), 1);
    assert_false(cf_future_cancel(f)); /* finished: nothing to ask */
    cf_future_release(f);

    /* Not requested: the next task on the same worker hears nothing. */
    shared_reset();
    assert_int_equal(cf_submit(ex, poll_cancel, NULL, 0, &f), 0);
    wait_flag(&sh->started, 1);
    atomic_store(&sh->gate, 1);
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(atomic_load(&sh->saw_request), 0);
    cf_future_release(f);

    /* A pending task that is cancelled never runs and requests nothing. */
    shared_reset();
    cf_future *g;
    assert_int_equal(cf_submit(ex, poll_cancel, NULL, 0, &f), 0);
    wait_flag(&sh->started, 1);
    assert_int_equal(cf_submit(ex, poll_cancel, NULL, 0, &g), 0);
    assert_true(cf_future_cancel(g));
    atomic_store(&sh->gate, 1);
    assert_int_equal(cf_future_result_i64(f, HANG_S, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(cf_future_result_i64(g, HANG_S, &v), CF_ECANCELLED);
    cf_future_release(f);
    cf_future_release(g);
    cf_executor_free(ex);
}

static void cancel_request_threads(void **state)
{
    (void)state;
    cancel_request(false);
}

static void cancel_request_processes(void **state)
{
    (void)state;
    cancel_request(true);
}

static void outside_task_never_requested(void **state)
{
    (void)state;
    assert_false(cf_out_cancel_requested(NULL));
    assert_null(cf_out_context(NULL));
}

static int setup(void **state)
{
    (void)state;
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return sh == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    munmap(sh, 4096);
    return 0;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(context_threads),          cmocka_unit_test(context_processes),
        cmocka_unit_test(callback_threads),         cmocka_unit_test(callback_processes),
        cmocka_unit_test(callback_thread),          cmocka_unit_test(callback_shutdown),
        cmocka_unit_test(submit_ex_bad_input),      cmocka_unit_test(cancel_request_threads),
        cmocka_unit_test(cancel_request_processes), cmocka_unit_test(outside_task_never_requested),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
