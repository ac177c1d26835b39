/* Futex waits and wakes on 32-bit words, and monotonic deadlines.
 *
 * Contract (see futex.h): cf__futex_wait() sleeps only while *word still
 * holds `expected` (the kernel compares and enqueues atomically), so a wake
 * issued after the caller changed the word is never lost. It may return
 * early (signal, spurious wake-up); every caller re-checks its condition in
 * a loop. Deadlines are absolute CLOCK_MONOTONIC nanoseconds, handed to
 * FUTEX_WAIT_BITSET as an absolute time (plain FUTEX_WAIT takes a relative
 * one, which would drift across the retries of a loop). No memory order is
 * implied by these calls: callers publish with their own atomics.
 * Progress: a wait blocks (that is its job); a wake never blocks and is one
 * system call, which callers skip when their word says nobody sleeps.
 * Any number of threads may wait and wake on one word at once; the words
 * belong to the callers. Design: Drepper, "Futexes Are Tricky" (2011). */
#include "sync/futex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cfutures/error.h"

int64_t cf__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cf__deadline_from_timeout(double timeout, cf__deadline *out)
{
    if (!out || isnan(timeout)) return CF_EINVAL;
    if (timeout < 0) {
        *out = CF__NO_DEADLINE;
        return 0;
    }
    int64_t now = cf__now_ns();
    double ns = timeout * 1e9;
    /* Saturate instead of overflowing: 9e18 ns is ~285 years, and the
     * comparison is also false for +inf. Below it the conversion is exact
     * enough and fits in int64_t. */
    if (!(ns < 9.0e18)) {
        *out = CF__NO_DEADLINE;
        return 0;
    }
    int64_t d = (int64_t)ns;
    *out = d > CF__NO_DEADLINE - now ? CF__NO_DEADLINE : now + d;
    return 0;
}

int cf__futex_wait(_Atomic uint32_t *word, uint32_t expected, cf__deadline deadline, bool shared)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != CF__NO_DEADLINE) {
        if (cf__now_ns() >= deadline) return CF_ETIMEDOUT;
        ts.tv_sec = (time_t)(deadline / 1000000000);
        ts.tv_nsec = (long)(deadline % 1000000000);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME measures the absolute
     * timeout on CLOCK_MONOTONIC. */
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long rc = syscall(SYS_futex, (uint32_t *)word, op, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0) return 0;
    switch (errno) {
    case ETIMEDOUT: return CF_ETIMEDOUT;
    case EINTR: /* a signal: report as a spurious wake-up */
    case EAGAIN: /* the word had already changed */ return 0;
    default: /* EFAULT/EINVAL: a bug in the caller; let it re-check */ return CF_ESYS;
    }
}

int cf__futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long rc = syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
    return rc < 0 ? 0 : (int)rc;
}
