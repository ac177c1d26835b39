/* The program every consumer path builds (tools/check-consumers): squares
 * 1..6 in a thread pool with cf_map and prints their sum, 91. */
#include <cfutures.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int square(const void *arg, size_t len, cf_out *out)
{
    int64_t x;
    if (len != sizeof x) return cf_out_error(out, 1, "want one int64");
    memcpy(&x, arg, sizeof x);
    return cf_out_i64(out, x * x);
}

int main(void)
{
    cf_executor *exe;
    if (cf_thread_pool_new(&exe, NULL) != 0) return 1;
    int64_t xs[] = {1, 2, 3, 4, 5, 6}, sum = 0, y;
    cf_map_iter *it;
    if (cf_map(exe, square, xs, sizeof xs[0], 6, NULL, &it) != 0) return 1;
    while (cf_map_next_i64(it, &y) == 0) sum += y;
    cf_map_free(it);
    cf_executor_free(exe);
    printf("cfutures %s: sum of squares %lld\n", cf_version(), (long long)sum);
    return sum == 91 ? 0 : 1;
}
