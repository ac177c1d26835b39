/* cfutures: Python's concurrent.futures, in C.
 *
 *   cf_executor *ex;
 *   if (cf_thread_pool_new(&ex, NULL) != 0) return;  // or cf_process_pool_new
 *   cf_future *f;
 *   if (cf_submit(ex, square, &x, sizeof x, &f) == 0) {
 *       int64_t y;
 *       if (cf_future_result_i64(f, CF_FOREVER, &y) == 0) use(y);
 *       cf_future_release(f);
 *   }
 *   cf_executor_free(ex);
 *
 * Public names start with cf_ / CF_; environment variables with CFUTURES_.
 * Every call returns 0 or a negative CF_E* code (cfutures/error.h) and
 * hands what it makes out through a pointer, except these, which return
 * their answer directly:
 * - cf_future_cancel and the bool queries (cf_future_cancelled, _running,
 *   _done, cf_out_cancel_requested, cf_wait_mask_test);
 * - cf_future_retain (its argument), cf_out_context (the pointer),
 *   cf_executor_workers (a count, or CF_EINVAL), cf_channel_fd (the
 *   descriptor, or CF_EINVAL), cf_as_completed_remaining and
 *   cf_channel_pending (counts), cf_strerror and cf_version (strings);
 * - cf_out_error, which returns the task's own code it was given, and
 *   cf_fj_join, cf_fj_end and cf_fj_run, which return a fork-join
 *   function's own code (any int) or a negative CF_E* code;
 * - cf_*_free, cf_future_release, cf_fj_begin, cf_fj_fork and
 *   cf_trim_memory, which return nothing. */
#ifndef CFUTURES_H
#define CFUTURES_H

#include "cfutures/export.h"
#include "cfutures/error.h"
#include "cfutures/task.h"
#include "cfutures/future.h"
#include "cfutures/executor.h"
#include "cfutures/wait.h"
#include "cfutures/channel.h"
#include "cfutures/fork_join.h"
#include "cfutures/version.h"

#ifdef __cplusplus
extern "C" {
#endif
/* The library's CF_VERSION_STRING, which may differ from the header's
 * when a program runs against another build of the shared library. */
CF_API const char *cf_version(void);
/* Give back the memory cfutures keeps for reuse: up to 64 MiB of empty
 * future-record chunks per NUMA node, kept after a burst so that the next
 * one finds its records resident. Records in use are untouched. Any
 * thread, any time (a service after a burst, a benchmark before it reads
 * the resident set size). */
CF_API void cf_trim_memory(void);
#ifdef __cplusplus
}
#endif
#endif
