/* sig: signals are taken in one place. sig_init() blocks SIGINT and SIGTERM before any thread starts (threads
 * inherit the mask) and ignores SIGPIPE; the main thread then takes them synchronously with sig_wait(). No
 * signal handler runs, so nothing async-signal-unsafe can happen in one. */
#ifndef CHUNKD_SIG_H
#define CHUNKD_SIG_H

void sig_init(void);
/* Waits up to timeout_ms for SIGINT or SIGTERM. Returns the signal number, or 0 on timeout or sig_wake(). */
int sig_wait(int timeout_ms);
/* Wakes the thread in sig_wait() (any thread may call it, e.g. when a job it waits for is done). */
void sig_wake(void);

#endif
