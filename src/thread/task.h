/* The thread pool's task records (task.c): making them, recognising them,
 * and their per-future hook for an outside thread about to block. */
#ifndef CF_THREAD_TASK_H
#define CF_THREAD_TASK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/future.h"

struct cf__pool;

/* The hooks every task of every thread pool carries (task.c). */
extern const struct cf__future_ops cf__pool_task_ops;

/* A new PENDING task record of pool p (refs = 2, as cf__future_new_task),
 * carrying the pool's hook. NULL on ENOMEM. Any thread. Inline: it is on
 * every submit's path. */
static inline cf_future *cf__pool_task_new(struct cf__pool *p, cf_task_fn *fn, const void *arg,
                                           size_t len)
{
    return cf__future_new_task(fn, arg, len, &cf__pool_task_ops, p);
}
/* Is f a task of pool p (so one of p's workers, or a consumer p lets run
 * tasks, may run it)? Any thread. */
static inline bool cf__pool_owns_task(const struct cf__pool *p, const cf_future *f)
{
    return f->ops == &cf__pool_task_ops && cf__future_executor(f) == p && f->fn != NULL;
}
/* The calling thread (outside the pool) submitted f and had to wake parked
 * worker `woke` for it: remember it, so a wait on f that follows soon can
 * decide to sleep at once. */
void cf__pool_note_cold_submit(struct cf__pool *p, cf_future *f, int woke);
/* Before a pool's memory is freed: wait until no hook still reads a pool
 * (the pairing is in task.c). */
void cf__pool_hooks_quiesce(void);

/* shutdown(wait=true), after the workers were joined: wait until no
 * thread outside the pool runs one of its tasks, except those running on
 * the calling thread's own stack (a task that shuts its pool down). */
void cf__pool_outside_runs_wait(struct cf__pool *p);
/* destroy, after the joins: if the calling thread is running a task of p
 * as a waiting thread outside it, p must outlive that run: true, and the
 * end of the outermost such run frees p (cf__pool_free). Else false. */
bool cf__pool_free_after_runs(struct cf__pool *p);

/* Test points of run_awaited in a thread outside the pool (a test's hook
 * is called there in the tests' build only, CF_TEST_HOOKS): */
enum {
    CF__TEST_RA_LOOKED = 1, /* it saw f PENDING, holding hooks_running, before counting a run */
    CF__TEST_RA_START, /* it counted its run and let go of hooks_running: before the start CAS */
};
#ifdef CF_TEST_HOOKS
typedef void cf__test_run_awaited_fn(cf_future *f, int point);
extern _Atomic(cf__test_run_awaited_fn *) cf__test_run_awaited_hook;
#endif

#endif
