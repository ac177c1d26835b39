/* The baselines cfutures is measured against in the same run:
 *  - bl_pool: a plain mutex+condvar thread pool (one locked FIFO, workers
 *    sleep on one condvar), the pool people write by hand;
 *  - bl_future: a mutex+condvar future (result inline, up to 64 bytes);
 *  - bl_fp_pool (baseline_forkpipe.c): a fork+pipes process pool whose
 *    futures are the same bl_future.
 * Deliberately simple; they are not tuned beyond the obvious. A task that
 * blocks on another future holds its worker, so fib would deadlock here. */
#ifndef CFB_BASELINE_POOL_H
#define CFB_BASELINE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define BL_RESULT_MAX 64

/* A baseline task: read arg, write at most BL_RESULT_MAX bytes to res and
 * their number to *res_len (0 on entry); the return value is the task's
 * code (0 = success). */
typedef int bl_fn(const void *arg, size_t arg_len, void *res, size_t *res_len);

struct bl_future;
struct bl_pool;
struct bl_waiter;

/* ---- futures (one reference for the caller of bl_future_new) ---- */
struct bl_future *bl_future_new(int refs);
void bl_future_complete(struct bl_future *f, int rc, const void *data, size_t len);
/* Wait for f; returns the task's code; *data and *len get the result (valid while
 * the caller holds its reference). */
int bl_future_result(struct bl_future *f, const void **data, size_t *len);
bool bl_future_done(struct bl_future *f);
void bl_future_release(struct bl_future *f);

/* as_completed: a waiter that every watched future reports to when done. */
struct bl_waiter *bl_waiter_new(size_t n); /* room for n futures */
void bl_waiter_watch(struct bl_waiter *w, struct bl_future *f);
struct bl_future *bl_waiter_next(struct bl_waiter *w); /* blocks */
void bl_waiter_free(struct bl_waiter *w);

/* ---- the mutex+condvar thread pool ---- */
struct bl_pool *bl_pool_new(int workers);
/* NULL on out of memory. The caller gets one reference. */
struct bl_future *bl_submit(struct bl_pool *p, bl_fn *fn, const void *arg, size_t arg_len);
void bl_pool_free(struct bl_pool *p); /* runs what is queued, joins */

/* ---- the fork+pipes process pool ---- */
struct bl_fp_pool;
struct bl_fp_pool *bl_fp_new(int workers);
struct bl_future *bl_fp_submit(struct bl_fp_pool *p, bl_fn *fn, const void *arg, size_t arg_len);
void bl_fp_free(struct bl_fp_pool *p); /* closes the pipes, reaps the workers */

#endif
