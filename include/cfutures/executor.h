/* cfutures: executors.
 *
 * The thread pool and the process pool are the same cf_executor: switching
 * between them is one line (the constructor). Everything that submits,
 * waits and reads results stays the same.
 *
 * Option structs: a zeroed struct (or a NULL pointer) means "all defaults
 * (then environment)"; every field's zero value is its default, and where 0
 * could be misread the field says what it means. An option set in code
 * always wins over its CFUTURES_* environment variable (see README's table).
 *
 * Growth without breaking callers (docs/ABI.md): every option struct and
 * cf_worker_stats ends in reserved room, so its size stays the same while
 * new fields take the room. Leave the reserved words zero (a zeroed struct
 * or an initializer such as CF_THREAD_POOL_OPTS_INIT does): the library
 * rejects a non-zero reserved word with CF_EINVAL, so a program built
 * against a newer header that sets an option this library does not know
 * gets an error rather than a silently ignored option. The library always
 * writes zero into cf_worker_stats' reserved room.
 *
 * Ownership: cf_executor_free() releases the executor; futures it returned
 * are owned by the caller and may outlive it. */
#ifndef CFUTURES_EXECUTOR_H
#define CFUTURES_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export.h"
#include "future.h"
#include "task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_executor cf_executor;
typedef struct cf_map_iter cf_map_iter;

/* Which cores get workers, and in what order. */
enum cf_pin_policy {
    CF_PIN_DEFAULT = 0, /* environment, else CF_PIN_COMPACT */
    CF_PIN_COMPACT,     /* fill one package / NUMA node before the next */
    CF_PIN_SCATTER,     /* round-robin across packages / NUMA nodes */
    CF_PIN_LIST,        /* the cores in cpu_list, in that order */
    CF_PIN_NONE,        /* do not pin */
};

/* A tri-state switch whose zero value means "default". */
enum cf_switch { CF_SWITCH_DEFAULT = 0, CF_SWITCH_ON, CF_SWITCH_OFF };

/* spin_ns value meaning "do not spin before sleeping". */
#define CF_SPIN_NONE (-1)

/* Runs once in each worker before its first task; non-zero breaks the pool. */
typedef int cf_init_fn(void *arg);

typedef struct cf_thread_pool_opts {
    int max_workers;         /* 0: one per allowed core; < 0: CF_EINVAL */
    cf_init_fn *initializer; /* NULL: none */
    void *initializer_arg;
    const char *thread_name_prefix; /* NULL: "cf"; workers are "<prefix>-<n>" */
    enum cf_pin_policy pin;
    const char *cpu_list; /* NULL: none; e.g. "0-3,8" (OS indexes), implies
                                       CF_PIN_LIST when pin is CF_PIN_DEFAULT */
    long spin_ns;         /* idle spin before parking; 0: the default (adaptive)
                                       spin, NOT "no spin" (that is CF_SPIN_NONE) */
    int steal_attempts;   /* remote steal attempts per round; 0 default */
    size_t map_window;    /* default cf_map window in tasks; 0 default */
    enum cf_switch numa;  /* NUMA-aware steal order and memory */
    enum cf_switch stats; /* per-worker counters printed at shutdown */
    uint64_t reserved[8]; /* room for new options: must be zero */
} cf_thread_pool_opts;

/* All defaults; the same as a zeroed struct. */
#define CF_THREAD_POOL_OPTS_INIT \
    {                            \
        0                        \
    }

typedef struct cf_process_pool_opts {
    int max_workers;         /* 0: one per allowed core; < 0: CF_EINVAL */
    cf_init_fn *initializer; /* runs in each worker process */
    void *initializer_arg;   /* a fork snapshot in the worker */
    int max_tasks_per_child; /* 0: unlimited; < 0: CF_EINVAL */
    size_t slot_size;        /* inline argument/result bytes per ring slot; 0 default */
    size_t ring_depth;       /* slots per worker ring; 0 default */
    long spin_ns;            /* as in cf_thread_pool_opts */
    size_t map_window;       /* as in cf_thread_pool_opts */
    enum cf_switch stats;
    uint64_t reserved[8]; /* room for new options: must be zero */
} cf_process_pool_opts;

/* All defaults; the same as a zeroed struct. */
#define CF_PROCESS_POOL_OPTS_INIT \
    {                             \
        0                         \
    }

/* Make a pool and store it in *out. opts NULL: defaults + environment.
 * Returns 0, or CF_EINVAL (out NULL, a bad option, a non-zero reserved
 * word), CF_ENOMEM or CF_ESYS; on failure *out is set to NULL (when out is
 * not NULL) and nothing is left running. */
CF_API int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_opts *opts);
/* The process pool's workers are forked when it is created, so they see the
 * program's memory as it was then: a global written, or memory allocated,
 * after cf_process_pool_new is not seen by tasks (a worker that replaces
 * another sees the same snapshot, not today's memory). Only a MAP_SHARED
 * mapping made before the pool is shared. What a task needs must be in its
 * argument bytes or exist before the pool; its result comes back as bytes.
 * Functions are named by address, the same in every worker. */
CF_API int cf_process_pool_new(cf_executor **out, const cf_process_pool_opts *opts);

/* Schedule fn(copy of arg, arg_len). arg may be NULL only if arg_len is 0.
 * On success *out gets a new reference. Errors: CF_EINVAL, CF_ENOMEM,
 * CF_ETOOBIG (arg_len above what the pool accepts: 4 GiB - 1 on a thread
 * pool, docs/SEMANTICS.md item 27 on a process pool), CF_EBROKEN (checked
 * first), CF_ESHUTDOWN, CF_ENOTSUP (the executor was made before a fork()
 * and this is the child); a failed submit never runs fn. */
CF_API int cf_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                     cf_future **out);

/* Options of one submission (cf_submit_ex); a zeroed struct (or NULL) is
 * a plain cf_submit. */
typedef struct cf_submit_opts {
    /* Handed to the task: cf_out_context(out) returns it (task.h says what
     * it means in a process pool). NULL: none. Costs 16 argument bytes. */
    void *context;
    /* Run on_done(f, on_done_arg) once, when the future is done: finished,
     * failed, or cancelled (cf_future_cancel, shutdown with
     * cancel_futures, a process pool's terminate), so a fire-and-forget
     * caller always hears of it. It runs in the thread that completes or
     * cancels the future: a pool worker (thread pool), the collector
     * thread or a thread waiting in cf_future_result (process pool), the
     * thread that cancels; or, if the task was already done when the
     * callback was attached (just after the task was queued), in the
     * submitting thread before cf_submit_ex returns. It may call any
     * cfutures function. NULL: none. */
    cf_done_fn *on_done;
    void *on_done_arg;
    uint64_t reserved[5]; /* room for new options: must be zero */
} cf_submit_opts;

/* All defaults; the same as a zeroed struct. */
#define CF_SUBMIT_OPTS_INIT \
    {                       \
        0                   \
    }

/* cf_submit with options. out may be NULL (fire and forget): then the
 * caller gets no reference; the library keeps one until on_done (if any)
 * has returned, and drops it then, so the future passed to on_done is
 * valid during the call (retain it to keep it). With out, *out gets the
 * caller's reference as with cf_submit. Errors as cf_submit, and CF_EINVAL
 * for a non-zero reserved word, CF_ENOMEM; a failed call never runs fn or
 * on_done. */
CF_API int cf_submit_ex(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                        const cf_submit_opts *opts, cf_future **out);

typedef struct cf_map_opts {
    /* One deadline for the whole map, taken when cf_map() is called, and
     * only if has_timeout is true: a zeroed struct has NO deadline. With
     * has_timeout, timeout means what it means everywhere else: seconds,
     * negative (CF_FOREVER) none, 0 (CF_POLL) already passed, so only
     * items done when cf_map_next looks are yielded. A non-zero timeout
     * without has_timeout is CF_EINVAL (it would be silently ignored). */
    double timeout;
    bool has_timeout;
    size_t chunksize;     /* items per task; 0: adaptive */
    size_t window;        /* submitted-but-not-yielded tasks; 0: pool default */
    uint64_t reserved[4]; /* room for new options: must be zero */
} cf_map_opts;

/* All defaults (no deadline); the same as a zeroed struct. */
#define CF_MAP_OPTS_INIT \
    {                    \
        0                \
    }

/* fn over n items of arg_len bytes each, laid out contiguously at args,
 * which must stay valid until cf_map_free(). Results come in input order
 * through cf_map_next. Returns 0, CF_EINVAL, CF_ENOMEM, CF_EBROKEN,
 * CF_ESHUTDOWN or CF_ENOTSUP (as cf_submit). */
CF_API int cf_map(cf_executor *ex, cf_task_fn *fn, const void *args, size_t arg_len, size_t n,
                  const cf_map_opts *opts, cf_map_iter **out);

/* The next result in input order: 0 (data valid until the next call);
 * CF_ETASK for a failed item (iteration may continue past it);
 * CF_ECANCELLED / CF_EBROKEN for an item that did not run; CF_ETIMEDOUT
 * when the deadline passed (every not-yet-yielded item is then cancelled and
 * later calls return CF_ETIMEDOUT); CF_END after the last item. */
CF_API int cf_map_next(cf_map_iter *it, const void **data, size_t *len);
CF_API int cf_map_next_i64(cf_map_iter *it, int64_t *v);
/* The next results in input order, up to max (>= 1) at once: as many as
 * are ready in a row without waiting again, which is the rest of the
 * current chunk when every item in it succeeded with a result of one size
 * (the common case), else one. On 0: *count (>= 1) results, result i at
 * (const char *)*data + i * *stride, *len bytes each (8-byte aligned),
 * all valid until the next call on the iterator; one call per chunk
 * instead of one per item. Otherwise the code cf_map_next would return
 * for the next item: CF_ETASK, CF_ECANCELLED or CF_EBROKEN consume that
 * one item (*count = 1, cf_map_exception describes it); CF_END,
 * CF_ETIMEDOUT and CF_EINVAL (it or count NULL, max 0) consume nothing
 * (*count = 0). data, len and stride may be NULL. Mixing it with
 * cf_map_next on one iterator is allowed. */
CF_API int cf_map_next_batch(cf_map_iter *it, size_t max, const void **data, size_t *len,
                             size_t *stride, size_t *count);
/* After cf_map_next returned CF_ETASK or CF_EBROKEN: that item's code and
 * message (valid until the next call). CF_ESTATE otherwise. */
CF_API int cf_map_exception(cf_map_iter *it, int *code, const char **msg);
/* Cancel what has not started, then free the iterator. On a thread pool it
 * WAITS for the items already running: their tasks read the caller's args
 * array and write into the iterator's buffers in place (no copy is made),
 * so neither may go away under them; when cf_map_free returns, args may be
 * freed. On a process pool items run on copies and it waits for nothing.
 * NULL is a no-op. */
CF_API void cf_map_free(cf_map_iter *it);

/* Stop taking work. wait: run every queued task and join the workers
 * (from inside one of the pool's own workers or callbacks it cannot join
 * itself and acts as wait=false). cancel_futures: cancel what has not
 * started. Idempotent; safe from several threads. Running tasks may still
 * submit nested work until the pool has drained. Returns 0 or CF_EINVAL;
 * CF_ENOTSUP in the child of a fork() made after the executor. */
CF_API int cf_executor_shutdown(cf_executor *ex, bool wait, bool cancel_futures);
/* shutdown(wait=true) then free. NULL is a no-op. In the child of a fork()
 * made after the executor it only forgets it (its workers are not there). */
CF_API void cf_executor_free(cf_executor *ex);

/* Number of workers (threads or processes). */
CF_API int cf_executor_workers(const cf_executor *ex);

/* Process pools: stop now. Sends signo (SIGTERM or SIGKILL) to every
 * worker; what they held fails with CF_EBROKEN, what had not started is
 * cancelled; the pool is then shut down. CF_ENOTSUP on a thread pool. */
CF_API int cf_process_pool_terminate(cf_executor *ex, int signo);

/* Per-worker counters (zero unless statistics are on). */
typedef struct cf_worker_stats {
    uint64_t tasks_run;
    uint64_t steals_tried, steals_ok;
    uint64_t steals_local, steals_remote; /* successful, by NUMA distance */
    uint64_t injected_taken;              /* tasks taken from outside submitters */
    uint64_t parks, wakeups;
    int cpu, numa_node;   /* where it is pinned; -1 if not */
    uint64_t reserved[8]; /* room for new counters: written 0 */
} cf_worker_stats;

/* Fill up to cap entries; *n gets the number of workers. 0 or CF_EINVAL. */
CF_API int cf_executor_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
