/* cfutures-bench: what the C workload bodies share with the C++ harness.
 *
 * Each workload of docs/WORKLOADS.md is one C function that runs the
 * workload once (pool set-up and tear-down excluded from the measured
 * section), checks its answer, and fills a struct cfb_result: the measured
 * wall time (the harness hands it to Google Benchmark as manual time) and the
 * counters WORKLOADS.md names. bench_main.cc only registers, times and
 * reports; it knows nothing about any workload. */
#ifndef CFB_H
#define CFB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum cfb_status { CFB_OK = 0, CFB_SKIP = 1, CFB_FAIL = 2 };

#define CFB_MAX_COUNTERS 8

struct cfb_result {
    enum cfb_status status;
    double wall_s; /* the measured section, seconds */
    int n_counters;
    struct {
        const char *name; /* static string */
        double value;
    } counters[CFB_MAX_COUNTERS];
    char msg[512]; /* why it failed or was skipped; a note otherwise */
};

typedef void cfb_body(struct cfb_result *r);

struct cfb_workload {
    const char *name; /* as in WORKLOADS.md; baselines are "baseline/<name>" */
    cfb_body *body;
};

/* The workloads, each table ending with {NULL, NULL}: cfutures' thread-pool
 * ones, the mutex+condvar baseline's ("baseline/<name>"), and the process
 * pool ones (cfutures' and the fork+pipes baseline's). The harness runs each
 * cfutures workload followed by its baseline. */
extern const struct cfb_workload cfb_cf_thread_workloads[];
extern const struct cfb_workload cfb_bl_thread_workloads[];
extern const struct cfb_workload cfb_proc_workloads[];
/* The peer the speed targets are set against: the same thread-pool
 * workloads on oneTBB ("tbb/<name>", peer_tbb.cc), run after the baseline.
 * Empty, and cfb_tbb_version() NULL, when the bench was built without
 * oneTBB; else the version of the oneTBB library in use. */
extern const struct cfb_workload cfb_tbb_thread_workloads[];
const char *cfb_tbb_version(void);

/* ---- helpers for the bodies (cfb_util.c) ---- */

/* Size from the environment: the variable `var` if set (strictly parsed:
 * a bad value prints a message and exits with status 2), else def scaled by
 * CFB_SCALE (a positive real, default 1), at least min. */
long cfb_size(const char *var, long def, long min);
/* An integer setting that is not a size: like cfb_size, not scaled. */
long cfb_param(const char *var, long def, long min);
/* A real from the environment (strict), else def (not scaled). */
double cfb_real(const char *var, double def);
/* Workers for every pool: CFB_WORKERS, else the number of CPUs this process
 * may run on. */
int cfb_workers(void);
uint64_t cfb_seed(void); /* CFB_SEED, default 42 */

double cfb_now(void);      /* CLOCK_MONOTONIC, seconds */
uint64_t cfb_now_ns(void); /* CLOCK_MONOTONIC, nanoseconds */
double cfb_cpu_now(void);  /* CLOCK_PROCESS_CPUTIME_ID, seconds */
long cfb_rss_bytes(void);  /* resident set from /proc/self/statm; -1 on error */
/* Give freed memory back to the OS (malloc_trim, and with CF_JEMALLOC a
 * purge of every jemalloc arena), so an RSS difference counts only what is
 * live. */
void cfb_purge_memory(void);
void cfb_sleep_ns(long ns);
/* Busy-spin until ns nanoseconds of CLOCK_MONOTONIC have passed. */
void cfb_spin_ns(uint64_t ns);

/* Run the same CPU-bound kernel on 1 thread, then on w threads at once,
 * and return w * t1 / tw: about w when w CPUs are really available, about 1
 * when a shared host gives this process one. Takes a few tens of ms. */
double cfb_parallel_capacity(int w);

/* splitmix64: the seeded generator of the as_completed durations. */
uint64_t cfb_rand_next(uint64_t *state);

/* Sort samples (ns) in place and return the q-quantile (0 <= q <= 1),
 * nearest rank. */
void cfb_sort_u64(uint64_t *v, size_t n);
uint64_t cfb_quantile(const uint64_t *sorted, size_t n, double q);

void cfb_counter(struct cfb_result *r, const char *name, double value);
/* Mark the result failed / skipped with a printf-style reason. */
void cfb_fail(struct cfb_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfb_skip(struct cfb_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfb_note(struct cfb_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the work itself, shared by cfutures' and the baselines' tasks ---- */

/* The seed's is_prime, exactly as written there (odd trial divisors from 3
 * to int(n**0.5 + 1.5), no test for 2). */
bool cfb_is_prime(int64_t n);
extern const int64_t cfb_primes[6];
extern const bool cfb_primes_expected[6]; /* True x5, False */

/* proc_submit's 64-byte argument for task i and the result derived from it. */
#define CFB_BLOB 64
void cfb_blob_make(uint64_t i, unsigned char arg[CFB_BLOB]);
void cfb_blob_derive(const unsigned char arg[CFB_BLOB], unsigned char res[CFB_BLOB]);
bool cfb_blob_check(uint64_t i, const unsigned char res[CFB_BLOB]);

#ifndef __cplusplus
/* Block until *flag is non-zero (futex wait; no spinning) / set it and wake
 * every waiter. */
void cfb_flag_wait(_Atomic uint32_t *flag);
void cfb_flag_set(_Atomic uint32_t *flag);
#endif

#ifdef __cplusplus
}
#endif
#endif
