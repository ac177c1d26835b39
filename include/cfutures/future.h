/* cfutures: futures.
 *
 * A future is the eventual outcome of one task. Its state is one atomic word
 * (PENDING, RUNNING, CANCELLED, FINISHED); waiting is a futex wait on that
 * word, after a short spin, and costs nothing unless someone sleeps.
 *
 * Ownership: every function that hands out a cf_future* (cf_submit,
 * cf_submit_ex with out, cf_future_new, cf_future_retain,
 * cf_channel_drain) gives the caller one reference, to be
 * dropped with cf_future_release(). Pointers handed out by result() and
 * exception() stay valid while the caller holds a reference.
 *
 * Thread safety: every function here may be called from any thread, on the
 * same future, at the same time, including from inside a done-callback. */
#ifndef CFUTURES_FUTURE_H
#define CFUTURES_FUTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_future cf_future;

/* Timeouts are seconds as a double: negative waits forever, 0 polls, NaN is
 * CF_EINVAL. The clock is monotonic. */
#define CF_FOREVER (-1.0)
#define CF_POLL 0.0

/* The result of a successful task: *data and *len (either may be NULL).
 * Returns 0; CF_ETASK if the task failed (see cf_future_exception);
 * CF_ECANCELLED; CF_ETIMEDOUT; CF_EBROKEN if the executor failed the future
 * (cf_future_exception names the cause); CF_EINVAL. For a zero-length
 * result *data is a valid non-NULL pointer.
 * Without a timeout, a thread outside the pool may run a thread-pool task
 * that nobody has started itself, in this call, while every worker is busy
 * (not with an initializer or CFUTURES_WAIT_HELP=0; docs/SEMANTICS.md,
 * item 22c). */
CF_API int cf_future_result(cf_future *f, double timeout, const void **data, size_t *len);

/* Typed helpers: CF_EINVAL if the result has another size. */
CF_API int cf_future_result_i64(cf_future *f, double timeout, int64_t *v);
CF_API int cf_future_result_f64(cf_future *f, double timeout, double *v);
CF_API int cf_future_result_ptr(cf_future *f, double timeout, void **p);

/* The failure, if any: returns 0 once the future is done and sets *code to
 * the task's own code (0 on success) and *msg to its message (NULL if none).
 * For a future failed by the executor, *code is CF_EBROKEN and *msg names
 * the cause (e.g. the dead worker's pid and signal). Returns CF_ECANCELLED,
 * CF_ETIMEDOUT or CF_EINVAL without touching the outputs. */
CF_API int cf_future_exception(cf_future *f, double timeout, int *code, const char **msg);

/* Cancel a PENDING future: true, and every waiter (result, cf_wait,
 * cf_as_completed) wakes at once and the callbacks run in this thread.
 * False if it is RUNNING or FINISHED; true again (nothing re-run) if it was
 * already cancelled. A running task is never interrupted; it can see the
 * request with cf_out_cancel_requested (task.h). */
CF_API bool cf_future_cancel(cf_future *f);
CF_API bool cf_future_cancelled(const cf_future *f);
CF_API bool cf_future_running(const cf_future *f);
CF_API bool cf_future_done(const cf_future *f); /* FINISHED or CANCELLED */

/* Run cb(f, ud) once when f is done, in the thread that completes or
 * cancels it, after every waiter has been released; callbacks added before
 * completion run in registration order. On a done future cb runs at once in
 * the caller, before this returns. Returns 0, CF_EINVAL or CF_ENOMEM; if it
 * fails, cb is never called. cb may call any cfutures function. */
typedef void cf_done_fn(cf_future *f, void *ud);
CF_API int cf_future_add_done_callback(cf_future *f, cf_done_fn *cb, void *ud);

CF_API cf_future *cf_future_retain(cf_future *f);
CF_API void cf_future_release(cf_future *f); /* NULL is a no-op */

/* For people who write executors, and for tests (as in CPython). */
/* A PENDING future with one reference in *out: 0, CF_EINVAL (out NULL) or
 * CF_ENOMEM (*out is then NULL). */
CF_API int cf_future_new(cf_future **out);
/* PENDING -> RUNNING: returns 0. On a cancelled future: CF_ECANCELLED (the
 * caller must not run the work). Otherwise CF_ESTATE. */
CF_API int cf_future_set_running_or_notify_cancel(cf_future *f);
/* PENDING or RUNNING -> FINISHED. CF_ESTATE (first outcome kept) if done. */
CF_API int cf_future_set_result(cf_future *f, const void *data, size_t len);
/* code must be non-zero; msg is copied and may be NULL. */
CF_API int cf_future_set_exception(cf_future *f, int code, const char *msg);
/* PENDING or RUNNING -> FINISHED as failed by the executor, not by the task
 * (a lost worker, a broken transport): cf_future_result then returns
 * CF_EBROKEN and cf_future_exception gives code CF_EBROKEN and msg (copied;
 * may be NULL), as for a future the library's own pools break. CF_ESTATE if
 * done, CF_EINVAL, CF_ENOMEM. */
CF_API int cf_future_set_broken(cf_future *f, const char *msg);

#ifdef __cplusplus
}
#endif
#endif
