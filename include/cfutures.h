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
 * Every call that can fail returns 0 or a negative CF_E* code
 * (cfutures/error.h) and hands what it makes out through a pointer. The
 * calls that cannot fail return their answer directly: cf_future_cancel
 * and the bool state queries, cf_future_retain (its argument),
 * cf_executor_workers (a count, or CF_EINVAL), cf_as_completed_remaining,
 * cf_strerror and cf_version; cf_*_free, cf_future_release and
 * cf_trim_memory return nothing. */
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
