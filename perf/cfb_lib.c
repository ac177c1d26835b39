/* cfutures-bench: making cfutures pools, and telling "not there yet" from
 * "wrong". */
#include <stdio.h>

#include "cfb_lib.h"

bool cfb_need_(struct cfb_result *r, const char *name, bool linked)
{
    if (!linked)
        cfb_skip(r, "skipped: %s is not in the library yet", name);
    return linked;
}

static const char *errname(int err)
{
    return cf_strerror ? cf_strerror(err) : "?";
}

cf_executor *cfb_thread_pool(struct cfb_result *r, int n)
{
    if (!CFB_NEED(r, cf_thread_pool_new_err))
        return NULL;
    int err = 0;
    cf_executor *ex = cf_thread_pool_new_err(
        &(cf_thread_pool_opts){.max_workers = n > 0 ? n : cfb_workers()}, &err);
    if (!ex)
        cfb_skip(r, "skipped: thread pool not functional: cf_thread_pool_new failed: %d %s", err,
                 errname(err));
    return ex;
}

cf_executor *cfb_process_pool(struct cfb_result *r, int n)
{
    if (!CFB_NEED(r, cf_process_pool_new_err))
        return NULL;
    int err = 0;
    cf_executor *ex = cf_process_pool_new_err(
        &(cf_process_pool_opts){.max_workers = n > 0 ? n : cfb_workers()}, &err);
    if (!ex)
        cfb_skip(r, "skipped: process pool not functional: cf_process_pool_new failed: %d %s", err,
                 errname(err));
    return ex;
}

/* A submit that fails with CF_ENOTSUP means the executor is a stub: skip. */
void cfb_submit_failed(struct cfb_result *r, const char *what, int rc)
{
    if (rc == CF_ENOTSUP)
        cfb_skip(r, "skipped: %s not functional: cf_submit: %s", what, errname(rc));
    else
        cfb_fail(r, "%s: cf_submit failed: %d %s", what, rc, errname(rc));
}

void cfb_call_failed(struct cfb_result *r, const char *call, int rc)
{
    if (rc == CF_ENOTSUP)
        cfb_skip(r, "skipped: %s: %s", call, errname(rc));
    else
        cfb_fail(r, "%s failed: %d %s", call, rc, errname(rc));
}
