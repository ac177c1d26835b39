/* Where a running task writes its result (cf_out_*), staged for the executor.
 *
 * A result starts in o->small (CF__INLINE_RES bytes, no allocation); a
 * larger one lives in a cf__alloc'd buffer that the executor hands over to
 * the future without copying. A cf_out belongs to the one thread running
 * the task: nothing here is shared, so nothing here is atomic, except the
 * word a cancel request shows in (cf_out_cancel_requested), which the
 * canceller writes from another thread or process.
 *
 * o->failed records the outcome of the last result-setting call (0, or
 * CF_ENOMEM / CF_ETOOBIG): a task that ignores a failed cf_out_set and
 * returns 0 does not pass off a stale result as its own. */
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sys/alloc.h"
#include "core/future.h"

void cf__out_init(struct cf_out *o)
{
    o->data = o->small;
    o->len = 0;
    o->cap = 0;
    o->code = 0;
    o->msg = NULL;
    o->failed = 0;
    o->ctx = NULL;
    o->future = NULL;
    o->cancel_word = NULL;
    o->cancel_key = 0;
}

static void out_drop_buffer(struct cf_out *o)
{
    if (o->data != o->small) cf__free(o->data, o->cap);
    o->data = o->small;
    o->cap = 0;
    o->len = 0;
}

void cf__out_dispose(struct cf_out *o)
{
    if (!o) return;
    out_drop_buffer(o);
    cf__free_str(o->msg);
    cf__out_init(o);
}

/* Make room for len bytes; the old contents are not kept. NULL on failure
 * (o->failed says why; the previous result is dropped either way, so a
 * failed call never leaves a half-replaced one). */
static void *out_reserve(struct cf_out *o, size_t len)
{
    if (len > UINT32_MAX) {
        out_drop_buffer(o);
        o->failed = CF_ETOOBIG;
        return NULL;
    }
    if (len <= CF__INLINE_RES) {
        out_drop_buffer(o);
    } else if (o->data == o->small || o->cap < len) {
        void *p = cf__alloc(len);
        if (!p) {
            out_drop_buffer(o);
            o->failed = CF_ENOMEM;
            return NULL;
        }
        out_drop_buffer(o);
        o->data = p;
        o->cap = len;
    }
    o->len = len;
    o->failed = 0;
    return o->data;
}

int cf_out_alloc(cf_out *o, size_t len, void **buf)
{
    if (buf) *buf = NULL;
    if (!o || !buf) return CF_EINVAL;
    *buf = out_reserve(o, len);
    return *buf ? 0 : o->failed;
}

int cf_out_set(cf_out *o, const void *data, size_t len)
{
    if (!o || (!data && len)) return CF_EINVAL;
    const unsigned char *d = data, *buf = o->data;
    if (len && o->data != o->small && d >= buf && d < buf + o->cap) {
        /* Part of the current heap result becomes the result: keep the
         * buffer alive until the bytes have moved. */
        if (len > o->cap - (size_t)(d - buf)) return CF_EINVAL;
        if (len <= CF__INLINE_RES) {
            memcpy(o->small, d, len);
            cf__free(o->data, o->cap);
            o->data = o->small;
            o->cap = 0;
        } else {
            memmove(o->data, d, len);
        }
        o->len = len;
        o->failed = 0;
        return 0;
    }
    void *p = out_reserve(o, len);
    if (!p) return o->failed;
    if (len) memmove(p, data, len); /* data may point into the old result */
    return 0;
}

/* Scalars: when no heap result is held (the usual case) this is exactly
 * what cf_out_set does - drop nothing, copy into small[], clear failed -
 * without its checks and calls. The 8-byte ones pass their bits by value
 * to an out-of-line slow path, so the fast path takes no stack frame (a
 * map item costs 10 instructions here instead of 14). */
static __attribute__((noinline)) int out_word_slow(cf_out *o, uint64_t bits)
{
    return cf_out_set(o, &bits, sizeof bits);
}

static inline int out_word(cf_out *o, uint64_t bits)
{
    if (o && o->data == o->small) {
        memcpy(o->small, &bits, sizeof bits);
        o->len = sizeof bits;
        o->failed = 0;
        return 0;
    }
    return out_word_slow(o, bits);
}

int cf_out_i64(cf_out *o, int64_t v)
{
    return out_word(o, (uint64_t)v);
}

int cf_out_f64(cf_out *o, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return out_word(o, bits);
}

static inline int out_scalar(cf_out *o, const void *v, size_t len)
{
    if (o && o->data == o->small) {
        memcpy(o->small, v, len);
        o->len = len;
        o->failed = 0;
        return 0;
    }
    return cf_out_set(o, v, len);
}

int cf_out_ptr(cf_out *o, const void *p)
{
    return out_scalar(o, &p, sizeof p);
}

int cf_out_error(cf_out *o, int code, const char *fmt, ...)
{
    if (code == 0) code = CF_EINVAL;
    if (!o) return code;
    char *msg = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        msg = cf__vformat(fmt, ap); /* out of memory: the code still goes through */
        va_end(ap);
    }
    cf__free_str(o->msg);
    o->msg = msg;
    o->code = code;
    return code;
}

void *cf_out_context(const cf_out *o)
{
    return o ? o->ctx : NULL;
}

bool cf_out_cancel_requested(const cf_out *o)
{
    if (!o) return false;
    /* Acquire, both: pairs with the canceller's release CAS (future.c's
     * request_cancel, or the process pool's on the worker's channel), so
     * what the canceller wrote before cancel() is visible to the task. */
    if (o->future)
        return (atomic_load_explicit(&o->future->state, memory_order_acquire) & CF__CANCEL_REQ) !=
               0;
    return o->cancel_word &&
           atomic_load_explicit(o->cancel_word, memory_order_acquire) == o->cancel_key;
}
