/* cf_wait: wait for FIRST_COMPLETED / FIRST_EXCEPTION / ALL_COMPLETED over
 * any mix of futures.
 *
 * Contract.
 * - Progress: the caller blocks (that is the point); a completer's part
 *   (wait_notify) is wait-free: one fetch_add, at most one exchange and one
 *   futex wake, one fetch_sub. Any number of completers may notify at once,
 *   while the caller registers, waits or unregisters.
 * - FIRST_COMPLETED / FIRST_EXCEPTION: one waiter object per call, holding
 *   one node per distinct future that was not done when we looked.
 *   Completers call wait_notify() (from future.c's fire(), no lock held);
 *   it counts the event and, when the condition holds, signals the caller
 *   through a futex word. Cost: O(n) to register, O(1) per completion,
 *   O(n) to unregister.
 * - Lifetime: the object is reference counted by "the caller + every node
 *   that is linked and whose notify has not finished". A node's reference
 *   is dropped by its notify (as its very last access) or by the caller
 *   when cf__waiter_node_remove() unlinked it; whoever drops the last one
 *   frees the object. So a late notify never touches freed memory, and
 *   the caller never waits for completers on its way out.
 * - Every way out (condition met, timeout, early stop) removes every linked
 *   node, so a loop of timed-out waits never grows a future's list.
 * - No lost wake-up: the caller sleeps only on word == 2, set by its own
 *   CAS from 0; a signal stores 1 (exchange) and wakes only if it replaced
 *   a 2, so no system call happens when nobody sleeps.
 * - ALL_COMPLETED registers nothing: it waits for each unfinished future in
 *   turn, last first, like result() does (spin, then futex on the future's
 *   own word, or the pool's helper). It cannot return before every one is
 *   done anyway, completions cost their completers nothing extra (no
 *   listener, so no lock and no notify on a shared waiter), and with the
 *   usual FIFO-ish completion the last one is the only one slept on. Still
 *   O(n) in total.
 * - A pool worker (cf__tls_wait_helper set) does not sleep: it waits on a
 *   private "trigger" future through the pool's helper, which runs other
 *   tasks meanwhile (SEMANTICS 22), and the first signal completes the
 *   trigger. A task that cf_waits on its children never idles its worker.
 * - A thread outside every pool that waits without a deadline runs the
 *   awaited tasks nobody has started while the pool's workers are all busy
 *   (core/help.h), last first, before it spins or sleeps; for FIRST_* after
 *   registering, so the run's own completion signals it.
 * - ALL_COMPLETED over more than 16 futures takes one pass over them, last
 *   first (wait_all_pass): wait for each (helping), and mark it in a
 *   bitmap over the futures' address range to find duplicates (dedup.h).
 *   With no duplicate and everything done, the partition is the array as
 *   it is: nothing is copied and no scratch array is made. A duplicate or
 *   a deadline that passed first falls back to the general path (dedup
 *   into scratch, partition), which then finds the waiting over.
 * - cf_wait_mask runs the same waits and only reads fs: with no duplicate
 *   the general path works on fs itself (no scratch copy), with one it
 *   works on a copy of the distinct futures; the report reads each
 *   distinct future's state once (a second set, of the done ones, gives
 *   the positions of a repeated future the same bit). The ALL_COMPLETED
 *   one-pass path serves it too: all done and none repeated is a mask of
 *   n ones.
 * Design: CPython's concurrent.futures.wait (a waiter object installed on
 * every future, counting completions), with a futex word in place of its
 * condition variable, as in the one-shot events of Drepper, "Futexes Are
 * Tricky" (2011). */
#include <math.h>
#include <string.h>

#include "sys/alloc.h"
#include "sys/config.h"
#include "core/dedup.h"
#include "core/future.h"
#include "core/help.h"

struct wait_ctx {
    struct cf__waiter w; /* first: notify gets &w */
    _Atomic size_t refs;
    _Atomic uint32_t word; /* 0 waiting, 1 signalled, 2 the caller sleeps */
    _Atomic size_t events; /* registered futures seen done */
    size_t need;           /* events that mean "all done" (FIRST_EXCEPTION) */
    enum cf_return_when when;
    cf_future *trigger; /* helper mode: completed by the first signal */
    size_t bytes;
    struct cf__waiter_node nodes[];
};
/* refs, word and events are written by every completer and by the caller.
 * They sit together on purpose: a completion touches all three, so one
 * line moves instead of three (two at worst: cf__alloc aligns to 16 bytes,
 * not 64). */
_Static_assert(offsetof(struct wait_ctx, events) + sizeof(size_t) -
                       offsetof(struct wait_ctx, refs) <=
                   64,
               "a completion's counters on one cache line");

/* A done future holding a task error or a broken-pool failure
 * (cancellation is not an exception). */
static bool has_error(cf_future *f)
{
    /* acquire: we read the outcome after seeing FINISHED (pairs with the
     * completer's release CAS). */
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    return (s & CF__STATE_MASK) == CF__FINISHED && cf__state_outcome(s) != CF__OK;
}

static void ctx_unref(struct wait_ctx *c)
{
    /* release: our accesses to c happen before its destruction. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_release) != 1) return;
    /* acquire: pairs with the other holders' release decrements. */
    CF__ACQUIRE_AFTER(&c->refs);
    cf_future_release(c->trigger);
    cf__free(c, c->bytes);
}

static void ctx_signal(struct wait_ctx *c)
{
    /* release: the caller's acquire load of word == 1 then sees every
     * state change that led to this signal (the futures it re-reads). */
    uint32_t old = atomic_exchange_explicit(&c->word, 1, memory_order_release);
    if (old == 2) cf__futex_wake(&c->word, 1, false);
    else if (old == 0 && c->trigger) /* the first signal, in helper mode */
        (void)cf_future_set_result(c->trigger, NULL, 0);
}

/* `count` registered futures were seen done; `err`: one of them holds an
 * error. Whoever completes the condition signals. */
static void ctx_events(struct wait_ctx *c, size_t count, bool err)
{
    /* relaxed: a plain count; the signal carries the ordering. */
    size_t k = atomic_fetch_add_explicit(&c->events, count, memory_order_relaxed) + count;
    if (c->when == CF_FIRST_COMPLETED || k == c->need || (c->when == CF_FIRST_EXCEPTION && err))
        ctx_signal(c);
}

static void wait_notify(struct cf__waiter *w, struct cf__waiter_node *node)
{
    struct wait_ctx *c = (struct wait_ctx *)w;
    ctx_events(c, 1, c->when == CF_FIRST_EXCEPTION && has_error(node->future));
    ctx_unref(c); /* last access to c */
}

/* Does the condition hold for these distinct futures right now? */
static bool satisfied(cf_future *const *uniq, size_t u, enum cf_return_when when, size_t *n_done)
{
    size_t done = 0;
    bool err = false;
    for (size_t i = 0; i < u; i++) {
        if (cf_future_done(uniq[i])) {
            done++;
            if (when == CF_FIRST_EXCEPTION && !err) err = has_error(uniq[i]);
        }
    }
    *n_done = done;
    switch (when) {
    case CF_FIRST_COMPLETED: return done > 0;
    case CF_FIRST_EXCEPTION: return err || done == u;
    default: return done == u;
    }
}

static cf_future *at_index(const void *coll, size_t i)
{
    return ((cf_future *const *)coll)[i];
}

/* Sleep until signalled or the deadline; first, with h, run what we wait
 * for among uniq[0..u). */
static void ctx_wait(struct wait_ctx *c, cf__deadline deadline, struct cf__help *h,
                     cf_future *const *uniq, size_t u)
{
    if (c->trigger) { /* a pool worker: help until signalled or timed out */
        cf__wait_helper_fn *help = cf__tls_wait_helper;
        if (help) (void)help(cf__tls_wait_helper_ctx, c->trigger, deadline);
        else (void)cf__future_wait_done(c->trigger, deadline);
        return;
    }
    if (h) { /* run awaited tasks until signalled or nothing to run */
        /* acquire: pairs with ctx_signal's release. */
        while (atomic_load_explicit(&c->word, memory_order_acquire) != 1 &&
               cf__help_step(h, u - 1, at_index, uniq))
            ;
        /* acquire: as above. */
        if (atomic_load_explicit(&c->word, memory_order_acquire) == 1) return;
    }
    long spin = cf__wait_spin_ns();
    if (spin > 0) {
        int64_t end = cf__now_ns() + spin;
        if (end > deadline) end = deadline;
        do {
            for (int i = 0; i < 64; i++) {
                /* acquire: pairs with ctx_signal's release. */
                if (atomic_load_explicit(&c->word, memory_order_acquire) == 1) return;
                cf__cpu_relax();
            }
        } while (cf__now_ns() < end);
    }
    for (;;) {
        uint32_t w = 0;
        /* acquire on failure: we may have read the 1 stored by ctx_signal
         * (pairs with its release). Success needs no ordering: the kernel
         * re-checks the word before sleeping. */
        if (!atomic_compare_exchange_strong_explicit(&c->word, &w, 2, memory_order_acquire,
                                                     memory_order_acquire)) {
            if (w == 1) return;
        }
        if (cf__futex_wait(&c->word, 2, deadline, false) == CF_ETIMEDOUT) return;
    }
}

/* Wait until fs[i] is done or the deadline: where the thread has a wait
 * helper through it, else running what h finds among fs[0..i] first.
 * True if done. */
static bool wait_one(cf_future *const *fs, size_t i, cf__deadline deadline, struct cf__help *h)
{
    cf_future *f = fs[i];
    while (!cf_future_done(f)) {
        cf__wait_helper_fn *help = cf__tls_wait_helper;
        if (help) {
            int r = help(cf__tls_wait_helper_ctx, f, deadline);
            if (r != CF_ETIMEDOUT) r = cf__future_wait_done(f, deadline);
            return r != CF_ETIMEDOUT;
        }
        if (cf__help_step(h, i, at_index, fs)) continue;
        if (cf__future_wait_done(f, deadline) == CF_ETIMEDOUT) return false;
    }
    return true;
}

/* ALL_COMPLETED: wait for each unfinished future in turn, last first.
 * Stops at the deadline. */
static void wait_all(cf_future *const *uniq, size_t u, cf__deadline deadline)
{
    struct cf__help h;
    cf__help_init(&h, u, deadline);
    for (size_t i = u; i-- > 0;)
        if (!wait_one(uniq, i, deadline, &h)) break;
}

/* ALL_COMPLETED in one pass over fs[0..n) (addresses in [lo, hi]), last
 * first: wait for each future and mark it. 0 when every future is done
 * and none is repeated: fs is then its own partition. 1 when the general
 * path must finish (a duplicate, the deadline, no memory for the set). */
enum { WAIT_PREFETCH_AHEAD = 16 };

static int wait_all_pass(cf_future *const *fs, size_t n, cf__deadline deadline, uintptr_t lo,
                         uintptr_t hi)
{
    struct cf__seen seen;
    if (cf__seen_init(&seen, n, lo, hi) != 0) return 1;
    struct cf__help h;
    cf__help_init(&h, n, deadline);
    bool dup = false, all = true;
    for (size_t i = n; i-- > 0;) {
        /* A large set's records are long out of cache: ask for the state
         * line of one a few places ahead (the pass runs downwards). */
        if (i >= WAIT_PREFETCH_AHEAD) __builtin_prefetch(fs[i - WAIT_PREFETCH_AHEAD], 0, 0);
        if (!cf__seen_add(&seen, fs[i])) dup = true; /* waited for at its other place */
        else if (!wait_one(fs, i, deadline, &h)) {
            all = false;
            break;
        }
    }
    cf__seen_free(&seen);
    return dup || !all;
}

/* A waiter object for the m futures not done at the scan, or NULL. */
static struct wait_ctx *ctx_new(size_t m, enum cf_return_when when)
{
    size_t bytes = sizeof(struct wait_ctx) + m * sizeof(struct cf__waiter_node);
    struct wait_ctx *c = cf__alloc(bytes);
    if (!c) return NULL;
    c->w.notify = wait_notify;
    atomic_init(&c->refs, 1);
    atomic_init(&c->word, 0);
    atomic_init(&c->events, 0);
    c->need = m;
    c->when = when;
    c->bytes = bytes;
    /* No trigger (out of memory): sleep as anybody else would. */
    c->trigger = cf__tls_wait_helper ? cf__future_new() : NULL;
    return c;
}

/* Register c on every future that is not done; returns how many nodes were
 * used. Each of the futures not done at the scan (`done` were done then)
 * yields exactly one event: its notify, a failed add, or (done between the
 * scan and here) the `late` count at the end. */
static size_t ctx_register(struct wait_ctx *c, cf_future *const *uniq, size_t u, size_t done)
{
    size_t k = 0, done_now = 0;
    bool late_err = false;
    for (size_t i = 0; i < u; i++) {
        if (cf_future_done(uniq[i])) {
            done_now++;
            /* The scan saw no error among those done then, so an error
             * here is a late one. */
            if (c->when == CF_FIRST_EXCEPTION && has_error(uniq[i])) late_err = true;
            continue;
        }
        struct cf__waiter_node *node = &c->nodes[k++];
        node->waiter = &c->w;
        node->future = uniq[i];
        node->index = 0;
        /* relaxed: the node's reference is taken before the node is
         * published (the list unlock's release), so any notify's
         * decrement comes after it in the counter's order. */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        if (cf__waiter_node_add(uniq[i], node)) {
            node->index = 1; /* linked */
        } else {
            /* Done meanwhile: no notify will come. relaxed: not the
             * last reference (we hold ours, dropped with release by
             * ctx_unref, which orders our accesses). */
            atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed);
            ctx_events(c, 1, c->when == CF_FIRST_EXCEPTION && has_error(uniq[i]));
        }
        /* Already decided (FIRST_*): stop registering. relaxed: a hint;
         * ctx_wait's acquire load reads the signal that matters. */
        if (atomic_load_explicit(&c->word, memory_order_relaxed) == 1) break;
        if (k == c->need) break; /* the rest were done at the scan */
    }
    /* relaxed: as above, only saves a redundant signal. */
    if (atomic_load_explicit(&c->word, memory_order_relaxed) != 1 && done_now > done)
        ctx_events(c, done_now - done, late_err);
    return k;
}

/* Unregister the first k nodes on every way out. A done future's
 * completer owns the node (remove would say so under the lock): skip the
 * lock. Then drop the caller's reference. */
static void ctx_unregister(struct wait_ctx *c, size_t k)
{
    for (size_t j = 0; j < k; j++) {
        struct cf__waiter_node *node = &c->nodes[j];
        if (node->index == 1 && !cf_future_done(node->future) &&
            cf__waiter_node_remove(node->future, node))
            /* relaxed: not the last reference (ours goes in ctx_unref,
             * with release). */
            atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed);
    }
    ctx_unref(c);
}

/* FIRST_COMPLETED / FIRST_EXCEPTION: register a waiter on the futures not
 * done (u - done of them), sleep until signalled or the deadline. */
static int wait_first(cf_future *const *uniq, size_t u, size_t done, enum cf_return_when when,
                      cf__deadline deadline)
{
    struct wait_ctx *c = ctx_new(u - done, when);
    if (!c) return CF_ENOMEM;
    size_t k = ctx_register(c, uniq, u, done);
    struct cf__help h;
    cf__help_init(&h, u, deadline);
    ctx_wait(c, deadline, h.on ? &h : NULL, uniq, u);
    ctx_unregister(c, k);
    return 0;
}

/* The general path over the distinct futures uniq[0..u): wait until
 * `when` holds, the deadline passes, or at once for a poll. 0 or
 * CF_ENOMEM. */
static int wait_distinct(cf_future *const *uniq, size_t u, enum cf_return_when when, double timeout,
                         cf__deadline deadline)
{
    size_t done;
    if (satisfied(uniq, u, when, &done) || timeout == 0) return 0; /* nothing to wait for */
    if (when == CF_ALL_COMPLETED) {
        wait_all(uniq, u, deadline);
        return 0;
    }
    return wait_first(uniq, u, done, when, deadline);
}

/* Write the partition as it stands now (each state read once) into fs:
 * done, not done, duplicates. fs is free to overwrite: uniq and dups hold
 * everything. Returns how many are done. */
static size_t wait_partition(cf_future **fs, size_t n, cf_future **uniq, size_t u,
                             cf_future *const *dups)
{
    size_t w = 0, nd = 0;
    for (size_t i = 0; i < u; i++) {
        if (cf_future_done(uniq[i])) fs[w++] = uniq[i];
        else uniq[nd++] = uniq[i];
    }
    memcpy(fs + w, uniq, nd * sizeof *fs);
    memcpy(fs + w + nd, dups, (n - u) * sizeof *fs);
    return w;
}

/* The arguments are valid; [*lo, *hi] is the futures' address range. */
static bool wait_args_ok(cf_future *const *fs, size_t n, enum cf_return_when when, double timeout,
                         uintptr_t *lo, uintptr_t *hi)
{
    if ((!fs && n) || isnan(timeout) ||
        (when != CF_FIRST_COMPLETED && when != CF_FIRST_EXCEPTION && when != CF_ALL_COMPLETED))
        return false;
    uintptr_t a = UINTPTR_MAX, b = 0;
    bool null = false;
    for (size_t i = 0; i < n; i++) { /* the pointers only: no record is read */
        uintptr_t x = (uintptr_t)fs[i];
        null |= x == 0;
        a = x < a ? x : a;
        b = x > b ? x : b;
    }
    *lo = a;
    *hi = b;
    return !null;
}

int cf_wait(cf_future **fs, size_t n, enum cf_return_when when, double timeout, size_t *n_done)
{
    uintptr_t lo, hi;
    if (!wait_args_ok(fs, n, when, timeout, &lo, &hi)) return CF_EINVAL;
    if (n == 0) {
        if (n_done) *n_done = 0;
        return 0;
    }
    cf__deadline deadline;
    (void)cf__deadline_from_timeout(timeout, &deadline);
    if (when == CF_ALL_COMPLETED && n > CF__SEEN_SMALL && timeout != 0 &&
        wait_all_pass(fs, n, deadline, lo, hi) == 0) {
        if (n_done) *n_done = n;
        return 0;
    }

    /* uniq[] from the front of tmp, duplicates from its back half. */
    if (n > SIZE_MAX / 128) return CF_ENOMEM;
    cf_future *stack_tmp[32];
    cf_future **tmp = n <= 16 ? stack_tmp : cf__alloc(2 * n * sizeof *tmp);
    if (!tmp) return CF_ENOMEM;
    cf_future **uniq = tmp, **dups = tmp + n;
    size_t u;
    int rc = cf__dedup(fs, n, uniq, dups, &u);
    if (rc == 0) rc = wait_distinct(uniq, u, when, timeout, deadline);
    if (rc == 0) {
        size_t done = wait_partition(fs, n, uniq, u, dups);
        if (n_done) *n_done = done;
    }
    if (tmp != stack_tmp) cf__free(tmp, 2 * n * sizeof *tmp);
    return rc;
}

/* ---- cf_wait_mask: the same wait, reported as bits over fs's positions ----
 * fs is only read. Without a duplicate (the usual case) the general path
 * runs on fs itself, so nothing is copied; a duplicate costs one array of
 * the distinct futures and a second set (the done ones) to give every
 * position of a future the same bit. */

/* The distinct futures of fs[0..n) (addresses in [lo, hi]): *uniq is fs
 * itself when none is repeated, else *copy (first occurrences in input
 * order, cf__alloc'd with n slots, the caller frees it). 0 or CF_ENOMEM. */
static int mask_distinct(cf_future *const *fs, size_t n, uintptr_t lo, uintptr_t hi,
                         cf_future *const **uniq, size_t *u, cf_future ***copy)
{
    struct cf__seen seen;
    if (cf__seen_init(&seen, n, lo, hi) != 0) return CF_ENOMEM;
    cf_future **c = NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool first = cf__seen_add(&seen, fs[i]);
        if (c) {
            if (first) c[k++] = fs[i];
        } else if (!first) { /* the first duplicate: copy what came before */
            c = cf__alloc(n * sizeof *c);
            if (!c) {
                cf__seen_free(&seen);
                return CF_ENOMEM;
            }
            memcpy(c, fs, i * sizeof *c);
            k = i;
        }
    }
    cf__seen_free(&seen);
    *copy = c;
    *uniq = c ? c : fs;
    *u = c ? k : n;
    return 0;
}

/* Each distinct future's state read once: the bits of fs[0..n) (done may
 * be NULL) and the count of distinct done futures in *n_done. uniq == fs
 * when no future is repeated. 0 or CF_ENOMEM (nothing written). */
static int mask_report(cf_future *const *fs, size_t n, cf_future *const *uniq, size_t u,
                       uintptr_t lo, uintptr_t hi, uint64_t *done, size_t *n_done)
{
    size_t count = 0;
    if (uniq == fs) { /* every position is its own future */
        if (done) memset(done, 0, CF_WAIT_MASK_WORDS(n) * sizeof *done);
        for (size_t i = 0; i < n; i++) {
            if (!cf_future_done(fs[i])) continue;
            count++;
            if (done) done[i / 64] |= (uint64_t)1 << (i % 64);
        }
        *n_done = count;
        return 0;
    }
    struct cf__seen settled; /* the distinct futures seen done */
    if (cf__seen_init(&settled, n, lo, hi) != 0) return CF_ENOMEM;
    for (size_t j = 0; j < u; j++) {
        if (!cf_future_done(uniq[j])) continue;
        count++;
        (void)cf__seen_add(&settled, uniq[j]);
    }
    if (done) {
        memset(done, 0, CF_WAIT_MASK_WORDS(n) * sizeof *done);
        for (size_t i = 0; i < n; i++)
            if (cf__seen_has(&settled, fs[i])) done[i / 64] |= (uint64_t)1 << (i % 64);
    }
    cf__seen_free(&settled);
    *n_done = count;
    return 0;
}

int cf_wait_mask(cf_future *const *fs, size_t n, enum cf_return_when when, double timeout,
                 uint64_t *done, size_t *n_done)
{
    uintptr_t lo, hi;
    if (!wait_args_ok(fs, n, when, timeout, &lo, &hi)) return CF_EINVAL;
    size_t count = 0;
    if (n == 0) {
        if (n_done) *n_done = 0;
        return 0;
    }
    cf__deadline deadline;
    (void)cf__deadline_from_timeout(timeout, &deadline);
    if (when == CF_ALL_COMPLETED && n > CF__SEEN_SMALL && timeout != 0 &&
        wait_all_pass(fs, n, deadline, lo, hi) == 0) {
        /* every future done, none repeated: every bit set */
        if (done) {
            memset(done, 0xff, (n / 64) * sizeof *done);
            if (n % 64) done[n / 64] = ((uint64_t)1 << (n % 64)) - 1;
        }
        if (n_done) *n_done = n;
        return 0;
    }
    cf_future *const *uniq;
    cf_future **copy = NULL;
    size_t u;
    int rc = mask_distinct(fs, n, lo, hi, &uniq, &u, &copy);
    if (rc == 0) rc = wait_distinct(uniq, u, when, timeout, deadline);
    if (rc == 0) rc = mask_report(fs, n, uniq, u, lo, hi, done, &count);
    if (copy) cf__free(copy, n * sizeof *copy);
    if (rc == 0 && n_done) *n_done = count;
    return rc;
}
