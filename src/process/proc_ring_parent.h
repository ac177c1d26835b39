/* The parent's side of the ring protocol (proc_ring_parent.c): filling
 * slots, cancelling them, reading and validating what workers wrote back,
 * freeing them. The slot format and the state machine are in proc_shm.h. */
#ifndef CF_PROC_RING_PARENT_H
#define CF_PROC_RING_PARENT_H

#include "process/proc_pool.h"

/* ---- producing (caller holds the channel's fill lock, proc_pool.h) ---- */

/* Where the next record of a channel goes: found once by cf__pp_reserve,
 * then used by cf__pp_place. */
struct cf__pp_spot {
    uint64_t pos;  /* the slot position */
    uint64_t apos; /* the argument's position in the arg spill ring (spill only) */
    bool spill;    /* the argument does not fit inline */
};
/* False when the channel's ring, or for a long argument its argument spill
 * ring, has no room now. */
bool cf__pp_reserve(struct cf__ppool *p, int chan, size_t len, struct cf__pp_spot *at);
/* Fill the reserved slot with f (or an EXIT marker when f is NULL) and
 * publish it. With `held`, it is published HELD (the worker waits) and
 * cf__pp_release_held() must follow, outside the fill lock. */
void cf__pp_place(struct cf__ppool *p, int chan, const struct cf__pp_spot *at, cf_future *f,
                  cf_task_fn *fn, const void *arg, size_t len, bool held);
void cf__pp_release_held(struct cf__ppool *p, int chan, cf_future *f);

/* ---- cancelling, and the future hooks (any thread) ---- */

/* QUEUED or HELD (for pos) -> CANCELLED; false if it was neither. */
bool cf__pp_cancel_slot(struct cf__pslot *s, uint64_t pos);
void cf__pp_on_cancel(cf_future *f);
bool cf__pp_try_cancel(cf_future *f);
void cf__pp_sync_running(cf_future *f);
/* request_cancel: cf_future_cancel() refused f, begun in a worker: tell
 * the task through its channel's cancel_req (proc_shm.h). */
void cf__pp_request_cancel(cf_future *f);

/* ---- collecting (caller holds the collect lock) ---- */

/* What the collecting side finds in slot `pos`. */
enum cf__pp_seen {
    CF__PP_NOT_YET, /* queued, held, begun, cancelled or an exit marker: nothing to take */
    CF__PP_DONE,    /* a task's result is there (not yet validated: cf__pp_take_result) */
    CF__PP_SKIPPED, /* the worker passed over a cancelled task or an exit marker */
    CF__PP_CORRUPT, /* a state no correct worker writes there (*what says which) */
};
/* Read the slot's state (acquire), check it against what the parent
 * wrote or last saw there, and apply the one rule for a task that began:
 * the first time the slot is seen STARTED, the future is marked running.
 * *state gets the word read. */
enum cf__pp_seen cf__pp_look(struct cf__ppool *p, int chan, uint64_t pos, uint32_t *state,
                             const char **what);
/* The "began -> running" rule alone, for a state word already read. */
void cf__pp_note_started(struct cf__prec *r, uint32_t state, uint64_t pos);

struct cf__pbad { /* what was wrong with a slot (for the message) */
    const char *what;
    uint64_t val;
};
/* Read and check the result of a DONE slot into o. Returns 0, or -1 with
 * *bad set and nothing changed. *code gets the task's code (or CF_ENOMEM). */
int cf__pp_take_result(struct cf__ppool *p, int chan, struct cf__pslot *s, uint64_t pos,
                       struct cf_out *o, int *code, struct cf__pbad *bad);
/* Give slot `pos` (DONE or SKIPPED, its result taken) back to the
 * producers; returns the future, whose executor reference the caller now
 * owns (NULL for an exit marker). */
cf_future *cf__pp_free_slot(struct cf__ppool *p, int chan, uint64_t pos, bool done);

#endif
