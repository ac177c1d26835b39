/* The thread pool's task records: each carries the pool (its owner word)
 * and two per-future hooks for a thread outside the pool that waits on a
 * task: on_wait, about to block on a task whose submit had to wake a
 * parked worker, and run_awaited, which runs a task nobody has started in
 * the waiting thread while every worker is busy.
 *
 * Contract
 * - cf__pool_task_new and cf__pool_owns_task: any thread; the record is
 *   core/'s (future.h), this file only chooses its hooks and owner.
 * - tp_on_wait runs in the waiting thread, concurrently with the pool's
 *   workers and possibly with the pool being freed by another thread (the
 *   task may have started, the workers finished and been joined): it
 *   reads the pool only between a seq_cst increment of `hooks_running` and
 *   the release decrement, and pool_free waits for the count to drop
 *   (cf__pool_hooks_quiesce), so no hook reads a freed pool.
 * - tp_run_awaited reads the pool under the same count, and only after a
 *   seq_cst load found f PENDING (the argument of tp_on_wait). To run f it
 *   counts the run in the pool's outside_runs and looks at f again
 *   (count_run says why), then drops hooks_running and runs f through
 *   cf__future_run, whose start CAS decides between it and the worker
 *   that pops the record later (that worker finds f started and only
 *   drops the pool's reference). shutdown(wait=true) waits for
 *   outside_runs to drop after joining the workers, so the pool stays
 *   while the run is counted; the decrement (run_end) happens under
 *   hooks_running again, since a joiner that sees zero goes on to free
 *   the pool. hooks_running is never held while a task runs (a task may
 *   free a pool, whose pool_free waits for the count).
 * - Runs in a thread outside the pool nest on its stack (a task run there
 *   may wait, and run another): bounded as a worker's helping is
 *   (thread_pool.h), at CF__HELP_DEPTH_MAX nested runs and the stack
 *   reserve of the thread's real stack.
 * - The cold-submit note and the nesting depth are thread-local: written
 *   and read by the thread itself. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "sync/fence.h"
#include "thread/fork_join.h"
#include "thread/task.h"
#include "thread/thread_pool.h"

/* Hooks running right now, in any pool. pool_free waits for zero
 * (cf__pool_hooks_quiesce) before it frees: a hook reads the pool through
 * the future's owner word, and the pool may be freed by another thread as
 * soon as f has started (the workers then may finish, be joined and the
 * pool freed). */
static _Atomic int hooks_running;

/* The last task this thread submitted from outside whose submit had to
 * wake a parked worker (a cold start), and whether that worker is pinned
 * to the submitter's CPU. Only such a wait does more than spin: in a hot
 * round trip the hook costs one TLS compare. */
static _Thread_local cf_future *tls_cold_submit;
static _Thread_local bool tls_cold_local;

static bool tp_on_wait(cf_future *f)
{
    if (tls_cold_submit != f) return false;
    tls_cold_submit = NULL;
    /* Seq_cst RMW then seq_cst load of the state: pairs with the fence and
     * load of hooks_running in cf__pool_hooks_quiesce (pool_free). f's
     * start (a CAS on its state) happens before the workers are joined and
     * so before pool_free's fence; if that fence precedes our RMW in the single total order, our
     * load sees f no longer PENDING and we leave p alone; otherwise
     * pool_free's load sees our increment and waits for us. */
    atomic_fetch_add_explicit(&hooks_running, 1, memory_order_seq_cst);
    bool woke = false;
    /* (In a fork child the parent's workers are not there to wake.) */
    if ((atomic_load_explicit(&f->state, memory_order_seq_cst) & CF__STATE_MASK) == CF__PENDING &&
        !cf__pool_foreign(cf__future_executor(f)))
        woke = cf__pool_wake_for_waiter(cf__future_executor(f), tls_cold_local);
    /* Release: our reads of the pool happen before pool_free's acquire
     * load that sees the count drop. */
    atomic_fetch_sub_explicit(&hooks_running, 1, memory_order_release);
    return woke;
}

#ifdef CF_TEST_HOOKS
_Atomic(cf__test_run_awaited_fn *) cf__test_run_awaited_hook;
#endif

/* Test points (task.h): one relaxed load in the tests' build, nothing in
 * the shipped library. */
static inline void test_point(cf_future *f, int point)
{
#ifdef CF_TEST_HOOKS
    /* Relaxed: installed before the interleaving it forces. */
    cf__test_run_awaited_fn *h = atomic_load_explicit(&cf__test_run_awaited_hook,
                                                      memory_order_relaxed);
    if (h) h(f, point);
#else
    (void)f;
    (void)point;
#endif
}

/* Runs of tasks nested on this (outside) thread's stack, the pool of each,
 * and the lowest frame address from which it may still start one (0: not
 * looked up yet; UINTPTR_MAX: unknown, never). */
static _Thread_local int tls_run_depth;
static _Thread_local struct cf__pool *tls_run_pool[CF__HELP_DEPTH_MAX];
static _Thread_local uintptr_t tls_run_floor;
/* Pools destroyed from inside such a run, freed when its run ends. */
static _Thread_local struct cf__pool *tls_free_later[CF__HELP_DEPTH_MAX];
static _Thread_local int tls_n_free_later;

/* Runs of p on this thread's stack. */
static int runs_here(const struct cf__pool *p)
{
    int mine = 0;
    for (int i = 0; i < tls_run_depth; i++) mine += tls_run_pool[i] == p;
    return mine;
}

bool cf__pool_free_after_runs(struct cf__pool *p)
{
    if (runs_here(p) == 0) return false;
    /* At most one entry per pool on the stack, and at most
     * CF__HELP_DEPTH_MAX runs. */
    tls_free_later[tls_n_free_later++] = p;
    return true;
}

/* After the end of a run of p on this thread: free p if it was destroyed
 * meanwhile and this was its outermost run here. */
static void free_if_destroyed(struct cf__pool *p)
{
    if (tls_n_free_later == 0 || runs_here(p) > 0) return;
    for (int i = 0; i < tls_n_free_later; i++) {
        if (tls_free_later[i] != p) continue;
        tls_free_later[i] = tls_free_later[--tls_n_free_later];
        cf__pool_free(p);
        return;
    }
}

/* The thread's real stack plus the reserve that helping keeps free, as a
 * worker computes it (worker.c); looked up once per thread. */
static uintptr_t run_floor(void)
{
    if (tls_run_floor) return tls_run_floor;
    uintptr_t floor = UINTPTR_MAX;
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo = NULL;
        size_t size = 0;
        if (pthread_attr_getstack(&a, &lo, &size) == 0 && lo && size > 0)
            floor = (uintptr_t)lo + CF__HELP_STACK_RESERVE(size);
        pthread_attr_destroy(&a);
    }
    return tls_run_floor = floor;
}

/* Every worker is running a task: all have started, none is searching
 * or parked, so nobody would take f sooner than we can. Relaxed: a hint;
 * running f here or not is correct either way (the start CAS decides who
 * runs it). */
static bool pool_saturated(struct cf__pool *p)
{
    return atomic_load_explicit(&p->ready, memory_order_relaxed) == p->n &&
           atomic_load_explicit(&p->searching, memory_order_relaxed) == 0 &&
           cf__ec_waiters(&p->ec) == 0;
}

static void outside_runs_drop(struct cf__pool *p);

/* Count a run of f in p (the caller holds hooks_running and saw f
 * PENDING, so p is there), then look at f again: CF__RUN_RAN if it is
 * still PENDING (the count holds the pool from here on), else the count
 * is taken back and CF__RUN_SKIP.
 * Why the second look: a worker may start f and the workers be joined
 * between our first look and the increment; the joiner's seq_cst load of
 * outside_runs then precedes our seq_cst increment in the single total
 * order, and f's start happens before that load (the join), so our
 * seq_cst load after the increment sees f started. Otherwise the joiner's
 * load comes after our increment and it waits for our run. */
static int count_run(struct cf__pool *p, cf_future *f)
{
    atomic_fetch_add_explicit(&p->outside_runs, 1, memory_order_seq_cst);
    if ((atomic_load_explicit(&f->state, memory_order_seq_cst) & CF__STATE_MASK) == CF__PENDING)
        return CF__RUN_RAN;
    outside_runs_drop(p);
    return CF__RUN_SKIP;
}

/* May this thread run f here now? Reads the pool under hooks_running. */
static int may_run_here(cf_future *f)
{
    struct cf__pool *p = cf__future_executor(f);
    int verdict = CF__RUN_SKIP;
    /* Seq_cst RMW and load: as in tp_on_wait (pairs with
     * cf__pool_hooks_quiesce). */
    atomic_fetch_add_explicit(&hooks_running, 1, memory_order_seq_cst);
    if ((atomic_load_explicit(&f->state, memory_order_seq_cst) & CF__STATE_MASK) == CF__PENDING) {
        if (cf__pool_foreign(p) || !cf__exec_can(&p->base, CF__EXEC_CALLER_MAY_RUN))
            verdict = CF__RUN_NEVER;
        else if (!pool_saturated(p)) verdict = CF__RUN_NOT_NOW;
        else {
            test_point(f, CF__TEST_RA_LOOKED);
            verdict = count_run(p, f);
        }
    }
    /* Release: our reads of the pool before pool_free's acquire load. */
    atomic_fetch_sub_explicit(&hooks_running, 1, memory_order_release);
    return verdict;
}

/* A run counted by may_run_here is over. The decrement and the wake run
 * under hooks_running: a joiner that sees the count reach zero goes on to
 * free the pool, and pool_free waits for hooks_running first. */
static void run_end(struct cf__pool *p)
{
    /* Seq_cst: as in may_run_here. */
    atomic_fetch_add_explicit(&hooks_running, 1, memory_order_seq_cst);
    outside_runs_drop(p);
    /* Release: as in may_run_here. */
    atomic_fetch_sub_explicit(&hooks_running, 1, memory_order_release);
}

/* Take one run off the count, waking a joiner that waits for zero. The
 * caller holds hooks_running. */
static void outside_runs_drop(struct cf__pool *p)
{
    /* Seq_cst RMW, then seq_cst load of outside_waiting: pairs with the
     * joiner's seq_cst store of outside_waiting and load of the count
     * (store buffering: one of us sees the other). Release also orders
     * the task's run before the joiner's return. */
    if (atomic_fetch_sub_explicit(&p->outside_runs, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&p->outside_waiting, memory_order_seq_cst))
        cf__futex_wake(&p->outside_runs, INT32_MAX, false);
}

void cf__pool_outside_runs_wait(struct cf__pool *p)
{
    uint32_t mine = (uint32_t)runs_here(p); /* our own stack's: never wait for those */
    /* Seq_cst: see run_end. */
    atomic_store_explicit(&p->outside_waiting, 1, memory_order_seq_cst);
    uint32_t v;
    /* Seq_cst (acquire at least): the runs we waited for happen before our
     * return. */
    while ((v = atomic_load_explicit(&p->outside_runs, memory_order_seq_cst)) > mine)
        cf__futex_wait(&p->outside_runs, v, CF__NO_DEADLINE, false);
}

/* The run_awaited hook (executor.h): a thread outside the pool runs f, a
 * task nobody has started, while every worker is busy. */
static int tp_run_awaited(cf_future *f)
{
    if (cf__tls_worker) return CF__RUN_NEVER; /* a worker helps through its wait helper */
    if (tls_run_depth >= CF__HELP_DEPTH_MAX || (uintptr_t)__builtin_frame_address(0) <= run_floor())
        return CF__RUN_NEVER;
    /* Relaxed: a pre-check that saves the count; may_run_here decides. */
    if ((atomic_load_explicit(&f->state, memory_order_relaxed) & CF__STATE_MASK) != CF__PENDING)
        return CF__RUN_SKIP;
    if (cf__fj_is_root(f)) return CF__RUN_SKIP; /* a worker runs it (fork_join.h) */
    int verdict = may_run_here(f);
    if (verdict != CF__RUN_RAN) return verdict;
    test_point(f, CF__TEST_RA_START);
    /* The pool stays (our run is counted, and shutdown(wait=true) waits
     * for the count), but f may have been started or cancelled meanwhile:
     * the start CAS inside cf__future_run decides. */
    struct cf__pool *p = cf__future_executor(f); /* counted: alive until run_end */
    tls_run_pool[tls_run_depth++] = p;
    bool ran = cf__future_run(f);
    tls_run_depth--;
    run_end(p);
    free_if_destroyed(p);
    return ran ? CF__RUN_RAN : CF__RUN_SKIP;
}

const struct cf__future_ops cf__pool_task_ops = {
    .on_wait = tp_on_wait,
    .run_awaited = tp_run_awaited,
};

void cf__pool_note_cold_submit(struct cf__pool *p, cf_future *f, int woke)
{
    tls_cold_submit = f;
    tls_cold_local = cf__pool_is_callers_cpu(p, woke);
}

void cf__pool_hooks_quiesce(void)
{
    /* Seq_cst fence, then acquire loads: no tp_on_wait still reads a pool
     * (the pairing is explained there). */
    CF__FENCE_SEQ_CST();
    while (atomic_load_explicit(&hooks_running, memory_order_acquire) != 0) sched_yield();
}
