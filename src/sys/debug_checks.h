/* Debug checks for caller bugs that a release build cannot afford to see:
 * a future released twice or used after its last release, an executor
 * freed twice or used after cf_executor_free. Each prints one line naming
 * the call ("cfutures: cf_future_release: future 0x... released twice")
 * and aborts, like a failed assert: the caller broke the API contract and
 * memory may already be corrupt.
 *
 * On when NDEBUG is not defined (builds with assertions) or when
 * CF_DEBUG_CHECKS is defined (CMake option CF_DEBUG_CHECKS, on in the
 * Debug build type and in tools/test's ASan tree). Off, every check
 * compiles to nothing.
 *
 * How, and the limits (a record's memory may be reused, so no check can be
 * complete without a handle that carries a generation, which the API's raw
 * pointers do not):
 * - The last release of a future poisons its state word (CF__FREED_STATE,
 *   a value no live future has) and puts the record in a process-wide
 *   quarantine of the last CF__QUARANTINE releases before it goes back to
 *   the record cache or the allocator. A second release or any cf_future_*
 *   call on it is caught while it is in quarantine; after that the memory
 *   may belong to a new future and the call is not detected. Under ASan,
 *   a record past the quarantine is poisoned memory and is caught too (by
 *   the check, or by ASan itself).
 * - cf_executor_free overwrites the executor's ops pointer with
 *   CF__EXECUTOR_FREED before the memory is freed. A second free or a call
 *   through executor.c's entry points sees it as long as nothing else has
 *   reused that memory (jemalloc leaves freed small regions untouched until
 *   reuse; a page it purged reads as zeros, and a NULL ops is taken for a
 *   bad argument, CF_EINVAL, as before).
 *   Under ASan the freed memory is poisoned and the check looks at that
 *   first. Calls that do not go through executor.c (cf_map, cf_wait) are
 *   not checked. */
#ifndef CF_DEBUG_CHECKS_H
#define CF_DEBUG_CHECKS_H

#include <stdbool.h>
#include <stdint.h>

#if defined(CF_DEBUG_CHECKS) || !defined(NDEBUG)
#define CF__DEBUG_CHECKS 1
#else
#define CF__DEBUG_CHECKS 0
#endif

#define CF__FREED_STATE \
    0xdead0000u             /* live states use the low bits only (state, flags, DELIVERING) */
#define CF__QUARANTINE 1024 /* released records held back (128 KiB) */
#define CF__EXECUTOR_FREED ((const struct cf__executor_ops *)(uintptr_t)0xdeadf4eeu)

/* Prints "cfutures: <call>: <kind> <obj> <problem>" and aborts. */
_Noreturn void cf__debug_fail(const char *call, const char *kind, const void *obj,
                              const char *problem);

/* Whether the library was built with the checks (tests skip without). */
bool cf__debug_checks_on(void);

/* Under ASan: whether the first byte at p is poisoned (freed, or a
 * poisoned cached record). False otherwise and without ASan. */
bool cf__debug_poisoned(const void *p);

#endif
