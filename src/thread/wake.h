/* The thread pool's wake policy (wake.c): whom to wake when work appears,
 * and whether a thread about to block on a task should sleep at once.
 * Every function is called after the caller made its work visible and
 * fenced (worker.c's no-lost-wake-up contract); none of them is needed for
 * that argument's correctness except that cf__pool_wake_one tries every
 * parked worker before it gives up. Callable from any thread. */
#ifndef CF_THREAD_WAKE_H
#define CF_THREAD_WAKE_H

#include <stdbool.h>

#include "sync/eventcount.h"

struct cf__pool;

/* The tag of a wake by a thread running on the woken worker's own CPU: the
 * woken worker hands the searching role on when it has run what it was
 * woken for (worker.c, idle). */
#define CF__WAKE_LOCAL (CF__EC_NOTIFIED + 1)

/* Wake one parked worker; returns which (-1: none was parked). */
int cf__pool_wake_one(struct cf__pool *p);
/* Publish-then-wake: after work became visible (the caller fenced), wake a
 * parked worker if nobody is searching. Returns the worker woken, or -1. */
int cf__pool_wake_if_idle(struct cf__pool *p);
/* A submitter's backlog went untaken for a while (subslot.h,
 * cf__subslot_stalled): wake one parked worker whatever `searching` says,
 * preferring one that is not pinned to the caller's CPU. Returns the
 * worker woken, or -1. No fence needed: an extra wake-up. */
int cf__pool_wake_for_backlog(struct cf__pool *p);
/* Wake every parked worker (shutdown, broken); the caller has fenced. */
void cf__pool_wake_all(struct cf__pool *p);
/* An outside thread is about to block on a task of p that is still PENDING
 * and whose submit had to wake a parked worker (woke_local: the one pinned
 * to the caller's CPU). True if the caller should sleep at once instead of
 * spinning: nobody is searching, and the worker on the caller's CPU was
 * woken (by the submit, or now), so it runs as soon as the caller sleeps. */
bool cf__pool_wake_for_waiter(struct cf__pool *p, bool woke_local);
/* Is `worker` the one pinned to the calling thread's CPU? */
bool cf__pool_is_callers_cpu(struct cf__pool *p, int worker);

#endif
