/* The CPU bandwidth the process's cgroups grant it (cgroup.c): how many
 * CPUs' worth of time a container's `--cpus` (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us) lets it use, whatever its affinity
 * mask says. The default worker count is capped by it. */
#ifndef CF_CGROUP_H
#define CF_CGROUP_H

/* ceil(quota / period) of the tightest limit on the path from the
 * process's cgroup up to the root of each hierarchy with the cpu
 * controller, at least 1; 0 when nothing limits it or nothing can be read
 * (no cgroup file system, an unknown format). Reads a few small files from
 * /proc and /sys/fs/cgroup each time: call it at setup, not per task. */
int cf__cgroup_cpu_limit(void);

/* The same, with `root` a directory standing in for "/" (the files read
 * are root/proc/self/cgroup, root/proc/self/mountinfo and the limit files
 * under root/<mount point>). */
int cf__cgroup_cpu_limit_at(const char *root);

/* n capped by cf__cgroup_cpu_limit() (n itself when unlimited). */
int cf__cgroup_cpu_cap(int n);

#ifdef CF_TEST_HOOKS
/* A directory standing in for "/" in cf__cgroup_cpu_limit (tests give the
 * pools a fake cgroup tree). NULL: the real one. Set it before making pools. */
extern const char *cf__test_cgroup_root;
#endif

#endif
