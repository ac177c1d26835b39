/* Helpers shared by the tests: the stress scale and a small seeded PRNG. */
#ifndef CF_TEST_ENV_H
#define CF_TEST_ENV_H

#include <stdint.h>
#include <stdlib.h>

/* CFUTURES_STRESS_SCALE multiplies stress sizes (default 1: a CI-sized run). */
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
