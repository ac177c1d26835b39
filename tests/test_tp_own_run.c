/* A forced interleaving of a waiting task running the awaited task itself.
 *
 * A task that waits on the child it submitted pops that child off its own
 * deque and runs it in its own wait, through the same start CAS as any
 * runner. The pool has one worker, so the child stays on that worker's
 * deque and is popped by its waiter every time. The worker is held
 * (through the pool's test hook) after the pop, before the start CAS,
 * while the main thread cancels the child: the start CAS must lose, the
 * child's function never runs, the wait reports the cancellation, and the
 * pool's reference is dropped as usual (the count is back to the waiter's
 * alone). A 10 s limit on each blocking wait is a hang detector, not a
 * timing assertion. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "thread/thread_pool.h"
#include "support/test_env.h"

#define HANG_S 10 /* a hang detector */

static sem_t held, go;
static _Atomic int hold_point;          /* the point to hold the worker at (0: none) */
static _Atomic(cf_future *) held_child; /* the child the worker was held with */
static _Atomic int child_ran;

/* sem_wait with a hang limit: 0, or -1 after HANG_S seconds. */
static int sem_wait_limited(sem_t *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_S;
    int rc;
    while ((rc = sem_timedwait(s, &ts)) != 0 && errno == EINTR)
        ;
    return rc == 0 ? 0 : -1;
}

static void hold_worker(struct cf__worker *w, int point)
{
    (void)w;
    int want = atomic_load(&hold_point);
    if (point != want) return;
    if (!atomic_compare_exchange_strong(&hold_point, &want, 0)) return;
    atomic_store(&held_child, cf__test_tp_awaited);
    sem_post(&held);
    (void)sem_wait_limited(&go);
}

static int child_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    atomic_fetch_add(&child_ran, 1);
    return cf_out_i64(out, 42);
}

static uint32_t refs_of(cf_future *f)
{
    return atomic_load(&f->refs);
}

/* What the parent task saw, for the main thread to check. */
struct parent_report {
    int rc;        /* the wait's return code */
    int64_t v;     /* the child's result, when rc == 0 */
    uint32_t refs; /* the child's count after the wait */
};
static struct parent_report report;
static cf_executor *pool;
static sem_t parent_done;

/* Submits the child and waits on it
 * (the wait pops the child off this worker's deque and runs it here). */
static int parent_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    cf_future *c;
    int rc = cf_submit(pool, child_task, NULL, 0, &c);
    if (rc) return rc;
    report.rc = cf_future_result_i64(c, CF_FOREVER, &report.v);
    report.refs = refs_of(c);
    sem_post(&parent_done);
    cf_future_release(c);
    return 0;
}

static cf_executor *pool1(void)
{
    cf_thread_pool_opts o = {.max_workers = 1, .pin = CF_PIN_NONE};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    return ex;
}

static cf_future *start(int point)
{
    sem_init(&held, 0, 0);
    sem_init(&go, 0, 0);
    sem_init(&parent_done, 0, 0);
    atomic_store(&child_ran, 0);
    atomic_store(&held_child, NULL);
    memset(&report, 0, sizeof report);
    pool = pool1();
    atomic_store(&hold_point, point);
    atomic_store(&cf__test_tp_hook, hold_worker);
    cf_future *p;
    assert_int_equal(cf_submit(pool, parent_task, NULL, 0, &p), 0);
    assert_int_equal(sem_wait_limited(&held), 0); /* the worker is held at `point` */
    return p;
}

static void finish(cf_future *p)
{
    assert_int_equal(cf_future_result(p, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(p);
    atomic_store(&cf__test_tp_hook, NULL);
    cf_executor_free(pool);
    pool = NULL;
    sem_destroy(&held);
    sem_destroy(&go);
    sem_destroy(&parent_done);
}

/* Cancelled between the pop and the start CAS: not run, the pool's
 * reference dropped as usual. */
static void test_cancel_after_own_pop(void **state)
{
    (void)state;
    cf_future *p = start(CF__TEST_TP_OWN_POPPED);
    cf_future *c = atomic_load(&held_child);
    assert_non_null(c);
    assert_int_equal(refs_of(c), 2);  /* the parent's and the pool's */
    assert_true(cf_future_cancel(c)); /* the parent's reference keeps c alive */
    sem_post(&go);
    assert_int_equal(sem_wait_limited(&parent_done), 0);
    assert_int_equal(report.rc, CF_ECANCELLED);
    assert_int_equal(atomic_load(&child_ran), 0);
    assert_int_equal(report.refs, 1); /* the pool's reference was dropped */
    finish(p);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv); /* run one case: test_x <name> */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_after_own_pop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
