/* The process pool's overflow list (proc_overflow.c): work that found
 * every ring full waits here, oldest first, and is fed into the rings as
 * slots free up. */
#ifndef CF_PROC_OVERFLOW_H
#define CF_PROC_OVERFLOW_H

#include "process/proc_pool.h"

/* Append f (its argument copied into the future) unless the pool refuses
 * new work: 0, or the flags' error (nothing is then linked). */
int cf__pp_ov_push(struct cf__ppool *p, cf_future *f);
/* Move overflow work into rings with room, oldest first; true if any
 * moved (or was dropped as done). Any thread may call it. */
bool cf__pp_feed(struct cf__ppool *p);
/* Unlink the whole list and return its head (linked through
 * f->next_queued; each future holds the executor's reference). */
cf_future *cf__pp_ov_take(struct cf__ppool *p);
bool cf__pp_ov_empty(struct cf__ppool *p);

#endif
