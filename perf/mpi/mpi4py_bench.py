#!/usr/bin/env python3
"""mpi4py_bench.py: the MPI workloads of cfutures-mpi-bench run with
mpi4py.futures, the Python executor that libcfutures-mpi is measured against.

Run it as `mpirun -n 3 python3 mpi4py_bench.py` (the root and 2 serving
ranks). It uses MPICommExecutor: every rank runs this script, rank 0 submits
and the others serve, which is the SPMD mode of cf_mpi_executor_new
(MPIPoolExecutor would spawn its workers with MPI_Comm_spawn instead, which
is cf_mpi_executor_spawn, and needs free slots under the launcher).

  mpi_submit    N tasks, a 64-byte argument -> a 64-byte result derived from
                it (each byte * 3 + 1, the same rule as the C program),
                every result checked; ns_per_task
  mpi_pingpong  one empty task, submit and wait for it, M times;
                p50_ns, p99_ns
  mpi_primes    the seed's is_prime (as in examples/seed_is_prime.h) over
                its six numbers with map, chunksize 1; speedup of the
                2 serving ranks of the world against 1 (ranks 0 and 1)

mpi4py.futures is about a thousand times slower per task than the C
executor, so the default sizes are far smaller than the C program's
(--n 5000, --m 1000 against 200000 and 20000); per-task and per-round-trip
figures do not depend on N or M once each is in the thousands.

Output, on rank 0, one result a line, for tools/bench to read:
  mpi4py <workload> <counter> <value>
Options: --n N, --m M, --reps R (medians of R runs of mpi_submit and
mpi_pingpong; mpi_primes runs once, it takes about a second per run).
"""
import argparse
import math
import statistics
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPICommExecutor

SZ = 64
PRIMES = [112272535095293, 112582705942171, 112272535095293,
          115280095190773, 115797848077099, 1099726899285419]


# ---- the tasks (module level: the serving ranks run this same script, so
# pickle finds them by name there) ----

def derive(arg):
    if len(arg) != SZ:
        raise ValueError("want 64 bytes")
    return bytes((b * 3 + 1) & 0xff for b in arg)


def empty_task():
    return None


def is_prime(n):
    if n < 2:
        return False
    if n in (2, 3):
        return True
    end = int(math.sqrt(n) + 1.5)
    for k in range(3, end, 2):
        if n % k == 0:
            return False
    return True


# ---- the workloads, on the root ----

def argument(i):
    a = bytearray([i & 0xff]) * SZ
    a[0] = (i >> 8) & 0xff
    return bytes(a)


def submit_ns(ex, n):
    t0 = time.perf_counter_ns()
    fs = [ex.submit(derive, argument(i)) for i in range(n)]
    bad = sum(1 for i, f in enumerate(fs) if f.result() != derive(argument(i)))
    t = time.perf_counter_ns() - t0
    if bad:
        print(f"mpi4py mpi_submit: {bad} wrong results", file=sys.stderr)
        sys.exit(1)
    return t / n


def pingpong(ex, m):
    lat = []
    for _ in range(m):
        t0 = time.perf_counter_ns()
        ex.submit(empty_task).result()
        lat.append(time.perf_counter_ns() - t0)
    lat.sort()
    return lat[m // 2], lat[m * 99 // 100]


def primes_s(ex):
    t0 = time.perf_counter()
    found = sum(ex.map(is_prime, PRIMES, chunksize=1))
    t = time.perf_counter() - t0
    if found != 5:
        print(f"mpi4py mpi_primes: {found} primes, want 5", file=sys.stderr)
        sys.exit(1)
    return t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    # Ranks 0 and 1: the executor of one serving rank.
    one = world.Split(0 if rank <= 1 else MPI.UNDEFINED, rank)

    subs, p50s, p99s = [], [], []
    with MPICommExecutor(world, root=0) as ex:
        if ex is not None:
            ex.submit(empty_task).result()   # every serving rank is up
            for _ in range(args.reps):
                subs.append(submit_ns(ex, args.n))
                a, b = pingpong(ex, args.m)
                p50s.append(a)
                p99s.append(b)
            wall2 = primes_s(ex)
    wall1 = None
    if one != MPI.COMM_NULL:
        with MPICommExecutor(one, root=0) as ex:
            if ex is not None:
                ex.submit(empty_task).result()
                wall1 = primes_s(ex)
        one.Free()
    if rank == 0:
        print(f"mpi4py {MPI.Get_library_version().splitlines()[0].strip()}; "
              f"mpi4py {__import__('mpi4py').__version__}; mpirun -n {size}; "
              f"n={args.n} m={args.m} reps={args.reps}")
        print(f"mpi4py mpi_submit ns_per_task {statistics.median(subs):.0f}")
        print(f"mpi4py mpi_pingpong p50_ns {statistics.median(p50s):.0f}")
        print(f"mpi4py mpi_pingpong p99_ns {statistics.median(p99s):.0f}")
        print(f"mpi4py mpi_primes speedup_2_vs_1 {wall1 / wall2:.2f}")


if __name__ == "__main__":
    main()
