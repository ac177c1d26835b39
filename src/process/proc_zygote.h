/* The process pool's zygote (proc_zygote.c): the single-threaded first
 * child that forks every worker. */
#ifndef CF_PROC_ZYGOTE_H
#define CF_PROC_ZYGOTE_H

#include "process/proc_pool.h"

/* Runs in the child of the pool's one fork; never returns. */
_Noreturn void cf__pp_zygote_main(struct cf__ppool *p);

#endif
