/* Duplicate futures in cf_wait / cf_as_completed input, found in O(n).
 * Single-threaded helper: nothing here is shared.
 *
 * A "seen" set marks each future once. Two live futures are distinct
 * records at least sizeof(cf_future) >= 64 bytes apart, so (address -
 * lowest) >> 6 differs for any two of them: when the input's address range
 * is small (at most 64 bits per future, so the bitmap is no larger than
 * the caller's array of pointers; the usual case, since records of one
 * submitter come from the same few chunks of memory), a bitmap over it
 * does, with no hashing and no probing. Otherwise an open-addressing hash
 * table of pointers (load factor <= 1/2, Fibonacci hashing). Up to 16
 * futures: a linear search of those already marked. */
#ifndef CF_DEDUP_H
#define CF_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sys/alloc.h"
#include "core/future.h"

#define CF__SEEN_SHIFT 6 /* bits of address per bitmap bit: 64 bytes */
_Static_assert(sizeof(cf_future) >= ((size_t)1 << CF__SEEN_SHIFT),
               "two distinct records differ in (address >> CF__SEEN_SHIFT)");
#define CF__SEEN_SMALL 16 /* up to this many: a linear search */

struct cf__seen {
    enum { CF__SEEN_LINEAR, CF__SEEN_BITMAP, CF__SEEN_HASH } kind;
    size_t n;           /* marked so far (LINEAR) */
    uintptr_t base;     /* lowest address (BITMAP) */
    uint64_t *map;      /* BITMAP: one bit per 64 bytes; HASH: the table */
    size_t bytes;       /* of map */
    unsigned hash_bits; /* HASH: log2 of the table's slots */
    cf_future *few[CF__SEEN_SMALL];
};

/* Ready a set for n futures whose addresses lie in [lo, hi]. 0 or
 * CF_ENOMEM. */
static inline int cf__seen_init(struct cf__seen *s, size_t n, uintptr_t lo, uintptr_t hi)
{
    s->n = 0;
    s->base = 0;
    s->map = NULL;
    s->bytes = 0;
    s->hash_bits = 0;
    if (n <= CF__SEEN_SMALL) {
        s->kind = CF__SEEN_LINEAR;
        return 0;
    }
    size_t words = (((hi - lo) >> CF__SEEN_SHIFT) >> 6) + 1;
    if (words <= n + 8) { /* at most 64 bits per future (plus a little) */
        s->kind = CF__SEEN_BITMAP;
        s->base = lo;
        s->bytes = words * sizeof(uint64_t);
    } else {
        s->kind = CF__SEEN_HASH;
        unsigned bits = 1;
        while (((size_t)1 << bits) < 2 * n) bits++;
        s->hash_bits = bits;
        s->bytes = ((size_t)1 << bits) * sizeof(cf_future *);
    }
    s->map = cf__calloc(s->bytes);
    return s->map ? 0 : CF_ENOMEM;
}

/* Mark f: true if it was not marked before (its first occurrence). */
static inline bool cf__seen_add(struct cf__seen *s, cf_future *f)
{
    switch (s->kind) {
    case CF__SEEN_BITMAP: {
        size_t bit = ((uintptr_t)f - s->base) >> CF__SEEN_SHIFT;
        uint64_t mask = (uint64_t)1 << (bit & 63), *w = &s->map[bit >> 6];
        if (*w & mask) return false;
        *w |= mask;
        return true;
    }
    case CF__SEEN_HASH: {
        cf_future **table = (cf_future **)(void *)s->map;
        size_t mask = ((size_t)1 << s->hash_bits) - 1;
        size_t h = (size_t)(((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ull) >>
                            (64 - s->hash_bits));
        while (table[h] && table[h] != f) h = (h + 1) & mask;
        if (table[h]) return false;
        table[h] = f;
        return true;
    }
    default:
        for (size_t j = 0; j < s->n; j++)
            if (s->few[j] == f) return false;
        s->few[s->n++] = f;
        return true;
    }
}

/* Is f marked? (Marks nothing.) */
static inline bool cf__seen_has(const struct cf__seen *s, cf_future *f)
{
    switch (s->kind) {
    case CF__SEEN_BITMAP: {
        uintptr_t a = (uintptr_t)f;
        if (a < s->base) return false;
        size_t bit = (a - s->base) >> CF__SEEN_SHIFT;
        if ((bit >> 6) >= s->bytes / sizeof(uint64_t)) return false;
        return (s->map[bit >> 6] >> (bit & 63)) & 1;
    }
    case CF__SEEN_HASH: {
        cf_future *const *table = (cf_future *const *)(void *)s->map;
        size_t mask = ((size_t)1 << s->hash_bits) - 1;
        size_t h = (size_t)(((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ull) >>
                            (64 - s->hash_bits));
        while (table[h] && table[h] != f) h = (h + 1) & mask;
        return table[h] == f;
    }
    default:
        for (size_t j = 0; j < s->n; j++)
            if (s->few[j] == f) return true;
        return false;
    }
}

static inline void cf__seen_free(struct cf__seen *s)
{
    if (s->map) cf__free(s->map, s->bytes);
    s->map = NULL;
}

/* The lowest and highest address in fs[0..n) (all non-NULL). */
static inline void cf__addr_range(cf_future *const *fs, size_t n, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t a = UINTPTR_MAX, b = 0;
    for (size_t i = 0; i < n; i++) {
        uintptr_t x = (uintptr_t)fs[i];
        a = x < a ? x : a;
        b = x > b ? x : b;
    }
    *lo = a;
    *hi = b;
}

/* Copy the distinct futures of fs[0..n) (first occurrences, in input
 * order) to uniq[0..*n_uniq) and the others to dups[0..n - *n_uniq).
 * Returns 0 or CF_ENOMEM (nothing written that matters). */
static inline int cf__dedup(cf_future *const *fs, size_t n, cf_future **uniq, cf_future **dups,
                            size_t *n_uniq)
{
    uintptr_t lo = 0, hi = 0;
    if (n > CF__SEEN_SMALL) cf__addr_range(fs, n, &lo, &hi);
    struct cf__seen s;
    if (cf__seen_init(&s, n, lo, hi) != 0) return CF_ENOMEM;
    size_t u = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (cf__seen_add(&s, fs[i])) uniq[u++] = fs[i];
        else dups[d++] = fs[i];
    }
    cf__seen_free(&s);
    *n_uniq = u;
    return 0;
}

#endif
