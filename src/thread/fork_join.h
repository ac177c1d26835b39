/* Scoped fork-join (fork_join.c): what the worker loop needs to know about
 * the child frames that share its deque with future records, and the two
 * worker.c functions a join that waits uses to run other work. */
#ifndef CF_THREAD_FORK_JOIN_H
#define CF_THREAD_FORK_JOIN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/future.h"

struct cf__worker;

/* A deque item is a future record (a cf_future *, at least 8-byte aligned)
 * or a fork-join child frame, tagged with bit 0 set. */
#define CF__FJ_TAG ((uintptr_t)1)
static inline bool cf__fj_is_frame(const void *item)
{
    return ((uintptr_t)item & CF__FJ_TAG) != 0;
}

/* A worker (w) took a tagged frame from a deque, by stealing it or by
 * popping it while helping a wait: run it here and publish its completion
 * to the joining thread (fork_join.c). */
void cf__fj_run_taken(struct cf__worker *w, void *item);
/* Shutdown with cancel_futures took a tagged frame from a deque: complete
 * it without running it; its join returns CF_ECANCELLED. Any thread. */
void cf__fj_cancel_taken(void *item);

/* Is f the root task of a cf_fj_run from outside the pool? A thread
 * outside the pool that waits for it must not run it: there its forks
 * would run inline, the whole computation serially (task.c). */
bool cf__fj_is_root(const cf_future *f);

/* worker.c: run one item taken from a deque (a future or a frame). */
void cf__worker_run(struct cf__worker *w, void *item);
/* worker.c: one look for any work (own deque, injection queues, other
 * deques) for a waiting join; true if it ran something. */
bool cf__worker_help_any(struct cf__worker *w);

/* Test points in fork_join.c (a hook only in the tests' build, nothing in
 * the shipped library): the owner is about to take child c back (JOIN),
 * and found it taken by another thread, before it waits (TAKEN). */
enum { CF__TEST_FJ_JOIN = 1, CF__TEST_FJ_TAKEN = 2 };
#ifdef CF_TEST_HOOKS
typedef void cf__test_fj_hook_fn(int point, const void *child);
extern _Atomic(cf__test_fj_hook_fn *) cf__test_fj_hook;
#endif

#endif
