/* libFuzzer target: the parent's decoding of what a process-pool worker
 * writes into shared memory.
 *
 * A hostile worker controls every byte of its own channel: the slot state
 * words (kind, generation, waiter bit), the result fields (length, code,
 * message length, flags, spill position), the inline bytes and the result
 * spill ring. This target builds a one-channel pool by hand around a real
 * shared mapping (no processes), fills a few queued slots from the input,
 * and lets the real collecting code (cf__pp_help_once: the state checks,
 * cf__pp_take_result's validation, cf__pp_free_slot, the spill ring's page
 * punching) take what it accepts and complete the futures. Oracles: the
 * sanitizers (every read stays inside the mapping, which is fenced by
 * inaccessible pages), and the invariants checked below (an accepted
 * result fits the ring, a message arrives as exactly the bytes declared,
 * the ring's tail never goes back, punched pages are behind the tail).
 *
 * Input layout (short inputs are padded with zeros):
 *   byte 0      number of queued slots (1..4)
 *   byte 1      bit 0: keep the state words as given (else the generation
 *               is set to the slot's own position, to reach deeper code);
 *               bit 1: keep the result checks as given (else each is set
 *               to what a worker would compute over the fields and bytes
 *               as they end up, so that results can be accepted)
 *   bytes 2-9   the first queued position (collected)
 *   bytes 10-17 the result ring's tail (where the parent has freed up to)
 *   then 4 x (64-byte slot header + 64 inline bytes), then the bytes of
 *   the result spill ring from its tail on.
 *
 * Not covered: the zygote's reports on the parent's socket; that decoding
 * lives in static functions of proc_collector.c. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cfutures.h"
#include "core/future.h"
#include "process/proc_help.h"
#include "process/proc_pool.h"

#define PAGE 4096u
#define DEPTH 4u
#define SLOT 64u
#define RING (64u << 10)

static struct cf__ppool *pool;
static unsigned char *region; /* with one inaccessible page on each side */
static size_t region_len;
static const struct cf__future_ops fops; /* no hooks: nothing to free or cancel */

static int never_run(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len, (void)out;
    abort(); /* the fuzzer runs no task */
}

static void setup(void)
{
    size_t bytes = sizeof(struct cf__ppool) + sizeof(struct cf__pchan) + 64;
    void *raw = calloc(1, bytes);
    if (!raw) abort();
    struct cf__ppool *p = (struct cf__ppool *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    p->raw = raw;
    p->n = 1;
    p->depth = DEPTH;
    p->slot_size = SLOT;
    p->stride = sizeof(struct cf__pslot) + SLOT;
    p->chan_slots = PAGE;
    p->arg_spill = p->res_spill = RING;
    p->arg_max = cf__pp_spill_room(RING);
    p->efd = -1;
    atomic_init(&p->refs, 1);
    p->ch[0].rec = calloc(DEPTH, sizeof(struct cf__prec));
    p->scratch = calloc(DEPTH, sizeof(cf_future *));
    if (!p->ch[0].rec || !p->scratch) abort();
    pthread_mutex_init(&p->ov_lock, NULL);
    /* [none][hdr][ctl][slots][arg ring][result ring][none] */
    p->map_len = 3 * PAGE + 2 * (size_t)RING;
    region_len = p->map_len + 2 * PAGE;
    region = mmap(NULL, region_len, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) abort();
    p->map = region + PAGE;
    if (mprotect(p->map, p->map_len, PROT_READ | PROT_WRITE)) abort();
    p->hdr = (struct cf__pshm_hdr *)p->map;
    p->ctl = (struct cf__pchan_ctl *)(p->map + PAGE);
    p->slots = p->map + 2 * PAGE;
    p->argsp = p->slots + PAGE;
    p->ressp = p->argsp + RING;
    pool = p;
}

static uint64_t rd64(const uint8_t *d)
{
    uint64_t v;
    memcpy(&v, d, sizeof v);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pool) setup();
    struct cf__ppool *p = pool;
    struct cf__pchan *ch = &p->ch[0];
    enum { HDR = 18, PER_SLOT = 64 + SLOT };
    uint8_t in[HDR + DEPTH * PER_SLOT];
    memset(in, 0, sizeof in);
    memcpy(in, data, size < sizeof in ? size : sizeof in);
    const uint8_t *rest = size > sizeof in ? data + sizeof in : NULL;
    size_t rest_len = size > sizeof in ? size - sizeof in : 0;

    unsigned k = 1 + in[0] % DEPTH;
    bool raw_states = in[1] & 1, raw_checks = in[1] & 2;
    uint64_t pos0 = rd64(in + 2) >> 8; /* any position, far from wrapping 64 bits */
    uint64_t tail = rd64(in + 10) >> 8;
    uint64_t punched = tail - tail % PAGE; /* as the parent leaves it: page aligned, */
    if (tail - punched > cf__pp_spill_guard(RING)) punched = tail; /* within a guard */

    /* The parent's side: k queued tasks at pos0.. */
    memset(p->slots, 0, PAGE);
    memset(p->ressp, 0, RING);
    memset(p->ctl, 0, sizeof *p->ctl);
    atomic_store_explicit(&ch->collected, pos0, memory_order_relaxed);
    atomic_store_explicit(&ch->head, pos0 + k, memory_order_relaxed);
    ch->res_tail = tail;
    ch->res_punched = punched;
    ch->arg_tail = 0;
    ch->dead = false;
    cf_future *fs[DEPTH];
    for (unsigned i = 0; i < k; i++) {
        uint64_t pos = pos0 + i;
        /* Two references, as cf_submit makes: fs[i] ours, r->f the executor's. */
        fs[i] = cf__future_new_task(never_run, NULL, 0, &fops, NULL);
        if (!fs[i]) abort();
        ch->rec[pos & (DEPTH - 1)] = (struct cf__prec){.f = fs[i]};
        /* ...and what the worker wrote over them. */
        struct cf__pslot *s = cf__pp_slot(p, 0, pos);
        memcpy(s, in + HDR + i * PER_SLOT, PER_SLOT);
        uint32_t v = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (!raw_states)
            v = (v & (CF__SK_KIND | CF__SK_WAITER)) | (cf__pos_gen(pos) << CF__SK_GEN_SHIFT);
        atomic_store_explicit(&s->state, v, memory_order_relaxed);
    }
    for (size_t i = 0; i < rest_len && i < RING; i++) p->ressp[(tail + i) % RING] = rest[i];
    for (unsigned i = 0; i < k && !raw_checks; i++) {
        /* What a worker would put there: the check over what the parent
         * will read (only where the bytes lie inside the mapping). */
        uint64_t pos = pos0 + i;
        struct cf__pslot *s = cf__pp_slot(p, 0, pos);
        uint64_t total = s->res_len + s->msg_len;
        const unsigned char *b = NULL;
        if (s->res_len > RING || s->msg_len > RING) {
            /* no bytes to check over: leave it */
        } else if (s->rflags & CF__PR_SPILL) {
            if (total <= RING && s->res_pos % RING + total <= RING)
                b = p->ressp + s->res_pos % RING;
        } else if (total <= SLOT) {
            b = cf__pp_inline(s);
        }
        if (b)
            s->res_check = cf__pp_res_check(pos, s->res_len, s->res_pos, s->code, s->msg_len,
                                            s->rflags, b, b + s->res_len);
    }

    /* Collect what passes the checks (the real code). */
    cf__pp_help_once(p);

    /* Invariants. */
    uint64_t got = atomic_load_explicit(&ch->collected, memory_order_relaxed);
    if (got < pos0 || got > pos0 + k) abort();
    if (ch->res_tail < tail || ch->res_tail - tail > (uint64_t)k * RING) abort();
    if (ch->res_punched < punched || ch->res_punched > ch->res_tail) abort();
    if (ch->res_punched != punched && ch->res_punched % PAGE) abort();
    for (unsigned i = 0; i < k; i++) {
        if (cf_future_done(fs[i])) {
            const void *d = NULL;
            size_t len = 0;
            int rc = cf_future_result(fs[i], 0.0, &d, &len);
            if (rc == 0 && len > cf__pp_spill_room(RING)) abort();
            if (rc == 0 && len && !d) abort();
            if (rc == 0 && len) { /* every byte readable */
                volatile unsigned char sum = 0;
                for (size_t j = 0; j < len; j++) sum ^= ((const unsigned char *)d)[j];
                (void)sum;
            }
            /* A task's message arrives whole: exactly the bytes the worker
             * declared, as one string (a NUL inside would make the record
             * freed later with the wrong size). */
            int code = 0;
            const char *msg = NULL;
            struct cf__pslot w;
            memcpy(&w, in + HDR + i * PER_SLOT, sizeof w);
            if (rc != 0 && cf_future_exception(fs[i], 0.0, &code, &msg) == 0 && msg &&
                w.code != 0 && strlen(msg) != w.msg_len)
                abort();
        }
        uint64_t pos = pos0 + i;
        struct cf__prec *r = &ch->rec[pos & (DEPTH - 1)];
        if (pos >= got && r->f)
            cf_future_release(r->f); /* not collected: the executor's reference */
        r->f = NULL;
        cf_future_release(fs[i]);
    }
    return 0;
}
