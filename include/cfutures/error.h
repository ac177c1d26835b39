/* cfutures: the one table of error codes.
 *
 * Every library entry point that can fail returns an int: 0 on success, or
 * one of the negative CF_E* codes below. A task "raises" by returning any
 * non-zero int of its own; that code is never confused with these, because
 * result() reports a task failure as CF_ETASK and keeps the task's own code
 * for exception(). A call that fails changes nothing. */
#ifndef CFUTURES_ERROR_H
#define CFUTURES_ERROR_H

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cf_error {
    CF_OK = 0,
    CF_EINVAL = -1,     /* an argument is invalid (NULL, zero size, bad enum, NaN timeout) */
    CF_ENOMEM = -2,     /* out of memory */
    CF_ETIMEDOUT = -3,  /* the deadline passed first (a result, not a failure of the future) */
    CF_ECANCELLED = -4, /* the future was cancelled */
    CF_ETASK = -5,      /* the task failed: its code and message are in cf_future_exception() */
    CF_EBROKEN = -6,    /* the executor is broken (initializer failed, a worker died) */
    CF_ESHUTDOWN = -7,  /* the executor is shut down and takes no new work */
    CF_ESTATE = -8,     /* invalid state for this call (e.g. set_result on a done future) */
    CF_END = -9,   /* the end of an iteration (cf_map_next, cf_as_completed_next): not an error */
    CF_ESYS = -10, /* a system call failed (errno is preserved where it says more) */
    CF_ETOOBIG = -11, /* a length does not fit (argument or result larger than the pool accepts) */
    CF_ENOTSUP = -12, /* not supported by this executor or platform */
};

/* A short, static, human-readable name for any code above; for any other
 * value (a task's own code) "task error code N" style text is not produced:
 * it returns "unknown error". Never NULL. */
CF_API const char *cf_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
