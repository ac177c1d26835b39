/* The process pool: cf_process_pool_new, and the executor operations
 * (submit, shutdown, terminate, destroy, statistics).
 *
 * Files, each one concern, and who calls whom (an arrow: calls into):
 *   process_pool.c     the executor: constructor, submit, shutdown
 *        |-> proc_life.c         struct, shared mapping, descriptor registry, refcount
 *        |-> proc_ring_parent.c  the parent's side of the ring protocol
 *        |-> proc_overflow.c     the overflow list (-> proc_ring_parent.c)
 *        |-> proc_help.c         helping waits (-> proc_ring_parent.c, proc_collector.c)
 *        |-> proc_collector.c    the collector thread (-> ring_parent, overflow, life)
 *        `-> proc_zygote.c       the zygote (-> proc_worker.c, proc_life.c)
 *   proc_worker.c      a worker's life (calls nothing of the pool's)
 * No file calls back into one that calls it. The one edge in both
 * directions is a thread's create/exit: the constructor starts the
 * collector thread, whose last act is dropping its reference on the pool
 * (cf__pp_unref, in proc_life.c, not in this file).
 *
 * Design (SEMANTICS 27-33).
 *
 * Processes. cf_process_pool_new maps the shared memory (proc_shm.h), then
 * forks ONE child, the zygote, and every worker is forked by the zygote,
 * replacements included. A worker therefore sees the parent's memory as it
 * was when the pool was created (27): globals are that snapshot, and a
 * MAP_SHARED mapping made before the pool is shared; replacements for
 * max_tasks_per_child or crashes see the very same snapshot. A task
 * function is named by its address, which is the same in a fork; workers
 * that do not share the parent's layout do not exist (we never exec).
 *
 * Why starting workers is safe when the parent runs threads that hold locks
 * (SEMANTICS 32, CPython gh-90622): the zygote is single-threaded, so each
 * fork it makes copies a process in which no other thread can hold
 * anything. Only the very first fork (parent -> zygote) copies a
 * multi-threaded process. It relies on: glibc's fork, which takes its
 * malloc and stdio-list locks around the fork; with CF_JEMALLOC,
 * jemalloc's pthread_atfork handlers, which do the same for its arenas;
 * cfutures' own process-wide locks (the record slabs' in sys/slab.c, the
 * submitter-slot registry's in thread/subslot.c), which their atfork
 * handlers take around every fork in the same way (the per-pool locks of
 * other pools are never touched by a zygote or a worker); and the zygote
 * calling nothing but system
 * calls (poll, read, write, fork, waitpid, kill, close, prctl, _exit). What
 * it cannot fix: a lock of the application's own (or a FILE's) held by
 * another thread at that one instant stays held in every worker; create
 * the pool before starting threads that hold locks across it, as with any
 * fork. stdio is flushed before that fork so that no buffered output is
 * written twice, and workers and the zygote leave with _exit (no atexit
 * handlers, no stdio flush of the parent's buffers); a task that calls
 * exit() is turned into _exit with its status (proc_worker.c).
 *
 * The parent talks to the zygote through two socket pairs (SOCK_SEQPACKET:
 * whole messages, EOF when the peer goes, MSG_NOSIGNAL so a dead zygote is
 * an error code and not a SIGPIPE) (requests: spawn worker
 * i at position p, kill all with signal s, exit; reports: spawned pid,
 * spawn failed, died with wait status), so worker pids and exit statuses
 * come from a process that runs only our code, never from shared memory a
 * worker could scribble on. The zygote reaps its workers (SIGCHLD + waitpid),
 * so a pid is never signalled after it could have been reused. The parent
 * watches the zygote through a pidfd (and the report socket's EOF). Workers
 * die with the zygote (PR_SET_PDEATHSIG), the zygote with the parent (the
 * request socket's EOF, or, when a copy of the parent's end outlives it in
 * another process, a getppid() check at least once a second).
 * Invariant against deadlock on the two sockets: the parent's sends may
 * block, the zygote never blocks on a socket (non-blocking ends, its own
 * report queue flushed by its poll() loop, requests read as they come), and
 * that queue is bounded by two reports per channel because the parent asks
 * for a worker on a channel only at creation or after reading its death
 * (proc_zygote.c).
 *
 * Isolation: each channel's parts of the mapping are page aligned; a new
 * worker unmaps every other channel's (cf__pp_shm_isolate), and the parent
 * marks the mapping MADV_DONTFORK once the zygote has its copy, so later
 * forks (other pools' zygotes, the application's) do not inherit it. Each
 * slot also carries checks, one per direction (proc_shm.h), against stray
 * writes into a channel.
 *
 * Shared memory and waiting. One channel per worker: SPSC rings of slots
 * (proc_shm.h), filled by submitters under the channel's fill lock (a
 * short critical section: copy the argument, publish the state; a
 * test-and-set word, and a submitter that finds it taken tries another
 * channel), taken in order
 * by the worker, collected in order by the parent's collector thread.
 * Whether a task has started is decided by the slot's state word in shared
 * memory (31b): the worker CASes QUEUED->STARTED, try_cancel CASes
 * QUEUED->CANCELLED before cf_future_cancel() touches the future, so
 * whoever wins the slot decides: a started task makes cancel() return
 * false. The generation bits in the word make a late cancel harmless. The
 * collector, seeing a slot the worker SKIPPED while the future is not yet
 * cancelled (a canceller between the two CASes), cancels the future itself
 * (cf__future_cancel_quiet). One narrow window stays: a task fed from the
 * overflow list at the very moment it is cancelled (on_cancel, after the
 * future's CAS, then cancels the slot unless the worker already began). Workers spin cfg.spin_ns on the slot, then set the WAITER bit
 * and futex-wait on it (shared futex); a submitter makes the futex_wake
 * call only when that bit was set. The collector spins, then stores 1 in
 * the shared doorbell word and sleeps in poll() on an eventfd, the report
 * socket and the zygote's pidfd; a worker writes the eventfd only if it finds
 * the doorbell set. A full ring loses nothing: the submitter first collects
 * finished results itself (freeing slots) or waits a few microseconds for
 * the collector, and if the rings are still full the submission waits in
 * the parent's overflow list; the collector, and every submitter that adds
 * to the list, feed it into the rings as slots free up (HELD, then QUEUED,
 * so a cancel in between is never lost), oldest first.
 *
 * Helping. A thread that submitted to the pool and then waits in result()
 * on one of its futures does the collector's job meanwhile (through
 * cf__tls_wait_helper): it takes the collect lock when free, takes every
 * plainly DONE and valid result, releases the lock, then completes those
 * futures (their callbacks run in that thread, the completing one, as
 * SEMANTICS 9 allows). A submitter whose rings are full collects the same
 * way before it retries, and also every HARVEST_EVERY submits (below), so
 * that in a burst results flow back through the submitting thread. While
 * helpers are active, and while anyone submits, the collector thread naps
 * between its steps instead of spinning, and workers do not ring the
 * doorbell, so a round trip costs no system call and no third thread: on
 * 2 cores the submitter and the workers have the cores. After a nap in
 * which helpers harvested, the collector leaves the rings to them for
 * that step (proc_collector.c, defer_to_helpers), unless one of them left
 * it a slot (p->coll_attn). The nap is bounded (200 us; 1 ms while a helper
 * is inside result()): a submitter never says it has stopped, so the
 * collector looks again after each nap and, once nobody has submitted for
 * a whole nap, spins and sleeps with the doorbell on as before; a result
 * that nobody else collects waits at most that long. Everything unusual (corruption, deaths,
 * skipped slots, shutdown, termination) stays with the collector thread,
 * except two things done in the caller's thread: shutdown(cancel_futures)
 * cancels everything not begun before it returns (cf__pp_cancel_unstarted,
 * under the collect lock), and running() publishes RUNNING as soon as the
 * slot says a worker began (cf__pp_sync_running).
 * Spins call sched_yield() every 64 rounds: on a loaded 2-core machine a
 * pure spin starves the very process it waits for.
 *
 * Crashes (28): a DIED report makes the collector first collect what the
 * worker finished, then look at the slot it was on: STARTED means it held
 * that task. A clean exit (status 0) holding nothing after exactly
 * max_tasks_per_child tasks is a retirement: a replacement is forked at the
 * same ring position, so a long backlog never hangs (30). Anything else
 * breaks the pool: every future in flight and in the overflow list fails
 * with CF_EBROKEN and a message naming the pid and status or signal; the
 * remaining workers are killed; later submits fail with CF_EBROKEN. A
 * result() or shutdown(wait) already asleep wakes because its future (or
 * the collector's end) completes. A task that returns an error code is an
 * ordinary task error (29).
 *
 * Lifetime: the pool struct and the mapping live while the executor handle,
 * the collector thread or any future the pool made is alive (a cancel may
 * come late), counted in p->refs; the last one frees them (proc_life.c).
 *
 * What is not lock-free here, and why: submitters to one channel serialise
 * on its fill lock (the rings are SPSC; the critical section is a copy and
 * a store; a spin lock with no system call, proc_pool.h), and the overflow
 * list is a mutex-protected list (a slow path).
 * Callbacks never run under either. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/cgroup.h"
#include "sys/config.h"
#include "sync/futex.h"
#include "process/proc_collector.h"
#include "process/proc_help.h"
#include "process/proc_life.h"
#include "process/proc_overflow.h"
#include "process/proc_ring_parent.h"
#include "process/proc_zygote.h"

#define ARG_SPILL_DEFAULT (256ull << 20) /* per channel, virtual (MAP_NORESERVE) */
#define RES_SPILL_DEFAULT (1ull << 30)
#define PAGE 4096u

#ifdef CF_TEST_HOOKS
size_t cf__proc_test_spill_size;
#define SPILL_OVERRIDE cf__proc_test_spill_size
#else
#define SPILL_OVERRIDE ((size_t)0)
#endif

static struct cf__ppool *pool_of(cf_executor *ex)
{
    return (struct cf__ppool *)ex;
}

/* ---- submit ---- */

/* A thread that submits to a process pool collects results itself while it
 * waits in result() (proc_help.c), saving the hop through the collector
 * thread. Not in threads that have a helper already (thread-pool workers
 * run tasks while they wait) nor in a collector thread. */
static inline void install_helper(void)
{
    if (!cf__tls_wait_helper && !cf__pp_tls_collector) {
        cf__tls_wait_helper = cf__pp_wait_helper;
        cf__tls_wait_helper_ctx = NULL;
    }
}

#ifdef CF_TEST_HOOKS
void (*cf__proc_test_in_fill)(int chan);
#endif

/* Try each channel once, from a round-robin start, skipping channels
 * another producer is filling: place f in the first with room. 1 placed,
 * 0 every ring full or busy, or the flags' error. */
static int try_rings(struct cf__ppool *p, cf_future *f, const void *arg, size_t len)
{
    /* relaxed: only spreads submitters over the channels (the collector
     * also reads it as a sign that someone is submitting). */
    uint64_t start = atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed);
    for (int k = 0; k < p->n; k++) {
        int chan = (int)((start + (uint64_t)k) % (uint64_t)p->n);
        struct cf__pchan *ch = &p->ch[chan];
        struct cf__pp_spot at;
        if (!cf__pp_fill_trylock(ch)) continue; /* busy: another channel, or the next round */
        /* Re-checked under the lock: the collector sets the flag, then
         * takes each fill lock to sweep or to place EXIT markers, so
         * nothing lands behind them. acquire pairs with that seq_cst
         * fetch_or. */
        int rc = cf__pp_flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
        bool room = !rc && cf__pp_reserve(p, chan, len, &at);
#ifdef CF_TEST_HOOKS
        if (room && cf__proc_test_in_fill) cf__proc_test_in_fill(chan);
#endif
        if (room) cf__pp_place(p, chan, &at, f, f->fn, arg, len, false);
        cf__pp_fill_unlock(ch);
        if (rc) return rc;
        if (room) return 1;
    }
    return 0;
}

/* Every ring is full: keep a copy of the argument in the future and queue
 * it in the overflow list; the collector feeds it as slots free up. */
static int submit_overflow(struct cf__ppool *p, cf_task_fn *fn, const void *arg, size_t len,
                           cf_future **out)
{
    cf_future *f = cf__future_new_task(fn, arg, len, &p->fops, NULL);
    if (!f) return CF_ENOMEM;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* dropped by on_free */
    int rc = cf__pp_ov_push(p, f);
    if (rc) {
        /* Nobody saw f: drop both references; nothing ran, no callback. */
        cf_future_release(f);
        cf_future_release(f);
        return rc;
    }
    /* Share the collector's work: feed what fits. */
    if (cf__pp_tls_collector != p) cf__pp_feed(p);
    cf__pp_nudge_collector(p);
    *out = f;
    return 0;
}

/* Older work waits in the overflow list: help it into the rings first
 * (collect, then feed). True when the list is empty now, so that this
 * submit may go straight to a ring without passing older work. */
static bool overflow_drained(struct cf__ppool *p)
{
    if (atomic_load_explicit(&p->ov_count, memory_order_relaxed) == 0) return true;
    if (cf__pp_tls_collector == p) return false; /* the collector feeds in its own loop */
    cf__pp_help_once(p);
    cf__pp_feed(p);
    return atomic_load_explicit(&p->ov_count, memory_order_relaxed) == 0;
}

/* Place f (no argument copy: the ring gets the bytes) into a ring with
 * room. When every ring is full, collect finished results ourselves (that
 * frees slots) and retry, for the pool's spin time at most (and at least
 * 64 rounds): a submitter that outruns the workers then keeps the rings
 * full, waiting about one task's time per submit, without the argument
 * copy, the locks and the feeding that the overflow list costs. Gives up
 * (0) when the time is up, when older work waits in the overflow list (it
 * goes first), and at once in the collector thread. */
static int submit_ring(struct cf__ppool *p, cf_future *f, const void *arg, size_t len)
{
    int64_t end = 0;
    for (unsigned round = 0;; round++) {
        if (!overflow_drained(p)) return 0;
        int rc = try_rings(p, f, arg, len);
        if (rc || cf__pp_tls_collector == p) return rc;
        if (cf__pp_help_once(p)) continue; /* slots freed: try again now */
        cf__cpu_relax();
        if ((round & 63) != 63) continue;
        int64_t now = cf__now_ns();
        if (!end) end = now + (p->spin_ns > 0 ? p->spin_ns : 0);
        if (now >= end) return 0;
        sched_yield(); /* a loaded machine: let the workers run */
    }
}

/* A submitter collects as it goes: every HARVEST_EVERY submits it takes
 * what the workers have finished (cf__pp_help_once, which completes those
 * futures in this thread), so that in a burst the results flow back
 * through the submitting thread and the collector thread, seeing helpers
 * harvest, stays asleep (proc_collector.c) instead of taking a CPU from
 * the workers. Not in the collector thread, nor while this thread
 * completes a harvested batch (a callback that submits would nest). */
#define HARVEST_EVERY 8

static inline void harvest_as_we_go(struct cf__ppool *p)
{
    /* relaxed: only paces the harvests (rr was just bumped by us) */
    if ((atomic_load_explicit(&p->rr, memory_order_relaxed) & (HARVEST_EVERY - 1)) == 0 &&
        cf__pp_tls_collector != p && cf__pp_tls_completing != p)
        cf__pp_help_once(p);
}

static int pp_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t len, cf_future **out)
{
    struct cf__ppool *p = pool_of(ex);
    if (cf__pp_foreign(p)) return CF_ENOTSUP; /* a fork snapshot of a pool (in a worker, say) */
    int rc = cf__pp_flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
    if (rc) return rc;
    if (len > p->arg_max) return CF_ETOOBIG;
    /* Allocated before any lock is taken: the fill lock covers only the
     * slot's filling. */
    cf_future *f = cf__future_new_task(fn, NULL, 0, &p->fops, NULL);
    if (!f) return CF_ENOMEM;
    /* relaxed: a reference taken by a holder of another reference */
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    rc = submit_ring(p, f, arg, len);
    if (rc <= 0) {
        /* Not placed: nobody saw f (both references go; on_free drops the
         * pool's). The overflow list keeps its own copy of the argument. */
        cf_future_release(f);
        cf_future_release(f);
        if (rc == 0) rc = submit_overflow(p, fn, arg, len, &f);
        if (rc < 0) return rc;
    } else {
        harvest_as_we_go(p);
    }
    install_helper();
    *out = f;
    return 0;
}

/* ---- shutdown, terminate, destroy ---- */

/* In one of the pool's own callbacks: the collector thread, or a helper
 * completing a batch. */
static bool own_thread(const struct cf__ppool *p)
{
    return cf__pp_tls_collector == p || cf__pp_tls_completing == p;
}

static void wait_collector(struct cf__ppool *p)
{
    /* acquire: pairs with the collector's release store of coll_done, so
     * everything it did (futures completed) is visible. */
    while (!atomic_load_explicit(&p->coll_done, memory_order_acquire))
        cf__futex_wait(&p->coll_done, 0, CF__NO_DEADLINE, false);
}

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    struct cf__ppool *p = pool_of(ex);
    if (cf__pp_foreign(p)) return CF_ENOTSUP;
    /* seq_cst: submitters re-check the flag under the channel and overflow
     * locks, which the collector (and the cancel sweep below) take after
     * setting or seeing it. */
    atomic_fetch_or_explicit(&p->flags, CF__PP_SHUTDOWN, memory_order_seq_cst);
    /* Synchronous, as in the thread pool: every task no worker has begun is
     * cancelled before we return (or start waiting), in this thread (the
     * collector does not do it for us: it could take the overflow list and
     * still be cancelling it when we return). The collector thread, in one
     * of its callbacks, already holds the collect lock; everyone else takes
     * it, waiting for a callback the collector is running, if any. */
    if (cancel_futures) cf__pp_cancel_unstarted(p, cf__pp_tls_collector == p);
    cf__pp_wake_collector(p);
    /* From a done-callback run by the collector thread, or by a thread
     * completing what it collected while helping, we cannot wait for the
     * collector: wait=false there (documented, SEMANTICS 18). */
    if (wait && !own_thread(p)) wait_collector(p);
    return 0;
}

static int pp_terminate(cf_executor *ex, int signo)
{
    struct cf__ppool *p = pool_of(ex);
    if (cf__pp_foreign(p)) return CF_ENOTSUP;
    if (signo <= 0 || signo >= NSIG) return CF_EINVAL;
    int zero = 0;
    atomic_compare_exchange_strong_explicit(&p->term_signo, &zero, signo, memory_order_relaxed,
                                            memory_order_relaxed);
    /* seq_cst: as in shutdown; term_signo is read by the collector after
     * it sees the flag (the RMW orders the relaxed store before it). */
    atomic_fetch_or_explicit(&p->flags, CF__PP_SHUTDOWN | CF__PP_TERMINATE, memory_order_seq_cst);
    cf__pp_wake_collector(p);
    if (!own_thread(p)) wait_collector(p);
    return 0;
}

static void pp_destroy(cf_executor *ex)
{
    struct cf__ppool *p = pool_of(ex);
    if (cf__pp_foreign(p)) return; /* a fork snapshot: the parent owns the pool */
    if (p->coll_started) {
        if (own_thread(p)) pthread_detach(p->coll); /* it ends by itself */
        else pthread_join(p->coll, NULL);
    }
    cf__pp_unref(p);
}

static int pp_workers(const cf_executor *ex)
{
    return ((const struct cf__ppool *)ex)->n;
}

static int pp_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    const struct cf__ppool *p = (const struct cf__ppool *)ex;
    if (n) *n = (size_t)p->n;
    for (size_t i = 0; i < cap && i < (size_t)p->n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].tasks_run = atomic_load_explicit(&p->ch[i].tasks_run, memory_order_relaxed);
        out[i].cpu = -1;
        out[i].numa_node = -1;
    }
    return 0;
}

static size_t pp_default_window(const cf_executor *ex)
{
    return ((const struct cf__ppool *)ex)->map_window;
}

static const struct cf__executor_ops pp_ops = {
    .submit = pp_submit,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
    .workers = pp_workers,
    .stats = pp_stats,
    .terminate = pp_terminate,
    .default_window = pp_default_window,
};

/* ---- construction ---- */

/* The CPUs of the affinity mask, capped by the cgroups' CPU quota. */
static int allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return cf__cgroup_cpu_cap(n);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? cf__cgroup_cpu_cap((int)n) : 1;
}

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* The pool struct from the configuration, with its shared mapping. */
static int pool_alloc(const struct cf__config *cfg, const cf_process_pool_opts *o,
                      struct cf__ppool **out)
{
    int n = cfg->workers > 0 ? cfg->workers : allowed_cpus();
    /* depth: default 1024, a power of two (config.c) */
    struct cf__ppool *p = cf__pp_struct_new(n, (uint32_t)cfg->ring_depth);
    *out = p;
    if (!p) return CF_ENOMEM;
    cf__pool_fork_watch();
    p->gen = cf__proc_gen();
    p->base.ops = &pp_ops;
    p->base.caps = 0; /* tasks run in other processes: cf_map copies items */
    p->map_window = cfg->map_window;
    p->fops.on_cancel = cf__pp_on_cancel;
    p->fops.try_cancel = cf__pp_try_cancel;
    p->fops.sync_running = cf__pp_sync_running;
    p->fops.request_cancel = cf__pp_request_cancel;
    p->fops.on_free = cf__pp_on_free;
    p->slot_size = cfg->slot_size;
    p->stride = sizeof(struct cf__pslot) + round_up(p->slot_size, 64);
    p->arg_spill = SPILL_OVERRIDE ? round_up(SPILL_OVERRIDE, PAGE) : ARG_SPILL_DEFAULT;
    p->res_spill = SPILL_OVERRIDE ? round_up(SPILL_OVERRIDE, PAGE) : RES_SPILL_DEFAULT;
    p->arg_max = cf__pp_arg_max(p->arg_spill);
    p->max_tasks = cfg->max_tasks_per_child;
    p->spin_ns = cfg->spin_ns;
    p->stats = cfg->stats;
    p->init = o ? o->initializer : NULL;
    p->init_arg = o ? o->initializer_arg : NULL;
    return cf__pp_map_shared(p);
}

static void close_if(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* Read the zygote's SPAWNED reports for the first workers (the collector
 * is not running yet). 0, or CF_ESYS if it failed or died. */
static int await_spawned(struct cf__ppool *p)
{
    int pending = p->n;
    while (pending > 0) {
        struct pollfd pf[2] = {{.fd = p->rep_rd, .events = POLLIN},
                               {.fd = p->zpidfd, .events = POLLIN}};
        int r = poll(pf, 2, 30000);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || (!pf[0].revents && pf[1].revents)) return CF_ESYS; /* hung or dead */
        struct cf__zrep m;
        ssize_t got = recv(p->rep_rd, &m, sizeof m, MSG_DONTWAIT);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (got != (ssize_t)sizeof m || m.chan < 0 || m.chan >= p->n) return CF_ESYS;
        if (m.op == CF__ZR_SPAWN_FAILED) {
            /* The zygote's fork (or pidfd) failed: out of memory only for
             * ENOMEM; anything else, EAGAIN from RLIMIT_NPROC or the
             * kernel's task limits included, is CF_ESYS with errno saying
             * what the system refused. */
            errno = m.status;
            return m.status == ENOMEM ? CF_ENOMEM : CF_ESYS;
        }
        if (m.op == CF__ZR_SPAWNED) {
            p->ch[m.chan].pid = m.pid;
            p->ch[m.chan].alive = true;
            p->ch[m.chan].spawning = false;
            pending--;
        } else if (m.op == CF__ZR_DIED) {
            /* Died at once (an initializer that failed, say): leave it to
             * the collector, which breaks the pool with the reason. Push
             * nothing back: record it and stop waiting for this one. */
            p->early_death = m;
            p->ch[m.chan].alive = false;
            return 0;
        }
    }
    return 0;
}

/* Out of memory only when the system said ENOMEM: a fork refused with
 * EAGAIN (RLIMIT_NPROC, the kernel's task limits) is CF_ESYS, and errno
 * names it. */
static int sys_error(void)
{
    return errno == ENOMEM ? CF_ENOMEM : CF_ESYS;
}

/* The eventfd and the two socket pairs to the zygote-to-be. */
static int open_channels(struct cf__ppool *p)
{
    int req[2], rep[2];
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->efd < 0) return sys_error();
    /* Sequenced-packet socket pairs: one message per send/recv, EOF when
     * the other side has gone, and sends that cannot raise SIGPIPE. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req)) return sys_error();
    p->req_rd = req[0];
    p->req_wr = req[1];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rep)) return sys_error();
    p->rep_rd = rep[0];
    p->rep_wr = rep[1];
    return 0;
}

static void kill_zygote(struct cf__ppool *p)
{
    int saved = errno;
    kill(p->zpid, SIGKILL);
    waitpid(p->zpid, NULL, 0);
    errno = saved;
}

/* Fork the zygote and keep its pidfd; the mapping stays out of every
 * later fork of this process. */
static int fork_zygote(struct cf__ppool *p)
{
    p->parent_pid = getpid();
    fflush(NULL); /* no buffered output is written twice by a child */
    pid_t z = fork();
    if (z < 0) return sys_error();
    if (z == 0) cf__pp_zygote_main(p); /* never returns */
    p->zpid = z;
    /* The zygote has its copy; no later fork of this process (another
     * pool's zygote, the application's fork()) inherits the mapping. A fork
     * in another thread between mmap() and here still does: create pools
     * from one thread at a time if that matters. */
    madvise(p->map, p->map_len, MADV_DONTFORK);
    close_if(&p->req_rd);
    close_if(&p->rep_wr);
    p->zpidfd = (int)syscall(SYS_pidfd_open, z, 0);
    if (p->zpidfd < 0) {
        int rc = sys_error();
        kill_zygote(p);
        return rc;
    }
    fcntl(p->zpidfd, F_SETFD, FD_CLOEXEC);
    fcntl(p->rep_rd, F_SETFL, fcntl(p->rep_rd, F_GETFL) | O_NONBLOCK);
    cf__pp_fd_register(p->efd);
    cf__pp_fd_register(p->req_wr);
    cf__pp_fd_register(p->rep_rd);
    cf__pp_fd_register(p->zpidfd);
    return 0;
}

/* Ask for the first workers and wait until each is forked (its
 * initializer may still run): a first map then does not pay for the
 * forks, one after the other, inside its own time. */
static int spawn_workers(struct cf__ppool *p)
{
    for (int i = 0; i < p->n; i++) {
        struct cf__zreq q = {.op = CF__ZQ_SPAWN, .chan = i, .pos = 0, .res_pos = 0};
        p->ch[i].spawning = true;
        if (cf__pp_zreq(p, &q)) break; /* a dead zygote: await_spawned sees it */
    }
    int rc = await_spawned(p);
    if (rc) kill_zygote(p);
    return rc;
}

static int start_collector(struct cf__ppool *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* the collector's */
    int tc = pthread_create(&p->coll, NULL, cf__pp_collector_main, p);
    if (tc) {
        atomic_fetch_sub_explicit(&p->refs, 1, memory_order_relaxed);
        kill_zygote(p);
        errno = tc; /* pthread_create returns its error (EAGAIN: a task limit too) */
        return sys_error();
    }
    p->coll_started = true;
    return 0;
}

int cf_process_pool_new(cf_executor **out, const cf_process_pool_opts *opts)
{
    if (!out) return CF_EINVAL;
    *out = NULL;
    struct cf__config cfg;
    cf__config_load(&cfg);
    int rc = cf__config_apply_process_opts(&cfg, opts);
    if (rc) {
        cf__config_report_failure(&cfg, rc, true);
        return rc;
    }
    struct cf__ppool *p = NULL;
    rc = pool_alloc(&cfg, opts, &p);
    if (!rc) rc = open_channels(p);
    if (!rc) rc = fork_zygote(p);
    if (!rc) rc = spawn_workers(p);
    if (!rc) rc = start_collector(p);
    if (!rc) {
        *out = &p->base;
        return 0;
    }
    int saved = errno; /* kept through the clean-up: it names what the system refused */
    cf__config_report_failure(&cfg, rc, true); /* one line if the environment's */
    if (p) {
        close_if(&p->req_rd);
        close_if(&p->rep_wr);
        cf__pp_unref(p);
    }
    errno = saved;
    return rc;
}
