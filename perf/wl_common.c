/* cfutures-bench: helpers shared by the cfutures and baseline bodies. */
#include <pthread.h>
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

struct cfb_load {
    _Atomic uint32_t stop;
    int n;
    pthread_t th[];
};

/* A busy loop of integer arithmetic (no system calls, no memory traffic),
 * until stop is set. */
static void *load_body(void *arg)
{
    struct cfb_load *l = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x;
    /* Relaxed: a flag; nothing else is read on its strength. */
    while (!atomic_load_explicit(&l->stop, memory_order_relaxed))
        for (int i = 0; i < 4096; i++) x = x * 6364136223846793005u + 1442695040888963407u;
    return (void *)(uintptr_t)(x | 1);
}

struct cfb_load *cfb_load_start(int n)
{
    struct cfb_load *l = malloc(sizeof *l + (size_t)n * sizeof l->th[0]);
    if (!l) return NULL;
    atomic_init(&l->stop, 0);
    for (l->n = 0; l->n < n; l->n++)
        if (pthread_create(&l->th[l->n], NULL, load_body, l) != 0) break;
    if (l->n == 0) {
        free(l);
        return NULL;
    }
    return l;
}

void cfb_load_stop(struct cfb_load *l)
{
    if (!l) return;
    atomic_store_explicit(&l->stop, 1, memory_order_relaxed);
    for (int i = 0; i < l->n; i++) pthread_join(l->th[i], NULL);
    free(l);
}

int cfb_load_threads(void)
{
    return (int)cfb_param("CFB_LOAD_THREADS", cfb_workers(), 0);
}
