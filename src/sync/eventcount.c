/* Event count with per-waiter futex words: see eventcount.h for the
 * contract and the fence pairing that rules out lost wake-ups. */
#include "sync/eventcount.h"

#include "sync/debug_yield.h"
#include "sync/fence.h"

#include "cfutures.h"

#ifdef CF_TSAN
_Atomic unsigned cf__tsan_fence_word;
#endif

void cf__ec_init(struct cf__eventcount *ec)
{
    atomic_init(&ec->waiters, 0);
}

void cf__ec_slot_init(struct cf__ec_slot *s)
{
    atomic_init(&s->word, CF__EC_AWAKE);
}

void cf__ec_prepare(struct cf__eventcount *ec, struct cf__ec_slot *s)
{
    /* Relaxed, both: ordered before the caller's re-check (and made visible
     * to notifiers that fenced after it) by the fence below. */
    atomic_store_explicit(&s->word, CF__EC_PARKED, memory_order_relaxed);
    atomic_fetch_add_explicit(&ec->waiters, 1, memory_order_relaxed);
    CF__YIELD_POINT(); /* debug builds: announced, not yet fenced */
    /* Seq_cst fence: orders our announcement (slot PARKED, waiters + 1)
     * before the caller's re-check of its condition. Pairs with the
     * notifier's fence between publishing work and loading `waiters` and
     * the slots (contract in eventcount.h). */
    CF__FENCE_SEQ_CST();
    CF__YIELD_POINT(); /* debug builds: a notifier may come before the re-check */
}

/* Leave the parked state; acquire: if a notifier's release CAS made it
 * NOTIFIED, what it published is visible to the caller's next look. */
static uint32_t unpark(struct cf__eventcount *ec, struct cf__ec_slot *s)
{
    uint32_t was = atomic_exchange_explicit(&s->word, CF__EC_AWAKE, memory_order_acquire);
    /* Relaxed: only a hint for notifiers (a stale non-zero costs a scan). */
    atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
    return was;
}

void cf__ec_cancel(struct cf__eventcount *ec, struct cf__ec_slot *s)
{
    (void)unpark(ec, s);
}

int cf__ec_wait(struct cf__eventcount *ec, struct cf__ec_slot *s, cf__deadline deadline,
                uint32_t *tag)
{
    int rc = 0;
    /* Relaxed: the futex compares the word again in the kernel; unpark's
     * exchange carries the order. */
    if (atomic_load_explicit(&s->word, memory_order_relaxed) == CF__EC_PARKED)
        rc = cf__futex_wait(&s->word, CF__EC_PARKED, deadline, false);
    uint32_t was = unpark(ec, s);
    if (tag) *tag = was;
    return rc == CF_ETIMEDOUT ? CF_ETIMEDOUT : 0;
}

bool cf__ec_notify_slot(struct cf__ec_slot *s, uint32_t tag)
{
    uint32_t v = CF__EC_PARKED;
    /* Relaxed pre-check: most slots are not parked; no RMW on their line. */
    if (atomic_load_explicit(&s->word, memory_order_relaxed) != CF__EC_PARKED) return false;
    CF__YIELD_POINT(); /* debug builds: seen parked, not yet claimed */
    /* Release: pairs with the acquire exchange in unpark, so the woken
     * thread sees what we published before notifying. One notifier wins. */
    if (!atomic_compare_exchange_strong_explicit(&s->word, &v, tag, memory_order_release,
                                                 memory_order_relaxed))
        return false;
    CF__YIELD_POINT(); /* debug builds: notified, futex not yet woken */
    cf__futex_wake(&s->word, 1, false);
    return true;
}
