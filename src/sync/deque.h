/* A Chase-Lev work-stealing deque of pointers (one owner, many thieves).
 *
 * Contract
 * - Algorithm: Chase and Lev, "Dynamic Circular Work-Stealing Deque"
 *   (SPAA 2005), with the C11 memory orders of Le, Pop, Cohen and Zappa
 *   Nardelli, "Correct and Efficient Work-Stealing for Weak Memory Models"
 *   (PPoPP 2013). Indices are signed 64-bit and never wrap in practice.
 * - Concurrency: cf__deque_push, cf__deque_pop and cf__deque_bottom are
 *   called by the owner thread only, never concurrently with each other.
 *   cf__deque_steal may be called by any number of threads at any time,
 *   concurrently with the owner. cf__deque_size_hint may be called by
 *   anyone (a racy estimate).
 *   cf__deque_init / cf__deque_destroy run with no concurrent operation.
 * - Progress: push and pop are wait-free except when push grows the array
 *   (one allocation, O(n) copy); steal is lock-free (it fails with
 *   CF__STEAL_ABORT only because another thread made progress).
 * - Memory: the owner allocates the circular array and grows it
 *   geometrically (x2). A thief may still be reading an old array after the
 *   owner replaced it, so old arrays are not freed at once: they go on an
 *   owner-private retired list, freed by cf__deque_destroy (when no thief can
 *   run). Geometric growth bounds the retired memory by the size of the
 *   current array. Items are owned by whoever pushes them until a pop or
 *   steal hands them out; each pushed item is handed out exactly once.
 *   Items are opaque non-NULL pointers: the thread pool stores future
 *   records and fork-join child frames (tagged with bit 0), and every
 *   taker tells them apart (thread/fork_join.h).
 * - Inline: push and pop are defined below (they are on the path of every
 *   nested submit and fork-join); growing and stealing are in deque.c.
 * - Layout: `top` (CAS'd by thieves and the owner) lives on its own cache
 *   line; `bottom` and `array` (written by the owner, read by thieves) on a
 *   second; owner-only bookkeeping on a third. Asserted below. */
#ifndef CF_DEQUE_H
#define CF_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/cacheline.h"
#include "sync/debug_yield.h"
#include "sync/fence.h"
#include "cfutures/error.h"

struct cf__deque_array {
    int64_t mask;                    /* capacity - 1 (capacity a power of 2) */
    struct cf__deque_array *retired; /* owner-private list of replaced arrays */
    _Atomic(void *) slot[];          /* atomics: a thief may read a slot the
                                           owner overwrites; its CAS then fails */
};

struct cf__deque {
    /* Line 0: thieves and the owner CAS it. */
    _Alignas(CF__CACHE_LINE) _Atomic int64_t top;
    /* Line 1: written by the owner, read by thieves. */
    _Alignas(CF__CACHE_LINE) _Atomic int64_t bottom;
    _Atomic(struct cf__deque_array *) array;
    /* Line 2: owner only. */
    _Alignas(CF__CACHE_LINE) struct cf__deque_array *retired; /* freed at destroy */
    int node; /* NUMA node for the arrays (-1: any) */
};

_Static_assert(offsetof(struct cf__deque, top) / CF__CACHE_LINE !=
                   offsetof(struct cf__deque, bottom) / CF__CACHE_LINE,
               "top and bottom must not share a cache line");
_Static_assert(offsetof(struct cf__deque, retired) / CF__CACHE_LINE !=
                   offsetof(struct cf__deque, bottom) / CF__CACHE_LINE,
               "owner-only fields must not share the thieves' lines");
_Static_assert(sizeof(struct cf__deque) % CF__CACHE_LINE == 0, "whole cache lines");

enum cf__steal_result { CF__STEAL_OK = 0, CF__STEAL_EMPTY = 1, CF__STEAL_ABORT = 2 };

/* capacity: initial size, rounded up to a power of two (>= 2). node: the
 * NUMA node to allocate arrays on (-1: the caller's). 0 or CF_ENOMEM. */
int cf__deque_init(struct cf__deque *d, size_t capacity, int node);
void cf__deque_destroy(struct cf__deque *d); /* frees the arrays, not the items */

/* Owner: the index one past the newest item. Items pushed later sit at
 * this index or above until popped or stolen (a caller can tell its own
 * pushes from older ones by it). */
static inline int64_t cf__deque_bottom(struct cf__deque *d)
{
    /* Relaxed: only the owner writes bottom, and only the owner calls this. */
    return atomic_load_explicit(&d->bottom, memory_order_relaxed);
}
/* Owner, when push finds the array full: replace it by one twice as large,
 * then push x (deque.c; out of line, so the inline push keeps nothing live
 * across a call). Returns as cf__deque_push. */
int cf__deque_push_grow(struct cf__deque *d, void *x);

/* The owner's two operations are inline: they are on the path of every
 * nested submit and every fork-join fork and join (the orders are
 * explained in deque.c's opening comment and at each access). */

/* Owner: push x (non-NULL) at the bottom. Returns the number of items it
 * held just before (>= 0; 0 means this push made it non-empty), or
 * CF_ENOMEM if it had to grow and could not (the deque is unchanged then). */
static inline int cf__deque_push(struct cf__deque *d, void *x)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    /* Acquire: pairs with the thieves' CAS on top, so the slot a thief has
     * finished reading is not overwritten before its read (paper, push). */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    struct cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (__builtin_expect(b - t > a->mask, 0)) return cf__deque_push_grow(d, x);
    atomic_store_explicit(&a->slot[b & a->mask], x, memory_order_relaxed);
    CF__YIELD_POINT(); /* debug builds: slot written, bottom not yet published */
    /* Release: publishes the slot (and everything the pusher wrote into the
     * item) to a thief whose acquire load of bottom sees b + 1. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    int64_t before = b - t; /* t may be stale (older): then an over-estimate */
    return before > INT32_MAX ? INT32_MAX : (int)(before > 0 ? before : 0);
}

/* Owner: take the most recently pushed item, or NULL if empty. */
static inline void *cf__deque_pop(struct cf__deque *d)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    struct cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
    CF__YIELD_POINT(); /* debug builds: bottom lowered, not yet fenced */
    /* Seq_cst fence: orders the store of bottom before the load of top; it
     * pairs with the fence in steal between its load of top and of bottom,
     * so the owner and a thief cannot both take the last item. */
    CF__FENCE_SEQ_CST();
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    void *x = NULL;
    if (t <= b) {
        x = atomic_load_explicit(&a->slot[b & a->mask], memory_order_relaxed);
        if (t == b) {
            /* The last item: race the thieves for it with a CAS on top.
             * Seq_cst: part of the same total order as the fences. */
            CF__YIELD_POINT(); /* debug builds: let a thief race for it */
            if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                         memory_order_relaxed))
                x = NULL; /* a thief took it */
            /* Release (not relaxed as in the paper): TSan-visible publication
             * of earlier pushes stays intact for later thieves. */
            atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
        }
    } else {
        /* Empty: restore bottom. Release for the same reason as above. */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    }
    /* Relaxed, debug builds only: thieves take only below the bottom they saw. */
    CF__ASSERT(atomic_load_explicit(&d->top, memory_order_relaxed) <=
               atomic_load_explicit(&d->bottom, memory_order_relaxed) + 1);
    return x;
}

/* Anyone: take the oldest item into *out. */
enum cf__steal_result cf__deque_steal(struct cf__deque *d, void **out);

/* A racy estimate of the number of items (>= 0), for "is there work?". */
static inline int64_t cf__deque_size_hint(struct cf__deque *d)
{
    /* Relaxed: a hint; callers that need it to be exact follow it with a
     * real steal or pop, which carries the orders. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}

#endif
