/* Which malloc this program got: prints one line naming the object that
 * defines malloc (dladdr; "static" in a static program) and the usable
 * size of a 1-byte block (glibc: 24, jemalloc: 8), a fingerprint that
 * holds in static programs too. Built with and without cfutures
 * (-DWITH_CFUTURES: it then runs a pool, so the library is really used),
 * and with -ljemalloc before, after or nowhere: tools/check-consumers
 * checks that linking cfutures never changes the line. */
#define _GNU_SOURCE /* dladdr, RTLD_DEFAULT */
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef WITH_CFUTURES
#include <cfutures.h>
static int one(const void *arg, size_t len, cf_out *out)
{
    (void)arg, (void)len;
    return cf_out_i64(out, 1);
}
#endif

int main(void)
{
#ifdef WITH_CFUTURES
    cf_executor *exe;
    cf_future *f;
    int64_t v = 0;
    if (cf_thread_pool_new(&exe, NULL) != 0 || cf_submit(exe, one, NULL, 0, &f) != 0 ||
        cf_future_result_i64(f, CF_FOREVER, &v) != 0 || v != 1)
        return 1;
    cf_future_release(f);
    cf_executor_free(exe);
#endif
    const char *from = "static";
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    if (m && dladdr(m, &info) && info.dli_fname) {
        from = strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname;
    }
    void *p = malloc(1);
    printf("malloc from %s, usable size of 1 byte %zu\n", from, malloc_usable_size(p));
    free(p);
    return 0;
}
