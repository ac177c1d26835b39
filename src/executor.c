/* The generic executor entry points: check the arguments, then dispatch
 * through struct cf__executor_ops (executor.h). Nothing here aborts on bad
 * input, and a call that fails changes nothing. */
#include <signal.h>

#include "executor.h"

CF_API int cf_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                     cf_future **out)
{
    if (!ex || !ex->ops || !fn || !out || (!arg && arg_len > 0))
        return CF_EINVAL;
    return ex->ops->submit(ex, fn, arg, arg_len, out);
}

CF_API int cf_executor_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    if (!ex || !ex->ops)
        return CF_EINVAL;
    return ex->ops->shutdown(ex, wait, cancel_futures);
}

CF_API void cf_executor_free(cf_executor *ex)
{
    if (!ex || !ex->ops)
        return;
    ex->ops->shutdown(ex, true, false);
    ex->ops->destroy(ex);
}

CF_API int cf_executor_workers(const cf_executor *ex)
{
    if (!ex || !ex->ops)
        return CF_EINVAL;
    return ex->ops->workers(ex);
}

CF_API int cf_executor_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    if (!ex || !ex->ops || !n || (!out && cap > 0))
        return CF_EINVAL;
    return ex->ops->stats(ex, out, cap, n);
}

CF_API int cf_process_pool_terminate(cf_executor *ex, int signo)
{
    if (!ex || !ex->ops)
        return CF_EINVAL;
    if (signo != SIGTERM && signo != SIGKILL)
        return CF_EINVAL;
    if (!ex->ops->terminate)
        return CF_ENOTSUP;
    return ex->ops->terminate(ex, signo);
}
