/* The zygote: the one single-threaded child of a process pool, forked at
 * pool creation, which forks every worker (process_pool.c explains why).
 *
 * It calls only system calls: no allocation (its report queue is an
 * mmap'd array), no stdio, no locks. It serves requests from the parent's
 * socket (spawn worker i at a ring position, kill all workers with a
 * signal, exit) and reports on the other socket (spawned pid, spawn failed,
 * died with wait status). It is its workers' parent and reaps them itself
 * (SIGCHLD through a signalfd, then waitpid), so it never signals a pid
 * that could have been reused: a child's pid stays its own until it is
 * reaped. It holds no descriptor per worker, so forking the n-th worker
 * costs no more than the first. It kills its workers and leaves with
 * _exit when asked, or when the parent is gone. The parent's going shows
 * at once as EOF on the request socket, unless a copy of the parent's end
 * outlives it (a child the application forked without exec keeps it:
 * SOCK_CLOEXEC acts only on exec); so it also compares getppid() with the
 * parent's pid after every wake-up of its poll() loop, which wakes at
 * least once a second: a zygote whose parent died has been re-parented.
 * It sets no death signal for itself (PR_SET_PDEATHSIG fires when the
 * forking *thread* exits, and the pool may outlive that thread). Workers
 * do die with the zygote (PR_SET_PDEATHSIG: the zygote has one thread).
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
 * A new zygote first closes the descriptors of every other live pool
 * (proc_life.c keeps the registry), so that it does not keep another
 * pool's sockets open. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process/proc_life.h"
#include "process/proc_worker.h"
#include "process/proc_zygote.h"

/* ---- the zygote ---- */

/* The parent's settings, saved by the zygote before it changes them and
 * handed to every worker, which puts them back. */
static struct cf__pp_sigs app_sigs;
static int chld_fd = -1; /* signalfd for SIGCHLD (blocked in the zygote) */

/* The zygote's outgoing reports: a FIFO in a private anonymous mapping
 * (no allocator in the zygote). */
struct zqueue {
    struct cf__zrep *r;
    uint32_t cap, head, len;
};
static struct zqueue zq;

static void report(int op, int chan, int pid, int status)
{
    if (zq.len == zq.cap) return; /* cannot happen: see the bound at the top */
    zq.r[(zq.head + zq.len) % zq.cap] = (struct cf__zrep){
        .op = op, .chan = chan, .pid = pid, .status = status};
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

/* Reap workers that have exited and report each, while the queue has room.
 * Returns false when none is left to reap for now. */
static bool reap_exited(struct cf__ppool *p)
{
    while (zq.len < zq.cap) {
        int st = 0;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid < 0 && errno == EINTR) continue;
        if (pid <= 0) return false; /* none exited (0) or no children (ECHILD) */
        for (int i = 0; i < p->n; i++) {
            if (p->ch[i].z_pid != pid) continue;
            p->ch[i].z_pid = 0;
            report(CF__ZR_DIED, i, pid, st);
            break;
        }
    }
    return true; /* the queue is full: more may wait */
}

static void kill_all(struct cf__ppool *p, int signo)
{
    for (int i = 0; i < p->n; i++)
        if (p->ch[i].z_pid > 0) kill(p->ch[i].z_pid, signo);
}

static _Noreturn void leave(struct cf__ppool *p)
{
    kill_all(p, SIGKILL);
    for (int i = 0; i < p->n; i++) { /* nobody reads reports now */
        if (p->ch[i].z_pid <= 0) continue;
        while (waitpid(p->ch[i].z_pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    _exit(0);
}

static void spawn(struct cf__ppool *p, const struct cf__zreq *q, pid_t self)
{
    int i = q->chan;
    if (i < 0 || i >= p->n || p->ch[i].z_pid > 0) return; /* cannot happen: the parent is ours */
    pid_t pid = fork();
    if (pid == 0) {
        close(chld_fd);
        cf__pp_shm_isolate(p, i); /* the worker keeps only its own channel */
        cf__pp_worker_main(p, i, q->pos, q->res_pos, self, &app_sigs);
    }
    if (pid < 0) {
        report(CF__ZR_SPAWN_FAILED, i, 0, errno);
        return;
    }
    p->ch[i].z_pid = pid;
    report(CF__ZR_SPAWNED, i, pid, 0);
}

/* Serve the requests waiting on the socket (while the queue has room for
 * what they may report). False on EOF, EXIT or a bad message: leave. */
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

_Noreturn void cf__pp_zygote_main(struct cf__ppool *p)
{
    cf__pp_fd_close_registered(); /* other pools' descriptors (ours are registered after this fork) */
    close(p->req_wr);
    close(p->rep_rd);
    prctl(PR_SET_NAME, "cf-zygote", 0, 0, 0);
    /* Our children must stay reapable whatever the parent did with
     * SIGCHLD: it is blocked here and read from a signalfd. Ctrl-C in a
     * terminal is for the parent (we follow it when the request socket
     * closes). Workers get the parent's settings back. */
    struct sigaction dfl = {.sa_handler = SIG_DFL}, ign = {.sa_handler = SIG_IGN};
    sigaction(SIGCHLD, &dfl, &app_sigs.chld);
    sigaction(SIGINT, &ign, &app_sigs.intr);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_SETMASK, &chld, &app_sigs.mask);
    pid_t self = getpid();
    if (getppid() != p->parent_pid) _exit(0); /* the parent died since the fork */
    chld_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    /* Never block on a socket (see the top of this file). The descriptions
     * are ours alone: the parent closed its copies of these two ends. */
    fcntl(p->req_rd, F_SETFL, fcntl(p->req_rd, F_GETFL) | O_NONBLOCK);
    fcntl(p->rep_wr, F_SETFL, fcntl(p->rep_wr, F_GETFL) | O_NONBLOCK);
    zq.cap = 2u * (uint32_t)p->n + 8u;
    void *qm = mmap(NULL, sizeof(struct cf__zrep) * zq.cap, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (chld_fd < 0 || qm == MAP_FAILED) _exit(1); /* the parent sees the zygote die and fails */
    zq.r = qm;

    bool more_dead = false; /* SIGCHLD seen, not everything reaped yet */
    for (;;) {
        if (more_dead) more_dead = reap_exited(p);
        if (!flush(p)) leave(p);
        /* Requests and deaths only while the queue has room for a report. */
        bool room = zq.len < zq.cap;
        struct pollfd pfd[3] = {
            {.fd = room ? p->req_rd : -1, .events = POLLIN},
            {.fd = zq.len ? p->rep_wr : -1, .events = POLLOUT},
            {.fd = room ? chld_fd : -1, .events = POLLIN},
        };
        /* Zombies left unreported for want of room: reap again as soon as
         * there is room (their SIGCHLD was consumed), not a second later. */
        int r = poll(pfd, 3, more_dead && room ? 0 : 1000);
        if (getppid() != p->parent_pid) leave(p);
        if (r <= 0) continue;
        if (pfd[2].revents) {
            struct signalfd_siginfo si;
            while (read(chld_fd, &si, sizeof si) == (ssize_t)sizeof si) {
            }
            more_dead = true;
        }
        if (pfd[0].revents && !serve(p, self)) leave(p);
    }
}
