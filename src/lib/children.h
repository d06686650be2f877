/* children: every child process of chunkd, whoever started it, is reaped; none is killed here.
 *
 * One thread, the child reaper (children_start() to children_stop()), reaps the children that no module waits
 * for: those chunkd inherited (a shell that ran `sidecar & exec chunkd ...` leaves its sidecar to chunkd, and a
 * `<(producer)` input may be chunkd's child) and, when chunkd is PID 1 of a pid namespace (a container without an
 * init), every orphan of that namespace. They are reaped when they exit, never killed: they are not chunkd's.
 *
 * A module that waits for a child of its own (the exec handler's keepers, the private redis-server of `chunkd
 * run`) starts it between children_spawn_begin() and children_spawn_end(pid), which claims the pid: the reaper
 * never reaps a claimed child, so it never steals the status its owner waits for. The owner releases the pid once
 * it has reaped it (or gives up waiting for it).
 *
 * Killing what subprocesses leave behind is the keeper's (keeper.h), because only a keeper can tell it apart:
 * each exec subprocess runs under a keeper of its own, a subreaper whose only children are the subprocess and its
 * orphans. chunkd itself is not a subreaper, so its only children are the ones it started and the ones above.
 * The rule: chunkd kills processes that descend from a subprocess it started, and nothing else.
 *
 * The module is process-wide (children are a process's, not an object's): one reaper per process, no handle. */
#ifndef CHUNKD_CHILDREN_H
#define CHUNKD_CHILDREN_H

#include <sys/types.h>

/* Blocks SIGCHLD in the calling thread, which must be the main thread before any other thread starts (threads
 * inherit the mask; the reaper takes SIGCHLD with sigtimedwait), and starts the reaper thread. Returns 0, or -1
 * with err set (chunkd then runs without it). */
int children_start(char *err, size_t errlen);
/* Reaps every unclaimed child that has exited and joins the reaper. Any thread but the reaper; a no-op without
 * children_start(). Children still running are left running. */
void children_stop(void);

/* Around the start of a child its caller will reap itself: children_spawn_begin() takes the claim lock (the
 * reaper reaps nothing while it is held), children_spawn_end(pid) claims pid (0 or less: none was started) and
 * drops the lock. Keep the section short: fork/posix_spawn and nothing that waits. */
void children_spawn_begin(void);
void children_spawn_end(pid_t pid);
/* The caller has reaped pid, or leaves it to the reaper: it is no longer claimed. */
void children_release(pid_t pid);

#endif
