// cfutures-bench: the thread-pool workloads on oneTBB, the peer the speed
// targets of docs/WORKLOADS.md are stated against. Each body is "tbb/<name>"
// and runs the work of wl_thread.c's <name> with the same sizes, arguments
// and checks; where oneTBB has no future, the comment of the body says what
// stands in for it. The pool is built and its workers seen running before
// the clock starts, and joined after it stops, as for cfutures' pools.
//
// Built only when CMake found oneTBB (CFB_HAVE_TBB); without it the table
// is empty and tools/bench prints n/a in the oneTBB column.
#include <stdint.h>
#include <stdlib.h>

#include "cfb.h"
extern "C" {
#include "wl.h"
}

#ifdef CFB_HAVE_TBB

#include <sched.h>

#include <atomic>
#include <exception>
#include <new>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/concurrent_queue.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

namespace
{

// Every thread of the arena (its `workers` and the caller) inside one task
// at once, or 2 s passed; false then (a busy host did not run them all).
bool start_workers(tbb::task_arena &arena, int workers)
{
    std::atomic<int> in{0};
    arena.execute([&] {
        tbb::task_group g;
        for (int i = 0; i <= workers; i++)
            g.run([&in, workers] {
                // relaxed: a count; the tasks share nothing else.
                in.fetch_add(1, std::memory_order_relaxed);
                double end = cfb_now() + 2;
                while (in.load(std::memory_order_relaxed) <= workers && cfb_now() < end)
                    sched_yield();
            });
        g.wait();
    });
    return in.load(std::memory_order_relaxed) > workers;
}

// How the benchmark thread takes part. oneTBB's calling thread is one of
// the threads that run tasks: it runs them while it waits in
// task_group::wait. With W = cfb_workers():
//  - CALLER_WORKS (submit_flat, fib, map, pingpong: the caller submits, then
//    waits): oneTBB as it comes, an arena of W slots, W - 1 worker threads
//    and the caller, so W threads run tasks as cfutures' W workers do. On
//    this kind of machine that is also the faster set-up: W workers plus a
//    submitting caller is one thread more than there are CPUs.
//  - CALLER_CONSUMES (as_completed: the caller reads completions and runs
//    no task): W worker threads and a slot for the caller, so W threads run
//    tasks there too.
enum caller_role { CALLER_WORKS, CALLER_CONSUMES };

// Run body(arena) on a oneTBB set up as above (global_control lets the
// scheduler create the workers). The workers are started before body and
// joined (finalize) after it, so nothing of one body runs on into the
// next. A oneTBB exception fails the workload.
template <class Body> void with_tbb(cfb_result *r, caller_role role, Body body)
{
    int w = cfb_workers(), workers = role == CALLER_WORKS ? w - 1 : w;
    tbb::task_scheduler_handle handle{tbb::attach{}};
    try {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, (size_t)workers + 1);
        tbb::task_arena arena(workers + 1, 1);
        arena.initialize();
        if (!start_workers(arena, workers))
            cfb_note(r, "oneTBB: not all %d workers were running when the clock started", workers);
        body(arena);
    } catch (const std::exception &e) {
        cfb_fail(r, "oneTBB: %s", e.what());
    }
    if (!tbb::finalize(handle, std::nothrow))
        cfb_note(r, "oneTBB: finalize failed: its worker threads outlived the workload");
}

// The task of submit_flat and map, kept out of line so that every item costs
// one call, as a task function does in cfutures.
__attribute__((noinline)) int64_t ret_arg(int64_t v)
{
    asm volatile("" : "+r"(v)); // not folded into the caller's loop
    return v;
}

__attribute__((noinline)) int64_t square(int64_t v)
{
    asm volatile("" : "+r"(v));
    return v * v;
}

// ---- submit_flat: N task_group::run from the benchmark thread, then
// task_group::wait. A task_group task has no result: each task stores its
// integer in its own slot of an array (cfutures' task writes its future),
// and the results are summed from that array after the wait. ----

void submit_flat(cfb_result *r)
{
    long n = cfb_size("CFB_SUBMIT_FLAT_N", 1000000, 1);
    int64_t *res = (int64_t *)calloc((size_t)n, sizeof *res);
    if (!res) return cfb_fail(r, "out of memory");
    uint64_t sum = 0;
    double wall = 0;
    with_tbb(r, CALLER_WORKS, [&](tbb::task_arena &arena) {
        double t0 = cfb_now();
        arena.execute([&] {
            tbb::task_group g;
            for (long i = 0; i < n; i++) g.run([res, i] { res[i] = ret_arg(i); });
            g.wait();
            for (long i = 0; i < n; i++) sum += (uint64_t)res[i];
        });
        wall = cfb_now() - t0;
    });
    free(res);
    if (r->status != CFB_OK) return;
    uint64_t want = (uint64_t)n * (uint64_t)(n - 1) / 2;
    if (sum != want)
        return cfb_fail(r, "tbb/submit_flat: sum %lu, expected %lu", (unsigned long)sum,
                        (unsigned long)want);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_task", wall * 1e9 / (double)n);
}

// ---- fib: the same recursion, a task_group per call: fib(n-1) is run as
// a task, fib(n-2) computed inline, then task_group::wait (which runs other
// tasks, as the worker blocked in result() must in cfutures). The root is
// run as a task from the benchmark thread and waited for. ----

int64_t fib(int64_t n)
{
    if (n < 2) return n;
    int64_t a = 0;
    tbb::task_group g;
    g.run([&a, n] { a = fib(n - 1); });
    int64_t b = fib(n - 2);
    g.wait();
    return a + b;
}

void fib_bench(cfb_result *r)
{
    int64_t n = cfb_param("CFB_FIB_N", 30, 1);
    if (n > 45) return cfb_fail(r, "CFB_FIB_N=%ld: at most 45", (long)n);
    int64_t fa = 0, fb = 1; // F(k), F(k+1)
    for (int64_t k = 0; k < n; k++) {
        int64_t t = fa + fb;
        fa = fb;
        fb = t;
    }
    int64_t want = fa, calls = 2 * fb - 1, v = -1;
    double wall = 0;
    with_tbb(r, CALLER_WORKS, [&](tbb::task_arena &arena) {
        double t0 = cfb_now();
        arena.execute([&] {
            tbb::task_group g;
            g.run([&v, n] { v = fib(n); });
            g.wait();
        });
        wall = cfb_now() - t0;
    });
    if (r->status != CFB_OK) return;
    if (v != want)
        return cfb_fail(r, "tbb/fib(%ld) = %ld, expected %ld", (long)n, (long)v, (long)want);
    r->wall_s = wall;
    cfb_counter(r, "ns_per_call", wall * 1e9 / (double)calls);
}

// ---- pingpong: M rounds of task_group::run of an empty task and
// task_group::wait, each timed. The waiting caller takes the task back from
// its own deque and runs it, so this is oneTBB's cost of "run one task and
// wait for it", not a round trip to another thread as cfutures' is. ----

void pingpong(cfb_result *r)
{
    long m = cfb_size("CFB_PINGPONG_M", 200000, 1);
    uint64_t *ns = (uint64_t *)malloc((size_t)m * sizeof *ns);
    if (!ns) return cfb_fail(r, "out of memory");
    with_tbb(r, CALLER_WORKS, [&](tbb::task_arena &arena) {
        arena.execute([&] {
            tbb::task_group g;
            for (long i = 0; i < m; i++) {
                uint64_t t0 = cfb_now_ns();
                g.run([] {});
                g.wait();
                ns[i] = cfb_now_ns() - t0;
            }
        });
    });
    if (r->status == CFB_OK) {
        cfb_pingpong_counters(r, ns, (size_t)m, true);
        cfb_note(r, "oneTBB runs the task on the waiting thread: no cross-thread round trip");
    }
    free(ns);
}

// ---- map: tbb::parallel_for (default partitioner) over the N items, each
// writing the square of its argument into the output array, then one pass
// in input order reading and checking every result, as cf_map's consumer
// does. ----

void map_bench(cfb_result *r)
{
    long n = cfb_size("CFB_MAP_N", 1000000, 1);
    int64_t *args = cfb_iota(n);
    int64_t *out = (int64_t *)malloc((size_t)n * sizeof *out);
    if (!args || !out) {
        free(args), free(out);
        return cfb_fail(r, "out of memory");
    }
    uint64_t sum = 0;
    long count = 0, bad = -1;
    double wall = 0;
    with_tbb(r, CALLER_WORKS, [&](tbb::task_arena &arena) {
        double t0 = cfb_now();
        arena.execute([&] {
            tbb::parallel_for(tbb::blocked_range<long>(0, n),
                              [&](const tbb::blocked_range<long> &b) {
                                  for (long i = b.begin(); i != b.end(); i++)
                                      out[i] = square(args[i]);
                              });
        });
        for (long i = 0; i < n; i++) {
            if (out[i] != args[i] * args[i]) {
                bad = i;
                break;
            }
            sum += (uint64_t)out[i];
            count++;
        }
        wall = cfb_now() - t0;
    });
    if (bad >= 0)
        cfb_fail(r, "tbb/map: item %ld = %ld, expected %ld", bad, (long)out[bad],
                 (long)(args[bad] * args[bad]));
    free(args), free(out);
    if (r->status != CFB_OK) return;
    if (count != n || sum != cfb_sum_squares(n))
        return cfb_fail(r, "tbb/map: %ld of %ld items, sum %lu, expected %lu", count, n,
                        (unsigned long)sum, (unsigned long)cfb_sum_squares(n));
    r->wall_s = wall;
    cfb_counter(r, "ns_per_item", wall * 1e9 / (double)n);
}

// ---- as_completed: N task_group::run of the same seeded spins; each task
// pushes its index on a concurrent_bounded_queue when it finishes, and the
// benchmark thread pops N indices as they come (pop sleeps until one is
// there), each seen exactly once; then task_group::wait. The popping thread
// runs no task, so the W workers do all the spinning, as cfutures' do. ----

void as_completed(cfb_result *r)
{
    long n = cfb_size("CFB_AS_COMPLETED_N", 100000, 1);
    uint64_t total_ns;
    cfb_spin_arg *args = cfb_spin_args(n, &total_ns);
    unsigned char *seen = (unsigned char *)calloc((size_t)n, 1);
    if (!args || !seen) {
        free(args), free(seen);
        return cfb_fail(r, "out of memory");
    }
    long count = 0;
    int64_t wrong = -1;
    bool ok = true;
    double wall = 0;
    with_tbb(r, CALLER_CONSUMES, [&](tbb::task_arena &arena) {
        tbb::concurrent_bounded_queue<int64_t> done;
        double t0 = cfb_now();
        arena.execute([&] {
            tbb::task_group g;
            for (long i = 0; i < n; i++)
                g.run([&done, a = args[i]] {
                    cfb_spin_ns(a.ns);
                    done.push(a.idx);
                });
            for (; count < n; count++) {
                int64_t idx = -1;
                done.pop(idx);
                if (idx < 0 || idx >= n || seen[idx]) {
                    wrong = idx, ok = false;
                    break;
                }
                seen[idx] = 1;
            }
            g.wait();
        });
        wall = cfb_now() - t0;
    });
    free(args), free(seen);
    if (r->status != CFB_OK) return;
    if (!ok)
        return cfb_fail(r, "tbb/as_completed: index %ld seen twice or out of range", (long)wrong);
    if (count != n) return cfb_fail(r, "tbb/as_completed: %ld of %ld seen", count, n);
    r->wall_s = wall;
    cfb_counter(r, "efficiency", ((double)total_ns * 1e-9 / cfb_workers()) / wall);
}

} // namespace

const struct cfb_workload cfb_tbb_thread_workloads[] = {
    {"tbb/submit_flat", submit_flat},   {"tbb/fib", fib_bench},
    {"tbb/pingpong", pingpong},         {"tbb/map", map_bench},
    {"tbb/as_completed", as_completed}, {NULL, NULL},
};

const char *cfb_tbb_version(void)
{
    return TBB_runtime_version();
}

#else // no oneTBB: no peer rows

const struct cfb_workload cfb_tbb_thread_workloads[] = {{NULL, NULL}};

const char *cfb_tbb_version(void)
{
    return NULL;
}

#endif
