/* Outside-submitter slots: see subslot.h for the layout and invariants.
 *
 * Contract
 * - Progress: push is wait-free but for a change of ring (an allocation, a
 *   copy of the queued pointers); a take is lock-free (its CASes fail only
 *   because another taker reserved or took something). Claiming and releasing a slot
 *   (a thread's first submit to a pool, its exit) take the registry lock:
 *   rare, never on the path of a later submit.
 * - The producer (thread_pool.c's submit) per task: store the item, then
 *   `tail` with a seq_cst store, then a seq_cst load of `head`. A taker:
 *   load taken, load head (acquire); if every reserved task is taken,
 *   reserve the next batch: load tail (acquire: the items and the tasks
 *   they point to were written before), CAS head (seq_cst; a reserve that
 *   leaves the slot empty in its view re-reads tail, seq_cst); then read
 *   the oldest reserved items and CAS taken (seq_cst). Reserving only
 *   moves the line the producer reads once per batch; tasks are taken,
 *   whoever reserved them, in the order of `taken`.
 * - Wake-up (worker.c's no-lost-wake-up argument needs every queued task
 *   to be seen by a worker that is searching or that the submitter wakes).
 *   The push reports "was empty" when the head it reads after publishing
 *   has reached the index it wrote (head >= t: every older task had been
 *   reserved, and its reserver goes on taking what it reserved: it reports
 *   `more` while reserved tasks are left); only then does the submitter
 *   fence, set the slot's bit and run the wake-up check, exactly as for a
 *   push that made the injection queue non-empty. Otherwise some older
 *   task i < t was not reserved when the producer looked. Proof that its
 *   reserver sees ours: the producer's store of tail (W) precedes its load
 *   of head (R) in the single total order S of seq_cst operations; R did
 *   not read the reserver's CAS of head past i (C), so R precedes C in S
 *   (a seq_cst load reads the last store before it in S); the reserver's
 *   re-read of tail after C therefore follows W in S and reads t + 1 or
 *   later. A reserver whose view of the slot became empty (the only kind
 *   that could be the "last") thus sees our task, reports `more`, and
 *   worker.c wakes a helper for it or takes it itself (the ramp-up wake),
 *   as for a batch left in a deque.
 * - Bits of `active`. The producer sets the bit after its fence (a relaxed
 *   load first; the RMW only if it is clear). A worker about to park
 *   clears the bits of the slots it finds empty (cf__subslots_retire_idle;
 *   scans leave them set, so a busy slot costs no RMW on `active`), each
 *   with a seq_cst RMW, and then re-reads taken and tail
 *   (seq_cst): if the producer's fence came first in S, the re-read sees
 *   its task and the taker sets the bit back; if the clear came first, the
 *   producer's load after its fence sees the bit clear and sets it. So a
 *   slot holding a task is never left with its bit clear, except for the
 *   instant between the producer's fence and its RMW (and a task withdrawn
 *   on shutdown), which the parker's, the exit check's and the last
 *   searcher's scans of every slot cover: they read tail, and set the bit
 *   of a slot they find holding work.
 * - Cost for workers: a scan reads `active` (one line for 64 slots) and
 *   visits only slots with their bit set: those that held work since the
 *   last time a worker parked (two loads each, cache hits while the slot
 *   stays empty); a slot idle since then costs nothing until the full
 *   scans of parking and of the last searcher, which read two words per
 *   slot made (at most 64).
 * - Shutdown: the seq_cst store of tail is the "publish, then full
 *   barrier" of thread_pool.c's shutdown protocol: the submitter's seq_cst
 *   load of `flags` follows it in S, and a worker's exit check fences
 *   after its own seq_cst load of `flags` before scanning every slot.
 * - ThreadSanitizer sees every synchronisation here (atomics with the
 *   orders above; the fences are the caller's CF__FENCE_SEQ_CST). */
#include <pthread.h>
#include <string.h>

#include "sys/alloc.h"
#include "sync/futex.h" /* cf__cpu_relax */
#include "thread/subslot.h"

#ifdef CF_TEST_HOOKS
_Atomic(cf__test_subslot_hook_fn *) cf__test_subslot_hook;
#endif

/* ---- rings ---- */

static struct cf__subslot_ring *ring_new(int64_t cap)
{
    size_t bytes = sizeof(struct cf__subslot_ring) + (size_t)cap * sizeof(_Atomic(cf_future *));
    struct cf__subslot_ring *r = cf__alloc(bytes);
    if (!r) return NULL;
    r->mask = cap - 1;
    for (int64_t i = 0; i < cap; i++) atomic_init(&r->item[i], NULL);
    return r;
}

static void ring_free(struct cf__subslot_ring *r)
{
    cf__free(r, sizeof(struct cf__subslot_ring) +
                    (size_t)(r->mask + 1) * sizeof(_Atomic(cf_future *)));
}

/* Producer: make rings[size] current, with the indices [from, t) copied
 * into it (none when the slot is empty). NULL on ENOMEM. */
static struct cf__subslot_ring *switch_ring(struct cf__subslot *s, int size, int64_t from,
                                            int64_t t)
{
    struct cf__subslot_ring *r = atomic_load_explicit(&s->ring, memory_order_relaxed);
    struct cf__subslot_ring *n = s->rings[size];
    if (!n && !(n = s->rings[size] = ring_new((int64_t)CF__SUBSLOT_CAP0 << size))) return NULL;
    for (int64_t i = from; i < t; i++)
        /* Relaxed: only we write items; takers read n after the release
         * store of `ring` below (their acquire load). */
        atomic_store_explicit(&n->item[i & n->mask],
                              atomic_load_explicit(&r->item[i & r->mask], memory_order_relaxed),
                              memory_order_relaxed);
    /* Release: a taker that loads n sees the copied items. Takers still
     * reading r keep it: it is freed with the slot (subslot.h). */
    atomic_store_explicit(&s->ring, n, memory_order_release);
    s->size = size;
    return n;
}

static void rings_free(struct cf__subslot *s)
{
    for (int i = 0; i < CF__SUBSLOT_SIZES; i++) {
        if (s->rings[i]) ring_free(s->rings[i]);
        s->rings[i] = NULL;
    }
}

static void slot_free(struct cf__subslot *s)
{
    rings_free(s);
    cf__free(s, sizeof *s);
}

/* ---- producer ---- */

int cf__subslot_push(struct cf__subslots *ss, struct cf__subslot *s, cf_future *f)
{
    (void)ss;
    /* Relaxed: only we write tail and ring. */
    int64_t t = atomic_load_explicit(&s->tail, memory_order_relaxed);
    struct cf__subslot_ring *r = atomic_load_explicit(&s->ring, memory_order_relaxed);
    /* On a larger ring, look whether the slot is empty: everything
     * reserved (head, the line read after every push anyway), then
     * everything taken. Acquire: as below (the items takers read before
     * moving taken). */
    if (s->size > 0 && (s->head_seen = atomic_load_explicit(&s->head, memory_order_acquire)) >= t &&
        (s->taken_seen = atomic_load_explicit(&s->taken, memory_order_acquire)) >= t) {
        /* Empty (taken == t): back to the smallest ring, whose lines are
         * warm. Cannot fail: rings[0] exists. */
        r = switch_ring(s, 0, t, t);
    } else if (t - s->taken_seen > r->mask) {
        /* Acquire: takers read the items we are about to overwrite before
         * their CAS moved taken past them (pairs with that CAS). */
        s->taken_seen = atomic_load_explicit(&s->taken, memory_order_acquire);
        if (t - s->taken_seen > r->mask && (s->size + 1 >= CF__SUBSLOT_SIZES ||
                                            !(r = switch_ring(s, s->size + 1, s->taken_seen, t))))
            return -1;
    }
    atomic_store_explicit(&r->item[t & r->mask], f, memory_order_relaxed);
    /* Seq_cst: publishes the item and the task (release), and orders the
     * store before the load of head below in S (the contract's proof). */
    atomic_store_explicit(&s->tail, t + 1, memory_order_seq_cst);
    /* Seq_cst: see the contract (was empty, or an older task's taker will
     * see ours). */
    int64_t h = atomic_load_explicit(&s->head, memory_order_seq_cst);
    s->head_seen = h;
    return h >= t;
}

bool cf__subslot_stalled(struct cf__subslot *s)
{
    /* Relaxed: only we write tail. */
    int64_t t = atomic_load_explicit(&s->tail, memory_order_relaxed);
    if (t < s->stall_at) return false;
    s->stall_at = t + CF__SUBSLOT_STALL_EVERY;
    /* Relaxed: a hint that decides only whether to make an extra wake-up;
     * nothing is read through it. */
    int64_t taken = atomic_load_explicit(&s->taken, memory_order_relaxed);
    bool stalled = taken == s->stall_taken && t - taken >= CF__SUBSLOT_STALL_EVERY;
    s->stall_taken = taken;
    return stalled;
}

void cf__subslot_announce(struct cf__subslots *ss, struct cf__subslot *s)
{
    uint64_t bit = (uint64_t)1 << s->index;
    /* Relaxed load after the caller's fence: a set bit needs no RMW; a
     * clear one is set (the contract's argument about bits). */
    if (!(atomic_load_explicit(&ss->active, memory_order_relaxed) & bit))
        atomic_fetch_or_explicit(&ss->active, bit, memory_order_seq_cst);
}

/* ---- takers ---- */

/* Reserve the next batch of tasks, [h, h + k), for takers (any taker,
 * not only us). False if nothing is queued beyond h. The reservation is
 * C in the contract's proof: a reserve that leaves the slot empty in our
 * view re-reads tail and reports more. */
static bool reserve(struct cf__subslot *s, int64_t h, bool *more)
{
    /* Acquire: pairs with the producer's seq_cst (release) store of tail;
     * the items below it, and their tasks, are visible to us and, through
     * our CAS of head (release), to a taker whose acquire load of head
     * reads it. */
    int64_t t = atomic_load_explicit(&s->tail, memory_order_acquire);
    if (h >= t) return false;
    int64_t avail = t - h, k = avail < CF__SUBSLOT_TAKE_MAX ? avail : CF__SUBSLOT_TAKE_MAX;
    /* Seq_cst: C in the contract's proof; a failed CAS means another taker
     * reserved (it made progress) and we look again. */
    if (atomic_compare_exchange_strong_explicit(&s->head, &h, h + k, memory_order_seq_cst,
                                                memory_order_relaxed)) {
        /* The reserved records are cold (written long ago by the
         * producer): start fetching them all now, so that their misses
         * overlap instead of stalling each take in turn. Write intent:
         * running a task CASes its state word. Acquire: as in the take;
         * an item is only a prefetch address here. */
        struct cf__subslot_ring *r = atomic_load_explicit(&s->ring, memory_order_acquire);
        for (int64_t i = 0; i < k; i++)
            __builtin_prefetch(
                atomic_load_explicit(&r->item[(h + i) & r->mask], memory_order_relaxed), 1);
        if (k < avail) *more = true;
        /* Seq_cst: the re-read of the proof (our view became empty). */
        else if (atomic_load_explicit(&s->tail, memory_order_seq_cst) > h + k) *more = true;
    }
    return true;
}

int cf__subslot_take(struct cf__subslot *s, cf_future **out, int max, bool *more)
{
    for (;;) {
        /* Relaxed: the CAS below decides. */
        int64_t c = atomic_load_explicit(&s->taken, memory_order_relaxed);
        /* Acquire: pairs with the reserver's seq_cst CAS of head; the items
         * below head, and their tasks, are visible (see reserve). */
        int64_t h = atomic_load_explicit(&s->head, memory_order_acquire);
        if (c >= h) {
            if (!reserve(s, h, more)) return 0;
            continue;
        }
        /* Acquire, after head: a ring at least as new as the one that held
         * index h - 1 (the producer stored it before publishing tail). */
        struct cf__subslot_ring *r = atomic_load_explicit(&s->ring, memory_order_acquire);
        int64_t k = h - c < max ? h - c : max;
        for (int64_t i = 0; i < k; i++) /* Relaxed: valid only if the CAS succeeds (subslot.h). */
            out[i] = atomic_load_explicit(&r->item[(c + i) & r->mask], memory_order_relaxed);
#ifdef CF_TEST_HOOKS
        /* Relaxed: installed before the interleaving it forces. */
        cf__test_subslot_hook_fn *hook = atomic_load_explicit(&cf__test_subslot_hook,
                                                              memory_order_relaxed);
        if (__builtin_expect(hook != NULL, 0)) hook(s);
#endif
        /* Seq_cst: releases our reads of the items to the producer (who
         * reuses their places after an acquire load of taken), and orders
         * the take in S with the parkers' re-checks (retire_bit). */
        if (atomic_compare_exchange_weak_explicit(&s->taken, &c, c + k, memory_order_seq_cst,
                                                  memory_order_relaxed)) {
            if (c + k < h) *more = true; /* reserved tasks left for the next take */
            return (int)k;
        }
        cf__cpu_relax(); /* another taker won: it made progress */
    }
}

/* s looked empty: clear its bit, then look again (the contract). True if
 * it holds work after all (its bit is set again). */
static bool retire_bit(struct cf__subslots *ss, struct cf__subslot *s)
{
    uint64_t bit = (uint64_t)1 << s->index;
    /* Seq_cst: ordered in S against the producer's fence (the contract). */
    atomic_fetch_and_explicit(&ss->active, ~bit, memory_order_seq_cst);
    /* Seq_cst: the re-check after the clear. */
    int64_t t = atomic_load_explicit(&s->tail, memory_order_seq_cst);
    int64_t c = atomic_load_explicit(&s->taken, memory_order_seq_cst);
    if (c >= t) return false;
    atomic_fetch_or_explicit(&ss->active, bit, memory_order_seq_cst);
    return true;
}

int cf__subslots_take(struct cf__subslots *ss, cf_future **out, int max, unsigned start, bool *more)
{
    /* Relaxed: a hint; a missed bit is covered by the full scans. */
    uint64_t act = atomic_load_explicit(&ss->active, memory_order_relaxed);
    if (!act) return 0;
    start &= 63;
    uint64_t rot = start ? act >> start | act << (64 - start) : act;
    while (rot) {
        int i = (int)((unsigned)__builtin_ctzll(rot) + start) & 63;
        rot &= rot - 1;
        /* Acquire: pairs with the release store that made slot i. */
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_acquire);
        if (!s) continue;
        /* Empty: its bit stays set until a parker retires it (clearing it
         * here would cost the producer an RMW on `active`, and both sides
         * a cache-line transfer, on every push into a slot kept busy). */
        int k = cf__subslot_take(s, out, max, more);
        if (k) return k;
    }
    return 0;
}

void cf__subslots_retire_idle(struct cf__subslots *ss)
{
    /* Relaxed: retire_bit re-checks with seq_cst loads after its RMW. */
    uint64_t act = atomic_load_explicit(&ss->active, memory_order_relaxed);
    while (act) {
        int i = __builtin_ctzll(act);
        act &= act - 1;
        /* Acquire: pairs with the release store that made slot i. */
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_acquire);
        if (s && atomic_load_explicit(&s->taken, memory_order_relaxed) >=
                     atomic_load_explicit(&s->tail, memory_order_relaxed))
            (void)retire_bit(ss, s);
    }
}

bool cf__subslots_submitting(struct cf__subslots *ss)
{
    /* Acquire: pairs with the release store of n (tab[0, n) are set). */
    int n = atomic_load_explicit(&ss->n, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_acquire);
        /* Acquire: pairs with the release store that ends a submit. */
        if (s && atomic_load_explicit(&s->submitting, memory_order_acquire)) return true;
    }
    return false;
}

bool cf__subslots_any(struct cf__subslots *ss)
{
    /* Acquire: pairs with the release store of n (tab[0, n) are set). */
    int n = atomic_load_explicit(&ss->n, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_acquire);
        /* Relaxed: ordered by the caller's fence (worker.c). */
        if (s && atomic_load_explicit(&s->tail, memory_order_relaxed) >
                     atomic_load_explicit(&s->taken, memory_order_relaxed)) {
            /* Make sure the scans that follow look at it: its producer may
             * be between its fence and cf__subslot_announce (or withdrew
             * the task on shutdown without announcing it). */
            cf__subslot_announce(ss, s);
            return true;
        }
    }
    return false;
}

/* ---- the registry: which pools are alive, which thread owns which slot ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cf__subslots *reg_head; /* registered pools, under reg_lock */
static uint64_t reg_uid;              /* under reg_lock */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static pthread_key_t reg_key; /* its destructor releases a thread's slots */

#define TCACHE 4 /* pools a thread keeps a slot in at once */
struct tcache_ent {
    struct cf__subslots *ss;
    uint64_t uid;
    struct cf__subslot *s;
};
static _Thread_local struct tcache_ent tcache[TCACHE];

static bool registered(const struct cf__subslots *ss, uint64_t uid)
{
    for (struct cf__subslots *x = reg_head; x; x = x->reg_next)
        if (x == ss && x->uid == uid) return true;
    return false;
}

/* Under reg_lock: give e's slot back if its pool is still alive; if the
 * pool was freed, the slot was left to us (an orphan): free it. */
static void release_ent(struct tcache_ent *e)
{
    if (e->s && registered(e->ss, e->uid)) e->s->owned = false;
    else if (e->s && e->s->orphan) slot_free(e->s);
    *e = (struct tcache_ent){0};
}

static void thread_exit(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < TCACHE; i++) release_ent(&tcache[i]);
    pthread_mutex_unlock(&reg_lock);
}

/* A fork in another thread must not leave the lock held in the child. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
}
static void fork_release(void)
{
    pthread_mutex_unlock(&reg_lock);
}

static void reg_setup(void)
{
    (void)pthread_key_create(&reg_key, thread_exit);
    (void)pthread_atfork(fork_prepare, fork_release, fork_release);
}

void cf__subslots_init(struct cf__subslots *ss)
{
    pthread_once(&reg_once, reg_setup);
    atomic_init(&ss->active, 0);
    atomic_init(&ss->n, 0);
    for (int i = 0; i < CF__SUBSLOT_MAX; i++) atomic_init(&ss->tab[i], NULL);
    pthread_mutex_lock(&reg_lock);
    ss->uid = ++reg_uid;
    ss->reg_prev = NULL;
    ss->reg_next = reg_head;
    if (reg_head) reg_head->reg_prev = ss;
    reg_head = ss;
    pthread_mutex_unlock(&reg_lock);
}

void cf__subslots_destroy(struct cf__subslots *ss)
{
    pthread_mutex_lock(&reg_lock);
    if (ss->reg_prev) ss->reg_prev->reg_next = ss->reg_next;
    else if (reg_head == ss) reg_head = ss->reg_next;
    if (ss->reg_next) ss->reg_next->reg_prev = ss->reg_prev;
    ss->reg_next = ss->reg_prev = NULL;
    /* A slot a live thread owns is not freed here: the pool may be freed
     * from one of its own tasks while the thread that submitted that task
     * is still inside its push, about to read `head` (subslot_push reads
     * it after publishing). Its rings go (that read touches none), the
     * slot is left as an orphan, and its owner frees it when it exits or
     * next looks at its cache (release_ent); a slot of the calling thread
     * is freed at once. */
    int n = atomic_load_explicit(&ss->n, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_relaxed);
        atomic_store_explicit(&ss->tab[i], NULL, memory_order_relaxed);
        if (!s) continue;
        int mine = -1;
        for (int k = 0; k < TCACHE; k++)
            if (tcache[k].s == s && tcache[k].ss == ss && tcache[k].uid == ss->uid) mine = k;
        if (s->owned && mine < 0) {
            rings_free(s);
            s->orphan = true;
        } else {
            if (mine >= 0) tcache[mine] = (struct tcache_ent){0};
            slot_free(s);
        }
    }
    atomic_store_explicit(&ss->n, 0, memory_order_relaxed);
    pthread_mutex_unlock(&reg_lock);
}

/* Under reg_lock: a free slot of ss, or a new one. */
static struct cf__subslot *claim(struct cf__subslots *ss)
{
    int n = atomic_load_explicit(&ss->n, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        struct cf__subslot *s = atomic_load_explicit(&ss->tab[i], memory_order_relaxed);
        if (!s->owned) {
            s->owned = true; /* its producer fields: the last owner's, via the lock */
            return s;
        }
    }
    if (n >= CF__SUBSLOT_MAX) return NULL;
    void *raw = cf__alloc_aligned(sizeof(struct cf__subslot), CF__CACHE_LINE);
    if (!raw) return NULL;
    struct cf__subslot *s = raw;
    struct cf__subslot_ring *r = ring_new(CF__SUBSLOT_CAP0);
    if (!r) {
        cf__free(raw, sizeof *s);
        return NULL;
    }
    memset(s, 0, sizeof *s);
    atomic_init(&s->head, 0);
    atomic_init(&s->taken, 0);
    atomic_init(&s->tail, 0);
    atomic_init(&s->ring, r);
    s->head_seen = 0;
    s->taken_seen = 0;
    s->stall_at = 0;
    s->stall_taken = 0;
    s->size = 0;
    s->rings[0] = r;
    s->owned = true;
    s->index = n;
    /* Release: takers that load tab[n] or n see the slot initialised. */
    atomic_store_explicit(&ss->tab[n], s, memory_order_release);
    atomic_store_explicit(&ss->n, n + 1, memory_order_release);
    return s;
}

static __attribute__((noinline)) struct cf__subslot *mine_slow(struct cf__subslots *ss)
{
    /* Another entry of ours for this pool: move it to the front. */
    for (int i = 1; i < TCACHE; i++)
        if (tcache[i].ss == ss && tcache[i].uid == ss->uid) {
            struct tcache_ent e = tcache[i];
            memmove(&tcache[1], &tcache[0], sizeof tcache[0] * (size_t)i);
            tcache[0] = e;
            return e.s;
        }
    pthread_mutex_lock(&reg_lock);
    /* Entries of freed pools are dropped; then the oldest is evicted. */
    for (int i = 0; i < TCACHE; i++)
        if (tcache[i].ss && !registered(tcache[i].ss, tcache[i].uid)) release_ent(&tcache[i]);
    /* NULL (every slot owned, or no memory) is cached too: this thread
     * then uses the injection queue without coming back here each time. */
    struct cf__subslot *s = claim(ss);
    release_ent(&tcache[TCACHE - 1]);
    memmove(&tcache[1], &tcache[0], sizeof tcache[0] * (TCACHE - 1));
    tcache[0] = (struct tcache_ent){.ss = ss, .uid = ss->uid, .s = s};
    pthread_mutex_unlock(&reg_lock);
    /* Non-NULL: the key's destructor runs at this thread's exit. */
    if (s) (void)pthread_setspecific(reg_key, tcache);
    return s;
}

struct cf__subslot *cf__subslot_mine(struct cf__subslots *ss)
{
    if (__builtin_expect(tcache[0].ss == ss && tcache[0].uid == ss->uid, 1)) return tcache[0].s;
    return mine_slow(ss);
}
