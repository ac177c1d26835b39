/* cfutures-bench: environment, clocks, memory and the shared work kernels. */
#include <errno.h>
#ifdef CF_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#include <linux/futex.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cfb.h"
#include "cfutures.h"

#define CFB_STR_(x) #x
#define CFB_STR(x) CFB_STR_(x)

static double scale_factor(void)
{
    static double scale = -1;
    if (scale < 0) {
        const char *s = getenv("CFB_SCALE");
        scale = 1.0;
        if (s && *s) {
            char *end;
            errno = 0;
            double v = strtod(s, &end);
            if (errno || *end || !(v > 0) || !isfinite(v)) {
                fprintf(stderr, "cfutures-bench: CFB_SCALE=%s: expected a positive real\n", s);
                exit(2);
            }
            scale = v;
        }
    }
    return scale;
}

long cfb_size(const char *var, long def, long min)
{
    const char *s = getenv(var);
    if (s && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || *end || v < min) {
            fprintf(stderr, "cfutures-bench: %s=%s: expected an integer >= %ld\n", var, s, min);
            exit(2);
        }
        return v;
    }
    double v = (double)def * scale_factor();
    return v < (double)min ? min : (long)v;
}

long cfb_param(const char *var, long def, long min)
{
    return getenv(var) && *getenv(var) ? cfb_size(var, def, min) : def;
}

double cfb_real(const char *var, double def)
{
    const char *s = getenv(var);
    if (!s || !*s) return def;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || !isfinite(v)) {
        fprintf(stderr, "cfutures-bench: %s=%s: expected a non-negative real\n", var, s);
        exit(2);
    }
    return v;
}

int cfb_workers(void)
{
    static int workers;
    if (!workers) {
        cpu_set_t set;
        int n = 0;
        if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
        if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (n <= 0) n = 1;
        /* CFB_SCALE does not scale the worker count */
        workers = (int)cfb_param("CFB_WORKERS", n, 1);
    }
    return workers;
}

uint64_t cfb_seed(void)
{
    return (uint64_t)cfb_param("CFB_SEED", 42, 0);
}

double cfb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t cfb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double cfb_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long cfb_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

void cfb_purge_memory(void)
{
    cf_trim_memory(); /* the library's kept record chunks */
#ifdef CF_JEMALLOC
    /* Built with CF_JEMALLOC, the library allocates from jemalloc's arenas:
     * purge their dirty pages so freed memory of earlier workloads does not
     * hide RSS growth. */
    mallctl("arena." CFB_STR(MALLCTL_ARENAS_ALL) ".purge", NULL, NULL, NULL, 0);
#endif
    malloc_trim(0);
}

void cfb_sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void cfb_spin_ns(uint64_t ns)
{
    uint64_t end = cfb_now_ns() + ns;
    while (cfb_now_ns() < end)
        ;
}

uint64_t cfb_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void cfb_sort_u64(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
}

uint64_t cfb_quantile(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0) return 0;
    size_t rank = (size_t)ceil(q * (double)n); /* nearest rank, 1-based */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

void cfb_counter(struct cfb_result *r, const char *name, double value)
{
    if (r->n_counters < CFB_MAX_COUNTERS) {
        r->counters[r->n_counters].name = name;
        r->counters[r->n_counters].value = value;
        r->n_counters++;
    }
}

__attribute__((format(printf, 2, 0))) static void set_msg(struct cfb_result *r, const char *fmt,
                                                          va_list ap)
{
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
}

void cfb_fail(struct cfb_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (r->status != CFB_FAIL) /* keep the first failure */
        set_msg(r, fmt, ap);
    va_end(ap);
    r->status = CFB_FAIL;
}

void cfb_skip(struct cfb_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_msg(r, fmt, ap);
    va_end(ap);
    r->status = CFB_SKIP;
}

void cfb_note(struct cfb_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_msg(r, fmt, ap);
    va_end(ap);
}

/* ---- work kernels ---- */

const int64_t cfb_primes[6] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
};
const bool cfb_primes_expected[6] = {true, true, true, true, true, false};

bool cfb_is_prime(int64_t n)
{
    if (n < 2) return false;
    if (n == 2 || n == 3) return true;
    int64_t end = (int64_t)(sqrt((double)n) + 1.5); /* int(n**0.5 + 1.5) */
    for (int64_t k = 3; k < end; k += 2)
        if (n % k == 0) return false;
    return true;
}

void cfb_blob_make(uint64_t i, unsigned char arg[CFB_BLOB])
{
    uint64_t s = i * 0x100000001b3u + 1;
    for (int w = 0; w < CFB_BLOB / 8; w++) {
        uint64_t v = cfb_rand_next(&s);
        memcpy(arg + 8 * w, &v, 8);
    }
}

void cfb_blob_derive(const unsigned char arg[CFB_BLOB], unsigned char res[CFB_BLOB])
{
    for (int j = 0; j < CFB_BLOB; j++)
        res[j] = (unsigned char)(arg[CFB_BLOB - 1 - j] ^ (unsigned char)(j * 37 + 11));
}

bool cfb_blob_check(uint64_t i, const unsigned char res[CFB_BLOB])
{
    unsigned char arg[CFB_BLOB], want[CFB_BLOB];
    cfb_blob_make(i, arg);
    cfb_blob_derive(arg, want);
    return memcmp(want, res, CFB_BLOB) == 0;
}

void cfb_flag_wait(_Atomic uint32_t *flag)
{
    /* acquire: what the setter wrote before cfb_flag_set is visible after. */
    while (atomic_load_explicit(flag, memory_order_acquire) == 0)
        syscall(SYS_futex, flag, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

void cfb_flag_set(_Atomic uint32_t *flag)
{
    /* release: pairs with the acquire load in cfb_flag_wait. */
    atomic_store_explicit(flag, 1, memory_order_release);
    syscall(SYS_futex, flag, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/* ---- how many CPUs this process really gets right now ---- */

static void *capacity_kernel(void *arg)
{
    /* A dependent multiply chain: pure CPU, no memory, not vectorisable. */
    uint64_t x = (uint64_t)(uintptr_t)arg + 1;
    for (long i = 0; i < 3000000; i++) x = x * 6364136223846793005u + 1442695040888963407u;
    return (void *)(uintptr_t)(x | 1);
}

double cfb_parallel_capacity(int w)
{
    static void *volatile sink; /* keeps the call: its result is never 0 */
    if (w > 64) w = 64;
    double t1 = -1, tw = -1;
    int n = 0;
    /* Alternate 1 and w threads three times; the best of each filters the
     * bursts of a shared host out of the ratio. */
    for (int round = 0; round < 3; round++) {
        double t0 = cfb_now();
        sink = capacity_kernel(NULL);
        double d = cfb_now() - t0;
        if (t1 < 0 || d < t1) t1 = d;
        pthread_t th[64];
        t0 = cfb_now();
        for (n = 0; n < w; n++)
            if (pthread_create(&th[n], NULL, capacity_kernel, (void *)(uintptr_t)n) != 0) break;
        for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
        d = cfb_now() - t0;
        if (tw < 0 || d < tw) tw = d;
    }
    (void)sink;
    return n > 0 && tw > 0 ? n * t1 / tw : -1;
}
