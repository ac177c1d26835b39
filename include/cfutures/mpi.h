/* cfutures-mpi: the executor over MPI (library libcfutures-mpi, link it
 * and MPI beside libcfutures; the core library knows nothing of MPI).
 *
 * SPMD mode, as mpi4py's MPICommExecutor: every rank of a communicator
 * calls cf_mpi_executor_new() at the same point. On the root it returns 0
 * and an executor whose tasks run on the other ranks (each runs them on its
 * own cfutures thread pool, so R serving ranks of C cores are one executor
 * of R x C workers). On every other rank it serves tasks until the root
 * shuts the executor down, then returns CF_MPI_SERVED: the rank goes on
 * with its program (usually straight to MPI_Finalize).
 *
 *   MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
 *   cf_executor *ex;
 *   int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
 *   if (rc == 0) { ... cf_submit(ex, ...) ...; cf_executor_free(ex); }
 *   MPI_Finalize();
 *
 * The library duplicates the communicator it is given (it never uses
 * MPI_COMM_WORLD by itself) and never calls MPI_Init or MPI_Finalize.
 * Threads: on the root one progress thread makes every MPI call of the
 * executor, so MPI must be initialised with at least
 * CF_MPI_THREAD_LEVEL (MPI_THREAD_SERIALIZED); a program whose other
 * threads call MPI while the executor lives needs MPI_THREAD_MULTIPLE. On
 * a serving rank only the calling thread calls MPI.
 *
 * Tasks cross ranks by identity: every rank runs the same executable, and
 * a task function is named by the loaded module that holds it (its GNU
 * build-id, else its path) and its offset there. cf_submit returns
 * CF_ENOTSUP when the function cannot be named that way (not in a module
 * every serving rank had loaded when the executor was made). Arguments and
 * results are bytes, as for the process pool; pointers in them mean
 * nothing on another rank. docs/MPI.md has the design. */
#ifndef CFUTURES_MPI_H
#define CFUTURES_MPI_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include "error.h"
#include "executor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What cf_mpi_executor_new returns on a serving rank once the root has
 * shut the executor down (positive: not an error). */
#define CF_MPI_SERVED 1

/* The thread level the executor needs from MPI_Init_thread. */
#define CF_MPI_THREAD_LEVEL MPI_THREAD_SERIALIZED

typedef struct cf_mpi_opts {
    int window;           /* tasks in flight per serving rank (credits); 0: 64,
                           or CFUTURES_MPI_WINDOW */
    int threads;          /* worker threads per serving rank; 0: one per
                           allowed core, or CFUTURES_MPI_THREADS */
    size_t chunk_bytes;   /* largest message of a big argument or result; 0:
                           16 MiB, or CFUTURES_MPI_CHUNK; at most INT_MAX */
    uint64_t reserved[6]; /* room for new options: must be zero */
} cf_mpi_opts;

#define CF_MPI_OPTS_INIT \
    {                    \
        0                \
    }

/* Collective over comm (every rank calls it, with the same root and
 * options). Root: 0 and the executor in *out. Other ranks: serve, then
 * CF_MPI_SERVED (*out NULL). Errors, the same on every rank (*out NULL):
 * CF_EINVAL (out NULL, a bad option, root out of range, comm of one rank),
 * CF_ENOTSUP (MPI not initialised, or with a thread level below
 * CF_MPI_THREAD_LEVEL), CF_ENOMEM, CF_ESYS, CF_EBROKEN (an MPI call or a
 * serving rank's pool failed during setup). */
CF_API int cf_mpi_executor_new(cf_executor **out, MPI_Comm comm, int root, const cf_mpi_opts *opts);

/* Spawn mode (mpi4py's MPIPoolExecutor): start n serving processes of this
 * same program with MPI_Comm_spawn and make the executor over them. Every
 * process of the program calls it at the same point: in the process that
 * MPI started it spawns and returns 0 with the executor; in a spawned
 * process (MPI_Comm_get_parent is not null) it serves and returns
 * CF_MPI_SERVED. argv is passed to the spawned processes (NULL: none).
 * Called by one process of its own (collective over MPI_COMM_SELF).
 * Errors: CF_EINVAL (n < 1), CF_ENOTSUP (thread level, or MPI cannot spawn
 * here: Open MPI needs a launcher, e.g. `mpirun -n 1 ./app`, and free slots
 * or --oversubscribe; the reason is printed on stderr), and as
 * cf_mpi_executor_new. */
CF_API int cf_mpi_executor_spawn(cf_executor **out, int n, char **argv, const cf_mpi_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
