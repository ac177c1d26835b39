/* cfutures: waiting on many futures (any mix of executors).
 * Both cost O(n) in total, not O(n) per completion.
 * Without a timeout, a thread outside the pool may run the awaited
 * thread-pool tasks that nobody has started itself, last first, while
 * every worker is busy (not with an initializer or CFUTURES_WAIT_HELP=0;
 * SEMANTICS 22c): the call then returns once the task it runs is done. */
#ifndef CFUTURES_WAIT_H
#define CFUTURES_WAIT_H

#include <stddef.h>
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
 * Returns 0, CF_EINVAL or CF_ENOMEM. n_done may be NULL. */
CF_API int cf_wait(cf_future **fs, size_t n, enum cf_return_when when, double timeout,
                   size_t *n_done);

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
CF_API size_t cf_as_completed_remaining(const cf_as_completed *it);
CF_API void cf_as_completed_free(cf_as_completed *it);

#ifdef __cplusplus
}
#endif
#endif
