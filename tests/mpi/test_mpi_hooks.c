/* The MPI executor through its test hooks (src/mpi/mpi_hooks.h; this
 * program links the CF_TEST_HOOKS build of libcfutures-mpi), run by ctest
 * under `mpirun -n 3` and `-n 2`. Rank 0 runs the cmocka cases; the other
 * ranks serve inside cf_mpi_executor_new, once per executor the root makes.
 *
 * - The root's probes: submit, start (sent to a rank) and finish (its
 *   result arrived) fire once per task, with the rank that ran it.
 * - The executor's own failure: an MPI call at the root that reports an
 *   error (injected: Open MPI ends the job before any real failure comes
 *   back as a code) breaks every future not done, running on a serving
 *   rank, sent to one, or queued at the root, with CF_EBROKEN and a
 *   message naming the call and the rank; later submits are CF_EBROKEN;
 *   the executor still shuts down and frees, and the job ends.
 *
 * Gates are files, as in test_mpi_exec.c: a gate task creates a file to
 * say it started and waits until another exists. */
#include <dirent.h>
#include <fcntl.h>
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

#include <cfutures.h>
#include <cfutures/mpi.h>

#include "mpi/mpi_hooks.h"
#include "support/file_gates.h"

#define LONG_WAIT 60.0 /* a hang fails the case instead of blocking */
#define N_PROBED 24

static int n_serving;

/* ---- tasks ---- */

static int square_task(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, CF_EINVAL, "square wants an int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

/* ---- the probes ---- */

/* What the probe hook saw, per future of the case (the hook runs in the
 * submitting thread and in the progress thread: under mu). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const cf_future *probed[N_PROBED];
static int n_submit[N_PROBED], n_start[N_PROBED], n_finish[N_PROBED];
static uintptr_t start_rank[N_PROBED], finish_rank[N_PROBED];
static int n_unknown;
static const void *probe_ex;

static int probed_index(const cf_future *f)
{
    for (int i = 0; i < N_PROBED; i++)
        if (probed[i] == f) return i;
    return -1;
}

static void count_probe(const char *name, uintptr_t a, const cf_future *f)
{
    pthread_mutex_lock(&mu);
    int i = probed_index(f);
    if (!strcmp(name, "submit")) {
        /* The future is not the caller's yet: take the first free slot. */
        i = probed_index(NULL);
        if (i >= 0 && a == (uintptr_t)probe_ex) {
            probed[i] = f;
            n_submit[i]++;
        } else {
            n_unknown++;
        }
    } else if (i < 0) {
        n_unknown++;
    } else if (!strcmp(name, "start")) {
        n_start[i]++;
        start_rank[i] = a;
    } else if (!strcmp(name, "finish")) {
        n_finish[i]++;
        finish_rank[i] = a;
    } else {
        n_unknown++;
    }
    pthread_mutex_unlock(&mu);
}

static void test_probes_fire_once_per_task(void **state)
{
    (void)state;
    cf_executor *ex;
    assert_int_equal(cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL), 0);
    probe_ex = ex;
    atomic_store_explicit(&cf__test_mpi_probe, count_probe, memory_order_relaxed);
    cf_future *fs[N_PROBED];
    for (int i = 0; i < N_PROBED; i++) {
        int64_t x = i;
        assert_int_equal(cf_submit(ex, square_task, &x, sizeof x, &fs[i]), 0);
    }
    for (int i = 0; i < N_PROBED; i++) {
        int64_t v = -1;
        assert_int_equal(cf_future_result_i64(fs[i], LONG_WAIT, &v), 0);
        assert_int_equal(v, (int64_t)i * i);
    }
    /* finish fires before the future completes: every one is counted. */
    atomic_store_explicit(&cf__test_mpi_probe, NULL, memory_order_relaxed);
    /* The per-rank counts are bumped just after each future completes:
     * read them once the progress thread is done. */
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_worker_stats st[8];
    size_t n = 0;
    assert_int_equal(cf_executor_stats(ex, st, 8, &n), 0);
    uint64_t per_rank[8] = {0};
    /* The progress thread has ended (joined): what its hook calls wrote is
     * visible here without mu. */
    assert_int_equal(n_unknown, 0);
    for (int i = 0; i < N_PROBED; i++) {
        int k = probed_index(fs[i]);
        assert_true(k >= 0);
        assert_int_equal(n_submit[k], 1);
        assert_int_equal(n_start[k], 1);
        assert_int_equal(n_finish[k], 1);
        /* Sent to a serving rank, and its result came from that rank. */
        assert_true(start_rank[k] >= 1 && start_rank[k] <= (uintptr_t)n_serving);
        assert_int_equal(finish_rank[k], start_rank[k]);
        per_rank[start_rank[k] - 1]++;
    }
    /* The ranks the probes name are the ranks the executor counts. */
    assert_int_equal(n, (size_t)n_serving);
    for (size_t r = 0; r < n; r++) assert_int_equal(st[r].tasks_run, per_rank[r]);
    for (int i = 0; i < N_PROBED; i++) cf_future_release(fs[i]);
    cf_executor_free(ex);
}

/* ---- the executor's own failure ---- */

static atomic_int fail_next_isend;
static atomic_int failed_peer = -1;

static int inject_isend_failure(const char *what, int peer)
{
    if (strcmp(what, "MPI_Isend") != 0 || !atomic_exchange(&fail_next_isend, 0)) return MPI_SUCCESS;
    atomic_store(&failed_peer, peer);
    return MPI_ERR_OTHER;
}

/* f failed because the executor broke, naming the call and the rank. */
static void assert_broken(cf_future *f, int peer)
{
    assert_int_equal(cf_future_result(f, LONG_WAIT, NULL, NULL), CF_EBROKEN);
    int code = 0;
    const char *msg = NULL;
    assert_int_equal(cf_future_exception(f, 0, &code, &msg), 0);
    assert_int_equal(code, CF_EBROKEN);
    assert_non_null(msg);
    char want[64];
    snprintf(want, sizeof want, "MPI_Isend with rank %d failed", peer);
    if (!strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

static void test_mpi_failure_breaks_every_pending_future(void **state)
{
    (void)state;
    /* Window 2, one worker per rank: a running task and one queued in each
     * serving rank's pool, then more queued at the root. */
    cf_mpi_opts o = CF_MPI_OPTS_INIT;
    o.window = 2;
    o.threads = 1;
    cf_executor *ex;
    assert_int_equal(cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, &o), 0);
    cf_future *run[8];
    char arg[256], name[32];
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "run-%d", i);
        size_t len = gate_arg(arg, sizeof arg, name, "open");
        assert_int_equal(cf_submit(ex, gate_task, arg, len, &run[i]), 0);
    }
    for (int i = 0; i < n_serving; i++) {
        snprintf(name, sizeof name, "run-%d", i);
        gate_await_file(name);
    }
    /* Every serving rank runs a task: the next send is the next task's,
     * and it fails. */
    atomic_store(&fail_next_isend, 1);
    atomic_store_explicit(&cf__test_mpi_inject, inject_isend_failure, memory_order_relaxed);
    /* One more task per serving rank (queued in its pool if sent), and
     * one more queued at the root. The first submit's send fails; once
     * that happened, submits say so. */
    cf_future *later[16];
    int n_later = 0;
    for (int i = 0; i < 2 * n_serving; i++) {
        snprintf(name, sizeof name, "later-%d", i);
        size_t len = gate_arg(arg, sizeof arg, name, "open");
        int rc = cf_submit(ex, gate_task, arg, len, &later[n_later]);
        if (i == 0) assert_int_equal(rc, 0);
        if (rc == 0) n_later++;
        else assert_int_equal(rc, CF_EBROKEN);
    }
    /* Every future fails, though no task has finished (the gate is shut):
     * the ones running on serving ranks, the one whose send failed, and
     * those queued at the root. */
    assert_int_equal(cf_future_result(later[0], LONG_WAIT, NULL, NULL), CF_EBROKEN);
    int peer = atomic_load(&failed_peer);
    assert_true(peer >= 1 && peer <= n_serving);
    for (int i = 0; i < n_serving; i++) assert_broken(run[i], peer);
    for (int i = 0; i < n_later; i++) assert_broken(later[i], peer);
    cf_future *f = NULL;
    int64_t x = 3;
    assert_int_equal(cf_submit(ex, square_task, &x, sizeof x, &f), CF_EBROKEN);
    atomic_store_explicit(&cf__test_mpi_inject, NULL, memory_order_relaxed);
    /* Let the serving ranks' tasks end: they were told to stop. */
    gate_touch("open");
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
    for (int i = 0; i < n_serving; i++) cf_future_release(run[i]);
    for (int i = 0; i < n_later; i++) cf_future_release(later[i]);
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    n_serving = size - 1;
    int failed = 0;
    if (rank != 0) {
        /* Serve each executor the root makes, in its cases' order; a
         * serving rank whose root broke its executor is told to stop. */
        for (int i = 0; i < 2; i++) {
            cf_executor *ex = NULL;
            int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
            if (rc != CF_MPI_SERVED) {
                fprintf(stderr, "rank %d, executor %d: %s\n", rank, i, cf_strerror(rc));
                failed++;
            }
        }
    } else if (n_serving > 8) {
        fprintf(stderr, "at most 8 serving ranks\n");
        failed++;
    } else {
        if (gates_make("/tmp/cf-mpi-hooks-XXXXXX") != 0) {
            failed++;
        } else {
            const struct CMUnitTest cases[] = {
                cmocka_unit_test(test_probes_fire_once_per_task),
                cmocka_unit_test(test_mpi_failure_breaks_every_pending_future),
            };
            failed += cmocka_run_group_tests_name("mpi executor hooks", cases, NULL, NULL);
        }
    }
    /* The broken executor could not wait for the serving ranks' tasks:
     * they may still look for the gate file until every rank is here. */
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) gates_remove();
    MPI_Finalize();
    return failed ? 1 : 0;
}
