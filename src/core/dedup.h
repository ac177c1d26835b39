/* Duplicate futures in cf_wait / cf_as_completed input, found in O(n).
 * Single-threaded helper: nothing here is shared. */
#ifndef CF_DEDUP_H
#define CF_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "sys/alloc.h"
#include "cfutures.h"

/* Copy the distinct futures of fs[0..n) (first occurrences, in input
 * order) to uniq[0..*n_uniq) and the others to dups[0..n - *n_uniq).
 * Returns 0 or CF_ENOMEM (nothing written that matters). */
static inline int cf__dedup(cf_future *const *fs, size_t n, cf_future **uniq, cf_future **dups,
                            size_t *n_uniq)
{
    size_t u = 0, d = 0;
    if (n <= 16) { /* quadratic beats a table this small */
        for (size_t i = 0; i < n; i++) {
            size_t j = 0;
            while (j < u && uniq[j] != fs[i]) j++;
            if (j < u) dups[d++] = fs[i];
            else uniq[u++] = fs[i];
        }
        *n_uniq = u;
        return 0;
    }
    /* Open addressing, load factor <= 1/2, Fibonacci hashing. */
    unsigned bits = 1;
    while (((size_t)1 << bits) < 2 * n) bits++;
    size_t cap = (size_t)1 << bits, mask = cap - 1;
    cf_future **table = cf__calloc(cap * sizeof *table);
    if (!table) return CF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)(((uint64_t)(uintptr_t)fs[i] * 0x9E3779B97F4A7C15ull) >> (64 - bits));
        while (table[h] && table[h] != fs[i]) h = (h + 1) & mask;
        if (table[h]) {
            dups[d++] = fs[i];
        } else {
            table[h] = fs[i];
            uniq[u++] = fs[i];
        }
    }
    cf__free(table, cap * sizeof *table);
    *n_uniq = u;
    return 0;
}

#endif
