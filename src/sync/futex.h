/* Futex waits and wakes, and monotonic deadlines.
 *
 * Contract: cf__futex_wait sleeps only while *word == expected (checked by
 * the kernel atomically with going to sleep), and returns on a wake, a
 * signal, a spurious wake-up or the deadline; callers always re-check their
 * condition in a loop. `shared` selects a futex usable across processes
 * (the word lives in a MAP_SHARED mapping); otherwise FUTEX_PRIVATE_FLAG. */
#ifndef CF_FUTEX_H
#define CF_FUTEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* A monotonic deadline in nanoseconds; CF__NO_DEADLINE waits forever. */
typedef int64_t cf__deadline;
#define CF__NO_DEADLINE INT64_MAX

int64_t cf__now_ns(void); /* CLOCK_MONOTONIC */

/* Validate a user timeout (seconds; <0 forever; 0 poll; NaN -> CF_EINVAL)
 * and turn it into a deadline. Returns 0 or CF_EINVAL. */
int cf__deadline_from_timeout(double timeout, cf__deadline *out);

/* Returns 0 when woken or the value differed (EAGAIN), CF_ETIMEDOUT when
 * the deadline has passed. EINTR is reported as 0 (a spurious wake-up). */
int cf__futex_wait(_Atomic uint32_t *word, uint32_t expected, cf__deadline deadline, bool shared);
/* Wake up to n sleepers (INT32_MAX for all). Returns the number woken. */
int cf__futex_wake(_Atomic uint32_t *word, int n, bool shared);

/* A polite pause for spin loops. */
static inline void cf__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

#endif
