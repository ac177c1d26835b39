/* The root's side of the MPI executor: submit, cancel, shutdown, and the
 * progress engine that makes every MPI call.
 *
 * The MPI token. Whoever holds x->tok makes the executor's MPI calls and
 * owns the progress state (the ready and in-flight lists, the credits, the
 * outgoing batches, x->io, x->pace): MPI_THREAD_SERIALIZED asks exactly
 * that MPI calls never overlap, and the mutex also orders them. Two kinds
 * of thread take it:
 * - the progress thread, always there, which runs rounds (take what other
 *   threads queued, dispatch within each serving rank's credit window,
 *   send, receive, complete futures) whenever nobody else does;
 * - a thread that waits on one of the executor's futures without a
 *   deadline (the run_awaited hook): instead of sleeping until the
 *   progress thread wakes it, it runs rounds itself (a "driver") until its
 *   future is done, or nothing has happened for the pace's polling window
 *   (struct cf__mpi_pace), or it completed a future someone else listens
 *   to (a cf_wait over several futures must look again). A round trip
 *   then wakes no thread on the root: the waiter sends the task and
 *   receives its result. A driver takes the token with a trylock only:
 *   it never blocks behind the progress thread, it spins on its future.
 * Lock order: tok before mu; mu is never held while taking tok.
 *
 * Threads. Any thread may submit, cancel or shut down; they hand their
 * work over through a mutex-guarded queue (mu) and wake the progress
 * thread only when it sleeps for good (x->sleeping && !x->lazy). The
 * progress thread keeps out of a driver's way: while x->drivers > 0 it
 * naps (up to 1 ms, not woken by submits), and for DRIVE_RECENT_NS after
 * the last driver left it naps rather than sleeping for good, so that a
 * submitter who is about to wait and drive (a ping-pong) does not pay a
 * futex wake of the progress thread per task; a task queued by a thread
 * that does not wait then waits at most one nap (1 ms) to be sent. A
 * driver that leaves with work outstanding (replies expected, tasks
 * queued, a shutdown) sets x->kick and wakes the progress thread: the
 * nap checks kick under mu, so the wake is never lost. Completions, and
 * so done-callbacks, run in whichever thread holds the token: the
 * progress thread or a driver. A callback must therefore not wait without
 * a timeout for another future of this executor (it would wait for
 * itself): it may submit, cancel, or wait with a timeout. Such a thread
 * has tls_progress_of == x while it holds the token.
 *
 * After each event the token holder polls for a short while (the pace:
 * twice the serving ranks' last answer time, 50 us to 1 ms, yielding the
 * CPU between polls). Then the progress thread, with nothing in flight,
 * sleeps on the condition variable until a submit, cancel or shutdown
 * wakes it (no CPU at all while idle); with replies expected it naps
 * between polls, up to 1 ms, and a submit wakes it at once.
 *
 * Memory. A task record (struct mpi_task) is referenced by its future (the
 * on_free hook drops it), by the executor until every reply it expects
 * has arrived, by a pending cancel request and by a pending bulk send of
 * its argument. The executor's memory is referenced by cf_executor_free
 * and by every task record, so a future's hooks (a driver among them) may
 * use it after the executor was freed by its user. Once the progress
 * thread has finished (the communicator freed) or failed, x->closed is
 * set under the token and no driver calls MPI again. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/executor.h"
#include "core/future.h" /* the hook fields of struct cf_future */
#include "mpi/mpi_exec.h"
#include "mpi/mpi_hooks.h" /* the root's probes */
#include "mpi/mpi_io.h"

/* A task's `state`. Who moves it: a canceller (QUEUED->CANCELLED,
 * SENT->CANCEL_REQ), the thread doing the root's MPI work (QUEUED->SENT,
 * CANCEL_REQ->CANCEL_OK or REFUSED, anything->DONE) and a failing executor
 * (->DONE). Orders, for every access to it in this file: each change is a
 * CAS or exchange with acq_rel or a store with release, and each read is an
 * acquire, so a thread that sees a state also sees what its writer did
 * before (the cancel list, the future's completion, the counts under mu).
 * The CASes on QUEUED (cancel against send) and on SENT (cancel request
 * against the result's DONE) pair with each other: exactly one wins. */
enum task_state {
    T_QUEUED,     /* at the root, not sent: cancel decides here */
    T_SENT,       /* at a serving rank */
    T_CANCEL_REQ, /* sent, a cancel request is on its way */
    T_CANCEL_OK,  /* the serving rank cancelled it: it never runs */
    T_REFUSED,    /* the serving rank had begun it: it will finish */
    T_DONE,       /* its result arrived (or the executor failed it) */
    T_CANCELLED,  /* cancelled at the root before it was sent */
};

struct mpi_exec;

struct mpi_task {
    cf_future *f; /* the executor's reference, until `pending` reaches 0 */
    struct mpi_exec *ex;
    _Atomic int state; /* enum task_state */
    _Atomic int refs;
    int rank;    /* under tok: where it was sent */
    int pending; /* under tok: replies still expected */
    struct cf__mpi_rec rec;
    void *arg;                      /* the argument's copy, right after the record */
    struct mpi_task *next;          /* submit queue, then the ready list */
    struct mpi_task *cancel_next;   /* the cancel-request list */
    struct mpi_task *fprev, *fnext; /* under tok: in flight */
};

struct mpi_exec {
    struct cf_executor base;
    struct cf__mpi_setup s;
    struct cf__mpi_modules mods;
    int workers;
    _Atomic long mem_refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the progress thread sleeps here */
    pthread_cond_t done_cv; /* cancellers and shutdown(wait) sleep here */
    /* under mu */
    struct mpi_task *q_head, **q_tail;
    struct mpi_task *cancels;
    bool sleeping, shutting, cancel_all, exited, joined, free_on_exit, broken;
    bool lazy; /* the progress thread's sleep ends by itself: submits do not wake it */
    bool kick; /* a driver left work outstanding: the progress thread must not sleep */
    pthread_t thread;
    /* Waiters driving progress (relaxed: a hint for the progress thread,
     * which keeps out of their way; the token orders the real work). */
    _Atomic int drivers;
    _Atomic int64_t last_drive_ns; /* when the last driver left (relaxed: a hint) */
    pthread_mutex_t tok;           /* the MPI token (see the top of the file) */
    /* under tok */
    bool closed;        /* finished or failed: no more MPI calls */
    int fail_rc;        /* a driver's round failed: the progress thread fails everything */
    cf_future *drive_f; /* what the driver holding tok waits for, or NULL */
    bool others_done;   /* that driver completed a future somebody listens to */
    struct cf__mpi_pace pace;
    struct mpi_task *ready_head, **ready_tail;
    struct mpi_task *flight;
    int *inflight;
    long n_inflight; /* tasks holding a credit */
    long n_expect;   /* replies still expected, over every task */
    int next_rank;
    int hot_rank; /* the rank whose result came last (its loop is awake), or -1 */
    struct cf__mpi_out *out;
    struct cf__mpi_io io;
    /* written by the progress thread, read by stats (relaxed counters) */
    _Atomic uint64_t *done_per_rank;
};

static _Thread_local struct mpi_exec *tls_progress_of;

/* Test hook: a program may define it (tests/mpi/test_mpi_drive.c does);
 * while it returns true the progress thread runs no round, so only
 * waiters progress. Weak and undefined in production: the check is one
 * load of a null address. Default visibility, so that the definition in
 * the executable binds to it. */
__attribute__((weak, visibility("default"))) bool cf__test_mpi_hold_progress(void);

/* ---- memory ---- */

static void exec_unref(struct mpi_exec *x)
{
    /* acq_rel: the last one sees every write of the others before freeing. */
    if (atomic_fetch_sub_explicit(&x->mem_refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&x->mu);
    pthread_mutex_destroy(&x->tok);
    pthread_cond_destroy(&x->cv);
    pthread_cond_destroy(&x->done_cv);
    cf__mpi_modules_free(&x->mods);
    free(x->inflight);
    if (x->out)
        for (int r = 0; r < x->s.size; r++) cf__mpi_out_free(&x->out[r]);
    free(x->out);
    free(x->io.req);
    free(x->io.hold);
    free(x->io.idx);
    free(x->io.rbuf);
    free(x->done_per_rank);
    free(x);
}

static void task_unref(struct mpi_task *t)
{
    /* acq_rel: as exec_unref. */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) return;
    struct mpi_exec *x = t->ex;
    free(t); /* and its argument */
    exec_unref(x);
}

static void task_unref_cb(void *ctx)
{
    task_unref(ctx);
}

static void lock(struct mpi_exec *x)
{
    pthread_mutex_lock(&x->mu);
}
static void unlock(struct mpi_exec *x)
{
    pthread_mutex_unlock(&x->mu);
}

/* ---- future hooks ---- */

static struct mpi_task *task_of(cf_future *f)
{
    return cf__future_executor(f);
}

static void hook_on_free(cf_future *f)
{
    task_unref(task_of(f));
}

/* Decide a cancel where the task is: at the root while it is queued, else
 * by asking its serving rank (a round trip through the progress thread).
 * The progress thread itself cannot wait for that reply: there a task
 * already sent counts as begun. */
static bool hook_try_cancel(cf_future *f)
{
    struct mpi_task *t = task_of(f);
    struct mpi_exec *x = t->ex;
    int s = atomic_load_explicit(&t->state, memory_order_acquire);
    for (;;) {
        switch (s) {
        case T_QUEUED:
            /* acq_rel: pairs with the progress thread's QUEUED->SENT CAS;
             * exactly one of the two wins. */
            if (atomic_compare_exchange_weak_explicit(&t->state, &s, T_CANCELLED,
                                                      memory_order_acq_rel, memory_order_acquire))
                return true;
            continue;
        case T_CANCELLED:
        case T_CANCEL_OK: return true;
        case T_REFUSED:
        case T_DONE: return false;
        case T_SENT:
            if (tls_progress_of == x) return false;
            lock(x);
            /* Under mu so the progress thread, which changes SENT only under
             * mu or with a CAS, sees the request with the state. */
            if (atomic_compare_exchange_strong_explicit(
                    &t->state, &s, T_CANCEL_REQ, memory_order_acq_rel, memory_order_acquire)) {
                atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed); /* the list's */
                t->cancel_next = x->cancels;
                x->cancels = t;
                if (x->sleeping) pthread_cond_signal(&x->cv);
                s = T_CANCEL_REQ;
            }
            unlock(x);
            continue;
        case T_CANCEL_REQ:
            if (tls_progress_of == x) return false;
            lock(x);
            while ((s = atomic_load_explicit(&t->state, memory_order_acquire)) == T_CANCEL_REQ &&
                   !x->exited)
                pthread_cond_wait(&x->done_cv, &x->mu);
            unlock(x);
            if (s == T_CANCEL_REQ) return false; /* the executor is gone */
            continue;
        default: return false;
        }
    }
}

static int hook_run_awaited(cf_future *f); /* waiters drive progress (below) */

static const struct cf__future_ops task_ops = {
    .on_free = hook_on_free,
    .try_cancel = hook_try_cancel,
    .run_awaited = hook_run_awaited,
};

/* ---- submit ---- */

static int mpi_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                      cf_future **out)
{
    struct mpi_exec *x = (struct mpi_exec *)ex;
    if (arg_len > UINT32_MAX) return CF_ETOOBIG;
    struct cf__mpi_rec rec = {.kind = CF__MPI_TASK, .len = arg_len, .inner_mod = CF__MPI_NO_MOD};
    int rc = cf__mpi_name(&x->mods, fn, &rec.mod, &rec.off);
    if (rc) return rc;
    if (fn == x->s.map_fn && x->s.map_fn_at != SIZE_MAX &&
        arg_len >= x->s.map_fn_at + sizeof(cf_task_fn *)) {
        /* A cf_map chunk: its argument carries the item function's address,
         * which the serving rank replaces with its own. */
        cf_task_fn *inner;
        memcpy(&inner, (const unsigned char *)arg + x->s.map_fn_at, sizeof inner);
        rc = cf__mpi_name(&x->mods, inner, &rec.inner_mod, &rec.inner_off);
        if (rc) return rc;
    }
    /* One allocation: the record, then its argument's copy. */
    struct mpi_task *t = malloc(sizeof *t + arg_len);
    if (!t) return CF_ENOMEM;
    memset(t, 0, sizeof *t);
    t->arg = t + 1;
    if (arg_len) memcpy(t->arg, arg, arg_len);
    cf_future *f;
    if (cf_future_new(&f) != 0) {
        free(t);
        return CF_ENOMEM;
    }
    t->f = f;
    t->ex = x;
    t->rec = rec;
    atomic_init(&t->state, T_QUEUED);
    atomic_init(&t->refs, 2); /* the future's and the executor's */
    atomic_fetch_add_explicit(&x->mem_refs, 1, memory_order_relaxed);
    /* Nobody else has f yet: the hooks are in place before it is shared
     * (the queue's mutex publishes them to the progress thread). */
    f->ops = &task_ops;
    f->owner.executor = t;
    cf_future_retain(f); /* the caller's */

    lock(x);
    rc = x->broken ? CF_EBROKEN : x->shutting ? CF_ESHUTDOWN : 0;
    if (rc == 0) {
        CF__MPI_PROBE2(submit, ex, f); /* before the progress thread can see t */
        *x->q_tail = t;
        x->q_tail = &t->next;
        /* A lazy sleep ends by itself, and a driver takes the queue. */
        if (x->sleeping && !x->lazy) pthread_cond_signal(&x->cv);
    }
    unlock(x);
    if (rc) {
        atomic_store_explicit(&t->state, T_CANCELLED, memory_order_relaxed);
        cf_future_release(f);
        cf_future_release(f); /* on_free drops the future's task reference */
        task_unref(t);
        return rc;
    }
    *out = f;
    return 0;
}

/* ---- progress thread ---- */

static void flight_link(struct mpi_exec *x, struct mpi_task *t)
{
    t->fprev = NULL;
    t->fnext = x->flight;
    if (x->flight) x->flight->fprev = t;
    x->flight = t;
}

static void flight_unlink(struct mpi_exec *x, struct mpi_task *t)
{
    if (t->fprev) t->fprev->fnext = t->fnext;
    else x->flight = t->fnext;
    if (t->fnext) t->fnext->fprev = t->fprev;
}

/* Every reply arrived: drop the executor's references. */
static void task_settle(struct mpi_exec *x, struct mpi_task *t)
{
    x->n_expect--;
    if (--t->pending > 0) return;
    flight_unlink(x, t);
    cf_future_release(t->f);
    task_unref(t);
}

static void wake_cancellers(struct mpi_exec *x)
{
    lock(x);
    pthread_cond_broadcast(&x->done_cv);
    unlock(x);
}

/* The serving rank with the fewest tasks in flight and a free credit, or
 * -1. Ties go round the ranks. */
static int pick_rank(struct mpi_exec *x)
{
    int best = -1;
    for (int i = 0; i < x->s.size; i++) {
        int r = (x->next_rank + i) % x->s.size;
        if (r == x->s.root || x->inflight[r] >= x->s.window) continue;
        if (best < 0 || x->inflight[r] < x->inflight[best]) best = r;
    }
    /* A tie goes to the rank that answered last: its loop (and the pool
     * worker that ran the task) is still awake, the others may nap. */
    int h = x->hot_rank;
    if (best >= 0 && h >= 0 && h != best && x->inflight[h] == x->inflight[best]) best = h;
    if (best >= 0) x->next_rank = (best + 1) % x->s.size;
    return best;
}

static int dispatch(struct mpi_exec *x)
{
    while (x->ready_head) {
        int r = pick_rank(x);
        if (r < 0) return 0;
        struct mpi_task *t = x->ready_head;
        x->ready_head = t->next;
        if (!x->ready_head) x->ready_tail = &x->ready_head;
        int s = T_QUEUED;
        /* acq_rel: pairs with hook_try_cancel's QUEUED->CANCELLED CAS. */
        if (!atomic_compare_exchange_strong_explicit(&t->state, &s, T_SENT, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            /* Cancelled while queued: the canceller completes the future. */
            cf_future_release(t->f);
            task_unref(t);
            continue;
        }
        t->rank = r;
        CF__MPI_PROBE2(start, r, t->f); /* sent to rank r */
        t->pending = 1;
        x->n_expect++;
        t->rec.id = (uint64_t)(uintptr_t)t;
        flight_link(x, t);
        x->inflight[r]++;
        x->n_inflight++;
        /* A bulk argument is read by MPI until its sends complete. */
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        int rc = cf__mpi_out_add(&x->out[r], &t->rec, t->arg, task_unref_cb, t);
        if (rc) {
            task_unref(t);
            return rc;
        }
        if (x->out[r].len >= CF__MPI_BATCH_FLUSH && (rc = cf__mpi_flush(&x->io, &x->out[r], r)))
            return rc;
    }
    return 0;
}

static int send_cancel(struct mpi_exec *x, struct mpi_task *t)
{
    struct cf__mpi_rec rec = {.kind = CF__MPI_CANCEL, .id = (uint64_t)(uintptr_t)t};
    t->pending++;
    x->n_expect++;
    return cf__mpi_out_add(&x->out[t->rank], &rec, NULL, NULL, NULL);
}

/* shutdown(cancel_futures=true): cancel what is queued here, and ask the
 * serving ranks to cancel what they have not begun. */
static int cancel_everything(struct mpi_exec *x)
{
    while (x->ready_head) {
        struct mpi_task *t = x->ready_head;
        x->ready_head = t->next;
        (void)cf_future_cancel(t->f); /* QUEUED: decided here, callbacks run */
        int s = T_QUEUED;
        /* If the user cancelled it first, the state is CANCELLED already. */
        atomic_compare_exchange_strong_explicit(&t->state, &s, T_CANCELLED, memory_order_acq_rel,
                                                memory_order_acquire);
        cf_future_release(t->f);
        task_unref(t);
    }
    x->ready_tail = &x->ready_head;
    for (struct mpi_task *t = x->flight; t; t = t->fnext) {
        int s = T_SENT;
        if (!atomic_compare_exchange_strong_explicit(&t->state, &s, T_CANCEL_REQ,
                                                     memory_order_acq_rel, memory_order_acquire))
            continue;
        int rc = send_cancel(x, t);
        if (rc) return rc;
    }
    return 0;
}

static int on_result(struct mpi_exec *x, int src, const struct cf__mpi_rec *rec,
                     const unsigned char *body)
{
    struct mpi_task *t = (struct mpi_task *)(uintptr_t)rec->id;
    void *bulk = NULL;
    if (rec->flags & CF__MPI_F_BULK) {
        int rc = cf__mpi_recv_bulk(&x->io, src, rec->len, &bulk);
        if (rc) return rc;
        body = bulk;
    }
    int s = atomic_exchange_explicit(&t->state, T_DONE, memory_order_acq_rel);
    CF__MPI_PROBE2(finish, src, t->f);
    x->hot_rank = src;
    /* relaxed: a hint (someone waits on or listens to this future); the
     * completion below orders what the listener reads. */
    if (t->f != x->drive_f &&
        (atomic_load_explicit(&t->f->state, memory_order_relaxed) & CF__HAS_LISTENERS))
        x->others_done = true;
    if (rec->code == 0) {
        int rc = cf_future_set_result(t->f, body, (size_t)rec->len);
        if (rc != 0 && rc != CF_ESTATE) /* never left pending: fail it instead */
            cf_future_set_exception(t->f, rc, "cfutures-mpi: the result could not be stored");
    } else {
        char *msg = NULL;
        if (rec->len && (msg = malloc((size_t)rec->len + 1))) {
            memcpy(msg, body, (size_t)rec->len);
            msg[rec->len] = 0;
        }
        if (rec->flags & CF__MPI_F_BROKEN) cf_future_set_broken(t->f, msg);
        else cf_future_set_exception(t->f, rec->code, msg);
        free(msg);
    }
    free(bulk);
    if (s == T_CANCEL_REQ) wake_cancellers(x);
    atomic_fetch_add_explicit(&x->done_per_rank[src], 1, memory_order_relaxed);
    x->inflight[src]--;
    x->n_inflight--;
    task_settle(x, t);
    return 0;
}

static void on_cancel_ack(struct mpi_exec *x, int src, const struct cf__mpi_rec *rec)
{
    struct mpi_task *t = (struct mpi_task *)(uintptr_t)rec->id;
    int s = T_CANCEL_REQ;
    if (rec->flags & CF__MPI_F_OK) {
        x->inflight[src]--;
        x->n_inflight--;
        t->pending--; /* no result will come */
        x->n_expect--;
        atomic_store_explicit(&t->state, T_CANCEL_OK, memory_order_release);
        wake_cancellers(x);
        (void)cf_future_cancel(t->f); /* the hook says yes now */
    } else if (atomic_compare_exchange_strong_explicit(
                   &t->state, &s, T_REFUSED, memory_order_acq_rel, memory_order_acquire)) {
        wake_cancellers(x);
    }
    task_settle(x, t);
}

/* Read every batch waiting; *got says if there was one. */
static int receive(struct mpi_exec *x, bool *got)
{
    for (int round = 0; round < 64; round++) {
        int src;
        size_t len;
        int rc = cf__mpi_recv_batch(&x->io, MPI_ANY_SOURCE, &src, &len);
        if (rc <= 0) return rc;
        *got = true;
        size_t at = 0;
        struct cf__mpi_rec rec;
        const unsigned char *body;
        /* The batch buffer is reused by the next receive: a bulk body is
         * received into its own buffer, so walking on is safe. */
        unsigned char *buf = x->io.rbuf;
        x->io.rbuf = NULL;
        x->io.rcap = 0;
        rc = 0;
        while (rc == 0 && cf__mpi_next_rec(buf, len, &at, &rec, &body)) {
            if (rec.kind == CF__MPI_RESULT) rc = on_result(x, src, &rec, body);
            else if (rec.kind == CF__MPI_CANCEL_ACK) on_cancel_ack(x, src, &rec);
        }
        if (!x->io.rbuf) {
            x->io.rbuf = buf;
            x->io.rcap = len + 1;
        } else {
            free(buf);
        }
        if (rc) return rc;
    }
    return 0;
}

static int flush_all(struct mpi_exec *x)
{
    for (int r = 0; r < x->s.size; r++) {
        int rc = cf__mpi_flush(&x->io, &x->out[r], r);
        if (rc) return rc;
    }
    return 0;
}

/* An MPI call failed: every future not done fails with CF_EBROKEN. */
static void fail_everything(struct mpi_exec *x, int code)
{
    char msg[sizeof x->io.err + 64];
    snprintf(msg, sizeof msg, "cfutures-mpi: the executor broke: %s",
             code == CF_ENOMEM ? "out of memory in the progress thread" : x->io.err);
    lock(x);
    x->broken = true;
    struct mpi_task *q = x->q_head;
    x->q_head = NULL;
    x->q_tail = &x->q_head;
    struct mpi_task *c = x->cancels;
    x->cancels = NULL;
    unlock(x);
    *x->ready_tail = q;
    for (struct mpi_task *n; c; c = n) {
        n = c->cancel_next;
        task_unref(c); /* the list's reference */
    }
    for (struct mpi_task *t = x->ready_head, *n; t; t = n) {
        n = t->next;
        atomic_store_explicit(&t->state, T_DONE, memory_order_release);
        cf_future_set_broken(t->f, msg);
        cf_future_release(t->f);
        task_unref(t);
    }
    x->ready_head = NULL;
    x->ready_tail = &x->ready_head;
    while (x->flight) {
        struct mpi_task *t = x->flight;
        /* Reference counted: the executor's reference keeps t until below. */
        // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
        flight_unlink(x, t);
        atomic_store_explicit(&t->state, T_DONE, memory_order_release);
        cf_future_set_broken(t->f, msg);
        x->n_expect -= t->pending; /* no reply will be read */
        cf_future_release(t->f);
        task_unref(t);
    }
    cf__mpi_sends_abandon(&x->io);
    /* Best effort, not waited for: let the serving ranks that still listen
     * stop, so the job can end instead of waiting for them. */
    static const struct cf__mpi_rec bye = {.kind = CF__MPI_SHUTDOWN};
    // NOLINTNEXTLINE(clang-analyzer-optin.mpi.MPI-Checker): requests freed, not waited for
    for (int r = 0; r < x->s.size; r++) {
        if (r == x->s.root) continue;
        MPI_Request req; /* freed below, never waited for */
        int rc = MPI_Isend(&bye, sizeof bye, MPI_BYTE, r, CF__MPI_TAG_BATCH, x->s.comm, &req);
        if (rc == MPI_SUCCESS) MPI_Request_free(&req);
    }
    fprintf(stderr, "%s\n", msg);
}

#define NAP_MAX_NS 1000000L /* the longest nap while replies are expected */
/* After a driver left, the progress thread naps instead of sleeping for
 * good this long (see the top of the file). */
#define DRIVE_RECENT_NS 20000000L

enum nap_kind {
    NAP_TIMED,   /* replies expected: up to nap_ns, a submit wakes it */
    NAP_DRIVER,  /* a waiter drives: up to nap_ns, only a cancel or a kick wakes it */
    NAP_LAZY,    /* nothing in flight, a driver was here lately: as NAP_DRIVER */
    NAP_FOREVER, /* nothing in flight: until a submit, cancel or shutdown */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep until woken, or nap_ns (not for NAP_FOREVER). */
static void nap(struct mpi_exec *x, long nap_ns, enum nap_kind k)
{
    lock(x);
    /* While a waiter drives, the queue is its business. */
    bool queued = k != NAP_DRIVER && x->q_head;
    if (!x->kick && !queued && !x->cancels && !x->cancel_all &&
        !(k == NAP_FOREVER && x->shutting)) {
        x->sleeping = true;
        x->lazy = k == NAP_DRIVER || k == NAP_LAZY;
        if (k == NAP_FOREVER) {
            pthread_cond_wait(&x->cv, &x->mu);
        } else {
            struct timespec ts = cf__mpi_nap_until(nap_ns);
            pthread_cond_timedwait(&x->cv, &x->mu, &ts);
        }
        x->sleeping = false;
        x->lazy = false;
    }
    x->kick = false;
    unlock(x);
}

/* Tell every serving rank to stop and release our communicator. */
static int finish(struct mpi_exec *x)
{
    struct cf__mpi_rec rec = {.kind = CF__MPI_SHUTDOWN};
    for (int r = 0; r < x->s.size; r++) {
        if (r == x->s.root) continue;
        int rc = cf__mpi_out_add(&x->out[r], &rec, NULL, NULL, NULL);
        if (rc) return rc;
    }
    int rc = flush_all(x);
    if (!rc) rc = cf__mpi_sends_drain(&x->io);
    if (!rc) MPI_Comm_free(&x->s.comm);
    return rc;
}

/* One round of progress (tok held): take what other threads queued,
 * dispatch, send, receive. *work: something happened; *sends: sends still
 * pending; *shutting: a shutdown was asked for. */
static int round_once(struct mpi_exec *x, bool *work, int *sends, bool *shutting)
{
    lock(x);
    struct mpi_task *q = x->q_head, *cancels = x->cancels;
    x->q_head = NULL;
    x->q_tail = &x->q_head;
    x->cancels = NULL;
    bool cancel_all = x->cancel_all;
    *shutting = x->shutting;
    x->cancel_all = false;
    unlock(x);
    *work = q || cancels || cancel_all;
    *sends = 0;
    if (q) {
        *x->ready_tail = q;
        while (q->next) q = q->next;
        x->ready_tail = &q->next;
    }
    int rc = 0;
    if (cancel_all && (rc = cancel_everything(x))) return rc;
    for (struct mpi_task *t = cancels, *n; t; t = n) {
        n = t->cancel_next;
        if (!rc && atomic_load_explicit(&t->state, memory_order_acquire) == T_CANCEL_REQ &&
            t->pending > 0)
            rc = send_cancel(x, t);
        task_unref(t); /* the list's reference */
    }
    if (rc) return rc;
    if ((rc = dispatch(x))) return rc;
    for (int r = 0; r < x->s.size; r++)
        if (!cf__mpi_out_empty(&x->out[r])) cf__mpi_pace_sent(&x->pace);
    if ((rc = flush_all(x))) return rc;
    int n = cf__mpi_sends_progress(&x->io);
    if (n < 0) return n;
    *sends = n;
    bool got = false;
    if ((rc = receive(x, &got))) return rc;
    if (got) {
        cf__mpi_pace_arrival(&x->pace);
        *work = true;
    }
    if (*work) cf__mpi_pace_event(&x->pace);
    return 0;
}

static void *progress(void *arg)
{
    struct mpi_exec *x = arg;
    tls_progress_of = x;
    int rc = 0;
    pthread_mutex_lock(&x->tok);
    for (;;) {
        if ((rc = x->fail_rc)) break;
        /* relaxed: a hint; the token orders the work itself. */
        if (atomic_load_explicit(&x->drivers, memory_order_relaxed) > 0 ||
            (cf__test_mpi_hold_progress && cf__test_mpi_hold_progress())) {
            pthread_mutex_unlock(&x->tok);
            nap(x, NAP_MAX_NS, NAP_DRIVER);
            pthread_mutex_lock(&x->tok);
            continue;
        }
        bool work, shutting;
        int sends;
        if ((rc = round_once(x, &work, &sends, &shutting))) break;
        if (shutting && !x->ready_head && x->n_expect == 0) {
            lock(x);
            bool empty = !x->q_head && !x->cancels;
            unlock(x);
            if (empty) {
                rc = finish(x);
                break;
            }
            continue;
        }
        if (work) continue;
        /* Poll a little even with nothing in flight: the next submit of
         * a steady caller comes soon, and waking from the condition
         * variable costs more than that. */
        bool yield;
        long ns = cf__mpi_pace_idle(&x->pace, NAP_MAX_NS, NAP_MAX_NS, &yield);
        if (ns == 0 && !yield) continue;
        bool idle = x->n_expect == 0 && sends == 0 && !x->ready_head;
        pthread_mutex_unlock(&x->tok);
        if (ns == 0) {
            sched_yield(); /* a polling loop must not starve a rank on the same core */
        } else if (!idle) {
            nap(x, ns, NAP_TIMED);
        } else {
            /* relaxed: a hint, as above */
            int64_t since = mono_ns() -
                            atomic_load_explicit(&x->last_drive_ns, memory_order_relaxed);
            nap(x, NAP_MAX_NS, since < DRIVE_RECENT_NS ? NAP_LAZY : NAP_FOREVER);
        }
        pthread_mutex_lock(&x->tok);
        if (idle && ns) cf__mpi_pace_event(&x->pace);
    }
    if (rc) fail_everything(x, rc);
    x->closed = true;
    pthread_mutex_unlock(&x->tok);
    lock(x);
    x->exited = true;
    bool free_it = x->free_on_exit;
    pthread_cond_broadcast(&x->done_cv);
    unlock(x);
    tls_progress_of = NULL;
    if (free_it) exec_unref(x);
    return NULL;
}

/* ---- waiters drive progress ---- */

static bool future_done(cf_future *f)
{
    /* acquire: pairs with the completer's release; the caller then reads
     * the outcome through the future's API, which acquires again. */
    return cf__state_done(atomic_load_explicit(&f->state, memory_order_acquire));
}

/* The run_awaited hook (core/executor.h), which a thread that waits on f
 * without a deadline calls before it spins and sleeps: here it drives
 * progress itself instead (see the top of the file), polling and napping
 * on the pace as the progress thread would, until f is done. CF__RUN_RAN
 * once f is done; CF__RUN_NOT_NOW when it stopped first (it completed a
 * future somebody else listens to, or the executor failed or finished:
 * the caller then waits as usual); CF__RUN_NEVER in a thread that holds
 * the token already (a callback: nobody else could progress). */
static int hook_run_awaited(cf_future *f)
{
    struct mpi_task *t = task_of(f);
    struct mpi_exec *x = t->ex; /* alive: f holds t, t holds x's memory */
    if (tls_progress_of == x) return CF__RUN_NEVER;
    /* relaxed: a hint for the progress thread (see struct mpi_exec) */
    atomic_fetch_add_explicit(&x->drivers, 1, memory_order_relaxed);
    bool outstanding = true; /* unknown until we held the token */
    /* A callback of another executor's driver may drive this one: restore
     * what its thread is to that executor afterwards. */
    struct mpi_exec *outer = tls_progress_of;
    for (unsigned i = 0; !future_done(f); i++) {
        bool work = false, stop = false, held = false, yield = false;
        long ns = 0;
        if (pthread_mutex_trylock(&x->tok) == 0) {
            held = true;
            if (x->closed || x->fail_rc) {
                pthread_mutex_unlock(&x->tok);
                break;
            }
            tls_progress_of = x;
            x->drive_f = f;
            x->others_done = false;
            bool shutting;
            int sends;
            int rc = round_once(x, &work, &sends, &shutting);
            if (rc) x->fail_rc = rc; /* the progress thread fails everything */
            outstanding = rc || x->n_expect > 0 || x->ready_head;
            stop = rc || x->others_done;
            x->drive_f = NULL;
            tls_progress_of = outer;
            if (!work && !stop) ns = cf__mpi_pace_idle(&x->pace, NAP_MAX_NS, NAP_MAX_NS, &yield);
            pthread_mutex_unlock(&x->tok);
        }
        if (stop) break;
        if (work) continue;
        if (!held) {
            /* Another thread holds the token (the progress thread backs
             * off at its next round): spin, yielding now and then. */
            if (i % CF__MPI_YIELD_EVERY == CF__MPI_YIELD_EVERY - 1) sched_yield();
            continue;
        }
        if (ns == 0) {
            if (yield) sched_yield(); /* three ranks on two cores: let a serving rank run */
            continue;
        }
        /* Quiet for the pace's polling window: nap until f is done (by
         * anyone) or ns pass, as the progress thread would. Meanwhile we
         * are not a driver: the progress thread may run rounds. */
        atomic_fetch_sub_explicit(&x->drivers, 1, memory_order_relaxed);
        (void)cf_future_result(f, (double)ns * 1e-9, NULL, NULL);
        atomic_fetch_add_explicit(&x->drivers, 1, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&x->drivers, 1, memory_order_relaxed);
    atomic_store_explicit(&x->last_drive_ns, mono_ns(), memory_order_relaxed);
    lock(x);
    if (outstanding || x->q_head || x->cancels || x->cancel_all || x->shutting) {
        x->kick = true;
        if (x->sleeping) pthread_cond_signal(&x->cv);
    }
    unlock(x);
    return future_done(f) ? CF__RUN_RAN : CF__RUN_NOT_NOW;
}

/* ---- the executor's table ---- */

static int mpi_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    struct mpi_exec *x = (struct mpi_exec *)ex;
    lock(x);
    x->shutting = true;
    if (cancel_futures) x->cancel_all = true;
    if (x->sleeping) pthread_cond_signal(&x->cv);
    if (wait && tls_progress_of != x) {
        while (!x->exited) pthread_cond_wait(&x->done_cv, &x->mu);
        if (!x->joined) {
            x->joined = true;
            unlock(x);
            pthread_join(x->thread, NULL);
            return 0;
        }
    }
    unlock(x);
    return 0;
}

static void mpi_destroy(cf_executor *ex)
{
    struct mpi_exec *x = (struct mpi_exec *)ex;
    if (tls_progress_of == x) {
        /* From a callback that runs where the token is held (the progress
         * thread, or a waiter driving it): the progress thread frees the
         * memory when its loop ends, and nobody joins it. */
        lock(x);
        x->free_on_exit = true;
        bool joined = x->joined;
        x->joined = true;
        unlock(x);
        if (!joined) pthread_detach(x->thread);
        return;
    }
    lock(x);
    bool join = !x->joined;
    x->joined = true;
    unlock(x);
    if (join) pthread_join(x->thread, NULL);
    exec_unref(x);
}

static int mpi_workers(const cf_executor *ex)
{
    return ((const struct mpi_exec *)ex)->workers;
}

/* One entry per serving rank: tasks_run is the results it returned. */
static int mpi_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    const struct mpi_exec *x = (const struct mpi_exec *)ex;
    size_t k = 0;
    for (int r = 0; r < x->s.size; r++) {
        if (r == x->s.root) continue;
        if (k < cap) {
            out[k] = (cf_worker_stats){
                .tasks_run = atomic_load_explicit(&x->done_per_rank[r], memory_order_relaxed),
                .cpu = -1,
                .numa_node = -1};
        }
        k++;
    }
    *n = k;
    return 0;
}

static const struct cf__executor_ops mpi_ops = {
    .submit = mpi_submit,
    .shutdown = mpi_shutdown,
    .destroy = mpi_destroy,
    .workers = mpi_workers,
    .stats = mpi_stats,
};

int cf__mpi_root_new(cf_executor **out, const struct cf__mpi_setup *s, struct cf__mpi_modules *mods,
                     const int *workers)
{
    struct mpi_exec *x = calloc(1, sizeof *x);
    if (!x) return CF_ENOMEM;
    x->base.ops = &mpi_ops;
    x->base.caps = 0; /* tasks run in other processes: no shared memory */
    x->s = *s;
    x->inflight = calloc((size_t)s->size, sizeof *x->inflight);
    x->out = calloc((size_t)s->size, sizeof *x->out);
    x->done_per_rank = calloc((size_t)s->size, sizeof *x->done_per_rank);
    if (!x->inflight || !x->out || !x->done_per_rank) {
        free(x->inflight);
        free(x->out);
        free(x->done_per_rank);
        free(x);
        return CF_ENOMEM;
    }
    for (int r = 0; r < s->size; r++) x->workers += workers[r];
    x->io.comm = s->comm;
    x->io.chunk = s->chunk;
    x->q_tail = &x->q_head;
    x->ready_tail = &x->ready_head;
    x->hot_rank = -1;
    cf__mpi_pace_init(&x->pace);
    atomic_init(&x->drivers, 0);
    atomic_init(&x->last_drive_ns, 0);
    atomic_init(&x->mem_refs, 1);
    pthread_mutex_init(&x->mu, NULL);
    pthread_mutex_init(&x->tok, NULL);
    pthread_cond_init(&x->cv, NULL);
    pthread_cond_init(&x->done_cv, NULL);
    x->mods = *mods;
    if (pthread_create(&x->thread, NULL, progress, x) != 0) {
        *mods = x->mods; /* still the caller's */
        x->mods = (struct cf__mpi_modules){0};
        exec_unref(x);
        return CF_ESYS;
    }
    *mods = (struct cf__mpi_modules){0};
    *out = &x->base;
    return 0;
}
