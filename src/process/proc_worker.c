/* A process-pool worker: forked by the zygote, runs tasks from its channel
 * in order until it reaches an EXIT slot, its max_tasks_per_child, or dies.
 *
 * Single-threaded; its only peers are the parent (through the slot state
 * words, the result spill control words and the doorbell) and, for what a
 * task might scribble, nobody: everything it reads that it did not write
 * is checked enough not to loop forever. A state it cannot explain (a
 * generation or kind that no correct parent writes), an argument length or
 * spill position out of range: it exits with CF__WEXIT_CORRUPT and the
 * parent breaks the pool. It never touches the parent's private memory
 * (the pool struct here is its own fork snapshot, read-only in practice).
 *
 * Per slot: wait (spin cfg.spin_ns, then set WAITER and futex-wait on the
 * state word, shared futex); CAS QUEUED->STARTED (this is "started",
 * SEMANTICS 31b; a cancel that CASed QUEUED->CANCELLED first wins); run;
 * write the result inline or into the result spill ring; CAS
 * STARTED->DONE; ring the doorbell if the collector sleeps. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "sync/fence.h"
#include "sync/futex.h"
#include "process/proc_worker.h"

static void *test_shm;
static size_t test_shm_len;
static int cur_chan = -1;
static struct cf__ppool *test_pool; /* this worker's snapshot of its pool */
static uint64_t cur_pos;
#ifdef CF_TEST_HOOKS
void (*cf__proc_test_after_result)(void *slot);

void cf__proc_test_current(int *chan, uint64_t *pos)
{
    *chan = cur_chan;
    *pos = cur_pos;
}

void *cf__proc_test_current_slot(void)
{
    return cur_chan < 0 ? NULL : cf__pp_slot(test_pool, cur_chan, cur_pos);
}

void *cf__proc_test_shm(size_t *len)
{
    if (len) *len = test_shm_len;
    return test_shm;
}
#endif

/* A task that calls exit() would run, in this worker, every atexit (and
 * on_exit, C++ static destructor) handler the parent registered before the
 * pool was made: the worker is its fork. Handlers run last registered
 * first, so this one, registered in the worker after all of them, runs
 * first: it flushes the worker's own stdio (the parent's buffers were
 * flushed before the first fork, so only the worker's output is there) and
 * leaves at once with the status the task gave exit(). The parent then
 * sees an ordinary worker death with that status and breaks the pool, as
 * for _exit(). The worker's own ways out use _exit and never come here. */
static void exit_from_task(int status, void *arg)
{
    (void)arg;
    fflush(NULL);
    _exit(status & 0xff);
}

static _Noreturn void corrupt(void)
{
    _exit(CF__WEXIT_CORRUPT);
}

static void doorbell(struct cf__ppool *p)
{
    /* seq_cst fence: pairs with the collector's seq_cst store of
     * coll_sleeping = 1 followed by its re-scan of the slots: either it
     * sees our DONE, or we see its 1 and wake it. */
    CF__FENCE_SEQ_CST();
    if (atomic_load_explicit(&p->hdr->coll_sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&p->hdr->coll_sleeping, 0, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof one);
        (void)w;
    }
}

/* Wait until the slot for `pos` holds something for us; return its state. */
static uint32_t wait_work(struct cf__ppool *p, struct cf__pslot *s, uint64_t pos)
{
    uint32_t g = cf__pos_gen(pos), gprev = cf__pos_gen(pos - p->depth);
    int64_t spin_until = 0;
    unsigned n = 0;
    for (;;) {
        /* acquire: pairs with the parent's release exchange that made it
         * QUEUED/EXIT (or the CAS to CANCELLED): its fields are visible. */
        uint32_t v = atomic_load_explicit(&s->state, memory_order_acquire);
        uint32_t k = cf__sk_kind(v), vg = cf__sk_gen(v);
        if (vg == g && (k == CF__SK_QUEUED || k == CF__SK_CANCELLED || k == CF__SK_EXIT)) return v;
        bool not_yet = k == CF__SK_FREE || (vg == g && k == CF__SK_HELD) ||
                       (vg == gprev && (k == CF__SK_DONE || k == CF__SK_SKIPPED));
        if (!not_yet) corrupt();
        if (p->spin_ns > 0) {
            if ((++n & 63) != 0) {
                cf__cpu_relax();
                continue;
            }
            int64_t now = cf__now_ns();
            if (!spin_until) spin_until = now + p->spin_ns;
            if (now < spin_until) {
                sched_yield(); /* a loaded machine: let whoever we wait for run */
                continue;
            }
        }
        if (!(v & CF__SK_WAITER)) {
            /* relaxed: only announces the sleep; the futex re-checks. */
            if (!atomic_compare_exchange_weak_explicit(&s->state, &v, v | CF__SK_WAITER,
                                                       memory_order_relaxed, memory_order_relaxed))
                continue;
            v |= CF__SK_WAITER;
        }
        cf__futex_wait(&s->state, v, CF__NO_DEADLINE, true);
        spin_until = 0;
    }
}

/* A position in this channel's result spill ring for `total` bytes,
 * waiting for the parent to free space if needed. */
static uint64_t res_alloc(struct cf__ppool *p, int chan, uint64_t head, uint64_t total)
{
    struct cf__pchan_ctl *c = &p->ctl[chan];
    uint64_t R = p->res_spill, pos;
    for (;;) {
        /* acquire: pairs with the collector's release store of res_tail
         * after it copied the bytes out: we may overwrite them. */
        uint64_t t = atomic_load_explicit(&c->res_tail, memory_order_acquire);
        if (t > head || head - t > R) corrupt();                   /* the tail never passes us */
        if (cf__pp_spill_fit(R, head, t, total, &pos)) return pos; /* proc_shm.h */
        /* acquire: pairs with the collector's seq_cst bump of res_seq
         * after its store of res_tail; read before the re-check below, so
         * a bump after that re-check makes the futex wait return. */
        uint32_t seq = atomic_load_explicit(&c->res_seq, memory_order_acquire);
        /* seq_cst store then seq_cst load: Dekker with the collector's
         * seq_cst store of res_tail then load of res_waiting. */
        atomic_store_explicit(&c->res_waiting, 1, memory_order_seq_cst);
        t = atomic_load_explicit(&c->res_tail, memory_order_seq_cst);
        if (!cf__pp_spill_fit(R, head, t, total, &pos))
            cf__futex_wait(&c->res_seq, seq, cf__now_ns() + 100000000, true);
        atomic_store_explicit(&c->res_waiting, 0, memory_order_relaxed);
    }
}

static void write_result(struct cf__ppool *p, int chan, struct cf__pslot *s, uint64_t pos, int rc,
                         const struct cf_out *o, uint64_t *res_head)
{
    char big[160];
    const char *msg = rc ? o->msg : NULL;
    size_t mlen = msg ? strnlen(msg, CF__PMSG_MAX) : 0;
    size_t rlen = rc ? 0 : o->len;
    const void *rdata = o->data;
    uint64_t total = (uint64_t)rlen + mlen, rpos = 0;
    uint32_t rf = 0;
    unsigned char *dst = cf__pp_inline(s);
    if (total > cf__pp_spill_room(p->res_spill)) {
        int n = snprintf(big, sizeof big,
                         "result of %zu bytes exceeds the process pool's limit of %llu bytes", rlen,
                         (unsigned long long)cf__pp_spill_room(p->res_spill));
        rc = CF_ETOOBIG;
        msg = big;
        mlen = n < 0 ? 0 : (size_t)n;
        if (mlen > p->slot_size) mlen = p->slot_size;
        rlen = 0;
    } else if (total > p->slot_size) {
        rpos = res_alloc(p, chan, *res_head, total);
        dst = p->ressp + (size_t)chan * p->res_spill + rpos % p->res_spill;
        rf = CF__PR_SPILL;
        *res_head = rpos + total;
    }
    if (rlen) memcpy(dst, rdata, rlen);
    if (mlen) memcpy(dst + rlen, msg, mlen);
    s->res_len = rlen;
    s->res_pos = rpos;
    s->code = rc;
    s->msg_len = (uint32_t)mlen;
    s->rflags = (uint16_t)rf;
    s->res_check = cf__pp_res_check(pos, rlen, rpos, rc, (uint32_t)mlen, rf,
                                    (const unsigned char *)rdata, (const unsigned char *)msg);
}

/* The result buffer of the last task whose result did not fit cf_out's
 * small area, kept for the next task: a stream of tasks that each return,
 * say, 64 bytes then allocates nothing in the worker (cf_out_alloc and
 * cf_out_set reuse a buffer that is large enough). A task that returns a
 * small result frees it (cf_out drops a heap buffer it no longer needs),
 * so small results cost nothing either. Only this single-threaded worker
 * touches it. */
#define KEEP_MAX (64u << 10)
static void *kept;
static size_t kept_cap;

static void out_start(struct cf_out *o)
{
    cf__out_init(o);
    if (!kept) return;
    o->data = kept; /* len 0: a task that sets nothing returns nothing */
    o->cap = kept_cap;
    kept = NULL;
}

/* After the result was written to the slot: keep a heap buffer that is
 * not too big, then dispose of the rest. */
static void out_finish(struct cf_out *o)
{
    if (o->data != o->small && o->cap <= KEEP_MAX) {
        kept = o->data;
        kept_cap = o->cap;
        o->data = o->small;
        o->cap = 0;
    }
    cf__out_dispose(o);
}

static void run_one(struct cf__ppool *p, int chan, struct cf__pslot *s, uint64_t pos,
                    uint64_t *res_head)
{
    uint64_t fnv = s->fn, len = s->arg_len, apos = s->arg_pos;
    uint32_t af = s->aflags;
    cf_task_fn *fn = (cf_task_fn *)(uintptr_t)fnv;
    const void *arg;
    if (af & CF__PA_SPILL) {
        uint64_t A = p->arg_spill, off = apos % A;
        if (len > A || off + len > A) corrupt();
        arg = p->argsp + (size_t)chan * A + off;
    } else {
        if (len > p->slot_size) corrupt();
        arg = cf__pp_inline(s);
    }
    if (!fn) corrupt();
    /* The task as the parent queued it (a stray write, by the task before
     * this one say, would run the wrong task or the wrong argument). */
    if (s->arg_check != cf__pp_arg_check(pos, fnv, len, apos, af, arg)) corrupt();
    struct cf_out o;
    out_start(&o);
    /* A cancel request for this task shows in the channel's word. */
    o.cancel_word = &p->ctl[chan].cancel_req;
    o.cancel_key = pos + 1;
    int rc = fn(arg, (size_t)len, &o);
    if (rc == 0 && o.failed) rc = o.failed; /* a result that could not be stored */
    write_result(p, chan, s, pos, rc, &o, res_head);
    out_finish(&o);
#ifdef CF_TEST_HOOKS
    if (cf__proc_test_after_result) cf__proc_test_after_result(s);
#endif
    uint32_t want = cf__sk_make(CF__SK_STARTED, pos);
    /* acq_rel: release publishes the result fields and bytes before DONE;
     * being an RMW it continues the release sequence the parent started,
     * so the collector's acquire load of DONE also sees the parent's own
     * writes for this slot. */
    if (!atomic_compare_exchange_strong_explicit(&s->state, &want, cf__sk_make(CF__SK_DONE, pos),
                                                 memory_order_acq_rel, memory_order_relaxed))
        corrupt();
    doorbell(p);
}

/* Become a worker: die with the zygote, drop its descriptors, put the
 * application's signal settings back, name the process. */
static void settle(struct cf__ppool *p, int chan, pid_t zygote, const struct cf__pp_sigs *app_sigs)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* The death signal covers a zygote that dies from now on; one that
     * died since our fork has already left us to another parent. */
    if (getppid() != zygote) _exit(0);
    close(p->req_rd);
    close(p->rep_wr);
    for (int i = 0; i < p->n; i++)
        if (p->ch[i].z_pidfd >= 0) close(p->ch[i].z_pidfd);
    sigaction(SIGCHLD, &app_sigs->chld, NULL);
    sigaction(SIGINT, &app_sigs->intr, NULL);
    sigprocmask(SIG_SETMASK, &app_sigs->mask, NULL);
    /* Fails only without memory for one more handler (glibc keeps the
     * first 32 in a static block); exit() from a task is then as before. */
    (void)on_exit(exit_from_task, NULL);
    char name[16];
    snprintf(name, sizeof name, "cf-proc-%d", chan);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    test_shm = p->map;
    test_pool = p;
    test_shm_len = p->map_len;
    cur_chan = chan;
}

/* Pass over a CANCELLED slot or an EXIT marker (state v, already read). */
static void skip(struct cf__ppool *p, struct cf__pslot *s, uint64_t pos, uint32_t v)
{
    /* acq_rel: an RMW in the release sequence (see run_one). Only we move
     * a slot out of CANCELLED or EXIT. */
    if (!atomic_compare_exchange_strong_explicit(&s->state, &v, cf__sk_make(CF__SK_SKIPPED, pos),
                                                 memory_order_acq_rel, memory_order_relaxed))
        corrupt();
    doorbell(p);
}

_Noreturn void cf__pp_worker_main(struct cf__ppool *p, int chan, uint64_t pos, uint64_t res_pos,
                                  pid_t zygote, const struct cf__pp_sigs *app_sigs)
{
    settle(p, chan, zygote, app_sigs);

    if (p->init && p->init(p->init_arg) != 0) _exit(CF__WEXIT_INIT);

    uint64_t res_head = res_pos;
    long tasks = 0;
    for (;;) {
        struct cf__pslot *s = cf__pp_slot(p, chan, pos);
        uint32_t v = wait_work(p, s, pos);
        cur_pos = pos;
        uint32_t k = cf__sk_kind(v);
        if (k == CF__SK_CANCELLED || k == CF__SK_EXIT) {
            skip(p, s, pos, v);
            if (k == CF__SK_EXIT) _exit(CF__WEXIT_OK);
            pos++;
            continue;
        }
        /* acq_rel: acquire the parent's slot fields; the RMW keeps the
         * release sequence going. Losing means a cancel won: look again. */
        if (!atomic_compare_exchange_strong_explicit(&s->state, &v,
                                                     cf__sk_make(CF__SK_STARTED, pos),
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue;
        /* A sleeping collector marks the future running soon. Only a hint
         * (no fence: a missed ring costs latency for running(), nothing
         * else; the DONE ring below is the one that must not be lost). */
        if (atomic_load_explicit(&p->hdr->coll_sleeping, memory_order_relaxed)) doorbell(p);
        run_one(p, chan, s, pos, &res_head);
        pos++;
        if (p->max_tasks > 0 && ++tasks >= p->max_tasks) _exit(CF__WEXIT_OK); /* retire */
    }
}
