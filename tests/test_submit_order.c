/* Outside submissions start first in, first out.
 *
 * Every worker is held inside a gate task while one thread outside the
 * pool submits N tasks; then the gates open and the workers race for the
 * backlog. Each task records which worker started it and when (a global
 * start counter). What the pool promises (docs/SUBMIT.md):
 * - each worker starts one submitter's tasks in submission order;
 * - when task k starts, fewer than W (workers) tasks submitted before it
 *   by the same thread have not started: each of those was already taken
 *   by another worker, which starts it next.
 * Completion is watched through a counter, not futures, so that no waiting
 * thread runs a task itself. No timing is asserted: a 10 s limit on each
 * wait is a hang detector. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
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
#include "support/test_env.h"

#define HANG_S 10
#define MAX_TASKS 4096

/* Written by tasks; shared with process-pool workers (a MAP_SHARED mapping
 * made before the pool, so the workers' writes reach the parent). */
struct record {
    _Atomic int gate_open;
    _Atomic int gates_in;
    _Atomic int64_t next_start;
    _Atomic int done;
    int busy_yields;          /* how long each task lasts */
    int64_t start[MAX_TASKS]; /* start[i]: the global start rank of task i */
    int64_t who[MAX_TASKS];   /* start[i]: the thread (or process) that ran it */
};
static struct record *rec;

static int gate_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    (void)out;
    atomic_fetch_add(&rec->gates_in, 1);
    while (!atomic_load(&rec->gate_open)) sched_yield();
    return 0;
}

static int order_task(const void *arg, size_t len, cf_out *out)
{
    (void)len;
    (void)out;
    int32_t i;
    memcpy(&i, arg, sizeof i);
    rec->start[i] = atomic_fetch_add(&rec->next_start, 1);
    rec->who[i] = (int64_t)syscall(SYS_gettid);
    /* Some tasks last a while, so that an idle worker comes looking while
     * others still hold queued tasks (it steals then). */
    for (int k = 0; k < rec->busy_yields; k++) sched_yield();
    atomic_fetch_add(&rec->done, 1);
    return 0;
}

static void wait_count(_Atomic int *c, int want)
{
    for (int i = 0; i < HANG_S * 10000 && atomic_load(c) < want; i++) usleep(100);
    assert_int_equal(atomic_load(c), want);
}

/* Hold every worker, submit n tasks, release, check the start order. */
static void run_order(cf_executor *ex, int n, bool global, int busy)
{
    int w = cf_executor_workers(ex);
    assert_true(w >= 2 && n <= MAX_TASKS);
    memset(rec, 0, sizeof *rec);
    rec->busy_yields = busy;
    cf_future *gates[64];
    assert_true(w <= 64);
    for (int i = 0; i < w; i++) assert_int_equal(cf_submit(ex, gate_task, NULL, 0, &gates[i]), 0);
    wait_count(&rec->gates_in, w);
    for (int32_t i = 0; i < n; i++) {
        cf_future *f;
        assert_int_equal(cf_submit(ex, order_task, &i, sizeof i, &f), 0);
        cf_future_release(f);
    }
    atomic_store(&rec->gate_open, 1);
    wait_count(&rec->done, n);
    /* Every gate task must have left before the next round closes the gate. */
    for (int i = 0; i < w; i++) {
        assert_int_equal(cf_future_result(gates[i], HANG_S, NULL, NULL), 0);
        cf_future_release(gates[i]);
    }

    /* by_rank[r]: the task that started r-th. */
    int *by_rank = malloc(sizeof(int) * (size_t)n);
    assert_non_null(by_rank);
    for (int i = 0; i < n; i++) {
        assert_true(rec->start[i] >= 0 && rec->start[i] < n);
        by_rank[rec->start[i]] = i;
    }
    /* Per worker: increasing task numbers. */
    int inversions = 0, worst_late = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (rec->who[i] == rec->who[j] && rec->start[j] < rec->start[i]) {
                if (inversions++ < 5)
                    print_message("worker %lld started task %d before task %d\n",
                                  (long long)rec->who[i], j, i);
            }
    /* Globally: when task k starts, fewer than w older tasks have not. */
    int next_unstarted = 0;
    char *started = calloc((size_t)n, 1);
    assert_non_null(started);
    for (int r = 0; r < n; r++) {
        int k = by_rank[r];
        started[k] = 1;
        while (next_unstarted < n && started[next_unstarted]) next_unstarted++;
        int late = 0;
        for (int j = next_unstarted; j < k; j++) late += !started[j];
        if (late > worst_late) worst_late = late;
    }
    print_message("%d workers, %d tasks: %d per-worker inversions, at most %d older tasks "
                  "not started at a start\n",
                  w, n, inversions, worst_late);
    if (n <= 40) {
        char line[4096];
        size_t o = 0;
        for (int r = 0; r < n && o + 8 < sizeof line; r++)
            o += (size_t)snprintf(line + o, sizeof line - o, "%d ", by_rank[r]);
        print_message("start order: %s\n", line);
    }
    free(started);
    free(by_rank);
    assert_int_equal(inversions, 0);
    if (global) assert_true(worst_late < w);
}

static void map_record(void)
{
    rec = mmap(NULL, sizeof *rec, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(rec != MAP_FAILED);
}

static void fifo_two_threads(void **state)
{
    (void)state;
    map_record();
    cf_thread_pool_opts o = CF_THREAD_POOL_OPTS_INIT;
    o.max_workers = 2;
    o.pin = CF_PIN_NONE;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    run_order(ex, 32, true, 0);
    run_order(ex, 32, true, 200);
    int reps = (int)(20 * cf_test_scale()) + 1;
    for (int i = 0; i < reps; i++) run_order(ex, 1000, true, i % 2 ? 20 : 0);
    cf_executor_free(ex);
    munmap(rec, sizeof *rec);
}

static void fifo_four_threads(void **state)
{
    (void)state;
    map_record();
    cf_thread_pool_opts o = CF_THREAD_POOL_OPTS_INIT;
    o.max_workers = 4;
    o.pin = CF_PIN_NONE;
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, &o), 0);
    int reps = (int)(10 * cf_test_scale()) + 1;
    for (int i = 0; i < reps; i++) run_order(ex, 1000, true, i % 2 ? 20 : 0);
    cf_executor_free(ex);
    munmap(rec, sizeof *rec);
}

static void fifo_processes(void **state)
{
    (void)state;
    map_record(); /* before the pool: its workers share it */
    cf_process_pool_opts o = CF_PROCESS_POOL_OPTS_INIT;
    o.max_workers = 2;
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(&ex, &o), 0);
    int reps = (int)(5 * cf_test_scale()) + 1;
    for (int i = 0; i < reps; i++) run_order(ex, 500, false, i % 2 ? 20 : 0);
    cf_executor_free(ex);
    munmap(rec, sizeof *rec);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_two_threads),
        cmocka_unit_test(fifo_four_threads),
        cmocka_unit_test(fifo_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
