/* Waiters drive the MPI executor's progress (src/mpi/mpi_root.c): a thread
 * that waits on an MPI future without a deadline sends the task and
 * receives the result itself instead of sleeping until the progress
 * thread does. Run by ctest under `mpirun -n 3` and `-n 2`; rank 0 runs the
 * cmocka cases, the other ranks serve.
 *
 * The library's test hook cf__test_mpi_hold_progress (a weak symbol this
 * program defines) keeps the progress thread out of every round while
 * `hold` is set: then only waiters can move a task, so a case that waits
 * would hang without waiter-driven progress. Each wait runs in a thread
 * of its own and the case gives it LONG_WAIT seconds: a hang fails the
 * case (and the job) instead of blocking it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

#define LONG_WAIT 60.0

static atomic_bool hold;

/* The hook (see the top): read by the root's progress thread. */
bool cf__test_mpi_hold_progress(void);
bool cf__test_mpi_hold_progress(void)
{
    return atomic_load(&hold);
}

static cf_executor *ex;

static int square_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, CF_EINVAL, "square wants an int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

/* Sleeps the given number of milliseconds, then returns it. */
static int sleep_task(const void *arg, size_t len, cf_out *out)
{
    int64_t ms;
    if (len != sizeof ms) return cf_out_error(out, CF_EINVAL, "sleep wants an int64");
    memcpy(&ms, arg, sizeof ms);
    usleep((useconds_t)(ms * 1000));
    return cf_out_i64(out, ms);
}

static cf_future *submit_i64(cf_task_fn *fn, int64_t x)
{
    cf_future *f = NULL;
    assert_int_equal(cf_submit(ex, fn, &x, sizeof x, &f), 0);
    return f;
}

/* ---- a waiter in a thread of its own, watched with a deadline ---- */

struct waiter {
    int64_t first, n; /* square first .. first + n - 1, one at a time */
    bool cb;          /* add where_cb to the last future */
    atomic_bool done;
    int bad;
    pthread_t cb_thread; /* where the last future's callback ran */
};

static void where_cb(cf_future *f, void *ud)
{
    (void)f;
    ((struct waiter *)ud)->cb_thread = pthread_self();
}

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    for (int64_t i = w->first; i < w->first + w->n; i++) {
        cf_future *f = submit_i64(square_task, i);
        if (w->cb && i == w->first + w->n - 1) (void)cf_future_add_done_callback(f, where_cb, w);
        int64_t v = -1;
        if (cf_future_result_i64(f, CF_FOREVER, &v) != 0 || v != i * i) w->bad++;
        cf_future_release(f);
    }
    atomic_store(&w->done, true);
    return NULL;
}

static bool await_flag(atomic_bool *flag)
{
    for (int i = 0; i < (int)(LONG_WAIT * 1000) && !atomic_load(flag); i++) usleep(1000);
    return atomic_load(flag);
}

static void require_done(struct waiter *w)
{
    if (!await_flag(&w->done)) {
        /* The waiter hangs: without waiter-driven progress nobody moves
         * its task while the progress thread is held. */
        fprintf(stderr, "a waiter did not get its result in %.0f s\n", LONG_WAIT);
        fflush(stderr);
        _exit(1);
    }
}

/* ---- cases ---- */

/* The progress thread is held: a lone waiter gets every result, and the
 * last future's callback runs in the waiting thread (the one completer). */
static void test_waiter_drives(void **state)
{
    (void)state;
    atomic_store(&hold, true);
    struct waiter w = {.first = 1, .n = 200, .cb = true};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    require_done(&w);
    pthread_join(th, NULL);
    atomic_store(&hold, false);
    assert_int_equal(w.bad, 0);
    assert_true(pthread_equal(w.cb_thread, th));
}

/* Several waiters at once share the MPI token: each gets its own results
 * while the progress thread is held. (No callbacks here: a driver that
 * completes a future somebody listens to stops driving and leaves the
 * rest to the progress thread, which is held.) */
static void test_waiters_share_the_token(void **state)
{
    (void)state;
    enum { T = 4 };
    atomic_store(&hold, true);
    struct waiter w[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        w[i] = (struct waiter){.first = 1000 * (i + 1), .n = 100};
        assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
    }
    for (int i = 0; i < T; i++) require_done(&w[i]);
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    atomic_store(&hold, false);
    for (int i = 0; i < T; i++) assert_int_equal(w[i].bad, 0);
}

/* cf_wait(FIRST_COMPLETED) over a slow and a quick task, driven by the
 * waiter alone: it returns once the quick one is done, not after the slow
 * one (the driver stops when a future someone listens to completes). */
struct first_wait {
    cf_future *fs[2];
    atomic_bool done;
    int rc;
};

static void *first_main(void *arg)
{
    struct first_wait *fw = arg;
    size_t n_done = 0;
    fw->rc = cf_wait(fw->fs, 2, CF_FIRST_COMPLETED, CF_FOREVER, &n_done);
    atomic_store(&fw->done, true);
    return NULL;
}

static void test_first_completed_while_driving(void **state)
{
    (void)state;
    atomic_store(&hold, true);
    struct first_wait fw = {0};
    cf_future *quick = submit_i64(square_task, 5);
    cf_future *slow = submit_i64(sleep_task, 3000);
    fw.fs[0] = quick; /* cf_wait may reorder its array */
    fw.fs[1] = slow;  /* driven first: the last one */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, first_main, &fw), 0);
    if (!await_flag(&fw.done)) {
        fprintf(stderr, "cf_wait(FIRST_COMPLETED) did not return\n");
        fflush(stderr);
        _exit(1);
    }
    pthread_join(th, NULL);
    assert_int_equal(fw.rc, 0);
    assert_true(cf_future_done(quick));
    assert_false(cf_future_done(slow));
    atomic_store(&hold, false); /* the progress thread finishes the slow one */
    int64_t v = -1;
    assert_int_equal(cf_future_result_i64(quick, LONG_WAIT, &v), 0);
    assert_int_equal(v, 25);
    assert_int_equal(cf_future_result_i64(slow, LONG_WAIT, &v), 0);
    assert_int_equal(v, 3000);
    cf_future_release(quick);
    cf_future_release(slow);
}

/* Without the hold, waiters and the progress thread take turns: a burst,
 * waited for in order, and a timed wait (which never drives). */
static void test_mixed_with_progress_thread(void **state)
{
    (void)state;
    enum { N = 2000 };
    cf_future **fs = malloc(N * sizeof *fs);
    assert_non_null(fs);
    for (int i = 0; i < N; i++) fs[i] = submit_i64(square_task, i);
    for (int i = 0; i < N; i++) {
        int64_t v = -1;
        double timeout = i % 3 == 0 ? LONG_WAIT : CF_FOREVER;
        assert_int_equal(cf_future_result_i64(fs[i], timeout, &v), 0);
        assert_int_equal(v, (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    free(fs);
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    int failed = 0;
    int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
    if (rc == 0) {
        const struct CMUnitTest cases[] = {
            cmocka_unit_test(test_waiter_drives),
            cmocka_unit_test(test_waiters_share_the_token),
            cmocka_unit_test(test_first_completed_while_driving),
            cmocka_unit_test(test_mixed_with_progress_thread),
        };
        failed += cmocka_run_group_tests_name("mpi waiters drive", cases, NULL, NULL);
        atomic_store(&hold, false);
        cf_executor_free(ex);
    } else if (rc != CF_MPI_SERVED) {
        fprintf(stderr, "cf_mpi_executor_new: %s\n", cf_strerror(rc));
        failed++;
    }
    MPI_Finalize();
    return failed ? 1 : 0;
}
