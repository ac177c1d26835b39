/* File gates for the MPI tests. Their tasks run in other processes (on
 * this host), so a gate is a file in a directory the root makes: a gate
 * task announces that it started by creating one file and waits until
 * another exists. Compiled into each test program, so the serving ranks
 * (the same executable) can name gate_task. */
#ifndef CF_TEST_MPI_FILE_GATES_H
#define CF_TEST_MPI_FILE_GATES_H

#include <stddef.h>

#include <cfutures.h>

/* Make the directory (mkdtemp on prefix "…XXXXXX"): 0 or -1. */
int gates_make(const char *prefix);
/* Remove it and its files (nothing if it was never made). */
void gates_remove(void);

/* Argument: "<dir>/<started>\0<dir>/<gate>\0". Creates the first file, then
 * waits (at most a minute) until the second exists; returns the pid. */
int gate_task(const void *arg, size_t len, cf_out *out);
/* Writes gate_task's argument into buf; returns its length. */
size_t gate_arg(char *buf, size_t cap, const char *started, const char *gate);
void gate_touch(const char *name);      /* create the file (cmocka assert) */
void gate_await_file(const char *name); /* wait up to a minute for it (cmocka assert) */

#endif
