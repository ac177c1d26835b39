/* The process pool's shared memory: what parent and workers both see.
 *
 * One anonymous MAP_SHARED mapping, made before the zygote is forked, so it
 * has no name another user could open and only the pool's own processes
 * (parent, zygote, workers) map it. Layout, every part page aligned:
 *
 *   [hdr: one page]  [channel control: nchan pages]
 *   [slots: nchan x chan_slots]  [arg spill: nchan x arg_spill]
 *   [result spill: nchan x res_spill]
 *
 * Every channel's part of each region is page aligned (its control page,
 * its slot block rounded up to pages, its two spill rings), so that a
 * worker can unmap every part that is not its own (cf__pp_shm_isolate):
 * a worker maps only the header page and its own channel. The parent marks
 * the whole mapping MADV_DONTFORK once the zygote is forked, so no later
 * fork (another pool's zygote, the application's own fork()) inherits it;
 * a worker does the same for what it keeps, so a task that forks does not
 * pass it on either.
 *
 * A channel is one worker's pair of SPSC queues, both made of the same
 * `depth` slots: the parent fills slot pos % depth in order (QUEUED) and the
 * worker takes them in order; the worker writes the result into the same
 * slot (DONE) and the parent's collector takes them back in order (FREE).
 * Each slot is a 64-byte header plus slot_size inline bytes (the argument on
 * the way in, the result and message on the way out). Larger arguments go
 * to the channel's argument spill ring, larger results to its result spill
 * ring: byte rings with monotonically increasing 64-bit positions, records
 * contiguous (a record that would straddle the end starts again at 0).
 *
 * Spill rings keep their resident part bounded. The producer starts the
 * next lap as soon as a record would reach past the ring's window and the
 * ring's start is free (cf__pp_spill_fit), so steady traffic reuses the
 * window's pages. Pages past the window are given back as the consumer
 * (the parent's collector, for both rings) passes them: pages wholly
 * behind the freed position are punched out with MADV_REMOVE, in batches
 * of at least cf__pp_spill_guard() bytes. The producer never uses the last
 * guard bytes of the ring, so it never writes, on its next lap, into pages
 * still waiting to be punched. A ring's resident part is therefore at most
 * the window + the bytes of its records in flight + the guard + two pages
 * (see punch() in proc_ring_parent.c).
 *
 * Trust: the parent never reads a pointer from here, and validates every
 * value a worker could have written (state kind and generation, lengths,
 * spill positions) before using it; see proc_ring_parent.c. */
#ifndef CF_PROC_SHM_H
#define CF_PROC_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- the slot state word ----
 *   bits 0-2  kind (below)
 *   bit  3    WAITER: the worker sleeps in futex_wait on this word; whoever
 *             fills the slot (parent) wakes it
 *   bits 4-31 generation: the low 28 bits of the position the state belongs
 *             to, so a stale or misplaced state is recognised (ABA guard for
 *             a late cancel, and a check on what a worker wrote). */
enum {
    CF__SK_FREE = 0,      /* collected; the producer may fill it */
    CF__SK_QUEUED = 1,    /* parent: a task waits here (not begun) */
    CF__SK_STARTED = 2,   /* worker: CAS QUEUED->STARTED, it has begun (SEMANTICS 31b) */
    CF__SK_DONE = 3,      /* worker: CAS STARTED->DONE, result in the slot */
    CF__SK_CANCELLED = 4, /* parent: CAS QUEUED->CANCELLED, it will never run */
    CF__SK_SKIPPED = 5,   /* worker: CAS CANCELLED/EXIT->SKIPPED, passed over */
    CF__SK_EXIT = 6,      /* parent: the worker exits when it reaches this */
    CF__SK_HELD = 7,      /* parent: filled from the overflow list, not yet released
                           * (the feeder first checks the future was not cancelled) */
};
#define CF__SK_KIND 7u
#define CF__SK_WAITER 8u
#define CF__SK_GEN_SHIFT 4
#define CF__SK_GEN_MASK 0x0fffffffu

static inline uint32_t cf__sk_make(uint32_t kind, uint64_t pos)
{
    return kind | ((uint32_t)(pos & CF__SK_GEN_MASK) << CF__SK_GEN_SHIFT);
}
static inline uint32_t cf__sk_kind(uint32_t s)
{
    return s & CF__SK_KIND;
}
static inline uint32_t cf__sk_gen(uint32_t s)
{
    return s >> CF__SK_GEN_SHIFT;
}
static inline uint32_t cf__pos_gen(uint64_t pos)
{
    return (uint32_t)(pos & CF__SK_GEN_MASK);
}

/* The spill rings' guard (bytes): the producer keeps this much of the
 * ring unused, the consumer punches out freed pages once this many have
 * accumulated behind it. A multiple of the page size, at most 256 KiB and
 * at most an eighth of the ring. */
static inline uint64_t cf__pp_spill_guard(uint64_t ring)
{
    uint64_t g = ring / 8 < (256u << 10) ? ring / 8 : (256u << 10);
    g &= ~(uint64_t)4095;
    return g ? g : 4096;
}
/* The longest record a spill ring of `ring` bytes takes. */
static inline uint64_t cf__pp_spill_room(uint64_t ring)
{
    return ring - cf__pp_spill_guard(ring);
}

/* The spill rings' window (bytes): a record that would reach past it
 * starts the next lap instead, at offset 0, when the ring's start is free,
 * so steady traffic keeps reusing the same pages and only what lies past
 * the window is punched out (punch() in proc_ring_parent.c). At most 256 KiB and a quarter
 * of the ring. */
static inline uint64_t cf__pp_spill_window(uint64_t ring)
{
    uint64_t w = ring / 4 < (256u << 10) ? ring / 4 : (256u << 10);
    return w & ~(uint64_t)4095;
}

/* Where a record of `len` bytes goes in a ring of `ring` bytes whose
 * producer is at `head` and whose consumer has freed up to `tail`: false
 * when it does not fit now. Records are contiguous (one that would cross
 * the ring's end starts the next lap) and stay within the window when
 * they can; the guard is never used. */
static inline bool cf__pp_spill_fit(uint64_t ring, uint64_t head, uint64_t tail, uint64_t len,
                                    uint64_t *pos)
{
    uint64_t room = cf__pp_spill_room(ring), off = head % ring, next = head + (ring - off);
    if (off + len > cf__pp_spill_window(ring) && off && next + len - tail <= room) {
        *pos = next; /* back to the ring's start */
        return true;
    }
    if (off + len > ring || head + len - tail > room) return false;
    *pos = head;
    return true;
}

/* Argument flags (parent-written). */
#define CF__PA_SPILL 1u
/* Result flags (worker-written). */
#define CF__PR_SPILL 1u
#define CF__PR_KNOWN CF__PR_SPILL

/* The longest task error message carried back (bytes, without NUL). */
#define CF__PMSG_MAX 4096u

/* A slot header. Parent-written fields are set before the release exchange
 * that makes the slot QUEUED; worker-written fields before the release CAS
 * that makes it DONE. The parent reads each worker field exactly once
 * (relaxed atomic loads), then validates. */
struct cf__pslot {
    _Atomic uint32_t state;
    uint32_t arg_check; /* parent: cf__pp_arg_check() of the task */
    uint64_t fn;        /* parent: the task function's address (same in a fork) */
    uint64_t arg_len;   /* parent */
    uint64_t arg_pos;   /* parent: position in the arg spill ring if CF__PA_SPILL */
    uint64_t res_len;   /* worker: result bytes (0 when code != 0) */
    uint64_t res_pos;   /* worker: position in the result spill ring if CF__PR_SPILL */
    int32_t code;       /* worker: the task's return value */
    uint32_t msg_len;   /* worker: message bytes after the result (code != 0) */
    uint16_t rflags;    /* worker: CF__PR_* */
    uint16_t aflags;    /* parent: CF__PA_* */
    uint32_t res_check; /* worker: cf__pp_res_check() of the result */
};
_Static_assert(sizeof(struct cf__pslot) == 64, "a slot header is one cache line");

/* Checks on what one side leaves for the other in a slot: the parent's
 * over a task (position, fields, argument bytes), the worker's over a
 * result (position, fields, result and message bytes); each side refuses a
 * slot whose check does not match (the worker exits as corrupted, the
 * parent breaks the pool). They catch stray writes into a channel (a task
 * that scribbles over the queued tasks or uncollected results of its own
 * worker); they are no defence against a task that means harm, which runs
 * in the worker and can compute them too. Bytes beyond the first
 * CF__PCHECK_BYTES of a record are not covered (hashing them would cost
 * as much as copying them). */
#define CF__PCHECK_BYTES (64u << 10)

/* The hash behind the checks. Each step folds a 64x64->128-bit product
 * (low half xor high half), and the bytes go through four independent
 * lanes of 16 bytes each, so a 64-byte record costs four multiplies that
 * run side by side instead of a chain of one per word: both sides compute
 * a check on every task (the parent over the argument, the worker over the
 * result) and verify the other's, so its latency is paid four times per
 * task. Not a defence against intent (see above): a word equal to its
 * lane's constant zeroes that lane's product, which a stray write hits
 * with probability 2^-64. */
#define CF__PK0 0xa0761d6478bd642full
#define CF__PK1 0xe7037ed1a0b428dbull
#define CF__PK2 0x8ebc6af09c88c6e3ull
#define CF__PK3 0x589965cc75374cc3ull

static inline uint64_t cf__pp_mum(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    uint64_t h = a * 0x100000001b3ull ^ b;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 29) ^ (b * 0xc4ceb9fe1a85ec53ull);
#endif
}

static inline uint64_t cf__pp_word(const unsigned char *b)
{
    uint64_t w;
    __builtin_memcpy(&w, b, 8);
    return w;
}

/* Bytes [0, n) of b (n < 16) as two words, zero padded. */
static inline void cf__pp_tail16(const unsigned char *b, uint64_t n, uint64_t *w0, uint64_t *w1)
{
    unsigned char t[16] = {0};
    __builtin_memcpy(t, b, (size_t)n);
    *w0 = cf__pp_word(t);
    *w1 = cf__pp_word(t + 8);
}

/* The first CF__PCHECK_BYTES bytes of b, and len, folded into h. */
static inline uint64_t cf__pp_mix_bytes(uint64_t h, const unsigned char *b, uint64_t len)
{
    static const uint64_t k[4] = {CF__PK0, CF__PK1, CF__PK2, CF__PK3};
    uint64_t n = len < CF__PCHECK_BYTES ? len : CF__PCHECK_BYTES, i = 0;
    uint64_t s[4] = {h, h ^ CF__PK1, h ^ CF__PK2, h ^ CF__PK3};
    for (; i + 64 <= n; i += 64)
        for (size_t l = 0; l < 4; l++)
            s[l] = cf__pp_mum(cf__pp_word(b + i + 16 * l) ^ s[l],
                              cf__pp_word(b + i + 16 * l + 8) ^ k[l]);
    unsigned l = 0; /* fewer than 64 bytes left: at most four chunks */
    for (; i + 16 <= n; i += 16, l++)
        s[l] = cf__pp_mum(cf__pp_word(b + i) ^ s[l], cf__pp_word(b + i + 8) ^ k[l]);
    if (i < n) {
        uint64_t w0, w1;
        cf__pp_tail16(b + i, n - i, &w0, &w1);
        s[l] = cf__pp_mum(w0 ^ s[l], w1 ^ k[l] ^ (n - i));
    }
    return cf__pp_mum(cf__pp_mum(s[0] ^ CF__PK2, s[1] ^ CF__PK3) ^ len,
                      cf__pp_mum(s[2] ^ CF__PK0, s[3] ^ CF__PK1) ^ CF__PK0);
}

static inline uint32_t cf__pp_arg_check(uint64_t pos, uint64_t fn, uint64_t len, uint64_t apos,
                                        uint32_t aflags, const unsigned char *bytes)
{
    uint64_t h = cf__pp_mum(pos ^ CF__PK0, fn ^ CF__PK1) ^
                 cf__pp_mum(apos ^ CF__PK2, ((uint64_t)aflags << 32 | 0x61726773u) ^ CF__PK3);
    h = cf__pp_mix_bytes(h, bytes, len);
    return (uint32_t)(h ^ (h >> 32));
}

/* A result with no message (mlen 0) hashes no message bytes: mlen is in
 * the header's part, so a message length changed after the fact still
 * fails the check. */
static inline uint32_t cf__pp_res_check(uint64_t pos, uint64_t rlen, uint64_t rpos, int32_t code,
                                        uint32_t mlen, uint32_t rflags, const unsigned char *res,
                                        const unsigned char *msg)
{
    uint64_t hdr = (uint64_t)(uint32_t)code | (uint64_t)rflags << 32 | (uint64_t)0x7265u << 48;
    uint64_t h = cf__pp_mum(pos ^ CF__PK3, rpos ^ CF__PK2) ^
                 cf__pp_mum(hdr ^ CF__PK1, ((uint64_t)mlen << 32 | (rlen & 0xffffffffu)) ^ CF__PK0);
    h = cf__pp_mix_bytes(h, res, rlen);
    if (mlen) h = cf__pp_mix_bytes(h, msg, mlen);
    return (uint32_t)(h ^ (h >> 32));
}

/* Per-channel control words, one page per channel (so that only the
 * channel's own worker maps them), written by the parent (res_tail,
 * res_seq, cancel_req) and by the worker (res_waiting).
 * cancel_req is 1 + the ring position of the latest begun task whose
 * future someone asked to cancel (cf_out_cancel_requested): the parent
 * raises it with a release CAS and never lowers it (a late request for an
 * older task cannot hide a newer one); the task's acquire load compares it
 * with its own position. Only the parent's CAS reads it: a value a worker
 * scribbled there can only keep that worker's own tasks from hearing a
 * request. */
struct cf__pchan_ctl {
    _Atomic uint64_t res_tail;    /* parent: result spill freed up to here */
    _Atomic uint32_t res_seq;     /* parent: bumped after freeing; worker futex-waits on it */
    _Atomic uint32_t res_waiting; /* worker: 1 while it waits for result spill space */
    _Atomic uint64_t cancel_req;  /* parent: 1 + position of a task asked to stop */
    char pad_[4096 - 24];
};
_Static_assert(sizeof(struct cf__pchan_ctl) == 4096, "one page per channel");

/* The mapping's first page. */
struct cf__pshm_hdr {
    uint64_t magic;
    char pad0_[56];
    /* Doorbell: the collector stores 1 before it sleeps in poll(); a worker
     * that completes a slot and finds 1 swaps it to 0 and writes the
     * eventfd. On its own line: workers write it, the collector writes it. */
    _Atomic uint32_t coll_sleeping;
    char pad1_[60];
};
_Static_assert(sizeof(struct cf__pshm_hdr) == 128, "two lines");
#define CF__PSHM_MAGIC 0x6366707368617265ull /* "cfpshare" */

/* ---- parent <-> zygote messages (SOCK_SEQPACKET socket pairs: one
 * message per send and recv) ---- */
enum { CF__ZQ_SPAWN = 1, CF__ZQ_KILL = 2, CF__ZQ_EXIT = 3 };
struct cf__zreq {
    int32_t op;
    int32_t chan;  /* SPAWN */
    int32_t signo; /* KILL */
    int32_t pad_;
    uint64_t pos;     /* SPAWN: the first slot position the worker takes */
    uint64_t res_pos; /* SPAWN: where its result spill ring starts */
};
enum { CF__ZR_SPAWNED = 1, CF__ZR_SPAWN_FAILED = 2, CF__ZR_DIED = 3 };
struct cf__zrep {
    int32_t op;
    int32_t chan;
    int32_t pid;
    int32_t status; /* DIED: the wait status; SPAWN_FAILED: errno */
};

/* Worker exit statuses the parent recognises (a task calling _exit with one
 * of them is still a crash: see proc_collector.c for how retirement is told
 * apart). */
#define CF__WEXIT_OK 0
#define CF__WEXIT_INIT 111    /* the initializer returned non-zero */
#define CF__WEXIT_CORRUPT 112 /* the worker found its ring corrupted */

#endif
