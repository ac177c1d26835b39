/* cfutures: Python's concurrent.futures, in C.
 *
 *   cf_executor *ex = cf_thread_pool_new(NULL);   // or cf_process_pool_new(NULL)
 *   cf_future *f;
 *   if (cf_submit(ex, square, &x, sizeof x, &f) == 0) {
 *       int64_t y;
 *       if (cf_future_result_i64(f, CF_FOREVER, &y) == 0) use(y);
 *       cf_future_release(f);
 *   }
 *   cf_executor_free(ex);
 *
 * Public names start with cf_ / CF_; environment variables with CFUTURES_.
 * Every call returns 0 or a negative CF_E* code (cfutures/error.h). */
#ifndef CFUTURES_H
#define CFUTURES_H

#include "cfutures/export.h"
#include "cfutures/error.h"
#include "cfutures/task.h"
#include "cfutures/future.h"
#include "cfutures/executor.h"
#include "cfutures/wait.h"

#define CF_VERSION_MAJOR 0
#define CF_VERSION_MINOR 1
#define CF_VERSION_PATCH 0

#ifdef __cplusplus
extern "C" {
#endif
CF_API const char *cf_version(void);
#ifdef __cplusplus
}
#endif
#endif
