/* A module the test loads on the root only, after the executor was made:
 * its task cannot be named on the serving ranks. */
#include <cfutures.h>

int late_plugin_task(const void *arg, size_t len, cf_out *out);
int late_plugin_task(const void *arg, size_t len, cf_out *out)
{
    (void)arg;
    (void)len;
    return cf_out_i64(out, 1);
}
