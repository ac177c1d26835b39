/* The parent's side of the ring protocol, in one place: placing records
 * into a channel's slots (reserve, place, release a HELD slot), cancelling
 * a slot, the future hooks that look at a task's slot (on_cancel,
 * try_cancel, sync_running), and, for whoever holds the collect lock,
 * reading a slot back: judging its state (cf__pp_look, which also applies
 * the "slot began -> future running" rule), taking a result, freeing the
 * slot and the spill bytes behind it.
 *
 * Who calls what: producers (submitters, the overflow feeder, the
 * collector placing exit markers) hold the channel's fill lock around
 * reserve+place; readers (the collector thread, a helping thread,
 * shutdown's cancel sweep) hold the collect lock (proc_pool.h); the
 * cancel hooks run in any thread and touch only the shared state word,
 * with a CAS.
 *
 * Trust: everything read from a slot a worker wrote is validated before use
 * (SEMANTICS 33): a slot's state must carry the generation of the position
 * being read and a kind a correct worker could have written after what the
 * parent wrote or last saw there (a task seen begun may only be done next,
 * never skipped or sent back); result flags must be known; lengths must fit
 * the slot or the spill ring; a spill position must lie between what the
 * parent has freed and one ring further, with the record contiguous; the
 * worker's check over the result must match. Futures come from the
 * parent's own records (struct cf__prec), never from shared memory. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "sys/alloc.h"
#include "sync/fence.h"
#include "sync/futex.h"
#include "process/proc_ring_parent.h"

/* ---- producing ---- */

static bool arg_spill_fit(struct cf__ppool *p, struct cf__pchan *ch, size_t len, uint64_t *pos)
{
    /* acquire: the worker is done with the bytes below arg_tail (the
     * collector stored it with release after collecting their slot). */
    uint64_t t = atomic_load_explicit(&ch->arg_tail, memory_order_acquire);
    return cf__pp_spill_fit(p->arg_spill, ch->arg_head, t, len, pos); /* proc_shm.h */
}

bool cf__pp_reserve(struct cf__ppool *p, int chan, size_t len, struct cf__pp_spot *at)
{
    struct cf__pchan *ch = &p->ch[chan];
    uint64_t h = atomic_load_explicit(&ch->head, memory_order_relaxed); /* ours, under the lock */
    /* The collector's line is read only when our cached copy says full
     * (the usual SPSC trick: no cache miss per submit). acquire: pairs with
     * the release store of collected in cf__pp_free_slot, after the slots
     * and records below it were read. */
    if (h - ch->coll_cache >= p->depth)
        ch->coll_cache = atomic_load_explicit(&ch->collected, memory_order_acquire);
    if (h - ch->coll_cache >= p->depth) return false;
    at->pos = h;
    at->apos = 0;
    at->spill = len > p->slot_size;
    return !at->spill || arg_spill_fit(p, ch, len, &at->apos);
}

void cf__pp_place(struct cf__ppool *p, int chan, const struct cf__pp_spot *at, cf_future *f,
                  cf_task_fn *fn, const void *arg, size_t len, bool held)
{
    struct cf__pchan *ch = &p->ch[chan];
    uint64_t pos = at->pos;
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
    if (at->spill) {
        memcpy(p->argsp + (size_t)chan * p->arg_spill + at->apos % p->arg_spill, arg, len);
        s->aflags = CF__PA_SPILL;
        s->arg_pos = at->apos;
        ch->arg_head = at->apos + len;
        r->arg_pos = at->apos;
        r->arg_end = at->apos + len;
    } else if (len) {
        memcpy(cf__pp_inline(s), arg, len);
    }
    /* Over our own copy of the bytes: the worker checks what it finds. */
    s->arg_check = cf__pp_arg_check(pos, s->fn, len, s->arg_pos, s->aflags, arg);
    if (f) cf__future_slot_store(f, cf__pp_owner_encode(chan, pos), memory_order_relaxed);
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
}

/* A HELD slot becomes QUEUED, or CANCELLED if f was cancelled meanwhile
 * (SEMANTICS 31b for work that waited in the overflow list). */
void cf__pp_release_held(struct cf__ppool *p, int chan, cf_future *f)
{
    int c;
    uint64_t pos;
    cf__pp_owner_decode(cf__future_slot_load(f, memory_order_relaxed), &c, &pos);
    struct cf__pslot *s = cf__pp_slot(p, chan, pos);
    /* seq_cst fence: pairs with cf__pp_on_cancel's. The owner was published
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

/* ---- cancelling, and the future hooks ---- */

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

/* The slot of f's task, if it sits in a ring of a pool of this process. */
static struct cf__pslot *slot_of(cf_future *f, uint64_t *pos)
{
    struct cf__ppool *p = cf__pp_of_future(f);
    int chan;
    /* A fork child's snapshot must not touch the parent's rings. */
    if (cf__pp_foreign(p)) return NULL;
    if (!cf__pp_owner_decode(cf__future_slot_load(f, memory_order_relaxed), &chan, pos))
        return NULL; /* still in the overflow list */
    return cf__pp_slot(p, chan, *pos);
}

/* Called by cf_future_cancel() after its PENDING->CANCELLED CAS. */
void cf__pp_on_cancel(cf_future *f)
{
    if (cf__pp_foreign(cf__pp_of_future(f))) return;
    /* seq_cst fence: pairs with the one in cf__pp_release_held, between
     * publishing owner (and the HELD slot) and re-reading the future's
     * state: either we see the owner and the HELD or QUEUED slot, or the
     * feeder sees CANCELLED and publishes the slot as CANCELLED itself. */
    CF__FENCE_SEQ_CST();
    uint64_t pos;
    struct cf__pslot *s = slot_of(f, &pos);
    if (s) cf__pp_cancel_slot(s, pos); /* not in a ring: the feeder drops it */
}

/* try_cancel (31b), called before the future's own PENDING->CANCELLED CAS:
 * cancel the ring slot first, so a task a worker has STARTED is never
 * reported cancelled. True when the slot is (now) cancelled or the task is
 * still in the overflow list (the feeder re-checks the future's state, and
 * on_cancel runs after the CAS to catch a slot published meanwhile), or in
 * a fork child's snapshot (future-level only); false when a worker has
 * begun it or finished it. */
bool cf__pp_try_cancel(cf_future *f)
{
    if (cf__pp_foreign(cf__pp_of_future(f))) return true;
    /* seq_cst fence: as in cf__pp_on_cancel, pairs with cf__pp_release_held. */
    CF__FENCE_SEQ_CST();
    uint64_t pos;
    struct cf__pslot *s = slot_of(f, &pos);
    if (!s || cf__pp_cancel_slot(s, pos)) return true;
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
    uint64_t pos;
    struct cf__pslot *s = slot_of(f, &pos);
    if (!s) return; /* in the overflow list: not begun */
    /* acquire: pairs with the worker's acq_rel CAS to STARTED (a caller
     * that learnt through shared memory that the task began sees it). A
     * slot reused for a later position fails the generation check. */
    uint32_t v = atomic_load_explicit(&s->state, memory_order_acquire);
    uint32_t k = cf__sk_kind(v);
    if ((k == CF__SK_STARTED || k == CF__SK_DONE) && cf__sk_gen(v) == cf__pos_gen(pos))
        cf__future_mark_running(f);
}

void cf__pp_request_cancel(cf_future *f)
{
    struct cf__ppool *p = cf__pp_of_future(f);
    int chan;
    uint64_t pos;
    if (cf__pp_foreign(p)) return;
    if (!cf__pp_owner_decode(cf__future_slot_load(f, memory_order_relaxed), &chan, &pos)) return;
    _Atomic uint64_t *w = &p->ctl[chan].cancel_req;
    /* Relaxed: the CAS decides. Raise only: a slower request for an older
     * task must not overwrite a newer one. */
    uint64_t cur = atomic_load_explicit(w, memory_order_relaxed);
    /* release: pairs with the task's acquire load (cf_out_cancel_requested),
     * so what the canceller wrote before cancel() is visible to it. */
    while (cur < pos + 1 && !atomic_compare_exchange_weak_explicit(
                                w, &cur, pos + 1, memory_order_release, memory_order_relaxed))
        ;
}

/* ---- reading slots back ---- */

void cf__pp_note_started(struct cf__prec *r, uint32_t state, uint64_t pos)
{
    if (cf__sk_kind(state) != CF__SK_STARTED || cf__sk_gen(state) != cf__pos_gen(pos) || r->marked)
        return;
    r->marked = true;                        /* a worker has begun it: running, never cancelled */
    if (r->f) cf__future_mark_running(r->f); /* a state CAS only: no callbacks */
}

/* The parent knows which states may follow what it wrote or last saw in a
 * slot of the right generation. An exit marker (EXIT) may only become
 * SKIPPED; a task slot never holds EXIT, and once the parent has seen its
 * task STARTED (r->marked) only STARTED or DONE may follow: a slot that
 * goes back to QUEUED, HELD or CANCELLED, or is SKIPPED, would leave a
 * RUNNING future that never completes. Returns what is wrong, or NULL.
 * (A SKIPPED task slot the parent has not seen begin is judged by the
 * future's state, by the collector.) */
static const char *illegal_successor(const struct cf__prec *r, uint32_t k)
{
    if (r->is_exit)
        return k == CF__SK_EXIT || k == CF__SK_SKIPPED ? NULL
               : k == CF__SK_DONE                      ? "a result for an exit marker"
                                                       : "slot state (an exit marker's)";
    if (k == CF__SK_EXIT) return "slot state (exit on a task)";
    if (r->marked && k != CF__SK_STARTED && k != CF__SK_DONE)
        return "slot state (went back after its task began)";
    return NULL;
}

enum cf__pp_seen cf__pp_look(struct cf__ppool *p, int chan, uint64_t pos, uint32_t *state,
                             const char **what)
{
    struct cf__prec *r = &p->ch[chan].rec[pos & (p->depth - 1)];
    /* acquire: pairs with the worker's release CAS to DONE/SKIPPED (and,
     * through the release sequence, with our producer's exchange). */
    uint32_t v = atomic_load_explicit(&cf__pp_slot(p, chan, pos)->state, memory_order_acquire);
    uint32_t k = cf__sk_kind(v);
    *state = v;
    *what = cf__sk_gen(v) != cf__pos_gen(pos) || k == CF__SK_FREE ? "slot state"
                                                                  : illegal_successor(r, k);
    if (*what) return CF__PP_CORRUPT;
    if (k == CF__SK_DONE) return CF__PP_DONE;
    if (k == CF__SK_SKIPPED) return CF__PP_SKIPPED;
    cf__pp_note_started(r, v, pos);
    return CF__PP_NOT_YET;
}

/* A spill ring's consumer has freed it up to `tail`: give back the pages
 * behind it once a guard's worth has piled up (*punched: where the last
 * punch ended). Call before publishing `tail`. Resident memory per ring
 * stays within the bound stated in proc_shm.h. */
static void punch(unsigned char *ring, uint64_t size, uint64_t *punched, uint64_t tail)
{
    /* The producer writes below (published tail) + size - guard, so on its
     * next lap it cannot reach the pages of [*punched, tail) as long as the
     * published tail stays within a guard of *punched: punch once that
     * would no longer hold, before the new tail is published. */
    if (tail - *punched <= cf__pp_spill_guard(size)) return;
    uint64_t from = *punched, to = tail & ~(uint64_t)4095;
    if (to - from > size) from = to - size; /* more than a lap behind: the whole ring */
    uint64_t w = cf__pp_spill_window(size); /* kept: the producer reuses it */
    while (from < to) {
        uint64_t off = from % size, n = to - from;
        if (n > size - off) n = size - off;
        /* MADV_REMOVE frees shared memory pages (MADV_DONTNEED would only
         * unmap them from this process); they come back zeroed on touch. */
        if (off + n > w) {
            uint64_t a = off > w ? off : w;
            madvise(ring + a, off + n - a, MADV_REMOVE);
        }
        from += n;
    }
    *punched = to;
}

/* A worker's result header, each field read once (relaxed: ordered after
 * the acquire load of DONE by that load); checks use these copies only. */
struct res_hdr {
    int32_t rc;
    uint32_t mlen, rf;
    uint64_t rlen, rpos;
};

static int refuse(struct cf__pbad *bad, const char *what, uint64_t val)
{
    *bad = (struct cf__pbad){what, val};
    return -1;
}

/* Read and validate the header; *src gets where the bytes are. */
static int read_res_hdr(struct cf__ppool *p, int chan, struct cf__pslot *s, struct res_hdr *h,
                        const unsigned char **src, struct cf__pbad *bad)
{
    h->rc = __atomic_load_n(&s->code, __ATOMIC_RELAXED);
    h->rlen = __atomic_load_n(&s->res_len, __ATOMIC_RELAXED);
    h->rpos = __atomic_load_n(&s->res_pos, __ATOMIC_RELAXED);
    h->mlen = __atomic_load_n(&s->msg_len, __ATOMIC_RELAXED);
    h->rf = __atomic_load_n(&s->rflags, __ATOMIC_RELAXED);
    if (h->rf & ~CF__PR_KNOWN) return refuse(bad, "result flags", h->rf);
    if (h->rc == 0 && h->mlen) return refuse(bad, "message length on success", h->mlen);
    if (h->rc != 0 && h->rlen) return refuse(bad, "result length on failure", h->rlen);
    if (h->mlen > CF__PMSG_MAX) return refuse(bad, "message length", h->mlen);
    if (h->rlen > UINT32_MAX) return refuse(bad, "result length", h->rlen);
    uint64_t total = h->rlen + h->mlen, R = p->res_spill, t = p->ch[chan].res_tail, rpos = h->rpos;
    if (!(h->rf & CF__PR_SPILL)) {
        if (total > p->slot_size) return refuse(bad, "inline result length", total);
        *src = cf__pp_inline(s);
        return 0;
    }
    if (total == 0 || total > R || rpos < t || rpos - t > R || rpos % R + total > R ||
        rpos + total - t > cf__pp_spill_room(R))
        return refuse(bad, "result spill position", rpos);
    *src = p->ressp + (size_t)chan * R + rpos % R;
    return 0;
}

/* The bytes copied out of shared memory (the worker's next task may be
 * writing over them while we read, so checks look at copies only). */
struct res_copy {
    unsigned char small[CF__INLINE_RES]; /* a short result */
    unsigned char *data;                 /* a long result (allocated) */
    char *msg;                           /* a failure's message (allocated, NUL-terminated) */
    const unsigned char *res, *m;        /* what to check: the copies, or the shared bytes */
    bool nomem;                          /* no memory for a copy: checked in place */
};

static void copy_out(const struct res_hdr *h, const unsigned char *src, struct res_copy *c)
{
    c->data = NULL;
    c->msg = NULL;
    c->res = src;
    c->m = src + h->rlen;
    c->nomem = false;
    if (h->rc == 0 && h->rlen <= CF__INLINE_RES) {
        memcpy(c->small, src, h->rlen);
        c->res = c->small;
    } else if (h->rc == 0) {
        c->data = cf__alloc(h->rlen);
        if (c->data) memcpy(c->data, src, h->rlen);
        c->res = c->data ? c->data : src;
        c->nomem = !c->data;
    } else if (h->mlen) {
        c->msg = cf__alloc((size_t)h->mlen + 1);
        if (c->msg) {
            memcpy(c->msg, src + h->rlen, h->mlen);
            c->msg[h->mlen] = 0;
            c->m = (const unsigned char *)c->msg;
        }
        c->nomem = !c->msg;
    }
}

/* Hand the copies to o (a failure without memory keeps its code, without
 * its message). */
static void fill_out(const struct res_hdr *h, struct res_copy *c, struct cf_out *o, int *code)
{
    cf__out_init(o);
    *code = h->rc;
    if (c->nomem) {
        *code = o->code = h->rc ? h->rc : CF_ENOMEM;
    } else if (h->rc == 0 && h->rlen <= CF__INLINE_RES) {
        memcpy(o->small, c->small, h->rlen);
        o->len = h->rlen;
    } else if (h->rc == 0) {
        o->data = c->data;
        o->cap = o->len = h->rlen;
    } else {
        o->msg = c->msg;
        o->code = h->rc;
    }
}

/* The result spill bytes up to `end` are copied out: free them for the
 * worker (and wake it if it waits for room). */
static void free_res_spill(struct cf__ppool *p, int chan, uint64_t end)
{
    struct cf__pchan *ch = &p->ch[chan];
    struct cf__pchan_ctl *ctl = &p->ctl[chan];
    uint64_t R = p->res_spill;
    punch(p->ressp + (size_t)chan * R, R, &ch->res_punched, end);
    ch->res_tail = end;
    /* seq_cst store, then seq_cst load of res_waiting: Dekker with the
     * worker's store of res_waiting then load of res_tail (the store is
     * also the release that lets the worker overwrite the bytes). */
    atomic_store_explicit(&ctl->res_tail, end, memory_order_seq_cst);
    atomic_fetch_add_explicit(&ctl->res_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ctl->res_waiting, memory_order_seq_cst))
        cf__futex_wake(&ctl->res_seq, 1, true);
}

int cf__pp_take_result(struct cf__ppool *p, int chan, struct cf__pslot *s, uint64_t pos,
                       struct cf_out *o, int *code, struct cf__pbad *bad)
{
    struct res_hdr h;
    const unsigned char *src;
    if (read_res_hdr(p, chan, s, &h, &src, bad)) return -1;
    struct res_copy c;
    copy_out(&h, src, &c);
    uint32_t check = __atomic_load_n(&s->res_check, __ATOMIC_RELAXED);
    /* A correct worker sends the message up to its NUL (strnlen); one with
     * a NUL inside would later be freed as a shorter string (the allocator
     * is told the size on free). Then the worker's check over all of it (a
     * stray write into a result the worker left for us, see proc_shm.h). */
    if (h.mlen && memchr(c.m, 0, h.mlen)) {
        cf__free(c.msg, (size_t)h.mlen + 1);
        return refuse(bad, "NUL byte in the message", h.mlen);
    }
    if (check != cf__pp_res_check(pos, h.rlen, h.rpos, h.rc, h.mlen, h.rf, c.res, c.m)) {
        cf__free(c.data, h.rlen);
        cf__free(c.msg, (size_t)h.mlen + 1);
        return refuse(bad, "result check", check);
    }
    fill_out(&h, &c, o, code);
    if (h.rf & CF__PR_SPILL) free_res_spill(p, chan, h.rpos + h.rlen + h.mlen);
    return 0;
}

cf_future *cf__pp_free_slot(struct cf__ppool *p, int chan, uint64_t pos, bool done)
{
    struct cf__pchan *ch = &p->ch[chan];
    struct cf__prec *r = &ch->rec[pos & (p->depth - 1)];
    if (r->arg_end) {
        punch(p->argsp + (size_t)chan * p->arg_spill, p->arg_spill, &ch->arg_punched, r->arg_end);
        /* release: the producer may reuse the argument bytes below it */
        atomic_store_explicit(&ch->arg_tail, r->arg_end, memory_order_release);
    }
    cf_future *f = r->f;
    r->f = NULL;
    if (done) {
        ch->inc_done++;
        atomic_fetch_add_explicit(&ch->tasks_run, 1, memory_order_relaxed);
    }
    /* release: we are done reading the slot; the producer may refill it.
     * The WAITER bit stays (the worker may sleep on the next lap). */
    atomic_fetch_and_explicit(&cf__pp_slot(p, chan, pos)->state, CF__SK_WAITER,
                              memory_order_release);
    /* release: pairs with the producers' acquire load in cf__pp_reserve */
    atomic_store_explicit(&ch->collected, pos + 1, memory_order_release);
    return f;
}
