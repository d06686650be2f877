/* localredis: the private redis-server of `chunkd run`.
 *
 * It listens only on a unix socket in a fresh temporary directory (no TCP port, no persistence), runs in a process
 * group of its own (a terminal's Ctrl-C reaches chunkd, not the server chunkd is still draining into), dies with
 * its parent (PR_SET_PDEATHSIG), and is stopped and its directory removed by localredis_stop(). Start it before
 * the worker's threads: it forks. Its pid is claimed from the child reaper (children.h) from fork to waitpid. */
#ifndef CHUNKD_LOCALREDIS_H
#define CHUNKD_LOCALREDIS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct localredis localredis_t;

/* Starts server_bin and waits until it answers PING. Returns NULL with a reason in err. */
localredis_t *localredis_start(const char *server_bin, char *err, size_t errlen);
/* unix:// URL of the server. */
const char *localredis_url(const localredis_t *r);
/* True when the server has exited (killed from outside: chunkd stops it only in localredis_stop), with how in why.
 * Call from the thread that started it. */
bool localredis_exited(localredis_t *r, char *why, size_t whylen);
void localredis_stop(localredis_t *r);
/* For an exit at once (a second signal): SIGKILLs the server and removes its directory, without freeing r. */
void localredis_kill_now(localredis_t *r);

#endif
