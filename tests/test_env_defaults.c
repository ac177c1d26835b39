/* Defaults that fit where the library runs, and failures the environment
 * causes said in one line.
 *
 * - The cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us/period_us) read
 *   from fake cgroup trees: the tightest level wins, ceil(quota/period),
 *   at least 1, "max"/-1/unreadable mean no limit; mount points escaped in
 *   mountinfo, a mount rooted at a sub-cgroup (a container without a
 *   cgroup namespace), v1 and v2 at once.
 * - The default worker count of both pools follows the quota (a fake tree
 *   through the cf__test_cgroup_root hook), an explicit count or CPU list
 *   does not.
 * - A constructor that fails because of the environment prints one line
 *   naming the variable every time it fails (not once per process), also
 *   when it ran out of memory or threads because of a size the
 *   environment set; sizes set in code are the caller's to report.
 *
 * Failures run in forked children (stderr in a file) like
 * test_env_failures.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfutures.h"
#include "sys/cgroup.h"
#include "sys/config.h"
#include "support/test_env.h"

#ifdef CF_TSAN
/* jemalloc's fork handler (the process pools here fork after thread pools
 * made arenas) takes every arena's locks at once, more than
 * ThreadSanitizer's lock-order detector can track (it aborts on a CHECK);
 * data races are still reported. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

static char tmpdir[64];
static char out[8192];

/* ---- fake cgroup trees ---- */

/* mkdir -p of the directory part of path. */
static void make_parents(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            fail_msg("mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
}

/* root/rel gets `text` (rel starts with '/'). */
static void put(const char *root, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s", root, rel);
    make_parents(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A fresh, empty fake root under tmpdir. */
static const char *new_root(void)
{
    static char root[128];
    static int n;
    snprintf(root, sizeof root, "%s/root%d", tmpdir, n++);
    assert_int_equal(mkdir(root, 0755), 0);
    return root;
}

#define V2_MOUNT "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n"

/* v2: every level from the process's cgroup up to the mount is read; the
 * tightest wins. */
static void test_v2_tightest_level_wins(void **state)
{
    (void)state;
    const char *r = new_root();
    put(r, "/proc/self/cgroup", "0::/app/svc\n");
    put(r, "/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" V2_MOUNT);
    put(r, "/sys/fs/cgroup/cpu.max", "max 100000\n");
    put(r, "/sys/fs/cgroup/app/cpu.max", "300000 100000\n");
    put(r, "/sys/fs/cgroup/app/svc/cpu.max", "150000 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 2); /* 1.5 CPUs, rounded up */
    put(r, "/sys/fs/cgroup/app/cpu.max", "100000 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 1); /* the parent's is tighter */
    put(r, "/sys/fs/cgroup/app/cpu.max", "max 100000\n");
    put(r, "/sys/fs/cgroup/app/svc/cpu.max", "max 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0); /* no limit anywhere */
    put(r, "/sys/fs/cgroup/app/svc/cpu.max", "1000 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 1); /* at least one */
    put(r, "/sys/fs/cgroup/app/svc/cpu.max", "250000 50000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 5);
}

/* v1 in a container without a cgroup namespace: the mount is rooted at the
 * container's cgroup, which is also the process's. */
static void test_v1_mount_rooted_at_container(void **state)
{
    (void)state;
    const char *r = new_root();
    put(r, "/proc/self/cgroup",
        "12:cpuset:/docker/abc\n5:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n");
    put(r, "/proc/self/mountinfo",
        "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "41 30 0:36 /docker/abc /sys/fs/cgroup/cpuset ro,nosuid - cgroup cgroup rw,cpuset\n");
    put(r, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
    put(r, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 2);
    put(r, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0);
}

/* Both hierarchies (hybrid): the tighter of the two; a mount point with a
 * space comes escaped (\040) in mountinfo. */
static void test_hybrid_and_escaped_mount(void **state)
{
    (void)state;
    const char *r = new_root();
    put(r, "/proc/self/cgroup", "3:cpu:/batch\n0::/batch\n");
    put(r, "/proc/self/mountinfo",
        "32 31 0:29 / /cg/v1\\040cpu rw - cgroup cgroup rw,cpu\n"
        "33 31 0:30 / /cg/uni\\040fied rw - cgroup2 cgroup2 rw\n");
    put(r, "/cg/v1 cpu/batch/cpu.cfs_quota_us", "400000\n");
    put(r, "/cg/v1 cpu/batch/cpu.cfs_period_us", "100000\n");
    put(r, "/cg/uni fied/batch/cpu.max", "300000 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 3);
    put(r, "/cg/v1 cpu/batch/cpu.cfs_quota_us", "50000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 1);
}

/* Nothing to read, or nothing readable: no limit. */
static void test_unreadable_is_no_limit(void **state)
{
    (void)state;
    const char *r = new_root();
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0); /* no /proc at all */
    put(r, "/proc/self/cgroup", "0::/a\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0); /* no mountinfo */
    put(r, "/proc/self/mountinfo", V2_MOUNT);
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0); /* no cpu.max */
    put(r, "/sys/fs/cgroup/a/cpu.max", "lots 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0);
    put(r, "/sys/fs/cgroup/a/cpu.max", "100000 0\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 0);
    /* A path outside the mount's root (a cgroup namespace shows "/.."):
     * only the mount point itself is read. */
    put(r, "/proc/self/cgroup", "0::/../elsewhere\n");
    put(r, "/sys/fs/cgroup/cpu.max", "200000 100000\n");
    assert_int_equal(cf__cgroup_cpu_limit_at(r), 2);
}

/* ---- the pools' default worker count ---- */

static int allowed_cpus(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

static int workers_of_thread_pool(const cf_thread_pool_opts *o)
{
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&ex, o), 0);
    int n = cf_executor_workers(ex);
    cf_executor_free(ex);
    return n;
}

static int workers_of_process_pool(void)
{
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(&ex, NULL), 0);
    int n = cf_executor_workers(ex);
    cf_executor_free(ex);
    return n;
}

/* A container with 2 CPUs allowed but half a CPU of quota gets one worker
 * by default, not two. */
static void test_default_workers_follow_quota(void **state)
{
    (void)state;
    cf__test_cgroup_root = NULL;
    int machine = workers_of_thread_pool(NULL);
    if (machine < 2 || allowed_cpus() < 2) skip(); /* nothing to cap on one core */
    const char *r = new_root();
    put(r, "/proc/self/cgroup", "0::/job\n");
    put(r, "/proc/self/mountinfo", V2_MOUNT);
    put(r, "/sys/fs/cgroup/job/cpu.max", "50000 100000\n");
    cf__test_cgroup_root = r;
    assert_int_equal(workers_of_thread_pool(NULL), 1);
    assert_int_equal(workers_of_process_pool(), 1);
    /* A quota above the machine changes nothing. */
    put(r, "/sys/fs/cgroup/job/cpu.max", "10000000 100000\n");
    assert_int_equal(workers_of_thread_pool(NULL), machine);
    /* An explicit count wins, from code or the environment. */
    put(r, "/sys/fs/cgroup/job/cpu.max", "50000 100000\n");
    assert_int_equal(workers_of_thread_pool(&(cf_thread_pool_opts){.max_workers = 2}), 2);
    setenv("CFUTURES_WORKERS", "2", 1);
    assert_int_equal(workers_of_thread_pool(NULL), 2);
    unsetenv("CFUTURES_WORKERS");
    /* So does a CPU list: one worker per listed CPU. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_ISSET(0, &set) && CPU_ISSET(1, &set))
        assert_int_equal(workers_of_thread_pool(&(cf_thread_pool_opts){.cpu_list = "0-1"}), 2);
    cf__test_cgroup_root = NULL;
}

/* ---- failures the environment causes ---- */

typedef int child_fn(void);

/* fn in a child with stderr in a file; returns its result (an error code
 * or 0) and fills out[] with what it printed. */
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
        alarm(60);
        int rc = fn();
        fflush(stderr);
        _exit(rc < 0 ? -rc : rc);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) fail_msg("the child died (status %d)", status);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    return -WEXITSTATUS(status);
}

/* `lines` lines, each with every needle. */
static void expect_lines(int lines, const char *a, const char *b)
{
    int n = cf_test_count_lines(out);
    if (n != lines || !strstr(out, a) || (b && !strstr(out, b)))
        fail_msg("wanted %d line(s) with \"%s\"%s%s, got: \"%s\"", lines, a, b ? " and " : "",
                 b ? b : "", out);
}

static int two_thread_pools(void)
{
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        cf_executor *ex;
        int r = cf_thread_pool_new(&ex, NULL);
        if (ex) cf_executor_free(ex);
        if (!rc) rc = r;
    }
    return rc;
}

/* CFUTURES_CPUS=5 on a machine without CPU 5: each failed constructor says
 * why, the second one too. */
static void test_each_failure_says_why(void **state)
{
    (void)state;
    setenv("CFUTURES_CPUS", "8000", 1);
    assert_int_equal(in_child(two_thread_pools), CF_EINVAL);
    expect_lines(2, "CFUTURES_CPUS=\"8000\"", "the pool is not created");
    unsetenv("CFUTURES_CPUS");
}

/* Leave the child 256 MiB of address space more than it has: far less
 * than what the sizes below ask for. */
static void limit_address_space(void)
{
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (256u << 20);
    setrlimit(RLIMIT_AS, &(struct rlimit){cap, cap});
}

static int big_process_pool(void)
{
    limit_address_space();
    cf_executor *ex;
    int rc = cf_process_pool_new(&ex, NULL);
    if (ex) cf_executor_free(ex);
    return rc;
}

static int big_thread_pool(void)
{
    limit_address_space();
    cf_executor *ex;
    int rc = cf_thread_pool_new(&ex, NULL);
    if (ex) cf_executor_free(ex);
    return rc;
}

static int big_thread_pool_in_code(void)
{
    limit_address_space();
    cf_executor *ex;
    int rc = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = 1024});
    if (ex) cf_executor_free(ex);
    return rc;
}

/* Sizes from the environment that the machine cannot give: one line
 * naming them. (A sanitizer reserves terabytes of shadow memory, so no
 * address-space limit fits under one.) */
static void test_sizes_from_env_fail_in_one_line(void **state)
{
    (void)state;
#if defined(CF_ASAN) || defined(CF_TSAN)
    skip();
#endif
    setenv("CFUTURES_SLOT_SIZE", "1048576", 1);
    setenv("CFUTURES_RING_DEPTH", "65536", 1); /* 64 GiB of ring per worker */
    setenv("CFUTURES_WORKERS", "2", 1);
    int rc = in_child(big_process_pool);
    assert_true(rc == CF_ENOMEM || rc == CF_ESYS);
    expect_lines(1, "CFUTURES_SLOT_SIZE=\"1048576\", CFUTURES_RING_DEPTH=\"65536\"",
                 "the process pool cannot be made this large");
    unsetenv("CFUTURES_SLOT_SIZE");
    unsetenv("CFUTURES_RING_DEPTH");

    setenv("CFUTURES_WORKERS", "1024", 1); /* 1024 thread stacks: gigabytes */
    rc = in_child(big_thread_pool);
    assert_true(rc == CF_ENOMEM || rc == CF_ESYS);
    expect_lines(1, "CFUTURES_WORKERS=\"1024\"", "the thread pool cannot be made this large");
    unsetenv("CFUTURES_WORKERS");

    /* The same size from code: the caller has the error code; nothing is
     * printed. */
    rc = in_child(big_thread_pool_in_code);
    assert_true(rc == CF_ENOMEM || rc == CF_ESYS);
    assert_string_equal(out, "");
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cf-env-defaults-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_tightest_level_wins),
        cmocka_unit_test(test_v1_mount_rooted_at_container),
        cmocka_unit_test(test_hybrid_and_escaped_mount),
        cmocka_unit_test(test_unreadable_is_no_limit),
        cmocka_unit_test(test_default_workers_follow_quota),
        cmocka_unit_test(test_each_failure_says_why),
        cmocka_unit_test(test_sizes_from_env_fail_in_one_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
