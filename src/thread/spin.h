/* The idle spin policy (spin.c): how long an idle worker of the thread pool
 * spins looking for work before it parks, learned per worker from how its
 * own spins ended.
 *
 * Contract
 * - Owner-private: each worker has one struct cf__spin and is the only
 *   thread that reads or writes it (plain fields, no atomics). The pool's
 *   stats printer reads the counters after the worker was joined.
 * - Called by worker.c only when a worker is idle: its first scan found
 *   nothing. cf__spin_next gives the budget of this idle period's spin (0:
 *   park at once); if it was > 0 and not a glance, the worker reports how
 *   that spin ended with cf__spin_record. Nothing here is part of the
 *   no-lost-wake-up argument (worker.c): a budget only decides how long a
 *   worker looks before it parks, and parking is always safe.
 * - No clock is read here; worker.c measures and reports. */
#ifndef CF_THREAD_SPIN_H
#define CF_THREAD_SPIN_H

#include <stdbool.h>
#include <stdint.h>

/* How a spin ended. */
enum cf__spin_outcome {
    CF__SPIN_PAID,        /* found work after the first scan: the spin saved a park and a wake */
    CF__SPIN_TIMED_OUT,   /* spent its budget and found nothing */
    CF__SPIN_DESCHEDULED, /* was off its CPU for CF__SPIN_DESCHED_NS or more while it
                             spun: another runnable thread wanted that CPU */
};

enum cf__spin_mode {
    CF__SPIN_ON,    /* spinning pays: the budget adapts within [floor, ceil] */
    CF__SPIN_OFF,   /* the CPU is contended: only glance, probe now and then */
    CF__SPIN_FIXED, /* CFUTURES_SPIN_NS or the spin_ns option: always `budget` */
};

/* Off-CPU time during a spin that counts as "the CPU is wanted by someone
 * else". A sched_yield that does not switch takes about a microsecond; one
 * that lets the thread feeding us run for a moment comes back within tens
 * of microseconds (that is the yield doing its job); this long means a
 * thread that wanted the CPU for a whole time slice got it - and a
 * searcher off its CPU that long delays the tasks it was expected to find
 * by ten wake-ups' worth. */
#define CF__SPIN_DESCHED_NS 100000
/* OFF: instead of a spin, an idle period glances this long: pauses and
 * scans without ever yielding. Shorter than any time slice, it rarely
 * loses its CPU (and never gives it away while counted as searching), and
 * it still catches a task from a feeder that runs on another CPU and
 * answers within microseconds, without the cost of a wake. */
#define CF__SPIN_GLANCE_NS 2000
/* Idle periods that only glance after the first descheduled spin; each
 * further one doubles it, up to CF__SPIN_SKIP_MAX. */
#define CF__SPIN_SKIP_MIN 8u
#define CF__SPIN_SKIP_MAX 1024u
/* Clean spins in a row (not descheduled) that halve the back-off again. */
#define CF__SPIN_CLEAN_RUN 256u

struct cf__spin {
    long budget;       /* ns: the next spin's budget (ON, FIXED) */
    long ceil, floor;  /* ON: the budget's range */
    uint32_t skip;     /* OFF: idle periods left that only glance before a probe */
    uint32_t skip_len; /* the back-off the next descheduled spin starts */
    uint32_t clean;    /* clean spins in a row */
    uint8_t mode;      /* enum cf__spin_mode */
    long granted;      /* what the last cf__spin_next returned */
    bool glance;       /* ... and it is a glance: no yields, nothing to report */
    uint8_t outcome;   /* the spin being reported (worker.c; a test hook may change it) */
    /* Counters (the pool's stats line; written by the owner only). */
    uint64_t paid, timed_out, descheduled, glances, probes;
};

/* A worker's policy: adaptive with spin_ns as its ceiling, or (fixed) always
 * spin_ns. */
void cf__spin_init(struct cf__spin *s, long spin_ns, bool fixed);
/* The budget of this idle period's spin, in ns; 0: park at once. With
 * s->glance set, a glance: spin without yielding and report nothing. */
long cf__spin_next(struct cf__spin *s);
/* How the spin that cf__spin_next allowed (budget > 0, not a glance)
 * ended. */
void cf__spin_record(struct cf__spin *s, enum cf__spin_outcome how);

#endif
