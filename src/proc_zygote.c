/* The zygote: the one single-threaded child of a process pool, forked at
 * pool creation, which forks every worker (process_pool.c explains why).
 *
 * It calls only system calls: no allocation (its report queue is an
 * mmap'd array), no stdio, no locks. It serves requests from the parent's
 * socket (spawn worker i at a ring position, kill all workers with a
 * signal, exit) and reports on the other socket (spawned pid, spawn failed,
 * died with wait status). It reaps its workers through pidfds, so it never
 * signals a pid that could have been reused. It leaves with _exit when
 * asked, when the request socket reaches EOF, or when its parent is gone
 * (getppid() changes; checked at least once a second), and kills its
 * workers first. Workers die with it (PR_SET_PDEATHSIG).
 *
 * No deadlock on the sockets. The parent's sends block when the request
 * socket is full; the zygote never blocks on either socket. Both of its
 * ends are non-blocking; every report goes into the zygote's own FIFO
 * queue, which a poll() loop flushes while the report socket has room, and
 * requests are read whenever they come, whether or not the parent is
 * reading reports. So the parent is blocked at most while the zygote
 * works through requests already sent, never forever. The queue cannot
 * overflow: a channel has at most one spawn outstanding (the parent asks
 * for a worker on a channel only at creation or after it has read that
 * channel's DIED report), so it holds at most a SPAWNED (or SPAWN_FAILED)
 * and a DIED per channel: 2 x workers entries. When leaving, the zygote
 * reports nothing (the parent waits for its exit, not for reports).
 *
 * Also here: the registry of descriptors that belong to live pools, which a
 * new zygote closes so that it does not keep another pool's sockets open. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc_pool.h"

/* ---- the registry: fd + 1 per entry, 0 = empty ---- */
#define REG_MAX 512
static _Atomic int fd_registry[REG_MAX];

void cf__pp_fd_register(int fd)
{
    for (int i = 0; i < REG_MAX; i++) {
        int empty = 0;
        /* relaxed: the registry is only a hint for zygotes forked later;
         * a pool created concurrently in another thread may miss it. */
        if (atomic_compare_exchange_strong_explicit(&fd_registry[i], &empty, fd + 1,
                                                    memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

void cf__pp_fd_unregister(int fd)
{
    for (int i = 0; i < REG_MAX; i++) {
        int want = fd + 1;
        if (atomic_compare_exchange_strong_explicit(&fd_registry[i], &want, 0,
                                                    memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

static void close_registered(void)
{
    for (int i = 0; i < REG_MAX; i++) {
        int v = atomic_load_explicit(&fd_registry[i], memory_order_relaxed);
        if (v > 0) close(v - 1);
        atomic_store_explicit(&fd_registry[i], 0, memory_order_relaxed);
    }
}

/* ---- the zygote ---- */

/* The parent's settings, saved by the zygote before it changes them. */
static struct sigaction saved_chld, saved_int;
static sigset_t saved_mask;
static struct rlimit saved_nofile;
static bool nofile_raised;

void cf__pp_restore_signals(void)
{
    sigaction(SIGCHLD, &saved_chld, NULL);
    sigaction(SIGINT, &saved_int, NULL);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
}

/* The zygote's outgoing reports: a FIFO in a private anonymous mapping
 * (zygote memory; workers unmap nothing of it, they simply never use it). */
struct zqueue {
    struct cf__zrep *r;
    uint32_t cap, head, len;
};
static struct zqueue zq;

static void report(struct cf__ppool *p, int op, int chan, int pid, int status)
{
    (void)p;
    if (zq.len == zq.cap) return; /* cannot happen: see the bound at the top */
    zq.r[(zq.head + zq.len) % zq.cap] = (struct cf__zrep){.op = op, .chan = chan, .pid = pid, .status = status};
    zq.len++;
}

/* Send queued reports while the socket takes them. False when the parent
 * has gone (EPIPE, ECONNRESET). */
static bool flush(struct cf__ppool *p)
{
    while (zq.len) {
        ssize_t w = send(p->rep_wr, &zq.r[zq.head], sizeof zq.r[0], MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) return true;
        if (w != (ssize_t)sizeof zq.r[0]) return false;
        zq.head = (zq.head + 1) % zq.cap;
        zq.len--;
    }
    return true;
}

static void reap(struct cf__ppool *p, int i, bool tell)
{
    struct cf__pchan *ch = &p->ch[i];
    int st = 0;
    pid_t r;
    do r = waitpid(ch->z_pid, &st, 0);
    while (r < 0 && errno == EINTR);
    if (tell) report(p, CF__ZR_DIED, i, ch->z_pid, r < 0 ? -1 : st);
    close(ch->z_pidfd);
    ch->z_pidfd = -1;
    ch->z_pid = 0;
}

static void kill_all(struct cf__ppool *p, int signo)
{
    for (int i = 0; i < p->n; i++)
        if (p->ch[i].z_pid > 0) kill(p->ch[i].z_pid, signo);
}

static _Noreturn void leave(struct cf__ppool *p)
{
    kill_all(p, SIGKILL);
    for (int i = 0; i < p->n; i++)
        if (p->ch[i].z_pid > 0) reap(p, i, false); /* nobody reads reports now */
    _exit(0);
}

static void spawn(struct cf__ppool *p, const struct cf__zreq *q, pid_t self)
{
    int i = q->chan;
    if (i < 0 || i >= p->n || p->ch[i].z_pid > 0) return; /* cannot happen: the parent is ours */
    pid_t pid = fork();
    if (pid == 0) {
        if (nofile_raised) setrlimit(RLIMIT_NOFILE, &saved_nofile);
        cf__pp_shm_isolate(p, i); /* the worker keeps only its own channel */
        cf__pp_worker_main(p, i, q->pos, q->res_pos, self);
    }
    if (pid < 0) {
        report(p, CF__ZR_SPAWN_FAILED, i, 0, errno);
        return;
    }
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        report(p, CF__ZR_SPAWN_FAILED, i, 0, e);
        return;
    }
    p->ch[i].z_pid = pid;
    p->ch[i].z_pidfd = fd;
    report(p, CF__ZR_SPAWNED, i, pid, 0);
}

/* Serve the requests waiting on the socket (while the queue has room for
 * what they may report). False on EOF or a bad message: the parent is gone. */
static bool serve(struct cf__ppool *p, pid_t self)
{
    while (zq.len < zq.cap) {
        struct cf__zreq q;
        ssize_t got = recv(p->req_rd, &q, sizeof q, MSG_DONTWAIT);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (got != (ssize_t)sizeof q) return false; /* EOF: the parent is gone */
        switch (q.op) {
        case CF__ZQ_SPAWN: spawn(p, &q, self); break;
        case CF__ZQ_KILL: kill_all(p, q.signo); break;
        case CF__ZQ_EXIT: return false;
        default: break;
        }
    }
    return true;
}

/* One pidfd per worker plus a few of our own: make sure the descriptor
 * limit allows them (a worker gets the parent's limit back). */
static void raise_nofile(int n)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)n + 1024; /* headroom for what the parent left open */
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) return;
    saved_nofile = rl;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) nofile_raised = true;
}

_Noreturn void cf__pp_zygote_main(struct cf__ppool *p)
{
    close_registered(); /* other pools' descriptors (ours are registered after this fork) */
    close(p->req_wr);
    close(p->rep_rd);
    prctl(PR_SET_NAME, "cf-zygote", 0, 0, 0);
    /* Our children must stay reapable whatever the parent did with
     * SIGCHLD; Ctrl-C in a terminal is for the parent (we follow it when
     * the request socket closes). Workers get the parent's settings back. */
    struct sigaction dfl = {.sa_handler = SIG_DFL}, ign = {.sa_handler = SIG_IGN};
    sigaction(SIGCHLD, &dfl, &saved_chld);
    sigaction(SIGINT, &ign, &saved_int);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, &saved_mask);
    pid_t self = getpid();
    if (getppid() != p->parent_pid) _exit(0);
    raise_nofile(p->n);
    /* Never block on a socket (see the top of this file). The descriptions
     * are ours alone: the parent closed its copies of these two ends. */
    fcntl(p->req_rd, F_SETFL, fcntl(p->req_rd, F_GETFL) | O_NONBLOCK);
    fcntl(p->rep_wr, F_SETFL, fcntl(p->rep_wr, F_GETFL) | O_NONBLOCK);
    zq.cap = 2u * (uint32_t)p->n + 8u;
    void *qm = mmap(NULL, sizeof(struct cf__zrep) * zq.cap, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (qm == MAP_FAILED) _exit(1); /* the parent sees the zygote die and fails */
    zq.r = qm;

    struct pollfd pfd[2 + p->n];
    int who[2 + p->n];
    for (;;) {
        if (!flush(p)) leave(p);
        int k = 0;
        /* Requests only while the queue has room for what one may report. */
        pfd[k++] = (struct pollfd){.fd = zq.len < zq.cap ? p->req_rd : -1, .events = POLLIN};
        pfd[k++] = (struct pollfd){.fd = zq.len ? p->rep_wr : -1, .events = POLLOUT};
        for (int i = 0; i < p->n && zq.len < zq.cap; i++) {
            if (p->ch[i].z_pidfd < 0) continue;
            who[k] = i;
            pfd[k++] = (struct pollfd){.fd = p->ch[i].z_pidfd, .events = POLLIN};
        }
        int r = poll(pfd, (nfds_t)k, 1000);
        if (getppid() != p->parent_pid) leave(p);
        if (r <= 0) continue;
        for (int j = 2; j < k; j++)
            if (pfd[j].revents && zq.len < zq.cap) reap(p, who[j], true);
        if (pfd[0].revents && !serve(p, self)) leave(p);
    }
}
