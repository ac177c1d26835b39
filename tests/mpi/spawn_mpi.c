/* Spawn mode: started as `mpirun -n 1`, the program spawns 2 serving
 * copies of itself, runs tasks on them and checks they ran elsewhere. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cfutures.h>
#include <cfutures/mpi.h>

static int pid_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    return cf_out_i64(out, getpid());
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, CF_MPI_THREAD_LEVEL, &provided);
    cf_executor *ex;
    int rc = cf_mpi_executor_spawn(&ex, 2, NULL, NULL);
    if (rc == CF_MPI_SERVED) {
        MPI_Finalize();
        return 0;
    }
    if (rc) {
        printf("spawn: %s\n", cf_strerror(rc));
        MPI_Finalize();
        return 1;
    }
    int bad = cf_executor_workers(ex) < 2;
    for (int i = 0; i < 20; i++) {
        cf_future *f;
        int64_t pid = 0;
        if (cf_submit(ex, pid_task, NULL, 0, &f) || cf_future_result_i64(f, 60.0, &pid) ||
            pid == getpid())
            bad++;
        cf_future_release(f);
    }
    cf_executor_free(ex);
    printf("spawn: %s\n", bad ? "FAILED" : "ok");
    MPI_Finalize();
    return bad ? 1 : 0;
}
