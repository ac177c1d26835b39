/* The process pool's control flow:
 * - shutdown(cancel_futures) cancels every task no worker has begun before
 *   it returns (or starts waiting), in the caller's thread, from the
 *   overflow list and from ring slots alike, and nothing cancelled runs
 *   afterwards; cf_map chunks likewise;
 * - running() answers what the ring knows: true as soon as a worker has
 *   begun the task, even while the collector thread is held elsewhere;
 * - a worker that writes a state the parent cannot accept into its own
 *   slot (skipped or sent back after its task began, an exit marker on a
 *   task) breaks the pool: the future fails "broken", nothing hangs;
 * - exit() in a task ends the worker without running the parent's atexit
 *   handlers, and the future fails "broken" with the exit status;
 * - a fork refused by RLIMIT_NPROC is reported as what it is (CF_ESYS with
 *   errno EAGAIN, or a break message saying so), not as out of memory.
 *
 * Tasks run in other processes: they coordinate through one MAP_SHARED
 * page mapped before any pool exists. Which thread ran a done-callback is
 * how the tests see where a cancellation happened. */
#include <errno.h>
#include <grp.h>
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
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sync/futex.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

struct shared {
    _Atomic uint32_t gate;       /* gate_task and began_task wait until it is non-zero */
    _Atomic uint32_t started;    /* gate_task / began_task / hostile_task entries */
    _Atomic uint32_t ran;        /* count_task runs */
    _Atomic uint32_t go;         /* hostile_task writes its slot once it is non-zero */
    _Atomic uint32_t release;    /* began_task number i returns once release > i */
    _Atomic uint32_t gate2;      /* hold_task waits until it is non-zero */
    _Atomic uint32_t atexit_ran; /* the parent's atexit handler ran (in any process) */
};
static struct shared *sh;

static void reset_shared(void)
{
    memset(sh, 0, sizeof *sh);
}

static void open_word(_Atomic uint32_t *w)
{
    atomic_store_explicit(w, 1, memory_order_release);
    cf__futex_wake(w, INT32_MAX, true);
}

static void wait_started(uint32_t n)
{
    while (atomic_load_explicit(&sh->started, memory_order_acquire) < n) sched_yield();
}

static void wait_word(_Atomic uint32_t *w)
{
    while (!atomic_load_explicit(w, memory_order_acquire))
        cf__futex_wait(w, 0, cf__now_ns() + 50000000, true);
}

/* ---- tasks (they run in workers) ---- */

static int gate_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    atomic_fetch_add_explicit(&sh->started, 1, memory_order_acq_rel);
    wait_word(&sh->gate);
    return cf_out_i64(out, 1);
}

static int hold_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    wait_word(&sh->gate2);
    return cf_out_i64(out, 2);
}

static int count_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_fetch_add_explicit(&sh->ran, 1, memory_order_acq_rel);
    return 0;
}

/* Says it began (through shared memory), then waits for its turn. */
static int began_task(const void *arg, size_t len, cf_out *out)
{
    uint32_t i;
    if (len != sizeof i) return 1;
    memcpy(&i, arg, sizeof i);
    /* release: whoever sees started > i sees everything before, including
     * the worker's CAS that marked the slot STARTED */
    atomic_fetch_add_explicit(&sh->started, 1, memory_order_release);
    while (atomic_load_explicit(&sh->release, memory_order_acquire) <= i) sched_yield();
    return cf_out_i64(out, i);
}

/* Writes state kind `k` (with its own generation) into its own slot once
 * the parent says go, then blocks: the worker stays alive, so only the
 * parent's judgement of the slot can end the future. */
static int hostile_task(const void *arg, size_t len, cf_out *out)
{
    (void)out;
    uint32_t k;
    if (len != sizeof k) return 1;
    memcpy(&k, arg, sizeof k);
    atomic_fetch_add_explicit(&sh->started, 1, memory_order_release);
    wait_word(&sh->go);
    struct cf__pslot *s = cf__proc_test_current_slot();
    int chan;
    uint64_t pos;
    cf__proc_test_current(&chan, &pos);
    if (!s) return 2;
    atomic_store(&s->state, cf__sk_make(k, pos));
    wait_word(&sh->gate); /* never opened: the pool kills us */
    return 0;
}

static int exit_task(const void *arg, size_t len, cf_out *out)
{
    (void)out;
    int code = 0;
    if (len == sizeof code) memcpy(&code, arg, sizeof code);
    exit(code);
}

/* Registered by the test process before any pool exists, so every worker
 * inherits it: it must run in no worker. */
static void parent_atexit(void)
{
    if (sh) atomic_fetch_add_explicit(&sh->atexit_ran, 1, memory_order_relaxed);
}

/* ---- helpers ---- */

static cf_executor *pool_opts(cf_process_pool_opts o)
{
    int err = 0;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &o);
    assert_int_equal(err, 0);
    assert_non_null(ex);
    return ex;
}

static struct cf__ppool *pp(cf_executor *ex)
{
    return (struct cf__ppool *)ex;
}

/* Done-callbacks record which thread ran them. */
static pthread_t expect_thread;
static _Atomic int cb_in_expected, cb_elsewhere;
static void where_cb(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    if (pthread_equal(pthread_self(), expect_thread)) atomic_fetch_add(&cb_in_expected, 1);
    else atomic_fetch_add(&cb_elsewhere, 1);
}

static void expect_broken(cf_future *f, const char *want)
{
    /* A generous bound instead of forever: a future left RUNNING must fail
     * the test, not hang it until ctest's timeout. */
    int rc = cf_future_result(f, 60.0, NULL, NULL);
    if (rc != CF_EBROKEN) fail_msg("result: %d (%s), want CF_EBROKEN", rc, cf_strerror(rc));
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, CF_EBROKEN);
    assert_non_null(msg);
    if (want && !strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

/* Two workers held busy at the gate, then N queued tasks: with rings of 4
 * slots, 3 of each ring hold queued tasks and the rest wait in the
 * overflow list. */
enum { NQ = 64 };
static cf_executor *busy_pool_with_queue(cf_future **g, cf_future **fs)
{
    reset_shared();
    cf_executor *ex = pool_opts((cf_process_pool_opts){.max_workers = 2, .ring_depth = 4});
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g[i]), 0);
    wait_started(2);
    atomic_store(&cb_in_expected, 0);
    atomic_store(&cb_elsewhere, 0);
    for (int i = 0; i < NQ; i++) {
        assert_int_equal(cf_submit(ex, count_task, NULL, 0, &fs[i]), 0);
        assert_int_equal(cf_future_add_done_callback(fs[i], where_cb, NULL), 0);
    }
    /* Both kinds of queued work exist: overflow, and QUEUED ring slots. */
    struct cf__ppool *p = pp(ex);
    assert_true(atomic_load(&p->ov_count) > 0);
    for (int c = 0; c < 2; c++)
        assert_true(atomic_load(&p->ch[c].head) - atomic_load(&p->ch[c].collected) > 1);
    return ex;
}

static void finish_busy_pool(cf_executor *ex, cf_future **g, cf_future **fs)
{
    open_word(&sh->gate);
    for (int i = 0; i < 2; i++) {
        int64_t v = 0;
        assert_int_equal(cf_future_result_i64(g[i], CF_FOREVER, &v), 0);
        assert_int_equal(v, 1);
        cf_future_release(g[i]);
    }
    for (int i = 0; i < NQ; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_ECANCELLED);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
    /* Every worker has exited: no cancelled task body ran, then or later. */
    assert_int_equal(atomic_load(&sh->ran), 0);
}

/* ---- shutdown(cancel_futures) ---- */

static void test_shutdown_cancel_nowait_is_synchronous(void **state)
{
    (void)state;
    cf_future *g[2], *fs[NQ];
    cf_executor *ex = busy_pool_with_queue(g, fs);
    expect_thread = pthread_self();
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    /* At return: every queued future is done and cancelled, and was
     * cancelled here (its callback ran in this thread), not later by the
     * collector thread. */
    for (int i = 0; i < NQ; i++) {
        assert_true(cf_future_done(fs[i]));
        assert_true(cf_future_cancelled(fs[i]));
    }
    assert_int_equal(atomic_load(&cb_in_expected), NQ);
    assert_int_equal(atomic_load(&cb_elsewhere), 0);
    assert_false(cf_future_done(g[0]) || cf_future_done(g[1])); /* begun: not cancelled */
    finish_busy_pool(ex, g, fs);
}

struct sd_arg {
    cf_executor *ex;
    _Atomic int start, returned;
};
static void *shutdown_wait_cancel(void *a)
{
    struct sd_arg *s = a;
    /* acquire: expect_thread is set before start */
    while (!atomic_load_explicit(&s->start, memory_order_acquire)) sched_yield();
    assert_int_equal(cf_executor_shutdown(s->ex, true, true), 0);
    atomic_store(&s->returned, 1);
    return NULL;
}

static void test_shutdown_cancel_wait_cancels_before_waiting(void **state)
{
    (void)state;
    cf_future *g[2], *fs[NQ];
    cf_executor *ex = busy_pool_with_queue(g, fs);
    struct sd_arg a = {.ex = ex};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, shutdown_wait_cancel, &a), 0);
    expect_thread = t;
    atomic_store_explicit(&a.start, 1, memory_order_release);
    /* The workers are still held, so shutdown(wait) cannot have returned;
     * the queued futures are cancelled by the shutdown thread before it
     * starts waiting. */
    for (int i = 0; i < NQ; i++)
        while (!cf_future_done(fs[i])) sched_yield();
    /* A future is done before its callbacks run: wait for the last ones. */
    while (atomic_load(&cb_in_expected) + atomic_load(&cb_elsewhere) < NQ) sched_yield();
    assert_false(atomic_load(&a.returned));
    for (int i = 0; i < NQ; i++) assert_true(cf_future_cancelled(fs[i]));
    assert_int_equal(atomic_load(&cb_in_expected), NQ);
    assert_int_equal(atomic_load(&cb_elsewhere), 0);
    open_word(&sh->gate);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(atomic_load(&a.returned));
    finish_busy_pool(ex, g, fs);
}

static void test_shutdown_cancel_map(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool_opts((cf_process_pool_opts){.max_workers = 2, .ring_depth = 4});
    cf_future *g[2];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g[i]), 0);
    wait_started(2);
    enum { N = 40 };
    int items[N];
    for (int i = 0; i < N; i++) items[i] = i;
    cf_map_iter *it;
    /* One item per chunk, every chunk submitted at once (the window). */
    assert_int_equal(cf_map(ex, count_task, items, sizeof items[0], N,
                            &(cf_map_opts){.chunksize = 1, .window = N}, &it),
                     0);
    assert_true(atomic_load(&pp(ex)->ov_count) > 0);
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    open_word(&sh->gate); /* the workers are free: nothing cancelled may run now */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cf_future_result(g[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(g[i]);
    }
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t len;
        assert_int_equal(cf_map_next(it, &d, &len), CF_ECANCELLED);
    }
    assert_int_equal(cf_map_next(it, NULL, NULL), CF_END);
    cf_map_free(it);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&sh->ran), 0);

    /* A window smaller than the input: the submitted chunks are cancelled;
     * those the iterator had not submitted yet cannot be any more. */
    reset_shared();
    ex = pool_opts((cf_process_pool_opts){.max_workers = 1, .ring_depth = 2});
    assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &g[0]), 0);
    wait_started(1);
    assert_int_equal(cf_map(ex, count_task, items, sizeof items[0], N,
                            &(cf_map_opts){.chunksize = 1, .window = 8}, &it),
                     0);
    assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
    open_word(&sh->gate);
    assert_int_equal(cf_future_result(g[0], CF_FOREVER, NULL, NULL), 0);
    cf_future_release(g[0]);
    for (int i = 0; i < N; i++)
        assert_int_equal(cf_map_next(it, NULL, NULL), i < 8 ? CF_ECANCELLED : CF_ESHUTDOWN);
    cf_map_free(it);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&sh->ran), 0);
}

/* ---- running() ---- */

/* Holds the collector thread: q's callback runs where q completes, in the
 * collector, and spins there until released. */
static _Atomic int collector_held, collector_release;
static void hold_collector_cb(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    atomic_store_explicit(&collector_held, 1, memory_order_release);
    while (!atomic_load_explicit(&collector_release, memory_order_acquire)) sched_yield();
}

static cf_future *hold_collector(cf_executor *ex)
{
    cf_future *q;
    atomic_store(&collector_held, 0);
    atomic_store(&collector_release, 0);
    /* q cannot finish before its callback is registered (it waits on gate2). */
    assert_int_equal(cf_submit(ex, hold_task, NULL, 0, &q), 0);
    assert_int_equal(cf_future_add_done_callback(q, hold_collector_cb, NULL), 0);
    open_word(&sh->gate2);
    /* Not result(): this thread must not collect (and so run the callback). */
    while (!atomic_load_explicit(&collector_held, memory_order_acquire)) sched_yield();
    return q;
}

static void test_running_reads_the_ring(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool_opts((cf_process_pool_opts){.max_workers = 1});
    cf_future *q = hold_collector(ex);
    enum { R = 8 };
    cf_future *fs[R];
    for (uint32_t i = 0; i < R; i++) {
        assert_int_equal(cf_submit(ex, began_task, &i, sizeof i, &fs[i]), 0);
        wait_started(i + 1);
        /* The task has begun (it said so through shared memory) and nobody
         * collects: only the ring knows. */
        assert_true(cf_future_running(fs[i]));
        assert_false(cf_future_cancel(fs[i]));
        assert_false(cf_future_done(fs[i]));
        atomic_store_explicit(&sh->release, i + 1, memory_order_release);
    }
    atomic_store_explicit(&collector_release, 1, memory_order_release);
    for (uint32_t i = 0; i < R; i++) {
        int64_t v = -1;
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &v), 0);
        assert_int_equal(v, i);
        cf_future_release(fs[i]);
    }
    assert_int_equal(cf_future_result(q, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(q);
    cf_executor_free(ex);
}

/* ---- hostile slot states ---- */

/* Has the parent's collector (or a helper) recorded that the slot of the
 * ring's oldest task was seen STARTED? Read under the collect lock. */
static bool collector_saw_start(cf_executor *ex)
{
    struct cf__ppool *p = pp(ex);
    cf__pp_coll_lock(p);
    uint64_t pos = atomic_load(&p->ch[0].collected);
    bool seen = pos < atomic_load(&p->ch[0].head) && p->ch[0].rec[pos & (p->depth - 1)].marked;
    cf__pp_coll_unlock(p);
    return seen;
}

static void run_hostile(uint32_t kind)
{
    reset_shared();
    cf_executor *ex = pool_opts((cf_process_pool_opts){.max_workers = 1});
    cf_future *f, *h;
    assert_int_equal(cf_submit(ex, hostile_task, &kind, sizeof kind, &f), 0);
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &h), 0); /* queued behind it */
    wait_started(1);
    /* The parent has seen the task begin: the future is RUNNING. */
    while (!cf_future_running(f)) sched_yield();
    while (!collector_saw_start(ex)) sched_yield();
    open_word(&sh->go);
    expect_broken(f, "corrupted shared memory");
    expect_broken(h, "corrupted shared memory");
    cf_future *x;
    assert_int_equal(cf_submit(ex, count_task, NULL, 0, &x), CF_EBROKEN);
    cf_future_release(f);
    cf_future_release(h);
    cf_executor_free(ex); /* returns: the hostile worker was killed */
    assert_int_equal(atomic_load(&sh->ran), 0);
}

static void test_skipped_after_start_breaks(void **state)
{
    (void)state;
    run_hostile(CF__SK_SKIPPED);
}

static void test_state_back_after_start_breaks(void **state)
{
    (void)state;
    run_hostile(CF__SK_QUEUED);
    run_hostile(CF__SK_CANCELLED);
    run_hostile(CF__SK_EXIT);
}

/* Freeing a pool whose worker sits on a RUNNING task that never returns
 * would wait for it, as for any long task; but a broken pool fails it. */

/* ---- exit() in a task ---- */

static void test_exit_skips_parent_atexit(void **state)
{
    (void)state;
    reset_shared();
    cf_executor *ex = pool_opts((cf_process_pool_opts){.max_workers = 1});
    int code = 3;
    cf_future *f;
    assert_int_equal(cf_submit(ex, exit_task, &code, sizeof code, &f), 0);
    expect_broken(f, "exited with status 3");
    assert_int_equal(atomic_load(&sh->atexit_ran), 0); /* the parent's handler ran nowhere */
    cf_future_release(f);
    cf_executor_free(ex);
}

/* ---- RLIMIT_NPROC ---- */

/* In a child process: become an otherwise unused user if we are root (root
 * is exempt from RLIMIT_NPROC), so that the limit counts only our own
 * threads and processes. Returns that count, or -1 when not root (then
 * only the limit 0 can be used: every fork fails). */
static int become_limited_user(void)
{
    if (geteuid() != 0) return -1;
    /* Root that cannot change its uid (a restricted container) keeps its
     * exemption: nothing can be tested here. */
    if (setgroups(0, NULL) || setgid(54321) || setuid(54321)) _exit(77);
    FILE *s = fopen("/proc/self/status", "r");
    if (!s) _exit(91);
    char line[256];
    int threads = -1;
    while (fgets(line, sizeof line, s))
        if (sscanf(line, "Threads: %d", &threads) == 1) break;
    fclose(s);
    if (threads < 1) _exit(92);
    return threads;
}

static void set_nproc(pid_t pid, rlim_t soft)
{
    struct rlimit r;
    if (prlimit(pid, RLIMIT_NPROC, NULL, &r)) _exit(93);
    r.rlim_cur = soft;
    if (prlimit(pid, RLIMIT_NPROC, &r, NULL)) _exit(94);
}

/* The child's checks; each failure exits with its own status. */
static int nproc_child(void)
{
    int have = become_limited_user();
    struct rlimit orig;
    getrlimit(RLIMIT_NPROC, &orig);

    /* 1. The parent -> zygote fork refused. */
    set_nproc(0, have > 0 ? (rlim_t)have : 0);
    int err = 0;
    errno = 0;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 1});
    if (ex) return 10;
    if (err != CF_ESYS) return 11;
    if (errno != EAGAIN) return 12;

    /* 2. The zygote -> worker fork refused (the limit counts the zygote). */
    if (have > 0) {
        set_nproc(0, (rlim_t)have + 1);
        errno = 0;
        err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 1});
        if (ex) return 20;
        if (err != CF_ESYS) return 21;
        if (errno != EAGAIN) return 22;
    }

    /* 3. A replacement worker refused later: the pool breaks and says why. */
    set_nproc(0, orig.rlim_cur);
    err = cf_process_pool_new(&ex,
                              &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 1});
    if (!ex) return 30;
    set_nproc(pp(ex)->zpid, 0); /* the zygote may fork no more */
    cf_future *a, *b;
    /* a holds the worker until b is queued behind it: b needs the
     * replacement that the zygote may not fork. */
    reset_shared();
    if (cf_submit(ex, gate_task, NULL, 0, &a) || cf_submit(ex, count_task, NULL, 0, &b)) return 31;
    open_word(&sh->gate);
    if (cf_future_result(a, CF_FOREVER, NULL, NULL) != 0) return 32; /* the first worker ran it */
    if (cf_future_result(b, CF_FOREVER, NULL, NULL) != CF_EBROKEN) return 33;
    const char *msg = NULL;
    int code = 0;
    if (cf_future_exception(b, 0, &code, &msg) || !msg) return 34;
    if (!strstr(msg, "fork refused: resource limit (EAGAIN")) {
        fprintf(stderr, "message: %s\n", msg);
        return 35;
    }
    cf_future_release(a);
    cf_future_release(b);
    cf_executor_free(ex);
    return 0;
}

static void test_fork_refused_by_rlimit_nproc(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) _exit(nproc_child());
    int st = 0;
    assert_int_equal(waitpid(c, &st, 0), c);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        fprintf(stderr, "root here cannot drop to another uid: RLIMIT_NPROC does not apply\n");
        skip();
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the limited child failed: wait status 0x%x (exit %d)", (unsigned)st,
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static int group_setup(void **state)
{
    (void)state;
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return -1;
    reset_shared();
    atexit(parent_atexit); /* before any pool: inherited by every worker */
    return 0;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shutdown_cancel_nowait_is_synchronous),
        cmocka_unit_test(test_shutdown_cancel_wait_cancels_before_waiting),
        cmocka_unit_test(test_shutdown_cancel_map),
        cmocka_unit_test(test_running_reads_the_ring),
        cmocka_unit_test(test_skipped_after_start_breaks),
        cmocka_unit_test(test_state_back_after_start_breaks),
        cmocka_unit_test(test_exit_skips_parent_atexit),
        cmocka_unit_test(test_fork_refused_by_rlimit_nproc),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
