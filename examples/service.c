/* A small service: one thread runs an event loop (epoll) over a loopback
 * TCP socket and a completion channel; each request it reads goes to the
 * pool, and each answer goes back when the channel says its future is
 * done. The loop never blocks on a future, and never searches for one: the
 * channel hands it back with the request's id as its tag.
 *
 *   service [--process] [REQUESTS [IN_FLIGHT]]
 *
 * A client thread in the same program sends REQUESTS (default 2000)
 * requests, keeping IN_FLIGHT (default 32) of them unanswered at a time,
 * checks every answer, and prints the round trip per request: its median
 * and 99th percentile. --process runs the tasks in a process pool.
 *
 * A request asks for the smallest prime factor of a number (trial
 * division: some microseconds of work); the wire format is two 64-bit
 * words each way: {id, n} and {id, answer}. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cfutures.h"

struct msg {
    uint64_t id;
    uint64_t value; /* the request's n, or the answer */
};

/* The work: the smallest prime factor of n (n >= 2). */
static uint64_t smallest_factor(uint64_t n)
{
    if (n % 2 == 0) return 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0) return d;
    return n;
}

static int factor_task(const void *arg, size_t len, cf_out *out)
{
    uint64_t n;
    if (len != sizeof n) return cf_out_error(out, 1, "bad request length %zu", len);
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, (int64_t)smallest_factor(n));
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The n of request id: deterministic, so the client can check the answer. */
static uint64_t request_n(uint64_t id)
{
    uint64_t x = (id + 1) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return 1000000 + x % 50000000;
}

/* Write all of buf (the socket is blocking). */
static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* ---- the server: one event loop ---- */

struct server {
    int listen_fd;
    cf_executor *ex;
    uint64_t requests; /* it stops after answering this many */
    int rc;
};

/* Read what the connection has, submit each whole request. Returns 0, 1
 * when the client closed, -1 on an error. */
static int on_readable(struct server *s, int conn, cf_channel *ch, char *buf, size_t *have)
{
    for (;;) {
        ssize_t r = recv(conn, buf + *have, 4096 - *have, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        if (r == 0) return 1;
        *have += (size_t)r;
        size_t used = 0;
        for (; *have - used >= sizeof(struct msg); used += sizeof(struct msg)) {
            struct msg m;
            memcpy(&m, buf + used, sizeof m);
            cf_future *f;
            int rc = cf_submit(s->ex, factor_task, &m.value, sizeof m.value, &f);
            if (rc == 0) {
                rc = cf_channel_add(ch, f, m.id); /* the channel keeps f */
                cf_future_release(f);
            }
            if (rc != 0) {
                fprintf(stderr, "service: request %llu: %s\n", (unsigned long long)m.id,
                        cf_strerror(rc));
                return -1;
            }
        }
        memmove(buf, buf + used, *have - used);
        *have -= used;
    }
}

/* Answer every finished request. Returns how many, or -1. */
static long on_finished(int conn, cf_channel *ch)
{
    cf_future *done[64];
    uint64_t ids[64];
    struct msg answers[64];
    size_t n;
    if (cf_channel_drain(ch, done, ids, 64, &n) != 0) return -1;
    long failed = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = 0;
        if (cf_future_result_i64(done[i], CF_POLL, &v) != 0) failed++;
        answers[i] = (struct msg){ids[i], (uint64_t)v};
        cf_future_release(done[i]);
    }
    if (failed || (n && send_all(conn, answers, n * sizeof answers[0]) != 0)) return -1;
    return (long)n;
}

static void *server_main(void *p)
{
    struct server *s = p;
    s->rc = 1;
    int conn = accept(s->listen_fd, NULL, NULL);
    cf_channel *ch = NULL;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (conn < 0 || ep < 0 || cf_channel_new(&ch) != 0) goto out;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ev) != 0) goto out;
    ev.data.u32 = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cf_channel_fd(ch), &ev) != 0) goto out;

    char buf[4096];
    size_t have = 0;
    uint64_t answered = 0;
    bool closed = false;
    while (answered < s->requests || !closed) {
        struct epoll_event evs[2];
        int k = epoll_wait(ep, evs, 2, 10000);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            fprintf(stderr, "service: nothing happened for 10 s (%llu answered)\n",
                    (unsigned long long)answered);
            goto out;
        }
        for (int i = 0; i < k; i++) {
            if (evs[i].data.u32 == 1) {
                long n = on_finished(conn, ch);
                if (n < 0) goto out;
                answered += (uint64_t)n;
            } else if (!closed) {
                int r = on_readable(s, conn, ch, buf, &have);
                if (r < 0) goto out;
                if (r == 1) {
                    closed = true;
                    epoll_ctl(ep, EPOLL_CTL_DEL, conn, NULL);
                }
            }
        }
    }
    s->rc = 0;
out:
    if (s->rc) perror("service: server");
    cf_channel_free(ch);
    if (ep >= 0) close(ep);
    if (conn >= 0) close(conn);
    return NULL;
}

/* ---- the client: sends with a bounded window, checks every answer ---- */

struct client {
    uint16_t port;
    uint64_t requests, in_flight;
    int64_t *latency_ns; /* per request */
    uint64_t wrong;
    int rc;
};

static void *client_main(void *p)
{
    struct client *c = p;
    c->rc = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(c->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int64_t *sent_at = calloc(c->requests, sizeof *sent_at);
    if (fd < 0 || !sent_at || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) goto out;
    uint64_t next = 0, got = 0;
    while (got < c->requests) {
        while (next < c->requests && next - got < c->in_flight) {
            struct msg m = {next, request_n(next)};
            sent_at[next] = now_ns();
            if (send_all(fd, &m, sizeof m) != 0) goto out;
            next++;
        }
        struct msg m;
        size_t have = 0;
        while (have < sizeof m) {
            ssize_t r = recv(fd, (char *)&m + have, sizeof m - have, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) goto out;
            have += (size_t)r;
        }
        if (m.id >= next || c->latency_ns[m.id] != 0) { /* unknown or answered twice */
            c->wrong++;
            continue;
        }
        c->latency_ns[m.id] = now_ns() - sent_at[m.id];
        if (c->latency_ns[m.id] == 0) c->latency_ns[m.id] = 1;
        if (m.value != smallest_factor(request_n(m.id))) c->wrong++;
        got++;
    }
    c->rc = 0;
out:
    if (c->rc) perror("service: client");
    free(sent_at);
    if (fd >= 0) close(fd); /* the server sees the end of the stream */
    return NULL;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    bool process = argc > 1 && strcmp(argv[1], "--process") == 0;
    int arg = process ? 2 : 1;
    uint64_t requests = argc > arg ? strtoull(argv[arg], NULL, 10) : 2000;
    uint64_t in_flight = argc > arg + 1 ? strtoull(argv[arg + 1], NULL, 10) : 32;
    if (requests == 0 || in_flight == 0) {
        fprintf(stderr, "usage: service [--process] [REQUESTS [IN_FLIGHT]]\n");
        return 2;
    }

    /* The pool first: a process pool's workers are forked now, before any
     * thread of ours exists. */
    cf_executor *ex;
    int rc = process ? cf_process_pool_new(&ex, NULL) : cf_thread_pool_new(&ex, NULL);
    if (rc != 0) {
        fprintf(stderr, "service: cannot create the pool: %s\n", cf_strerror(rc));
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("service: listen on 127.0.0.1");
        cf_executor_free(ex);
        return 1;
    }
    struct server srv = {.listen_fd = lfd, .ex = ex, .requests = requests};
    struct client cli = {.port = ntohs(a.sin_port),
                         .requests = requests,
                         .in_flight = in_flight,
                         .latency_ns = calloc(requests, sizeof(int64_t))};
    if (!cli.latency_ns) {
        cf_executor_free(ex);
        return 1;
    }
    pthread_t ts, tc;
    pthread_create(&ts, NULL, server_main, &srv);
    pthread_create(&tc, NULL, client_main, &cli);
    pthread_join(tc, NULL);
    pthread_join(ts, NULL);
    close(lfd);
    cf_executor_free(ex);

    int status = srv.rc || cli.rc || cli.wrong ? 1 : 0;
    if (status == 0) {
        qsort(cli.latency_ns, requests, sizeof(int64_t), cmp_i64);
        printf("service: %llu requests answered, all correct (%s pool, %llu in flight)\n",
               (unsigned long long)requests, process ? "process" : "thread",
               (unsigned long long)in_flight);
        printf("service: round trip p50 %.1f us, p99 %.1f us\n", cli.latency_ns[requests / 2] / 1e3,
               cli.latency_ns[(requests * 99) / 100] / 1e3);
    } else {
        fprintf(stderr, "service: FAILED (%llu wrong answers)\n", (unsigned long long)cli.wrong);
    }
    free(cli.latency_ns);
    return status;
}
