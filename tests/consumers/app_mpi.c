/* The MPI consumer (tools/check-consumers, tools/check-packages): squares
 * 1..6 on the serving ranks of an MPI executor with cf_map, and the root
 * prints their sum, 91. Run under `mpirun -n 2` or more. */
#include <cfutures.h>
#include <cfutures/mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, 1, "want one int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    cf_executor *exe;
    int rc = cf_mpi_executor_new(&exe, MPI_COMM_WORLD, 0, NULL);
    if (rc == CF_MPI_SERVED) {
        MPI_Finalize();
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "cf_mpi_executor_new: %s\n", cf_strerror(rc));
        MPI_Finalize();
        return 1;
    }
    int64_t xs[] = {1, 2, 3, 4, 5, 6}, sum = 0, y;
    cf_map_iter *it;
    if (cf_map(exe, square, xs, sizeof xs[0], 6, NULL, &it) == 0) {
        while (cf_map_next_i64(it, &y) == 0) sum += y;
        cf_map_free(it);
    }
    cf_executor_free(exe);
    printf("cfutures %s over MPI: sum of squares %lld\n", cf_version(), (long long)sum);
    MPI_Finalize();
    return sum == 91 ? 0 : 1;
}
