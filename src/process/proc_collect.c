/* Collecting results, by whichever thread holds the collect lock: the
 * slot-reading primitives the collector thread uses (take_result,
 * free_slot), and the help a thread gives while it waits in result() or
 * submits into full rings (harvest, help_once, wait_helper, feed).
 *
 * Everything read from a slot a worker wrote is validated before use
 * (SEMANTICS 33), see cf__pp_take_result. The collect lock and helping are
 * described below and at the top of proc_collector.c. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "sync/fence.h"
#include "sync/futex.h"
#include "process/proc_pool.h"

_Thread_local struct cf__ppool *cf__pp_tls_completing;

void cf__pp_punch(unsigned char *ring, uint64_t size, uint64_t *punched, uint64_t tail)
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

/* Read and check the result of a DONE slot into o. Returns 0, or -1 with
 * *bad set and nothing changed. *code gets the task's code (or CF_ENOMEM).
 * Caller holds the collect lock. */
int cf__pp_take_result(struct cf__ppool *p, int chan, struct cf__pslot *s, uint64_t pos,
                       struct cf_out *o, int *code, struct cf__pbad *bad)
{
    struct cf__pchan *ch = &p->ch[chan];
    /* Each worker-written field is read once (relaxed: ordered after the
     * acquire load of DONE by that load); checks use these copies only. */
    int32_t rc = __atomic_load_n(&s->code, __ATOMIC_RELAXED);
    uint64_t rlen = __atomic_load_n(&s->res_len, __ATOMIC_RELAXED);
    uint64_t rpos = __atomic_load_n(&s->res_pos, __ATOMIC_RELAXED);
    uint32_t mlen = __atomic_load_n(&s->msg_len, __ATOMIC_RELAXED);
    uint32_t rf = __atomic_load_n(&s->rflags, __ATOMIC_RELAXED);
#define BAD(w, v) return (*bad = (struct cf__pbad){(w), (v)}), -1
    if (rf & ~CF__PR_KNOWN) BAD("result flags", rf);
    if (rc == 0 && mlen) BAD("message length on success", mlen);
    if (rc != 0 && rlen) BAD("result length on failure", rlen);
    if (mlen > CF__PMSG_MAX) BAD("message length", mlen);
    if (rlen > UINT32_MAX) BAD("result length", rlen);
    uint64_t total = rlen + mlen, R = p->res_spill, t = ch->res_tail;
    const unsigned char *src;
    if (rf & CF__PR_SPILL) {
        if (total == 0 || total > R || rpos < t || rpos - t > R || rpos % R + total > R ||
            rpos + total - t > cf__pp_spill_room(R))
            BAD("result spill position", rpos);
        src = p->ressp + (size_t)chan * R + rpos % R;
    } else {
        if (total > p->slot_size) BAD("inline result length", total);
        src = cf__pp_inline(s);
    }
    /* Copy first, then check the copies: the worker's next task may be
     * writing over these bytes while we read them. */
    unsigned char *data = NULL;
    char *m = NULL;
    const unsigned char *rcopy = src, *mcopy = src + rlen; /* the copies, once made */
    unsigned char small[CF__INLINE_RES];
    bool nomem = false;
    if (rc == 0 && rlen <= CF__INLINE_RES) {
        memcpy(small, src, rlen);
        rcopy = small;
    } else if (rc == 0) {
        data = cf__alloc(rlen);
        if (data) {
            memcpy(data, src, rlen);
            rcopy = data;
        } else {
            nomem = true; /* checked over the shared bytes then */
        }
    } else if (mlen) {
        m = cf__alloc((size_t)mlen + 1);
        if (m) {
            memcpy(m, src + rlen, mlen);
            m[mlen] = 0;
            mcopy = (const unsigned char *)m;
        } else {
            nomem = true;
        }
    }
    uint32_t check = __atomic_load_n(&s->res_check, __ATOMIC_RELAXED);
    /* A correct worker sends the message up to its NUL (strnlen); one with
     * a NUL inside would later be freed as a shorter string (the allocator
     * is told the size on free). Then the worker's check over all of it (a
     * stray write into a result the worker left for us, see proc_shm.h). */
    const char *what = mlen && memchr(mcopy, 0, mlen) ? "NUL byte in the message"
                       : check != cf__pp_res_check(pos, rlen, rpos, rc, mlen, rf, rcopy, mcopy)
                           ? "result check"
                           : NULL;
    if (what) {
        cf__free(data, rlen);
        cf__free(m, (size_t)mlen + 1);
        BAD(what, what[0] == 'N' ? mlen : check);
    }
#undef BAD
    cf__out_init(o);
    *code = rc;
    if (nomem) {
        *code = o->code = rc ? rc : CF_ENOMEM; /* a failure keeps its code, without its message */
    } else if (rc == 0 && rlen <= CF__INLINE_RES) {
        memcpy(o->small, small, rlen);
        o->len = rlen;
    } else if (rc == 0) {
        o->data = data;
        o->cap = rlen;
        o->len = rlen;
    } else {
        o->msg = m;
        o->code = rc;
    }
    if (rf & CF__PR_SPILL) {
        struct cf__pchan_ctl *ctl = &p->ctl[chan];
        cf__pp_punch(p->ressp + (size_t)chan * R, R, &ch->res_punched, rpos + total);
        ch->res_tail = rpos + total;
        /* seq_cst store, then seq_cst load of res_waiting: Dekker with the
         * worker's store of res_waiting then load of res_tail (the store is
         * also the release that lets the worker overwrite the bytes). */
        atomic_store_explicit(&ctl->res_tail, ch->res_tail, memory_order_seq_cst);
        atomic_fetch_add_explicit(&ctl->res_seq, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&ctl->res_waiting, memory_order_seq_cst))
            cf__futex_wake(&ctl->res_seq, 1, true);
    }
    return 0;
}

/* Give slot `pos` (DONE or SKIPPED, its result taken) back to the
 * producers; returns the future, whose executor reference the caller now
 * owns. Caller holds the collect lock. */
cf_future *cf__pp_free_slot(struct cf__ppool *p, int chan, struct cf__pslot *s, struct cf__prec *r,
                            uint64_t pos, bool done)
{
    struct cf__pchan *ch = &p->ch[chan];
    if (r->arg_end) {
        cf__pp_punch(p->argsp + (size_t)chan * p->arg_spill, p->arg_spill, &ch->arg_punched,
                     r->arg_end);
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
    atomic_fetch_and_explicit(&s->state, CF__SK_WAITER, memory_order_release);
    /* release: pairs with the producers' acquire load in cf__pp_room */
    atomic_store_explicit(&ch->collected, pos + 1, memory_order_release);
    return f;
}

/* ---- the collect lock, and helping from result() ----
 * Collecting (reading result slots, freeing them) is single-consumer per
 * channel; whoever holds p->coll_lock does it: the collector thread for its
 * whole step (it may run callbacks under it: they run in the collector,
 * which never waits for a helper), or a thread waiting in result() on one
 * of the pool's futures, which harvests only plainly DONE, valid slots
 * under the lock and completes the futures after releasing it (callbacks
 * then run in that thread, which SEMANTICS 9 allows: the completing
 * thread). Anything unusual is left to the collector thread. */

#define HARVEST_MAX 16

/* Harvest up to HARVEST_MAX DONE slots. Returns how many (futures, outs and
 * codes filled in); sets *odd when a slot needs the collector's care. */
static int harvest(struct cf__ppool *p, cf_future **fs, struct cf_out *outs, int *codes, bool *odd)
{
    int n = 0;
    for (int chan = 0; chan < p->n && n < HARVEST_MAX; chan++) {
        struct cf__pchan *ch = &p->ch[chan];
        if (ch->dead) continue;
        uint64_t pos = atomic_load_explicit(&ch->collected, memory_order_relaxed);
        /* acquire: pairs with the producer's release store of head. */
        uint64_t h = atomic_load_explicit(&ch->head, memory_order_acquire);
        for (; pos < h && n < HARVEST_MAX; pos++) {
            struct cf__pslot *s = cf__pp_slot(p, chan, pos);
            struct cf__prec *r = &ch->rec[pos & (p->depth - 1)];
            /* acquire: as in collect_chan */
            uint32_t v = atomic_load_explicit(&s->state, memory_order_acquire);
            uint32_t k = cf__sk_kind(v);
            if (k != CF__SK_DONE || cf__sk_gen(v) != cf__pos_gen(pos) || r->is_exit) {
                bool gen_ok = cf__sk_gen(v) == cf__pos_gen(pos);
                if (k == CF__SK_STARTED && gen_ok && !r->marked) {
                    r->marked = true; /* no callbacks: a state CAS only */
                    if (r->f) cf__future_mark_running(r->f);
                }
                if (!gen_ok || (k != CF__SK_QUEUED && k != CF__SK_STARTED && k != CF__SK_HELD))
                    *odd = true;
                break;
            }
            struct cf__pbad bad;
            if (cf__pp_take_result(p, chan, s, pos, &outs[n], &codes[n], &bad)) {
                *odd = true;
                break;
            }
            fs[n++] = cf__pp_free_slot(p, chan, s, r, pos, true);
        }
    }
    return n;
}

/* One round of helping: 0 if the lock was busy or nothing was ready. */
int cf__pp_help_once(struct cf__ppool *p)
{
    cf_future *fs[HARVEST_MAX];
    struct cf_out outs[HARVEST_MAX];
    int codes[HARVEST_MAX];
    bool odd = false;
    if (!cf__pp_coll_trylock(p)) return 0;
    int n = harvest(p, fs, outs, codes, &odd);
    /* relaxed: ordered by the lock release below and read by the
     * collector under the lock or after (see its leaving) */
    if (n) atomic_fetch_add_explicit(&p->batches, 1, memory_order_relaxed);
    cf__pp_coll_unlock(p);
    if (odd) cf__pp_wake_collector(p);
    if (!n) return 0;
    /* A callback here that shuts the pool down (or frees it) cannot wait
     * for the collector, which waits for this batch: it acts as wait=false. */
    struct cf__ppool *outer = cf__pp_tls_completing;
    cf__pp_tls_completing = p;
    for (int i = 0; i < n; i++) {
        if (cf__future_complete_from_out(fs[i], codes[i], &outs[i]) != 0) cf__out_dispose(&outs[i]);
        cf_future_release(fs[i]);
    }
    cf__pp_tls_completing = outer;
    /* release: the completions are visible to whoever sees the count drop
     * (the collector before it reports the pool finished) */
    atomic_fetch_sub_explicit(&p->batches, 1, memory_order_release);
    return n;
}

int cf__pp_wait_helper(void *ctx, cf_future *f, cf__deadline deadline)
{
    (void)ctx;
    if (!f->ops || f->ops->on_cancel != cf__pp_on_cancel) return cf__future_wait_done(f, deadline);
    /* f holds a reference on its pool (on_free drops it): p is alive. */
    struct cf__ppool *p = (struct cf__ppool *)((char *)f->ops - offsetof(struct cf__ppool, fops));
    /* A fork child's snapshot of the pool has no rings to collect from. */
    if (cf__pp_tls_collector == p || cf__pp_foreign(p)) return cf__future_wait_done(f, deadline);
    long spin = p->spin_ns > cf__wait_spin_ns() ? p->spin_ns : cf__wait_spin_ns();
    /* relaxed: only tells the collector thread it need not spin now */
    atomic_fetch_add_explicit(&p->helpers, 1, memory_order_relaxed);
    int64_t end = cf__now_ns() + spin;
    if (end > deadline) end = deadline;
    unsigned idle = 0;
    for (;;) {
        /* acquire: pairs with the completer's release (future.c) */
        if (cf__state_done(cf__future_state(f, memory_order_acquire))) break;
        if (cf__pp_help_once(p)) {
            idle = 0;
            continue;
        }
        cf__cpu_relax();
        if ((++idle & 63) == 0) {
            if (cf__now_ns() >= end) break;
            sched_yield(); /* a loaded machine: let the worker run */
        }
    }
    atomic_fetch_sub_explicit(&p->helpers, 1, memory_order_relaxed);
    if (cf__state_done(cf__future_state(f, memory_order_acquire))) return 0;
    /* Going to sleep: the collector thread completes f. It may be napping
     * (helper mode, no doorbell): wake it so it watches the doorbell again. */
    cf__pp_wake_collector(p);
    return cf__future_wait_done(f, deadline);
}

/* ---- feeding the overflow list ---- */

/* Move overflow work into rings with room, oldest first. Any thread may
 * call it (the collector, or a submitter that found the rings full): it
 * takes only the overflow and channel locks. */
bool cf__pp_feed(struct cf__ppool *p)
{
    bool progress = false;
    for (;;) {
        pthread_mutex_lock(&p->ov_lock);
        cf_future *f = p->ov_head;
        if (!f) {
            pthread_mutex_unlock(&p->ov_lock);
            break;
        }
        /* The argument shares the record with the outcome (future.h): pin
         * it while we copy it; a claimed or done future has none left, and
         * its completer needs nothing more from us. */
        bool drop = !cf__future_arg_pin(f);
        int placed = -1;
        if (!drop) {
            size_t len = cf__future_arg_len(f);
            uint64_t start = atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed);
            for (int k = 0; k < p->n && placed < 0; k++) {
                int chan = (int)((start + (uint64_t)k) % (uint64_t)p->n);
                struct cf__pchan *ch = &p->ch[chan];
                pthread_mutex_lock(&ch->lock); /* dead and exit_placed change under it */
                if (!ch->dead && !ch->exit_placed && cf__pp_room(p, chan, len) &&
                    cf__pp_place(p, chan, f, f->fn, cf__future_arg(f), len, true))
                    placed = chan;
                pthread_mutex_unlock(&ch->lock);
            }
            cf__future_arg_unpin(f);
        }
        if (drop || placed >= 0) {
            p->ov_head = f->next_queued;
            if (!p->ov_head) p->ov_tail = NULL;
            atomic_fetch_sub_explicit(&p->ov_count, 1, memory_order_relaxed);
        }
        pthread_mutex_unlock(&p->ov_lock);
        if (drop) {
            cf_future_release(f);
        } else if (placed >= 0) {
            cf__pp_release_held(p, placed, f);
        } else {
            break; /* every ring is full */
        }
        progress = true;
    }
    return progress;
}
