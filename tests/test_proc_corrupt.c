/* The parent trusts nothing a worker wrote (SEMANTICS 33). Worker-side code
 * deliberately corrupts the shared rings in several ways (bad lengths, bad
 * spill positions, unknown flags, bad states and generations, huge
 * counters, garbage over whole rings, seeded random scribbles); each time
 * the parent must stay in bounds (ASan watches it in that build), fail the
 * affected futures with CF_EBROKEN (the pool is then broken), and never
 * hang: every future resolves and shutdown returns.
 *
 * Two ways in: cf__proc_test_after_result, a hook the worker calls after
 * writing a result header and before publishing it (set before the pool is
 * created, so workers inherit it), and tasks that find the mapping with
 * cf__proc_test_shm / cf__proc_test_current and write over it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfutures.h"
#include "process/proc_pool.h"
#include "support/test_env.h"

enum mode {
    M_NONE,
    M_RES_LEN_HUGE,   /* inline result length 2^40 */
    M_RES_LEN_SLOT,   /* inline result longer than the slot */
    M_MSG_LEN,        /* message length 2^30 on a failure */
    M_FLAGS,          /* unknown result flag */
    M_SPILL_POS,      /* spill record far beyond the ring */
    M_SPILL_STRADDLE, /* spill record across the ring's end */
    M_STATE_GARBAGE,  /* the slot's state word overwritten */
    M_STATE_GEN,      /* DONE with another position's generation */
    M_LEN_ON_FAIL,    /* a failure that also claims result bytes */
    M_MSG_NUL,        /* a failure message with a NUL byte inside */
};

struct shared {
    _Atomic int mode;
    _Atomic uint32_t fired;
};
static struct shared *sh;

static void after_result(void *slot)
{
    struct cf__pslot *s = slot;
    int m = atomic_load_explicit(&sh->mode, memory_order_acquire);
    if (m == M_NONE) return;
    /* one shot: the hook corrupts the first result written after arming */
    int want = m;
    if (!atomic_compare_exchange_strong(&sh->mode, &want, M_NONE)) return;
    int chan;
    uint64_t pos;
    cf__proc_test_current(&chan, &pos);
    switch (m) {
    case M_RES_LEN_HUGE: s->res_len = 1ull << 40; break;
    case M_RES_LEN_SLOT: s->res_len = 100000; break;
    case M_MSG_LEN:
        s->code = 3;
        s->res_len = 0;
        s->msg_len = 1u << 30;
        break;
    case M_FLAGS: s->rflags = 0x80; break;
    case M_SPILL_POS:
        s->rflags = CF__PR_SPILL;
        s->res_len = 100;
        s->res_pos = 0xffffffffffff0000ull;
        break;
    case M_SPILL_STRADDLE:
        s->rflags = CF__PR_SPILL;
        s->res_len = 8192;
        s->res_pos = (1ull << 30) - 100;
        break;
    case M_STATE_GARBAGE: atomic_store(&s->state, 0xdeadbeefu); break;
    case M_STATE_GEN: atomic_store(&s->state, cf__sk_make(CF__SK_DONE, pos + 5)); break;
    case M_LEN_ON_FAIL:
        s->code = 4;
        s->res_len = 8;
        break;
    case M_MSG_NUL: /* the parent would free it as a 2-byte string */
        s->code = 5;
        s->res_len = 0;
        s->rflags = 0;
        s->msg_len = 40;
        memcpy(cf__pp_inline(s), "ab\0cdefghijklmnopqrstuvwxyz0123456789ABC", 40);
        break;
    default: break;
    }
    atomic_fetch_add(&sh->fired, 1);
}

static int value_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, 11);
}

/* ---- tasks that write over the mapping ---- */

enum scribble { S_NEXT_STATES, S_ALL_SLOTS, S_RES_TAIL, S_DOORBELL, S_RANDOM };
struct scribble_arg {
    int what;
    uint64_t seed;
    int count;
};

static int scribble_task(const void *arg, size_t len, cf_out *out)
{
    struct scribble_arg a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    size_t maplen;
    unsigned char *m = cf__proc_test_shm(&maplen);
    int chan;
    uint64_t pos;
    cf__proc_test_current(&chan, &pos);
    if (!m) return 2;
    /* Our own layout, as the pool computed it (process_pool.c): the header
     * page, one control page per channel, then each channel's slot block
     * (64 slots of 64 + 256 bytes: whole pages). A worker maps only the
     * header and its own channel. */
    struct cf__pshm_hdr *hdr = (void *)m;
    struct cf__pchan_ctl *ctl = (void *)(m + 4096);
    unsigned char *slots = m + 4096 + 2 * 4096;
    size_t block = (size_t)64 * (64 + 256);
    unsigned char *own = slots + (size_t)chan * block;
    switch (a.what) {
    case S_NEXT_STATES: /* the next slots of this channel: bad states */
        for (int i = 1; i <= 3; i++) {
            struct cf__pslot *s = (void *)(slots +
                                           (((size_t)chan * 64 + ((pos + i) & 63)) * (64 + 256)));
            atomic_store(&s->state, 0x7fffffffu - (uint32_t)i);
        }
        break;
    case S_ALL_SLOTS: /* garbage over this channel's whole ring */ memset(own, 0xa5, block); break;
    case S_RES_TAIL: /* a huge counter where the worker reads its spill tail */
        atomic_store(&ctl[chan].res_tail, UINT64_MAX - 5);
        break;
    case S_DOORBELL: /* a lying doorbell: results must still be collected */
        atomic_store(&hdr->coll_sleeping, 0x12345678u);
        break;
    case S_RANDOM: {
        /* Our control page's words, then our slot block. */
        uint64_t st = a.seed;
        size_t span = 4096 + block;
        for (int i = 0; i < a.count; i++) {
            size_t off = (size_t)(cf_test_rand(&st) % (span / 4)) * 4;
            uint32_t v = (uint32_t)cf_test_rand(&st);
            /* Leave task function addresses alone: a scribbled one makes a
             * worker jump into the unknown (it usually dies, which is the
             * crash tests' business, but it could also loop forever). */
            if (off >= 4096 && (off - 4096) % (64 + 256) >= 8 && (off - 4096) % (64 + 256) < 16)
                continue;
            unsigned char *at = off < 4096 ? (unsigned char *)&ctl[chan] + off : own + (off - 4096);
            memcpy(at, &v, sizeof v);
        }
        break;
    }
    default: break;
    }
    if (a.what == S_RES_TAIL) {
        void *b; /* needs the spill ring */
        if (cf_out_alloc(out, 100000, &b) == 0) memset(b, 1, 100000);
        return 0;
    }
    return cf_out_i64(out, 5);
}

/* ---- helpers ---- */

/* Workers inherit the test runner's signal handlers (fork semantics); a
 * worker that crashes must die of it, not jump back into the runner. */
static int default_crash_signals(void *arg)
{
    (void)arg;
    int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        unsigned long ksa[4] = {0, 0, 0, 0}; /* the raw call: sanitizers keep out */
        syscall(SYS_rt_sigaction, sigs[i], ksa, NULL, 8);
    }
    return 0;
}

static cf_executor *pool2(void)
{
    int err;
    /* The layout the scribblers assume: 2 channels of 64 slots of 256 B. */
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = 2,
                                                           .ring_depth = 64,
                                                           .slot_size = 256,
                                                           .initializer = default_crash_signals});
    assert_int_equal(err, 0);
    assert_non_null(ex);
    return ex;
}

/* Every future resolves; returns how many failed with CF_EBROKEN. */
static int drain(cf_future **fs, int n, bool *saw_corrupt)
{
    int broken = 0;
    for (int i = 0; i < n; i++) {
        int rc = cf_future_result(fs[i], CF_FOREVER, NULL, NULL);
        assert_true(rc == 0 || rc == CF_EBROKEN || rc == CF_ETASK);
        if (rc == CF_EBROKEN) {
            int code;
            const char *msg;
            assert_int_equal(cf_future_exception(fs[i], 0, &code, &msg), 0);
            assert_non_null(msg);
            if (strstr(msg, "corrupt")) *saw_corrupt = true;
            broken++;
        }
        cf_future_release(fs[i]);
    }
    return broken;
}

/* Submit n tasks (the 6th a scribbler when a is given); the pool may break
 * while we submit, and then submissions fail with CF_EBROKEN. Returns how
 * many went in. */
static int submit_until_broken(cf_executor *ex, cf_future **fs, int n, struct scribble_arg *a)
{
    for (int i = 0; i < n; i++) {
        int rc = a && i == 5 ? cf_submit(ex, scribble_task, a, sizeof *a, &fs[i])
                             : cf_submit(ex, value_task, NULL, 0, &fs[i]);
        if (rc == CF_EBROKEN) return i;
        assert_int_equal(rc, 0);
    }
    return n;
}

static void run_hook_mode(enum mode m)
{
    cf_executor *ex = pool2();
    atomic_store(&sh->fired, 0);
    atomic_store(&sh->mode, m);
    enum { N = 20 };
    cf_future *fs[N];
    int n = submit_until_broken(ex, fs, N, NULL);
    bool corrupt = false;
    int broken = drain(fs, n, &corrupt);
    assert_int_equal(atomic_load(&sh->fired), 1);
    if (!broken || !corrupt) fail_msg("mode %d: %d broken, corrupt named: %d", m, broken, corrupt);
    cf_future *f;
    assert_int_equal(cf_submit(ex, value_task, NULL, 0, &f), CF_EBROKEN);
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
    atomic_store(&sh->mode, M_NONE);
}

static void test_bad_lengths(void **state)
{
    (void)state;
    run_hook_mode(M_RES_LEN_HUGE);
    run_hook_mode(M_RES_LEN_SLOT);
    run_hook_mode(M_MSG_LEN);
    run_hook_mode(M_LEN_ON_FAIL);
    run_hook_mode(M_MSG_NUL);
}

static void test_bad_flags_and_spill_positions(void **state)
{
    (void)state;
    run_hook_mode(M_FLAGS);
    run_hook_mode(M_SPILL_POS);
    run_hook_mode(M_SPILL_STRADDLE);
}

static void test_bad_states(void **state)
{
    (void)state;
    run_hook_mode(M_STATE_GARBAGE);
    run_hook_mode(M_STATE_GEN);
}

static void run_scribble(struct scribble_arg a, bool expect_broken)
{
    cf_executor *ex = pool2();
    enum { N = 40 };
    cf_future *fs[N];
    int n = submit_until_broken(ex, fs, N, &a);
    bool corrupt = false;
    int broken = drain(fs, n, &corrupt);
    if (expect_broken) {
        if (!broken || !corrupt)
            fail_msg("scribble %d: %d broken, corrupt named: %d", a.what, broken, corrupt);
        cf_future *f;
        assert_int_equal(cf_submit(ex, value_task, NULL, 0, &f), CF_EBROKEN);
    }
    assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
    cf_executor_free(ex);
}

static void test_bad_indices_and_states_in_rings(void **state)
{
    (void)state;
    run_scribble((struct scribble_arg){.what = S_NEXT_STATES}, true);
    run_scribble((struct scribble_arg){.what = S_ALL_SLOTS}, true);
}

static void test_huge_counters(void **state)
{
    (void)state;
    run_scribble((struct scribble_arg){.what = S_RES_TAIL}, true);
    /* A lying doorbell only delays the collector; nothing breaks or hangs. */
    run_scribble((struct scribble_arg){.what = S_DOORBELL}, false);
}

static void test_random_scribbles(void **state)
{
    (void)state;
    int rounds = (int)(6 * cf_test_scale());
    for (int r = 0; r < rounds; r++)
        run_scribble((struct scribble_arg){.what = S_RANDOM,
                                           .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(r + 1),
                                           .count = 4 + 8 * r},
                     false);
}

static int group_setup(void **state)
{
    (void)state;
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return -1;
    cf__proc_test_after_result = after_result; /* inherited by every worker */
    return 0;
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_bad_flags_and_spill_positions),
        cmocka_unit_test(test_bad_states),
        cmocka_unit_test(test_bad_indices_and_states_in_rings),
        cmocka_unit_test(test_huge_counters),
        cmocka_unit_test(test_random_scribbles),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
