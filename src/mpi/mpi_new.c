/* cf_mpi_executor_new: the collective constructor. Every rank checks what
 * it can alone (MPI initialised, the thread level, the options) and the
 * ranks agree on the outcome with one MPI_Allreduce before anything else,
 * so a rank that cannot go on never leaves the others waiting in a
 * collective. Then the root sends its module table and settings, each
 * serving rank makes its pool and answers with its worker count and the
 * modules it has, and the root says go or stop. */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cfutures/mpi.h"
#include "core/executor.h"
#include "mpi/mpi_exec.h"
#include "mpi/mpi_io.h"

#define DEFAULT_WINDOW 64
#define DEFAULT_CHUNK ((size_t)16 << 20)

/* ---- options: code, then CFUTURES_MPI_*, then the default ---- */

/* A strict whole number in [lo, hi] from the environment: 0 and *v set,
 * 1 if the variable is unset or empty, CF_EINVAL if it is malformed. */
static int env_num(const char *name, long long lo, long long hi, long long *v)
{
    const char *s = getenv(name);
    if (!s || !*s) return 1;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end || x < lo || x > hi) return CF_EINVAL;
    *v = x;
    return 0;
}

static int resolve_opts(const cf_mpi_opts *opts, struct cf__mpi_setup *s)
{
    cf_mpi_opts o = opts ? *opts : (cf_mpi_opts)CF_MPI_OPTS_INIT;
    for (size_t i = 0; i < sizeof o.reserved / sizeof o.reserved[0]; i++)
        if (o.reserved[i]) return CF_EINVAL;
    if (o.window < 0 || o.threads < 0 || o.chunk_bytes > INT_MAX) return CF_EINVAL;
    long long v;
    int rc;
    s->window = o.window;
    if (!s->window) {
        if ((rc = env_num("CFUTURES_MPI_WINDOW", 1, 1 << 20, &v)) < 0) return rc;
        s->window = rc == 0 ? (int)v : DEFAULT_WINDOW;
    }
    s->threads = o.threads;
    if (!s->threads) {
        if ((rc = env_num("CFUTURES_MPI_THREADS", 0, 4096, &v)) < 0) return rc;
        s->threads = rc == 0 ? (int)v : 0;
    }
    s->chunk = o.chunk_bytes;
    if (!s->chunk) {
        if ((rc = env_num("CFUTURES_MPI_CHUNK", 1, INT_MAX, &v)) < 0) return rc;
        s->chunk = rc == 0 ? (size_t)v : DEFAULT_CHUNK;
    }
    return 0;
}

/* ---- cf_map's chunk task ----
 * A cf_map over an executor without shared memory submits copy-mode chunk
 * tasks: a function of libcfutures and an argument that starts with a
 * header holding the item function's address. Over MPI that address must
 * be renamed like any task function. The probe finds both, once, by
 * running a one-item cf_map on an executor whose submit only records what
 * it is given: the chunk function, and where in its argument the item
 * function's address sits. Every rank runs the same build, so every rank
 * finds the same. */

static cf_task_fn *probe_fn;
static size_t probe_at;

static int probe_item(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    (void)out;
    return 0;
}

static int probe_submit(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t len,
                        cf_future **out)
{
    (void)ex;
    (void)out;
    cf_task_fn *item = probe_item;
    probe_fn = fn;
    for (size_t at = 0; at + sizeof item <= len; at += sizeof item) {
        if (memcmp((const unsigned char *)arg + at, &item, sizeof item) == 0) {
            probe_at = at;
            break;
        }
    }
    return CF_ENOTSUP; /* cf_map gives up and frees everything */
}
static int probe_shutdown(cf_executor *ex, bool wait, bool cancel)
{
    (void)ex;
    (void)wait;
    (void)cancel;
    return 0;
}
static void probe_destroy(cf_executor *ex)
{
    (void)ex;
}
static int probe_workers(const cf_executor *ex)
{
    (void)ex;
    return 1;
}
static int probe_stats(const cf_executor *ex, cf_worker_stats *out, size_t cap, size_t *n)
{
    (void)ex;
    (void)out;
    (void)cap;
    *n = 0;
    return 0;
}
static const struct cf__executor_ops probe_ops = {.submit = probe_submit,
                                                  .shutdown = probe_shutdown,
                                                  .destroy = probe_destroy,
                                                  .workers = probe_workers,
                                                  .stats = probe_stats};

static void find_map_chunk(struct cf__mpi_setup *s)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    struct cf_executor probe = {.ops = &probe_ops, .caps = 0};
    probe_fn = NULL;
    probe_at = SIZE_MAX;
    int64_t item = 0;
    cf_map_iter *it = NULL;
    if (cf_map(&probe, probe_item, &item, sizeof item, 1, NULL, &it) == 0) cf_map_free(it);
    s->map_fn = probe_fn;
    s->map_fn_at = probe_at;
    pthread_mutex_unlock(&mu);
}

/* ---- the collective ---- */

static int agree(MPI_Comm comm, int rc)
{
    int all = rc;
    if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) return CF_EBROKEN;
    return all;
}

/* Root: send settings and modules; gather the serving ranks' answers. */
/* How many ranks of our communicator share this node (collective). */
static int ranks_on_node(MPI_Comm comm)
{
    MPI_Comm node;
    int n = 1;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return 1;
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    return n;
}

static int setup_root(struct cf__mpi_setup *s, struct cf__mpi_modules *mods, int *workers)
{
    int rc = cf__mpi_modules_scan(mods);
    size_t len = 0;
    unsigned char *packed = rc ? NULL : cf__mpi_modules_pack(mods, &len);
    if (!rc && !packed) rc = CF_ENOMEM;
    unsigned long long hdr[4] = {(unsigned long long)s->window, (unsigned long long)s->threads,
                                 s->chunk, rc ? 0 : len};
    if (rc) hdr[0] = 0; /* tells the serving ranks to stop */
    if (MPI_Bcast(hdr, 4, MPI_UNSIGNED_LONG_LONG, s->root, s->comm) != MPI_SUCCESS) rc = CF_EBROKEN;
    if (rc) {
        free(packed);
        return rc;
    }
    if (len && MPI_Bcast(packed, (int)len, MPI_BYTE, s->root, s->comm) != MPI_SUCCESS)
        rc = CF_EBROKEN;
    free(packed);
    (void)ranks_on_node(s->comm); /* the serving ranks' collective (placement) */
    size_t per = sizeof(int) + mods->n;
    unsigned char *mine = calloc(1, per), *all = calloc((size_t)s->size, per);
    if (!mine || !all) rc = rc ? rc : CF_ENOMEM;
    /* The gather happens even after a failure: the serving ranks are in it. */
    unsigned char dummy[sizeof(int) + 1] = {0};
    if (MPI_Gather(mine ? mine : dummy, (int)per, MPI_BYTE, all, (int)per, MPI_BYTE, s->root,
                   s->comm) != MPI_SUCCESS)
        rc = CF_EBROKEN;
    if (!rc) {
        for (size_t i = 0; i < mods->n; i++) mods->everywhere[i] = true;
        for (int r = 0; r < s->size; r++) {
            workers[r] = 0;
            if (r == s->root) continue;
            int w;
            memcpy(&w, all + (size_t)r * per, sizeof w);
            if (w < 0) rc = CF_EBROKEN; /* its pool could not start */
            workers[r] = w > 0 ? w : 0;
            for (size_t i = 0; i < mods->n; i++)
                if (!all[(size_t)r * per + sizeof(int) + i]) mods->everywhere[i] = false;
        }
    }
    free(mine);
    free(all);
    return rc;
}

/* A serving rank: take the settings and modules, make the pool, answer. */
static int setup_serving(struct cf__mpi_setup *s, cf_executor **pool, uintptr_t **biases,
                         size_t *n_biases)
{
    unsigned long long hdr[4];
    if (MPI_Bcast(hdr, 4, MPI_UNSIGNED_LONG_LONG, s->root, s->comm) != MPI_SUCCESS)
        return CF_EBROKEN;
    if (hdr[0] == 0) return CF_EBROKEN; /* the root failed */
    s->window = (int)hdr[0];
    s->threads = (int)hdr[1];
    s->chunk = (size_t)hdr[2];
    size_t len = (size_t)hdr[3];
    unsigned char *packed = malloc(len ? len : 1);
    int rc = 0;
    /* Every step below still takes part in the collectives that follow. */
    if (!packed) rc = CF_ENOMEM;
    if (len &&
        MPI_Bcast(packed ? packed : NULL, (int)len, MPI_BYTE, s->root, s->comm) != MPI_SUCCESS)
        rc = CF_EBROKEN;
    struct cf__mpi_modules local = {0};
    *biases = NULL;
    *n_biases = 0;
    if (!rc) rc = cf__mpi_modules_scan(&local);
    if (!rc) rc = cf__mpi_modules_match(&local, packed, len, biases, n_biases);
    cf__mpi_modules_free(&local);
    free(packed);
    cf_thread_pool_opts po = CF_THREAD_POOL_OPTS_INIT;
    po.max_workers = s->threads;
    po.thread_name_prefix = "cf-mpi";
    /* Several ranks on one node would each pin their workers to the same
     * first cores: leave the placement of their threads to the kernel. */
    if (ranks_on_node(s->comm) > 1) po.pin = CF_PIN_NONE;
    *pool = NULL;
    if (!rc) rc = cf_thread_pool_new(pool, &po);
    size_t per = sizeof(int) + *n_biases;
    unsigned char *mine = calloc(1, per);
    int w = rc ? -1 : cf_executor_workers(*pool);
    if (mine) {
        memcpy(mine, &w, sizeof w);
        for (size_t i = 0; i < *n_biases; i++) mine[sizeof(int) + i] = (*biases)[i] != 0;
    }
    if (MPI_Gather(mine, (int)per, MPI_BYTE, NULL, 0, MPI_BYTE, s->root, s->comm) != MPI_SUCCESS)
        rc = CF_EBROKEN;
    free(mine);
    return rc;
}

CF_API int cf_mpi_executor_new(cf_executor **out, MPI_Comm comm, int root, const cf_mpi_opts *opts)
{
    if (out) *out = NULL;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized) return CF_ENOTSUP; /* no collective is possible */
    if (comm == MPI_COMM_NULL) return CF_EINVAL;
    struct cf__mpi_setup s = {.root = root};
    if (MPI_Comm_size(comm, &s.size) != MPI_SUCCESS || MPI_Comm_rank(comm, &s.rank) != MPI_SUCCESS)
        return CF_EINVAL;
    /* Checks each rank makes alone, agreed on before anything else. */
    int rc = 0, provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (provided < CF_MPI_THREAD_LEVEL) rc = CF_ENOTSUP;
    else if (root < 0 || root >= s.size || s.size < 2 || (s.rank == root && !out)) rc = CF_EINVAL;
    else rc = resolve_opts(opts, &s);
    if (MPI_Comm_dup(comm, &s.comm) != MPI_SUCCESS) return CF_EBROKEN;
    /* Errors come back as codes: the progress thread turns them into
     * broken futures instead of the default abort of the whole job. */
    MPI_Comm_set_errhandler(s.comm, MPI_ERRORS_RETURN);
    rc = agree(s.comm, rc);
    if (rc) {
        MPI_Comm_free(&s.comm);
        return rc;
    }
    find_map_chunk(&s);

    if (s.rank == root) {
        struct cf__mpi_modules mods = {0};
        int *workers = calloc((size_t)s.size, sizeof *workers);
        rc = workers ? 0 : CF_ENOMEM;
        int r2 = setup_root(&s, &mods, workers ? workers : &(int){0});
        if (!rc) rc = r2;
        /* Go or stop, for everyone. */
        int go = rc;
        if (MPI_Bcast(&go, 1, MPI_INT, root, s.comm) != MPI_SUCCESS && !rc) rc = CF_EBROKEN;
        if (!rc) rc = cf__mpi_root_new(out, &s, &mods, workers);
        free(workers);
        if (rc) {
            if (go == 0) {
                /* The serving ranks are serving already: stop them. */
                struct cf__mpi_rec rec = {.kind = CF__MPI_SHUTDOWN};
                for (int r = 0; r < s.size; r++)
                    if (r != root)
                        MPI_Send(&rec, sizeof rec, MPI_BYTE, r, CF__MPI_TAG_BATCH, s.comm);
            }
            cf__mpi_modules_free(&mods);
            MPI_Comm_free(&s.comm);
        }
        return rc;
    }

    cf_executor *pool = NULL;
    uintptr_t *biases = NULL;
    size_t n_biases = 0;
    rc = setup_serving(&s, &pool, &biases, &n_biases);
    int go = 0;
    bool comm_ok = MPI_Bcast(&go, 1, MPI_INT, root, s.comm) == MPI_SUCCESS;
    if (!comm_ok) rc = CF_EBROKEN;
    else if (!rc && go == 0) rc = cf__mpi_serve(&s, pool, biases, n_biases);
    else if (!rc) rc = go;
    cf_executor_free(pool);
    free(biases);
    /* After an MPI failure the communicator is left alone: freeing it is
     * collective and could wait for the rank that failed. */
    if (comm_ok && rc != CF_EBROKEN) MPI_Comm_free(&s.comm);
    return rc;
}
