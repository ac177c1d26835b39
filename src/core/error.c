/* The one table of error names (cfutures/error.h), and the version string. */
#include "cfutures.h"
#include "sys/slab.h"

/* Indexed by -code. */
static const char *const cf__error_names[] = {
    [0] = "success",
    [-CF_EINVAL] = "invalid argument",
    [-CF_ENOMEM] = "out of memory",
    [-CF_ETIMEDOUT] = "timed out",
    [-CF_ECANCELLED] = "cancelled",
    [-CF_ETASK] = "the task failed",
    [-CF_EBROKEN] = "the executor is broken",
    [-CF_ESHUTDOWN] = "the executor is shut down",
    [-CF_ESTATE] = "invalid state",
    [-CF_END] = "end of iteration",
    [-CF_ESYS] = "a system call failed",
    [-CF_ETOOBIG] = "too big",
    [-CF_ENOTSUP] = "not supported",
};

/* A new code must get a name here: the table ends at the last code. */
_Static_assert(sizeof cf__error_names / sizeof cf__error_names[0] == 1 - CF_ENOTSUP,
               "cf_strerror: every CF_E* code needs a name");

const char *cf_strerror(int code)
{
    if (code > 0 || code < CF_ENOTSUP) return "unknown error";
    return cf__error_names[-code];
}

const char *cf_version(void)
{
    return CF_VERSION_STRING; /* cfutures/version.h, generated from project() */
}

CF_API void cf_trim_memory(void)
{
    cf__slab_trim();
}
