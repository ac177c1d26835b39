/* The process pool: cf_process_pool_new, and the executor operations.
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
 * (32, CPython gh-90622): the zygote is single-threaded, so each fork it
 * makes copies a process in which no other thread can hold anything. Only
 * the very first fork (parent -> zygote) copies a multi-threaded process.
 * It relies on: glibc's fork, which takes its malloc and stdio-list locks
 * around the fork; jemalloc's pthread_atfork handlers, which do the same
 * for its arenas (cfutures' records come from jemalloc); cfutures having no
 * global lock at all (the per-pool locks of other pools are never touched
 * by a zygote or a worker); and the zygote calling nothing but system
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
 * request socket's EOF, and a getppid() check once a second).
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
 * (proc_shm.h), filled by submitters under the channel's mutex (a short
 * critical section: copy the argument, publish the state), taken in order
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
 * SEMANTICS 9 allows). While helpers are active the collector thread naps
 * instead of spinning and workers do not ring the doorbell, so a round trip
 * costs no system call and no third thread: on 2 cores the submitter and
 * the worker are the only spinners. Everything unusual (corruption, deaths,
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
 * come late), counted in p->refs; the last one frees them.
 *
 * What is not lock-free here, and why: submitters to one channel serialise
 * on its mutex (the rings are SPSC; the critical section is a copy and a
 * store), and the overflow list is a mutex-protected list (a slow path).
 * Callbacks never run under either. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#include "sys/alloc.h"
#include "sys/cgroup.h"
#include "sys/config.h"
#include "sync/fence.h"
#include "sync/futex.h"
#include "process/proc_pool.h"
#include "sys/fork.h"

#define ARG_SPILL_DEFAULT (256ull << 20) /* per channel, virtual (MAP_NORESERVE) */
#define RES_SPILL_DEFAULT (1ull << 30)
#define PAGE 4096u

#ifdef CF_TEST_HOOKS
size_t cf__proc_test_spill_size;
#define SPILL_OVERRIDE cf__proc_test_spill_size
#else
#define SPILL_OVERRIDE ((size_t)0)
#endif

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

static struct cf__ppool *pool_of(cf_executor *ex)
{
    return (struct cf__ppool *)ex;
}

/* Which process this is (sys/fork.h): a pool object seen in a child of
 * fork() (ours: zygote and workers; or the application's) is a snapshot,
 * and using it there is refused instead of corrupting the parent's rings.
 * A pool created in a worker belongs to that worker. */
static inline bool foreign(const struct cf__ppool *p)
{
    return p->gen != cf__proc_gen();
}

bool cf__pp_foreign(const struct cf__ppool *p)
{
    return foreign(p);
}

static struct cf__ppool *pool_of_future(cf_future *f)
{
    return (struct cf__ppool *)((char *)f->ops - offsetof(struct cf__ppool, fops));
}

/* ---- lifetime ---- */

static size_t pool_bytes(int n)
{
    return sizeof(struct cf__ppool) + sizeof(struct cf__pchan) * (size_t)n + 64;
}

static void pool_free(struct cf__ppool *p)
{
    int fds[] = {p->efd, p->req_wr, p->rep_rd, p->zpidfd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (fds[i] >= 0) {
            cf__pp_fd_unregister(fds[i]);
            close(fds[i]);
        }
    }
    if (p->map && p->map != MAP_FAILED) munmap(p->map, p->map_len);
    for (int i = 0; i < p->n; i++) {
        pthread_mutex_destroy(&p->ch[i].lock);
        cf__free(p->ch[i].rec, sizeof(struct cf__prec) * p->depth);
    }
    pthread_mutex_destroy(&p->ov_lock);
    cf__free(p->scratch, sizeof(cf_future *) * p->depth);
    cf__free_str(p->broken_msg);
    cf__free(p->raw, pool_bytes(p->n));
}

void cf__pp_unref(struct cf__ppool *p)
{
    /* acq_rel: every use of the pool by the dropping party happens before
     * the last dropper frees it. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) pool_free(p);
}

static void pp_on_free(cf_future *f)
{
    cf__pp_unref(pool_of_future(f));
}

/* The future's owner slot word (cf__future_slot_load/store) encodes where
 * it sits in a ring: ((pos + 1) << 16) | chan; 0 while it is not in a ring
 * (overflow list). */
static inline uintptr_t owner_encode(int chan, uint64_t pos)
{
    return ((uintptr_t)(pos + 1) << 16) | (uintptr_t)chan;
}

/* Called by cf_future_cancel() after its PENDING->CANCELLED CAS. */
void cf__pp_on_cancel(cf_future *f)
{
    struct cf__ppool *p = pool_of_future(f);
    if (foreign(p)) return; /* a fork child's snapshot must not touch the parent's rings */
    /* seq_cst fence: pairs with the one in cf__pp_release_held, between
     * publishing owner (and the HELD slot) and re-reading the future's
     * state: either we see the owner and the HELD or QUEUED slot, or the
     * feeder sees CANCELLED and publishes the slot as CANCELLED itself. */
    CF__FENCE_SEQ_CST();
    uintptr_t enc = cf__future_slot_load(f, memory_order_relaxed);
    if (!enc) return; /* still in the overflow list: the feeder drops it */
    int chan = (int)(enc & 0xffff);
    uint64_t pos = (uint64_t)(enc >> 16) - 1;
    struct cf__pslot *s = cf__pp_slot(p, chan, pos);
    cf__pp_cancel_slot(s, pos);
}

/* try_cancel (31b), called before the future's own PENDING->CANCELLED CAS:
 * cancel the ring slot first, so a task a worker has STARTED is never
 * reported cancelled. True when the slot is (now) cancelled or the task is
 * still in the overflow list (the feeder re-checks the future's state, and
 * on_cancel runs after the CAS to catch a slot published meanwhile); false
 * when a worker has begun it or finished it. */
bool cf__pp_try_cancel(cf_future *f)
{
    struct cf__ppool *p = pool_of_future(f);
    if (foreign(p)) return true; /* a fork child's snapshot: future-level only */
    /* seq_cst fence: as in cf__pp_on_cancel, pairs with cf__pp_release_held. */
    CF__FENCE_SEQ_CST();
    uintptr_t enc = cf__future_slot_load(f, memory_order_relaxed);
    if (!enc) return true;
    int chan = (int)(enc & 0xffff);
    uint64_t pos = (uint64_t)(enc >> 16) - 1;
    struct cf__pslot *s = cf__pp_slot(p, chan, pos);
    if (cf__pp_cancel_slot(s, pos)) return true;
    /* Already cancelled by a concurrent cancel() (CANCELLED, or SKIPPED by the
     * worker since): that cancel wins the future's CAS, ours agrees. */
    uint32_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    uint32_t k = cf__sk_kind(v);
    return cf__sk_gen(v) == cf__pos_gen(pos) && (k == CF__SK_CANCELLED || k == CF__SK_SKIPPED);
}

/* sync_running, called by cf_future_running() on a PENDING future: the
 * slot's state word says whether a worker has begun the task (STARTED, or
 * DONE and not yet collected); then RUNNING is published here instead of
 * when the collector or a helper next scans the ring. A few loads; the
 * same CAS the collector makes, so whoever comes first publishes it. */
void cf__pp_sync_running(cf_future *f)
{
    struct cf__ppool *p = pool_of_future(f);
    if (foreign(p)) return;
    uintptr_t enc = cf__future_slot_load(f, memory_order_relaxed);
    if (!enc) return; /* in the overflow list: not begun */
    int chan = (int)(enc & 0xffff);
    uint64_t pos = (uint64_t)(enc >> 16) - 1;
    /* acquire: pairs with the worker's acq_rel CAS to STARTED (a caller
     * that learnt through shared memory that the task began sees it). A
     * slot reused for a later position fails the generation check. */
    uint32_t v = atomic_load_explicit(&cf__pp_slot(p, chan, pos)->state, memory_order_acquire);
    uint32_t k = cf__sk_kind(v);
    if ((k == CF__SK_STARTED || k == CF__SK_DONE) && cf__sk_gen(v) == cf__pos_gen(pos))
        cf__future_mark_running(f);
}

/* QUEUED or HELD (for pos) -> CANCELLED; false if it was neither. */
bool cf__pp_cancel_slot(struct cf__pslot *s, uint64_t pos)
{
    uint32_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    for (;;) {
        uint32_t k = cf__sk_kind(v);
        if (cf__sk_gen(v) != cf__pos_gen(pos) || (k != CF__SK_QUEUED && k != CF__SK_HELD))
            return false;
        /* acq_rel CAS on the shared word: the worker's QUEUED->STARTED CAS
         * (or the feeder's HELD->QUEUED) is the other contender; exactly
         * one wins. A stale generation (slot reused) fails the check. */
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, cf__sk_make(CF__SK_CANCELLED, pos),
                                                  memory_order_acq_rel, memory_order_relaxed)) {
            if (v & CF__SK_WAITER) cf__futex_wake(&s->state, 1, true);
            return true;
        }
    }
}

void cf__pp_wake_collector(struct cf__ppool *p)
{
    /* seq_cst fence, then the load: pairs with the collector's store of
     * coll_sleep = 1 and fence before its re-scan (Dekker): either it sees
     * the change our caller made (flags, the overflow list, a helper
     * leaving), or we see 1 and wake it. */
    CF__FENCE_SEQ_CST();
    if (atomic_load_explicit(&p->coll_sleep, memory_order_seq_cst) &&
        atomic_exchange_explicit(&p->coll_sleep, 0, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof one);
        (void)w; /* EAGAIN: the counter is already non-zero, it is awake */
    }
}

/* ---- producing into a channel (caller holds ch->lock) ---- */

static bool arg_spill_fit(struct cf__ppool *p, struct cf__pchan *ch, size_t len, uint64_t *pos)
{
    /* acquire: the worker is done with the bytes below arg_tail (the
     * collector stored it with release after collecting their slot). */
    uint64_t t = atomic_load_explicit(&ch->arg_tail, memory_order_acquire);
    return cf__pp_spill_fit(p->arg_spill, ch->arg_head, t, len, pos); /* proc_shm.h */
}

bool cf__pp_room(struct cf__ppool *p, int chan, size_t len)
{
    struct cf__pchan *ch = &p->ch[chan];
    uint64_t h = atomic_load_explicit(&ch->head, memory_order_relaxed); /* ours, under the lock */
    /* The collector's line is read only when our cached copy says full
     * (the usual SPSC trick: no cache miss per submit). acquire: pairs with
     * the collector's release store of collected, after it finished
     * reading the slots and records below it. */
    if (h - ch->coll_cache >= p->depth)
        ch->coll_cache = atomic_load_explicit(&ch->collected, memory_order_acquire);
    if (h - ch->coll_cache >= p->depth) return false;
    uint64_t pos;
    return len <= p->slot_size || arg_spill_fit(p, ch, len, &pos);
}

/* Fill the next slot of `chan` with f (or an EXIT marker when f is NULL).
 * The caller checked cf__pp_room(). With `held`, the slot is published as
 * HELD (the worker waits) and cf__pp_release_held() must follow. */
bool cf__pp_place(struct cf__ppool *p, int chan, cf_future *f, cf_task_fn *fn, const void *arg,
                  size_t len, bool held)
{
    struct cf__pchan *ch = &p->ch[chan];
    uint64_t pos = atomic_load_explicit(&ch->head, memory_order_relaxed);
    struct cf__pslot *s = cf__pp_slot(p, chan, pos);
    struct cf__prec *r = &ch->rec[pos & (p->depth - 1)];
    uint32_t kind = !f ? CF__SK_EXIT : held ? CF__SK_HELD : CF__SK_QUEUED;
    r->f = f;
    r->is_exit = !f;
    r->marked = false;
    r->arg_end = 0;
    s->aflags = 0;
    s->fn = (uint64_t)(uintptr_t)fn;
    s->arg_len = len;
    s->arg_pos = 0;
    if (len > p->slot_size) {
        uint64_t apos;
        if (!arg_spill_fit(p, ch, len, &apos)) return false;
        memcpy(p->argsp + (size_t)chan * p->arg_spill + apos % p->arg_spill, arg, len);
        s->aflags = CF__PA_SPILL;
        s->arg_pos = apos;
        ch->arg_head = apos + len;
        r->arg_pos = apos;
        r->arg_end = apos + len;
    } else if (len) {
        memcpy(cf__pp_inline(s), arg, len);
    }
    /* Over our own copy of the bytes: the worker checks what it finds. */
    s->arg_check = cf__pp_arg_check(pos, s->fn, len, s->arg_pos, s->aflags, arg);
    if (f) cf__future_slot_store(f, owner_encode(chan, pos), memory_order_relaxed);
    /* release: the slot's fields and inline bytes (and r, for the
     * collector: it reads them after an acquire load of this word, whose
     * later values come from the worker's RMWs in this release sequence)
     * are visible before the state says QUEUED. */
    uint32_t old = atomic_exchange_explicit(&s->state, cf__sk_make(kind, pos),
                                            memory_order_release);
    /* release, after the exchange: the collector reads head (acquire) and
     * then expects every slot below it to be published. */
    atomic_store_explicit(&ch->head, pos + 1, memory_order_release);
    if (old & CF__SK_WAITER) cf__futex_wake(&s->state, 1, true); /* HELD: it sleeps again */
    return true;
}

/* A HELD slot becomes QUEUED, or CANCELLED if f was cancelled meanwhile
 * (SEMANTICS 31b for work that waited in the overflow list). */
void cf__pp_release_held(struct cf__ppool *p, int chan, cf_future *f)
{
    uintptr_t enc = cf__future_slot_load(f, memory_order_relaxed);
    uint64_t pos = (uint64_t)(enc >> 16) - 1;
    struct cf__pslot *s = cf__pp_slot(p, chan, pos);
    /* seq_cst fence: pairs with pp_on_cancel's. The owner was published
     * before it; either on_cancel sees the owner (and CASes HELD or QUEUED
     * to CANCELLED itself), or we see the CANCELLED state here. */
    CF__FENCE_SEQ_CST();
    bool cancelled = cf__future_state(f, memory_order_relaxed) == CF__CANCELLED;
    uint32_t to = cf__sk_make(cancelled ? CF__SK_CANCELLED : CF__SK_QUEUED, pos);
    uint32_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
    while (cf__sk_kind(v) == CF__SK_HELD && cf__sk_gen(v) == cf__pos_gen(pos)) {
        /* release: the slot contents stay published. Failing for good
         * means on_cancel made it CANCELLED (and woke the worker). */
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, to, memory_order_release,
                                                  memory_order_relaxed)) {
            if (v & CF__SK_WAITER) cf__futex_wake(&s->state, 1, true);
            break;
        }
    }
}

/* ---- submit ---- */

/* A thread that submits to a process pool collects results itself while it
 * waits in result() (proc_collector.c), saving the hop through the
 * collector thread. Not in threads that have a helper already (thread-pool
 * workers run tasks while they wait) nor in a collector thread. */
static inline void install_helper(void)
{
    if (!cf__tls_wait_helper && !cf__pp_tls_collector) {
        cf__tls_wait_helper = cf__pp_wait_helper;
        cf__tls_wait_helper_ctx = NULL;
    }
}

static int flags_error(uint32_t fl)
{
    if (fl & CF__PP_BROKEN) return CF_EBROKEN; /* broken is checked first (SEMANTICS 17) */
    if (fl & (CF__PP_SHUTDOWN | CF__PP_TERMINATE)) return CF_ESHUTDOWN;
    return 0;
}

static int pp_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t len, cf_future **out)
{
    struct cf__ppool *p = pool_of(ex);
    if (foreign(p)) return CF_ENOTSUP; /* a fork snapshot of a pool (in a worker, say) */
    int rc = flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
    if (rc) return rc;
    if (len > p->arg_max) return CF_ETOOBIG;

    /* Fast path: straight into a ring with room, unless older work waits
     * in the overflow list (it goes first). When every ring is full, first
     * collect finished results ourselves (that frees slots) and retry: a
     * fast submitter then keeps the rings full without the double copy and
     * the collector's feeding that the overflow list costs. */
    for (int round = 0; round < 64 && atomic_load_explicit(&p->ov_count, memory_order_relaxed) == 0;
         round++) {
        /* Full: collect ourselves, or (the collector holds the lock, so it
         * is collecting) give it a moment; a few microseconds at most, and
         * only until the overflow list has work, which later submits join
         * at once. In the collector thread itself it goes straight there. */
        if (round && !cf__pp_help_once(p)) {
            if (cf__pp_tls_collector == p) break;
            cf__cpu_relax();
        }
        uint64_t start = atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed);
        for (int k = 0; k < p->n; k++) {
            int chan = (int)((start + (uint64_t)k) % (uint64_t)p->n);
            struct cf__pchan *ch = &p->ch[chan];
            pthread_mutex_lock(&ch->lock);
            /* Re-checked under the lock: the collector sets the flag, then
             * takes each lock to sweep or to place EXIT markers, so nothing
             * lands behind them. acquire pairs with that release. */
            rc = flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
            if (rc) {
                pthread_mutex_unlock(&ch->lock);
                return rc;
            }
            if (!cf__pp_room(p, chan, len)) {
                pthread_mutex_unlock(&ch->lock);
                continue;
            }
            cf_future *f = cf__future_new_task(fn, NULL, 0, &p->fops, NULL);
            if (!f) {
                pthread_mutex_unlock(&ch->lock);
                return CF_ENOMEM;
            }
            /* relaxed: a reference taken by a holder of another reference */
            atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
            cf__pp_place(p, chan, f, fn, arg, len, false);
            pthread_mutex_unlock(&ch->lock);
            install_helper();
            *out = f;
            return 0;
        }
    }

    /* Every ring is full: keep a copy of the argument in the future and
     * queue it; the collector feeds it as slots free up. */
    cf_future *f = cf__future_new_task(fn, arg, len, &p->fops, NULL);
    if (!f) return CF_ENOMEM;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* dropped by on_free */
    pthread_mutex_lock(&p->ov_lock);
    rc = flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
    if (rc) {
        pthread_mutex_unlock(&p->ov_lock);
        /* Nobody saw f: drop both references; nothing ran, no callback. */
        cf_future_release(f);
        cf_future_release(f);
        return rc;
    }
    f->next_queued = NULL;
    if (p->ov_tail) p->ov_tail->next_queued = f;
    else p->ov_head = f;
    p->ov_tail = f;
    atomic_fetch_add_explicit(&p->ov_count, 1, memory_order_relaxed);
    pthread_mutex_unlock(&p->ov_lock);
    /* Share the collector's work: collect what is done, feed what fits. */
    if (cf__pp_tls_collector != p) {
        cf__pp_help_once(p);
        cf__pp_feed(p);
    }
    cf__pp_wake_collector(p);
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
    if (foreign(p)) return CF_ENOTSUP;
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
    if (foreign(p)) return CF_ENOTSUP;
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
    if (foreign(p)) return; /* a fork snapshot: the parent owns the pool */
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

int cf__pp_zreq(struct cf__ppool *p, const struct cf__zreq *q)
{
    for (;;) {
        /* MSG_NOSIGNAL: a dead zygote is EPIPE here, never a SIGPIPE that
         * would kill the application. */
        ssize_t w = send(p->req_wr, q, sizeof *q, MSG_NOSIGNAL);
        if (w == (ssize_t)sizeof *q) return 0;
        if (w < 0 && errno == EINTR) continue;
        return CF_ESYS; /* EPIPE: the zygote is gone; the collector notices */
    }
}

/* The largest argument: what the argument spill ring takes (its guard
 * stays unused, proc_shm.h), and no more than a 32-bit length. */
static uint64_t arg_max(uint64_t arg_spill)
{
    uint64_t room = cf__pp_spill_room(arg_spill);
    return room < UINT32_MAX ? room : UINT32_MAX;
}

static void unmap_range(unsigned char *from, unsigned char *to)
{
    if (to > from) munmap(from, (size_t)(to - from));
}

/* Unmap [base, base + n * each) except [base + chan * each, + each). */
static void unmap_others(unsigned char *base, size_t each, int n, int chan)
{
    unmap_range(base, base + (size_t)chan * each);
    unmap_range(base + (size_t)(chan + 1) * each, base + (size_t)n * each);
}

void cf__pp_shm_isolate(struct cf__ppool *p, int chan)
{
    /* Only our own channel: another channel's slots, control page or spill
     * rings are not even mapped here, so this worker's tasks can neither
     * read other tasks' arguments nor write other workers' results. */
    unmap_others((unsigned char *)p->ctl, sizeof(struct cf__pchan_ctl), p->n, chan);
    unmap_others(p->slots, p->chan_slots, p->n, chan);
    unmap_others(p->argsp, p->arg_spill, p->n, chan);
    unmap_others(p->ressp, p->res_spill, p->n, chan);
    /* What is left stays out of any fork a task makes (a nested pool's
     * zygote, say). The zygote itself sets nothing: it must pass the whole
     * mapping to every worker it forks. */
    madvise(p->map, PAGE, MADV_DONTFORK);
    madvise(&p->ctl[chan], sizeof(struct cf__pchan_ctl), MADV_DONTFORK);
    madvise(p->slots + (size_t)chan * p->chan_slots, p->chan_slots, MADV_DONTFORK);
    madvise(p->argsp + (size_t)chan * p->arg_spill, p->arg_spill, MADV_DONTFORK);
    madvise(p->ressp + (size_t)chan * p->res_spill, p->res_spill, MADV_DONTFORK);
}

static int layout(struct cf__ppool *p)
{
    size_t hdr = PAGE;
    size_t ctl = sizeof(struct cf__pchan_ctl) * (size_t)p->n; /* a page each */
    p->chan_slots = round_up(p->stride * p->depth, PAGE);     /* whole pages each */
    size_t slots = p->chan_slots * (size_t)p->n;
    size_t a = (size_t)p->arg_spill * (size_t)p->n, r = (size_t)p->res_spill * (size_t)p->n;
    p->map_len = hdr + ctl + slots + a + r;
    /* MAP_SHARED | MAP_ANONYMOUS: no name, inherited only by our forks.
     * MAP_NORESERVE: the spill rings are address space; pages exist only
     * once touched and are punched out again after big transfers. */
    void *m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        p->map = NULL;
        /* Strict overcommit (vm.overcommit_memory=2) charges all of it:
         * retry with smaller spill rings (the largest argument and result
         * shrink with them; CF_ETOOBIG says so). */
        if (errno == ENOMEM && p->res_spill > (1u << 20)) {
            p->arg_spill = p->arg_spill / 8 < (1u << 20) ? (1u << 20) : p->arg_spill / 8;
            p->res_spill /= 8;
            p->arg_max = arg_max(p->arg_spill);
            return layout(p);
        }
        return errno == ENOMEM ? CF_ENOMEM : CF_ESYS;
    }
    p->map = m;
    p->hdr = m;
    p->hdr->magic = CF__PSHM_MAGIC;
    p->ctl = (struct cf__pchan_ctl *)(p->map + hdr);
    p->slots = p->map + hdr + ctl;
    p->argsp = p->slots + slots;
    p->ressp = p->argsp + a;
    return 0;
}

static struct cf__ppool *pool_alloc(const struct cf__config *cfg, const cf_process_pool_opts *o,
                                    int *err)
{
    int n = cfg->workers > 0 ? cfg->workers : allowed_cpus();
    /* Cache-line aligned by hand: cf__calloc promises no 64-byte alignment. */
    void *raw = cf__calloc(pool_bytes(n));
    if (!raw) {
        *err = CF_ENOMEM;
        return NULL;
    }
    struct cf__ppool *p = (struct cf__ppool *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    p->raw = raw;
    p->n = n;
    cf__pool_fork_watch();
    p->gen = cf__proc_gen();
    p->base.ops = &pp_ops;
    p->base.caps = 0; /* tasks run in other processes: cf_map copies items */
    p->map_window = cfg->map_window;
    p->fops.on_cancel = cf__pp_on_cancel;
    p->fops.try_cancel = cf__pp_try_cancel;
    p->fops.sync_running = cf__pp_sync_running;
    p->fops.on_free = pp_on_free;
    atomic_init(&p->refs, 1);
    p->depth = (uint32_t)cfg->ring_depth; /* default 1024: see config.c */
    p->slot_size = cfg->slot_size;
    p->stride = sizeof(struct cf__pslot) + round_up(p->slot_size, 64);
    p->arg_spill = SPILL_OVERRIDE ? round_up(SPILL_OVERRIDE, PAGE) : ARG_SPILL_DEFAULT;
    p->res_spill = SPILL_OVERRIDE ? round_up(SPILL_OVERRIDE, PAGE) : RES_SPILL_DEFAULT;
    p->arg_max = arg_max(p->arg_spill);
    p->max_tasks = cfg->max_tasks_per_child;
    p->spin_ns = cfg->spin_ns;
    p->stats = cfg->stats;
    p->init = o ? o->initializer : NULL;
    p->init_arg = o ? o->initializer_arg : NULL;
    p->efd = p->req_wr = p->req_rd = p->rep_rd = p->rep_wr = p->zpidfd = -1;
    pthread_mutex_init(&p->ov_lock, NULL);
    for (int i = 0; i < n; i++) {
        pthread_mutex_init(&p->ch[i].lock, NULL);
        p->ch[i].z_pidfd = -1;
    }
    for (int i = 0; i < n; i++) {
        p->ch[i].rec = cf__calloc(sizeof(struct cf__prec) * p->depth);
        if (!p->ch[i].rec) {
            *err = CF_ENOMEM;
            return p;
        }
    }
    p->scratch = cf__alloc(sizeof(cf_future *) * p->depth);
    *err = p->scratch ? layout(p) : CF_ENOMEM;
    return p;
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

/* The body of cf_process_pool_new: the pool, or NULL with *err set. */
static cf_executor *process_pool_make(const cf_process_pool_opts *opts, int *err)
{
    struct cf__config cfg;
    cf__config_load(&cfg);
    int rc = cf__config_apply_process_opts(&cfg, opts);
    if (rc) {
        *err = rc;
        return NULL;
    }
    struct cf__ppool *p = pool_alloc(&cfg, opts, &rc);
    if (!p || rc) goto fail;

    int req[2], rep[2];
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->efd < 0) goto fail_sys;
    /* Sequenced-packet socket pairs: one message per send/recv, EOF when
     * the other side has gone, and sends that cannot raise SIGPIPE. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req)) goto fail_sys;
    p->req_rd = req[0];
    p->req_wr = req[1];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rep)) goto fail_sys;
    p->rep_rd = rep[0];
    p->rep_wr = rep[1];
    p->parent_pid = getpid();

    fflush(NULL); /* no buffered output is written twice by a child */
    pid_t z = fork();
    if (z < 0) goto fail_sys;
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
        int saved = errno;
        kill(z, SIGKILL);
        waitpid(z, NULL, 0);
        errno = saved;
        goto fail_sys;
    }
    fcntl(p->zpidfd, F_SETFD, FD_CLOEXEC);
    fcntl(p->rep_rd, F_SETFL, fcntl(p->rep_rd, F_GETFL) | O_NONBLOCK);
    cf__pp_fd_register(p->efd);
    cf__pp_fd_register(p->req_wr);
    cf__pp_fd_register(p->rep_rd);
    cf__pp_fd_register(p->zpidfd);

    for (int i = 0; i < p->n; i++) {
        struct cf__zreq q = {.op = CF__ZQ_SPAWN, .chan = i, .pos = 0, .res_pos = 0};
        p->ch[i].spawning = true;
        if (cf__pp_zreq(p, &q)) break; /* a dead zygote: caught just below */
    }
    /* The pool is ready when the constructor returns: every worker has been
     * forked (its initializer may still run). A first map then does not
     * pay for the forks, one after the other, inside its own time. */
    rc = await_spawned(p);
    if (rc) {
        kill(z, SIGKILL);
        waitpid(z, NULL, 0);
        goto fail;
    }
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); /* the collector's */
    int tc = pthread_create(&p->coll, NULL, cf__pp_collector_main, p);
    if (tc) {
        atomic_fetch_sub_explicit(&p->refs, 1, memory_order_relaxed);
        kill(z, SIGKILL);
        waitpid(z, NULL, 0);
        errno = tc; /* pthread_create returns its error (EAGAIN: a task limit too) */
        goto fail_sys;
    }
    p->coll_started = true;
    *err = 0;
    return &p->base;

fail_sys:
    /* Out of memory only when the system said ENOMEM: a fork refused with
     * EAGAIN (RLIMIT_NPROC, the kernel's task limits) is CF_ESYS, and
     * errno, kept through the clean-up below, names it. */
    rc = errno == ENOMEM ? CF_ENOMEM : CF_ESYS;
fail:;
    int saved = errno;
    *err = rc ? rc : CF_ENOMEM;
    cf__config_report_failure(&cfg, *err, true); /* one line if the environment's */
    if (p) {
        close_if(&p->req_rd);
        close_if(&p->rep_wr);
        pool_free(p);
    }
    errno = saved;
    return NULL;
}

int cf_process_pool_new(cf_executor **out, const cf_process_pool_opts *opts)
{
    if (!out) return CF_EINVAL;
    int rc;
    *out = process_pool_make(opts, &rc);
    return rc;
}
