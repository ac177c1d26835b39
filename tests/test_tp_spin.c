/* The thread pool's adaptive idle spin (src/thread/spin.c).
 *
 * The policy's rules on their own: each outcome a spin can have, fed in a
 * chosen order, and the budget and mode that must follow. Then the same
 * rules inside a live one-worker pool: the pool's test hook decides how
 * every spin "ended" (so nothing depends on the clock or on how busy the
 * machine is) and logs every decision the worker makes; the test checks
 * that a descheduled spin turns spinning off (the worker then only
 * glances: a short spin that never yields and teaches the policy nothing),
 * that probes come after the back-off and that a clean
 * probe turns spinning back on; and that a fixed budget never adapts. No
 * timing assertions: the 10 s limits are hang detectors. */
#include <errno.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "cfutures.h"
#include "thread/spin.h"
#include "thread/thread_pool.h"
#include "support/test_env.h"

#define HANG_S 10 /* a hang detector */
#define CEIL 50000L
#define FLOOR (CEIL / 4)

/* ---- the rules ---- */

static void test_rules_budget_adapts(void **state)
{
    (void)state;
    struct cf__spin s;
    cf__spin_init(&s, CEIL, false);
    assert_int_equal(s.mode, CF__SPIN_ON);
    assert_int_equal(cf__spin_next(&s), FLOOR); /* a fresh worker starts short */
    cf__spin_record(&s, CF__SPIN_PAID);
    assert_int_equal(cf__spin_next(&s), 2 * FLOOR);
    for (int i = 0; i < 10; i++) {
        assert_true(cf__spin_next(&s) > 0);
        cf__spin_record(&s, CF__SPIN_PAID);
    }
    assert_int_equal(cf__spin_next(&s), CEIL); /* never above the ceiling */
    cf__spin_record(&s, CF__SPIN_TIMED_OUT);
    assert_int_equal(cf__spin_next(&s), CEIL / 2);
    for (int i = 0; i < 10; i++) {
        assert_true(cf__spin_next(&s) > 0);
        cf__spin_record(&s, CF__SPIN_TIMED_OUT);
    }
    assert_int_equal(cf__spin_next(&s), FLOOR); /* never below the floor */
    assert_int_equal(s.mode, CF__SPIN_ON);
}

/* n idle periods that must only glance (a short spin that never yields
 * and is not reported). */
static void expect_skips(struct cf__spin *s, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(s->mode, CF__SPIN_OFF);
        assert_int_equal(cf__spin_next(s), CF__SPIN_GLANCE_NS);
        assert_true(s->glance);
    }
}

static void test_rules_descheduled_backs_off(void **state)
{
    (void)state;
    struct cf__spin s;
    cf__spin_init(&s, CEIL, false);
    assert_int_equal(cf__spin_next(&s), FLOOR);
    cf__spin_record(&s, CF__SPIN_DESCHEDULED);
    expect_skips(&s, CF__SPIN_SKIP_MIN);
    assert_int_equal(cf__spin_next(&s), FLOOR); /* the probe */
    cf__spin_record(&s, CF__SPIN_DESCHEDULED);  /* still contended: twice as long */
    expect_skips(&s, 2 * CF__SPIN_SKIP_MIN);
    assert_int_equal(cf__spin_next(&s), FLOOR);
    cf__spin_record(&s, CF__SPIN_TIMED_OUT); /* a clean probe: spinning is back */
    assert_int_equal(s.mode, CF__SPIN_ON);
    assert_int_equal(cf__spin_next(&s), FLOOR);
    cf__spin_record(&s, CF__SPIN_PAID);
    assert_int_equal(cf__spin_next(&s), 2 * FLOOR);
    /* The back-off remembers: the next descheduled spin skips longer. */
    cf__spin_record(&s, CF__SPIN_DESCHEDULED);
    expect_skips(&s, 4 * CF__SPIN_SKIP_MIN);
    assert_int_equal(s.glances, (7 * CF__SPIN_SKIP_MIN));
    assert_int_equal(s.probes, 2);
    assert_int_equal(s.descheduled, 3);
}

static void test_rules_back_off_is_bounded_and_forgiven(void **state)
{
    (void)state;
    struct cf__spin s;
    cf__spin_init(&s, CEIL, false);
    unsigned len = CF__SPIN_SKIP_MIN;
    for (int i = 0; i < 20; i++) { /* a host that stays busy */
        (void)cf__spin_next(&s);
        cf__spin_record(&s, CF__SPIN_DESCHEDULED);
        expect_skips(&s, len);
        len = len * 2 < CF__SPIN_SKIP_MAX ? len * 2 : CF__SPIN_SKIP_MAX;
    }
    assert_int_equal(s.skip_len, CF__SPIN_SKIP_MAX);
    /* The load goes away: clean spins forgive the back-off step by step. */
    for (unsigned i = 0; i < 20 * CF__SPIN_CLEAN_RUN; i++) {
        assert_true(cf__spin_next(&s) > 0);
        cf__spin_record(&s, i % 2 ? CF__SPIN_PAID : CF__SPIN_TIMED_OUT);
    }
    assert_int_equal(s.mode, CF__SPIN_ON);
    assert_int_equal(s.skip_len, CF__SPIN_SKIP_MIN);
    (void)cf__spin_next(&s);
    cf__spin_record(&s, CF__SPIN_DESCHEDULED);
    expect_skips(&s, CF__SPIN_SKIP_MIN); /* a stray preemption costs little */
    assert_true(cf__spin_next(&s) > 0);
}

static void test_rules_fixed_never_adapts(void **state)
{
    (void)state;
    struct cf__spin s;
    cf__spin_init(&s, 20000, true);
    enum cf__spin_outcome all[] = {CF__SPIN_DESCHEDULED, CF__SPIN_TIMED_OUT, CF__SPIN_PAID};
    for (int i = 0; i < 30; i++) {
        assert_int_equal(cf__spin_next(&s), 20000);
        cf__spin_record(&s, all[i % 3]);
        assert_int_equal(s.mode, CF__SPIN_FIXED);
    }
    cf__spin_init(&s, 0, false); /* no budget: nothing to adapt either */
    assert_int_equal(s.mode, CF__SPIN_FIXED);
    assert_int_equal(cf__spin_next(&s), 0);
}

/* ---- a live pool, its spins' outcomes chosen by the hook ---- */

#define MAX_DECISIONS 64

struct decision {
    long granted;
    int mode; /* when it was made */
    bool glance;
};

static struct decision log_[MAX_DECISIONS];
static int n_decisions, n_ends; /* written by the worker in the hook only */
/* The outcome the hook reports for the spin of decision i (the measured
 * one is replaced, so the machine's load cannot change the sequence). */
static enum cf__spin_outcome script[MAX_DECISIONS];
static sem_t decided; /* posted once per idle period, after its spin (if any) */
/* Set before the pool is freed: the shutdown wakes the worker, which may
 * then make one more decision (or not: it may see the shutdown first). */
static _Atomic int closing;

static void scripted(struct cf__worker *w, int point)
{
    if (atomic_load(&closing)) return;
    if (point == CF__TEST_TP_SPIN_DECIDED) {
        int i = n_decisions++;
        if (i < MAX_DECISIONS)
            log_[i] = (struct decision){w->spin.granted, w->spin.mode, w->spin.glance};
        if (w->spin.granted <= 0 || w->spin.glance) sem_post(&decided); /* nothing to report */
    } else if (point == CF__TEST_TP_SPIN_END) {
        n_ends++;
        int i = n_decisions - 1;
        w->spin.outcome = (uint8_t)(i < MAX_DECISIONS ? script[i] : CF__SPIN_TIMED_OUT);
        sem_post(&decided); /* recorded right after we return, before it parks */
    }
}

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

static int task_empty(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

/* One task, then the idle period it leaves behind. */
static void one_round(cf_executor *ex)
{
    cf_future *f;
    assert_int_equal(cf_submit(ex, task_empty, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    assert_int_equal(sem_wait_limited(&decided), 0);
}

static cf_executor *one_worker_pool(long spin_ns)
{
    for (int i = 0; i < MAX_DECISIONS; i++) script[i] = CF__SPIN_TIMED_OUT;
    n_decisions = n_ends = 0;
    atomic_store(&closing, 0);
    sem_init(&decided, 0, 0);
    atomic_store(&cf__test_tp_hook, scripted);
    cf_thread_pool_opts o = {.max_workers = 1, .pin = CF_PIN_NONE, .spin_ns = spin_ns};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    assert_int_equal(sem_wait_limited(&decided), 0); /* its first idle period */
    return ex;
}

static void pool_done(cf_executor *ex)
{
    atomic_store(&closing, 1);
    cf_executor_free(ex); /* joined: its last writes to the log happen before */
    atomic_store(&cf__test_tp_hook, NULL);
    sem_destroy(&decided);
}

static void expect(int from, int to, long granted, int mode)
{
    for (int i = from; i < to; i++) {
        assert_int_equal(log_[i].granted, granted);
        assert_int_equal(log_[i].mode, mode);
        /* Spinning off: only glances between the probes. */
        assert_int_equal(log_[i].glance, mode == CF__SPIN_OFF && granted == CF__SPIN_GLANCE_NS);
    }
}

static void test_pool_backs_off_and_recovers(void **state)
{
    (void)state;
    const int k = (int)CF__SPIN_SKIP_MIN;
    int probe1 = 2 + k, probe2 = probe1 + 1 + 2 * k, after = probe2 + 1;
    cf_executor *ex = one_worker_pool(0);  /* the default: adaptive */
    script[1] = CF__SPIN_DESCHEDULED;      /* the first task's idle spin */
    script[probe1] = CF__SPIN_DESCHEDULED; /* the first probe: still contended */
    script[after] = CF__SPIN_PAID;
    for (int r = 0; r < after + 1; r++) one_round(ex);
    pool_done(ex);

    assert_int_equal(n_decisions, after + 2);
    expect(0, 1, FLOOR, CF__SPIN_ON);                    /* start: short; timed out */
    expect(1, 2, FLOOR, CF__SPIN_ON);                    /* descheduled: spinning off */
    expect(2, probe1, CF__SPIN_GLANCE_NS, CF__SPIN_OFF); /* glances only */
    expect(probe1, probe1 + 1, FLOOR, CF__SPIN_OFF);
    expect(probe1 + 1, probe2, CF__SPIN_GLANCE_NS, CF__SPIN_OFF); /* twice as long */
    expect(probe2, probe2 + 1, FLOOR, CF__SPIN_OFF);
    expect(after, after + 1, FLOOR, CF__SPIN_ON);         /* the clean probe turned it back on */
    expect(after + 1, after + 2, 2 * FLOOR, CF__SPIN_ON); /* and a spin that paid grows it */
    /* A spin is reported only where one was granted, never a glance. */
    int spun = 0;
    for (int i = 0; i < n_decisions; i++) spun += log_[i].granted > 0 && !log_[i].glance;
    assert_int_equal(n_ends, spun);
}

static void test_pool_fixed_budget_never_adapts(void **state)
{
    (void)state;
    cf_executor *ex = one_worker_pool(20000); /* set in code: fixed */
    for (int i = 0; i < 8; i++) script[i] = CF__SPIN_DESCHEDULED;
    for (int r = 0; r < 6; r++) one_round(ex);
    pool_done(ex);
    assert_int_equal(n_decisions, 7);
    expect(0, 7, 20000, CF__SPIN_FIXED);
    assert_int_equal(n_ends, 7);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv); /* run one case: test_x <name> */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_budget_adapts),
        cmocka_unit_test(test_rules_descheduled_backs_off),
        cmocka_unit_test(test_rules_back_off_is_bounded_and_forgiven),
        cmocka_unit_test(test_rules_fixed_never_adapts),
        cmocka_unit_test(test_pool_backs_off_and_recovers),
        cmocka_unit_test(test_pool_fixed_budget_never_adapts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
