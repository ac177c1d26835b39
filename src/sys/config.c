/* Every CFUTURES_* variable is read here and nowhere else.
 *
 * Parsing is strict (as jemalloc's conf.c and libgomp do it): an integer is
 * the whole string in base 10 and inside its range, a boolean is one of
 * 0/1/true/false/on/off/yes/no, a policy is one of its names. A bad value
 * prints one line on stderr naming the variable, the value and what is
 * accepted, and the built-in default stays: nothing is silently clamped.
 * Each variable warns at most once per process (pools may be created many
 * times). Options passed in code are checked by the same ranges and win;
 * an out-of-range option fails the constructor with CF_EINVAL.
 *
 * Layers: cf__config_parse is the pure parser (string in, field out, no
 * environment, no output: what tests/fuzz/fuzz_config drives);
 * cf__config_load reads each variable with getenv, parses it, checks what
 * a string cannot say (CFUTURES_TOPOLOGY must be a regular file: stat, which
 * never blocks) and warns. cf__config_warn is the one line for a value that
 * parsed but fails later (a listed CPU that is not there, a file hwloc
 * rejects), printed by the topology loader.
 *
 * Concurrency: every function may run from any thread at any time. A
 * struct cf__config belongs to its caller; the only shared state is the
 * per-variable warned[] flags and the cached wait spin, both relaxed
 * atomics that guard no other data (wait-free; see each). */
#include "sys/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Ranges (inclusive). Spin budgets stop at one second: longer is a typo. */
#define SPIN_MAX 1000000000L
#define STEAL_MAX 65536L
#define WINDOW_MAX (1L << 30)
#define SLOT_MIN 64L
#define SLOT_MAX (1L << 20)
#define RING_MIN 2L
#define RING_MAX 65536L
#define WAIT_SPIN_DEFAULT 20000L

static const char *const env_names[CF__SET_COUNT] = {
    [CF__SET_WORKERS] = "CFUTURES_WORKERS",
    [CF__SET_PIN] = "CFUTURES_PIN",
    [CF__SET_CPU_LIST] = "CFUTURES_CPUS",
    [CF__SET_SPIN_NS] = "CFUTURES_SPIN_NS",
    [CF__SET_STEAL_ATTEMPTS] = "CFUTURES_STEAL_ATTEMPTS",
    [CF__SET_MAP_WINDOW] = "CFUTURES_MAP_WINDOW",
    [CF__SET_NUMA] = "CFUTURES_NUMA",
    [CF__SET_STATS] = "CFUTURES_STATS",
    [CF__SET_SLOT_SIZE] = "CFUTURES_SLOT_SIZE",
    [CF__SET_RING_DEPTH] = "CFUTURES_RING_DEPTH",
    [CF__SET_MAX_TASKS_PER_CHILD] = "CFUTURES_MAX_TASKS_PER_CHILD",
    [CF__SET_TOPOLOGY] = "CFUTURES_TOPOLOGY",
    [CF__SET_WAIT_SPIN_NS] = "CFUTURES_WAIT_SPIN_NS",
    [CF__SET_THREAD_NAME_PREFIX] = "CFUTURES_THREAD_NAME_PREFIX",
    [CF__SET_WAIT_HELP] = "CFUTURES_WAIT_HELP",
};

/* What each variable accepts, as the warning states it. */
static const char *const accepted[CF__SET_COUNT] = {
    [CF__SET_WORKERS] = "an integer in [0, 4096] (0 = one per allowed core)",
    [CF__SET_PIN] = "one of compact, scatter, list, none (list needs CFUTURES_CPUS)",
    /* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one message in two lines */
    [CF__SET_CPU_LIST] = "a list of OS CPU indexes in [0, 8191] like 0-3,8 "
                         "(ascending ranges, no repeats, under 256 characters)",
    [CF__SET_SPIN_NS] = "an integer in [0, 1000000000] (nanoseconds; 0 = no spin)",
    [CF__SET_STEAL_ATTEMPTS] = "an integer in [0, 65536] (0 = 2 x (workers - 1))",
    [CF__SET_MAP_WINDOW] = "an integer in [0, 1073741824] (0 = the pool chooses)",
    [CF__SET_NUMA] = "one of 0, 1, false, true, off, on, no, yes",
    [CF__SET_STATS] = "one of 0, 1, false, true, off, on, no, yes",
    [CF__SET_SLOT_SIZE] = "an integer in [64, 1048576] (bytes)",
    [CF__SET_RING_DEPTH] = "a power of two in [2, 65536]",
    [CF__SET_MAX_TASKS_PER_CHILD] = "an integer in [0, 2147483647] (0 = unlimited)",
    [CF__SET_TOPOLOGY] = "the path of a readable hwloc XML file: a non-empty regular file of at "
                         "most 64 MiB, path under 4096 characters",
    [CF__SET_WAIT_SPIN_NS] = "an integer in [0, 1000000000] (nanoseconds; 0 = no spin)",
    [CF__SET_THREAD_NAME_PREFIX] = "1 to 15 printable ASCII characters, no '/'",
    [CF__SET_WAIT_HELP] = "one of 0, 1, false, true, off, on, no, yes",
};

/* One flag per variable: set by the first warning. Relaxed is enough: the
 * flag only deduplicates a message and guards no other data. */
static _Atomic unsigned char warned[CF__SET_COUNT];

/* Set when cf__config_warn explained a failure on this thread; cleared by
 * cf__config_load (a constructor's start) and read by
 * cf__config_report_failure (its end). A constructor runs in one thread,
 * so its own thread's flag is the one that matters. */
static _Thread_local bool failure_said;

const char *cf__setting_env_name(enum cf__setting s)
{
    return (unsigned)s < CF__SET_COUNT ? env_names[s] : "CFUTURES_?";
}

const char *cf__source_name(enum cf__source s)
{
    switch (s) {
    case CF__FROM_DEFAULT: return "default";
    case CF__FROM_ENV: return "environment";
    case CF__FROM_CODE: return "code";
    }
    return "?";
}

static const char *pin_name(enum cf_pin_policy p)
{
    switch (p) {
    case CF_PIN_DEFAULT: return "default";
    case CF_PIN_COMPACT: return "compact";
    case CF_PIN_SCATTER: return "scatter";
    case CF_PIN_LIST: return "list";
    case CF_PIN_NONE: return "none";
    }
    return "?";
}

static void defaults(struct cf__config *c)
{
    memset(c, 0, sizeof *c);
    c->workers = 0;
    c->pin = CF_PIN_COMPACT;
    c->spin_ns = 50000;
    c->steal_attempts = 0;
    c->map_window = 0;
    c->numa = true;
    c->stats = false;
    c->slot_size = 256;
    c->ring_depth =
        1024; /* a worker's ring is its whole queue: 64 sent fast submitters to the overflow list */
    c->max_tasks_per_child = 0;
    c->wait_spin_ns = WAIT_SPIN_DEFAULT;
    c->wait_help = true;
    strcpy(c->thread_name_prefix, "cf");
    c->thread_name_prefix_len = 2;
    for (int i = 0; i < CF__SET_COUNT; i++) c->source[i] = CF__FROM_DEFAULT;
}

/* The value of setting s in c as text (for printing and warnings). */
static void value_text(const struct cf__config *c, enum cf__setting s, char *buf, size_t n)
{
    switch (s) {
    case CF__SET_WORKERS: snprintf(buf, n, "%d", c->workers); break;
    case CF__SET_PIN: snprintf(buf, n, "%s", pin_name(c->pin)); break;
    case CF__SET_CPU_LIST: snprintf(buf, n, "%s", c->cpu_list[0] ? c->cpu_list : "\"\""); break;
    case CF__SET_SPIN_NS: snprintf(buf, n, "%ld", c->spin_ns); break;
    case CF__SET_STEAL_ATTEMPTS: snprintf(buf, n, "%d", c->steal_attempts); break;
    case CF__SET_MAP_WINDOW: snprintf(buf, n, "%zu", c->map_window); break;
    case CF__SET_NUMA: snprintf(buf, n, "%d", c->numa); break;
    case CF__SET_STATS: snprintf(buf, n, "%d", c->stats); break;
    case CF__SET_SLOT_SIZE: snprintf(buf, n, "%zu", c->slot_size); break;
    case CF__SET_RING_DEPTH: snprintf(buf, n, "%zu", c->ring_depth); break;
    case CF__SET_MAX_TASKS_PER_CHILD: snprintf(buf, n, "%d", c->max_tasks_per_child); break;
    case CF__SET_TOPOLOGY: snprintf(buf, n, "%s", c->topology[0] ? c->topology : "\"\""); break;
    case CF__SET_WAIT_SPIN_NS: snprintf(buf, n, "%ld", c->wait_spin_ns); break;
    case CF__SET_THREAD_NAME_PREFIX: snprintf(buf, n, "%s", c->thread_name_prefix); break;
    case CF__SET_WAIT_HELP: snprintf(buf, n, "%d", c->wait_help); break;
    default: snprintf(buf, n, "?"); break;
    }
}

/* value quoted for a one-line message: control characters replaced, long
 * values cut with "...". */
static void sanitize(const char *value, char *shown, size_t size)
{
    size_t i = 0;
    for (; value[i] && i < size - 4; i++)
        shown[i] = isprint((unsigned char)value[i]) ? value[i] : '?';
    if (value[i]) {
        memcpy(shown + i, "...", 3);
        i += 3;
    }
    shown[i] = '\0';
}

/* One line on stderr, once per variable per process. The value is quoted
 * with control characters replaced, so the message stays one line; `why`
 * (may be NULL) adds what the range alone does not say. */
static void warn_once(enum cf__setting s, const char *value, const char *why, const char *dflt)
{
    if (atomic_exchange_explicit(&warned[s], 1, memory_order_relaxed)) return;
    char shown[80];
    sanitize(value, shown, sizeof shown);
    fprintf(stderr, "cfutures: ignoring %s=\"%s\"%s%s%s: expected %s; using the default %s\n",
            env_names[s], shown, why ? " (" : "", why ? why : "", why ? ")" : "", accepted[s],
            dflt);
}

/* The whole string is a base-10 integer in [lo, hi]. No sign other than a
 * leading '-', no spaces, no suffix. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    if (!*s || !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) return *out = true, true;
        if (!strcasecmp(s, no[i])) return *out = false, true;
    }
    return false;
}

static bool parse_pin(const char *s, enum cf_pin_policy *out)
{
    static const enum cf_pin_policy all[] = {CF_PIN_COMPACT, CF_PIN_SCATTER, CF_PIN_LIST,
                                             CF_PIN_NONE};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcasecmp(s, pin_name(all[i]))) return *out = all[i], true;
    return false;
}

static bool is_pow2(long v)
{
    return v > 0 && (v & (v - 1)) == 0;
}

/* Reads one decimal CPU index at *p; advances *p. */
static bool cpu_index(const char **p, int *out)
{
    if (!isdigit((unsigned char)**p)) return false;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        v = v * 10 + (**p - '0');
        if (v > CF__MAX_CPU) return false;
        (*p)++;
    }
    *out = (int)v;
    return true;
}

int cf__cpu_list_parse(const char *s, int *cpus, int cap)
{
    if (!s || !*s) return CF_EINVAL;
    unsigned char seen[(CF__MAX_CPU + 8) / 8] = {0};
    int n = 0;
    const char *p = s;
    for (;;) {
        int lo, hi;
        if (!cpu_index(&p, &lo)) return CF_EINVAL;
        hi = lo;
        if (*p == '-') {
            p++;
            if (!cpu_index(&p, &hi) || hi < lo) return CF_EINVAL;
        }
        for (int c = lo; c <= hi; c++) {
            if (seen[c / 8] & (1u << (c % 8))) return CF_EINVAL;
            seen[c / 8] |= (unsigned char)(1u << (c % 8));
            if (n < cap) cpus[n] = c;
            n++;
        }
        if (*p == '\0') return n;
        if (*p != ',') return CF_EINVAL;
        p++;
    }
}

/* ---- one pure parser per variable ---- */

bool cf__thread_name_prefix_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] == '/' || !isprint((unsigned char)s[n])) return false;
    return n > 0;
}

/* An integer setting: its range and where it goes. */
static int parse_integer(struct cf__config *c, enum cf__setting s, const char *v)
{
    long lo = 0, hi, x;
    switch (s) {
    case CF__SET_WORKERS: hi = CF__MAX_WORKERS; break;
    case CF__SET_SPIN_NS:
    case CF__SET_WAIT_SPIN_NS: hi = SPIN_MAX; break;
    case CF__SET_STEAL_ATTEMPTS: hi = STEAL_MAX; break;
    case CF__SET_MAP_WINDOW: hi = WINDOW_MAX; break;
    case CF__SET_SLOT_SIZE: lo = SLOT_MIN, hi = SLOT_MAX; break;
    case CF__SET_RING_DEPTH: lo = RING_MIN, hi = RING_MAX; break;
    case CF__SET_MAX_TASKS_PER_CHILD: hi = INT_MAX; break;
    default: return CF_EINVAL;
    }
    if (!parse_long(v, lo, hi, &x) || (s == CF__SET_RING_DEPTH && !is_pow2(x))) return CF_EINVAL;
    switch (s) {
    case CF__SET_WORKERS: c->workers = (int)x; break;
    case CF__SET_SPIN_NS: c->spin_ns = x; break;
    case CF__SET_WAIT_SPIN_NS: c->wait_spin_ns = x; break;
    case CF__SET_STEAL_ATTEMPTS: c->steal_attempts = (int)x; break;
    case CF__SET_MAP_WINDOW: c->map_window = (size_t)x; break;
    case CF__SET_SLOT_SIZE: c->slot_size = (size_t)x; break;
    case CF__SET_RING_DEPTH: c->ring_depth = (size_t)x; break;
    default: c->max_tasks_per_child = (int)x; break; /* CF__SET_MAX_TASKS_PER_CHILD */
    }
    return 0;
}

int cf__config_parse(struct cf__config *c, enum cf__setting s, const char *v, const char **why)
{
    const char *unused;
    if (!why) why = &unused;
    *why = NULL;
    if (!c || !v || (unsigned)s >= CF__SET_COUNT) return CF_EINVAL;
    switch (s) {
    case CF__SET_PIN: {
        enum cf_pin_policy p;
        if (!parse_pin(v, &p)) return CF_EINVAL;
        if (p == CF_PIN_LIST && !c->cpu_list[0]) {
            *why = "CFUTURES_CPUS is not set";
            return CF_EINVAL;
        }
        c->pin = p;
        break;
    }
    case CF__SET_CPU_LIST:
        if (strlen(v) >= sizeof c->cpu_list || cf__cpu_list_parse(v, NULL, 0) <= 0)
            return CF_EINVAL;
        strcpy(c->cpu_list, v);
        /* A cpu list implies pin=list unless CFUTURES_PIN says otherwise
         * (it is parsed after this one). */
        c->pin = CF_PIN_LIST;
        c->source[CF__SET_PIN] = CF__FROM_ENV;
        break;
    case CF__SET_NUMA:
    case CF__SET_STATS:
    case CF__SET_WAIT_HELP: {
        bool b;
        if (!parse_bool(v, &b)) return CF_EINVAL;
        *(s == CF__SET_NUMA ? &c->numa : s == CF__SET_STATS ? &c->stats : &c->wait_help) = b;
        break;
    }
    case CF__SET_TOPOLOGY:
        if (!*v) {
            *why = "empty";
            return CF_EINVAL;
        }
        if (strlen(v) >= sizeof c->topology) {
            *why = "too long";
            return CF_EINVAL;
        }
        strcpy(c->topology, v);
        break;
    case CF__SET_THREAD_NAME_PREFIX:
        if (strlen(v) >= sizeof c->thread_name_prefix || !cf__thread_name_prefix_ok(v))
            return CF_EINVAL;
        strcpy(c->thread_name_prefix, v);
        c->thread_name_prefix_len = strlen(v);
        break;
    default:
        if (parse_integer(c, s, v)) return CF_EINVAL;
        break;
    }
    c->source[s] = CF__FROM_ENV;
    return 0;
}

/* ---- reading the environment ---- */

/* What the parser cannot see: the path must name a readable regular file
 * of a sane size (a directory or a FIFO would fail or block in hwloc).
 * stat() never blocks, even on a FIFO. NULL when usable. */
static const char *topology_file_problem(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return "no such file";
    if (!S_ISREG(st.st_mode)) return "not a regular file";
    if (access(path, R_OK) != 0) return "not readable";
    if (st.st_size == 0) return "empty file";
    if (st.st_size > CF__TOPOLOGY_MAX_BYTES) return "larger than 64 MiB";
    return NULL;
}

/* Read one variable into *c; a bad value warns (once) and leaves *c as it
 * was, so the default stays. */
static void load_one(struct cf__config *c, enum cf__setting s)
{
    const char *v = getenv(env_names[s]);
    if (!v) return;
    struct cf__config t = *c;
    const char *why = NULL;
    if (cf__config_parse(&t, s, v, &why) == 0) {
        if (s == CF__SET_TOPOLOGY) why = topology_file_problem(v);
        if (!why) {
            *c = t;
            return;
        }
    }
    char d[64];
    switch (s) {
    case CF__SET_CPU_LIST: snprintf(d, sizeof d, "\"\" (all allowed CPUs)"); break;
    case CF__SET_TOPOLOGY: snprintf(d, sizeof d, "\"\" (this machine)"); break;
    default: value_text(c, s, d, sizeof d); break;
    }
    warn_once(s, v, why, d);
}

void cf__config_load(struct cf__config *c)
{
    failure_said = false; /* a constructor starts: nothing said about it yet */
    defaults(c);
    /* CFUTURES_CPUS before CFUTURES_PIN: a list implies pin=list, and
     * pin=list needs a list. */
    static const enum cf__setting order[] = {
        CF__SET_WORKERS,
        CF__SET_CPU_LIST,
        CF__SET_PIN,
        CF__SET_SPIN_NS,
        CF__SET_STEAL_ATTEMPTS,
        CF__SET_MAP_WINDOW,
        CF__SET_NUMA,
        CF__SET_STATS,
        CF__SET_SLOT_SIZE,
        CF__SET_RING_DEPTH,
        CF__SET_MAX_TASKS_PER_CHILD,
        CF__SET_TOPOLOGY,
        CF__SET_WAIT_SPIN_NS,
        CF__SET_THREAD_NAME_PREFIX,
        CF__SET_WAIT_HELP,
    };
    _Static_assert(sizeof order / sizeof order[0] == CF__SET_COUNT, "every setting is loaded");
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) load_one(c, order[i]);
}

/* `NAME="value"` of setting s, quoted and cut for a one-line message. */
static void name_value(const struct cf__config *c, enum cf__setting s, char *out, size_t size)
{
    char v[4200], shown[80];
    value_text(c, s, v, sizeof v);
    sanitize(v, shown, sizeof shown);
    snprintf(out, size, "%s=\"%s\"", env_names[s], shown);
}

void cf__config_warn(const struct cf__config *c, enum cf__setting s, const char *what)
{
    if (!c || (unsigned)s >= CF__SET_COUNT || c->source[s] != CF__FROM_ENV) return;
    char nv[128];
    name_value(c, s, nv, sizeof nv);
    fprintf(stderr, "cfutures: %s: %s\n", nv, what);
    failure_said = true;
}

void cf__config_report_failure(const struct cf__config *c, int rc, bool process_pool)
{
    bool said = failure_said;
    failure_said = false;
    if (!c || said || (rc != CF_ENOMEM && rc != CF_ESYS)) return;
    static const enum cf__setting sizes[] = {CF__SET_WORKERS, CF__SET_SLOT_SIZE,
                                             CF__SET_RING_DEPTH};
    char names[400] = "";
    size_t len = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (c->source[sizes[i]] != CF__FROM_ENV || (!process_pool && sizes[i] != CF__SET_WORKERS))
            continue;
        char nv[128];
        name_value(c, sizes[i], nv, sizeof nv);
        int n = snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", nv);
        if (n > 0 && (size_t)n < sizeof names - len) len += (size_t)n;
    }
    if (!len) return;
    fprintf(stderr,
            "cfutures: %s: the %s cannot be made this large (%s); the pool is not created\n", names,
            process_pool ? "process pool" : "thread pool",
            rc == CF_ENOMEM ? "out of memory"
                            : "the system refused a thread, a process, memory or a descriptor");
}

void cf__config_thread_name_prefix(const struct cf__config *c, int n_workers, char *out,
                                   size_t size)
{
    cf__thread_name_prefix_fit(out, size, c->thread_name_prefix, n_workers);
    size_t kept = strlen(out);
    if (kept >= c->thread_name_prefix_len) return;
    /* One flag for the variable, one for the option (a cut prefix warns
     * once per process, however many pools are made with it). */
    static _Atomic unsigned char env_cut_warned, option_cut_warned;
    enum cf__source from = c->source[CF__SET_THREAD_NAME_PREFIX];
    _Atomic unsigned char *flag = from == CF__FROM_ENV ? &env_cut_warned : &option_cut_warned;
    /* Relaxed: the flag only deduplicates a message. */
    if (atomic_exchange_explicit(flag, 1, memory_order_relaxed)) return;
    char shown[80];
    sanitize(c->thread_name_prefix, shown, sizeof shown);
    fprintf(stderr,
            "cfutures: %s%s%s (%zu characters) cut to \"%.*s\": a Linux thread name holds 15 "
            "bytes, and \"%s-%d\" is the last worker's name\n",
            from == CF__FROM_ENV ? "CFUTURES_THREAD_NAME_PREFIX=\""
                                 : "the thread_name_prefix option \"",
            shown, c->thread_name_prefix_len > CF__THREAD_NAME_MAX ? "...\"" : "\"",
            c->thread_name_prefix_len, (int)kept, out, out, n_workers - 1);
}

/* Shared by both pool kinds: 0 leaves the setting alone, CF_SPIN_NONE means
 * "no spin", anything else must be in range. */
static int opt_spin(struct cf__config *c, long spin_ns)
{
    if (spin_ns == 0) return 0;
    if (spin_ns == CF_SPIN_NONE) spin_ns = 0;
    else if (spin_ns < 0 || spin_ns > SPIN_MAX) return CF_EINVAL;
    c->spin_ns = spin_ns;
    c->source[CF__SET_SPIN_NS] = CF__FROM_CODE;
    return 0;
}

static int opt_workers(struct cf__config *c, int n)
{
    if (n < 0 || n > CF__MAX_WORKERS) return CF_EINVAL;
    if (n > 0) {
        c->workers = n;
        c->source[CF__SET_WORKERS] = CF__FROM_CODE;
    }
    return 0;
}

static int opt_window(struct cf__config *c, size_t w)
{
    if (w > (size_t)WINDOW_MAX) return CF_EINVAL;
    if (w > 0) {
        c->map_window = w;
        c->source[CF__SET_MAP_WINDOW] = CF__FROM_CODE;
    }
    return 0;
}

static int opt_switch(struct cf__config *c, enum cf__setting s, bool *field, enum cf_switch v)
{
    switch (v) {
    case CF_SWITCH_DEFAULT: return 0;
    case CF_SWITCH_ON: *field = true; break;
    case CF_SWITCH_OFF: *field = false; break;
    default: return CF_EINVAL;
    }
    c->source[s] = CF__FROM_CODE;
    return 0;
}

/* The start both overlays share: reserved room in an option struct must be
 * zero (a non-zero word is an option of a newer library, which this one
 * must not silently ignore); then *t becomes a copy of *c with the worker
 * count applied. The callers work on the copy so that a failed overlay
 * leaves *c unchanged. */
static int opts_begin(struct cf__config *t, const struct cf__config *c, const uint64_t *reserved,
                      size_t n_reserved, int max_workers)
{
    for (size_t i = 0; i < n_reserved; i++)
        if (reserved[i]) return CF_EINVAL;
    *t = *c;
    return opt_workers(t, max_workers);
}
#define OPTS_BEGIN(t, c, o)                                                           \
    opts_begin((t), (c), (o)->reserved, sizeof(o)->reserved / sizeof(o)->reserved[0], \
               (o)->max_workers)

int cf__config_apply_thread_opts(struct cf__config *c, const cf_thread_pool_opts *o)
{
    if (!c) return CF_EINVAL;
    if (!o) return 0;
    struct cf__config t;
    int rc;
    if ((rc = OPTS_BEGIN(&t, c, o))) return rc;
    if (o->pin < CF_PIN_DEFAULT || o->pin > CF_PIN_NONE) return CF_EINVAL;
    if (o->cpu_list) {
        if (strlen(o->cpu_list) >= sizeof t.cpu_list ||
            cf__cpu_list_parse(o->cpu_list, NULL, 0) <= 0)
            return CF_EINVAL;
        strcpy(t.cpu_list, o->cpu_list);
        t.source[CF__SET_CPU_LIST] = CF__FROM_CODE;
        if (o->pin == CF_PIN_DEFAULT) {
            t.pin = CF_PIN_LIST;
            t.source[CF__SET_PIN] = CF__FROM_CODE;
        }
    }
    if (o->pin != CF_PIN_DEFAULT) {
        t.pin = o->pin;
        t.source[CF__SET_PIN] = CF__FROM_CODE;
    }
    if (t.pin == CF_PIN_LIST && !t.cpu_list[0]) return CF_EINVAL;
    if ((rc = opt_spin(&t, o->spin_ns))) return rc;
    if (o->steal_attempts < 0 || o->steal_attempts > STEAL_MAX) return CF_EINVAL;
    if (o->steal_attempts > 0) {
        t.steal_attempts = o->steal_attempts;
        t.source[CF__SET_STEAL_ATTEMPTS] = CF__FROM_CODE;
    }
    if ((rc = opt_window(&t, o->map_window))) return rc;
    if ((rc = opt_switch(&t, CF__SET_NUMA, &t.numa, o->numa))) return rc;
    if ((rc = opt_switch(&t, CF__SET_STATS, &t.stats, o->stats))) return rc;
    if (o->thread_name_prefix) {
        /* Longer than a thread name can hold is cut, as the OS would. */
        if (!cf__thread_name_prefix_ok(o->thread_name_prefix)) return CF_EINVAL;
        snprintf(t.thread_name_prefix, sizeof t.thread_name_prefix, "%s", o->thread_name_prefix);
        t.thread_name_prefix_len = strlen(o->thread_name_prefix);
        t.source[CF__SET_THREAD_NAME_PREFIX] = CF__FROM_CODE;
    }
    *c = t;
    return 0;
}

int cf__config_apply_process_opts(struct cf__config *c, const cf_process_pool_opts *o)
{
    if (!c) return CF_EINVAL;
    if (!o) return 0;
    struct cf__config t;
    int rc;
    if ((rc = OPTS_BEGIN(&t, c, o))) return rc;
    if (o->max_tasks_per_child < 0) return CF_EINVAL;
    if (o->max_tasks_per_child > 0) {
        t.max_tasks_per_child = o->max_tasks_per_child;
        t.source[CF__SET_MAX_TASKS_PER_CHILD] = CF__FROM_CODE;
    }
    if (o->slot_size) {
        if (o->slot_size < (size_t)SLOT_MIN || o->slot_size > (size_t)SLOT_MAX) return CF_EINVAL;
        t.slot_size = o->slot_size;
        t.source[CF__SET_SLOT_SIZE] = CF__FROM_CODE;
    }
    if (o->ring_depth) {
        if (o->ring_depth < (size_t)RING_MIN || o->ring_depth > (size_t)RING_MAX ||
            !is_pow2((long)o->ring_depth))
            return CF_EINVAL;
        t.ring_depth = o->ring_depth;
        t.source[CF__SET_RING_DEPTH] = CF__FROM_CODE;
    }
    if ((rc = opt_spin(&t, o->spin_ns))) return rc;
    if ((rc = opt_window(&t, o->map_window))) return rc;
    if ((rc = opt_switch(&t, CF__SET_STATS, &t.stats, o->stats))) return rc;
    *c = t;
    return 0;
}

void cf__config_print(const struct cf__config *c, void *FILE_stream)
{
    FILE *f = FILE_stream ? FILE_stream : stdout;
    for (int s = 0; s < CF__SET_COUNT; s++) {
        char buf[4200];
        value_text(c, s, buf, sizeof buf);
        fprintf(f, "%-29s = %s (%s)\n", env_names[s], buf, cf__source_name(c->source[s]));
    }
}

void cf__thread_name_prefix_fit(char *out, size_t size, const char *prefix, int n_workers)
{
    int digits = 1;
    for (int top = n_workers - 1; top >= 10; top /= 10) digits++;
    int keep = CF__THREAD_NAME_MAX - 1 - digits; /* "-" and the largest N */
    snprintf(out, size, "%.*s", keep, prefix);
}

int cf__steal_attempts(const struct cf__config *c, int n_workers)
{
    if (c && c->steal_attempts > 0) return c->steal_attempts;
    int n = 2 * (n_workers - 1);
    return n > 0 ? n : 1;
}

/* -1: not computed yet. Every thread that finds -1 computes the same value
 * (the environment is the same), so relaxed loads and stores suffice: the
 * cached long carries no other data with it. */
static _Atomic long wait_spin_cache = -1;

long cf__wait_spin_ns(void)
{
    long v = atomic_load_explicit(&wait_spin_cache, memory_order_relaxed);
    if (v >= 0) return v;
    v = WAIT_SPIN_DEFAULT;
    const char *e = getenv(env_names[CF__SET_WAIT_SPIN_NS]);
    long parsed;
    if (e) {
        if (parse_long(e, 0, SPIN_MAX, &parsed)) v = parsed;
        else warn_once(CF__SET_WAIT_SPIN_NS, e, NULL, "20000");
    }
    atomic_store_explicit(&wait_spin_cache, v, memory_order_relaxed);
    return v;
}
