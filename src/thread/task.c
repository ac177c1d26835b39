/* The thread pool's task records: each carries the pool (its owner word)
 * and one per-future hook, on_wait, for an outside thread about to block
 * on a task whose submit had to wake a parked worker.
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
 * - The cold-submit note is thread-local: written by the submitting
 *   thread, read by the same thread when it waits. */
#include <sched.h>

#include "sync/fence.h"
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
static CF__TLS_IE _Thread_local cf_future *tls_cold_submit;
static CF__TLS_IE _Thread_local bool tls_cold_local;

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

const struct cf__future_ops cf__pool_task_ops = {.on_wait = tp_on_wait};

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
