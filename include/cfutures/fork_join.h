/* cfutures: scoped fork-join, next to the future API.
 *
 * For recursive divide and conquer inside a thread pool, where a future per
 * child costs too much. A child is a frame on the forking function's own
 * stack: forking pushes it onto the calling worker's deque, where idle
 * workers may steal it; joining takes it back and runs it in the caller's
 * thread when nobody did. That path allocates nothing and makes no atomic
 * read-modify-write. A stolen child runs on the thief; the join then runs
 * other work (first the thief's own queued work) until the thief is done.
 *
 *   static int fib(void *arg) {
 *       struct fib *a = arg;                     // {n, result}
 *       if (a->n < 2) { a->result = a->n; return 0; }
 *       struct fib x = {a->n - 1, 0}, y = {a->n - 2, 0};
 *       cf_fj_scope s;
 *       cf_fj_child c;
 *       cf_fj_begin(&s);
 *       cf_fj_fork(&s, &c, fib, &x);             // may run elsewhere
 *       int rc = fib(&y);                        // meanwhile, here
 *       int rc2 = cf_fj_end(&s);                 // joins x (rc of its fn)
 *       a->result = x.result + y.result;
 *       return rc ? rc : rc2;
 *   }
 *   ... int rc = cf_fj_run(pool, fib, &root);    // from any thread
 *
 * The rules (the scope makes them hard to break; builds with debug checks
 * - CF_DEBUG_CHECKS, or without NDEBUG - abort with a message naming the
 * call when one is broken; a release build does not check them and
 * breaking one there is undefined behaviour):
 * - A scope (cf_fj_scope) and its children (cf_fj_child) live in the
 *   caller's frame, usually as locals. Begin the scope, fork into it, and
 *   end it before the function returns: cf_fj_end joins every child not yet
 *   joined. The child's frame and everything its fn reads must stay valid
 *   until it is joined.
 * - One thread: begin, fork, join and end on the same thread. A scope
 *   cannot be handed to a child or another thread.
 * - LIFO: cf_fj_join joins the newest child of the scope not yet joined,
 *   so there is nothing to get out of order; scopes nest like blocks - a
 *   scope begun inside another (in a called function, or inside a child's
 *   fn) must end before the outer one is used again.
 * - The child's fn must not call cf_fj_* on the caller's scope (it may open
 *   scopes of its own: that is how recursion works).
 *
 * Where children run:
 * - On a pool worker (inside a task, or inside cf_fj_run): children are
 *   pushed on that worker's deque and may run on any worker of its pool.
 * - On any other thread (no pool): cf_fj_fork runs the child at once, in
 *   the caller, and cf_fj_join returns its code: the same program, serial.
 *   cf_fj_run(ex, ...) enters a thread pool once, so the whole tree runs
 *   in parallel.
 *
 * Errors: a child's fn returns 0 or its own non-zero code, and that code is
 * what cf_fj_join returns for it. A child that was queued when
 * cf_executor_shutdown(..., cancel_futures = true) emptied the queues does
 * not run; its join returns CF_ECANCELLED. Forking cannot fail: when the
 * worker's deque cannot grow (out of memory) the child runs at once.
 *
 * Waiting: a join whose child was stolen runs other tasks of the pool on
 * this stack meanwhile (the thief's queued work first), within the same
 * bounds as a task waiting on a future (docs/ARCHITECTURE.md), and sleeps
 * when there is nothing to run. */
#ifndef CFUTURES_FORK_JOIN_H
#define CFUTURES_FORK_JOIN_H

#include "export.h"
#include "executor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A child's work: 0 on success, else its own error code. */
typedef int cf_fj_fn(void *arg);

/* Opaque: the library's, written only through the calls below. */
typedef struct cf_fj_scope {
    void *opaque_[4];
} cf_fj_scope;
typedef struct cf_fj_child {
    void *opaque_[8];
} cf_fj_child;

/* Open scope s in the calling thread. */
CF_API void cf_fj_begin(cf_fj_scope *s);

/* Make c a child of s that runs fn(arg), here or on another worker, before
 * s's next join reaches it. c must stay untouched until then. */
CF_API void cf_fj_fork(cf_fj_scope *s, cf_fj_child *c, cf_fj_fn *fn, void *arg);

/* Join the newest child of s not yet joined: when this returns, its fn has
 * returned (its writes are visible here). Returns what fn returned, or
 * CF_ECANCELLED (above). With no child left: 0. */
CF_API int cf_fj_join(cf_fj_scope *s);

/* Join every child of s not yet joined (newest first) and close s.
 * Returns the first non-zero code among those joins, else 0. */
CF_API int cf_fj_end(cf_fj_scope *s);

/* Run fn(arg) as the root of a fork-join tree on thread pool ex and wait
 * for it: at once, in the caller, when the caller is one of ex's workers;
 * else as one task of ex (the caller blocks in the wait; from a worker of
 * another pool it helps that pool meanwhile). Returns what fn returned, or
 * the error of the submit or the wait (CF_EINVAL for a NULL ex or fn,
 * CF_ESHUTDOWN, CF_EBROKEN, CF_ENOMEM, CF_ENOTSUP as cf_submit). */
CF_API int cf_fj_run(cf_executor *ex, cf_fj_fn *fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
