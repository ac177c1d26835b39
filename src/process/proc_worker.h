/* A process-pool worker's life (proc_worker.c), entered in the zygote's
 * child and never left. */
#ifndef CF_PROC_WORKER_H
#define CF_PROC_WORKER_H

#include <signal.h>

#include "process/proc_pool.h"

/* The application's signal settings, which the zygote changed for itself
 * and a worker puts back before it runs anything. */
struct cf__pp_sigs {
    struct sigaction chld, intr;
    sigset_t mask;
};

/* Run tasks of channel `chan` from ring position `pos` (result spill ring
 * from `res_pos`); `zygote` is the parent it expects. */
_Noreturn void cf__pp_worker_main(struct cf__ppool *p, int chan, uint64_t pos, uint64_t res_pos,
                                  pid_t zygote, const struct cf__pp_sigs *app_sigs);

#endif
