/* Per-thread slabs of 64-byte objects (the future records).
 *
 * Why: a burst of submits used to take each record from jemalloc, whose
 * per-object metadata cost about a tenth of the submitter's time, and whose
 * freed memory went back to the system between bursts, so the next burst
 * paid the first touch of every page again (about 2 us per 4 KiB page on a
 * VM: more than the rest of a submit). Here a thread carves records in
 * order from a 2 MiB chunk of its own (a pointer bump, no metadata), and a
 * chunk whose records are all free again is kept, resident, for the next
 * thread that needs one.
 *
 * Contract
 * - Progress: cf__slab_alloc's fast path is a thread-local bump; free is
 *   one atomic decrement. Taking or giving back a whole chunk (once per
 *   CF__SLAB_PER_CHUNK objects) takes one process-wide mutex for O(1)
 *   steps, never across an allocator call.
 * - Who may touch what. A chunk starts with a 64-byte header:
 *     live  atomic, any thread (below);
 *     node  written by the thread that takes the chunk from the allocator,
 *           read by whoever empties it: published by the same chain of
 *           happens-before as every object (below);
 *     next  the kept-list link: only under g_lock, only while the chunk is
 *           in a kept list, when nobody else holds any of it.
 *   The carving cursor is thread-local (cf__slab_tls): one owner carves a
 *   chunk, and no other thread reads the cursor.
 * - The live count and the last free. When a thread takes a chunk it sets
 *   live = BIAS (2^31, more than a chunk's objects). Every free subtracts
 *   1. The owner carves without touching live; when it retires the chunk
 *   (full, or the thread exits) it subtracts BIAS - carved in one RMW.
 *   So live = BIAS - frees > 0 while the owner carves (frees <= carved <
 *   BIAS: an object freed while the owner still carves never empties the
 *   chunk), and live = carved - frees after retirement. Exactly one RMW
 *   takes live to 0: the retirement (if every carved object was already
 *   free) or the last free after it. That thread, and only it, empties the
 *   chunk: into its node's kept list, or back to the allocator when the
 *   list holds CF__SLAB_KEEP chunks already.
 * - Ordering. Every decrement is acq_rel, so the thread that takes live to
 *   0 has every other thread's use of every object behind it (they all
 *   released into the same counter); it hands the chunk over under g_lock,
 *   and the next owner takes it under g_lock and resets live (relaxed: the
 *   chunk is nobody else's then).
 * - ABA: none. The kept lists are changed only under g_lock. A chunk's
 *   count reaches 0 once per use: after that no object of that use exists
 *   (each was freed once), so no stale decrement can reach the chunk's
 *   next use.
 * - What is kept: at most CF__SLAB_KEEP empty chunks per NUMA node (64 MiB
 *   per node), plus one chunk being carved per thread that allocated. A
 *   chunk stays in use while any of its objects is alive, so one long-lived
 *   record holds its whole chunk: fine for futures, which are short-lived.
 * - NUMA: a chunk comes from the allocator on the taking thread's node
 *   (cf__alloc_thread_node: a mapping bound to that node when set), and
 *   goes back to that node's list when emptied, whichever thread empties it.
 * - Threads: any thread may allocate. A thread that exits retires its chunk
 *   (a pthread key's destructor); after fork() the child keeps the forking
 *   thread's chunk, and chunks other threads were carving stay in use in
 *   the child (g_lock is taken around fork, so the lists stay consistent).
 * - ASan builds poison free objects and unpoison each one as it is carved. */
#include "sys/slab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "sys/alloc.h"
#include "sys/numa_alloc.h"

#define BIAS (1u << 31)

struct chunk {
    _Atomic uint32_t live;
    int32_t node; /* -1: no node */
    struct chunk *next;
    char pad_[CF__SLAB_OBJ - 16];
};
_Static_assert(sizeof(struct chunk) == CF__SLAB_OBJ, "the header is one object");
_Static_assert(CF__SLAB_PER_CHUNK < BIAS, "the bias exceeds a chunk's objects");

_Thread_local struct cf__slab_tls cf__slab_tls;
static _Thread_local struct chunk *tls_chunk;

#ifdef CF_TEST_HOOKS
void (*cf__test_slab_carve)(void *obj);
void (*cf__test_slab_retire)(void *chunk);
#endif

#ifdef CF_ASAN
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)0)
#define UNPOISON(p, n) ((void)0)
#endif

/* ---- the kept lists ---- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    struct chunk *head;
    unsigned n;
} g_kept[CF__NUMA_MAX_NODES + 1]; /* index node + 1 */

static _Atomic uint64_t st_fresh, st_reused, st_emptied, st_returned;

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed); /* statistics only */
}

void cf__slab_stats(struct cf__slab_stats *out)
{
    out->fresh = atomic_load_explicit(&st_fresh, memory_order_relaxed);
    out->reused = atomic_load_explicit(&st_reused, memory_order_relaxed);
    out->emptied = atomic_load_explicit(&st_emptied, memory_order_relaxed);
    out->returned = atomic_load_explicit(&st_returned, memory_order_relaxed);
    uint64_t kept = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i <= CF__NUMA_MAX_NODES; i++) kept += g_kept[i].n;
    pthread_mutex_unlock(&g_lock);
    out->kept = kept;
}

static int list_of(int node)
{
    return node >= 0 && node < CF__NUMA_MAX_NODES ? node + 1 : 0;
}

/* live reached 0: no object of c is in use and nobody carves it. */
static void chunk_empty(struct chunk *c)
{
    count(&st_emptied);
    int i = list_of(c->node);
    pthread_mutex_lock(&g_lock);
    if (g_kept[i].n < CF__SLAB_KEEP) {
        c->next = g_kept[i].head;
        g_kept[i].head = c;
        g_kept[i].n++;
        c = NULL;
    }
    pthread_mutex_unlock(&g_lock);
    if (c) {
        count(&st_returned);
        UNPOISON(c, CF__SLAB_CHUNK);
        cf__free_aligned(c, CF__SLAB_CHUNK);
    }
}

/* ---- threads: the owner's side ---- */

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_key_ok;
static _Thread_local bool tls_registered;

static void exit_destructor(void *unused)
{
    (void)unused;
    tls_registered = false; /* an allocation after this registers again */
    cf__slab_thread_exit();
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&g_lock);
}

static void fork_after(void)
{
    pthread_mutex_unlock(&g_lock);
}

static void init_once(void)
{
    g_key_ok = pthread_key_create(&g_key, exit_destructor) == 0;
    (void)pthread_atfork(fork_prepare, fork_after, fork_after);
}

/* Give up the owner's share of the chunk being carved (see the contract). */
static void retire(void)
{
    struct chunk *c = tls_chunk;
    if (!c) return;
    uint32_t carved = (uint32_t)((cf__slab_tls.cur - (char *)(c + 1)) / CF__SLAB_OBJ);
    tls_chunk = NULL;
    cf__slab_tls.cur = cf__slab_tls.end = NULL;
#ifdef CF_TEST_HOOKS
    if (cf__test_slab_retire) cf__test_slab_retire(c);
#endif
    uint32_t share = BIAS - carved;
    /* acq_rel: as every free (the contract's "Ordering"). */
    if (atomic_fetch_sub_explicit(&c->live, share, memory_order_acq_rel) == share) chunk_empty(c);
}

void cf__slab_thread_exit(void)
{
    retire();
}

static struct chunk *chunk_take(int node)
{
    int i = list_of(node);
    pthread_mutex_lock(&g_lock);
    struct chunk *c = g_kept[i].head;
    if (c) {
        g_kept[i].head = c->next;
        g_kept[i].n--;
    }
    pthread_mutex_unlock(&g_lock);
    if (c) {
        count(&st_reused);
    } else {
        c = cf__alloc_aligned_on_node(CF__SLAB_CHUNK, CF__SLAB_CHUNK, node);
        if (!c) return NULL;
        count(&st_fresh);
        c->node = node;
        POISON(c + 1, CF__SLAB_CHUNK - sizeof *c);
    }
    /* relaxed: the chunk is ours alone (fresh, or handed over under g_lock). */
    atomic_store_explicit(&c->live, BIAS, memory_order_relaxed);
    return c;
}

void *cf__slab_alloc_slow(void)
{
    (void)pthread_once(&g_once, init_once);
    if (!tls_registered && g_key_ok) {
        /* Any non-NULL value: the destructor runs when the thread exits. */
        tls_registered = pthread_setspecific(g_key, &tls_registered) == 0;
    }
    retire();
    int node = cf__alloc_thread_node();
    struct chunk *c = chunk_take(node);
    if (!c) return NULL;
    tls_chunk = c;
    cf__slab_tls.cur = (char *)(c + 1);
    cf__slab_tls.end = (char *)c + CF__SLAB_CHUNK;
    return cf__slab_alloc(); /* the fast path now has room */
}

/* ---- any thread ---- */

void cf__slab_free(void *obj)
{
    struct chunk *c = cf__slab_chunk_of(obj);
    POISON(obj, CF__SLAB_OBJ); /* before the decrement: then the chunk may be another's */
    /* acq_rel: release, our uses of obj happen before the chunk's next use
     * (whoever takes live to 0 acquires them all, then hands the chunk on
     * under g_lock); acquire, if we are that thread. */
    if (atomic_fetch_sub_explicit(&c->live, 1, memory_order_acq_rel) == 1) chunk_empty(c);
}

void cf__slab_trim(void)
{
    struct chunk *all = NULL;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i <= CF__NUMA_MAX_NODES; i++) {
        while (g_kept[i].head) {
            struct chunk *c = g_kept[i].head;
            g_kept[i].head = c->next;
            c->next = all;
            all = c;
        }
        g_kept[i].n = 0;
    }
    pthread_mutex_unlock(&g_lock);
    while (all) { /* outside the lock: freeing may return pages to the system */
        struct chunk *c = all;
        all = c->next;
        count(&st_returned);
        UNPOISON(c, CF__SLAB_CHUNK);
        cf__free_aligned(c, CF__SLAB_CHUNK);
    }
}
