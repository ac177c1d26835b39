/* The generic executor entry points: check the arguments, then dispatch
 * through struct cf__executor_ops (executor.h). Nothing here aborts on bad
 * input, and a call that fails changes nothing. */
#include <signal.h>

#include "sys/debug_checks.h"
#include "core/executor.h"

#if CF__DEBUG_CHECKS
/* An executor already given to cf_executor_free (debug_checks.h): poisoned
 * memory under ASan, else the ops pointer cf_executor_free overwrote. */
static void check_executor(const cf_executor *ex, const char *call, const char *problem)
{
    if (ex && (cf__debug_poisoned(ex) || ex->ops == CF__EXECUTOR_FREED))
        cf__debug_fail(call, "executor", ex, problem);
}
#define CHECK_EXECUTOR(ex, call) check_executor((ex), (call), "used after cf_executor_free")
#else
#define CHECK_EXECUTOR(ex, call) ((void)0)
#endif

CF_API int cf_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                     cf_future **out)
{
    CHECK_EXECUTOR(ex, "cf_submit");
    if (!ex || !ex->ops || !fn || !out || (!arg && arg_len > 0)) return CF_EINVAL;
    return ex->ops->submit(ex, fn, arg, arg_len, out);
}

CF_API int cf_executor_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    CHECK_EXECUTOR(ex, "cf_executor_shutdown");
    if (!ex || !ex->ops) return CF_EINVAL;
    return ex->ops->shutdown(ex, wait, cancel_futures);
}

CF_API void cf_executor_free(cf_executor *ex)
{
#if CF__DEBUG_CHECKS
    check_executor(ex, "cf_executor_free", "freed twice");
#endif
    if (!ex || !ex->ops) return;
    const struct cf__executor_ops *ops = ex->ops;
    ops->shutdown(ex, true, false);
#if CF__DEBUG_CHECKS
    ex->ops = CF__EXECUTOR_FREED; /* the mark a second call finds; destroy frees the memory */
#endif
    ops->destroy(ex);
}

CF_API int cf_executor_workers(const cf_executor *ex)
{
    CHECK_EXECUTOR(ex, "cf_executor_workers");
    if (!ex || !ex->ops) return CF_EINVAL;
    return ex->ops->workers(ex);
}

CF_API int cf_executor_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    CHECK_EXECUTOR(ex, "cf_executor_stats");
    if (!ex || !ex->ops || !n || (!out && cap > 0)) return CF_EINVAL;
    return ex->ops->stats(ex, out, cap, n);
}

CF_API int cf_process_pool_terminate(cf_executor *ex, int signo)
{
    CHECK_EXECUTOR(ex, "cf_process_pool_terminate");
    if (!ex || !ex->ops) return CF_EINVAL;
    if (signo != SIGTERM && signo != SIGKILL) return CF_EINVAL;
    if (!ex->ops->terminate) return CF_ENOTSUP;
    return ex->ops->terminate(ex, signo);
}
