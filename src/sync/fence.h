/* A seq_cst fence that ThreadSanitizer understands.
 *
 * GCC's TSan does not model atomic_thread_fence (and warns about it, which
 * -Werror turns into an error). Under CF_TSAN the fence becomes a seq_cst
 * read-modify-write of one process-wide word: any two such "fences" are
 * totally ordered and the later one synchronises with the earlier, which
 * is stronger than the fence-fence rule our protocols rely on (deque.c,
 * eventcount.h), so every pairing stays correct and TSan sees it. */
#ifndef CF_FENCE_H
#define CF_FENCE_H

#include <stdatomic.h>

#ifdef CF_TSAN
extern _Atomic unsigned cf__tsan_fence_word; /* eventcount.c */
#define CF__FENCE_SEQ_CST() \
    ((void)atomic_fetch_add_explicit(&cf__tsan_fence_word, 0, memory_order_seq_cst))
#else
#define CF__FENCE_SEQ_CST() atomic_thread_fence(memory_order_seq_cst)
#endif

#endif
