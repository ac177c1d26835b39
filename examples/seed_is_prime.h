/* The seed article's is_prime, as written there: no test for even n, odd k
 * from 3 while k < int(n**0.5 + 1.5). Shared by primes.c and background.c. */
#ifndef SEED_IS_PRIME_H
#define SEED_IS_PRIME_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static bool is_prime(int64_t n)
{
    if (n < 2) return false;
    if (n == 2 || n == 3) return true;
    int64_t end = (int64_t)(sqrt((double)n) + 1.5);
    for (int64_t k = 3; k < end; k += 2)
        if (n % k == 0) return false;
    return true;
}

#endif
