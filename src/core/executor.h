/* Internal view of an executor: a vtable the generic entry points
 * (cf_submit, cf_map, cf_executor_shutdown, ...) dispatch through, after
 * they have checked their arguments. */
#ifndef CF_EXECUTOR_INTERNAL_H
#define CF_EXECUTOR_INTERNAL_H

#include "cfutures.h"

struct cf__executor_ops {
    const char *kind; /* "thread" or "process" */
    /* Arguments already checked (ex, fn, out non-NULL; arg non-NULL or len 0). */
    int (*submit)(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                  cf_future **out);
    int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
    void (*destroy)(cf_executor *ex); /* after shutdown(wait=true) */
    int (*workers)(const cf_executor *ex);
    int (*stats)(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n);
    int (*terminate)(cf_executor *ex, int signo); /* NULL: CF_ENOTSUP */
};

/* Every executor struct starts with this. */
struct cf_executor {
    const struct cf__executor_ops *ops;
    size_t map_window;   /* default cf_map window (tasks) */
    size_t map_chunk;    /* default chunk size; 0 = adaptive */
    bool copy_map_items; /* process pools: chunk arguments carry the item bytes */
};

#endif
