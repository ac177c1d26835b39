/* The MPI executor's pieces: the root's executor (mpi_root.c), the
 * serving rank's loop (mpi_serve.c), and what the collective constructor
 * (mpi_new.c) hands them. */
#ifndef CF_MPI_EXEC_H
#define CF_MPI_EXEC_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "cfutures.h"
#include "mpi/mpi_names.h"

/* What every rank agrees on at construction. */
struct cf__mpi_setup {
    MPI_Comm comm; /* our duplicate of the user's communicator */
    int root, rank, size;
    int window;   /* tasks in flight per serving rank */
    int threads;  /* pool workers per serving rank (0: one per core) */
    size_t chunk; /* bytes per BULK message */
    /* cf_map's copy-mode chunk task and where its argument keeps the item
     * function's address (found by mpi_new.c's probe; the same in every
     * rank, which runs the same build). */
    cf_task_fn *map_fn;
    size_t map_fn_at; /* SIZE_MAX: not found */
};

/* Root: the executor, given the module table (ownership moves) and each
 * serving rank's worker count (workers[rank], 0 for the root). Starts the
 * progress thread. 0, CF_ENOMEM or CF_ESYS (then nothing was started; the
 * caller still owns comm). */
int cf__mpi_root_new(cf_executor **out, const struct cf__mpi_setup *s, struct cf__mpi_modules *mods,
                     const int *workers);

/* Serving rank: run tasks from the root on pool until it says shutdown.
 * biases[i] is this process's bias for the root's module i (+1; 0: not
 * loaded here). Returns CF_MPI_SERVED or CF_EBROKEN (an MPI call failed). */
int cf__mpi_serve(const struct cf__mpi_setup *s, cf_executor *pool, const uintptr_t *biases,
                  size_t n_biases);

#endif
