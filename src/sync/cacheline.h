/* The cache-line size the lock-free structures pad and align to. 64 bytes
 * on every target cfutures supports (x86-64, aarch64 server parts); a
 * structure whose lines must not be shared asserts its layout against it. */
#ifndef CF_SYNC_CACHELINE_H
#define CF_SYNC_CACHELINE_H

#define CF__CACHE_LINE 64

#endif
