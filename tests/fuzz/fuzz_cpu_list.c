/* libFuzzer target: the CPU list parser (cf__cpu_list_parse, src/sys/config.c),
 * as CFUTURES_CPUS and the cpu_list option use it.
 *
 * Properties checked on every input: a count is returned the same for any
 * capacity; the CPUs are each in [0, CF__MAX_CPU] with no repeat; and
 * writing them back one by one ("3,4,5,8") parses to the same sequence. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sys/config.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stdout, "fuzz_cpu_list: %s failed (line %d)\n", #cond, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    int n = cf__cpu_list_parse(s, NULL, 0);
    CHECK(n == CF_EINVAL || (n > 0 && n <= CF__MAX_CPU + 1));
    if (n > 0) {
        int *cpus = malloc(sizeof(int) * (size_t)n);
        CHECK(cpus);
        CHECK(cf__cpu_list_parse(s, cpus, n) == n);
        unsigned char seen[CF__MAX_CPU + 1] = {0};
        for (int i = 0; i < n; i++) {
            CHECK(cpus[i] >= 0 && cpus[i] <= CF__MAX_CPU);
            CHECK(!seen[cpus[i]]);
            seen[cpus[i]] = 1;
        }
        /* A smaller capacity stores a prefix and still counts them all. */
        int half = n / 2;
        int *part = malloc(sizeof(int) * (size_t)(half + 1));
        CHECK(part);
        CHECK(cf__cpu_list_parse(s, part, half) == n);
        CHECK(memcmp(part, cpus, sizeof(int) * (size_t)half) == 0);
        free(part);
        /* Round trip through the plain comma form. */
        size_t cap = (size_t)n * 6 + 1, len = 0;
        char *back = malloc(cap);
        CHECK(back);
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(back + len, cap - len, "%s%d", i ? "," : "", cpus[i]);
        int *again = malloc(sizeof(int) * (size_t)n);
        CHECK(again);
        CHECK(cf__cpu_list_parse(back, again, n) == n);
        CHECK(memcmp(again, cpus, sizeof(int) * (size_t)n) == 0);
        free(again);
        free(back);
        free(cpus);
    }
    free(s);
    return 0;
}
