/* Futures: one 64-byte record that is both the task and its outcome
 * (layout and payload lifetime: future.h).
 *
 * Contract.
 * - Progress: the state transitions (start, claim, publish, cancel) are
 *   lock-free CAS loops on one word. The listener list (callbacks and
 *   cf_wait/as_completed waiter nodes) is guarded by a bit lock in the same
 *   word (CF__LIST_LOCK), held for a few pointer writes (O(k) to unlink a
 *   waiter among k listeners) and never across a callback or a notify. The
 *   hot path (no listeners, nobody asleep) never takes it: a task costs one
 *   CAS to start (which also claims the outcome) and one to finish.
 * - Concurrency: every public function may run at the same time as any
 *   other on the same future. Exactly one completer wins the CF__CLAIMED
 *   bit and is then the only writer of the outcome (the payload, after the
 *   argument there is gone, and the outcome and SIZE bits); it publishes it
 *   with the release CAS that makes the state FINISHED, and readers read
 *   it only after an acquire load that saw a done state. Nothing leaves
 *   CANCELLED or FINISHED.
 * - Delivery before report: a future that has listeners when it becomes
 *   done is made done together with CF__DELIVERING, and fire() clears that
 *   bit (release) only after notifying every waiter node. No query reports
 *   done (done, cancelled, running, result, exception, cancel, an immediate
 *   callback, cf_wait, as_completed) before it has seen the bit clear
 *   (acquire); one that meets it waits, which costs at most the
 *   completer's few remaining steps. So a thread that learns "f is done"
 *   has every waiter's notify of f behind it (happens-before), which is
 *   what as_completed's order rests on (as_completed.c). Without listeners
 *   the bit is never set and nothing changes on the hot path.
 * - Lost wake-ups: a sleeper sets CF__SLEEPERS by CAS before sleeping on
 *   the word, and the finishing CAS reads (and clears) that bit in the same
 *   atomic step that makes the state done, so either the sleeper's CAS fails
 *   (it sees done) or the finisher sees the bit and wakes it; the kernel
 *   re-checks the word before sleeping. While DELIVERING, the bit stays
 *   set and the RMW that clears DELIVERING reads and clears it too. A
 *   listener is pushed only under the lock while the state is not done; a
 *   finisher whose CAS saw LOCK or HAS_LISTENERS takes the lock and
 *   detaches the whole list afterwards.
 * - Memory: the record and its result/message live until the last
 *   reference goes (refs), so pointers from result()/exception() stay valid
 *   while a reference is held. Callback nodes are cf__alloc'd by
 *   add_done_callback and freed by whoever runs them; waiter nodes belong to
 *   their waiter, which must keep each linked node alive until its notify
 *   ran or cf__waiter_node_remove() unlinked it.
 * Design: a Linux futex word per future, as in the futex-based mutexes and
 * one-shot events of Drepper, "Futexes Are Tricky" (2011), with the waiter
 * list of CPython's Future (callbacks + waiters) behind a bit lock. */
#include "core/future.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "sys/debug_checks.h"
#include "sys/probes.h"
#include "sys/slab.h"
#include "sync/debug_yield.h"

_Thread_local cf__wait_helper_fn *cf__tls_wait_helper;
_Thread_local void *cf__tls_wait_helper_ctx;
#ifdef CF_TEST_HOOKS
void (*cf__test_after_publish)(cf_future *f); /* NULL unless a test sets it */
#endif

/* One cache line, and exactly the slab's object size (sys/slab.h). */
_Static_assert(sizeof(struct cf_future) == 64, "struct cf_future must stay 64 bytes");
_Static_assert(sizeof(struct cf_future) == CF__SLAB_OBJ, "records are the slab's objects");
/* The futex syscall needs the state word 4-byte aligned. */
_Static_assert(offsetof(struct cf_future, state) % 4 == 0 && _Alignof(struct cf_future) >= 4,
               "the futex word must be 4-byte aligned");
_Static_assert(offsetof(struct cf_future, p) == 48 && sizeof(union cf__payload) == 16,
               "the payload is the record's last 16 bytes");
_Static_assert(CF__REC_INLINE >= sizeof(int64_t) && CF__REC_INLINE >= sizeof(void *),
               "scalar results must fit inline");
_Static_assert(CF__REC_INLINE < CF__SIZE_HEAP && CF__REC_INLINE <= CF__INLINE_RES,
               "SIZE tells inline bytes from a heap buffer");
_Static_assert((CF__FREED_STATE & (CF__SIZE_MASK | CF__OUTCOME_MASK | 0xffu)) == 0,
               "the freed mark is no live word");

static inline uint32_t load_state(const cf_future *f, memory_order mo)
{
    return atomic_load_explicit((_Atomic uint32_t *)&f->state, mo);
}

/* ---- the listener-list bit lock ---- */

/* Returns the word as it was made by our CAS (LOCK set): its state bits
 * tell whether the future was done when we took the lock. */
static uint32_t list_lock(cf_future *f)
{
    uint32_t s = load_state(f, memory_order_relaxed);
    for (unsigned spins = 0;; spins++) {
        if (s & CF__LIST_LOCK) {
            if (spins & 127) cf__cpu_relax();
            else sched_yield(); /* the holder may be preempted (2 cores) */
            s = load_state(f, memory_order_relaxed);
            continue;
        }
        /* acquire: pairs with the release CAS in list_unlock, so the list
         * as the previous holder left it is visible to us. */
        if (atomic_compare_exchange_weak_explicit(&f->state, &s, s | CF__LIST_LOCK,
                                                  memory_order_acquire, memory_order_relaxed))
            return s | CF__LIST_LOCK;
    }
}

/* Other bits (state, SLEEPERS, CLAIMED) may change while we hold the lock,
 * hence the CAS loop. HAS_LISTENERS is set iff the list is not empty. */
static void list_unlock(cf_future *f, bool has_listeners)
{
    uint32_t s = load_state(f, memory_order_relaxed), n;
    do {
        n = (s & ~(CF__LIST_LOCK | CF__HAS_LISTENERS)) | (has_listeners ? CF__HAS_LISTENERS : 0);
        /* release: publishes our list writes to the next holder (its
         * acquire CAS in list_lock). */
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, n, memory_order_release,
                                                    memory_order_relaxed));
}

/* ---- completion ---- */

/* The word that makes a future done, replacing the word s: `st` is the
 * new state with its outcome and SIZE bits (FINISHED: the outcome's;
 * CANCELLED: the argument's, kept from s). With listeners (or an adder
 * holding the lock, who may still link one) the future is DELIVERING until
 * fire() has notified them, and SLEEPERS stays until then; without, fire()
 * wakes the sleepers at once and the bit goes. CLAIMED goes either way,
 * and so does ARG_PINNED (a pinner's unpin is then a no-op). */
static inline uint32_t done_word(uint32_t s, uint32_t st)
{
    uint32_t lst = s & (CF__LIST_LOCK | CF__HAS_LISTENERS);
    if (!lst) return st;
    return lst | st | CF__DELIVERING | (s & CF__SLEEPERS);
}

static void fire_listeners(cf_future *f);

/* After the CAS that made f done (old = the word it replaced): notify the
 * waiter nodes, end the delivery (waking sleepers), then run callbacks in
 * registration order, all in this thread and with no lock held. Inline:
 * the usual future has no listeners, and then only sleepers are woken. */
static inline void fire(cf_future *f, uint32_t old)
{
    if (__builtin_expect(!(old & (CF__LIST_LOCK | CF__HAS_LISTENERS)), 1)) {
        if (old & CF__SLEEPERS) cf__futex_wake(&f->state, INT32_MAX, false);
        return;
    }
    fire_listeners(f);
}

/* fire() for a future that had listeners (or an adder holding the lock). */
static void fire_listeners(cf_future *f)
{
#ifdef CF_TEST_HOOKS
    if (cf__test_after_publish) cf__test_after_publish(f);
#endif

    list_lock(f);
    struct cf__listener *l = f->listeners;
    f->listeners = NULL;
    list_unlock(f, false);

    /* The list is newest first: pushing each callback onto `cbs` puts them
     * back in registration order. Waiter nodes need no order. */
    struct cf__listener *cbs = NULL, *waiters = NULL;
    while (l) {
        struct cf__listener *next = l->next;
        if (l->cb) {
            l->next = cbs;
            cbs = l;
        } else {
            l->next = waiters;
            waiters = l;
        }
        l = next;
    }
    while (waiters) {
        /* Read next first: from notify on, the node is the waiter's again. */
        struct cf__listener *next = waiters->next;
        struct cf__waiter_node *node = CF__CONTAINER_OF(waiters, struct cf__waiter_node, link_);
        node->waiter->notify(node->waiter, node);
        waiters = next;
    }
    /* release: every notify above happens before any query that sees
     * DELIVERING clear (their acquire loads). Sleepers that came during
     * the delivery left SLEEPERS set; this RMW reads and clears it in the
     * same step, so none is missed. */
    uint32_t was = atomic_fetch_and_explicit(&f->state, ~(CF__DELIVERING | CF__SLEEPERS),
                                             memory_order_release);
    if (was & CF__SLEEPERS) cf__futex_wake(&f->state, INT32_MAX, false);
    while (cbs) {
        struct cf__listener *next = cbs->next;
        cbs->cb(f, cbs->ud);
        cf__free(cbs, sizeof *cbs);
        cbs = next;
    }
}

/* Become the one completer. Relaxed: the claim orders nothing by itself
 * (the outcome fields are written only by the claimer and published by
 * its release CAS in finish()). */
static bool claim(cf_future *f)
{
    uint32_t s = load_state(f, memory_order_relaxed);
    do {
        if (cf__state_done(s) || (s & CF__CLAIMED)) return false;
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, s | CF__CLAIMED,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* The claimer publishes FINISHED: only the LOCK/HAS_LISTENERS/SLEEPERS
 * bits can change under us. CLAIMED is cleared, and SLEEPERS too unless
 * the future is now DELIVERING (see done_word): fire() wakes every sleeper
 * and nobody sleeps on a delivered future. */
static inline void finish(cf_future *f, uint32_t bits)
{
    uint32_t s = load_state(f, memory_order_relaxed), n;
    do {
        n = done_word(s, CF__FINISHED | bits);
        /* release: publishes the outcome fields written above to every
         * reader whose acquire load (or acquire RMW) sees a done state. */
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, n, memory_order_release,
                                                    memory_order_relaxed));
    CF__ASSERT((s & CF__CLAIMED) && !cf__state_done(s)); /* only the claimer finishes */
    CF__YIELD_POINT(); /* debug builds: done, listeners not yet notified */
    CF__PROBE1(future_done, f);
    fire(f, s);
}

/* The claimer reuses the payload: first the argument must go. A pinner
 * (cf__future_arg_pin) may still be reading it: its pin was taken before
 * our claim (a pin needs an unclaimed word), so we wait for the unpin,
 * a bounded copy. The acquire load pairs with the unpin's release RMW: the
 * pinner's reads happen before our writes. SIZE still describes the
 * argument (only finish() changes it). */
static void arg_drop(cf_future *f)
{
    uint32_t s = load_state(f, memory_order_acquire);
    for (unsigned spins = 0; s & CF__ARG_PINNED; spins++) {
        if (spins & 63) cf__cpu_relax();
        else sched_yield();
        s = load_state(f, memory_order_acquire);
    }
    if (cf__state_size(s) == CF__SIZE_HEAP) cf__free(f->p.heap.ptr, (size_t)f->p.heap.len);
}

static inline uint32_t outcome_bits(enum cf__outcome oc, uint32_t size)
{
    return ((uint32_t)oc << CF__OUTCOME_SHIFT) | (size << CF__SIZE_SHIFT);
}

/* An error outcome into the (claimed) future's payload. */
static uint32_t put_error(cf_future *f, enum cf__outcome oc, int code, char *msg)
{
    f->p.err.msg = msg;
    f->p.err.code = code;
    return outcome_bits(oc, 0);
}

/* Move a staged outcome into the (claimed) future, whose argument is gone
 * (arg_drop); o is left empty. Returns the outcome and SIZE bits that
 * finish() publishes. */
static uint32_t take_out(cf_future *f, int code, struct cf_out *o)
{
    if (code == 0 && o->len > CF__REC_INLINE && o->data == o->small) {
        /* Staged inline in o, too long for the record: a buffer of its own. */
        void *p = cf__alloc(o->len);
        if (p) {
            memcpy(p, o->small, o->len);
            o->data = p;
            o->cap = o->len;
        } else {
            o->failed = CF_ENOMEM;
        }
    }
    if (code == 0 && o->failed) {
        /* The task ignored a failed cf_out_* call: do not pass off a
         * missing result as a success. */
        code = o->failed;
        cf__free_str(o->msg);
        o->msg = cf__strdup(code == CF_ETOOBIG
                                ? "cfutures: the task's result is larger than 4 GiB"
                                : "cfutures: out of memory storing the task's result");
    }
    uint32_t bits;
    if (code != 0) {
        bits = put_error(f, CF__TASK_ERROR, code, o->msg);
        o->msg = NULL;
    } else if (o->len == sizeof(int64_t)) {
        memcpy(f->p.bytes, o->data, sizeof(int64_t)); /* the usual scalar: no call */
        bits = outcome_bits(CF__OK, sizeof(int64_t));
    } else if (o->len <= CF__REC_INLINE) {
        if (o->len) memcpy(f->p.bytes, o->data, o->len);
        bits = outcome_bits(CF__OK, (uint32_t)o->len);
    } else {
        f->p.heap.ptr = o->data; /* hand over, no copy */
        f->p.heap.len = o->len;
        bits = outcome_bits(CF__OK, CF__SIZE_HEAP);
        o->data = o->small;
        o->cap = 0;
        o->len = 0;
    }
    /* Usually nothing is left to free (inline result, no message). */
    if (o->data != o->small || o->msg) {
        cf__out_dispose(o);
    } else { /* what dispose leaves, without the calls */
        o->len = 0;
        o->cap = 0;
        o->code = 0;
        o->failed = 0;
    }
    return bits;
}

/* ---- records and references ---- */

/* Records come from per-thread slabs (sys/slab.c): 2 MiB chunks carved in
 * order, so a burst of submits writes memory that is already resident and
 * contiguous, with no per-record allocator metadata. Under ASan they come
 * from libc's malloc one by one instead, so ASan and LSan still see every
 * record (use after free, leaks); the slab has tests of its own there.
 *
 * On top, a per-thread cache of free records (pool workers turn it on):
 * fork-join allocates and frees a record per task, nearly always on the
 * same worker, so the hot path reuses lines already in cache (a slab
 * reuses a record only once its whole chunk is free). A LIFO list linked
 * through `owner.next_free`, owned by one thread, bounded; a record freed
 * by another thread joins that thread's cache (or goes back to the slab):
 * records are interchangeable. Under ASan a cached record is poisoned, so
 * a use after free is still reported. */
#define REC_CACHE_MAX 256

struct rec_cache {
    cf_future *head;
    unsigned n;
    bool on;
};
static _Thread_local struct rec_cache tls_rc;

#ifdef CF_ASAN
#include <sanitizer/asan_interface.h>
#define REC_POISON(f) ASAN_POISON_MEMORY_REGION((f), sizeof(struct cf_future))
#define REC_UNPOISON(f) ASAN_UNPOISON_MEMORY_REGION((f), sizeof(struct cf_future))
#else
#define REC_POISON(f) ((void)0)
#define REC_UNPOISON(f) ((void)0)
#endif

#ifdef CF_ASAN
static inline cf_future *rec_new_mem(void)
{
    return cf__alloc(sizeof(struct cf_future));
}
static inline void rec_release_mem(cf_future *f)
{
    cf__free(f, sizeof *f);
}
#else
static inline cf_future *rec_new_mem(void)
{
    return cf__slab_alloc();
}
static inline void rec_release_mem(cf_future *f)
{
    cf__slab_free(f);
}
#endif

void cf__future_cache_enable(void)
{
    tls_rc.on = true;
}

void cf__future_cache_drain(void)
{
    tls_rc.on = false;
    while (tls_rc.head) {
        cf_future *f = tls_rc.head;
        REC_UNPOISON(f);
        tls_rc.head = f->owner.next_free;
        rec_release_mem(f);
    }
    tls_rc.n = 0;
}

static inline cf_future *rec_alloc(void)
{
    cf_future *f = tls_rc.head;
    if (f) {
        REC_UNPOISON(f);
        tls_rc.head = f->owner.next_free;
        tls_rc.n--;
        return f;
    }
    return rec_new_mem();
}

static inline void rec_dealloc(cf_future *f)
{
    if (tls_rc.on && tls_rc.n < REC_CACHE_MAX) {
        f->owner.next_free = tls_rc.head;
        tls_rc.head = f;
        tls_rc.n++;
        REC_POISON(f);
        return;
    }
    rec_release_mem(f);
}

#if CF__DEBUG_CHECKS
/* Debug builds: a released record is poisoned and held back for the next
 * CF__QUARANTINE releases before it can be reused (debug_checks.h).
 * Lock-free: each push takes a slot by fetch_add and swaps its record in;
 * whatever it swaps out is reused. acq_rel on the exchange: release hands
 * our poisoning (and last use) to the thread that will evict the record,
 * acquire makes the previous pusher's writes visible before we reuse the
 * record we evict. */
static _Atomic(cf_future *) quarantine[CF__QUARANTINE];
static _Atomic unsigned quarantine_next;

static void quarantine_push(cf_future *f)
{
    atomic_store_explicit(&f->state, CF__FREED_STATE, memory_order_relaxed);
    unsigned i = atomic_fetch_add_explicit(&quarantine_next, 1, memory_order_relaxed);
    cf_future *old = atomic_exchange_explicit(&quarantine[i % CF__QUARANTINE], f,
                                              memory_order_acq_rel);
    if (old) rec_dealloc(old);
}

/* A call on a released future: it is in quarantine (poisoned state) or,
 * under ASan, poisoned memory. */
static void check_live(const cf_future *f, const char *call, const char *problem)
{
    if (f &&
        (cf__debug_poisoned(f) ||
         atomic_load_explicit(&((cf_future *)f)->state, memory_order_relaxed) == CF__FREED_STATE))
        cf__debug_fail(call, "future", f, problem);
}
#define CHECK_LIVE(f, call) check_live((f), (call), "used after its last release")
#else
#define CHECK_LIVE(f, call) ((void)0)
#endif

static cf_future *record_new(uint32_t refs, uint32_t size, cf_task_fn *fn,
                             const struct cf__future_ops *ops, void *owner)
{
    cf_future *f = rec_alloc();
    if (!f) return NULL;
    /* Field by field, not "= (struct cf_future){...}": zeroing the whole
     * record compiled to `rep stos`. The payload is written by the caller
     * (SIZE says how much of it is meaningful). */
    atomic_init(&f->state, CF__PENDING | (size << CF__SIZE_SHIFT));
    atomic_init(&f->refs, refs);
    f->fn = fn;
    f->ops = ops;
    f->owner.executor = owner;
    f->listeners = NULL;
    f->qnode.next = NULL; /* cds_wfcq_node_init, without a call into liburcu */
    return f;
}

cf_future *cf__future_new(void)
{
    return record_new(1, 0, NULL, NULL, NULL);
}

int cf_future_new(cf_future **out)
{
    if (!out) return CF_EINVAL;
    *out = cf__future_new();
    return *out ? 0 : CF_ENOMEM;
}

cf_future *cf__future_new_task(cf_task_fn *fn, const void *arg, size_t arg_len,
                               const struct cf__future_ops *ops, void *owner)
{
    if (arg_len > UINT32_MAX || (!arg && arg_len)) return NULL;
    if (arg_len <= CF__REC_INLINE) {
        cf_future *f = record_new(2, (uint32_t)arg_len, fn, ops, owner);
        if (!f) return NULL;
        if (arg_len == sizeof(int64_t)) memcpy(f->p.bytes, arg, sizeof(int64_t)); /* no call */
        else if (arg_len) memcpy(f->p.bytes, arg, arg_len);
        return f;
    }
    void *p = cf__alloc(arg_len);
    if (!p) return NULL;
    cf_future *f = record_new(2, CF__SIZE_HEAP, fn, ops, owner);
    if (!f) {
        cf__free(p, arg_len);
        return NULL;
    }
    memcpy(p, arg, arg_len);
    f->p.heap.ptr = p;
    f->p.heap.len = arg_len;
    return f;
}

/* The last reference went: nobody else reads the record. Its final word
 * says what the payload holds (future.h): a cancelled or never-run task's
 * argument, a result, or an error. */
static inline void record_free(cf_future *f)
{
    if (f->ops && f->ops->on_free) f->ops->on_free(f);
    uint32_t s = load_state(f, memory_order_relaxed);
    if ((s & CF__STATE_MASK) == CF__FINISHED && cf__state_outcome(s) != CF__OK) {
        cf__free_str(f->p.err.msg);
    } else if (cf__state_size(s) == CF__SIZE_HEAP) {
        /* A result buffer's capacity may exceed its length: size unknown. */
        bool result = (s & CF__STATE_MASK) == CF__FINISHED;
        cf__free(f->p.heap.ptr, result ? 0 : (size_t)f->p.heap.len);
    }
    /* Callbacks of a future that never completed. (A waiter node cannot be
     * linked here: its waiter holds a reference while it is.) */
    for (struct cf__listener *l = f->listeners, *next; l; l = next) {
        next = l->next;
        if (l->cb) cf__free(l, sizeof *l);
    }
#if CF__DEBUG_CHECKS
    quarantine_push(f);
#else
    rec_dealloc(f);
#endif
}

cf_future *cf_future_retain(cf_future *f)
{
    CHECK_LIVE(f, "cf_future_retain");
    /* relaxed: a new reference is made from one we hold; nothing to order. */
    if (f) atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void cf_future_release(cf_future *f)
{
    if (!f) return;
#if CF__DEBUG_CHECKS
    check_live(f, "cf_future_release", "released twice");
#else
    /* The only holder skips the decrement. We hold a reference, so the
     * count is at least 1, and a count of 1 means nobody else holds one;
     * a new one can only be made from a held one (retain), i.e. by us, so
     * it stays 1 and nobody can free the record meanwhile. acquire: reading
     * 1, the value the last other holder's release decrement left (the
     * decrements and increments are RMWs, so that decrement's release
     * sequence reaches our load), makes every other holder's use of the
     * record happen before the free, as the fence below does. Saves a
     * locked RMW whenever the caller drops the last reference (submit,
     * wait, read, release). Debug builds take the counting path, which
     * catches a double release. */
    if (atomic_load_explicit(&f->refs, memory_order_acquire) == 1) {
        record_free(f);
        return;
    }
#endif
    /* release: our uses of the record happen before the destruction by
     * whoever drops the last reference (pairs with the acquire below). */
    uint32_t had = atomic_fetch_sub_explicit(&f->refs, 1, memory_order_release);
    if (CF__DEBUG_CHECKS && had == 0)
        cf__debug_fail("cf_future_release", "future", f, "released twice");
    if (had != 1) return;
    /* acquire: pairs with every other holder's release decrement, so their
     * reads and writes of the record are complete before we free it. */
    CF__ACQUIRE_AFTER(&f->refs);
    record_free(f);
}

/* ---- queries ---- */

/* The word as a query may report it: a done future still delivering is
 * waited for first (a few steps of its completer, so no deadline applies).
 * acquire on every query: a caller that sees done may read what the
 * completer wrote before completing (pairs with finish()'s release), and
 * everything its delivery did (pairs with fire()'s release clear of
 * DELIVERING). */
static uint32_t query_state(const cf_future *f)
{
    uint32_t s = load_state(f, memory_order_acquire);
    if (__builtin_expect(s & CF__DELIVERING, 0)) {
        /* never a const object: futures are heap records */
        (void)cf__future_wait_done((cf_future *)f, CF__NO_DEADLINE);
        s = load_state(f, memory_order_acquire);
    }
    return s;
}

bool cf_future_cancelled(const cf_future *f)
{
    CHECK_LIVE(f, "cf_future_cancelled");
    return f && (query_state(f) & CF__STATE_MASK) == CF__CANCELLED;
}

bool cf_future_running(const cf_future *f)
{
    CHECK_LIVE(f, "cf_future_running");
    if (!f) return false;
    uint32_t st = query_state(f) & CF__STATE_MASK;
    if (st == CF__PENDING && f->ops && f->ops->sync_running) {
        /* The executor may know better (a ring slot a worker has begun). */
        f->ops->sync_running((cf_future *)f);
        st = query_state(f) & CF__STATE_MASK;
    }
    return st == CF__RUNNING;
}

bool cf_future_done(const cf_future *f)
{
    CHECK_LIVE(f, "cf_future_done");
    return f && cf__state_done(query_state(f));
}

/* ---- waiting ---- */

#define WAIT_PURE_SPIN_NS 2000 /* then: sleep if not started, else spin yielding */

/* Spin for up to `spin` ns, then sleep on the futex. Plain futures and
 * executors without an on_wait hook: a pure spin. With the hook (the thread
 * pool): the hook may tell us to sleep at once; else the spin is pure for
 * its first WAIT_PURE_SPIN_NS (a hot round trip is well under that), and
 * past that a task nobody has started is probably not coming soon (workers
 * asleep, or the one that would take it shares our CPU): we sleep, which
 * also lets the scheduler move us to an idle CPU when we are woken. A task
 * that is running is awaited with sched_yield between looks, in case it
 * runs on our own CPU. */
static int wait_done_spin(cf_future *f, cf__deadline deadline, long spin,
                          bool (*on_wait)(cf_future *))
{
    /* acquire loads throughout: returning 0 lets the caller read the
     * outcome (pairs with finish()'s and cancel's release CAS, and with
     * fire()'s release clear of DELIVERING). */
    uint32_t s = load_state(f, memory_order_acquire);
    if (cf__state_settled(s)) return 0;
    if (on_wait && !cf__state_done(s) && on_wait(f)) spin = 0;

    if (spin > 0) {
        int64_t start = cf__now_ns();
        int64_t end = start + spin;
        if (end > deadline) end = deadline;
        int64_t pure_end = on_wait ? start + WAIT_PURE_SPIN_NS : INT64_MAX;
        for (;;) {
            for (int i = 0; i < 64; i++) {
                cf__cpu_relax();
                if (cf__state_settled(load_state(f, memory_order_acquire))) return 0;
            }
            int64_t now = cf__now_ns();
            if (now >= end) break;
            if (now >= pure_end) {
                if ((load_state(f, memory_order_relaxed) & CF__STATE_MASK) == CF__PENDING) break;
                sched_yield();
            }
        }
    }

    s = load_state(f, memory_order_acquire);
    for (;;) {
        if (cf__state_settled(s)) return 0;
        if (!(s & CF__SLEEPERS)) {
            /* acquire on both outcomes: a failed CAS hands back the current
             * word, which we test for done (pairs with the release CAS that
             * made it done, or cleared DELIVERING). Success publishes
             * nothing: the completer's RMW reads the bit atomically, and the
             * kernel re-checks the word. */
            if (!atomic_compare_exchange_strong_explicit(
                    &f->state, &s, s | CF__SLEEPERS, memory_order_acquire, memory_order_acquire))
                continue;
            s |= CF__SLEEPERS;
        }
        /* Done but delivering: no deadline (see cf__future_wait_done). */
        int rc = cf__futex_wait(&f->state, s, cf__state_done(s) ? CF__NO_DEADLINE : deadline,
                                false);
        s = load_state(f, memory_order_acquire);
        if (rc == CF_ETIMEDOUT && !cf__state_done(s)) return CF_ETIMEDOUT;
    }
}

int cf__future_wait_done(cf_future *f, cf__deadline deadline)
{
    return wait_done_spin(f, deadline, cf__wait_spin_ns(), NULL);
}

static int wait_for_slow(cf_future *f, double timeout, uint32_t s);

/* 0 once f is done, CF_ETIMEDOUT, or CF_EINVAL. Inline: the usual wait
 * inside a pool task (no timeout, f not done: the helper runs it or other
 * work) costs no call but the helper's. */
static inline int wait_for(cf_future *f, double timeout)
{
    if (!f || isnan(timeout)) return CF_EINVAL;
    /* acquire: as in query_state. */
    uint32_t s = load_state(f, memory_order_acquire);
    if (cf__state_settled(s)) return 0;
    cf__wait_helper_fn *help = cf__tls_wait_helper;
    if (help && timeout < 0 && !cf__state_done(s)) {
        /* A pool worker: run other tasks while f is not done. With no
         * deadline the helper returns once f is done. */
        (void)help(cf__tls_wait_helper_ctx, f, CF__NO_DEADLINE);
        /* acquire: as in query_state; the usual way out (done, delivered). */
        if (cf__state_settled(load_state(f, memory_order_acquire))) return 0;
        return cf__future_wait_done(f, CF__NO_DEADLINE); /* done: waits out a delivery */
    }
    return wait_for_slow(f, timeout, s);
}

/* wait_for with a timeout, outside a pool, or on a future that is done
 * but still delivering (s: the word wait_for read). */
static int wait_for_slow(cf_future *f, double timeout, uint32_t s)
{
    if (cf__state_done(s)) return cf__future_wait_done(f, CF__NO_DEADLINE); /* delivering */
    if (timeout == 0) return CF_ETIMEDOUT;                                  /* poll */
    cf__deadline dl = CF__NO_DEADLINE; /* a negative timeout: no call */
    if (timeout >= 0) (void)cf__deadline_from_timeout(timeout, &dl); /* cannot fail: not NaN */
    cf__wait_helper_fn *help = cf__tls_wait_helper;
    if (help) {
        /* A pool worker: run other tasks while f is not done. */
        int rc = help(cf__tls_wait_helper_ctx, f, dl);
        /* acquire: as in query_state; the usual way out (done, delivered)
         * without a second wait's call. */
        if (rc == 0 && cf__state_settled(load_state(f, memory_order_acquire))) return 0;
        /* relaxed: only picks the way out; the wait below acquires. */
        if (rc == CF_ETIMEDOUT && !cf__state_done(load_state(f, memory_order_relaxed)))
            return CF_ETIMEDOUT;
        return cf__future_wait_done(f, dl); /* at once if done and delivered */
    }
    /* No deadline: the executor may run f here if nobody has started it
     * (see cf__future_ops.run_awaited); f is then done. */
    if (dl == CF__NO_DEADLINE && f->ops && f->ops->run_awaited &&
        f->ops->run_awaited(f) == CF__RUN_RAN)
        return cf__future_wait_done(f, CF__NO_DEADLINE); /* at once: done */
    /* The executor may ask us to stop spinning (see cf__future_ops). */
    return wait_done_spin(f, dl, cf__wait_spin_ns(), f->ops ? f->ops->on_wait : NULL);
}

/* cf_future_result's body: inline in the typed results too, which are on
 * every fork-join wait's path (no second call, nor a PLT hop through the
 * shared library). */
static inline int result_of(cf_future *f, double timeout, const void **data, size_t *len)
{
    int rc = wait_for(f, timeout);
    if (rc) return rc;
    /* The caller has synchronised with the completer (acquire in wait_for):
     * the outcome and SIZE bits of this word describe the payload. */
    uint32_t s = load_state(f, memory_order_relaxed);
    if ((s & CF__STATE_MASK) == CF__CANCELLED) return CF_ECANCELLED;
    switch (cf__state_outcome(s)) {
    case CF__OK: {
        uint32_t z = cf__state_size(s);
        if (data) *data = z == CF__SIZE_HEAP ? f->p.heap.ptr : f->p.bytes;
        if (len) *len = z == CF__SIZE_HEAP ? (size_t)f->p.heap.len : z;
        return 0;
    }
    case CF__TASK_ERROR: return CF_ETASK;
    default: return CF_EBROKEN;
    }
}

int cf_future_result(cf_future *f, double timeout, const void **data, size_t *len)
{
    CHECK_LIVE(f, "cf_future_result");
    return result_of(f, timeout, data, len);
}

static int result_sized(cf_future *f, double timeout, void *v, size_t size)
{
    if (!v) return CF_EINVAL;
    const void *data;
    size_t len;
    int rc = result_of(f, timeout, &data, &len); /* the caller checked f is live */
    if (rc) return rc;
    if (len != size) return CF_EINVAL;
    memcpy(v, data, size);
    return 0;
}

int cf_future_result_i64(cf_future *f, double timeout, int64_t *v)
{
    CHECK_LIVE(f, "cf_future_result_i64");
    return result_sized(f, timeout, v, sizeof *v);
}

int cf_future_result_f64(cf_future *f, double timeout, double *v)
{
    CHECK_LIVE(f, "cf_future_result_f64");
    return result_sized(f, timeout, v, sizeof *v);
}

int cf_future_result_ptr(cf_future *f, double timeout, void **p)
{
    CHECK_LIVE(f, "cf_future_result_ptr");
    return result_sized(f, timeout, p, sizeof *p);
}

int cf_future_exception(cf_future *f, double timeout, int *code, const char **msg)
{
    CHECK_LIVE(f, "cf_future_exception");
    int rc = wait_for(f, timeout);
    if (rc) return rc;
    uint32_t s = load_state(f, memory_order_relaxed);
    if ((s & CF__STATE_MASK) == CF__CANCELLED) return CF_ECANCELLED;
    bool ok = cf__state_outcome(s) == CF__OK;
    if (code) *code = ok ? 0 : f->p.err.code;
    if (msg) *msg = ok ? NULL : f->p.err.msg;
    return 0;
}

/* ---- transitions ---- */

static bool cancel_core(cf_future *f, bool hooks);

bool cf_future_cancel(cf_future *f)
{
    CHECK_LIVE(f, "cf_future_cancel");
    if (!f) return false;
    /* relaxed: only decides whether to ask the executor first; the CAS in
     * cancel_core decides the state. */
    uint32_t s = load_state(f, memory_order_relaxed);
    if ((s & CF__STATE_MASK) == CF__PENDING && !(s & CF__CLAIMED) && f->ops && f->ops->try_cancel &&
        !f->ops->try_cancel(f)) {
        /* Begun where the executor keeps its copy: pass the request on. */
        if (f->ops->request_cancel) f->ops->request_cancel(f);
        /* Someone else may have cancelled it meanwhile: report that only
         * once delivered (query_state). */
        return cf_future_cancelled(f);
    }
    return cancel_core(f, true);
}

/* cancel() found f RUNNING: the task is not interrupted, but it may poll
 * the request (cf_out_cancel_requested). Release CAS: what the canceller
 * wrote before cancel() is visible to a task whose acquire load sees the
 * bit. Only on a RUNNING word: the done word drops the bit. */
static void request_cancel(cf_future *f, uint32_t s)
{
    while ((s & CF__STATE_MASK) == CF__RUNNING && !(s & CF__CANCEL_REQ)) {
        if (atomic_compare_exchange_weak_explicit(&f->state, &s, s | CF__CANCEL_REQ,
                                                  memory_order_release, memory_order_relaxed))
            break;
    }
    if (f->ops && f->ops->request_cancel) f->ops->request_cancel(f);
}

bool cf__future_cancel_quiet(cf_future *f)
{
    return cancel_core(f, false);
}

static bool cancel_core(cf_future *f, bool hooks)
{
    uint32_t s = load_state(f, memory_order_relaxed);
    for (;;) {
        uint32_t st = s & CF__STATE_MASK;
        if (st == CF__CANCELLED) {
            /* Reporting "cancelled": acquire, and wait out another
             * canceller's delivery (query_state). */
            (void)query_state(f);
            return true;
        }
        if (st != CF__PENDING || (s & CF__CLAIMED)) {
            if (hooks && st == CF__RUNNING) request_cancel(f, s);
            return false;
        }
        /* release: what the canceller did before cancelling is visible to
         * whoever sees the cancelled state (as for a result). */
        /* The argument stays (SIZE kept): the last release frees it. */
        if (atomic_compare_exchange_weak_explicit(&f->state, &s,
                                                  done_word(s, CF__CANCELLED | (s & CF__SIZE_MASK)),
                                                  memory_order_release, memory_order_relaxed))
            break;
    }
    CF__PROBE1(cancel, f);
    CF__YIELD_POINT(); /* debug builds: cancelled, listeners not yet notified */
    if (hooks && f->ops && f->ops->on_cancel) f->ops->on_cancel(f);
    fire(f, s);
    return true;
}

static int start_running(cf_future *f, uint32_t extra)
{
    uint32_t s = load_state(f, memory_order_relaxed);
    for (;;) {
        uint32_t st = s & CF__STATE_MASK;
        if (st == CF__CANCELLED) return CF_ECANCELLED;
        if (st != CF__PENDING || (s & CF__CLAIMED)) return CF_ESTATE;
        /* acquire: the runner then reads the task record (fn, arg) written
         * by its creator; those writes reached us through the executor's
         * queue already, and this pairs with any release RMW on the word
         * (e.g. a cancel that lost) so nothing stale is acted upon. */
        if (atomic_compare_exchange_weak_explicit(&f->state, &s,
                                                  (s & ~CF__STATE_MASK) | CF__RUNNING | extra,
                                                  memory_order_acquire, memory_order_relaxed))
            return 0;
    }
}

int cf_future_set_running_or_notify_cancel(cf_future *f)
{
    CHECK_LIVE(f, "cf_future_set_running_or_notify_cancel");
    if (!f) return CF_EINVAL;
    return start_running(f, 0);
}

bool cf__future_mark_running(cf_future *f)
{
    return f && start_running(f, 0) == 0;
}

bool cf__future_run(cf_future *f)
{
    if (!f || !f->fn) return false;
    /* Start and claim in one CAS: the hot path is this CAS and finish()'s. */
    if (start_running(f, CF__CLAIMED) != 0) return false;
    CF__PROBE1(future_run, f);
    struct cf_out o; /* as cf__out_init leaves it, inline */
    o.data = o.small;
    o.len = 0;
    o.cap = 0;
    o.code = 0;
    o.msg = NULL;
    o.failed = 0;
    o.ctx = NULL;
    o.future = f;
    o.cancel_word = NULL;
    int code = f->fn(cf__future_arg(f), cf__future_arg_len(f), &o);
    /* Keep no reference to the argument past the run (SEMANTICS 10); the
     * result takes its place. */
    arg_drop(f);
    finish(f, take_out(f, code, &o));
    return true;
}

int cf__future_complete_from_out(cf_future *f, int task_code, struct cf_out *o)
{
    if (!f || !o) return CF_EINVAL;
    if (!claim(f)) return CF_ESTATE;
    arg_drop(f);
    finish(f, take_out(f, task_code, o));
    return 0;
}

int cf__future_fail_broken(cf_future *f, const char *fmt, ...)
{
    if (!f) return CF_EINVAL;
    /* relaxed: an early way out that saves formatting; claim() decides. */
    if (cf__state_done(load_state(f, memory_order_relaxed))) return CF_ESTATE;
    char *msg = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        msg = cf__vformat(fmt, ap);
        va_end(ap);
    }
    if (!claim(f)) {
        cf__free_str(msg);
        return CF_ESTATE;
    }
    arg_drop(f);
    finish(f, put_error(f, CF__BROKEN, CF_EBROKEN, msg));
    return 0;
}

int cf_future_set_result(cf_future *f, const void *data, size_t len)
{
    CHECK_LIVE(f, "cf_future_set_result");
    if (!f || (!data && len)) return CF_EINVAL;
    if (len > UINT32_MAX) return CF_ETOOBIG;
    /* relaxed: an early way out that saves the allocation; claim() decides. */
    uint32_t s = load_state(f, memory_order_relaxed);
    if (cf__state_done(s) || (s & CF__CLAIMED)) return CF_ESTATE;
    void *heap = NULL;
    if (len > CF__REC_INLINE) { /* allocate before claiming: a failed call changes nothing */
        if (!(heap = cf__alloc(len))) return CF_ENOMEM;
        memcpy(heap, data, len);
    }
    if (!claim(f)) {
        cf__free(heap, len);
        return CF_ESTATE;
    }
    arg_drop(f);
    if (heap) {
        f->p.heap.ptr = heap;
        f->p.heap.len = len;
    } else if (len) {
        memcpy(f->p.bytes, data, len);
    }
    finish(f, outcome_bits(CF__OK, heap ? CF__SIZE_HEAP : (uint32_t)len));
    return 0;
}

/* The two public ways to fail a future: the task's error (CF_ETASK from
 * cf_future_result) or the executor's (CF_EBROKEN). */
static int set_error(cf_future *f, enum cf__outcome oc, int code, const char *msg)
{
    /* relaxed: an early way out that saves the copy; claim() decides. */
    uint32_t s = load_state(f, memory_order_relaxed);
    if (cf__state_done(s) || (s & CF__CLAIMED)) return CF_ESTATE;
    char *copy = NULL;
    if (msg && !(copy = cf__strdup(msg))) return CF_ENOMEM;
    if (!claim(f)) {
        cf__free_str(copy);
        return CF_ESTATE;
    }
    arg_drop(f);
    finish(f, put_error(f, oc, code, copy));
    return 0;
}

int cf_future_set_broken(cf_future *f, const char *msg)
{
    CHECK_LIVE(f, "cf_future_set_broken");
    if (!f) return CF_EINVAL;
    return set_error(f, CF__BROKEN, CF_EBROKEN, msg);
}

int cf_future_set_exception(cf_future *f, int code, const char *msg)
{
    CHECK_LIVE(f, "cf_future_set_exception");
    if (!f || code == 0) return CF_EINVAL;
    return set_error(f, CF__TASK_ERROR, code, msg);
}

/* ---- pinning the argument ---- */

bool cf__future_arg_pin(cf_future *f)
{
    uint32_t s = load_state(f, memory_order_relaxed);
    do {
        if (cf__state_done(s) || (s & CF__CLAIMED)) return false;
        CF__ASSERT(!(s & CF__ARG_PINNED)); /* one pinner at a time */
        /* relaxed: the argument was published to us with the record (the
         * executor's queue or lock); a claimer that follows orders itself
         * after our reads through the unpin (release) and its acquire. */
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, s | CF__ARG_PINNED,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

void cf__future_arg_unpin(cf_future *f)
{
    /* release: our reads of the argument happen before a claimer's acquire
     * load (arg_drop) that sees the bit clear, and so before it frees or
     * overwrites the argument. */
    atomic_fetch_and_explicit(&f->state, ~CF__ARG_PINNED, memory_order_release);
}

/* ---- listeners ---- */

struct cf__listener *cf__listener_new(cf_done_fn *cb, void *ud)
{
    struct cf__listener *l = cf__alloc(sizeof *l);
    if (!l) return NULL;
    l->cb = cb;
    l->ud = ud;
    return l;
}

void cf__listener_free(struct cf__listener *l)
{
    if (l) cf__free(l, sizeof *l);
}

void cf__future_add_listener(cf_future *f, struct cf__listener *l)
{
    cf_done_fn *cb = l->cb;
    void *ud = l->ud;
    /* The lock's acquire CAS read the word; if it is done, it synchronised
     * with the completing release CAS (all later changes are RMWs, which
     * continue its release sequence), so cb may read the outcome. */
    uint32_t s = list_lock(f);
    if (cf__state_done(s)) {
        list_unlock(f, f->listeners != NULL);
        cf__free(l, sizeof *l);
        (void)cf_future_done(f); /* waits out a delivery */
        cb(f, ud);
        return;
    }
    l->next = f->listeners;
    f->listeners = l;
    list_unlock(f, true);
}

int cf_future_add_done_callback(cf_future *f, cf_done_fn *cb, void *ud)
{
    CHECK_LIVE(f, "cf_future_add_done_callback");
    if (!f || !cb) return CF_EINVAL;
    /* cb may read the outcome: cf_future_done acquires (and waits out a
     * delivery). */
    if (cf_future_done(f)) {
        cb(f, ud);
        return 0;
    }
    struct cf__listener *l = cf__listener_new(cb, ud);
    if (!l) return CF_ENOMEM; /* cb is never called */
    cf__future_add_listener(f, l);
    return 0;
}

bool cf__waiter_node_add(cf_future *f, struct cf__waiter_node *node)
{
    /* acquire: a waiter told "already done" may read the outcome (pairs
     * with finish()'s and cancel's release CAS). */
    if (cf__state_done(load_state(f, memory_order_acquire))) return false;
    node->future = f;
    node->link_.cb = NULL;
    node->link_.ud = NULL;
    uint32_t s = list_lock(f);
    if (cf__state_done(s)) {
        list_unlock(f, f->listeners != NULL);
        return false;
    }
    node->link_.next = f->listeners;
    f->listeners = &node->link_;
    list_unlock(f, true);
    return true;
}

bool cf__waiter_node_remove(cf_future *f, struct cf__waiter_node *node)
{
    uint32_t s = list_lock(f);
    if (cf__state_done(s)) {
        /* The completer owns the node: it has detached the list, or is
         * waiting for this lock to do so, and will notify. */
        list_unlock(f, f->listeners != NULL);
        return false;
    }
    struct cf__listener **pp = &f->listeners;
    while (*pp && *pp != &node->link_) pp = &(*pp)->next;
    if (*pp) *pp = node->link_.next;
    list_unlock(f, f->listeners != NULL);
    return true;
}
