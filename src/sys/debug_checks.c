/* The reporting half of the debug checks (debug_checks.h). Always built,
 * so a test can ask whether the checks are on. No shared state. */
#include "sys/debug_checks.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef CF_ASAN
#include <sanitizer/asan_interface.h>
#endif

_Noreturn void cf__debug_fail(const char *call, const char *kind, const void *obj,
                              const char *problem)
{
    fprintf(stderr, "cfutures: %s: %s %p %s\n", call, kind, obj, problem);
    fflush(stderr);
    abort();
}

bool cf__debug_checks_on(void)
{
    return CF__DEBUG_CHECKS;
}

bool cf__debug_poisoned(const void *p)
{
#ifdef CF_ASAN
    return __asan_address_is_poisoned(p);
#else
    (void)p;
    return false;
#endif
}
