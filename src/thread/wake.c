/* The thread pool's wake policy: which parked worker a waker picks, and
 * when an outside thread about to block on its task sleeps at once.
 *
 * Contract
 * - Called after the caller published work and fenced (worker.c states the
 *   no-lost-wake-up protocol these functions end). The one property that
 *   argument needs from here: cf__pool_wake_one tries every parked
 *   worker's slot before it reports that none was parked. Everything else
 *   here is a latency choice.
 * - Lock-free, any thread, any number at once: each wake is one CAS on the
 *   woken worker's own parking slot (eventcount.h), so two wakers never
 *   wake the same worker twice for one park.
 * - Whom to wake: each worker parks on a futex word of its own, so a waker
 *   chooses. cf__pool_wake_one prefers the worker pinned to the waker's
 *   own CPU: an outside thread that submits and then blocks on the result
 *   hands it that CPU at once, while a worker on an idle CPU starts tens of
 *   microseconds later in a VM (its CPU must be woken, and the waker pays
 *   for the cross-CPU wake-up). Next the worker that parked last (warm),
 *   then any. The price: one task submitted by a thread that keeps
 *   computing shares that thread's CPU (more tasks spread: the woken
 *   worker's batch take wakes another). When the submitter then blocks on
 *   that task while it is still PENDING and nobody is searching
 *   (cf__pool_wake_for_waiter, from the futures' on_wait hook), it sleeps
 *   at once instead of spinning (the woken worker needs its CPU); if the
 *   worker woken was elsewhere, it also wakes its own CPU's worker if that
 *   one is parked. Latency choices, not part of worker.c's argument.
 * - A backlog that nobody takes (cf__pool_wake_for_backlog): a submitter
 *   whose slot kept growing for CF__SUBSLOT_STALL_EVERY pushes with nothing
 *   taken wakes a parked worker whatever `searching` says. The searcher it
 *   saw is not running: typically the worker pinned to the submitter's own
 *   CPU, which the submitter itself keeps off that CPU until it blocks
 *   (milliseconds of a burst). It prefers a worker on another CPU. An
 *   extra wake-up only: it removes none of worker.c's.
 * Reads of the pool: `searching`, `last_parked` and the event count (hints,
 * relaxed), the read-only CPU-to-worker map. Nothing is written but the
 * woken slot. */
#include <sched.h>

#include "sys/probes.h"
#include "thread/thread_pool.h"
#include "thread/wake.h"

/* The worker pinned to OS CPU `cpu`, or -1. */
static int worker_on_cpu(const struct cf__pool *p, int cpu)
{
    return cpu >= 0 && cpu < p->n_cpu_worker ? p->cpu_worker[cpu] : -1;
}

/* Preference: the worker pinned to the caller's CPU, then the one that
 * parked last (warmest), then any (the contract at the top says why).
 * Every slot is tried before giving up, which is what the no-lost-wake-up
 * argument needs. */
int cf__pool_wake_one(struct cf__pool *p)
{
    if (cf__ec_waiters(&p->ec) == 0) return -1;
    int mine = worker_on_cpu(p, sched_getcpu());
    /* Relaxed: a hint. */
    int last = atomic_load_explicit(&p->last_parked, memory_order_relaxed);
    int woke = -1;
    if (mine >= 0 && cf__ec_notify_slot(&p->w[mine].park, CF__WAKE_LOCAL)) woke = mine;
    else if (last >= 0 && last < p->n && last != mine &&
             cf__ec_notify_slot(&p->w[last].park, CF__EC_NOTIFIED))
        woke = last;
    for (int i = 0; woke < 0 && i < p->n; i++)
        if (i != mine && i != last && cf__ec_notify_slot(&p->w[i].park, CF__EC_NOTIFIED)) woke = i;
    /* "notify" (how many were woken), not "wake": one probe name keeps
     * one argument list, and a constant argument would break perf probe. */
    if (woke >= 0) CF__PROBE1(notify, 1);
    return woke;
}

int cf__pool_wake_for_backlog(struct cf__pool *p)
{
    if (cf__ec_waiters(&p->ec) == 0) return -1;
    int mine = worker_on_cpu(p, sched_getcpu());
    for (int i = 0; i < p->n; i++)
        if (i != mine && cf__ec_notify_slot(&p->w[i].park, CF__EC_NOTIFIED)) return i;
    /* Only ours is parked: it shares our CPU, but it runs when we block or
     * the scheduler shares the CPU, and the batch it takes wakes no one. */
    if (mine >= 0 && cf__ec_notify_slot(&p->w[mine].park, CF__EC_NOTIFIED)) return mine;
    return -1;
}

void cf__pool_wake_all(struct cf__pool *p)
{
    for (int i = 0; i < p->n; i++) cf__ec_notify_slot(&p->w[i].park, CF__EC_NOTIFIED);
}

int cf__pool_wake_if_idle(struct cf__pool *p)
{
    /* Relaxed: ordered after the caller's publication by its fence (see
     * the contract at the top). A searcher will find the work. */
    if (atomic_load_explicit(&p->searching, memory_order_relaxed) != 0) return -1;
    return cf__pool_wake_one(p);
}

bool cf__pool_wake_for_waiter(struct cf__pool *p, bool woke_local)
{
    /* Relaxed, both: a latency hint, not part of any correctness argument
     * (the submit already woke a worker). Someone searching will take the
     * task soon: spin, as in a hot round trip. */
    if (atomic_load_explicit(&p->searching, memory_order_relaxed) != 0) return false;
    if (woke_local) return true;
    if (cf__ec_waiters(&p->ec) == 0) return false;
    int mine = worker_on_cpu(p, sched_getcpu());
    return mine >= 0 && cf__ec_notify_slot(&p->w[mine].park, CF__WAKE_LOCAL);
}

bool cf__pool_is_callers_cpu(struct cf__pool *p, int worker)
{
    return worker >= 0 && worker == worker_on_cpu(p, sched_getcpu());
}
