/* Scoped fork-join (cfutures/fork_join.h): results and error codes reach
 * the join, outside a pool children run inline, a child stolen in the
 * window before its join is waited for (and the joiner runs the thief's
 * work meanwhile), deep recursion, futures mixed in, cancellation by
 * shutdown, and the debug checks of the rules. The race cases hold the
 * window open with the fork-join test hook, so the steal happens on every
 * run. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sys/debug_checks.h"
#include "thread/fork_join.h"
#include "support/test_env.h"

#define HANG_NS (10LL * 1000 * 1000 * 1000) /* a hang detector */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spin (politely) until *flag is non-zero; false after HANG_NS. */
static bool await_flag(_Atomic int *flag)
{
    int64_t end = now_ns() + HANG_NS;
    while (!atomic_load_explicit(flag, memory_order_acquire)) {
        if (now_ns() > end) return false;
        sched_yield();
    }
    return true;
}

static cf_executor *pool(int workers)
{
    cf_executor *ex = NULL;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = workers}), 0);
    return ex;
}

/* ---- fib, the plain recursion ---- */

struct fib {
    int64_t n, result;
};

static int64_t fib_ref(int64_t n)
{
    int64_t a = 0, b = 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = a + b;
        a = b;
        b = t;
    }
    return a;
}

static int fib(void *arg)
{
    struct fib *a = arg;
    if (a->n < 2) {
        a->result = a->n;
        return 0;
    }
    struct fib x = {a->n - 1, 0}, y = {a->n - 2, 0};
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, fib, &x);
    int rc = fib(&y);
    int rc2 = cf_fj_end(&s);
    a->result = x.result + y.result;
    return rc ? rc : rc2;
}

static void test_fib_pools(void **state)
{
    (void)state;
    int64_t n = cf_test_scale() >= 1 ? 24 : 20;
    for (int workers = 1; workers <= 4; workers *= 2) {
        cf_executor *ex = pool(workers);
        for (int rep = 0; rep < 3; rep++) {
            struct fib root = {n, -1};
            assert_int_equal(cf_fj_run(ex, fib, &root), 0);
            assert_int_equal(root.result, fib_ref(n));
        }
        cf_executor_free(ex);
    }
}

/* Outside any pool the same program runs serially: the child at its fork. */
static _Atomic int ran_flag;
static int set_flag(void *arg)
{
    atomic_store_explicit(&ran_flag, 1, memory_order_relaxed);
    return (int)(intptr_t)arg;
}

static void test_outside_runs_inline(void **state)
{
    (void)state;
    cf_fj_scope s;
    cf_fj_child a, b;
    cf_fj_begin(&s);
    atomic_store(&ran_flag, 0);
    cf_fj_fork(&s, &a, set_flag, (void *)(intptr_t)7);
    assert_int_equal(atomic_load(&ran_flag), 1); /* ran at its fork */
    cf_fj_fork(&s, &b, set_flag, (void *)(intptr_t)0);
    assert_int_equal(cf_fj_join(&s), 0); /* b, the newest */
    assert_int_equal(cf_fj_join(&s), 7); /* a */
    assert_int_equal(cf_fj_join(&s), 0); /* none left */
    assert_int_equal(cf_fj_end(&s), 0);
    struct fib root = {15, -1};
    assert_int_equal(fib(&root), 0);
    assert_int_equal(root.result, fib_ref(15));
}

/* ---- errors ---- */

static int code_of(void *arg)
{
    return (int)(intptr_t)arg;
}

struct err_case {
    int join_rc[3];
    int end_rc;
};

static int errors_root(void *arg)
{
    struct err_case *e = arg;
    cf_fj_scope s;
    cf_fj_child c[5];
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c[0], code_of, (void *)(intptr_t)11);
    cf_fj_fork(&s, &c[1], code_of, (void *)(intptr_t)0);
    cf_fj_fork(&s, &c[2], code_of, (void *)(intptr_t)-3);
    e->join_rc[0] = cf_fj_join(&s); /* c[2] */
    e->join_rc[1] = cf_fj_join(&s); /* c[1] */
    cf_fj_fork(&s, &c[3], code_of, (void *)(intptr_t)0);
    cf_fj_fork(&s, &c[4], code_of, (void *)(intptr_t)5);
    e->end_rc = cf_fj_end(&s); /* c[4] (5), c[3], c[0] (11): the first non-zero */
    return 42;
}

static void test_errors_reach_join(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    for (int rep = 0; rep < 50; rep++) {
        struct err_case e = {{0, 0, 0}, 0};
        assert_int_equal(cf_fj_run(ex, errors_root, &e), 42);
        assert_int_equal(e.join_rc[0], -3);
        assert_int_equal(e.join_rc[1], 0);
        assert_int_equal(e.end_rc, 5);
    }
    /* From outside, too. */
    struct err_case e = {{0, 0, 0}, 0};
    assert_int_equal(errors_root(&e), 42);
    assert_int_equal(e.join_rc[0], -3);
    assert_int_equal(e.end_rc, 5);
    cf_executor_free(ex);
    assert_int_equal(cf_fj_run(NULL, code_of, NULL), CF_EINVAL);
}

/* ---- a steal forced into the window before the join ---- */

static _Atomic int child_started, owner_waiting, grandchild_ran, hook_hit_taken, steal_timed_out;
static _Atomic(const void *) watched;
static pthread_t owner_thread;
static _Atomic int child_on_other_thread, grandchild_on_owner;

/* The owner, about to take `watched` back, waits until another worker has
 * stolen it (the child runs there and holds it); once the owner sees it
 * taken, it lets the child go on. */
static void steal_hook(int point, const void *child)
{
    if (child != atomic_load_explicit(&watched, memory_order_relaxed)) return;
    if (point == CF__TEST_FJ_JOIN) {
        /* (cmocka's asserts belong to the main thread: report by flag.) */
        if (!await_flag(&child_started)) atomic_store(&steal_timed_out, 1);
    } else if (point == CF__TEST_FJ_TAKEN) {
        atomic_store_explicit(&hook_hit_taken, 1, memory_order_relaxed);
        atomic_store_explicit(&owner_waiting, 1, memory_order_release);
    }
}

struct stolen_arg {
    int64_t value; /* written by the child, read after the join */
    bool fork_grandchild;
};

static int grandchild(void *arg)
{
    *(int64_t *)arg = 1000;
    atomic_store_explicit(&grandchild_on_owner, pthread_equal(pthread_self(), owner_thread),
                          memory_order_relaxed);
    atomic_store_explicit(&grandchild_ran, 1, memory_order_release);
    return 0;
}

static int stolen_child(void *arg)
{
    struct stolen_arg *a = arg;
    atomic_store_explicit(&child_on_other_thread, !pthread_equal(pthread_self(), owner_thread),
                          memory_order_relaxed);
    int64_t g = 0;
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    if (a->fork_grandchild) cf_fj_fork(&s, &c, grandchild, &g);
    atomic_store_explicit(&child_started, 1, memory_order_release);
    /* Hold the frame while the owner joins: until it found the child
     * taken and (with a grandchild) ran our queued grandchild itself. */
    if (!await_flag(&owner_waiting)) return -100;
    if (a->fork_grandchild && !await_flag(&grandchild_ran)) return -101;
    int rc = cf_fj_end(&s);
    a->value = 77 + g; /* plain write, published by the completion */
    return rc ? rc : 9;
}

static int stolen_root(void *arg)
{
    struct stolen_arg *a = arg;
    owner_thread = pthread_self();
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    atomic_store_explicit(&watched, (const void *)&c, memory_order_relaxed);
    cf_fj_fork(&s, &c, stolen_child, a);
    int rc = cf_fj_join(&s);
    cf_fj_end(&s);
    return rc;
}

static void run_stolen(bool fork_grandchild)
{
    cf_executor *ex = pool(2);
    int reps = cf_test_scale() >= 1 ? 20 : 5;
    for (int rep = 0; rep < reps; rep++) {
        atomic_store(&child_started, 0);
        atomic_store(&owner_waiting, 0);
        atomic_store(&grandchild_ran, 0);
        atomic_store(&hook_hit_taken, 0);
        atomic_store(&steal_timed_out, 0);
        atomic_store(&child_on_other_thread, 0);
        atomic_store(&grandchild_on_owner, 0);
        atomic_store(&cf__test_fj_hook, steal_hook);
        struct stolen_arg a = {0, fork_grandchild};
        int rc = cf_fj_run(ex, stolen_root, &a);
        atomic_store(&cf__test_fj_hook, NULL);
        atomic_store(&watched, NULL);
        if (atomic_load(&steal_timed_out)) fail_msg("nobody stole the child in 10 s");
        assert_int_equal(rc, 9);
        assert_int_equal(a.value, fork_grandchild ? 1077 : 77);
        assert_int_equal(atomic_load(&hook_hit_taken), 1);
        assert_int_equal(atomic_load(&child_on_other_thread), 1);
        if (fork_grandchild) assert_int_equal(atomic_load(&grandchild_on_owner), 1);
    }
    cf_executor_free(ex);
}

static void test_stolen_before_join(void **state)
{
    (void)state;
    run_stolen(false);
}

/* The thief's child forks a grandchild and will not go on until someone
 * else ran it: the waiting owner must take it from the thief's deque. */
static void test_stolen_owner_leapfrogs(void **state)
{
    (void)state;
    run_stolen(true);
}

/* ---- deep recursion ---- */

struct chain {
    int64_t depth;
    int64_t *leaves; /* one slot per level */
};

static int leaf(void *arg)
{
    *(int64_t *)arg += 1;
    return 0;
}

/* Each level forks a leaf and recurses before joining it: the deque holds
 * every level's leaf at once (it grows), thieves take the oldest, joins
 * deep in the stack find their leaf stolen or take it back. */
static int chain(void *arg)
{
    struct chain *a = arg;
    if (a->depth == 0) return 0;
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, leaf, &a->leaves[a->depth - 1]);
    struct chain next = {a->depth - 1, a->leaves};
    int rc = chain(&next);
    int rc2 = cf_fj_end(&s);
    return rc ? rc : rc2;
}

static void test_deep_recursion(void **state)
{
    (void)state;
    int64_t depth = (int64_t)(20000 * (cf_test_scale() < 1 ? cf_test_scale() : 1));
    if (depth < 1000) depth = 1000;
    int64_t *leaves = calloc((size_t)depth, sizeof *leaves);
    assert_non_null(leaves);
    for (int workers = 1; workers <= 3; workers++) {
        cf_executor *ex = pool(workers);
        memset(leaves, 0, (size_t)depth * sizeof *leaves);
        struct chain root = {depth, leaves};
        assert_int_equal(cf_fj_run(ex, chain, &root), 0);
        for (int64_t i = 0; i < depth; i++) assert_int_equal(leaves[i], 1);
        /* And a deep fib tree on the same pool. */
        struct fib f = {cf_test_scale() >= 1 ? 22 : 18, -1};
        assert_int_equal(cf_fj_run(ex, fib, &f), 0);
        assert_int_equal(f.result, fib_ref(f.n));
        cf_executor_free(ex);
    }
    free(leaves);
}

/* ---- futures inside a scope ---- */

static cf_executor *mixed_ex;

static int square_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    (void)len;
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

struct mixed {
    int64_t n, sum;
};

/* Forks a child, then submits a future that stays queued above the child
 * on the deque, and joins before waiting for the future: the join must run
 * (or find taken) what was pushed after its child. */
static int mixed(void *arg)
{
    struct mixed *a = arg;
    if (a->n == 0) return 0;
    struct mixed x = {a->n - 1, 0};
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, mixed, &x);
    cf_future *f;
    int rc = cf_submit(mixed_ex, square_task, &a->n, sizeof a->n, &f);
    if (rc) return rc;
    rc = cf_fj_end(&s);
    int64_t sq = 0;
    int rc2 = cf_future_result_i64(f, CF_FOREVER, &sq);
    cf_future_release(f);
    a->sum = x.sum + sq;
    return rc ? rc : rc2;
}

static void test_futures_in_scope(void **state)
{
    (void)state;
    for (int workers = 1; workers <= 2; workers++) {
        mixed_ex = pool(workers);
        for (int rep = 0; rep < 20; rep++) {
            struct mixed m = {200, 0};
            assert_int_equal(cf_fj_run(mixed_ex, mixed, &m), 0);
            assert_int_equal(m.sum, 200 * 201 * 401 / 6);
        }
        cf_executor_free(mixed_ex);
    }
}

/* ---- shutdown(cancel_futures) takes a queued child ---- */

static cf_executor *cancel_ex;
static _Atomic int cancelled_ran, shutdown_rc;

static void cancel_hook(int point, const void *child)
{
    if (point != CF__TEST_FJ_JOIN || child != atomic_load(&watched)) return;
    /* From the owner (a worker: shutdown does not wait there). Its
     * cancel pass steals the child from our deque. */
    atomic_store(&shutdown_rc, cf_executor_shutdown(cancel_ex, false, true));
}

static int mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&cancelled_ran, 1);
    return 0;
}

static int cancel_root(void *arg)
{
    (void)arg;
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    atomic_store(&watched, (const void *)&c);
    cf_fj_fork(&s, &c, mark_ran, NULL);
    return cf_fj_end(&s);
}

static void test_cancelled_by_shutdown(void **state)
{
    (void)state;
    cancel_ex = pool(1); /* nobody else can steal the child first */
    atomic_store(&cancelled_ran, 0);
    atomic_store(&shutdown_rc, -1);
    atomic_store(&cf__test_fj_hook, cancel_hook);
    int rc = cf_fj_run(cancel_ex, cancel_root, NULL);
    atomic_store(&cf__test_fj_hook, NULL);
    atomic_store(&watched, NULL);
    assert_int_equal(atomic_load(&shutdown_rc), 0);
    assert_int_equal(rc, CF_ECANCELLED);
    assert_int_equal(atomic_load(&cancelled_ran), 0);
    cf_executor_free(cancel_ex);
}

/* ---- the rules, checked in builds with debug checks ---- */

static char out[4096];
typedef void bug_fn(void);

/* Runs bug in a child process; returns the signal it died of (0 if it
 * exited) and fills out[] with its stderr. */
static int in_child(bug_fn *bug)
{
    char path[] = "/tmp/cf-fork-join-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(fd, STDERR_FILENO) < 0) _exit(100);
        alarm(60);
        bug();
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void expect_abort(bug_fn *bug, const char *call, const char *problem)
{
    if (!cf__debug_checks_on()) {
        print_message("debug checks are off in this build: skipped\n");
        skip();
    }
    int sig = in_child(bug);
    char head[128];
    snprintf(head, sizeof head, "cfutures: %s: scope 0x", call);
    if (sig != SIGABRT || strncmp(out, head, strlen(head)) != 0 || !strstr(out, problem))
        fail_msg("want SIGABRT and \"%s... %s\", got signal %d and: \"%s\"", head, problem, sig,
                 out);
}

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

static void fork_after_end(void)
{
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_end(&s);
    cf_fj_fork(&s, &c, nothing, NULL);
}

static void outer_used_inside_inner(void)
{
    cf_fj_scope outer, inner;
    cf_fj_child c;
    cf_fj_begin(&outer);
    cf_fj_begin(&inner); /* never ended */
    cf_fj_fork(&outer, &c, nothing, NULL);
}

static cf_fj_scope *parent_scope;
static int fork_into_parent(void *arg)
{
    cf_fj_child *c = arg;
    cf_fj_fork(parent_scope, c, nothing, NULL);
    return 0;
}

static void child_uses_parent_scope(void)
{
    cf_fj_scope s;
    cf_fj_child c, c2;
    parent_scope = &s;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, fork_into_parent, &c2);
    cf_fj_end(&s);
}

static void *join_elsewhere(void *arg)
{
    cf_fj_join(arg);
    return NULL;
}

static int scope_to_thread(void *arg)
{
    (void)arg;
    cf_fj_scope s;
    cf_fj_child c;
    cf_fj_begin(&s);
    cf_fj_fork(&s, &c, nothing, NULL);
    pthread_t t;
    pthread_create(&t, NULL, join_elsewhere, &s);
    pthread_join(t, NULL);
    return cf_fj_end(&s);
}

static void other_thread_joins(void)
{
    cf_executor *ex = NULL;
    if (cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1})) _exit(101);
    cf_fj_run(ex, scope_to_thread, NULL);
}

static void test_debug_checks(void **state)
{
    (void)state;
    expect_abort(fork_after_end, "cf_fj_fork", "is not open");
    expect_abort(outer_used_inside_inner, "cf_fj_fork", "innermost open scope");
    expect_abort(child_uses_parent_scope, "cf_fj_fork", "used by a child it is running");
    expect_abort(other_thread_joins, "cf_fj_join", "other than the one that began it");
}

/* ---- the root of cf_fj_run runs on a worker ---- */

static _Atomic int workers_release, workers_held;
static pthread_t root_caller;

static int hold_worker(const void *arg, size_t len, cf_out *res)
{
    (void)arg, (void)len, (void)res;
    atomic_fetch_add(&workers_held, 1);
    while (!atomic_load(&workers_release)) usleep(1000);
    return 0;
}

static void *release_workers_later(void *arg)
{
    (void)arg;
    usleep(100 * 1000); /* while cf_fj_run's caller waits for its root */
    atomic_store(&workers_release, 1);
    return NULL;
}

static int root_on_caller(void *arg)
{
    (void)arg;
    return pthread_equal(pthread_self(), root_caller) ? 1 : 0;
}

/* Every worker busy when cf_fj_run is called from outside: the caller,
 * waiting for the root, must not run it itself (its forks would then run
 * inline, serially); the root waits for a worker. */
static void test_root_waits_for_a_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool(2);
    atomic_store(&workers_release, 0);
    atomic_store(&workers_held, 0);
    cf_future *h[2];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(ex, hold_worker, NULL, 0, &h[i]), 0);
    while (atomic_load(&workers_held) < 2) usleep(1000);
    root_caller = pthread_self();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_workers_later, NULL), 0);
    assert_int_equal(cf_fj_run(ex, root_on_caller, NULL), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cf_future_result(h[i], CF_FOREVER, NULL, NULL), 0);
        cf_future_release(h[i]);
    }
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_runs_inline),
        cmocka_unit_test(test_fib_pools),
        cmocka_unit_test(test_errors_reach_join),
        cmocka_unit_test(test_stolen_before_join),
        cmocka_unit_test(test_stolen_owner_leapfrogs),
        cmocka_unit_test(test_deep_recursion),
        cmocka_unit_test(test_futures_in_scope),
        cmocka_unit_test(test_cancelled_by_shutdown),
        cmocka_unit_test(test_root_waits_for_a_worker),
        cmocka_unit_test(test_debug_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
