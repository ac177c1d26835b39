/* Bad input to every entry point of cfutures/{error,task,future,wait}.h:
 * each returns its documented code, nothing aborts, and the future stays
 * usable afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "cfutures.h"
#include "support/test_future.h"
#include "core/future.h"
#include "support/test_env.h"

static void never_cb(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    fail_msg("a callback of a failed add ran");
}

/* The future still works: it can complete and be read. */
static void assert_usable(cf_future *f)
{
    assert_false(cf_future_done(f));
    int64_t v = 31, out;
    assert_int_equal(cf_future_set_result(f, &v, sizeof v), 0);
    assert_int_equal(cf_future_result_i64(f, CF_FOREVER, &out), 0);
    assert_int_equal(out, 31);
}

static void future_calls(void **state)
{
    (void)state;
    const void *data = (void *)0x1;
    size_t len = 7;
    int64_t i64 = 5;
    double f64 = 5;
    void *ptr = (void *)0x2;
    int code = 3;
    const char *msg = "m";
    double nan = NAN;

    /* NULL future */
    assert_int_equal(cf_future_result(NULL, CF_POLL, &data, &len), CF_EINVAL);
    assert_int_equal(cf_future_result_i64(NULL, CF_POLL, &i64), CF_EINVAL);
    assert_int_equal(cf_future_result_f64(NULL, CF_POLL, &f64), CF_EINVAL);
    assert_int_equal(cf_future_result_ptr(NULL, CF_POLL, &ptr), CF_EINVAL);
    assert_int_equal(cf_future_exception(NULL, CF_POLL, &code, &msg), CF_EINVAL);
    assert_false(cf_future_cancel(NULL));
    assert_false(cf_future_cancelled(NULL));
    assert_false(cf_future_running(NULL));
    assert_false(cf_future_done(NULL));
    assert_int_equal(cf_future_add_done_callback(NULL, never_cb, NULL), CF_EINVAL);
    assert_null(cf_future_retain(NULL));
    cf_future_release(NULL);
    assert_int_equal(cf_future_set_running_or_notify_cancel(NULL), CF_EINVAL);
    assert_int_equal(cf_future_set_result(NULL, &i64, sizeof i64), CF_EINVAL);
    assert_int_equal(cf_future_set_exception(NULL, 1, "x"), CF_EINVAL);
    /* outputs untouched */
    assert_ptr_equal(data, (void *)0x1);
    assert_int_equal(len, 7);
    assert_int_equal(i64, 5);
    assert_int_equal(code, 3);

    /* the constructor: 0 and a future, or a code */
    assert_int_equal(cf_future_new(NULL), CF_EINVAL);
    cf_future *made = NULL;
    assert_int_equal(cf_future_new(&made), 0);
    assert_non_null(made);
    assert_false(cf_future_done(made));
    cf_future_release(made);

    /* a pending future: bad arguments change nothing */
    cf_future *f = cf_test_future();
    assert_int_equal(cf_future_result(f, nan, &data, &len), CF_EINVAL);
    assert_int_equal(cf_future_result_i64(f, nan, &i64), CF_EINVAL);
    assert_int_equal(cf_future_result_i64(f, CF_POLL, NULL), CF_EINVAL);
    assert_int_equal(cf_future_result_f64(f, CF_POLL, NULL), CF_EINVAL);
    assert_int_equal(cf_future_result_ptr(f, CF_POLL, NULL), CF_EINVAL);
    assert_int_equal(cf_future_exception(f, nan, &code, &msg), CF_EINVAL);
    assert_int_equal(cf_future_add_done_callback(f, NULL, NULL), CF_EINVAL);
    assert_int_equal(cf_future_set_result(f, NULL, 1), CF_EINVAL);
    assert_int_equal(cf_future_set_result(f, &i64, (size_t)UINT32_MAX + 1), CF_ETOOBIG);
    assert_int_equal(cf_future_set_exception(f, 0, "zero is success"), CF_EINVAL);
    assert_int_equal(cf__future_complete_from_out(f, 0, NULL), CF_EINVAL);
    assert_int_equal(cf__future_complete_from_out(NULL, 0, NULL), CF_EINVAL);
    assert_int_equal(cf__future_fail_broken(NULL, "x"), CF_EINVAL);
    assert_false(cf__future_run(NULL));
    assert_false(cf__future_run(f)); /* not a task: nothing to run */
    assert_false(cf__future_mark_running(NULL));
    assert_ptr_equal(data, (void *)0x1);
    assert_int_equal(code, 3);
    assert_string_equal(msg, "m");
    assert_usable(f);

    /* a done future: NaN is still invalid, wrong sizes are CF_EINVAL */
    assert_int_equal(cf_future_result(f, nan, &data, &len), CF_EINVAL);
    assert_int_equal(cf_future_result_f64(f, CF_POLL, &f64), 0); /* 8 bytes */
    char small[3] = "ab";
    cf_future *g = cf_test_future();
    assert_int_equal(cf_future_set_result(g, small, sizeof small), 0);
    assert_int_equal(cf_future_result_i64(g, CF_POLL, &i64), CF_EINVAL);
    assert_int_equal(cf_future_result_ptr(g, CF_POLL, &ptr), CF_EINVAL);
    assert_int_equal(cf_future_result_f64(g, CF_POLL, &f64), CF_EINVAL);
    assert_int_equal(cf_future_result(g, CF_POLL, &data, &len), 0); /* still readable */
    assert_int_equal(len, 3);
    cf_future_release(g);
    cf_future_release(f);

    /* a task record refuses a NULL argument with a length */
    assert_null(cf__future_new_task(NULL, NULL, 5, NULL, NULL));
}

static void out_calls(void **state)
{
    (void)state;
    assert_int_equal(cf_out_set(NULL, "x", 1), CF_EINVAL);
    void *buf = (void *)0x1;
    assert_int_equal(cf_out_alloc(NULL, 1, &buf), CF_EINVAL);
    assert_null(buf);
    assert_int_equal(cf_out_error(NULL, 5, "x"), 5);
    assert_int_equal(cf_out_error(NULL, 0, NULL), CF_EINVAL);
    assert_int_equal(cf_out_i64(NULL, 1), CF_EINVAL);
    assert_int_equal(cf_out_f64(NULL, 1), CF_EINVAL);
    assert_int_equal(cf_out_ptr(NULL, NULL), CF_EINVAL);
    struct cf_out o;
    cf__out_init(&o);
    assert_int_equal(cf_out_set(&o, "abc", 3), 0);
    assert_int_equal(cf_out_set(&o, NULL, 2), CF_EINVAL);
    assert_int_equal(o.len, 3); /* unchanged */
    assert_memory_equal(o.data, "abc", 3);
    assert_int_equal(cf_out_set(&o, NULL, 0), 0);
    assert_int_equal(o.len, 0);
    assert_int_equal(cf_out_error(&o, 0, NULL), CF_EINVAL);
    assert_int_equal(o.code, CF_EINVAL);
    cf__out_dispose(&o);
    cf__out_dispose(NULL);
}

static void wait_calls(void **state)
{
    (void)state;
    cf_future *f = cf_test_future();
    cf_future *fs[] = {f, NULL};
    size_t n_done = 77;
    assert_int_equal(cf_wait(NULL, 1, CF_ALL_COMPLETED, CF_POLL, &n_done), CF_EINVAL);
    assert_int_equal(cf_wait(fs, 2, CF_ALL_COMPLETED, CF_POLL, &n_done), CF_EINVAL);
    assert_int_equal(cf_wait(fs, 1, (enum cf_return_when)7, CF_POLL, &n_done), CF_EINVAL);
    assert_int_equal(cf_wait(fs, 1, (enum cf_return_when) - 1, CF_POLL, &n_done), CF_EINVAL);
    assert_int_equal(cf_wait(fs, 1, CF_ALL_COMPLETED, NAN, &n_done), CF_EINVAL);
    assert_int_equal(n_done, 77);
    assert_ptr_equal(fs[0], f);
    assert_null(fs[1]);
    assert_int_equal(cf_wait(fs, 1, CF_ALL_COMPLETED, CF_POLL, NULL), 0); /* n_done optional */

    cf_as_completed *it = (cf_as_completed *)0x1;
    assert_int_equal(cf_as_completed_new(fs, 1, CF_FOREVER, NULL), CF_EINVAL);
    assert_int_equal(cf_as_completed_new(NULL, 1, CF_FOREVER, &it), CF_EINVAL);
    assert_int_equal(cf_as_completed_new(fs, 2, CF_FOREVER, &it), CF_EINVAL);
    assert_int_equal(cf_as_completed_new(fs, 1, NAN, &it), CF_EINVAL);
    assert_ptr_equal(it, (cf_as_completed *)0x1);
    cf_future *g = NULL;
    assert_int_equal(cf_as_completed_next(NULL, &g), CF_EINVAL);
    assert_int_equal(cf_as_completed_remaining(NULL), 0);
    cf_as_completed_free(NULL);
    assert_int_equal(cf_as_completed_new(fs, 1, CF_FOREVER, &it), 0);
    assert_int_equal(cf_as_completed_next(it, NULL), CF_EINVAL);
    assert_int_equal(cf_as_completed_remaining(it), 1);
    cf_as_completed_free(it);
    assert_usable(f);
    cf_future_release(f);
}

static void errors_table(void **state)
{
    (void)state;
    int codes[] = {CF_OK,    CF_EINVAL,  CF_ENOMEM,    CF_ETIMEDOUT, CF_ECANCELLED,
                   CF_ETASK, CF_EBROKEN, CF_ESHUTDOWN, CF_ESTATE,    CF_END,
                   CF_ESYS,  CF_ETOOBIG, CF_ENOTSUP};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = cf_strerror(codes[i]);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, cf_strerror(codes[j])); /* distinct */
    }
    assert_string_equal(cf_strerror(INT_MIN), "unknown error");
    assert_string_equal(cf_strerror(INT_MAX), "unknown error");
    assert_string_equal(cf_strerror(42), "unknown error");
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(future_calls),
        cmocka_unit_test(out_calls),
        cmocka_unit_test(wait_calls),
        cmocka_unit_test(errors_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
