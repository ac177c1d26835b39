/* cfutures: tasks.
 *
 * A task is a C function that reads an argument and writes a result, both
 * byte strings, so the same task runs in a thread or in a worker process.
 *
 *   static int square(const void *arg, size_t len, cf_out *out) {
 *       int64_t x; memcpy(&x, arg, sizeof x);
 *       return cf_out_i64(out, x * x);
 *   }
 *
 * The task's return value is its outcome: 0 is success, anything else is the
 * task's own error code ("it raised"). cf_out_error() attaches a message and
 * returns the code, so `return cf_out_error(out, 2, "bad input %d", x);`
 * reads naturally. A message attached by a task that then returns 0 is
 * dropped. */
#ifndef CFUTURES_TASK_H
#define CFUTURES_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a running task writes its result. Valid only during the call. */
typedef struct cf_out cf_out;

typedef int cf_task_fn(const void *arg, size_t arg_len, cf_out *out);

/* Copy len bytes as the result (replacing any earlier one). data may be
 * NULL only when len is 0. Returns 0, CF_EINVAL or CF_ENOMEM. */
CF_API int cf_out_set(cf_out *out, const void *data, size_t len);

/* Make the result len bytes long and store in *buf where to write them
 * (valid until the task returns or calls cf_out_* again; for len 0 a
 * non-NULL pointer that must not be written). Returns 0; CF_EINVAL (out or
 * buf NULL), CF_ETOOBIG (len above 4 GiB - 1) or CF_ENOMEM, with *buf NULL
 * and the earlier result dropped. */
CF_API int cf_out_alloc(cf_out *out, size_t len, void **buf);

/* Attach an error code and a printf-style message (copied; fmt may be NULL)
 * and return code. code must be non-zero (0 is turned into CF_EINVAL). */
CF_API int cf_out_error(cf_out *out, int code, const char *fmt, ...) CF_PRINTF(3, 4);

/* Scalar results, stored in native byte order. Return 0 or an error. */
CF_API int cf_out_i64(cf_out *out, int64_t v);
CF_API int cf_out_f64(cf_out *out, double v);
CF_API int cf_out_ptr(cf_out *out, const void *p); /* meaningful in threads only */

/* The context pointer given to cf_submit_ex (cf_submit_opts.context), or
 * NULL (plain cf_submit, cf_map items). In a thread pool it is the pointer
 * itself. In a process pool it is the same address in the worker process,
 * whose memory is a copy of the parent's as it was when the pool was made:
 * it points at what was there then (a global, or memory allocated before
 * cf_process_pool_new), never at what the parent has written since, and
 * writes through it stay in the worker. */
CF_API void *cf_out_context(const cf_out *out);

/* True once cf_future_cancel() was called on this task's future while the
 * task was running. A running task is never interrupted (cancel() still
 * returns false); this is only a request, which a long task may poll to
 * stop early (returning an error code of its own, say). Cheap: one load.
 * Once true it stays true for this run. What the canceller wrote before
 * cancel() is visible to the task after it saw true. In a process pool
 * the request reaches the worker through shared memory. False for cf_map
 * items. */
CF_API bool cf_out_cancel_requested(const cf_out *out);

#ifdef __cplusplus
}
#endif
#endif
