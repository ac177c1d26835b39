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

#ifdef __cplusplus
}
#endif
#endif
