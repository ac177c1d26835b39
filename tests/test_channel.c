/* cf_channel: finished futures handed to an event loop through an eventfd.
 * The descriptor is readable exactly when something may be drained (no
 * lost wake-up, and a spurious readiness is cleared by the next drain);
 * drain hands out each attached future once, with its tag, in completion
 * order; futures from the thread pool and the process pool share one
 * channel; epoll waits on it; free detaches what is left. The two windows
 * of the wake-up protocol are held open with the channel's test hooks
 * (core/channel.h), with completions from a pool worker, the process
 * pool's collector and a plain thread.
 *
 * Tasks that run in the process pool coordinate through one MAP_SHARED
 * page mapped before any pool exists (the workers share it). */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "core/channel.h"
#include "core/future.h"
#include "sync/futex.h"
#include "support/test_env.h"
#include "support/test_future.h"

#ifdef CF_TSAN
/* jemalloc's fork handler takes every arena's locks at once, more than
 * ThreadSanitizer's lock-order detector can track (it aborts on a CHECK)
 * when a process pool is made after a thread pool ran; data races are
 * still reported. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

struct shared {
    _Atomic uint32_t gate; /* gate_task waits until it is non-zero */
};
static struct shared *sh;

static void close_gate(void)
{
    atomic_store_explicit(&sh->gate, 0, memory_order_release);
}

static void open_gate(void)
{
    atomic_store_explicit(&sh->gate, 1, memory_order_release);
    cf__futex_wake(&sh->gate, INT32_MAX, true);
}

static int double_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, 7, "bad length %zu", len);
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, 2 * x);
}

static int gate_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    while (!atomic_load_explicit(&sh->gate, memory_order_acquire))
        cf__futex_wait(&sh->gate, 0, cf__now_ns() + 50000000, true);
    return cf_out_i64(out, 77);
}

static void set_i64(cf_future *f, int64_t v)
{
    assert_int_equal(cf_future_set_result(f, &v, sizeof v), 0);
}

static int64_t result_i64(cf_future *f)
{
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &v), 0);
    return v;
}

/* Is the descriptor readable, waiting up to ms (0: a look)? */
static bool readable(cf_channel *ch, int ms)
{
    struct pollfd p = {.fd = cf_channel_fd(ch), .events = POLLIN};
    int r = poll(&p, 1, ms);
    assert_true(r >= 0);
    return r == 1 && (p.revents & POLLIN);
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static cf_executor *thread_pool(int n)
{
    cf_executor *ex = NULL;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = n}), 0);
    return ex;
}

static cf_executor *process_pool(int n)
{
    cf_executor *ex = NULL;
    assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = n}), 0);
    return ex;
}

/* Readable only with something to drain; tags and completion order; a
 * future done before it is added; cancel; the same future twice; a cap
 * smaller than what is ready keeps the descriptor readable. */
static void basics(void **state)
{
    (void)state;
    cf_channel *ch;
    assert_int_equal(cf_channel_new(&ch), 0);
    assert_true(cf_channel_fd(ch) >= 0);
    cf_future *out[8];
    uint64_t tags[8];
    size_t n = 99;
    assert_int_equal(cf_channel_drain(ch, out, tags, 8, &n), 0);
    assert_int_equal(n, 0);
    assert_false(readable(ch, 0));

    enum { K = 5 };
    cf_future *f[K];
    for (int i = 0; i < K; i++) {
        f[i] = cf_test_future();
        assert_int_equal(cf_channel_add(ch, f[i], 100 + (uint64_t)i), 0);
    }
    assert_int_equal(cf_channel_pending(ch), K);
    assert_false(readable(ch, 0));
    set_i64(f[3], 3);
    assert_true(readable(ch, 0));
    assert_true(cf_future_cancel(f[1]));
    set_i64(f[0], 0);
    assert_int_equal(cf_channel_drain(ch, out, tags, 8, &n), 0);
    assert_int_equal(n, 3);
    assert_ptr_equal(out[0], f[3]);
    assert_ptr_equal(out[1], f[1]);
    assert_ptr_equal(out[2], f[0]);
    assert_int_equal(tags[0], 103);
    assert_int_equal(tags[1], 101);
    assert_int_equal(tags[2], 100);
    for (size_t i = 0; i < n; i++) cf_future_release(out[i]); /* the channel's */
    assert_int_equal(cf_channel_pending(ch), 2);
    assert_false(readable(ch, 0));

    /* already done; added twice */
    cf_future *d = cf_test_future();
    set_i64(d, 9);
    assert_int_equal(cf_channel_add(ch, d, 1), 0);
    assert_int_equal(cf_channel_add(ch, d, 2), 0);
    cf_future_release(d); /* the channel keeps it */
    assert_true(readable(ch, 0));
    set_i64(f[2], 2);
    set_i64(f[4], 4);
    /* a cap of 1: the descriptor stays readable while any is left */
    uint64_t want[] = {1, 2, 102, 104};
    for (int k = 0; k < 4; k++) {
        assert_true(readable(ch, 0));
        assert_int_equal(cf_channel_drain(ch, out, tags, 1, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(tags[0], want[k]);
        if (k < 2) assert_int_equal(result_i64(out[0]), 9);
        cf_future_release(out[0]);
    }
    /* at most one spurious readiness, cleared by a drain of nothing */
    if (readable(ch, 0)) {
        assert_int_equal(cf_channel_drain(ch, out, tags, 8, &n), 0);
        assert_int_equal(n, 0);
    }
    assert_false(readable(ch, 0));
    assert_int_equal(cf_channel_pending(ch), 0);

    /* futures NULL: the channel releases them; tags still come */
    cf_future *e = cf_test_future();
    assert_int_equal(cf_channel_add(ch, e, 5), 0);
    set_i64(e, 5);
    cf_future_release(e);
    assert_int_equal(cf_channel_drain(ch, NULL, tags, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tags[0], 5);
    assert_int_equal(cf_channel_drain(ch, NULL, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    cf_channel_free(ch);
    for (int i = 0; i < K; i++) cf_future_release(f[i]);
}

static void badinput(void **state)
{
    (void)state;
    cf_channel *ch;
    size_t n;
    assert_int_equal(cf_channel_new(NULL), CF_EINVAL);
    assert_int_equal(cf_channel_new(&ch), 0);
    assert_int_equal(cf_channel_fd(NULL), CF_EINVAL);
    assert_int_equal(cf_channel_add(NULL, (cf_future *)ch, 0), CF_EINVAL);
    assert_int_equal(cf_channel_add(ch, NULL, 0), CF_EINVAL);
    assert_int_equal(cf_channel_drain(NULL, NULL, NULL, 1, &n), CF_EINVAL);
    assert_int_equal(cf_channel_drain(ch, NULL, NULL, 1, NULL), CF_EINVAL);
    assert_int_equal(cf_channel_pending(NULL), 0);
    cf_channel_free(NULL);
    cf_channel_free(ch);
}

/* Free with futures attached: unfinished ones are detached (no listener
 * left on them, their later completion touches nothing), finished ones
 * not drained are released. */
static void free_detaches(void **state)
{
    (void)state;
    cf_channel *ch;
    assert_int_equal(cf_channel_new(&ch), 0);
    cf_future *a = cf_test_future(), *b = cf_test_future();
    assert_int_equal(cf_channel_add(ch, a, 1), 0);
    assert_int_equal(cf_channel_add(ch, b, 2), 0);
    set_i64(b, 2);
    cf_channel_free(ch);
    assert_int_equal(atomic_load_explicit(&a->state, memory_order_acquire) & CF__HAS_LISTENERS, 0);
    assert_null(a->listeners);
    set_i64(a, 1);
    assert_int_equal(result_i64(a), 1);
    cf_future_release(a);
    cf_future_release(b);
}

/* epoll on the descriptor, futures from both pools in one channel (even
 * tags: threads, odd: processes), the caller's references dropped at
 * once (fire and forget): every tag comes back once with its answer. */
static void epoll_mixed_pools(void **state)
{
    (void)state;
    int n_tasks = (int)(400 * cf_test_scale());
    if (n_tasks < 20) n_tasks = 20;
    cf_executor *tp = thread_pool(2), *pp = process_pool(2);
    cf_channel *ch;
    assert_int_equal(cf_channel_new(&ch), 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    assert_true(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, cf_channel_fd(ch), &ev), 0);
    for (int64_t i = 0; i < n_tasks; i++) {
        cf_future *f;
        assert_int_equal(cf_submit(i % 2 ? pp : tp, double_task, &i, sizeof i, &f), 0);
        assert_int_equal(cf_channel_add(ch, f, (uint64_t)i), 0);
        cf_future_release(f);
    }
    bool *seen = calloc((size_t)n_tasks, sizeof *seen);
    assert_non_null(seen);
    int got = 0, wakes = 0;
    while (got < n_tasks) {
        struct epoll_event out;
        int r = epoll_wait(ep, &out, 1, 30000);
        assert_int_equal(r, 1); /* never 0: the next completion wakes us */
        assert_int_equal(out.data.u64, 42);
        wakes++;
        cf_future *fs[16];
        uint64_t tags[16];
        size_t n;
        assert_int_equal(cf_channel_drain(ch, fs, tags, 16, &n), 0);
        for (size_t k = 0; k < n; k++) {
            assert_true(tags[k] < (uint64_t)n_tasks);
            assert_false(seen[tags[k]]);
            seen[tags[k]] = true;
            assert_true(cf_future_done(fs[k]));
            assert_int_equal(result_i64(fs[k]), 2 * (int64_t)tags[k]);
            cf_future_release(fs[k]);
        }
        got += (int)n;
    }
    assert_int_equal(cf_channel_pending(ch), 0);
    free(seen);
    close(ep);
    cf_channel_free(ch);
    cf_executor_free(tp);
    cf_executor_free(pp);
}

/* ---- the two windows of the wake-up protocol ---- */

static cf_future *g_gated;
static atomic_int g_armed;

/* Inside drain, between its reset of the descriptor and its take of the
 * stack: let the gated task finish and wait until its completer has
 * pushed and written (done is reported only after every waiter node was
 * notified, and the channel's notify does both). */
static void complete_in_drain(cf_channel *ch)
{
    (void)ch;
    if (!atomic_exchange_explicit(&g_armed, 0, memory_order_acq_rel)) return;
    open_gate();
    assert_int_equal(result_i64(g_gated), 77);
}

/* A future completes while the consumer drains, in the window after the
 * reset: whatever the drain returns, the future is never stranded with a
 * descriptor that is not readable. With the reset after the take, the
 * completer's write would be consumed and the node left on the stack
 * with nothing to wake the loop. Completers: a pool worker, then the
 * process pool's collector. */
static void race_complete_during_drain(void **state)
{
    (void)state;
    cf__test_channel_after_reset = complete_in_drain;
    for (int p = 0; p < 2; p++) {
        close_gate();
        cf_executor *ex = p ? process_pool(1) : thread_pool(1);
        cf_channel *ch;
        assert_int_equal(cf_channel_new(&ch), 0);
        assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g_gated), 0);
        assert_int_equal(cf_channel_add(ch, g_gated, 7), 0);
        atomic_store_explicit(&g_armed, 1, memory_order_release);
        cf_future *out[4];
        uint64_t tags[4];
        size_t n, got = 0;
        assert_int_equal(cf_channel_drain(ch, out, tags, 4, &n), 0);
        assert_int_equal(atomic_load_explicit(&g_armed, memory_order_acquire), 0); /* it ran */
        got += n;
        /* The loop's next step: it sleeps until the descriptor is readable.
         * If the future was not handed out, that must wake it. */
        while (got == 0) {
            assert_true(readable(ch, 10000));
            assert_int_equal(cf_channel_drain(ch, out, tags, 4, &n), 0);
            got += n;
        }
        assert_int_equal(got, 1);
        assert_ptr_equal(out[0], g_gated);
        assert_int_equal(tags[0], 7);
        cf_future_release(out[0]);
        /* a spurious readiness left by the window is cleared by one drain */
        if (readable(ch, 0)) {
            assert_int_equal(cf_channel_drain(ch, out, tags, 4, &n), 0);
            assert_int_equal(n, 0);
        }
        assert_false(readable(ch, 0));
        cf_future_release(g_gated);
        cf_channel_free(ch);
        cf_executor_free(ex);
    }
    cf__test_channel_after_reset = NULL;
}

static atomic_int g_in_window, g_drained;
static cf_channel *g_ch;

/* In the completer, after its push found the stack empty and before its
 * write: wait for the consumer to drain. */
static void hold_before_write(cf_channel *ch)
{
    if (ch != g_ch || !atomic_exchange_explicit(&g_armed, 0, memory_order_acq_rel)) return;
    atomic_store_explicit(&g_in_window, 1, memory_order_release);
    while (!atomic_load_explicit(&g_drained, memory_order_acquire)) sched_yield();
}

static void *set_result_thread(void *p)
{
    set_i64(p, 1);
    return NULL;
}

/* The consumer drains between a completer's push and its write: it gets
 * the future, and the late write leaves the descriptor readable with
 * nothing to drain; one drain of nothing clears it (an event loop does
 * not spin on it). Completers: a plain thread, a pool worker, the process
 * pool's collector. */
static void race_drain_before_write(void **state)
{
    (void)state;
    cf__test_channel_before_write = hold_before_write;
    for (int p = 0; p < 3; p++) {
        close_gate();
        cf_executor *ex = p == 1 ? thread_pool(1) : p == 2 ? process_pool(1) : NULL;
        assert_int_equal(cf_channel_new(&g_ch), 0);
        cf_future *f;
        if (ex) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &f), 0);
        else f = cf_test_future();
        assert_int_equal(cf_channel_add(g_ch, f, 3), 0);
        atomic_store_explicit(&g_in_window, 0, memory_order_relaxed);
        atomic_store_explicit(&g_drained, 0, memory_order_relaxed);
        atomic_store_explicit(&g_armed, 1, memory_order_release);
        pthread_t t = 0;
        if (ex) open_gate();
        else t = spawn(set_result_thread, f);
        while (!atomic_load_explicit(&g_in_window, memory_order_acquire)) sched_yield();
        assert_false(readable(g_ch, 0)); /* pushed, not written yet */
        cf_future *out[4];
        uint64_t tags[4];
        size_t n;
        assert_int_equal(cf_channel_drain(g_ch, out, tags, 4, &n), 0);
        assert_int_equal(n, 1);
        assert_ptr_equal(out[0], f);
        assert_int_equal(tags[0], 3);
        cf_future_release(out[0]);
        atomic_store_explicit(&g_drained, 1, memory_order_release);
        /* the late write arrives: readable, with nothing behind it */
        assert_true(readable(g_ch, 10000));
        assert_int_equal(cf_channel_drain(g_ch, out, tags, 4, &n), 0);
        assert_int_equal(n, 0);
        assert_false(readable(g_ch, 0));
        if (t) assert_int_equal(pthread_join(t, NULL), 0);
        (void)result_i64(f);
        cf_future_release(f);
        cf_channel_free(g_ch);
        g_ch = NULL;
        if (ex) cf_executor_free(ex);
    }
    cf__test_channel_before_write = NULL;
}

/* ---- many adders, many completers, one consumer ---- */

struct adder {
    cf_channel *ch;
    cf_executor *ex;
    int first, count;
};

static void *adder_thread(void *p)
{
    struct adder *a = p;
    for (int64_t i = a->first; i < a->first + a->count; i++) {
        cf_future *f;
        assert_int_equal(cf_submit(a->ex, double_task, &i, sizeof i, &f), 0);
        assert_int_equal(cf_channel_add(a->ch, f, (uint64_t)i), 0);
        cf_future_release(f);
    }
    return NULL;
}

static void concurrent_adders(void **state)
{
    (void)state;
    enum { T = 3 };
    int per = (int)(2000 * cf_test_scale());
    if (per < 50) per = 50;
    cf_executor *tp = thread_pool(2), *pp = process_pool(1);
    cf_channel *ch;
    assert_int_equal(cf_channel_new(&ch), 0);
    struct adder a[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        a[i] = (struct adder){ch, i == 2 ? pp : tp, i * per, per};
        t[i] = spawn(adder_thread, &a[i]);
    }
    int total = T * per, got = 0;
    uint8_t *seen = calloc((size_t)total, 1);
    assert_non_null(seen);
    while (got < total) {
        assert_true(readable(ch, 30000));
        cf_future *fs[7]; /* a small cap: leftovers across drains */
        uint64_t tags[7];
        size_t n;
        assert_int_equal(cf_channel_drain(ch, fs, tags, 7, &n), 0);
        for (size_t k = 0; k < n; k++) {
            assert_true(tags[k] < (uint64_t)total);
            assert_int_equal(seen[tags[k]]++, 0);
            assert_int_equal(result_i64(fs[k]), 2 * (int64_t)tags[k]);
            cf_future_release(fs[k]);
        }
        got += (int)n;
    }
    for (int i = 0; i < T; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    free(seen);
    cf_channel_free(ch);
    cf_executor_free(tp);
    cf_executor_free(pp);
}

/* Free while a completer is inside its hand-over (held before its write):
 * free waits for it, so the completer's last steps touch a live channel
 * (ASan and TSan check it). */
static void *free_thread(void *p)
{
    cf_channel_free(p);
    return NULL;
}

static atomic_int g_free_started;

static void slow_write(cf_channel *ch)
{
    if (ch != g_ch || !atomic_exchange_explicit(&g_armed, 0, memory_order_acq_rel)) return;
    atomic_store_explicit(&g_in_window, 1, memory_order_release);
    while (!atomic_load_explicit(&g_free_started, memory_order_acquire)) sched_yield();
    for (int i = 0; i < 2000; i++) sched_yield(); /* give free time to run ahead */
}

static void free_waits_for_completer(void **state)
{
    (void)state;
    cf__test_channel_before_write = slow_write;
    assert_int_equal(cf_channel_new(&g_ch), 0);
    cf_future *f = cf_test_future();
    assert_int_equal(cf_channel_add(g_ch, f, 1), 0);
    atomic_store_explicit(&g_in_window, 0, memory_order_relaxed);
    atomic_store_explicit(&g_free_started, 0, memory_order_relaxed);
    atomic_store_explicit(&g_armed, 1, memory_order_release);
    pthread_t t = spawn(set_result_thread, f);
    while (!atomic_load_explicit(&g_in_window, memory_order_acquire)) sched_yield();
    pthread_t u = spawn(free_thread, g_ch);
    atomic_store_explicit(&g_free_started, 1, memory_order_release);
    assert_int_equal(pthread_join(u, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    g_ch = NULL;
    cf__test_channel_before_write = NULL;
    assert_int_equal(result_i64(f), 1);
    cf_future_release(f);
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
        cmocka_unit_test(basics),
        cmocka_unit_test(badinput),
        cmocka_unit_test(free_detaches),
        cmocka_unit_test(epoll_mixed_pools),
        cmocka_unit_test(race_complete_during_drain),
        cmocka_unit_test(race_drain_before_write),
        cmocka_unit_test(concurrent_adders),
        cmocka_unit_test(free_waits_for_completer),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
