/* A new PENDING future for a test (cf_future_new), which must succeed. */
#ifndef CF_TEST_FUTURE_H
#define CF_TEST_FUTURE_H

#include <stdio.h>
#include <stdlib.h>
#include "cfutures.h"

static inline cf_future *cf_test_future(void)
{
    cf_future *f = NULL;
    int rc = cf_future_new(&f);
    if (rc != 0) {
        fprintf(stderr, "cf_future_new: %s\n", cf_strerror(rc));
        abort();
    }
    return f;
}

#endif
