/* cfutures-bench: making cfutures pools and reporting failed library
 * calls (every one fails the run: a workload never skips quietly). */
#ifndef CFB_LIB_H
#define CFB_LIB_H

#include "cfutures.h"
#include "cfb.h"

/* A thread pool / process pool of cfb_workers() workers (n > 0: n), or
 * NULL with r failed. */
cf_executor *cfb_thread_pool(struct cfb_result *r, int n);
cf_executor *cfb_process_pool(struct cfb_result *r, int n);
/* A library call returned rc != 0: fail r, naming the call and the code. */
void cfb_submit_failed(struct cfb_result *r, const char *what, int rc);
void cfb_call_failed(struct cfb_result *r, const char *call, int rc);

#endif
