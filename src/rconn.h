/* rconn: one Redis connection (hiredis), with the address, AUTH, SELECT, timeouts and reconnection in one place.
 *
 * A connection belongs to one thread. After any I/O error the hiredis context is unusable, so rconn drops it;
 * the next command fails fast until rconn_reconnect() succeeds. Every message names the address with the
 * password masked. */
#ifndef CHUNKD_RCONN_H
#define CHUNKD_RCONN_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct rconn rconn_t;

/* url must already be valid (settings checked it). timeout_ms bounds connecting and every command. */
rconn_t *rconn_new(const char *url, long long timeout_ms);
void rconn_free(rconn_t *c);

/* Connects, authenticates and selects the database. Returns 0, or -1 with a one-line reason in err. */
int rconn_connect(rconn_t *c, char *err, size_t errlen);

/* Reconnects with capped exponential backoff (100 ms to 5 s) until it succeeds (0) or *stop becomes true (-1).
 * Logs the first failure and then every tenth. */
int rconn_reconnect(rconn_t *c, const atomic_bool *stop);

/* Sends a command and returns its reply (free with freeReplyObject), which may be REDIS_REPLY_ERROR; NULL when
 * the connection failed (the connection is then dropped). extra_timeout_ms lengthens the command timeout for
 * blocking commands. */
redisReply *rconn_command(rconn_t *c, const char *fmt, ...);
redisReply *rconn_command_argv(rconn_t *c, int argc, const char **argv, const size_t *lens);
void rconn_set_extra_timeout(rconn_t *c, long long extra_ms);

/* Pipelining: queue commands, then read one reply per command. rconn_get_reply returns NULL on connection
 * failure. A command of more than 1 MiB of arguments (a large chunk's commit) is written to the socket at once,
 * straight from argv (after the commands queued before it), instead of being copied twice into hiredis's
 * buffers; so are such commands of rconn_command_argv. */
void rconn_append_argv(rconn_t *c, int argc, const char **argv, const size_t *lens);
redisReply *rconn_get_reply(rconn_t *c);

bool rconn_connected(const rconn_t *c);
/* True for error replies that mean "not now" rather than "never": Redis still loading its data after a restart,
 * or busy in a long script. */
bool rconn_transient_error(const char *msg);
/* The address with the password masked, for messages. */
const char *rconn_addr(const rconn_t *c);
/* Last connection error text (never contains the password). */
const char *rconn_error(const rconn_t *c);

#endif
