/* cf_as_completed: SEMANTICS 4, 15, 16 (done ones first, then completion
 * order; each distinct future once; timeout with the remaining count;
 * cancel wakes it; its own references; O(n) total; removal on free). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
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

static void assert_no_listeners(cf_future *f)
{
    assert_int_equal(word(f) & (CF__HAS_LISTENERS | CF__LIST_LOCK), 0);
    assert_null(f->listeners);
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

static void empty(void **state)
{
    (void)state;
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(NULL, 0, CF_FOREVER, &it), 0);
    cf_future *f = (cf_future *)0x1;
    assert_int_equal(cf_as_completed_next(it, &f), CF_END);
    assert_int_equal(cf_as_completed_remaining(it), 0);
    cf_as_completed_free(it);
}

/* Done ones first (in input order), then in completion order. */
static void done_first_then_completion_order(void **state)
{
    (void)state;
    enum { N = 6 };
    cf_future *f[N];
    for (int i = 0; i < N; i++) f[i] = cf_test_future();
    set_i64(f[4], 4);
    assert_true(cf_future_cancel(f[1]));
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(f, N, CF_FOREVER, &it), 0);
    cf_future *g;
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_ptr_equal(g, f[1]);
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_ptr_equal(g, f[4]);
    int order[] = {3, 0, 5, 2};
    for (int k = 0; k < 4; k++) {
        if (k == 1) assert_true(cf_future_cancel(f[order[k]]));
        else if (k == 2) assert_int_equal(cf_future_set_exception(f[order[k]], 1, "e"), 0);
        else set_i64(f[order[k]], k);
    }
    for (int k = 0; k < 4; k++) {
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        assert_ptr_equal(g, f[order[k]]);
    }
    assert_int_equal(cf_as_completed_next(it, &g), CF_END);
    assert_int_equal(cf_as_completed_next(it, &g), CF_END);
    assert_int_equal(cf_as_completed_remaining(it), 0);
    cf_as_completed_free(it);
    for (int i = 0; i < N; i++) {
        assert_no_listeners(f[i]);
        cf_future_release(f[i]);
    }
}

static void duplicates_once_and_own_references(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future();
    cf_future *fs[] = {a, b, a, a, b};
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, 5, CF_FOREVER, &it), 0);
    memset(fs, 0, sizeof fs); /* the snapshot does not need the array */
    cf_future_retain(a);      /* keep a to complete it */
    cf_future_retain(b);
    set_i64(b, 1);
    set_i64(a, 2);
    cf_future_release(a); /* the caller's references go; the iterator's stay */
    cf_future_release(b);
    cf_future_release(a);
    cf_future_release(b);
    cf_future *g;
    int64_t v;
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_int_equal(cf_future_result_i64(g, CF_POLL, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_int_equal(cf_future_result_i64(g, CF_POLL, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(cf_as_completed_next(it, &g), CF_END);
    cf_as_completed_free(it);

    /* the hashed dedup path */
    enum { N = 100 };
    cf_future *f[N], *many[3 * N];
    for (int i = 0; i < N; i++) f[i] = cf_test_future();
    for (int i = 0; i < 3 * N; i++) many[i] = f[(i * 13) % N];
    assert_int_equal(cf_as_completed_new(many, 3 * N, CF_FOREVER, &it), 0);
    assert_int_equal(cf_as_completed_remaining(it), N);
    for (int i = N - 1; i >= 0; i--) set_i64(f[i], i);
    for (int i = N - 1; i >= 0; i--) {
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        assert_ptr_equal(g, f[i]);
    }
    assert_int_equal(cf_as_completed_next(it, &g), CF_END);
    cf_as_completed_free(it);
    for (int i = 0; i < N; i++) cf_future_release(f[i]);
}

static void timeout_with_remaining(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future(), *c = cf_test_future();
    set_i64(b, 1);
    cf_future *fs[] = {a, b, c};
    cf_as_completed *it;
    int64_t t0 = cf__now_ns();
    assert_int_equal(cf_as_completed_new(fs, 3, 0.03, &it), 0); /* the deadline starts now */
    cf_future *g;
    assert_int_equal(cf_as_completed_next(it, &g), 0); /* done ones before the timeout */
    assert_ptr_equal(g, b);
    assert_int_equal(cf_as_completed_next(it, &g), CF_ETIMEDOUT);
    assert_true(cf__now_ns() - t0 >= 30000000);
    assert_int_equal(cf_as_completed_remaining(it), 2);
    /* something completed after the timeout is still handed out */
    set_i64(c, 3);
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_ptr_equal(g, c);
    assert_int_equal(cf_as_completed_next(it, &g), CF_ETIMEDOUT);
    assert_int_equal(cf_as_completed_remaining(it), 1);
    cf_as_completed_free(it);
    assert_no_listeners(a);

    /* a poll */
    assert_int_equal(cf_as_completed_new(fs, 3, CF_POLL, &it), 0);
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_int_equal(cf_as_completed_next(it, &g), CF_ETIMEDOUT);
    assert_int_equal(cf_as_completed_remaining(it), 1);
    cf_as_completed_free(it);
    assert_no_listeners(a);
    cf_future_release(a);
    cf_future_release(b);
    cf_future_release(c);
}

/* ---- 4: cancel wakes a thread blocked in next() ---- */
struct next_arg {
    cf_as_completed *it;
    cf_future *got;
    int rc;
};

static void *next_thread(void *p)
{
    struct next_arg *a = p;
    a->rc = cf_as_completed_next(a->it, &a->got);
    return NULL;
}

static void cancel_wakes_next(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(&f, 1, CF_FOREVER, &it), 0);
    struct next_arg a = {.it = it};
    pthread_t t = spawn(next_thread, &a);
    /* Give it a chance to reach its futex sleep. The outcome must not
     * depend on whether it got there: no wake-up may be lost either way. */
    for (int i = 0; i < 1000; i++) sched_yield();
    assert_true(cf_future_cancel(f));
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_ptr_equal(a.got, f);
    cf_as_completed_free(it);
    cf_future_release(f);
}

/* Free before the end: the iterator leaves no node on the futures, and
 * later completions do not touch freed memory (ASan). */
static void free_early(void **state)
{
    (void)state;
    enum { N = 10 };
    cf_future *f[N];
    for (int i = 0; i < N; i++) f[i] = cf_test_future();
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(f, N, CF_FOREVER, &it), 0);
    set_i64(f[0], 0); /* one notified, not yet yielded */
    cf_as_completed_free(it);
    for (int i = 0; i < N; i++) {
        assert_no_listeners(f[i]);
        if (i) set_i64(f[i], i);
        cf_future_release(f[i]);
    }
}

/* Completers on other threads, racing with the iterator and with its
 * free: every future seen exactly once. */
struct completer_arg {
    cf_future **f;
    int from, to, step;
};

static void *completer_thread(void *p)
{
    struct completer_arg *a = p;
    for (int i = a->from; i < a->to; i += a->step) {
        if (i % 4 == 0) (void)cf_future_cancel(a->f[i]);
        else set_i64(a->f[i], i);
    }
    return NULL;
}

static void stress_exactly_once(void **state)
{
    (void)state;
    int rounds = (int)(20 * cf_test_scale());
    enum { N = 500, T = 2 };
    for (int r = 0; r < rounds; r++) {
        cf_future *f[N];
        for (int i = 0; i < N; i++) f[i] = cf_test_future();
        cf_as_completed *it;
        assert_int_equal(cf_as_completed_new(f, N, CF_FOREVER, &it), 0);
        struct completer_arg ca[T];
        pthread_t t[T];
        for (int k = 0; k < T; k++) {
            ca[k] = (struct completer_arg){.f = f, .from = k, .to = N, .step = T};
            t[k] = spawn(completer_thread, &ca[k]);
        }
        unsigned char seen[N] = {0};
        int stop = r % 2 ? N / 2 : N; /* odd rounds free mid-way */
        for (int k = 0; k < stop; k++) {
            cf_future *g;
            assert_int_equal(cf_as_completed_next(it, &g), 0);
            assert_true(cf_future_done(g));
            int idx = -1;
            for (int i = 0; i < N; i++)
                if (f[i] == g) idx = i;
            assert_true(idx >= 0);
            assert_int_equal(seen[idx], 0);
            seen[idx] = 1;
        }
        if (stop == N) {
            cf_future *g;
            assert_int_equal(cf_as_completed_next(it, &g), CF_END);
        }
        cf_as_completed_free(it);
        for (int k = 0; k < T; k++) pthread_join(t[k], NULL);
        for (int i = 0; i < N; i++) {
            assert_no_listeners(f[i]);
            cf_future_release(f[i]);
        }
    }
}

/* 16: a large set goes through in O(n) (a quadratic iterator would take
 * minutes here; the ctest timeout is the guard, not a timing assertion). */
static void large_set(void **state)
{
    (void)state;
    size_t n = (size_t)(100000 * cf_test_scale());
    cf_future **f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = cf_test_future();
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(f, n, CF_FOREVER, &it), 0);
    for (size_t i = 0; i < n; i++) set_i64(f[n - 1 - i], (int64_t)i);
    for (size_t i = 0; i < n; i++) {
        cf_future *g;
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        if (g != f[n - 1 - i]) fail();
    }
    cf_as_completed_free(it);
    for (size_t i = 0; i < n; i++) cf_future_release(f[i]);
    free(f);
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

static void worker_helps_while_iterating(void **state)
{
    (void)state;
    enum { N = 6 };
    cf_future *f[N];
    for (int i = 0; i < N; i++) f[i] = cf_test_future();
    struct fake_queue fq = {.q = f, .n = N};
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(f, N, CF_FOREVER, &it), 0);
    cf__tls_wait_helper = fake_helper;
    cf__tls_wait_helper_ctx = &fq;
    for (int i = 0; i < N; i++) {
        cf_future *g;
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        assert_ptr_equal(g, f[i]); /* completion order = queue order */
    }
    cf_future *g;
    assert_int_equal(cf_as_completed_next(it, &g), CF_END);
    cf_as_completed_free(it);
    assert_true(fq.calls >= 1);

    /* timing out while helping */
    cf_future *h = cf_test_future();
    struct fake_queue empty = {0};
    cf__tls_wait_helper_ctx = &empty;
    assert_int_equal(cf_as_completed_new(&h, 1, 0.01, &it), 0);
    assert_int_equal(cf_as_completed_next(it, &g), CF_ETIMEDOUT);
    assert_int_equal(cf_as_completed_remaining(it), 1);
    cf_as_completed_free(it);
    cf__tls_wait_helper = NULL;
    cf__tls_wait_helper_ctx = NULL;
    assert_no_listeners(h);
    cf_future_release(h);
    for (int i = 0; i < N; i++) cf_future_release(f[i]);
}

/* A producer on another thread completes what a helping consumer waits
 * for (the trigger hand-over races with the consumer). */
static void *late_completer(void *p)
{
    cf_future **f = p;
    for (int i = 0; i < 200; i++) {
        int64_t v = i;
        assert_int_equal(cf_future_set_result(f[i], &v, sizeof v), 0);
        if (i % 16 == 0) sched_yield();
    }
    return NULL;
}

static void helping_consumer_races_producer(void **state)
{
    (void)state;
    enum { N = 200 };
    int rounds = (int)(10 * cf_test_scale());
    for (int r = 0; r < rounds; r++) {
        cf_future *f[N];
        for (int i = 0; i < N; i++) f[i] = cf_test_future();
        struct fake_queue empty = {0};
        cf_as_completed *it;
        assert_int_equal(cf_as_completed_new(f, N, CF_FOREVER, &it), 0);
        pthread_t t = spawn(late_completer, f);
        cf__tls_wait_helper = fake_helper;
        cf__tls_wait_helper_ctx = &empty;
        for (int i = 0; i < N; i++) {
            cf_future *g;
            assert_int_equal(cf_as_completed_next(it, &g), 0);
            assert_ptr_equal(g, f[i]);
        }
        cf__tls_wait_helper = NULL;
        cf__tls_wait_helper_ctx = NULL;
        cf_as_completed_free(it);
        pthread_join(t, NULL);
        for (int i = 0; i < N; i++) cf_future_release(f[i]);
    }
}

/* SEMANTICS 9 with as_completed: when a callback runs, the iterator has
 * already been notified (next() with the deadline passed still yields). */
static cf_as_completed *g_it;
static _Atomic int g_cb_ok;
static void check_notified_cb(cf_future *f, void *ud)
{
    (void)ud;
    cf_future *g = NULL;
    assert_int_equal(cf_as_completed_next(g_it, &g), 0);
    assert_ptr_equal(g, f);
    atomic_store_explicit(&g_cb_ok, 1, memory_order_relaxed);
}

static void callbacks_after_iterator_notified(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    assert_int_equal(cf_future_add_done_callback(f, check_notified_cb, NULL), 0); /* older */
    assert_int_equal(cf_as_completed_new(&f, 1, CF_POLL, &g_it), 0);
    cf_future *g;
    assert_int_equal(cf_as_completed_next(g_it, &g), CF_ETIMEDOUT);
    set_i64(f, 1);
    assert_int_equal(atomic_load_explicit(&g_cb_ok, memory_order_relaxed), 1);
    assert_int_equal(cf_as_completed_next(g_it, &g), CF_END);
    cf_as_completed_free(g_it);
    cf_future_release(f);
}

/* ---- completion order as any thread observes it ----
 * If a thread sees f0 done and then makes f1 done, as_completed yields f0
 * before f1, however the completer of f0 is delayed. The hook parks f0's
 * completer right after its CAS made f0 done, before it notifies the
 * iterator; an observer thread then looks at f0 and, once it sees f0 done,
 * completes f1; only then is f0's completer let go. */
static cf_future *g_park_target;
static _Atomic int g_parked, g_gate;
static _Atomic uint32_t g_word_at_park;

static void park_after_publish(cf_future *f)
{
    if (f != g_park_target) return;
    atomic_store_explicit(&g_word_at_park, word(f), memory_order_relaxed);
    atomic_store_explicit(&g_parked, 1, memory_order_release);
    while (!atomic_load_explicit(&g_gate, memory_order_acquire)) sched_yield();
}

enum how { BY_RESULT, BY_CANCEL };
enum look { LOOK_DONE, LOOK_RESULT, LOOK_WAIT, LOOK_CANCELLED, LOOK_RESULT_TIMEOUT };

static void complete_by(cf_future *f, enum how how)
{
    if (how == BY_CANCEL) assert_true(cf_future_cancel(f));
    else set_i64(f, 7);
}

struct order_arg {
    cf_future *f0, *f1;
    enum how how0, how1;
    enum look look;
    _Atomic int finished;
};

static void *complete_f0(void *p)
{
    struct order_arg *a = p;
    complete_by(a->f0, a->how0);
    return NULL;
}

/* Observe f0 done (each way returns only once it is done), then make f1
 * done. */
static void *observe_f0_then_complete_f1(void *p)
{
    struct order_arg *a = p;
    switch (a->look) {
    case LOOK_DONE:
        while (!cf_future_done(a->f0)) sched_yield();
        break;
    case LOOK_RESULT: {
        int rc = cf_future_result(a->f0, CF_FOREVER, NULL, NULL);
        assert_true(rc == 0 || rc == CF_ECANCELLED);
        break;
    }
    case LOOK_WAIT: {
        cf_future *fs[1] = {a->f0};
        size_t nd = 0;
        assert_int_equal(cf_wait(fs, 1, CF_FIRST_COMPLETED, CF_FOREVER, &nd), 0);
        assert_int_equal(nd, 1);
        break;
    }
    case LOOK_CANCELLED: /* cancel() on a cancelled future says true */
        while (!(a->how0 == BY_CANCEL ? cf_future_cancel(a->f0) : cf_future_done(a->f0)))
            sched_yield();
        break;
    case LOOK_RESULT_TIMEOUT: { /* done (its CAS happened): no "timed out" */
        int rc = cf_future_result(a->f0, 1e-3, NULL, NULL);
        assert_true(rc == 0 || rc == CF_ECANCELLED);
        break;
    }
    }
    complete_by(a->f1, a->how1);
    atomic_store_explicit(&a->finished, 1, memory_order_release);
    return NULL;
}

static void order_seen_by_observer(void **state)
{
    (void)state;
    cf__test_after_publish = park_after_publish;
    int bad = 0, runs = 0;
    for (int look = LOOK_DONE; look <= LOOK_RESULT_TIMEOUT; look++) {
        for (int how = 0; how < 4; how++) {
            struct order_arg a = {.f0 = cf_test_future(),
                                  .f1 = cf_test_future(),
                                  .how0 = how & 1 ? BY_CANCEL : BY_RESULT,
                                  .how1 = how & 2 ? BY_CANCEL : BY_RESULT,
                                  .look = look};
            /* f1 first in the input: input order must not be the answer. */
            cf_future *fs[2] = {a.f1, a.f0};
            cf_as_completed *it;
            assert_int_equal(cf_as_completed_new(fs, 2, CF_FOREVER, &it), 0);
            g_park_target = a.f0;
            atomic_store_explicit(&g_parked, 0, memory_order_relaxed);
            atomic_store_explicit(&g_gate, 0, memory_order_relaxed);
            pthread_t c = spawn(complete_f0, &a);
            while (!atomic_load_explicit(&g_parked, memory_order_acquire)) sched_yield();
            /* f0 is done (its CAS happened) and its completer is parked. */
            assert_true(
                cf__state_done(atomic_load_explicit(&g_word_at_park, memory_order_relaxed)));
            pthread_t o = spawn(observe_f0_then_complete_f1, &a);
            /* Let the observer run until it has completed f1, or until it
             * sleeps on f0's word waiting for f0 to be fully done. */
            while (!atomic_load_explicit(&a.finished, memory_order_acquire) &&
                   !(word(a.f0) & CF__SLEEPERS))
                sched_yield();
            atomic_store_explicit(&g_gate, 1, memory_order_release);
            pthread_join(c, NULL);
            pthread_join(o, NULL);
            cf_future *g, *h;
            assert_int_equal(cf_as_completed_next(it, &g), 0);
            assert_int_equal(cf_as_completed_next(it, &h), 0);
            runs++;
            if (g != a.f0 || h != a.f1) {
                print_message("look %d how %d: f1 yielded before f0\n", look, how);
                bad++;
            }
            assert_int_equal(cf_as_completed_next(it, &g), CF_END);
            cf_as_completed_free(it);
            assert_no_listeners(a.f0);
            assert_no_listeners(a.f1);
            assert_int_equal(word(a.f0) & (CF__DELIVERING | CF__SLEEPERS), 0);
            cf_future_release(a.f0);
            cf_future_release(a.f1);
        }
    }
    g_park_target = NULL;
    cf__test_after_publish = NULL;
    if (bad) fail_msg("f1 yielded before f0 in %d of %d forced interleavings", bad, runs);
}

/* DELIVERING is set only when there are listeners (never on the hot
 * path), and is set while the completer has not yet notified them. */
static void delivering_only_with_listeners(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    set_i64(f, 1);
    /* (the outcome and SIZE bits describe the result) */
    assert_int_equal(word(f) & ~(CF__OUTCOME_MASK | CF__SIZE_MASK), CF__FINISHED);
    cf_future_release(f);
    f = cf_test_future();
    assert_true(cf_future_cancel(f));
    assert_int_equal(word(f), CF__CANCELLED);
    cf_future_release(f);

    f = cf_test_future();
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(&f, 1, CF_FOREVER, &it), 0);
    cf__test_after_publish = park_after_publish;
    g_park_target = f;
    atomic_store_explicit(&g_parked, 0, memory_order_relaxed);
    atomic_store_explicit(&g_gate, 1, memory_order_relaxed); /* record, do not park */
    set_i64(f, 2);
    assert_true(atomic_load_explicit(&g_parked, memory_order_acquire));
    uint32_t w = atomic_load_explicit(&g_word_at_park, memory_order_relaxed);
    assert_int_equal(w & CF__STATE_MASK, CF__FINISHED);
    assert_true(w & CF__DELIVERING);
    assert_int_equal(word(f) & ~(CF__OUTCOME_MASK | CF__SIZE_MASK), CF__FINISHED); /* delivered */
    cf__test_after_publish = NULL;
    g_park_target = NULL;
    cf_future *g;
    assert_int_equal(cf_as_completed_next(it, &g), 0);
    assert_ptr_equal(g, f);
    cf_as_completed_free(it);
    cf_future_release(f);
}

/* The same without the hook, in a tight loop: another thread completes f0
 * (or cancels it); this thread spins until it sees f0 done and completes
 * f1 at once. */
struct loop_arg {
    cf_future *_Atomic f0;
    _Atomic int round, acked;
};

static void *loop_completer(void *p)
{
    struct loop_arg *a = p;
    for (int r = 1;; r++) {
        int got;
        while ((got = atomic_load_explicit(&a->round, memory_order_acquire)) < r && got >= 0)
            sched_yield();
        if (got < 0) return NULL;
        cf_future *f0 = atomic_load_explicit(&a->f0, memory_order_relaxed);
        if (r % 3 == 0) assert_true(cf_future_cancel(f0));
        else set_i64(f0, r);
        atomic_store_explicit(&a->acked, r, memory_order_release);
    }
}

static void order_tight_loop(void **state)
{
    (void)state;
    int rounds = (int)(2000 * cf_test_scale());
    struct loop_arg a = {NULL};
    pthread_t t = spawn(loop_completer, &a);
    int bad = 0;
    for (int r = 1; r <= rounds; r++) {
        cf_future *f0 = cf_test_future(), *f1 = cf_test_future();
        cf_future *fs[2] = {f1, f0};
        cf_as_completed *it;
        assert_int_equal(cf_as_completed_new(fs, 2, CF_FOREVER, &it), 0);
        atomic_store_explicit(&a.f0, f0, memory_order_relaxed);
        atomic_store_explicit(&a.round, r, memory_order_release);
        while (!cf_future_done(f0)) cf__cpu_relax();
        set_i64(f1, r);
        cf_future *g;
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        if (g != f0) bad++;
        assert_int_equal(cf_as_completed_next(it, &g), 0);
        assert_int_equal(cf_as_completed_next(it, &g), CF_END);
        while (atomic_load_explicit(&a.acked, memory_order_acquire) < r) sched_yield();
        cf_as_completed_free(it);
        cf_future_release(f0);
        cf_future_release(f1);
    }
    atomic_store_explicit(&a.round, -1, memory_order_release);
    pthread_join(t, NULL);
    if (bad) fail_msg("f1 yielded before f0 in %d of %d rounds", bad, rounds);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty),
        cmocka_unit_test(done_first_then_completion_order),
        cmocka_unit_test(duplicates_once_and_own_references),
        cmocka_unit_test(timeout_with_remaining),
        cmocka_unit_test(cancel_wakes_next),
        cmocka_unit_test(free_early),
        cmocka_unit_test(stress_exactly_once),
        cmocka_unit_test(large_set),
        cmocka_unit_test(callbacks_after_iterator_notified),
        cmocka_unit_test(worker_helps_while_iterating),
        cmocka_unit_test(helping_consumer_races_producer),
        cmocka_unit_test(order_seen_by_observer),
        cmocka_unit_test(delivering_only_with_listeners),
        cmocka_unit_test(order_tight_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
