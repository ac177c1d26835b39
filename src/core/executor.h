/* The executor interface: everything through which an executor plugs into
 * the generic code of core/ (cf_submit, cf_executor_*, cf_map, the
 * future's queries, cf_wait and cf_as_completed). core/ knows executors
 * only through this header; an executor never includes another one.
 *
 * An executor plugs in at three places, and only these:
 *   1. struct cf__executor_ops, the table its struct cf_executor points to:
 *      what the generic entry points call, after they checked their
 *      arguments (below).
 *   2. struct cf__future_ops, the hooks each of its futures may carry
 *      (f->ops): what the future's own calls (cancel, running, result,
 *      release) ask the executor that holds a copy of the task.
 *   3. The thread-local wait helper (cf__tls_wait_helper): a thread of the
 *      executor that must not simply sleep while it waits on a future (a
 *      pool worker runs other tasks meanwhile) installs it; every wait in
 *      core/ calls it instead of sleeping.
 * What the executor can do is told by capability flags (struct
 * cf_executor.caps, CF__EXEC_*), never by its name or the address of its
 * ops: generic code asks "may the consumer run a queued task?", not "is
 * this a thread pool?". Recognising one's own futures (comparing f->ops,
 * or finding the executor from f->ops) is the executor's own business, in
 * its own folder.
 *
 * Who calls what, from which thread
 * - ops->submit, ->workers, ->stats, ->default_window: any thread, any
 *   number at once, including a task or a done-callback running in one of
 *   the executor's own threads (nested submit must work there).
 * - ops->shutdown: any thread, several at once, idempotent; from one of
 *   the executor's own threads it must not wait for that thread.
 * - ops->destroy: once, by cf_executor_free, after shutdown(wait=true);
 *   possibly from one of the executor's own threads (it must then let the
 *   last of them free the memory).
 * - ops->terminate: any thread; NULL if the executor cannot do it.
 * - ops->run_here: the consumer of a cf_map, in its own thread, on a chunk
 *   future it holds a reference to; only if caps has CF__EXEC_CALLER_MAY_RUN.
 * - f->ops->run_awaited: a thread without a wait helper that waits on f
 *   with no deadline (cf_future_result, cf_wait, cf_as_completed), on a
 *   future it holds a reference to, while the executor may be shutting
 *   down or being freed by another thread (the hook says how it copes).
 * - struct cf__future_ops: from whichever thread calls the future's API
 *   (any thread), concurrently with the executor's own threads; each hook
 *   says what it may assume.
 * - The wait helper: only the thread that installed it.
 *
 * Adding an executor (say one over MPI) touches no other executor and no
 * file of core/: it lives in a folder of its own (src/mpi/, named as an
 * executor layer in tools/check-layers), includes core/ and below, and
 * declares its constructor in the public headers. It provides:
 * - a struct that starts with struct cf_executor, whose `ops` points to a
 *   static struct cf__executor_ops with submit, shutdown, destroy, workers
 *   and stats (terminate, default_window and run_here may be NULL), and
 *   whose `caps` states what it does (0 is always safe: no helping, items
 *   copied into cf_map's chunks);
 * - task records made with cf__future_new_task (future.h), run with
 *   cf__future_run where the task runs in this process, or completed with
 *   cf__future_complete_from_out / cf__future_fail_broken /
 *   cf__future_cancel_quiet where it runs elsewhere (another process or
 *   node: the collector of its results completes the future);
 * - per-future hooks (struct cf__future_ops) only for what it needs: a copy
 *   of the task that lives elsewhere needs try_cancel (and on_cancel) so a
 *   cancel is decided where the copy is, and sync_running if "running" is
 *   known only there; on_free if a future holds something of the executor;
 *   on_wait if a waiter can help the task start;
 * - a wait helper only if one of its threads may wait on a future and must
 *   not sleep meanwhile (a thread that completes other futures).
 * The future's `owner` word (future.h) is the executor's to use through its
 * accessors. */
#ifndef CF_EXECUTOR_INTERNAL_H
#define CF_EXECUTOR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "cfutures.h"
#include "sync/futex.h" /* cf__deadline */

/* ---- capabilities (struct cf_executor.caps) ---- */

/* Tasks run in the submitter's address space: an argument may carry a
 * pointer that the task follows. cf_map then hands each chunk a pointer to
 * the caller's items and to a result buffer that its ring slot keeps from
 * chunk to chunk; without it every chunk carries a copy of its items and
 * returns its results in the future (a process pool, or a node over MPI). */
#define CF__EXEC_SHARED_MEMORY (1u << 0)
/* The consumer of a cf_map may run a queued chunk itself (ops->run_here)
 * rather than sleep until a worker starts it, and a thread outside the
 * executor that waits on one of its tasks may run it (the run_awaited
 * hook): running a task in a thread that is not the executor's is
 * indistinguishable from a worker running it (no per-worker initializer
 * has set anything up, no broken state to check, and the user has not
 * turned it off). Implies CF__EXEC_SHARED_MEMORY. */
#define CF__EXEC_CALLER_MAY_RUN (1u << 1)

/* ---- 1. the executor's table ---- */

struct cf__executor_ops {
    /* Arguments already checked (ex, fn, out non-NULL; arg non-NULL or len
     * 0). The arg bytes are copied before submit returns. */
    int (*submit)(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                  cf_future **out);
    int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
    void (*destroy)(cf_executor *ex); /* after shutdown(wait=true) */
    int (*workers)(const cf_executor *ex);
    int (*stats)(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n);
    int (*terminate)(cf_executor *ex, int signo); /* NULL: CF_ENOTSUP */
    /* The number of chunks cf_map keeps submitted when its options give
     * none (the executor's configured default). NULL, or 0 returned: cf_map
     * picks from the worker count. */
    size_t (*default_window)(const cf_executor *ex);
    /* CF__EXEC_CALLER_MAY_RUN: run f, a task of this executor that no
     * worker has started, in the calling thread, claiming it so that it
     * runs once and never after a cancel; the worker that takes it later
     * finds it started and skips it. Returns true if it ran it here, false
     * if it was already started, cancelled or not this executor's. */
    bool (*run_here)(cf_executor *ex, cf_future *f);
    /* cf_map calls it with +1 when an iterator starts and -1 when it is
     * freed: while any map runs, the executor may keep a worker looking for
     * its chunks instead of parking (each chunk is submitted when the
     * consumer moves on, so one arrives every few microseconds). May be
     * NULL. Any thread. */
    void (*map_active)(cf_executor *ex, int delta);
};

/* Every executor struct starts with this. */
struct cf_executor {
    const struct cf__executor_ops *ops;
    unsigned caps; /* CF__EXEC_*, fixed at construction */
};

static inline bool cf__exec_can(const cf_executor *ex, unsigned cap)
{
    return (ex->caps & cap) == cap;
}

/* ---- 2. the per-future hooks (f->ops; NULL for cf_future_new futures) ---- */

struct cf__future_ops {
    /* Called by cf_future_cancel() after the PENDING->CANCELLED CAS
     * succeeded, before listeners are fired: lets an executor drop its copy
     * (e.g. the process pool marks the ring slot cancelled). May be NULL. */
    void (*on_cancel)(cf_future *f);
    /* Called when the last reference goes, before the record is freed, so an
     * executor can release what its `owner` word refers to. May be NULL. */
    void (*on_free)(cf_future *f);
    /* Called (once per wait) by result()/exception() in a thread about to
     * wait for f, not done (not a thread with a wait helper). Returns true
     * if the caller should sleep at once rather than spin first (e.g. the
     * executor woke a worker on the caller's CPU, which gets the CPU only
     * when the caller sleeps). May be NULL. */
    bool (*on_wait)(cf_future *f);
    /* Called by cf_future_cancel() on a PENDING future before its CAS: the
     * executor cancels its own copy first (the process pool's ring slot,
     * whose state word decides "started", SEMANTICS 31b) and returns false
     * if the task has already begun there; cancel() then returns false.
     * May be NULL. on_cancel still runs after a successful CAS. */
    bool (*try_cancel)(cf_future *f);
    /* Called by cf_future_running() on a future that reads PENDING: an
     * executor whose copy of the task lives elsewhere (the process pool's
     * ring slot) publishes RUNNING (cf__future_mark_running) if a worker
     * has begun it there, so running() answers what that copy knows. Must
     * be cheap (a few loads). May be NULL. */
    void (*sync_running)(cf_future *f);
    /* Called by a thread that waits on f without a deadline and has no
     * wait helper (a thread outside every pool), before it spins or
     * sleeps: the executor may run f, a task of its own that nobody has
     * started, in the calling thread (cf_future_result, cf_wait,
     * cf_as_completed). The caller holds a reference to f. Only the hook
     * can tell when the executor's memory may be read (it may be freed by
     * another thread as soon as f is no longer PENDING), so it checks the
     * executor's own conditions itself: CF__EXEC_CALLER_MAY_RUN, that the
     * calling thread is not one of its own, that no worker is idle (an
     * idle worker should take f), and how deep such runs are nested on
     * this thread's stack. Returns a cf__run_result. May be NULL (the
     * same as CF__RUN_NEVER). */
    int (*run_awaited)(cf_future *f);
    /* Called by cf_future_cancel() on a future whose task has begun (it
     * refused to cancel it): an executor whose task runs elsewhere (the
     * process pool's worker) passes the request on to where the task can
     * poll it (cf_out_cancel_requested). A task run with cf__future_run
     * needs nothing: the future's own word carries the request. Any
     * thread; the task may have finished meanwhile. May be NULL. */
    void (*request_cancel)(cf_future *f);
};

/* What run_awaited did. */
enum cf__run_result {
    CF__RUN_RAN,     /* f ran here and is done */
    CF__RUN_SKIP,    /* f was started, cancelled or done: look at another */
    CF__RUN_NOT_NOW, /* a worker is idle and will take f: wait as usual */
    CF__RUN_NEVER,   /* this thread may not run this executor's tasks now */
};

/* ---- 3. the wait helper ---- */

/* A thread that must not sleep while it waits on a future (a pool worker
 * runs other work meanwhile; the process pool's waiter collects results)
 * installs this per-thread hook; cf_future_result/exception, cf_wait and
 * cf_as_completed call it instead of sleeping. It returns when f is done
 * (0) or the deadline passes (CF_ETIMEDOUT). Only the installing thread
 * reads or writes these two variables. */
typedef int cf__wait_helper_fn(void *ctx, cf_future *f, cf__deadline deadline);
extern _Thread_local cf__wait_helper_fn *cf__tls_wait_helper;
extern _Thread_local void *cf__tls_wait_helper_ctx;

#endif
