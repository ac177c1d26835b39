/* Process pool stress (sizes scale with CFUTURES_STRESS_SCALE):
 * max_tasks_per_child = 1 with a long backlog (SEMANTICS 30: every task in
 * a fresh worker, no hang, gh-115634), retirement with small rings and
 * spilled arguments and results, several submitting threads with random
 * sizes and random cancellations, and shutdown while submitters run. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "support/test_env.h"

static int pid_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, getpid());
}

/* Result: the argument reversed, then 8 bytes of its sum (checked). */
static int rev_task(const void *arg, size_t len, cf_out *out)
{
    const unsigned char *a = arg;
    void *buf;
    if (cf_out_alloc(out, len + 8, &buf) != 0) return 1;
    unsigned char *r = buf;
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i++) {
        r[i] = a[len - 1 - i];
        sum += a[i];
    }
    memcpy(r + len, &sum, 8);
    return 0;
}

static void check_rev(cf_future *f, const unsigned char *a, size_t len)
{
    const void *d;
    size_t n;
    assert_int_equal(cf_future_result(f, CF_FOREVER, &d, &n), 0);
    assert_int_equal(n, len + 8);
    const unsigned char *r = d;
    uint64_t sum = 0, got;
    for (size_t i = 0; i < len; i++) {
        if (r[i] != a[len - 1 - i]) fail_msg("byte %zu of %zu", i, len);
        sum += a[i];
    }
    memcpy(&got, r + len, 8);
    assert_int_equal(got, sum);
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

static void test_one_task_per_child_long_backlog(void **state)
{
    (void)state;
    int n = (int)(300 * cf_test_scale());
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(
                         &ex, &(cf_process_pool_opts){.max_workers = 2, .max_tasks_per_child = 1}),
                     0);
    assert_non_null(ex);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    int64_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) assert_int_equal(cf_submit(ex, pid_task, NULL, 0, &fs[i]), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(cf_future_result_i64(fs[i], CF_FOREVER, &pids[i]), 0);
        cf_future_release(fs[i]);
    }
    /* Every task ran in a worker of its own. */
    qsort(pids, (size_t)n, sizeof *pids, cmp_i64);
    for (int i = 1; i < n; i++) assert_true(pids[i] != pids[i - 1]);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
    free(fs);
    free(pids);
}

static void test_retire_small_rings_spilled(void **state)
{
    (void)state;
    int n = (int)(200 * cf_test_scale());
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2,
                                                                      .max_tasks_per_child = 2,
                                                                      .ring_depth = 2,
                                                                      .slot_size = 64}),
                     0);
    assert_non_null(ex);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    unsigned char **args = calloc((size_t)n, sizeof *args);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    uint64_t rng = 42;
    for (int i = 0; i < n; i++) {
        lens[i] = cf_test_rand(&rng) % 3000;
        args[i] = malloc(lens[i] + 1);
        for (size_t j = 0; j < lens[i]; j++) args[i][j] = (unsigned char)cf_test_rand(&rng);
        assert_int_equal(cf_submit(ex, rev_task, args[i], lens[i], &fs[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        check_rev(fs[i], args[i], lens[i]);
        cf_future_release(fs[i]);
        free(args[i]);
    }
    cf_executor_free(ex);
    free(fs);
    free(args);
    free(lens);
}

struct submitter {
    cf_executor *ex;
    uint64_t seed;
    int n;
    int ok, cancelled;
};

static void *submit_thread(void *p)
{
    struct submitter *s = p;
    enum { WIN = 64 };
    cf_future *fs[WIN];
    unsigned char *args[WIN];
    size_t lens[WIN];
    bool cancelled[WIN];
    for (int base = 0; base < s->n; base += WIN) {
        int k = s->n - base < WIN ? s->n - base : WIN;
        for (int i = 0; i < k; i++) {
            lens[i] = cf_test_rand(&s->seed) % 1200;
            args[i] = malloc(lens[i] + 1);
            for (size_t j = 0; j < lens[i]; j++) args[i][j] = (unsigned char)cf_test_rand(&s->seed);
            if (cf_submit(s->ex, rev_task, args[i], lens[i], &fs[i]) != 0) abort();
            cancelled[i] = cf_test_rand(&s->seed) % 7 == 0 && cf_future_cancel(fs[i]);
        }
        for (int i = 0; i < k; i++) {
            if (cancelled[i]) {
                if (cf_future_result(fs[i], CF_FOREVER, NULL, NULL) != CF_ECANCELLED) abort();
                s->cancelled++;
            } else {
                const void *d;
                size_t n;
                if (cf_future_result(fs[i], CF_FOREVER, &d, &n) != 0 || n != lens[i] + 8) abort();
                const unsigned char *r = d;
                for (size_t j = 0; j < lens[i]; j++)
                    if (r[j] != args[i][lens[i] - 1 - j]) abort();
                s->ok++;
            }
            cf_future_release(fs[i]);
            free(args[i]);
        }
    }
    return NULL;
}

static void test_many_submitters_with_cancels(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(
        cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2, .ring_depth = 16}), 0);
    assert_non_null(ex);
    enum { T = 4 };
    struct submitter s[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        s[i] = (struct submitter){
            .ex = ex, .seed = 1000 + (uint64_t)i, .n = (int)(3000 * cf_test_scale())};
        pthread_create(&th[i], NULL, submit_thread, &s[i]);
    }
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        total += s[i].ok + s[i].cancelled;
    }
    assert_int_equal(total, T * s[0].n);
    cf_executor_free(ex);
}

struct racer {
    cf_executor *ex;
    _Atomic int *stop;
    int ok, refused;
};

static void *race_thread(void *p)
{
    struct racer *r = p;
    int64_t x = 1;
    while (!atomic_load(r->stop)) {
        cf_future *f;
        int rc = cf_submit(r->ex, pid_task, &x, sizeof x, &f);
        if (rc == CF_ESHUTDOWN) {
            r->refused++;
            break;
        }
        if (rc != 0) abort();
        /* accepted before shutdown: it runs to completion */
        if (cf_future_result(f, CF_FOREVER, NULL, NULL) != 0) {
            int code;
            const char *msg = NULL;
            cf_future_exception(f, 0, &code, &msg);
            fprintf(stderr, "race_thread: task failed: %d %s\n", code, msg ? msg : "");
            abort();
        }
        cf_future_release(f);
        r->ok++;
    }
    return NULL;
}

static void test_shutdown_while_submitting(void **state)
{
    (void)state;
    int rounds = (int)(5 * cf_test_scale());
    for (int k = 0; k < rounds; k++) {
        cf_executor *ex;
        assert_int_equal(cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2}), 0);
        _Atomic int stop = 0;
        struct racer r[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
            r[i] = (struct racer){.ex = ex, .stop = &stop};
            pthread_create(&th[i], NULL, race_thread, &r[i]);
        }
        /* Let some work through, then shut down under the submitters. */
        cf_future *f;
        for (int i = 0; i < 50; i++) {
            assert_int_equal(cf_submit(ex, pid_task, NULL, 0, &f), 0);
            assert_int_equal(cf_future_result(f, CF_FOREVER, NULL, NULL), 0);
            cf_future_release(f);
        }
        assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
        atomic_store(&stop, 1);
        for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
        cf_executor_free(ex);
    }
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_task_per_child_long_backlog),
        cmocka_unit_test(test_retire_small_rings_spilled),
        cmocka_unit_test(test_many_submitters_with_cancels),
        cmocka_unit_test(test_shutdown_while_submitting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
