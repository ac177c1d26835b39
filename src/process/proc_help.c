/* Helping: a thread waiting in result() on one of the pool's futures (or a
 * submitter that found every ring full) does the collector's job
 * meanwhile. It takes the collect lock only when it is free, takes every
 * plainly DONE and valid result (cf__pp_look, cf__pp_take_result) up to
 * HARVEST_MAX, releases the lock, then completes those futures: their
 * callbacks run in this thread, the completing one, which SEMANTICS 9
 * allows. Anything unusual (a skipped slot, a state or result that fails
 * validation) is left to the collector thread, which it wakes.
 *
 * A submitter also harvests every few submits (process_pool.c). Each
 * harvest that takes anything bumps p->harvests (the collector leaves the
 * rings to helpers while it moves) and starts at the next channel, so
 * while helpers keep harvesting every channel's results are taken; a slot
 * left for the collector raises p->coll_attn (read under the collect
 * lock) before the wake.
 *
 * The collector thread waits for every helper's batch (p->batches) before
 * it reports the pool finished, so shutdown(wait) returns only once every
 * future is done. While helpers are active the collector naps instead of
 * spinning and workers do not ring the doorbell (proc_collector.c). */
#include <sched.h>

#include "sys/config.h"
#include "sync/futex.h"
#include "process/proc_collector.h"
#include "process/proc_help.h"
#include "process/proc_ring_parent.h"

_Thread_local struct cf__ppool *cf__pp_tls_completing;

#define HARVEST_MAX 16

struct batch {
    int n;
    cf_future *fs[HARVEST_MAX];
    struct cf_out outs[HARVEST_MAX];
    int codes[HARVEST_MAX];
};

/* Harvest up to HARVEST_MAX DONE slots of one channel into b (collect lock
 * held). True when a slot needs the collector's care. */
static bool harvest_chan(struct cf__ppool *p, int chan, struct batch *b)
{
    struct cf__pchan *ch = &p->ch[chan];
    if (ch->dead) return false;
    uint64_t pos = atomic_load_explicit(&ch->collected, memory_order_relaxed); /* ours */
    /* acquire: pairs with the producer's release store of head. */
    uint64_t h = atomic_load_explicit(&ch->head, memory_order_acquire);
    for (; pos < h && b->n < HARVEST_MAX; pos++) {
        uint32_t v;
        const char *what;
        enum cf__pp_seen seen = cf__pp_look(p, chan, pos, &v, &what);
        if (seen == CF__PP_NOT_YET) return false;
        if (seen != CF__PP_DONE) return true;
        struct cf__pbad bad;
        struct cf__pslot *s = cf__pp_slot(p, chan, pos);
        if (cf__pp_take_result(p, chan, s, pos, &b->outs[b->n], &b->codes[b->n], &bad)) return true;
        b->fs[b->n++] = cf__pp_free_slot(p, chan, pos, true);
    }
    return false;
}

/* Complete a harvested batch, outside the collect lock. */
static void complete_batch(struct cf__ppool *p, struct batch *b)
{
    /* A callback here that shuts the pool down (or frees it) cannot wait
     * for the collector, which waits for this batch: it acts as wait=false. */
    struct cf__ppool *outer = cf__pp_tls_completing;
    cf__pp_tls_completing = p;
    for (int i = 0; i < b->n; i++) {
        if (cf__future_complete_from_out(b->fs[i], b->codes[i], &b->outs[i]) != 0)
            cf__out_dispose(&b->outs[i]);
        cf_future_release(b->fs[i]);
    }
    cf__pp_tls_completing = outer;
}

int cf__pp_help_once(struct cf__ppool *p)
{
    struct batch b;
    bool odd = false;
    b.n = 0;
    if (!cf__pp_coll_trylock(p)) return 0;
    /* Start each harvest at the next channel, so that while helpers keep
     * harvesting (and the collector defers to them) every channel's
     * results are taken, not only the first channel's. relaxed: written
     * under the collect lock, which orders it. */
    uint32_t first = atomic_load_explicit(&p->harvests, memory_order_relaxed);
    for (int k = 0; k < p->n && b.n < HARVEST_MAX; k++)
        odd |= harvest_chan(p, (int)((first + (uint32_t)k) % (uint32_t)p->n), &b);
    if (b.n) {
        /* relaxed: ordered by the lock release below and read by the
         * collector under the lock or after (see its leaving) */
        atomic_fetch_add_explicit(&p->batches, 1, memory_order_relaxed);
        /* relaxed: a hint to the collector that helpers collect (it
         * defers its own collecting while this moves, proc_collector.c) */
        atomic_fetch_add_explicit(&p->harvests, 1, memory_order_relaxed);
    }
    /* relaxed: a slot we leave for the collector, who reads the flag
     * under the collect lock (ordered by our release of it); the wake
     * below makes a sleeping collector look now. */
    if (odd) atomic_store_explicit(&p->coll_attn, 1, memory_order_relaxed);
    cf__pp_coll_unlock(p);
    if (odd) cf__pp_wake_collector(p);
    if (!b.n) return 0;
    complete_batch(p, &b);
    /* release: the completions are visible to whoever sees the count drop
     * (the collector before it reports the pool finished) */
    atomic_fetch_sub_explicit(&p->batches, 1, memory_order_release);
    return b.n;
}

int cf__pp_wait_helper(void *ctx, cf_future *f, cf__deadline deadline)
{
    (void)ctx;
    if (!f->ops || f->ops->on_cancel != cf__pp_on_cancel) return cf__future_wait_done(f, deadline);
    /* f holds a reference on its pool (on_free drops it): p is alive. */
    struct cf__ppool *p = cf__pp_of_future(f);
    /* A fork child's snapshot of the pool has no rings to collect from. */
    if (cf__pp_tls_collector == p || cf__pp_foreign(p)) return cf__future_wait_done(f, deadline);
    long spin = p->spin_ns > cf__wait_spin_ns() ? p->spin_ns : cf__wait_spin_ns();
    /* relaxed: only tells the collector thread it need not spin now */
    atomic_fetch_add_explicit(&p->helpers, CF__PP_HELPER, memory_order_relaxed);
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
    atomic_fetch_sub_explicit(&p->helpers, 1, memory_order_relaxed); /* the count only */
    if (cf__state_done(cf__future_state(f, memory_order_acquire))) return 0;
    /* Going to sleep: the collector thread completes f. It may be napping
     * (helper mode, no doorbell): wake it so it watches the doorbell again. */
    cf__pp_wake_collector(p);
    return cf__future_wait_done(f, deadline);
}
