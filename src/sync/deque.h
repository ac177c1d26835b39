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

/* Owner: push x (non-NULL) at the bottom. Returns the number of items it
 * held just before (>= 0; 0 means this push made it non-empty), or
 * CF_ENOMEM if it had to grow and could not (the deque is unchanged then). */
int cf__deque_push(struct cf__deque *d, void *x);
/* Owner: take the most recently pushed item, or NULL if empty. */
void *cf__deque_pop(struct cf__deque *d);
/* Owner: the index one past the newest item. Items pushed later sit at
 * this index or above until popped or stolen (a caller can tell its own
 * pushes from older ones by it). */
static inline int64_t cf__deque_bottom(struct cf__deque *d)
{
    /* Relaxed: only the owner writes bottom, and only the owner calls this. */
    return atomic_load_explicit(&d->bottom, memory_order_relaxed);
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
