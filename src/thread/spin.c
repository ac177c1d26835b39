/* The idle spin policy: spin.h has the contract; the rules are here.
 *
 * A spin trades CPU time for latency: a task a spinning worker finds starts
 * at once, one that arrives after the worker parked waits for a futex wake
 * (a few to tens of microseconds). That trade is good only while
 *   (a) spins find work: otherwise the CPU time buys nothing, and
 *   (b) nobody else wants the CPU: on an oversubscribed host a spinning
 *       worker takes its CPU from runnable threads - often the very thread
 *       that feeds it - and, worse, it is descheduled while it still counts
 *       as searching, so submitters wake nobody (the searcher is expected
 *       to find the task) and the task waits for the searcher's next time
 *       slice: milliseconds instead of microseconds.
 * Each worker therefore keeps its own policy (workers are pinned, and the
 * load on their CPUs differs):
 *
 *   ON     budget in [floor, ceil] (ceil: the pool's spin_ns, 50 us by
 *          default; floor: ceil / 4, which still covers a feeder's wake-up
 *          from a futex sleep, so a round trip that went cold once can
 *          catch the next submit and climb back), starting at the floor.
 *          A spin that PAID doubles the budget, one that TIMED_OUT halves
 *          it: a steady stream of work with short gaps reaches the full
 *          spin in a few rounds, a pool that only sees work now and then
 *          spins briefly (so an idle pool's last spin after a burst is
 *          short too).
 *   OFF    entered by a DESCHEDULED spin (worker.c: once it yields, the
 *          worker was off its CPU for CF__SPIN_DESCHED_NS or more between
 *          two looks at the clock: in a sched_yield, or preempted in the
 *          scan between two). The next `skip` idle periods only glance
 *          (CF__SPIN_GLANCE_NS of pauses and scans, no yield, nothing
 *          learned) before they park; then one probe spins for the floor
 *          budget. A probe that is descheduled again starts the next,
 *          longer back-off; any other outcome turns spinning back ON at the
 *          floor budget.
 *   back-off  skip_len starts at CF__SPIN_SKIP_MIN idle periods and doubles
 *          with every descheduled spin, up to CF__SPIN_SKIP_MAX; every
 *          CF__SPIN_CLEAN_RUN clean spins in a row halve it again (many:
 *          a searcher descheduled for a time slice delays the work it was
 *          expected to find by milliseconds, hundreds of wake-ups' worth).
 *          So a host that stays busy is probed rarely (each failed probe
 *          costs one slow round trip), while a single stray preemption on
 *          a quiet machine costs only a few glances.
 *   FIXED  CFUTURES_SPIN_NS or the spin_ns option was given: that budget,
 *          always; nothing adapts.
 */
#include "thread/spin.h"

void cf__spin_init(struct cf__spin *s, long spin_ns, bool fixed)
{
    long floor = spin_ns / 4 > 0 ? spin_ns / 4 : spin_ns;
    *s = (struct cf__spin){
        /* Adaptive: start short, grow as spins pay. A pool that only ever
         * sees a burst now and then spins a quarter of the ceiling after it. */
        .budget = fixed ? spin_ns : floor,
        .ceil = spin_ns,
        .floor = floor,
        .skip_len = CF__SPIN_SKIP_MIN,
        .mode = fixed || spin_ns <= 0 ? CF__SPIN_FIXED : CF__SPIN_ON,
    };
}

/* The budget for this idle period (before it is remembered in `granted`). */
static long next_budget(struct cf__spin *s)
{
    s->glance = false;
    if (s->mode != CF__SPIN_OFF) return s->budget;
    if (s->skip > 0) {
        s->skip--;
        s->glances++;
        s->glance = true;
        return CF__SPIN_GLANCE_NS;
    }
    s->probes++;
    return s->floor;
}

long cf__spin_next(struct cf__spin *s)
{
    return s->granted = next_budget(s);
}

/* A descheduled spin: only glance for the current back-off, and make the
 * next one longer. */
static void back_off(struct cf__spin *s)
{
    s->mode = CF__SPIN_OFF;
    s->skip = s->skip_len;
    s->skip_len = s->skip_len * 2 < CF__SPIN_SKIP_MAX ? s->skip_len * 2 : CF__SPIN_SKIP_MAX;
    s->clean = 0;
}

/* A spin that was not descheduled: a long enough run of them forgives one
 * step of the back-off. */
static void clean_spin(struct cf__spin *s)
{
    if (++s->clean < CF__SPIN_CLEAN_RUN) return;
    s->clean = 0;
    s->skip_len = s->skip_len / 2 > CF__SPIN_SKIP_MIN ? s->skip_len / 2 : CF__SPIN_SKIP_MIN;
}

void cf__spin_record(struct cf__spin *s, enum cf__spin_outcome how)
{
    if (s->mode == CF__SPIN_FIXED) return;
    switch (how) {
    case CF__SPIN_DESCHEDULED:
        s->descheduled++;
        back_off(s);
        return;
    case CF__SPIN_PAID:
        s->paid++;
        if (s->mode == CF__SPIN_OFF) s->budget = s->floor; /* a probe: start small */
        else s->budget = s->budget * 2 < s->ceil ? s->budget * 2 : s->ceil;
        break;
    case CF__SPIN_TIMED_OUT:
        s->timed_out++;
        if (s->mode == CF__SPIN_OFF) s->budget = s->floor;
        else s->budget = s->budget / 2 > s->floor ? s->budget / 2 : s->floor;
        break;
    }
    s->mode = CF__SPIN_ON;
    clean_spin(s);
}
