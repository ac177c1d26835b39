/* The process pool's fast paths, each with its window held open:
 * - the hand-off from a submitter back to the collector thread: while
 *   someone submits, the collector naps without the workers' doorbell and
 *   leaves the collecting to the submitter; a submitter never says it has
 *   stopped, so a result that arrives while the collector sleeps in such a
 *   nap must still be collected, with nobody waiting in result();
 * - the collector's deferring to helpers: while helpers harvest (a
 *   submitter every few submits, a thread in result()) the collector
 *   leaves the rings to them; once they stop, a result that arrives in
 *   that window must still be collected, with nobody helping any more;
 * - the channel's fill lock, which replaced a mutex per submit: a second
 *   submitter that finds a channel being filled does not touch it (it
 *   tries another channel, then the overflow list), and both tasks run
 *   with their own arguments;
 * - a worker reuses its result buffer across tasks: results of every
 *   size, none, and errors, in any order, come back exact (never the
 *   previous task's bytes).
 *
 * Tasks run in other processes: they coordinate through one MAP_SHARED
 * page mapped before any pool exists. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "process/proc_help.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

struct shared {
    _Atomic uint32_t gate;  /* gated_task returns once it is non-zero */
    _Atomic uint32_t gate2; /* gated_task2 likewise */
};
static struct shared *sh;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void pause_briefly(void)
{
    struct timespec t = {0, 200000}; /* 0.2 ms */
    nanosleep(&t, NULL);
}

static cf_executor *one_worker_pool(void)
{
    cf_process_pool_opts o = CF_PROCESS_POOL_OPTS_INIT;
    o.max_workers = 1;
    cf_executor *ex = NULL;
    assert_int_equal(cf_process_pool_new(&ex, &o), 0);
    return ex;
}

/* Poll without helping (cf_future_done never collects): true once done. */
static bool done_within(cf_future *f, int64_t ns)
{
    int64_t end = now_ns() + ns;
    while (!cf_future_done(f)) {
        if (now_ns() > end) return false;
        pause_briefly();
    }
    return true;
}

static int gated_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    while (!atomic_load_explicit(&sh->gate, memory_order_acquire)) sched_yield();
    return cf_out_i64(out, 42);
}

static int gated_task2(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    while (!atomic_load_explicit(&sh->gate2, memory_order_acquire)) sched_yield();
    return cf_out_i64(out, 43);
}

/* ---- the hand-off ---- */

static _Atomic int nap_held, nap_release;

/* The collector is about to sleep in a submitter's nap after its last
 * look at the rings: hold it there (the first time) until released. */
static void hold_nap(void)
{
    if (atomic_exchange_explicit(&nap_held, 1, memory_order_acq_rel)) return;
    while (!atomic_load_explicit(&nap_release, memory_order_acquire)) sched_yield();
}

static void test_result_collected_after_submitter_stops(void **state)
{
    (void)state;
    atomic_store(&sh->gate, 0);
    atomic_store(&nap_held, 0);
    atomic_store(&nap_release, 0);
    cf__proc_test_coll_nap = hold_nap; /* before the collector thread exists */
    cf_executor *ex = one_worker_pool();
    cf_future *f = NULL;
    /* A submit: the collector sees a submitter active and naps without the
     * doorbell. The task is still running when it takes its last look. */
    assert_int_equal(cf_submit(ex, gated_task, NULL, 0, &f), 0);
    int64_t end = now_ns() + 10 * 1000000000ll;
    while (!atomic_load_explicit(&nap_held, memory_order_acquire) && now_ns() < end)
        pause_briefly();
    assert_true(atomic_load(&nap_held));
    /* The window: the collector has looked and is about to sleep; the
     * result arrives now, and the submitter has stopped (it neither
     * submits again nor waits in result()). */
    atomic_store_explicit(&sh->gate, 1, memory_order_release);
    struct cf__pslot *s = cf__pp_slot((struct cf__ppool *)ex, 0, 0);
    while (cf__sk_kind(atomic_load_explicit(&s->state, memory_order_acquire)) != CF__SK_DONE &&
           now_ns() < end)
        pause_briefly();
    assert_false(cf_future_done(f)); /* nobody has collected it yet */
    atomic_store_explicit(&nap_release, 1, memory_order_release);
    /* Nobody helps: the collector must come back by itself. */
    assert_true(done_within(f, 5 * 1000000000ll));
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(f, CF_POLL, &v), 0);
    assert_int_equal(v, 42);
    cf_future_release(f);
    cf_executor_free(ex);
    cf__proc_test_coll_nap = NULL;
}

/* ---- the collector defers to helpers ---- */

static _Atomic int defer_held, defer_release;

/* The collector leaves a step to helpers: hold it there (the first time). */
static void hold_defer(void)
{
    if (atomic_exchange_explicit(&defer_held, 1, memory_order_acq_rel)) return;
    while (!atomic_load_explicit(&defer_release, memory_order_acquire)) sched_yield();
}

static bool slot_done_within(cf_executor *ex, uint64_t pos, int64_t ns)
{
    struct cf__pslot *s = cf__pp_slot((struct cf__ppool *)ex, 0, pos);
    int64_t end = now_ns() + ns;
    while (cf__sk_kind(atomic_load_explicit(&s->state, memory_order_acquire)) != CF__SK_DONE) {
        if (now_ns() > end) return false;
        pause_briefly();
    }
    return true;
}

static void test_collector_collects_after_helpers_stop(void **state)
{
    (void)state;
    atomic_store(&sh->gate, 0);
    atomic_store(&sh->gate2, 0);
    atomic_store(&nap_held, 0);
    atomic_store(&nap_release, 0);
    atomic_store(&defer_held, 0);
    atomic_store(&defer_release, 0);
    cf__proc_test_coll_nap = hold_nap; /* before the collector thread exists */
    cf__proc_test_coll_defer = hold_defer;
    cf_executor *ex = one_worker_pool();
    struct cf__ppool *p = (struct cf__ppool *)ex;
    cf_future *a = NULL, *b = NULL;
    /* A submit: the collector naps (a submitter is active); hold it there,
     * after its last look, so that the result of A is ours to harvest. */
    assert_int_equal(cf_submit(ex, gated_task, NULL, 0, &a), 0);
    int64_t end = now_ns() + 10 * 1000000000ll;
    while (!atomic_load_explicit(&nap_held, memory_order_acquire) && now_ns() < end)
        pause_briefly();
    assert_true(atomic_load(&nap_held));
    atomic_store_explicit(&sh->gate, 1, memory_order_release);
    assert_true(slot_done_within(ex, 0, 10 * 1000000000ll));
    /* A helper harvests: the collector's next step defers to helpers. */
    assert_int_equal(cf__pp_help_once(p), 1);
    assert_true(cf_future_done(a));
    assert_int_equal(cf_submit(ex, gated_task2, NULL, 0, &b), 0);
    atomic_store_explicit(&nap_release, 1, memory_order_release);
    while (!atomic_load_explicit(&defer_held, memory_order_acquire) && now_ns() < end)
        pause_briefly();
    assert_true(atomic_load(&defer_held));
    /* The window: the collector has decided to leave this step to the
     * helpers, and they have stopped (nobody submits, harvests or waits
     * in result() any more). B's result arrives now. */
    atomic_store_explicit(&sh->gate2, 1, memory_order_release);
    assert_true(slot_done_within(ex, 1, 10 * 1000000000ll));
    assert_false(cf_future_done(b)); /* nobody has collected it yet */
    atomic_store_explicit(&defer_release, 1, memory_order_release);
    /* The collector must take it by itself. */
    assert_true(done_within(b, 5 * 1000000000ll));
    int64_t v = 0;
    assert_int_equal(cf_future_result_i64(b, CF_POLL, &v), 0);
    assert_int_equal(v, 43);
    assert_int_equal(cf_future_result_i64(a, CF_POLL, &v), 0);
    assert_int_equal(v, 42);
    cf_future_release(a);
    cf_future_release(b);
    cf_executor_free(ex);
    cf__proc_test_coll_nap = NULL;
    cf__proc_test_coll_defer = NULL;
}

/* ---- the fill lock ---- */

static int times_ten(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    assert_int_equal(len, sizeof v); /* in the worker: a failure shows as a crash */
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v * 10);
}

static _Atomic int fill_held, fill_release;

/* A submitter holding the fill lock, slot reserved, not yet filled: hold
 * the first one there until released. */
static void hold_fill(int chan)
{
    (void)chan;
    if (atomic_exchange_explicit(&fill_held, 1, memory_order_acq_rel)) return;
    while (!atomic_load_explicit(&fill_release, memory_order_acquire)) sched_yield();
}

struct submit_arg {
    cf_executor *ex;
    int64_t v;
    cf_future *f;
    int rc;
};

static void *submit_thread(void *a)
{
    struct submit_arg *s = a;
    s->rc = cf_submit(s->ex, times_ten, &s->v, sizeof s->v, &s->f);
    return NULL;
}

static void test_fill_lock_keeps_a_second_submitter_out(void **state)
{
    (void)state;
    atomic_store(&fill_held, 0);
    atomic_store(&fill_release, 0);
    cf__proc_test_in_fill = hold_fill;
    cf_executor *ex = one_worker_pool();
    struct cf__ppool *p = (struct cf__ppool *)ex;
    struct submit_arg a = {.ex = ex, .v = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, submit_thread, &a), 0);
    while (!atomic_load_explicit(&fill_held, memory_order_acquire)) pause_briefly();
    /* A holds the only channel's fill lock, its slot reserved, unfilled.
     * B must not fill anything meanwhile: it goes to the overflow list. */
    struct submit_arg b = {.ex = ex, .v = 2};
    submit_thread(&b);
    assert_int_equal(b.rc, 0);
    assert_int_equal(atomic_load(&p->ch[0].head), 0); /* nothing placed behind A's back */
    assert_int_equal(atomic_load(&p->ov_count), 1);
    atomic_store_explicit(&fill_release, 1, memory_order_release);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    int64_t va = 0, vb = 0;
    assert_int_equal(cf_future_result_i64(a.f, CF_FOREVER, &va), 0);
    assert_int_equal(cf_future_result_i64(b.f, CF_FOREVER, &vb), 0);
    assert_int_equal(va, 10);
    assert_int_equal(vb, 20);
    cf_future_release(a.f);
    cf_future_release(b.f);
    cf_executor_free(ex);
    cf__proc_test_in_fill = NULL;
}

/* Many submitters, no hook: every task runs once with its own argument. */
struct batch_run {
    cf_executor *ex;
    int64_t base;
    int n;
    cf_future **fs;
    int failed;
};

static void *submit_batch(void *a)
{
    struct batch_run *r = a;
    for (int i = 0; i < r->n; i++) {
        int64_t v = r->base + i;
        if (cf_submit(r->ex, times_ten, &v, sizeof v, &r->fs[i]) != 0) r->failed++;
    }
    return NULL;
}

static void test_fill_lock_many_submitters(void **state)
{
    (void)state;
    enum { THREADS = 4 };
    int per = (int)(2000 * cf_test_scale()) + 1;
    cf_process_pool_opts o = CF_PROCESS_POOL_OPTS_INIT;
    o.max_workers = 2;
    o.ring_depth = 16; /* full rings: the overflow list and its feeder join in */
    cf_executor *ex = NULL;
    assert_int_equal(cf_process_pool_new(&ex, &o), 0);
    struct batch_run runs[THREADS];
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++) {
        runs[k] = (struct batch_run){.ex = ex, .base = (int64_t)k * per, .n = per};
        runs[k].fs = calloc((size_t)per, sizeof *runs[k].fs);
        assert_non_null(runs[k].fs);
        assert_int_equal(pthread_create(&t[k], NULL, submit_batch, &runs[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        assert_int_equal(pthread_join(t[k], NULL), 0);
        assert_int_equal(runs[k].failed, 0);
    }
    for (int k = 0; k < THREADS; k++) {
        for (int i = 0; i < per; i++) {
            int64_t v = -1;
            assert_int_equal(cf_future_result_i64(runs[k].fs[i], CF_FOREVER, &v), 0);
            assert_int_equal(v, (runs[k].base + i) * 10);
            cf_future_release(runs[k].fs[i]);
        }
        free(runs[k].fs);
    }
    cf_executor_free(ex);
}

/* ---- result buffers reused in the worker ---- */

/* arg: kind, size. Kinds: 0 cf_out_alloc(size) filled with a pattern of
 * the size; 1 no result at all; 2 cf_out_i64(size); 3 an error. */
struct shape {
    int32_t kind;
    int32_t size;
};

static unsigned char pattern(int32_t size, int32_t i)
{
    return (unsigned char)(size * 31 + i * 7 + 1);
}

static int shaped_task(const void *arg, size_t len, cf_out *out)
{
    struct shape sh_;
    if (len != sizeof sh_) return 1;
    memcpy(&sh_, arg, sizeof sh_);
    if (sh_.kind == 1) return 0;
    if (sh_.kind == 2) return cf_out_i64(out, sh_.size);
    if (sh_.kind == 3) return cf_out_error(out, 7, "error %d", (int)sh_.size);
    void *buf;
    if (cf_out_alloc(out, (size_t)sh_.size, &buf) != 0) return CF_ENOMEM;
    for (int32_t i = 0; i < sh_.size; i++) ((unsigned char *)buf)[i] = pattern(sh_.size, i);
    return 0;
}

static void check_shape(cf_future *f, struct shape w)
{
    const void *data = NULL;
    size_t len = 99;
    int rc = cf_future_result(f, CF_FOREVER, &data, &len);
    if (w.kind == 3) {
        int code = 0;
        const char *msg = NULL;
        assert_int_equal(rc, CF_ETASK);
        assert_int_equal(cf_future_exception(f, CF_POLL, &code, &msg), 0);
        assert_int_equal(code, 7);
        char want[32];
        snprintf(want, sizeof want, "error %d", (int)w.size);
        assert_string_equal(msg, want);
        return;
    }
    assert_int_equal(rc, 0);
    if (w.kind == 1) {
        assert_int_equal(len, 0); /* never the bytes of the task before */
    } else if (w.kind == 2) {
        int64_t v;
        assert_int_equal(len, sizeof v);
        memcpy(&v, data, sizeof v);
        assert_int_equal(v, w.size);
    } else {
        assert_int_equal(len, (size_t)w.size);
        for (int32_t i = 0; i < w.size; i++)
            assert_int_equal(((const unsigned char *)data)[i], pattern(w.size, i));
    }
}

static void test_result_sizes_in_any_order(void **state)
{
    (void)state;
    static const struct shape seq[] = {
        {0, 64},  {1, 0},  {0, 64}, {2, 5},  {0, 100},  {0, 64}, {3, 1},      {0, 64},
        {0, 40},  {0, 33}, {0, 32}, {1, 0},  {0, 5000}, {0, 64}, {0, 0},      {0, 63},
        {0, 200}, {0, 16}, {3, 2},  {0, 64}, {1, 0},    {0, 65}, {0, 100000}, {0, 64},
    };
    enum { N = sizeof seq / sizeof seq[0] };
    cf_executor *ex = one_worker_pool(); /* one worker: the tasks run in this order */
    for (int round = 0; round < 3; round++) {
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            assert_int_equal(cf_submit(ex, shaped_task, &seq[i], sizeof seq[i], &fs[i]), 0);
        for (int i = 0; i < N; i++) {
            check_shape(fs[i], seq[i]);
            cf_future_release(fs[i]);
        }
    }
    cf_executor_free(ex);
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
        cmocka_unit_test(test_result_collected_after_submitter_stops),
        cmocka_unit_test(test_collector_collects_after_helpers_stop),
        cmocka_unit_test(test_fill_lock_keeps_a_second_submitter_out),
        cmocka_unit_test(test_fill_lock_many_submitters),
        cmocka_unit_test(test_result_sizes_in_any_order),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
