/* An event count with one futex word per waiter: lets idle threads sleep on
 * "some condition became true" without a lock and without lost wake-ups
 * (the two-phase wait of Dmitry Vyukov's eventcount), and lets a notifier
 * choose WHICH sleeper to wake (the thread pool prefers a worker on another
 * CPU for a submit, and the one on the caller's own CPU when the caller is
 * about to block on the result).
 *
 * Contract
 * - Waiter (owns one struct cf__ec_slot; only it calls these on it):
 *            cf__ec_prepare(ec, slot);  re-check the condition;
 *            if it holds: cf__ec_cancel(ec, slot);
 *            else cf__ec_wait(ec, slot, deadline).
 * - Notifier: make the condition true (publish the work), execute a seq_cst
 *   fence (or a seq_cst RMW, or liburcu's uatomic_xchg, a full barrier),
 *   then check cf__ec_waiters(ec) and call cf__ec_notify_slot on the slot(s)
 *   it chooses. Nothing makes a system call unless that slot's owner is
 *   between prepare and the end of wait.
 * - No lost wake-up: prepare stores PARKED into the slot and increments
 *   `waiters`, then executes a seq_cst fence before the waiter re-checks the
 *   condition. By the fence-fence rule, either the notifier's loads (after
 *   its fence) see both stores - `waiters` > 0 and the slot PARKED, so a
 *   notifier that scans every slot finds it and its CAS PARKED->NOTIFIED
 *   succeeds (the futex then returns at once, or is woken) or another
 *   notifier's did (that one wakes it) - or the waiter's re-check sees the
 *   work. A notifier that scans only some slots (a preference) is a hint,
 *   not part of this argument.
 * - What this does not cover: a notifier that skips the notify because
 *   it sees some other thread still looking for work (the thread pool's
 *   `searching` count) hands the duty to that thread, which is outside
 *   the event count. The pool closes that gap itself: every thread that
 *   stops looking decrements the count, fences, and looks at the work
 *   again - a parker through prepare's fence and re-check above, a thread
 *   that found work and was the last one looking through a fence of its
 *   own and a notify if work is queued (worker.c, "No lost wake-up").
 * - Any number of waiters (each on its own slot) and notifiers may run
 *   concurrently. Wait-free except the futex sleep itself. Spurious returns
 *   from wait are possible; callers loop.
 * - Layout: `waiters` has a cache line of its own; so does each slot (it is
 *   written by notifiers). */
#ifndef CF_EVENTCOUNT_H
#define CF_EVENTCOUNT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sync/cacheline.h"
#include "sync/futex.h"

/* Slot words. A notifier writes a tag >= CF__EC_NOTIFIED (the waiter
 * learns which from wait), e.g. to say why it was woken. */
enum { CF__EC_AWAKE = 0, CF__EC_PARKED = 1, CF__EC_NOTIFIED = 2 };

struct cf__eventcount {
    _Alignas(CF__CACHE_LINE) _Atomic uint32_t waiters; /* between prepare and end of wait */
    char pad_[CF__CACHE_LINE - sizeof(uint32_t)];
};
_Static_assert(sizeof(struct cf__eventcount) == CF__CACHE_LINE, "one cache line");

struct cf__ec_slot {
    _Alignas(CF__CACHE_LINE) _Atomic uint32_t word; /* the futex word: CF__EC_* */
    char pad_[CF__CACHE_LINE - sizeof(uint32_t)];
};
_Static_assert(sizeof(struct cf__ec_slot) == CF__CACHE_LINE, "one cache line");

void cf__ec_init(struct cf__eventcount *ec);
void cf__ec_slot_init(struct cf__ec_slot *s);
void cf__ec_prepare(struct cf__eventcount *ec, struct cf__ec_slot *s);
void cf__ec_cancel(struct cf__eventcount *ec, struct cf__ec_slot *s);
/* Sleep until the slot is notified, or the deadline; 0 or CF_ETIMEDOUT.
 * Ends the wait that prepare began. *tag: the notifier's tag, or
 * CF__EC_PARKED if the wait ended without a notification. */
int cf__ec_wait(struct cf__eventcount *ec, struct cf__ec_slot *s, cf__deadline deadline,
                uint32_t *tag);
/* Wake the slot's owner if it is parked and nobody woke it yet, handing it
 * `tag` (>= CF__EC_NOTIFIED); true if this call woke it. The caller has
 * fenced (contract). */
bool cf__ec_notify_slot(struct cf__ec_slot *s, uint32_t tag);

/* Cheap check for a notifier that has fenced: is anyone waiting? */
static inline uint32_t cf__ec_waiters(struct cf__eventcount *ec)
{
    /* Relaxed: the caller's seq_cst fence (contract) orders this load after
     * its publication of work. */
    return atomic_load_explicit(&ec->waiters, memory_order_relaxed);
}

/* Is the slot's owner parked and not yet notified? (a hint) */
static inline bool cf__ec_parked(struct cf__ec_slot *s)
{
    /* Relaxed: a hint; notify_slot's CAS decides. */
    return atomic_load_explicit(&s->word, memory_order_relaxed) == CF__EC_PARKED;
}

#endif
