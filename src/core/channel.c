/* cf_channel: finished futures handed to an event loop through an eventfd.
 *
 * Contract.
 * - Who runs what, concurrently: cf_channel_add from any number of
 *   threads; completers (any thread that makes an attached future done)
 *   run ch_notify() from future.c's fire(), no lock held; ONE consumer at
 *   a time runs cf_channel_drain; cf_channel_free runs alone (no add or
 *   drain), but completers may still be running.
 * - Progress: a completer's part is lock-free: a CAS push on a Treiber
 *   stack (retried only when another push won), at most one write(2) to the
 *   eventfd, one fetch_sub. add takes the channel's mutex for a few
 *   pointer writes; drain takes it once per call, for O(k) pointer writes
 *   (k: the futures it hands out). No lock is held while calling into a
 *   future, so the lock order is trivial.
 * - Memory. Every attached future has one node (cf__alloc'd by add) that
 *   holds the channel's reference to it and its tag. From add until a drain
 *   hands it out (or free drops it), the node is on the `attached` list
 *   (guarded by `lock`); that list is how free finds every node. A node is
 *   freed by the drain that hands it out or by free, never by a completer.
 *   The channel itself is reference counted: `refs` = 1 (the owner) + 1 per
 *   node linked to a future whose notify has not finished. A completer's
 *   last access to the channel is its decrement; free unlinks what it can,
 *   then waits until `refs` is 1, so no completer touches the channel, or
 *   its descriptor, after free returns (the wait is bounded by the few
 *   steps of a completer that had already claimed the node).
 * - Hand-over. A finished node goes on `stack` (newest first; its
 *   listener link, which is the channel's again once the completer read
 *   `next`, doubles as the stack link). The consumer takes the whole stack
 *   with one exchange (so there is no ABA), reverses it into completion
 *   order and keeps the part it could not hand out on its own `ready`
 *   list for the next drain.
 * - Invariant W (no lost wake-up): whenever a finished node waits on
 *   `stack` or `ready`, the eventfd's counter is non-zero, or a completer
 *   that found the stack empty has pushed and is about to write to it.
 *   Only a push that finds the stack empty writes (the empty to non-empty
 *   transition), and only drain resets the counter (a read). Why W holds:
 *   - drain that starts with `ready` empty resets the counter FIRST, then
 *     exchanges the stack. A push whose write the reset consumed made its
 *     CAS before that write, so before the exchange (the write and read
 *     are ordered by the eventfd's own lock, and the CAS is before the
 *     write, the read before the exchange, in program order); the
 *     exchange, an RMW of the same word, takes that node. Any push after
 *     the exchange finds it empty (or follows one that did), and that
 *     first push's write comes after the reset: its CAS reads the
 *     exchange's NULL, or a later value of the same release sequence, so
 *     the consumer's release exchange synchronises with its acq_rel CAS,
 *     and the reset happens before the write.
 *   - drain that leaves nodes on `ready` after such a reset writes to the
 *     eventfd itself; one that starts with `ready` non-empty does not
 *     reset, so the counter W promised stays.
 *   The cost of the order is an occasional readable descriptor with
 *   nothing to drain (a push made before the exchange whose write comes
 *   after the reset): the next drain returns 0 and clears it.
 * - Memory orders. push: CAS acq_rel on success (release: publishes the
 *   node's link and tag to the consumer's exchange; acquire: orders the
 *   write(2) after a reset that preceded the exchange it read from, as
 *   above). drain: exchange acq_rel (acquire: reads the nodes; release: see
 *   W). refs: relaxed increments (add: before the node is published by the
 *   future's list unlock, a release), release decrements by completers,
 *   and free's acquire load of 1 pairs with all of them (each decrement is
 *   an RMW, so the value 1 ends every decrement's release sequence).
 *   `pending` is a relaxed count: a statistic, it orders nothing.
 * Design: as_completed.c's Treiber hand-over (R. K. Treiber, IBM RJ 5118,
 * 1986), with an eventfd in place of the futex word, so poll(2) and its
 * successors can wait on it. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sync/debug_yield.h"
#include "core/channel.h"
#include "core/future.h"

#ifdef CF_TEST_HOOKS
void (*cf__test_channel_after_reset)(cf_channel *ch); /* NULL unless a test sets it */
void (*cf__test_channel_before_write)(cf_channel *ch);
#endif

struct ch_node {
    struct cf__waiter_node wn; /* first; wn.future holds our reference; wn.index 1: linked */
    uint64_t tag;
    struct ch_node *prev, *next; /* the attached list, under ch->lock */
};

struct cf_channel {
    struct cf__waiter w;                /* first: notify gets &w */
    _Atomic size_t refs;                /* the owner + nodes whose notify may come */
    struct cf__listener *_Atomic stack; /* finished nodes' links, newest first */
    int fd;                             /* the eventfd */
    /* The consumer's own: finished nodes taken from the stack, oldest
     * first, not handed out yet. */
    struct cf__listener *ready, *ready_tail;
    _Atomic size_t pending;
    pthread_mutex_t lock;    /* guards attached */
    struct ch_node attached; /* sentinel of the list of nodes not handed out */
};

static struct ch_node *node_of(struct cf__listener *l)
{
    return (struct ch_node *)(void *)CF__CONTAINER_OF(l, struct cf__waiter_node, link_);
}

/* Make the descriptor readable: add 1 to the counter. */
static void ch_signal(cf_channel *ch)
{
    uint64_t one = 1;
    /* Never blocks and cannot fail short of a counter at 2^64 - 2. */
    while (write(ch->fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Clear the counter (EAGAIN when it was 0 already). */
static void ch_reset(cf_channel *ch)
{
    uint64_t v;
    while (read(ch->fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

/* Push a finished node; the push that finds the stack empty signals. */
static void ch_push(cf_channel *ch, struct cf__waiter_node *wn)
{
    /* relaxed: a first guess for the CAS, which re-reads it on failure. */
    struct cf__listener *head = atomic_load_explicit(&ch->stack, memory_order_relaxed);
    do {
        wn->link_.next = head;
        /* acq_rel: see the contract (release: the node to the consumer;
         * acquire: this push's write after the consumer's reset). */
    } while (!atomic_compare_exchange_weak_explicit(&ch->stack, &head, &wn->link_,
                                                    memory_order_acq_rel, memory_order_relaxed));
    /* The node may be drained and freed from here on: do not touch it. */
    if (head) return;  /* not the first: its pusher signals (W) */
    CF__YIELD_POINT(); /* a drain may take the node before the write */
#ifdef CF_TEST_HOOKS
    if (cf__test_channel_before_write) cf__test_channel_before_write(ch);
#endif
    ch_signal(ch);
}

static void ch_unref(cf_channel *ch)
{
    /* release: our accesses to ch happen before free's acquire load of 1. */
    atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_release);
}

static void ch_notify(struct cf__waiter *w, struct cf__waiter_node *wn)
{
    cf_channel *ch = (cf_channel *)w;
    ch_push(ch, wn);
    ch_unref(ch); /* last access to ch */
}

int cf_channel_new(cf_channel **out)
{
    if (!out) return CF_EINVAL;
    *out = NULL;
    cf_channel *ch = cf__alloc(sizeof *ch);
    if (!ch) return CF_ENOMEM;
    ch->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ch->fd < 0) {
        int e = errno;
        cf__free(ch, sizeof *ch);
        errno = e;
        return CF_ESYS;
    }
    ch->w.notify = ch_notify;
    atomic_init(&ch->refs, 1);
    atomic_init(&ch->stack, NULL);
    atomic_init(&ch->pending, 0);
    ch->ready = ch->ready_tail = NULL;
    pthread_mutex_init(&ch->lock, NULL);
    ch->attached.prev = ch->attached.next = &ch->attached;
    *out = ch;
    return 0;
}

int cf_channel_fd(const cf_channel *ch)
{
    return ch ? ch->fd : CF_EINVAL;
}

size_t cf_channel_pending(const cf_channel *ch)
{
    /* relaxed: a count for the caller, ordering nothing. */
    return ch ? atomic_load_explicit(&ch->pending, memory_order_relaxed) : 0;
}

int cf_channel_add(cf_channel *ch, cf_future *f, uint64_t tag)
{
    if (!ch || !f) return CF_EINVAL;
    struct ch_node *node = cf__alloc(sizeof *node);
    if (!node) return CF_ENOMEM;
    node->wn.waiter = &ch->w;
    node->wn.future = cf_future_retain(f);
    node->tag = tag;
    /* relaxed: a count (see cf_channel_pending). */
    atomic_fetch_add_explicit(&ch->pending, 1, memory_order_relaxed);
    pthread_mutex_lock(&ch->lock);
    node->prev = ch->attached.prev;
    node->next = &ch->attached;
    node->prev->next = node;
    ch->attached.prev = node;
    pthread_mutex_unlock(&ch->lock);
    /* Set before the node is published: once linked, a drain may hand it
     * out and free it before add_node returns. relaxed: the node's
     * reference, taken before the future's list unlock (release) publishes
     * the node, so a notify's decrement comes after it. */
    node->wn.index = 1;
    atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
    if (!cf__waiter_node_add(f, &node->wn)) {
        /* Done already: no notify will come; hand it over ourselves.
         * relaxed: not the last reference (the owner's stays). */
        node->wn.index = 0;
        atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_relaxed);
        ch_push(ch, &node->wn);
    }
    return 0;
}

/* Move the finished nodes from the stack to the end of ready, in
 * completion order. */
static void ch_take(cf_channel *ch)
{
    /* acq_rel: acquire reads the nodes the pushes published; release
     * orders the reset before it for the pushes that follow (W). */
    struct cf__listener *l = atomic_exchange_explicit(&ch->stack, NULL, memory_order_acq_rel);
    struct cf__listener *first = NULL, *last = l;
    while (l) { /* reverse: newest first -> oldest first */
        struct cf__listener *next = l->next;
        l->next = first;
        first = l;
        l = next;
    }
    if (!first) return;
    if (ch->ready_tail) ch->ready_tail->next = first;
    else ch->ready = first;
    ch->ready_tail = last;
}

int cf_channel_drain(cf_channel *ch, cf_future **futures, uint64_t *tags, size_t cap, size_t *n)
{
    if (!ch || !n) return CF_EINVAL;
    *n = 0;
    if (cap == 0) return 0;
    bool reset = !ch->ready;
    if (reset) { /* reset first, then take: the order W rests on */
        ch_reset(ch);
        CF__YIELD_POINT(); /* a push may land between the reset and the take */
#ifdef CF_TEST_HOOKS
        if (cf__test_channel_after_reset) cf__test_channel_after_reset(ch);
#endif
    }
    ch_take(ch);
    /* Cut the first k (at most cap) off ready. */
    struct cf__listener *batch = ch->ready, *l = batch, *end = NULL;
    size_t k = 0;
    for (; l && k < cap; k++) {
        end = l;
        l = l->next;
    }
    if (k == 0) return 0;
    ch->ready = l;
    if (!l) ch->ready_tail = NULL;
    end->next = NULL;
    /* Left some behind after a reset: keep the descriptor readable (W). */
    if (ch->ready && reset) ch_signal(ch);

    pthread_mutex_lock(&ch->lock);
    for (l = batch; l; l = l->next) {
        struct ch_node *node = node_of(l);
        node->prev->next = node->next;
        node->next->prev = node->prev;
    }
    pthread_mutex_unlock(&ch->lock);
    /* relaxed: a count. */
    atomic_fetch_sub_explicit(&ch->pending, k, memory_order_relaxed);
    size_t i = 0;
    for (l = batch; l; i++) {
        struct ch_node *node = node_of(l);
        l = l->next; /* before the node goes */
        if (futures) futures[i] = node->wn.future;
        else cf_future_release(node->wn.future);
        if (tags) tags[i] = node->tag;
        cf__free(node, sizeof *node);
    }
    *n = k;
    return 0;
}

void cf_channel_free(cf_channel *ch)
{
    if (!ch) return;
    /* Unlink every node still linked to an unfinished future. One whose
     * future is done belongs to its completer until its notify ends. No
     * lock: no add or drain runs now, and completers do not touch the
     * attached list. */
    struct ch_node *node;
    for (node = ch->attached.next; node != &ch->attached; node = node->next)
        if (node->wn.index == 1 && cf__waiter_node_remove(node->wn.future, &node->wn))
            /* relaxed: not the last reference (the owner's stays). */
            atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_relaxed);
    /* acquire: pairs with every completer's release decrement, so their
     * pushes and writes are behind us. */
    while (atomic_load_explicit(&ch->refs, memory_order_acquire) != 1) sched_yield();
    node = ch->attached.next;
    while (node != &ch->attached) {
        struct ch_node *next = node->next;
        cf_future_release(node->wn.future);
        cf__free(node, sizeof *node);
        node = next;
    }
    close(ch->fd);
    pthread_mutex_destroy(&ch->lock);
    cf__free(ch, sizeof *ch);
}
