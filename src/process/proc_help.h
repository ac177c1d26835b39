/* Helping (proc_help.c): a thread that submitted to a process pool
 * collects ready results itself, while it waits in result() and when it
 * finds the rings full, instead of waiting for the collector thread. */
#ifndef CF_PROC_HELP_H
#define CF_PROC_HELP_H

#include "process/proc_pool.h"

/* result() from a thread that submitted to a process pool: collect ready
 * results (any channel) while waiting (cf__tls_wait_helper). */
int cf__pp_wait_helper(void *ctx, cf_future *f, cf__deadline deadline);
/* Collect ready results once, if nobody else is; returns how many. */
int cf__pp_help_once(struct cf__ppool *p);
/* Set while a helper completes futures it collected (callbacks run). */
extern _Thread_local struct cf__ppool *cf__pp_tls_completing;

#endif
