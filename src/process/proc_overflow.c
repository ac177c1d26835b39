/* The process pool's overflow list: submissions that found every ring
 * full. A mutex-protected FIFO linked through f->next_queued (a slow path:
 * the rings hold ring_depth tasks per worker before anything comes here).
 * The future keeps its own copy of the argument meanwhile.
 *
 * Feeding (cf__pp_feed) moves the oldest entries into rings with room, in
 * two steps: the slot is published HELD under the channel's fill lock, then,
 * after the overflow lock is dropped, released to QUEUED, or to CANCELLED
 * if the future was cancelled meanwhile (cf__pp_release_held and
 * cf__pp_on_cancel pair through a fence, so no cancel is lost). The
 * collector feeds, and so does every submitter that adds to the list.
 * Callbacks never run under the overflow lock. */
#include "process/proc_overflow.h"
#include "process/proc_ring_parent.h"

int cf__pp_ov_push(struct cf__ppool *p, cf_future *f)
{
    pthread_mutex_lock(&p->ov_lock);
    /* Re-checked under the lock: the collector's sweeps (breakage,
     * termination) and shutdown's cancel take it after setting the flag,
     * so nothing is added behind them. acquire pairs with the seq_cst
     * fetch_or that set it. */
    int rc = cf__pp_flags_error(atomic_load_explicit(&p->flags, memory_order_acquire));
    if (!rc) {
        f->next_queued = NULL;
        if (p->ov_tail) p->ov_tail->next_queued = f;
        else p->ov_head = f;
        p->ov_tail = f;
        /* relaxed: a hint for submitters and the collector; the list
         * itself is read under the lock. */
        atomic_fetch_add_explicit(&p->ov_count, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&p->ov_lock);
    return rc;
}

cf_future *cf__pp_ov_take(struct cf__ppool *p)
{
    pthread_mutex_lock(&p->ov_lock);
    cf_future *f = p->ov_head;
    p->ov_head = p->ov_tail = NULL;
    atomic_store_explicit(&p->ov_count, 0, memory_order_relaxed);
    pthread_mutex_unlock(&p->ov_lock);
    return f;
}

bool cf__pp_ov_empty(struct cf__ppool *p)
{
    pthread_mutex_lock(&p->ov_lock);
    bool empty = p->ov_head == NULL;
    pthread_mutex_unlock(&p->ov_lock);
    return empty;
}

/* Place f, HELD, into some ring with room: its channel, or -1. Caller
 * holds the overflow lock. */
static int place_held(struct cf__ppool *p, cf_future *f)
{
    uint64_t start =
        p->ov_rr++; /* under the overflow lock (not p->rr: that one is the submitters') */
    for (int k = 0; k < p->n; k++) {
        int chan = (int)((start + (uint64_t)k) % (uint64_t)p->n);
        struct cf__pchan *ch = &p->ch[chan];
        struct cf__pp_spot at;
        bool placed = false;
        /* Never waits for a submitter: a busy channel is as good as full
         * now (whoever feeds next tries again). dead and exit_placed
         * change under this lock. */
        if (!cf__pp_fill_trylock(ch)) continue;
        size_t len = cf__future_arg_len(f);
        if (!ch->dead && !ch->exit_placed && cf__pp_reserve(p, chan, len, &at)) {
            cf__pp_place(p, chan, &at, f, f->fn, cf__future_arg(f), len, true);
            placed = true;
        }
        cf__pp_fill_unlock(ch);
        if (placed) return chan;
    }
    return -1;
}

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
            placed = place_held(p, f);
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
