/* A process pool's resources (proc_life.c): the pool struct, the shared
 * mapping, the registry of live pools' descriptors, and the reference
 * count that frees them. */
#ifndef CF_PROC_LIFE_H
#define CF_PROC_LIFE_H

#include "process/proc_pool.h"

/* A zeroed pool struct for n channels of `depth` slots, cache-line aligned,
 * its locks initialised, its records allocated, one reference held
 * (descriptors -1). NULL without memory. */
struct cf__ppool *cf__pp_struct_new(int n, uint32_t depth);
/* Map the shared memory for p's sizes (depth, stride, spill rings). Under
 * strict overcommit it retries with smaller spill rings, lowering
 * p->arg_max. 0, CF_ENOMEM or CF_ESYS. */
int cf__pp_map_shared(struct cf__ppool *p);
/* The largest argument an argument spill ring of this size takes. */
uint64_t cf__pp_arg_max(uint64_t arg_spill);
/* In a new worker (the zygote's child), unmap every part of the shared
 * mapping that is not the header or channel `chan`'s, and keep the rest
 * out of any fork the worker's tasks make. */
void cf__pp_shm_isolate(struct cf__ppool *p, int chan);

/* Drop a reference (the executor handle, the collector thread, or a
 * future's); the last one closes, unmaps and frees everything. */
void cf__pp_unref(struct cf__ppool *p);
/* The futures' on_free hook: their reference on the pool. */
void cf__pp_on_free(cf_future *f);

/* Descriptors of every live pool, closed by a new zygote (they belong to
 * other pools; a zygote holding them would hide their EOFs). */
void cf__pp_fd_register(int fd);
void cf__pp_fd_unregister(int fd);
void cf__pp_fd_close_registered(void);

#endif
