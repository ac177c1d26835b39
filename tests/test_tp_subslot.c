/* The outside submitter's slot (src/thread/subslot.h): forced interleavings
 * and the slot registry.
 *
 * - A slot goes from empty to non-empty while the pool's last worker parks:
 *   the worker is held (through the pool's test hook) after it left the
 *   searching count, before it announces itself parked (the submitter then
 *   sees nobody searching and nobody parked, and wakes nobody), or after it
 *   announced itself (the submitter wakes it). Either way the task must
 *   start: the parker's re-check has to look at every slot.
 * - Two takers on one slot's old end: a worker is held between reading the
 *   oldest task and its CAS of taken while another thread takes that same
 *   task; the worker's CAS must fail and it must take the next one. Every
 *   task runs exactly once.
 * - The registry: threads that come and go reuse slots; more concurrent
 *   submitters than slots fall back to the injection queue; a thread that
 *   outlives the pool it submitted to exits cleanly.
 * Tasks report through semaphores, not futures, so no waiting thread can
 * run them itself. A 10 s limit on each wait is a hang detector, not a
 * timing assertion: a stranded task never starts at all. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "core/future.h"
#include "thread/thread_pool.h"
#include "support/test_env.h"

#define HANG_S 10 /* a hang detector */

static sem_t hook_entered, hook_release, task_ran;
static _Atomic int hook_point; /* the worker test point to hold at (0: none) */
static _Atomic int runs[4];

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

static void wait_all_parked(cf_executor *ex)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    for (int i = 0; i < HANG_S * 1000; i++) {
        if ((int)atomic_load(&p->ec.waiters) == p->n) return;
        usleep(1000);
    }
    fail_msg("the workers never all parked");
}

/* Holds the first worker that reaches the armed point. */
static void hold_worker(struct cf__worker *w, int point)
{
    (void)w;
    int want = point;
    if (!atomic_compare_exchange_strong(&hook_point, &want, 0)) return;
    sem_post(&hook_entered);
    sem_wait(&hook_release);
}

/* Holds the first taker that reaches the CAS after arming. */
static _Atomic int taker_armed;
static void hold_taker(struct cf__subslot *s)
{
    (void)s;
    int one = 1;
    if (!atomic_compare_exchange_strong(&taker_armed, &one, 0)) return;
    sem_post(&hook_entered);
    sem_wait(&hook_release);
}

static int mark_task(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    int i;
    memcpy(&i, arg, sizeof i);
    atomic_fetch_add(&runs[i], 1);
    sem_post(&task_ran);
    return 0;
}

static cf_executor *pool_of(int n)
{
    cf_thread_pool_opts o = {.max_workers = n, .pin = CF_PIN_NONE};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    return ex;
}

static void setup(void)
{
    sem_init(&hook_entered, 0, 0);
    sem_init(&hook_release, 0, 0);
    sem_init(&task_ran, 0, 0);
    for (int i = 0; i < 4; i++) atomic_store(&runs[i], 0);
}

static void teardown(void)
{
    atomic_store(&cf__test_tp_hook, NULL);
    atomic_store(&cf__test_subslot_hook, NULL);
    sem_destroy(&hook_entered);
    sem_destroy(&hook_release);
    sem_destroy(&task_ran);
}

/* The last worker runs task 0, then parks and is held at `point`; task 1
 * is submitted into the now empty slot meanwhile. */
static void slot_fills_while_parking(int point)
{
    setup();
    atomic_store(&cf__test_tp_hook, hold_worker);
    cf_executor *ex = pool_of(1);
    wait_all_parked(ex);
    atomic_store(&hook_point, point);
    int i0 = 0, i1 = 1;
    cf_future *f0, *f1;
    assert_int_equal(cf_submit(ex, mark_task, &i0, sizeof i0, &f0), 0);
    assert_int_equal(sem_wait_limited(&hook_entered), 0); /* ran task 0, now parking */
    assert_int_equal(atomic_load(&runs[0]), 1);
    assert_int_equal(cf_submit(ex, mark_task, &i1, sizeof i1, &f1), 0);
    sem_post(&hook_release);
    assert_int_equal(sem_wait_limited(&task_ran), 0); /* task 0 */
    assert_int_equal(sem_wait_limited(&task_ran), 0); /* task 1: not stranded */
    assert_int_equal(atomic_load(&runs[1]), 1);
    cf_future_release(f0);
    cf_future_release(f1);
    cf_executor_free(ex);
    teardown();
}

static void test_slot_fills_before_parker_announces(void **state)
{
    (void)state;
    slot_fills_while_parking(CF__TEST_TP_PARK_DECIDED);
}

static void test_slot_fills_after_parker_announces(void **state)
{
    (void)state;
    slot_fills_while_parking(CF__TEST_TP_PARK_PREPARED);
}

/* A worker holds the oldest task of the slot, not yet taken (before its
 * CAS); this thread takes that same task; the worker then takes the next. */
static void test_two_takers_same_old_end(void **state)
{
    (void)state;
    setup();
    atomic_store(&cf__test_subslot_hook, hold_taker);
    cf_executor *ex = pool_of(1);
    struct cf__pool *p = (struct cf__pool *)ex;
    wait_all_parked(ex);
    atomic_store(&taker_armed, 1);
    int i0 = 0, i1 = 1;
    cf_future *f0, *f1;
    assert_int_equal(cf_submit(ex, mark_task, &i0, sizeof i0, &f0), 0);
    assert_int_equal(sem_wait_limited(&hook_entered), 0); /* the worker read task 0 */
    assert_int_equal(cf_submit(ex, mark_task, &i1, sizeof i1, &f1), 0);
    cf_future *g = cf__pool_take_one(p); /* the same old end */
    assert_ptr_equal(g, f0);
    assert_true(cf__future_run(g));
    cf_future_release(g); /* the pool's reference, now ours */
    sem_post(&hook_release);
    assert_int_equal(sem_wait_limited(&task_ran), 0);
    assert_int_equal(sem_wait_limited(&task_ran), 0);
    assert_int_equal(cf_future_result(f0, CF_FOREVER, NULL, NULL), 0);
    assert_int_equal(cf_future_result(f1, CF_FOREVER, NULL, NULL), 0);
    assert_int_equal(atomic_load(&runs[0]), 1);
    assert_int_equal(atomic_load(&runs[1]), 1);
    assert_null(cf__pool_take_one(p)); /* nothing left behind */
    cf_future_release(f0);
    cf_future_release(f1);
    cf_executor_free(ex);
    teardown();
}

/* ---- growing and shrinking the ring ---- */

enum { GROW_N = 3000 };
static int order[GROW_N];
static _Atomic int order_n;
static sem_t blocker_go;

static int blocker_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    return sem_wait_limited(&blocker_go) == 0 ? 0 : 1;
}

static int record_task(const void *arg, size_t len, cf_out *out)
{
    (void)len, (void)out;
    int i;
    memcpy(&i, arg, sizeof i);
    /* One worker: runs one at a time; the test reads after the waits. */
    order[atomic_fetch_add(&order_n, 1)] = i;
    return 0;
}

/* A backlog larger than the first ring: the ring grows (the queued tasks
 * copied), one worker still runs them in submission order, and the next
 * push into the empty slot goes back to the smallest ring. */
static void test_ring_grows_and_shrinks(void **state)
{
    (void)state;
    sem_init(&blocker_go, 0, 0);
    atomic_store(&order_n, 0);
    /* Only the worker runs tasks: this thread, waiting, would otherwise
     * run the ones it waits for beside it, out of order. */
    setenv("CFUTURES_WAIT_HELP", "0", 1);
    cf_executor *ex = pool_of(1);
    unsetenv("CFUTURES_WAIT_HELP");
    struct cf__pool *p = (struct cf__pool *)ex;
    cf_future *blocker, **fs = calloc(GROW_N, sizeof *fs);
    assert_non_null(fs);
    assert_int_equal(cf_submit(ex, blocker_task, NULL, 0, &blocker), 0);
    for (int i = 0; i < GROW_N; i++)
        assert_int_equal(cf_submit(ex, record_task, &i, sizeof i, &fs[i]), 0);
    struct cf__subslot *s = atomic_load(&p->subs->tab[0]);
    assert_non_null(s);
    assert_true(s->size > 0); /* grew: the worker was held by the blocker */
    sem_post(&blocker_go);
    assert_int_equal(cf_future_result(blocker, CF_FOREVER, NULL, NULL), 0);
    for (int i = 0; i < GROW_N; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(fs[i]);
    }
    for (int i = 0; i < GROW_N; i++) assert_int_equal(order[i], i);
    int last = GROW_N - 1;
    cf_future *f;
    atomic_store(&order_n, 0);
    assert_int_equal(cf_submit(ex, record_task, &last, sizeof last, &f), 0);
    assert_int_equal(s->size, 0); /* the slot was empty: back to the small ring */
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    cf_future_release(blocker);
    free(fs);
    cf_executor_free(ex);
    sem_destroy(&blocker_go);
}

/* ---- the registry ---- */

static int add_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    int64_t v;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v + 1);
}

struct submitter {
    cf_executor *ex;
    int tasks;
    pthread_barrier_t *all_in; /* NULL: no barrier */
    int failed;
};

static void *submit_some(void *arg)
{
    struct submitter *s = arg;
    cf_future *fs[16];
    for (int i = 0; i < s->tasks; i++) {
        int64_t v = i;
        if (cf_submit(s->ex, add_task, &v, sizeof v, &fs[i])) s->failed = 1;
    }
    if (s->all_in) pthread_barrier_wait(s->all_in); /* everyone holds a slot now */
    for (int i = 0; i < s->tasks; i++) {
        int64_t r = -1;
        if (cf_future_result_i64(fs[i], CF_FOREVER, &r) || r != i + 1) s->failed = 1;
        cf_future_release(fs[i]);
    }
    return NULL;
}

/* Threads one after the other reuse the slot each one gives back. */
static void test_exited_threads_slots_reused(void **state)
{
    (void)state;
    cf_executor *ex = pool_of(2);
    struct cf__pool *p = (struct cf__pool *)ex;
    for (int t = 0; t < 20; t++) {
        struct submitter s = {.ex = ex, .tasks = 16};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, submit_some, &s), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(s.failed, 0);
    }
    assert_int_equal(atomic_load(&p->subs->n), 1);
    cf_executor_free(ex);
}

/* More submitting threads at once than slots: the rest use the injection
 * queue, and every task still runs. */
static void test_more_threads_than_slots(void **state)
{
    (void)state;
    enum { T = CF__SUBSLOT_MAX + 6 };
    cf_executor *ex = pool_of(2);
    struct cf__pool *p = (struct cf__pool *)ex;
    pthread_barrier_t all_in;
    pthread_barrier_init(&all_in, NULL, T);
    static struct submitter s[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        s[i] = (struct submitter){.ex = ex, .tasks = 4, .all_in = &all_in};
        assert_int_equal(pthread_create(&th[i], NULL, submit_some, &s[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(s[i].failed, 0);
    }
    assert_int_equal(atomic_load(&p->subs->n), CF__SUBSLOT_MAX);
    pthread_barrier_destroy(&all_in);
    cf_executor_free(ex);
}

static cf_executor *gone_ex;
static sem_t pool_gone, submitted;

static void *submit_then_outlive(void *arg)
{
    (void)arg;
    cf_future *f;
    int64_t v = 1, r = 0;
    if (cf_submit(gone_ex, add_task, &v, sizeof v, &f) == 0) {
        (void)cf_future_result_i64(f, CF_FOREVER, &r);
        cf_future_release(f);
    }
    sem_post(&submitted); /* the pool may be freed now, not before */
    sem_wait(&pool_gone); /* exits after the pool was freed */
    return (void *)(intptr_t)r;
}

/* A thread exits after the pool it holds a slot in was freed (its exit
 * must not touch that pool), and a new pool is usable meanwhile. */
static void test_thread_outlives_pool(void **state)
{
    (void)state;
    sem_init(&pool_gone, 0, 0);
    sem_init(&submitted, 0, 0);
    gone_ex = pool_of(1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, submit_then_outlive, NULL), 0);
    /* Wait for the thread's submit: a sleep here let a slow run (ASan, a
     * busy machine) submit to the freed pool, a use after free of the test's
     * own making. */
    sem_wait(&submitted);
    cf_executor_free(gone_ex); /* the thread keeps its cache entry */
    cf_executor *ex2 = pool_of(1);
    cf_future *f;
    int64_t v = 41, r = 0;
    assert_int_equal(cf_submit(ex2, add_task, &v, sizeof v, &f), 0);
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &r), 0);
    assert_int_equal(r, 42);
    cf_future_release(f);
    sem_post(&pool_gone);
    void *ret;
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_int_equal((intptr_t)ret, 2);
    cf_executor_free(ex2);
    sem_destroy(&pool_gone);
    sem_destroy(&submitted);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv); /* run one case: test_x <name> */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_fills_before_parker_announces),
        cmocka_unit_test(test_slot_fills_after_parker_announces),
        cmocka_unit_test(test_two_takers_same_old_end),
        cmocka_unit_test(test_ring_grows_and_shrinks),
        cmocka_unit_test(test_exited_threads_slots_reused),
        cmocka_unit_test(test_more_threads_than_slots),
        cmocka_unit_test(test_thread_outlives_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
