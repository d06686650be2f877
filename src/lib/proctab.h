/* proctab: every process's pid, parent and state as /proc shows them, for the child reaper and the keeper.
 *
 * A table is a snapshot: a process may exit, or fork, right after it was read. Its owner reads it again when it
 * needs a fresh one (the table's memory is reused). /proc may belong to another pid namespace than the caller's
 * (a pid namespace without its own /proc mount): its pids are then not the caller's, proctab_is_ours() says so,
 * and callers must not act on them. */
#ifndef CHUNKD_PROCTAB_H
#define CHUNKD_PROCTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct proctab_entry {
    pid_t pid, ppid;
    char state;                  /* 'R', 'S', 'Z' (exited, not reaped), ... */
} proctab_entry_t;

/* Zero-initialized before the first read; owned by one thread. */
typedef struct proctab {
    proctab_entry_t *v;          /* in /proc's order */
    size_t n, cap;
} proctab_t;

/* True when /proc shows the caller under the pid getpid() returns: /proc is this pid namespace's. */
bool proctab_is_ours(void);
/* Reads every process into t. Returns 0, or -1 when /proc cannot be read. A process gone between the listing and
 * its stat is left out. */
int proctab_read(proctab_t *t);
void proctab_free(proctab_t *t);
/* The process has exited and waits to be reaped (a zombie). */
bool proctab_exited(const proctab_entry_t *e);

#endif
