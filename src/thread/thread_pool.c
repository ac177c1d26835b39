/* The work-stealing thread pool: construction, submit, shutdown, stats.
 * What a worker does is in worker.c, whom to wake in wake.c, the task
 * records in task.c; the objects in thread_pool.h. With worker.c this file
 * shares one edge each way, documented: it creates the worker threads
 * (cf__worker_main) and a worker reports its exit here
 * (cf__pool_worker_exit, which may free the pool). task.c calls back
 * once: cf__pool_free, for a pool freed from inside a task that a thread
 * outside the pool was running (the end of that run frees it). Fork
 * detection is in
 * sys/fork.c (shared with the process pool).
 *
 * Contract
 * - A future is the task record: one record per submit, refs = 2 (the
 *   caller's and the pool's); the worker that takes it runs it
 *   (cf__future_run) and drops the pool's reference. Workers keep a cache
 *   of free records (future.c), so nested submits make no allocator call;
 *   an outside submitter takes its record from its own thread's slab
 *   (sys/slab.c).
 * - Submit from one of this pool's workers (nested work) pushes onto that
 *   worker's deque, even after shutdown, so fork-join is never cut in half.
 *   Submit from any other thread goes to that thread's own slot
 *   (subslot.h: an array ring, one per outside submitter thread), or, when
 *   it has none (64 threads hold one) or its ring is full at its largest,
 *   to the injection queue of its NUMA node; it is refused after shutdown
 *   (CF_ESHUTDOWN) and on a broken pool (CF_EBROKEN, checked first).
 * - Shutdown vs. outside submit (no read-modify-write on the submit path):
 *     submitter: enqueue (the injection queue's exchange is a full
 *                barrier, the slot's store of tail is seq_cst) ; load `flags`
 *                (seq_cst); if SHUTDOWN or BROKEN is set, withdraw: cancel
 *                the future (it then never runs) and fail the submit - or,
 *                if a worker already started it, keep it and succeed.
 *     shutdown:  set SHUTDOWN (seq_cst RMW).
 *     worker:    load `flags` (seq_cst), seq_cst fence, then look at the
 *                queues before it decides they are empty for good.
 *   If the submitter's flag load missed SHUTDOWN, its barrier precedes the
 *   shutdown RMW, which precedes the worker's fence in the single total
 *   order, so the worker's look sees the enqueue (fence-fence rule): an
 *   accepted task is never stranded. A withdrawn node may be left in a
 *   queue after the workers have gone; pool_free drops it.
 * - shutdown() is idempotent and safe from several threads; the workers are
 *   joined once (`join_lock` guards who joins; the joins themselves run
 *   outside it, since exiting workers take it); from one of the pool's own
 *   workers (a task or a callback running there) it never joins (acts as
 *   wait=false). cf_executor_free from there detaches the threads and the
 *   last worker to leave frees the pool.
 * - cancel_futures drains the injection queues and steals every deque empty,
 *   cancelling what it takes. A batch that a worker is moving from an
 *   injection queue into its deque at that instant may escape and run: it
 *   was, in effect, already taken by that worker.
 * - Broken: a failing initializer sets BROKEN; from then on
 *   every queued task is failed with CF_EBROKEN by the worker that takes it
 *   and submits fail.
 * - Fork: a child of fork() has only the thread that forked, so a pool
 *   made before the fork has no workers there. The pool remembers the
 *   process generation it was made in (a pthread_atfork child handler
 *   bumps it; no getpid() system call on the submit path), and in any
 *   other generation submit (and so map) and shutdown return CF_ENOTSUP
 *   without touching the queues, and destroy forgets the pool: it frees
 *   nothing and joins nothing (the threads to join are not in the child,
 *   and the forking thread may be one of the pool's workers, still running
 *   a task on records the pool owns). Read-only calls (workers, stats)
 *   still answer. A future submitted before the fork stays as the fork
 *   found it: if it was not done, nothing in the child will finish it. */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/probes.h"
#include "thread/fork_join.h"
#include "thread/task.h"
#include "thread/thread_pool.h"

/* ---- aligned allocation through cf__alloc ---- */

static void *alloc_lines(size_t size, void **raw)
{
    *raw = cf__calloc(size + CF__CACHE_LINE);
    if (!*raw) return NULL;
    uintptr_t a = ((uintptr_t)*raw + CF__CACHE_LINE - 1) & ~(uintptr_t)(CF__CACHE_LINE - 1);
    return (void *)a;
}

/* ---- submit ---- */

static int submit_nested(struct cf__pool *p, struct cf__worker *w, cf_task_fn *fn, const void *arg,
                         size_t len, cf_future **out)
{
    /* Relaxed: a task running on a broken pool sees BROKEN soon enough;
     * only the outside path needs the seq_cst protocol. */
    if (atomic_load_explicit(&p->flags, memory_order_relaxed) & CF__POOL_BROKEN) return CF_EBROKEN;
    cf_future *f = cf__pool_task_new(p, fn, arg, len);
    if (!f) return CF_ENOMEM;
    int before = cf__deque_push(&w->dq, f);
    if (before < 0) {
        cf_future_release(f);
        cf_future_release(f);
        return CF_ENOMEM;
    }
    CF__PROBE2(submit, p, f);
    /* Wake-up check only when this push (probably) made the deque
     * non-empty: items already queued have a searcher or a ramp-up wake
     * responsible for them (worker.c), and skipping the fence matters for
     * fork-join. `before` may over-count by the steals that raced the push
     * (push reads top before it publishes), so "<= 1" also catches the
     * usual single racing thief. A rarer miss cannot strand work: the
     * owner runs its own deque (also while it waits in the helper); it
     * only delays parallelism until the next search. */
    if (before <= 1) {
        /* Seq_cst fence: the push (release store of bottom) before the
         * loads of `searching` and `waiters`; pairs with the fence in
         * cf__ec_prepare (worker.c's contract). */
        CF__FENCE_SEQ_CST();
        (void)cf__pool_wake_if_idle(p);
    }
    *out = f;
    return 0;
}

static int slot_of_caller(struct cf__pool *p)
{
    if (p->n_inj <= 1) return 0;
    int cpu = sched_getcpu();
    int s = cpu >= 0 ? cf__placement_slot_of_cpu(&p->place, cpu) : 0;
    return s >= 0 && s < p->n_inj ? s : 0;
}

/* An outside submit keeps the pool alive until it returns. Once its task
 * is queued, a worker may run it, and the task may free the pool
 * (cf_executor_free from a task: the last worker to leave frees it) while
 * the submitter still reads the flags and wakes a worker. So the submit
 * marks itself first - in its slot, owner-written, or in a pool counter
 * when it has none - and pool_free waits for every mark to clear
 * (submits_quiesce).
 * Relaxed mark: sequenced before the enqueue, whose publication (the
 * slot's seq_cst store, the injection queue's exchange) the taker
 * acquires; the task, the free and pool_free's acquire load follow it. */
static inline void submit_begin(struct cf__pool *p, struct cf__subslot *s)
{
    if (s) atomic_store_explicit(&s->submitting, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&p->slotless_submits, 1, memory_order_relaxed);
}

/* The last access of a submit to the pool. Release: the submit's reads
 * of the pool before pool_free's acquire load sees the mark clear. */
static inline void submit_end(struct cf__pool *p, struct cf__subslot *s)
{
    if (s) atomic_store_explicit(&s->submitting, 0, memory_order_release);
    else atomic_fetch_sub_explicit(&p->slotless_submits, 1, memory_order_release);
}

/* Wait for outside submits still inside the pool (submit_begin). Brief:
 * a submit past its enqueue only checks the flags and wakes a worker. */
static void submits_quiesce(struct cf__pool *p)
{
    /* Acquire loads: pair with submit_end's release. */
    while (atomic_load_explicit(&p->slotless_submits, memory_order_acquire) != 0 ||
           (p->subs && cf__subslots_submitting(p->subs)))
        sched_yield();
}

#ifdef CF_TEST_HOOKS
_Atomic(cf__test_tp_submit_hook_fn *) cf__test_tp_submit_hook;
#endif

static inline void test_submit_point(struct cf__pool *p)
{
#ifdef CF_TEST_HOOKS
    /* Relaxed: installed before the interleaving it forces. */
    cf__test_tp_submit_hook_fn *h = atomic_load_explicit(&cf__test_tp_submit_hook,
                                                         memory_order_relaxed);
    if (__builtin_expect(h != NULL, 0)) h(p);
#else
    (void)p;
#endif
}

/* Queue f from outside the pool and wake a worker if needed (the caller
 * has marked the submit: submit_begin). */
static int submit_outside(struct cf__pool *p, struct cf__subslot *s, cf_future *f)
{
    /* The caller's own slot (subslot.h); the injection queue when it has
     * none or its ring is full at its largest. */
    int in_slot = s ? cf__subslot_push(p->subs, s, f) : -1;
    bool was_empty = in_slot >= 0 ? in_slot == 1
                                  : cf__inject_push(&p->inj[slot_of_caller(p)], &f->qnode);
    test_submit_point(p);
    /* Seq_cst, after the enqueue's full barrier (the slot's seq_cst store
     * of tail, or the injection queue's exchange): the submitter's half of
     * the shutdown protocol (contract above). */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_seq_cst);
    if (__builtin_expect(fl & (CF__POOL_BROKEN | CF__POOL_SHUTDOWN), 0) && cf_future_cancel(f)) {
        /* Raced with shutdown or breakage: withdrawn before it started.
         * The queue keeps the pool's reference until someone drops it. */
        cf_future_release(f);
        return fl & CF__POOL_BROKEN ? CF_EBROKEN : CF_ESHUTDOWN;
    }
    CF__PROBE2(submit, p, f);
    /* Wake-up check only when the queue was empty: a non-empty queue
     * already has a taker coming. For the injection queue, a batch take
     * splices the whole queue (the one woken or searching when it became
     * non-empty takes ours too; inject.h's exchange decides this exactly),
     * and its exchange is the full barrier of the event count protocol.
     * For a slot, the taker of an older task sees ours and reports more
     * work (subslot.c's proof); on the empty-to-non-empty push we fence. */
    if (was_empty) {
        if (in_slot >= 0) {
            /* Seq_cst fence: the slot's publication before the loads of
             * `active`, `searching` and `waiters` (the slot's store of
             * tail is no fence); pairs with the parker's fence and the
             * last searcher's (worker.c) and a taker's clear of the bit
             * (subslot.c). */
            CF__FENCE_SEQ_CST();
            cf__subslot_announce(p->subs, s);
        }
        int woke = cf__pool_wake_if_idle(p);
        if (woke >= 0) cf__pool_note_cold_submit(p, f, woke);
    } else if (in_slot == 0 && __builtin_expect(cf__subslot_stalled(s), 0)) {
        /* A burst that nobody has taken from for a while: the searcher we
         * saw is not running (wake.c). */
        (void)cf__pool_wake_for_backlog(p);
    }
    return 0;
}

static int tp_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t len, cf_future **out)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    if (cf__pool_foreign(p))
        return CF_ENOTSUP; /* the parent's pool, in a fork child: no workers here */
    if (len > UINT32_MAX) return CF_ETOOBIG;
    struct cf__worker *w = cf__tls_worker;
    if (w && w->pool == p) return submit_nested(p, w, fn, arg, len, out);

    /* Relaxed pre-check: fail fast (no allocation) when the pool is
     * plainly closed; the seq_cst load after the enqueue is the real test. */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_relaxed);
    if (fl & CF__POOL_BROKEN) return CF_EBROKEN;
    if (fl & CF__POOL_SHUTDOWN) return CF_ESHUTDOWN;
    cf_future *f = cf__pool_task_new(p, fn, arg, len);
    if (!f) return CF_ENOMEM;
    struct cf__subslot *s = cf__subslot_mine(p->subs);
    submit_begin(p, s);
    int rc = submit_outside(p, s, f);
    submit_end(p, s); /* p may be freed from here on */
    if (rc == 0) *out = f;
    return rc;
}

/* ---- shutdown and destroy ---- */

static void print_stats(struct cf__pool *p)
{
    for (int i = 0; i < p->n; i++) {
        struct cf__wstats *s = &p->w[i].st;
#define L(x) (unsigned long long)atomic_load_explicit(&s->x, memory_order_relaxed)
        fprintf(stderr,
                "cfutures: %s-%d cpu %d node %d: tasks %llu, steals %llu/%llu (local %llu, "
                "remote %llu), injected %llu, parks %llu, wakeups %llu\n",
                p->prefix, i, p->w[i].cpu, p->w[i].numa_node, L(tasks_run), L(steals_ok),
                L(steals_tried), L(steals_local), L(steals_remote), L(injected_taken), L(parks),
                L(wakeups));
#undef L
        /* Read after the worker was joined (its owner-private policy). */
        const struct cf__spin *sp = &p->w[i].spin;
        fprintf(stderr,
                "cfutures: %s-%d spins: paid %llu, timed out %llu, descheduled %llu; "
                "glances (spinning off) %llu, probes %llu\n",
                p->prefix, i, (unsigned long long)sp->paid, (unsigned long long)sp->timed_out,
                (unsigned long long)sp->descheduled, (unsigned long long)sp->glances,
                (unsigned long long)sp->probes);
    }
}

static void pool_free(struct cf__pool *p);

/* Join every worker, once; concurrent callers wait for the one joining.
 * The joins run without the lock: exiting workers take it. */
static void join_all(struct cf__pool *p)
{
    pthread_mutex_lock(&p->join_lock);
    while (p->joining) pthread_cond_wait(&p->join_cv, &p->join_lock);
    if (p->joined || p->orphaned) {
        pthread_mutex_unlock(&p->join_lock);
        return;
    }
    p->joining = true;
    pthread_mutex_unlock(&p->join_lock);
    for (int i = 0; i < p->n; i++)
        if (p->w[i].started) pthread_join(p->w[i].thread, NULL);
    cf__pool_outside_runs_wait(p); /* tasks that waiting threads run (task.c) */
    if (p->stats) print_stats(p);
    pthread_mutex_lock(&p->join_lock);
    p->joining = false;
    p->joined = true;
    /* Freed from inside a worker while we were joining: we free it. */
    bool free_it = p->orphaned;
    pthread_cond_broadcast(&p->join_cv);
    pthread_mutex_unlock(&p->join_lock);
    if (free_it) pool_free(p);
}

/* Take every queued, not started task out of the pool's queues, cancel it
 * and drop the pool's reference. Two callers: shutdown with cancel_futures
 * (workers may be running: a worker splicing a queue holds its try-lock,
 * and the deques are emptied by stealing, as any thief would), and
 * pool_free after the joins, where only what submitters withdrew can be
 * left (cancelled futures still in an injection queue; worker.c's exit
 * rule leaves the deques empty). */
static void cancel_queued(struct cf__pool *p)
{
    for (int k = 0; p->inj && k < p->n_inj; k++) {
        struct cf__inject *q = &p->inj[k];
        while (!cf__inject_empty(q)) {
            if (!cf__inject_try_lock(q)) {
                sched_yield(); /* a worker is splicing: it is quick */
                continue;
            }
            struct cf__inject_batch b;
            cf__batch_init(&b);
            bool got = cf__inject_splice(q, &b);
            cf__inject_unlock(q);
            if (!got) continue; /* a producer is half-way: its node is coming */
            struct cds_wfcq_node *node;
            while ((node = cf__batch_next(&b)) != NULL) {
                cf_future *f = cf__future_of_qnode(node);
                cf_future_cancel(f);
                cf_future_release(f);
            }
        }
    }
    /* Every slot, active or not (a withdrawn task's slot may never have
     * been announced). */
    int n_subs = p->subs ? atomic_load_explicit(&p->subs->n, memory_order_acquire) : 0;
    for (int i = 0; i < n_subs; i++) {
        /* Acquire: pairs with the release store that made slot i. */
        struct cf__subslot *s = atomic_load_explicit(&p->subs->tab[i], memory_order_acquire);
        cf_future *got[CF__SUBSLOT_TAKE_MAX];
        bool more = false;
        int k;
        while (s && (k = cf__subslot_take(s, got, CF__SUBSLOT_TAKE_MAX, &more)) > 0)
            for (int j = 0; j < k; j++) {
                cf_future_cancel(got[j]);
                cf_future_release(got[j]);
            }
    }
    for (int i = 0; p->w && i < p->n; i++) {
        struct cf__deque *d = &p->w[i].dq;
        for (;;) {
            void *x;
            enum cf__steal_result r = cf__deque_steal(d, &x);
            if (r == CF__STEAL_EMPTY) break;
            if (r == CF__STEAL_OK && cf__fj_is_frame(x)) {
                cf__fj_cancel_taken(x); /* a fork-join child: its join gets CF_ECANCELLED */
            } else if (r == CF__STEAL_OK) {
                cf_future_cancel(x);
                cf_future_release(x);
            }
        }
    }
}

static int tp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    if (cf__pool_foreign(p)) return CF_ENOTSUP; /* a fork child: the parent owns the pool */
    /* Seq_cst: the shutdown half of the protocol with outside submitters. */
    atomic_fetch_or_explicit(&p->flags, CF__POOL_SHUTDOWN, memory_order_seq_cst);
    if (cancel_futures) cancel_queued(p);
    /* Seq_cst fence: SHUTDOWN before the load of `waiters` in notify; pairs
     * with the parker's fence in cf__ec_prepare (it re-checks the flags). */
    CF__FENCE_SEQ_CST();
    cf__pool_wake_all(p);
    struct cf__worker *self = cf__tls_worker;
    if (wait && !(self && self->pool == p)) join_all(p);
    return 0;
}

static void pool_free(struct cf__pool *p)
{
    cf__pool_hooks_quiesce(); /* no task hook still reads this pool (task.c) */
    submits_quiesce(p);       /* no outside submit still reads it */
    cancel_queued(p);
    if (p->w)
        for (int i = 0; i < p->n; i++) cf__deque_destroy(&p->w[i].dq);
    if (p->w_raw) cf__free(p->w_raw, 0);
    if (p->inj_raw) cf__free(p->inj_raw, 0);
    if (p->subs) cf__subslots_destroy(p->subs);
    if (p->subs_raw) cf__free(p->subs_raw, 0);
    if (p->cpu_worker) cf__free(p->cpu_worker, sizeof(int) * (size_t)p->n_cpu_worker);
    if (p->have_place) cf__placement_free(&p->place);
    if (p->have_topo) hwloc_topology_destroy(p->topo);
    char *msg = atomic_load_explicit(&p->broken_msg, memory_order_relaxed);
    if (msg) cf__free_str(msg);
    pthread_cond_destroy(&p->join_cv);
    pthread_mutex_destroy(&p->join_lock);
    cf__free(p->raw, 0);
}

/* Freed from inside one of its own workers (a task or a callback running
 * there): that thread cannot be joined by itself, so every worker thread is
 * detached (or joined, if it has already left) and the last worker to
 * leave frees the pool (cf__pool_worker_exit). The pool is shut down
 * already, so they all leave once the queues drain. */
static void destroy_from_worker(struct cf__pool *p, struct cf__worker *self)
{
    pthread_mutex_lock(&p->join_lock);
    p->orphaned = true;
    if (!p->joining) { /* else the joiner frees the pool when done */
        for (int i = 0; i < p->n; i++) {
            struct cf__worker *w = &p->w[i];
            if (!w->started || w == self) continue;
            if (w->exited) pthread_join(w->thread, NULL); /* it has left: this is brief */
            else pthread_detach(w->thread);
        }
        pthread_detach(self->thread);
    }
    pthread_mutex_unlock(&p->join_lock);
}

void cf__pool_worker_exit(struct cf__worker *w)
{
    struct cf__pool *p = w->pool;
    pthread_mutex_lock(&p->join_lock);
    w->exited = true;
    p->exited++;
    bool free_it = p->orphaned && !p->joining && p->exited == p->started;
    pthread_mutex_unlock(&p->join_lock);
    if (free_it) pool_free(p); /* every worker has left, and the user let go */
}

static void tp_destroy(cf_executor *ex)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    /* A fork child: the worker threads do not exist here (joining them
     * would never return) and the thread that forked may be one of them,
     * running on its record: forget the pool, free nothing. */
    if (cf__pool_foreign(p)) return;
    struct cf__worker *self = cf__tls_worker;
    if (self && self->pool == p) {
        destroy_from_worker(p, self);
        return;
    }
    join_all(p);
    /* Freed from a task that a waiting thread outside the pool runs (the
     * run ends on this stack later and still counts itself in the pool):
     * the end of that run frees it (task.c). */
    if (cf__pool_free_after_runs(p)) return;
    pool_free(p);
}

void cf__pool_free(struct cf__pool *p)
{
    pool_free(p);
}

static int tp_workers(const cf_executor *ex)
{
    return ((const struct cf__pool *)ex)->n;
}

static int tp_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    const struct cf__pool *p = (const struct cf__pool *)ex;
    for (int i = 0; i < p->n && (size_t)i < cap; i++) {
        struct cf__wstats *s = &p->w[i].st;
#define L(x) atomic_load_explicit(&s->x, memory_order_relaxed)
        out[i] = (cf_worker_stats){
            .tasks_run = L(tasks_run),
            .steals_tried = L(steals_tried),
            .steals_ok = L(steals_ok),
            .steals_local = L(steals_local),
            .steals_remote = L(steals_remote),
            .injected_taken = L(injected_taken),
            .parks = L(parks),
            .wakeups = L(wakeups),
            .cpu = p->w[i].cpu,
            .numa_node = p->w[i].numa_node,
        };
#undef L
    }
    *n = (size_t)p->n;
    return 0;
}

/* cf_map's window when its options give none: the configured one, else
 * 16 chunks per worker. A chunk's results stay in its window slot's
 * buffer, so the window bounds memory (16 x workers x chunk x result
 * bytes: 1 MiB for 8-byte results on 2 workers); a window this wide lets
 * workers run well ahead of a consumer that reads in bursts. */
#define TP_MAP_WINDOW_PER_WORKER 16
static size_t tp_default_window(const cf_executor *ex)
{
    const struct cf__pool *p = (const struct cf__pool *)ex;
    return p->cfg.map_window ? p->cfg.map_window : (size_t)TP_MAP_WINDOW_PER_WORKER * (size_t)p->n;
}

/* CF__EXEC_CALLER_MAY_RUN (set without an initializer): a cf_map consumer
 * runs a chunk of ours that no worker has started. cf__future_run claims
 * it with the CAS a worker's run uses; the worker that takes the record
 * later finds it started and only drops the pool's reference. */
static bool tp_run_here(cf_executor *ex, cf_future *f)
{
    if (!cf__pool_owns_task((const struct cf__pool *)ex, f)) return false;
    return cf__future_run(f);
}

/* A cf_map starts (+1) or ends (-1) on this pool: while one runs, one
 * worker keeps searching past its spin budget (worker.c, keep_searching),
 * so a chunk the consumer submits is taken at once, without a wake-up. */
static void tp_map_active(cf_executor *ex, int delta)
{
    struct cf__pool *p = (struct cf__pool *)ex;
    /* Relaxed: a hint for the spin policy, not part of any protocol. */
    atomic_fetch_add_explicit(&p->maps, delta, memory_order_relaxed);
}

static const struct cf__executor_ops thread_pool_ops = {
    .submit = tp_submit,
    .shutdown = tp_shutdown,
    .destroy = tp_destroy,
    .workers = tp_workers,
    .stats = tp_stats,
    .terminate = NULL,
    .default_window = tp_default_window,
    .run_here = tp_run_here,
    .map_active = tp_map_active,
};

/* ---- construction ---- */

/* Which worker is pinned to which OS CPU (the first, if several): the
 * wake policy's cpu_worker map (wake.c). */
static int map_cpus(struct cf__pool *p)
{
    int max_cpu = -1;
    for (int i = 0; i < p->n; i++)
        if (p->place.w[i].cpu > max_cpu) max_cpu = p->place.w[i].cpu;
    if (max_cpu < 0) return 0;
    p->cpu_worker = cf__alloc(sizeof(int) * (size_t)(max_cpu + 1));
    if (!p->cpu_worker) return CF_ENOMEM;
    p->n_cpu_worker = max_cpu + 1;
    for (int c = 0; c <= max_cpu; c++) p->cpu_worker[c] = -1;
    for (int i = p->n - 1; i >= 0; i--)
        if (p->place.w[i].cpu >= 0) p->cpu_worker[p->place.w[i].cpu] = i;
    return 0;
}

/* Each worker's record: placement, victim-choice seed, parking slot,
 * deque (on its NUMA node). */
static int workers_init(struct cf__pool *p)
{
    for (int i = 0; i < p->n; i++) {
        struct cf__worker *w = &p->w[i];
        const struct cf__worker_place *pl = &p->place.w[i];
        w->pool = p;
        w->id = i;
        w->slot = pl->node_slot >= 0 && pl->node_slot < p->n_inj ? pl->node_slot : 0;
        w->cpu = pl->cpu;
        w->numa_node = pl->numa_node;
        w->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        cf__ec_slot_init(&w->park);
        if (cf__deque_init(&w->dq, 256, p->cfg.numa ? pl->numa_node : -1)) {
            for (int j = 0; j < i; j++) cf__deque_destroy(&p->w[j].dq);
            p->n = 0; /* nothing more to destroy */
            return CF_ENOMEM;
        }
    }
    return 0;
}

static int pool_setup(struct cf__pool *p, const cf_thread_pool_opts *opts)
{
    cf__config_load(&p->cfg);
    int rc = cf__config_apply_thread_opts(&p->cfg, opts);
    if (rc) return rc;
    if ((rc = cf__topology_load(&p->cfg, &p->topo))) return rc;
    p->have_topo = true;
    if ((rc = cf__placement_compute(p->topo, &p->cfg, &p->place))) return rc;
    p->have_place = true;
    p->n = p->place.n_workers;
    if (p->n < 1) return CF_EINVAL;
    /* One injection queue per NUMA node; with NUMA-awareness off, one. */
    p->n_inj = p->cfg.numa && p->place.n_numa >= 1 ? p->place.n_numa : 1;
    p->steal_attempts = cf__steal_attempts(&p->cfg, p->n);
    p->spin_ns = p->cfg.spin_ns;
    p->max_searching = p->n / 2 > 1 ? p->n / 2 : 1;
    p->stats = p->cfg.stats;
    cf__config_thread_name_prefix(&p->cfg, p->n, p->prefix, sizeof p->prefix);
    if (opts) {
        p->init = opts->initializer;
        p->init_arg = opts->initializer_arg;
    }
    p->base.ops = &thread_pool_ops;
    /* Tasks share our memory; without an initializer a task may as well
     * run in a thread that is not a worker (executor.h), unless the user
     * turned that off (CFUTURES_WAIT_HELP=0). */
    p->base.caps = CF__EXEC_SHARED_MEMORY |
                   (p->init || !p->cfg.wait_help ? 0 : CF__EXEC_CALLER_MAY_RUN);

    p->inj = alloc_lines(sizeof(struct cf__inject) * (size_t)p->n_inj, &p->inj_raw);
    if (!p->inj) return CF_ENOMEM;
    for (int k = 0; k < p->n_inj; k++) cf__inject_init(&p->inj[k]);
    p->subs = alloc_lines(sizeof(struct cf__subslots), &p->subs_raw);
    if (!p->subs) return CF_ENOMEM;
    cf__subslots_init(p->subs);
    p->w = alloc_lines(sizeof(struct cf__worker) * (size_t)p->n, &p->w_raw);
    if (!p->w) return CF_ENOMEM;
    rc = map_cpus(p);
    if (rc) return rc;
    return workers_init(p);
}

/* Worker threads: the process's default stack, but at least
 * CF__WORKER_STACK_MIN (waits run tasks on it, within a bound: worker.c). */
static int worker_attr(pthread_attr_t *attr)
{
    if (pthread_attr_init(attr) != 0) return -1;
    size_t size = 0;
    if (pthread_attr_getstacksize(attr, &size) == 0 && size < CF__WORKER_STACK_MIN &&
        pthread_attr_setstacksize(attr, CF__WORKER_STACK_MIN) != 0) {
        pthread_attr_destroy(attr);
        return -1;
    }
    return 0;
}

/* A new pool's first use should not pay for its threads' start: until a
 * new thread has run (in a VM, up to milliseconds after pthread_create),
 * set itself up and counted itself in `ready`, it neither takes work nor
 * is parked where a submit can wake it, so a burst submitted right away
 * queues behind the scheduler. Wait for that here, giving the CPU to the
 * starting threads. Not with an initializer: that is user code, which may
 * wait for something the creating thread does after we return. */
static void workers_await_ready(struct cf__pool *p)
{
    /* Relaxed: we only wait for the count; nothing is read through it. */
    while (atomic_load_explicit(&p->ready, memory_order_relaxed) < p->n) sched_yield();
}

CF_API int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_opts *opts)
{
    if (!out) return CF_EINVAL;
    *out = NULL;
    cf__pool_fork_watch();
    void *raw;
    struct cf__pool *p = alloc_lines(sizeof *p, &raw);
    if (!p) return CF_ENOMEM;
    p->raw = raw;
    /* Relaxed: a fork cannot run in this thread meanwhile. */
    p->gen = cf__proc_gen();
    atomic_init(&p->flags, 0);
    atomic_init(&p->broken_msg, NULL);
    atomic_init(&p->searching, 0);
    atomic_init(&p->maps, 0);
    atomic_init(&p->map_keeper, -1);
    cf__ec_init(&p->ec);
    atomic_init(&p->last_parked, -1);
    atomic_init(&p->outside_runs, 0);
    atomic_init(&p->outside_waiting, 0);
    atomic_init(&p->ready, 0);
    pthread_mutex_init(&p->join_lock, NULL);
    pthread_cond_init(&p->join_cv, NULL);
    int rc = pool_setup(p, opts);
    pthread_attr_t attr;
    bool have_attr = rc == 0 && worker_attr(&attr) == 0;
    for (int i = 0; rc == 0 && i < p->n; i++) {
        if (pthread_create(&p->w[i].thread, have_attr ? &attr : NULL, cf__worker_main, &p->w[i]) !=
            0)
            rc = CF_ESYS;
        else {
            pthread_mutex_lock(&p->join_lock);
            p->w[i].started = true;
            p->started++;
            pthread_mutex_unlock(&p->join_lock);
        }
    }
    if (have_attr) pthread_attr_destroy(&attr);
    if (rc == 0 && !p->init) workers_await_ready(p);
    if (rc) {
        cf__config_report_failure(&p->cfg, rc, false); /* one line if the environment's */
        /* Started workers (if any) see SHUTDOWN with nothing queued and
         * leave; then everything is freed. */
        tp_shutdown(&p->base, true, false);
        pool_free(p);
        return rc;
    }
    *out = &p->base;
    return 0;
}
