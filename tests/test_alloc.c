/* The library allocator: records round-trip through cf__alloc and friends,
 * and linking cfutures does not replace the process's malloc with
 * jemalloc's (we use jemalloc only through mallocx & co). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sys/alloc.h"
#include "support/test_env.h"

static void malloc_is_not_jemalloc(void **state)
{
    (void)state;
    void *(*m)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
    assert_non_null(m);
    Dl_info info;
    assert_int_not_equal(dladdr((void *)m, &info), 0);
    /* libc's, or a sanitizer's interposer, never libjemalloc's */
    assert_non_null(info.dli_fname);
    assert_null(strstr(info.dli_fname, "jemalloc"));
    /* and malloc'd memory is still freed by free() */
    void *p = malloc(100);
    assert_non_null(p);
    free(p);
}

static void round_trips(void **state)
{
    (void)state;
    for (size_t n = 0; n < (1u << 20); n = n * 2 + 1) {
        unsigned char *p = cf__alloc(n);
        assert_non_null(p);
        memset(p, 0x5a, n);
        unsigned char *q = cf__realloc(p, n, n * 3 + 1);
        assert_non_null(q);
        for (size_t i = 0; i < n; i++) assert_int_equal(q[i], 0x5a);
        cf__free(q, n * 3 + 1);

        unsigned char *z = cf__calloc(n);
        assert_non_null(z);
        for (size_t i = 0; i < n; i++) assert_int_equal(z[i], 0);
        cf__free(z, 0); /* size unknown */
    }
    void *p = cf__alloc(0); /* never NULL for 0 (one byte) */
    assert_non_null(p);
    cf__free(p, 0);
    cf__free(cf__alloc(0), 0);
    cf__free(NULL, 10);

    char *s = cf__strdup("hello");
    assert_string_equal(s, "hello");
    cf__free_str(s);
    assert_null(cf__strdup(NULL));
    cf__free_str(NULL);

    unsigned char *r = cf__realloc(NULL, 0, 64);
    assert_non_null(r);
    cf__free(r, 64);
}

/* Aligned ordinary blocks: aligned as asked (libc's malloc promises 16
 * bytes only), usable, freed with cf__free. */
static void aligned_blocks(void **state)
{
    (void)state;
    for (size_t align = 8; align <= 4096; align *= 2) {
        for (size_t n = 1; n <= 5000; n = n * 3 + 7) {
            unsigned char *p = cf__alloc_aligned(n, align);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % align, 0);
            memset(p, 0x33, n);
            cf__free(p, n);
        }
    }
}

static void thread_node(void **state)
{
    (void)state;
    assert_int_equal(cf__alloc_thread_node(), -1);
    cf__alloc_set_thread_node(0);
    assert_int_equal(cf__alloc_thread_node(), 0);
    void *p = cf__alloc(256);
    assert_non_null(p);
    cf__free(p, 256);
    void *q = cf__alloc_on_node(4096, 0);
    assert_non_null(q);
    cf__free_on_node(q, 4096);
    cf__alloc_set_thread_node(-7);
    assert_int_equal(cf__alloc_thread_node(), -1);
}

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malloc_is_not_jemalloc),
        cmocka_unit_test(round_trips),
        cmocka_unit_test(aligned_blocks),
        cmocka_unit_test(thread_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
