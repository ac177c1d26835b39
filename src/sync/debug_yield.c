/* Yield injection and the assertion failure report (debug_yield.h). */
#include "sync/debug_yield.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

_Noreturn void cf__assert_fail(const char *file, int line, const char *func, const char *cond)
{
    fprintf(stderr, "cfutures: %s:%d: %s: invariant broken: %s\n", file, line, func, cond);
    abort();
}

#if defined(CF_DEBUG_YIELD)
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

/* The draw yields when the next random 64-bit value is below threshold. */
static _Atomic uint64_t threshold;
static atomic_bool threshold_ready;

static uint64_t threshold_from_env(void)
{
    const char *s = getenv("CFUTURES_DEBUG_YIELD");
    if (!s || !*s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v > 0)) return 0;
    double p = v >= 1 ? 1 / v : v; /* N: one in N; p: probability */
    if (p >= 1) return UINT64_MAX;
    return (uint64_t)(p * 18446744073709551616.0); /* p * 2^64 */
}

static uint64_t load_threshold(void)
{
    /* Acquire: pairs with the release store below, so threshold is read
     * after it was written. Two first callers both compute the same value
     * from the environment and store it (relaxed: the flag orders it). */
    if (atomic_load_explicit(&threshold_ready, memory_order_acquire))
        return atomic_load_explicit(&threshold, memory_order_relaxed);
    uint64_t t = threshold_from_env();
    atomic_store_explicit(&threshold, t, memory_order_relaxed);
    /* Release: publishes threshold to the acquire load above. */
    atomic_store_explicit(&threshold_ready, true, memory_order_release);
    return t;
}

void cf__debug_yield(void)
{
    static _Thread_local uint64_t state;
    uint64_t t = load_threshold();
    if (t == 0) return;
    if (state == 0) state = (uint64_t)(uintptr_t)&state | 1; /* per-thread seed */
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    if (t == UINT64_MAX || state < t) sched_yield();
}
#endif
