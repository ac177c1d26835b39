/* cfutures: waiting on many futures (any mix of executors).
 * Both cost O(n) in total, not O(n) per completion.
 * Without a timeout, a thread outside the pool may run the awaited
 * thread-pool tasks that nobody has started itself, last first, while
 * every worker is busy (not with an initializer or CFUTURES_WAIT_HELP=0;
 * docs/SEMANTICS.md, item 22c): the call then returns once the task it
 * runs is done. */
#ifndef CFUTURES_WAIT_H
#define CFUTURES_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export.h"
#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cf_return_when { CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION, CF_ALL_COMPLETED };

/* Wait until `when` holds or the timeout passes. On return fs is permuted:
 * fs[0..*n_done) are the distinct done futures, then the distinct not-done
 * ones, then any duplicates (each future is counted once). A timeout is not
 * an error: it returns 0 with the partition as it stands. A cancelled future
 * counts as done; cancellation is not an exception. n == 0 returns at once.
 * Returns 0, CF_EINVAL or CF_ENOMEM. n_done may be NULL.
 * The permutation breaks arrays kept in parallel with fs (names[i] for
 * fs[i]): cf_wait_mask waits the same way and leaves fs as it is. */
CF_API int cf_wait(cf_future **fs, size_t n, enum cf_return_when when, double timeout,
                   size_t *n_done);

/* The 64-bit words of a done mask for n futures. */
#define CF_WAIT_MASK_WORDS(n) (((size_t)(n) + 63) / 64)

/* cf_wait without touching fs: it waits for the same condition and
 * reports the partition as a bit mask over the positions of fs. done (may
 * be NULL) has CF_WAIT_MASK_WORDS(n) words; on return bit i (see
 * cf_wait_mask_test) is set if fs[i] was done and clear if not, each
 * future's state read once, so every position of a future given twice
 * agrees. *n_done (may be NULL) counts the distinct done futures, as
 * cf_wait does; with no duplicate it is the number of bits set. Bits past
 * n in the last word are cleared. On an error (CF_EINVAL, CF_ENOMEM)
 * neither output is written. */
CF_API int cf_wait_mask(cf_future *const *fs, size_t n, enum cf_return_when when, double timeout,
                        uint64_t *done, size_t *n_done);

/* Bit i of a mask written by cf_wait_mask. */
static inline bool cf_wait_mask_test(const uint64_t *done, size_t i)
{
    return (done[i / 64] >> (i % 64)) & 1u;
}

typedef struct cf_as_completed cf_as_completed;

/* Snapshot fs (duplicates yielded once) and start the deadline now. The
 * iterator takes its own references. */
CF_API int cf_as_completed_new(cf_future **fs, size_t n, double timeout, cf_as_completed **out);
/* 0 and *f (borrowed: valid while the iterator lives) in completion order,
 * those already done first (in input order). Completion order is as any
 * thread saw it: if a thread learned that f0 was done before f1 became
 * done, f0 comes first; CF_ETIMEDOUT when the deadline passes (then
 * cf_as_completed_remaining says how many are unfinished); CF_END. */
CF_API int cf_as_completed_next(cf_as_completed *it, cf_future **f);
/* cf_as_completed_next that also says where the future was in the array
 * given to cf_as_completed_new: *index is its position there (of its first
 * occurrence, for a future given more than once), so a caller with arrays
 * kept in parallel needs no search. f or index may be NULL, not both
 * (CF_EINVAL). Same order, same codes, and either call may be used for
 * any step of the same iteration. */
CF_API int cf_as_completed_next_index(cf_as_completed *it, cf_future **f, size_t *index);
CF_API size_t cf_as_completed_remaining(const cf_as_completed *it);
CF_API void cf_as_completed_free(cf_as_completed *it);

#ifdef __cplusplus
}
#endif
#endif
