/* libFuzzer target: the CFUTURES_* parsers (src/sys/config.c).
 *
 * Input: byte 0 picks the variable (mod the number of settings), the rest
 * is its value (cut at the first NUL, as the environment would). Each
 * input goes through
 *   - cf__config_parse, the pure parser: on success every field must be in
 *     its documented range, on failure the config must be unchanged;
 *   - the environment path (setenv + cf__config_load), which adds the
 *     warning and the file checks;
 *   - the options path for the string options (cpu_list,
 *     thread_name_prefix), and the thread-name fitting. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sys/config.h"

static struct cf__config base;

static void clear_env(void)
{
    for (int s = 0; s < CF__SET_COUNT; s++) unsetenv(cf__setting_env_name(s));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    clear_env();
    cf__config_load(&base);
    return 0;
}

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stdout, "fuzz_config: %s failed (line %d)\n", #cond, __LINE__); \
            abort();                                                                \
        }                                                                           \
    } while (0)

static void check_ranges(const struct cf__config *c)
{
    CHECK(c->workers >= 0 && c->workers <= CF__MAX_WORKERS);
    CHECK(c->pin == CF_PIN_COMPACT || c->pin == CF_PIN_SCATTER || c->pin == CF_PIN_LIST ||
          c->pin == CF_PIN_NONE);
    CHECK(memchr(c->cpu_list, 0, sizeof c->cpu_list));
    CHECK(!c->cpu_list[0] || cf__cpu_list_parse(c->cpu_list, NULL, 0) > 0);
    CHECK(c->pin != CF_PIN_LIST || c->cpu_list[0]);
    CHECK(c->spin_ns >= 0 && c->spin_ns <= 1000000000L);
    CHECK(c->wait_spin_ns >= 0 && c->wait_spin_ns <= 1000000000L);
    CHECK(c->steal_attempts >= 0 && c->steal_attempts <= 65536);
    CHECK(c->map_window <= (1u << 30));
    CHECK(c->slot_size >= 64 && c->slot_size <= (1u << 20));
    CHECK(c->ring_depth >= 2 && c->ring_depth <= 65536 && !(c->ring_depth & (c->ring_depth - 1)));
    CHECK(c->max_tasks_per_child >= 0);
    CHECK(memchr(c->topology, 0, sizeof c->topology));
    CHECK(memchr(c->thread_name_prefix, 0, sizeof c->thread_name_prefix));
    CHECK(cf__thread_name_prefix_ok(c->thread_name_prefix));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192) return 0;
    enum cf__setting s = (enum cf__setting)(data[0] % CF__SET_COUNT);
    char *v = malloc(size);
    if (!v) return 0;
    memcpy(v, data + 1, size - 1);
    v[size - 1] = '\0';

    /* The pure parser. */
    struct cf__config c = base;
    const char *why = NULL;
    int rc = cf__config_parse(&c, s, v, &why);
    if (rc == 0) {
        check_ranges(&c);
        CHECK(c.source[s] == CF__FROM_ENV);
    } else {
        CHECK(rc == CF_EINVAL);
        CHECK(memcmp(&c, &base, sizeof c) == 0);
    }
    char text[8192];
    FILE *f = fmemopen(text, sizeof text, "w");
    if (f) {
        cf__config_print(&c, f);
        fclose(f);
    }

    /* The environment path: whatever the value, the result is in range. */
    setenv(cf__setting_env_name(s), v, 1);
    cf__config_load(&c);
    check_ranges(&c);
    unsetenv(cf__setting_env_name(s));

    /* The string options in code: accepted ones are in range, refused ones
     * change nothing. */
    struct cf__config o = base;
    cf_thread_pool_opts opts = {0};
    if (s == CF__SET_CPU_LIST || s == CF__SET_PIN) opts.cpu_list = v;
    else opts.thread_name_prefix = v;
    if (cf__config_apply_thread_opts(&o, &opts) == 0) check_ranges(&o);
    else CHECK(memcmp(&o, &base, sizeof o) == 0);

    if (cf__thread_name_prefix_ok(v)) {
        char fit[CF__THREAD_NAME_MAX + 1];
        int n = 1 + (int)(data[0] * 37u % CF__MAX_WORKERS);
        cf__thread_name_prefix_fit(fit, sizeof fit, v, n);
        char name[64];
        snprintf(name, sizeof name, "%s-%d", fit, n - 1);
        CHECK(strlen(name) <= CF__THREAD_NAME_MAX);
        CHECK(strncmp(fit, v, strlen(fit)) == 0);
    }
    free(v);
    return 0;
}
