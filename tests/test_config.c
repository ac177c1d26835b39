/* config.c: defaults, strict parsing of every CFUTURES_* variable, one
 * warning line per bad variable and process, options in code winning, and
 * failed overlays changing nothing.
 *
 * Environment: the test sets and unsets CFUTURES_* itself; whatever the
 * caller exported is cleared first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sys/config.h"
#include "support/test_env.h"

static void clear_env(void)
{
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
}

/* Run cf__config_load with stderr captured; returns what it printed. */
static char captured[8192];
static const char *load_captured(struct cf__config *c)
{
    cf_test_stderr cap;
    cf_test_stderr_begin(&cap);
    cf__config_load(c);
    cf_test_stderr_end(&cap, captured, sizeof captured);
    return captured;
}

static void test_defaults(void **state)
{
    (void)state;
    clear_env();
    struct cf__config c;
    assert_string_equal(load_captured(&c), "");
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.pin, CF_PIN_COMPACT);
    assert_string_equal(c.cpu_list, "");
    assert_int_equal(c.spin_ns, 50000);
    assert_int_equal(c.steal_attempts, 0);
    assert_int_equal(c.map_window, 0);
    assert_true(c.numa);
    assert_false(c.stats);
    assert_int_equal(c.slot_size, 256);
    assert_int_equal(c.ring_depth, 1024);
    assert_int_equal(c.max_tasks_per_child, 0);
    assert_string_equal(c.topology, "");
    assert_int_equal(c.wait_spin_ns, 20000);
    assert_string_equal(c.thread_name_prefix, "cf");
    for (int s = 0; s < CF__SET_COUNT; s++) assert_int_equal(c.source[s], CF__FROM_DEFAULT);
}

static void test_env_values(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_WORKERS", "7", 1);
    setenv("CFUTURES_PIN", "Scatter", 1);
    setenv("CFUTURES_SPIN_NS", "0", 1);
    setenv("CFUTURES_STEAL_ATTEMPTS", "3", 1);
    setenv("CFUTURES_MAP_WINDOW", "100", 1);
    setenv("CFUTURES_NUMA", "off", 1);
    setenv("CFUTURES_STATS", "true", 1);
    setenv("CFUTURES_SLOT_SIZE", "1024", 1);
    setenv("CFUTURES_RING_DEPTH", "128", 1);
    setenv("CFUTURES_MAX_TASKS_PER_CHILD", "5", 1);
    setenv("CFUTURES_TOPOLOGY", CF_TEST_DATA_DIR "/laptop-1x1x4x2.xml", 1);
    setenv("CFUTURES_WAIT_SPIN_NS", "5", 1);
    setenv("CFUTURES_THREAD_NAME_PREFIX", "my pool.2", 1);
    setenv("CFUTURES_WAIT_HELP", "no", 1);
    struct cf__config c;
    assert_string_equal(load_captured(&c), "");
    assert_int_equal(c.workers, 7);
    assert_int_equal(c.pin, CF_PIN_SCATTER);
    assert_int_equal(c.spin_ns, 0);
    assert_int_equal(c.steal_attempts, 3);
    assert_int_equal(c.map_window, 100);
    assert_false(c.numa);
    assert_true(c.stats);
    assert_int_equal(c.slot_size, 1024);
    assert_int_equal(c.ring_depth, 128);
    assert_int_equal(c.max_tasks_per_child, 5);
    assert_string_equal(c.topology, CF_TEST_DATA_DIR "/laptop-1x1x4x2.xml");
    assert_int_equal(c.wait_spin_ns, 5);
    assert_string_equal(c.thread_name_prefix, "my pool.2");
    assert_false(c.wait_help);
    for (int s = 0; s < CF__SET_COUNT; s++)
        if (s != CF__SET_CPU_LIST) assert_int_equal(c.source[s], CF__FROM_ENV);
    assert_int_equal(c.source[CF__SET_CPU_LIST], CF__FROM_DEFAULT);
    clear_env();
}

static void test_cpus_imply_list(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_CPUS", "0-3,8", 1);
    struct cf__config c;
    assert_string_equal(load_captured(&c), "");
    assert_int_equal(c.pin, CF_PIN_LIST);
    assert_string_equal(c.cpu_list, "0-3,8");
    assert_int_equal(c.source[CF__SET_CPU_LIST], CF__FROM_ENV);
    /* An explicit policy keeps the list as a restriction only. */
    setenv("CFUTURES_PIN", "compact", 1);
    assert_string_equal(load_captured(&c), "");
    assert_int_equal(c.pin, CF_PIN_COMPACT);
    assert_string_equal(c.cpu_list, "0-3,8");
    clear_env();
}

/* Each bad value: the default stays, and the first one prints exactly one
 * line naming the variable, the value and the range; later ones nothing. */
struct bad {
    const char *var, *value, *range;
};
static const struct bad bads[] = {
    {"CFUTURES_WORKERS", "abc", "[0, 4096]"},
    {"CFUTURES_PIN", "tight", "compact, scatter, list, none"},
    {"CFUTURES_CPUS", "3-1", "[0, 8191]"},
    {"CFUTURES_SPIN_NS", "-5", "[0, 1000000000]"},
    {"CFUTURES_STEAL_ATTEMPTS", "1e3", "[0, 65536]"},
    {"CFUTURES_MAP_WINDOW", "99999999999999999999999", "[0, 1073741824]"},
    {"CFUTURES_NUMA", "maybe", "0, 1, false, true, off, on"},
    {"CFUTURES_STATS", "2", "0, 1, false, true, off, on"},
    {"CFUTURES_SLOT_SIZE", "16", "[64, 1048576]"},
    {"CFUTURES_RING_DEPTH", "100", "power of two in [2, 65536]"},
    {"CFUTURES_MAX_TASKS_PER_CHILD", "-1", "[0, 2147483647]"},
    {"CFUTURES_TOPOLOGY", "/nonexistent/topo.xml", "readable hwloc XML file"},
    {"CFUTURES_WAIT_SPIN_NS", " 10", "[0, 1000000000]"},
    {"CFUTURES_THREAD_NAME_PREFIX", "a/b", "1 to 15 printable ASCII characters, no '/'"},
};

static void test_bad_values_warn_once(void **state)
{
    (void)state;
    struct cf__config def, c;
    clear_env();
    cf__config_load(&def);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        clear_env();
        setenv(bads[i].var, bads[i].value, 1);
        const char *out = load_captured(&c);
        assert_int_equal(cf_test_count_lines(out), 1);
        char needle[256];
        snprintf(needle, sizeof needle, "%s=\"%s\"", bads[i].var, bads[i].value);
        if (!strstr(out, needle) || !strstr(out, bads[i].range) || !strstr(out, "default"))
            fail_msg("warning for %s lacks name, value or range: %s", bads[i].var, out);
        /* The default stays: nothing clamped. */
        assert_memory_equal(&c, &def, sizeof c);
        /* Once per variable and process. */
        setenv(bads[i].var, "still-bad-\x01", 1);
        assert_string_equal(load_captured(&c), "");
        assert_memory_equal(&c, &def, sizeof c);
    }
    clear_env();
}

static void test_strict_integers(void **state)
{
    (void)state;
    /* After warn-once (previous test) bad values are silent; check only
     * that each keeps the default and that the edges are accepted. */
    static const char *const bad_workers[] = {"", "+3", "3 ", "0x10", "4097", "-0x1", "1.5"};
    struct cf__config c;
    for (size_t i = 0; i < sizeof bad_workers / sizeof bad_workers[0]; i++) {
        clear_env();
        setenv("CFUTURES_WORKERS", bad_workers[i], 1);
        load_captured(&c);
        assert_int_equal(c.workers, 0);
        assert_int_equal(c.source[CF__SET_WORKERS], CF__FROM_DEFAULT);
    }
    setenv("CFUTURES_WORKERS", "4096", 1);
    load_captured(&c);
    assert_int_equal(c.workers, 4096);
    setenv("CFUTURES_RING_DEPTH", "65536", 1);
    load_captured(&c);
    assert_int_equal(c.ring_depth, 65536);
    setenv("CFUTURES_RING_DEPTH", "131072", 1);
    load_captured(&c);
    assert_int_equal(c.ring_depth, 1024);
    clear_env();
}

static void test_pin_list_needs_cpus(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_PIN", "list", 1);
    struct cf__config c;
    load_captured(&c); /* CFUTURES_PIN already warned once above */
    assert_int_equal(c.pin, CF_PIN_COMPACT);
    assert_int_equal(c.source[CF__SET_PIN], CF__FROM_DEFAULT);
    clear_env();
}

static void test_cpu_list_parse(void **state)
{
    (void)state;
    int v[16];
    assert_int_equal(cf__cpu_list_parse("0-3,8", v, 16), 5);
    int want[] = {0, 1, 2, 3, 8};
    assert_memory_equal(v, want, sizeof want);
    assert_int_equal(cf__cpu_list_parse("8,0-1", v, 16), 3);
    assert_int_equal(v[0], 8);
    assert_int_equal(v[2], 1);
    assert_int_equal(cf__cpu_list_parse("0-8191", NULL, 0), 8192);
    assert_int_equal(cf__cpu_list_parse("5", v, 1), 1);
    static const char *const bad[] = {"",     "3-1", "1,1", "0-3,2", "a",    "1,",   ",1",
                                      "8192", "0-",  "1 2", "-1",    "1--2", "1-2-3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cf__cpu_list_parse(bad[i], v, 16) != CF_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(cf__cpu_list_parse(NULL, v, 16), CF_EINVAL);
}

static void test_thread_opts_win(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_WORKERS", "3", 1);
    setenv("CFUTURES_NUMA", "0", 1);
    setenv("CFUTURES_SPIN_NS", "1000", 1);
    struct cf__config c;
    load_captured(&c);
    cf_thread_pool_opts o = {0};
    assert_int_equal(cf__config_apply_thread_opts(&c, &o), 0); /* zeroed: env stays */
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.source[CF__SET_WORKERS], CF__FROM_ENV);
    o.max_workers = 9;
    o.numa = CF_SWITCH_ON;
    o.spin_ns = CF_SPIN_NONE;
    o.cpu_list = "1,2";
    o.steal_attempts = 4;
    o.map_window = 77;
    o.stats = CF_SWITCH_ON;
    assert_int_equal(cf__config_apply_thread_opts(&c, &o), 0);
    assert_int_equal(c.workers, 9);
    assert_true(c.numa);
    assert_int_equal(c.spin_ns, 0);
    assert_int_equal(c.pin, CF_PIN_LIST);
    assert_string_equal(c.cpu_list, "1,2");
    assert_int_equal(c.steal_attempts, 4);
    assert_int_equal(c.map_window, 77);
    assert_true(c.stats);
    assert_int_equal(c.source[CF__SET_WORKERS], CF__FROM_CODE);
    assert_int_equal(c.source[CF__SET_NUMA], CF__FROM_CODE);
    assert_int_equal(c.source[CF__SET_SPIN_NS], CF__FROM_CODE);
    assert_int_equal(c.source[CF__SET_PIN], CF__FROM_CODE);
    assert_int_equal(cf__config_apply_thread_opts(&c, NULL), 0);
    clear_env();
}

static void test_thread_opts_invalid_change_nothing(void **state)
{
    (void)state;
    clear_env();
    struct cf__config c, before;
    cf__config_load(&c);
    before = c;
    cf_thread_pool_opts bad[] = {
        {.max_workers = -1},
        {.max_workers = CF__MAX_WORKERS + 1},
        {.max_workers = 2, .pin = (enum cf_pin_policy)99},
        {.max_workers = 2, .pin = CF_PIN_LIST}, /* list without cpus */
        {.max_workers = 2, .cpu_list = "2-1"},
        {.max_workers = 2, .spin_ns = -2},
        {.max_workers = 2, .spin_ns = 2000000000L},
        {.max_workers = 2, .steal_attempts = -1},
        {.max_workers = 2, .map_window = (size_t)1 << 31},
        {.max_workers = 2, .numa = (enum cf_switch)7},
        {.max_workers = 2, .stats = (enum cf_switch) - 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cf__config_apply_thread_opts(&c, &bad[i]), CF_EINVAL);
        assert_memory_equal(&c, &before, sizeof c);
    }
    assert_int_equal(cf__config_apply_thread_opts(NULL, &bad[0]), CF_EINVAL);
    /* An explicit policy with a code cpu list keeps the policy. */
    cf_thread_pool_opts ok = {.pin = CF_PIN_SCATTER, .cpu_list = "0-1"};
    assert_int_equal(cf__config_apply_thread_opts(&c, &ok), 0);
    assert_int_equal(c.pin, CF_PIN_SCATTER);
}

static void test_process_opts(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_SLOT_SIZE", "512", 1);
    struct cf__config c, before;
    load_captured(&c);
    before = c;
    cf_process_pool_opts bad[] = {
        {.max_workers = -3},
        {.max_tasks_per_child = -1},
        {.slot_size = 63},
        {.slot_size = ((size_t)1 << 20) + 1},
        {.ring_depth = 1},
        {.ring_depth = 48},
        {.ring_depth = 131072},
        {.spin_ns = -7},
        {.stats = (enum cf_switch)3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cf__config_apply_process_opts(&c, &bad[i]), CF_EINVAL);
        assert_memory_equal(&c, &before, sizeof c);
    }
    cf_process_pool_opts o = {.max_workers = 2,
                              .max_tasks_per_child = 10,
                              .slot_size = 4096,
                              .ring_depth = 16,
                              .spin_ns = 5,
                              .map_window = 8,
                              .stats = CF_SWITCH_OFF};
    assert_int_equal(cf__config_apply_process_opts(&c, &o), 0);
    assert_int_equal(c.workers, 2);
    assert_int_equal(c.max_tasks_per_child, 10);
    assert_int_equal(c.slot_size, 4096);
    assert_int_equal(c.source[CF__SET_SLOT_SIZE], CF__FROM_CODE);
    assert_int_equal(c.ring_depth, 16);
    assert_int_equal(c.spin_ns, 5);
    assert_int_equal(c.map_window, 8);
    assert_false(c.stats);
    assert_int_equal(cf__config_apply_process_opts(&c, NULL), 0);
    clear_env();
}

static void test_steal_attempts(void **state)
{
    (void)state;
    struct cf__config c;
    clear_env();
    cf__config_load(&c);
    assert_int_equal(cf__steal_attempts(&c, 1), 1);
    assert_int_equal(cf__steal_attempts(&c, 2), 2);
    assert_int_equal(cf__steal_attempts(&c, 32), 62);
    c.steal_attempts = 5;
    assert_int_equal(cf__steal_attempts(&c, 32), 5);
}

static void test_wait_spin_cached(void **state)
{
    (void)state;
    setenv("CFUTURES_WAIT_SPIN_NS", "1234", 1);
    assert_int_equal(cf__wait_spin_ns(), 1234);
    setenv("CFUTURES_WAIT_SPIN_NS", "99", 1);
    assert_int_equal(cf__wait_spin_ns(), 1234); /* process-wide, read once */
    clear_env();
}

static void test_print(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_WORKERS", "6", 1);
    struct cf__config c;
    load_captured(&c);
    cf_thread_pool_opts o = {.stats = CF_SWITCH_ON};
    assert_int_equal(cf__config_apply_thread_opts(&c, &o), 0);
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    assert_non_null(f);
    cf__config_print(&c, f);
    fclose(f);
    assert_int_equal(cf_test_count_lines(buf), CF__SET_COUNT);
    for (int s = 0; s < CF__SET_COUNT; s++) assert_non_null(strstr(buf, cf__setting_env_name(s)));
    assert_non_null(strstr(buf, "CFUTURES_WORKERS              = 6 (environment)"));
    assert_non_null(strstr(buf, "CFUTURES_STATS                = 1 (code)"));
    assert_non_null(strstr(buf, "CFUTURES_PIN                  = compact (default)"));
    assert_string_equal(cf__source_name(CF__FROM_CODE), "code");
    clear_env();
}

/* The pure parser: a function of the string; a refused value changes
 * nothing, whatever the environment says. */
static void test_pure_parser(void **state)
{
    (void)state;
    clear_env();
    setenv("CFUTURES_WORKERS", "9", 1); /* not read by the parser */
    struct cf__config def, c;
    cf__config_load(&def);
    c = def;
    const char *why = "untouched";
    assert_int_equal(cf__config_parse(&c, CF__SET_WORKERS, "12", &why), 0);
    assert_null(why);
    assert_int_equal(c.workers, 12);
    assert_int_equal(c.source[CF__SET_WORKERS], CF__FROM_ENV);
    c = def;
    assert_int_equal(cf__config_parse(&c, CF__SET_PIN, "list", &why), CF_EINVAL);
    assert_string_equal(why, "CFUTURES_CPUS is not set");
    assert_memory_equal(&c, &def, sizeof c);
    assert_int_equal(cf__config_parse(&c, CF__SET_CPU_LIST, "2-3", NULL), 0);
    assert_int_equal(c.pin, CF_PIN_LIST);
    assert_int_equal(cf__config_parse(&c, CF__SET_PIN, "list", NULL), 0);
    static const struct {
        enum cf__setting s;
        const char *v;
    } refused[] = {
        {CF__SET_RING_DEPTH, "96"},
        {CF__SET_THREAD_NAME_PREFIX, ""},
        {CF__SET_THREAD_NAME_PREFIX, "sixteen-chars-xx"},
        {CF__SET_THREAD_NAME_PREFIX, "a\tb"},
        {CF__SET_TOPOLOGY, ""},
        {CF__SET_NUMA, "2"},
        {CF__SET_CPU_LIST, "1,1"},
        {CF__SET_COUNT, "1"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        c = def;
        assert_int_equal(cf__config_parse(&c, refused[i].s, refused[i].v, NULL), CF_EINVAL);
        assert_memory_equal(&c, &def, sizeof c);
    }
    clear_env();
}

/* "<prefix>-<N>" fits 15 bytes for the largest N, cut no further. */
static void test_thread_name_prefix_fit(void **state)
{
    (void)state;
    static const struct {
        int workers;
        const char *want;
    } cases[] = {
        {1, "abcdefghijklm"},  {10, "abcdefghijklm"}, {11, "abcdefghijkl"},
        {100, "abcdefghijkl"}, {101, "abcdefghijk"},  {4096, "abcdefghij"},
    };
    char out[CF__THREAD_NAME_MAX + 1];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf__thread_name_prefix_fit(out, sizeof out, "abcdefghijklmno", cases[i].workers);
        assert_string_equal(out, cases[i].want);
    }
    cf__thread_name_prefix_fit(out, sizeof out, "cf", 4096);
    assert_string_equal(out, "cf");
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_env_values),
        cmocka_unit_test(test_cpus_imply_list),
        cmocka_unit_test(test_bad_values_warn_once),
        cmocka_unit_test(test_strict_integers),
        cmocka_unit_test(test_pin_list_needs_cpus),
        cmocka_unit_test(test_cpu_list_parse),
        cmocka_unit_test(test_thread_opts_win),
        cmocka_unit_test(test_thread_opts_invalid_change_nothing),
        cmocka_unit_test(test_process_opts),
        cmocka_unit_test(test_steal_attempts),
        cmocka_unit_test(test_wait_spin_cached),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_pure_parser),
        cmocka_unit_test(test_thread_name_prefix_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
