/* Shared by the URL examples (load_urls.c, background.c): a tiny HTTP server
 * on 127.0.0.1 so the seed's "load several URLs" examples run offline, and
 * the seed's load_url() written with libcurl.
 *
 * The server listens on an ephemeral port and answers each connection in its
 * own thread after that page's delay, so pages finish in the order of their
 * delays, not in the order they were asked for. It is example code: it reads
 * one request line, serves a known path or 404, and closes. */
#ifndef CF_EXAMPLE_LOCAL_HTTP_H
#define CF_EXAMPLE_LOCAL_HTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <cfutures.h>

#define EXAMPLE_UNUSED __attribute__((unused))

struct local_page {
    const char *path; /* e.g. "/www.cnn.com" */
    size_t size;      /* bytes in the body */
    int delay_ms;     /* how long the "network" takes */
};

#define LOCAL_MAX_CONNS 32

struct local_server {
    int fd;
    int port;
    const struct local_page *pages;
    size_t n_pages;
    pthread_t thread;
    atomic_bool stop;
    pthread_t conns[LOCAL_MAX_CONNS];
    size_t n_conns;
};

struct local_conn {
    struct local_server *srv;
    int fd;
};

static void local_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool local_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *local_serve_conn(void *arg)
{
    struct local_conn c = *(struct local_conn *)arg;
    free(arg);
    char req[2048];
    size_t got = 0;
    while (got < sizeof req - 1 && !memchr(req, '\n', got)) {
        ssize_t r = recv(c.fd, req + got, sizeof req - 1 - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    req[got] = '\0';
    char path[256] = "";
    sscanf(req, "GET %255s", path);

    const struct local_page *page = NULL;
    for (size_t i = 0; i < c.srv->n_pages; i++)
        if (strcmp(c.srv->pages[i].path, path) == 0) page = &c.srv->pages[i];

    char head[256];
    if (!page) {
        int n = snprintf(
            head, sizeof head,
            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        local_write_all(c.fd, head, (size_t)n);
    } else {
        local_sleep_ms(page->delay_ms);
        char *body = malloc(page->size ? page->size : 1);
        if (body) {
            static const char text[] = "<p>cfutures serves this page from 127.0.0.1.</p>\n";
            for (size_t i = 0; i < page->size; i++) body[i] = text[i % (sizeof text - 1)];
            int n = snprintf(head, sizeof head,
                             "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                             page->size);
            if (local_write_all(c.fd, head, (size_t)n)) local_write_all(c.fd, body, page->size);
            free(body);
        }
    }
    shutdown(c.fd, SHUT_WR);
    close(c.fd);
    return NULL;
}

static void *local_serve(void *arg)
{
    struct local_server *srv = arg;
    while (!atomic_load_explicit(&srv->stop, memory_order_relaxed)) {
        int fd = accept(srv->fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break; /* local_server_stop shut the socket down */
        }
        struct local_conn *c = malloc(sizeof *c);
        if (!c || srv->n_conns == LOCAL_MAX_CONNS) {
            free(c);
            close(fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        if (pthread_create(&srv->conns[srv->n_conns], NULL, local_serve_conn, c) != 0) {
            free(c);
            close(fd);
            continue;
        }
        srv->n_conns++;
    }
    for (size_t i = 0; i < srv->n_conns; i++) pthread_join(srv->conns[i], NULL);
    return NULL;
}

/* Start serving pages on 127.0.0.1 at an ephemeral port. 0 or -1. */
static EXAMPLE_UNUSED int local_server_start(struct local_server *srv,
                                             const struct local_page *pages, size_t n_pages)
{
    memset(srv, 0, sizeof *srv);
    srv->pages = pages;
    srv->n_pages = n_pages;
    srv->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv->fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(srv->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(srv->fd, 64) != 0 ||
        getsockname(srv->fd, (struct sockaddr *)&a, &alen) != 0) {
        close(srv->fd);
        return -1;
    }
    srv->port = ntohs(a.sin_port);
    if (pthread_create(&srv->thread, NULL, local_serve, srv) != 0) {
        close(srv->fd);
        return -1;
    }
    return 0;
}

static EXAMPLE_UNUSED void local_server_stop(struct local_server *srv)
{
    atomic_store_explicit(&srv->stop, true, memory_order_relaxed);
    shutdown(srv->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(srv->thread, NULL);
    close(srv->fd);
}

/* A port on 127.0.0.1 where nobody listens: bind one, note it, close it. */
static EXAMPLE_UNUSED int local_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int port = 1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- the seed's load_url(url): urlopen(url, timeout=1).read() ---- */

struct local_body {
    char *data;
    size_t len, cap;
};

static size_t local_on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    struct local_body *b = ud;
    size_t n = size * nmemb;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap - b->len < n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return 0; /* curl reports a write error */
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return n;
}

/* The task: the argument is the URL (its bytes), the result the page. A
 * failure "raises" code 1 with curl's message. */
static EXAMPLE_UNUSED int load_url(const void *arg, size_t len, cf_out *out)
{
    char url[512];
    if (len >= sizeof url) return cf_out_error(out, 1, "URL too long");
    memcpy(url, arg, len);
    url[len] = '\0';

    CURL *curl = curl_easy_init();
    if (!curl) return cf_out_error(out, 1, "curl_easy_init failed");
    struct local_body body = {0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 1000L); /* timeout=1 */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);      /* we are in a worker thread */
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");      /* loopback: never via a proxy */
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);   /* HTTP errors are errors, as in urlopen */
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, local_on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    CURLcode res = curl_easy_perform(curl);
    curl_easy_cleanup(curl);

    int rc = res == CURLE_OK ? cf_out_set(out, body.data, body.len)
                             : cf_out_error(out, 1, "%s", curl_easy_strerror(res));
    free(body.data);
    return rc;
}

#endif
