"""Load a module that links cfutures with ctypes (dlopen) and run the
primes example through it: True five times, then False, on a thread pool
and on a process pool.  Usage: primes_ctypes.py MODULE.so"""
import ctypes
import sys

mod = ctypes.CDLL(sys.argv[1])
mod.cfx_primes.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
mod.cfx_primes.restype = ctypes.c_int
want = [True] * 5 + [False]
for process in (0, 1):
    answers = (ctypes.c_int * 6)()
    rc = mod.cfx_primes(process, answers, 6)
    got = [bool(a) for a in answers]
    pool = "process" if process else "thread"
    if rc != 0 or got != want:
        sys.exit(f"{pool} pool: rc {rc}, answers {got}, want {want}")
    print(f"{pool} pool: {got}")
