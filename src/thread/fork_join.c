/* Scoped fork-join (include/cfutures/fork_join.h): child frames on the
 * forking function's stack, pushed on the worker's Chase-Lev deque as
 * tagged pointers beside future records.
 *
 * Contract
 * - Who runs a child. Exactly one thread takes a pushed frame out of the
 *   deque (the deque hands each item out once): the owner's join (pop),
 *   the owner's own helping wait (pop, worker.c), a thief (steal), or a
 *   shutdown that cancels queued work (steal, thread_pool.c). Whoever took
 *   it runs it (or cancels it) and nobody else touches fn/arg.
 * - The fast path. The join pops its child back (the item at the bottom
 *   is the frame itself) and calls fn in the same thread: no allocation,
 *   no reference count, no read-modify-write (the pop's fence is the
 *   deque's; its CAS only when the child is the last item). The frame's
 *   `state` is then never written.
 * - Who writes the frame. The owner writes fn, arg, prev, index, state and
 *   thief before the push (plain and relaxed writes, published by the
 *   push's release store of `bottom`; a thief reads them after its acquire
 *   load of `bottom` in steal). Once pushed, only the thread that took the
 *   frame writes it: `thief` (relaxed, a hint for leapfrogging), `rc`
 *   (plain), then `state` (the one release read-modify-write below).
 * - Completion (frames taken by another thread, or by the owner's own
 *   helper). The taker writes rc, then exchanges `state` to DONE with
 *   release; the join reads `state` with acquire and only then rc, so it
 *   sees rc and every write fn made. If the exchange read SLEEPING (the
 *   joiner went to sleep on the word) the taker makes one futex wake.
 * - Lifetime. The frame is a local of the function that forked it, and
 *   that function cannot return before its join (cf_fj_end joins what is
 *   left; the header's rules), and the join does not return before it has
 *   read DONE. The taker's exchange is its last access to the frame's
 *   memory: after it, only the futex wake names the address (the kernel
 *   reads no user memory for a private wake; a reused word can at worst
 *   see a spurious wake-up, which every futex waiter tolerates). A thief
 *   whose steal CAS failed never dereferences the pointer it read, so a
 *   stale slot naming a frame that is gone is harmless.
 * - Why a pop that comes back empty means "taken". Thieves take the
 *   oldest item first, so when the child is no longer at or above the
 *   bottom, everything older went too; the join first runs whatever was
 *   pushed after the child (futures submitted after the fork and still
 *   queued: ours to run, as a helping wait would), so the child is at the
 *   bottom when it pops, or gone. `index` (the bottom at the push) tells
 *   "gone" from "still there" without reading the slot.
 * - Waiting for a taken child (wait_taken): look at the thief's deque
 *   first (leapfrogging: it holds the child's own forks), then any work,
 *   within the helping bounds of worker.c (stack reserve, depth); spin a
 *   little, yield, then sleep on `state` (at most HELP_NAP_NS at a time
 *   while helping is allowed, so new work is seen).
 * - Threads outside a pool (or a fork child's copy of a worker) have no
 *   deque: fork runs the child at once, join returns its code. */
#include <sched.h>
#include <string.h>

#include "sys/debug_checks.h"
#include "sync/futex.h"
#include "thread/fork_join.h"
#include "thread/thread_pool.h"
#include "cfutures.h"
#include "cfutures/fork_join.h"

#define HELP_NAP_NS 100000 /* a waiting join re-scans for work this often */

enum { FJ_PENDING = 0, FJ_SLEEPING = 1, FJ_DONE = 2 };

struct fj_child {
    cf_fj_fn *fn;
    void *arg;
    struct fj_child *prev; /* the scope's next older child not yet joined */
    int64_t index;         /* deque index it was pushed at; -1: ran at fork */
    int rc;                /* fn's code, written by the taker before DONE */
    _Atomic uint32_t state;
    _Atomic int thief; /* worker id + 1 of the taker, 0 if none or not a worker */
};

struct fj_scope {
    struct cf__worker *w;   /* the worker that began it, NULL: run inline */
    struct fj_child *top;   /* newest child not yet joined */
    struct fj_scope *outer; /* debug checks: the thread's enclosing scope */
    uintptr_t magic;        /* debug checks: open / joining / closed */
};

_Static_assert(sizeof(struct fj_child) <= sizeof(cf_fj_child), "cf_fj_child too small");
_Static_assert(_Alignof(struct fj_child) <= _Alignof(cf_fj_child), "cf_fj_child alignment");
_Static_assert(sizeof(struct fj_scope) <= sizeof(cf_fj_scope), "cf_fj_scope too small");
_Static_assert(_Alignof(struct fj_scope) <= _Alignof(cf_fj_scope), "cf_fj_scope alignment");
_Static_assert(_Alignof(cf_fj_child) > CF__FJ_TAG, "the tag bit is free in a frame's address");
_Static_assert(_Alignof(struct cf_future) > CF__FJ_TAG,
               "the tag bit is clear in a record's address");

#ifdef CF_TEST_HOOKS
_Atomic(cf__test_fj_hook_fn *) cf__test_fj_hook;
#endif

static inline void test_point(int point, const struct fj_child *c)
{
#ifdef CF_TEST_HOOKS
    /* Relaxed: installed before the run it acts on; the test synchronises
     * through the hook itself. */
    cf__test_fj_hook_fn *h = atomic_load_explicit(&cf__test_fj_hook, memory_order_relaxed);
    if (__builtin_expect(h != NULL, 0)) h(point, c);
#else
    (void)point;
    (void)c;
#endif
}

static inline void *tagged(struct fj_child *c)
{
    return (void *)((uintptr_t)c | CF__FJ_TAG);
}

static inline struct fj_child *untagged(void *item)
{
    return (struct fj_child *)((uintptr_t)item & ~CF__FJ_TAG);
}

/* ---- debug checks: the header's rules ---- */

#define FJ_OPEN ((uintptr_t)0xf0c5c09e)
#define FJ_JOINING ((uintptr_t)0xf0c5101e)

#if CF__DEBUG_CHECKS
/* The innermost open scope of this thread (debug checks only). */
static _Thread_local struct fj_scope *tls_scope;

static void check_scope(const struct fj_scope *s, const char *call)
{
    if (s->magic == FJ_JOINING)
        cf__debug_fail(call, "scope", s,
                       "used by a child it is running (a child must not fork into or join "
                       "its parent's scope)");
    if (s->magic != FJ_OPEN)
        cf__debug_fail(call, "scope", s, "is not open (no cf_fj_begin, or already ended)");
    if (s->w != cf__tls_worker && (s->w != NULL || tls_scope != s))
        cf__debug_fail(call, "scope", s, "used on a thread other than the one that began it");
    if (tls_scope != s)
        cf__debug_fail(call, "scope", s,
                       "is not this thread's innermost open scope (an inner scope was "
                       "left without cf_fj_end)");
}
#define CHECK_SCOPE(s, call) check_scope(s, call)
#define SET_MAGIC(s, m) ((s)->magic = (m))
#else
#define CHECK_SCOPE(s, call) ((void)0)
#define SET_MAGIC(s, m) ((void)0)
#endif

/* ---- completing a frame another thread took ---- */

static void complete(struct fj_child *c, int rc)
{
    c->rc = rc;
    /* Release: rc and everything fn wrote happen before the joiner's
     * acquire load that reads DONE. An RMW (not a store) so that a joiner
     * that went to sleep is seen in the same step. The frame may be gone
     * right after this: only its address is used below (contract). */
    uint32_t old = atomic_exchange_explicit(&c->state, FJ_DONE, memory_order_release);
    if (old == FJ_SLEEPING) cf__futex_wake(&c->state, 1, false);
}

void cf__fj_run_taken(struct cf__worker *w, void *item)
{
    struct fj_child *c = untagged(item);
    /* Relaxed: a hint for the joiner's leapfrogging, nothing more. */
    atomic_store_explicit(&c->thief, w->id + 1, memory_order_relaxed);
    /* One level deeper on this stack, like a task (worker.c run_nested):
     * what lies above the mark was pushed by this child. */
    int64_t mark = w->mark;
    w->mark = cf__deque_bottom(&w->dq);
    w->depth++;
    int rc = c->fn(c->arg);
    w->depth--;
    w->mark = mark;
    complete(c, rc);
}

void cf__fj_cancel_taken(void *item)
{
    complete(untagged(item), CF_ECANCELLED);
}

/* ---- the join's wait ---- */

static inline bool child_done(struct fj_child *c)
{
    /* Acquire: pairs with complete()'s release exchange; rc is read after. */
    return atomic_load_explicit(&c->state, memory_order_acquire) == FJ_DONE;
}

/* Leapfrogging: take one item from the thief's deque (the child's own
 * forks are there, oldest first) and run it. */
static bool help_thief(struct cf__worker *w, struct fj_child *c)
{
    /* Relaxed: a hint; the steal carries the orders for the item. */
    int t = atomic_load_explicit(&c->thief, memory_order_relaxed) - 1;
    struct cf__pool *p = w->pool;
    if (t < 0 || t >= p->n || t == w->id) return false;
    struct cf__deque *d = &p->w[t].dq;
    for (;;) {
        if (cf__deque_size_hint(d) == 0) return false;
        void *x;
        enum cf__steal_result r = cf__deque_steal(d, &x);
        if (r == CF__STEAL_EMPTY) return false;
        if (r == CF__STEAL_OK) {
            cf__worker_run(w, x);
            return true;
        }
        cf__cpu_relax(); /* lost a race: retry */
    }
}

/* Sleep on c's state until the taker completes it or `until`. */
static void nap_on(struct fj_child *c, cf__deadline until)
{
    uint32_t s = FJ_PENDING;
    /* Relaxed: announcing a sleeper publishes nothing, and a failure
     * (DONE, or we announced before) sends the caller back to its acquire
     * re-check of the word. */
    if (!atomic_compare_exchange_strong_explicit(&c->state, &s, FJ_SLEEPING, memory_order_relaxed,
                                                 memory_order_relaxed) &&
        s != FJ_SLEEPING)
        return;
    cf__futex_wait(&c->state, FJ_SLEEPING, until, false);
}

static __attribute__((noinline)) int wait_taken(struct cf__worker *w, struct fj_child *c)
{
    test_point(CF__TEST_FJ_TAKEN, c);
    struct cf__pool *p = w->pool;
    /* As a helping wait (worker.c): run nothing with too little stack
     * left; run only the thief's work (our child's) past the depth bound. */
    bool room = (uintptr_t)__builtin_frame_address(0) > w->help_floor;
    bool wide = room && w->depth < CF__HELP_DEPTH_MAX;
    unsigned idle = 0;
    int64_t start = 0;
    while (!child_done(c)) {
        if (room && (help_thief(w, c) || (wide && cf__worker_help_any(w)))) {
            idle = 0;
            start = 0;
            continue;
        }
        if (++idle < 64) {
            for (unsigned i = 0; i < idle; i++) cf__cpu_relax();
            continue;
        }
        int64_t now = cf__now_ns();
        if (start == 0) start = now;
        if (now - start < p->spin_ns) {
            sched_yield();
            continue;
        }
        nap_on(c, room ? now + HELP_NAP_NS : CF__NO_DEADLINE);
    }
    return c->rc;
}

/* ---- the API ---- */

void cf_fj_begin(cf_fj_scope *ps)
{
    struct fj_scope *s = (struct fj_scope *)ps;
    struct cf__worker *w = cf__tls_worker;
    /* A fork child's copy of a worker has no thieves: run inline there. */
    s->w = w && !cf__pool_foreign(w->pool) ? w : NULL;
    s->top = NULL;
#if CF__DEBUG_CHECKS
    s->outer = tls_scope;
    tls_scope = s;
    s->magic = FJ_OPEN;
#endif
}

/* No pool (or the deque could not grow): run the child now; its join
 * returns the code. Out of line, so the push path saves no registers. */
static __attribute__((noinline)) void fork_inline(struct fj_scope *s, struct fj_child *c)
{
    c->index = -1;
    SET_MAGIC(s, FJ_JOINING);
    c->rc = c->fn(c->arg);
    SET_MAGIC(s, FJ_OPEN);
    (void)s;
}

void cf_fj_fork(cf_fj_scope *ps, cf_fj_child *pc, cf_fj_fn *fn, void *arg)
{
    struct fj_scope *s = (struct fj_scope *)ps;
    struct fj_child *c = (struct fj_child *)pc;
    CHECK_SCOPE(s, "cf_fj_fork");
    c->fn = fn;
    c->arg = arg;
    c->prev = s->top;
    s->top = c;
    struct cf__worker *w = s->w;
    if (!w) {
        fork_inline(s, c);
        return;
    }
    c->index = cf__deque_bottom(&w->dq);
    /* Relaxed: published by the push's release store of bottom. */
    atomic_store_explicit(&c->state, FJ_PENDING, memory_order_relaxed);
    atomic_store_explicit(&c->thief, 0, memory_order_relaxed);
    int before = cf__deque_push(&w->dq, tagged(c));
    if (__builtin_expect(before < 0, 0)) {
        fork_inline(s, c);
        return;
    }
    /* As a nested submit (thread_pool.c): only a push that made the deque
     * non-empty checks for an idle worker to wake. */
    if (before <= 1) {
        /* Seq_cst fence: the push (release store of bottom) before the
         * loads of `searching` and `waiters`; pairs with the fence in
         * cf__ec_prepare (worker.c's contract). */
        CF__FENCE_SEQ_CST();
        (void)cf__pool_wake_if_idle(w->pool);
    }
}

/* The join found c not at the bottom of our deque (x: what its pop took
 * instead, NULL if the deque was empty): run what was pushed after c (it
 * is ours: futures submitted after the fork and still queued, as a
 * helping wait would), take c back if it is still there, else wait for
 * whoever took it. Out of line: the fast path stays small. */
static __attribute__((noinline)) int join_slow(struct cf__worker *w, struct fj_child *c, void *x,
                                               bool popped)
{
    void *me = tagged(c);
    if (x) cf__worker_run(w, x);
    if (!popped || x) {
        for (;;) {
            /* At or below c's index: c was taken (by a thief, or by our
             * own helping wait, which also lowered the bottom). */
            if (cf__deque_bottom(&w->dq) <= c->index) break;
            x = cf__deque_pop(&w->dq);
            if (x == me) return c->fn(c->arg); /* nobody stole it: run it here */
            if (!x) break;                     /* empty: c was stolen */
            cf__worker_run(w, x);
        }
    }
    return wait_taken(w, c);
}

/* Join the newest child of s (there is one). */
static inline int join_one(struct fj_scope *s)
{
    struct fj_child *c = s->top;
    s->top = c->prev;
    if (c->index < 0) return c->rc; /* ran at its fork */
    struct cf__worker *w = s->w;
    test_point(CF__TEST_FJ_JOIN, c);
    /* The usual case: c is the newest item of our deque. Pop it; if the
     * pop returns c itself, nobody stole it and it runs here. */
    if (__builtin_expect(cf__deque_bottom(&w->dq) == c->index + 1, 1)) {
        void *x = cf__deque_pop(&w->dq);
        if (__builtin_expect(x == tagged(c), 1)) return c->fn(c->arg);
        return join_slow(w, c, x, true);
    }
    return join_slow(w, c, NULL, false);
}

int cf_fj_join(cf_fj_scope *ps)
{
    struct fj_scope *s = (struct fj_scope *)ps;
    CHECK_SCOPE(s, "cf_fj_join");
    if (!s->top) return 0;
#if CF__DEBUG_CHECKS
    s->magic = FJ_JOINING;
    int rc = join_one(s);
    s->magic = FJ_OPEN;
    return rc;
#else
    return join_one(s);
#endif
}

int cf_fj_end(cf_fj_scope *ps)
{
    struct fj_scope *s = (struct fj_scope *)ps;
    CHECK_SCOPE(s, "cf_fj_end");
    int first = 0;
    while (s->top) {
        SET_MAGIC(s, FJ_JOINING);
        int rc = join_one(s);
        SET_MAGIC(s, FJ_OPEN);
        if (rc && !first) first = rc;
    }
#if CF__DEBUG_CHECKS
    tls_scope = s->outer;
    s->magic = 0;
#endif
    return first;
}

/* ---- entering a pool ---- */

struct run_ctx {
    cf_fj_fn *fn;
    void *arg;
    int rc;
};

static int run_root(const void *arg, size_t len, cf_out *out)
{
    struct run_ctx *ctx;
    (void)len;
    (void)out;
    memcpy(&ctx, arg, sizeof ctx);
    /* Published to cf_fj_run by the future's completion (release) and its
     * result() (acquire). */
    ctx->rc = ctx->fn(ctx->arg);
    return 0;
}

bool cf__fj_is_root(const cf_future *f)
{
    return f->fn == run_root;
}

int cf_fj_run(cf_executor *ex, cf_fj_fn *fn, void *arg)
{
    if (!ex || !fn) return CF_EINVAL;
    struct cf__worker *w = cf__tls_worker;
    if (w && (cf_executor *)w->pool == ex) return fn(arg);
    /* The root follows pointers into our memory: only an executor whose
     * tasks share it may run it. */
    if (!cf__exec_can(ex, CF__EXEC_SHARED_MEMORY)) return CF_ENOTSUP;
    struct run_ctx ctx = {fn, arg, 0};
    struct run_ctx *pctx = &ctx;
    cf_future *f;
    int rc = cf_submit(ex, run_root, &pctx, sizeof pctx, &f);
    if (rc) return rc;
    rc = cf_future_result(f, CF_FOREVER, NULL, NULL);
    cf_future_release(f);
    return rc ? rc : ctx.rc;
}
