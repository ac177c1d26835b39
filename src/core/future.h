/* Internal view of a future: the record that is at once the task (function
 * and argument) and its outcome, so a submit costs one allocation. One
 * cache line: 64 bytes (a _Static_assert in future.c holds it there).
 *
 * Layout (byte offsets):
 *    0  state      the state word (below)
 *    4  refs       reference count
 *    8  fn         the task; NULL for cf_future_new
 *   16  ops        executor hooks or NULL
 *   24  owner      the executor's word (union cf__future_owner)
 *   32  listeners  callbacks and waiter nodes, guarded by CF__LIST_LOCK
 *   40  qnode      the executor's queue link (thread pool: injection queue;
 *                  process pool: overflow list)
 *   48  p          16 bytes of payload, ONE of: the argument, the result,
 *                  or the error (message pointer and code)
 * The small fields (how the payload is used, how the task ended) live in
 * spare bits of the state word.
 *
 * The state word (struct cf_future.state):
 *   bits 0-1  CF__PENDING / CF__RUNNING / CF__CANCELLED / CF__FINISHED
 *   bit  2    CF__SLEEPERS: someone sleeps (or is about to) in futex_wait on
 *             this word; completion makes the futex_wake system call only
 *             when it is set.
 *   bit  3    CF__LIST_LOCK: guards the listener list (callbacks and
 *             cf_wait/as_completed waiters); held for O(1) steps (O(k) to
 *             unlink a waiter among k listeners), never across a callback.
 *   bit  4    CF__HAS_LISTENERS: the list is not empty, so completion must
 *             take the lock; the hot path (no listeners) never does.
 *   bit  5    CF__CLAIMED: one completer (cf__future_run, set_result,
 *             set_exception, complete_from_out, fail_broken) owns the
 *             outcome fields and will publish FINISHED; every other
 *             completer gets CF_ESTATE, and cancel() treats the future as
 *             no longer PENDING. cf__future_run claims in the same CAS that
 *             starts the task, so its hot path stays two CASes.
 *   bit  6    CF__DELIVERING: set by the CAS that makes a future with
 *             listeners done, cleared (release) once every waiter node has
 *             been notified. Until then the done state is not reported to
 *             anyone: queries that meet it wait for the clear (a few steps
 *             of the completer), so whoever learns "done" learns it after
 *             every as_completed iterator has the future in its done list.
 *             Never set without listeners: the hot path does not see it.
 *   bit  7    CF__ARG_PINNED: a thread other than the runner is reading the
 *             argument (cf__future_arg_pin); a claimer waits for the bit
 *             to clear before it reuses the payload.
 *   bits 8-9  the outcome (enum cf__outcome) once FINISHED; 0 before.
 *   bits 10-14 SIZE, what the payload holds: 0..CF__REC_INLINE bytes
 *             inline (p.bytes), or CF__SIZE_HEAP: a heap buffer (p.heap).
 *   bit  15   CF__CANCEL_REQ: cf_future_cancel() was called while the task
 *             ran; the task may poll it (cf_out_cancel_requested). Set
 *             only on a RUNNING word, by a release CAS; the task's
 *             acquire load pairs with it. The done word drops it.
 * A future is done when its state is CANCELLED or FINISHED; nothing leaves
 * those states. Every CAS on the word keeps the bits it does not mean to
 * change (outcome and SIZE included).
 *
 * Payload lifetime: who may read it, and why no reader sees the wrong one.
 * - The ARGUMENT is there from creation (SIZE set before the record is
 *   published) until a completer claims the future. Its readers are the
 *   runner, which reads it between its start CAS (which also claims) and
 *   the end of the task, and a thread holding a pin (the process pool
 *   copying an overflow task into a ring): a pin is taken only while the
 *   future is neither claimed nor done, and a claimer waits for the pin to
 *   go before it frees or overwrites anything. So the argument is read only
 *   by the claimer itself or before the claimer's first write.
 * - The OUTCOME (result bytes or buffer, or message and code) is written
 *   only by the claimer, after it disposed of the argument (arg_drop in
 *   future.c), and published, together with its SIZE and outcome bits, by
 *   the release CAS that makes the state FINISHED. Readers read it only
 *   after an acquire load that saw FINISHED, and read SIZE from that load.
 * - A CANCELLED future was never claimed: its payload is still the
 *   argument (SIZE unchanged), which the last release frees.
 * - The record is freed by the last release, when nobody else can read it. */
#ifndef CF_FUTURE_INTERNAL_H
#define CF_FUTURE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <urcu/wfcqueue.h>

#include "cfutures.h"
#include "core/executor.h" /* struct cf__future_ops, the wait helper */
#include "sync/container_of.h"
#include "sync/futex.h"

enum {
    CF__PENDING = 0,
    CF__RUNNING = 1,
    CF__CANCELLED = 2,
    CF__FINISHED = 3,
};
#define CF__STATE_MASK 3u
#define CF__SLEEPERS (1u << 2)
#define CF__LIST_LOCK (1u << 3)
#define CF__HAS_LISTENERS (1u << 4)
#define CF__CLAIMED (1u << 5)
#define CF__DELIVERING (1u << 6)
#define CF__ARG_PINNED (1u << 7)
#define CF__OUTCOME_SHIFT 8
#define CF__OUTCOME_MASK (3u << CF__OUTCOME_SHIFT)
#define CF__SIZE_SHIFT 10
#define CF__SIZE_MASK (31u << CF__SIZE_SHIFT)
#define CF__SIZE_HEAP 31u /* SIZE value: the payload is a heap buffer */
#define CF__CANCEL_REQ (1u << 15)

/* How a FINISHED future ended. */
enum cf__outcome { CF__OK = 0, CF__TASK_ERROR = 1, CF__BROKEN = 2 };

#define CF__REC_INLINE 16             /* the record's payload: inline argument or result */
#define CF__INLINE_ARG CF__REC_INLINE /* arguments up to this size live in the record */
/* What a cf_out stages without a heap buffer. A result up to CF__REC_INLINE
 * bytes then lives in the record; a larger one moves to a heap buffer. */
#define CF__INLINE_RES 32

/* One entry of a future's listener list: a done-callback (cb != NULL,
 * cf__alloc'd by add_done_callback) or the link of a waiter node (cb ==
 * NULL, embedded in struct cf__waiter_node, owned by the waiter). */
struct cf__listener {
    struct cf__listener *next;
    cf_done_fn *cb;
    void *ud;
};

/* The word a record keeps for whoever holds it, with one meaning at a
 * time: while the record is free in a thread's cache (future.c) it links
 * the cache; while it is a task, the executor that made it chooses one of
 * the other two and uses it through the accessors below - the thread pool
 * keeps a pointer to the pool, the process pool the ring position of the
 * task's slot (written once by the submitter, read by any thread that
 * cancels or queries the future: hence atomic). */
union cf__future_owner {
    void *executor;         /* cf__future_executor() */
    _Atomic uintptr_t slot; /* cf__future_slot_load() / _store() */
    cf_future *next_free;   /* future.c's record cache only */
};
_Static_assert(sizeof(_Atomic uintptr_t) == sizeof(void *), "one word");

/* The payload (see the lifetime rules at the top). */
union cf__payload {
    unsigned char bytes[CF__REC_INLINE]; /* SIZE bytes inline */
    struct {                             /* SIZE == CF__SIZE_HEAP */
        void *ptr;                       /* cf__alloc'd */
        uint64_t len;                    /* bytes of the argument or result */
    } heap;
    struct {       /* outcome CF__TASK_ERROR or CF__BROKEN (SIZE 0) */
        char *msg; /* cf__alloc'd or NULL */
        int32_t code;
    } err;
};

struct cf_future {
    _Atomic uint32_t state;
    _Atomic uint32_t refs;
    cf_task_fn *fn;                   /* the task; NULL for cf_future_new */
    const struct cf__future_ops *ops; /* executor hooks or NULL */
    union cf__future_owner owner;     /* one meaning at a time: see the union */
    struct cf__listener *listeners;   /* guarded by CF__LIST_LOCK, newest first */
    union {                           /* the queue the executor keeps it in */
        struct cds_wfcq_node qnode;   /* thread pool: injection-queue link */
        cf_future *next_queued;       /* process pool: overflow-list link */
    };
    union cf__payload p;
};

/* Where a running task's result is staged; the executor moves it into its
 * destination (a future, or a process-pool ring slot) after the call. */
struct cf_out {
    void *data; /* the result bytes: small[] or a cf__alloc'd buffer */
    size_t len;
    size_t cap; /* capacity of data when it is a heap buffer */
    int code;   /* set by cf_out_error */
    char *msg;  /* set by cf_out_error (cf__alloc'd) */
    int failed; /* an allocation inside cf_out_* failed */
    /* What the task may ask (cf_out_context, cf_out_cancel_requested),
     * set by whoever runs it: the context of cf_submit_ex, and where a
     * cancel request shows: the future's CF__CANCEL_REQ bit (a task run in
     * this process), or a word that holds cancel_key once the request is
     * made (the process pool's worker). All NULL: no context, never. */
    void *ctx;
    cf_future *future;
    const _Atomic uint64_t *cancel_word;
    uint64_t cancel_key;
    unsigned char small[CF__INLINE_RES];
};

void cf__out_init(struct cf_out *o);
void cf__out_dispose(struct cf_out *o); /* frees what was not taken */
/* Ready o for the next task that runs with it (cf_map runs one per item):
 * as cf__out_dispose, but when the task left only a small result (the usual
 * case) nothing is freed and only the outcome fields are cleared. */
static inline void cf__out_reset(struct cf_out *o)
{
    if (o->data != o->small || o->msg) {
        cf__out_dispose(o);
        return;
    }
    o->len = 0;
    o->code = 0;
    o->failed = 0;
}

/* cf_future_new's future, or NULL when out of memory. */
cf_future *cf__future_new(void);
/* A new PENDING task record with refs = 2 (the caller's and the
 * executor's) and a copy of arg. NULL on ENOMEM or arg_len > UINT32_MAX. */
cf_future *cf__future_new_task(cf_task_fn *fn, const void *arg, size_t arg_len,
                               const struct cf__future_ops *ops, void *owner);
/* The executor pointer given to cf__future_new_task. */
static inline void *cf__future_executor(const cf_future *f)
{
    return f->owner.executor;
}
/* An executor that keeps a position rather than a pointer (cf__future_new_task
 * with owner NULL) stores and loads it here; the caller names the order. */
static inline void cf__future_slot_store(cf_future *f, uintptr_t v, memory_order mo)
{
    atomic_store_explicit(&f->owner.slot, v, mo);
}
static inline uintptr_t cf__future_slot_load(const cf_future *f, memory_order mo)
{
    return atomic_load_explicit((_Atomic uintptr_t *)&f->owner.slot, mo);
}
/* The record whose injection-queue link this is. */
static inline cf_future *cf__future_of_qnode(struct cds_wfcq_node *node)
{
    return CF__CONTAINER_OF(node, cf_future, qnode);
}
static inline uint32_t cf__state_size(uint32_t s)
{
    return (s & CF__SIZE_MASK) >> CF__SIZE_SHIFT;
}
/* How a FINISHED future ended, from a word an acquire load returned. */
static inline enum cf__outcome cf__state_outcome(uint32_t s)
{
    return (enum cf__outcome)((s & CF__OUTCOME_MASK) >> CF__OUTCOME_SHIFT);
}
/* The argument and its length: for the runner (after its start CAS) or a
 * thread that holds a pin (cf__future_arg_pin). */
static inline const void *cf__future_arg(const cf_future *f)
{
    uint32_t s = atomic_load_explicit((_Atomic uint32_t *)&f->state, memory_order_relaxed);
    return cf__state_size(s) == CF__SIZE_HEAP ? f->p.heap.ptr : f->p.bytes;
}
static inline size_t cf__future_arg_len(const cf_future *f)
{
    uint32_t s = atomic_load_explicit((_Atomic uint32_t *)&f->state, memory_order_relaxed);
    uint32_t z = cf__state_size(s);
    return z == CF__SIZE_HEAP ? (size_t)f->p.heap.len : z;
}
/* Pin the argument of a PENDING, unclaimed future so that a thread other
 * than its runner may read it (cf__future_arg, _arg_len) until
 * cf__future_arg_unpin; a completer that claims the future meanwhile waits
 * for the unpin before it frees or overwrites the argument. False (nothing
 * pinned) if the future is claimed or done: its argument may be gone. One
 * pin at a time per future (the caller serialises its pinners). */
bool cf__future_arg_pin(cf_future *f);
void cf__future_arg_unpin(cf_future *f);

/* Executors run a task with this: PENDING->RUNNING (returns false, doing
 * nothing, if it was cancelled), run fn, complete the future with its
 * outcome (waking waiters, running callbacks in this thread). Does not drop
 * the executor's reference. */
bool cf__future_run(cf_future *f);

/* PENDING->CANCELLED without asking the executor (no try_cancel /
 * on_cancel): for an executor that already knows its copy was cancelled
 * (the process pool's collector seeing a skipped slot). Fires listeners.
 * Returns true if it is (now) cancelled. */
bool cf__future_cancel_quiet(cf_future *f);

/* PENDING->RUNNING without running anything (process pool: the worker has
 * begun it). False if it is not PENDING. */
bool cf__future_mark_running(cf_future *f);

/* Complete from a staged outcome (process pool collector): task_code 0 =
 * success with o's result (ownership of o's buffer moves to the future).
 * Returns 0 (o is then empty, as after cf__out_dispose) or CF_ESTATE (o is
 * untouched and still the caller's). */
int cf__future_complete_from_out(cf_future *f, int task_code, struct cf_out *o);

/* The executor failed it (broken pool, dead worker, bad shared memory):
 * PENDING or RUNNING -> FINISHED with CF_EBROKEN and a message. Returns 0 or
 * CF_ESTATE if it was already done. */
int cf__future_fail_broken(cf_future *f, const char *fmt, ...) CF_PRINTF(2, 3);

static inline uint32_t cf__future_state(const cf_future *f, memory_order mo)
{
    return atomic_load_explicit((_Atomic uint32_t *)&f->state, mo) & CF__STATE_MASK;
}
static inline bool cf__state_done(uint32_t s)
{
    return (s & CF__STATE_MASK) >= CF__CANCELLED;
}
/* Done and delivered: what a query may report as done (see DELIVERING). */
static inline bool cf__state_settled(uint32_t s)
{
    return cf__state_done(s) && !(s & CF__DELIVERING);
}

/* cf_future_add_done_callback in two steps, for a caller that must not
 * fail once it has done something else (cf_submit_ex): make the node
 * (NULL when out of memory), then hang it on f, which cannot fail (if f is
 * done, cb runs at once in the caller and the node is freed). */
struct cf__listener *cf__listener_new(cf_done_fn *cb, void *ud);
void cf__future_add_listener(cf_future *f, struct cf__listener *l);
void cf__listener_free(struct cf__listener *l);

/* ---- waiting on many futures (cf_wait, cf_as_completed) ----
 * A waiter owns one node per future. cf__waiter_node_add() links a node
 * (or returns false if the future is already done, perhaps still
 * delivering: report it through a query such as cf_future_done, which
 * waits that out); the future's completer
 * calls waiter->notify(waiter, node) exactly once per linked node, unless
 * cf__waiter_node_remove() unlinked it first. remove() returns true if it
 * unlinked the node (no notify will come) and false if the completer owns
 * it (notify has run or will run). */
struct cf__waiter;
struct cf__waiter_node {
    struct cf__listener link_; /* internal (future.c) */
    struct cf__waiter *waiter;
    cf_future *future;
    size_t index; /* the waiter's own bookkeeping */
};
struct cf__waiter {
    void (*notify)(struct cf__waiter *w, struct cf__waiter_node *node);
};
/* Both take the list lock, so neither may be called from inside notify. */
bool cf__waiter_node_add(cf_future *f, struct cf__waiter_node *node);
bool cf__waiter_node_remove(cf_future *f, struct cf__waiter_node *node);

/* The acquire fence that follows the last release decrement of a reference
 * count. TSan does not model standalone fences (GCC warns under -Werror),
 * so there an acquire load of the same counter does the job: it reads the
 * end of the release sequence formed by every holder's decrement. */
#ifdef CF_TSAN
#define CF__ACQUIRE_AFTER(counter) ((void)atomic_load_explicit((counter), memory_order_acquire))
#else
#define CF__ACQUIRE_AFTER(counter) atomic_thread_fence(memory_order_acquire)
#endif

/* The calling thread's cache of free records (future.c): a pool worker
 * enables it when it starts and drains it (back to the allocator) before
 * it exits. Off by default: other threads use the allocator directly. */
void cf__future_cache_enable(void);
void cf__future_cache_drain(void);

/* Test hook (only in the tests' build, CF_TEST_HOOKS): called by a
 * completer (or canceller) whose CAS made f done while f had listeners,
 * before it notifies them. A test parks the completer there to hold that
 * window open. Set it before the threads that complete futures start. */
#ifdef CF_TEST_HOOKS
extern void (*cf__test_after_publish)(cf_future *f);
#endif

/* Wait for done and delivered (cf__state_settled) with the usual
 * spin-then-futex discipline (no helping). A future that is done but still
 * delivering is waited for whatever the deadline: that wait is bounded by
 * its completer's few remaining steps. */
int cf__future_wait_done(cf_future *f, cf__deadline deadline);

#endif
