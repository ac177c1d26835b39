/* The process pool when workers die (SEMANTICS 28): SIGKILL from outside,
 * SIGSEGV and _exit inside a task, a kill while a large result is in
 * transit, a kill during shutdown(wait=true), the zygote killed, an idle
 * worker killed. Every future the dead worker held and every pending one
 * fails with CF_EBROKEN and a message naming the pid and the signal or
 * exit status; later submits fail with CF_EBROKEN; nothing hangs, including
 * a result() already asleep and a shutdown(wait=true) already under way.
 *
 * Coordination goes through a MAP_SHARED page mapped before the pools. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sync/futex.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

struct shared {
    _Atomic uint32_t gate;
    _Atomic uint32_t started;
    _Atomic uint32_t npid;
    _Atomic int32_t pids[16];
    _Atomic int32_t zygote;
    _Atomic uint32_t returning;
};
static struct shared *sh;

static void reset_shared(void)
{
    memset(sh, 0, sizeof *sh);
}

static void wait_started(uint32_t n)
{
    while (atomic_load_explicit(&sh->started, memory_order_acquire) < n) sched_yield();
}

/* ---- tasks (they run in workers) ---- */

static int block_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    uint32_t i = atomic_fetch_add_explicit(&sh->npid, 1, memory_order_relaxed);
    if (i < 16) atomic_store_explicit(&sh->pids[i], getpid(), memory_order_relaxed);
    atomic_store_explicit(&sh->zygote, getppid(), memory_order_relaxed);
    /* release: the pid and zygote stores are visible to whoever sees started */
    atomic_fetch_add_explicit(&sh->started, 1, memory_order_release);
    while (!atomic_load_explicit(&sh->gate, memory_order_acquire))
        cf__futex_wait(&sh->gate, 0, cf__now_ns() + 50000000, true);
    return cf_out_i64(out, 1);
}

static int quick_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, 7);
}

static int *volatile bad_ptr = (int *)8;
static int segv_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    /* The default action, set with the raw system call so that a
     * sanitizer's own SIGSEGV handler does not turn it into an exit. */
    unsigned long ksa[4] = {0, 0, 0, 0}; /* handler SIG_DFL, flags, restorer, mask */
    syscall(SYS_rt_sigaction, SIGSEGV, ksa, NULL, 8);
    *bad_ptr = 1;
    return 0;
}

static int exit_task(const void *arg, size_t len, cf_out *out)
{
    (void)out;
    int code = 0;
    if (len == sizeof code) memcpy(&code, arg, sizeof code);
    _exit(code);
}

static int big_task(const void *arg, size_t len, cf_out *out)
{
    uint64_t n;
    if (len != sizeof n) return 1;
    memcpy(&n, arg, sizeof n);
    void *buf;
    if (cf_out_alloc(out, n, &buf) != 0) return 2;
    unsigned char *b = buf;
    for (uint64_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 13 + 5);
    atomic_store_explicit(&sh->pids[0], getpid(), memory_order_release);
    atomic_store_explicit(&sh->returning, 1, memory_order_release);
    return 0;
}

/* ---- helpers ---- */

static cf_executor *pool(int n)
{
    int err = 0;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = n});
    assert_int_equal(err, 0);
    assert_non_null(ex);
    return ex;
}

static void expect_broken(cf_future *f, const char *want1, const char *want2)
{
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), CF_EBROKEN);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, CF_EBROKEN);
    assert_non_null(msg);
    if (want1 && !strstr(msg, want1)) fail_msg("message \"%s\" lacks \"%s\"", msg, want1);
    if (want2 && !strstr(msg, want2)) fail_msg("message \"%s\" lacks \"%s\"", msg, want2);
}

static void expect_submit_broken(cf_executor *ex)
{
    cf_future *f;
    assert_int_equal(cf_submit(ex, quick_task, NULL, 0, &f), CF_EBROKEN);
}

struct sleeper {
    cf_future *f;
    int rc;
};
static void *sleep_on_result(void *a)
{
    struct sleeper *s = a;
    s->rc = cf_future_result(s->f, CF_FOREVER, NULL, NULL);
    return NULL;
}

/* ---- tests ---- */

static void test_sigkill_from_outside(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(2);
    cf_future *held[2], *pending[10];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, block_task, NULL, 0, &held[i]), 0);
    wait_started(2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(cf_submit(ex, quick_task, NULL, 0, &pending[i]), 0);
    /* A result() already asleep when the worker dies. */
    struct sleeper s = {.f = held[1]};
    pthread_t t;
    pthread_create(&t, NULL, sleep_on_result, &s);
    pid_t victim = atomic_load(&sh->pids[0]);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "worker %d", (int)victim);
    assert_int_equal(kill(victim, SIGKILL), 0);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, CF_EBROKEN);
    /* The victim held exactly one of the two blockers; both fail, all name it. */
    for (int i = 0; i < 2; i++) expect_broken(held[i], pidstr, "killed by signal 9 (SIGKILL)");
    for (int i = 0; i < 10; i++) expect_broken(pending[i], pidstr, "SIGKILL");
    expect_submit_broken(ex);
    for (int i = 0; i < 2; i++) cf_future_release(held[i]);
    for (int i = 0; i < 10; i++) cf_future_release(pending[i]);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
}

static void test_segv_in_task(void **state)
{
    (void)state;
    cf_executor *ex = pool(1);
    cf_future *f, *g = NULL;
    assert_int_equal(cf_submit(ex, segv_task, NULL, 0, &f), 0);
    /* The pool may already be broken: then the submit says so. */
    int rc = cf_submit(ex, quick_task, NULL, 0, &g);
    assert_true(rc == 0 || rc == CF_EBROKEN);
    expect_broken(f, "killed by signal 11 (SIGSEGV)", "worker ");
    if (rc == 0) expect_broken(g, "SIGSEGV", NULL);
    expect_submit_broken(ex);
    cf_future_release(f);
    cf_future_release(g);
    cf_executor_free(ex);
}

static void test_exit_in_task(void **state)
{
    (void)state;
    int codes[] = {3, 0};
    for (int k = 0; k < 2; k++) {
        /* _exit(0) inside a task is a crash too, even with retirement on. */
        cf_executor *ex;
        assert_int_equal(
            cf_process_pool_new(
                &ex, &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 100}),
            0);
        cf_future *f, *g = NULL;
        assert_int_equal(cf_submit(ex, exit_task, &codes[k], sizeof codes[k], &f), 0);
        int rc = cf_submit(ex, quick_task, NULL, 0, &g); /* may find it broken already */
        assert_true(rc == 0 || rc == CF_EBROKEN);
        char want[40];
        snprintf(want, sizeof want, "exited with status %d", codes[k]);
        expect_broken(f, want, "worker ");
        if (rc == 0) expect_broken(g, want, NULL);
        expect_submit_broken(ex);
        cf_future_release(f);
        cf_future_release(g);
        cf_executor_free(ex);
    }
}

/* The collector is held in a done-callback while the worker needs result
 * spill space the collector has not freed yet: the worker waits inside its
 * result delivery, and is killed there. The result already in the ring
 * still arrives whole. */
static _Atomic uint32_t cb_gate;
static void hold_collector(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    while (!atomic_load_explicit(&cb_gate, memory_order_acquire)) sched_yield();
}

static void test_kill_during_large_result(void **state)
{
    (void)state;
    reset_shared();
    atomic_store(&cb_gate, 0);
    cf__proc_test_spill_size = 4 << 20;
    cf_executor *ex = pool(1);
    cf__proc_test_spill_size = 0;
    struct cf__ppool *p = (struct cf__ppool *)ex;
    uint64_t n = 3 << 20;
    cf_future *first, *a, *b;
    /* The collector is held in first's done-callback (added while first
     * still blocks its worker), so a's 3 MiB stay in the spill ring and b
     * finds no room for its own result: the worker waits inside delivery. */
    assert_int_equal(cf_submit(ex, block_task, NULL, 0, &first), 0);
    assert_int_equal(cf_future_add_done_callback(first, hold_collector, NULL), 0);
    assert_int_equal(cf_submit(ex, big_task, &n, sizeof n, &a), 0);
    assert_int_equal(cf_submit(ex, big_task, &n, sizeof n, &b), 0);
    wait_started(1);
    atomic_store(&sh->gate, 1);
    cf__futex_wake(&sh->gate, INT32_MAX, true);
    /* The worker announces that it waits for spill space (shared word). */
    while (!atomic_load_explicit(&p->ctl[0].res_waiting, memory_order_acquire)) sched_yield();
    pid_t victim = atomic_load(&sh->pids[0]);
    assert_int_equal(kill(victim, SIGKILL), 0);
    atomic_store_explicit(&cb_gate, 1, memory_order_release);
    const void *d;
    size_t len;
    assert_int_equal(cf_future_result(a, CF_FOREVER, &d, &len), 0); /* the first arrived whole */
    assert_int_equal(len, n);
    const unsigned char *bytes = d;
    for (size_t i = 0; i < len; i += 4093) assert_int_equal(bytes[i], (unsigned char)(i * 13 + 5));
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "worker %d", (int)victim);
    expect_broken(b, pidstr, "SIGKILL");
    assert_int_equal(cf_future_result(first, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(first);
    cf_future_release(a);
    cf_future_release(b);
    cf_executor_free(ex);
}

/* A kill racing with the delivery of a 48 MiB result: the future either
 * gets the whole, correct result or fails with CF_EBROKEN; never a torn one. */
static void test_kill_racing_large_result(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        reset_shared();
        cf_executor *ex = pool(1);
        uint64_t n = 48u << 20;
        cf_future *f;
        assert_int_equal(cf_submit(ex, big_task, &n, sizeof n, &f), 0);
        while (!atomic_load_explicit(&sh->returning, memory_order_acquire)) sched_yield();
        kill(atomic_load(&sh->pids[0]), SIGKILL);
        const void *d;
        size_t len;
        int rc = cf_future_result(f, CF_FOREVER, &d, &len);
        if (rc == 0) {
            assert_int_equal(len, n);
            const unsigned char *bytes = d;
            for (size_t i = 0; i < len; i += 4099)
                assert_int_equal(bytes[i], (unsigned char)(i * 13 + 5));
        } else {
            assert_int_equal(rc, CF_EBROKEN);
        }
        cf_future_release(f);
        cf_executor_free(ex);
    }
}

struct sd {
    cf_executor *ex;
    _Atomic int entered;
    int rc;
};
static void *shutdown_wait(void *a)
{
    struct sd *s = a;
    atomic_store(&s->entered, 1);
    s->rc = cf_executor_shutdown(s->ex, true, false);
    return NULL;
}

static void test_kill_during_shutdown_wait(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(2);
    struct cf__ppool *p = (struct cf__ppool *)ex;
    cf_future *held[2], *pending[5];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, block_task, NULL, 0, &held[i]), 0);
    wait_started(2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(cf_submit(ex, quick_task, NULL, 0, &pending[i]), 0);
    struct sd s = {.ex = ex};
    pthread_t t;
    pthread_create(&t, NULL, shutdown_wait, &s);
    /* Under way: the flag is set and the thread is inside shutdown. */
    while (!atomic_load(&s.entered) ||
           !(atomic_load_explicit(&p->flags, memory_order_acquire) & CF__PP_SHUTDOWN))
        sched_yield();
    pid_t victim = atomic_load(&sh->pids[1]);
    assert_int_equal(kill(victim, SIGKILL), 0);
    pthread_join(t, NULL); /* does not hang */
    assert_int_equal(s.rc, 0);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "worker %d", (int)victim);
    for (int i = 0; i < 2; i++) expect_broken(held[i], pidstr, "SIGKILL");
    for (int i = 0; i < 5; i++) expect_broken(pending[i], pidstr, NULL);
    expect_submit_broken(ex); /* broken is reported before shut down */
    for (int i = 0; i < 2; i++) cf_future_release(held[i]);
    for (int i = 0; i < 5; i++) cf_future_release(pending[i]);
    cf_executor_free(ex);
}

static void test_zygote_killed(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(1);
    cf_future *held, *pending;
    assert_int_equal(cf_submit(ex, block_task, NULL, 0, &held), 0);
    wait_started(1);
    assert_int_equal(cf_submit(ex, quick_task, NULL, 0, &pending), 0);
    pid_t z = atomic_load(&sh->zygote);
    assert_true(z > 0 && z != getpid());
    assert_int_equal(kill(z, SIGKILL), 0);
    expect_broken(held, "zygote", NULL);
    expect_broken(pending, "zygote", NULL);
    expect_submit_broken(ex);
    cf_future_release(held);
    cf_future_release(pending);
    cf_executor_free(ex);
}

static void test_idle_worker_killed(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool(1);
    cf_future *f;
    assert_int_equal(cf_submit(ex, block_task, NULL, 0, &f), 0);
    wait_started(1);
    atomic_store(&sh->gate, 1);
    cf__futex_wake(&sh->gate, INT32_MAX, true);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    kill(atomic_load(&sh->pids[0]), SIGKILL);
    /* The pool notices on its own; submissions until then fail too. */
    for (;;) {
        int rc = cf_submit(ex, quick_task, NULL, 0, &f);
        if (rc == CF_EBROKEN) break;
        assert_int_equal(rc, 0);
        rc = cf_future_result(f, CF_FOREVER, NULL, NULL);
        assert_true(rc == 0 || rc == CF_EBROKEN);
        cf_future_release(f);
        sched_yield();
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
        cmocka_unit_test(test_sigkill_from_outside),
        cmocka_unit_test(test_segv_in_task),
        cmocka_unit_test(test_exit_in_task),
        cmocka_unit_test(test_kill_during_large_result),
        cmocka_unit_test(test_kill_racing_large_result),
        cmocka_unit_test(test_kill_during_shutdown_wait),
        cmocka_unit_test(test_zygote_killed),
        cmocka_unit_test(test_idle_worker_killed),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
