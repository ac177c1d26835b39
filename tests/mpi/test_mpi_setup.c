/* cf_mpi_executor_new's checks, made on every rank and agreed on before
 * any other collective, so that every rank returns the same code and none
 * waits for the others: a thread level below CF_MPI_THREAD_LEVEL, a root
 * out of range, a non-zero reserved option. Then, with everything right,
 * an executor is made and freed with no task at all. MPI is initialised
 * with MPI_THREAD_FUNNELED, too low for the executor, on purpose; the last
 * step needs a second program run (it cannot raise the level), so it is
 * checked only when Open MPI gave more than was asked. */
#include <stdio.h>
#include <stdlib.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

static int failures;

static void expect(const char *what, int got, int want)
{
    if (got != want) {
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        fprintf(stderr, "rank %d: %s: got %d (%s), want %d (%s)\n", rank, what, got,
                cf_strerror(got), want, cf_strerror(want));
        failures++;
    }
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    cf_executor *ex = (cf_executor *)&failures; /* must be reset to NULL */
    int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
    if (provided < CF_MPI_THREAD_LEVEL) {
        expect("thread level too low", rc, CF_ENOTSUP);
        if (ex) {
            fprintf(stderr, "*out not reset\n");
            failures++;
        }
    } else if (rc == 0) {
        cf_executor_free(ex);
    }
    /* Bad arguments fail alike on every rank (none hangs in a collective). */
    cf_mpi_opts o = CF_MPI_OPTS_INIT;
    o.reserved[0] = 1;
    rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, &o);
    expect("reserved option", rc, provided < CF_MPI_THREAD_LEVEL ? CF_ENOTSUP : CF_EINVAL);
    rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, size, NULL);
    expect("root out of range", rc, provided < CF_MPI_THREAD_LEVEL ? CF_ENOTSUP : CF_EINVAL);
    /* The world still works: every rank reaches this barrier. */
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return failures ? 1 : 0;
}
