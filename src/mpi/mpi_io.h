/* The messages between the root and its serving ranks, and the send and
 * receive plumbing both sides share. Only one thread per rank calls MPI
 * (the root's progress thread, the serving rank's own thread), so nothing
 * here takes a lock; each struct belongs to that thread.
 *
 * A BATCH message (tag CF__MPI_TAG_BATCH) is a run of records, each a
 * struct cf__mpi_rec and `len` body bytes, or, when the body is larger than
 * CF__MPI_INLINE_MAX, the record alone with CF__MPI_F_BULK: its body then
 * follows in BULK messages (tag CF__MPI_TAG_BULK) of at most `chunk` bytes
 * each, sent right after the batch, in the order of the batch's records.
 * MPI keeps the order of messages between two ranks on one tag, so the
 * receiver reads a batch and then, record by record, the bulk bodies.
 * Every send is non-blocking (MPI_Isend) and its buffer is kept until the
 * request completes: two ranks that send each other 64 MiB at once would
 * deadlock with blocking sends. Receiving a bulk body blocks, which is safe
 * because its sender has posted every piece already. Every rank runs the
 * same executable on the same kind of machine: records are native bytes. */
#ifndef CF_MPI_IO_H
#define CF_MPI_IO_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum { CF__MPI_TAG_BATCH = 0x4346, CF__MPI_TAG_BULK = 0x4347 };

enum cf__mpi_kind {
    CF__MPI_TASK = 1,       /* root -> rank: run this */
    CF__MPI_CANCEL = 2,     /* root -> rank: cancel task id if not begun */
    CF__MPI_SHUTDOWN = 3,   /* root -> rank: nothing more will come */
    CF__MPI_RESULT = 4,     /* rank -> root: task id ended (code, body) */
    CF__MPI_CANCEL_ACK = 5, /* rank -> root: CF__MPI_F_OK if it was cancelled */
};
#define CF__MPI_F_BULK 1u   /* the body follows in BULK messages */
#define CF__MPI_F_OK 2u     /* CANCEL_ACK: cancelled, no RESULT will come */
#define CF__MPI_F_BROKEN 4u /* RESULT: the serving rank's pool failed it */
#define CF__MPI_NO_MOD UINT32_MAX

#define CF__MPI_INLINE_MAX ((uint64_t)64 << 10) /* larger bodies go in BULK messages */
#define CF__MPI_BATCH_FLUSH ((size_t)256 << 10) /* send a batch once it is this big */

struct cf__mpi_rec {
    uint32_t kind;
    uint32_t flags;
    uint64_t id;        /* the root's task record */
    uint64_t len;       /* body bytes: argument, result, or error message */
    int32_t code;       /* RESULT: the task's code (0: success) */
    uint32_t mod;       /* TASK: module of fn */
    uint64_t off;       /* TASK: offset of fn in it */
    uint32_t inner_mod; /* TASK of a cf_map chunk: module of the item function,
                           else CF__MPI_NO_MOD */
    uint32_t pad_;
    uint64_t inner_off;
};

/* Run when a send's last piece completed. */
typedef void cf__mpi_done_fn(void *ctx);

struct cf__mpi_bulk {
    const void *data;
    uint64_t len;
    cf__mpi_done_fn *done;
    void *ctx;
};

/* A batch being built for one peer. */
struct cf__mpi_out {
    unsigned char *buf;
    size_t len, cap;
    struct cf__mpi_bulk *bulk;
    size_t n_bulk, cap_bulk;
};

struct cf__mpi_hold; /* mpi_io.c */

struct cf__mpi_io {
    MPI_Comm comm;
    size_t chunk; /* bytes per BULK message, <= INT_MAX */
    MPI_Request *req;
    struct cf__mpi_hold **hold;
    int *idx;
    size_t n, cap;
    unsigned char *rbuf; /* the last batch received */
    size_t rcap;
    char err[256]; /* what failed, for the futures' messages */
};

/* Append a record (body copied now unless it goes in BULK messages; then
 * data must stay valid until done(ctx) runs, which it does once the last
 * piece is sent or the io is torn down). 0 or CF_ENOMEM (done not run). */
int cf__mpi_out_add(struct cf__mpi_out *o, const struct cf__mpi_rec *rec, const void *body,
                    cf__mpi_done_fn *done, void *ctx);
static inline bool cf__mpi_out_empty(const struct cf__mpi_out *o)
{
    return o->len == 0;
}
void cf__mpi_out_free(struct cf__mpi_out *o);

/* Send o's batch and bulk bodies to peer (non-blocking) and empty o.
 * 0, CF_ENOMEM or CF_EBROKEN (io->err says why). */
int cf__mpi_flush(struct cf__mpi_io *io, struct cf__mpi_out *o, int peer);
/* Complete what has been sent; returns the number of sends still pending,
 * or CF_EBROKEN. */
int cf__mpi_sends_progress(struct cf__mpi_io *io);
/* Wait for every pending send, or (abandon) drop them, running every done. */
int cf__mpi_sends_drain(struct cf__mpi_io *io);
void cf__mpi_sends_abandon(struct cf__mpi_io *io);

/* A batch if one is waiting (from `from`, or any rank for MPI_ANY_SOURCE):
 * 1 with *src, io->rbuf and *len; 0 if none; CF_EBROKEN or CF_ENOMEM. */
int cf__mpi_recv_batch(struct cf__mpi_io *io, int from, int *src, size_t *len);
/* The bulk body of a record just read from src: a malloc'd buffer in
 * *data. 0, CF_ENOMEM or CF_EBROKEN. */
int cf__mpi_recv_bulk(struct cf__mpi_io *io, int src, uint64_t len, void **data);

/* Walk a received batch: the record at *at and its inline body (NULL if
 * BULK); false at the end or on a malformed record. */
bool cf__mpi_next_rec(const unsigned char *buf, size_t len, size_t *at, struct cf__mpi_rec *rec,
                      const unsigned char **body);

/* How a loop that cannot block in MPI waits for the next message. After
 * each event it polls (yielding the CPU every few polls), then naps, 20 us
 * doubling to the caller's cap, waking early when signalled. It polls for
 * twice the time its peer last took to answer (from a send of ours to the
 * next message in), between 50 us and 1 ms: a steady exchange (a
 * ping-pong) then finds its next message while polling, and a slow peer
 * costs no more than 1 ms of polling per event. Naps stay short (the
 * caller's cap, 1 ms) while events are recent: a long nap would make the
 * peer's answer look slow, shorten nothing and feed on itself. The caller
 * owns the struct (one thread at a time: the holder of its MPI token). */
/* A polling loop yields the CPU once every this many empty polls: every
 * poll would hand the CPU away for a whole time slice to any thread
 * sharing it far too often (three ranks on two cores, a ping-pong went
 * from 9 to 25 us), never would starve a rank on the same core. */
#define CF__MPI_YIELD_EVERY 8u

struct cf__mpi_pace {
    struct timespec last; /* the last event */
    struct timespec sent; /* our last send, if waiting_reply */
    bool waiting_reply;
    unsigned polls; /* polls since the start, for the yield rhythm */
    long spin_ns, nap_ns;
};
void cf__mpi_pace_init(struct cf__mpi_pace *p);
void cf__mpi_pace_event(struct cf__mpi_pace *p);   /* anything happened */
void cf__mpi_pace_sent(struct cf__mpi_pace *p);    /* we sent to the peer */
void cf__mpi_pace_arrival(struct cf__mpi_pace *p); /* a message came in */
/* Nothing happened: 0 (poll again; first yield the CPU if *yield, which
 * the caller does after it let go of its MPI token) or ns to nap: at most
 * cap_ns, or, once nothing has happened for a while, an eighth of the time
 * since the last event, up to cap_quiet_ns. A longer nap costs latency
 * only to the first message after a quiet time (at most an eighth of that
 * time), and saves wake-ups while idle. */
long cf__mpi_pace_idle(struct cf__mpi_pace *p, long cap_ns, long cap_quiet_ns, bool *yield);
/* A nap of ns as pthread_cond_timedwait's absolute CLOCK_REALTIME time. */
struct timespec cf__mpi_nap_until(long ns);

/* Record an MPI error (rc) in io->err; returns CF_EBROKEN. */
int cf__mpi_fail(struct cf__mpi_io *io, int rc, const char *what, int peer);

#endif
