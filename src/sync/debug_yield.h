/* Debugging aids for the lock-free code: yield injection at the ordering
 * points, and assertions on invariants.
 *
 * CF__YIELD_POINT() marks a place between two steps of a lock-free protocol
 * (a store and the fence after it, a load and the CAS that relies on it)
 * where another thread running instead makes a rare interleaving common.
 * Built with CF_DEBUG_YIELD (CMake option CF_DEBUG_YIELD), each point calls
 * sched_yield() with the probability CFUTURES_DEBUG_YIELD asks for, read
 * once at the first point reached:
 *   unset, empty or 0   never (the points cost one load and a branch)
 *   N >= 1              one time in N ("1": every time)
 *   0 < p < 1           with probability p
 * The draw is a thread-local xorshift, so points never synchronise with
 * each other and add no ordering a release build lacks. Without
 * CF_DEBUG_YIELD the macro is empty. The idea is liburcu's DEBUG_YIELD.
 *
 * CF__ASSERT(cond) checks an invariant in the builds with debug checks
 * (sys/debug_checks.h: CF_DEBUG_CHECKS, or no NDEBUG) and prints
 * "cfutures: <file>:<line>: <function>: invariant broken: <cond>" and
 * aborts when it does not hold; elsewhere cond is not evaluated. */
#ifndef CF_DEBUG_YIELD_H
#define CF_DEBUG_YIELD_H

#include "sys/debug_checks.h"

#if defined(CF_DEBUG_YIELD)
void cf__debug_yield(void);
#define CF__YIELD_POINT() cf__debug_yield()
#else
#define CF__YIELD_POINT() ((void)0)
#endif

_Noreturn void cf__assert_fail(const char *file, int line, const char *func, const char *cond);

#if CF__DEBUG_CHECKS
#define CF__ASSERT(cond) ((cond) ? (void)0 : cf__assert_fail(__FILE__, __LINE__, __func__, #cond))
#else
#define CF__ASSERT(cond) ((void)0)
#endif

#endif
