/* Per-thread slabs (src/sys/slab.c): carving, reuse of emptied chunks, the
 * bound on kept chunks, and the races on a chunk's live count, held open
 * with the slab's test hooks so every run takes the interleaving:
 * - frees of every carved object while the owner is still carving (the
 *   chunk must not be emptied under the owner);
 * - the owner's retirement against the last free, in both orders (exactly
 *   one of them empties the chunk).
 * Objects are written by the thread that frees them and again by the next
 * owner of their chunk, so TSan checks the hand-over; ASan checks that no
 * free object is touched. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cfutures.h"
#include "support/test_env.h"
#include "sys/slab.h"

#include <cmocka.h>

static struct cf__slab_stats stats(void)
{
    struct cf__slab_stats s;
    cf__slab_stats(&s);
    return s;
}

/* ---- a one-object mailbox between two threads ---- */

static pthread_mutex_t mb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mb_cond = PTHREAD_COND_INITIALIZER;

static void mb_wait(_Atomic int *flag, int v)
{
    pthread_mutex_lock(&mb_lock);
    while (atomic_load(flag) != v) pthread_cond_wait(&mb_cond, &mb_lock);
    pthread_mutex_unlock(&mb_lock);
}

static void mb_set(_Atomic int *flag, int v)
{
    pthread_mutex_lock(&mb_lock);
    atomic_store(flag, v);
    pthread_cond_broadcast(&mb_cond);
    pthread_mutex_unlock(&mb_lock);
}

/* Free objs[0..n) in another thread (writing each first, as a record's
 * last user does), and wait for it. */
struct free_job {
    void **objs;
    size_t n;
};

static void *free_all(void *arg)
{
    struct free_job *j = arg;
    for (size_t i = 0; i < j->n; i++) {
        memset(j->objs[i], 0xab, CF__SLAB_OBJ);
        cf__slab_free(j->objs[i]);
    }
    return NULL;
}

static void free_in_other_thread(void **objs, size_t n)
{
    struct free_job j = {objs, n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_all, &j), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* ---- carving and reuse ---- */

static void *carve_and_retire(void *arg)
{
    void **objs = arg;
    for (int i = 0; i < 100; i++) {
        objs[i] = cf__slab_alloc();
        memset(objs[i], i, CF__SLAB_OBJ);
    }
    cf__slab_thread_exit();
    return NULL;
}

static void carve_contiguous_then_reuse(void **state)
{
    (void)state;
    void *objs[100];
    pthread_t t;
    struct cf__slab_stats s0 = stats();
    assert_int_equal(pthread_create(&t, NULL, carve_and_retire, objs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    for (int i = 1; i < 100; i++) {
        assert_ptr_equal(objs[i], (char *)objs[i - 1] + CF__SLAB_OBJ); /* in order */
        assert_ptr_equal(cf__slab_chunk_of(objs[i]), cf__slab_chunk_of(objs[0]));
    }
    assert_int_equal((uintptr_t)objs[0] % CF__SLAB_OBJ, 0);
    void *chunk = cf__slab_chunk_of(objs[0]);
    free_all(&(struct free_job){objs, 100}); /* the last free empties it */
    struct cf__slab_stats s1 = stats();
    assert_int_equal(s1.emptied - s0.emptied, 1);
    assert_int_equal(s1.kept, s0.kept + 1 - (s1.reused - s0.reused));

    /* The next thread that needs a chunk gets that one back, resident. */
    assert_int_equal(pthread_create(&t, NULL, carve_and_retire, objs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ptr_equal(cf__slab_chunk_of(objs[0]), chunk);
    assert_ptr_equal(objs[0], (char *)chunk + CF__SLAB_OBJ);
    free_all(&(struct free_job){objs, 100});
}

/* cf_trim_memory gives every kept chunk back; the next carve takes a
 * fresh one. */
static void trim_returns_kept_chunks(void **state)
{
    (void)state;
    void *objs[100];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, carve_and_retire, objs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    free_all(&(struct free_job){objs, 100}); /* emptied: kept */
    struct cf__slab_stats s0 = stats();
    assert_true(s0.kept >= 1);
    cf_trim_memory();
    struct cf__slab_stats s1 = stats();
    assert_int_equal(s1.kept, 0);
    assert_int_equal(s1.returned - s0.returned, s0.kept);
    assert_int_equal(pthread_create(&t, NULL, carve_and_retire, objs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct cf__slab_stats s2 = stats();
    assert_int_equal(s2.fresh - s1.fresh, 1);
    free_all(&(struct free_job){objs, 100});
}

/* ---- frees while the owner carves ---- */

enum { CARVE_AT = 8 };
static void *g_carved[CARVE_AT + 4];
static _Atomic int g_ncarved;

/* The owner, parked in the middle of carving object CARVE_AT: another
 * thread frees every object carved before it. */
static void carve_hook(void *obj)
{
    int i = atomic_fetch_add(&g_ncarved, 1);
    g_carved[i] = obj;
    if (i == CARVE_AT) free_in_other_thread(g_carved, CARVE_AT);
}

static void frees_while_owner_carves(void **state)
{
    (void)state;
    cf__slab_thread_exit(); /* start a chunk of our own */
    struct cf__slab_stats s0 = stats();
    atomic_store(&g_ncarved, 0);
    cf__test_slab_carve = carve_hook;
    for (int i = 0; i <= CARVE_AT; i++) (void)cf__slab_alloc();
    cf__test_slab_carve = NULL;
    /* Every object carved so far but one is free, and the chunk is still
     * ours: not emptied, and carving goes on where it was. */
    struct cf__slab_stats s1 = stats();
    assert_int_equal(s1.emptied, s0.emptied);
    void *next = cf__slab_alloc();
    assert_ptr_equal(next, (char *)g_carved[CARVE_AT] + CF__SLAB_OBJ);
    memset(next, 1, CF__SLAB_OBJ);
    cf__slab_free(next);
    cf__slab_free(g_carved[CARVE_AT]);
    assert_int_equal(stats().emptied, s0.emptied); /* all free, but we carve it */
    cf__slab_thread_exit();                        /* the retirement empties it */
    assert_int_equal(stats().emptied, s0.emptied + 1);
}

/* ---- retirement against the last free ---- */

static void *g_objs[64];
static _Atomic int g_phase;

static void *late_freer(void *arg)
{
    (void)arg;
    mb_wait(&g_phase, 1);
    free_all(&(struct free_job){g_objs, 64});
    mb_set(&g_phase, 2);
    return NULL;
}

/* The owner, in retire() before its decrement: the last frees happen
 * now, so the owner's decrement is the one that reaches 0. */
static void retire_hook(void *chunk)
{
    assert_ptr_equal(chunk, cf__slab_chunk_of(g_objs[0]));
    mb_set(&g_phase, 1);
    mb_wait(&g_phase, 2);
}

static void retire_after_last_free(void **state)
{
    (void)state;
    cf__slab_thread_exit();
    for (int i = 0; i < 64; i++) g_objs[i] = cf__slab_alloc();
    atomic_store(&g_phase, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, late_freer, NULL), 0);
    struct cf__slab_stats s0 = stats();
    cf__test_slab_retire = retire_hook;
    cf__slab_thread_exit();
    cf__test_slab_retire = NULL;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(stats().emptied, s0.emptied + 1); /* by the owner, once */
}

static void last_free_after_retire(void **state)
{
    (void)state;
    cf__slab_thread_exit();
    for (int i = 0; i < 64; i++) g_objs[i] = cf__slab_alloc();
    free_in_other_thread(g_objs, 63);
    struct cf__slab_stats s0 = stats();
    cf__slab_thread_exit(); /* one object still in use: not emptied */
    assert_int_equal(stats().emptied, s0.emptied);
    free_in_other_thread(g_objs + 63, 1); /* that free empties it */
    assert_int_equal(stats().emptied, s0.emptied + 1);
}

/* ---- what is kept ---- */

enum { HELD = CF__SLAB_KEEP + 3 };
static void *g_held[HELD];

static void *one_per_chunk(void *arg)
{
    (void)arg;
    for (int i = 0; i < HELD; i++) {
        g_held[i] = cf__slab_alloc();
        cf__slab_thread_exit(); /* the next object comes from another chunk */
    }
    return NULL;
}

static void kept_chunks_are_bounded(void **state)
{
    (void)state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, one_per_chunk, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct cf__slab_stats s0 = stats();
    free_in_other_thread(g_held, HELD);
    struct cf__slab_stats s1 = stats();
    assert_int_equal(s1.emptied - s0.emptied, HELD);
    assert_int_equal(s1.kept, CF__SLAB_KEEP);
    assert_int_equal(s1.returned - s0.returned, s0.kept + HELD - CF__SLAB_KEEP);
}

/* ---- many threads: each object handed out once, every chunk emptied ---- */

enum { STRESS_T = 4 };
struct stress_ctx {
    int id;
    size_t n;
    _Atomic(void *) *ring; /* objects passed to the next thread, which frees them */
    _Atomic(void *) *next_ring;
};

static void *stress_thread(void *arg)
{
    struct stress_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        uint64_t *o = cf__slab_alloc();
        assert_non_null(o);
        o[0] = ((uint64_t)c->id << 48) | i;
        o[1] = ~o[0];
        /* Hand it to the next thread; whatever was in that slot (from us,
         * not yet taken) we free, and we free one the previous thread
         * left us: objects are freed by other threads than their owner. */
        uint64_t *old = atomic_exchange(&c->next_ring[i % 64], o);
        uint64_t *in = atomic_exchange(&c->ring[i % 64], NULL);
        uint64_t *frees[2] = {old, in};
        for (int k = 0; k < 2; k++) {
            if (!frees[k]) continue;
            assert_true(frees[k][1] == ~frees[k][0]); /* nobody else wrote it */
            cf__slab_free(frees[k]);
        }
    }
    cf__slab_thread_exit();
    return NULL;
}

static void many_threads(void **state)
{
    (void)state;
    size_t n = (size_t)(200000 * cf_test_scale()) + 1000;
    static _Atomic(void *) rings[STRESS_T][64];
    struct stress_ctx c[STRESS_T];
    pthread_t t[STRESS_T];
    struct cf__slab_stats s0 = stats();
    for (int i = 0; i < STRESS_T; i++)
        c[i] = (struct stress_ctx){i, n, rings[i], rings[(i + 1) % STRESS_T]};
    for (int i = 0; i < STRESS_T; i++)
        assert_int_equal(pthread_create(&t[i], NULL, stress_thread, &c[i]), 0);
    for (int i = 0; i < STRESS_T; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < STRESS_T; i++)
        for (int k = 0; k < 64; k++) {
            void *p = atomic_exchange(&rings[i][k], NULL);
            if (p) cf__slab_free(p);
        }
    /* Every chunk taken was emptied: each retired, each object freed. */
    struct cf__slab_stats s1 = stats();
    assert_int_equal((s1.fresh - s0.fresh) + (s1.reused - s0.reused), s1.emptied - s0.emptied);
}

/* A thread that exits without retiring: its destructor does it. */
static void *alloc_and_leave(void *arg)
{
    void **objs = arg;
    for (int i = 0; i < 10; i++) objs[i] = cf__slab_alloc();
    return NULL;
}

static void thread_exit_retires(void **state)
{
    (void)state;
    void *objs[10];
    pthread_t t;
    struct cf__slab_stats s0 = stats();
    assert_int_equal(pthread_create(&t, NULL, alloc_and_leave, objs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    free_all(&(struct free_job){objs, 10});
    assert_int_equal(stats().emptied, s0.emptied + 1);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(carve_contiguous_then_reuse), cmocka_unit_test(frees_while_owner_carves),
        cmocka_unit_test(retire_after_last_free),      cmocka_unit_test(last_free_after_retire),
        cmocka_unit_test(kept_chunks_are_bounded),     cmocka_unit_test(many_threads),
        cmocka_unit_test(thread_exit_retires),         cmocka_unit_test(trim_returns_kept_chunks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cf__slab_thread_exit();
    return rc;
}
