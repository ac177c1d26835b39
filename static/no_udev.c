/* libcfutures-noudev.a: "no udev here" for a fully static program.
 *
 * Debian's libhwloc.a calls libudev (udev_new when its Linux backend
 * starts, the rest to name block devices), and Debian ships no static
 * libudev, so a `-static` link of anything using hwloc fails on these five
 * names. Here they behave as libudev does when it cannot work: udev_new
 * returns NULL, and hwloc then skips udev (it reads what it needs from
 * /sys, and gives block devices no udev-provided model or serial: cfutures
 * asks hwloc for no I/O devices at all).
 *
 * This archive comes after -lhwloc in cfutures.pc's Libs.private and in
 * the static CMake target, so the linker takes it only when a static
 * libhwloc.a left these names undefined: a program linking the shared
 * libhwloc (which brings the real libudev.so.1) never gets it. The names
 * are hidden, so they never leave the program. */
#include <stddef.h>

struct udev;
struct udev_device;

#define CF__NO_UDEV __attribute__((visibility("hidden")))

CF__NO_UDEV struct udev *udev_new(void);
CF__NO_UDEV struct udev *udev_unref(struct udev *u);
CF__NO_UDEV struct udev_device *
udev_device_new_from_subsystem_sysname(struct udev *u, const char *subsystem, const char *sysname);
CF__NO_UDEV const char *udev_device_get_property_value(struct udev_device *d, const char *key);
CF__NO_UDEV struct udev_device *udev_device_unref(struct udev_device *d);

struct udev *udev_new(void)
{
    return NULL; /* libudev's answer when it cannot make a context */
}

struct udev *udev_unref(struct udev *u)
{
    (void)u;
    return NULL;
}

struct udev_device *udev_device_new_from_subsystem_sysname(struct udev *u, const char *subsystem,
                                                           const char *sysname)
{
    (void)u, (void)subsystem, (void)sysname;
    return NULL;
}

const char *udev_device_get_property_value(struct udev_device *d, const char *key)
{
    (void)d, (void)key;
    return NULL;
}

struct udev_device *udev_device_unref(struct udev_device *d)
{
    (void)d;
    return NULL;
}
