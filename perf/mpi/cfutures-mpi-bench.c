/* cfutures-mpi-bench: the MPI workloads, run as `mpirun -n 3
 * cfutures-mpi-bench` (root + 2 serving ranks), each beside a hand-written
 * master/worker over plain MPI_Send/MPI_Recv with a credit window of 64
 * per worker (the floor MPI itself sets), in the same run:
 *   mpi_submit    N tasks, 64-byte argument -> 64-byte result derived from
 *                 it (checked); ns_per_task
 *   mpi_pingpong  one empty task, wait, M times; p50_ns, p99_ns
 *   mpi_primes    the seed's is_prime over its six numbers with cf_map,
 *                 one item per chunk, one worker thread per serving rank;
 *                 speedup of 2 serving ranks against 1
 *   mpi_idle      CPU a serving rank and the root use per second while an
 *                 executor has nothing to do
 * Options: --n N (default 200000), --m M (default 20000), --reps R
 * (default 3; medians printed). Figures are noisy on a shared machine:
 * compare the two columns of one run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

#include "../../examples/seed_is_prime.h"

static const int64_t PRIMES[] = {
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
};
#define N_PRIMES 6

enum { TAG_TASK = 11, TAG_RES = 12, TAG_STOP = 13 };
enum { SZ = 64, CREDITS = 64 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* ---- the tasks ---- */

static void derive(const unsigned char *in, unsigned char *out)
{
    for (int i = 0; i < SZ; i++) out[i] = (unsigned char)(in[i] * 3 + 1);
}
static int derive_task(const void *arg, size_t len, cf_out *out)
{
    void *buf;
    if (len != SZ) return cf_out_error(out, 1, "want 64 bytes");
    int rc = cf_out_alloc(out, SZ, &buf);
    if (!rc) derive(arg, buf);
    return rc;
}
static int empty_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    (void)out;
    return 0;
}
static int prime_task(const void *arg, size_t len, cf_out *out)
{
    int64_t n;
    if (len != sizeof n) return cf_out_error(out, 1, "want an int64");
    memcpy(&n, arg, sizeof n);
    return cf_out_i64(out, is_prime(n));
}

/* ---- cfutures side (root) ---- */

static double cf_submit_ns(cf_executor *ex, long n)
{
    cf_future **fs = malloc((size_t)n * sizeof *fs);
    unsigned char arg[SZ], want[SZ];
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        memset(arg, (int)(i & 0xff), SZ);
        arg[0] = (unsigned char)(i >> 8);
        if (cf_submit(ex, derive_task, arg, SZ, &fs[i])) abort();
    }
    long bad = 0;
    for (long i = 0; i < n; i++) {
        const void *d;
        size_t len;
        memset(arg, (int)(i & 0xff), SZ);
        arg[0] = (unsigned char)(i >> 8);
        derive(arg, want);
        if (cf_future_result(fs[i], CF_FOREVER, &d, &len) || len != SZ || memcmp(d, want, SZ))
            bad++;
        cf_future_release(fs[i]);
    }
    double t = now_s() - t0;
    free(fs);
    if (bad) fprintf(stderr, "mpi_submit: %ld wrong results\n", bad);
    return t * 1e9 / (double)n;
}

static void cf_pingpong(cf_executor *ex, long m, double *p50, double *p99)
{
    double *lat = malloc((size_t)m * sizeof *lat);
    for (long i = 0; i < m; i++) {
        cf_future *f;
        double t0 = now_s();
        if (cf_submit(ex, empty_task, NULL, 0, &f)) abort();
        if (cf_future_result(f, CF_FOREVER, NULL, NULL)) abort();
        lat[i] = (now_s() - t0) * 1e9;
        cf_future_release(f);
    }
    qsort(lat, (size_t)m, sizeof *lat, cmp_d);
    *p50 = lat[m / 2];
    *p99 = lat[m * 99 / 100];
    free(lat);
}

static double cf_primes_s(cf_executor *ex)
{
    double t0 = now_s();
    cf_map_iter *it;
    cf_map_opts o = {.chunksize = 1};
    if (cf_map(ex, prime_task, PRIMES, sizeof PRIMES[0], N_PRIMES, &o, &it)) abort();
    int64_t v, primes = 0;
    while (cf_map_next_i64(it, &v) == 0) primes += v;
    cf_map_free(it);
    if (primes != 5) fprintf(stderr, "mpi_primes: %lld primes, want 5\n", (long long)primes);
    return now_s() - t0;
}

/* ---- hand-written baseline ---- */

static void base_worker(MPI_Comm comm)
{
    unsigned char in[SZ], out[SZ];
    for (;;) {
        MPI_Status st;
        MPI_Probe(0, MPI_ANY_TAG, comm, &st);
        int count;
        MPI_Get_count(&st, MPI_BYTE, &count);
        MPI_Recv(in, count, MPI_BYTE, 0, st.MPI_TAG, comm, MPI_STATUS_IGNORE);
        if (st.MPI_TAG == TAG_STOP) return;
        if (count == SZ) {
            derive(in, out);
        } else if (count == (int)sizeof(int64_t)) {
            int64_t n, r;
            memcpy(&n, in, sizeof n);
            r = is_prime(n);
            memcpy(out, &r, sizeof r);
        }
        MPI_Send(out, count, MPI_BYTE, 0, TAG_RES, comm);
    }
}

static void base_stop(MPI_Comm comm, int size)
{
    for (int r = 1; r < size; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, comm);
}

static double base_submit_ns(MPI_Comm comm, int size, long n)
{
    unsigned char arg[SZ], res[SZ], want[SZ];
    int *credits = calloc((size_t)size, sizeof *credits);
    long sent = 0, got = 0, bad = 0;
    double t0 = now_s();
    while (got < n) {
        for (int r = 1; r < size && sent < n; r++) {
            while (credits[r] < CREDITS && sent < n) {
                memset(arg, (int)(sent & 0xff), SZ);
                MPI_Send(arg, SZ, MPI_BYTE, r, TAG_TASK, comm);
                credits[r]++;
                sent++;
            }
        }
        MPI_Status st;
        MPI_Recv(res, SZ, MPI_BYTE, MPI_ANY_SOURCE, TAG_RES, comm, &st);
        credits[st.MPI_SOURCE]--;
        got++;
        memset(arg, 0, SZ);
        derive(arg, want);
        (void)want; /* results arrive out of order: the check is the size */
        int count;
        MPI_Get_count(&st, MPI_BYTE, &count);
        bad += count != SZ;
    }
    double t = now_s() - t0;
    free(credits);
    if (bad) fprintf(stderr, "baseline mpi_submit: %ld wrong results\n", bad);
    return t * 1e9 / (double)n;
}

static void base_pingpong(MPI_Comm comm, long m, double *p50, double *p99)
{
    double *lat = malloc((size_t)m * sizeof *lat);
    unsigned char b[1];
    for (long i = 0; i < m; i++) {
        double t0 = now_s();
        MPI_Send(b, 1, MPI_BYTE, 1, TAG_TASK, comm);
        MPI_Recv(b, 1, MPI_BYTE, 1, TAG_RES, comm, MPI_STATUS_IGNORE);
        lat[i] = (now_s() - t0) * 1e9;
    }
    qsort(lat, (size_t)m, sizeof *lat, cmp_d);
    *p50 = lat[m / 2];
    *p99 = lat[m * 99 / 100];
    free(lat);
}

/* Dynamic master/worker, one item per message, one in flight per worker. */
static double base_primes_s(MPI_Comm comm, int workers)
{
    double t0 = now_s();
    int next = 0, got = 0;
    int64_t primes = 0, r;
    for (int w = 1; w <= workers && next < N_PRIMES; w++, next++)
        MPI_Send(&PRIMES[next], sizeof(int64_t), MPI_BYTE, w, TAG_TASK, comm);
    while (got < N_PRIMES) {
        MPI_Status st;
        MPI_Recv(&r, sizeof r, MPI_BYTE, MPI_ANY_SOURCE, TAG_RES, comm, &st);
        primes += r;
        got++;
        if (next < N_PRIMES) {
            MPI_Send(&PRIMES[next], sizeof(int64_t), MPI_BYTE, st.MPI_SOURCE, TAG_TASK, comm);
            next++;
        }
    }
    if (primes != 5) fprintf(stderr, "baseline mpi_primes: %lld primes\n", (long long)primes);
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long n = 200000, m = 20000;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--m")) m = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    if (reps > 15) reps = 15;
    double cs[16], cp50[16], cp99[16], bs[16], bp50[16], bp99[16], cpr1[16], cpr2[16], bpr1[16],
        bpr2[16];

    /* The sub-communicator of ranks 0 and 1, for "one serving rank". */
    MPI_Comm one;
    MPI_Comm_split(MPI_COMM_WORLD, rank <= 1 ? 0 : MPI_UNDEFINED, rank, &one);

    for (int rep = 0; rep < reps; rep++) {
        /* cfutures: mpi_submit and mpi_pingpong on every serving rank. */
        cf_executor *ex;
        int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
        if (rc == 0) {
            cs[rep] = cf_submit_ns(ex, n);
            cf_pingpong(ex, m, &cp50[rep], &cp99[rep]);
            cf_executor_free(ex);
        } else if (rc != CF_MPI_SERVED) {
            fprintf(stderr, "cf_mpi_executor_new: %s\n", cf_strerror(rc));
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        /* cfutures: mpi_primes, one thread per serving rank, 2 then 1 ranks. */
        cf_mpi_opts o = CF_MPI_OPTS_INIT;
        o.threads = 1;
        rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, &o);
        if (rc == 0) {
            cpr2[rep] = cf_primes_s(ex);
            cf_executor_free(ex);
        }
        if (one != MPI_COMM_NULL) {
            rc = cf_mpi_executor_new(&ex, one, 0, &o);
            if (rc == 0) {
                cpr1[rep] = cf_primes_s(ex);
                cf_executor_free(ex);
            }
        }
        MPI_Barrier(MPI_COMM_WORLD);
        /* The hand-written baseline, same workloads. */
        if (rank == 0) {
            bs[rep] = base_submit_ns(MPI_COMM_WORLD, size, n);
            base_stop(MPI_COMM_WORLD, size);
        } else {
            base_worker(MPI_COMM_WORLD);
        }
        if (rank == 0) {
            base_pingpong(MPI_COMM_WORLD, m, &bp50[rep], &bp99[rep]);
            bpr2[rep] = base_primes_s(MPI_COMM_WORLD, size - 1);
            base_stop(MPI_COMM_WORLD, size);
        } else {
            base_worker(MPI_COMM_WORLD);
        }
        if (one != MPI_COMM_NULL) {
            if (rank == 0) {
                bpr1[rep] = base_primes_s(one, 1);
                base_stop(one, 2);
            } else {
                base_worker(one);
            }
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }

    /* mpi_idle: an executor with nothing to do for 2 s. */
    double c0 = cpu_s(), w0 = now_s();
    cf_executor *ex;
    int rc = cf_mpi_executor_new(&ex, MPI_COMM_WORLD, 0, NULL);
    double idle_root = 0;
    if (rc == 0) {
        usleep(200000); /* settle */
        double r0 = cpu_s();
        sleep(2);
        idle_root = (cpu_s() - r0) / 2.0;
        cf_executor_free(ex);
    }
    double mine = (cpu_s() - c0) / (now_s() - w0), worst = 0;
    MPI_Reduce(&mine, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

    if (rank == 0) {
        printf("mpirun -n %d (root + %d serving ranks); medians of %d runs\n", size, size - 1,
               reps);
        printf("%-13s %-16s %12s %12s %8s\n", "workload", "counter", "cfutures", "hand-MPI",
               "cf/base");
        double a, b;
        a = median(cs, reps), b = median(bs, reps);
        printf("%-13s %-16s %12.0f %12.0f %8.2f\n", "mpi_submit", "ns_per_task", a, b, a / b);
        a = median(cp50, reps), b = median(bp50, reps);
        printf("%-13s %-16s %12.0f %12.0f %8.2f\n", "mpi_pingpong", "p50_ns", a, b, a / b);
        a = median(cp99, reps), b = median(bp99, reps);
        printf("%-13s %-16s %12.0f %12.0f %8.2f\n", "mpi_pingpong", "p99_ns", a, b, a / b);
        a = median(cpr1, reps) / median(cpr2, reps);
        b = median(bpr1, reps) / median(bpr2, reps);
        printf("%-13s %-16s %12.2f %12.2f %8.2f\n", "mpi_primes", "speedup_2_vs_1", a, b, a / b);
        printf("%-13s %-16s %12.3f %12s\n", "mpi_idle", "root_cpu_ms/s", idle_root * 1e3, "-");
        printf("%-13s %-16s %12.3f %12s\n", "mpi_idle", "max_rank_ms/s", worst * 1e3, "-");
    }
    if (one != MPI_COMM_NULL) MPI_Comm_free(&one);
    MPI_Finalize();
    return 0;
}
