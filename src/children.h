/* children: every child process of chunkd, whoever started it, is reaped; what subprocesses leave behind is killed.
 *
 * One thread, the child reaper (children_start() to children_stop()), owns this: it alone reaps the children that
 * no module waits for, and it alone kills orphans. A module that waits for a child of its own (the exec handler's
 * subprocesses, the private redis-server of `chunkd run`) starts it between children_spawn_begin() and
 * children_spawn_end(pid), which claims the pid: the reaper never reaps a claimed child, so it never steals the
 * status its owner waits for. The owner releases the pid once it has reaped it (or gives up waiting for it).
 *
 * Orphans: when chunkd is not PID 1 it makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a process
 * below chunkd whose parent dies becomes chunkd's child, as it would if chunkd were PID 1 of a pid namespace.
 * Any unclaimed child is such an orphan: it was left behind by a subprocess (or, for PID 1, by anything in the
 * namespace). children_kill_orphans() asks the reaper to SIGKILL every orphan and everything below it (processes
 * that called setsid() included, which a process-group kill misses); children_stop() does it once more before it
 * returns. The reaper finds them through /proc (each process's parent), and only when /proc is this pid
 * namespace's; otherwise orphans are reaped but not killed (logged at start).
 *
 * The module is process-wide (children are a process's, not an object's): one reaper per process, no handle. */
#ifndef CHUNKD_CHILDREN_H
#define CHUNKD_CHILDREN_H

#include <sys/types.h>

/* Blocks SIGCHLD in the calling thread, which must be the main thread before any other thread starts (threads
 * inherit the mask; the reaper takes SIGCHLD with sigtimedwait), makes chunkd a subreaper unless it is PID 1, and
 * starts the reaper thread. Returns 0, or -1 with err set (chunkd then runs without it). */
int children_start(char *err, size_t errlen);
/* Kills every orphan, reaps what it can within CHILDREN_STOP_MS, and joins the reaper. Any thread but the reaper;
 * a no-op without children_start(). */
void children_stop(void);

/* Around the start of a child its caller will reap itself: children_spawn_begin() takes the claim lock (the
 * reaper neither reaps nor kills while it is held), children_spawn_end(pid) claims pid (0 or less: none was
 * started) and drops the lock. Keep the section short: fork/posix_spawn and nothing that waits. */
void children_spawn_begin(void);
void children_spawn_end(pid_t pid);
/* The caller has reaped pid, or leaves it to the reaper: it is no longer claimed. */
void children_release(pid_t pid);

/* Asks the reaper to kill every orphan and everything below it, soon (it does not wait). Called when a
 * subprocess has ended: whatever it left is an orphan by then. Any thread. */
void children_kill_orphans(void);

#endif
