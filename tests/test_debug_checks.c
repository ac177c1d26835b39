/* Debug checks (src/sys/debug_checks.h): a future released twice or used after
 * its last release, and an executor freed twice or used after
 * cf_executor_free, abort with one line naming the call. Each bug runs in
 * a forked child with stderr in a file; the parent checks that the child
 * died of SIGABRT and what it printed.
 *
 * The checks exist only in builds with them (assertions on, or
 * CF_DEBUG_CHECKS: tools/test's ASan tree); elsewhere every case is
 * skipped, saying so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "sys/debug_checks.h"
#include "support/test_env.h"

static char out[4096];

typedef void bug_fn(void);

/* Runs bug in a child; returns the signal it died of (0 if it exited) and
 * fills out[] with its stderr. */
static int in_child(bug_fn *bug)
{
    char path[] = "/tmp/cf-debug-checks-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(fd, STDERR_FILENO) < 0) _exit(100);
        alarm(60); /* a check that hangs instead of aborting */
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

/* died of SIGABRT, and the first line is "cfutures: <call>: <kind> 0x... <problem>" */
static void expect_abort(bug_fn *bug, const char *call, const char *kind, const char *problem)
{
    if (!cf__debug_checks_on()) {
        print_message("debug checks are off in this build (no CF_DEBUG_CHECKS, NDEBUG set): "
                      "skipped\n");
        skip();
    }
    int sig = in_child(bug);
    char head[128];
    snprintf(head, sizeof head, "cfutures: %s: %s 0x", call, kind);
    if (sig != SIGABRT || strncmp(out, head, strlen(head)) != 0 || !strstr(out, problem) ||
        strchr(out, '\n') == NULL)
        fail_msg("want SIGABRT and \"%s... %s\", got signal %d and: \"%s\"", head, problem, sig,
                 out);
}

static int64_t identity(int64_t x)
{
    return x;
}

static int ident_task(const void *arg, size_t len, cf_out *o)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(o, 1, "want an int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(o, identity(x));
}

/* ---- futures ---- */

static void release_twice(void)
{
    cf_future *f = cf_test_future();
    cf_future_release(f);
    cf_future_release(f);
}

static void done_after_release(void)
{
    cf_future *f = cf_test_future();
    cf_future_set_result(f, "x", 1);
    cf_future_release(f);
    (void)cf_future_done(f);
}

/* A pool's future. The pool holds its own reference until the worker that
 * ran the task drops it, so the caller's release is the last only once the
 * pool is shut down (waiting): before that, a use after the caller's own
 * release touches a live record and no check can see it. */
static void result_after_release(void)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2}), 0);
    int64_t x = 7, y = 0;
    cf_future *f;
    if (!ex || cf_submit(ex, ident_task, &x, sizeof x, &f)) _exit(101);
    if (cf_future_result_i64(f, CF_FOREVER, &y) || y != 7) _exit(102);
    cf_executor_shutdown(ex, true, false);
    cf_future_release(f);
    cf_future_result_i64(f, CF_FOREVER, &y);
}

static void pool_release_twice(void)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2}), 0);
    int64_t x = 7, y = 0;
    cf_future *f;
    if (!ex || cf_submit(ex, ident_task, &x, sizeof x, &f)) _exit(101);
    if (cf_future_result_i64(f, CF_FOREVER, &y)) _exit(102);
    cf_executor_free(ex); /* the pool's own reference is gone too */
    cf_future_release(f);
    cf_future_release(f);
}

static void test_future_released_twice(void **state)
{
    (void)state;
    expect_abort(release_twice, "cf_future_release", "future", "released twice");
    expect_abort(pool_release_twice, "cf_future_release", "future", "released twice");
}

static void test_future_used_after_release(void **state)
{
    (void)state;
    expect_abort(done_after_release, "cf_future_done", "future", "used after its last release");
    expect_abort(result_after_release, "cf_future_result_i64", "future",
                 "used after its last release");
}

/* Detected while the record is in quarantine, even after many other
 * futures were made and released meanwhile (fewer than the quarantine). */
static void release_twice_later(void)
{
    cf_future *f = cf_test_future();
    cf_future_release(f);
    for (int i = 0; i < CF__QUARANTINE / 2; i++) cf_future_release(cf_test_future());
    cf_future_release(f);
}

static void test_detected_while_quarantined(void **state)
{
    (void)state;
    expect_abort(release_twice_later, "cf_future_release", "future", "released twice");
}

/* ---- executors ---- */

static void executor_freed_twice(void)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1}), 0);
    if (!ex) _exit(101);
    cf_executor_free(ex);
    cf_executor_free(ex);
}

static void submit_after_free(void)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1}), 0);
    if (!ex) _exit(101);
    cf_executor_free(ex);
    int64_t x = 1;
    cf_future *f;
    cf_submit(ex, ident_task, &x, sizeof x, &f);
}

static void test_executor_freed_twice(void **state)
{
    (void)state;
    expect_abort(executor_freed_twice, "cf_executor_free", "executor", "freed twice");
    expect_abort(submit_after_free, "cf_submit", "executor", "used after cf_executor_free");
}

/* Correct use never trips a check: futures in and out of a pool, more
 * than the quarantine holds, so records come back out of it. */
static void test_correct_use_passes(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2}), 0);
    assert_non_null(ex);
    for (int64_t i = 0; i < 3 * CF__QUARANTINE; i++) {
        cf_future *f;
        int64_t y = -1;
        assert_int_equal(cf_submit(ex, ident_task, &i, sizeof i, &f), 0);
        assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &y), 0);
        assert_int_equal(y, i);
        cf_future_release(cf_future_retain(f));
        cf_future_release(f);
    }
    cf_executor_free(ex);
    cf_executor_free(NULL); /* still a no-op */
    cf_future_release(NULL);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_future_released_twice),
        cmocka_unit_test(test_future_used_after_release),
        cmocka_unit_test(test_detected_while_quarantined),
        cmocka_unit_test(test_executor_freed_twice),
        cmocka_unit_test(test_correct_use_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
