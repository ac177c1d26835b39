/* cf_wait: SEMANTICS 4 and 11-14 (any futures, duplicates, empty set, the
 * three conditions, timeouts, cancel wakes it, no lost completion, the
 * waiter removed on every way out). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "core/future.h"
#include "support/test_env.h"

static uint32_t word(cf_future *f)
{
    return atomic_load_explicit(&f->state, memory_order_acquire);
}

/* No listener left behind (read by the thread that owns the future, after
 * every waiter returned). */
static void assert_no_listeners(cf_future *f)
{
    assert_int_equal(word(f) & (CF__HAS_LISTENERS | CF__LIST_LOCK), 0);
    assert_null(f->listeners);
}

/* Until some waiter has registered on f (FIRST_*: a waiter node). */
static void wait_for_listener(cf_future *f)
{
    while (!(word(f) & CF__HAS_LISTENERS)) sched_yield();
}

/* Until some waiter waits on f: a node (FIRST_*) or, for ALL_COMPLETED,
 * which waits for one future at a time, a sleeper on its word. */
static void wait_for_waiter(cf_future *f)
{
    while (!(word(f) & (CF__HAS_LISTENERS | CF__SLEEPERS))) sched_yield();
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static void set_i64(cf_future *f, int64_t v)
{
    assert_int_equal(cf_future_set_result(f, &v, sizeof v), 0);
}

static bool contains(cf_future **fs, size_t from, size_t to, cf_future *f)
{
    for (size_t i = from; i < to; i++)
        if (fs[i] == f) return true;
    return false;
}

struct wait_arg {
    cf_future **fs;
    size_t n;
    enum cf_return_when when;
    double timeout;
    size_t n_done;
    int rc;
};

static void *wait_thread(void *p)
{
    struct wait_arg *a = p;
    a->rc = cf_wait(a->fs, a->n, a->when, a->timeout, &a->n_done);
    return NULL;
}

/* ---- 11 ---- */

static void empty_set(void **state)
{
    (void)state;
    size_t n_done = 99;
    assert_int_equal(cf_wait(NULL, 0, CF_ALL_COMPLETED, CF_FOREVER, &n_done), 0);
    assert_int_equal(n_done, 0);
    cf_future *none[1] = {NULL};
    assert_int_equal(cf_wait(none, 0, CF_FIRST_COMPLETED, CF_FOREVER, NULL), 0);
}

static int task_ok(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, 1);
}

static void duplicates_and_mixed_sources(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future();
    cf_future *t = cf__future_new_task(task_ok, NULL, 0, NULL, NULL); /* an "executor's" future */
    assert_true(cf__future_run(t));
    set_i64(a, 1);
    cf_future *fs[] = {b, a, a, t, b, a};
    size_t n_done;
    assert_int_equal(cf_wait(fs, 6, CF_ALL_COMPLETED, CF_POLL, &n_done), 0);
    assert_int_equal(n_done, 2); /* a and t, each once */
    assert_true(contains(fs, 0, 2, a) && contains(fs, 0, 2, t));
    assert_ptr_equal(fs[2], b); /* then the distinct not-done */
    /* then the duplicates: b, a, a in some order */
    int na = 0, nb = 0;
    for (int i = 3; i < 6; i++) {
        na += fs[i] == a;
        nb += fs[i] == b;
    }
    assert_int_equal(na, 2);
    assert_int_equal(nb, 1);

    /* ALL_COMPLETED with duplicates finishes (a duplicate is not waited twice) */
    cf_future *gs[] = {b, b, b, a};
    struct wait_arg w = {.fs = gs, .n = 4, .when = CF_ALL_COMPLETED, .timeout = CF_FOREVER};
    pthread_t th = spawn(wait_thread, &w);
    wait_for_waiter(b);
    set_i64(b, 2);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.n_done, 2);
    assert_no_listeners(b);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(t);
    cf_future_release(t);
}

/* Many futures (the hashed dedup path), some repeated. */
static void many_with_duplicates(void **state)
{
    (void)state;
    enum { N = 1000 };
    cf_future *f[N], *fs[2 * N];
    for (int i = 0; i < N; i++) {
        f[i] = cf_test_future();
        if (i % 3 == 0) set_i64(f[i], i);
    }
    for (int i = 0; i < N; i++) {
        fs[i] = f[i];
        fs[N + i] = f[(i * 7) % N];
    }
    size_t n_done;
    assert_int_equal(cf_wait(fs, 2 * N, CF_ALL_COMPLETED, CF_POLL, &n_done), 0);
    assert_int_equal(n_done, (N + 2) / 3);
    for (size_t i = 0; i < n_done; i++) assert_true(cf_future_done(fs[i]));
    for (size_t i = n_done; i < N; i++) assert_false(cf_future_done(fs[i]));
    /* the distinct part holds each future once */
    for (int i = 0; i < N; i++) assert_true(contains(fs, 0, N, f[i]));
    for (int i = 0; i < N; i++) {
        if (!cf_future_done(f[i])) assert_true(cf_future_cancel(f[i]));
    }
    assert_int_equal(cf_wait(fs, 2 * N, CF_ALL_COMPLETED, CF_FOREVER, &n_done), 0);
    assert_int_equal(n_done, N);
    for (int i = 0; i < N; i++) cf_future_release(f[i]);
}

/* ---- 12 ---- */

static void all_completed(void **state)
{
    (void)state;
    enum { N = 5 };
    cf_future *f[N];
    for (int i = 0; i < N; i++) f[i] = cf_test_future();
    set_i64(f[2], 2);
    cf_future *fs[N];
    memcpy(fs, f, sizeof fs);
    struct wait_arg w = {.fs = fs, .n = N, .when = CF_ALL_COMPLETED, .timeout = CF_FOREVER};
    pthread_t th = spawn(wait_thread, &w);
    for (bool waiting = false; !waiting; sched_yield()) /* it waits on one of them */
        for (int i = 0; i < N; i++)
            if (word(f[i]) & (CF__HAS_LISTENERS | CF__SLEEPERS)) waiting = true;
    for (int i = 0; i < N; i++) {
        if (i == 2) continue;
        sched_yield();
        if (i == 3) assert_true(cf_future_cancel(f[i])); /* cancelled counts as done */
        else if (i == 4) assert_int_equal(cf_future_set_exception(f[i], 1, "x"), 0);
        else set_i64(f[i], i);
    }
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.n_done, N);
    for (int i = 0; i < N; i++) {
        assert_true(cf_future_done(fs[i]));
        assert_no_listeners(f[i]);
        cf_future_release(f[i]);
    }
}

static void first_completed(void **state)
{
    (void)state;
    /* at once if any is done; all done ones reported */
    cf_future *a = cf_test_future(), *b = cf_test_future(), *c = cf_test_future();
    set_i64(b, 1);
    assert_true(cf_future_cancel(c));
    cf_future *fs[] = {a, b, c};
    size_t n_done;
    assert_int_equal(cf_wait(fs, 3, CF_FIRST_COMPLETED, CF_FOREVER, &n_done), 0);
    assert_int_equal(n_done, 2);
    assert_true(contains(fs, 0, 2, b) && contains(fs, 0, 2, c));
    assert_ptr_equal(fs[2], a);
    assert_no_listeners(a);

    /* else on the first completion */
    cf_future *d = cf_test_future();
    cf_future *gs[] = {a, d};
    struct wait_arg w = {.fs = gs, .n = 2, .when = CF_FIRST_COMPLETED, .timeout = CF_FOREVER};
    pthread_t th = spawn(wait_thread, &w);
    wait_for_listener(a);
    wait_for_listener(d);
    set_i64(d, 4);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.n_done, 1);
    assert_ptr_equal(gs[0], d);
    assert_no_listeners(a); /* removed from the one that did not complete */
    assert_no_listeners(d);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
    cf_future_release(d);
}

static void first_exception(void **state)
{
    (void)state;
    /* at once if a done one holds an error */
    cf_future *a = cf_test_future(), *e = cf_test_future(), *ok = cf_test_future();
    set_i64(ok, 1);
    assert_int_equal(cf_future_set_exception(e, 3, "bad"), 0);
    cf_future *fs[] = {a, ok, e};
    size_t n_done;
    assert_int_equal(cf_wait(fs, 3, CF_FIRST_EXCEPTION, CF_FOREVER, &n_done), 0);
    assert_int_equal(n_done, 2);
    cf_future_release(e);

    /* a broken future is an exception too */
    cf_future *br = cf_test_future();
    assert_int_equal(cf__future_fail_broken(br, "dead"), 0);
    cf_future *bs[] = {a, br};
    assert_int_equal(cf_wait(bs, 2, CF_FIRST_EXCEPTION, CF_FOREVER, &n_done), 0);
    assert_int_equal(n_done, 1);
    cf_future_release(br);

    /* cancellation is not an exception: neither one already cancelled ... */
    cf_future *c = cf_test_future();
    assert_true(cf_future_cancel(c));
    cf_future *cs[] = {a, c};
    int64_t t0 = cf__now_ns();
    assert_int_equal(cf_wait(cs, 2, CF_FIRST_EXCEPTION, 0.05, &n_done), 0);
    assert_true(cf__now_ns() - t0 >= 50000000); /* it waited for the deadline */
    assert_int_equal(n_done, 1);
    assert_no_listeners(a);
    cf_future_release(c);

    /* ... nor one cancelled while we wait */
    cf_future *d = cf_test_future(), *x = cf_test_future();
    cf_future *ds[] = {d, x};
    struct wait_arg w = {.fs = ds, .n = 2, .when = CF_FIRST_EXCEPTION, .timeout = 0.1};
    t0 = cf__now_ns();
    pthread_t th = spawn(wait_thread, &w);
    wait_for_listener(d);
    assert_true(cf_future_cancel(d));
    pthread_join(th, NULL);
    assert_true(cf__now_ns() - t0 >= 100000000);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.n_done, 1);
    assert_ptr_equal(ds[0], d);
    assert_no_listeners(x);

    /* an error while we wait wakes it */
    cf_future *y = cf_test_future();
    cf_future *ys[] = {x, y};
    w = (struct wait_arg){.fs = ys, .n = 2, .when = CF_FIRST_EXCEPTION, .timeout = CF_FOREVER};
    th = spawn(wait_thread, &w);
    wait_for_listener(y);
    wait_for_listener(x);
    set_i64(x, 5);                                            /* a success does not wake it ... */
    assert_int_equal(cf_future_set_exception(y, 9, NULL), 0); /* ... an error does */
    pthread_join(th, NULL);
    assert_int_equal(w.n_done, 2);

    /* no error at all: like ALL_COMPLETED */
    cf_future *p = cf_test_future(), *q = cf_test_future();
    cf_future *ps[] = {p, q};
    w = (struct wait_arg){.fs = ps, .n = 2, .when = CF_FIRST_EXCEPTION, .timeout = CF_FOREVER};
    th = spawn(wait_thread, &w);
    wait_for_listener(p);
    set_i64(p, 1);
    wait_for_listener(q);
    assert_true(cf_future_cancel(q));
    pthread_join(th, NULL);
    assert_int_equal(w.n_done, 2);

    cf_future_release(a);
    cf_future_release(ok);
    cf_future_release(d);
    cf_future_release(x);
    cf_future_release(y);
    cf_future_release(p);
    cf_future_release(q);
}

/* ---- 4: cancel wakes cf_wait at once ---- */

static void cancel_wakes_wait(void **state)
{
    (void)state;
    for (int when = CF_FIRST_COMPLETED; when <= CF_ALL_COMPLETED; when++) {
        cf_future *f = cf_test_future();
        cf_future *fs[] = {f};
        struct wait_arg w = {
            .fs = fs, .n = 1, .when = (enum cf_return_when)when, .timeout = CF_FOREVER};
        pthread_t th = spawn(wait_thread, &w);
        wait_for_waiter(f);
        assert_true(cf_future_cancel(f));
        pthread_join(th, NULL); /* a lost wake-up would hang here */
        assert_int_equal(w.rc, 0);
        assert_int_equal(w.n_done, 1);
        assert_no_listeners(f);
        cf_future_release(f);
    }
}

/* ---- 13: timeouts ---- */

static void timeout_returns_partition(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future();
    set_i64(b, 1);
    cf_future *fs[] = {a, b};
    size_t n_done = 0;
    int64_t t0 = cf__now_ns();
    assert_int_equal(cf_wait(fs, 2, CF_ALL_COMPLETED, 0.03, &n_done), 0); /* not an error */
    assert_true(cf__now_ns() - t0 >= 30000000);                           /* monotonic deadline */
    assert_int_equal(n_done, 1);
    assert_ptr_equal(fs[0], b);
    assert_ptr_equal(fs[1], a);
    assert_no_listeners(a);
    assert_int_equal(cf_wait(fs, 2, CF_ALL_COMPLETED, CF_POLL, &n_done), 0);
    assert_int_equal(n_done, 1);
    assert_int_equal(cf_wait(fs, 2, CF_ALL_COMPLETED, __builtin_nan(""), &n_done), CF_EINVAL);
    cf_future_release(a);
    cf_future_release(b);
}

/* ---- 14: removed on every way out; no lost completion ---- */

static void timeouts_do_not_grow_lists(void **state)
{
    (void)state;
    cf_future *never = cf_test_future(), *other = cf_test_future();
    int rounds = (int)(2000 * cf_test_scale());
    for (int i = 0; i < rounds; i++) {
        cf_future *fs[] = {never, other};
        size_t n_done;
        assert_int_equal(cf_wait(fs, 2, (enum cf_return_when)(i % 3), 1e-6, &n_done), 0);
        assert_int_equal(n_done, 0);
        assert_no_listeners(never); /* after every call, not just at the end */
        assert_no_listeners(other);
    }
    /* early return through the first-completed path */
    set_i64(other, 1);
    for (int i = 0; i < 100; i++) {
        cf_future *fs[] = {never, other};
        size_t n_done;
        assert_int_equal(cf_wait(fs, 2, CF_FIRST_COMPLETED, CF_FOREVER, &n_done), 0);
        assert_int_equal(n_done, 1);
        assert_no_listeners(never);
    }
    cf_future_release(never);
    cf_future_release(other);
}

/* A completion racing with registration is never lost: threads complete
 * the futures while the waiter registers; ALL_COMPLETED must return. */
struct completer_arg {
    cf_future **f;
    int from, to, step;
};

static void *completer_thread(void *p)
{
    struct completer_arg *a = p;
    for (int i = a->from; i < a->to; i += a->step) {
        if (i % 5 == 0) (void)cf_future_cancel(a->f[i]);
        else if (i % 7 == 0) (void)cf_future_set_exception(a->f[i], 1, NULL);
        else set_i64(a->f[i], i);
    }
    return NULL;
}

static void stress_no_lost_completion(void **state)
{
    (void)state;
    int rounds = (int)(50 * cf_test_scale());
    enum { N = 64, T = 2 };
    for (int r = 0; r < rounds; r++) {
        cf_future *f[N], *fs[N];
        for (int i = 0; i < N; i++) fs[i] = f[i] = cf_test_future();
        struct completer_arg ca[T];
        pthread_t t[T];
        for (int k = 0; k < T; k++) {
            ca[k] = (struct completer_arg){.f = f, .from = k, .to = N, .step = T};
            t[k] = spawn(completer_thread, &ca[k]);
        }
        size_t n_done;
        enum cf_return_when when = (enum cf_return_when)(r % 3);
        assert_int_equal(cf_wait(fs, N, when, CF_FOREVER, &n_done), 0);
        assert_true(n_done >= 1);
        if (when == CF_ALL_COMPLETED) assert_int_equal(n_done, N);
        for (size_t i = 0; i < n_done; i++) assert_true(cf_future_done(fs[i]));
        for (int k = 0; k < T; k++) pthread_join(t[k], NULL);
        for (int i = 0; i < N; i++) {
            assert_no_listeners(f[i]);
            cf_future_release(f[i]);
        }
    }
}

/* ---- SEMANTICS 22: a pool worker waiting here runs other work ----
 * A fake "worker": its helper completes queued futures (as if running
 * their tasks) while the awaited one is not done. Nobody else completes
 * them, so a waiter that slept instead of helping would hang. */
struct fake_queue {
    cf_future **q;
    size_t n, next;
    int calls;
};

static int fake_helper(void *ctx, cf_future *f, cf__deadline deadline)
{
    struct fake_queue *fq = ctx;
    fq->calls++;
    while (!cf_future_done(f)) {
        if (fq->next == fq->n) return cf__future_wait_done(f, deadline);
        cf_future *g = fq->q[fq->next++];
        int64_t v = (int64_t)fq->next;
        assert_int_equal(cf_future_set_result(g, &v, sizeof v), 0);
    }
    return 0;
}

static void worker_helps_while_waiting(void **state)
{
    (void)state;
    enum { N = 5 };
    for (int when = CF_FIRST_COMPLETED; when <= CF_ALL_COMPLETED; when++) {
        cf_future *f[N], *fs[N];
        for (int i = 0; i < N; i++) fs[i] = f[i] = cf_test_future();
        struct fake_queue fq = {.q = f, .n = N};
        cf__tls_wait_helper = fake_helper;
        cf__tls_wait_helper_ctx = &fq;
        size_t n_done;
        assert_int_equal(cf_wait(fs, N, (enum cf_return_when)when, CF_FOREVER, &n_done), 0);
        cf__tls_wait_helper = NULL;
        cf__tls_wait_helper_ctx = NULL;
        assert_int_equal(fq.calls, 1);
        if (when == CF_FIRST_COMPLETED) assert_true(n_done >= 1);
        else assert_int_equal(n_done, N);
        for (int i = 0; i < N; i++) {
            if (!cf_future_done(f[i])) assert_true(cf_future_cancel(f[i]));
            assert_no_listeners(f[i]);
            cf_future_release(f[i]);
        }
    }
    /* a helping wait still times out */
    cf_future *g = cf_test_future();
    struct fake_queue empty = {0};
    cf__tls_wait_helper = fake_helper;
    cf__tls_wait_helper_ctx = &empty;
    size_t n_done = 9;
    assert_int_equal(cf_wait(&g, 1, CF_ALL_COMPLETED, 0.01, &n_done), 0);
    cf__tls_wait_helper = NULL;
    cf__tls_wait_helper_ctx = NULL;
    assert_int_equal(n_done, 0);
    assert_no_listeners(g);
    cf_future_release(g);
}

/* SEMANTICS 9: callbacks run after every waiter has been released. The
 * callback blocks until the thread in cf_wait has returned: if waiters were
 * released after callbacks, this would never finish. */
static _Atomic int g_wait_returned;
static void *wait_thread_flag(void *p)
{
    wait_thread(p);
    atomic_store_explicit(&g_wait_returned, 1, memory_order_release);
    return NULL;
}

static void block_until_waiter_returned(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    while (!atomic_load_explicit(&g_wait_returned, memory_order_acquire)) sched_yield();
}

static void callbacks_after_wait_released(void **state)
{
    (void)state;
    for (int when = CF_FIRST_COMPLETED; when <= CF_ALL_COMPLETED; when++) {
        atomic_store_explicit(&g_wait_returned, 0, memory_order_relaxed);
        cf_future *f = cf_test_future();
        cf_future *fs[] = {f};
        struct wait_arg w = {
            .fs = fs, .n = 1, .when = (enum cf_return_when)when, .timeout = CF_FOREVER};
        pthread_t th = spawn(wait_thread_flag, &w);
        wait_for_waiter(f); /* the waiter node is linked, or it sleeps on f */
        /* the callback is the newest listener: it still runs after the
         * waiter is released */
        assert_int_equal(cf_future_add_done_callback(f, block_until_waiter_returned, NULL), 0);
        if (when == CF_FIRST_EXCEPTION) assert_int_equal(cf_future_set_exception(f, 1, NULL), 0);
        else set_i64(f, 1);
        pthread_join(th, NULL);
        assert_int_equal(w.n_done, 1);
        cf_future_release(f);
    }
}

/* Signals to a thread sleeping in cf_wait do not end the wait early. */
static void on_usr1(int sig)
{
    (void)sig;
}

static void signals_do_not_end_wait(void **state)
{
    (void)state;
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
    cf_future *f = cf_test_future();
    cf_future *fs[] = {f};
    struct wait_arg w = {.fs = fs, .n = 1, .when = CF_ALL_COMPLETED, .timeout = 0.05};
    int64_t t0 = cf__now_ns();
    atomic_store_explicit(&g_wait_returned, 0, memory_order_relaxed);
    pthread_t th = spawn(wait_thread_flag, &w);
    while (!atomic_load_explicit(&g_wait_returned, memory_order_acquire)) {
        pthread_kill(th, SIGUSR1);
        usleep(1000); /* pacing of the signal stream, not synchronisation */
    }
    pthread_join(th, NULL);
    assert_true(cf__now_ns() - t0 >= 50000000);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.n_done, 0);
    assert_no_listeners(f);
    cf_future_release(f);
    signal(SIGUSR1, SIG_DFL);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_set),
        cmocka_unit_test(duplicates_and_mixed_sources),
        cmocka_unit_test(many_with_duplicates),
        cmocka_unit_test(all_completed),
        cmocka_unit_test(first_completed),
        cmocka_unit_test(first_exception),
        cmocka_unit_test(cancel_wakes_wait),
        cmocka_unit_test(timeout_returns_partition),
        cmocka_unit_test(timeouts_do_not_grow_lists),
        cmocka_unit_test(stress_no_lost_completion),
        cmocka_unit_test(callbacks_after_wait_released),
        cmocka_unit_test(worker_helps_while_waiting),
        cmocka_unit_test(signals_do_not_end_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
