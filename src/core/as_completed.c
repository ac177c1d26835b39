/* cf_as_completed: yield futures as they complete, the done ones first.
 *
 * Contract.
 * - One iterator = one heap object with a node per distinct future. The
 *   iterator is used by one thread at a time (next/remaining/free are not
 *   concurrent with each other); completers run as_notify() concurrently
 *   from any thread (future.c's fire(), no lock held).
 * - Completed nodes travel to the consumer through a Treiber stack
 *   (multi-producer push by CAS, lock-free; the single consumer takes the
 *   whole stack with one exchange, so there is no ABA, and reverses it into
 *   completion order). Each completion costs O(1); creation and free O(n);
 *   memory O(n).
 * - Lifetime: the object is reference counted by "the iterator + every node
 *   that is linked and whose notify has not finished" (see wait.c); notify
 *   touches the object last when it drops its reference. A notified node's
 *   listener link is ours again (the completer read `next` before notify),
 *   so it doubles as the stack link.
 * - No lost wake-up: the consumer clears the signal word, re-checks the
 *   stack, and sleeps only on a 2 it set itself; a producer pushes, then
 *   exchanges the word to 1 and wakes only if it replaced a 2. The
 *   clear/re-check on one side and push/exchange on the other form a
 *   store-buffering pattern, hence seq_cst on those four operations.
 * - Order. Invariant: if any thread learns that f0 is done (done(),
 *   cancelled(), result(), exception(), cancel() saying true, a done
 *   callback of f0, cf_wait, this or another iterator yielding it)
 *   before f1 becomes done (its completing or cancelling CAS), the
 *   iterator yields f0 before f1. Proof, for two futures linked here:
 *   (1) future.c reports a future done only after the completer has
 *   notified every waiter node (CF__DELIVERING: the notifies, then a
 *   release clear that every report acquires; callbacks run after the
 *   clear, in the completer's thread), so push(f0) happens before
 *   the learning, which happens before CAS(f1); (2) f1's completer pushes
 *   only after its CAS, in program order; so push(f0) happens before
 *   push(f1). Both pushes are RMWs on done_stack, so by coherence push(f0)
 *   precedes push(f1) in its modification order, and the consumer yields
 *   in that order (each exchange takes a prefix of it, reversed into push
 *   order). (3) next() yields a future only after cf_future_done() said
 *   so, so a thread that learns "done" from this iterator is covered by
 *   (1) too. Futures found done while the iterator is being made come
 *   first, in input order: no order among them is promised (they were
 *   done before anything watched them).
 * - A pool worker (cf__tls_wait_helper set) does not sleep: for each wait
 *   it makes a private "trigger" future, parks it in it->trigger, sets the
 *   word to 3 instead of 2, and waits on the trigger through the pool's
 *   helper (which runs other tasks: SEMANTICS 22). The producer that
 *   replaces a 3 takes the trigger out of the slot (exchange, so only one
 *   owner) and completes it. The slot holds its own reference.
 * - A thread outside every pool whose iterator has no deadline runs the
 *   futures' tasks that nobody has started while the pool's workers are
 *   all busy (core/help.h: last first, each future passed once), instead
 *   of spinning or sleeping; a task it runs completes like any other (its
 *   notify pushes it on the stack), so the order argument above holds.
 *   When nothing is left to run, next() sleeps at once if every worker
 *   was busy at its last look (spinning would take a core from them), and
 *   spins first as before if a worker was idle or it cannot help at all.
 * - Positions (cf_as_completed_next_index): node i is made for the i-th
 *   distinct future, and its bookkeeping word keeps, beside its state, the
 *   position of that future's first occurrence in the caller's array;
 *   ready[] holds nodes, so a yield reads the position with the future.
 *   Only the consumer touches that word.
 * Design: CPython's as_completed (a waiter installed on every future) with
 * the completed futures handed over on a Treiber stack (R. K. Treiber,
 * "Systems Programming: Coping with Parallelism", IBM RJ 5118, 1986) that
 * the one consumer empties whole, and a futex word in place of its
 * condition variable. */
#include <math.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "core/dedup.h"
#include "core/future.h"
#include "core/help.h"

struct cf_as_completed {
    struct cf__waiter w; /* first: notify gets &w */
    _Atomic size_t refs;
    _Atomic uint32_t word;                   /* 0, 1 signalled, 2 sleeps, 3 helps */
    cf_future *_Atomic trigger;              /* helper mode: see the contract */
    struct cf__listener *_Atomic done_stack; /* notified nodes' links, newest first */
    cf__deadline deadline;
    size_t n; /* distinct futures */
    size_t yielded;
    size_t head, tail;              /* ready[head..tail): to yield */
    struct cf__waiter_node **ready; /* n slots: each node enters once */
    struct cf__help help;           /* the consumer's cursor over nodes[] */
    size_t bytes;
    struct cf__waiter_node nodes[]; /* n: node i holds future i (our ref) */
};
/* A node's index word: its state in the low two bits (0 not registered, 1
 * linked, 2 in ready[]) and, above them, the position of the future's
 * first occurrence in the caller's array (cf_as_completed_next_index).
 * Only the consumer reads or writes it; completers never do. */
#define AS_LINKED ((size_t)1)
#define AS_READY ((size_t)2)
#define AS_STATE_MASK ((size_t)3)
#define AS_POS_SHIFT 2
static inline size_t as_state(const struct cf__waiter_node *node)
{
    return node->index & AS_STATE_MASK;
}
static inline void as_set_state(struct cf__waiter_node *node, size_t state)
{
    node->index = (node->index & ~AS_STATE_MASK) | state;
}
/* Layout: refs, word, trigger and done_stack are written by every
 * completer; they sit together in the first 48 bytes so a completion
 * dirties one line (two at worst: cf__alloc aligns to 16 bytes, not 64).
 * The consumer's own fields follow, possibly on that line: the consumer
 * exchanges done_stack and word anyway, so it owns the line when it
 * writes them. */
_Static_assert(offsetof(struct cf_as_completed, done_stack) + sizeof(void *) <= 48,
               "the completers' words within the first 48 bytes");

static void as_unref(cf_as_completed *it)
{
    /* release: our accesses to it happen before its destruction. */
    if (atomic_fetch_sub_explicit(&it->refs, 1, memory_order_release) != 1) return;
    /* acquire: pairs with the other holders' release decrements. */
    CF__ACQUIRE_AFTER(&it->refs);
    cf__free(it, it->bytes);
}

static void as_notify(struct cf__waiter *w, struct cf__waiter_node *node)
{
    cf_as_completed *it = (cf_as_completed *)w;
    /* relaxed: a first guess for the CAS, which re-reads it on failure. */
    struct cf__listener *head = atomic_load_explicit(&it->done_stack, memory_order_relaxed);
    do {
        node->link_.next = head;
        /* seq_cst (release at least): publishes node->link_.next to the
         * consumer's exchange; seq_cst for the wake-up pattern above. */
    } while (!atomic_compare_exchange_weak_explicit(&it->done_stack, &head, &node->link_,
                                                    memory_order_seq_cst, memory_order_relaxed));
    /* seq_cst: see the contract (pairs with the consumer's clear + take). */
    uint32_t old = atomic_exchange_explicit(&it->word, 1, memory_order_seq_cst);
    if (old == 2) {
        cf__futex_wake(&it->word, 1, false);
    } else if (old == 3) {
        /* acquire: the consumer stored the trigger before its seq_cst CAS
         * to 3, which our exchange read; acq_rel keeps the slot's hand-over
         * ordered against the consumer's own exchange. */
        cf_future *t = atomic_exchange_explicit(&it->trigger, NULL, memory_order_acq_rel);
        if (t) {
            (void)cf_future_set_result(t, NULL, 0);
            cf_future_release(t);
        }
    }
    as_unref(it); /* last access to it */
}

/* Move completed nodes to ready[], in completion order. True if any. */
static bool as_drain(cf_as_completed *it)
{
    /* seq_cst (acquire at least): reads the nodes' links written before
     * each push (every push is an RMW, so all of them are in the release
     * sequence we synchronise with). */
    struct cf__listener *l = atomic_exchange_explicit(&it->done_stack, NULL, memory_order_seq_cst);
    if (!l) return false;
    struct cf__listener *prev = NULL;
    while (l) {
        struct cf__listener *next = l->next;
        l->next = prev;
        prev = l;
        l = next;
    }
    for (; prev; prev = prev->next)
        it->ready[it->tail++] = CF__CONTAINER_OF(prev, struct cf__waiter_node, link_);
    return true;
}

/* Fill in a fresh iterator over the distinct futures of fs[0..n) (each
 * retained here, first occurrences in input order, marked in seen), not
 * yet registered anywhere. */
static void as_init(cf_as_completed *it, cf_future **fs, size_t n, struct cf__seen *seen,
                    struct cf__waiter_node **ready, size_t bytes, cf__deadline deadline)
{
    it->w.notify = as_notify;
    atomic_init(&it->refs, 1);
    atomic_init(&it->word, 0);
    atomic_init(&it->done_stack, NULL);
    atomic_init(&it->trigger, NULL);
    it->deadline = deadline;
    it->yielded = 0;
    it->head = it->tail = 0;
    it->ready = ready;
    it->bytes = bytes;
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cf__seen_add(seen, fs[i])) continue; /* a duplicate: yielded once */
        struct cf__waiter_node *node = &it->nodes[u++];
        node->waiter = &it->w;
        node->future = cf_future_retain(fs[i]);
        node->index = i << AS_POS_SHIFT; /* not registered yet */
    }
    it->n = u;
    cf__help_init(&it->help, u, deadline);
}

/* The done ones first (AS_READY: in ready[]), then register on the others
 * (AS_LINKED). */
static void as_register(cf_as_completed *it)
{
    for (size_t i = 0; i < it->n; i++) {
        if (cf_future_done(it->nodes[i].future)) {
            it->ready[it->tail++] = &it->nodes[i];
            as_set_state(&it->nodes[i], AS_READY);
        }
    }
    for (size_t i = 0; i < it->n; i++) {
        struct cf__waiter_node *node = &it->nodes[i];
        if (as_state(node)) continue;
        /* relaxed: taken before the node is published by the list
         * unlock's release, so a notify's decrement is ordered after it. */
        atomic_fetch_add_explicit(&it->refs, 1, memory_order_relaxed);
        if (cf__waiter_node_add(node->future, node)) {
            as_set_state(node, AS_LINKED);
        } else {
            /* Done meanwhile: no notify will come. relaxed: not the last
             * reference (ours is dropped with release by as_unref). */
            atomic_fetch_sub_explicit(&it->refs, 1, memory_order_relaxed);
            it->ready[it->tail++] = node;
            as_set_state(node, AS_READY);
        }
    }
}

int cf_as_completed_new(cf_future **fs, size_t n, double timeout, cf_as_completed **out)
{
    if (!out || (!fs && n) || isnan(timeout)) return CF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i]) return CF_EINVAL;
    uintptr_t lo = 0, hi = 0;
    if (n > CF__SEEN_SMALL) cf__addr_range(fs, n, &lo, &hi);
    cf__deadline deadline;
    (void)cf__deadline_from_timeout(timeout, &deadline);

    /* One block: the iterator, n nodes, then n ready slots. Duplicates
     * are found with a set (dedup.h), with no copy of the input. */
    if (n > SIZE_MAX / 128 || n > (SIZE_MAX >> AS_POS_SHIFT)) return CF_ENOMEM;
    size_t bytes = sizeof(cf_as_completed) +
                   n * (sizeof(struct cf__waiter_node) + sizeof(struct cf__waiter_node *));
    struct cf__seen seen;
    if (cf__seen_init(&seen, n, lo, hi) != 0) return CF_ENOMEM;
    cf_as_completed *it = cf__alloc(bytes);
    if (!it) {
        cf__seen_free(&seen);
        return CF_ENOMEM;
    }
    struct cf__waiter_node **ready = (struct cf__waiter_node **)(void *)&it->nodes[n];
    as_init(it, fs, n, &seen, ready, bytes, deadline);
    cf__seen_free(&seen);

    as_register(it);
    *out = it;
    return 0;
}

/* A bounded spin before the first sleep: true if a completion arrived. */
static bool as_spin(cf_as_completed *it)
{
    long spin = cf__wait_spin_ns();
    int64_t end = cf__now_ns() + (spin > 0 ? spin : 0);
    if (end > it->deadline) end = it->deadline;
    while (cf__now_ns() < end) {
        for (int i = 0; i < 64; i++) {
            cf__cpu_relax();
            /* relaxed peek; as_drain's exchange does the ordering. */
            if (atomic_load_explicit(&it->done_stack, memory_order_relaxed)) return true;
        }
    }
    return false;
}

/* A thread with a wait helper (a pool worker): publish the trigger t, then
 * help until a producer completes it or the deadline passes. CF_ETIMEDOUT,
 * or 0: look again. */
static int as_wait_helping(cf_as_completed *it, cf__wait_helper_fn *help, cf_future *t)
{
    int rc = 0;
    /* release: published before the word says 3 (see as_notify). */
    atomic_store_explicit(&it->trigger, cf_future_retain(t), memory_order_release);
    uint32_t z = 0;
    /* seq_cst: the same pattern as as_wait_sleeping. */
    if (atomic_compare_exchange_strong_explicit(&it->word, &z, 3, memory_order_seq_cst,
                                                memory_order_seq_cst))
        rc = help(cf__tls_wait_helper_ctx, t, it->deadline);
    /* Take the slot back unless a producer took it (acq_rel: pairs with
     * the producer's exchange). */
    cf_future *back = atomic_exchange_explicit(&it->trigger, NULL, memory_order_acq_rel);
    cf_future_release(back);
    cf_future_release(t);
    /* (A producer that saw 3 pushed its node before, so the drain finds it
     * even if the trigger fired at the deadline.) */
    if (rc == CF_ETIMEDOUT && !as_drain(it)) return CF_ETIMEDOUT;
    return 0;
}

/* Sleep on the word until a producer signals or the deadline passes.
 * CF_ETIMEDOUT, or 0: look again. */
static int as_wait_sleeping(cf_as_completed *it)
{
    uint32_t z = 0;
    /* seq_cst: part of the pattern in the contract; a failure means a
     * producer stored 1 after our clear, so its node is there: loop. */
    if (!atomic_compare_exchange_strong_explicit(&it->word, &z, 2, memory_order_seq_cst,
                                                 memory_order_seq_cst))
        return 0;
    if (cf__futex_wait(&it->word, 2, it->deadline, false) == CF_ETIMEDOUT && !as_drain(it))
        return CF_ETIMEDOUT;
    return 0;
}

static cf_future *node_future(const void *coll, size_t i)
{
    return ((const struct cf__waiter_node *)coll)[i].future;
}

int cf_as_completed_next(cf_as_completed *it, cf_future **f)
{
    if (!f) return CF_EINVAL;
    return cf_as_completed_next_index(it, f, NULL);
}

int cf_as_completed_next_index(cf_as_completed *it, cf_future **f, size_t *index)
{
    if (!it || (!f && !index)) return CF_EINVAL;
    bool spun = false;
    for (;;) {
        if (it->head < it->tail) {
            struct cf__waiter_node *node = it->ready[it->head++];
            it->yielded++;
            /* Waits out the end of its delivery (rare, short): see Order. */
            (void)cf_future_done(node->future);
            if (f) *f = node->future;
            if (index) *index = node->index >> AS_POS_SHIFT;
            return 0;
        }
        if (it->yielded == it->n) return CF_END;
        if (as_drain(it)) continue;
        /* Run a task we wait for (its completion lands on the stack). */
        if (it->help.on && cf__help_step(&it->help, it->n - 1, node_future, it->nodes)) continue;
        /* A bounded spin before the first sleep, unless every worker is
         * busy and nothing is left for us to run: then it would only take
         * a core from the workers whose completions we wait for. */
        if (!spun && (!it->help.on || it->help.worker_idle) && !cf__tls_wait_helper) {
            spun = true;
            if (as_spin(it)) continue;
        }
        /* Clear the signal, then re-check (seq_cst: see the contract). */
        atomic_exchange_explicit(&it->word, 0, memory_order_seq_cst);
        if (as_drain(it)) continue;
        cf__wait_helper_fn *help = cf__tls_wait_helper;
        cf_future *t = help ? cf__future_new() : NULL; /* NULL: sleep instead */
        int rc = t ? as_wait_helping(it, help, t) : as_wait_sleeping(it);
        if (rc == CF_ETIMEDOUT) return rc;
    }
}

size_t cf_as_completed_remaining(const cf_as_completed *it)
{
    return it ? it->n - it->yielded : 0;
}

void cf_as_completed_free(cf_as_completed *it)
{
    if (!it) return;
    size_t u = it->n;
    for (size_t i = 0; i < u; i++) {
        struct cf__waiter_node *node = &it->nodes[i];
        /* done: the completer owns the node (no need for the lock) */
        if (as_state(node) == AS_LINKED && !cf_future_done(node->future) &&
            cf__waiter_node_remove(node->future, node))
            /* relaxed: not the last reference (ours goes in as_unref,
             * with release). */
            atomic_fetch_sub_explicit(&it->refs, 1, memory_order_relaxed);
    }
    /* A pending notify does not touch the future (its completer holds its
     * own reference), so ours can go now. */
    for (size_t i = 0; i < u; i++) cf_future_release(it->nodes[i].future);
    as_unref(it);
}
