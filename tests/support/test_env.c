/* cf_test_init and the stderr capture: see test_env.h. */
#include "support/test_env.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <unistd.h>

extern char **environ;

static int kept(const char *name, size_t len)
{
    static const char *const keep[] = {"CFUTURES_STRESS_SCALE", "CFUTURES_DEBUG_YIELD"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (strlen(keep[i]) == len && memcmp(keep[i], name, len) == 0) return 1;
    return 0;
}

static void unset_cfutures_env(void)
{
    /* Names first, then unset: unsetenv changes environ under a walk. */
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
            if (strncmp(*e, "CFUTURES_", 9) != 0 || kept(*e, len) || len >= sizeof name) continue;
            memcpy(name, *e, len);
            name[len] = '\0';
            break;
        }
        if (!name[0]) return;
        unsetenv(name);
    }
}

void cf_test_init(int argc, char **argv)
{
    unset_cfutures_env();
    const char *filter = argc > 1 ? argv[1] : getenv("CF_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
}

void cf_test_stderr_begin(cf_test_stderr *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->tmp), STDERR_FILENO) >= 0);
}

void cf_test_stderr_end(cf_test_stderr *c, char *buf, size_t size)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    rewind(c->tmp);
    size_t n = fread(buf, 1, size - 1, c->tmp);
    buf[n] = '\0';
    fclose(c->tmp);
}
