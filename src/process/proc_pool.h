/* The process pool's state: the pool struct, its channels and the
 * parent's records of filled slots, with the small inline helpers every
 * part uses (slot addresses, the future's ring position, the collect
 * lock). The zygote and the workers see this struct as their fork
 * snapshot. process_pool.c opens with the design; each part declares its
 * functions in its own header (proc_ring_parent.h, proc_collector.h,
 * proc_help.h, proc_overflow.h, proc_life.h, proc_zygote.h,
 * proc_worker.h). */
#ifndef CF_PROC_POOL_H
#define CF_PROC_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sched.h>

#include "core/executor.h"
#include "core/future.h"
#include "sync/futex.h"
#include "sys/fork.h"
#include "process/proc_shm.h"

/* One helper entering p->helpers: one more now, one more ever. */
#define CF__PP_HELPER ((1ull << 32) | 1u)

/* Pool flags (parent-private word). */
#define CF__PP_SHUTDOWN 1u  /* no new submissions */
#define CF__PP_BROKEN 2u    /* a worker died or misbehaved: everything fails */
#define CF__PP_TERMINATE 4u /* cf_process_pool_terminate: kill the workers now */

/* What the parent remembers about one filled slot (parent-private: the
 * collector never takes a future pointer from shared memory). */
struct cf__prec {
    cf_future *f;     /* the executor's reference; NULL for an EXIT marker */
    uint64_t arg_pos; /* where the argument starts in the arg spill ring */
    uint64_t arg_end; /* arg spill ring position after this argument, 0 if inline */
    bool is_exit;
    bool marked; /* cf__future_mark_running done */
};

struct cf__pchan {
    /* Producer side (submit threads and the collector's feeder). */
    _Alignas(64) _Atomic uint32_t fill; /* the fill lock (cf__pp_fill_*): head, arg_head, rec[] */
    _Atomic uint64_t head;              /* next position to fill */
    uint64_t arg_head;                  /* arg spill ring: next free position */
    uint64_t coll_cache;                /* the last `collected` a producer read */
    /* Collector side. */
    _Alignas(64) _Atomic uint64_t collected; /* next position to collect */
    _Atomic uint64_t arg_tail;               /* arg spill ring freed up to here */
    uint64_t res_tail;                 /* result spill ring freed up to here (collector-private) */
    uint64_t arg_punched, res_punched; /* spill pages given back below here (collect lock) */
    struct cf__prec *rec;              /* depth entries */
    pid_t pid;                         /* current worker (0 before its SPAWNED report) */
    bool alive, spawning, exit_placed, exit_consumed, dead;
    uint64_t inc_done;          /* tasks collected from the current worker */
    _Atomic uint64_t tasks_run; /* statistics */
    /* Zygote-private (meaningful only in the zygote's copy). */
    pid_t z_pid;
    int z_pidfd; /* unused (-1): the zygote reaps through SIGCHLD */
};

struct cf__ppool {
    struct cf_executor base;    /* must be first */
    struct cf__future_ops fops; /* f->ops points here: on_cancel/on_free find the pool */
    _Atomic uint64_t refs;      /* the executor handle + the collector + every live future */
    void *raw;                  /* what was allocated (the struct is aligned inside it) */

    /* Configuration. */
    int n;                         /* workers = channels */
    unsigned gen;                  /* the process that made it (sys/fork.h) */
    uint32_t depth;                /* slots per channel (power of two) */
    size_t slot_size;              /* inline bytes per slot */
    size_t stride;                 /* bytes per slot: header + inline area */
    size_t chan_slots;             /* bytes per channel's slot block (whole pages) */
    uint64_t arg_spill, res_spill; /* bytes per channel in each spill ring */
    uint64_t arg_max;              /* largest argument accepted */
    int max_tasks;                 /* 0: unlimited */
    size_t map_window;             /* cf_map's default window (0: its own) */
    long spin_ns;
    bool stats;
    cf_init_fn *init;
    void *init_arg;

    /* Shared memory. */
    unsigned char *map;
    size_t map_len;
    struct cf__pshm_hdr *hdr;
    struct cf__pchan_ctl *ctl; /* nchan entries */
    unsigned char *slots;      /* nchan * depth * stride */
    unsigned char *argsp;      /* nchan * arg_spill */
    unsigned char *ressp;      /* nchan * res_spill */

    /* Processes and descriptors. */
    pid_t parent_pid, zpid;
    int efd;            /* eventfd: rings the collector awake (workers and parent) */
    int req_wr, req_rd; /* parent -> zygote requests */
    int rep_rd, rep_wr; /* zygote -> parent reports */
    int zpidfd;         /* the zygote's pidfd (parent) */

    /* State, in three cache lines: what submitters read or write on every
     * submit; what the collector writes on every step; the rest. */
    _Alignas(64) _Atomic uint32_t flags; /* CF__PP_* (read by every submit) */
    _Atomic size_t ov_count;             /* overflow length (read by every submit) */
    _Atomic uint64_t rr;                 /* submitters' round-robin channel choice (the
                                          * collector watches it to see them active) */

    _Alignas(64) _Atomic uint32_t coll_lock; /* who collects: the collector thread, or a helper */
    _Atomic uint32_t
        coll_sleep;            /* the collector is (about to be) asleep: 1 napping, 2 until woken */
    _Atomic uint64_t helpers;  /* result() helpers: low 32 bits how many now, high
                                  * 32 bits how many ever came (CF__PP_HELPER) */
    _Atomic uint32_t batches;  /* helpers' harvested batches not yet completed */
    _Atomic uint32_t harvests; /* batches helpers ever harvested (the collector defers to them) */
    _Atomic uint32_t coll_attn; /* a helper left a slot for the collector: collect now */

    _Alignas(64) _Atomic uint32_t coll_done; /* futex: 1 once the collector has finished */
    _Atomic int term_signo;
    char *broken_msg; /* written by the collector before CF__PP_BROKEN is set */
    pthread_t coll;
    bool coll_started;
    struct cf__zrep early_death; /* a DIED report read by the constructor (op 0: none) */

    /* Overflow: work that found every ring full, fed by the collector. */
    pthread_mutex_t ov_lock;
    cf_future *ov_head, *ov_tail; /* linked through f->next_queued */
    uint64_t ov_rr;               /* the feeder's round-robin channel choice */

    cf_future **scratch;   /* collector-private: depth entries */
    struct cf__pchan ch[]; /* n channels */
};
_Static_assert(offsetof(struct cf__ppool, coll_lock) - offsetof(struct cf__ppool, flags) >= 64,
               "submitters' and the collector's hot words on separate lines");

static inline struct cf__pslot *cf__pp_slot(const struct cf__ppool *p, int chan, uint64_t pos)
{
    size_t i = (size_t)(pos & (p->depth - 1));
    return (struct cf__pslot *)(p->slots + (size_t)chan * p->chan_slots + i * p->stride);
}
static inline unsigned char *cf__pp_inline(struct cf__pslot *s)
{
    return (unsigned char *)(s + 1);
}

/* The future's owner slot word (cf__future_slot_load/store) says where
 * the task sits in a ring: ((pos + 1) << 16) | chan; 0 while it is not in
 * a ring (the overflow list). */
static inline uintptr_t cf__pp_owner_encode(int chan, uint64_t pos)
{
    return ((uintptr_t)(pos + 1) << 16) | (uintptr_t)chan;
}
/* False for 0 (not in a ring). */
static inline bool cf__pp_owner_decode(uintptr_t enc, int *chan, uint64_t *pos)
{
    *chan = (int)(enc & 0xffff);
    *pos = (uint64_t)(enc >> 16) - 1;
    return enc != 0;
}

/* The pool a future of this pool belongs to (f->ops points at p->fops). */
static inline struct cf__ppool *cf__pp_of_future(cf_future *f)
{
    return (struct cf__ppool *)((char *)f->ops - offsetof(struct cf__ppool, fops));
}

/* True in a fork child of the pool's process (ours: zygote and workers; or
 * the application's): the pool object there is a snapshot whose shared
 * mapping is not there (MADV_DONTFORK), and using it is refused instead of
 * corrupting the parent's rings. A pool created in a worker belongs to
 * that worker (sys/fork.h). */
static inline bool cf__pp_foreign(const struct cf__ppool *p)
{
    return p->gen != cf__proc_gen();
}

/* The pool's flags as a submit error: broken first, then shut down. */
static inline int cf__pp_flags_error(uint32_t fl)
{
    if (fl & CF__PP_BROKEN) return CF_EBROKEN; /* broken is checked first (SEMANTICS 17) */
    if (fl & (CF__PP_SHUTDOWN | CF__PP_TERMINATE)) return CF_ESHUTDOWN;
    return 0;
}

/* The fill lock of a channel (ch->fill): producers (submitters, the
 * overflow feeder, the collector placing exit markers or sweeping) hold it
 * while they reserve and fill the next slot, a few dozen instructions and
 * never a call that blocks or runs user code. A test-and-set word instead
 * of a mutex: an uncontended submit pays one exchange and one store, no
 * system call ever, and a submitter that finds it taken tries another
 * channel instead of waiting (cf__pp_fill_trylock). */
static inline bool cf__pp_fill_trylock(struct cf__pchan *ch)
{
    /* relaxed look first: a busy word is not written (no line stolen from
     * its holder). acquire exchange: pairs with the release store in
     * cf__pp_fill_unlock (the previous holder's head, arg_head, records). */
    return !atomic_load_explicit(&ch->fill, memory_order_relaxed) &&
           !atomic_exchange_explicit(&ch->fill, 1, memory_order_acquire);
}

static inline void cf__pp_fill_lock(struct cf__pchan *ch)
{
    /* Holders never block inside; a preempted one is waited for with
     * sched_yield, which lets it run on a loaded machine. */
    for (unsigned n = 0; !cf__pp_fill_trylock(ch); n++) {
        if (n < 64) cf__cpu_relax();
        else sched_yield();
    }
}

static inline void cf__pp_fill_unlock(struct cf__pchan *ch)
{
    /* release: what we filled is visible to the next holder (pairs with
     * the acquire exchange of cf__pp_fill_trylock). */
    atomic_store_explicit(&ch->fill, 0, memory_order_release);
}

/* The collect lock (p->coll_lock): whoever holds it reads result slots
 * and frees them (single consumer per channel): the collector thread for
 * each step of its loop, a helper for a few slots (never across a
 * callback), shutdown's cancel sweep for a batch. */
static inline bool cf__pp_coll_trylock(struct cf__ppool *p)
{
    uint32_t z = 0;
    /* acquire: pairs with the release in coll_unlock (the previous
     * collector's writes to records, counters and `collected`). */
    return atomic_compare_exchange_strong_explicit(&p->coll_lock, &z, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void cf__pp_coll_lock(struct cf__ppool *p)
{
    /* Helpers hold it for a few slots at most, never across a callback. */
    for (unsigned n = 0; !cf__pp_coll_trylock(p); n++) {
        if (n < 64) cf__cpu_relax();
        else sched_yield();
    }
}

static inline void cf__pp_coll_unlock(struct cf__ppool *p)
{
    /* release: what we collected under the lock is visible to the next
     * holder (pairs with the acquire of cf__pp_coll_trylock). */
    atomic_store_explicit(&p->coll_lock, 0, memory_order_release);
}

/* Test hooks, only in the tests' build (CF_TEST_HOOKS): inside a worker,
 * the shared mapping (NULL elsewhere); and a spill ring size override for
 * new pools (0: the default). */
#ifdef CF_TEST_HOOKS
void *cf__proc_test_shm(size_t *len);
extern size_t cf__proc_test_spill_size;
/* Inside a worker: its channel and the position of the task it runs. */
void cf__proc_test_current(int *chan, uint64_t *pos);
/* Inside a worker: the slot header of the task it runs (NULL elsewhere). */
void *cf__proc_test_current_slot(void);
/* Called in the worker after a result is written, before DONE (tests
 * corrupt the header here). Set before the pool is created. */
extern void (*cf__proc_test_after_result)(void *slot);
/* Called by a submitter holding channel `chan`'s fill lock, after it
 * reserved the slot and before it fills it (tests hold the lock here). */
extern void (*cf__proc_test_in_fill)(int chan);
/* Called by the collector thread when it is about to sleep in a nap taken
 * because a submitter is active, after its last look at the rings (tests
 * hold the hand-off window open here). */
extern void (*cf__proc_test_coll_nap)(void);
/* Called by the collector thread when it leaves the rings to helpers for
 * one step because they harvested since its last look (tests hold the
 * window open here). */
extern void (*cf__proc_test_coll_defer)(void);
#endif

#endif
