/* cfutures: symbol visibility. The library is built with
 * -fvisibility=hidden; only declarations marked CF_API are exported. */
#ifndef CFUTURES_EXPORT_H
#define CFUTURES_EXPORT_H

#if defined(CFUTURES_BUILDING) && defined(__GNUC__)
#define CF_API __attribute__((visibility("default")))
#else
#define CF_API
#endif

#if defined(__GNUC__)
#define CF_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CF_NODISCARD __attribute__((warn_unused_result))
#else
#define CF_PRINTF(fmt, args)
#define CF_NODISCARD
#endif

#endif
