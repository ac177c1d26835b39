/* Every CFUTURES_* setting, resolved in one place (config.c).
 *
 * Resolution order for each setting: built-in default, then the environment
 * variable (parsed strictly: a bad value prints one line on stderr naming
 * the variable, the value and the accepted range, and the default stays),
 * then the option passed in code, which always wins. Each setting remembers
 * where its value came from, so cfutures-info can print it. */
#ifndef CF_CONFIG_H
#define CF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "cfutures.h"

enum cf__source { CF__FROM_DEFAULT = 0, CF__FROM_ENV, CF__FROM_CODE };

enum cf__setting {
    CF__SET_WORKERS,             /* CFUTURES_WORKERS */
    CF__SET_PIN,                 /* CFUTURES_PIN: compact|scatter|none|list */
    CF__SET_CPU_LIST,            /* CFUTURES_CPUS: e.g. 0-3,8 (implies pin=list) */
    CF__SET_SPIN_NS,             /* CFUTURES_SPIN_NS */
    CF__SET_STEAL_ATTEMPTS,      /* CFUTURES_STEAL_ATTEMPTS */
    CF__SET_MAP_WINDOW,          /* CFUTURES_MAP_WINDOW */
    CF__SET_NUMA,                /* CFUTURES_NUMA: 0|1 */
    CF__SET_STATS,               /* CFUTURES_STATS: 0|1 */
    CF__SET_SLOT_SIZE,           /* CFUTURES_SLOT_SIZE (process pool) */
    CF__SET_RING_DEPTH,          /* CFUTURES_RING_DEPTH (process pool) */
    CF__SET_MAX_TASKS_PER_CHILD, /* CFUTURES_MAX_TASKS_PER_CHILD */
    CF__SET_TOPOLOGY,            /* CFUTURES_TOPOLOGY: an hwloc XML file */
    CF__SET_WAIT_SPIN_NS,        /* CFUTURES_WAIT_SPIN_NS: result() spin before futex */
    CF__SET_THREAD_NAME_PREFIX,  /* CFUTURES_THREAD_NAME_PREFIX: workers' "<prefix>-<n>" */
    CF__SET_WAIT_HELP,           /* CFUTURES_WAIT_HELP: 0|1, a waiter outside runs tasks */
    CF__SET_COUNT
};

/* Upper bounds shared by the environment parser and the option checks. */
#define CF__MAX_WORKERS 4096
#define CF__MAX_CPU 8191                   /* highest OS CPU index a cpu list may name */
#define CF__THREAD_NAME_MAX 15             /* bytes in a Linux thread name, without the NUL */
#define CF__TOPOLOGY_MAX_BYTES (64L << 20) /* largest CFUTURES_TOPOLOGY file */

struct cf__config {
    int workers;            /* 0 = one per allowed core */
    enum cf_pin_policy pin; /* never CF_PIN_DEFAULT once resolved */
    char cpu_list[256];
    long spin_ns;       /* 0 = no spin */
    int steal_attempts; /* 0 = auto: see cf__steal_attempts() */
    size_t map_window;
    bool numa;
    bool stats;
    size_t slot_size;
    size_t ring_depth;
    int max_tasks_per_child; /* 0 = unlimited */
    char topology[4096];     /* "" = the machine's own (or HWLOC_* env) */
    long wait_spin_ns;
    char thread_name_prefix[CF__THREAD_NAME_MAX + 1]; /* default "cf" */
    bool wait_help;                /* a thread outside the pool may run the tasks it waits for */
    size_t thread_name_prefix_len; /* as given (an option may be longer than the field) */
    enum cf__source source[CF__SET_COUNT];
};

/* Defaults, then the environment (warnings printed at most once per
 * variable and process). */
void cf__config_load(struct cf__config *c);

/* The pure parser behind cf__config_load: parse `value` as the variable of
 * setting s and store it in *c (source: environment). Reads nothing but its
 * arguments (no environment, no files) and prints nothing. 0, or CF_EINVAL
 * with *c unchanged and *why (if why is not NULL) set to a short reason or
 * NULL. CFUTURES_PIN=list needs c->cpu_list set; CFUTURES_CPUS also sets
 * pin=list. For CFUTURES_TOPOLOGY only the form is checked here; the file
 * is checked by cf__config_load and read by the topology loader. */
int cf__config_parse(struct cf__config *c, enum cf__setting s, const char *value, const char **why);

/* One line on stderr about setting s ("cfutures: NAME="value": what"),
 * only when its value came from the environment. For a value that parsed
 * but makes the constructor fail (a listed CPU missing, an XML file hwloc
 * rejects): printed for every such failure, not once per process like the
 * "ignoring" warnings, and remembered (per thread) so that
 * cf__config_report_failure does not say it again. */
void cf__config_warn(const struct cf__config *c, enum cf__setting s, const char *what);

/* The constructor of a pool made from c is failing with rc: when the cause
 * is the environment and no line said so yet (cf__config_warn), print one
 * line naming the variables. Running out of memory or of a system resource
 * (CF_ENOMEM, CF_ESYS) names the sizes set by the environment
 * (CFUTURES_WORKERS; for the process pool also CFUTURES_SLOT_SIZE and
 * CFUTURES_RING_DEPTH); when none was, nothing is printed (the caller has
 * the code). Call it once per failed constructor, from the thread that ran
 * it. */
void cf__config_report_failure(const struct cf__config *c, int rc, bool process_pool);

/* Overlay options from code; CF_EINVAL if an option is out of range (the
 * constructor then fails). NULL opts: nothing to overlay. */
int cf__config_apply_thread_opts(struct cf__config *c, const cf_thread_pool_opts *o);
int cf__config_apply_process_opts(struct cf__config *c, const cf_process_pool_opts *o);

/* Names for printing (cfutures-info, stats). */
const char *cf__setting_env_name(enum cf__setting s);
const char *cf__source_name(enum cf__source s);
/* Print "NAME = value (source)" for every setting, one per line. */
void cf__config_print(const struct cf__config *c, void *FILE_stream);

/* Process-wide cached result() spin budget (from CFUTURES_WAIT_SPIN_NS). */
long cf__wait_spin_ns(void);

/* A thread-name prefix is 1+ printable ASCII characters without '/'. */
bool cf__thread_name_prefix_ok(const char *s);

/* The prefix as workers are named by it: cut only as far as "<prefix>-<N>"
 * needs to fit a Linux thread name for the largest N of n_workers. */
void cf__thread_name_prefix_fit(char *out, size_t size, const char *prefix, int n_workers);

/* cf__thread_name_prefix_fit on c's prefix, and one line on stderr when it
 * had to be cut (as given, an option may be cut twice: to the 15 bytes of
 * the field, then for the worker number), naming where it came from
 * (CFUTURES_THREAD_NAME_PREFIX or the thread_name_prefix option); once
 * per process for each of the two. */
void cf__config_thread_name_prefix(const struct cf__config *c, int n_workers, char *out,
                                   size_t size);

/* Remote steal attempts per round for a pool of n_workers: the setting if
 * non-zero, else 2 x (n_workers - 1), at least 1. */
int cf__steal_attempts(const struct cf__config *c, int n_workers);

/* Parse a cpu list ("0-3,8": OS indexes, ranges ascending, no repeats, each
 * in [0, CF__MAX_CPU]) into cpus[] in the order written. Returns the number
 * of CPUs (only the first `cap` are stored) or CF_EINVAL. */
int cf__cpu_list_parse(const char *s, int *cpus, int cap);

#endif
