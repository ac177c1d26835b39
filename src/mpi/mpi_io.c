/* Batches, bulk bodies and pending sends (mpi_io.h). One thread per rank. */
#include "mpi/mpi_io.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfutures.h"
#include "mpi/mpi_hooks.h"

/* What a pending send keeps alive: a buffer to free, or a done callback
 * run when the last of `pieces` requests completed. */
struct cf__mpi_hold {
    void *free_buf;
    cf__mpi_done_fn *done;
    void *ctx;
    size_t pieces;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q) return CF_ENOMEM;
    *p = q;
    *cap = cap2;
    return 0;
}

int cf__mpi_out_add(struct cf__mpi_out *o, const struct cf__mpi_rec *rec, const void *body,
                    cf__mpi_done_fn *done, void *ctx)
{
    struct cf__mpi_rec r = *rec;
    bool bulk = r.len > CF__MPI_INLINE_MAX;
    r.flags = bulk ? (r.flags | CF__MPI_F_BULK) : (r.flags & ~CF__MPI_F_BULK);
    size_t add = sizeof r + (bulk ? 0 : (size_t)r.len);
    if (grow((void **)&o->buf, &o->cap, o->len + add, 1)) return CF_ENOMEM;
    if (bulk && grow((void **)&o->bulk, &o->cap_bulk, o->n_bulk + 1, sizeof *o->bulk))
        return CF_ENOMEM;
    memcpy(o->buf + o->len, &r, sizeof r);
    if (!bulk && r.len) memcpy(o->buf + o->len + sizeof r, body, (size_t)r.len);
    o->len += add;
    if (bulk) {
        o->bulk[o->n_bulk++] = (struct cf__mpi_bulk){
            .data = body, .len = r.len, .done = done, .ctx = ctx};
    } else if (done) {
        done(ctx); /* copied: the caller's body is free */
    }
    return 0;
}

void cf__mpi_out_free(struct cf__mpi_out *o)
{
    for (size_t i = 0; i < o->n_bulk; i++)
        if (o->bulk[i].done) o->bulk[i].done(o->bulk[i].ctx);
    free(o->buf);
    free(o->bulk);
    *o = (struct cf__mpi_out){0};
}

int cf__mpi_fail(struct cf__mpi_io *io, int rc, const char *what, int peer)
{
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    snprintf(io->err, sizeof io->err, "%s with rank %d failed: %.200s", what, peer, s);
    return CF_EBROKEN;
}

static void hold_piece_done(struct cf__mpi_hold *h)
{
    if (--h->pieces) return;
    free(h->free_buf);
    if (h->done) h->done(h->ctx);
    free(h);
}

/* Post one Isend; the request owns a piece of h. */
static int post(struct cf__mpi_io *io, const void *data, size_t len, int peer, int tag,
                struct cf__mpi_hold *h)
{
    size_t cap = io->cap;
    if (grow((void **)&io->req, &cap, io->n + 1, sizeof *io->req)) return CF_ENOMEM;
    cap = io->cap;
    if (grow((void **)&io->hold, &cap, io->n + 1, sizeof *io->hold)) return CF_ENOMEM;
    cap = io->cap;
    if (grow((void **)&io->idx, &cap, io->n + 1, sizeof *io->idx)) return CF_ENOMEM;
    io->cap = cap;
    int rc = cf__mpi_inject("MPI_Isend", peer); /* tests only: a failure on demand */
    if (rc == MPI_SUCCESS)
        rc = MPI_Isend(data, (int)len, MPI_BYTE, peer, tag, io->comm, &io->req[io->n]);
    if (rc != MPI_SUCCESS) return cf__mpi_fail(io, rc, "MPI_Isend", peer);
    io->hold[io->n++] = h;
    return 0;
}

int cf__mpi_flush(struct cf__mpi_io *io, struct cf__mpi_out *o, int peer)
{
    if (o->len == 0) return 0;
    struct cf__mpi_hold *h = calloc(1, sizeof *h);
    if (!h) return CF_ENOMEM;
    h->free_buf = o->buf;
    h->pieces = 1;
    int rc = post(io, o->buf, o->len, peer, CF__MPI_TAG_BATCH, h);
    o->buf = NULL;
    o->len = o->cap = 0;
    if (rc) {
        hold_piece_done(h);
        return rc;
    }
    /* Each piece's request owns a share of bh: io->hold[] keeps it. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc): bh is in io->hold[] once posted
    for (size_t i = 0; i < o->n_bulk; i++) {
        struct cf__mpi_bulk *b = &o->bulk[i];
        struct cf__mpi_hold *bh = calloc(1, sizeof *bh);
        if (!bh) return CF_ENOMEM;
        bh->done = b->done;
        bh->ctx = b->ctx;
        b->done = NULL;
        size_t pieces = (size_t)((b->len + io->chunk - 1) / io->chunk);
        if (pieces == 0) { /* not a bulk body after all: nothing to wait for */
            bh->pieces = 1;
            hold_piece_done(bh);
            continue;
        }
        bh->pieces = pieces;
        const unsigned char *p = b->data;
        for (uint64_t at = 0; at < b->len; at += io->chunk) {
            size_t n = b->len - at < io->chunk ? (size_t)(b->len - at) : io->chunk;
            rc = post(io, p + at, n, peer, CF__MPI_TAG_BULK, bh);
            if (rc) {
                /* The pieces not posted will never complete. */
                bh->pieces -= (size_t)((b->len - at + io->chunk - 1) / io->chunk) - 1;
                hold_piece_done(bh);
                return rc;
            }
        }
    }
    o->n_bulk = 0;
    return 0;
}

int cf__mpi_sends_progress(struct cf__mpi_io *io)
{
    if (io->n == 0) return 0;
    int done = 0;
    int rc = MPI_Testsome((int)io->n, io->req, &done, io->idx, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return cf__mpi_fail(io, rc, "MPI_Testsome", -1);
    if (done == MPI_UNDEFINED || done == 0) return (int)io->n;
    for (int i = 0; i < done; i++) hold_piece_done(io->hold[io->idx[i]]);
    /* Keep the requests still pending (completed ones are MPI_REQUEST_NULL). */
    size_t k = 0;
    for (size_t i = 0; i < io->n; i++) {
        if (io->req[i] == MPI_REQUEST_NULL) continue;
        io->req[k] = io->req[i];
        io->hold[k] = io->hold[i];
        k++;
    }
    io->n = k;
    return (int)k;
}

int cf__mpi_sends_drain(struct cf__mpi_io *io)
{
    if (io->n == 0) return 0;
    int rc = MPI_Waitall((int)io->n, io->req, MPI_STATUSES_IGNORE);
    for (size_t i = 0; i < io->n; i++) hold_piece_done(io->hold[i]);
    io->n = 0;
    return rc == MPI_SUCCESS ? 0 : cf__mpi_fail(io, rc, "MPI_Waitall", -1);
}

void cf__mpi_sends_abandon(struct cf__mpi_io *io)
{
    /* After an MPI error: nothing more will be sent; the buffers may still
     * be read by MPI, so they are leaked rather than freed. */
    io->n = 0;
}

int cf__mpi_recv_batch(struct cf__mpi_io *io, int from, int *src, size_t *len)
{
    int flag = 0;
    MPI_Status st;
    int rc = MPI_Iprobe(from, CF__MPI_TAG_BATCH, io->comm, &flag, &st);
    if (rc != MPI_SUCCESS) return cf__mpi_fail(io, rc, "MPI_Iprobe", from);
    if (!flag) return 0;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (grow((void **)&io->rbuf, &io->rcap, (size_t)count + 1, 1)) return CF_ENOMEM;
    rc = MPI_Recv(io->rbuf, count, MPI_BYTE, st.MPI_SOURCE, CF__MPI_TAG_BATCH, io->comm,
                  MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return cf__mpi_fail(io, rc, "MPI_Recv", st.MPI_SOURCE);
    *src = st.MPI_SOURCE;
    *len = (size_t)count;
    return 1;
}

int cf__mpi_recv_bulk(struct cf__mpi_io *io, int src, uint64_t len, void **data)
{
    unsigned char *p = malloc(len ? (size_t)len : 1);
    if (!p) return CF_ENOMEM;
    for (uint64_t at = 0; at < len; at += io->chunk) {
        size_t n = len - at < io->chunk ? (size_t)(len - at) : io->chunk;
        int rc = MPI_Recv(p + at, (int)n, MPI_BYTE, src, CF__MPI_TAG_BULK, io->comm,
                          MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            free(p);
            return cf__mpi_fail(io, rc, "MPI_Recv (bulk)", src);
        }
    }
    *data = p;
    return 0;
}

bool cf__mpi_next_rec(const unsigned char *buf, size_t len, size_t *at, struct cf__mpi_rec *rec,
                      const unsigned char **body)
{
    if (*at + sizeof *rec > len) return false;
    memcpy(rec, buf + *at, sizeof *rec);
    *at += sizeof *rec;
    if (rec->flags & CF__MPI_F_BULK) {
        *body = NULL;
        return true;
    }
    if (rec->len > len - *at) return false;
    *body = buf + *at;
    *at += (size_t)rec->len;
    return true;
}

/* ---- pacing ---- */

#define PACE_SPIN_MIN 50000L
#define PACE_SPIN_MAX 1000000L
#define PACE_NAP_MIN 20000L
#define PACE_QUIET_SHARE 8

static long elapsed_ns(const struct timespec *a, const struct timespec *b)
{
    return (b->tv_sec - a->tv_sec) * 1000000000L + (b->tv_nsec - a->tv_nsec);
}

void cf__mpi_pace_init(struct cf__mpi_pace *p)
{
    clock_gettime(CLOCK_MONOTONIC, &p->last);
    p->waiting_reply = false;
    p->polls = 0;
    p->spin_ns = PACE_SPIN_MIN;
    p->nap_ns = PACE_NAP_MIN;
}

void cf__mpi_pace_event(struct cf__mpi_pace *p)
{
    clock_gettime(CLOCK_MONOTONIC, &p->last);
    p->nap_ns = PACE_NAP_MIN;
}

void cf__mpi_pace_sent(struct cf__mpi_pace *p)
{
    if (p->waiting_reply) return; /* measure from the first unanswered send */
    clock_gettime(CLOCK_MONOTONIC, &p->sent);
    p->waiting_reply = true;
}

void cf__mpi_pace_arrival(struct cf__mpi_pace *p)
{
    cf__mpi_pace_event(p);
    if (!p->waiting_reply) return;
    p->waiting_reply = false;
    long q = elapsed_ns(&p->sent, &p->last);
    long spin = q > PACE_SPIN_MAX / 2 ? PACE_SPIN_MAX : 2 * q;
    p->spin_ns = spin < PACE_SPIN_MIN ? PACE_SPIN_MIN : spin;
}

long cf__mpi_pace_idle(struct cf__mpi_pace *p, long cap_ns, long cap_quiet_ns, bool *yield)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    long quiet = elapsed_ns(&p->last, &t);
    if (quiet < p->spin_ns) {
        *yield = ++p->polls % CF__MPI_YIELD_EVERY == 0;
        return 0;
    }
    *yield = false;
    /* Quiet for long: a nap of up to an eighth of the quiet time. */
    long far = quiet / PACE_QUIET_SHARE;
    if (far > cap_ns) cap_ns = far < cap_quiet_ns ? far : cap_quiet_ns;
    long n = p->nap_ns;
    p->nap_ns = n * 2 > cap_ns ? cap_ns : n * 2;
    return n;
}

struct timespec cf__mpi_nap_until(long ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ns;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}
