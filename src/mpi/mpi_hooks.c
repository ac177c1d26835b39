/* The test hooks of mpi_hooks.h: defined only in the CF_TEST_HOOKS build. */
#include "mpi/mpi_hooks.h"

#ifdef CF_TEST_HOOKS
cf__test_mpi_probe_fn *_Atomic cf__test_mpi_probe;
cf__test_mpi_inject_fn *_Atomic cf__test_mpi_inject;
#else
typedef int cf__mpi_no_hooks; /* not an empty file */
#endif
