/* The work-stealing thread pool's internal objects. The files: thread_pool.c
 * (the executor ops and the pool's life), worker.c (what a worker thread
 * does), wake.c (whom to wake), task.c (the pool's task records and their
 * hook for an outside thread about to block); fork detection is sys/fork.c.
 * Calls go thread_pool.c -> task.c, worker.c -> task.c and spin.c (the
 * idle spin policy), all three -> wake.c and sys/fork.c; thread_pool.c and
 * worker.c meet only at a worker's creation (cf__worker_main, and
 * cf__tls_worker, which worker.c sets in its threads and the pool reads to
 * recognise one of its own workers) and its exit (cf__pool_worker_exit):
 * the one documented circle.
 *
 * Who touches what
 * - struct cf__worker: `dq` (see deque.h for its own layout); the line with
 *   `pool`..`rng` is written only by the worker thread; `st` is written only
 *   by the worker and read (relaxed) by cf_executor_stats.
 * - struct cf__pool: `flags` is read by every submit and every task start
 *   and written twice in a pool's life (read-mostly line); `searching` by
 *   idle workers; the event count by parking workers. Each on its own line
 *   (asserted).
 *
 * The protocols (no lost wake-up, shutdown drain, broken pool) are written
 * down where they are implemented, in worker.c and thread_pool.c. */
#ifndef CF_THREAD_POOL_H
#define CF_THREAD_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sys/config.h"
#include "sync/deque.h"
#include "sync/eventcount.h"
#include "core/executor.h"
#include "sync/fence.h"
#include "core/future.h"
#include "sync/inject.h"
#include "sys/topology.h"
#include "sys/fork.h"
#include "thread/spin.h"
#include "thread/subslot.h"
#include "thread/wake.h"

#define CF__POOL_SHUTDOWN 1u /* no more submissions from outside */
#define CF__POOL_BROKEN 2u   /* an initializer failed: queued work fails */

/* The bound on helping (worker.c): a task waiting at this nesting depth or
 * deeper runs only its own work (its children, or the awaited task); with
 * less than CF__HELP_STACK_RESERVE(stack size) bytes of stack left below
 * the waiting frame it runs nothing and sleeps. */
#define CF__HELP_DEPTH_MAX 64
#define CF__HELP_STACK_RESERVE(size) \
    ((size) / 4 > (size_t)256 * 1024 ? (size) / 4 : (size_t)256 * 1024)
/* Worker threads get at least this much stack (more if the process's
 * default is larger). */
#define CF__WORKER_STACK_MIN ((size_t)8 * 1024 * 1024)

/* Per-worker counters: only the worker writes them (relaxed load + store,
 * no RMW), anyone may read them. One cache line. */
struct cf__wstats {
    _Atomic uint64_t tasks_run;
    _Atomic uint64_t steals_tried, steals_ok;
    _Atomic uint64_t steals_local, steals_remote;
    _Atomic uint64_t injected_taken;
    _Atomic uint64_t parks, wakeups;
};
_Static_assert(sizeof(struct cf__wstats) == CF__CACHE_LINE, "one cache line");

struct cf__pool;

struct cf__worker {
    struct cf__deque dq;
    /* Owner-private. */
    _Alignas(CF__CACHE_LINE) struct cf__pool *pool;
    int id;
    int slot;             /* its node's injection queue */
    int cpu, numa_node;   /* placement, for stats */
    uint64_t rng;         /* victim choice */
    bool handoff;         /* woken by a submitter on its own CPU: hand the
                            searching role to a worker elsewhere (worker.c) */
    int depth;            /* tasks running on this thread's stack (nested by waits) */
    int64_t mark;         /* own deque's bottom when the innermost one started */
    uintptr_t help_floor; /* a wait runs no task with its frame below this */
    unsigned out_takes;   /* outside tasks taken one by one (worker.c) */
    struct cf__spin spin; /* how long it spins when idle (spin.h) */
    pthread_t thread;
    bool started;
    bool exited; /* under the pool's join_lock */
    /* Written by the worker, read by stats readers. */
    _Alignas(CF__CACHE_LINE) struct cf__wstats st;
    /* Its parking word (eventcount.h): written by notifiers. */
    struct cf__ec_slot park;
};
_Static_assert(offsetof(struct cf__worker, pool) % CF__CACHE_LINE == 0, "owner line");
_Static_assert(offsetof(struct cf__worker, st) % CF__CACHE_LINE == 0, "stats line");
_Static_assert(offsetof(struct cf__worker, park) % CF__CACHE_LINE == 0, "park line");
_Static_assert(sizeof(struct cf__worker) % CF__CACHE_LINE == 0, "whole lines");

struct cf__pool {
    struct cf_executor base; /* first: the generic entry points see this */
    /* Read-only after construction. */
    struct cf__config cfg;
    hwloc_topology_t topo;
    bool have_topo, have_place;
    struct cf__placement place;
    int n;                /* workers */
    struct cf__worker *w; /* n entries, cache-line aligned */
    void *w_raw;
    struct cf__inject *inj; /* n_inj entries (one per NUMA node slot) */
    void *inj_raw;
    int n_inj;
    struct cf__subslots *subs; /* outside submitters' slots (subslot.h) */
    void *subs_raw;
    int steal_attempts;
    int max_searching; /* workers that may spin at once: max(1, n / 2) */
    int n_cpu_worker;  /* cpu_worker[os cpu]: the worker pinned there, or -1 */
    int *cpu_worker;
    long spin_ns;
    bool stats;
    cf_init_fn *init;
    void *init_arg;
    char prefix[16];
    void *raw; /* this allocation, before alignment */

    unsigned gen; /* cf__fork_gen when made (fork detection) */

    /* Read-mostly: written at shutdown and when broken. */
    _Alignas(CF__CACHE_LINE) _Atomic uint32_t flags;
    _Atomic(char *) broken_msg; /* set once, before CF__POOL_BROKEN */

    /* Workers looking for work (spinning), not parked. */
    _Alignas(CF__CACHE_LINE) _Atomic int searching;
    /* cf_map iterators running on this pool (ops->map_active), and the
     * worker that keeps searching past its spin budget meanwhile (-1: none;
     * worker.c, keep_searching). Read by searchers. */
    _Atomic int maps;
    _Atomic int map_keeper;

    struct cf__eventcount ec; /* parked workers (each on its own slot) */
    /* The worker that parked last (warmest): tried first by wakes. */
    _Alignas(CF__CACHE_LINE) _Atomic int last_parked;

    /* Tasks of this pool that threads outside it are running now
     * (task.c's run_awaited), and whether a joiner sleeps on that count
     * (futex). shutdown(wait=true) waits for them after the workers. */
    _Alignas(CF__CACHE_LINE) _Atomic uint32_t outside_runs;
    _Atomic uint32_t outside_waiting;
    /* Outside submits in progress that have no slot of their own (a slot's
     * owner marks its slot instead: subslot.h, `submitting`). */
    _Atomic uint32_t slotless_submits;
    /* Workers that have entered their loop (each adds 1 once): until all
     * have, a waiting thread outside does not take their work (task.c). */
    _Atomic int ready;

    /* Joining, once, by whichever shutdown(wait=true) gets here first. */
    _Alignas(CF__CACHE_LINE) pthread_mutex_t join_lock;
    pthread_cond_t join_cv; /* signalled when a joiner is done */
    bool joining, joined;   /* a joiner works without the lock (workers
                                need it on their way out) */
    bool orphaned;          /* freed from inside a worker: the last one out frees */
    int started, exited;    /* worker threads, under join_lock */
};
_Static_assert(offsetof(struct cf__pool, searching) / CF__CACHE_LINE !=
                   offsetof(struct cf__pool, flags) / CF__CACHE_LINE,
               "searching count off the read-mostly line");

/* The worker the calling thread is, or NULL (worker.c). No thread-local of
 * the library is initial-exec (docs/LINKING.md: it would stop a dlopen). */
extern _Thread_local struct cf__worker *cf__tls_worker;

/* A pool made in another process (fork.h) is the parent's: in a child it
 * has no worker threads, and every call that would need them is refused. */
static inline bool cf__pool_foreign(const struct cf__pool *p)
{
    return p->gen != cf__proc_gen();
}

/* Test points: a test may install a hook that a worker calls at these
 * places (to hold it there and force an interleaving). Only in the tests'
 * build (CF_TEST_HOOKS), where each point costs one relaxed load; in the
 * shipped library the points compile to nothing. */
enum {
    CF__TEST_TP_FOUND_WORK = 1, /* a searcher found work, before it stops searching */
    CF__TEST_TP_PARK_DECIDED,   /* a parker left `searching`, before it announces itself */
    CF__TEST_TP_PARK_PREPARED,  /* a parker announced itself, before its re-check */
    CF__TEST_TP_SPIN_DECIDED,   /* idle: the spin policy chose w->spin.granted */
    CF__TEST_TP_SPIN_END,       /* a spin ended as w->spin.outcome (the hook may change
                                    it), before the policy records it */
    CF__TEST_TP_OWN_POPPED,     /* a waiting task popped the awaited task off its own
                                    deque (cf__test_tp_awaited), before running it */
};
#ifdef CF_TEST_HOOKS
typedef void cf__test_tp_hook_fn(struct cf__worker *w, int point);
extern _Atomic(cf__test_tp_hook_fn *) cf__test_tp_hook;
/* The task at CF__TEST_TP_OWN_POPPED: set by the worker just before it
 * calls the hook there (only that worker's hook call reads it). */
extern _Thread_local cf_future *cf__test_tp_awaited;
/* Called by an outside submit once its task is queued, before it reads
 * the pool's flags and wakes a worker (thread_pool.c). */
typedef void cf__test_tp_submit_hook_fn(struct cf__pool *p);
extern _Atomic(cf__test_tp_submit_hook_fn *) cf__test_tp_submit_hook;
#endif

/* worker.c: one queued task of p, taken by any thread (a waiting thread
 * outside the pool that runs queued work): the oldest of an outside
 * submitter's slot, else the oldest of an injection queue. The caller
 * owns the pool's reference: it runs the task (cf__future_run; a task
 * another thread started or that was cancelled is skipped) and releases
 * it. NULL when nothing is queued there (tasks in workers' deques are left
 * to the workers). */
cf_future *cf__pool_take_one(struct cf__pool *p);

/* worker.c: a worker thread's body (the pool's constructor starts it). */
void *cf__worker_main(void *arg);
/* thread_pool.c: called by a worker thread as it leaves: frees the pool if
 * it was freed from inside one of its workers and this is the last one.
 * With cf__worker_main, the one edge between the two files in each
 * direction: the pool creates workers, a worker reports its exit. */
void cf__pool_worker_exit(struct cf__worker *w);
/* thread_pool.c: free a pool that was destroyed from inside a task run by
 * a thread outside it, once that run is over (task.c). */
void cf__pool_free(struct cf__pool *p);

#endif
