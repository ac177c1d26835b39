/* Chase-Lev deque: sequential behaviour, growth, and one owner racing
 * several thieves with every item taken exactly once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "cfutures.h"
#include "sync/deque.h"
#include "support/test_env.h"

static void test_lifo_fifo(void **state)
{
    (void)state;
    struct cf__deque d;
    assert_int_equal(cf__deque_init(&d, 2, -1), 0);
    int v[100];
    void *x;
    assert_null(cf__deque_pop(&d));
    assert_int_equal(cf__deque_steal(&d, &x), CF__STEAL_EMPTY);
    for (int i = 0; i < 100; i++)                       /* grows 2 -> 128 */
        assert_int_equal(cf__deque_push(&d, &v[i]), i); /* items before */
    assert_int_equal(cf__deque_size_hint(&d), 100);
    /* Thieves take the oldest, the owner the newest. */
    assert_int_equal(cf__deque_steal(&d, &x), CF__STEAL_OK);
    assert_ptr_equal(x, &v[0]);
    assert_ptr_equal(cf__deque_pop(&d), &v[99]);
    for (int i = 98; i >= 1; i--) assert_ptr_equal(cf__deque_pop(&d), &v[i]);
    assert_null(cf__deque_pop(&d));
    assert_int_equal(cf__deque_size_hint(&d), 0);
    /* Reuse after wrap-around. */
    for (int r = 0; r < 1000; r++) {
        assert_int_equal(cf__deque_push(&d, &v[r % 100]), 0);
        assert_int_equal(cf__deque_steal(&d, &x), CF__STEAL_OK);
        assert_ptr_equal(x, &v[r % 100]);
    }
    cf__deque_destroy(&d);
}

/* ---- owner vs thieves ---- */

#define THIEVES 3

static struct cf__deque g_d;
static _Atomic uint32_t *g_taken; /* per item: times taken */
static _Atomic int g_done;        /* the owner has pushed everything */
static _Atomic long g_stolen;

static char *g_base; /* item i is g_base + i */

static void take(void *x)
{
    size_t i = (size_t)((char *)x - g_base);
    /* Relaxed: counted; checked after the threads are joined. */
    atomic_fetch_add_explicit(&g_taken[i], 1, memory_order_relaxed);
}

static void *thief(void *arg)
{
    (void)arg;
    long n = 0;
    for (;;) {
        void *x;
        enum cf__steal_result r = cf__deque_steal(&g_d, &x);
        if (r == CF__STEAL_OK) {
            take(x);
            n++;
        } else if (r == CF__STEAL_EMPTY &&
                   /* Acquire: after the owner's final state is published,
                    * an empty deque stays empty. */
                   atomic_load_explicit(&g_done, memory_order_acquire)) {
            break;
        }
    }
    atomic_fetch_add_explicit(&g_stolen, n, memory_order_relaxed);
    return NULL;
}

static void test_owner_and_thieves(void **state)
{
    (void)state;
    size_t n = (size_t)(200000 * cf_test_scale());
    g_taken = calloc(n, sizeof *g_taken);
    assert_non_null(g_taken);
    assert_int_equal(cf__deque_init(&g_d, 2, -1), 0); /* tiny: growth happens */
    atomic_store(&g_done, 0);
    atomic_store(&g_stolen, 0);
    pthread_t t[THIEVES];
    for (int i = 0; i < THIEVES; i++) assert_int_equal(pthread_create(&t[i], NULL, thief, NULL), 0);
    uint64_t rng = 42;
    size_t next = 0;
    long popped = 0;
    g_base = malloc(n);
    assert_non_null(g_base);
    char *base = g_base;
    while (next < n) {
        /* Bursts of pushes (up to 1024: forces growth while thieves run),
         * then some pops. */
        size_t burst = 1 + cf_test_rand(&rng) % 1024;
        for (size_t k = 0; k < burst && next < n; k++, next++)
            assert_true(cf__deque_push(&g_d, base + next) >= 0);
        size_t pops = cf_test_rand(&rng) % (burst + 1);
        for (size_t k = 0; k < pops; k++) {
            void *x = cf__deque_pop(&g_d);
            if (!x) break;
            take(x);
            popped++;
        }
    }
    void *x;
    while ((x = cf__deque_pop(&g_d)) != NULL) {
        take(x);
        popped++;
    }
    /* Release: pairs with the thieves' acquire load. */
    atomic_store_explicit(&g_done, 1, memory_order_release);
    for (int i = 0; i < THIEVES; i++) pthread_join(t[i], NULL);
    for (size_t i = 0; i < n; i++) assert_int_equal(atomic_load(&g_taken[i]), 1);
    assert_int_equal(popped + atomic_load(&g_stolen), (long)n);
    print_message("deque: %zu items, %ld popped, %ld stolen\n", n, popped, atomic_load(&g_stolen));
    cf__deque_destroy(&g_d);
    free(g_taken);
    free(g_base);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifo_fifo),
        cmocka_unit_test(test_owner_and_thieves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
