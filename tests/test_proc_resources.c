/* The process pool's resources: many workers (the zygote's sockets must not
 * deadlock), a retirement storm, resident shared memory under steady load
 * (spill rings give pages back), isolation (a worker maps only its own
 * channel; a pool's mapping is not inherited by later pools' processes),
 * and the checks that catch a task's stray writes into its own channel. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sync/futex.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

/* ---- helpers ---- */

static bool is_mapped(const void *addr)
{
    unsigned char v;
    void *page = (void *)((uintptr_t)addr & ~(uintptr_t)4095);
    return !(mincore(page, 4096, &v) != 0 && errno == ENOMEM);
}

/* Pages of [base, base + len) resident in memory (for a MAP_SHARED
 * mapping: the shared pages, whoever touched them). */
static size_t resident_bytes(const unsigned char *base, size_t len)
{
    enum { CHUNK = 1 << 16 }; /* pages per mincore call */
    static unsigned char vec[CHUNK];
    size_t pages = len / 4096, n = 0;
    for (size_t at = 0; at < pages; at += CHUNK) {
        size_t k = pages - at < CHUNK ? pages - at : CHUNK;
        assert_int_equal(mincore((void *)(base + at * 4096), k * 4096, vec), 0);
        for (size_t i = 0; i < k; i++) n += vec[i] & 1;
    }
    return n * 4096;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A process pool with these options (the test fails if it cannot be made). */
static cf_executor *ppool(cf_process_pool_opts o)
{
    cf_executor *ex = NULL;
    assert_int_equal(cf_process_pool_new(&ex, &o), 0);
    return ex;
}

/* ---- tasks ---- */

static int square_task(const void *arg, size_t len, cf_out *out)
{
    int64_t v;
    if (len != sizeof v) return 1;
    memcpy(&v, arg, sizeof v);
    return cf_out_i64(out, v * v);
}

/* Returns its argument with every byte plus one. */
static int echo_task(const void *arg, size_t len, cf_out *out)
{
    unsigned char *b;
    if (cf_out_alloc(out, len, (void **)&b)) return 1;
    const unsigned char *a = arg;
    for (size_t i = 0; i < len; i++) b[i] = (unsigned char)(a[i] + 1);
    return 0;
}

static int64_t result_i64(cf_future *f)
{
    const void *d;
    size_t len;
    assert_int_equal(cf_future_result(f, CF_FOREVER, &d, &len), 0);
    assert_int_equal(len, sizeof(int64_t));
    int64_t v;
    memcpy(&v, d, sizeof v);
    return v;
}

/* ---- many workers ---- */

static void run_squares(cf_executor *ex, int n)
{
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    assert_non_null(fs);
    for (int i = 0; i < n; i++) {
        int64_t v = i;
        assert_int_equal(cf_submit(ex, square_task, &v, sizeof v, &fs[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(result_i64(fs[i]), (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    free(fs);
}

/* 1,024 workers: the constructor sends a spawn request per worker and the
 * zygote reports each one; more of either than a socket buffer holds used
 * to leave both sides blocked in send(). */
static void test_1024_workers(void **state)
{
    (void)state;
    int n = cf_test_scale() >= 1.0 ? 1024 : 512; /* 512 also hung; sanitizers fork slowly */
    double t0 = now_s();
    cf_executor *ex = ppool((cf_process_pool_opts){.max_workers = n, .ring_depth = 64});
    double t1 = now_s();
    assert_non_null(ex);
    assert_int_equal(cf_executor_workers(ex), n);
    fprintf(stderr, "# %d workers created in %.2f s\n", n, t1 - t0);
    run_squares(ex, 2 * n);
    cf_executor_free(ex);
    fprintf(stderr, "# ... tasks run and pool freed in %.2f s\n", now_s() - t1);
}

/* Every worker retires after one task: a storm of DIED reports and spawn
 * requests crossing on the sockets. */
static void test_retirement_storm(void **state)
{
    (void)state;
    int tasks = (int)(1500 * cf_test_scale());
    if (tasks < 600) tasks = 600;
    cf_executor *ex = ppool(
        (cf_process_pool_opts){.max_workers = 300, .max_tasks_per_child = 1, .ring_depth = 64});
    assert_non_null(ex);
    run_squares(ex, tasks);
    cf_executor_free(ex);
}

/* ---- resident shared memory under steady load ---- */

/* Run `total` echo tasks of `size` bytes, at most `window` in flight. */
static void steady_echo(cf_executor *ex, size_t size, int total, int window)
{
    cf_future **fs = calloc((size_t)window, sizeof *fs);
    unsigned char *a = malloc(size);
    assert_non_null(fs);
    assert_non_null(a);
    for (int done = 0; done < total; done += window) {
        int k = total - done < window ? total - done : window;
        for (int i = 0; i < k; i++) {
            memset(a, (unsigned char)(done + i), size);
            assert_int_equal(cf_submit(ex, echo_task, a, size, &fs[i]), 0);
        }
        for (int i = 0; i < k; i++) {
            const void *d;
            size_t len;
            assert_int_equal(cf_future_result(fs[i], CF_FOREVER, &d, &len), 0);
            assert_int_equal(len, size);
            const unsigned char *b = d;
            assert_int_equal(b[0], (unsigned char)(done + i + 1));
            assert_int_equal(b[size - 1], (unsigned char)(done + i + 1));
            cf_future_release(fs[i]);
        }
    }
    free(a);
    free(fs);
}

static void test_spill_resident_bounded(void **state)
{
    (void)state;
    enum { WORKERS = 2 };
    cf_executor *ex = ppool((cf_process_pool_opts){.max_workers = WORKERS});
    assert_non_null(ex);
    struct cf__ppool *p = (struct cf__ppool *)ex;
    /* What the pool's fixed part (header, control pages, slots) can hold,
     * plus per ring the stated bound beyond records in flight: the window,
     * the guard and two pages. */
    size_t fixed = (size_t)(p->argsp - p->map);
    size_t per_ring_a = cf__pp_spill_window(p->arg_spill) + cf__pp_spill_guard(p->arg_spill) +
                        2 * 4096;
    size_t per_ring_r = cf__pp_spill_window(p->res_spill) + cf__pp_spill_guard(p->res_spill) +
                        2 * 4096;
    size_t spill_base = WORKERS * (per_ring_a + per_ring_r);
    size_t before = resident_bytes(p->map, p->map_len);
    int rounds = 4;
    struct {
        size_t size;
        int total, window;
    } loads[] = {
        {2048, (int)(6000 * cf_test_scale()), 64},
        {200 << 10, (int)(400 * cf_test_scale()), 8},
    };
    for (size_t l = 0; l < sizeof loads / sizeof loads[0]; l++) {
        if (loads[l].total < 4 * loads[l].window) loads[l].total = 4 * loads[l].window;
        /* In flight at most: the window's arguments and results, each
         * record once (plus what a skip at the ring's end wastes). */
        size_t inflight = 2 * (size_t)loads[l].window * (loads[l].size + 4096);
        size_t bound = fixed + spill_base + inflight, worst = 0;
        for (int r = 0; r < rounds; r++) {
            steady_echo(ex, loads[l].size, loads[l].total / rounds, loads[l].window);
            size_t now = resident_bytes(p->map, p->map_len);
            if (now > worst) worst = now;
            if (now > bound)
                fail_msg(
                    "%zu-byte records, round %d: %zu KiB of shared memory resident, bound %zu KiB",
                    loads[l].size, r, now >> 10, bound >> 10);
        }
        fprintf(stderr,
                "# %zu-byte records, %d tasks: resident shared %zu KiB (before %zu KiB, bound %zu "
                "KiB)\n",
                loads[l].size, loads[l].total, worst >> 10, before >> 10, bound >> 10);
    }
    cf_executor_free(ex);
}

/* ---- isolation ---- */

/* The addresses of every channel's parts (computed in the parent, passed
 * to a task as its argument). */
struct chan_parts {
    int n;
    uintptr_t hdr;
    uintptr_t ctl[4], slots[4], arg[4], res[4];
};

static struct chan_parts parts_of(struct cf__ppool *p)
{
    struct chan_parts c = {.n = p->n, .hdr = (uintptr_t)p->map};
    for (int i = 0; i < p->n && i < 4; i++) {
        c.ctl[i] = (uintptr_t)&p->ctl[i];
        c.slots[i] = (uintptr_t)cf__pp_slot(p, i, 0);
        c.arg[i] = (uintptr_t)(p->argsp + (size_t)i * p->arg_spill);
        c.res[i] = (uintptr_t)(p->ressp + (size_t)i * p->res_spill);
    }
    return c;
}

/* In a worker: a bitmask of what is wrong with what it maps (1: another
 * channel's part is mapped, 2: its own is not, 4: a child it forks still
 * maps its channel). */
static int probe_task(const void *arg, size_t len, cf_out *out)
{
    struct chan_parts c;
    if (len != sizeof c) return 1;
    memcpy(&c, arg, sizeof c);
    int chan;
    uint64_t pos;
    cf__proc_test_current(&chan, &pos);
    int64_t bad = 0;
    for (int i = 0; i < c.n; i++) {
        bool m = is_mapped((void *)c.ctl[i]) || is_mapped((void *)c.slots[i]) ||
                 is_mapped((void *)c.arg[i]) || is_mapped((void *)c.res[i]);
        bool all = is_mapped((void *)c.ctl[i]) && is_mapped((void *)c.slots[i]) &&
                   is_mapped((void *)c.arg[i]) && is_mapped((void *)c.res[i]);
        if (i != chan && m) bad |= 1;
        if (i == chan && !all) bad |= 2;
    }
    pid_t kid = fork();
    if (kid == 0) _exit(is_mapped((void *)c.slots[chan]) || is_mapped((void *)c.hdr) ? 1 : 0);
    int st = 0;
    if (kid < 0 || waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad |= 4;
    return cf_out_i64(out, bad);
}

static void test_worker_maps_only_its_channel(void **state)
{
    (void)state;
    cf_executor *ex = ppool((cf_process_pool_opts){.max_workers = 3});
    assert_non_null(ex);
    struct chan_parts c = parts_of((struct cf__ppool *)ex);
    enum { N = 12 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(cf_submit(ex, probe_task, &c, sizeof c, &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(result_i64(fs[i]), 0);
        cf_future_release(fs[i]);
    }
    cf_executor_free(ex);
}

/* Pool A's workers are held on a gate (shared memory made before either
 * pool) while 50 tasks wait in A's rings; a task of pool B, made later,
 * looks for A's slots and, if it can reach them, writes a forged "done"
 * into every queued one. */
static _Atomic uint32_t *gate;

static int held_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    while (!atomic_load_explicit(gate, memory_order_acquire))
        cf__futex_wait(gate, 0, cf__now_ns() + 50000000, true);
    return cf_out_i64(out, -1);
}

struct forge_arg {
    uintptr_t slots;
    size_t bytes, stride;
};

static int forge_task(const void *arg, size_t len, cf_out *out)
{
    struct forge_arg a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    int64_t forged = 0;
    if (is_mapped((void *)a.slots)) {
        forged = 1000; /* reachable at all is a failure; forge to show why */
        for (size_t off = 0; off + a.stride <= a.bytes; off += a.stride) {
            if (!is_mapped((void *)(a.slots + off))) continue;
            struct cf__pslot *s = (void *)(a.slots + off);
            uint32_t v = atomic_load(&s->state);
            if (cf__sk_kind(v) != CF__SK_QUEUED) continue;
            memcpy(cf__pp_inline(s), "forged!!", 8);
            s->res_len = 8;
            s->res_pos = 0;
            s->code = 0;
            s->msg_len = 0;
            s->rflags = 0;
            atomic_store(&s->state, (v & ~CF__SK_KIND) | CF__SK_DONE);
            forged++;
        }
    }
    return cf_out_i64(out, forged);
}

static int mapped_task(const void *arg, size_t len, cf_out *out)
{
    uintptr_t a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    return cf_out_i64(out, is_mapped((void *)a));
}

static void test_pools_isolated(void **state)
{
    (void)state;
    gate = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(gate != MAP_FAILED);
    cf_executor *a = ppool((cf_process_pool_opts){.max_workers = 2, .ring_depth = 64});
    assert_non_null(a);
    struct cf__ppool *pa = (struct cf__ppool *)a;
    enum { Q = 50 };
    cf_future *held[2], *fs[Q];
    for (int i = 0; i < 2; i++) assert_int_equal(cf_submit(a, held_task, NULL, 0, &held[i]), 0);
    for (int i = 0; i < Q; i++) {
        int64_t v = i + 3;
        assert_int_equal(cf_submit(a, square_task, &v, sizeof v, &fs[i]), 0);
    }
    cf_executor *b = ppool((cf_process_pool_opts){.max_workers = 1});
    assert_non_null(b);
    struct forge_arg fa = {.slots = (uintptr_t)pa->slots,
                           .bytes = (size_t)pa->depth * pa->stride * (size_t)pa->n,
                           .stride = pa->stride};
    cf_future *f;
    assert_int_equal(cf_submit(b, forge_task, &fa, sizeof fa, &f), 0);
    assert_int_equal(result_i64(f), 0); /* A's slots are not even mapped in B's worker */
    cf_future_release(f);

    atomic_store_explicit(gate, 1, memory_order_release);
    cf__futex_wake(gate, INT32_MAX, true);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(result_i64(held[i]), -1);
        cf_future_release(held[i]);
    }
    for (int i = 0; i < Q; i++) { /* every result is A's own */
        assert_int_equal(result_i64(fs[i]), (int64_t)(i + 3) * (i + 3));
        cf_future_release(fs[i]);
    }
    uintptr_t a_map = (uintptr_t)pa->map;
    cf_executor_free(a); /* returns: nothing of A lives on in B */
    assert_int_equal(cf_submit(b, mapped_task, &a_map, sizeof a_map, &f), 0);
    assert_int_equal(result_i64(f), 0);
    cf_future_release(f);
    cf_executor_free(b);
    munmap((void *)gate, 4096);
}

/* ---- stray writes into a task's own channel ---- */

/* Shared between the test and the workers (mapped before the pools). */
struct stray {
    _Atomic uint32_t gate1, gate2, scribbled;
    _Atomic uint32_t runs[16];
};
static struct stray *st;

static void wait_gate(_Atomic uint32_t *g)
{
    while (!atomic_load_explicit(g, memory_order_acquire))
        cf__futex_wait(g, 0, cf__now_ns() + 50000000, true);
}

static void open_gate(_Atomic uint32_t *g)
{
    atomic_store_explicit(g, 1, memory_order_release);
    cf__futex_wake(g, INT32_MAX, true);
}

static int gated_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    wait_gate(&st->gate1);
    return cf_out_i64(out, -1);
}

/* Counts its run and returns its id times 10. */
static int id_task(const void *arg, size_t len, cf_out *out)
{
    uint32_t id;
    if (len != sizeof id) return 1;
    memcpy(&id, arg, sizeof id);
    if (id < 16) atomic_fetch_add_explicit(&st->runs[id], 1, memory_order_relaxed);
    return cf_out_i64(out, (int64_t)id * 10);
}

struct scribble_slots {
    uintptr_t slot[8];
    int n;
    bool results; /* over the results (else over the arguments) */
};

/* Overwrites bytes in other slots of its own channel: the arguments of the
 * tasks queued behind it, or the results its worker left uncollected. */
static int scribble_task(const void *arg, size_t len, cf_out *out)
{
    struct scribble_slots a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    for (int i = 0; i < a.n; i++) {
        struct cf__pslot *s = (void *)a.slot[i];
        uint32_t id = 7; /* a valid argument for another task, or a plausible result */
        if (a.results) {
            int64_t v = 70;
            memcpy(cf__pp_inline(s), &v, sizeof v);
        } else {
            memcpy(cf__pp_inline(s), &id, sizeof id);
        }
    }
    open_gate(&st->scribbled);
    return cf_out_i64(out, 0);
}

static void hold_collector(cf_future *f, void *ud)
{
    (void)f, (void)ud;
    wait_gate(&st->gate2);
}

/* A task rewrites the arguments of the five tasks queued behind it on its
 * worker: none of them may run with a rewritten argument; the worker finds
 * the parent's check broken and the pool breaks. */
static void test_stray_write_over_queued_arguments(void **state)
{
    (void)state;
    memset(st, 0, sizeof *st);
    cf_executor *ex = ppool((cf_process_pool_opts){.max_workers = 1, .ring_depth = 64});
    assert_non_null(ex);
    struct cf__ppool *p = (struct cf__ppool *)ex;
    /* A fresh pool: the gated task takes position 0, the scribbler 1, the
     * tasks 2..6. */
    struct scribble_slots a = {.n = 5, .results = false};
    for (int i = 0; i < 5; i++) a.slot[i] = (uintptr_t)cf__pp_slot(p, 0, 2 + (uint64_t)i);
    cf_future *g, *h, *fs[5];
    assert_int_equal(cf_submit(ex, gated_task, NULL, 0, &g), 0);
    assert_int_equal(cf_submit(ex, scribble_task, &a, sizeof a, &h), 0);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(cf_submit(ex, id_task, &i, sizeof i, &fs[i]), 0);
    open_gate(&st->gate1);
    assert_int_equal(result_i64(g), -1);
    assert_int_equal(result_i64(h), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        cf_future_release(fs[i]);
    }
    for (int i = 0; i < 16; i++) assert_int_equal(atomic_load(&st->runs[i]), 0);
    cf_future_release(g);
    cf_future_release(h);
    cf_executor_free(ex);
}

/* The collector is held (in a done-callback) while a task overwrites the
 * results of the five tasks before it, done but not yet collected: none of
 * those values may be returned; the parent finds the worker's check broken
 * and the pool breaks. */
static void test_stray_write_over_uncollected_results(void **state)
{
    (void)state;
    memset(st, 0, sizeof *st);
    cf_executor *ex = ppool((cf_process_pool_opts){.max_workers = 1, .ring_depth = 64});
    assert_non_null(ex);
    struct cf__ppool *p = (struct cf__ppool *)ex;
    struct scribble_slots a = {.n = 5, .results = true};
    for (int i = 0; i < 5; i++) a.slot[i] = (uintptr_t)cf__pp_slot(p, 0, 1 + (uint64_t)i);
    cf_future *g, *h, *fs[5];
    assert_int_equal(cf_submit(ex, gated_task, NULL, 0, &g), 0);
    assert_int_equal(cf_future_add_done_callback(g, hold_collector, NULL), 0);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(cf_submit(ex, id_task, &i, sizeof i, &fs[i]), 0);
    assert_int_equal(cf_submit(ex, scribble_task, &a, sizeof a, &h), 0);
    open_gate(&st->gate1);
    wait_gate(&st->scribbled); /* the five are done, and overwritten, before any is collected */
    open_gate(&st->gate2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cf_future_result(fs[i], CF_FOREVER, NULL, NULL), CF_EBROKEN);
        cf_future_release(fs[i]);
    }
    assert_int_equal(result_i64(g), -1);
    cf_future_release(g);
    cf_future_release(h);
    cf_executor_free(ex);
}

int main(void)
{
    st = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(st != MAP_FAILED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1024_workers),
        cmocka_unit_test(test_retirement_storm),
        cmocka_unit_test(test_spill_resident_bounded),
        cmocka_unit_test(test_worker_maps_only_its_channel),
        cmocka_unit_test(test_pools_isolated),
        cmocka_unit_test(test_stray_write_over_queued_arguments),
        cmocka_unit_test(test_stray_write_over_uncollected_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
