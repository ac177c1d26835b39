/* The seed's "start one job in the background, do other work, then take its
 * result" example:
 *
 *   exe = EP()
 *   num = 115797848077099
 *   f = exe.submit(load_url, 'http://some.where.com')   # in another thread
 *   prime = is_prime(num)                                # meanwhile, here
 *   print(f'{num} is prime: {prime}')
 *   data = f.result()                                    # now we need the page
 *   print(f'The page is {len(data)} bytes.')
 *   exe.shutdown(True)
 *
 * Offline: the page comes from a small server on 127.0.0.1 (local_http.h). */
#include <math.h>

#include "local_http.h"

#include "seed_is_prime.h"

int main(void)
{
    static const struct local_page pages[] = {{"/some.where.com", 81920, 200}};
    struct local_server srv;
    if (local_server_start(&srv, pages, 1) != 0) {
        perror("background: cannot start the local HTTP server");
        return 1;
    }
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, pages[0].path);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int rc = 1;
    cf_executor *exe;
    if (cf_thread_pool_new(&exe, NULL) != 0) {
        fprintf(stderr, "background: cannot create the thread pool\n");
        goto out;
    }
    int64_t num = 115797848077099;
    /* First fetch the page in another thread. */
    cf_future *f;
    rc = cf_submit(exe, load_url, url, strlen(url), &f);
    if (rc != 0) {
        fprintf(stderr, "background: submit: %s\n", cf_strerror(rc));
        cf_executor_free(exe);
        goto out;
    }

    /* This thread checks the prime meanwhile. */
    bool prime = is_prime(num);
    printf("%lld is prime: %s\n", (long long)num, prime ? "True" : "False");

    /* Now we need the page. */
    size_t len;
    rc = cf_future_result(f, CF_FOREVER, NULL, &len);
    if (rc == 0) {
        printf("The page is %zu bytes.\n", len);
    } else {
        int code = 0;
        const char *msg = NULL;
        cf_future_exception(f, CF_POLL, &code, &msg);
        fprintf(stderr, "background: %s: %s\n", cf_strerror(rc), msg ? msg : "");
    }
    cf_future_release(f);
    cf_executor_shutdown(exe, true, false); /* exe.shutdown(True) */
    cf_executor_free(exe);
out:
    curl_global_cleanup();
    local_server_stop(&srv);
    return rc == 0 ? 0 : 1;
}
