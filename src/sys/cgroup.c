/* The CPU bandwidth limit of the process's cgroups.
 *
 * A container started with `--cpus=1.5` may run on every CPU of the
 * machine (its affinity mask is all of them) but gets 1.5 CPUs of time per
 * period; a worker per core would then be throttled. The limit is the
 * cgroup's CPU quota:
 *   v2  cpu.max: "QUOTA PERIOD", or "max PERIOD" for none;
 *   v1  cpu.cfs_quota_us (-1 for none) and cpu.cfs_period_us.
 * A limit applies to everything below its cgroup, so every level from the
 * process's cgroup up to the root of the mount is read and the tightest
 * wins; v1 and v2 hierarchies may both be mounted (hybrid), and the
 * tightest of those wins too. The process's cgroup paths come from
 * /proc/self/cgroup ("0::/path" for v2, "N:cpu,cpuacct:/path" for v1), the
 * mount points from /proc/self/mountinfo (a mount's root may be a
 * sub-cgroup, as in a container without a cgroup namespace; a path that
 * is not under it, as "/.." from a namespace, is read at the mount point
 * only). The answer is ceil(quota / period) CPUs, at least 1.
 *
 * Not concurrent in itself: every call reads the files afresh into its own
 * buffers and shares nothing, so calls may run from any thread at once. */
#include "sys/cgroup.h"

#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CF_TEST_HOOKS
const char *cf__test_cgroup_root; /* cgroup.h */
#endif

#define PATH_CAP 4096

/* The whole of a small file, NUL-terminated, or false. */
static bool read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return false;
    size_t n = 0;
    ssize_t r;
    while (n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0) n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    return n > 0;
}

/* A non-negative decimal integer at *p; advances *p. */
static bool read_u64(const char **p, unsigned long long *out)
{
    if (**p < '0' || **p > '9') return false;
    char *end;
    *out = strtoull(*p, &end, 10);
    *p = end;
    return true;
}

static int cpus_of(unsigned long long quota, unsigned long long period)
{
    if (period == 0) return 0;
    unsigned long long n = quota / period + (quota % period != 0);
    if (n < 1) n = 1;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* The limit set in one cgroup directory (0: none, or unreadable). */
static int limit_in(const char *dir, bool v2)
{
    char path[PATH_CAP + 32], buf[128];
    unsigned long long quota, period;
    const char *p = buf;
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (!read_small(path, buf, sizeof buf) || !read_u64(&p, &quota) || *p != ' ') return 0;
        p++;
        return read_u64(&p, &period) ? cpus_of(quota, period) : 0; /* "max ...": none */
    }
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (!read_small(path, buf, sizeof buf) || !read_u64(&p, &quota)) return 0; /* "-1": none */
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    p = buf;
    if (!read_small(path, buf, sizeof buf) || !read_u64(&p, &period)) return 0;
    return cpus_of(quota, period);
}

static int tighter(int a, int b)
{
    if (a == 0) return b;
    if (b == 0) return a;
    return a < b ? a : b;
}

/* Every level from root/mount/rel up to root/mount. */
static int walk_up(const char *root, const char *mount, const char *rel, bool v2)
{
    char dir[PATH_CAP];
    int base = snprintf(dir, sizeof dir, "%s%s", root, strcmp(mount, "/") != 0 ? mount : "");
    if (base < 0 || (size_t)base >= sizeof dir) return 0;
    if ((size_t)snprintf(dir + base, sizeof dir - (size_t)base, "%s", rel) >=
        sizeof dir - (size_t)base)
        return 0;
    int best = 0;
    for (;;) {
        best = tighter(best, limit_in(dir, v2));
        char *slash = strrchr(dir + base, '/');
        if (!slash) break;
        *slash = '\0';
    }
    return best;
}

/* mountinfo escapes a space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* Whether the comma-separated list has `item`. */
static bool has_item(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p; p = strchr(p, ',')) {
        if (*p == ',') p++;
        if (strncmp(p, item, n) == 0 && (p[n] == ',' || p[n] == '\0' || p[n] == '\n')) return true;
    }
    return false;
}

/* The process's cgroup paths: v2 ("0::/path") and v1 with the cpu
 * controller. Empty when absent. */
static void own_cgroups(const char *root, char *v2, char *v1, size_t size)
{
    char path[PATH_CAP + 32];
    v2[0] = v1[0] = '\0';
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "re");
    if (!f) return;
    char line[PATH_CAP + 256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/') continue;
        *c2 = '\0';
        if (c1 == c2 - 1 && strcmp(line, "0:") == 0) snprintf(v2, size, "%s", c2 + 1);
        else if (has_item(c1 + 1, "cpu")) snprintf(v1, size, "%s", c2 + 1);
    }
    fclose(f);
}

/* The part of cgroup path `cg` below a mount rooted at `mroot` ("" when it
 * is not below it). */
static const char *below(const char *cg, const char *mroot)
{
    if (strcmp(mroot, "/") == 0) return strcmp(cg, "/") != 0 ? cg : "";
    size_t n = strlen(mroot);
    if (strncmp(cg, mroot, n) != 0 || (cg[n] != '/' && cg[n] != '\0')) return "";
    return cg + n;
}

int cf__cgroup_cpu_limit_at(const char *root)
{
    char v2[PATH_CAP], v1[PATH_CAP], path[PATH_CAP + 32];
    if (!root) root = "";
    own_cgroups(root, v2, v1, sizeof v2);
    if (!v2[0] && !v1[0]) return 0;
    snprintf(path, sizeof path, "%s/proc/self/mountinfo", root);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    int best = 0;
    char line[3 * PATH_CAP];
    while (fgets(line, sizeof line, f)) {
        /* id parent major:minor root mount-point options [tags] - type source super-options */
        char *field[6], *save = NULL, *tok = strtok_r(line, " \n", &save);
        int k = 0;
        for (; tok && k < 6; tok = strtok_r(NULL, " \n", &save)) field[k++] = tok;
        while (tok && strcmp(tok, "-") != 0) tok = strtok_r(NULL, " \n", &save);
        char *type = tok ? strtok_r(NULL, " \n", &save) : NULL;
        char *source = type ? strtok_r(NULL, " \n", &save) : NULL;
        char *super = source ? strtok_r(NULL, " \n", &save) : NULL;
        if (k < 5 || !super) continue;
        bool is_v2 = strcmp(type, "cgroup2") == 0 && v2[0];
        bool is_v1 = strcmp(type, "cgroup") == 0 && v1[0] && has_item(super, "cpu");
        if (!is_v2 && !is_v1) continue;
        unescape(field[3]);
        unescape(field[4]);
        best = tighter(best, walk_up(root, field[4], below(is_v2 ? v2 : v1, field[3]), is_v2));
    }
    fclose(f);
    return best;
}

int cf__cgroup_cpu_limit(void)
{
    const char *root = "";
#ifdef CF_TEST_HOOKS
    if (cf__test_cgroup_root) root = cf__test_cgroup_root;
#endif
    return cf__cgroup_cpu_limit_at(root);
}

int cf__cgroup_cpu_cap(int n)
{
    int limit = cf__cgroup_cpu_limit();
    return limit > 0 && limit < n ? limit : n;
}
