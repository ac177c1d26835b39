/* A waiting thread outside every pool runs the tasks it waits for
 * (cf_wait, cf_as_completed): a cursor over the awaited futures that asks
 * each one's executor (the run_awaited hook, executor.h) to run it here.
 *
 * Contract. Single-threaded: the cursor belongs to one wait. Only a wait
 * without a deadline helps (a task cannot be stopped at a deadline), and
 * only in a thread without a wait helper (a pool worker helps its own way).
 * The cursor walks from the last future to the first and passes each at
 * most once: a future that is not PENDING, or whose executor has no hook,
 * never becomes runnable again, so the walk costs O(n) over a whole wait.
 * The executor says when not to run: CF__RUN_NOT_NOW (a worker is idle and
 * takes the task; the caller waits as before and may look again later) or
 * CF__RUN_NEVER (this thread may not run its tasks now: the cursor turns
 * off for the rest of the wait). */
#ifndef CF_CORE_HELP_H
#define CF_CORE_HELP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/future.h"

struct cf__help {
    size_t next; /* candidates left: indexes [0, next) */
    bool on;
    bool worker_idle; /* the last step stopped at CF__RUN_NOT_NOW */
};

static inline void cf__help_init(struct cf__help *h, size_t n, cf__deadline deadline)
{
    h->next = n;
    h->on = deadline == CF__NO_DEADLINE && !cf__tls_wait_helper;
    h->worker_idle = false;
}

/* Ask f's executor to run f here. */
static inline int cf__help_try(cf_future *f)
{
    const struct cf__future_ops *ops = f->ops;
    return ops && ops->run_awaited ? ops->run_awaited(f) : CF__RUN_SKIP;
}

/* The i-th future of the caller's collection. */
typedef cf_future *cf__help_at_fn(const void *coll, size_t i);

/* One step over the candidates at indexes [0, limit], walking down: true
 * if it ran one (the caller looks again at what it waits for), false if
 * there is nothing to run now. */
static inline bool cf__help_step(struct cf__help *h, size_t limit, cf__help_at_fn *at,
                                 const void *coll)
{
    if (h->next > limit + 1) h->next = limit + 1;
    h->worker_idle = false;
    while (h->on && h->next > 0) {
        int r = cf__help_try(at(coll, h->next - 1));
        if (r == CF__RUN_NOT_NOW) {
            h->worker_idle = true;
            return false;
        }
        if (r == CF__RUN_NEVER) {
            h->on = false;
            return false;
        }
        h->next--; /* ran it, or it cannot run: done with it either way */
        if (r == CF__RUN_RAN) return true;
    }
    return false;
}

#endif
