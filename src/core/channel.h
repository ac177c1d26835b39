/* Internal view of cf_channel (core/channel.c): only its test hooks. */
#ifndef CF_CHANNEL_INTERNAL_H
#define CF_CHANNEL_INTERNAL_H

#include "cfutures/channel.h"

/* Test hooks (only in the tests' build, CF_TEST_HOOKS), NULL otherwise:
 * - after_reset: called by a drain that found nothing left over, after it
 *   reset the descriptor and before it takes the stack; a test completes
 *   a future there to put a push inside that window.
 * - before_write: called by the push that found the stack empty, after its
 *   CAS and before its write to the descriptor; a test drains there to
 *   take the node before the write lands.
 * Set them before the threads that use the channel start. */
#ifdef CF_TEST_HOOKS
extern void (*cf__test_channel_after_reset)(cf_channel *ch);
extern void (*cf__test_channel_before_write)(cf_channel *ch);
#endif

#endif
