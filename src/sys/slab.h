/* Per-thread slabs of fixed-size objects (the future records): 2 MiB
 * chunks carved in order by one thread, freed one object at a time by any
 * thread, reused whole once every object of the chunk is free. The rules
 * (who touches what, how the last free is found) are at the top of
 * slab.c. */
#ifndef CF_SLAB_H
#define CF_SLAB_H

#include <stddef.h>
#include <stdint.h>
#ifdef CF_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define CF__SLAB_OBJ 64                  /* bytes per object, one cache line */
#define CF__SLAB_CHUNK ((size_t)2 << 20) /* a chunk, aligned to its size */
#define CF__SLAB_PER_CHUNK (CF__SLAB_CHUNK / CF__SLAB_OBJ - 1) /* the header takes one */
#define CF__SLAB_KEEP 32 /* empty chunks kept per NUMA node (64 MiB) */

/* The calling thread's carving cursor; slab.c owns it (one per thread). */
struct cf__slab_tls {
    char *cur, *end; /* next object and the end of the current chunk */
};
extern _Thread_local struct cf__slab_tls cf__slab_tls;

void *cf__slab_alloc_slow(void);

#ifdef CF_TEST_HOOKS
/* Called with each object the calling thread carves, after the cursor
 * moved past it: a test parks the owner here, in the middle of carving. */
extern void (*cf__test_slab_carve)(void *obj);
/* Called by the owner that retires a chunk (it is full, or the thread
 * exits), before the decrement that gives up the owner's share. */
extern void (*cf__test_slab_retire)(void *chunk);
#endif

/* One object (CF__SLAB_OBJ bytes, 64-byte aligned, contents undefined),
 * carved from the calling thread's chunk, on the thread's NUMA node
 * (cf__alloc_set_thread_node) when it has one. NULL when out of memory.
 * Any thread. */
static inline void *cf__slab_alloc(void)
{
    struct cf__slab_tls *t = &cf__slab_tls;
    char *p = t->cur;
    if (__builtin_expect(p == t->end, 0)) return cf__slab_alloc_slow();
    t->cur = p + CF__SLAB_OBJ;
#ifdef CF_ASAN
    __asan_unpoison_memory_region(p, CF__SLAB_OBJ);
#endif
#ifdef CF_TEST_HOOKS
    if (cf__test_slab_carve) cf__test_slab_carve(p);
#endif
    return p;
}

/* Give back an object of cf__slab_alloc. Any thread, once per object. */
void cf__slab_free(void *obj);

/* Retire the calling thread's chunk now (its free objects are not carved:
 * they come back with the chunk). Done by itself when a thread exits. */
void cf__slab_thread_exit(void);

/* Give every kept empty chunk back to the allocator (cf_trim_memory).
 * Any thread. */
void cf__slab_trim(void);

/* The chunk an object belongs to (tests). */
static inline void *cf__slab_chunk_of(const void *obj)
{
    return (void *)((uintptr_t)obj & ~(uintptr_t)(CF__SLAB_CHUNK - 1));
}

/* Process-wide counts (relaxed; tests and cfutures-info). */
struct cf__slab_stats {
    uint64_t fresh;    /* chunks taken from the allocator */
    uint64_t reused;   /* chunks taken from the kept lists */
    uint64_t emptied;  /* chunks whose last object was freed after retirement */
    uint64_t returned; /* emptied chunks given back to the allocator (lists full) */
    uint64_t kept;     /* chunks in the kept lists now */
};
void cf__slab_stats(struct cf__slab_stats *out);

#endif
