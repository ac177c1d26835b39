/* The thread pool's injection queue: where threads outside the pool put
 * new tasks. An intrusive multi-producer queue of cf_future (through
 * cf_future.qnode) with a batch take.
 *
 * Contract
 * - Algorithm: liburcu's wfcqueue (urcu/wfcqueue.h, Desnoyers and
 *   Jiangshan): enqueue exchanges the tail and then links the old tail to
 *   the new node; the take splices the whole queue out with
 *   __cds_wfcq_splice_nonblocking, or removes one node (take_one: a
 *   waiting thread outside the pool that runs one task).
 * - Concurrency: any number of threads may push at once (wait-free: one
 *   exchange and one store). Takes are serialised by the `taking`
 *   try-flag: a thread that cannot get it goes elsewhere (it never waits).
 *   empty() may be called by anyone (a racy answer; see the pool's parking
 *   protocol for why it is enough).
 * - Memory: nodes live in futures. A node belongs to the queue from push
 *   until a take hands it out; the pool's reference keeps the future alive.
 * - Ordering: enqueue's exchange is a full barrier (liburcu's uatomic_xchg;
 *   a seq_cst RMW in the twin below), which the pool relies on as the
 *   "publish, then fence" half of the event-count protocol.
 * - ThreadSanitizer: liburcu implements its atomics with inline assembly
 *   and volatile accesses, which TSan cannot see, so under CF_TSAN this
 *   header compiles a twin of the same algorithm written with GCC __atomic
 *   builtins on the same node type. Production builds use liburcu.
 * - Walking a spliced batch may wait for a producer that has exchanged the
 *   tail but not yet linked its node (a few instructions; liburcu's
 *   blocking iteration backs off and sleeps if it is preempted there). */
#ifndef CF_INJECT_H
#define CF_INJECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <urcu/wfcqueue.h>
#include <urcu/static/wfcqueue.h> /* the inline bodies (no call into liburcu-cds) */

#include "sync/cacheline.h"
#include "sync/debug_yield.h"
#include "sync/fence.h"
#include "sync/futex.h" /* cf__cpu_relax */

struct cf__inject {
    /* Producers exchange the tail; the taker reads head. Separate lines. */
    _Alignas(CF__CACHE_LINE) struct cds_wfcq_tail tail;
    _Alignas(CF__CACHE_LINE) struct __cds_wfcq_head head;
    _Atomic int taking; /* try-flag serialising takes */
};
_Static_assert(offsetof(struct cf__inject, head) / CF__CACHE_LINE !=
                   offsetof(struct cf__inject, tail) / CF__CACHE_LINE,
               "producers and the taker must not share a line");

/* A batch taken out of a queue, walked by its single owner. */
struct cf__inject_batch {
    struct __cds_wfcq_head head;
    struct cds_wfcq_tail tail;
};

#if !defined(CF_TSAN)

static inline void cf__inject_init(struct cf__inject *q)
{
    ___cds_wfcq_init(&q->head, &q->tail);
    atomic_init(&q->taking, 0);
}
static inline bool cf__inject_empty(struct cf__inject *q)
{
    /* acquire: a worker that sees a task linked may then read it (pairs
     * with the enqueuer's link store, which follows its writes of the
     * record); a stale "empty" is corrected by the parker's re-check. */
    return _cds_wfcq_empty(&q->head, &q->tail);
}
/* Push n (its next need not be initialised). True if the queue was empty
 * just before (decided by the tail exchange, so exact: a take that
 * spliced the queue before it sees "empty"). */
static inline bool cf__inject_push(struct cf__inject *q, struct cds_wfcq_node *n)
{
    _cds_wfcq_node_init(n);
    CF__YIELD_POINT(); /* debug builds: a taker may splice first */
    return !_cds_wfcq_enqueue(&q->head, &q->tail, n);
}
static inline void cf__batch_init(struct cf__inject_batch *b)
{
    ___cds_wfcq_init(&b->head, &b->tail);
}
/* Caller holds q->taking. Moves everything into b; false if q was empty or
 * a producer is half-way (try again later). */
static inline bool cf__inject_splice(struct cf__inject *q, struct cf__inject_batch *b)
{
    CF__YIELD_POINT(); /* debug builds: a producer may be half-way */
    enum cds_wfcq_ret r = ___cds_wfcq_splice_nonblocking(&b->head, &b->tail, &q->head, &q->tail);
    return r == CDS_WFCQ_RET_DEST_EMPTY || r == CDS_WFCQ_RET_DEST_NON_EMPTY;
}
/* Next node of a batch, removed from it; NULL at the end. */
static inline struct cds_wfcq_node *cf__batch_next(struct cf__inject_batch *b)
{
    return ___cds_wfcq_dequeue_blocking(&b->head, &b->tail);
}
/* Caller holds q->taking. The oldest node, removed from q; NULL if q is
 * empty or a producer is half-way through linking it. */
static inline struct cds_wfcq_node *cf__inject_take_one(struct cf__inject *q)
{
    struct cds_wfcq_node *n = ___cds_wfcq_dequeue_nonblocking(&q->head, &q->tail);
    return n == CDS_WFCQ_WOULDBLOCK ? NULL : n;
}

#else /* CF_TSAN: the same algorithm with __atomic builtins */

static inline void cf__inject_init(struct cf__inject *q)
{
    q->head.node.next = NULL;
    q->tail.p = &q->head.node;
    atomic_init(&q->taking, 0);
}
static inline bool cf__inject_empty(struct cf__inject *q)
{
    return __atomic_load_n(&q->head.node.next, __ATOMIC_ACQUIRE) == NULL &&
           __atomic_load_n(&q->tail.p, __ATOMIC_ACQUIRE) == &q->head.node;
}
static inline bool cf__inject_push(struct cf__inject *q, struct cds_wfcq_node *n)
{
    __atomic_store_n(&n->next, NULL, __ATOMIC_RELAXED);
    /* Seq_cst exchange: publishes the node's contents (release) and is the
     * full barrier the pool relies on (see the contract). */
    struct cds_wfcq_node *old = __atomic_exchange_n(&q->tail.p, n, __ATOMIC_SEQ_CST);
    CF__YIELD_POINT(); /* debug builds: tail swapped, node not yet linked */
    /* Release: the taker that follows old->next sees n's contents. */
    __atomic_store_n(&old->next, n, __ATOMIC_RELEASE);
    /* The full barrier of the contract, in a form TSan sees (fence.h). */
    CF__FENCE_SEQ_CST();
    return old == &q->head.node;
}
static inline void cf__batch_init(struct cf__inject_batch *b)
{
    b->head.node.next = NULL;
    b->tail.p = &b->head.node;
}
static inline bool cf__inject_splice(struct cf__inject *q, struct cf__inject_batch *b)
{
    if (cf__inject_empty(q)) return false;
    /* Acquire: pairs with the producer's release link store. */
    struct cds_wfcq_node *first = __atomic_exchange_n(&q->head.node.next, NULL, __ATOMIC_ACQ_REL);
    CF__YIELD_POINT();        /* debug builds: head taken, tail not yet reset */
    if (!first) return false; /* a producer is between its two steps */
    /* Seq_cst: resets the tail; producers after this link to head again.
     * The old tail is the batch's last node. */
    struct cds_wfcq_node *last = __atomic_exchange_n(&q->tail.p, &q->head.node, __ATOMIC_SEQ_CST);
    b->head.node.next = first;
    b->tail.p = last;
    return true;
}
static inline struct cds_wfcq_node *cf__batch_next(struct cf__inject_batch *b)
{
    struct cds_wfcq_node *n = b->head.node.next;
    if (!n) return NULL;
    if (n == b->tail.p) {
        b->head.node.next = NULL;
        b->tail.p = &b->head.node;
        return n;
    }
    struct cds_wfcq_node *next;
    /* Acquire: pairs with the release link store of the producer of next;
     * wait for a producer that exchanged the tail but has not linked yet. */
    while ((next = __atomic_load_n(&n->next, __ATOMIC_ACQUIRE)) == NULL) cf__cpu_relax();
    b->head.node.next = next;
    return n;
}

static inline struct cds_wfcq_node *cf__inject_take_one(struct cf__inject *q)
{
    if (cf__inject_empty(q)) return NULL;
    /* Acquire: pairs with the producer's release link store. */
    struct cds_wfcq_node *n = __atomic_load_n(&q->head.node.next, __ATOMIC_ACQUIRE);
    if (!n) return NULL; /* a producer is between its two steps */
    struct cds_wfcq_node *next = __atomic_load_n(&n->next, __ATOMIC_ACQUIRE);
    if (!next) {
        /* n looks like the last node: detach it by moving the tail back to
         * head. Seq_cst CAS: a producer's exchange either came first (the
         * CAS fails and that producer links n->next) or comes after and
         * links to head. */
        __atomic_store_n(&q->head.node.next, NULL, __ATOMIC_RELAXED);
        struct cds_wfcq_node *expect = n;
        if (__atomic_compare_exchange_n(&q->tail.p, &expect, &q->head.node, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return n;
        next = __atomic_load_n(&n->next, __ATOMIC_ACQUIRE);
        if (!next) { /* that producer has not linked yet: leave n queued */
            __atomic_store_n(&q->head.node.next, n, __ATOMIC_RELAXED);
            return NULL;
        }
    }
    __atomic_store_n(&q->head.node.next, next, __ATOMIC_RELAXED);
    return n;
}

#endif

/* The try-flag around splice. */
static inline bool cf__inject_try_lock(struct cf__inject *q)
{
    /* Relaxed pre-check avoids bouncing the line when someone holds it. */
    if (atomic_load_explicit(&q->taking, memory_order_relaxed)) return false;
    /* Acquire: pairs with the release in unlock; takes are serialised. */
    return atomic_exchange_explicit(&q->taking, 1, memory_order_acquire) == 0;
}
static inline void cf__inject_unlock(struct cf__inject *q)
{
    /* Release: our splice (head updates) happens before the next taker's. */
    atomic_store_explicit(&q->taking, 0, memory_order_release);
}

#endif
