/* The process pool's fork-snapshot rule, as README.md and
 * cf_process_pool_new's comment state it: workers see the program's memory
 * as it was when the pool was created. A global written after the
 * constructor is not seen, also not by a worker that replaces one
 * (max_tasks_per_child); a MAP_SHARED mapping made before the pool is
 * shared both ways; arguments carry what a task needs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/mman.h>

#include "cfutures.h"
#include "support/test_env.h"

static int64_t global_value = 1;
static int64_t *shared_value; /* MAP_SHARED, mapped before the pool */

static int read_global(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, global_value);
}

static int read_shared(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, __atomic_load_n(shared_value, __ATOMIC_ACQUIRE));
}

static int64_t run(cf_executor *ex, cf_task_fn *fn)
{
    cf_future *f;
    int64_t v = -1;
    assert_int_equal(cf_submit(ex, fn, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result_i64(f, 30.0, &v), 0);
    cf_future_release(f);
    return v;
}

static void test_workers_see_memory_as_at_creation(void **state)
{
    (void)state;
    shared_value = mmap(NULL, sizeof *shared_value, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shared_value != MAP_FAILED);
    __atomic_store_n(shared_value, 10, __ATOMIC_RELEASE);
    global_value = 1;
    cf_executor *ex;
    /* One task per worker: every task runs in a fresh replacement. */
    assert_int_equal(cf_process_pool_new(
                         &ex, &(cf_process_pool_opts){.max_workers = 1, .max_tasks_per_child = 1}),
                     0);
    global_value = 2;                                     /* after the pool: not seen */
    __atomic_store_n(shared_value, 20, __ATOMIC_RELEASE); /* shared: seen */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(run(ex, read_global), 1);
        assert_int_equal(run(ex, read_shared), 20);
    }
    cf_executor_free(ex);
    /* A pool made now snapshots the new value. */
    assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 1}), 0);
    assert_int_equal(run(ex, read_global), 2);
    cf_executor_free(ex);
    munmap(shared_value, sizeof *shared_value);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_see_memory_as_at_creation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
