/* cf_map: fn over n items, results in input order, through any executor.
 *
 * Contract.
 * - An iterator belongs to one consumer: calls on the same iterator must not
 *   run at the same time. Any number of iterators may share an executor, and
 *   cf_map may be called from inside a task (nested map).
 * - Items are grouped into chunk tasks submitted through ex->ops->submit,
 *   so the same code serves every executor; what it does differs only by
 *   the executor's capabilities (executor.h): pointer mode (map_job_run)
 *   where tasks share our memory, copy mode (map_chunk_run) elsewhere. At most `window` chunk tasks are submitted and not yet fully
 *   yielded (SEMANTICS 25): chunk c + window is submitted only when the
 *   consumer asks for the item after the last one of chunk c.
 * - A chunk's result keeps every item's outcome apart, so one item's
 *   failure stays with that item and iteration continues past it
 *   (SEMANTICS 23, 26): a packed array when every item succeeded with a
 *   result of one size (the common case, one copy per item), else one
 *   record per item (code, length, result or message).
 * - Chunk size: opts.chunksize, else about n / (8 x workers), capped so a
 *   chunk stays short. Window: opts.window, else the executor's
 *   (ops->default_window), else 4 x workers.
 * - While chunks remain to be submitted the executor hears of the map
 *   (ops->map_active), so it can keep a worker looking for them.
 * - Results: cf_map_next one at a time, or cf_map_next_batch the rest of a
 *   uniform chunk as one array (one call per chunk).
 * - One deadline, taken at cf_map (SEMANTICS 24). When it passes while we
 *   wait for a chunk, every chunk not yet yielded is cancelled and the
 *   iterator keeps answering CF_ETIMEDOUT.
 * - The consumer helps (map_help): on an executor with
 *   CF__EXEC_CALLER_MAY_RUN (a thread pool without an initializer) and
 *   with no deadline, rather than sleep on the chunk it needs next while no
 *   worker has started it, it runs that chunk through ops->run_here, which
 *   claims it with the same CAS a worker's run uses, so a chunk runs once
 *   and never after a cancel. At once only while chunks are known to be
 *   short (one of the last two loaded ran under MAP_HELP_MAX_NS; none is
 *   known at first): helping saves a worker's wake-up, but it adds a thread beside
 *   the workers for as long as the chunk runs, so with long items it would
 *   run more of them at once than the pool has workers (a 1-worker pool
 *   running two items on two CPUs). Otherwise the consumer first gives the
 *   workers MAP_HELP_WAIT_NS to start the chunk, and runs it only if none
 *   did (every worker is held elsewhere), so the map still ends.
 * - No atomics here: the futures synchronise. A chunk's result bytes are written before its
 *   future publishes FINISHED (release) and read after cf_future_result
 *   observed it (acquire).
 * - Progress: blocking. The consumer waits for chunks in order (helping
 *   where it may); a chunk waits only where the user's fn does.
 *
 * Memory. The iterator holds one reference on each submitted chunk future
 * until the consumer has moved past that chunk (result pointers handed out
 * point into the chunk's result and stay valid until the next call). In
 * pointer mode (CF__EXEC_SHARED_MEMORY: thread pools) a chunk reads the
 * caller's array and the
 * iterator's ring slot (struct map_job), and a uniform chunk leaves its
 * results in the slot's buffer, reused by every chunk that passes through
 * the slot and freed with the iterator; so cf_map_free cancels what has not
 * started and then waits for the chunks that already run: the caller may
 * free the array when cf_map_free returns.
 * In copy mode (process pools, whose workers cannot see the caller's
 * array) a chunk carries its item bytes, and cf_map_free waits for
 * nothing. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "sys/alloc.h"
#include "core/executor.h"
#include "sync/futex.h"
#include "core/future.h"

/* Adaptive chunking: about 8 chunks per worker, so stragglers balance, but
 * no chunk longer than this many items (or, when items are copied into the
 * chunk, this many bytes), so one chunk stays short and a timeout or an
 * early free does not wait behind a huge one. */
#define MAP_CHUNKS_PER_WORKER 8
#define MAP_CHUNK_MAX_ITEMS 4096
#define MAP_CHUNK_MAX_BYTES ((size_t)64 * 1024)
/* Default window when neither the options nor the executor set one. */
#define MAP_WINDOW_PER_WORKER 4
/* The consumer runs a chunk itself at once only while one of the last two
 * chunks it loaded ran shorter than this: a few wake-up latencies of a
 * worker (tens of microseconds in a VM), which is what helping saves.
 * Longer chunks are left to the workers (MAP_HELP_WAIT_NS), so running
 * one beside every worker oversubscribes the CPUs only briefly. */
#define MAP_HELP_MAX_NS 100000u
/* How long the consumer leaves a chunk of unknown or long run time to the
 * workers before it runs the chunk itself: far longer than a wake-up, so
 * it runs one only when no worker is free to. */
#define MAP_HELP_WAIT_NS 1000000

#ifdef CF_TEST_HOOKS
/* Tests only: replaces MAP_HELP_WAIT_NS when non-zero. Set it while no map
 * runs. */
int64_t cf__test_map_help_wait_ns;
#define MAP_HELP_WAIT() (cf__test_map_help_wait_ns ? cf__test_map_help_wait_ns : MAP_HELP_WAIT_NS)
#else
#define MAP_HELP_WAIT() MAP_HELP_WAIT_NS
#endif

/* The argument of a chunk task. In pointer mode `items` points into the
 * caller's array; in copy mode it is NULL and count * arg_len item bytes
 * follow the header. (A pointer-mode chunk's argument is a pointer to
 * its map_job, which lives inline in the task record: no allocation per
 * chunk.) */
struct map_chunk_arg {
    cf_task_fn *fn;
    const unsigned char *items;
    uint32_t arg_len;
    uint32_t count;
};
_Static_assert(sizeof(void *) <= CF__INLINE_ARG,
               "a pointer-mode chunk argument must fit inline in the task record");

/* A chunk's result starts with this header, then one of two layouts, both
 * 8-byte aligned so every result handed to the consumer is:
 * - MAP_UNIFORM: every item succeeded with a result of `len` bytes; item i
 *   is at offset 8 + i * round8(len). The common case (fixed-size results)
 *   costs one copy per item and no per-item header.
 * - MAP_RECORDS: one map_rec per item, then its body padded to 8 bytes:
 *   code 0 and len result bytes, or the task's non-zero code and len
 *   message bytes (NUL-terminated; len 0 = no message).
 * The consumer validates every length (a process-pool worker's bytes are
 * not trusted, SEMANTICS 33). */
enum { MAP_UNIFORM = 0x554d4643u, MAP_RECORDS = 0x524d4643u };
struct map_rec {
    int32_t code; /* MAP_UNIFORM / MAP_RECORDS in the header */
    uint32_t len;
};
_Static_assert(sizeof(struct map_rec) == 8, "records are 8-byte aligned");

static inline size_t round8(size_t x)
{
    return (x + 7) & ~(size_t)7;
}

/* Stands in for a NULL array of zero-sized items, so `items` is never NULL
 * in pointer mode (NULL means copy mode). */
static const unsigned char map_no_items[1];

/* A pointer-mode chunk: what its runner reads and writes, in the
 * iterator's ring slot (its argument is a pointer to that slot). The consumer writes the first four fields
 * before submitting the chunk (the executor's queue publishes them); the
 * runner writes buf, cap and len, which the consumer reads only after the
 * chunk's future is done (its release CAS publishes them), and the slot is
 * reused only after the consumer has moved past the chunk. */
struct map_job {
    cf_task_fn *fn;
    const unsigned char *items;
    uint32_t arg_len;
    uint32_t count;
    unsigned char *buf; /* the slot's result buffer, kept from chunk to chunk */
    size_t cap;
    size_t len; /* bytes of a uniform result in buf; 0 = none */
};

/* A ring slot is written by the consumer (at submit and when it moves on)
 * and by the runner of its chunk (job.buf/cap/len and run_ns, once at the
 * chunk's end): once per chunk each, not per item, so slots are not padded
 * apart; a slot fits one line's worth of bytes. A pointer-mode chunk's
 * argument is a pointer to its slot. */
struct map_slot {
    cf_future *f;       /* NULL if the submit failed */
    int err;            /* then: why */
    uint32_t run_ns;    /* pointer mode: how long the chunk ran (saturated) */
    struct map_job job; /* pointer mode */
};
_Static_assert(sizeof(struct map_slot) <= 64, "a ring slot fits 64 bytes");

/* ---- the chunk task (runs in a worker thread or process) ---- */

struct map_buf {
    unsigned char *data;
    size_t len, cap;
};

static int map_buf_reserve(struct map_buf *b, size_t need)
{
    if (b->cap - b->len >= need) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < need) {
        if (cap > SIZE_MAX / 2) return CF_ENOMEM;
        cap *= 2;
    }
    void *p = b->data ? cf__realloc(b->data, b->cap, cap) : cf__alloc(cap);
    if (!p) return CF_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void map_put_header(unsigned char *at, uint32_t kind, size_t len)
{
    struct map_rec r = {.code = (int32_t)kind, .len = (uint32_t)len};
    memcpy(at, &r, sizeof r);
}

/* Append one MAP_RECORDS record. */
static int map_buf_append(struct map_buf *b, int32_t code, const void *body, size_t len)
{
    if (len > UINT32_MAX) return CF_ETOOBIG;
    size_t need = sizeof(struct map_rec) + round8(len);
    if (map_buf_reserve(b, need) != 0) return CF_ENOMEM;
    unsigned char *at = b->data + b->len;
    map_put_header(at, (uint32_t)code, len);
    if (len) memcpy(at + sizeof(struct map_rec), body, len);
    /* Zero the padding: the bytes may travel to another process. */
    memset(at + sizeof(struct map_rec) + len, 0, round8(len) - len);
    b->len += need;
    return 0;
}

/* Start the records buffer r with the first `done` items of the MAP_UNIFORM
 * buffer u (u stays as it is). */
static int map_records_from_uniform(struct map_buf *r, const struct map_buf *u, size_t done,
                                    size_t len)
{
    size_t stride = round8(len);
    if (map_buf_reserve(r, sizeof(struct map_rec) * (done + 2) + done * stride) != 0)
        return CF_ENOMEM;
    map_put_header(r->data, MAP_RECORDS, 0);
    r->len = sizeof(struct map_rec);
    for (size_t i = 0; i < done; i++)
        if (map_buf_append(r, 0, u->data + sizeof(struct map_rec) + i * stride, len) != 0)
            return CF_ENOMEM;
    return 0;
}

/* Make b the chunk's result. A small one is copied inline; a larger one is
 * handed over as the cf_out's heap buffer (out.c's representation: data is
 * a cf__alloc'd buffer of cap bytes), which the future then adopts without
 * copying. */
static int map_out_adopt(cf_out *out, struct map_buf *b)
{
    if (b->len <= CF__INLINE_RES || b->len > UINT32_MAX) {
        int rc = cf_out_set(out, b->data, b->len);
        cf__free(b->data, b->cap);
        return rc;
    }
    void *empty;
    if (cf_out_alloc(out, 0, &empty) != 0) { /* drop whatever out held */
        cf__free(b->data, b->cap);
        return CF_ENOMEM;
    }
    out->data = b->data;
    out->cap = b->cap;
    out->len = b->len;
    out->failed = 0;
    return 0;
}

/* One chunk being run: its items, the two buffers, and the cf_out every
 * item writes to. */
struct map_run {
    cf_task_fn *fn;
    const unsigned char *items;
    uint32_t arg_len, count;
    struct map_buf *u, *r;
    size_t ulen, stride; /* the uniform layout's item length, rounded */
    bool uniform;        /* so far every item succeeded with ulen bytes */
    struct cf_out o;
};

/* Item 0 succeeded: size the uniform buffer for the whole chunk from it.
 * False if that does not fit one buffer (the records then report it). */
static bool map_uniform_start(struct map_run *m)
{
    m->ulen = m->o.len;
    m->stride = round8(m->ulen);
    if (m->ulen > UINT32_MAX || (m->stride && m->count > (SIZE_MAX - 8) / m->stride) ||
        map_buf_reserve(m->u, sizeof(struct map_rec) + m->count * m->stride) != 0)
        return false;
    map_put_header(m->u->data, MAP_UNIFORM, m->ulen);
    m->u->len = sizeof(struct map_rec);
    return true;
}

/* Append item i's outcome to the uniform buffer; false if the item breaks
 * that layout (failed, or a result of another size). */
static bool map_put_uniform(struct map_run *m, uint32_t i, int32_t code)
{
    bool ok = code == 0 && !m->o.failed;
    if (ok && i == 0) ok = map_uniform_start(m);
    if (!ok || m->o.len != m->ulen) return false;
    unsigned char *at = m->u->data + m->u->len;
    if (m->ulen == 8) {
        memcpy(at, m->o.data, 8); /* the common case: one 8-byte move */
    } else {
        memcpy(at, m->o.data, m->ulen);
        memset(at + m->ulen, 0, m->stride - m->ulen);
    }
    m->u->len += m->stride;
    return true;
}

/* Append an item's outcome (its code and o) to the records buffer r. */
static int map_put_record(struct map_buf *r, int32_t code, const struct cf_out *o)
{
    static const char nomem[] = "cf_map: out of memory storing the item's result";
    static const char big[] = "cf_map: the item's result is larger than 4 GiB";
    const void *body;
    size_t len;
    if (code == 0 && o->failed) {
        /* The task ignored a failed cf_out_* call: not a success. */
        code = o->failed;
        body = code == CF_ETOOBIG ? big : nomem;
        len = code == CF_ETOOBIG ? sizeof big : sizeof nomem;
    } else if (code == 0) {
        body = o->data;
        len = o->len;
    } else {
        body = o->msg;
        len = o->msg ? strlen(o->msg) + 1 : 0;
    }
    int rc = map_buf_append(r, code, body, len);
    if (rc == CF_ETOOBIG) rc = map_buf_append(r, CF_ETOOBIG, big, sizeof big);
    return rc;
}

/* Store item i's outcome: uniform while the layout holds, from the first
 * item that breaks it (the uniform ones copied over) as records. */
static int map_put_item(struct map_run *m, uint32_t i, int32_t code)
{
    if (m->uniform) {
        if (map_put_uniform(m, i, code)) return 0;
        if (map_records_from_uniform(m->r, m->u, i, m->ulen) != 0) return CF_ENOMEM;
        m->uniform = false;
    }
    return map_put_record(m->r, code, &m->o);
}

/* The common case in a tight loop, locals in registers: run items from i
 * on while each succeeds with 8 bytes in o.small, straight into the
 * uniform buffer. Returns the index of the first item that does not (its
 * outcome left in m->o and *code, for map_put_item), or count. */
static inline uint32_t map_run_fast8(struct map_run *m, uint32_t i, int32_t *code)
{
    cf_task_fn *fn = m->fn;
    const unsigned char *items = m->items;
    uint32_t arg_len = m->arg_len, count = m->count;
    struct cf_out *o = &m->o;
    unsigned char *at = m->u->data + m->u->len;
    for (; i < count; i++) {
        int32_t c = fn(items + (size_t)i * arg_len, arg_len, o);
        if (__builtin_expect(c != 0 || o->len != 8 || o->data != o->small || o->failed || o->msg,
                             0)) {
            *code = c;
            break;
        }
        memcpy(at, o->small, 8);
        at += 8;
        o->len = 0;
    }
    m->u->len = (size_t)(at - m->u->data);
    return i;
}

/* Run fn over `count` items. While every item succeeds with a result of
 * one size, results go to u in the MAP_UNIFORM layout (u's buffer is
 * reused if it is large enough); from the first item that breaks that,
 * everything goes to r as MAP_RECORDS. *uniform says which one holds the
 * chunk. 0, or CF_ENOMEM (u and r then hold whatever was built; the caller
 * frees them). */
static int map_run_items(cf_task_fn *fn, const unsigned char *items, uint32_t arg_len,
                         uint32_t count, struct map_buf *u, struct map_buf *r, bool *uniform)
{
    struct map_run m = {.fn = fn,
                        .items = items,
                        .arg_len = arg_len,
                        .count = count,
                        .u = u,
                        .r = r,
                        .uniform = true};
    cf__out_init(&m.o);
    u->len = 0;
    int rc = 0;
    uint32_t i = 0;
    while (rc == 0 && i < count) {
        int32_t code = 0;               /* set by whichever branch runs item i */
        if (m.uniform && m.ulen == 8) { /* ulen is set by item 0 */
            i = map_run_fast8(&m, i, &code);
            if (i == count) break;
        } else {
            code = fn(items + (size_t)i * arg_len, arg_len, &m.o);
        }
        rc = map_put_item(&m, i, code);
        cf__out_reset(&m.o); /* frees only what an item allocated (rare) */
        i++;
    }
    cf__out_dispose(&m.o);
    *uniform = m.uniform;
    if (rc != 0) return CF_ENOMEM;
    if (m.uniform && u->len == 0) { /* no items: an empty records chunk */
        if (map_records_from_uniform(r, u, 0, 0) != 0) return CF_ENOMEM;
        m.uniform = false;
    }
    *uniform = m.uniform;
    return 0;
}

static int map_chunk_nomem(cf_out *out)
{
    return cf_out_error(out, CF_ENOMEM, "cf_map: out of memory building a chunk result");
}

/* Copy mode (process pools): the items follow the header in the argument
 * and the result carries every item's outcome. */
static int map_chunk_run(const void *arg, size_t arg_len, cf_out *out)
{
    struct map_chunk_arg h;
    if (arg_len < sizeof h) return cf_out_error(out, CF_EINVAL, "cf_map: malformed chunk argument");
    memcpy(&h, arg, sizeof h);
    const unsigned char *items = h.items;
    if (!items) {
        if ((arg_len - sizeof h) != (size_t)h.count * h.arg_len)
            return cf_out_error(out, CF_EINVAL, "cf_map: malformed chunk argument");
        items = (const unsigned char *)arg + sizeof h;
    }
    struct map_buf u = {0}, r = {0};
    bool uniform;
    int rc = map_run_items(h.fn, items, h.arg_len, h.count, &u, &r, &uniform);
    if (rc != 0) {
        cf__free(u.data, u.cap);
        cf__free(r.data, r.cap);
        return map_chunk_nomem(out);
    }
    if (uniform) return map_out_adopt(out, &u);
    cf__free(u.data, u.cap);
    return map_out_adopt(out, &r);
}

/* Pointer mode (thread pools): the argument is a struct map_slot * in the
 * iterator's ring. A uniform chunk leaves its results in the job's buffer,
 * which the ring slot keeps from chunk to chunk (no allocation, no page
 * faults, warm lines), and returns an empty result meaning "in the job";
 * any other chunk returns its records as in copy mode. The chunk's run
 * time goes to the slot too, for the consumer's helping policy
 * (map_help_pays): two clock reads a chunk. */
static int map_job_run(const void *arg, size_t arg_len, cf_out *out)
{
    struct map_slot *slot;
    if (arg_len != sizeof slot)
        return cf_out_error(out, CF_EINVAL, "cf_map: malformed chunk argument");
    memcpy(&slot, arg, sizeof slot);
    struct map_job *job = &slot->job;
    int64_t t0 = cf__now_ns();
    struct map_buf u = {.data = job->buf, .cap = job->cap}, r = {0};
    bool uniform;
    int rc = map_run_items(job->fn, job->items, job->arg_len, job->count, &u, &r, &uniform);
    int64_t took = cf__now_ns() - t0;
    slot->run_ns = took < 0 ? 0 : took > UINT32_MAX ? UINT32_MAX : (uint32_t)took;
    /* The buffer stays the slot's, grown or not. */
    job->buf = u.data;
    job->cap = u.cap;
    job->len = rc == 0 && uniform ? u.len : 0;
    if (rc != 0) {
        cf__free(r.data, r.cap);
        return map_chunk_nomem(out);
    }
    return uniform ? 0 : map_out_adopt(out, &r);
}

/* ---- the iterator (runs in the consumer) ---- */

struct cf_map_iter {
    cf_executor *ex;
    cf_task_fn *fn;
    const unsigned char *args;
    size_t arg_len, n;
    size_t chunk, n_chunks, window;
    bool copy;
    bool help; /* the consumer may run chunks itself (map_help) */
    /* Run times of the last two chunks loaded (UINT32_MAX: none yet); the
     * shorter one says whether chunks are short (map_help), so one chunk
     * that was preempted while it ran does not stop the helping. */
    uint32_t run_ns[2];
    bool active; /* counted in the executor's map_active */
    bool timed_out;
    cf__deadline deadline;

    struct map_slot *ring; /* chunk c at ring[c % window] for c in [cur, next_submit) */
    size_t next_submit;
    size_t cur;       /* the chunk being yielded */
    size_t cur_item;  /* index in it of the next item */
    size_t cur_count; /* items in it once loaded; 0 while not loaded */
    bool cur_loaded;

    /* The loaded chunk: MAP_UNIFORM items (res_stride apart, res_item_len
     * bytes each), MAP_RECORDS, or one error for all its items. */
    const unsigned char *res;
    size_t res_len, res_off;
    bool res_uniform;
    size_t res_stride, res_item_len;
    int chunk_err, chunk_code;
    const char *chunk_msg;

    /* What cf_map_exception reports for the item just yielded. */
    bool exc_valid;
    int exc_code;
    const char *exc_msg;
};

static size_t chunk_count(const cf_map_iter *it, size_t c)
{
    size_t first = c * it->chunk;
    size_t left = it->n - first;
    return left < it->chunk ? left : it->chunk;
}

static int map_submit_chunk(cf_map_iter *it, size_t c, cf_future **f)
{
    size_t first = c * it->chunk;
    size_t count = chunk_count(it, c);
    struct map_chunk_arg h = {
        .fn = it->fn, .arg_len = (uint32_t)it->arg_len, .count = (uint32_t)count};
    cf_executor *ex = it->ex;
    if (!it->copy) {
        struct map_slot *slot = &it->ring[c % it->window];
        struct map_job *job = &slot->job;
        job->fn = it->fn;
        job->items = it->args ? it->args + first * it->arg_len : map_no_items;
        job->arg_len = (uint32_t)it->arg_len;
        job->count = (uint32_t)count;
        job->len = 0;
        slot->run_ns = UINT32_MAX;
        return ex->ops->submit(ex, map_job_run, &slot, sizeof slot, f);
    }
    size_t bytes = sizeof h + count * it->arg_len; /* bounded in cf_map */
    unsigned char stack[256];
    unsigned char *buf = bytes <= sizeof stack ? stack : cf__alloc(bytes);
    if (!buf) return CF_ENOMEM;
    memcpy(buf, &h, sizeof h);
    size_t item_bytes = count * it->arg_len;
    if (item_bytes != 0) memcpy(buf + sizeof h, it->args + first * it->arg_len, item_bytes);
    int rc = ex->ops->submit(ex, map_chunk_run, buf, bytes, f);
    if (buf != stack) cf__free(buf, bytes);
    return rc;
}

/* Keep the window full: submit until `window` chunks are outstanding. */
static void map_refill(cf_map_iter *it)
{
    while (!it->timed_out && it->next_submit < it->n_chunks &&
           it->next_submit - it->cur < it->window) {
        struct map_slot *s = &it->ring[it->next_submit % it->window];
        s->f = NULL;
        s->err = map_submit_chunk(it, it->next_submit, &s->f);
        if (s->err != 0) s->f = NULL;
        it->next_submit++;
    }
    /* Every chunk is submitted: no more will come for a worker to look
     * out for (ops->map_active). */
    if (it->active && (it->next_submit == it->n_chunks || it->timed_out)) {
        it->active = false;
        it->ex->ops->map_active(it->ex, -1);
    }
}

/* Cancel every outstanding chunk that has not started (running ones go on:
 * a running task is never interrupted). */
static void map_cancel_outstanding(cf_map_iter *it)
{
    for (size_t c = it->cur; c < it->next_submit; c++) {
        cf_future *f = it->ring[c % it->window].f;
        if (f) cf_future_cancel(f);
    }
}

/* Drop every outstanding chunk; in pointer mode first wait for those that
 * already run, since they read the caller's array. */
static void map_release_outstanding(cf_map_iter *it)
{
    for (size_t c = it->cur; c < it->next_submit; c++) {
        struct map_slot *s = &it->ring[c % it->window];
        if (!s->f) continue;
        if (!it->copy && !cf_future_done(s->f))
            (void)cf_future_result(s->f, CF_FOREVER, NULL, NULL);
        cf_future_release(s->f);
        s->f = NULL;
    }
}

static void map_destroy(cf_map_iter *it)
{
    if (it->active) it->ex->ops->map_active(it->ex, -1);
    map_cancel_outstanding(it);
    map_release_outstanding(it);
    /* Nothing runs any more: the job buffers are ours. */
    for (size_t i = 0; i < it->window; i++) cf__free(it->ring[i].job.buf, it->ring[i].job.cap);
    cf__free(it->ring, it->window * sizeof *it->ring);
    cf__free(it, sizeof *it);
}

/* Seconds left before the deadline, as cf_future_result wants them. */
static double map_time_left(const cf_map_iter *it)
{
    if (it->deadline == CF__NO_DEADLINE) return CF_FOREVER;
    int64_t left = it->deadline - cf__now_ns();
    return left > 0 ? (double)left / 1e9 : CF_POLL;
}

static void map_chunk_failed(cf_map_iter *it, int rc, int code, const char *msg)
{
    if (rc) it->res_uniform = false; /* the fast path must not yield from it */
    it->chunk_err = rc;
    it->chunk_code = code;
    it->chunk_msg = msg;
}

/* Check a chunk result's header and layout before reading any item from it
 * (the bytes may come from a worker process, SEMANTICS 33). */
static void map_parse_result(cf_map_iter *it, const unsigned char *data, size_t len, size_t count)
{
    static const char bad[] = "cf_map: a chunk result is malformed";
    struct map_rec h;
    if (len < sizeof h) {
        map_chunk_failed(it, CF_EBROKEN, CF_EBROKEN, bad);
        return;
    }
    memcpy(&h, data, sizeof h);
    it->res = data;
    it->res_len = len;
    it->res_off = sizeof h;
    if ((uint32_t)h.code == MAP_UNIFORM) {
        size_t stride = round8(h.len);
        if (stride && count > (len - sizeof h) / stride) {
            map_chunk_failed(it, CF_EBROKEN, CF_EBROKEN, bad);
            return;
        }
        it->res_uniform = true;
        it->res_stride = stride;
        it->res_item_len = h.len;
    } else if ((uint32_t)h.code != MAP_RECORDS) {
        map_chunk_failed(it, CF_EBROKEN, CF_EBROKEN, bad);
    }
}

/* May the consumer run chunks itself? Only where that is indistinguishable
 * from a worker running them: the executor says so (CF__EXEC_CALLER_MAY_RUN:
 * a thread pool without an initializer, since tasks may rely on what it set
 * up in each worker, SEMANTICS 20, and only an initializer can break a
 * pool, which must fail queued work), pointer mode, and no deadline (a
 * running chunk is never interrupted, so the consumer could not keep it). */
static bool map_may_help(const cf_executor *ex, bool copy, cf__deadline deadline)
{
    if (copy || deadline != CF__NO_DEADLINE) return false;
    return cf__exec_can(ex, CF__EXEC_CALLER_MAY_RUN) && ex->ops->run_here;
}

/* Chunk `cur` is not done: if no worker has started it, run it here rather
 * than sleep until one does. run_here claims it with the CAS a worker's
 * run uses, so it runs once, and never after a cancel; the worker that
 * later takes it from its queue finds it done and only drops its
 * reference. Only `cur`, the chunk we would block on anyway: running a
 * later one could block the consumer on an item that waits for the
 * consumer to move on (a pipeline), which no worker would. */
static void map_help(cf_map_iter *it)
{
    cf_future *f = it->ring[it->cur % it->window].f;
    uint32_t shorter = it->run_ns[0] < it->run_ns[1] ? it->run_ns[0] : it->run_ns[1];
    if (shorter > MAP_HELP_MAX_NS) {
        /* Unknown or long: the workers first (MAP_HELP_WAIT_NS). A timed
         * wait, so the executor's own waiter rule does not run it either. */
        (void)cf_future_result(f, (double)MAP_HELP_WAIT() / 1e9, NULL, NULL);
        if (cf_future_done(f)) return;
    }
    (void)it->ex->ops->run_here(it->ex, f);
}

/* Wait for chunk `cur` and make its items current. 0 or CF_ETIMEDOUT. */
static int map_load_chunk(cf_map_iter *it)
{
    struct map_slot *s = &it->ring[it->cur % it->window];
    size_t count = chunk_count(it, it->cur);
    it->res = NULL;
    it->res_len = it->res_off = 0;
    it->res_uniform = false;
    map_chunk_failed(it, 0, 0, NULL);
    if (!s->f) {
        map_chunk_failed(it, s->err, s->err,
                         "cf_map: the chunk holding this item could not be submitted");
    } else {
        const void *data = NULL;
        size_t len = 0;
        if (it->help && !cf_future_done(s->f)) map_help(it);
        int rc = cf_future_result(s->f, map_time_left(it), &data, &len);
        if (rc == CF_ETIMEDOUT) return CF_ETIMEDOUT;
        if (rc == 0) {
            if (!it->copy) { /* map_job_run measured it */
                it->run_ns[1] = it->run_ns[0];
                it->run_ns[0] = s->run_ns;
            }
            if (len == 0 && !it->copy) { /* a uniform result left in the job */
                data = s->job.buf;
                len = s->job.len;
            }
            map_parse_result(it, data, len, count);
        } else {
            /* The chunk as a whole did not produce results: cancelled
             * (shutdown with cancel_futures), broken pool, or our own
             * allocation failure in map_chunk_run. Every item reports it. */
            int code = rc;
            const char *msg = NULL;
            if (rc == CF_ETASK || rc == CF_EBROKEN)
                (void)cf_future_exception(s->f, CF_POLL, &code, &msg);
            map_chunk_failed(it, rc, code, msg);
        }
    }
    it->cur_item = 0;
    it->cur_count = count;
    it->cur_loaded = true;
    return 0;
}

/* The consumer has moved past the last item of chunk `cur`: drop it and let
 * the window admit one more. */
static void map_advance(cf_map_iter *it)
{
    struct map_slot *s = &it->ring[it->cur % it->window];
    cf_future_release(s->f); /* NULL is a no-op */
    s->f = NULL;
    it->cur++;
    it->cur_loaded = false;
    it->cur_count = 0;
    map_refill(it);
}

static int map_item_error(cf_map_iter *it, int rc, int code, const char *msg)
{
    if (rc != CF_ECANCELLED) {
        it->exc_valid = true;
        it->exc_code = code;
        it->exc_msg = msg;
    }
    return rc;
}

/* Yield item cur_item of a MAP_RECORDS chunk (or of a failed one). A record
 * that does not parse fails the rest of its chunk with CF_EBROKEN instead
 * of reading past the buffer. */
static int map_take_record(cf_map_iter *it, const void **data, size_t *len)
{
    it->cur_item++;
    if (it->chunk_err) return map_item_error(it, it->chunk_err, it->chunk_code, it->chunk_msg);

    struct map_rec r;
    size_t left = it->res_len - it->res_off;
    if (left < sizeof r) goto malformed;
    memcpy(&r, it->res + it->res_off, sizeof r);
    if (r.len > left - sizeof r) goto malformed;
    const unsigned char *body = it->res + it->res_off + sizeof r;
    size_t step = sizeof r + round8(r.len);
    it->res_off += step < left ? step : left;
    if (r.code == 0) {
        if (data) *data = body;
        if (len) *len = r.len;
        return 0;
    }
    if (r.len && body[r.len - 1] != '\0') goto malformed;
    return map_item_error(it, CF_ETASK, r.code, r.len ? (const char *)body : NULL);

malformed:
    map_chunk_failed(it, CF_EBROKEN, CF_EBROKEN, "cf_map: a chunk result is malformed");
    return map_item_error(it, CF_EBROKEN, CF_EBROKEN, it->chunk_msg);
}

/* The slow path: move to the next chunk, waiting for it. */
static int map_next_chunk(cf_map_iter *it, const void **data, size_t *len)
{
    if (it->timed_out) return CF_ETIMEDOUT;
    if (it->cur_loaded) map_advance(it); /* all its items were yielded */
    if (it->cur >= it->n_chunks) return CF_END;
    if (map_load_chunk(it) == CF_ETIMEDOUT) {
        /* SEMANTICS 24: everything not yet yielded is cancelled; nothing
         * more is submitted. */
        it->timed_out = true;
        map_cancel_outstanding(it);
        return CF_ETIMEDOUT;
    }
    if (it->cur_count == 0) return CF_END; /* not reached: chunks are never empty */
    if (it->res_uniform && !it->chunk_err) {
        it->cur_item = 1;
        if (data) *data = it->res + it->res_off;
        if (len) *len = it->res_item_len;
        return 0;
    }
    return map_take_record(it, data, len);
}

/* Everything but the next item of a loaded uniform chunk: kept out of line
 * so the fast path below needs no stack frame. */
static __attribute__((noinline)) int map_next_slow(cf_map_iter *it, const void **data, size_t *len)
{
    if (data) *data = NULL;
    if (len) *len = 0;
    if (it->cur_item < it->cur_count) return map_take_record(it, data, len);
    return map_next_chunk(it, data, len);
}

/* The fast path: the next item of a loaded uniform chunk (res_uniform is
 * false whenever the chunk failed as a whole). */
static inline int map_next(cf_map_iter *it, const void **data, size_t *len)
{
    size_t i = it->cur_item;
    it->exc_valid = false;
    if (__builtin_expect(i < it->cur_count && it->res_uniform, 1)) {
        it->cur_item = i + 1;
        *data = it->res + it->res_off + i * it->res_stride;
        *len = it->res_item_len;
        return 0;
    }
    return map_next_slow(it, data, len);
}

int cf_map_next(cf_map_iter *it, const void **data, size_t *len)
{
    const void *d;
    size_t l;
    if (!it) {
        if (data) *data = NULL;
        if (len) *len = 0;
        return CF_EINVAL;
    }
    int rc = map_next(it, &d, &l);
    if (data) *data = d;
    if (len) *len = l;
    return rc;
}

int cf_map_next_i64(cf_map_iter *it, int64_t *v)
{
    if (!it) return CF_EINVAL;
    const void *data;
    size_t len;
    int rc = map_next(it, &data, &len);
    if (rc != 0) return rc;
    if (len != sizeof(int64_t)) return CF_EINVAL;
    if (v) memcpy(v, data, sizeof *v);
    return 0;
}

int cf_map_next_batch(cf_map_iter *it, size_t max, const void **data, size_t *len, size_t *stride,
                      size_t *count)
{
    const void *d = NULL;
    size_t l = 0, st = 0, k = 0;
    int rc = CF_EINVAL;
    if (it && count && max > 0) {
        it->exc_valid = false;
        size_t i = it->cur_item;
        rc = 0;
        if (!(i < it->cur_count && it->res_uniform)) {
            /* Not inside a loaded uniform chunk: one item the slow way
             * (which loads the next chunk, waiting for it, if needed). */
            rc = map_next_slow(it, &d, &l);
            k = rc == 0 || rc == CF_ETASK || rc == CF_ECANCELLED || rc == CF_EBROKEN;
            i = it->cur_item - k; /* that item */
        }
        if (rc == 0 && it->res_uniform && !it->chunk_err) {
            /* The rest of a uniform chunk, from item i on, as one array. */
            size_t left = it->cur_count - i;
            k = left < max ? left : max;
            st = it->res_stride;
            l = it->res_item_len;
            d = it->res + it->res_off + i * st;
            it->cur_item = i + k;
        }
    }
    if (data) *data = d;
    if (len) *len = l;
    if (stride) *stride = st;
    if (count) *count = k;
    return rc;
}

int cf_map_exception(cf_map_iter *it, int *code, const char **msg)
{
    if (!it) return CF_EINVAL;
    if (!it->exc_valid) return CF_ESTATE;
    if (code) *code = it->exc_code;
    if (msg) *msg = it->exc_msg;
    return 0;
}

void cf_map_free(cf_map_iter *it)
{
    if (it) map_destroy(it);
}

static size_t map_adaptive_chunk(size_t n, size_t workers, size_t arg_len, bool copy)
{
    size_t c = n / (MAP_CHUNKS_PER_WORKER * workers);
    if (c > MAP_CHUNK_MAX_ITEMS) c = MAP_CHUNK_MAX_ITEMS;
    if (copy && arg_len && c > MAP_CHUNK_MAX_BYTES / arg_len) c = MAP_CHUNK_MAX_BYTES / arg_len;
    return c ? c : 1;
}

/* The window when the options give none: the executor's default, else
 * MAP_WINDOW_PER_WORKER per worker. */
static size_t map_default_window(const cf_executor *ex, size_t workers)
{
    size_t w = ex->ops->default_window ? ex->ops->default_window(ex) : 0;
    return w ? w : MAP_WINDOW_PER_WORKER * workers;
}

/* How cf_map cuts n items: chunk size, chunk count, window. */
struct map_geometry {
    size_t chunk, n_chunks, window;
};

static int map_plan(const cf_executor *ex, size_t n, size_t arg_len, bool copy,
                    const cf_map_opts *o, struct map_geometry *g)
{
    int w = ex->ops->workers ? ex->ops->workers(ex) : 1;
    size_t workers = w > 0 ? (size_t)w : 1;
    size_t chunk = o->chunksize ? o->chunksize : map_adaptive_chunk(n, workers, arg_len, copy);
    /* A chunk's item count is a uint32, and in copy mode its argument
     * (header + items) must fit a task argument's uint32 length. */
    if (chunk > UINT32_MAX) chunk = UINT32_MAX;
    if (copy && arg_len) {
        size_t max = (UINT32_MAX - sizeof(struct map_chunk_arg)) / arg_len;
        if (chunk > max) chunk = max ? max : 1;
    }
    size_t n_chunks = n / chunk + (n % chunk != 0);
    size_t window = o->window ? o->window : map_default_window(ex, workers);
    if (window > n_chunks) window = n_chunks ? n_chunks : 1;
    if (window > SIZE_MAX / sizeof(struct map_slot)) return CF_ENOMEM;
    *g = (struct map_geometry){.chunk = chunk, .n_chunks = n_chunks, .window = window};
    return 0;
}

int cf_map(cf_executor *ex, cf_task_fn *fn, const void *args, size_t arg_len, size_t n,
           const cf_map_opts *opts, cf_map_iter **out)
{
    if (!ex || !ex->ops || !fn || !out) return CF_EINVAL;
    if (!args && arg_len && n) return CF_EINVAL;
    if (arg_len > UINT32_MAX) return CF_EINVAL;
    if (n && arg_len > SIZE_MAX / n) return CF_EINVAL;
    cf_map_opts o = opts ? *opts : (cf_map_opts){0};
    for (size_t i = 0; i < sizeof o.reserved / sizeof o.reserved[0]; i++)
        if (o.reserved[i]) return CF_EINVAL; /* an option this library does not know */
    /* A timeout without has_timeout would be ignored: say so instead. */
    if (isnan(o.timeout) || (!o.has_timeout && o.timeout != 0)) return CF_EINVAL;
    cf__deadline deadline = CF__NO_DEADLINE;
    if (o.has_timeout && cf__deadline_from_timeout(o.timeout, &deadline) != 0) return CF_EINVAL;

    bool copy = !cf__exec_can(ex, CF__EXEC_SHARED_MEMORY);
    struct map_geometry g;
    int rc = map_plan(ex, n, arg_len, copy, &o, &g);
    if (rc != 0) return rc;
    size_t window = g.window;

    cf_map_iter *it = cf__calloc(sizeof *it);
    if (!it) return CF_ENOMEM;
    it->ring = cf__calloc(window * sizeof *it->ring);
    if (!it->ring) {
        cf__free(it, sizeof *it);
        return CF_ENOMEM;
    }
    it->ex = ex;
    it->fn = fn;
    it->args = args;
    it->arg_len = arg_len;
    it->n = n;
    it->chunk = g.chunk;
    it->n_chunks = g.n_chunks;
    it->window = window;
    it->copy = copy;
    it->help = map_may_help(ex, copy, deadline);
    it->run_ns[0] = it->run_ns[1] = UINT32_MAX;
    it->deadline = deadline;
    /* Before the first submit: a worker stays on the look-out for chunks. */
    if (ex->ops->map_active && n > 0) {
        ex->ops->map_active(ex, 1);
        it->active = true;
    }

    map_refill(it);
    /* A call that fails changes nothing it can undo: if any of the first
     * submissions failed, cancel the others and report the first error. */
    for (size_t c = 0; c < it->next_submit; c++) {
        /* NOLINTNEXTLINE(clang-analyzer-core.DivideZero): window >= 1 */
        int err = it->ring[c % window].err;
        if (err != 0) {
            map_destroy(it);
            return err;
        }
    }
    *out = it;
    return 0;
}
