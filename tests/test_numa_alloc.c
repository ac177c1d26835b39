/* numa_alloc.c on this machine: a mapping for node 0 is aligned, zeroed,
 * bound to node 0 and, once touched, on node 0 (asked of hwloc, not
 * assumed); the library's node blocks come from such mappings. With
 * CF_JEMALLOC also: the node-0 arena exists, its extents come from our
 * hooks, memory allocated through it is on node 0, and arenas are created
 * once even when threads race for the first use. Binding refused by the
 * system (some containers) is reported as skipped, not failed: the
 * placement check still holds on a one-node machine.
 *
 * Environment: HWLOC_XMLFILE / HWLOC_SYNTHETIC must be unset (the test
 * unsets them: binding needs the real machine). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>

#include <hwloc.h>
#ifdef CF_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/numa_alloc.h"
#include "support/test_env.h"

static int setup(void **state)
{
    (void)state;
    unsetenv("HWLOC_XMLFILE");
    unsetenv("HWLOC_SYNTHETIC");
    return 0;
}

/* Where hwloc says [p, p+len) is, and (when the system allowed binding,
 * `bound`) that its policy binds it to node 0. */
static void assert_on_node0(const char *p, size_t len, bool bound)
{
    hwloc_topology_t t;
    assert_int_equal(hwloc_topology_init(&t), 0);
    assert_int_equal(hwloc_topology_load(t), 0);
    hwloc_obj_t node0 = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, 0);
    assert_non_null(node0);
    hwloc_nodeset_t where = hwloc_bitmap_alloc();
    assert_int_equal(hwloc_get_area_memlocation(t, p, len, where, HWLOC_MEMBIND_BYNODESET), 0);
    assert_true(hwloc_bitmap_isequal(where, node0->nodeset));
    assert_int_equal(cf__numa_node_of(p, len), 0);
    if (bound) {
        hwloc_membind_policy_t pol;
        hwloc_nodeset_t b = hwloc_bitmap_alloc();
        assert_int_equal(hwloc_get_area_membind(t, p, len, b, &pol, HWLOC_MEMBIND_BYNODESET), 0);
        assert_int_equal(pol, HWLOC_MEMBIND_BIND);
        assert_true(hwloc_bitmap_isequal(b, node0->nodeset));
        hwloc_bitmap_free(b);
    }
    hwloc_bitmap_free(where);
    hwloc_topology_destroy(t);
}

static void test_map_on_node0(void **state)
{
    (void)state;
    struct cf__numa_alloc_stats before, after;
    cf__numa_alloc_stats(&before);
    const size_t len = (size_t)4 << 20, align = (size_t)2 << 20;
    char *p = cf__numa_map(len, align, 0);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % align, 0);
    for (size_t i = 0; i < len; i += 4096) assert_int_equal(p[i], 0); /* zeroed */
    memset(p, 0x5a, len);
    cf__numa_alloc_stats(&after);
    assert_int_equal(after.extents, before.extents + 1);
    assert_int_equal(after.bound + after.bind_failed, before.bound + before.bind_failed + 1);
    if (after.bound == before.bound)
        print_message("binding refused by the system (%llu failures): placement only\n",
                      (unsigned long long)after.bind_failed);
    assert_on_node0(p, len, after.bound > before.bound);
    cf__numa_unmap(p, len);

    /* No node: mapped, not bound, and no binding counted either way. */
    cf__numa_alloc_stats(&before);
    p = cf__numa_map(cf__numa_page_round(1), 0, -1);
    assert_non_null(p);
    p[0] = 1;
    cf__numa_alloc_stats(&after);
    assert_int_equal(after.bound + after.bind_failed, before.bound + before.bind_failed);
    cf__numa_unmap(p, cf__numa_page_round(1));

    /* Not a page multiple, or no such node (mapped, binding counted failed). */
    assert_null(cf__numa_map(100, 0, 0));
    assert_null(cf__numa_map(0, 0, 0));
    cf__numa_alloc_stats(&before);
    p = cf__numa_map(cf__numa_page_round(1), 0, CF__NUMA_MAX_NODES - 1);
    assert_non_null(p);
    cf__numa_alloc_stats(&after);
    assert_int_equal(after.bind_failed, before.bind_failed + 1);
    cf__numa_unmap(p, cf__numa_page_round(1));
}

#ifdef CF_JEMALLOC
static void test_no_arena_for_bad_nodes(void **state)
{
    (void)state;
    assert_int_equal(cf__numa_arena(-1), 0);
    assert_int_equal(cf__numa_arena(CF__NUMA_MAX_NODES), 0);
    assert_int_equal(cf__numa_arena(CF__NUMA_MAX_NODES - 1), 0); /* no such node here */
}

static void test_node0_memory_lands_on_node0(void **state)
{
    (void)state;
    unsigned a = cf__numa_arena(0);
    assert_true(a > 0);
    assert_int_equal(cf__numa_arena(0), a); /* created once */

    struct cf__numa_alloc_stats before, after;
    cf__numa_alloc_stats(&before);
    /* Large enough to need a fresh extent from the hooks; no tcache, so
     * the region surely comes from this arena. */
    const size_t len = (size_t)8 << 20;
    char *p = mallocx(len, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE);
    assert_non_null(p);
    memset(p, 0x5a, len);
    cf__numa_alloc_stats(&after);
    assert_true(after.extents > before.extents);

    hwloc_topology_t t;
    assert_int_equal(hwloc_topology_init(&t), 0);
    assert_int_equal(hwloc_topology_load(t), 0);
    hwloc_obj_t node0 = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, 0);
    assert_non_null(node0);
    hwloc_nodeset_t where = hwloc_bitmap_alloc();
    assert_int_equal(hwloc_get_area_memlocation(t, p, len, where, HWLOC_MEMBIND_BYNODESET), 0);
    assert_true(hwloc_bitmap_isequal(where, node0->nodeset));
    assert_int_equal(cf__numa_node_of(p, len), 0);

    /* The binding itself, when the system allowed it. */
    if (after.bound > before.bound) {
        hwloc_membind_policy_t pol;
        hwloc_nodeset_t bound = hwloc_bitmap_alloc();
        assert_int_equal(hwloc_get_area_membind(t, p, len, bound, &pol, HWLOC_MEMBIND_BYNODESET),
                         0);
        assert_int_equal(pol, HWLOC_MEMBIND_BIND);
        assert_true(hwloc_bitmap_isequal(bound, node0->nodeset));
        hwloc_bitmap_free(bound);
    } else {
        print_message("binding refused by the system (%llu failures): placement only\n",
                      (unsigned long long)after.bind_failed);
    }
    hwloc_bitmap_free(where);
    hwloc_topology_destroy(t);
    dallocx(p, MALLOCX_TCACHE_NONE);

    /* Small records through the arena work too (and are freed normally). */
    for (int i = 0; i < 1000; i++) {
        void *q = mallocx(64, MALLOCX_ARENA(a));
        assert_non_null(q);
        memset(q, i, 64);
        dallocx(q, 0);
    }
}

#endif /* CF_JEMALLOC */

/* The library's node blocks: usable, aligned as asked, and on node 0. */
static void test_library_alloc_on_node(void **state)
{
    (void)state;
    const size_t len = (size_t)1 << 20;
    char *p = cf__alloc_on_node(len, 0);
    assert_non_null(p);
    memset(p, 1, len);
    assert_int_equal(cf__numa_node_of(p, len), 0);
    cf__free_on_node(p, len);
    char *small = cf__alloc_on_node(100, -1);
    assert_non_null(small);
    memset(small, 2, 100);
    cf__free_on_node(small, 100);
    const size_t chunk = (size_t)2 << 20;
    char *c = cf__alloc_aligned_on_node(chunk, chunk, 0);
    assert_non_null(c);
    assert_int_equal((uintptr_t)c % chunk, 0);
    memset(c, 3, chunk);
    assert_int_equal(cf__numa_node_of(c, chunk), 0);
    cf__free_aligned(c, chunk);
    cf__alloc_set_thread_node(0);
    void *q = cf__alloc(100);
    assert_non_null(q);
    cf__free(q, 100);
    cf__alloc_set_thread_node(-1);
}

#ifdef CF_JEMALLOC
/* A thread bound to the node arena allocates from it without flags. */
static void *bound_thread(void *arg)
{
    (void)arg;
    unsigned a = cf__numa_bind_thread(0);
    if (!a) return NULL;
    unsigned now;
    size_t len = sizeof now;
    if (mallctl("thread.arena", &now, &len, NULL, 0) != 0 || now != a) return NULL;
    const size_t sz = (size_t)4 << 20;
    char *p = mallocx(sz, MALLOCX_TCACHE_NONE);
    if (!p) return NULL;
    memset(p, 1, sz);
    int node = cf__numa_node_of(p, sz);
    dallocx(p, MALLOCX_TCACHE_NONE);
    return node == 0 ? arg : NULL;
}

static void test_bind_thread(void **state)
{
    (void)state;
    pthread_t th;
    void *ok;
    int token;
    assert_int_equal(pthread_create(&th, NULL, bound_thread, &token), 0);
    assert_int_equal(pthread_join(th, &ok), 0);
    assert_ptr_equal(ok, &token);
    assert_int_equal(cf__numa_bind_thread(-1), 0);
}

static void *first_use(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)cf__numa_arena(0);
}

static void test_racing_first_use_agrees(void **state)
{
    (void)state;
    enum { N = 4 };
    pthread_t th[N];
    void *r[N];
    for (int i = 0; i < N; i++) assert_int_equal(pthread_create(&th[i], NULL, first_use, NULL), 0);
    for (int i = 0; i < N; i++) assert_int_equal(pthread_join(th[i], &r[i]), 0);
    for (int i = 0; i < N; i++) assert_int_equal((uintptr_t)r[i], cf__numa_arena(0));
}
#endif /* CF_JEMALLOC */

int main(int argc, char **argv)
{
    cf_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_on_node0),
        cmocka_unit_test(test_library_alloc_on_node),
#ifdef CF_JEMALLOC
        cmocka_unit_test(test_racing_first_use_agrees),
        cmocka_unit_test(test_no_arena_for_bad_nodes),
        cmocka_unit_test(test_node0_memory_lands_on_node0),
        cmocka_unit_test(test_bind_thread),
#endif
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
