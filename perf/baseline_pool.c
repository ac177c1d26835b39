/* Baseline: a plain mutex+condvar thread pool and mutex+condvar futures.
 *
 * The queue is one singly linked FIFO under one mutex; idle workers sleep on
 * one condvar, and each submit signals it. A future is a mutex, a condvar,
 * a done flag and its result inline. Nothing here is lock-free or tuned:
 * it is what cfutures' ratios are measured against. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "baseline_pool.h"

struct bl_future {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int refs;
    bool done;
    int rc;
    size_t len;
    struct bl_waiter *waiter; /* guarded by mu */
    unsigned char data[BL_RESULT_MAX];
};

struct bl_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t head, tail, cap;
    struct bl_future **done; /* FIFO of completed futures */
};

struct bl_task {
    struct bl_task *next;
    bl_fn *fn;
    struct bl_future *f;
    size_t len;
    unsigned char arg[];
};

struct bl_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct bl_task *head, *tail;
    bool stop;
    int n;
    pthread_t threads[];
};

/* ---- futures ---- */

struct bl_future *bl_future_new(int refs)
{
    struct bl_future *f = malloc(sizeof *f);
    if (!f) return NULL;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    /* relaxed: not yet shared. */
    atomic_store_explicit(&f->refs, refs, memory_order_relaxed);
    f->done = false;
    f->rc = 0;
    f->len = 0;
    f->waiter = NULL;
    return f;
}

static void waiter_push(struct bl_waiter *w, struct bl_future *f)
{
    pthread_mutex_lock(&w->mu);
    if (w->tail < w->cap) w->done[w->tail++] = f;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void bl_future_complete(struct bl_future *f, int rc, const void *data, size_t len)
{
    pthread_mutex_lock(&f->mu);
    f->rc = rc;
    f->len = len > BL_RESULT_MAX ? BL_RESULT_MAX : len;
    if (f->len) memcpy(f->data, data, f->len);
    f->done = true;
    struct bl_waiter *w = f->waiter;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (w) waiter_push(w, f);
}

int bl_future_result(struct bl_future *f, const void **data, size_t *len)
{
    pthread_mutex_lock(&f->mu);
    while (!f->done) pthread_cond_wait(&f->cv, &f->mu);
    int rc = f->rc;
    pthread_mutex_unlock(&f->mu);
    if (data) *data = f->data;
    if (len) *len = f->len;
    return rc;
}

bool bl_future_done(struct bl_future *f)
{
    pthread_mutex_lock(&f->mu);
    bool d = f->done;
    pthread_mutex_unlock(&f->mu);
    return d;
}

void bl_future_release(struct bl_future *f)
{
    /* acq_rel: the last owner must see every write of the others before it
     * frees (pairs with the other owners' release decrements). */
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        free(f);
    }
}

/* ---- as_completed ---- */

struct bl_waiter *bl_waiter_new(size_t n)
{
    struct bl_waiter *w = malloc(sizeof *w);
    if (!w) return NULL;
    w->done = malloc((n ? n : 1) * sizeof *w->done);
    if (!w->done) {
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->head = w->tail = 0;
    w->cap = n;
    return w;
}

void bl_waiter_watch(struct bl_waiter *w, struct bl_future *f)
{
    pthread_mutex_lock(&f->mu);
    bool done = f->done;
    if (!done) f->waiter = w;
    pthread_mutex_unlock(&f->mu);
    if (done) waiter_push(w, f);
}

struct bl_future *bl_waiter_next(struct bl_waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->head == w->tail && w->head < w->cap) pthread_cond_wait(&w->cv, &w->mu);
    struct bl_future *f = w->head < w->tail ? w->done[w->head++] : NULL;
    pthread_mutex_unlock(&w->mu);
    return f;
}

void bl_waiter_free(struct bl_waiter *w)
{
    if (!w) return;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->done);
    free(w);
}

/* ---- the thread pool ---- */

static void *worker_main(void *arg)
{
    struct bl_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        struct bl_task *t = p->head;
        if (!t) { /* stop, and nothing left */
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        p->head = t->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);

        unsigned char res[BL_RESULT_MAX];
        size_t len = 0;
        int rc = t->fn(t->arg, t->len, res, &len);
        bl_future_complete(t->f, rc, res, len);
        bl_future_release(t->f);
        free(t);
    }
}

struct bl_pool *bl_pool_new(int workers)
{
    struct bl_pool *p = malloc(sizeof *p + (size_t)workers * sizeof(pthread_t));
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->head = p->tail = NULL;
    p->stop = false;
    p->n = 0;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) break;
        p->n++;
    }
    if (p->n == 0) {
        free(p);
        return NULL;
    }
    return p;
}

struct bl_future *bl_submit(struct bl_pool *p, bl_fn *fn, const void *arg, size_t arg_len)
{
    struct bl_task *t = malloc(sizeof *t + arg_len);
    struct bl_future *f = bl_future_new(2); /* the caller's and the task's */
    if (!t || !f) {
        free(t);
        if (f) free(f);
        return NULL;
    }
    t->next = NULL;
    t->fn = fn;
    t->f = f;
    t->len = arg_len;
    if (arg_len) memcpy(t->arg, arg, arg_len);
    pthread_mutex_lock(&p->mu);
    if (p->tail) p->tail->next = t;
    else p->head = t;
    p->tail = t;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return f;
}

void bl_pool_free(struct bl_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
