/* dlopen() libcfutures.so itself (the path in argv[1]), find the calls by
 * name, and run the sum of squares of app.c on a thread pool from a thread
 * of ours; dlclose the library while that thread is still alive, then let
 * the thread exit (its thread-exit handlers are the library's: it is
 * marked NODELETE, so they are still there); open it again and run once
 * more. Prints the sums, 91, and exits 0 when both runs got it. */
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cfutures.h>

static int square(const void *arg, size_t len, cf_out *out);

struct api {
    int (*pool_new)(cf_executor **, const cf_thread_pool_opts *);
    int (*map)(cf_executor *, cf_task_fn *, const void *, size_t, size_t, const cf_map_opts *,
               cf_map_iter **);
    int (*next_i64)(cf_map_iter *, int64_t *);
    void (*map_free)(cf_map_iter *);
    void (*exe_free)(cf_executor *);
    int (*out_i64)(cf_out *, int64_t);
};
static struct api api;

static int square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return 1;
    memcpy(&x, arg, sizeof x);
    return api.out_i64(out, x * x);
}

static sem_t done, go;

/* The pool's work, from a thread that outlives the dlclose. */
static void *user_thread(void *arg)
{
    int64_t *sum = arg;
    cf_executor *exe;
    cf_map_iter *it;
    int64_t xs[] = {1, 2, 3, 4, 5, 6}, y;
    *sum = -1;
    if (api.pool_new(&exe, NULL) == 0) {
        if (api.map(exe, square, xs, sizeof xs[0], 6, NULL, &it) == 0) {
            *sum = 0;
            while (api.next_i64(it, &y) == 0) *sum += y;
            api.map_free(it);
        }
        api.exe_free(exe);
    }
    sem_post(&done);
    while (sem_wait(&go) != 0)
        ;
    return NULL; /* the library's thread-exit handlers run now */
}

static int run(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return -1;
    }
    /* A function pointer from a data pointer: what dlsym is for (POSIX). */
#define SYM(field, name) *(void **)&api.field = dlsym(h, name)
    SYM(pool_new, "cf_thread_pool_new");
    SYM(map, "cf_map");
    SYM(next_i64, "cf_map_next_i64");
    SYM(map_free, "cf_map_free");
    SYM(exe_free, "cf_executor_free");
    SYM(out_i64, "cf_out_i64");
#undef SYM
    if (!api.pool_new || !api.map || !api.next_i64 || !api.map_free || !api.exe_free ||
        !api.out_i64) {
        fprintf(stderr, "dlsym: a cf_ call is missing\n");
        return -1;
    }
    int64_t sum;
    pthread_t t;
    sem_init(&done, 0, 0);
    sem_init(&go, 0, 0);
    if (pthread_create(&t, NULL, user_thread, &sum) != 0) return -1;
    while (sem_wait(&done) != 0)
        ;
    int closed = dlclose(h);
    sem_post(&go);
    pthread_join(t, NULL);
    if (closed != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        return -1;
    }
    return (int)sum;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    int a = run(argv[1]), b = run(argv[1]);
    printf("dlopen: sum of squares %d, again %d\n", a, b);
    return a == 91 && b == 91 ? 0 : 1;
}
