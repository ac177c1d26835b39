/* What happens when a serving rank dies (its task aborts the process)
 * under Open MPI: mpirun sees the rank's death, ends the whole job and
 * names the rank; the root does not wait forever. ctest passes this
 * program when mpirun's message names the dead rank (cmake/mpi.cmake) and
 * fails it if the root ever sees a result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

static int die_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    (void)out;
    abort();
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    cf_executor *ex;
    int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
    if (rc == CF_MPI_SERVED) {
        MPI_Finalize();
        return 0;
    }
    if (rc) {
        fprintf(stderr, "cf_mpi_executor_new: %s\n", cf_strerror(rc));
        return 1;
    }
    cf_future *f;
    if (cf_submit(ex, die_task, NULL, 0, &f) == 0) {
        rc = cf_future_result(f, 60.0, NULL, NULL);
        /* Reached only if the job outlives the dead rank. */
        printf("root: the task's future ended with %s\n", cf_strerror(rc));
        if (rc == 0) printf("UNEXPECTED result\n");
        cf_future_release(f);
    }
    cf_executor_free(ex);
    MPI_Finalize();
    return 1;
}
