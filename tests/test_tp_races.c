/* Forced interleavings of the thread pool's wake-up protocol.
 *
 * The searching hand-off: a searcher that has just found a task is held
 * (through the pool's test hook) before it stops searching, while every
 * other worker is parked. A second task is published meanwhile - from
 * outside (the injection queue) or as nested work of a running task (its
 * worker's deque). The publisher sees a searcher and wakes nobody; the
 * searcher is then released and runs a task that blocks until the second
 * task has started. Nothing else is submitted, so the second task starts
 * only if the searcher, as it stops searching, notices the queued work and
 * wakes a parked worker. A 10 s limit on each blocking wait is a hang
 * detector, not a timing assertion: without the hand-off check the task
 * never starts at all.
 *
 * The pool freed by a task while its submitter is still inside cf_submit:
 * the submitter is held (the submit hook) after its task is queued until
 * the task has freed the pool and the workers have had time to leave; it
 * then reads the pool's flags and wakes a worker. Without the submit mark
 * the last worker frees the pool meanwhile (AddressSanitizer reports the
 * use after free); with it, the free waits for the submit to end.
 *
 * The searcher that does not run: a worker counted in `searching` is held
 * (the hook at its spin decision) as if the submitter's own thread kept it
 * off its CPU, while the other worker is parked. A burst from outside then
 * finds a searcher at its first push and wakes nobody, and no later push
 * looks (the slot is not empty). Only the submitter's stall check (a
 * backlog nobody took from for CF__SUBSLOT_STALL_EVERY pushes) wakes the
 * parked worker; without it no task of the burst starts before the held
 * worker is let go (the hang limit). */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "thread/thread_pool.h"
#include "support/test_env.h"

#define HANG_S 10 /* a hang detector */

static sem_t hook_entered, hook_release;
static _Atomic int hook_armed;

/* Holds the first worker that finds work after arming. */
static void hold_searcher(struct cf__worker *w, int point)
{
    (void)w;
    if (point != CF__TEST_TP_FOUND_WORK) return;
    int one = 1;
    if (!atomic_compare_exchange_strong(&hook_armed, &one, 0)) return;
    sem_post(&hook_entered);
    sem_wait(&hook_release);
}

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

/* Every worker is between prepare and the end of its wait, with nothing
 * queued: all parked (the event count's waiter count). */
static void wait_all_parked(cf_executor *ex)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    for (int i = 0; i < HANG_S * 1000; i++) {
        if ((int)atomic_load(&p->ec.waiters) == p->n) return;
        usleep(1000);
    }
    fail_msg("the workers never all parked");
}

static sem_t second_started, second_go, nested_submitted, first_done;

static int second_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    sem_post(&second_started);
    return 0;
}

/* Held by the released searcher: blocks its worker (not through a
 * future, so it runs nothing else) until the second task starts. */
static int first_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    int rc = sem_wait_limited(&second_started);
    sem_post(&second_started); /* the nesting task may wait for it too */
    sem_post(&first_done);
    return rc == 0 ? 0 : 1;
}

static cf_executor *pool3(void)
{
    cf_thread_pool_opts o = {.max_workers = 3, .pin = CF_PIN_NONE};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_non_null(ex);
    return ex;
}

static void setup_sems(void)
{
    sem_init(&hook_entered, 0, 0);
    sem_init(&hook_release, 0, 0);
    sem_init(&second_started, 0, 0);
    sem_init(&second_go, 0, 0);
    sem_init(&nested_submitted, 0, 0);
    sem_init(&first_done, 0, 0);
    atomic_store(&cf__test_tp_hook, hold_searcher);
}

static void teardown_sems(void)
{
    atomic_store(&cf__test_tp_hook, NULL);
    sem_destroy(&hook_entered);
    sem_destroy(&hook_release);
    sem_destroy(&second_started);
    sem_destroy(&second_go);
    sem_destroy(&nested_submitted);
    sem_destroy(&first_done);
}

/* The second task comes from outside, into the injection queue. */
static void test_handoff_injected(void **state)
{
    (void)state;
    setup_sems();
    cf_executor *ex = pool3();
    wait_all_parked(ex);

    atomic_store(&hook_armed, 1);
    cf_future *first, *second;
    assert_int_equal(cf_submit(ex, first_task, NULL, 0, &first), 0);
    assert_int_equal(sem_wait_limited(&hook_entered), 0); /* the searcher holds `first` */
    assert_int_equal(cf_submit(ex, second_task, NULL, 0, &second), 0);
    sem_post(&hook_release);

    /* first returns 0 only if second started while first was blocking. */
    assert_int_equal(cf_future_result(first, CF_FOREVER, NULL, NULL), 0);
    assert_int_equal(cf_future_result(second, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(first);
    cf_future_release(second);
    cf_executor_free(ex);
    teardown_sems();
}

/* Runs on its own worker; submits the second task as nested work (onto
 * its own deque) when the test says so, then blocks (not through a
 * future) until that task has started on some other worker. */
static int nesting_task(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    cf_executor *ex = *(cf_executor *const *)arg;
    if (sem_wait_limited(&second_go)) return 2;
    cf_future *second;
    int rc = cf_submit(ex, second_task, NULL, 0, &second);
    sem_post(&nested_submitted);
    if (rc) return 3;
    rc = sem_wait_limited(&second_started);
    sem_post(&second_started); /* first_task waits for it too */
    cf_future_release(second);
    return rc == 0 ? 0 : 1;
}

/* The second task is nested work of a running task (its worker's deque). */
static void test_handoff_nested(void **state)
{
    (void)state;
    setup_sems();
    cf_executor *ex = pool3();
    wait_all_parked(ex);

    cf_future *nester, *first;
    assert_int_equal(cf_submit(ex, nesting_task, &ex, sizeof ex, &nester), 0);
    /* One worker runs nester; wait for the other two to park again. */
    struct cf__pool *p = (struct cf__pool *)ex;
    for (int i = 0; i < HANG_S * 1000 && (int)atomic_load(&p->ec.waiters) != p->n - 1; i++)
        usleep(1000);
    assert_int_equal((int)atomic_load(&p->ec.waiters), p->n - 1);

    atomic_store(&hook_armed, 1);
    assert_int_equal(cf_submit(ex, first_task, NULL, 0, &first), 0);
    assert_int_equal(sem_wait_limited(&hook_entered), 0); /* the searcher holds `first` */
    sem_post(&second_go);
    assert_int_equal(sem_wait_limited(&nested_submitted), 0);
    sem_post(&hook_release);

    assert_int_equal(cf_future_result(nester, CF_FOREVER, NULL, NULL), 0);
    assert_int_equal(cf_future_result(first, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(nester);
    cf_future_release(first);
    cf_executor_free(ex);
    teardown_sems();
}

/* Many rounds of "two tasks at once on an idle pool": every task must
 * start without another submit (each round's tasks wait for each other,
 * not through futures, so a stranded one fails the round). */
static _Atomic int round_arrived;

static int pair_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_fetch_add(&round_arrived, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&round_arrived) < 2) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > HANG_S) return 1;
        sched_yield();
    }
    return 0;
}

static void test_pairs_on_idle_pool(void **state)
{
    (void)state;
    cf_executor *ex = pool3();
    for (int r = 0; r < 200; r++) {
        wait_all_parked(ex);
        atomic_store(&round_arrived, 0);
        cf_future *a, *b;
        assert_int_equal(cf_submit(ex, pair_task, NULL, 0, &a), 0);
        assert_int_equal(cf_submit(ex, pair_task, NULL, 0, &b), 0);
        assert_int_equal(cf_future_result(a, CF_FOREVER, NULL, NULL), 0);
        assert_int_equal(cf_future_result(b, CF_FOREVER, NULL, NULL), 0);
        cf_future_release(a);
        cf_future_release(b);
    }
    cf_executor_free(ex);
}

static _Atomic int task_freed_pool;
static pthread_t held_submitter;

static void hold_submit_until_freed(struct cf__pool *p)
{
    (void)p;
    if (!pthread_equal(pthread_self(), held_submitter)) return;
    for (int i = 0; i < HANG_S * 1000 && !atomic_load(&task_freed_pool); i++) usleep(1000);
    assert_true(atomic_load(&task_freed_pool));
    usleep(50 * 1000); /* the workers leave; the last one frees the pool */
}

static int free_own_pool(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    cf_executor *ex;
    memcpy(&ex, arg, sizeof ex);
    cf_executor_free(ex);
    atomic_store(&task_freed_pool, 1);
    return 0;
}

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}

static void test_pool_freed_by_task_during_submit(void **state)
{
    (void)state;
    /* A sanitizer starts its helper thread with the first thread the
     * process makes: make one first, so the count below is stable. */
    cf_executor_free(pool3());
    int before = thread_count();
    /* The submitter is held before its wake-up check: the workers must
     * find the task by searching, so they spin (fixed, long) instead of
     * parking. */
    setenv("CFUTURES_SPIN_NS", "1000000000", 1);
    cf_executor *ex = pool3();
    unsetenv("CFUTURES_SPIN_NS");
    atomic_store(&task_freed_pool, 0);
    held_submitter = pthread_self();
    atomic_store(&cf__test_tp_submit_hook, hold_submit_until_freed);
    cf_future *f;
    int rc = cf_submit(ex, free_own_pool, &ex, sizeof ex, &f);
    atomic_store(&cf__test_tp_submit_hook, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    /* The workers leave on their own (detached), the last freeing the
     * pool: wait until they have. */
    while (thread_count() > before) usleep(1000);
}

static _Atomic int spin_hold_armed;
static sem_t spin_held, spin_release;

/* Holds the first worker that reaches its spin decision after arming: it
 * is counted in `searching` and runs nothing. */
static void hold_at_spin(struct cf__worker *w, int point)
{
    (void)w;
    if (point != CF__TEST_TP_SPIN_DECIDED) return;
    int one = 1;
    if (!atomic_compare_exchange_strong(&spin_hold_armed, &one, 0)) return;
    sem_post(&spin_held);
    sem_wait(&spin_release);
}

static int return_arg(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    (void)len;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v);
}

static void test_burst_behind_held_searcher(void **state)
{
    (void)state;
    enum { BURST = 4 * CF__SUBSLOT_STALL_EVERY };
    sem_init(&spin_held, 0, 0);
    sem_init(&spin_release, 0, 0);
    cf_thread_pool_opts o = {.max_workers = 2, .pin = CF_PIN_NONE};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    struct cf__pool *p = (struct cf__pool *)ex;
    wait_all_parked(ex);
    atomic_store(&spin_hold_armed, 1);
    atomic_store(&cf__test_tp_hook, hold_at_spin);
    /* One task wakes a worker; when it has run it, it searches (held). */
    cf_future *first;
    int64_t v = -1;
    assert_int_equal(cf_submit(ex, return_arg, &v, sizeof v, &first), 0);
    assert_int_equal(sem_wait_limited(&spin_held), 0);
    assert_int_equal(cf_future_result(first, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(first);
    /* The other worker parks (it may have been woken meanwhile). */
    for (int i = 0; i < HANG_S * 1000 && atomic_load(&p->ec.waiters) != 1; i++) usleep(1000);
    assert_int_equal(atomic_load(&p->ec.waiters), 1);
    assert_int_equal(atomic_load(&p->searching), 1);

    cf_future *fs[BURST];
    for (int64_t i = 0; i < BURST; i++)
        assert_int_equal(cf_submit(ex, return_arg, &i, sizeof i, &fs[i]), 0);
    /* The oldest STALL_EVERY tasks were queued before the stall check
     * woke the parked worker, which takes in submission order: they start
     * while the searcher is still held. A deadline: a waiting thread then
     * runs no task itself. (The youngest tasks may wait for the held
     * worker: the submitter no longer pushes, so nothing looks again.) */
    size_t done = 0;
    int rc = cf_wait(fs, CF__SUBSLOT_STALL_EVERY, CF_ALL_COMPLETED, HANG_S, &done);
    sem_post(&spin_release);
    atomic_store(&cf__test_tp_hook, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(done, CF__SUBSLOT_STALL_EVERY);
    assert_int_equal(cf_wait(fs, BURST, CF_ALL_COMPLETED, CF_FOREVER, &done), 0);
    assert_int_equal(done, BURST);
    int64_t sum = 0; /* cf_wait permutes fs */
    for (int64_t i = 0; i < BURST; i++) {
        int64_t got = -1;
        assert_int_equal(cf_future_result_i64(fs[i], 0, &got), 0);
        sum += got;
        cf_future_release(fs[i]);
    }
    assert_int_equal(sum, (int64_t)BURST * (BURST - 1) / 2);
    cf_executor_free(ex);
    sem_destroy(&spin_held);
    sem_destroy(&spin_release);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv); /* run one case: test_x <name> */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handoff_injected),
        cmocka_unit_test(test_handoff_nested),
        cmocka_unit_test(test_pairs_on_idle_pool),
        cmocka_unit_test(test_pool_freed_by_task_during_submit),
        cmocka_unit_test(test_burst_behind_held_searcher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
