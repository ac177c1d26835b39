/* A serving rank: receive tasks from the root, run them on this rank's
 * thread pool, send the results back.
 *
 * The MPI token. Whoever holds sv->tok calls MPI for this rank and owns
 * the loop's state (io, out, the live list, pace): the thread that called
 * cf_mpi_executor_new runs the loop and holds it except while it yields
 * or naps; a pool worker whose task just ended (on_done) takes it with a
 * trylock and, when that task is the rank's only one, sends the result
 * itself, so a lone task's result leaves without waiting for the loop to
 * notice (a busy rank's results wait for the loop, which sends them
 * together). MPI_THREAD_SERIALIZED, which the constructor asks of every
 * rank, allows any thread to call MPI when the calls never overlap, which
 * the token makes so. A worker that does not send pushes the task on the
 * completion list (under mu) and wakes the loop if it sleeps; the loop
 * checks the list under mu before it sleeps, so no completion waits for a
 * nap. A worker touches this struct only under the token or mu, and only
 * while n_live still counts its task (the loop decrements it when it
 * takes the task off the list, under both), so the loop cannot end (and
 * free the struct) while a worker still uses it. Once the loop has ended
 * (sv->closed, under the token) a worker only queues.
 *
 * Between events the loop polls the root with MPI_Iprobe, then naps
 * (struct cf__mpi_pace): up to 1 ms while events are recent or a task
 * runs here; with no task here, up to an eighth of the time since the
 * last event, at most 64 ms (reached after 512 ms of quiet). Open MPI's
 * blocking receive would spin a core instead; the first task after a
 * quiet time q may wait up to q/8 (64 ms at most) to be noticed. */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi/mpi_exec.h"
#include "cfutures/mpi.h"
#include "mpi/mpi_io.h"

struct srv;

struct srv_task {
    uint64_t id;
    cf_future *lf;                /* the pool's future */
    bool cancelled;               /* acknowledged to the root as cancelled */
    struct srv_task *prev, *next; /* live list (loop thread) */
    struct srv_task *done_next;   /* completion list (under mu) */
    struct srv *sv;
};

struct srv {
    const struct cf__mpi_setup *s;
    cf_executor *pool;
    const uintptr_t *biases;
    size_t n_biases;
    struct cf__mpi_io io;
    struct cf__mpi_out out;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sleeping;         /* under mu */
    struct srv_task *done; /* under mu */
    pthread_mutex_t tok;   /* the MPI token (see the top of the file) */
    /* under tok */
    struct srv_task *live;
    long n_live;
    bool stop;
    bool closed; /* the loop has ended: no more MPI calls */
    int fail_rc; /* a worker's send failed: the loop stops with it */
    struct cf__mpi_pace pace;
};

static int send_done(struct srv *sv);

static void push_done(struct srv *sv, struct srv_task *t, bool wake)
{
    pthread_mutex_lock(&sv->mu);
    t->done_next = sv->done;
    sv->done = t;
    if (wake && sv->sleeping) pthread_cond_signal(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

/* A task ended (in a pool worker, or in the loop thread when it had ended
 * before its callback was added). With the token, send its result now;
 * else leave it to the loop. */
static void on_done(cf_future *f, void *ud)
{
    (void)f;
    struct srv_task *t = ud;
    struct srv *sv = t->sv;
    if (pthread_mutex_trylock(&sv->tok) != 0) {
        push_done(sv, t, true);
        return;
    }
    bool sent = false;
    if (sv->n_live > 1) {
        /* Others still run: the loop sends this result with theirs, in
         * one message (a busy rank batches, a lone task goes at once). */
        pthread_mutex_unlock(&sv->tok);
        push_done(sv, t, true);
        return;
    }
    if (!sv->closed && !sv->fail_rc) {
        push_done(sv, t, false);
        int rc = send_done(sv);
        if (rc) sv->fail_rc = rc;
        sent = !rc;
    } else {
        push_done(sv, t, false);
    }
    /* A failure must reach the loop: wake it (the task stays queued). */
    if (!sent) {
        pthread_mutex_lock(&sv->mu);
        if (sv->sleeping) pthread_cond_signal(&sv->cv);
        pthread_mutex_unlock(&sv->mu);
    }
    pthread_mutex_unlock(&sv->tok);
}

static void release_cb(void *ctx)
{
    cf_future_release(ctx);
}

static int send_error(struct srv *sv, uint64_t id, int code, bool broken, const char *msg)
{
    struct cf__mpi_rec rec = {.kind = CF__MPI_RESULT,
                              .id = id,
                              .code = code,
                              .flags = broken ? CF__MPI_F_BROKEN : 0,
                              .len = msg ? strlen(msg) : 0};
    return cf__mpi_out_add(&sv->out, &rec, msg, NULL, NULL);
}

/* A finished task's outcome into the batch for the root. */
static int pack_result(struct srv *sv, struct srv_task *t)
{
    const void *data;
    size_t len;
    int rc = cf_future_result(t->lf, CF_POLL, &data, &len);
    if (rc == 0) {
        struct cf__mpi_rec rec = {.kind = CF__MPI_RESULT, .id = t->id, .len = len};
        /* A bulk result is sent from the future's own buffer: the future
         * is released once its sends complete. */
        rc = cf__mpi_out_add(&sv->out, &rec, data, release_cb, t->lf);
        if (rc) cf_future_release(t->lf);
        return rc;
    }
    int code = rc;
    const char *msg = NULL;
    if (rc == CF_ETASK || rc == CF_EBROKEN) cf_future_exception(t->lf, CF_POLL, &code, &msg);
    rc = send_error(sv, t->id, code, rc == CF_EBROKEN, msg);
    cf_future_release(t->lf);
    return rc;
}

static int drain_completions(struct srv *sv, bool *work)
{
    pthread_mutex_lock(&sv->mu);
    struct srv_task *t = sv->done;
    sv->done = NULL;
    pthread_mutex_unlock(&sv->mu);
    int rc = 0;
    for (struct srv_task *n; t; t = n) {
        n = t->done_next;
        *work = true;
        if (t->prev) t->prev->next = t->next;
        else sv->live = t->next;
        if (t->next) t->next->prev = t->prev;
        sv->n_live--;
        if (t->cancelled) cf_future_release(t->lf);
        else if (!rc) rc = pack_result(sv, t);
        else cf_future_release(t->lf);
        free(t);
    }
    return rc;
}

static int start_task(struct srv *sv, const struct cf__mpi_rec *rec, const unsigned char *body)
{
    void *own = NULL;
    int rc;
    if (rec->flags & CF__MPI_F_BULK) {
        if ((rc = cf__mpi_recv_bulk(&sv->io, sv->s->root, rec->len, &own))) return rc;
        body = own;
    }
    char msg[160];
    cf_task_fn *fn = NULL;
    if (rec->mod < sv->n_biases && sv->biases[rec->mod])
        fn = (cf_task_fn *)(sv->biases[rec->mod] - 1 + (uintptr_t)rec->off);
    if (fn && rec->inner_mod != CF__MPI_NO_MOD) {
        /* A cf_map chunk: put this process's item function in its argument. */
        cf_task_fn *inner = NULL;
        if (rec->inner_mod < sv->n_biases && sv->biases[rec->inner_mod])
            inner = (cf_task_fn *)(sv->biases[rec->inner_mod] - 1 + (uintptr_t)rec->inner_off);
        if (!inner || sv->s->map_fn_at == SIZE_MAX || rec->len < sv->s->map_fn_at + sizeof inner) {
            fn = NULL;
        } else {
            if (!own) {
                if (!body || !(own = malloc((size_t)rec->len))) return CF_ENOMEM;
                memcpy(own, body, (size_t)rec->len);
                body = own;
            }
            memcpy((unsigned char *)own + sv->s->map_fn_at, &inner, sizeof inner);
        }
    }
    if (!fn) {
        free(own);
        snprintf(msg, sizeof msg, "cfutures-mpi: rank %d has not loaded the task's module",
                 sv->s->rank);
        return send_error(sv, rec->id, CF_ENOTSUP, true, msg);
    }
    struct srv_task *t = calloc(1, sizeof *t);
    if (!t) {
        free(own);
        return CF_ENOMEM;
    }
    t->id = rec->id;
    t->sv = sv;
    rc = cf_submit(sv->pool, fn, body, (size_t)rec->len, &t->lf);
    free(own);
    if (rc) {
        free(t);
        snprintf(msg, sizeof msg, "cfutures-mpi: rank %d could not start the task (error %d)",
                 sv->s->rank, rc);
        return send_error(sv, rec->id, CF_EBROKEN, true, msg);
    }
    t->next = sv->live;
    if (sv->live) sv->live->prev = t;
    sv->live = t;
    sv->n_live++;
    if (cf_future_add_done_callback(t->lf, on_done, t) != 0) {
        /* Cannot be told when it ends: wait for it here. */
        (void)cf_future_result(t->lf, CF_FOREVER, NULL, NULL);
        on_done(t->lf, t);
    }
    return 0;
}

static int cancel_task(struct srv *sv, const struct cf__mpi_rec *rec)
{
    struct cf__mpi_rec ack = {.kind = CF__MPI_CANCEL_ACK, .id = rec->id};
    for (struct srv_task *t = sv->live; t; t = t->next) {
        if (t->id != rec->id || t->cancelled) continue;
        if (cf_future_cancel(t->lf)) {
            t->cancelled = true;
            ack.flags = CF__MPI_F_OK;
        }
        break;
    }
    return cf__mpi_out_add(&sv->out, &ack, NULL, NULL, NULL);
}

static int receive(struct srv *sv, bool *work)
{
    for (int round = 0; round < 64; round++) {
        int src;
        size_t len;
        int rc = cf__mpi_recv_batch(&sv->io, sv->s->root, &src, &len);
        if (rc <= 0) return rc;
        *work = true;
        unsigned char *buf = sv->io.rbuf;
        size_t at = 0;
        struct cf__mpi_rec rec;
        const unsigned char *body;
        rc = 0;
        while (rc == 0 && cf__mpi_next_rec(buf, len, &at, &rec, &body)) {
            if (rec.kind == CF__MPI_TASK) rc = start_task(sv, &rec, body);
            else if (rec.kind == CF__MPI_CANCEL) rc = cancel_task(sv, &rec);
            else if (rec.kind == CF__MPI_SHUTDOWN) sv->stop = true;
        }
        if (rc) return rc;
    }
    return 0;
}

/* Completed tasks' results into the batch, and the batch to the root
 * (tok held). */
static int send_done(struct srv *sv)
{
    bool work = false;
    int rc = drain_completions(sv, &work);
    if (rc) return rc;
    if (cf__mpi_out_empty(&sv->out)) return 0;
    cf__mpi_pace_sent(&sv->pace);
    cf__mpi_pace_event(&sv->pace);
    if ((rc = cf__mpi_flush(&sv->io, &sv->out, sv->s->root))) return rc;
    int sends = cf__mpi_sends_progress(&sv->io);
    return sends < 0 ? sends : 0;
}

#define NAP_MAX 1000000L        /* while events are recent, or a task runs here */
#define NAP_QUIET_MAX 64000000L /* no task here: 1/8 of the quiet time, at most this */

static void nap(struct srv *sv, long ns)
{
    pthread_mutex_lock(&sv->mu);
    if (!sv->done) {
        sv->sleeping = true;
        struct timespec ts = cf__mpi_nap_until(ns);
        pthread_cond_timedwait(&sv->cv, &sv->mu, &ts);
        sv->sleeping = false;
    }
    pthread_mutex_unlock(&sv->mu);
}

static int loop(struct srv *sv)
{
    cf__mpi_pace_init(&sv->pace);
    pthread_mutex_lock(&sv->tok);
    int rc;
    for (;;) {
        if ((rc = sv->fail_rc)) break;
        bool work = false, got = false;
        rc = drain_completions(sv, &work);
        if (!cf__mpi_out_empty(&sv->out)) cf__mpi_pace_sent(&sv->pace);
        if (!rc) rc = cf__mpi_flush(&sv->io, &sv->out, sv->s->root);
        if (rc) break;
        int sends = cf__mpi_sends_progress(&sv->io);
        if (sends < 0) {
            rc = sends;
            break;
        }
        if ((rc = receive(sv, &got))) break;
        if (got) cf__mpi_pace_arrival(&sv->pace);
        if (sv->stop && sv->n_live == 0 && sends == 0 && cf__mpi_out_empty(&sv->out)) break;
        if (work || got || !cf__mpi_out_empty(&sv->out)) {
            cf__mpi_pace_event(&sv->pace);
            continue;
        }
        /* Running tasks send their results or wake the loop when they
         * end: only the root's messages wait for the nap to end. */
        bool yield;
        long ns = cf__mpi_pace_idle(&sv->pace, NAP_MAX, sv->n_live ? NAP_MAX : NAP_QUIET_MAX,
                                    &yield);
        if (ns == 0 && !yield) continue;
        /* Let a worker take the token meanwhile. */
        pthread_mutex_unlock(&sv->tok);
        if (ns) nap(sv, ns);
        else sched_yield(); /* a polling loop must not starve a rank on the same core */
        pthread_mutex_lock(&sv->tok);
    }
    sv->closed = true;
    pthread_mutex_unlock(&sv->tok);
    return rc;
}

int cf__mpi_serve(const struct cf__mpi_setup *s, cf_executor *pool, const uintptr_t *biases,
                  size_t n_biases)
{
    struct srv sv = {.s = s, .pool = pool, .biases = biases, .n_biases = n_biases};
    sv.io.comm = s->comm;
    sv.io.chunk = s->chunk;
    pthread_mutex_init(&sv.mu, NULL);
    pthread_mutex_init(&sv.tok, NULL);
    pthread_cond_init(&sv.cv, NULL);
    int rc = loop(&sv);
    if (rc) {
        fprintf(stderr, "cfutures-mpi: rank %d stops serving: %s\n", s->rank,
                rc == CF_ENOMEM ? "out of memory" : sv.io.err);
        cf__mpi_sends_abandon(&sv.io);
        /* Tasks still running finish in the pool, which the caller frees;
         * their results have nowhere to go (sv.closed: the workers only
         * queue them). */
        (void)cf_executor_shutdown(pool, true, true);
        bool ignored;
        pthread_mutex_lock(&sv.tok);
        sv.stop = true;
        (void)drain_completions(&sv, &ignored);
        pthread_mutex_unlock(&sv.tok);
    } else {
        rc = cf__mpi_sends_drain(&sv.io);
    }
    cf__mpi_out_free(&sv.out);
    free(sv.io.req);
    free(sv.io.hold);
    free(sv.io.idx);
    free(sv.io.rbuf);
    pthread_mutex_destroy(&sv.mu);
    pthread_mutex_destroy(&sv.tok);
    pthread_cond_destroy(&sv.cv);
    return rc ? CF_EBROKEN : CF_MPI_SERVED;
}
