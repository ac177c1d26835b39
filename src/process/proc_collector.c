/* The process pool's collector: one thread in the parent that completes
 * futures from the result slots (done-callbacks run here, as in CPython),
 * feeds the overflow list into the rings, watches the zygote's reports and
 * carries out shutdown, termination and breakage.
 *
 * Everything read from shared memory is validated before use (SEMANTICS
 * 33) by the ring's parent side (proc_ring_parent.c); anything that fails
 * a check breaks the pool: every future fails with CF_EBROKEN and the
 * workers are killed. Waits cannot hang on a worker's lie either: the
 * doorbell word is only a hint (poll() also times out while work is in
 * flight), and worker deaths come from the zygote's report socket.
 *
 * Concurrency: records are removed (collected) only under the collect lock
 * (p->coll_lock), held by this thread for each step of its loop, or briefly
 * by a thread helping from result() (proc_help.c), or by a thread in
 * shutdown(cancel_futures) while it cancels what has not begun
 * (cf__pp_cancel_unstarted); the breakage sweep and the zygote's reports
 * are this thread's alone, under the same lock. Producers only add
 * records, under the channel's fill lock.
 * The collector defers to helpers: a step after helpers harvested
 * (p->harvests moved since its last step, and none raised p->coll_attn)
 * collects nothing; everything else in the step (feeding, reports, flags)
 * still runs. Invariant that keeps a result from being left behind: the
 * collector defers only in steps followed by a bounded nap (or another
 * step), never in the last look before a sleep that only a waker ends;
 * so once helpers stop, the next step or nap's end collects.
 * Channel and overflow locks are never held while a future is completed or
 * cancelled; the collect lock is held across callbacks only in this thread,
 * which never waits for a helper, so callbacks may call anything (a
 * callback that blocks in result() on this pool's future blocks this
 * thread, as in CPython). */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "sync/fence.h"
#include "sync/futex.h"
#include "process/proc_collector.h"
#include "process/proc_life.h"
#include "process/proc_overflow.h"
#include "process/proc_ring_parent.h"

_Thread_local struct cf__ppool *cf__pp_tls_collector;

struct coll {
    struct cf__ppool *p;
    bool zygote_gone, rep_eof;
    bool term_done, exits_done;
    int64_t kill_deadline; /* terminate: when to follow up with SIGKILL */
    uint64_t last_rr;      /* p->rr when last looked at: submitters bump it */
    uint32_t last_helped;  /* p->helpers' entries when last looked at */
    uint32_t last_harvest; /* p->harvests at the last step */
    uint32_t seen_harvest; /* p->harvests when who_collects last looked */
    int64_t active_at;     /* when a submitter or helper was last seen (0: not lately) */
};

#ifdef CF_TEST_HOOKS
void (*cf__proc_test_coll_nap)(void);
void (*cf__proc_test_coll_defer)(void);
#endif

static void describe(char *b, size_t n, int pid, int st)
{
    if (st == -1) {
        snprintf(b, n, "worker %d died (exit status unknown)", pid);
    } else if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        const char *ab = sigabbrev_np(sig);
        snprintf(b, n, "worker %d killed by signal %d (SIG%s)%s", pid, sig, ab ? ab : "?",
                 WCOREDUMP(st) ? ", core dumped" : "");
    } else if (WIFEXITED(st)) {
        snprintf(b, n, "worker %d exited with status %d", pid, WEXITSTATUS(st));
    } else {
        snprintf(b, n, "worker %d died (wait status 0x%x)", pid, (unsigned)st);
    }
}

/* ---- failing everything ---- */

static void fail_list(cf_future **fs, size_t n, const char *msg)
{
    for (size_t i = 0; i < n; i++) {
        cf__future_fail_broken(fs[i], "%s", msg); /* CF_ESTATE if already done: fine */
        cf_future_release(fs[i]);                 /* the executor's reference */
    }
}

/* Fail every future in the rings and in the overflow list with msg. */
static void fail_everything(struct coll *c, const char *msg)
{
    struct cf__ppool *p = c->p;
    for (int i = 0; i < p->n; i++) {
        struct cf__pchan *ch = &p->ch[i];
        size_t k = 0;
        cf__pp_fill_lock(ch);
        uint64_t h = atomic_load_explicit(&ch->head, memory_order_relaxed);
        for (uint64_t pos = atomic_load_explicit(&ch->collected, memory_order_relaxed); pos < h;
             pos++) {
            struct cf__prec *r = &ch->rec[pos & (p->depth - 1)];
            if (r->f) p->scratch[k++] = r->f;
            r->f = NULL;
        }
        /* release: producers that see it (acquire) see the records cleared */
        atomic_store_explicit(&ch->collected, h, memory_order_release);
        ch->dead = true;
        cf__pp_fill_unlock(ch);
        fail_list(p->scratch, k, msg);
    }
    for (cf_future *f; (f = cf__pp_ov_take(p));) {
        while (f) {
            cf_future *next = f->next_queued;
            fail_list(&f, 1, msg);
            f = next;
        }
    }
}

static void break_pool(struct coll *c, const char *desc)
{
    struct cf__ppool *p = c->p;
    if (atomic_load_explicit(&p->flags, memory_order_relaxed) & CF__PP_BROKEN) return;
    char msg[320];
    snprintf(msg, sizeof msg, "process pool broken: %s", desc);
    p->broken_msg = cf__strdup(msg);
    /* seq_cst: set before the sweep takes each lock; submitters re-check it
     * under those locks, so nothing is added behind the sweep. */
    atomic_fetch_or_explicit(&p->flags, CF__PP_BROKEN, memory_order_seq_cst);
    fail_everything(c, msg);
    if (!c->zygote_gone) {
        struct cf__zreq q = {.op = CF__ZQ_KILL, .signo = SIGKILL};
        cf__pp_zreq(p, &q); /* the rest cannot be trusted with the rings any more */
    }
}

static void corrupted(struct coll *c, int chan, const char *what, uint64_t pos, uint64_t val)
{
    char desc[256];
    snprintf(desc, sizeof desc, "worker %d corrupted shared memory (%s at position %llu: 0x%llx)",
             (int)c->p->ch[chan].pid, what, (unsigned long long)pos, (unsigned long long)val);
    break_pool(c, desc);
}

/* ---- collecting ---- */

/* A SKIPPED slot: an exit marker consumed, or a task a canceller won. True
 * if that holds; false (the pool is broken) otherwise. */
static bool skipped(struct coll *c, int chan, uint64_t pos, uint32_t v)
{
    struct cf__pchan *ch = &c->p->ch[chan];
    struct cf__prec *r = &ch->rec[pos & (c->p->depth - 1)];
    if (r->is_exit) {
        ch->exit_consumed = true;
    } else if (!cf__future_cancel_quiet(r->f) && !cf_future_done(r->f)) {
        /* Skipped, but the future is RUNNING: someone saw the task begin
         * (the collector, a helper or running()), so no cancel can have
         * won the slot. Left alone, the future would never complete; the
         * break fails it with the rest. */
        corrupted(c, chan, "slot state (skipped after its task began)", pos, v);
        return false;
    }
    /* Else a canceller won the slot (try_cancel, or shutdown's sweep) and
     * had not yet made its CAS on the future: cancelled now. A worker that
     * skips a slot nobody cancelled can only cancel its own task this way,
     * which it could also do by returning an error. */
    return true;
}

/* Collect channel `chan` in order up to the first slot not finished;
 * complete the futures (callbacks run here, under the collect lock). */
static bool collect_chan(struct coll *c, int chan)
{
    struct cf__ppool *p = c->p;
    struct cf__pchan *ch = &p->ch[chan];
    bool progress = false;
    uint64_t pos = atomic_load_explicit(&ch->collected, memory_order_relaxed); /* ours */
    /* acquire: pairs with the producer's release store of head (records). */
    uint64_t h = atomic_load_explicit(&ch->head, memory_order_acquire);
    for (; pos < h && !ch->dead; pos++) { /* dead: a callback broke the pool meanwhile */
        uint32_t v;
        const char *what;
        enum cf__pp_seen seen = cf__pp_look(p, chan, pos, &v, &what);
        if (seen == CF__PP_NOT_YET) break;
        if (seen == CF__PP_CORRUPT) {
            corrupted(c, chan, what, pos, v);
            return true;
        }
        struct cf_out o;
        int code = 0;
        struct cf__pbad bad;
        if (seen == CF__PP_DONE &&
            cf__pp_take_result(p, chan, cf__pp_slot(p, chan, pos), pos, &o, &code, &bad)) {
            corrupted(c, chan, bad.what, pos, bad.val);
            return true;
        }
        if (seen == CF__PP_SKIPPED && !skipped(c, chan, pos, v)) return true;
        cf_future *f = cf__pp_free_slot(p, chan, pos, seen == CF__PP_DONE);
        progress = true;
        if (seen == CF__PP_DONE && cf__future_complete_from_out(f, code, &o) != 0)
            cf__out_dispose(&o);
        if (f) cf_future_release(f);
    }
    return progress;
}

/* ---- cancellation, exit markers ---- */

/* Cancel every task no worker has begun: first the overflow list, then
 * every ring slot still QUEUED or HELD, each with the same QUEUED->CANCELLED
 * CAS that cancel() uses, so a worker that begins the task at the same
 * instant either wins (the task runs; its future is marked running) or
 * finds the slot CANCELLED and skips it. Called by shutdown(cancel_futures)
 * in the caller's thread, so nothing that was queued when shutdown returns
 * is still pending; and by the collector when it terminates the pool.
 *
 * Records are read under the collect lock (the collector and helpers
 * remove them only under it), taken here unless `have_lock` (the collector
 * thread, or one of its callbacks). Without it, the lock is held for at
 * most CANCEL_BATCH slots at a time and released before the futures are
 * cancelled, so their callbacks never run under it. Each fill lock is
 * taken once before head is read: a submitter that passed the flag check
 * before shutdown set the flag has finished placing by then, and any later
 * one sees the flag (it re-checks under that lock). */
#define CANCEL_BATCH 32

/* Cancel what no worker has begun in the slots of channel i that were
 * filled when we took its lock (below `h`). */
static void cancel_chan(struct cf__ppool *p, int i, uint64_t h, bool have_lock)
{
    struct cf__pchan *ch = &p->ch[i];
    uint64_t pos = 0;
    bool more = true;
    while (more) {
        cf_future *batch[CANCEL_BATCH];
        size_t k = 0;
        if (!have_lock) cf__pp_coll_lock(p);
        uint64_t col = atomic_load_explicit(&ch->collected, memory_order_relaxed);
        if (pos < col) pos = col; /* collected meanwhile: not ours to look at */
        for (; pos < h && k < CANCEL_BATCH && !ch->dead; pos++) {
            struct cf__prec *r = &ch->rec[pos & (p->depth - 1)];
            if (!r->f) continue; /* an EXIT marker */
            struct cf__pslot *s = cf__pp_slot(p, i, pos);
            if (cf__pp_cancel_slot(s, pos)) {
                batch[k++] = cf_future_retain(r->f);
                continue;
            }
            /* acquire: pairs with the worker's CAS to STARTED */
            cf__pp_note_started(r, atomic_load_explicit(&s->state, memory_order_acquire), pos);
        }
        more = pos < h && !ch->dead;
        if (!have_lock) cf__pp_coll_unlock(p);
        /* The slot is ours (CANCELLED): the worker will only skip it, and
         * the collector cancels the future too if it gets there first;
         * either way it ends cancelled. */
        for (size_t j = 0; j < k; j++) {
            cf__future_cancel_quiet(batch[j]);
            cf_future_release(batch[j]);
        }
    }
}

void cf__pp_cancel_unstarted(struct cf__ppool *p, bool have_lock)
{
    for (cf_future *f = cf__pp_ov_take(p), *next; f; f = next) {
        next = f->next_queued;
        cf_future_cancel(f); /* never in a ring: the future's own CAS decides */
        cf_future_release(f);
    }
    for (int i = 0; i < p->n; i++) {
        struct cf__pchan *ch = &p->ch[i];
        cf__pp_fill_lock(ch);
        uint64_t h = atomic_load_explicit(&ch->head, memory_order_relaxed); /* under its lock */
        bool dead = ch->dead;
        cf__pp_fill_unlock(ch);
        if (!dead) cancel_chan(p, i, h, have_lock);
    }
}

/* Shutdown: once the overflow list is empty, put an EXIT marker at the end
 * of every ring. Returns true if it placed any. */
static bool place_exits(struct coll *c)
{
    struct cf__ppool *p = c->p;
    if (!cf__pp_ov_empty(p)) return false;
    bool any = false, all = true;
    for (int i = 0; i < p->n; i++) {
        struct cf__pchan *ch = &p->ch[i];
        struct cf__pp_spot at;
        if (ch->exit_placed || ch->dead) continue;
        cf__pp_fill_lock(ch);
        if (cf__pp_reserve(p, i, 0, &at)) {
            cf__pp_place(p, i, &at, NULL, NULL, NULL, 0, false);
            ch->exit_placed = any = true;
        } else {
            all = false;
        }
        cf__pp_fill_unlock(ch);
    }
    c->exits_done = all;
    return any;
}

/* ---- the zygote's reports ---- */

static void respawn(struct coll *c, int chan)
{
    struct cf__ppool *p = c->p;
    struct cf__pchan *ch = &p->ch[chan];
    struct cf__zreq q = {.op = CF__ZQ_SPAWN,
                         .chan = chan,
                         .pos = atomic_load_explicit(&ch->collected, memory_order_relaxed),
                         .res_pos = ch->res_tail};
    ch->inc_done = 0;
    ch->spawning = true;
    if (cf__pp_zreq(p, &q)) {
        ch->spawning = false;
        break_pool(c, "the worker launcher (zygote) is gone");
    }
}

static void on_death(struct coll *c, int chan, int pid, int st)
{
    struct cf__ppool *p = c->p;
    struct cf__pchan *ch = &p->ch[chan];
    char desc[256];
    describe(desc, sizeof desc, pid, st);
    ch->alive = false;
    ch->pid = pid;
    collect_chan(c, chan); /* what it finished before it died */
    cf_future *held = NULL;
    if (!ch->dead) {
        uint64_t pos = atomic_load_explicit(&ch->collected, memory_order_relaxed);
        if (pos < atomic_load_explicit(&ch->head, memory_order_relaxed)) {
            /* acquire: pairs with the worker's acq_rel CAS to STARTED (as
             * in cf__pp_sync_running). */
            uint32_t v = atomic_load_explicit(&cf__pp_slot(p, chan, pos)->state,
                                              memory_order_acquire);
            if (cf__sk_kind(v) == CF__SK_STARTED && cf__sk_gen(v) == cf__pos_gen(pos))
                held = ch->rec[pos & (p->depth - 1)].f;
        }
    }
    /* acquire: pairs with the seq_cst fetch_or (process_pool.c) that set a
     * flag after the fields it announces (terminate signal, shutdown mode)
     * were stored. */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_acquire);
    if (fl & CF__PP_TERMINATE) {
        if (held) cf__future_fail_broken(held, "%s: the pool was terminated", desc);
        return;
    }
    if (fl & CF__PP_BROKEN) return;
    bool clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == CF__WEXIT_OK && !held;
    if (clean && ch->exit_consumed) return; /* shutdown */
    if (clean && p->max_tasks > 0 && ch->inc_done >= (uint64_t)p->max_tasks) {
        respawn(c, chan); /* retirement (max_tasks_per_child) */
        return;
    }
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == CF__WEXIT_INIT && ch->inc_done == 0 &&
        !held)
        snprintf(desc, sizeof desc, "the initializer failed in worker %d", pid);
    else if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == CF__WEXIT_CORRUPT)
        snprintf(desc, sizeof desc, "worker %d found its ring corrupted and exited (status %d)",
                 pid, CF__WEXIT_CORRUPT);
    if (held) cf__future_fail_broken(held, "%s", desc);
    break_pool(c, desc);
}

static bool read_reports(struct coll *c)
{
    struct cf__ppool *p = c->p;
    bool any = false;
    while (!c->rep_eof) {
        struct cf__zrep m;
        ssize_t r = recv(p->rep_rd, &m, sizeof m, MSG_DONTWAIT); /* one message each */
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
            c->rep_eof = true;
            break;
        }
        if (r != (ssize_t)sizeof m || m.chan < 0 || m.chan >= p->n) continue;
        struct cf__pchan *ch = &p->ch[m.chan];
        any = true;
        if (m.op == CF__ZR_SPAWNED) {
            ch->pid = m.pid;
            ch->alive = true;
            ch->spawning = false;
        } else if (m.op == CF__ZR_SPAWN_FAILED) {
            char desc[200];
            ch->spawning = false;
            if (m.status == EAGAIN)
                snprintf(
                    desc, sizeof desc,
                    "could not start a worker: fork refused: resource limit (EAGAIN: RLIMIT_NPROC "
                    "or the system's task limit)");
            else snprintf(desc, sizeof desc, "could not start a worker: %s", strerror(m.status));
            break_pool(c, desc);
        } else if (m.op == CF__ZR_DIED) {
            on_death(c, m.chan, m.pid, m.status);
        }
    }
    return any;
}

/* Wait up to timeout_ms for the eventfd, the zygote's reports or its
 * death, then handle what came (under the collect lock: taken here unless
 * the caller holds it). */
static bool poll_events(struct coll *c, int64_t timeout_ns, bool have_lock)
{
    struct cf__ppool *p = c->p;
    struct pollfd pf[3] = {
        {.fd = p->efd, .events = POLLIN},
        {.fd = c->rep_eof ? -1 : p->rep_rd, .events = POLLIN},
        {.fd = c->zygote_gone ? -1 : p->zpidfd, .events = POLLIN},
    };
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    int r = ppoll(pf, 3, timeout_ns < 0 ? NULL : &ts, NULL);
    if (r <= 0) return false;
    if (pf[0].revents) {
        uint64_t v;
        ssize_t n = read(p->efd, &v, sizeof v);
        (void)n;
    }
    if (!pf[1].revents && !pf[2].revents) return false;
    if (!have_lock) cf__pp_coll_lock(p);
    bool any = false;
    if (pf[1].revents) any |= read_reports(c);
    if (pf[2].revents) {
        (void)read_reports(c); /* what it said before it went */
        c->zygote_gone = true;
        any = true;
    }
    if (!have_lock) cf__pp_coll_unlock(p);
    return any;
}

/* ---- the loop ---- */

static bool handle_flags(struct coll *c)
{
    struct cf__ppool *p = c->p;
    /* acquire: pairs with the seq_cst fetch_or (process_pool.c) that set a
     * flag after the fields it announces (terminate signal, shutdown mode)
     * were stored. */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_acquire);
    bool progress = false;
    if ((fl & CF__PP_TERMINATE) && !c->term_done) {
        c->term_done = true;
        cf__pp_cancel_unstarted(p, true); /* we hold the collect lock */
        int sig = atomic_load_explicit(&p->term_signo, memory_order_relaxed);
        struct cf__zreq q = {.op = CF__ZQ_KILL, .signo = sig};
        if (!c->zygote_gone) cf__pp_zreq(p, &q);
        c->kill_deadline = sig == SIGKILL ? INT64_MAX : cf__now_ns() + 2000000000;
        progress = true;
    }
    if ((fl & CF__PP_SHUTDOWN) && !(fl & (CF__PP_BROKEN | CF__PP_TERMINATE)) && !c->exits_done)
        progress |= place_exits(c);
    if (c->term_done && c->kill_deadline != INT64_MAX && cf__now_ns() >= c->kill_deadline) {
        struct cf__zreq q = {.op = CF__ZQ_KILL, .signo = SIGKILL}; /* it ignored the signal */
        if (!c->zygote_gone) cf__pp_zreq(p, &q);
        c->kill_deadline = INT64_MAX;
    }
    return progress;
}

static bool workers_gone(const struct cf__ppool *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->ch[i].alive || p->ch[i].spawning) return false;
    return true;
}

static bool finished(struct coll *c)
{
    struct cf__ppool *p = c->p;
    /* acquire: pairs with the seq_cst fetch_or (process_pool.c) that set a
     * flag after the fields it announces (terminate signal, shutdown mode)
     * were stored. */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_acquire);
    if (c->zygote_gone || c->rep_eof) {
        c->zygote_gone = true;
        read_reports(c); /* what it said before it went */
        if (!(fl & (CF__PP_BROKEN | CF__PP_TERMINATE))) {
            int st = -1;
            if (waitpid(p->zpid, &st, WNOHANG) <= 0) st = -1;
            char d1[200], desc[260];
            describe(d1, sizeof d1, p->zpid, st);
            snprintf(desc, sizeof desc, "the worker launcher (zygote) died: %s", d1 + 7);
            break_pool(c, desc);
        }
        for (int i = 0; i < p->n; i++) p->ch[i].alive = p->ch[i].spawning = false; /* PDEATHSIG */
        return true;
    }
    if ((fl & (CF__PP_BROKEN | CF__PP_TERMINATE)) && workers_gone(p)) return true;
    if ((fl & CF__PP_SHUTDOWN) && c->exits_done && workers_gone(p)) {
        for (int i = 0; i < p->n; i++)
            if (!p->ch[i].exit_consumed && !p->ch[i].dead) return false;
        return true;
    }
    return false;
}

static bool in_flight(const struct cf__ppool *p)
{
    if (atomic_load_explicit(&p->ov_count, memory_order_relaxed)) return true;
    for (int i = 0; i < p->n; i++)
        if (atomic_load_explicit(&p->ch[i].collected, memory_order_relaxed) !=
            atomic_load_explicit(&p->ch[i].head, memory_order_relaxed))
            return true;
    return false;
}

/* Whether to leave the rings to helpers for this step (collect lock
 * held): yes when they harvested since our last step (a submitter that
 * harvests as it goes, a thread in result()) and none of them left a slot
 * for us (coll_attn). Two collectors taking turns on the same slots would
 * only pull the records, futures and result bytes between two CPUs, and
 * take a CPU from the workers. A result is not left behind: helpers start
 * each harvest at the next channel, and once a whole interval between our
 * steps passes without a harvest (a nap, at most NAP_SUBMIT_NS or
 * NAP_HELPED_NS), we collect again. */
static bool defer_to_helpers(struct coll *c, bool may_defer)
{
    struct cf__ppool *p = c->p;
    /* relaxed, both: written under the collect lock, which we hold. */
    uint32_t h = atomic_load_explicit(&p->harvests, memory_order_relaxed);
    bool attn = atomic_load_explicit(&p->coll_attn, memory_order_relaxed);
    if (attn) atomic_store_explicit(&p->coll_attn, 0, memory_order_relaxed);
    bool defer = may_defer && h != c->last_harvest && !attn;
    c->last_harvest = h;
#ifdef CF_TEST_HOOKS
    if (defer && cf__proc_test_coll_defer) cf__proc_test_coll_defer();
#endif
    return defer;
}

/* One round of the collector's work (collect lock held). may_defer: the
 * rings may be left to helpers (defer_to_helpers); never in the last look
 * before a sleep that only a waker ends. */
static bool step(struct coll *c, bool events, bool may_defer)
{
    struct cf__ppool *p = c->p;
    bool progress = false;
    if (!defer_to_helpers(c, may_defer))
        for (int i = 0; i < p->n; i++) progress |= collect_chan(c, i);
    if (atomic_load_explicit(&p->ov_count, memory_order_relaxed)) progress |= cf__pp_feed(p);
    if (events) progress |= poll_events(c, 0, true);
    progress |= handle_flags(c);
    return progress;
}

/* Why the collector naps, and for how long at most. */
enum nap_kind {
    NAP_IDLE,   /* nothing going on: ring the doorbell, sleep until woken */
    NAP_HELPED, /* a thread in result() collects; it wakes us when it leaves */
    NAP_SUBMIT, /* a submitter is active; it collects when its rings fill */
};
#define NAP_HELPED_NS 1000000 /* 1 ms */
#define NAP_SUBMIT_NS 200000  /* 200 us: the longest a result waits once submitters stop */
#define NAP_FLIGHT_NS 100000000

/* Announce the sleep, look once more, then sleep in poll() until a waker,
 * a report or the timeout. True when the collector is finished.
 *
 * In NAP_HELPED and NAP_SUBMIT the doorbell stays off (workers do not
 * write the eventfd for every result): someone else collects, and the
 * timeout bounds how long a result waits if nobody does. That timeout is
 * the hand-off from a submitter back to us: a submitter never says it has
 * stopped, so after each nap run() looks again, and once nobody has
 * submitted for a whole nap it spins and sleeps with the doorbell on, as
 * when idle. */
static bool nap(struct coll *c, enum nap_kind kind)
{
    struct cf__ppool *p = c->p;
    /* seq_cst stores, then the re-scan in step(): Dekker with the wakers
     * (cf__pp_wake_collector, the workers' doorbell), which change
     * something, then read these words. */
    /* 1: a nap bounded by its timeout; 2: a sleep only a waker ends. */
    atomic_store_explicit(&p->coll_sleep, kind == NAP_IDLE ? 2 : 1, memory_order_seq_cst);
    if (kind == NAP_IDLE) atomic_store_explicit(&p->hdr->coll_sleeping, 1, memory_order_seq_cst);
    CF__FENCE_SEQ_CST(); /* the stores above, before every load of the re-scan */
    cf__pp_coll_lock(p);
    bool progress = step(c, true, kind != NAP_IDLE);
    bool fin = finished(c);
    cf__pp_coll_unlock(p);
    if (!progress && !fin) {
#ifdef CF_TEST_HOOKS
        if (kind == NAP_SUBMIT && cf__proc_test_coll_nap) cf__proc_test_coll_nap();
#endif
        int64_t t = kind == NAP_HELPED                              ? NAP_HELPED_NS
                    : kind == NAP_SUBMIT                            ? NAP_SUBMIT_NS
                    : in_flight(p) || c->kill_deadline != INT64_MAX ? NAP_FLIGHT_NS
                                                                    : -1;
        poll_events(c, t, false);
    }
    atomic_store_explicit(&p->coll_sleep, 0, memory_order_relaxed);
    atomic_store_explicit(&p->hdr->coll_sleeping, 0, memory_order_relaxed);
    return fin;
}

/* Someone else collects now: a thread in result() (NAP_HELPED), or a
 * submitter or helpers that came and went since we last looked (p->rr,
 * which only submitters bump, or p->helpers' entries moved: NAP_SUBMIT). */
static enum nap_kind who_collects(struct coll *c)
{
    /* relaxed: hints; a helper that goes to sleep wakes us (coll_sleep),
     * and one that stops otherwise, or a submitter that stops, is noticed
     * after one nap (see nap()). */
    uint64_t h = atomic_load_explicit(&c->p->helpers, memory_order_relaxed);
    uint64_t rr = atomic_load_explicit(&c->p->rr, memory_order_relaxed);
    uint32_t hv = atomic_load_explicit(&c->p->harvests, memory_order_relaxed);
    bool came = (uint32_t)(h >> 32) != c->last_helped || rr != c->last_rr || hv != c->seen_harvest;
    c->last_helped = (uint32_t)(h >> 32);
    c->last_rr = rr;
    c->seen_harvest = hv;
    if ((uint32_t)h) return NAP_HELPED;
    /* A submitter seen within the last nap's length still counts: our
     * steps take a microsecond, and a submitter descheduled for that long
     * (4 runnable parties on 2 CPUs) must not make us spin and collect
     * in its place. Whatever it leaves is collected at our next step,
     * after at most one nap, as before. */
    int64_t now = came || c->active_at ? cf__now_ns() : 0;
    if (came) c->active_at = now;
    else if (c->active_at && now - c->active_at >= NAP_SUBMIT_NS) c->active_at = 0;
    return c->active_at ? NAP_SUBMIT : NAP_IDLE;
}

/* The loop: collect, feed, handle reports and flags. While someone else
 * collects (a thread in result(), a submitter) nap between steps, so that
 * on a small machine the submitter and the workers have the cores; else,
 * when idle, spin spin_ns, then nap with the doorbell on. */
static void run(struct coll *c)
{
    struct cf__ppool *p = c->p;
    int64_t idle_since = 0;
    unsigned iter = 0, spins = 0;
    for (;;) {
        cf__pp_coll_lock(p);
        bool progress = step(c, (++iter & 255) == 0, true);
        bool fin = finished(c);
        cf__pp_coll_unlock(p);
        if (fin) return;
        enum nap_kind kind = who_collects(c);
        if (kind == NAP_IDLE && progress) {
            idle_since = 0;
            continue;
        }
        if (kind == NAP_IDLE && p->spin_ns > 0) {
            /* The clock is read every 16 rounds, not every round. */
            int64_t now = !idle_since || (++spins & 15) == 0 ? cf__now_ns() : idle_since;
            if (!idle_since) idle_since = now;
            if (now - idle_since < p->spin_ns) {
                cf__cpu_relax();
                continue;
            }
        }
        idle_since = 0;
        if (nap(c, kind)) return;
    }
}

/* Leave: the zygote goes (it kills and reaps what is left), then whatever
 * is still in flight fails (nothing, after a clean shutdown). */
static void leave(struct coll *c)
{
    struct cf__ppool *p = c->p;
    if (!c->zygote_gone) {
        struct cf__zreq q = {.op = CF__ZQ_EXIT};
        cf__pp_zreq(p, &q);
    }
    while (waitpid(p->zpid, NULL, 0) < 0 && errno == EINTR) {
    }
    /* acquire: pairs with the seq_cst fetch_or (process_pool.c) that set a
     * flag after the fields it announces (terminate signal, shutdown mode)
     * were stored. */
    uint32_t fl = atomic_load_explicit(&p->flags, memory_order_acquire);
    cf__pp_coll_lock(p);
    fail_everything(c, fl & CF__PP_BROKEN ? p->broken_msg ? p->broken_msg : "process pool broken"
                       : fl & CF__PP_TERMINATE ? "process pool terminated"
                                               : "process pool shut down");
    cf__pp_coll_unlock(p);
    if (p->stats)
        for (int i = 0; i < p->n; i++)
            fprintf(stderr, "cfutures: process worker %d (last pid %d): tasks %llu\n", i,
                    (int)p->ch[i].pid,
                    (unsigned long long)atomic_load_explicit(&p->ch[i].tasks_run,
                                                             memory_order_relaxed));
    /* A helper may still be completing futures it collected: shutdown(wait)
     * returns only once every future is done. acquire: pairs with the
     * helper's release decrement. */
    while (atomic_load_explicit(&p->batches, memory_order_acquire)) sched_yield();
    /* release: everything above is visible to shutdown(wait)/terminate */
    atomic_store_explicit(&p->coll_done, 1, memory_order_release);
    cf__futex_wake(&p->coll_done, INT32_MAX, false);
}

void *cf__pp_collector_main(void *arg)
{
    struct cf__ppool *p = arg;
    struct coll c = {.p = p, .kill_deadline = INT64_MAX};
    cf__pp_tls_collector = p;
    pthread_setname_np(pthread_self(), "cf-proc-coll");
    if (p->early_death.op == CF__ZR_DIED) { /* read by the constructor */
        cf__pp_coll_lock(p);
        on_death(&c, p->early_death.chan, p->early_death.pid, p->early_death.status);
        cf__pp_coll_unlock(p);
    }
    run(&c);
    leave(&c);
    cf__pp_tls_collector = NULL;
    cf__pp_unref(p);
    return NULL;
}

/* ---- asked of the collector by other threads ---- */

static void wake_if(struct cf__ppool *p, uint32_t min)
{
    /* seq_cst fence, then the load: pairs with the collector's store of
     * coll_sleep and fence before its re-scan (Dekker, in nap()): either
     * it sees the change our caller made (flags, the overflow list, a
     * helper leaving), or we see it asleep and wake it. */
    CF__FENCE_SEQ_CST();
    uint32_t v = atomic_load_explicit(&p->coll_sleep, memory_order_seq_cst);
    if (v >= min && atomic_exchange_explicit(&p->coll_sleep, 0, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof one);
        (void)w; /* EAGAIN: the counter is already non-zero, it is awake */
    }
}

void cf__pp_wake_collector(struct cf__ppool *p)
{
    wake_if(p, 1);
}

void cf__pp_nudge_collector(struct cf__ppool *p)
{
    wake_if(p, 2);
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
