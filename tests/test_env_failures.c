/* Environment values that parse but cannot be used: each failure prints
 * exactly one line naming the variable, and nothing blocks.
 *
 * - CFUTURES_CPUS naming CPUs that are not there (all of them, or one of a
 *   pin=list): the constructor fails with CF_EINVAL and says why;
 * - CFUTURES_TOPOLOGY naming a directory or a FIFO: warned about and
 *   ignored (the machine's own topology is used);
 * - CFUTURES_TOPOLOGY naming a file hwloc cannot read as XML: the
 *   constructor fails with CF_ESYS and says why;
 * - the loader itself, handed a FIFO, returns at once (O_NONBLOCK + fstat).
 *
 * Every case runs in a forked child, so each starts with no warning printed
 * yet (they are once per process), with its stderr in a file and an alarm
 * as a hang detector: a child that blocks dies of SIGALRM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfutures.h"
#include "sys/config.h"
#include "sys/topology.h"
#include "support/test_env.h"

#define HANG_SECONDS 20 /* a prompt return takes milliseconds */

static char tmpdir[64];
static char out[8192];

typedef int child_fn(void);

/* Run fn in a child with stderr in a file; its return value is the child's
 * exit code (the error code negated, 0 success). Fills out[] with what it
 * printed. Fails the test if the child hung or crashed. */
static int in_child(child_fn *fn)
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = fopen(path, "w");
        if (!f || dup2(fileno(f), STDERR_FILENO) < 0) _exit(100);
        alarm(HANG_SECONDS);
        int rc = fn();
        fflush(stderr);
        _exit(rc < 0 ? -rc : rc);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child died of signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (it blocked)" : "");
    assert_true(WIFEXITED(status));
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    return -WEXITSTATUS(status);
}

/* exactly one line, naming the variable with its value */
static void expect_one_line(const char *var, const char *value, const char *phrase)
{
    char needle[512];
    snprintf(needle, sizeof needle, "%s=\"%s\"", var, value);
    if (cf_test_count_lines(out) != 1 || !strstr(out, needle) || !strstr(out, phrase))
        fail_msg("wanted one line with %s and \"%s\", got: \"%s\"", needle, phrase, out);
}

static int make_pool(void)
{
    int err = 0;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1});
    if (!ex) return err ? err : CF_ESYS;
    cf_executor_free(ex);
    return 0;
}

static void clear_env(void)
{
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
}

/* ---- CFUTURES_CPUS ---- */

static void test_cpus_none_there(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_CPUS", "8000-8001", 1);
    assert_int_equal(in_child(make_pool), CF_EINVAL);
    expect_one_line("CFUTURES_CPUS", "8000-8001", "none of these CPUs");
    /* Also with a policy that only restricts. */
    setenv("CFUTURES_PIN", "compact", 1);
    assert_int_equal(in_child(make_pool), CF_EINVAL);
    expect_one_line("CFUTURES_CPUS", "8000-8001", "none of these CPUs");
    clear_env();
}

static char code_list[32];
static int make_pool_code_list(void)
{
    int err = 0;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1, .cpu_list = code_list});
    if (ex) cf_executor_free(ex);
    return ex ? 0 : err;
}

static void test_cpus_list_one_missing(void **state)
{
    (void)state;
    clear_env();
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &set)) first = c;
    assert_true(first >= 0 && first < 8000);
    char list[32];
    snprintf(list, sizeof list, "%d,8000", first);
    setenv("CFUTURES_CPUS", list, 1);
    assert_int_equal(in_child(make_pool), CF_EINVAL);
    expect_one_line("CFUTURES_CPUS", list, "CPU 8000 is not in the topology");
    /* From code: CF_EINVAL says it; nothing is printed. */
    clear_env();
    memcpy(code_list, list, sizeof list);
    int rc = in_child(make_pool_code_list);
    assert_int_equal(rc, CF_EINVAL);
    assert_string_equal(out, "");
}

/* ---- CFUTURES_TOPOLOGY ---- */

static void test_topology_directory(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_TOPOLOGY", tmpdir, 1);
    assert_int_equal(in_child(make_pool), 0); /* ignored: this machine */
    expect_one_line("CFUTURES_TOPOLOGY", tmpdir, "not a regular file");
    clear_env();
}

static void test_topology_fifo(void **state)
{
    (void)state;
    clear_env();
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s/fifo", tmpdir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    setenv("CFUTURES_TOPOLOGY", fifo, 1);
    assert_int_equal(in_child(make_pool), 0);
    expect_one_line("CFUTURES_TOPOLOGY", fifo, "not a regular file");
    clear_env();
    unlink(fifo);
}

static void test_topology_not_xml(void **state)
{
    (void)state;
    clear_env();
    char path[128];
    snprintf(path, sizeof path, "%s/not.xml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("this is not XML\n", f);
    fclose(f);
    setenv("CFUTURES_TOPOLOGY", path, 1);
    assert_int_equal(in_child(make_pool), CF_ESYS);
    expect_one_line("CFUTURES_TOPOLOGY", path, "hwloc cannot read it");
    /* An empty file is caught before hwloc. */
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(in_child(make_pool), 0);
    expect_one_line("CFUTURES_TOPOLOGY", path, "empty file");
    clear_env();
    unlink(path);
}

/* hwloc 2.9 dereferences NULL on a PU without complete_cpuset (found by
 * tests/fuzz/fuzz_topology). The file is tried in a forked child first, so
 * the constructor fails with one line instead of the process crashing. */
static void test_topology_hwloc_crash_contained(void **state)
{
    (void)state;
    clear_env();
    const char *bad = CF_TEST_DATA_DIR "/bad-pu-without-complete-cpuset.xml";
    setenv("CFUTURES_TOPOLOGY", bad, 1);
    assert_int_equal(in_child(make_pool), CF_ESYS);
    expect_one_line("CFUTURES_TOPOLOGY", bad, "hwloc crashed reading it");
    clear_env();
}

/* A file naming CPU 32000: arrays indexed by CPU number would grow with it
 * (a 13 MB file named CPU 32000000 and cost 128 MiB and seconds), so CPU
 * indexes are bounded like a CPU list's. */
static void test_topology_cpu_index_bounded(void **state)
{
    (void)state;
    clear_env();
    const char *bad = CF_TEST_DATA_DIR "/bad-cpu-32000.xml";
    setenv("CFUTURES_TOPOLOGY", bad, 1);
    assert_int_equal(in_child(make_pool), CF_EINVAL);
    expect_one_line("CFUTURES_TOPOLOGY", bad, "CPU indexes above 8191");
    clear_env();
}

/* The trial child reports through a pipe, so an application that ignores
 * SIGCHLD (children reaped by the kernel) still loads a good file. */
static int load_ignoring_sigchld(void)
{
    signal(SIGCHLD, SIG_IGN);
    struct cf__config c;
    cf__config_load(&c);
    hwloc_topology_t t;
    int rc = cf__topology_load(&c, &t);
    if (rc) return rc;
    rc = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) == 12 ? 0 : 98;
    hwloc_topology_destroy(t);
    return rc;
}

static void test_topology_with_sigchld_ignored(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_TOPOLOGY", CF_TEST_DATA_DIR "/asym-3node-6-2-4.xml", 1);
    assert_int_equal(in_child(load_ignoring_sigchld), 0);
    assert_string_equal(out, "");
    clear_env();
}

/* The loader's own guard: a config naming a FIFO (it was a file when the
 * environment was read, say) is refused at once, not read. */
static char loader_fifo[128];
static int load_fifo(void)
{
    struct cf__config c;
    cf__config_load(&c);
    if (cf__config_parse(&c, CF__SET_TOPOLOGY, loader_fifo, NULL)) return 99;
    hwloc_topology_t t;
    int rc = cf__topology_load(&c, &t);
    if (!rc) hwloc_topology_destroy(t);
    return rc;
}

static void test_loader_never_blocks_on_fifo(void **state)
{
    (void)state;
    clear_env();
    snprintf(loader_fifo, sizeof loader_fifo, "%s/fifo2", tmpdir);
    assert_int_equal(mkfifo(loader_fifo, 0600), 0);
    assert_int_equal(in_child(load_fifo), CF_ESYS);
    expect_one_line("CFUTURES_TOPOLOGY", loader_fifo, "not a regular file");
    unlink(loader_fifo);
}

/* A good file still loads, through the buffer. */
static void test_topology_good_file(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_TOPOLOGY", CF_TEST_DATA_DIR "/asym-3node-6-2-4.xml", 1);
    struct cf__config c;
    cf__config_load(&c);
    hwloc_topology_t t;
    assert_int_equal(cf__topology_load(&c, &t), 0);
    assert_int_equal(hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE), 3);
    assert_int_equal(hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE), 12);
    hwloc_topology_destroy(t);
    clear_env();
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cf-env-failures-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return 0;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpus_none_there),
        cmocka_unit_test(test_cpus_list_one_missing),
        cmocka_unit_test(test_topology_directory),
        cmocka_unit_test(test_topology_fifo),
        cmocka_unit_test(test_topology_not_xml),
        cmocka_unit_test(test_topology_hwloc_crash_contained),
        cmocka_unit_test(test_topology_with_sigchld_ignored),
        cmocka_unit_test(test_topology_cpu_index_bounded),
        cmocka_unit_test(test_loader_never_blocks_on_fifo),
        cmocka_unit_test(test_topology_good_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
