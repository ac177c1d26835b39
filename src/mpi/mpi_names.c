/* Module table and function naming (mpi_names.h says why). */
#include "mpi/mpi_names.h"

#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

struct scan {
    struct cf__mpi_modules *t;
    size_t cap;
    int err;
};

/* The GNU build-id in the module's notes, or 0 bytes. */
static size_t build_id(const struct dl_phdr_info *info, unsigned char *out, size_t cap)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            ElfW(Nhdr) nh;
            memcpy(&nh, p, sizeof nh);
            size_t name_sz = (nh.n_namesz + 3u) & ~3u, desc_sz = (nh.n_descsz + 3u) & ~3u;
            const unsigned char *name = p + sizeof nh, *desc = name + name_sz;
            if (desc + desc_sz > end) break;
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
                nh.n_descsz > 0 && nh.n_descsz <= cap) {
                memcpy(out, desc, nh.n_descsz);
                return nh.n_descsz;
            }
            p = desc + desc_sz;
        }
    }
    return 0;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct scan *s = data;
    struct cf__mpi_module m = {.bias = info->dlpi_addr, .lo = UINTPTR_MAX, .hi = 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (lo < m.lo) m.lo = lo;
        if (hi > m.hi) m.hi = hi;
    }
    if (m.hi == 0) return 0; /* no code */
    size_t n = build_id(info, m.key + 1, sizeof m.key - 1);
    if (n) {
        m.key[0] = 'B';
        m.key_len = (uint32_t)(n + 1);
    } else {
        /* No build-id: the path names it (the main program's is ""). */
        const char *path = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "<main>";
        size_t len = strlen(path);
        if (len > sizeof m.key - 1) len = sizeof m.key - 1;
        m.key[0] = 'P';
        memcpy(m.key + 1, path, len);
        m.key_len = (uint32_t)(len + 1);
    }
    struct cf__mpi_modules *t = s->t;
    if (t->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        struct cf__mpi_module *mod = realloc(t->mod, cap * sizeof *mod);
        if (!mod) {
            s->err = CF_ENOMEM;
            return 1;
        }
        t->mod = mod;
        s->cap = cap;
    }
    t->mod[t->n++] = m;
    return 0;
}

int cf__mpi_modules_scan(struct cf__mpi_modules *t)
{
    *t = (struct cf__mpi_modules){0};
    struct scan s = {.t = t};
    dl_iterate_phdr(scan_one, &s);
    if (s.err) {
        cf__mpi_modules_free(t);
        return s.err;
    }
    t->everywhere = calloc(t->n ? t->n : 1, sizeof *t->everywhere);
    if (!t->everywhere) {
        cf__mpi_modules_free(t);
        return CF_ENOMEM;
    }
    return 0;
}

void cf__mpi_modules_free(struct cf__mpi_modules *t)
{
    free(t->mod);
    free(t->everywhere);
    *t = (struct cf__mpi_modules){0};
}

unsigned char *cf__mpi_modules_pack(const struct cf__mpi_modules *t, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) n += sizeof(uint32_t) + t->mod[i].key_len;
    unsigned char *buf = malloc(n ? n : 1), *p = buf;
    if (!buf) return NULL;
    for (size_t i = 0; i < t->n; i++) {
        memcpy(p, &t->mod[i].key_len, sizeof(uint32_t));
        memcpy(p + sizeof(uint32_t), t->mod[i].key, t->mod[i].key_len);
        p += sizeof(uint32_t) + t->mod[i].key_len;
    }
    *len = n;
    return buf;
}

int cf__mpi_modules_match(const struct cf__mpi_modules *local, const unsigned char *packed,
                          size_t len, uintptr_t **biases, size_t *n)
{
    size_t count = 0;
    for (size_t at = 0; at + sizeof(uint32_t) <= len; count++) {
        uint32_t k;
        memcpy(&k, packed + at, sizeof k);
        at += sizeof k + k;
    }
    uintptr_t *b = calloc(count ? count : 1, sizeof *b);
    if (!b) return CF_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t k;
        memcpy(&k, packed + at, sizeof k);
        const unsigned char *key = packed + at + sizeof k;
        at += sizeof k + k;
        if (at > len) break;
        for (size_t j = 0; j < local->n; j++) {
            if (local->mod[j].key_len == k && memcmp(local->mod[j].key, key, k) == 0) {
                /* A bias of 0 is a real one (a non-PIE program): store it
                 * +1 so 0 can mean "missing". */
                b[i] = local->mod[j].bias + 1;
                break;
            }
        }
    }
    *biases = b;
    *n = count;
    return 0;
}

int cf__mpi_name(const struct cf__mpi_modules *t, cf_task_fn *fn, uint32_t *mod, uint64_t *off)
{
    uintptr_t a = (uintptr_t)fn;
    for (size_t i = 0; i < t->n; i++) {
        const struct cf__mpi_module *m = &t->mod[i];
        if (a >= m->lo && a < m->hi) {
            if (!t->everywhere[i]) return CF_ENOTSUP;
            *mod = (uint32_t)i;
            *off = a - m->bias;
            return 0;
        }
    }
    return CF_ENOTSUP;
}
