/* cfutures-bench: the library entry points the workloads use, declared
 * weak, so the suite links and runs while parts of the library are still
 * being written: a workload whose entry points are missing is skipped with
 * a message naming them (cfb_need), instead of the whole program failing to
 * link. perf links the object library, so every defined entry point
 * resolves (a static archive would not pull members for weak references). */
#ifndef CFB_LIB_H
#define CFB_LIB_H

#include "cfutures.h"
#include "cfb.h"

#pragma weak cf_thread_pool_new
#pragma weak cf_thread_pool_new_err
#pragma weak cf_process_pool_new
#pragma weak cf_process_pool_new_err
#pragma weak cf_submit
#pragma weak cf_map
#pragma weak cf_map_next
#pragma weak cf_map_next_i64
#pragma weak cf_map_free
#pragma weak cf_executor_free
#pragma weak cf_executor_shutdown
#pragma weak cf_executor_workers
#pragma weak cf_future_result
#pragma weak cf_future_result_i64
#pragma weak cf_future_release
#pragma weak cf_wait
#pragma weak cf_as_completed_new
#pragma weak cf_as_completed_next
#pragma weak cf_as_completed_free
#pragma weak cf_out_i64
#pragma weak cf_out_set
#pragma weak cf_out_alloc
#pragma weak cf_strerror

/* True if entry point f is linked; else skips r naming it. Chain with &&:
 * if (!(CFB_NEED(r, cf_submit) && CFB_NEED(r, cf_wait))) return; */
#define CFB_NEED(r, f) cfb_need_((r), #f, (void (*)(void))(f) != NULL)
bool cfb_need_(struct cfb_result *r, const char *name, bool linked);

/* A thread pool / process pool of cfb_workers() workers (n > 0: n), or
 * NULL with r skipped ("not functional: ...") or failed. */
cf_executor *cfb_thread_pool(struct cfb_result *r, int n);
cf_executor *cfb_process_pool(struct cfb_result *r, int n);
/* A library call returned rc != 0: CF_ENOTSUP skips r (a stub), anything
 * else fails it. */
void cfb_submit_failed(struct cfb_result *r, const char *what, int rc);
void cfb_call_failed(struct cfb_result *r, const char *call, int rc);

#endif
