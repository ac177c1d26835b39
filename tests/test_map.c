/* cf_map: input order, per-item errors inside chunks, one deadline that
 * cancels the rest, the bounded window, early free, bad input (SEMANTICS
 * 23-26). Runs against the thread pool, directly (pointer mode) and through
 * a wrapping executor that forwards to it without CF__EXEC_SHARED_MEMORY
 * (copy mode, as the process pool uses) and watches every chunk submission. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "core/executor.h"
#include "support/test_env.h"

/* ---- a wrapping executor: forwards to a real pool, observes submits ---- */

#define WRAP_MAX_FUTURES 64

struct wrap_ex {
    struct cf_executor base; /* first: cf_map sees a cf_executor */
    cf_executor *inner;
    size_t default_window; /* what its default_window op answers */
    /* Window check, done at each submit (in the consumer's thread, since
     * cf_map submits from cf_map and cf_map_next only): the chunk being
     * submitted must be fewer than `window` chunks ahead of the consumer. */
    size_t submitted;       /* chunks submitted so far */
    const size_t *consumed; /* items the test has received from cf_map_next */
    size_t chunk, window;   /* what the test asked for */
    size_t max_outstanding;
    size_t violations;
    cf_future *futures[WRAP_MAX_FUTURES]; /* retained, by submission order */
};

static int wrap_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                       cf_future **out)
{
    struct wrap_ex *w = (struct wrap_ex *)ex;
    if (w->consumed) {
        size_t done_chunks = *w->consumed / w->chunk;
        size_t outstanding = w->submitted + 1 - done_chunks;
        if (outstanding > w->window) w->violations++;
        if (outstanding > w->max_outstanding) w->max_outstanding = outstanding;
    }
    int rc = w->inner->ops->submit(w->inner, fn, arg, arg_len, out);
    if (rc == 0 && w->submitted < WRAP_MAX_FUTURES)
        w->futures[w->submitted] = cf_future_retain(*out);
    if (rc == 0) w->submitted++;
    return rc;
}

static int wrap_workers(const cf_executor *ex)
{
    const struct wrap_ex *w = (const struct wrap_ex *)ex;
    return w->inner->ops->workers(w->inner);
}

static size_t wrap_default_window(const cf_executor *ex)
{
    return ((const struct wrap_ex *)ex)->default_window;
}

static const struct cf__executor_ops wrap_ops = {
    .submit = wrap_submit,
    .workers = wrap_workers,
    .default_window = wrap_default_window,
};

static void wrap_init(struct wrap_ex *w, cf_executor *inner, bool copy)
{
    memset(w, 0, sizeof *w);
    w->base.ops = &wrap_ops;
    w->base.caps = copy ? 0 : CF__EXEC_SHARED_MEMORY;
    w->inner = inner;
}

static void wrap_release(struct wrap_ex *w)
{
    for (size_t i = 0; i < WRAP_MAX_FUTURES; i++) cf_future_release(w->futures[i]);
}

static cf_executor *pool(int workers)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = workers}), 0);
    assert_non_null(ex);
    return ex;
}

/* ---- tasks ---- */

static int square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, 99, "bad length %zu", len);
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

/* Fails for x % 5 == 3 with code 100 + x and a message; x % 10 == 8 fails
 * without a message. */
static int square_or_fail(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    if (x % 10 == 8) return (int)(100 + x);
    if (x % 5 == 3) return cf_out_error(out, (int)(100 + x), "item %lld failed", (long long)x);
    return cf_out_i64(out, x * x);
}

/* x bytes of value (uint8_t)x: results of every size, inline or not. */
static int bytes_of(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    void *buf;
    if (cf_out_alloc(out, (size_t)x, &buf) != 0) return cf_out_error(out, 1, "alloc");
    unsigned char *p = buf;
    memset(p, (int)(uint8_t)x, (size_t)x);
    return 0;
}

/* ---- order ---- */

static void check_squares(cf_executor *ex, size_t n, const cf_map_opts *opts)
{
    int64_t *xs = malloc(n * sizeof *xs);
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++) xs[i] = (int64_t)i - 7;
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, n, opts, &it), 0);
    for (size_t i = 0; i < n; i++) {
        int64_t y;
        assert_int_equal(cf_map_next_i64(it, &y), 0);
        assert_int_equal(y, xs[i] * xs[i]);
        assert_int_equal(cf_map_exception(it, NULL, NULL), CF_ESTATE);
    }
    assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
    assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
    cf_map_free(it);
    free(xs);
}

static void test_order(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    size_t chunks[] = {0, 1, 3, 7, 64, 1000, 5000};
    size_t windows[] = {0, 1, 2, 5};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
        for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
            cf_map_opts o = {.chunksize = chunks[c], .window = windows[w]};
            check_squares(ex, 1000, &o);
            check_squares(ex, 1, &o);
        }
    check_squares(ex, 777, NULL);
    struct wrap_ex w;
    wrap_init(&w, ex, true); /* copy mode */
    check_squares(&w.base, 1000, &(cf_map_opts){.chunksize = 13});
    check_squares(&w.base, 1000, NULL);
    wrap_release(&w);
    cf_executor_free(ex);
}

/* Scaled: many items, adaptive chunks, a checksum. */
static void test_many(void **state)
{
    (void)state;
    cf_executor *ex = pool(0);
    size_t n = (size_t)(200000 * cf_test_scale());
    if (n < 1000) n = 1000;
    check_squares(ex, n, NULL);
    cf_executor_free(ex);
}

static void test_result_sizes(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    struct wrap_ex w;
    wrap_init(&w, ex, true);
    cf_executor *exs[] = {ex, &w.base};
    int64_t xs[300];
    for (int i = 0; i < 300; i++) xs[i] = i;
    for (int e = 0; e < 2; e++) {
        cf_map_iter *it;
        assert_int_equal(
            cf_map(exs[e], bytes_of, xs, sizeof *xs, 300, &(cf_map_opts){.chunksize = 17}, &it), 0);
        for (int i = 0; i < 300; i++) {
            const void *data;
            size_t len;
            assert_int_equal(cf_map_next(it, &data, &len), 0);
            assert_non_null(data);
            assert_int_equal(len, (size_t)i);
            assert_int_equal((uintptr_t)data % 8, 0);
            for (int k = 0; k < i; k++)
                assert_int_equal(((const unsigned char *)data)[k], (uint8_t)i);
        }
        assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
        cf_map_free(it);
    }
    wrap_release(&w);
    cf_executor_free(ex);
}

/* ---- per-item errors, in the middle of chunks (SEMANTICS 23, 25, 26) ---- */

static void check_errors(cf_executor *ex, size_t chunksize)
{
    int64_t xs[100];
    for (int i = 0; i < 100; i++) xs[i] = i;
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, square_or_fail, xs, sizeof *xs, 100,
                            &(cf_map_opts){.chunksize = chunksize}, &it),
                     0);
    for (int i = 0; i < 100; i++) {
        const void *data = (const void *)1;
        size_t len = 1;
        int rc = cf_map_next(it, &data, &len);
        int code = 0;
        const char *msg = (const char *)1;
        if (i % 10 == 8) {
            assert_int_equal(rc, CF_ETASK);
            assert_null(data);
            assert_int_equal(len, 0);
            assert_int_equal(cf_map_exception(it, &code, &msg), 0);
            assert_int_equal(code, 100 + i);
            assert_null(msg);
        } else if (i % 5 == 3) {
            assert_int_equal(rc, CF_ETASK);
            assert_int_equal(cf_map_exception(it, &code, &msg), 0);
            assert_int_equal(code, 100 + i);
            char want[64];
            snprintf(want, sizeof want, "item %d failed", i);
            assert_string_equal(msg, want);
            /* Both outputs are optional. */
            assert_int_equal(cf_map_exception(it, NULL, NULL), 0);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(len, sizeof(int64_t));
            int64_t y;
            memcpy(&y, data, sizeof y);
            assert_int_equal(y, (int64_t)i * i);
            assert_int_equal(cf_map_exception(it, &code, &msg), CF_ESTATE);
        }
    }
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    assert_int_equal(cf_map_exception(it, NULL, NULL), CF_ESTATE);
    cf_map_free(it);
}

static void test_item_errors(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    struct wrap_ex w;
    wrap_init(&w, ex, true);
    size_t chunks[] = {1, 8, 10, 0, 100, 1000};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        check_errors(ex, chunks[c]);
        check_errors(&w.base, chunks[c]);
    }
    wrap_release(&w);
    cf_executor_free(ex);
}

/* ---- cf_map_next_batch ---- */

/* Items 0..n-1 through square_or_fail (failures at x % 10 == 8 and
 * x % 5 == 3), read by batches of at most `max`, every third call through
 * cf_map_next instead: the same sequence of outcomes as reading one at a
 * time, a uniform chunk comes whole (up to max), and a batch never spans
 * two chunks. */
static void check_batches(cf_executor *ex, size_t n, size_t chunk, size_t max)
{
    int64_t *args = malloc(n * sizeof *args);
    assert_non_null(args);
    for (size_t i = 0; i < n; i++) args[i] = (int64_t)i;
    cf_map_iter *it;
    cf_map_opts o = {.chunksize = chunk};
    assert_int_equal(cf_map(ex, square_or_fail, args, sizeof *args, n, &o, &it), 0);
    size_t i = 0, calls = 0;
    for (;;) {
        const void *data;
        size_t len, stride, count;
        int rc;
        if (++calls % 3 == 0) {
            rc = cf_map_next(it, &data, &len);
            count = rc == CF_END ? 0 : 1;
            stride = len;
        } else {
            rc = cf_map_next_batch(it, max, &data, &len, &stride, &count);
        }
        if (rc == CF_END) {
            assert_int_equal(count, 0);
            break;
        }
        assert_true(i < n);
        bool fails = i % 10 == 8 || i % 5 == 3;
        if (fails) {
            assert_int_equal(rc, CF_ETASK);
            assert_int_equal(count, 1);
            int code;
            assert_int_equal(cf_map_exception(it, &code, NULL), 0);
            assert_int_equal(code, (int)(100 + i));
            i++;
            continue;
        }
        assert_int_equal(rc, 0);
        assert_true(count >= 1 && count <= max);
        assert_int_equal(len, sizeof(int64_t));
        assert_true(i / chunk == (i + count - 1) / chunk); /* one chunk */
        for (size_t k = 0; k < count; k++, i++) {
            int64_t v;
            memcpy(&v, (const unsigned char *)data + k * stride, sizeof v);
            assert_int_equal(v, (int64_t)(i * i));
        }
    }
    assert_int_equal(i, n);
    size_t count = 7;
    assert_int_equal(cf_map_next_batch(it, 1, NULL, NULL, NULL, &count), CF_END);
    assert_int_equal(count, 0);
    assert_int_equal(cf_map_next_batch(it, 0, NULL, NULL, NULL, &count), CF_EINVAL);
    assert_int_equal(cf_map_next_batch(it, 1, NULL, NULL, NULL, NULL), CF_EINVAL);
    cf_map_free(it);
    free(args);
}

/* Squares only: every chunk is uniform, so each batch is the rest of its
 * chunk (or max). */
static void check_uniform_batches(cf_executor *ex, size_t n, size_t chunk)
{
    int64_t *args = malloc(n * sizeof *args);
    assert_non_null(args);
    for (size_t i = 0; i < n; i++) args[i] = (int64_t)i;
    cf_map_iter *it;
    cf_map_opts o = {.chunksize = chunk};
    assert_int_equal(cf_map(ex, square, args, sizeof *args, n, &o, &it), 0);
    const void *data;
    size_t len, stride, count, i = 0, calls = 0;
    while (cf_map_next_batch(it, SIZE_MAX, &data, &len, &stride, &count) == 0) {
        calls++;
        assert_int_equal(count, i + chunk <= n ? chunk : n - i);
        assert_int_equal(stride, 8);
        for (size_t k = 0; k < count; k++, i++)
            assert_int_equal(((const int64_t *)data)[k], (int64_t)(i * i));
    }
    assert_int_equal(i, n);
    assert_int_equal(calls, (n + chunk - 1) / chunk);
    cf_map_free(it);
    free(args);
}

static void test_next_batch(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    struct wrap_ex w; /* copy mode: results travel as records or packed */
    wrap_init(&w, ex, true);
    size_t chunks[] = {1, 7, 10, 64, 1000};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        check_batches(ex, 2000, chunks[c], 5);
        check_batches(ex, 2000, chunks[c], SIZE_MAX);
        check_batches(&w.base, 2000, chunks[c], 3);
        check_uniform_batches(ex, 2000, chunks[c]);
        check_uniform_batches(&w.base, 2000, chunks[c]);
    }
    assert_int_equal(cf_map_next_batch(NULL, 1, NULL, NULL, NULL, NULL), CF_EINVAL);
    wrap_release(&w);
    cf_executor_free(ex);
}

/* ---- the window (SEMANTICS 25) ---- */

static atomic_size_t g_consumed; /* items the consumer has received */
static atomic_size_t g_window_violations;
static size_t g_window, g_chunk;

/* Checked from inside the task: a chunk only runs after it was submitted,
 * and it may be submitted only while it is fewer than `window` chunks ahead
 * of the chunks the consumer has fully received. */
static int window_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    /* acquire: pairs with the consumer's release increment, so a count we
     * read is one the consumer had reached before it submitted us. */
    size_t consumed = atomic_load_explicit(&g_consumed, memory_order_acquire);
    size_t chunk_index = (size_t)x / g_chunk;
    if (chunk_index >= consumed / g_chunk + g_window)
        atomic_fetch_add_explicit(&g_window_violations, 1, memory_order_relaxed);
    return cf_out_i64(out, x);
}

static void check_window(cf_executor *inner, size_t n, size_t chunk, size_t window,
                         size_t ex_window, bool copy)
{
    struct wrap_ex w;
    wrap_init(&w, inner, copy);
    w.default_window = ex_window;
    size_t consumed = 0;
    size_t effective = window      ? window
                       : ex_window ? ex_window
                                   : 4 * (size_t)cf_executor_workers(inner);
    w.consumed = &consumed;
    w.chunk = chunk;
    w.window = effective;
    g_window = effective;
    g_chunk = chunk;
    atomic_store_explicit(&g_consumed, 0, memory_order_relaxed);
    atomic_store_explicit(&g_window_violations, 0, memory_order_relaxed);

    int64_t *xs = malloc(n * sizeof *xs);
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++) xs[i] = (int64_t)i;
    cf_map_iter *it;
    assert_int_equal(cf_map(&w.base, window_task, xs, sizeof *xs, n,
                            &(cf_map_opts){.chunksize = chunk, .window = window}, &it),
                     0);
    for (size_t i = 0; i < n; i++) {
        int64_t y;
        assert_int_equal(cf_map_next_i64(it, &y), 0);
        assert_int_equal(y, (int64_t)i);
        consumed++;
        /* release: pairs with the acquire load in window_task. */
        atomic_fetch_add_explicit(&g_consumed, 1, memory_order_release);
    }
    assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
    cf_map_free(it);
    free(xs);

    size_t n_chunks = (n + chunk - 1) / chunk;
    assert_int_equal(w.submitted, n_chunks);
    assert_int_equal(w.violations, 0);
    assert_int_equal(atomic_load_explicit(&g_window_violations, memory_order_relaxed), 0);
    /* The window is used, not just respected. */
    assert_int_equal(w.max_outstanding, effective < n_chunks ? effective : n_chunks);
    wrap_release(&w);
}

static void test_window(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    check_window(ex, 200, 1, 3, 0, false);
    check_window(ex, 200, 4, 2, 0, false);
    check_window(ex, 200, 4, 2, 0, true);
    check_window(ex, 200, 1, 1, 0, false);
    check_window(ex, 200, 1, 0, 5, false);  /* the executor's default */
    check_window(ex, 200, 1, 0, 0, true);   /* 4 x workers */
    check_window(ex, 10, 3, 100, 0, false); /* window larger than the input */
    cf_executor_free(ex);
}

/* ---- a map inside a task of the same pool (nested map): the inner
 * waits run other work, so a small pool never deadlocks (SEMANTICS 22) ---- */

struct nested_arg {
    cf_executor *ex;
    int64_t k;
};

static int nested_sum(const void *arg, size_t len, cf_out *out)
{
    struct nested_arg a;
    assert_int_equal(len, sizeof a);
    memcpy(&a, arg, sizeof a);
    int64_t xs[64];
    for (int i = 0; i < 64; i++) xs[i] = a.k * 100 + i;
    cf_map_iter *it;
    int rc = cf_map(a.ex, square, xs, sizeof *xs, 64, &(cf_map_opts){.chunksize = 4, .window = 2},
                    &it);
    if (rc != 0) return cf_out_error(out, 1, "inner cf_map: %d", rc);
    int64_t sum = 0, y;
    while ((rc = cf_map_next_i64(it, &y)) == 0) sum += y;
    cf_map_free(it);
    if (rc != CF_END) return cf_out_error(out, 2, "inner cf_map_next: %d", rc);
    return cf_out_i64(out, sum);
}

static void test_nested(void **state)
{
    (void)state;
    for (int workers = 1; workers <= 2; workers++) {
        cf_executor *ex = pool(workers);
        struct nested_arg args[6];
        for (int k = 0; k < 6; k++) args[k] = (struct nested_arg){ex, k};
        cf_map_iter *it;
        assert_int_equal(
            cf_map(ex, nested_sum, args, sizeof *args, 6, &(cf_map_opts){.chunksize = 1}, &it), 0);
        for (int k = 0; k < 6; k++) {
            int64_t want = 0, got;
            for (int i = 0; i < 64; i++) want += (int64_t)(k * 100 + i) * (k * 100 + i);
            assert_int_equal(cf_map_next_i64(it, &got), 0);
            assert_int_equal(got, want);
        }
        assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
        cf_map_free(it);
        cf_executor_free(ex);
    }
}

/* ---- a gate that tasks wait on, and a record of which items ran ---- */

#define GATE_N 16
static atomic_bool g_gate_open;
static atomic_bool g_item0_started;
static atomic_int g_ran[GATE_N];

static void gate_reset(void)
{
    atomic_store_explicit(&g_gate_open, false, memory_order_relaxed);
    atomic_store_explicit(&g_item0_started, false, memory_order_relaxed);
    for (int i = 0; i < GATE_N; i++) atomic_store_explicit(&g_ran[i], 0, memory_order_relaxed);
}

/* Item 0 blocks its worker until the gate opens (a plain spin: it must not
 * help run other tasks, so the rest stays queued on a one-worker pool). */
static int gated(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    atomic_fetch_add_explicit(&g_ran[x], 1, memory_order_relaxed);
    if (x == 0) {
        /* release/acquire: the test reads g_ran after seeing this flag. */
        atomic_store_explicit(&g_item0_started, true, memory_order_release);
        while (!atomic_load_explicit(&g_gate_open, memory_order_acquire)) sched_yield();
    }
    return cf_out_i64(out, x);
}

/* ---- one deadline; on timeout the rest is cancelled (SEMANTICS 24) ---- */

static void test_timeout_cancels(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    struct wrap_ex w;
    wrap_init(&w, ex, false);
    gate_reset();
    int64_t xs[GATE_N];
    for (int i = 0; i < GATE_N; i++) xs[i] = i;
    cf_map_iter *it;
    assert_int_equal(
        cf_map(&w.base, gated, xs, sizeof *xs, GATE_N,
               &(cf_map_opts){.has_timeout = true, .timeout = 0.05, .chunksize = 1, .window = 4},
               &it),
        0);
    assert_int_equal(w.submitted, 4);
    /* Item 0 cannot finish before the gate opens, so the deadline passes. */
    int64_t y;
    assert_int_equal(cf_map_next_i64(it, &y), CF_ETIMEDOUT);
    /* Every future not yet yielded is cancelled, unless it already runs or
     * ran: nothing is left pending. */
    for (int c = 0; c < 4; c++)
        assert_true(cf_future_done(w.futures[c]) || cf_future_running(w.futures[c]));
    /* Later calls keep answering "timed out", and submit nothing more. */
    assert_int_equal(cf_map_next_i64(it, &y), CF_ETIMEDOUT);
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_ETIMEDOUT);
    assert_int_equal(w.submitted, 4);

    atomic_store_explicit(&g_gate_open, true, memory_order_release);
    cf_map_free(it);
    cf_executor_shutdown(ex, true, false);
    for (int c = 1; c < 4; c++) {
        int ran = atomic_load_explicit(&g_ran[c], memory_order_relaxed);
        /* A cancelled item never runs; one that ran was not cancelled. */
        assert_int_equal(ran, cf_future_cancelled(w.futures[c]) ? 0 : 1);
    }
    for (int c = 4; c < GATE_N; c++)
        assert_int_equal(atomic_load_explicit(&g_ran[c], memory_order_relaxed), 0);
    wrap_release(&w);
    cf_executor_free(ex);
}

/* With has_timeout, 0 polls as everywhere else: the deadline has passed
 * at once, so an item that is not done times out the map. */
static void test_timeout_zero_polls(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    gate_reset();
    int64_t xs[GATE_N];
    for (int i = 0; i < GATE_N; i++) xs[i] = i;
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, gated, xs, sizeof *xs, GATE_N,
                            &(cf_map_opts){.has_timeout = true, .timeout = CF_POLL, .chunksize = 1},
                            &it),
                     0);
    int64_t y;
    /* Item 0 cannot be done before the gate opens. */
    assert_int_equal(cf_map_next_i64(it, &y), CF_ETIMEDOUT);
    atomic_store_explicit(&g_gate_open, true, memory_order_release);
    cf_map_free(it);
    cf_executor_free(ex);
}

/* A timeout without has_timeout would be ignored, so it is refused; so is
 * a non-zero reserved word (an option of a newer library). */
static void test_opts_refused(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    int64_t xs[4] = {1, 2, 3, 4};
    cf_map_iter *it = NULL;
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, &(cf_map_opts){.timeout = 5}, &it),
                     CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, &(cf_map_opts){.timeout = -1}, &it),
                     CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, &(cf_map_opts){.reserved[3] = 1}, &it),
                     CF_EINVAL);
    assert_null(it);
    cf_executor_free(ex);
}

/* Items already done are yielded even after the deadline: only a wait that
 * would outlast it times out. */
static void test_timeout_done_items_still_yield(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    int64_t xs[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 8,
                            &(cf_map_opts){.has_timeout = true, .timeout = 30, .chunksize = 8},
                            &it),
                     0);
    for (int i = 0; i < 8; i++) {
        int64_t y;
        assert_int_equal(cf_map_next_i64(it, &y), 0);
        assert_int_equal(y, xs[i] * xs[i]);
    }
    assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
    cf_map_free(it);
    /* Negative and infinite timeouts mean none, and so does a zeroed
     * struct (no has_timeout). */
    check_squares(ex, 100, &(cf_map_opts){.has_timeout = true, .timeout = -1});
    check_squares(ex, 100, &(cf_map_opts){.timeout = 0});
    check_squares(ex, 100, &(cf_map_opts)CF_MAP_OPTS_INIT);
    check_squares(ex, 100, &(cf_map_opts){.has_timeout = true, .timeout = INFINITY});
    cf_executor_free(ex);
}

/* ---- freeing early cancels what has not run (SEMANTICS 25) ---- */

struct opener {
    struct wrap_ex *w;
};

/* Opens the gate once chunk 1 is done: cancelled by cf_map_free while chunk
 * 0 still ran (or finished before it, if the pool ran it first). */
static void *open_after_cancel(void *arg)
{
    struct opener *o = arg;
    while (!cf_future_done(o->w->futures[1])) sched_yield();
    atomic_store_explicit(&g_gate_open, true, memory_order_release);
    return NULL;
}

static void check_free_early(bool copy)
{
    cf_executor *ex = pool(1);
    struct wrap_ex w;
    wrap_init(&w, ex, copy);
    gate_reset();
    int64_t *xs = malloc(GATE_N * sizeof *xs);
    assert_non_null(xs);
    for (int i = 0; i < GATE_N; i++) xs[i] = i;
    cf_map_iter *it;
    assert_int_equal(cf_map(&w.base, gated, xs, sizeof *xs, GATE_N,
                            &(cf_map_opts){.chunksize = 1, .window = 4}, &it),
                     0);
    while (!atomic_load_explicit(&g_item0_started, memory_order_acquire)) sched_yield();

    pthread_t t;
    struct opener o = {&w};
    if (!copy) assert_int_equal(pthread_create(&t, NULL, open_after_cancel, &o), 0);
    /* Pointer mode: cancels 1..3, then waits for chunk 0, which reads xs.
     * Copy mode: cancels and returns at once. */
    cf_map_free(it);
    free(xs); /* the caller's array may go now (ASan checks no chunk reads it) */
    if (copy) {
        /* Nothing queued is left pending; chunk 0 still runs. */
        assert_false(cf_future_done(w.futures[0]));
        for (int c = 1; c < 4; c++) assert_true(cf_future_done(w.futures[c]));
        atomic_store_explicit(&g_gate_open, true, memory_order_release);
    } else {
        assert_int_equal(pthread_join(t, NULL), 0);
        /* The free waited for chunk 0, which reads the caller's array. */
        assert_true(cf_future_done(w.futures[0]));
    }
    cf_executor_shutdown(ex, true, false);
    assert_int_equal(atomic_load_explicit(&g_ran[0], memory_order_relaxed), 1);
    for (int c = 1; c < 4; c++) {
        /* A cancelled chunk never runs; one that ran was not cancelled. */
        int ran = atomic_load_explicit(&g_ran[c], memory_order_relaxed);
        assert_int_equal(ran, cf_future_cancelled(w.futures[c]) ? 0 : 1);
    }
    for (int c = 4; c < GATE_N; c++)
        assert_int_equal(atomic_load_explicit(&g_ran[c], memory_order_relaxed), 0);
    assert_int_equal(w.submitted, 4);
    wrap_release(&w);
    cf_executor_free(ex);
}

static void test_free_early(void **state)
{
    (void)state;
    check_free_early(false);
    check_free_early(true);
}

/* Free mid-way and at every point of a short iteration: nothing leaks,
 * nothing hangs. */
static void test_free_anywhere(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    int64_t xs[50];
    for (int i = 0; i < 50; i++) xs[i] = i;
    for (int stop = 0; stop <= 51; stop++) {
        cf_map_iter *it;
        assert_int_equal(
            cf_map(ex, square_or_fail, xs, sizeof *xs, 50, &(cf_map_opts){.chunksize = 3}, &it), 0);
        for (int i = 0; i < stop; i++) (void)cf_map_next(it, NULL, NULL);
        cf_map_free(it);
    }
    cf_executor_free(ex);
}

/* ---- chunk results are validated before use (SEMANTICS 33) ----
 * A fake executor answers every chunk with crafted bytes, as a buggy or
 * hostile worker process could: each item must report CF_EBROKEN (or a
 * well-formed value), never read past the buffer (ASan checks). */

static const unsigned char *g_fake;
static size_t g_fake_len;

static int fake_submit_impl(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                            cf_future **out)
{
    (void)ex, (void)fn, (void)arg, (void)arg_len;
    cf_future *f = cf_test_future();
    if (!f) return CF_ENOMEM;
    assert_int_equal(cf_future_set_result(f, g_fake, g_fake_len), 0);
    *out = f;
    return 0;
}

static int fake_workers(const cf_executor *ex)
{
    (void)ex;
    return 1;
}

static const struct cf__executor_ops fake_ops = {
    .submit = fake_submit_impl,
    .workers = fake_workers,
};

static void put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* Map 3 items in one chunk over the crafted bytes; returns how many items
 * reported CF_EBROKEN. */
static int broken_items(const unsigned char *bytes, size_t len)
{
    struct cf_executor fake = {.ops = &fake_ops, .caps = CF__EXEC_SHARED_MEMORY};
    g_fake = bytes;
    g_fake_len = len;
    int64_t xs[3] = {1, 2, 3};
    cf_map_iter *it;
    assert_int_equal(cf_map(&fake, square, xs, sizeof *xs, 3, &(cf_map_opts){.chunksize = 3}, &it),
                     0);
    int broken = 0;
    for (int i = 0; i < 3; i++) {
        int rc = cf_map_next(it, NULL, NULL);
        if (rc == CF_EBROKEN) {
            int code;
            const char *msg;
            assert_int_equal(cf_map_exception(it, &code, &msg), 0);
            assert_int_equal(code, CF_EBROKEN);
            assert_non_null(msg);
            broken++;
        } else {
            assert_true(rc == 0 || rc == CF_ETASK);
        }
    }
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    cf_map_free(it);
    return broken;
}

static void test_malformed_results(void **state)
{
    (void)state;
    unsigned char b[64];
    memset(b, 0, sizeof b);
    /* Too short for a header. */
    assert_int_equal(broken_items(b, 3), 3);
    /* An unknown layout. */
    put32(b, 0x12345678u);
    assert_int_equal(broken_items(b, 8), 3);
    /* Uniform (tag "CFMU"), 8-byte items, but room for only two. */
    memcpy(b, "CFMU", 4);
    put32(b + 4, 8);
    assert_int_equal(broken_items(b, 8 + 16), 3);
    /* Uniform with an absurd item length. */
    put32(b + 4, UINT32_MAX);
    assert_int_equal(broken_items(b, 64), 3);
    /* Records (tag "CFMR"): one good item, then a length past the end. */
    memset(b, 0, sizeof b);
    memcpy(b, "CFMR", 4);
    put32(b + 8, 0);
    put32(b + 12, 8); /* item 0: code 0, 8 bytes */
    put32(b + 24, 0);
    put32(b + 28, 1000); /* item 1: 1000 bytes: past the end */
    assert_int_equal(broken_items(b, 40), 2);
    /* Records: item 0 an error whose message lacks its NUL. */
    memset(b, 0, sizeof b);
    memcpy(b, "CFMR", 4);
    put32(b + 8, 7);
    put32(b + 12, 8);
    memset(b + 16, 'x', 8);
    assert_int_equal(broken_items(b, 24), 3);
    /* Records: the buffer ends after one item. */
    memset(b, 0, sizeof b);
    memcpy(b, "CFMR", 4);
    put32(b + 12, 8);
    assert_int_equal(broken_items(b, 24), 2);
}

/* ---- the same behaviour through the process pool (copy mode for real:
 * items travel in the chunk argument, results through shared memory) ---- */

static void test_process_pool(void **state)
{
    (void)state;
    int err = 0;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2});
    if (!ex && err == CF_ENOTSUP) skip();
    assert_non_null(ex);
    check_squares(ex, 1000, NULL);
    check_squares(ex, 1000, &(cf_map_opts){.chunksize = 1, .window = 3});
    check_squares(ex, 300, &(cf_map_opts){.chunksize = 64});
    check_errors(ex, 8);
    check_errors(ex, 1);
    int64_t xs[100];
    for (int i = 0; i < 100; i++) xs[i] = i;
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, bytes_of, xs, sizeof *xs, 100, &(cf_map_opts){.chunksize = 7}, &it),
                     0);
    for (int i = 0; i < 100; i++) {
        const void *data;
        size_t len;
        assert_int_equal(cf_map_next(it, &data, &len), 0);
        assert_int_equal(len, (size_t)i);
        for (int k = 0; k < i; k++) assert_int_equal(((const unsigned char *)data)[k], (uint8_t)i);
    }
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    cf_map_free(it);
    /* Freeing early waits for nothing and leaves nothing behind. */
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 100, &(cf_map_opts){.chunksize = 1}, &it),
                     0);
    assert_int_equal(cf_map_next(it, NULL, NULL), 0);
    cf_map_free(it);
    cf_executor_free(ex);
}

/* ---- bad input ---- */

static void test_bad_input(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    int64_t xs[4] = {1, 2, 3, 4};
    cf_map_iter *it = (cf_map_iter *)&xs; /* must stay untouched on failure */
    cf_map_iter *const sentinel = it;
    assert_int_equal(cf_map(NULL, square, xs, sizeof *xs, 4, NULL, &it), CF_EINVAL);
    assert_int_equal(cf_map(ex, NULL, xs, sizeof *xs, 4, NULL, &it), CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_map(ex, square, NULL, sizeof *xs, 4, NULL, &it), CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, &(cf_map_opts){.timeout = NAN}, &it),
                     CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, (size_t)UINT32_MAX + 1, 4, NULL, &it), CF_EINVAL);
    assert_int_equal(cf_map(ex, square, xs, UINT32_MAX, SIZE_MAX / 2, NULL, &it), CF_EINVAL);
    assert_ptr_equal(it, sentinel);

    assert_int_equal(cf_map_next(NULL, NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_map_next_i64(NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_map_exception(NULL, NULL, NULL), CF_EINVAL);
    cf_map_free(NULL);

    /* An empty input is fine, and so are NULL args for it. */
    assert_int_equal(cf_map(ex, square, NULL, sizeof *xs, 0, NULL, &it), 0);
    assert_int_equal(cf_map_exception(it, NULL, NULL), CF_ESTATE);
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    cf_map_free(it);

    /* Zero-sized items: the task sees arg_len 0. */
    assert_int_equal(cf_map(ex, square, NULL, 0, 3, NULL, &it), 0);
    for (int i = 0; i < 3; i++) {
        int code;
        assert_int_equal(cf_map_next(it, NULL, NULL), CF_ETASK);
        assert_int_equal(cf_map_exception(it, &code, NULL), 0);
        assert_int_equal(code, 99);
    }
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    cf_map_free(it);

    /* A result of the wrong size for the i64 helper. */
    assert_int_equal(cf_map(ex, bytes_of, xs, sizeof *xs, 2, NULL, &it), 0);
    assert_int_equal(cf_map_next_i64(it, NULL), CF_EINVAL); /* 1 byte */
    cf_map_free(it);

    /* After shutdown: refused, nothing runs. */
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    it = sentinel;
    assert_int_equal(cf_map(ex, square, xs, sizeof *xs, 4, NULL, &it), CF_ESHUTDOWN);
    assert_ptr_equal(it, sentinel);
    cf_executor_free(ex);
}

/* ---- the consumer helps: it may run chunks itself, each exactly once ---- */

#define HELP_N 20000
static atomic_int g_runs[HELP_N];
static pthread_t g_consumer;
static atomic_int g_on_consumer;
static _Thread_local bool tls_initialized;

static int init_worker(void *arg)
{
    (void)arg;
    tls_initialized = true;
    return 0;
}

/* Squares x, counting its runs and whether the consumer ran it; with
 * `need_init`, fails unless the pool's initializer ran in this thread. */
static int counted_square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    atomic_fetch_add_explicit(&g_runs[x % HELP_N], 1, memory_order_relaxed);
    if (pthread_equal(pthread_self(), g_consumer))
        atomic_fetch_add_explicit(&g_on_consumer, 1, memory_order_relaxed);
    return cf_out_i64(out, x * x);
}

static int square_if_initialized(const void *arg, size_t len, cf_out *out)
{
    if (!tls_initialized) return cf_out_error(out, 7, "ran outside a worker");
    return counted_square(arg, len, out);
}

/* Map HELP_N items; every one must run exactly once and come back in
 * order. Returns how many ran in the consumer's thread. */
static int map_counted(cf_executor *ex, cf_task_fn *fn, const cf_map_opts *opts)
{
    static int64_t xs[HELP_N];
    for (int i = 0; i < HELP_N; i++) {
        xs[i] = i;
        atomic_store_explicit(&g_runs[i], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&g_on_consumer, 0, memory_order_relaxed);
    g_consumer = pthread_self();
    cf_map_iter *it;
    assert_int_equal(cf_map(ex, fn, xs, sizeof *xs, HELP_N, opts, &it), 0);
    for (int64_t i = 0; i < HELP_N; i++) {
        int64_t y;
        assert_int_equal(cf_map_next_i64(it, &y), 0);
        assert_int_equal(y, i * i);
    }
    assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
    cf_map_free(it);
    for (int i = 0; i < HELP_N; i++)
        assert_int_equal(atomic_load_explicit(&g_runs[i], memory_order_relaxed), 1);
    return atomic_load_explicit(&g_on_consumer, memory_order_relaxed);
}

static void test_consumer_helps(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    /* Small chunks: many chances for the consumer and the workers to race
     * for the same chunk. */
    (void)map_counted(ex, counted_square, &(cf_map_opts){.chunksize = 7});
    (void)map_counted(ex, counted_square, &(cf_map_opts){.chunksize = 1, .window = 3});
    (void)map_counted(ex, counted_square, NULL);
    /* With a deadline the consumer never runs a chunk (it could not keep
     * the deadline while running one). */
    assert_int_equal(
        map_counted(ex, counted_square,
                    &(cf_map_opts){.chunksize = 7, .has_timeout = true, .timeout = 60}),
        0);
    cf_executor_free(ex);
    /* Nor on a pool with an initializer (tasks may rely on it). */
    assert_int_equal(cf_thread_pool_new(
                         &ex, &(cf_thread_pool_opts){.max_workers = 2, .initializer = init_worker}),
                     0);
    assert_non_null(ex);
    assert_int_equal(map_counted(ex, square_if_initialized, &(cf_map_opts){.chunksize = 7}), 0);
    cf_executor_free(ex);
}

/* Helping is the executor's to allow (CF__EXEC_CALLER_MAY_RUN through
 * ops->run_here), not tied to any one executor: a wrapping executor that
 * grants it gets its chunks run by the consumer even while the only worker
 * of the pool underneath is held busy; one that does not grant it is never
 * asked. */
static atomic_int g_run_here_calls;
static atomic_bool g_gate_open, g_gate_entered;

static bool wrap_run_here(cf_executor *ex, cf_future *f)
{
    struct wrap_ex *w = (struct wrap_ex *)ex;
    atomic_fetch_add_explicit(&g_run_here_calls, 1, memory_order_relaxed);
    return w->inner->ops->run_here(w->inner, f);
}

static const struct cf__executor_ops wrap_help_ops = {
    .submit = wrap_submit,
    .workers = wrap_workers,
    .run_here = wrap_run_here,
};

static int hold_worker(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    /* release/acquire: pair with the test's loads and store of the gate. */
    atomic_store_explicit(&g_gate_entered, true, memory_order_release);
    while (!atomic_load_explicit(&g_gate_open, memory_order_acquire)) sched_yield();
    return cf_out_i64(out, 0);
}

static void test_helping_follows_the_capability(void **state)
{
    (void)state;
    cf_executor *inner = pool(1);
    struct wrap_ex w;
    wrap_init(&w, inner, false);
    w.base.ops = &wrap_help_ops;

    /* Not granted: run_here is there but never called. */
    atomic_store_explicit(&g_run_here_calls, 0, memory_order_relaxed);
    assert_int_equal(map_counted(&w.base, counted_square, &(cf_map_opts){.chunksize = 7}), 0);
    assert_int_equal(atomic_load_explicit(&g_run_here_calls, memory_order_relaxed), 0);
    wrap_release(&w);

    /* Granted, with the pool's only worker held: the consumer runs every
     * chunk itself, or the map would never end (the first once it has
     * given the workers a moment, its length being unknown; the rest, known
     * to be short, at once). */
    wrap_init(&w, inner, false);
    w.base.ops = &wrap_help_ops;
    w.base.caps = CF__EXEC_SHARED_MEMORY | CF__EXEC_CALLER_MAY_RUN;
    atomic_store_explicit(&g_gate_open, false, memory_order_relaxed);
    atomic_store_explicit(&g_gate_entered, false, memory_order_relaxed);
    cf_future *held;
    assert_int_equal(cf_submit(inner, hold_worker, NULL, 0, &held), 0);
    while (!atomic_load_explicit(&g_gate_entered, memory_order_acquire)) sched_yield();
    atomic_store_explicit(&g_run_here_calls, 0, memory_order_relaxed);
    int on_consumer = map_counted(&w.base, counted_square, &(cf_map_opts){.chunksize = 1000});
    assert_int_equal(on_consumer, HELP_N);
    assert_true(atomic_load_explicit(&g_run_here_calls, memory_order_relaxed) >= HELP_N / 1000);
    atomic_store_explicit(&g_gate_open, true, memory_order_release);
    assert_int_equal(cf_future_result(held, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(held);
    wrap_release(&w);
    cf_executor_free(inner);
}

/* Spins for `ms` milliseconds of wall time. */
static void spin_ms(double ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6 < ms);
}

/* Items running now, and the most seen at once. */
static atomic_int g_running, g_max_running;

static int slow_square(const void *arg, size_t len, cf_out *out)
{
    int now = atomic_fetch_add_explicit(&g_running, 1, memory_order_relaxed) + 1;
    int max = atomic_load_explicit(&g_max_running, memory_order_relaxed);
    while (now > max &&
           !atomic_compare_exchange_weak_explicit(&g_max_running, &max, now, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    spin_ms(1);
    atomic_fetch_sub_explicit(&g_running, 1, memory_order_relaxed);
    return counted_square(arg, len, out);
}

#ifdef CF_TEST_HOOKS
extern int64_t cf__test_map_help_wait_ns;
#endif

/* Long items are left to the workers: a consumer that ran them beside the
 * workers would run more items at once than the pool has workers (on this
 * 1-worker pool, two on two CPUs, as it did when it ran any chunk that no
 * worker had started yet: the first one at least, submitted while the
 * worker was still waking up). The consumer's wait before it runs a
 * chunk of unknown or long run time is made very long, so that on a slow
 * machine too the worker has started every chunk by then. */
static void test_long_items_left_to_workers(void **state)
{
    (void)state;
    enum { N = 6 };
#ifdef CF_TEST_HOOKS
    cf__test_map_help_wait_ns = (int64_t)10 * 1000 * 1000 * 1000;
#endif
    cf_executor *ex = pool(1);
    int64_t xs[N];
    for (int i = 0; i < N; i++) xs[i] = i;
    for (int round = 0; round < 3; round++) {
        atomic_store_explicit(&g_on_consumer, 0, memory_order_relaxed);
        atomic_store_explicit(&g_max_running, 0, memory_order_relaxed);
        g_consumer = pthread_self();
        cf_map_iter *it;
        assert_int_equal(
            cf_map(ex, slow_square, xs, sizeof *xs, N, &(cf_map_opts){.chunksize = 1}, &it), 0);
        for (int64_t i = 0; i < N; i++) {
            int64_t y;
            assert_int_equal(cf_map_next_i64(it, &y), 0);
            assert_int_equal(y, i * i);
        }
        assert_int_equal(cf_map_next_i64(it, NULL), CF_END);
        cf_map_free(it);
        assert_int_equal(atomic_load_explicit(&g_on_consumer, memory_order_relaxed), 0);
        assert_int_equal(atomic_load_explicit(&g_max_running, memory_order_relaxed), 1);
    }
    cf_executor_free(ex);
#ifdef CF_TEST_HOOKS
    cf__test_map_help_wait_ns = 0;
#endif
}

/* A pipeline: the last item waits until the consumer has received item 0.
 * Workers run it without trouble; a consumer that ran it while waiting for
 * item 0 would wait for itself. The consumer asks for item 0 only once a
 * worker has started it, and item 0 takes a moment (busy, about 1 ms), so
 * the consumer usually finds it running, not done: the moment a consumer
 * that helped with later chunks would pick item 3. */
static atomic_bool g_item0_seen, g_item0_running;

static int waits_for_consumer(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    memcpy(&x, arg, len);
    if (x == 0) {
        /* release: pairs with the test's acquire load. */
        atomic_store_explicit(&g_item0_running, true, memory_order_release);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do clock_gettime(CLOCK_MONOTONIC, &t);
        while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 1000000L);
    }
    if (x == 3)
        while (!atomic_load_explicit(&g_item0_seen, memory_order_acquire)) sched_yield();
    return cf_out_i64(out, x);
}

static void test_consumer_helps_only_with_what_it_needs(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    int64_t xs[4] = {0, 1, 2, 3};
    for (int round = 0; round < 20; round++) {
        atomic_store_explicit(&g_item0_seen, false, memory_order_relaxed);
        atomic_store_explicit(&g_item0_running, false, memory_order_relaxed);
        cf_map_iter *it;
        assert_int_equal(cf_map(ex, waits_for_consumer, xs, sizeof *xs, 4,
                                &(cf_map_opts){.chunksize = 1, .window = 4}, &it),
                         0);
        /* acquire: pairs with the release store in waits_for_consumer. */
        while (!atomic_load_explicit(&g_item0_running, memory_order_acquire)) sched_yield();
        for (int64_t i = 0; i < 4; i++) {
            int64_t y;
            assert_int_equal(cf_map_next_i64(it, &y), 0);
            assert_int_equal(y, i);
            /* release: pairs with the acquire load in waits_for_consumer. */
            if (i == 0) atomic_store_explicit(&g_item0_seen, true, memory_order_release);
        }
        cf_map_free(it);
    }
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        /* First: forking the process pool's workers while few threads and
         * allocator arenas exist keeps TSan's fork handling within its
         * 64-lock deadlock-detector limit (jemalloc locks every arena at
         * fork). */
        cmocka_unit_test(test_process_pool),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_result_sizes),
        cmocka_unit_test(test_item_errors),
        cmocka_unit_test(test_next_batch),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_timeout_cancels),
        cmocka_unit_test(test_timeout_done_items_still_yield),
        cmocka_unit_test(test_timeout_zero_polls),
        cmocka_unit_test(test_opts_refused),
        cmocka_unit_test(test_free_early),
        cmocka_unit_test(test_free_anywhere),
        cmocka_unit_test(test_malformed_results),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_consumer_helps),
        cmocka_unit_test(test_consumer_helps_only_with_what_it_needs),
        cmocka_unit_test(test_helping_follows_the_capability),
        cmocka_unit_test(test_long_items_left_to_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
