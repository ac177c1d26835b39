/* The root's side of the MPI executor: submit, cancel, shutdown, and the
 * progress thread that makes every MPI call.
 *
 * Threads. Any thread may submit, cancel or shut down; they hand their
 * work to the progress thread through a mutex-guarded queue and wake it
 * (a condition variable, signalled only while it sleeps). The progress
 * thread alone calls MPI (so MPI_THREAD_SERIALIZED suffices), dispatches
 * tasks within each serving rank's credit window, receives results and
 * completes the futures; their done-callbacks run in it. A callback must
 * therefore not wait for another future of this executor (nothing else
 * would receive its result): it may submit, cancel, or wait with a timeout.
 *
 * Why a thread and not helping from waiting threads: results must stream
 * back while nobody waits (callbacks, cf_as_completed started later), and
 * with one MPI caller the library needs no more than SERIALIZED from MPI.
 * After each event it polls for a short while (struct cf__mpi_pace: twice
 * the serving ranks' last answer time, 50 us to 1 ms, yielding the CPU
 * between polls). Then, with nothing in flight, it sleeps on the condition
 * variable until a submit, cancel or shutdown (no CPU at all while idle);
 * with replies expected, it naps between polls up to 1 ms, and a submit
 * wakes it at once.
 *
 * Memory. A task record (struct mpi_task) is referenced by its future (the
 * on_free hook drops it), by the executor until every reply it expects
 * has arrived, by a pending cancel request and by a pending bulk send of
 * its argument. The executor's memory is referenced by cf_executor_free
 * and by every task record, so a future's hooks may use it after the
 * executor was freed by its user. */
#include <errno.h>
#include <pthread.h>
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
    int rank;    /* progress thread: where it was sent */
    int pending; /* progress thread: replies still expected */
    struct cf__mpi_rec rec;
    void *arg;
    struct mpi_task *next;          /* submit queue, then the ready list */
    struct mpi_task *cancel_next;   /* the cancel-request list */
    struct mpi_task *fprev, *fnext; /* progress thread: in flight */
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
    pthread_t thread;
    /* progress thread only */
    struct mpi_task *ready_head, **ready_tail;
    struct mpi_task *flight;
    int *inflight;
    long n_inflight; /* tasks holding a credit */
    long n_expect;   /* replies still expected, over every task */
    int next_rank;
    struct cf__mpi_out *out;
    struct cf__mpi_io io;
    /* written by the progress thread, read by stats (relaxed counters) */
    _Atomic uint64_t *done_per_rank;
};

static _Thread_local struct mpi_exec *tls_progress_of;

/* ---- memory ---- */

static void exec_unref(struct mpi_exec *x)
{
    /* acq_rel: the last one sees every write of the others before freeing. */
    if (atomic_fetch_sub_explicit(&x->mem_refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&x->mu);
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
    free(t->arg);
    free(t);
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

static const struct cf__future_ops task_ops = {
    .on_free = hook_on_free,
    .try_cancel = hook_try_cancel,
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
    struct mpi_task *t = calloc(1, sizeof *t);
    if (!t) return CF_ENOMEM;
    if (arg_len && !(t->arg = malloc(arg_len))) {
        free(t);
        return CF_ENOMEM;
    }
    if (arg_len) memcpy(t->arg, arg, arg_len);
    cf_future *f;
    if (cf_future_new(&f) != 0) {
        free(t->arg);
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
        if (x->sleeping) pthread_cond_signal(&x->cv);
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
        cf_future_set_exception(t->f, rec->flags & CF__MPI_F_BROKEN ? CF_EBROKEN : rec->code, msg);
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
        cf_future_set_exception(t->f, CF_EBROKEN, msg);
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
        cf_future_set_exception(t->f, CF_EBROKEN, msg);
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

/* Sleep until woken (forever when nothing is in flight) or nap_ns. */
static void nap(struct mpi_exec *x, long nap_ns, bool forever)
{
    lock(x);
    if (!x->q_head && !x->cancels && !x->cancel_all && !(forever && x->shutting)) {
        x->sleeping = true;
        if (forever) {
            pthread_cond_wait(&x->cv, &x->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += nap_ns;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&x->cv, &x->mu, &ts);
        }
        x->sleeping = false;
    }
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

static void *progress(void *arg)
{
    struct mpi_exec *x = arg;
    tls_progress_of = x;
    struct cf__mpi_pace pace;
    cf__mpi_pace_init(&pace);
    int rc = 0;
    for (;;) {
        lock(x);
        struct mpi_task *q = x->q_head, *cancels = x->cancels;
        x->q_head = NULL;
        x->q_tail = &x->q_head;
        x->cancels = NULL;
        bool cancel_all = x->cancel_all, shutting = x->shutting;
        x->cancel_all = false;
        unlock(x);
        bool work = q || cancels || cancel_all;
        if (q) {
            *x->ready_tail = q;
            while (q->next) q = q->next;
            x->ready_tail = &q->next;
        }
        if (cancel_all && (rc = cancel_everything(x))) break;
        for (struct mpi_task *t = cancels, *n; t; t = n) {
            n = t->cancel_next;
            if (atomic_load_explicit(&t->state, memory_order_acquire) == T_CANCEL_REQ &&
                t->pending > 0 && (rc = send_cancel(x, t)))
                break;
            task_unref(t); /* the list's reference */
        }
        if (rc) break;
        if ((rc = dispatch(x))) break;
        for (int r = 0; r < x->s.size; r++)
            if (!cf__mpi_out_empty(&x->out[r])) cf__mpi_pace_sent(&pace);
        if ((rc = flush_all(x))) break;
        int sends = cf__mpi_sends_progress(&x->io);
        if (sends < 0) {
            rc = sends;
            break;
        }
        bool got = false;
        if ((rc = receive(x, &got))) break;
        if (got) {
            cf__mpi_pace_arrival(&pace);
            work = true;
        }
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
        if (work) {
            cf__mpi_pace_event(&pace);
            continue;
        }
        /* Poll a little even with nothing in flight: the next submit of
         * a steady caller comes soon, and waking from the condition
         * variable costs more than that. */
        long ns = cf__mpi_pace_idle(&pace, NAP_MAX_NS, NAP_MAX_NS);
        if (ns == 0) continue;
        if (x->n_expect == 0 && sends == 0 && !x->ready_head) {
            nap(x, 0, true);
            cf__mpi_pace_event(&pace);
        } else {
            nap(x, ns, false);
        }
    }
    if (rc) fail_everything(x, rc);
    lock(x);
    x->exited = true;
    bool free_it = x->free_on_exit;
    pthread_cond_broadcast(&x->done_cv);
    unlock(x);
    tls_progress_of = NULL;
    if (free_it) exec_unref(x);
    return NULL;
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
        /* From a callback in the progress thread: it frees the memory
         * when its loop ends. */
        lock(x);
        x->free_on_exit = true;
        x->joined = true;
        unlock(x);
        pthread_detach(pthread_self());
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
    atomic_init(&x->mem_refs, 1);
    pthread_mutex_init(&x->mu, NULL);
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
