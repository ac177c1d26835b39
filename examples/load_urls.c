/* The seed's as_completed example: load several URLs in a thread pool and
 * print each page's size in the order the pages arrive, not the order they
 * were asked for. Offline: the pages come from a small server on 127.0.0.1
 * (local_http.h) with different sizes and delays, and a fifth URL points at
 * a closed port so one load fails, as a dead site would.
 *
 *   with PE() as exe:
 *       fs = {exe.submit(load_url, url): url for url in URLS}
 *       for f in concurrent.futures.as_completed(fs):
 *           ...print(f'[{url}] has {len(data)} characters.')
 *           ...print(f'Fail to open : {url}') */
#include "local_http.h"

#define N_URLS 5

int main(void)
{
    static const struct local_page pages[] = {
        {"/www.foxnews.com", 310552, 400},
        {"/www.cnn.com", 146019, 150},
        {"/europe.wsj.com", 54297, 300},
        {"/www.bbc.co.uk", 289170, 50},
    };
    struct local_server srv;
    if (local_server_start(&srv, pages, 4) != 0) {
        perror("load_urls: cannot start the local HTTP server");
        return 1;
    }
    char urls[N_URLS][128];
    for (int i = 0; i < 4; i++)
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d%s", srv.port, pages[i].path);
    snprintf(urls[4], sizeof urls[4], "http://127.0.0.1:%d/www.gone.example", local_closed_port());

    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Loading URLs waits on I/O, so use one thread per URL, unpinned. */
    cf_executor *exe;
    if (cf_thread_pool_new(
            &exe, &(cf_thread_pool_opts){.max_workers = N_URLS, .pin = CF_PIN_NONE}) != 0) {
        fprintf(stderr, "load_urls: cannot create the thread pool\n");
        local_server_stop(&srv);
        return 1;
    }

    /* fs = {exe.submit(load_url, url): url for url in URLS} */
    cf_future *fs[N_URLS];
    size_t n = 0;
    for (int i = 0; i < N_URLS; i++) {
        int rc = cf_submit(exe, load_url, urls[i], strlen(urls[i]), &fs[n]);
        if (rc != 0) {
            fprintf(stderr, "load_urls: submit: %s\n", cf_strerror(rc));
            continue;
        }
        n++;
    }

    /* for f in as_completed(fs): */
    cf_as_completed *it;
    int rc = cf_as_completed_new(fs, n, CF_FOREVER, &it);
    if (rc == 0) {
        cf_future *f;
        while (cf_as_completed_next(it, &f) == 0) {
            const char *url = "?";
            for (size_t i = 0; i < n; i++)
                if (fs[i] == f) url = urls[i];
            size_t len;
            if (cf_future_result(f, CF_FOREVER, NULL, &len) == 0)
                printf("[%s] has %zu characters.\n", url, len);
            else printf("Fail to open : %s\n", url);
        }
        cf_as_completed_free(it);
    } else {
        fprintf(stderr, "load_urls: as_completed: %s\n", cf_strerror(rc));
    }

    for (size_t i = 0; i < n; i++) cf_future_release(fs[i]);
    cf_executor_free(exe); /* with PE() as exe: ends with shutdown(wait=True) */
    curl_global_cleanup();
    local_server_stop(&srv);
    return rc == 0 ? 0 : 1;
}
