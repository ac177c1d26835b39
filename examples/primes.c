/* The seed's ProcessPoolExecutor example: is_prime over PRIMES with map,
 * results in input order.
 *
 *   with PE() as exe:
 *       for num, prime in zip(PRIMES, exe.map(is_prime, PRIMES)):
 *           print(f'{num} is prime: {prime}')
 *
 * Run as `primes` for a thread pool, `primes --process` for a process pool:
 * the only difference is the one line that creates the executor. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cfutures.h>

static const int64_t PRIMES[] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
};
#define N_PRIMES (sizeof PRIMES / sizeof PRIMES[0])

#include "seed_is_prime.h"

/* The task: one int64 in, 0 or 1 out. */
static int is_prime_task(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    if (len != sizeof n) return cf_out_error(out, 1, "is_prime wants one int64");
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, is_prime(n));
}

int main(int argc, char **argv)
{
    bool process = argc > 1 && strcmp(argv[1], "--process") == 0;
    if (argc > 2 || (argc == 2 && !process)) {
        fprintf(stderr, "usage: %s [--process]\n", argv[0]);
        return 2;
    }

    cf_executor *exe;
    int err = process ? cf_process_pool_new(&exe, NULL) /* ProcessPoolExecutor() */
                      : cf_thread_pool_new(&exe, NULL); /* ThreadPoolExecutor() */
    if (err) {
        fprintf(stderr, "primes: cannot create the %s pool: %s\n", process ? "process" : "thread",
                cf_strerror(err));
        return 1;
    }

    cf_map_iter *it;
    int rc = cf_map(exe, is_prime_task, PRIMES, sizeof PRIMES[0], N_PRIMES, NULL, &it);
    if (rc == 0) {
        for (size_t i = 0; i < N_PRIMES; i++) {
            int64_t prime;
            rc = cf_map_next_i64(it, &prime);
            if (rc != 0) {
                fprintf(stderr, "primes: %lld: %s\n", (long long)PRIMES[i], cf_strerror(rc));
                break;
            }
            printf("%lld is prime: %s\n", (long long)PRIMES[i], prime ? "True" : "False");
        }
        cf_map_free(it);
    } else {
        fprintf(stderr, "primes: map: %s\n", cf_strerror(rc));
    }
    cf_executor_free(exe);
    return rc == 0 ? 0 : 1;
}
