/* Worker thread names: "<prefix>-<n>", the prefix from the options or
 * CFUTURES_THREAD_NAME_PREFIX (options win), cut only as far as the
 * 15-byte Linux limit needs for the pool's largest worker number, and a bad
 * variable warning once and leaving the default. Names are read back from
 * /proc/self/task/WHATEVER/comm, where the kernel keeps them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfutures.h"
#include "support/test_env.h"

/* How many of the process's threads are named `want`. */
static int threads_named(const char *want)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* the thread just exited */
        if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        n += strcmp(comm, want) == 0;
    }
    closedir(d);
    return n;
}

/* Workers name themselves as they start, maybe after the constructor
 * returned: wait (bounded, 10 s) until worker k of n is named prefix-k. */
static void expect_names(const char *prefix, int n)
{
    for (int k = 0; k < n; k++) {
        char want[32];
        snprintf(want, sizeof want, "%s-%d", prefix, k);
        assert_true(strlen(want) <= 15);
        int found = 0;
        for (int tries = 0; tries < 10000 && !(found = threads_named(want)); tries++)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        if (found != 1) fail_msg("no single thread named \"%s\"", want);
    }
}

/* Stderr while making a pool. */
static char captured[4096];
static cf_executor *new_pool_captured(const cf_thread_pool_opts *o)
{
    cf_test_stderr cap;
    cf_test_stderr_begin(&cap);
    cf_executor *ex;
    int rc = cf_thread_pool_new(&ex, o);
    cf_test_stderr_end(&cap, captured, sizeof captured);
    assert_int_equal(rc, 0);
    return ex;
}

static void test_env_sets_prefix(void **state)
{
    (void)state;
    setenv("CFUTURES_THREAD_NAME_PREFIX", "envpool", 1);
    cf_executor *ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2});
    assert_non_null(ex);
    assert_string_equal(captured, "");
    expect_names("envpool", 2);
    cf_executor_free(ex);
    unsetenv("CFUTURES_THREAD_NAME_PREFIX");
}

static void test_code_wins_over_env(void **state)
{
    (void)state;
    setenv("CFUTURES_THREAD_NAME_PREFIX", "envpool", 1);
    cf_executor *ex;
    assert_int_equal(
        cf_thread_pool_new(
            &ex, &(cf_thread_pool_opts){.max_workers = 2, .thread_name_prefix = "codepool"}),
        0);
    assert_non_null(ex);
    expect_names("codepool", 2);
    assert_int_equal(threads_named("envpool-0"), 0);
    cf_executor_free(ex);
    unsetenv("CFUTURES_THREAD_NAME_PREFIX");
}

/* One line on stderr that names `from` and says what the prefix became. */
static void expect_cut_line(const char *from, const char *kept)
{
    char cut[64];
    snprintf(cut, sizeof cut, "cut to \"%s\"", kept);
    if (cf_test_count_lines(captured) != 1 || !strstr(captured, from) || !strstr(captured, cut))
        fail_msg("wanted one line naming %s and saying %s, got: \"%s\"", from, cut, captured);
}

/* 15 bytes hold "<prefix>-<N>": 13 prefix characters for N < 10, 12 for
 * N < 100; before, every prefix was cut to 8. A prefix that is cut says so
 * in one line (once per process), naming where it came from. */
static void test_long_prefix_cut_only_as_needed(void **state)
{
    (void)state;
    setenv("CFUTURES_THREAD_NAME_PREFIX", "abcdefghijklmno", 1); /* 15: the most accepted */
    cf_executor *ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2});
    assert_non_null(ex);
    expect_cut_line("CFUTURES_THREAD_NAME_PREFIX=\"abcdefghijklmno\"", "abcdefghijklm");
    expect_names("abcdefghijklm", 2);
    cf_executor_free(ex);
    ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2});
    assert_non_null(ex);
    assert_string_equal(captured, ""); /* said once */
    cf_executor_free(ex);
    unsetenv("CFUTURES_THREAD_NAME_PREFIX");

    /* In code a longer prefix is accepted and cut the same way; with 12
     * workers the largest N has two digits, so one more goes. */
    ex = new_pool_captured(
        &(cf_thread_pool_opts){.max_workers = 12, .thread_name_prefix = "0123456789abcdefghij"});
    assert_non_null(ex);
    expect_cut_line("thread_name_prefix option", "0123456789ab");
    expect_names("0123456789ab", 12);
    cf_executor_free(ex);

    /* A short prefix is not touched, and nothing is said. */
    ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2, .thread_name_prefix = "x"});
    assert_non_null(ex);
    assert_string_equal(captured, "");
    expect_names("x", 2);
    cf_executor_free(ex);
}

/* Bad values: one warning line naming the variable, the default "cf", and
 * nothing more for the next pool. */
static void test_bad_env_warns_once(void **state)
{
    (void)state;
    setenv("CFUTURES_THREAD_NAME_PREFIX", "bad/name", 1);
    cf_executor *ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2});
    assert_non_null(ex);
    assert_int_equal(cf_test_count_lines(captured), 1);
    assert_non_null(strstr(captured, "CFUTURES_THREAD_NAME_PREFIX=\"bad/name\""));
    assert_non_null(strstr(captured, "using the default cf"));
    expect_names("cf", 2);
    cf_executor_free(ex);
    setenv("CFUTURES_THREAD_NAME_PREFIX", "far-too-long-for-a-thread-name", 1);
    ex = new_pool_captured(&(cf_thread_pool_opts){.max_workers = 2});
    assert_non_null(ex);
    assert_string_equal(captured, "");
    expect_names("cf", 2);
    cf_executor_free(ex);
    unsetenv("CFUTURES_THREAD_NAME_PREFIX");
}

/* In code, a prefix that is not a name is refused like any bad option. */
static void test_bad_code_prefix_einval(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "a/b", "tab\there", "nl\n"};
    cf_executor *ex;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            cf_thread_pool_new(
                &ex, &(cf_thread_pool_opts){.max_workers = 1, .thread_name_prefix = bad[i]}),
            CF_EINVAL);
        assert_null(ex);
    }
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    unsetenv("CFUTURES_THREAD_NAME_PREFIX");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_sets_prefix),
        cmocka_unit_test(test_code_wins_over_env),
        cmocka_unit_test(test_long_prefix_cut_only_as_needed),
        cmocka_unit_test(test_bad_env_warns_once),
        cmocka_unit_test(test_bad_code_prefix_einval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
