/* Helpers shared by the tests: the start of every test program's main,
 * the stress scale and a small seeded PRNG. */
#ifndef CF_TEST_ENV_H
#define CF_TEST_ENV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Call first in every test program's main:
 * - unsets every CFUTURES_* variable of the environment the program was
 *   started with, so a developer's settings (CFUTURES_WORKERS, ...) do not
 *   change what the tests see; a test that needs one sets it itself. The
 *   two knobs of the test harness stay: CFUTURES_STRESS_SCALE (below) and
 *   CFUTURES_DEBUG_YIELD (src/sync/debug_yield.h).
 * - runs only the cmocka cases whose names match a filter, from the first
 *   argument or else CF_TEST_FILTER (cmocka's pattern: `*` and `?` match
 *   any characters): `test_future done_callbacks` or
 *   `CF_TEST_FILTER='cancel*' ctest -R test_future`. */
void cf_test_init(int argc, char **argv);

/* What the process writes to stderr between cf_test_stderr_begin and
 * cf_test_stderr_end goes to a temporary file; _end restores stderr and
 * copies the text into buf (NUL-terminated, cut at size - 1 bytes). A
 * redirect that fails fails the cmocka test. */
typedef struct {
    FILE *tmp;
    int saved;
} cf_test_stderr;
void cf_test_stderr_begin(cf_test_stderr *c);
void cf_test_stderr_end(cf_test_stderr *c, char *buf, size_t size);

/* The number of newline characters in s. */
static inline int cf_test_count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* CFUTURES_STRESS_SCALE (read when the test runs) multiplies stress sizes (default 1: a CI-sized run). */
static inline double cf_test_scale(void)
{
    const char *s = getenv("CFUTURES_STRESS_SCALE");
    if (!s || !*s) return 1.0;
    char *end;
    double v = strtod(s, &end);
    return (*end == '\0' && v > 0) ? v : 1.0;
}

/* xorshift64*: deterministic per seed. */
static inline uint64_t cf_test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
