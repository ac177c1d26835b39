/* Baseline: a hand-written fork+pipes process pool.
 *
 * Each worker is a forked child with a request pipe and a response pipe.
 * Submit picks a worker round-robin and writes one message (header +
 * argument bytes) under that worker's mutex; a worker reads requests in
 * large buffered reads and flushes its buffered responses when it has no
 * complete request left, so a busy stream costs few system calls. One
 * collector thread in the parent polls the response pipes and completes the
 * bl_futures. Functions travel as pointers: the children are forks of the
 * parent and share its code addresses. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baseline_pool.h"

#define FP_BUF (64 * 1024)
#define FP_MAX_ARG 4096

struct fp_req {
    uint64_t tag; /* the bl_future */
    bl_fn *fn;
    uint32_t len;
    uint32_t pad;
};

struct fp_resp {
    uint64_t tag;
    int32_t rc;
    uint32_t len;
};

struct fp_worker {
    pid_t pid;
    int req_fd;  /* parent writes */
    int resp_fd; /* parent reads */
    pthread_mutex_t mu;
    unsigned char *buf; /* collector's read buffer */
    size_t have;
};

struct bl_fp_pool {
    int n;
    _Atomic unsigned rr;
    /* The pipes and the worker process carry a real happens-before edge from
     * a submit to the completion of its future, but TSan cannot see it;
     * this counter states it (release in submit, acquire in the collector)
     * at the cost of one atomic next to two system calls. */
    _Atomic unsigned long submitted;
    pthread_t collector;
    bool collector_started;
    struct fp_worker w[];
};

static int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The child: serve requests until the request pipe reaches EOF. */
static void __attribute__((noreturn)) child_main(int in, int out)
{
    static unsigned char ibuf[FP_BUF], obuf[FP_BUF];
    size_t ihave = 0, ipos = 0, ohave = 0;
    for (;;) {
        struct fp_req rq;
        if (ihave - ipos >= sizeof rq) memcpy(&rq, ibuf + ipos, sizeof rq);
        if (ihave - ipos < sizeof rq || ihave - ipos < sizeof rq + rq.len) {
            /* No complete request buffered: flush answers, then read. */
            if (ohave && write_all(out, obuf, ohave) != 0) _exit(1);
            ohave = 0;
            memmove(ibuf, ibuf + ipos, ihave - ipos);
            ihave -= ipos;
            ipos = 0;
            ssize_t k = read(in, ibuf + ihave, FP_BUF - ihave);
            if (k == 0) _exit(0);
            if (k < 0) {
                if (errno == EINTR) continue;
                _exit(1);
            }
            ihave += (size_t)k;
            continue;
        }
        const unsigned char *arg = ibuf + ipos + sizeof rq;
        ipos += sizeof rq + rq.len;
        if (FP_BUF - ohave < sizeof(struct fp_resp) + BL_RESULT_MAX) {
            if (write_all(out, obuf, ohave) != 0) _exit(1);
            ohave = 0;
        }
        struct fp_resp rs = {.tag = rq.tag};
        size_t len = 0;
        rs.rc = rq.fn(arg, rq.len, obuf + ohave + sizeof rs, &len);
        rs.len = (uint32_t)(len > BL_RESULT_MAX ? BL_RESULT_MAX : len);
        memcpy(obuf + ohave, &rs, sizeof rs);
        ohave += sizeof rs + rs.len;
    }
}

static void *collector_main(void *arg)
{
    struct bl_fp_pool *p = arg;
    struct pollfd pfd[p->n];
    int open_fds = p->n;
    for (int i = 0; i < p->n; i++)
        pfd[i] = (struct pollfd){.fd = p->w[i].resp_fd, .events = POLLIN};
    while (open_fds > 0) {
        if (poll(pfd, (nfds_t)p->n, -1) < 0) {
            if (errno == EINTR) continue;
            return NULL;
        }
        for (int i = 0; i < p->n; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents) continue;
            struct fp_worker *w = &p->w[i];
            ssize_t k = read(w->resp_fd, w->buf + w->have, FP_BUF - w->have);
            if (k <= 0) {
                if (k < 0 && errno == EINTR) continue;
                pfd[i].fd = -1; /* EOF: the worker exited */
                open_fds--;
                continue;
            }
            w->have += (size_t)k;
            /* acquire: pairs with the release increment in bl_fp_submit, so
             * the futures named in what was just read are seen initialised. */
            (void)atomic_load_explicit(&p->submitted, memory_order_acquire);
            size_t pos = 0;
            while (w->have - pos >= sizeof(struct fp_resp)) {
                struct fp_resp rs;
                memcpy(&rs, w->buf + pos, sizeof rs);
                if (w->have - pos < sizeof rs + rs.len) break;
                struct bl_future *f = (struct bl_future *)(uintptr_t)rs.tag;
                bl_future_complete(f, rs.rc, w->buf + pos + sizeof rs, rs.len);
                bl_future_release(f);
                pos += sizeof rs + rs.len;
            }
            memmove(w->buf, w->buf + pos, w->have - pos);
            w->have -= pos;
        }
    }
    return NULL;
}

struct bl_fp_pool *bl_fp_new(int workers)
{
    struct bl_fp_pool *p = calloc(1, sizeof *p + (size_t)workers * sizeof(struct fp_worker));
    if (!p) return NULL;
    for (int i = 0; i < workers; i++) {
        struct fp_worker *w = &p->w[i];
        int rq[2], rs[2];
        w->buf = malloc(FP_BUF);
        if (!w->buf || pipe(rq) != 0) {
            free(w->buf);
            break;
        }
        if (pipe(rs) != 0) {
            close(rq[0]);
            close(rq[1]);
            free(w->buf);
            break;
        }
        pid_t pid = fork();
        if (pid == 0) {
            /* Close the parent's ends of every earlier worker, so each
             * request pipe reaches EOF when the parent closes it. */
            for (int j = 0; j < i; j++) {
                close(p->w[j].req_fd);
                close(p->w[j].resp_fd);
            }
            close(rq[1]);
            close(rs[0]);
            child_main(rq[0], rs[1]);
        }
        close(rq[0]);
        close(rs[1]);
        if (pid < 0) {
            close(rq[1]);
            close(rs[0]);
            free(w->buf);
            break;
        }
        w->pid = pid;
        w->req_fd = rq[1];
        w->resp_fd = rs[0];
        pthread_mutex_init(&w->mu, NULL);
        p->n++;
    }
    if (p->n == 0 || pthread_create(&p->collector, NULL, collector_main, p) != 0) {
        bl_fp_free(p);
        return NULL;
    }
    p->collector_started = true;
    return p;
}

struct bl_future *bl_fp_submit(struct bl_fp_pool *p, bl_fn *fn, const void *arg, size_t arg_len)
{
    if (arg_len > FP_MAX_ARG) return NULL;
    struct bl_future *f = bl_future_new(2); /* the caller's and the collector's */
    if (!f) return NULL;
    unsigned char msg[sizeof(struct fp_req) + FP_MAX_ARG];
    struct fp_req rq = {.tag = (uint64_t)(uintptr_t)f, .fn = fn, .len = (uint32_t)arg_len};
    memcpy(msg, &rq, sizeof rq);
    if (arg_len) memcpy(msg + sizeof rq, arg, arg_len);
    /* relaxed: only spreads the load; no ordering needed. */
    unsigned i = atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed) % (unsigned)p->n;
    struct fp_worker *w = &p->w[i];
    /* release: publishes the future's initialisation to the collector,
     * which acquires this counter after reading the answer (see above). */
    atomic_fetch_add_explicit(&p->submitted, 1, memory_order_release);
    pthread_mutex_lock(&w->mu);
    int rc = write_all(w->req_fd, msg, sizeof rq + arg_len);
    pthread_mutex_unlock(&w->mu);
    if (rc != 0) {
        bl_future_release(f);
        bl_future_release(f);
        return NULL;
    }
    return f;
}

void bl_fp_free(struct bl_fp_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        pthread_mutex_lock(&p->w[i].mu);
        close(p->w[i].req_fd);
        pthread_mutex_unlock(&p->w[i].mu);
    }
    if (p->collector_started) pthread_join(p->collector, NULL);
    for (int i = 0; i < p->n; i++) {
        waitpid(p->w[i].pid, NULL, 0);
        close(p->w[i].resp_fd);
        pthread_mutex_destroy(&p->w[i].mu);
        free(p->w[i].buf);
    }
    free(p);
}
