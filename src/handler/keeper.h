/* keeper: one exec subprocess under a subreaper of its own, so that what it leaves behind is known and killed.
 *
 * The exec handler does not start its --cmd directly: it runs chunkd itself again (/proc/self/exe) with argv[0]
 * KEEPER_ARGV0 and the command as the rest of argv. That process, the keeper, makes itself a child subreaper
 * (PR_SET_CHILD_SUBREAPER) and forks and execs the command. Every process below the command whose parent dies
 * becomes the keeper's child, whatever it did meanwhile (setsid() included); nothing else can: the keeper's only
 * children are the command and what the command left. So the keeper's children are exactly the command's orphans,
 * and it may kill them all. That is the rule: chunkd kills only processes that descend from a subprocess it
 * started, never its own other children (processes it inherited, e.g. a sidecar of `sh -c 'sidecar & exec
 * chunkd ...'`, or, as PID 1, the orphans of the container), which the child reaper (children.h) only reaps.
 *
 * The keeper reaps the orphans that exit while the command runs. When the command exits, or when the keeper is
 * asked to stop (SIGTERM, SIGINT or SIGHUP: it then SIGKILLs the command), it SIGKILLs the command's process group
 * and every child it has, again until it has none left (at most KEEPER_KILL_MS), and exits as the command did:
 * the same exit status, or killed by the same signal. Its own children cannot be reaped by anyone else, so a pid
 * it kills is never a reused one. It finds them through /proc; when /proc is not this pid namespace's it kills
 * the process group only, and the rest go to the nearest subreaper (or init), which reaps them.
 *
 * A keeper that is SIGKILLed itself cannot clean up: the command and what it left then go on to chunkd's
 * nearest subreaper or init (the command still sees EOF on stdin once chunkd closes it). Send it SIGTERM. When
 * chunkd itself ends without stopping it (a second signal's _exit, kill -9, a crash), the keeper gets
 * KEEPER_STOP_SIGNAL as its parent-death signal and cleans up as on a stop.
 *
 * Descriptors: the command gets the keeper's 0, 1 and 2. KEEPER_STATUS_FD, when open, is a pipe to the spawner:
 * closed without a byte when the command has been exec'd, or given the exec's errno (an int) when it could not be.
 * Every other descriptor is the spawner's to close (posix_spawn's closefrom). The keeper keeps stderr (for its own
 * rare messages) and puts /dev/null on its stdin and stdout. Its environment is the command's. */
#ifndef CHUNKD_KEEPER_H
#define CHUNKD_KEEPER_H

#define KEEPER_ARGV0 "chunkd-keeper" /* argv[0] that makes chunkd the keeper (main.c checks it first) */
#define KEEPER_STATUS_FD 3
#define KEEPER_STOP_SIGNAL SIGTERM   /* to the keeper: kill the command and everything it left, then exit */

#include <sys/types.h>

/* Starts a keeper running the command argv (argv[0] looked up in the PATH of envp, which is the environment of
 * both) with fds[0], fds[1], fds[2] as its stdin, stdout and stderr (the caller closes its own copies). The pid
 * is claimed from the child reaper (children.h): the caller reaps it (a pidfd shows its exit) and then releases
 * it. Blocks until the command has been exec'd (the time chunkd takes to start, a few ms). Returns 0 with *pid
 * set, or an errno value when the keeper or the command could not be started (then nothing is left running: the
 * keeper was reaped and released). */
int keeper_spawn(char *const argv[], char *const envp[], const int fds[3], pid_t *pid);
/* Asks the keeper pid (not reaped yet) to SIGKILL its command and everything the command left, and to exit. */
void keeper_stop(pid_t pid);

/* The keeper's main: argv is the command (argv[0] looked up in PATH), argc > 0. Returns the exit status (or does
 * not return: killed by the command's signal). */
int keeper_main(int argc, char **argv);

#endif
