/* A process pool's resources and their lifetime: the pool struct (cache-
 * line aligned by hand), the one shared mapping and how a worker keeps
 * only its own channel of it, the registry of descriptors that belong to
 * live pools, and the reference count.
 *
 * Lifetime: the struct and the mapping live while the executor handle, the
 * collector thread or any future the pool made is alive (a cancel may come
 * late), counted in p->refs; the last one frees them. */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "process/proc_life.h"

#define PAGE 4096u

/* ---- the struct ---- */

static size_t pool_bytes(int n)
{
    return sizeof(struct cf__ppool) + sizeof(struct cf__pchan) * (size_t)n + 64;
}

struct cf__ppool *cf__pp_struct_new(int n, uint32_t depth)
{
    /* Cache-line aligned by hand: cf__calloc promises no 64-byte alignment. */
    void *raw = cf__calloc(pool_bytes(n));
    if (!raw) return NULL;
    struct cf__ppool *p = (struct cf__ppool *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    p->raw = raw;
    p->n = n;
    p->depth = depth;
    atomic_init(&p->refs, 1);
    p->efd = p->req_wr = p->req_rd = p->rep_rd = p->rep_wr = p->zpidfd = -1;
    pthread_mutex_init(&p->ov_lock, NULL);
    for (int i = 0; i < n; i++) {
        p->ch[i].z_pidfd = -1;
    }
    bool ok = true;
    for (int i = 0; i < n; i++)
        ok &= (p->ch[i].rec = cf__calloc(sizeof(struct cf__prec) * depth)) != NULL;
    p->scratch = cf__alloc(sizeof(cf_future *) * depth);
    if (ok && p->scratch) return p;
    cf__pp_unref(p);
    return NULL;
}

static void pool_free(struct cf__ppool *p)
{
    int fds[] = {p->efd, p->req_wr, p->rep_rd, p->zpidfd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (fds[i] >= 0) {
            cf__pp_fd_unregister(fds[i]);
            close(fds[i]);
        }
    }
    if (p->map && p->map != MAP_FAILED) munmap(p->map, p->map_len);
    for (int i = 0; i < p->n; i++) {
        cf__free(p->ch[i].rec, sizeof(struct cf__prec) * p->depth);
    }
    pthread_mutex_destroy(&p->ov_lock);
    cf__free(p->scratch, sizeof(cf_future *) * p->depth);
    cf__free_str(p->broken_msg);
    cf__free(p->raw, pool_bytes(p->n));
}

void cf__pp_unref(struct cf__ppool *p)
{
    /* acq_rel: every use of the pool by the dropping party happens before
     * the last dropper frees it. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) pool_free(p);
}

void cf__pp_on_free(cf_future *f)
{
    cf__pp_unref(cf__pp_of_future(f));
}

/* ---- the shared mapping ---- */

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* The largest argument: what the argument spill ring takes (its guard
 * stays unused, proc_shm.h), and no more than a 32-bit length. */
uint64_t cf__pp_arg_max(uint64_t arg_spill)
{
    uint64_t room = cf__pp_spill_room(arg_spill);
    return room < UINT32_MAX ? room : UINT32_MAX;
}

int cf__pp_map_shared(struct cf__ppool *p)
{
    size_t hdr = PAGE;
    size_t ctl = sizeof(struct cf__pchan_ctl) * (size_t)p->n; /* a page each */
    p->chan_slots = round_up(p->stride * p->depth, PAGE);     /* whole pages each */
    size_t slots = p->chan_slots * (size_t)p->n;
    size_t a = (size_t)p->arg_spill * (size_t)p->n, r = (size_t)p->res_spill * (size_t)p->n;
    p->map_len = hdr + ctl + slots + a + r;
    /* MAP_SHARED | MAP_ANONYMOUS: no name, inherited only by our forks.
     * MAP_NORESERVE: the spill rings are address space; pages exist only
     * once touched and are punched out again after big transfers. */
    void *m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        p->map = NULL;
        /* Strict overcommit (vm.overcommit_memory=2) charges all of it:
         * retry with smaller spill rings (the largest argument and result
         * shrink with them; CF_ETOOBIG says so). */
        if (errno == ENOMEM && p->res_spill > (1u << 20)) {
            p->arg_spill = p->arg_spill / 8 < (1u << 20) ? (1u << 20) : p->arg_spill / 8;
            p->res_spill /= 8;
            p->arg_max = cf__pp_arg_max(p->arg_spill);
            return cf__pp_map_shared(p);
        }
        return errno == ENOMEM ? CF_ENOMEM : CF_ESYS;
    }
    p->map = m;
    p->hdr = m;
    p->hdr->magic = CF__PSHM_MAGIC;
    p->ctl = (struct cf__pchan_ctl *)(p->map + hdr);
    p->slots = p->map + hdr + ctl;
    p->argsp = p->slots + slots;
    p->ressp = p->argsp + a;
    return 0;
}

static void unmap_range(unsigned char *from, unsigned char *to)
{
    if (to > from) munmap(from, (size_t)(to - from));
}

/* Unmap [base, base + n * each) except [base + chan * each, + each). */
static void unmap_others(unsigned char *base, size_t each, int n, int chan)
{
    unmap_range(base, base + (size_t)chan * each);
    unmap_range(base + (size_t)(chan + 1) * each, base + (size_t)n * each);
}

void cf__pp_shm_isolate(struct cf__ppool *p, int chan)
{
    /* Only our own channel: another channel's slots, control page or spill
     * rings are not even mapped here, so this worker's tasks can neither
     * read other tasks' arguments nor write other workers' results. */
    unmap_others((unsigned char *)p->ctl, sizeof(struct cf__pchan_ctl), p->n, chan);
    unmap_others(p->slots, p->chan_slots, p->n, chan);
    unmap_others(p->argsp, p->arg_spill, p->n, chan);
    unmap_others(p->ressp, p->res_spill, p->n, chan);
    /* What is left stays out of any fork a task makes (a nested pool's
     * zygote, say). The zygote itself sets nothing: it must pass the whole
     * mapping to every worker it forks. */
    madvise(p->map, PAGE, MADV_DONTFORK);
    madvise(&p->ctl[chan], sizeof(struct cf__pchan_ctl), MADV_DONTFORK);
    madvise(p->slots + (size_t)chan * p->chan_slots, p->chan_slots, MADV_DONTFORK);
    madvise(p->argsp + (size_t)chan * p->arg_spill, p->arg_spill, MADV_DONTFORK);
    madvise(p->ressp + (size_t)chan * p->res_spill, p->res_spill, MADV_DONTFORK);
}

/* ---- the registry: fd + 1 per entry, 0 = empty ---- */
#define REG_MAX 512
static _Atomic int fd_registry[REG_MAX];

void cf__pp_fd_register(int fd)
{
    for (int i = 0; i < REG_MAX; i++) {
        int empty = 0;
        /* relaxed: the registry is only a hint for zygotes forked later;
         * a pool created concurrently in another thread may miss it. */
        if (atomic_compare_exchange_strong_explicit(&fd_registry[i], &empty, fd + 1,
                                                    memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

void cf__pp_fd_unregister(int fd)
{
    for (int i = 0; i < REG_MAX; i++) {
        int want = fd + 1;
        if (atomic_compare_exchange_strong_explicit(&fd_registry[i], &want, 0, memory_order_relaxed,
                                                    memory_order_relaxed))
            return;
    }
}

void cf__pp_fd_close_registered(void)
{
    for (int i = 0; i < REG_MAX; i++) {
        int v = atomic_load_explicit(&fd_registry[i], memory_order_relaxed);
        if (v > 0) close(v - 1);
        atomic_store_explicit(&fd_registry[i], 0, memory_order_relaxed);
    }
}
