/* The seed's primes example over MPI: the same is_prime over the same six
 * numbers with cf_map, results in input order. Against examples/primes.c
 * only the constructor line differs (and MPI's own start and end):
 *
 *   mpirun -n 3 ./primes_mpi     # rank 0 prints, ranks 1 and 2 compute
 *
 * On the serving ranks cf_mpi_executor_new runs their share of the tasks
 * and returns CF_MPI_SERVED when rank 0 frees the executor. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

static const int64_t PRIMES[] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
};
#define N_PRIMES (sizeof PRIMES / sizeof PRIMES[0])

#include "../seed_is_prime.h"

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
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);

    cf_executor *exe;
    int err = cf_mpi_executor_new(&exe, MPI_COMM_WORLD, 0, NULL); /* MPICommExecutor() */
    if (err == CF_MPI_SERVED) { /* a serving rank: its part is done */
        MPI_Finalize();
        return 0;
    }
    if (err) {
        fprintf(stderr, "primes_mpi: cannot create the MPI executor: %s\n", cf_strerror(err));
        MPI_Finalize();
        return 1;
    }

    cf_map_iter *it;
    int rc = cf_map(exe, is_prime_task, PRIMES, sizeof PRIMES[0], N_PRIMES, NULL, &it);
    if (rc == 0) {
        for (size_t i = 0; i < N_PRIMES; i++) {
            int64_t prime;
            rc = cf_map_next_i64(it, &prime);
            if (rc != 0) {
                fprintf(stderr, "primes_mpi: %lld: %s\n", (long long)PRIMES[i], cf_strerror(rc));
                break;
            }
            printf("%lld is prime: %s\n", (long long)PRIMES[i], prime ? "True" : "False");
        }
        cf_map_free(it);
    } else {
        fprintf(stderr, "primes_mpi: map: %s\n", cf_strerror(rc));
    }
    cf_executor_free(exe);
    MPI_Finalize();
    return rc == 0 ? 0 : 1;
}
