/* Fork detection for the thread pool and the process pool (fork.h): a
 * process generation, bumped in the child of every fork() by a
 * pthread_atfork handler, so a pool can tell that it was made in another
 * process (cf__pool_foreign, cf__pp_foreign) without a getpid() system
 * call on the submit path. thread_pool.c's
 * contract says what a pool does in a fork child.
 *
 * Contract: the counter is written only by the child handler, which runs
 * while the child has one thread; everyone else reads it relaxed. The
 * handler is installed once (pthread_once) by the first pool constructed. */
#include <pthread.h>

#include "sys/fork.h"

_Atomic unsigned cf__fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
    /* Relaxed: the child has one thread when this runs. */
    atomic_fetch_add_explicit(&cf__fork_gen, 1, memory_order_relaxed);
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

void cf__pool_fork_watch(void)
{
    pthread_once(&atfork_once, atfork_register);
}
