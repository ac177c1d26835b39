/* The structure that holds a member, from a pointer to that member: the one
 * way the code goes from an embedded link (a queue node, an ops table
 * inside its owner) back to its owner. `ptr` must point at `member` of a
 * live `type`; nothing is checked. */
#ifndef CF_SYNC_CONTAINER_OF_H
#define CF_SYNC_CONTAINER_OF_H

#include <stddef.h>

#define CF__CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
