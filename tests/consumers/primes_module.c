/* A small shared module that links cfutures, for loading with dlopen (from
 * Python's ctypes in tools/check-consumers): the primes example's is_prime
 * over its six numbers through cf_map, on a thread pool or a process pool.
 *
 *   int cfx_primes(int process, int *answers, int n)
 *
 * writes is_prime of the six numbers to answers[0..5] (n must be 6) and
 * returns 0, or a negative cfutures error code. */
#include <cfutures.h>
#include <stdint.h>
#include <string.h>

#include "seed_is_prime.h"

static const int64_t PRIMES[] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
};
#define N_PRIMES (int)(sizeof PRIMES / sizeof PRIMES[0])

static int is_prime_task(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    if (len != sizeof n) return cf_out_error(out, 1, "is_prime wants one int64");
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, is_prime(n));
}

__attribute__((visibility("default"))) int cfx_primes(int process, int *answers, int n);

int cfx_primes(int process, int *answers, int n)
{
    if (n != N_PRIMES) return CF_EINVAL;
    cf_executor *exe;
    int rc = process ? cf_process_pool_new(&exe, NULL) : cf_thread_pool_new(&exe, NULL);
    if (rc) return rc;
    cf_map_iter *it;
    rc = cf_map(exe, is_prime_task, PRIMES, sizeof PRIMES[0], N_PRIMES, NULL, &it);
    for (int i = 0; rc == 0 && i < N_PRIMES; i++) {
        int64_t prime;
        rc = cf_map_next_i64(it, &prime);
        answers[i] = (int)prime;
    }
    if (it) cf_map_free(it);
    cf_executor_free(exe);
    return rc;
}
