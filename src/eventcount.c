/* Event count on a futex: see eventcount.h for the contract and the fence
 * pairing that rules out lost wake-ups. */
#include "eventcount.h"

#include "fence.h"

#include "cfutures.h"

#ifdef CF_TSAN
_Atomic unsigned cf__tsan_fence_word;
#endif

void cf__ec_init(struct cf__eventcount *ec)
{
    atomic_init(&ec->epoch, 0);
    atomic_init(&ec->waiters, 0);
}

uint32_t cf__ec_prepare(struct cf__eventcount *ec)
{
    atomic_fetch_add_explicit(&ec->waiters, 1, memory_order_relaxed);
    /* Seq_cst fence: orders our announcement (waiters + 1) before both the
     * epoch load below and the caller's re-check of its condition. Pairs
     * with the notifier's fence between publishing work and loading
     * `waiters` (contract in eventcount.h). */
    CF__FENCE_SEQ_CST();
    /* Relaxed: ordered by the fence above; a notify that bumps the epoch
     * after this load makes the futex wait return at once. */
    return atomic_load_explicit(&ec->epoch, memory_order_relaxed);
}

void cf__ec_cancel(struct cf__eventcount *ec)
{
    /* Relaxed: only a hint for notifiers (a stale non-zero costs one
     * unnecessary wake). */
    atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
}

int cf__ec_wait(struct cf__eventcount *ec, uint32_t key, cf__deadline deadline)
{
    int rc = 0;
    /* Acquire: pairs with the release increment in notify, so what the
     * notifier published is visible when we see the new epoch. */
    if (atomic_load_explicit(&ec->epoch, memory_order_acquire) == key)
        rc = cf__futex_wait(&ec->epoch, key, deadline, false);
    atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
    return rc == CF_ETIMEDOUT ? CF_ETIMEDOUT : 0;
}

int cf__ec_notify(struct cf__eventcount *ec, int n)
{
    if (cf__ec_waiters(ec) == 0)
        return 0;
    /* Release: pairs with the acquire load in wait; a waiter whose key is
     * older now fails its futex compare and returns. */
    atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_release);
    return cf__futex_wake(&ec->epoch, n, false);
}
