/* Waiting on many futures without losing track of the caller's array:
 * cf_as_completed_next_index (the position of each yielded future in the
 * input) and cf_wait_mask (cf_wait's partition as a bit mask, the array
 * untouched), on futures made with cf_future_new, on the thread pool, on
 * the process pool, and on a mix of both in one array.
 *
 * Tasks that run in the process pool coordinate through one MAP_SHARED
 * page mapped before any pool exists (the workers share it). */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "cfutures.h"
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
    return cf_out_i64(out, -1);
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

/* ---- cf_as_completed_next_index ---- */

/* Positions in the input, done ones first (input order), then completion
 * order; a repeated future once, at its first position; next and
 * next_index mix within one iteration. */
static void as_completed_index_small(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future(), *c = cf_test_future(),
              *d = cf_test_future();
    cf_future *fs[] = {a, b, c, a, d, b};
    set_i64(c, 3);
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, 6, CF_FOREVER, &it), 0);
    cf_future *g = NULL;
    size_t idx = 99;
    assert_int_equal(cf_as_completed_next_index(it, NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_as_completed_next_index(NULL, &g, &idx), CF_EINVAL);
    assert_int_equal(cf_as_completed_next_index(it, &g, &idx), 0);
    assert_ptr_equal(g, c);
    assert_int_equal(idx, 2);
    set_i64(d, 4);
    set_i64(a, 1);
    assert_int_equal(cf_as_completed_next_index(it, NULL, &idx), 0); /* f may be NULL */
    assert_int_equal(idx, 4);
    assert_int_equal(cf_as_completed_next(it, &g), 0); /* the old call, same iteration */
    assert_ptr_equal(g, a);
    assert_true(cf_future_cancel(b));
    assert_int_equal(cf_as_completed_next_index(it, &g, &idx), 0);
    assert_ptr_equal(g, b);
    assert_int_equal(idx, 1); /* its first position, not 5 */
    assert_int_equal(cf_as_completed_next_index(it, &g, &idx), CF_END);
    cf_as_completed_free(it);
    for (int i = 0; i < 4; i++) cf_future_release((cf_future *[]){a, b, c, d}[i]);
}

/* Past the linear dedup (bitmap or hash): every index points at the
 * future, at its first occurrence, and every distinct future comes once. */
static void as_completed_index_large(void **state)
{
    (void)state;
    enum { N = 300, D = 100 };
    cf_future *f[D], *fs[N];
    for (int i = 0; i < D; i++) f[i] = cf_test_future();
    for (int i = 0; i < N; i++) fs[i] = f[(i * 37) % D];
    for (int i = 0; i < D; i += 3) set_i64(f[i], i);
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, N, CF_FOREVER, &it), 0);
    for (int i = 1; i < D; i += 3) set_i64(f[i], i);
    for (int i = 2; i < D; i += 3) assert_true(cf_future_cancel(f[i]));
    bool seen[N] = {false};
    cf_future *g;
    size_t idx, count = 0;
    while (cf_as_completed_next_index(it, &g, &idx) == 0) {
        assert_true(idx < N);
        assert_ptr_equal(fs[idx], g);
        for (size_t j = 0; j < idx; j++) assert_ptr_not_equal(fs[j], g); /* first occurrence */
        assert_false(seen[idx]);
        seen[idx] = true;
        count++;
    }
    assert_int_equal(count, D);
    cf_as_completed_free(it);
    for (int i = 0; i < D; i++) cf_future_release(f[i]);
}

/* One array of thread-pool and process-pool futures (even: threads, odd:
 * processes), values kept in a parallel array: the index finds the value
 * without a search. Two gated tasks keep the iterator waiting. */
static void as_completed_index_pools(void **state)
{
    (void)state;
    enum { N = 40 };
    atomic_store_explicit(&sh->gate, 0, memory_order_release);
    cf_executor *tp = thread_pool(2), *pp = process_pool(2);
    cf_future *fs[N + 2];
    int64_t values[N + 2];
    for (int64_t i = 0; i < N; i++) {
        values[i] = 2 * i;
        assert_int_equal(cf_submit(i % 2 ? pp : tp, double_task, &i, sizeof i, &fs[i]), 0);
    }
    assert_int_equal(cf_submit(tp, gate_task, NULL, 0, &fs[N]), 0);
    assert_int_equal(cf_submit(pp, gate_task, NULL, 0, &fs[N + 1]), 0);
    values[N] = values[N + 1] = -1;
    /* A deadline (never reached): without one this thread could run the
     * gated task itself, and nobody would open the gate. */
    cf_as_completed *it;
    assert_int_equal(cf_as_completed_new(fs, N + 2, 120.0, &it), 0);
    bool seen[N + 2] = {false};
    cf_future *g;
    size_t idx;
    for (int k = 0; k < N + 2; k++) {
        if (k == N) open_gate(); /* the 40 others came first */
        assert_int_equal(cf_as_completed_next_index(it, &g, &idx), 0);
        assert_true(idx < N + 2);
        assert_false(seen[idx]);
        seen[idx] = true;
        assert_ptr_equal(g, fs[idx]);
        assert_int_equal(result_i64(g), values[idx]);
        if (k < N) assert_true(idx < N);
    }
    assert_int_equal(cf_as_completed_next_index(it, &g, &idx), CF_END);
    cf_as_completed_free(it);
    for (int i = 0; i < N + 2; i++) cf_future_release(fs[i]);
    cf_executor_free(tp);
    cf_executor_free(pp);
}

/* ---- cf_wait_mask ---- */

static bool bit(const uint64_t *m, size_t i)
{
    return cf_wait_mask_test(m, i);
}

/* The array is left as it was; the bits say which positions are done; a
 * repeated future's positions agree; n_done counts distinct futures. And
 * cf_wait, kept for compatibility, still partitions in place. */
static void wait_mask_leaves_array(void **state)
{
    (void)state;
    cf_future *a = cf_test_future(), *b = cf_test_future(), *c = cf_test_future(),
              *d = cf_test_future();
    cf_future *fs[] = {a, b, c, a, d};
    cf_future *copy[5];
    memcpy(copy, fs, sizeof fs);
    uint64_t m[1] = {~(uint64_t)0};
    size_t nd = 99;
    /* nothing done: a poll */
    assert_int_equal(cf_wait_mask(fs, 5, CF_FIRST_COMPLETED, CF_POLL, m, &nd), 0);
    assert_int_equal(nd, 0);
    assert_int_equal(m[0], 0); /* bits past n cleared too */
    set_i64(c, 1);
    set_i64(a, 2);
    assert_int_equal(cf_wait_mask(fs, 5, CF_FIRST_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_memory_equal(fs, copy, sizeof fs);
    assert_int_equal(nd, 2); /* a counted once */
    assert_int_equal(m[0], (1u << 0) | (1u << 2) | (1u << 3));
    /* ALL_COMPLETED with a deadline that passes: the partition as it stands */
    assert_int_equal(cf_wait_mask(fs, 5, CF_ALL_COMPLETED, 0.01, m, &nd), 0);
    assert_int_equal(nd, 2);
    assert_true(bit(m, 0) && !bit(m, 1) && bit(m, 2) && bit(m, 3) && !bit(m, 4));
    /* FIRST_EXCEPTION returns on an error; outputs may be NULL */
    assert_int_equal(cf_future_set_exception(d, 5, "boom"), 0);
    assert_int_equal(cf_wait_mask(fs, 5, CF_FIRST_EXCEPTION, CF_FOREVER, NULL, NULL), 0);
    assert_int_equal(cf_wait_mask(fs, 5, CF_FIRST_EXCEPTION, CF_FOREVER, m, NULL), 0);
    assert_int_equal(m[0], 0x1d); /* 0, 2, 3, 4 */
    assert_true(cf_future_cancel(b));
    assert_int_equal(cf_wait_mask(fs, 5, CF_ALL_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, 4);
    assert_int_equal(m[0], 0x1f);
    assert_memory_equal(fs, copy, sizeof fs);

    /* The old call partitions the array: done first, duplicates last. */
    cf_future *e = cf_test_future();
    cf_future *old[] = {e, a, e, c};
    assert_int_equal(cf_wait(old, 4, CF_FIRST_COMPLETED, CF_FOREVER, &nd), 0);
    assert_int_equal(nd, 2);
    assert_ptr_equal(old[0], a);
    assert_ptr_equal(old[1], c);
    assert_ptr_equal(old[2], e);
    assert_ptr_equal(old[3], e);
    cf_future *fs2[] = {e, a, e, c};
    assert_int_equal(cf_wait_mask(fs2, 4, CF_FIRST_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(m[0], 0xa); /* 1 and 3 */
    assert_ptr_equal(fs2[0], e);
    cf_future_release(e);
    for (int i = 0; i < 4; i++) cf_future_release((cf_future *[]){a, b, c, d}[i]);
}

/* More than 16 futures, past a 64-bit word: the ALL_COMPLETED one-pass
 * path (no duplicate) sets exactly n bits; with a duplicate the general
 * path still gives both positions the same bit. */
static void wait_mask_large(void **state)
{
    (void)state;
    enum { N = 100 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) fs[i] = cf_test_future();
    uint64_t m[CF_WAIT_MASK_WORDS(N) + 1];
    assert_int_equal(CF_WAIT_MASK_WORDS(N), 2);
    for (int i = 0; i < N; i++)
        if (i % 3 == 0) set_i64(fs[i], i);
    size_t nd;
    memset(m, 0xaa, sizeof m);
    assert_int_equal(cf_wait_mask(fs, N, CF_FIRST_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, 34);
    for (int i = 0; i < N; i++) assert_int_equal(bit(m, (size_t)i), i % 3 == 0);
    assert_int_equal(m[1] >> (N - 64), 0);         /* bits past n cleared */
    assert_int_equal(m[2], 0xaaaaaaaaaaaaaaaaull); /* nothing past the mask written */
    for (int i = 0; i < N; i++)
        if (i % 3) set_i64(fs[i], i);
    memset(m, 0, sizeof m);
    assert_int_equal(cf_wait_mask(fs, N, CF_ALL_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, N);
    assert_int_equal(m[0], ~(uint64_t)0);
    assert_int_equal(m[1], (((uint64_t)1) << (N - 64)) - 1);
    assert_int_equal(m[2], 0);

    /* duplicates, part done: positions of one future agree */
    cf_future *g[N + 10];
    cf_future *pend = cf_test_future();
    for (int i = 0; i < N; i++) g[i] = i % 10 == 0 ? pend : fs[i];
    for (int i = N; i < N + 10; i++) g[i] = fs[2 * (i - N) + 1]; /* repeats, all done */
    assert_int_equal(cf_wait_mask(g, N + 10, CF_ALL_COMPLETED, 0.001, m, &nd), 0);
    assert_int_equal(nd, N - 10); /* the distinct done futures */
    for (int i = 0; i < N + 10; i++) assert_int_equal(bit(m, (size_t)i), g[i] != pend);
    set_i64(pend, 0);
    assert_int_equal(cf_wait_mask(g, N + 10, CF_ALL_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, N - 9);
    for (int i = 0; i < N + 10; i++) assert_true(bit(m, (size_t)i));
    cf_future_release(pend);
    for (int i = 0; i < N; i++) cf_future_release(fs[i]);
}

static void wait_mask_badinput(void **state)
{
    (void)state;
    cf_future *a = cf_test_future();
    cf_future *fs[] = {a, NULL};
    uint64_t m[1] = {7};
    size_t nd = 7;
    assert_int_equal(cf_wait_mask(NULL, 1, CF_ALL_COMPLETED, 0, m, &nd), CF_EINVAL);
    assert_int_equal(cf_wait_mask(fs, 2, CF_ALL_COMPLETED, 0, m, &nd), CF_EINVAL);
    assert_int_equal(cf_wait_mask(fs, 1, (enum cf_return_when)7, 0, m, &nd), CF_EINVAL);
    assert_int_equal(cf_wait_mask(fs, 1, CF_ALL_COMPLETED, NAN, m, &nd), CF_EINVAL);
    assert_int_equal(m[0], 7); /* untouched on an error */
    assert_int_equal(nd, 7);
    assert_int_equal(cf_wait_mask(NULL, 0, CF_ALL_COMPLETED, CF_FOREVER, NULL, &nd), 0);
    assert_int_equal(nd, 0);
    cf_future_release(a);
}

/* Both pools in one array with a parallel array of expected values; a
 * gated task in each keeps FIRST_COMPLETED and a timed ALL_COMPLETED
 * short of all. */
static void wait_mask_pools(void **state)
{
    (void)state;
    enum { N = 30 };
    atomic_store_explicit(&sh->gate, 0, memory_order_release);
    cf_executor *tp = thread_pool(2), *pp = process_pool(2);
    cf_future *fs[N], *copy[N];
    int64_t want[N];
    /* The gated ones are submitted last: a process-pool task queued behind
     * a gated one in its worker's ring would wait for the gate too. */
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < N; i++) {
            bool gated = i == 7 || i == 20;
            if (gated != (pass == 1)) continue;
            want[i] = gated ? -1 : 2 * i;
            cf_executor *ex = i % 2 ? pp : tp;
            if (gated) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &fs[i]), 0);
            else assert_int_equal(cf_submit(ex, double_task, &i, sizeof i, &fs[i]), 0);
        }
    }
    memcpy(copy, fs, sizeof fs);
    uint64_t m[CF_WAIT_MASK_WORDS(N)];
    size_t nd;
    /* a deadline: see as_completed_index_pools */
    assert_int_equal(cf_wait_mask(fs, N, CF_FIRST_COMPLETED, 120.0, m, &nd), 0);
    assert_true(nd >= 1);
    assert_false(bit(m, 7));
    assert_false(bit(m, 20));
    for (int i = 0; i < N; i++)
        if (bit(m, (size_t)i)) assert_int_equal(result_i64(fs[i]), want[i]);
    /* everything but the gated ones */
    for (int i = 0; i < N; i++)
        if (i != 7 && i != 20) (void)result_i64(fs[i]);
    assert_int_equal(cf_wait_mask(fs, N, CF_ALL_COMPLETED, 0.01, m, &nd), 0);
    assert_int_equal(nd, N - 2);
    for (int i = 0; i < N; i++) assert_int_equal(bit(m, (size_t)i), i != 7 && i != 20);
    open_gate();
    assert_int_equal(cf_wait_mask(fs, N, CF_ALL_COMPLETED, CF_FOREVER, m, &nd), 0);
    assert_int_equal(nd, N);
    assert_memory_equal(fs, copy, sizeof fs);
    for (int i = 0; i < N; i++) {
        assert_true(bit(m, (size_t)i));
        assert_int_equal(result_i64(fs[i]), want[i]);
        cf_future_release(fs[i]);
    }
    cf_executor_free(tp);
    cf_executor_free(pp);
}

/* From a pool worker (waits through the pool's helper): a task submits
 * children to its own pool and waits for them with cf_wait_mask. */
static cf_executor *g_tp;

static int parent_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    enum { K = 20 };
    cf_future *kids[K];
    for (int64_t i = 0; i < K; i++)
        if (cf_submit(g_tp, double_task, &i, sizeof i, &kids[i]) != 0) return 1;
    uint64_t m[1];
    size_t nd = 0;
    int rc = cf_wait_mask(kids, K, CF_ALL_COMPLETED, CF_FOREVER, m, &nd);
    int64_t sum = 0;
    for (int i = 0; i < K; i++) {
        int64_t v = 0;
        if (cf_wait_mask_test(m, (size_t)i) && cf_future_result_i64(kids[i], CF_POLL, &v) == 0)
            sum += v;
        cf_future_release(kids[i]);
    }
    if (rc != 0 || nd != K || m[0] != (1u << K) - 1) return 2;
    return cf_out_i64(out, sum);
}

static void wait_mask_in_worker(void **state)
{
    (void)state;
    g_tp = thread_pool(1); /* one worker: it must help, not sleep */
    cf_future *f;
    assert_int_equal(cf_submit(g_tp, parent_task, NULL, 0, &f), 0);
    assert_int_equal(result_i64(f), 2 * (19 * 20 / 2));
    cf_future_release(f);
    cf_executor_free(g_tp);
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
        cmocka_unit_test(as_completed_index_small), cmocka_unit_test(as_completed_index_large),
        cmocka_unit_test(as_completed_index_pools), cmocka_unit_test(wait_mask_leaves_array),
        cmocka_unit_test(wait_mask_large),          cmocka_unit_test(wait_mask_badinput),
        cmocka_unit_test(wait_mask_pools),          cmocka_unit_test(wait_mask_in_worker),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
