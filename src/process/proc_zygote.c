/* The zygote: the one single-threaded child of a process pool, forked at
 * pool creation, which forks every worker (process_pool.c explains why).
 *
 * It calls only system calls: no allocation, no stdio, no locks. It serves
 * requests from the parent's socket (spawn worker i at a ring position, kill
 * all workers with a signal, exit) and reports on the other socket (spawned
 * pid, spawn failed, died with wait status). It reaps its workers through
 * pidfds, so it never signals a pid that could have been reused. It leaves
 * with _exit when asked, when the request socket reaches EOF, or when its
 * parent is gone (getppid() changes; checked at least once a second), and
 * kills its workers first. Workers die with it (PR_SET_PDEATHSIG).
 *
 * Also here: the registry of descriptors that belong to live pools, which a
 * new zygote closes so that it does not keep another pool's sockets open. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process/proc_pool.h"

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

void cf__pp_restore_signals(void)
{
    sigaction(SIGCHLD, &saved_chld, NULL);
    sigaction(SIGINT, &saved_int, NULL);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
}

static void report(struct cf__ppool *p, int op, int chan, int pid, int status)
{
    struct cf__zrep r = {.op = op, .chan = chan, .pid = pid, .status = status};
    for (;;) {
        ssize_t w = send(p->rep_wr, &r, sizeof r, MSG_NOSIGNAL);
        if (w == (ssize_t)sizeof r || (w < 0 && errno != EINTR)) return;
    }
}

static void reap(struct cf__ppool *p, int i)
{
    struct cf__pchan *ch = &p->ch[i];
    int st = 0;
    pid_t r;
    do r = waitpid(ch->z_pid, &st, 0);
    while (r < 0 && errno == EINTR);
    report(p, CF__ZR_DIED, i, ch->z_pid, r < 0 ? -1 : st);
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
        if (p->ch[i].z_pid > 0) reap(p, i);
    _exit(0);
}

static void spawn(struct cf__ppool *p, const struct cf__zreq *q, pid_t self)
{
    int i = q->chan;
    if (i < 0 || i >= p->n || p->ch[i].z_pid > 0) return; /* cannot happen: the parent is ours */
    pid_t pid = fork();
    if (pid == 0) cf__pp_worker_main(p, i, q->pos, q->res_pos, self);
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

    struct pollfd pfd[1 + p->n];
    int who[1 + p->n];
    for (;;) {
        int k = 0;
        pfd[k++] = (struct pollfd){.fd = p->req_rd, .events = POLLIN};
        for (int i = 0; i < p->n; i++) {
            if (p->ch[i].z_pidfd < 0) continue;
            who[k] = i;
            pfd[k++] = (struct pollfd){.fd = p->ch[i].z_pidfd, .events = POLLIN};
        }
        int r = poll(pfd, (nfds_t)k, 1000);
        if (getppid() != p->parent_pid) leave(p);
        if (r <= 0) continue;
        for (int j = 1; j < k; j++)
            if (pfd[j].revents) reap(p, who[j]);
        if (!pfd[0].revents) continue;
        struct cf__zreq q;
        ssize_t got = recv(p->req_rd, &q, sizeof q, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got != (ssize_t)sizeof q) leave(p); /* EOF: the parent is gone */
        switch (q.op) {
        case CF__ZQ_SPAWN: spawn(p, &q, self); break;
        case CF__ZQ_KILL: kill_all(p, q.signo); break;
        case CF__ZQ_EXIT: leave(p);
        default: break;
        }
    }
}
