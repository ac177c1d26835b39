/* Fork detection (fork.c), shared by the thread pool and the process pool:
 * a process generation bumped in the child of every fork() (a
 * pthread_atfork handler that cf__pool_fork_watch installs once). A pool
 * made under another value is a snapshot from the parent: in a child it
 * has no worker threads (or no collector), and every call that would need
 * them is refused. */
#ifndef CF_SYS_FORK_H
#define CF_SYS_FORK_H

#include <stdatomic.h>

extern _Atomic unsigned cf__fork_gen;
void cf__pool_fork_watch(void); /* before reading the generation for a new pool */

/* The generation of the calling process. Relaxed: written only by the
 * single thread of a fresh child. */
static inline unsigned cf__proc_gen(void)
{
    return atomic_load_explicit(&cf__fork_gen, memory_order_relaxed);
}

#endif
