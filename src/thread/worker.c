/* What a thread-pool worker does: find work, run it, park when idle, and
 * help while a task waits on a future.
 *
 * Contract
 * - Finding work, in order: the worker's own deque (LIFO: the child it just
 *   pushed is hot in cache), the outside submitters' slots and the
 *   injection queues (its node's first; with two or more workers one task
 *   at a time, the oldest, so outside work starts in submission order -
 *   take_in_order; a single worker takes a batch into its own deque),
 *   then stealing from the other
 *   workers in the placement's steal order (same L3, same node, then at
 *   most `steal_attempts` remote victims per round, nearest node first).
 * - Idle: a worker that finds nothing counts itself in `searching`, scans
 *   once more and then spins (scanning, with exponential back-off, then
 *   sched_yield) for as long as its spin policy allows (spin.c: adaptive,
 *   at most cfg.spin_ns, off while its CPU is contended; or fixed when
 *   set) - at most max(1, n/2) workers spin at once, the others go
 *   straight to parking - then parks on the pool's event count. An
 *   adaptive spin also stops early when a sched_yield came back late (the
 *   worker was descheduled: someone else wants the CPU).
 *   Submitters wake a parked worker only when their push made a queue
 *   non-empty and nobody is searching (thread_pool.c); the last searcher to
 *   stop searching because it found work looks again and wakes one more if
 *   anything is still queued (stop_searching: the Go scheduler's "the last
 *   spinning thread that finds work wakes another"), so work spreads
 *   without waking everyone.
 * - No lost wake-up. A submitter wakes nobody while it sees a searcher; so
 *   whoever leaves the searching role must look at the queues after it
 *   left. There are exactly two ways to leave (parker, finder):
 *     submitter: publish (deque release store of bottom, or the injection
 *                queue's exchange) ; seq_cst fence (the exchange is a full
 *                barrier) ; load `searching` ; if 0: load `waiters`, then
 *                the parked workers' slots (cf__pool_wake_one tries
 *                every slot).
 *     parker:    `searching` - 1 ; slot = PARKED, `waiters` + 1 ; seq_cst
 *                fence (in cf__ec_prepare) ; re-check every queue and the
 *                flags; work seen: search again instead of sleeping.
 *     finder:    `searching` - 1 (read 1: it was the last) ; seq_cst fence ;
 *                load `waiters`; if > 0, re-check every queue; work seen:
 *                wake one parked worker (stop_searching).
 *   Proof. Let X be the submitter's load of `searching`, D any leaver's
 *   decrement that comes after the value X read in the modification order
 *   of `searching`, F_s and F_d their fences. If F_d preceded F_s in the
 *   single total order of seq_cst operations, X (after F_s) would read D
 *   or later (fence rule for a modification before a fence): so F_s
 *   precedes F_d, and every load after F_d - the leaver's re-check - sees
 *   the publication made before F_s. Now either X read 0: the submitter
 *   runs the event-count protocol (eventcount.h) with every worker that is
 *   not searching, and each is either seen parked (and woken) or sees the
 *   work itself. Or X read k > 0: each of those k searchers decrements
 *   after X, so the decrement that next brings `searching` to 0 comes
 *   after X; it is a parker's (who saw the work, so it searches again:
 *   its next scan sees the queue non-empty too - a later load of the same
 *   word in one thread never reads an older value - and its next leave
 *   is after X again) or a finder's that read 1 (who sees the work and
 *   wakes a parked worker - if it saw `waiters` = 0 instead, any worker
 *   parking later fences after F_d, which follows F_s, and its own
 *   re-check sees the work). Were `searching` never to return to 0,
 *   someone would be scanning every queue at all times. A
 *   finder that read more than 1 leaves the re-check to the later leaver:
 *   no fence, no scan on that path. Without the finder's look, a task
 *   published in its window (the publisher saw it searching) would stay
 *   queued while every other worker slept.
 *   Cost: the finder's fence and scan happen only when it was the last
 *   searcher, and the wake (a system call) only when work is queued and a
 *   worker is parked - never when a searcher will take the work.
 * - Whom to wake (which parked worker, and when a waiter sleeps at once)
 *   is the wake policy, wake.c; it does not change the argument above.
 * - Exit (shutdown): a worker leaves when the pool is shut down and, after
 *   a seq_cst fence, every queue is empty (thread_pool.c explains why an
 *   outside submit that was accepted is then visible). Its own deque is
 *   then empty and stays so (only the owner pushes to it), so nested work
 *   of tasks still running elsewhere is never stranded.
 * - Waiting from inside a task (cf__tls_wait_helper): the waiting task's
 *   frame stays on the stack, so whatever the wait runs nests on top of
 *   it, and the waiting task cannot return before that finishes. Helping
 *   is therefore bounded (the bound is in thread_pool.h):
 *     depth < CF__HELP_DEPTH_MAX and stack to spare: pop the own deque
 *       (the awaited child is usually at its bottom), else run the awaited
 *       task itself if it is this pool's and not started, else take from
 *       the injection queues, else steal (and wake a parked worker when a
 *       batch was taken, so it gets a thief); when nothing is found, sleep
 *       on the awaited future for at most HELP_NAP_NS and look again.
 *     deeper: only the waiting task's own work - what was pushed onto our
 *       deque since it started (above its mark: its children, newest
 *       first) and the awaited task itself. Running those is what a
 *       sequential program would do on its stack anyway.
 *     less than CF__HELP_STACK_RESERVE of the thread's real stack
 *       (pthread_getattr_np) left below the waiting frame, or in a fork
 *       child: nothing; sleep on the future until it is done, as a thread
 *       outside the pool does.
 *   So unrelated waits nest at most CF__HELP_DEPTH_MAX deep per worker,
 *   the stack never overflows through helping, and fork-join (a task
 *   waiting on its own children) never deadlocks a bounded pool, even one
 *   worker deep past the cap - until its recursion needs more stack than
 *   the reserve leaves, where a sequential program would overflow. A task
 *   that waits for something only an unrelated queued task will produce
 *   may then wait for another worker to take that task, as in any bounded
 *   pool whose workers block. */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/probes.h"
#include "thread/fork_join.h"
#include "thread/task.h"
#include "thread/thread_pool.h"

_Thread_local struct cf__worker *cf__tls_worker;
#ifdef CF_TEST_HOOKS
_Atomic(cf__test_tp_hook_fn *) cf__test_tp_hook;
_Thread_local cf_future *cf__test_tp_awaited;
#endif

#define HELP_NAP_NS 100000 /* a waiting task re-scans for work this often */
#define BACKOFF_MAX 6      /* spin back-off: at most 2^6 pauses between scans */

static inline bool stats_on(const struct cf__pool *p)
{
    return __builtin_expect(p->stats, 0);
}

static inline void stat_inc(_Atomic uint64_t *c)
{
    /* Relaxed load + store: only the owning worker writes its counters. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}
static inline void stat_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline uint64_t rng_next(struct cf__worker *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- running ---- */

/* Test points (thread_pool.h): one relaxed load in the tests' build,
 * nothing in the shipped library. */
static inline void test_point(struct cf__worker *w, int point)
{
#ifdef CF_TEST_HOOKS
    /* Relaxed: the hook is installed before the interleaving it forces,
     * and the test synchronises with the worker through the hook itself. */
    cf__test_tp_hook_fn *h = atomic_load_explicit(&cf__test_tp_hook, memory_order_relaxed);
    if (__builtin_expect(h != NULL, 0)) h(w, point);
#else
    (void)w;
    (void)point;
#endif
}

/* Run f on this stack, one level deeper: remember where our own deque
 * ended when it started (its mark: what lies above was pushed by f or by
 * what f ran) for the bounded helper below. */
static void run_nested(struct cf__worker *w, cf_future *f)
{
    int64_t mark = w->mark;
    w->mark = cf__deque_bottom(&w->dq);
    w->depth++;
    cf__future_run(f); /* false if cancelled or started elsewhere: skipped */
    w->depth--;
    w->mark = mark;
}

static void run_task(struct cf__worker *w, cf_future *f)
{
    if (cf__fj_is_frame(f)) { /* a fork-join child frame, not a record */
        cf__fj_run_taken(w, f);
        return;
    }
    struct cf__pool *p = w->pool;
    /* Acquire: pairs with the release fetch_or that set BROKEN after
     * broken_msg was stored. */
    if (__builtin_expect(atomic_load_explicit(&p->flags, memory_order_acquire) & CF__POOL_BROKEN,
                         0)) {
        char *msg = atomic_load_explicit(&p->broken_msg, memory_order_relaxed);
        cf__future_fail_broken(f, "%s", msg ? msg : "the thread pool is broken");
    } else {
        CF__PROBE2(start, w->id, f);
        run_nested(w, f);
        CF__PROBE2(finish, w->id, f);
    }
    if (stats_on(p)) stat_inc(&w->st.tasks_run);
    cf_future_release(f); /* the pool's reference */
}

/* ---- finding work ---- */

/* Splice queue q (whose try-flag we hold; released here) and keep the
 * batch: the oldest task is returned, the rest go to our deque for
 * thieves. They are pushed newest first, so that our own pops take them in
 * submission order (FIFO for outside work, as users expect from an
 * executor) and thieves take from the newest end. */
static cf_future *take_batch(struct cf__worker *w, struct cf__inject *q, bool *more)
{
    struct cf__inject_batch b;
    cf__batch_init(&b);
    bool got = cf__inject_splice(q, &b);
    /* The batch is ours now: let the next taker in before we walk it (the
     * walk may wait for a producer half-way through its enqueue). */
    cf__inject_unlock(q);
    if (!got) return NULL;
    cf_future *first = NULL;
    uint64_t n = 0;
    struct cds_wfcq_node *node, *rev = NULL;
    /* A node handed out by cf__batch_next is ours: no producer links to
     * it any more (inject.h), so its link can be reused to reverse. */
    while ((node = cf__batch_next(&b)) != NULL) {
        n++;
        if (!first) {
            first = cf__future_of_qnode(node);
            continue;
        }
        node->next = rev;
        rev = node;
    }
    while (rev) {
        node = rev;
        rev = rev->next;
        if (cf__deque_push(&w->dq, cf__future_of_qnode(node)) < 0)
            cf__inject_push(q, node); /* could not grow the deque: put it back */
        else *more = true;
    }
    if (stats_on(w->pool)) stat_add(&w->st.injected_taken, n);
    return first;
}

/* Outside work starts first in, first out (docs/SUBMIT.md): with two or
 * more workers, a worker takes ONE task at a time from a submitter's slot
 * or an injection queue, the oldest, and starts it at once. A batch moved
 * into our deque would break the order twice: thieves take a deque's
 * other end (the newest of the batch), and a second worker taking the
 * next batch starts it while ours still waits behind our current task.
 * Taken one at a time, one submitter's tasks are taken in submission order
 * (the slot's head CAS, the queue's lock) and each is started by the
 * worker that took it, so when a task starts, every older task of its
 * submitter has been taken, and at most one per other worker is not yet
 * started. A single worker has nobody to race with: it keeps batches. */
static inline bool take_in_order(const struct cf__pool *p)
{
    return p->n >= 2;
}

/* Take from an outside submitter's slot (subslot.h): one task when order
 * matters (take_in_order), else a batch of at most CF__SUBSLOT_TAKE_MAX of
 * its oldest tasks (what is reserved). The oldest is returned, the rest
 * go to our deque newest first (our pops run them in submission order). */
static cf_future *take_slots(struct cf__worker *w, bool *more)
{
    struct cf__pool *p = w->pool;
    cf_future *got[CF__SUBSLOT_TAKE_MAX];
    int max = take_in_order(p) ? 1 : CF__SUBSLOT_TAKE_MAX;
    /* Start at a different bit per worker: with many submitters, workers
     * spread over their slots. */
    int k = cf__subslots_take(p->subs, got, max, (unsigned)w->id * 37u, more);
    if (k == 0) return NULL;
    /* The records of a backlog are cold (written long ago by the
     * submitter): start fetching them all now, so the misses overlap
     * instead of stalling each task in turn. Write intent: running a task
     * CASes its state word. */
    for (int i = 0; i < k; i++) __builtin_prefetch(got[i], 1);
    for (int i = k - 1; i >= 1; i--) {
        if (cf__deque_push(&w->dq, got[i]) < 0)
            cf__inject_push(&p->inj[w->slot], &got[i]->qnode); /* could not grow the deque */
        else *more = true;
    }
    if (stats_on(p)) stat_add(&w->st.injected_taken, (uint64_t)k);
    return got[0];
}

static cf_future *take_injected(struct cf__worker *w, bool *more)
{
    struct cf__pool *p = w->pool;
    cf_future *f = take_slots(w, more);
    if (f) return f;
    for (int k = 0; k < p->n_inj; k++) {
        struct cf__inject *q = &p->inj[(w->slot + k) % p->n_inj];
        if (cf__inject_empty(q) || !cf__inject_try_lock(q)) continue;
        if (take_in_order(p)) {
            struct cds_wfcq_node *node = cf__inject_take_one(q);
            cf__inject_unlock(q);
            if (!node) continue;
            if (!cf__inject_empty(q)) *more = true; /* the ramp-up wake */
            if (stats_on(p)) stat_inc(&w->st.injected_taken);
            return cf__future_of_qnode(node);
        }
        f = take_batch(w, q, more); /* unlocks q */
        if (f) return f;
    }
    return NULL;
}

/* Taking one outside task at a time (take_in_order), a worker that just
 * ran one looks at the slots again before it goes idle: one CAS, without
 * the searching protocol's counter and fences, which would otherwise be
 * paid per task instead of per batch. Tasks left behind (more) are this
 * worker's to take on its next pass, as a batch in its deque would be, so
 * no task depends on the wake below; it only brings in a parked worker to
 * share them (the ramp-up wake), looked at only when someone is parked
 * (relaxed: a hint; a worker that parks later re-checks every slot after
 * its fence and stays up while they hold work). */
#define OUTSIDE_WAKE_EVERY 16u
static cf_future *take_next_outside(struct cf__worker *w)
{
    bool more = false;
    cf_future *f = take_slots(w, &more);
    /* Once per OUTSIDE_WAKE_EVERY takes, as a batch take did: a worker
     * woken for a backlog takes its share without a wake per task. */
    if (f && more && (w->out_takes++ % OUTSIDE_WAKE_EVERY) == 0 &&
        cf__ec_waiters(&w->pool->ec) > 0) {
        /* Seq_cst fence: as in help_run_one (a submitter's half of the
         * protocol before the loads of `searching` and `waiters`). */
        CF__FENCE_SEQ_CST();
        (void)cf__pool_wake_if_idle(w->pool);
    }
    return f;
}

static cf_future *steal_from(struct cf__worker *w, int victim, bool remote, bool *more)
{
    struct cf__pool *p = w->pool;
    struct cf__deque *d = &p->w[victim].dq;
    for (;;) {
        if (cf__deque_size_hint(d) == 0) return NULL;
        void *x;
        if (stats_on(p)) stat_inc(&w->st.steals_tried);
        enum cf__steal_result r = cf__deque_steal(d, &x);
        if (r == CF__STEAL_EMPTY) return NULL;
        if (r == CF__STEAL_OK) {
            if (stats_on(p)) {
                stat_inc(&w->st.steals_ok);
                stat_inc(remote ? &w->st.steals_remote : &w->st.steals_local);
            }
            CF__PROBE3(steal, w->id, victim, x);
            if (cf__deque_size_hint(d) > 0) *more = true;
            return x;
        }
        cf__cpu_relax(); /* lost a race: someone made progress; retry */
    }
}

static cf_future *steal_any(struct cf__worker *w, bool *more)
{
    struct cf__pool *p = w->pool;
    if (p->n < 2) return NULL;
    const int *order = p->place.steal_order[w->id];
    const int *tier = p->place.tier_end[w->id];
    if (!p->cfg.numa) {
        /* NUMA-awareness off: one flat tier, every victim, random start. */
        int all = tier[2];
        int start = (int)(rng_next(w) % (uint64_t)all);
        for (int k = 0; k < all; k++) {
            cf_future *f = steal_from(w, order[(start + k) % all], false, more);
            if (f) return f;
        }
        return NULL;
    }
    /* Near tiers, nearest first: the workers sharing our L3 (tier 0), then
     * the rest of our NUMA node (tier 1). Every victim of a tier, from a
     * random start so thieves of one tier spread out. */
    int begin = 0;
    for (int t = 0; t < 2; t++) {
        int end = tier[t], size = end - begin;
        if (size > 0) {
            int start = (int)(rng_next(w) % (uint64_t)size);
            for (int k = 0; k < size; k++) {
                cf_future *f = steal_from(w, order[begin + (start + k) % size], false, more);
                if (f) return f;
            }
        }
        begin = end;
    }
    /* Other nodes: at most steal_attempts victims, in the placement's
     * order (nearer nodes by hwloc distance first), so remote traffic is
     * bounded and goes to the closest node that has work. */
    int remote = tier[2] - begin;
    for (int k = 0; k < remote && k < p->steal_attempts; k++) {
        cf_future *f = steal_from(w, order[begin + k], true, more);
        if (f) return f;
    }
    return NULL;
}

cf_future *cf__pool_take_one(struct cf__pool *p)
{
    cf_future *f;
    bool more = false;
    if (cf__subslots_take(p->subs, &f, 1, 0, &more) == 1) {
        if (more) {
            /* Work we saw is left behind and we run only this one: like a
             * worker's ramp-up, make sure a worker comes for it. Seq_cst
             * fence: as in help_run_one (a submitter's half). */
            CF__FENCE_SEQ_CST();
            (void)cf__pool_wake_if_idle(p);
        }
        return f;
    }
    for (int k = 0; k < p->n_inj; k++) {
        struct cf__inject *q = &p->inj[k];
        if (cf__inject_empty(q) || !cf__inject_try_lock(q)) continue;
        struct cds_wfcq_node *node = cf__inject_take_one(q);
        cf__inject_unlock(q);
        if (node) return cf__future_of_qnode(node);
    }
    return NULL;
}

/* One pass over everything but the own deque. *more: evidence that more
 * work is queued (used for the ramp-up wake). */
static cf_future *scan(struct cf__worker *w, bool *more)
{
    cf_future *f = take_injected(w, more);
    if (!f) f = steal_any(w, more);
    return f;
}

/* Anything queued anywhere? (the parker's re-check; loads ordered by the
 * event count's fence). */
static bool any_work(struct cf__pool *p)
{
    for (int k = 0; k < p->n_inj; k++)
        if (!cf__inject_empty(&p->inj[k])) return true;
    if (cf__subslots_any(p->subs)) return true; /* every slot, active or not */
    for (int i = 0; i < p->n; i++)
        if (cf__deque_size_hint(&p->w[i].dq) > 0) return true;
    return false;
}

/* Shut down and nothing queued: time to go. */
static bool may_exit(struct cf__pool *p)
{
    /* Seq_cst: reads the shutdown RMW; with the fence below, the worker's
     * half of the protocol with outside submitters (thread_pool.c). */
    if (!(atomic_load_explicit(&p->flags, memory_order_seq_cst) & CF__POOL_SHUTDOWN)) return false;
    /* Seq_cst fence: orders the flag load before the queue loads; pairs
     * with the full barrier of a submitter's enqueue. */
    CF__FENCE_SEQ_CST();
    return !any_work(p);
}

/* A searcher found work and stops searching. Submitters that saw it
 * searching woke nobody, so the last searcher to leave re-checks every
 * queue after a fence and wakes a parked worker if anything is queued (the
 * contract at the top: the hand-off of the searching role). Costs no
 * system call unless work is queued and someone is parked. */
static void stop_searching(struct cf__worker *w, bool more)
{
    struct cf__pool *p = w->pool;
    /* Relaxed RMW: ordered before the re-check by the fence below; its
     * place in the modification order of `searching` is what the argument
     * uses. */
    int was = atomic_fetch_sub_explicit(&p->searching, 1, memory_order_relaxed);
    if (was != 1) return; /* a later leaver (this path or parking) re-checks after us */
    /* Seq_cst fence: our decrement before the loads of `waiters` and of
     * the queues; pairs with a submitter's fence between its publication
     * and its load of `searching` (contract at the top). Also publishes
     * our own batch push (more) before we look for parked workers. */
    CF__FENCE_SEQ_CST();
    if (cf__ec_waiters(&p->ec) == 0) return; /* anyone parking later re-checks the queues itself */
    if (more || any_work(p)) (void)cf__pool_wake_one(p);
}

static inline bool time_up(int64_t *start, long budget, unsigned round, bool every)
{
    if (budget <= 0) return true;
    /* The clock is read every 8th round only, or every round of a
     * glance (a few rounds in all). */
    if (*start != 0 && !every && round % 8 != 0) return false;
    int64_t now = cf__now_ns();
    if (*start == 0) {
        *start = now;
        return false;
    }
    return now - *start >= budget;
}

/* Past its spin budget, may this searcher go on searching? While a cf_map
 * runs on the pool (ops->map_active) one worker does, the keeper: the
 * consumer submits a chunk each time it moves on, and a searcher takes it
 * at once where a parked worker would need a wake-up (a system call for
 * the consumer, tens of microseconds in a VM). Not once the pool is shut
 * down (the map may never be freed). The keeper's scans yield the CPU
 * between rounds like any long search. */
static bool keep_searching(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    /* Relaxed, all: a spin-policy hint (parking is correct at any time). */
    if (atomic_load_explicit(&p->maps, memory_order_relaxed) <= 0 ||
        (atomic_load_explicit(&p->flags, memory_order_relaxed) & CF__POOL_SHUTDOWN)) {
        int me = w->id;
        (void)atomic_compare_exchange_strong_explicit(&p->map_keeper, &me, -1, memory_order_relaxed,
                                                      memory_order_relaxed);
        return false;
    }
    int k = atomic_load_explicit(&p->map_keeper, memory_order_relaxed);
    if (k == w->id) return true;
    return k < 0 && atomic_compare_exchange_strong_explicit(
                        &p->map_keeper, &k, w->id, memory_order_relaxed, memory_order_relaxed);
}

/* The keeper found work: another worker may keep searching meanwhile. */
static inline void leave_keeper(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    int me = w->id;
    /* Relaxed: a hint (keep_searching). */
    if (atomic_load_explicit(&p->map_keeper, memory_order_relaxed) == me)
        (void)atomic_compare_exchange_strong_explicit(&p->map_keeper, &me, -1, memory_order_relaxed,
                                                      memory_order_relaxed);
}

/* The keeper has found nothing for KEEPER_IDLE_NS: the map's consumer is
 * not moving on (it computes, or forgot the iterator); stop burning a CPU
 * (the next chunk then wakes a worker as usual). The clock is read every
 * 8th round. */
#define KEEPER_IDLE_NS 2000000
static bool keeper_tired(struct cf__worker *w, int64_t *since, unsigned round)
{
    if (*since != 0 && round % 8 != 0) return false;
    int64_t now = cf__now_ns();
    if (*since == 0) *since = now;
    if (now - *since < KEEPER_IDLE_NS) return false;
    leave_keeper(w);
    return true;
}

/* A searcher found work: it stops searching (and may wake a helper). */
static cf_future *found(struct cf__worker *w, cf_future *f, bool more)
{
    test_point(w, CF__TEST_TP_FOUND_WORK);
    leave_keeper(w);
    stop_searching(w, more);
    return f;
}

/* What an adaptive spin measures to tell whether it was descheduled
 * (spin.h): the time between its looks at the clock once it yields. */
struct spin_watch {
    bool on;          /* adaptive policy: measure (a fixed budget measures nothing) */
    int64_t last;     /* the clock after the previous yield (0: none yet) */
    int64_t scan_min; /* the shortest scan between two yields so far */
};

/* Give the CPU to a runnable thread on it (often the submitter, when there
 * are more threads than cores). Watched: false if the worker was off its
 * CPU for CF__SPIN_DESCHED_NS or more since the previous yield returned -
 * in this yield, or preempted in the scan before it (that scan took that
 * much longer than the shortest one) - so another thread wanted the CPU.
 * No system call but the yield: the monotonic clock is read in user
 * space. */
static bool yield_cpu(struct spin_watch *sw)
{
    if (!sw->on) {
        sched_yield();
        return true;
    }
    int64_t before = cf__now_ns();
    if (sw->last != 0 && before - sw->last < sw->scan_min) sw->scan_min = before - sw->last;
    sched_yield();
    int64_t after = cf__now_ns();
    int64_t since = after - (sw->last != 0 ? sw->last : before);
    int64_t off = since - (sw->scan_min != INT64_MAX ? sw->scan_min : 0);
    sw->last = after;
    return off < CF__SPIN_DESCHED_NS;
}

/* Spin-search for at most `budget` ns (the caller counted us in
 * `searching` and its first scan found nothing): scan, with exponential
 * back-off, then (unless a glance) sched_yield between scans. Returns work
 * (having stopped searching), or NULL when the budget is spent or
 * (adaptive) the spin was descheduled (still counted as searching). *how:
 * how it ended. The map keeper (keep_searching) goes on past the budget. */
static cf_future *spin(struct cf__worker *w, long budget, enum cf__spin_outcome *how)
{
    struct spin_watch sw = {.on = w->spin.mode != CF__SPIN_FIXED, .scan_min = INT64_MAX};
    int64_t start = 0, kept_since = 0;
    unsigned backoff = 0, round = 0;
    for (;;) {
        ++round;
        /* A glance never keeps searching: it never yields the CPU. */
        if (time_up(&start, budget, round, w->spin.glance) &&
            (w->spin.glance || !keep_searching(w) || keeper_tired(w, &kept_since, round)))
            break;
        if (backoff < BACKOFF_MAX || w->spin.glance) {
            for (unsigned i = 0; i < (1u << backoff); i++) cf__cpu_relax();
            if (backoff < BACKOFF_MAX) backoff++;
        } else if (!yield_cpu(&sw)) {
            leave_keeper(w);
            *how = CF__SPIN_DESCHEDULED; /* park now: someone else wants this CPU */
            return NULL;
        }
        bool more = false;
        cf_future *f = scan(w, &more);
        if (f) {
            *how = CF__SPIN_PAID;
            return found(w, f, more);
        }
    }
    *how = CF__SPIN_TIMED_OUT;
    return NULL;
}

/* An idle worker's search (the caller counted us in `searching`): one scan;
 * if that finds nothing and we may spin, a spin as long as the spin policy
 * allows (spin.c), whose outcome the policy then learns from. Returns work
 * (having stopped searching), or NULL (still counted as searching). */
static cf_future *search(struct cf__worker *w, bool may_spin)
{
    bool more = false;
    cf_future *f = scan(w, &more);
    if (f) return found(w, f, more); /* no spin was needed: nothing to learn */
    long budget = may_spin ? cf__spin_next(&w->spin) : 0;
    test_point(w, CF__TEST_TP_SPIN_DECIDED);
    if (budget <= 0) return NULL;
    enum cf__spin_outcome how;
    f = spin(w, budget, &how);
    if (w->spin.glance) return f; /* spinning is off: a glance teaches nothing */
    w->spin.outcome = (uint8_t)how;
    test_point(w, CF__TEST_TP_SPIN_END);
    cf__spin_record(&w->spin, (enum cf__spin_outcome)w->spin.outcome);
    return f;
}

enum park_result { PARKED, WORK_SEEN, MAY_EXIT };

/* Stop searching and park on the event count, unless the re-check after
 * the event count's fence sees work (WORK_SEEN: search again) or the pool
 * shut down with nothing queued (MAY_EXIT). PARKED: woken. */
static enum park_result park(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    /* Relaxed: ordered before the re-check by cf__ec_prepare's fence. */
    atomic_fetch_sub_explicit(&p->searching, 1, memory_order_relaxed);
    test_point(w, CF__TEST_TP_PARK_DECIDED);
    cf__ec_prepare(&p->ec, &w->park);
    test_point(w, CF__TEST_TP_PARK_PREPARED);
    cf__subslots_retire_idle(p->subs); /* before the re-check (subslot.c) */
    if (any_work(p)) {
        cf__ec_cancel(&p->ec, &w->park);
        return WORK_SEEN;
    }
    if (may_exit(p)) {
        cf__ec_cancel(&p->ec, &w->park);
        return MAY_EXIT;
    }
    if (stats_on(p)) stat_inc(&w->st.parks);
    CF__PROBE1(park, w->id);
    /* Relaxed: a hint for cf__pool_wake_one (the warmest sleeper). */
    atomic_store_explicit(&p->last_parked, w->id, memory_order_relaxed);
    uint32_t tag;
    cf__ec_wait(&p->ec, &w->park, CF__NO_DEADLINE, &tag);
    w->handoff = tag == CF__WAKE_LOCAL;
    CF__PROBE1(wake, w->id);
    if (stats_on(p)) stat_inc(&w->st.wakeups);
    return PARKED;
}

/* We were woken by a submitter on our own CPU and have run what we were
 * woken for; the submitter will want its CPU back. If another worker is
 * parked, make that one the searcher (on a CPU of its own) and park after
 * one scan rather than spin beside the submitter. A hint: no fence needed,
 * our parking re-check covers the queues. True if one was woken. */
static bool hand_off_search(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    w->handoff = false;
    /* Spinning is off (the CPUs are contended): the woken worker would
     * only take a CPU from someone else to scan once and park again. */
    if (w->spin.mode == CF__SPIN_OFF) return false;
    return cf__ec_waiters(&p->ec) > 0 && cf__pool_wake_one(p) >= 0;
}

/* Search (spin), then park; returns work, or NULL when the worker should
 * exit. */
static cf_future *idle(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    bool handed_off = w->handoff && hand_off_search(w);
    for (;;) {
        /* Relaxed: a hint for submitters; the decrement in park or
         * stop_searching is what the no-lost-wake-up argument needs. At
         * most max_searching spin at once: the others go straight to the
         * parking re-check, so idle workers do not take the CPU from
         * threads that have work. */
        int searchers = atomic_fetch_add_explicit(&p->searching, 1, memory_order_relaxed);
        bool may_spin = searchers < p->max_searching && !handed_off;
        handed_off = false;
        cf_future *f = search(w, may_spin);
        if (f) return f;
        if (park(w) == MAY_EXIT) return NULL;
    }
}

/* ---- waiting inside a task ---- */

/* Sleep on f's state word until it is done, woken, or `until` (no spin:
 * the caller has been scanning for work meanwhile). The protocol is
 * future.c's (future.h: CF__SLEEPERS): announce the sleeper with a CAS, and
 * the completer, whose CAS reads the bit, makes the futex_wake call. */
static void nap_on(cf_future *f, cf__deadline until)
{
    /* Acquire: a done state lets the caller read the outcome. */
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    if (cf__state_done(s)) return;
    if (!(s & CF__SLEEPERS)) {
        /* Acquire on failure: the word changed (maybe done); the caller
         * re-checks. */
        if (!atomic_compare_exchange_strong_explicit(&f->state, &s, s | CF__SLEEPERS,
                                                     memory_order_acquire, memory_order_acquire))
            return;
        s |= CF__SLEEPERS;
    }
    cf__futex_wait(&f->state, s, until, false);
}

/* Is there room on this stack to run another task from inside a wait?
 * The frame address, not a local's (a sanitizer may put locals elsewhere). */
static inline bool stack_has_room(const struct cf__worker *w)
{
    return (uintptr_t)__builtin_frame_address(0) > w->help_floor;
}

/* Own work of the waiting task: what it (or something it ran) pushed onto
 * our deque since it started, newest first. Nothing older: that belongs to
 * the tasks below us on this stack or to whoever steals it. */
static cf_future *pop_own(struct cf__worker *w)
{
    if (cf__deque_bottom(&w->dq) <= w->mark) return NULL;
    return cf__deque_pop(&w->dq);
}

/* Run the awaited task itself, here, if it is this pool's and nobody has
 * started it (it may sit in another worker's deque or an injection queue;
 * whoever takes that record later finds it started and skips it). */
static bool run_awaited(struct cf__worker *w, cf_future *f)
{
    /* Relaxed: a pre-check; cf__future_run's CAS decides. */
    if ((atomic_load_explicit(&f->state, memory_order_relaxed) & CF__STATE_MASK) != CF__PENDING)
        return false;
    struct cf__pool *p = w->pool;
    /* Acquire: as in run_task (pairs with mark_broken's release). */
    if (atomic_load_explicit(&p->flags, memory_order_acquire) & CF__POOL_BROKEN)
        return false; /* the worker that takes the record fails it */
    run_nested(w, f);
    return true; /* counted in tasks_run when its record is taken */
}

/* One look for work while waiting on f: the own deque (all of it when
 * `wide`, else only above the waiting task's mark), the awaited task
 * itself when `mine`, then (wide) the other queues. True if it ran a task. */
static bool help_run_one(struct cf__worker *w, cf_future *f, bool wide, bool mine)
{
    cf_future *g = wide ? cf__deque_pop(&w->dq) : pop_own(w);
    if (g) {
#ifdef CF_TEST_HOOKS
        if (g == f) { /* the awaited task itself, off our own deque */
            cf__test_tp_awaited = f;
            test_point(w, CF__TEST_TP_OWN_POPPED);
        }
#endif
        run_task(w, g);
        return true;
    }
    if (mine && run_awaited(w, f)) return true;
    if (!wide) return false;
    bool more = false;
    if ((g = scan(w, &more)) == NULL) return false;
    if (more) {
        /* Seq_cst fence: our batch push before the loads of `searching`
         * and `waiters` (a submitter's half of the protocol): the batch in
         * our deque gets a thief while we are busy here. */
        CF__FENCE_SEQ_CST();
        (void)cf__pool_wake_if_idle(w->pool);
    }
    run_task(w, g);
    return true;
}

/* How a helping wait pauses when it found nothing to run. */
struct help_pause {
    unsigned idle; /* looks in a row that found nothing */
    int64_t start; /* when the yielding phase began (0: not yet) */
};

/* Nothing to do: spin a little (the awaited task is usually running on
 * another worker and about to finish), scanning again between pauses; then
 * nap on the future and scan again. Past the bound (not `wide`) nothing new
 * can turn up for us (only we push above our mark, and a started task does
 * not become pending again): sleep until done or the deadline, as a thread
 * outside the pool would. */
static void help_pause(struct cf__worker *w, cf_future *f, cf__deadline deadline, bool wide,
                       struct help_pause *hp)
{
    if (++hp->idle < 64) {
        for (unsigned i = 0; i < hp->idle; i++) cf__cpu_relax();
        return;
    }
    int64_t now = cf__now_ns();
    if (hp->start == 0) hp->start = now;
    if (now - hp->start < w->pool->spin_ns) {
        sched_yield();
        return;
    }
    cf__deadline nap = wide ? now + HELP_NAP_NS : deadline;
    nap_on(f, nap < deadline ? nap : deadline);
}

/* cf__tls_wait_helper: wait for f while running other tasks on this stack,
 * within the bound described in the contract at the top. */
static int wait_helper(void *ctx, cf_future *f, cf__deadline deadline)
{
    struct cf__worker *w = ctx;
    struct cf__pool *p = w->pool;
    /* Fixed for this call: our frame does not move while we wait. */
    bool room = stack_has_room(w) && !cf__pool_foreign(p);
    bool wide = room && w->depth < CF__HELP_DEPTH_MAX; /* may run unrelated work */
    bool mine = room && cf__pool_owns_task(p, f);
    struct help_pause hp = {0, 0};
    /* acquire: once done, the caller reads the outcome (pairs with the
     * completer's release CAS). */
    while (!cf__state_done(cf__future_state(f, memory_order_acquire))) {
        /* A timed wait does not start more work once its deadline passed. */
        if (deadline != CF__NO_DEADLINE && cf__now_ns() >= deadline) return CF_ETIMEDOUT;
        if (room && help_run_one(w, f, wide, mine)) hp = (struct help_pause){0, 0};
        else help_pause(w, f, deadline, wide, &hp);
    }
    return 0;
}

/* For a fork-join wait (fork_join.c): run an item it took, or look once
 * for any work as a helping wait does. */
void cf__worker_run(struct cf__worker *w, void *item)
{
    run_task(w, item);
}

bool cf__worker_help_any(struct cf__worker *w)
{
    return help_run_one(w, NULL, true, false);
}

/* ---- the thread ---- */

/* "<prefix>-<n>": Linux allows 15 characters; the pool cut its prefix to
 * leave room for its largest worker number (cf__thread_name_prefix_fit). */
static void set_name(struct cf__worker *w)
{
    char name[32];
    snprintf(name, sizeof name, "%s-%d", w->pool->prefix, w->id);
    name[15] = '\0'; /* already fits; pthread_setname_np fails on longer */
    pthread_setname_np(pthread_self(), name);
}

static void mark_broken(struct cf__pool *p, struct cf__worker *w, int code)
{
    char buf[128];
    snprintf(buf, sizeof buf,
             "the thread pool is broken: the initializer failed in worker %s-%d with code %d",
             p->prefix, w->id, code);
    char *msg = cf__strdup(buf);
    char *expected = NULL;
    /* Relaxed CAS: the first message wins; it is published by the release
     * fetch_or below. */
    if (msg && !atomic_compare_exchange_strong_explicit(&p->broken_msg, &expected, msg,
                                                        memory_order_relaxed, memory_order_relaxed))
        cf__free_str(msg);
    /* Seq_cst (release): publishes broken_msg to run_task's acquire load,
     * and orders BROKEN against outside submitters' flag checks. */
    atomic_fetch_or_explicit(&p->flags, CF__POOL_BROKEN, memory_order_seq_cst);
    /* Queued work is failed by whoever takes it (run_task); make sure
     * parked workers come and drain it. */
    CF__FENCE_SEQ_CST();
    cf__pool_wake_all(p);
}

/* The lowest frame address from which a wait may still run a task: the
 * thread's real stack (its base and size, from the thread's attributes)
 * plus the reserve. If the stack cannot be found, waits do not help. */
static uintptr_t help_floor_of_this_thread(void)
{
    pthread_attr_t a;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0) return UINTPTR_MAX;
    int rc = pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_destroy(&a);
    if (rc != 0 || !lo || size == 0) return UINTPTR_MAX;
    return (uintptr_t)lo + CF__HELP_STACK_RESERVE(size);
}

void *cf__worker_main(void *arg)
{
    struct cf__worker *w = arg;
    struct cf__pool *p = w->pool;
    set_name(w);
    if (p->have_place && w->id < p->place.n_workers)
        cf__pin_self(p->topo, &p->place.w[w->id]); /* not fatal if it fails */
    cf__alloc_set_thread_node(p->cfg.numa ? w->numa_node : -1);
    cf__future_cache_enable(); /* records: no allocator call on the hot path */
    w->help_floor = help_floor_of_this_thread();
    /* Adaptive unless a budget was set (environment or code). */
    cf__spin_init(&w->spin, p->spin_ns, p->cfg.source[CF__SET_SPIN_NS] != CF__FROM_DEFAULT);
    cf__tls_worker = w;
    cf__tls_wait_helper = wait_helper;
    cf__tls_wait_helper_ctx = w;
    if (p->init) {
        int rc = p->init(p->init_arg);
        if (rc != 0) mark_broken(p, w, rc);
    }
    /* Relaxed: a hint for waiting threads outside the pool (task.c). */
    atomic_fetch_add_explicit(&p->ready, 1, memory_order_relaxed);
    for (;;) {
        cf_future *f;
        if (take_in_order(p)) {
            /* Outside tasks come one at a time, and our deque is then
             * empty: skip the pop's fence when it plainly is. Exact for the
             * owner: only we push, and top never moves back, so a top at
             * or past our bottom means empty. */
            f = cf__deque_size_hint(&w->dq) > 0 ? cf__deque_pop(&w->dq) : NULL;
            if (!f) f = take_next_outside(w);
        } else {
            f = cf__deque_pop(&w->dq);
        }
        if (!f && !(f = idle(w))) break;
        run_task(w, f);
    }
    cf__tls_wait_helper = NULL;
    cf__tls_wait_helper_ctx = NULL;
    cf__tls_worker = NULL;
    cf__future_cache_drain();
    cf__pool_worker_exit(w); /* may free the pool: touch nothing after */
    return NULL;
}
