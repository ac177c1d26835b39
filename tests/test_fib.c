/* Recursive fork-join (WORKLOADS.md fib): every call submits fib(n-1) to
 * the pool, computes fib(n-2) inline and waits for the child. A worker that
 * waits runs other tasks meanwhile (SEMANTICS 22), so this finishes with 1,
 * 2 and 4 workers, where a pool that blocks its worker would deadlock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_env.h"

struct fib_arg {
    cf_executor *ex;
    int64_t n;
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

static int fib_task(const void *arg, size_t len, cf_out *out);

static int fib(cf_executor *ex, int64_t n, int64_t *r)
{
    if (n < 2) {
        *r = n;
        return 0;
    }
    struct fib_arg a = {ex, n - 1};
    cf_future *f;
    int rc = cf_submit(ex, fib_task, &a, sizeof a, &f);
    if (rc) return rc;
    int64_t y = 0, x = 0;
    rc = fib(ex, n - 2, &y);
    int rc2 = cf_future_result_i64(f, CF_FOREVER, &x);
    cf_future_release(f);
    if (rc || rc2) return rc ? rc : rc2;
    *r = x + y;
    return 0;
}

static int fib_task(const void *arg, size_t len, cf_out *out)
{
    struct fib_arg a;
    if (len != sizeof a) return 99;
    memcpy(&a, arg, sizeof a);
    int64_t r = 0; /* set by fib() on success; -O3 cannot see that */
    int rc = fib(a.ex, a.n, &r);
    if (rc) return cf_out_error(out, 98, "fib(%lld): %s", (long long)a.n, cf_strerror(rc));
    return cf_out_i64(out, r);
}

static void run_fib(int workers, int64_t n)
{
    int err = 1;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = workers});
    assert_non_null(ex);
    assert_int_equal(err, 0);
    assert_int_equal(cf_executor_workers(ex), workers);
    /* The root runs as a task too, so every wait happens on a worker. */
    struct fib_arg a = {ex, n};
    cf_future *f;
    assert_int_equal(cf_submit(ex, fib_task, &a, sizeof a, &f), 0);
    int64_t r = -1;
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &r), 0);
    assert_int_equal(r, fib_ref(n));
    cf_future_release(f);
    cf_executor_free(ex);
}

static void test_fib_1_worker(void **state)
{
    (void)state;
    for (int64_t n = 0; n <= 20; n += 5) run_fib(1, n);
    run_fib(1, 22);
}

static void test_fib_2_workers(void **state)
{
    (void)state;
    run_fib(2, 20);
    run_fib(2, 25); /* fib(25) on 2 workers must finish */
}

static void test_fib_4_workers(void **state)
{
    (void)state;
    run_fib(4, 23);
}

/* Waiting from outside the pool: the caller sleeps, the pool does it all. */
static void test_fib_from_outside(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2}), 0);
    assert_non_null(ex);
    int64_t r = -1;
    assert_int_equal(fib(ex, 18, &r), 0);
    assert_int_equal(r, fib_ref(18));
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fib_1_worker),
        cmocka_unit_test(test_fib_2_workers),
        cmocka_unit_test(test_fib_4_workers),
        cmocka_unit_test(test_fib_from_outside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
