/* cfutures: a completion channel, for an event loop.
 *
 * A channel has a file descriptor (an eventfd) that an event loop watches
 * for readability (epoll, poll, libuv's uv_poll, io_uring's poll): it
 * becomes readable when a future attached to the channel finishes, and
 * cf_channel_drain hands out the finished futures, each with the tag it
 * was attached with, in the order they finished. Futures of any executors
 * may share one channel.
 *
 *   cf_channel *ch;
 *   cf_channel_new(&ch);
 *   epoll_ctl(ep, EPOLL_CTL_ADD, cf_channel_fd(ch), &(struct epoll_event){EPOLLIN, ...});
 *   cf_channel_add(ch, f, request_id); cf_future_release(f);   // fire and forget
 *   ...the fd is readable:
 *   cf_future *done[64]; uint64_t tags[64]; size_t n;
 *   cf_channel_drain(ch, done, tags, 64, &n);   // answer tags[i] with done[i], release it
 *
 * Threads: cf_channel_add may be called from any thread, also from a task
 * or a done-callback, at the same time as another add or a drain. Drain is
 * for one thread at a time (the event loop's); cf_channel_free must not
 * run at the same time as any other call on the channel. Futures may
 * finish in any thread meanwhile (pool workers, the process pool's
 * collector, a cf_future_set_result caller). */
#ifndef CFUTURES_CHANNEL_H
#define CFUTURES_CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include "export.h"
#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_channel cf_channel;

/* A new, empty channel in *out: 0, CF_EINVAL (out NULL), CF_ENOMEM, or
 * CF_ESYS when no eventfd can be made (errno says why: out of
 * descriptors, say). *out is NULL on failure. */
CF_API int cf_channel_new(cf_channel **out);

/* The channel's descriptor (an eventfd, close-on-exec, non-blocking), or
 * CF_EINVAL for NULL. Watch it for readability; do not read, write or
 * close it: cf_channel_drain resets it, cf_channel_free closes it.
 * Readable means "drain may have something": it stays readable while
 * finished futures are left to drain (also after a drain that could not
 * take them all), and it may be readable with nothing to drain once in a
 * while (drain then returns 0 futures and clears it). It works with level-
 * and edge-triggered waits alike: every time it goes from nothing to drain
 * to something to drain, the channel writes to it. */
CF_API int cf_channel_fd(const cf_channel *ch);

/* Attach f: once f is done (finished or cancelled), drain hands it out
 * with tag. The channel takes its own reference, so the caller may release
 * its own at once. A future already done is ready at once. A future may
 * be attached to several channels, or to one several times (it is then
 * handed out once per add). Returns 0, CF_EINVAL or CF_ENOMEM (then
 * nothing was attached). */
CF_API int cf_channel_add(cf_channel *ch, cf_future *f, uint64_t tag);

/* Take up to cap finished futures, oldest completion first: *n of them
 * (0 if none), futures[i] with tags[i]. Each future in futures[] comes
 * with the channel's reference, which the caller must release; with
 * futures NULL the channel releases them itself. tags may be NULL. Never
 * blocks. Returns 0 or CF_EINVAL (ch or n NULL). */
CF_API int cf_channel_drain(cf_channel *ch, cf_future **futures, uint64_t *tags, size_t cap,
                            size_t *n);

/* Futures attached and not yet drained (finished or not). */
CF_API size_t cf_channel_pending(const cf_channel *ch);

/* Detach every future not yet drained (their references are released,
 * nothing is handed out) and close the descriptor (remove it from an epoll
 * set first, or let the close do it). A future finishing meanwhile is
 * waited for, for the few steps of its hand-over, so nothing touches the
 * channel after this returns. NULL is a no-op. */
CF_API void cf_channel_free(cf_channel *ch);

#ifdef __cplusplus
}
#endif
#endif
