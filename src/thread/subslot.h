/* The thread pool's outside-submitter slots: a thread that is not one of
 * the pool's workers submits into an array ring of its own (its slot), and
 * workers take from the ring's old end: they reserve a batch per CAS of
 * `head` and take reserved tasks one at a time (or a batch) per CAS of
 * `taken`, so tasks are taken in submission order. An array
 * instead of the injection queue's linked list: the producer's stores are
 * sequential, the takers read consecutive pointers (no chase through cold
 * records) and take bounded batches (no million-entry splice into one
 * deque for the others to fight over).
 *
 * Invariants (subslot.c states the protocol and the proof)
 * - One producer per slot at a time: the thread that owns it (claimed under
 *   the registry lock, released when the thread exits or evicts it from its
 *   small per-thread cache). Only the owner writes `tail`, the ring's items
 *   and the producer line. Any number of takers CAS `head` and `taken`.
 * - Two indices on the takers' side: `head` (reserved: a taker moves it a
 *   batch at a time, and the producer reads it after every push) and
 *   `taken` (taken: a taker moves it past the tasks it runs, oldest first,
 *   one at a time when the start order matters; the producer reads it only
 *   when its ring may be full or empty). taken <= head <= tail; the items
 *   of indices [taken, tail) are queued, in submission order; index i lives
 *   at ring->item[i & mask] of every ring that was current while i was
 *   queued. Indices are 64-bit, never wrap. Reserving takes nothing: any
 *   taker takes reserved tasks, so the order in which tasks are taken is
 *   the order of `taken`, whoever reserved them, and the takers' per-task
 *   CAS is on a line the producer does not read on every push.
 * - The producer writes item[t & mask] only when t - taken_seen <= mask,
 *   taken_seen <= taken: the item it overwrites was taken, and a taker
 *   that read it late loses its CAS (taken moved past that index).
 * - A taker takes [c, c + k) with one CAS of taken from c (c + k <= head);
 *   whatever it read from the ring is valid if and only if that CAS
 *   succeeds.
 * - A full ring is replaced by one twice as large (up to
 *   CF__SUBSLOT_CAP_MAX; beyond, the submit uses the injection queue), the
 *   queued pointers copied; a push that finds the slot empty (taken_seen ==
 *   tail, exact: taken_seen <= taken <= tail) goes back to the smallest
 *   ring, so a burst leaves no large ring cycling through cold lines. A
 *   ring no longer current is kept, not freed, until the pool is freed (a
 *   taker may still read it), and is used again by a later growth: at
 *   most one ring of each size, less than twice the largest in all. A
 *   taker that read a stale ring loses its CAS: the producer changes
 *   rings only when the slot is empty or after copying every index from
 *   taken_seen on, so a ring loaded after head (whose reserver loaded
 *   tail) holds every index below head that is still queued.
 * - Bit i of `active` is set whenever slot i may hold items that no taker
 *   has seen (set by the producer after its fence when its push found the
 *   slot empty; cleared by a worker about to park that found the slot
 *   empty, which then re-checks and sets it back if an item arrived). Workers look only at
 *   slots whose bit is set: one load for all 64 slots, however many
 *   threads ever submitted. Whoever must not miss an item (a parker's
 *   re-check, the exit check, the last searcher's look) scans every slot.
 * - The stall look (cf__subslot_stalled) is the producer's alone: every
 *   CF__SUBSLOT_STALL_EVERY pushes it reads `taken` (relaxed) and compares
 *   it with its last look. It orders nothing and decides only whether the
 *   submitter makes an extra wake-up (wake.c); no item is read through it.
 * - Memory: slots live until the pool is freed (a slot released by an
 *   exiting thread is claimed again by the next new submitter, its queued
 *   items still taken by workers). The per-thread cache names a pool by
 *   its registry and a unique id, so an entry for a freed pool is never
 *   used; a thread's exit releases its slots under the registry lock, only
 *   for pools still registered. */
#ifndef CF_THREAD_SUBSLOT_H
#define CF_THREAD_SUBSLOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sync/cacheline.h"
#include "core/future.h"

#define CF__SUBSLOT_MAX 64                     /* slots per pool (bits of `active`) */
#define CF__SUBSLOT_CAP0 256                   /* a new slot's ring */
#define CF__SUBSLOT_CAP_MAX ((int64_t)1 << 16) /* largest ring (512 KiB of pointers) */
#define CF__SUBSLOT_TAKE_MAX 32                /* most tasks one take moves */
#define CF__SUBSLOT_STALL_EVERY 256            /* pushes between stall looks */

#define CF__SUBSLOT_SIZES 9 /* ring sizes CAP0 << 0 .. CAP0 << 8 = CAP_MAX */

struct cf__subslot_ring {
    int64_t mask;                /* capacity - 1 */
    _Atomic(cf_future *) item[]; /* atomics: a late taker may read an item
                                         the producer overwrites; its CAS fails */
};

struct cf__subslot {
    /* Takers CAS it: reserved up to here, a batch at a time. */
    _Alignas(CF__CACHE_LINE) _Atomic int64_t head;
    /* Takers CAS it: taken up to here, one task (or a batch) at a time. */
    _Alignas(CF__CACHE_LINE) _Atomic int64_t taken;
    /* Written by the producer, read by takers. */
    _Alignas(CF__CACHE_LINE) _Atomic int64_t tail;
    _Atomic(struct cf__subslot_ring *) ring;
    /* The producer's (owner's) line. */
    _Alignas(CF__CACHE_LINE) int64_t head_seen; /* a head value it read (<= head) */
    int64_t taken_seen;                         /* a taken value it read (<= taken) */
    int64_t stall_at;    /* the tail at which the producer next looks for a stall */
    int64_t stall_taken; /* the taken value it read at its last look */
    int size;            /* rings[size] is current */
    struct cf__subslot_ring *rings[CF__SUBSLOT_SIZES]; /* freed with the slot */
    /* 1 while the owner is inside a submit to the pool (thread_pool.c,
     * submit_begin): the pool is not freed under it. */
    _Atomic uint32_t submitting;
    bool owned;  /* under the registry lock */
    bool orphan; /* its pool was freed while a thread owned it: that
                    thread frees it (subslot.c, cf__subslots_destroy) */
    int index;   /* its bit in `active` */
};
_Static_assert(sizeof(struct cf__subslot) % CF__CACHE_LINE == 0, "whole lines");

/* A pool's slots. */
struct cf__subslots {
    /* Bit i: slot i may hold items (a hint kept as the contract says). */
    _Alignas(CF__CACHE_LINE) _Atomic uint64_t active;
    /* Slots made so far; tab[0, n) are set (release-published). */
    _Alignas(CF__CACHE_LINE) _Atomic int n;
    _Atomic(struct cf__subslot *) tab[CF__SUBSLOT_MAX];
    /* Registry (subslot.c), under its lock. */
    uint64_t uid;
    struct cf__subslots *reg_next, *reg_prev;
};

/* Is some slot's owner inside a submit (its `submitting` set)? Acquire
 * loads: a false answer orders the ends of those submits before the
 * caller's next accesses (thread_pool.c, submits_quiesce). */
bool cf__subslots_submitting(struct cf__subslots *ss);

/* Register a pool's slots (empty). 0. Thread-safe. */
void cf__subslots_init(struct cf__subslots *ss);
/* Unregister and free every slot; no producer or taker may run (the
 * workers are joined, and the user frees a pool nobody submits to). */
void cf__subslots_destroy(struct cf__subslots *ss);

/* The calling thread's slot in ss (claimed on first use), or NULL: every
 * slot is owned by a live thread, or out of memory (the caller then uses
 * the injection queue). */
struct cf__subslot *cf__subslot_mine(struct cf__subslots *ss);

/* Producer: queue f. 1 if the slot held nothing a taker had not taken
 * just before (the caller must then fence and run the wake-up check),
 * 0 if not, -1 if the ring is full at its largest size or cannot grow
 * (nothing was queued: use the injection queue). The publication is a
 * seq_cst store (subslot.c says why). */
int cf__subslot_push(struct cf__subslots *ss, struct cf__subslot *s, cf_future *f);
/* Producer, after a push that returned 0: true once per
 * CF__SUBSLOT_STALL_EVERY pushes if no taker took anything since the last
 * look while at least that many tasks wait. A hint (relaxed load of
 * taken): the caller then wakes a parked worker even though a worker
 * counts as searching (a searcher that takes nothing for that long is not
 * running, e.g. it shares the producer's CPU). */
bool cf__subslot_stalled(struct cf__subslot *s);

/* Producer, after a push that returned 1 and the caller's seq_cst fence:
 * make sure workers' scans look at s. */
void cf__subslot_announce(struct cf__subslots *ss, struct cf__subslot *s);

/* Any taker: move up to max (<= CF__SUBSLOT_TAKE_MAX) of the oldest tasks
 * of some active slot into out[], oldest first; start: where to begin
 * among the 64 bits (spreads takers). Returns how many; *more is set if
 * work was left in that slot. */
int cf__subslots_take(struct cf__subslots *ss, cf_future **out, int max, unsigned start,
                      bool *more);
/* Test point (tests' build only, CF_TEST_HOOKS): called by a taker that
 * has read head, tail and the items, before its CAS of head. */
#ifdef CF_TEST_HOOKS
typedef void cf__test_subslot_hook_fn(struct cf__subslot *s);
extern _Atomic(cf__test_subslot_hook_fn *) cf__test_subslot_hook;
#endif

/* A worker about to park (after its fence): clear the bits of the slots
 * that are empty, each re-checked after its clear (subslot.c). */
void cf__subslots_retire_idle(struct cf__subslots *ss);
/* Any taker: the same from slot s only (0 if it looked empty). */
int cf__subslot_take(struct cf__subslot *s, cf_future **out, int max, bool *more);
/* Anything queued in any slot (every slot, not only active ones)? Loads
 * ordered by the caller's fence. Sets the bit of a slot found holding
 * work, so that the scans that follow look at it. */
bool cf__subslots_any(struct cf__subslots *ss);

#endif
