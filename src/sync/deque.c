/* Chase-Lev work-stealing deque: see deque.h for the contract (the
 * owner's push and pop are inline there; grow and steal are here).
 *
 * The orders follow Le et al. (PPoPP 2013), figure 1, with two deliberate
 * strengthenings that cost nothing on x86 and let ThreadSanitizer (which
 * does not model fences) see the synchronisation: the owner's stores of
 * `bottom` are release stores instead of "release fence + relaxed store",
 * and the thief loads `array` with acquire instead of consume. */
#include "sync/deque.h"

#include "sync/debug_yield.h"
#include "sync/fence.h"

#include "sys/alloc.h"
#include "cfutures.h"

static struct cf__deque_array *array_new(int64_t cap, int node)
{
    size_t bytes = sizeof(struct cf__deque_array) + (size_t)cap * sizeof(_Atomic(void *));
    struct cf__deque_array *a = cf__alloc_on_node(bytes, node);
    if (!a) return NULL;
    a->mask = cap - 1;
    a->retired = NULL;
    for (int64_t i = 0; i < cap; i++) atomic_init(&a->slot[i], NULL);
    return a;
}

static void array_free(struct cf__deque_array *a)
{
    cf__free_on_node(a, sizeof(struct cf__deque_array) +
                            (size_t)(a->mask + 1) * sizeof(_Atomic(void *)));
}

int cf__deque_init(struct cf__deque *d, size_t capacity, int node)
{
    int64_t cap = 2;
    while ((size_t)cap < capacity && cap < ((int64_t)1 << 40)) cap <<= 1;
    struct cf__deque_array *a = array_new(cap, node);
    if (!a) return CF_ENOMEM;
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    atomic_init(&d->array, a);
    d->retired = NULL;
    d->node = node;
    return 0;
}

void cf__deque_destroy(struct cf__deque *d)
{
    struct cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (a) array_free(a);
    while (d->retired) {
        struct cf__deque_array *r = d->retired;
        d->retired = r->retired;
        array_free(r);
    }
    atomic_store_explicit(&d->array, NULL, memory_order_relaxed);
}

/* Owner only: copy the live range [t, b) into an array twice as large. */
static struct cf__deque_array *grow(struct cf__deque *d, struct cf__deque_array *a, int64_t t,
                                    int64_t b)
{
    struct cf__deque_array *n = array_new((a->mask + 1) * 2, d->node);
    if (!n) return NULL;
    for (int64_t i = t; i < b; i++) {
        /* Relaxed: only the owner writes slots, and thieves read the new
         * array only after the release store of `array` below. */
        void *x = atomic_load_explicit(&a->slot[i & a->mask], memory_order_relaxed);
        atomic_store_explicit(&n->slot[i & n->mask], x, memory_order_relaxed);
    }
    /* Release: a thief that loads the new array (acquire, in steal) sees the
     * copied slots. Thieves still reading `a` keep it alive: it is retired,
     * not freed (see the contract). */
    atomic_store_explicit(&d->array, n, memory_order_release);
    a->retired = d->retired;
    d->retired = a;
    return n;
}

int cf__deque_push_grow(struct cf__deque *d, void *x)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    /* Acquire: as in push (deque.h). */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    struct cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (b - t > a->mask && !grow(d, a, t, b)) return CF_ENOMEM;
    return cf__deque_push(d, x); /* room now: thieves only free more */
}

enum cf__steal_result cf__deque_steal(struct cf__deque *d, void **out)
{
    /* Acquire: pairs with the CAS of another thief or the owner, so the
     * bottom we read below is at least as new as what that thread saw. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    CF__YIELD_POINT(); /* debug builds: top read, bottom not yet */
    /* Seq_cst fence: pairs with the fence in pop (see there). */
    CF__FENCE_SEQ_CST();
    /* Acquire: pairs with the owner's release store of bottom in push, so
     * the slot and the item's contents are visible. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if (t >= b) return CF__STEAL_EMPTY;
    /* Acquire (the paper's consume): the array's slots as copied by grow. */
    struct cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_acquire);
    void *x = atomic_load_explicit(&a->slot[t & a->mask], memory_order_relaxed);
    CF__YIELD_POINT(); /* debug builds: slot read, top not yet claimed */
    /* Seq_cst: the one winner among the owner's pop and the thieves; on
     * failure the slot we read may already be reused, so x is discarded. */
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return CF__STEAL_ABORT;
    *out = x;
    return CF__STEAL_OK;
}
