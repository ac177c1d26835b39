/* An event count: lets idle threads sleep on "some condition became true"
 * without a lock and without lost wake-ups (the two-phase wait of Dmitry
 * Vyukov's eventcount, on a Linux futex).
 *
 * Contract
 * - Waiter:  key = cf__ec_prepare(ec);  re-check the condition;
 *            if it holds: cf__ec_cancel(ec);  else cf__ec_wait(ec, key, dl).
 * - Notifier: make the condition true (publish the work), then
 *            cf__ec_notify(ec, n). notify makes no system call when nobody
 *            is between prepare and the end of wait.
 * - No lost wake-up: prepare increments `waiters` and then executes a
 *   seq_cst fence before the waiter re-checks the condition; a notifier must
 *   execute a seq_cst fence (or a seq_cst RMW, or liburcu's uatomic_xchg,
 *   which is a full barrier) between publishing its work and calling
 *   notify, which loads `waiters`. By the fence-fence rule, either the
 *   notifier sees waiters > 0 (and bumps the epoch, so a wait with an older
 *   key returns at once) or the waiter's re-check sees the work.
 * - Any number of waiters and notifiers may run concurrently. Wait-free
 *   except the futex sleep itself. Spurious returns from wait are possible;
 *   callers loop.
 * - Layout: the two words share one cache line of their own. */
#ifndef CF_EVENTCOUNT_H
#define CF_EVENTCOUNT_H

#include <stdatomic.h>
#include <stdint.h>

#include "deque.h" /* CF__CACHE_LINE */
#include "futex.h"

struct cf__eventcount {
    _Alignas(CF__CACHE_LINE) _Atomic uint32_t epoch; /* the futex word */
    _Atomic uint32_t waiters;                       /* between prepare and end of wait */
    char pad_[CF__CACHE_LINE - 2 * sizeof(uint32_t)];
};
_Static_assert(sizeof(struct cf__eventcount) == CF__CACHE_LINE, "one cache line");

void cf__ec_init(struct cf__eventcount *ec);
uint32_t cf__ec_prepare(struct cf__eventcount *ec);
void cf__ec_cancel(struct cf__eventcount *ec);
/* Sleep until notified after `key` was taken, or the deadline; 0 or
 * CF_ETIMEDOUT. Ends the wait that prepare began. */
int cf__ec_wait(struct cf__eventcount *ec, uint32_t key, cf__deadline deadline);
/* Wake up to n waiters (INT32_MAX: all). The caller has fenced (contract).
 * Returns the number of threads the futex woke. */
int cf__ec_notify(struct cf__eventcount *ec, int n);

/* Cheap check for a notifier that has fenced: is anyone waiting? */
static inline uint32_t cf__ec_waiters(struct cf__eventcount *ec)
{
    /* Relaxed: the caller's seq_cst fence (contract) orders this load after
     * its publication of work. */
    return atomic_load_explicit(&ec->waiters, memory_order_relaxed);
}

#endif
