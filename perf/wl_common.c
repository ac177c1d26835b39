/* cfutures-bench: helpers shared by the cfutures and baseline bodies. */
#include <stdlib.h>

#include "wl.h"

struct cfb_spin_arg *cfb_spin_args(long n, uint64_t *total_ns)
{
    struct cfb_spin_arg *a = malloc((size_t)n * sizeof *a);
    if (!a) return NULL;
    uint64_t max = (uint64_t)cfb_param("CFB_SPIN_MAX_NS", 20000, 0);
    uint64_t s = cfb_seed(), total = 0;
    for (long i = 0; i < n; i++) {
        a[i].idx = i;
        a[i].ns = cfb_rand_next(&s) % (max + 1);
        total += a[i].ns;
    }
    *total_ns = total;
    return a;
}

bool cfb_wait_started(struct cfb_result *r, _Atomic uint32_t *started, unsigned w)
{
    double end = cfb_now() + 30;
    /* relaxed: a count; nothing else is read on its strength. */
    while (atomic_load_explicit(started, memory_order_relaxed) < w) {
        if (cfb_now() > end) {
            cfb_fail(r,
                     "future_bytes: only %u of %u held tasks started: the pool does not "
                     "run one task per worker",
                     atomic_load_explicit(started, memory_order_relaxed), w);
            return false;
        }
        cfb_sleep_ns(100000);
    }
    return true;
}

void cfb_touch(void *p, size_t len)
{
    volatile char *b = p;
    for (size_t i = 0; i < len; i += 4096) b[i] = 0;
    if (len) b[len - 1] = 0;
}

int64_t *cfb_iota(long n)
{
    int64_t *a = malloc((size_t)n * sizeof *a);
    if (a)
        for (long i = 0; i < n; i++) a[i] = i;
    return a;
}

uint64_t cfb_sum_squares(long n)
{
    unsigned __int128 m = (unsigned __int128)n;
    return (uint64_t)(n ? (m - 1) * m * (2 * m - 1) / 6 : 0);
}

void cfb_pingpong_counters(struct cfb_result *r, uint64_t *ns, size_t m, bool p999)
{
    uint64_t total = 0;
    for (size_t i = 0; i < m; i++) total += ns[i];
    cfb_sort_u64(ns, m);
    r->wall_s = (double)total * 1e-9;
    cfb_counter(r, "p50_ns", (double)cfb_quantile(ns, m, 0.50));
    cfb_counter(r, "p99_ns", (double)cfb_quantile(ns, m, 0.99));
    if (p999) cfb_counter(r, "p999_ns", (double)cfb_quantile(ns, m, 0.999));
}

void cfb_idle_measure(struct cfb_result *r, double secs)
{
    double c0 = cfb_cpu_now(), t0 = cfb_now();
    cfb_sleep_ns((long)(secs * 1e9));
    double c1 = cfb_cpu_now(), t1 = cfb_now();
    r->wall_s = t1 - t0;
    cfb_counter(r, "cpu_ms_per_s", (c1 - c0) * 1e3 / (t1 - t0));
}
