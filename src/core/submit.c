/* cf_submit_ex: a submission with a context pointer and a done-callback,
 * built on the executor's plain submit (core/executor.h), so that every
 * executor has it.
 *
 * - The context travels in the argument: the task queued is ctx_run with
 *   the argument [fn, context, the caller's bytes]; ctx_run sets the
 *   cf_out's context, calls fn on the caller's bytes and clears it. In a
 *   process pool the two words reach the worker as bytes: fn is the same
 *   address there (a fork), the context the same address in the worker's
 *   copy of memory.
 * - The callback's nodes are allocated before the submit, so nothing can
 *   fail after the task is queued (a failed call never runs fn or the
 *   callback), and hung on the future just after it (never failing; if
 *   the task is already done, the callback runs here and now).
 * - Without `out`, the caller's reference stays with the future until the
 *   callback has run: a second node, after the caller's, drops it
 *   (callbacks run in registration order). */
#include <string.h>

#include "sys/alloc.h"
#include "core/executor.h"
#include "core/future.h"

struct ctx_head {
    cf_task_fn *fn;
    void *ctx;
};

static int ctx_run(const void *arg, size_t len, cf_out *out)
{
    struct ctx_head h;
    if (len < sizeof h) return CF_EINVAL; /* not built by cf_submit_ex */
    memcpy(&h, arg, sizeof h);
    void *outer = out->ctx;
    out->ctx = h.ctx;
    int rc = h.fn((const char *)arg + sizeof h, len - sizeof h, out);
    out->ctx = outer;
    return rc;
}

static void drop_caller_ref(cf_future *f, void *unused)
{
    (void)unused;
    cf_future_release(f);
}

static bool opts_ok(const cf_submit_opts *o)
{
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i]) return false;
    return true;
}

/* Submit fn with the context in front of its argument. */
static int submit_with_ctx(cf_executor *ex, cf_task_fn *fn, void *ctx, const void *arg, size_t len,
                           cf_future **f)
{
    struct ctx_head h = {fn, ctx};
    if (len > SIZE_MAX - sizeof h) return CF_ETOOBIG;
    size_t total = sizeof h + len;
    unsigned char small[256];
    unsigned char *buf = total <= sizeof small ? small : cf__alloc(total);
    if (!buf) return CF_ENOMEM;
    memcpy(buf, &h, sizeof h);
    if (len) memcpy(buf + sizeof h, arg, len);
    int rc = ex->ops->submit(ex, ctx_run, buf, total, f); /* copies the bytes */
    if (buf != small) cf__free(buf, total);
    return rc;
}

CF_API int cf_submit_ex(cf_executor *ex, cf_task_fn *fn, const void *arg, size_t arg_len,
                        const cf_submit_opts *opts, cf_future **out)
{
    if (!ex || !ex->ops || !fn || (!arg && arg_len > 0)) return CF_EINVAL;
    static const cf_submit_opts none;
    const cf_submit_opts *o = opts ? opts : &none;
    if (!opts_ok(o)) return CF_EINVAL;
    struct cf__listener *cb = NULL, *drop = NULL;
    if (o->on_done && !(cb = cf__listener_new(o->on_done, o->on_done_arg))) return CF_ENOMEM;
    if (!out && o->on_done && !(drop = cf__listener_new(drop_caller_ref, NULL))) {
        cf__listener_free(cb);
        return CF_ENOMEM;
    }
    cf_future *f;
    int rc = o->context ? submit_with_ctx(ex, fn, o->context, arg, arg_len, &f)
                        : ex->ops->submit(ex, fn, arg, arg_len, &f);
    if (rc != 0) {
        cf__listener_free(cb);
        cf__listener_free(drop);
        return rc;
    }
    if (cb) cf__future_add_listener(f, cb);
    if (drop) cf__future_add_listener(f, drop); /* drops our reference after cb */
    else if (!out) cf_future_release(f);        /* no callback: nothing to keep it for */
    if (out) *out = f;
    return 0;
}
