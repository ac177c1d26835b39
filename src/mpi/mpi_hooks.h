/* The root's USDT probes, and the test hooks of libcfutures-mpi.
 *
 * Probes (provider "cfutures", as the pools'; docs/PROFILING.md): the root
 * fires `submit` (executor, future) when a task is queued, `start` (serving
 * rank, future) when it sends the task to that rank (the root does not hear
 * when a worker there begins it), and `finish` (serving rank, future) when
 * the result arrived, before the future completes. The core fires
 * `future_done` and `cancel` for MPI futures as for any future.
 *
 * Test hooks exist only under CF_TEST_HOOKS (the tests' build of these
 * sources, never the installed library); elsewhere they cost nothing:
 * - cf__test_mpi_probe: called at each probe site with the probe's name and
 *   arguments, so a test can count firings without a tracer.
 * - cf__test_mpi_inject: asked before each MPI call it guards (what, peer);
 *   a return other than MPI_SUCCESS is taken as that call's error code and
 *   the call is not made, so the executor's own failure path can be driven
 *   where the MPI library would end the job instead.
 * Both are read with relaxed loads: a test may set them while an executor
 * runs; what the hook itself touches is the test's to synchronise. */
#ifndef CF_MPI_HOOKS_H
#define CF_MPI_HOOKS_H

#include <mpi.h>
#include <stdint.h>

#include "cfutures.h"
#include "sys/probes.h"

#ifdef CF_TEST_HOOKS
#include <stdatomic.h>

typedef void cf__test_mpi_probe_fn(const char *name, uintptr_t a, const cf_future *f);
typedef int cf__test_mpi_inject_fn(const char *what, int peer);
extern cf__test_mpi_probe_fn *_Atomic cf__test_mpi_probe;
extern cf__test_mpi_inject_fn *_Atomic cf__test_mpi_inject;

static inline void cf__mpi_probe_hook(const char *name, uintptr_t a, const cf_future *f)
{
    cf__test_mpi_probe_fn *h = atomic_load_explicit(&cf__test_mpi_probe, memory_order_relaxed);
    if (h) h(name, a, f);
}
static inline int cf__mpi_inject(const char *what, int peer)
{
    cf__test_mpi_inject_fn *h = atomic_load_explicit(&cf__test_mpi_inject, memory_order_relaxed);
    return h ? h(what, peer) : MPI_SUCCESS;
}
#define CF__MPI_PROBE2(name, a, f)                    \
    do {                                              \
        CF__PROBE2(name, a, f);                       \
        cf__mpi_probe_hook(#name, (uintptr_t)(a), f); \
    } while (0)
#else
#define CF__MPI_PROBE2(name, a, f) CF__PROBE2(name, a, f)
#define cf__mpi_inject(what, peer) MPI_SUCCESS
#endif

#endif
