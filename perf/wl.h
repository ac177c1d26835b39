/* cfutures-bench: what the cfutures and baseline bodies of one workload
 * share, so both run exactly the same work with the same sizes. */
#ifndef CFB_WL_H
#define CFB_WL_H

#ifndef __cplusplus /* the C++ peer (peer_tbb.cc) uses none of the atomics */
#include <stdatomic.h>
#endif
#include <stdint.h>

#include "cfb.h"

/* as_completed: task idx busy-spins ns nanoseconds and returns idx. */
struct cfb_spin_arg {
    int64_t idx;
    uint64_t ns;
};
/* n arguments with durations uniform in 0..CFB_SPIN_MAX_NS (default 20000)
 * from the seeded generator; *total_ns gets their sum. NULL on ENOMEM. */
struct cfb_spin_arg *cfb_spin_args(long n, uint64_t *total_ns);

#ifndef __cplusplus
/* future_bytes: tasks that hold a worker until release is set. */
struct cfb_hold {
    _Atomic uint32_t release;
    _Atomic uint32_t started;
};
/* Wait (polling, up to 30 s) until *started reaches w; false and r failed
 * if the pool never runs w held tasks at once. */
bool cfb_wait_started(struct cfb_result *r, _Atomic uint32_t *started, unsigned w);
/* Write every page of [p, p + len) so it is resident before a measurement
 * starts. Volatile writes: a memset of calloc'd memory may be removed by
 * the compiler (the bytes are already zero). */
void cfb_touch(void *p, size_t len);
#endif

int64_t *cfb_iota(long n);        /* 0, 1, ..., n-1; NULL on ENOMEM */
uint64_t cfb_sum_squares(long n); /* sum of i*i for i < n, mod 2^64 */

/* p50_ns, p99_ns (and p999_ns) of m round trips; sorts ns; sets wall_s to
 * their sum. */
void cfb_pingpong_counters(struct cfb_result *r, uint64_t *ns, size_t m, bool p999);

/* pingpong_loaded: n CPU-bound threads of the benchmark's own (not pinned:
 * the scheduler spreads them as it would any other busy process) that keep
 * the CPUs busy until cfb_load_stop. NULL if no thread could be started. */
struct cfb_load;
struct cfb_load *cfb_load_start(int n);
void cfb_load_stop(struct cfb_load *load);
/* How many load threads pingpong_loaded runs: CFB_LOAD_THREADS, else one
 * per worker (W: two on a 2-core machine). */
int cfb_load_threads(void);

/* Sleep secs with the pool idle and report cpu_ms_per_s: the process CPU
 * time over that interval (the sleeping caller uses none). */
void cfb_idle_measure(struct cfb_result *r, double secs);

#endif
