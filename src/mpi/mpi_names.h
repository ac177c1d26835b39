/* Naming task functions across ranks. Every rank runs the same executable,
 * but with address-space randomisation a function's address differs from
 * process to process; its place inside the loaded module that holds it
 * does not. A function is named by (module, offset): the module by its
 * GNU build-id (the linker's hash of its contents), or by its path when
 * it has none, and the offset from the module's load bias. The root's
 * table is sent to every serving rank when the executor is made; each
 * serving rank maps the root's module numbers to its own load biases, and
 * the root learns which modules every serving rank has, so a function it
 * cannot name is refused at submit rather than failing remotely.
 *
 * Tables are built once, at construction, and never change afterwards:
 * any thread may read them without a lock. */
#ifndef CF_MPI_NAMES_H
#define CF_MPI_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfutures.h"

#define CF__MPI_KEY_MAX 256 /* a module's identity: 'B' + build-id, or 'P' + path */

struct cf__mpi_module {
    uintptr_t bias;   /* load bias (dl_iterate_phdr's dlpi_addr) */
    uintptr_t lo, hi; /* the executable segments, [lo, hi) */
    uint32_t key_len;
    unsigned char key[CF__MPI_KEY_MAX];
};

struct cf__mpi_modules {
    size_t n;
    struct cf__mpi_module *mod;
    bool *everywhere; /* root only: every serving rank has mod[i] */
};

/* This process's loaded modules that have code. 0 or CF_ENOMEM. */
int cf__mpi_modules_scan(struct cf__mpi_modules *t);
void cf__mpi_modules_free(struct cf__mpi_modules *t);

/* The keys one after the other (uint32 length, bytes), for the root to
 * send; *len gets the size. NULL on ENOMEM. */
unsigned char *cf__mpi_modules_pack(const struct cf__mpi_modules *t, size_t *len);
/* For each of the root's packed modules, this process's bias, or 0 if it
 * has no module with that key: *biases (malloc'd, *n entries). */
int cf__mpi_modules_match(const struct cf__mpi_modules *local, const unsigned char *packed,
                          size_t len, uintptr_t **biases, size_t *n);

/* Name fn: *mod and *off. CF_ENOTSUP if no module every serving rank has
 * holds it. */
int cf__mpi_name(const struct cf__mpi_modules *t, cf_task_fn *fn, uint32_t *mod, uint64_t *off);

#endif
