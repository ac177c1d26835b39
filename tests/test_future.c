/* Futures: SEMANTICS 1-10 (states, transitions, cancel, result/exception
 * with timeouts, callbacks, references), driven by cf_future_new/set_* and
 * cf__future_run from threads of our own (no executor). */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sys/debug_checks.h"
#include "cfutures.h"
#include "support/test_future.h"
#include "core/future.h"
#include "support/test_env.h"

/* ---- helpers ---- */

static uint32_t word(cf_future *f)
{
    return atomic_load_explicit(&f->state, memory_order_acquire);
}

/* Until some thread sleeps (or is about to) in result() on f. */
static void wait_for_sleeper(cf_future *f)
{
    while (!(word(f) & CF__SLEEPERS)) sched_yield();
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

struct waiter_arg {
    cf_future *f;
    double timeout;
    int rc;
    int64_t v;
    _Atomic int returned;
};

static void *result_thread(void *p)
{
    struct waiter_arg *a = p;
    a->rc = cf_future_result_i64(a->f, a->timeout, &a->v);
    atomic_store_explicit(&a->returned, 1, memory_order_release);
    return NULL;
}

/* ---- 1. states ---- */

static void states_agree(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    assert_non_null(f);
    assert_false(cf_future_running(f));
    assert_false(cf_future_done(f));
    assert_false(cf_future_cancelled(f));

    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    assert_true(cf_future_running(f));
    assert_false(cf_future_done(f));

    int64_t v = 42;
    assert_int_equal(cf_future_set_result(f, &v, sizeof v), 0);
    assert_false(cf_future_running(f));
    assert_true(cf_future_done(f));
    assert_false(cf_future_cancelled(f));
    cf_future_release(f);

    cf_future *c = cf_test_future();
    assert_true(cf_future_cancel(c));
    assert_true(cf_future_cancelled(c));
    assert_true(cf_future_done(c)); /* a cancelled future is done */
    assert_false(cf_future_running(c));
    cf_future_release(c);

    cf_future *e = cf_test_future();
    assert_int_equal(cf_future_set_exception(e, 7, "boom"), 0);
    assert_true(cf_future_done(e));
    assert_false(cf_future_cancelled(e));
    cf_future_release(e);
}

/* ---- 2 and 8. transitions; nothing leaves CANCELLED or FINISHED ---- */

static void transitions(void **state)
{
    (void)state;
    int64_t one = 1, two = 2, v;

    /* PENDING -> FINISHED directly, then nothing else. */
    cf_future *f = cf_test_future();
    assert_int_equal(cf_future_set_result(f, &one, sizeof one), 0);
    assert_int_equal(cf_future_set_result(f, &two, sizeof two), CF_ESTATE);
    assert_int_equal(cf_future_set_exception(f, 3, "late"), CF_ESTATE);
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ESTATE);
    assert_false(cf_future_cancel(f));
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
    assert_int_equal(v, 1); /* the first outcome is kept */
    assert_int_equal(cf__future_fail_broken(f, "x"), CF_ESTATE);
    cf_future_release(f);

    /* RUNNING -> FINISHED; RUNNING cannot be cancelled or restarted. */
    f = cf_test_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ESTATE);
    assert_false(cf_future_cancel(f));
    assert_false(cf_future_cancelled(f));
    assert_int_equal(cf_future_set_exception(f, 5, NULL), 0);
    assert_int_equal(cf_future_set_result(f, &two, sizeof two), CF_ESTATE);
    int code = 0;
    const char *msg = "unset";
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 5);
    assert_null(msg);
    cf_future_release(f);

    /* RUNNING -> FINISHED as broken by the executor (cf_future_set_broken):
     * the result is CF_EBROKEN, the code CF_EBROKEN, the message a copy. */
    f = cf_test_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    char lost[] = "worker on host b lost";
    assert_int_equal(cf_future_set_broken(f, lost), 0);
    lost[0] = 'W';
    assert_int_equal(cf_future_set_broken(f, "again"), CF_ESTATE);
    assert_int_equal(cf_future_set_exception(f, 2, "late"), CF_ESTATE);
    assert_int_equal(cf_future_result(f, CF_POLL, NULL, NULL), CF_EBROKEN);
    code = 0;
    msg = NULL;
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, CF_EBROKEN);
    assert_string_equal(msg, "worker on host b lost");
    cf_future_release(f);
    assert_int_equal(cf_future_set_broken(NULL, "x"), CF_EINVAL);

    /* CANCELLED stays CANCELLED. */
    f = cf_test_future();
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_set_result(f, &one, sizeof one), CF_ESTATE);
    assert_int_equal(cf_future_set_exception(f, 1, "x"), CF_ESTATE);
    assert_int_equal(cf_future_set_broken(f, "x"), CF_ESTATE);
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ECANCELLED);
    assert_false(cf__future_mark_running(f));
    assert_true(cf_future_cancelled(f));
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), CF_ECANCELLED);
    cf_future_release(f);
}

/* Many threads race to complete one future: exactly one wins, and its
 * outcome is the one everybody reads. */
struct race_arg {
    cf_future *f;
    int64_t id;
    int rc;
    _Atomic int *go;
};

static void *race_thread(void *p)
{
    struct race_arg *a = p;
    while (!atomic_load_explicit(a->go, memory_order_acquire)) cf__cpu_relax();
    if (a->id % 3 == 0) a->rc = cf_future_set_exception(a->f, (int)a->id + 100, "racer");
    else if (a->id % 3 == 1) a->rc = cf_future_set_result(a->f, &a->id, sizeof a->id);
    else a->rc = cf_future_cancel(a->f) ? 0 : CF_ESTATE;
    return NULL;
}

static void racing_completers(void **state)
{
    (void)state;
    int rounds = (int)(200 * cf_test_scale());
    for (int r = 0; r < rounds; r++) {
        enum { N = 3 }; /* one of each kind: two cancels would both return true */
        cf_future *f = cf_test_future();
        _Atomic int go = 0;
        struct race_arg a[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++) {
            a[i] = (struct race_arg){.f = f, .id = i + r, .go = &go};
            t[i] = spawn(race_thread, &a[i]);
        }
        atomic_store_explicit(&go, 1, memory_order_release);
        int winners = 0, winner = -1;
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
            if (a[i].rc == 0) {
                winners++;
                winner = i;
            } else {
                assert_int_equal(a[i].rc, CF_ESTATE);
            }
        }
        assert_int_equal(winners, 1);
        int64_t v;
        int rc = cf_future_result_i64(f, CF_POLL, &v);
        switch (a[winner].id % 3) {
        case 0: {
            assert_int_equal(rc, CF_ETASK);
            int code;
            assert_int_equal(cf_future_exception(f, CF_POLL, &code, NULL), 0);
            assert_int_equal(code, a[winner].id + 100);
            break;
        }
        case 1:
            assert_int_equal(rc, 0);
            assert_int_equal(v, a[winner].id);
            break;
        default: assert_int_equal(rc, CF_ECANCELLED);
        }
        cf_future_release(f);
    }
}

/* ---- 3. cancel ---- */

static _Atomic int cb_count;

static void count_cb(cf_future *f, void *ud)
{
    (void)f;
    (void)ud;
    atomic_fetch_add_explicit(&cb_count, 1, memory_order_relaxed);
}

static void cancel_wakes_result_and_runs_callbacks_once(void **state)
{
    (void)state;
    atomic_store(&cb_count, 0);
    cf_future *f = cf_test_future();
    assert_int_equal(cf_future_add_done_callback(f, count_cb, NULL), 0);
    struct waiter_arg a[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct waiter_arg){.f = f, .timeout = CF_FOREVER};
        t[i] = spawn(result_thread, &a[i]);
    }
    wait_for_sleeper(f);
    assert_int_equal(atomic_load(&cb_count), 0);
    assert_true(cf_future_cancel(f));
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, CF_ECANCELLED);
    }
    assert_int_equal(atomic_load(&cb_count), 1);
    assert_true(cf_future_cancel(f));            /* true again ... */
    assert_int_equal(atomic_load(&cb_count), 1); /* ... with no second run */
    int code;
    assert_int_equal(cf_future_exception(f, CF_FOREVER, &code, NULL), CF_ECANCELLED);
    cf_future_release(f);
}

/* An executor's on_cancel hook runs once, after the CAS. */
static _Atomic int on_cancel_calls, on_free_calls;
static void hook_cancel(cf_future *f)
{
    assert_true(cf_future_cancelled(f));
    atomic_fetch_add(&on_cancel_calls, 1);
}
static void hook_free(cf_future *f)
{
    assert_int_equal((intptr_t)cf__future_executor(f), 0x5eed);
    atomic_fetch_add(&on_free_calls, 1);
}
static const struct cf__future_ops hooks = {.on_cancel = hook_cancel, .on_free = hook_free};

static int never_run(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    fail_msg("a cancelled task ran");
    return 0;
}

static void executor_hooks(void **state)
{
    (void)state;
    atomic_store(&on_cancel_calls, 0);
    atomic_store(&on_free_calls, 0);
    cf_future *f = cf__future_new_task(never_run, NULL, 0, &hooks, (void *)(intptr_t)0x5eed);
    assert_non_null(f);
    assert_true(cf_future_cancel(f));
    assert_true(cf_future_cancel(f));
    assert_int_equal(atomic_load(&on_cancel_calls), 1);
    assert_false(cf__future_run(f)); /* the executor must not run it */
    cf_future_release(f);            /* the executor's reference */
    assert_int_equal(atomic_load(&on_free_calls), 0);
    cf_future_release(f); /* the caller's */
    assert_int_equal(atomic_load(&on_free_calls), 1);
}

/* ---- 5. a running task is never interrupted ---- */

struct gate {
    _Atomic int started, open;
};

static int gated_task(const void *arg, size_t len, cf_out *out)
{
    struct gate *g;
    assert_int_equal(len, sizeof g);
    memcpy(&g, arg, sizeof g);
    atomic_store_explicit(&g->started, 1, memory_order_release);
    while (!atomic_load_explicit(&g->open, memory_order_acquire)) sched_yield();
    return cf_out_i64(out, 99);
}

static void *run_thread(void *p)
{
    cf_future *f = p;
    assert_true(cf__future_run(f));
    return NULL;
}

static void running_task_not_interrupted(void **state)
{
    (void)state;
    struct gate g = {0}, *gp = &g;
    cf_future *f = cf__future_new_task(gated_task, &gp, sizeof gp, NULL, NULL);
    assert_non_null(f);
    pthread_t t = spawn(run_thread, f);
    while (!atomic_load_explicit(&g.started, memory_order_acquire)) sched_yield();
    assert_true(cf_future_running(f));
    assert_false(cf_future_cancel(f));
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ESTATE);
    int64_t dummy = 0;
    /* Someone else's set_result cannot hijack a claimed run. */
    assert_int_equal(cf_future_set_result(f, &dummy, sizeof dummy), CF_ESTATE);
    atomic_store_explicit(&g.open, 1, memory_order_release);
    int64_t v;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 99);
    pthread_join(t, NULL);
    cf_future_release(f);
    cf_future_release(f);
}

/* cancel() racing with the executor's start: either the task ran and
 * cancel said false, or it never ran and cancel said true. */
static _Atomic int ran_count;
static int count_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    atomic_fetch_add_explicit(&ran_count, 1, memory_order_relaxed);
    return cf_out_i64(out, 1);
}

struct cancel_arg {
    cf_future *f;
    _Atomic int *go;
    bool cancelled;
};

static void *cancel_thread(void *p)
{
    struct cancel_arg *a = p;
    while (!atomic_load_explicit(a->go, memory_order_acquire)) cf__cpu_relax();
    a->cancelled = cf_future_cancel(a->f);
    return NULL;
}

static void cancel_races_start(void **state)
{
    (void)state;
    int rounds = (int)(300 * cf_test_scale());
    int ran_total = 0, cancelled_total = 0;
    for (int r = 0; r < rounds; r++) {
        atomic_store_explicit(&ran_count, 0, memory_order_relaxed);
        cf_future *f = cf__future_new_task(count_task, NULL, 0, NULL, NULL);
        _Atomic int go = 0;
        struct cancel_arg a = {.f = f, .go = &go};
        pthread_t t = spawn(cancel_thread, &a);
        atomic_store_explicit(&go, 1, memory_order_release);
        bool ran = cf__future_run(f);
        pthread_join(t, NULL);
        assert_true(ran != a.cancelled);
        assert_int_equal(atomic_load_explicit(&ran_count, memory_order_relaxed), ran ? 1 : 0);
        int64_t v;
        assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), ran ? 0 : CF_ECANCELLED);
        ran_total += ran;
        cancelled_total += a.cancelled;
        cf_future_release(f);
        cf_future_release(f);
    }
    assert_int_equal(ran_total + cancelled_total, rounds);
}

/* ---- 6. result() and timeouts ---- */

static void result_timeouts(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    int64_t v = -1;
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), CF_ETIMEDOUT);
    assert_int_equal(v, -1);
    /* The deadline is honoured on the monotonic clock. */
    int64_t t0 = cf__now_ns();
    assert_int_equal(cf_future_result_i64(f, 0.02, &v), CF_ETIMEDOUT);
    assert_true(cf__now_ns() - t0 >= 20000000);
    assert_int_equal(cf_future_result(f, 1e-9, NULL, NULL), CF_ETIMEDOUT);

    /* A negative timeout waits for ever. */
    struct waiter_arg a = {.f = f, .timeout = -5.0};
    pthread_t t = spawn(result_thread, &a);
    wait_for_sleeper(f);
    int64_t x = 1234;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.v, 1234);

    /* A done future answers at once whatever the timeout. */
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
    assert_int_equal(cf_future_result_i64(f, 1e300, &v), 0);
    assert_int_equal(cf_future_result_i64(f, -1e300, &v), 0);
    assert_int_equal(cf_future_result_i64(f, __builtin_inf(), &v), 0);
    assert_int_equal(v, 1234);
    cf_future_release(f);
}

static void deadline_math(void **state)
{
    (void)state;
    cf__deadline d;
    assert_int_equal(cf__deadline_from_timeout(__builtin_nan(""), &d), CF_EINVAL);
    assert_int_equal(cf__deadline_from_timeout(-1, &d), 0);
    assert_true(d == CF__NO_DEADLINE);
    assert_int_equal(cf__deadline_from_timeout(__builtin_inf(), &d), 0);
    assert_true(d == CF__NO_DEADLINE);
    assert_int_equal(cf__deadline_from_timeout(1e30, &d), 0);
    assert_true(d == CF__NO_DEADLINE);
    int64_t now = cf__now_ns();
    assert_int_equal(cf__deadline_from_timeout(0, &d), 0);
    assert_true(d >= now && d <= cf__now_ns());
    assert_int_equal(cf__deadline_from_timeout(2.5, &d), 0);
    assert_true(d - now >= 2500000000LL && d - cf__now_ns() <= 2500000000LL);
    _Atomic uint32_t w = 0;
    assert_int_equal(cf__futex_wait(&w, 0, cf__now_ns() - 1, false), CF_ETIMEDOUT);
    assert_int_equal(cf__futex_wait(&w, 1, CF__NO_DEADLINE, false), 0); /* value differs */
    assert_int_equal(cf__futex_wake(&w, 1, false), 0);                  /* nobody sleeps */
}

/* Signals (no SA_RESTART) interrupt the futex wait: result() must go back
 * to sleep, and a timed wait must still honour its deadline. */
static _Atomic int signals_seen;
static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add_explicit(&signals_seen, 1, memory_order_relaxed);
}

static void signals_and_spurious_wakeups(void **state)
{
    (void)state;
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);

    cf_future *f = cf_test_future();
    struct waiter_arg a = {.f = f, .timeout = CF_FOREVER};
    pthread_t t = spawn(result_thread, &a);
    for (int i = 0; i < 20; i++) {
        wait_for_sleeper(f);
        pthread_kill(t, SIGUSR1);
        /* A spurious wake: the word changes and changes back. */
        atomic_fetch_or(&f->state, CF__HAS_LISTENERS);
        cf__futex_wake(&f->state, INT32_MAX, false);
        atomic_fetch_and(&f->state, ~CF__HAS_LISTENERS);
        sched_yield();
        assert_int_equal(atomic_load(&a.returned), 0);
    }
    int64_t x = 5;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.v, 5);
    cf_future_release(f);

    /* A timed wait under a stream of signals still times out, not early. */
    f = cf_test_future();
    a = (struct waiter_arg){.f = f, .timeout = 0.05};
    int64_t t0 = cf__now_ns();
    t = spawn(result_thread, &a);
    while (!atomic_load_explicit(&a.returned, memory_order_acquire)) {
        pthread_kill(t, SIGUSR1);
        usleep(1000); /* pacing of the signal stream, not synchronisation */
    }
    pthread_join(t, NULL);
    assert_int_equal(a.rc, CF_ETIMEDOUT);
    assert_true(cf__now_ns() - t0 >= 50000000);
    assert_true(atomic_load(&signals_seen) > 0);
    cf_future_release(f);
    signal(SIGUSR1, SIG_DFL);
}

/* Many sleepers, one completion: all wake with the value. */
static void many_sleepers(void **state)
{
    (void)state;
    enum { N = 8 };
    cf_future *f = cf_test_future();
    struct waiter_arg a[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        a[i] = (struct waiter_arg){.f = f, .timeout = i % 2 ? CF_FOREVER : 1000.0};
        t[i] = spawn(result_thread, &a[i]);
    }
    wait_for_sleeper(f);
    int64_t x = 77;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, 0);
        assert_int_equal(a[i].v, 77);
    }
    assert_int_equal(word(f) & CF__SLEEPERS, 0);
    cf_future_release(f);
}

/* A pool worker's wait helper is used instead of sleeping. */
static _Atomic int helper_calls;
static int test_helper(void *ctx, cf_future *f, cf__deadline deadline)
{
    (void)deadline;
    assert_ptr_equal(ctx, &helper_calls);
    atomic_fetch_add(&helper_calls, 1);
    int64_t x = 11; /* "runs other work": here, the awaited task itself */
    return cf_future_set_result(f, &x, sizeof x);
}

static void wait_helper_is_called(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    cf__tls_wait_helper = test_helper;
    cf__tls_wait_helper_ctx = &helper_calls;
    int64_t v;
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), CF_ETIMEDOUT); /* a poll does not help */
    assert_int_equal(atomic_load(&helper_calls), 0);
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 11);
    assert_int_equal(atomic_load(&helper_calls), 1);
    cf__tls_wait_helper = NULL;
    cf__tls_wait_helper_ctx = NULL;
    cf_future_release(f);
}

/* ---- 6, 7. results and errors of every kind ---- */

static void results_and_exceptions(void **state)
{
    (void)state;
    const void *data;
    size_t len;
    int code;
    const char *msg;

    /* zero-length result: valid non-NULL pointer */
    cf_future *f = cf_test_future();
    assert_int_equal(cf_future_set_result(f, NULL, 0), 0);
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), 0);
    assert_non_null(data);
    assert_int_equal(len, 0);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 0);
    assert_null(msg);
    assert_int_equal(cf_future_result(f, CF_POLL, NULL, NULL), 0); /* outputs optional */
    cf_future_release(f);

    /* inline and heap-sized results, byte for byte */
    for (size_t n = 1; n < 5000; n = n * 3 + 1) {
        unsigned char *buf = malloc(n);
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 7 + n);
        f = cf_test_future();
        assert_int_equal(cf_future_set_result(f, buf, n), 0);
        memset(buf, 0, n); /* the future has its own copy */
        assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), 0);
        assert_int_equal(len, n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(((const unsigned char *)data)[i], (unsigned char)(i * 7 + n));
        free(buf);
        cf_future_release(f);
    }

    /* typed helpers */
    f = cf_test_future();
    double d = 2.5;
    assert_int_equal(cf_future_set_result(f, &d, sizeof d), 0);
    double dv;
    assert_int_equal(cf_future_result_f64(f, CF_POLL, &dv), 0);
    assert_true(dv == 2.5);
    int64_t iv;
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &iv), 0); /* same size: allowed */
    cf_future_release(f);
    f = cf_test_future();
    void *p = &d;
    assert_int_equal(cf_future_set_result(f, &p, sizeof p), 0);
    void *pv;
    assert_int_equal(cf_future_result_ptr(f, CF_POLL, &pv), 0);
    assert_ptr_equal(pv, &d);
    cf_future_release(f);
    f = cf_test_future();
    assert_int_equal(cf_future_set_result(f, "abc", 3), 0);
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &iv), CF_EINVAL);
    cf_future_release(f);

    /* task error: result -> CF_ETASK, exception -> code + message */
    f = cf_test_future();
    char m[] = "it broke";
    assert_int_equal(cf_future_set_exception(f, 42, m), 0);
    m[0] = 'X'; /* copied */
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), CF_ETASK);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 42);
    assert_string_equal(msg, "it broke");
    cf_future_release(f);

    /* broken by the executor */
    f = cf_test_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    assert_int_equal(cf__future_fail_broken(f, "worker %d died (signal %d)", 1234, 9), 0);
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), CF_EBROKEN);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, CF_EBROKEN);
    assert_string_equal(msg, "worker 1234 died (signal 9)");
    cf_future_release(f);

    /* exception(): cancelled and timed out leave the outputs alone */
    f = cf_test_future();
    code = 123;
    msg = "keep";
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), CF_ETIMEDOUT);
    assert_int_equal(cf_future_exception(f, 0.001, &code, &msg), CF_ETIMEDOUT);
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), CF_ECANCELLED);
    assert_int_equal(code, 123);
    assert_string_equal(msg, "keep");
    cf_future_release(f);
}

/* Tasks through cf__future_run and cf_out. */
static int task_square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    assert_int_equal(len, sizeof x);
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

static int task_big(const void *arg, size_t len, cf_out *out)
{
    /* the argument is large too: sum it into a large result */
    void *buf;
    if (cf_out_alloc(out, len, &buf) != 0) return CF_ENOMEM;
    unsigned char *r = buf;
    for (size_t i = 0; i < len; i++) r[i] = (unsigned char)(((const unsigned char *)arg)[i] + 1);
    return 0;
}

static int task_fail(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    cf_out_i64(out, 5); /* a result, then it raises: the result is dropped */
    return cf_out_error(out, 17, "bad input %d", 3);
}

static int task_msg_then_ok(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    cf_out_error(out, 1, "dropped");
    return cf_out_set(out, "ok", 2);
}

static int task_ignores_failure(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    void *buf;
    (void)cf_out_alloc(out, (size_t)UINT32_MAX + 1, &buf); /* too big: fails */
    return 0;
}

static int task_zero_code_error(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_error(out, 0, NULL); /* 0 becomes CF_EINVAL */
}

static cf_future *run_task(cf_task_fn *fn, const void *arg, size_t len)
{
    cf_future *f = cf__future_new_task(fn, arg, len, NULL, NULL);
    assert_non_null(f);
    assert_int_equal(atomic_load(&f->refs), 2);
    assert_true(cf__future_run(f));
    assert_false(cf__future_run(f)); /* once */
    cf_future_release(f);            /* the executor's reference */
    return f;
}

static void tasks_through_cf_out(void **state)
{
    (void)state;
    int64_t x = 12, v;
    cf_future *f = run_task(task_square, &x, sizeof x);
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
    assert_int_equal(v, 144);
    cf_future_release(f);

    size_t n = 100000;
    unsigned char *arg = malloc(n);
    for (size_t i = 0; i < n; i++) arg[i] = (unsigned char)i;
    f = run_task(task_big, arg, n);
    const void *data;
    size_t len;
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), 0);
    /* The result took the argument's place in the record: the argument's
     * buffer was freed after the run (SEMANTICS 10; LSan sees a leak). */
    assert_ptr_equal(f->p.heap.ptr, data);
    assert_int_equal(len, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(((const unsigned char *)data)[i], (unsigned char)(i + 1));
    free(arg);
    cf_future_release(f);

    int code;
    const char *msg;
    f = run_task(task_fail, NULL, 0);
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), CF_ETASK);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 17);
    assert_string_equal(msg, "bad input 3");
    cf_future_release(f);

    f = run_task(task_msg_then_ok, NULL, 0);
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), 0);
    assert_memory_equal(data, "ok", 2);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 0);
    assert_null(msg);
    cf_future_release(f);

    f = run_task(task_ignores_failure, NULL, 0);
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), CF_ETASK);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, CF_ETOOBIG);
    cf_future_release(f);

    f = run_task(task_zero_code_error, NULL, 0);
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, CF_EINVAL);
    assert_null(msg);
    cf_future_release(f);
}

/* The process-pool path: mark running, stage, complete from the stage. */
static void complete_from_out(void **state)
{
    (void)state;
    cf_future *f = cf__future_new_task(task_square, "12345678", 8, NULL, NULL);
    assert_true(cf__future_mark_running(f));
    assert_false(cf__future_mark_running(f));
    assert_false(cf_future_cancel(f));
    struct cf_out o;
    cf__out_init(&o);
    void *buf;
    assert_int_equal(cf_out_alloc(&o, 1000, &buf), 0);
    unsigned char *p = buf;
    assert_non_null(p);
    memset(p, 0xab, 1000);
    assert_int_equal(cf__future_complete_from_out(f, 0, &o), 0);
    assert_ptr_equal(o.data, o.small); /* the buffer moved */
    struct cf_out o2;
    cf__out_init(&o2);
    assert_int_equal(cf_out_set(&o2, "x", 1), 0);
    assert_int_equal(cf__future_complete_from_out(f, 0, &o2), CF_ESTATE);
    cf__out_dispose(&o2);
    const void *data;
    size_t len;
    assert_int_equal(cf_future_result(f, CF_POLL, &data, &len), 0);
    assert_int_equal(len, 1000);
    assert_int_equal(((const unsigned char *)data)[999], 0xab);
    cf_future_release(f);
    cf_future_release(f);

    f = cf_test_future();
    cf__out_init(&o);
    cf_out_error(&o, 9, "remote %s", "failure");
    assert_int_equal(cf__future_complete_from_out(f, 9, &o), 0);
    int code;
    const char *msg;
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
    assert_int_equal(code, 9);
    assert_string_equal(msg, "remote failure");
    cf_future_release(f);
}

/* cf_out on its own: replacing, growing, shrinking, self-overlap. */
static void out_staging(void **state)
{
    (void)state;
    struct cf_out o;
    cf__out_init(&o);
    assert_int_equal(cf_out_set(&o, "abc", 3), 0);
    assert_int_equal(o.len, 3);
    void *buf;
    assert_int_equal(cf_out_alloc(&o, 100, &buf), 0);
    char *big = buf;
    assert_non_null(big);
    memset(big, 'z', 100);
    big[0] = 'a';
    assert_int_equal(cf_out_set(&o, big + 1, 50), 0); /* from inside itself */
    assert_int_equal(o.len, 50);
    assert_int_equal(((char *)o.data)[0], 'z');
    assert_int_equal(cf_out_set(&o, (char *)o.data + 1, 4), 0); /* shrink to inline */
    assert_ptr_equal(o.data, o.small);
    assert_memory_equal(o.data, "zzzz", 4);
    void *z;
    assert_int_equal(cf_out_alloc(&o, 0, &z), 0);
    assert_non_null(z);
    assert_int_equal(o.len, 0);
    assert_int_equal(cf_out_alloc(&o, (size_t)UINT32_MAX + 1, &z), CF_ETOOBIG);
    assert_null(z);
    assert_int_equal(o.failed, CF_ETOOBIG);
    assert_int_equal(cf_out_set(&o, "ok", 2), 0);
    assert_int_equal(o.failed, 0);
    assert_int_equal(cf_out_error(&o, 3, "%s-%d", "x", 1), 3);
    assert_int_equal(cf_out_error(&o, 4, "second"), 4); /* replaces the first */
    assert_string_equal(o.msg, "second");
    assert_int_equal(o.code, 4);
    assert_int_equal(cf_out_f64(&o, 1.5), 0);
    assert_int_equal(cf_out_ptr(&o, &o), 0);
    assert_int_equal(o.len, sizeof(void *));
    cf__out_dispose(&o);
    assert_null(o.msg);
    cf__out_dispose(&o); /* twice is fine */
}

/* ---- 9. callbacks ---- */

struct order {
    int seen[16];
    _Atomic int n;
    pthread_t thread;
};

static void order_cb(cf_future *f, void *ud)
{
    struct order *o = ud;
    (void)f;
    o->thread = pthread_self();
    int i = atomic_fetch_add(&o->n, 1);
    o->seen[i] = i;
}

static struct order *g_order;
static void tag_cb(cf_future *f, void *ud)
{
    (void)f;
    int i = atomic_fetch_add(&g_order->n, 1);
    g_order->seen[i] = (int)(intptr_t)ud;
    g_order->thread = pthread_self();
}

static void *complete_thread(void *p)
{
    int64_t x = 3;
    assert_int_equal(cf_future_set_result(p, &x, sizeof x), 0);
    return NULL;
}

static void callbacks_order_thread_once(void **state)
{
    (void)state;
    struct order o = {0};
    g_order = &o;
    cf_future *f = cf_test_future();
    for (int i = 0; i < 10; i++)
        assert_int_equal(cf_future_add_done_callback(f, tag_cb, (void *)(intptr_t)i), 0);
    pthread_t t = spawn(complete_thread, f);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&o.n), 10);
    for (int i = 0; i < 10; i++) assert_int_equal(o.seen[i], i); /* registration order */
    assert_true(pthread_equal(o.thread, t));                     /* in the completer */
    assert_int_equal(word(f) & (CF__HAS_LISTENERS | CF__LIST_LOCK), 0);

    /* added to a done future: runs at once, in the caller, before return */
    atomic_store_explicit(&o.n, 0, memory_order_relaxed); /* no thread runs */
    assert_int_equal(cf_future_add_done_callback(f, order_cb, &o), 0);
    assert_int_equal(atomic_load(&o.n), 1);
    assert_true(pthread_equal(o.thread, pthread_self()));
    /* completing again runs nothing */
    int64_t x = 1;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), CF_ESTATE);
    assert_int_equal(atomic_load(&o.n), 1);
    cf_future_release(f);

    /* a cancel runs them in the cancelling thread */
    o = (struct order){0};
    f = cf_test_future();
    assert_int_equal(cf_future_add_done_callback(f, order_cb, &o), 0);
    assert_true(cf_future_cancel(f));
    assert_int_equal(atomic_load(&o.n), 1);
    assert_true(pthread_equal(o.thread, pthread_self()));
    cf_future_release(f);

    /* a failed add never calls */
    o = (struct order){0};
    f = cf_test_future();
    assert_int_equal(cf_future_add_done_callback(f, NULL, &o), CF_EINVAL);
    assert_int_equal(cf_future_add_done_callback(NULL, order_cb, &o), CF_EINVAL);
    assert_true(cf_future_cancel(f));
    assert_int_equal(atomic_load(&o.n), 0);
    cf_future_release(f);
}

/* A callback may call any future function, including adding callbacks
 * (which, on a done future, run at once) and reading results. */
static _Atomic int nested_runs;
static void nested_inner(cf_future *f, void *ud)
{
    (void)ud;
    assert_true(cf_future_done(f));
    atomic_fetch_add(&nested_runs, 1);
}

static void nested_outer(cf_future *f, void *ud)
{
    cf_future *other = ud;
    int64_t v;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    assert_int_equal(v, 3);
    int code;
    assert_int_equal(cf_future_exception(f, CF_POLL, &code, NULL), 0);
    assert_true(cf_future_done(f));
    assert_false(cf_future_cancel(f));
    assert_int_equal(cf_future_set_result(f, &v, sizeof v), CF_ESTATE);
    cf_future_retain(f);
    cf_future_release(f);
    int before = atomic_load(&nested_runs);
    assert_int_equal(cf_future_add_done_callback(f, nested_inner, NULL), 0);
    assert_int_equal(atomic_load(&nested_runs), before + 1); /* ran before returning */
    /* ... and on another, pending future; then complete it from here */
    assert_int_equal(cf_future_add_done_callback(other, nested_inner, NULL), 0);
    assert_int_equal(cf_future_set_result(other, &v, sizeof v), 0);
    assert_int_equal(atomic_load(&nested_runs), before + 2);
}

static void callback_calls_future_functions(void **state)
{
    (void)state;
    atomic_store(&nested_runs, 0);
    cf_future *f = cf_test_future(), *other = cf_test_future();
    assert_int_equal(cf_future_add_done_callback(f, nested_outer, other), 0);
    int64_t x = 3;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), 0);
    assert_int_equal(atomic_load(&nested_runs), 2);
    assert_true(cf_future_done(other));
    cf_future_release(f);
    cf_future_release(other);
}

/* A callback may drop the last reference held by someone else. */
static void release_cb(cf_future *f, void *ud)
{
    (void)ud;
    cf_future_release(f);
}

static void callback_releases(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    cf_future_retain(f); /* the callback's */
    assert_int_equal(cf_future_add_done_callback(f, release_cb, NULL), 0);
    assert_int_equal(cf_future_set_result(f, NULL, 0), 0);
    assert_int_equal(atomic_load(&f->refs), 1);
    cf_future_release(f);
}

/* Callbacks run after every waiter has been released: a callback that
 * blocks until the result() sleepers have returned would deadlock if they
 * were woken after it. */
static struct waiter_arg *g_waiters;
static int g_nwaiters;
static void wait_for_waiters_cb(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    for (int i = 0; i < g_nwaiters; i++)
        while (!atomic_load_explicit(&g_waiters[i].returned, memory_order_acquire)) sched_yield();
}

static void callbacks_after_waiters(void **state)
{
    (void)state;
    enum { N = 3 };
    struct waiter_arg a[N];
    pthread_t t[N];
    cf_future *f = cf_test_future();
    g_waiters = a;
    g_nwaiters = N;
    for (int i = 0; i < N; i++) {
        a[i] = (struct waiter_arg){.f = f, .timeout = CF_FOREVER};
        t[i] = spawn(result_thread, &a[i]);
    }
    assert_int_equal(cf_future_add_done_callback(f, wait_for_waiters_cb, NULL), 0);
    wait_for_sleeper(f);
    int64_t x = 8;
    assert_int_equal(cf_future_set_result(f, &x, sizeof x), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, 0);
    }
    cf_future_release(f);
}

/* Stress: callbacks added from several threads while another completes:
 * each runs exactly once. */
struct adder_arg {
    cf_future *f;
    _Atomic int *count;
    int n;
};

static void inc_cb(cf_future *f, void *ud)
{
    (void)f;
    atomic_fetch_add_explicit((_Atomic int *)ud, 1, memory_order_relaxed);
}

static void *adder_thread(void *p)
{
    struct adder_arg *a = p;
    for (int i = 0; i < a->n; i++)
        assert_int_equal(cf_future_add_done_callback(a->f, inc_cb, a->count), 0);
    return NULL;
}

static void callbacks_race_completion(void **state)
{
    (void)state;
    int rounds = (int)(100 * cf_test_scale());
    for (int r = 0; r < rounds; r++) {
        enum { T = 3, PER = 50 };
        _Atomic int count = 0;
        cf_future *f = cf_test_future();
        struct adder_arg a[T];
        pthread_t t[T];
        for (int i = 0; i < T; i++) {
            a[i] = (struct adder_arg){.f = f, .count = &count, .n = PER};
            t[i] = spawn(adder_thread, &a[i]);
        }
        if (r % 2) assert_true(cf_future_cancel(f));
        else assert_int_equal(cf_future_set_result(f, NULL, 0), 0);
        for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
        assert_int_equal(atomic_load(&count), T * PER);
        cf_future_release(f);
    }
}

/* ---- 10. references ---- */

static void references(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    assert_ptr_equal(cf_future_retain(f), f);
    assert_int_equal(atomic_load(&f->refs), 2);
    char big[100];
    memset(big, 'q', sizeof big);
    assert_int_equal(cf_future_set_exception(f, 2, "kept"), 0);
    const char *msg;
    assert_int_equal(cf_future_exception(f, CF_POLL, NULL, &msg), 0);
    cf_future_release(f);
    assert_string_equal(msg, "kept"); /* valid while a reference is held */
    cf_future_release(f);

    f = cf_test_future();
    assert_int_equal(cf_future_set_result(f, big, sizeof big), 0);
    const void *data;
    assert_int_equal(cf_future_result(f, CF_POLL, &data, NULL), 0);
    cf_future_retain(f);
    cf_future_release(f);
    assert_memory_equal(data, big, sizeof big);
    cf_future_release(f);

    /* A never-completed future with callbacks and a heap argument: the
     * last release frees everything (ASan/LSan check), no callback runs. */
    atomic_store(&cb_count, 0);
    cf_future *t = cf__future_new_task(never_run, big, sizeof big, NULL, NULL);
    assert_int_equal(cf__state_size(atomic_load(&t->state)), CF__SIZE_HEAP);
    assert_int_equal(cf__future_arg_len(t), sizeof big);
    assert_memory_equal(cf__future_arg(t), big, sizeof big);
    assert_int_equal(cf_future_add_done_callback(t, count_cb, NULL), 0);
    cf_future_release(t);
    cf_future_release(t);
    assert_int_equal(atomic_load(&cb_count), 0);

    cf_future_release(NULL);
    assert_null(cf_future_retain(NULL));
}

/* The argument shares the record's payload with the outcome. A thread
 * that pins it (the process pool copying an overflow task into a ring)
 * reads it while a completer claims the future: the completer must not
 * free or overwrite the argument (nor finish) before the unpin. The test
 * holds the pin while the completer is claimed and waiting; a completer
 * that did not wait would free the argument under our read (ASan), or
 * overwrite it, and the future would be done while pinned. */
static void *set_result_in_thread(void *arg)
{
    int64_t v = 5;
    return (void *)(intptr_t)cf_future_set_result(arg, &v, sizeof v);
}

static void arg_pin_holds_off_completer(void **state)
{
    (void)state;
    unsigned char big[100];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(3 * i);
    cf_future *t = cf__future_new_task(never_run, big, sizeof big, NULL, NULL);
    assert_non_null(t);
    assert_true(cf__future_arg_pin(t));
    assert_int_equal(cf__future_arg_len(t), sizeof big);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, set_result_in_thread, t), 0);
    while (!(atomic_load_explicit(&t->state, memory_order_acquire) & CF__CLAIMED)) sched_yield();
    /* Claimed: a completer that does not wait for us finishes at once. */
    for (int i = 0; i < 200 && !cf__state_done(atomic_load(&t->state)); i++) usleep(1000);
    assert_false(cf__state_done(atomic_load(&t->state)));
    assert_memory_equal(cf__future_arg(t), big, sizeof big);
    cf__future_arg_unpin(t);
    void *rc;
    assert_int_equal(pthread_join(th, &rc), 0);
    assert_int_equal((intptr_t)rc, 0);
    int64_t v;
    assert_int_equal(cf_future_result_i64(t, CF_POLL, &v), 0);
    assert_int_equal(v, 5);
    assert_false(cf__future_arg_pin(t)); /* done: the argument is gone */
    cf_future_release(t);
    cf_future_release(t);

    /* A claimed future cannot be pinned; a cancelled one keeps its
     * argument until the last release (LSan checks it is freed). */
    t = cf__future_new_task(never_run, big, sizeof big, NULL, NULL);
    assert_true(cf_future_cancel(t));
    assert_false(cf__future_arg_pin(t));
    assert_int_equal(cf__future_arg_len(t), sizeof big);
    cf_future_release(t);
    cf_future_release(t);
}

/* A release that finds the count at 1 frees without decrementing: its
 * load must still order every other holder's use of the record before the
 * free. Another thread reads the result and drops its reference; we see
 * the count reach 1 only through relaxed loads (no other synchronisation:
 * the threads are joined at the end), drop ours, and the next future
 * reuses the record from this thread's cache and writes it. Under TSan, a
 * fast path without acquire reports the reader's loads racing those
 * writes. */
static void *read_then_release(void *arg)
{
    cf_future *f = arg;
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
    assert_int_equal(v, 7);
    cf_future_release(f);
    return NULL;
}

static void last_release_orders_other_holders(void **state)
{
    (void)state;
    enum { ROUNDS = 64 };
    pthread_t t[ROUNDS];
    cf__future_cache_enable();
    cf_future *prev = NULL;
    int reused = 0;
    for (int i = 0; i < ROUNDS; i++) {
        cf_future *f = cf_test_future();
        reused += f == prev;
        prev = f;
        int64_t v = 7;
        assert_int_equal(cf_future_set_result(f, &v, sizeof v), 0);
        cf_future_retain(f);
        assert_int_equal(pthread_create(&t[i], NULL, read_then_release, f), 0);
        while (atomic_load_explicit(&f->refs, memory_order_relaxed) != 1) sched_yield();
        cf_future_release(f);
    }
    for (int i = 0; i < ROUNDS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    cf__future_cache_drain();
    if (!CF__DEBUG_CHECKS) assert_true(reused > 0); /* (debug builds quarantine instead) */
}

/* Layout and error table. */
static void layout_and_strings(void **state)
{
    (void)state;
    assert_int_equal(sizeof(struct cf_future), 64);
    for (int c = CF_ENOTSUP; c <= 0; c++) {
        assert_non_null(cf_strerror(c));
        assert_string_not_equal(cf_strerror(c), "unknown error");
    }
    assert_string_equal(cf_strerror(1), "unknown error");
    assert_string_equal(cf_strerror(CF_ENOTSUP - 1), "unknown error");
    assert_string_equal(cf_strerror(-1000), "unknown error");
    assert_string_equal(cf_strerror(CF_ETIMEDOUT), "timed out");
    assert_string_equal(cf_version(), CF_VERSION_STRING);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH);
    assert_string_equal(v, CF_VERSION_STRING);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(states_agree),
        cmocka_unit_test(transitions),
        cmocka_unit_test(racing_completers),
        cmocka_unit_test(cancel_wakes_result_and_runs_callbacks_once),
        cmocka_unit_test(executor_hooks),
        cmocka_unit_test(running_task_not_interrupted),
        cmocka_unit_test(cancel_races_start),
        cmocka_unit_test(result_timeouts),
        cmocka_unit_test(deadline_math),
        cmocka_unit_test(signals_and_spurious_wakeups),
        cmocka_unit_test(many_sleepers),
        cmocka_unit_test(wait_helper_is_called),
        cmocka_unit_test(results_and_exceptions),
        cmocka_unit_test(tasks_through_cf_out),
        cmocka_unit_test(arg_pin_holds_off_completer),
        cmocka_unit_test(last_release_orders_other_holders),
        cmocka_unit_test(complete_from_out),
        cmocka_unit_test(out_staging),
        cmocka_unit_test(callbacks_order_thread_once),
        cmocka_unit_test(callback_calls_future_functions),
        cmocka_unit_test(callback_releases),
        cmocka_unit_test(callbacks_after_waiters),
        cmocka_unit_test(callbacks_race_completion),
        cmocka_unit_test(references),
        cmocka_unit_test(layout_and_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
