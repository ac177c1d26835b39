/* cfutures-soak: rounds of mixed thread-pool and process-pool work, each
 * checked for lost futures, double runs and leaks; tools/soak runs it for a
 * duration, ctest runs one small round of it as test_chaos.
 *
 * A round:
 * - thread pool (10^6 x scale futures): plain tasks, slow ones, failing
 *   ones, and nested ones that submit four children from inside the task
 *   and wait on them (result, cf_wait ALL / FIRST_COMPLETED, as_completed);
 *   random cancels right after submit, done callbacks, result() with a tiny
 *   timeout, and each batch waited for another way (result, cf_wait with
 *   each return_when, as_completed).
 * - process pool (10^5 x scale futures): the same mix without nesting, plus
 *   SIGKILL of a worker and of the zygote while a batch is in flight, and
 *   with --hostile a small fraction of tasks that scribble garbage over
 *   every writable shared mapping of their process (except this program's
 *   own counters). A broken pool is replaced by a new one.
 * Checks, every round: every future ends done; every task ran at most once
 * (process tasks count their runs in a MAP_SHARED array made before any
 * pool); a cancelled future's task never ran; a successful future holds its
 * task's value; a failed one fails the way its task did (or, on the process
 * pool, as "broken"); every callback ran exactly once. After the warm-up
 * round, the parent's VmRSS, open fds, mapping count and child processes
 * must stay within a stated slack of the warm-up's figures. One line per
 * round, a summary at the end; exit 0, 1 on any violation, 3 when the
 * watchdog found a round stuck (it prints what is stuck first), 2 on bad
 * usage. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cfutures.h"

#ifdef CF_TSAN
/* Once many threads have allocated, jemalloc's fork handler takes more
 * locks at once than TSan's deadlock detector can track (64), and TSan
 * aborts inside fork(). Lock-order checking is off here; races are still
 * reported. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

/* malloc for the soak's own bookkeeping: running out is a broken run, not
 * something to report as a violation of the library's behaviour. */
static void *soak_alloc(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "cfutures-soak: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

/* ---- options ---- */

struct opts {
    double seconds;       /* run rounds until this much time has passed */
    long rounds;          /* ... or this many rounds (0: no limit) */
    double scale;         /* multiplies the per-round counts */
    bool hostile;         /* process tasks that scribble shared memory */
    bool kills;           /* SIGKILL workers and zygotes */
    int threads, procs;   /* pool sizes (0: the library's default) */
    double round_timeout; /* the watchdog's limit per round, seconds */
    uint64_t seed;
    const char *dump_maps; /* copy /proc/self/maps to PREFIX.<round> */
};
static struct opts O = {
    .seconds = 0, .rounds = 0, .scale = 1, .kills = true, .round_timeout = 0, .seed = 0x50a4};

/* Slack allowed after the warm-up round (also in docs/SOAK.md). */
#define RSS_SLACK_PCT 10
#define RSS_SLACK_KIB (16 * 1024)
#define MAPS_SLACK_PCT 10
#define MAPS_SLACK 16
#define FD_SLACK 2
/* Under a sanitizer, RSS (ASan's quarantine of freed memory, shadow pages)
 * and the mapping count (TSan's shadow) grow on their own: those two are
 * printed, not checked. */
#if defined(CF_ASAN) || defined(CF_TSAN)
#define CHECK_MEMORY 0
#else
#define CHECK_MEMORY 1
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- violations ---- */

static _Atomic long violations;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    long n = atomic_fetch_add_explicit(&violations, 1, memory_order_relaxed);
    if (n >= 50) return; /* counted, not printed */
    va_list ap;
    va_start(ap, fmt);
    fputs("VIOLATION: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

/* ---- the watchdog ---- */

static _Atomic(const char *) wd_stage = "start";
static _Atomic double wd_deadline; /* 0: not armed */
static _Atomic long wd_round;
static cf_future **_Atomic wd_fs; /* the batch being waited for, or NULL */
static _Atomic size_t wd_n;
static _Atomic(const unsigned char *) wd_kinds;

static void wd_watch(const char *stage, cf_future **fs, const unsigned char *kinds, size_t n)
{
    atomic_store_explicit(&wd_n, n, memory_order_relaxed);
    atomic_store_explicit(&wd_kinds, kinds, memory_order_relaxed);
    /* release: the batch's contents are written before the watchdog may
     * read them through this pointer. */
    atomic_store_explicit(&wd_fs, fs, memory_order_release);
    atomic_store_explicit(&wd_stage, stage, memory_order_relaxed);
}

static const char *kind_name(unsigned k);

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        double dl = atomic_load_explicit(&wd_deadline, memory_order_relaxed);
        if (dl == 0 || now_s() < dl) continue;
        /* The main thread is stuck (or the limit is too short: then it may
         * release the batch under us, but we exit right after). */
        printf("WATCHDOG: round %ld is still running after %.1f s, in stage \"%s\"\n",
               atomic_load_explicit(&wd_round, memory_order_relaxed), O.round_timeout,
               atomic_load_explicit(&wd_stage, memory_order_relaxed));
        /* acquire: pairs with wd_watch's release. */
        cf_future **fs = atomic_load_explicit(&wd_fs, memory_order_acquire);
        size_t n = atomic_load_explicit(&wd_n, memory_order_relaxed);
        const unsigned char *kinds = atomic_load_explicit(&wd_kinds, memory_order_relaxed);
        if (fs) {
            size_t stuck = 0;
            for (size_t i = 0; i < n; i++) {
                if (!fs[i] || cf_future_done(fs[i])) continue;
                if (stuck++ < 10)
                    printf("WATCHDOG:   future %zu of the batch (%s task) is %s\n", i,
                           kinds ? kind_name(kinds[i]) : "?",
                           cf_future_running(fs[i]) ? "RUNNING" : "PENDING");
            }
            printf("WATCHDOG:   %zu of %zu futures of the batch are not done\n", stuck, n);
        }
        printf("WATCHDOG: giving up (a hang or a lost future)\n");
        fflush(stdout);
        _exit(3);
    }
    return NULL;
}

/* ---- figures of this process ---- */

struct figures {
    long rss_kib, fds, maps, kids;
};

static long read_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1) break;
    fclose(f);
    return v;
}

static long count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n') n++;
    fclose(f);
    return n;
}

/* The parent pid of process `pid` (from /proc/pid/stat), or -1. */
static long ppid_of(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) return -1;
    buf[k] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces */
    long pp = -1;
    char st;
    if (!p || sscanf(p + 1, " %c %ld", &st, &pp) != 2) return -1;
    return pp;
}

/* Our child processes (zombies included). */
static long count_kids(void)
{
    DIR *d = opendir("/proc");
    if (!d) return -1;
    long me = getpid(), n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        if (ppid_of(strtol(e->d_name, NULL, 10)) == me) n++;
    }
    closedir(d);
    return n;
}

static struct figures measure(void)
{
    return (struct figures){read_rss_kib(), count_dir("/proc/self/fd"),
                            count_lines("/proc/self/maps"), count_kids()};
}

/* ---- tasks and their bookkeeping ---- */

enum kind { K_PLAIN, K_SLOW, K_ERROR, K_NESTED, K_HOSTILE, K_NKINDS };
static const char *kind_name(unsigned k)
{
    static const char *names[] = {"plain", "slow", "error", "nested", "hostile"};
    return k < K_NKINDS ? names[k] : "?";
}

#define TASK_ERR 42   /* what K_ERROR tasks fail with */
#define NESTED_ERR 43 /* a nested task whose children misbehaved */
#define NCHILD 4

struct targ {
    uint32_t id;
    uint16_t kind;
    uint16_t gen; /* process pools: which pool generation runs it */
};
_Static_assert(sizeof(struct targ) == 8, "8-byte argument: the scalar fast path");

static int64_t expect(uint32_t id)
{
    return (int64_t)id * 3 + 1;
}

/* Busy work of a few microseconds, different per id. */
static uint64_t burn(uint32_t id, int n)
{
    uint64_t x = id | 1;
    for (int i = 0; i < n; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

/* Thread tasks count their runs in ordinary memory. */
static _Atomic unsigned char *t_runs, *t_cbs;
static _Atomic uint64_t t_children;
static cf_executor *_Atomic t_pool;

static int child_task(const void *arg, size_t len, cf_out *out)
{
    int64_t j;
    if (len != sizeof j) return 1;
    memcpy(&j, arg, sizeof j);
    atomic_fetch_add_explicit(&t_children, 1, memory_order_relaxed);
    return cf_out_i64(out, j + 1);
}

/* Submit NCHILD children from inside a pool task and wait for them one of
 * four ways (each goes through the worker's helping wait). */
static int nested(uint32_t id)
{
    cf_executor *ex = atomic_load_explicit(&t_pool, memory_order_relaxed);
    cf_future *c[NCHILD];
    for (int64_t j = 0; j < NCHILD; j++)
        if (cf_submit(ex, child_task, &j, sizeof j, &c[j]) != 0) {
            for (int64_t k = 0; k < j; k++) cf_future_release(c[k]);
            return NESTED_ERR;
        }
    int mode = (int)(id % 4), bad = 0;
    if (mode == 1) {
        bad |= cf_wait(c, NCHILD, CF_ALL_COMPLETED, CF_FOREVER, NULL) != 0;
    } else if (mode == 2) {
        cf_future *w[NCHILD];
        memcpy(w, c, sizeof w);
        for (size_t left = NCHILD; left;) {
            size_t nd = 0;
            bad |= cf_wait(w, left, CF_FIRST_COMPLETED, CF_FOREVER, &nd) != 0;
            if (nd == 0) break;
            memmove(w, w + nd, (left - nd) * sizeof *w);
            left -= nd;
        }
    } else if (mode == 3) {
        cf_as_completed *it;
        if (cf_as_completed_new(c, NCHILD, CF_FOREVER, &it) == 0) {
            cf_future *g;
            int got = 0;
            while (cf_as_completed_next(it, &g) == 0) got++;
            bad |= got != NCHILD;
            cf_as_completed_free(it);
        } else {
            bad = 1;
        }
    }
    int64_t sum = 0;
    for (int j = 0; j < NCHILD; j++) {
        int64_t v = 0;
        bad |= cf_future_result_i64(c[j], CF_FOREVER, &v) != 0;
        sum += v;
        cf_future_release(c[j]);
    }
    return bad || sum != NCHILD * (NCHILD + 1) / 2 ? NESTED_ERR : 0;
}

static int thread_task(const void *arg, size_t len, cf_out *out)
{
    struct targ a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    atomic_fetch_add_explicit(&t_runs[a.id], 1, memory_order_relaxed);
    switch (a.kind) {
    case K_SLOW:
        if (burn(a.id, 20000) == 0) return 2;
        break;
    case K_ERROR: return cf_out_error(out, TASK_ERR, "soak: task %u fails on purpose", a.id);
    case K_NESTED: {
        int rc = nested(a.id);
        if (rc) return cf_out_error(out, rc, "soak: nested task %u: children misbehaved", a.id);
        break;
    }
    default: break;
    }
    return cf_out_i64(out, expect(a.id));
}

/* Process tasks count in shared memory mapped before any pool. */
struct shared {
    _Atomic uint64_t pids[64];     /* (generation << 32) | worker pid */
    _Atomic uint64_t zygote;       /* (generation << 32) | zygote pid */
    _Atomic uint64_t hostile_maps; /* mappings scribbled over */
    _Atomic unsigned char runs[];  /* per process-task id */
};
static struct shared *sh;
static size_t sh_bytes;

static void note_pid(uint16_t gen)
{
    uint64_t me = (uint64_t)gen << 32 | (uint32_t)getpid();
    atomic_store_explicit(&sh->pids[(uint32_t)getpid() % 64], me, memory_order_relaxed);
    atomic_store_explicit(&sh->zygote, (uint64_t)gen << 32 | (uint32_t)getppid(),
                          memory_order_relaxed);
}

/* Scribble over every writable shared mapping but ours (--hostile). Raw
 * reads of /proc/self/maps: no stdio, no allocation. */
static void scribble(uint32_t id)
{
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t len = 0;
    ssize_t k;
    while (len < sizeof buf - 1 && (k = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    close(fd);
    buf[len] = '\0';
    uint64_t r = 0x9e3779b97f4a7c15ULL ^ id;
    uintptr_t mine_lo = (uintptr_t)sh, mine_hi = mine_lo + sh_bytes;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[1] == 'w' &&
            perms[3] == 's' && (hi <= mine_lo || lo >= mine_hi)) {
            size_t words = (hi - lo) / 8;
            atomic_fetch_add_explicit(&sh->hostile_maps, 1, memory_order_relaxed);
            if (id % 4 == 0) { /* sometimes all of it */
                for (size_t i = 0; i < words; i++) ((volatile uint64_t *)lo)[i] = rnd(&r);
            } else if (id % 4 == 1) { /* small numbers: they look like states and lengths */
                for (int i = 0; i < 4096; i++)
                    ((volatile uint32_t *)lo)[rnd(&r) % (2 * words)] = (uint32_t)(rnd(&r) % 16);
            } else {
                for (int i = 0; i < 4096; i++) ((volatile uint64_t *)lo)[rnd(&r) % words] = rnd(&r);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
}

static int proc_task(const void *arg, size_t len, cf_out *out)
{
    struct targ a;
    if (len != sizeof a) return 1;
    memcpy(&a, arg, sizeof a);
    note_pid(a.gen);
    atomic_fetch_add_explicit(&sh->runs[a.id], 1, memory_order_relaxed);
    switch (a.kind) {
    case K_SLOW: {
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
        break;
    }
    case K_ERROR: return cf_out_error(out, TASK_ERR, "soak: task %u fails on purpose", a.id);
    case K_HOSTILE: scribble(a.id); break;
    default: break;
    }
    return cf_out_i64(out, expect(a.id));
}

/* ---- per-round state and counts ---- */

struct counts {
    uint64_t submitted, ok, cancelled, task_err, broken, timeouts, children, callbacks;
    uint64_t pools, worker_kills, zygote_kills, hostile, hostile_maps;
};

static size_t n_thread, n_proc; /* futures per round */
static unsigned char *t_kind, *t_cb_added;
static unsigned char *p_kind, *p_cb_added;
static _Atomic unsigned char *p_cbs;

static void on_done_thread(cf_future *f, void *ud)
{
    (void)f;
    atomic_fetch_add_explicit(&t_cbs[(uintptr_t)ud], 1, memory_order_relaxed);
}

static void on_done_proc(cf_future *f, void *ud)
{
    (void)f;
    atomic_fetch_add_explicit(&p_cbs[(uintptr_t)ud], 1, memory_order_relaxed);
}

/* Wait for a whole batch one of several ways; every way ends with every
 * future done (the watchdog guards a hang). NULL entries (failed submits)
 * are skipped. */
static void wait_batch(cf_future **all, size_t n_all, unsigned way, struct counts *c, uint64_t *rs)
{
    cf_future **fs = soak_alloc(2 * n_all * sizeof *fs), **tmp = fs + n_all;
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++)
        if (all[i]) fs[n++] = all[i];
    memcpy(tmp, fs, n * sizeof *tmp);
    size_t nd = 0;
    switch (way % 5) {
    case 0: /* result(), some with a tiny timeout first */
        for (size_t i = 0; i < n; i++) {
            if (rnd(rs) % 16 == 0 && cf_future_result(fs[i], 1e-5, NULL, NULL) == CF_ETIMEDOUT)
                c->timeouts++;
            (void)cf_future_result(fs[i], CF_FOREVER, NULL, NULL);
        }
        break;
    case 1: /* FIRST_COMPLETED, then the rest */
        if (cf_wait(tmp, n, CF_FIRST_COMPLETED, 10, &nd) != 0)
            violation("cf_wait(FIRST_COMPLETED) failed");
        else if (nd == 0) c->timeouts++;
        if (cf_wait(tmp, n, CF_ALL_COMPLETED, CF_FOREVER, &nd) != 0 || nd != n)
            violation("cf_wait(ALL_COMPLETED) returned with %zu of %zu done", nd, n);
        break;
    case 2: /* FIRST_EXCEPTION with a short timeout, then the rest */
        if (cf_wait(tmp, n, CF_FIRST_EXCEPTION, 1e-4, &nd) != 0)
            violation("cf_wait(FIRST_EXCEPTION) failed");
        else if (nd < n) c->timeouts++;
        if (cf_wait(tmp, n, CF_ALL_COMPLETED, CF_FOREVER, &nd) != 0 || nd != n)
            violation("cf_wait(ALL_COMPLETED) returned with %zu of %zu done", nd, n);
        break;
    default: { /* as_completed, once with a timeout that may pass */
        cf_as_completed *it;
        double to = way % 5 == 3 ? CF_FOREVER : 1e-4;
        if (cf_as_completed_new(fs, n, to, &it) != 0) {
            violation("cf_as_completed_new failed");
            break;
        }
        size_t got = 0;
        cf_future *g;
        int rc;
        while ((rc = cf_as_completed_next(it, &g)) == 0) {
            if (!cf_future_done(g)) violation("as_completed yielded a future that is not done");
            got++;
        }
        if (rc == CF_ETIMEDOUT) {
            c->timeouts++;
            if (got + cf_as_completed_remaining(it) != n)
                violation("as_completed: %zu yielded + %zu remaining != %zu", got,
                          cf_as_completed_remaining(it), n);
            (void)cf_wait(tmp, n, CF_ALL_COMPLETED, CF_FOREVER, NULL);
        } else if (rc != CF_END || got != n) {
            violation("as_completed yielded %zu of %zu (rc %d)", got, n, rc);
        }
        cf_as_completed_free(it);
        break;
    }
    }
    free(fs);
}

/* The outcome of one finished future against what its task does. */
static void check_one(cf_future *f, uint32_t id, unsigned kind, unsigned runs, bool process,
                      struct counts *c)
{
    const char *pool = process ? "process" : "thread";
    if (!cf_future_done(f)) {
        violation("%s future %u (%s) is not done after its batch was waited for", pool, id,
                  kind_name(kind));
        return;
    }
    if (runs > 1) violation("%s task %u (%s) ran %u times", pool, id, kind_name(kind), runs);
    int64_t v = 0;
    int rc = cf_future_result_i64(f, CF_POLL, &v);
    int code = 0;
    const char *msg = NULL;
    switch (rc) {
    case 0:
        c->ok++;
        if (kind == K_HOSTILE) break; /* it may have scribbled its own result */
        if (kind == K_ERROR) violation("%s task %u should have failed but succeeded", pool, id);
        else if (v != expect(id))
            violation("%s future %u (%s) holds %" PRId64 ", not %" PRId64, pool, id,
                      kind_name(kind), v, expect(id));
        if (runs != 1)
            violation("%s future %u succeeded but its task ran %u times", pool, id, runs);
        break;
    case CF_ECANCELLED:
        c->cancelled++;
        if (runs != 0) violation("%s future %u was cancelled but its task ran", pool, id);
        break;
    case CF_ETASK:
        c->task_err++;
        (void)cf_future_exception(f, CF_POLL, &code, &msg);
        if (kind == K_HOSTILE) break;
        if (kind == K_NESTED && code == NESTED_ERR)
            violation("thread task %u: %s", id, msg ? msg : "(no message)");
        else if (kind != K_ERROR || code != TASK_ERR || !msg || !strstr(msg, "on purpose"))
            violation("%s future %u (%s) failed with code %d \"%s\"", pool, id, kind_name(kind),
                      code, msg ? msg : "");
        break;
    case CF_EBROKEN:
        c->broken++;
        if (!process) violation("thread future %u is broken", id);
        break;
    default: violation("%s future %u: result() returned %d", pool, id, rc);
    }
}

/* ---- the thread-pool part ---- */

static void thread_part(struct counts *c, uint64_t *rs)
{
    memset((void *)t_runs, 0, n_thread);
    memset((void *)t_cbs, 0, n_thread);
    memset(t_cb_added, 0, n_thread);
    atomic_store_explicit(&t_children, 0, memory_order_relaxed);
    int err = 0;
    cf_executor *ex;
    err = cf_thread_pool_new(&ex, &(cf_thread_pool_opts){.max_workers = O.threads});
    if (!ex) {
        violation("cf_thread_pool_new failed (%d)", err);
        return;
    }
    atomic_store_explicit(&t_pool, ex, memory_order_relaxed);
    size_t batch = n_thread < 20000 ? (n_thread + 9) / 10 : 2000;
    cf_future **fs = soak_alloc(batch * sizeof *fs);
    uint64_t nested_ok = 0;
    for (size_t base = 0, b = 0; base < n_thread; base += batch, b++) {
        size_t n = n_thread - base < batch ? n_thread - base : batch;
        atomic_store_explicit(&wd_stage, "thread pool: submitting", memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
            uint32_t id = (uint32_t)(base + i);
            uint64_t r = rnd(rs) % 100;
            unsigned kind = r < 88 ? K_PLAIN : r < 91 ? K_SLOW : r < 96 ? K_ERROR : K_NESTED;
            t_kind[id] = (unsigned char)kind;
            struct targ a = {id, (uint16_t)kind, 0};
            int rc = cf_submit(ex, thread_task, &a, sizeof a, &fs[i]);
            if (rc) {
                violation("thread submit failed: %d", rc);
                fs[i] = NULL;
                continue;
            }
            c->submitted++;
            uint64_t q = rnd(rs) % 100;
            if (q < 10) {
                if (cf_future_add_done_callback(fs[i], on_done_thread, (void *)(uintptr_t)id) == 0)
                    t_cb_added[id] = 1;
                else violation("add_done_callback failed");
            }
            if (q >= 5 && q < 15) (void)cf_future_cancel(fs[i]);
        }
        wd_watch("thread pool: waiting for a batch", fs, t_kind + base, n);
        wait_batch(fs, n, (unsigned)b, c, rs);
        wd_watch("thread pool: checking a batch", NULL, NULL, 0);
        for (size_t i = 0; i < n; i++) {
            if (!fs[i]) continue;
            uint32_t id = (uint32_t)(base + i);
            unsigned runs = atomic_load_explicit(&t_runs[id], memory_order_relaxed);
            check_one(fs[i], id, t_kind[id], runs, false, c);
            if (t_kind[id] == K_NESTED && runs == 1) nested_ok++;
            cf_future_release(fs[i]);
        }
    }
    free(fs);
    atomic_store_explicit(&wd_stage, "thread pool: shutdown", memory_order_relaxed);
    cf_executor_free(ex); /* joins the workers: every callback has run */
    atomic_store_explicit(&t_pool, NULL, memory_order_relaxed);
    uint64_t kids = atomic_load_explicit(&t_children, memory_order_relaxed);
    c->children += kids;
    if (kids != nested_ok * NCHILD)
        violation("nested tasks: %" PRIu64 " children ran, expected %" PRIu64, kids,
                  nested_ok * NCHILD);
    for (size_t id = 0; id < n_thread; id++) {
        unsigned got = atomic_load_explicit(&t_cbs[id], memory_order_relaxed);
        if (got != t_cb_added[id])
            violation("thread future %zu: callback ran %u times (registered %u)", id, got,
                      t_cb_added[id]);
        c->callbacks += got;
    }
}

/* ---- the process-pool part ---- */

static uint16_t p_gen;

static cf_executor *new_proc_pool(struct counts *c)
{
    int err = 0;
    /* Workers note the zygote and their pids per generation: a stale
     * record from an older pool is never a target. */
    p_gen++;
    cf_executor *ex;
    err = cf_process_pool_new(&ex, &(cf_process_pool_opts){.max_workers = O.procs});
    if (!ex) violation("cf_process_pool_new failed (%d)", err);
    else c->pools++;
    return ex;
}

/* SIGKILL a worker (or the zygote) of the current pool generation, if one
 * has been seen. The pid is checked to still be our zygote's child (or our
 * child, for the zygote) after a pidfd pins it, so a reused pid is never
 * signalled. */
static bool kill_one(bool zygote, uint64_t *rs)
{
    long me = getpid(), zpid = -1, target = -1;
    uint64_t z = atomic_load_explicit(&sh->zygote, memory_order_relaxed);
    if ((uint16_t)(z >> 32) == p_gen) zpid = (long)(uint32_t)z;
    if (zpid <= 0) return false;
    if (zygote) {
        target = zpid;
    } else {
        unsigned start = (unsigned)(rnd(rs) % 64);
        for (unsigned k = 0; k < 64 && target < 0; k++) {
            uint64_t w = atomic_load_explicit(&sh->pids[(start + k) % 64], memory_order_relaxed);
            if ((uint16_t)(w >> 32) == p_gen) target = (long)(uint32_t)w;
        }
    }
    if (target <= 0) return false;
    int pfd = (int)syscall(SYS_pidfd_open, (pid_t)target, 0);
    if (pfd < 0) return false;
    bool ok = zygote ? ppid_of(target) == me : ppid_of(target) == zpid && ppid_of(zpid) == me;
    if (ok) ok = syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0) == 0;
    close(pfd);
    return ok;
}

static void proc_part(struct counts *c, uint64_t *rs)
{
    memset((void *)sh->runs, 0, n_proc);
    atomic_store_explicit(&sh->hostile_maps, 0, memory_order_relaxed);
    memset((void *)p_cbs, 0, n_proc);
    memset(p_cb_added, 0, n_proc);
    cf_executor *ex = new_proc_pool(c);
    if (!ex) return;
    size_t batch = n_proc < 10000 ? (n_proc + 9) / 10 : 1000;
    cf_future **fs = soak_alloc(batch * sizeof *fs);
    for (size_t base = 0, b = 0; base < n_proc; base += batch, b++) {
        size_t n = n_proc - base < batch ? n_proc - base : batch;
        atomic_store_explicit(&wd_stage, "process pool: submitting", memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
            uint32_t id = (uint32_t)(base + i);
            uint64_t r = rnd(rs) % 10000;
            unsigned kind = r < 8800 ? K_PLAIN : r < 9300 ? K_SLOW : r < 9800 ? K_ERROR : K_PLAIN;
            /* 0.05%, and at least one in every third batch */
            if (O.hostile && ((r >= 9800 && r < 9805) || (i == n / 2 && b % 3 == 1)))
                kind = K_HOSTILE;
            p_kind[id] = (unsigned char)kind;
            struct targ a = {id, (uint16_t)kind, p_gen};
            int rc;
            fs[i] = NULL;
            for (int tries = 0; tries < 3; tries++) {
                a.gen = p_gen;
                rc = ex ? cf_submit(ex, proc_task, &a, sizeof a, &fs[i]) : CF_EBROKEN;
                if (rc != CF_EBROKEN) break;
                /* Broken by a kill or a hostile task: replace the pool. */
                atomic_store_explicit(&wd_stage, "process pool: replacing a broken pool",
                                      memory_order_relaxed);
                cf_executor_free(ex);
                ex = new_proc_pool(c);
                atomic_store_explicit(&wd_stage, "process pool: submitting", memory_order_relaxed);
            }
            if (rc) {
                violation("process submit failed: %d", rc);
                fs[i] = NULL;
                continue;
            }
            c->submitted++;
            if (kind == K_HOSTILE) c->hostile++;
            uint64_t q = rnd(rs) % 100;
            if (q < 10) {
                if (cf_future_add_done_callback(fs[i], on_done_proc, (void *)(uintptr_t)id) == 0)
                    p_cb_added[id] = 1;
                else violation("add_done_callback failed");
            }
            if (q >= 5 && q < 15) (void)cf_future_cancel(fs[i]);
        }
        /* Kills while the batch is in flight. */
        if (O.kills && b % 10 == 3 && kill_one(false, rs)) c->worker_kills++;
        if (O.kills && b % 10 == 7 && (b / 10) % 3 == 0 && kill_one(true, rs)) c->zygote_kills++;
        wd_watch("process pool: waiting for a batch", fs, p_kind + base, n);
        wait_batch(fs, n, (unsigned)b, c, rs);
        wd_watch("process pool: checking a batch", NULL, NULL, 0);
        for (size_t i = 0; i < n; i++) {
            if (!fs[i]) continue;
            uint32_t id = (uint32_t)(base + i);
            unsigned runs = atomic_load_explicit(&sh->runs[id], memory_order_relaxed);
            check_one(fs[i], id, p_kind[id], runs, true, c);
            cf_future_release(fs[i]);
        }
    }
    free(fs);
    atomic_store_explicit(&wd_stage, "process pool: shutdown", memory_order_relaxed);
    cf_executor_free(ex); /* the collector has run every callback */
    c->hostile_maps = atomic_load_explicit(&sh->hostile_maps, memory_order_relaxed);
    for (size_t id = 0; id < n_proc; id++) {
        unsigned got = atomic_load_explicit(&p_cbs[id], memory_order_relaxed);
        if (got != p_cb_added[id])
            violation("process future %zu: callback ran %u times (registered %u)", id, got,
                      p_cb_added[id]);
        c->callbacks += got;
    }
}

/* --dump-maps: a copy of our mappings after each round, to see what grew. */
static void dump_maps(long round)
{
    char path[4096], line[512];
    snprintf(path, sizeof path, "%s.%ld", O.dump_maps, round);
    FILE *in = fopen("/proc/self/maps", "r"), *out = fopen(path, "w");
    while (in && out && fgets(line, sizeof line, in)) fputs(line, out);
    if (in) fclose(in);
    if (out) fclose(out);
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(
        stderr,
        "usage: cfutures-soak [--seconds N | --minutes N] [--rounds N] [--scale X] [--hostile]\n"
        "                     [--no-kill] [--threads N] [--procs N] [--round-timeout S] [--seed "
        "N]\n"
        "                     [--dump-maps PREFIX]\n"
        "A round: 10^6 x scale thread-pool futures and 10^5 x scale process-pool futures\n"
        "(CFUTURES_STRESS_SCALE multiplies the scale). Without --seconds/--minutes/--rounds:\n"
        "one warm-up round and one checked round.\n");
    exit(2);
}

static double num_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) usage();
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || v < 0) usage();
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--seconds")) O.seconds = num_arg(argc, argv, &i);
        else if (!strcmp(a, "--minutes")) O.seconds = 60 * num_arg(argc, argv, &i);
        else if (!strcmp(a, "--rounds")) O.rounds = (long)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--scale")) O.scale = num_arg(argc, argv, &i);
        else if (!strcmp(a, "--hostile")) O.hostile = true;
        else if (!strcmp(a, "--no-kill")) O.kills = false;
        else if (!strcmp(a, "--threads")) O.threads = (int)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--procs")) O.procs = (int)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--round-timeout")) O.round_timeout = num_arg(argc, argv, &i);
        else if (!strcmp(a, "--seed")) O.seed = (uint64_t)num_arg(argc, argv, &i);
        else if (!strcmp(a, "--dump-maps") && i + 1 < argc) O.dump_maps = argv[++i];
        else usage();
    }
    const char *env = getenv("CFUTURES_STRESS_SCALE");
    double env_scale = env && *env ? strtod(env, NULL) : 1;
    if (env_scale > 0) O.scale *= env_scale;
    if (O.seconds == 0 && O.rounds == 0) O.rounds = 2;
    n_thread = (size_t)(1e6 * O.scale);
    n_proc = (size_t)(1e5 * O.scale);
    if (n_thread < 100) n_thread = 100;
    if (n_proc < 50) n_proc = 50;
    if (O.round_timeout == 0) O.round_timeout = 60 + 120 * O.scale;

    /* Before any pool: the shared counters every worker inherits. */
    sh_bytes = (sizeof(struct shared) + n_proc + 4095) & ~(size_t)4095;
    sh = mmap(NULL, sh_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    t_runs = calloc(n_thread, 1);
    t_cbs = calloc(n_thread, 1);
    t_kind = calloc(n_thread, 1);
    t_cb_added = calloc(n_thread, 1);
    p_cbs = calloc(n_proc, 1);
    p_kind = calloc(n_proc, 1);
    p_cb_added = calloc(n_proc, 1);
    if (!t_runs || !t_cbs || !t_kind || !t_cb_added || !p_cbs || !p_kind || !p_cb_added) {
        fprintf(stderr, "cfutures-soak: out of memory\n");
        return 2;
    }
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    pthread_detach(wd);

    printf("cfutures-soak: %zu thread-pool + %zu process-pool futures per round, %s%s, "
           "round limit %.0f s, seed %" PRIu64 "\n",
           n_thread, n_proc, O.hostile ? "hostile tasks, " : "", O.kills ? "kills" : "no kills",
           O.round_timeout, O.seed);
    printf("slack after the warm-up round: RSS +%d%% +%d MiB, fds +%d, maps +%d%% +%d, children "
           "+0%s\n",
           RSS_SLACK_PCT, RSS_SLACK_KIB / 1024, FD_SLACK, MAPS_SLACK_PCT, MAPS_SLACK,
           CHECK_MEMORY ? "" : " (sanitizer build: RSS and maps not checked)");
    fflush(stdout);

    uint64_t rs = O.seed | 1;
    double t0 = now_s();
    struct figures base = {0}, lo = {0}, hi = {0};
    uint64_t total = 0;
    long round = 0;
    bool leak = false;
    for (;;) {
        if (O.rounds && round >= O.rounds) break;
        if (O.seconds && round > 0 && now_s() - t0 >= O.seconds) break;
        round++;
        atomic_store_explicit(&wd_round, round, memory_order_relaxed);
        atomic_store_explicit(&wd_deadline, now_s() + O.round_timeout, memory_order_relaxed);
        double rt = now_s();
        struct counts tc = {0}, pc = {0};
        thread_part(&tc, &rs);
        proc_part(&pc, &rs);
        atomic_store_explicit(&wd_stage, "measuring", memory_order_relaxed);
        atomic_store_explicit(&wd_deadline, 0, memory_order_relaxed);
        double secs = now_s() - rt;
        struct figures fg = measure();
        if (O.dump_maps) dump_maps(round);
        uint64_t futs = tc.submitted + tc.children + pc.submitted;
        total += futs;
        printf("round %ld: %.1f s, %.0f futures/s | threads: %" PRIu64 " (+%" PRIu64
               " nested) ok %" PRIu64 " cancelled %" PRIu64 " failed %" PRIu64 " timeouts %" PRIu64
               " callbacks %" PRIu64 " | processes: %" PRIu64 " ok %" PRIu64 " cancelled %" PRIu64
               " failed %" PRIu64 " broken %" PRIu64 " timeouts %" PRIu64 " callbacks %" PRIu64
               " pools %" PRIu64 " kills %" PRIu64 "+%" PRIu64 "z hostile %" PRIu64 " (%" PRIu64
               " maps)"
               " | rss %.1f MiB fds %ld maps %ld children %ld%s\n",
               round, secs, (double)futs / secs, tc.submitted, tc.children, tc.ok, tc.cancelled,
               tc.task_err, tc.timeouts, tc.callbacks, pc.submitted, pc.ok, pc.cancelled,
               pc.task_err, pc.broken, pc.timeouts, pc.callbacks, pc.pools, pc.worker_kills,
               pc.zygote_kills, pc.hostile, pc.hostile_maps, (double)fg.rss_kib / 1024, fg.fds,
               fg.maps, fg.kids, round == 1 ? " (warm-up)" : "");
        if (round == 1) {
            base = lo = hi = fg;
        } else {
            if (fg.rss_kib < lo.rss_kib) lo.rss_kib = fg.rss_kib;
            if (fg.rss_kib > hi.rss_kib) hi.rss_kib = fg.rss_kib;
            if (fg.fds > hi.fds) hi.fds = fg.fds;
            if (fg.maps > hi.maps) hi.maps = fg.maps;
            if (fg.kids > hi.kids) hi.kids = fg.kids;
            if (CHECK_MEMORY &&
                fg.rss_kib > base.rss_kib + base.rss_kib * RSS_SLACK_PCT / 100 + RSS_SLACK_KIB) {
                violation("RSS grew: %ld KiB after the warm-up, %ld KiB now", base.rss_kib,
                          fg.rss_kib);
                leak = true;
            }
            if (fg.fds > base.fds + FD_SLACK) {
                violation("open fds grew: %ld after the warm-up, %ld now", base.fds, fg.fds);
                leak = true;
            }
            if (CHECK_MEMORY &&
                fg.maps > base.maps + base.maps * MAPS_SLACK_PCT / 100 + MAPS_SLACK) {
                violation("mappings grew: %ld after the warm-up, %ld now", base.maps, fg.maps);
                leak = true;
            }
            if (fg.kids > base.kids) {
                violation("child processes: %ld after the warm-up, %ld now", base.kids, fg.kids);
                leak = true;
            }
        }
        fflush(stdout);
    }
    double all = now_s() - t0;
    long v = atomic_load_explicit(&violations, memory_order_relaxed);
    printf("summary: %ld rounds in %.1f s, %" PRIu64
           " futures, %.0f futures/s; rss %.1f MiB after the "
           "warm-up, %.1f..%.1f MiB after; fds %ld..%ld, maps %ld..%ld, children %ld..%ld; "
           "%ld violation%s%s\n",
           round, all, total, (double)total / all, (double)base.rss_kib / 1024,
           (double)(round > 1 ? lo.rss_kib : base.rss_kib) / 1024, (double)hi.rss_kib / 1024,
           base.fds, hi.fds, base.maps, hi.maps, base.kids, hi.kids, v, v == 1 ? "" : "s",
           leak ? " (growth)" : "");
    return v ? 1 : 0;
}
