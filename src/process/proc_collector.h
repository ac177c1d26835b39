/* The process pool's collector thread (proc_collector.c), and what other
 * threads ask of it or do on its behalf. */
#ifndef CF_PROC_COLLECTOR_H
#define CF_PROC_COLLECTOR_H

#include "process/proc_pool.h"

/* The thread's body (pthread_create); it drops its pool reference last. */
void *cf__pp_collector_main(void *pool);
/* Wake the collector if it sleeps: call after changing something it must
 * act on (flags, the overflow list, a helper leaving). */
void cf__pp_wake_collector(struct cf__ppool *p);
/* The same, but only when it sleeps until woken: a nap it takes while
 * others collect ends by itself within NAP_SUBMIT_NS or NAP_HELPED_NS
 * (proc_collector.c), which is soon enough for work in the overflow list
 * and saves a system call per overflowing submit. */
void cf__pp_nudge_collector(struct cf__ppool *p);
/* Send a request to the zygote: 0, or CF_ESYS when it is gone. */
int cf__pp_zreq(struct cf__ppool *p, const struct cf__zreq *q);
/* Cancel every task no worker has begun (overflow list and QUEUED/HELD
 * slots), in the calling thread; have_lock: it holds the collect lock. */
void cf__pp_cancel_unstarted(struct cf__ppool *p, bool have_lock);
/* The pool whose collector thread this is (NULL elsewhere). */
extern _Thread_local struct cf__ppool *cf__pp_tls_collector;

#endif
