/* Bad input to every executor entry point and to the thread pool's
 * constructor: a clear code, nothing aborts, nothing changes, and a failed
 * submit never runs its task. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_env.h"

static _Atomic int g_ran;
static int task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    atomic_fetch_add(&g_ran, 1);
    return 0;
}

static void test_submit_bad(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1}), 0);
    assert_non_null(ex);
    cf_future *f = (cf_future *)0x1;
    int x = 1;
    assert_int_equal(cf_submit(NULL, task, &x, sizeof x, &f), CF_EINVAL);
    assert_int_equal(cf_submit(ex, NULL, &x, sizeof x, &f), CF_EINVAL);
    assert_int_equal(cf_submit(ex, task, &x, sizeof x, NULL), CF_EINVAL);
    assert_int_equal(cf_submit(ex, task, NULL, 4, &f), CF_EINVAL);
    assert_int_equal(cf_submit(ex, task, &x, (size_t)UINT32_MAX + 1, &f), CF_ETOOBIG);
    assert_ptr_equal(f, (cf_future *)0x1);
    /* NULL with length 0 is fine. */
    assert_int_equal(cf_submit(ex, task, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
    cf_future_release(f);
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&g_ran), 1); /* only the good one ran */
}

static void test_other_entry_points_bad(void **state)
{
    (void)state;
    assert_int_equal(cf_executor_shutdown(NULL, true, false), CF_EINVAL);
    cf_executor_free(NULL); /* a no-op */
    assert_int_equal(cf_executor_workers(NULL), CF_EINVAL);
    cf_worker_stats st[2];
    size_t n = 99;
    assert_int_equal(cf_executor_stats(NULL, st, 2, &n), CF_EINVAL);
    assert_int_equal(n, 99);
    assert_int_equal(cf_process_pool_terminate(NULL, SIGTERM), CF_EINVAL);

    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 2}), 0);
    assert_non_null(ex);
    assert_int_equal(cf_executor_stats(ex, st, 2, NULL), CF_EINVAL);
    assert_int_equal(cf_executor_stats(ex, NULL, 2, &n), CF_EINVAL);
    assert_int_equal(cf_executor_stats(ex, st, 1, &n), 0); /* fewer slots than workers */
    assert_int_equal(n, 2);
    /* The reserved room of every entry written is zero, whatever it held. */
    memset(st, 0xa5, sizeof st);
    assert_int_equal(cf_executor_stats(ex, st, 2, &n), 0);
    for (size_t i = 0; i < 2; i++)
        for (size_t r = 0; r < sizeof st[i].reserved / sizeof st[i].reserved[0]; r++)
            assert_true(st[i].reserved[r] == 0);
    assert_int_equal(cf_process_pool_terminate(ex, 12345), CF_EINVAL);
    assert_int_equal(cf_process_pool_terminate(ex, SIGTERM), CF_ENOTSUP);
    assert_int_equal(cf_executor_workers(ex), 2);
    cf_executor_free(ex);
}

static void expect_einval(const cf_thread_pool_opts *o)
{
    cf_executor *ex = (cf_executor *)0x1;
    assert_int_equal(cf_thread_pool_new(&ex, o), CF_EINVAL);
    assert_null(ex); /* *out is NULL after a failure */
}

static void test_constructor_bad(void **state)
{
    (void)state;
    expect_einval(&(cf_thread_pool_opts){.max_workers = -1});
    /* Reserved room must stay zero: a newer library's option is refused. */
    expect_einval(&(cf_thread_pool_opts){.reserved[0] = 1});
    expect_einval(&(cf_thread_pool_opts){.reserved[7] = 1});
    assert_int_equal(cf_thread_pool_new(NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_process_pool_new(NULL, NULL), CF_EINVAL);
    cf_executor *pex = (cf_executor *)0x1;
    assert_int_equal(cf_process_pool_new(&pex, &(cf_process_pool_opts){.reserved[7] = 1}),
                     CF_EINVAL);
    assert_null(pex);
    expect_einval(&(cf_thread_pool_opts){.max_workers = INT32_MIN});
    expect_einval(&(cf_thread_pool_opts){.pin = (enum cf_pin_policy)77});
    expect_einval(&(cf_thread_pool_opts){.pin = (enum cf_pin_policy) - 3});
    expect_einval(&(cf_thread_pool_opts){.spin_ns = -7});
    expect_einval(&(cf_thread_pool_opts){.numa = (enum cf_switch)9});
    expect_einval(&(cf_thread_pool_opts){.stats = (enum cf_switch) - 1});
    expect_einval(&(cf_thread_pool_opts){.pin = CF_PIN_LIST, .cpu_list = "not-a-list"});
    expect_einval(&(cf_thread_pool_opts){.steal_attempts = -2});
    /* Good values still work. */
    int err = 1;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex,
                             &(cf_thread_pool_opts){.max_workers = 1, .spin_ns = CF_SPIN_NONE});
    assert_non_null(ex);
    assert_int_equal(err, 0);
    cf_executor_free(ex);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_bad),
        cmocka_unit_test(test_other_entry_points_bad),
        cmocka_unit_test(test_constructor_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
