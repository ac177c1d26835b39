/* USDT probes (provider "cfutures"): a nop in the code and a note in the
 * ELF file (readelf -n), free when nobody listens. perf sees them as
 * sdt_cfutures:NAME after `perf buildid-cache --add libcfutures.so`.
 * One name, one argument list: perf probe refuses a name whose sites
 * differ in their arguments ("File exists"), so a probe placed twice must
 * pass the same kinds of values at both sites. */
#ifndef CF_PROBES_H
#define CF_PROBES_H

#if defined(CF_HAVE_SDT)
#include <sys/sdt.h>
#define CF__PROBE1(name, a) DTRACE_PROBE1(cfutures, name, a)
#define CF__PROBE2(name, a, b) DTRACE_PROBE2(cfutures, name, a, b)
#define CF__PROBE3(name, a, b, c) DTRACE_PROBE3(cfutures, name, a, b, c)
#else
#define CF__PROBE1(name, a) ((void)(a))
#define CF__PROBE2(name, a, b) ((void)(a), (void)(b))
#define CF__PROBE3(name, a, b, c) ((void)(a), (void)(b), (void)(c))
#endif

#endif
