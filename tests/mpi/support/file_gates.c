#include "file_gates.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static char gate_dir[64]; /* the root's; empty until gates_make */

int gates_make(const char *prefix)
{
    snprintf(gate_dir, sizeof gate_dir, "%s", prefix);
    if (mkdtemp(gate_dir)) return 0;
    perror("mkdtemp");
    gate_dir[0] = 0;
    return -1;
}

void gates_remove(void)
{
    if (!gate_dir[0]) return;
    DIR *d = opendir(gate_dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", gate_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(gate_dir);
    gate_dir[0] = 0;
}

int gate_task(const void *arg, size_t len, cf_out *out)
{
    const char *started = arg;
    const char *gate = started + strlen(started) + 1;
    if ((size_t)(gate - started) >= len) return cf_out_error(out, CF_EINVAL, "bad gate argument");
    int fd = open(started, O_CREAT | O_WRONLY, 0600);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 60000 && access(gate, F_OK) != 0; i++) usleep(1000);
    return cf_out_i64(out, getpid());
}

size_t gate_arg(char *buf, size_t cap, const char *started, const char *gate)
{
    int a = snprintf(buf, cap, "%s/%s", gate_dir, started);
    int b = snprintf(buf + a + 1, cap - (size_t)a - 1, "%s/%s", gate_dir, gate);
    return (size_t)a + 1 + (size_t)b + 1;
}

void gate_touch(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", gate_dir, name);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
}

void gate_await_file(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", gate_dir, name);
    for (int i = 0; i < 60000 && access(path, F_OK) != 0; i++) usleep(1000);
    assert_int_equal(access(path, F_OK), 0);
}
