/* Spawn mode: MPI_Comm_spawn of this same program, then the SPMD
 * constructor over the parent and its children merged into one
 * intracommunicator (the parent is rank 0, its root). The children run the
 * program's main from the start, reach the same call, find their parent
 * and serve. */
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "cfutures/mpi.h"

static int program_path(char *buf, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0) return CF_ESYS;
    buf[n] = 0;
    return 0;
}

CF_API int cf_mpi_executor_spawn(cf_executor **out, int n, char **argv, const cf_mpi_opts *opts)
{
    if (out) *out = NULL;
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    if (!inited) return CF_ENOTSUP;
    MPI_Comm parent = MPI_COMM_NULL, merged;
    MPI_Comm_get_parent(&parent);
    if (parent != MPI_COMM_NULL) {
        /* A spawned process: join the parent and serve. */
        if (MPI_Intercomm_merge(parent, 1, &merged) != MPI_SUCCESS) return CF_EBROKEN;
        int rc = cf_mpi_executor_new(NULL, merged, 0, opts);
        /* The parent communicator stays: MPI_Finalize disconnects it on
         * both sides (disconnecting here would wait for the parent). */
        MPI_Comm_free(&merged);
        return rc;
    }
    if (!out || n < 1) return CF_EINVAL;
    MPI_Query_thread(&provided);
    if (provided < CF_MPI_THREAD_LEVEL) return CF_ENOTSUP;
    char path[PATH_MAX];
    int rc = program_path(path, sizeof path);
    if (rc) return rc;
    MPI_Comm inter;
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int err = MPI_Comm_spawn(path, argv ? argv : MPI_ARGV_NULL, n, MPI_INFO_NULL, 0, MPI_COMM_SELF,
                             &inter, MPI_ERRCODES_IGNORE);
    if (err != MPI_SUCCESS) {
        char s[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(err, s, &len);
        fprintf(stderr,
                "cfutures-mpi: MPI_Comm_spawn of %d processes failed: %s (start the program "
                "with a launcher, e.g. `mpirun -n 1`, with free slots or --oversubscribe)\n",
                n, s);
        return CF_ENOTSUP;
    }
    if (MPI_Intercomm_merge(inter, 0, &merged) != MPI_SUCCESS) return CF_EBROKEN;
    rc = cf_mpi_executor_new(out, merged, 0, opts);
    /* The executor has its own duplicate; the children keep theirs until
     * they are told to stop. */
    MPI_Comm_free(&merged);
    MPI_Comm_free(&inter);
    return rc;
}
