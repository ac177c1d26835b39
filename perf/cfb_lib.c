/* cfutures-bench: making cfutures pools, and reporting failed calls. */
#include <stdio.h>

#include "cfb_lib.h"

cf_executor *cfb_thread_pool(struct cfb_result *r, int n)
{
    cf_executor *ex;
    int err = cf_thread_pool_new(&ex,
                                 &(cf_thread_pool_opts){.max_workers = n > 0 ? n : cfb_workers()});
    if (err) cfb_fail(r, "cf_thread_pool_new failed: %d %s", err, cf_strerror(err));
    return ex;
}

cf_executor *cfb_process_pool(struct cfb_result *r, int n)
{
    cf_executor *ex;
    int err = cf_process_pool_new(
        &ex, &(cf_process_pool_opts){.max_workers = n > 0 ? n : cfb_workers()});
    if (err) cfb_fail(r, "cf_process_pool_new failed: %d %s", err, cf_strerror(err));
    return ex;
}

void cfb_submit_failed(struct cfb_result *r, const char *what, int rc)
{
    cfb_fail(r, "%s: cf_submit failed: %d %s", what, rc, cf_strerror(rc));
}

void cfb_call_failed(struct cfb_result *r, const char *call, int rc)
{
    cfb_fail(r, "%s failed: %d %s", call, rc, cf_strerror(rc));
}
