/* rsentinel: finds a Redis master through Redis Sentinel (redis-sentinel:// URLs) and checks that what was found
 * is the master.
 *
 * The Sentinels of the URL are asked in order, each with a short timeout, `SENTINEL get-master-addr-by-name`; the
 * first that names the master wins. rsentinel does no transport of its own: the caller's dial function opens each
 * connection to a Sentinel (rconn's, so TLS settings apply to Sentinels too). Sentinels are asked without AUTH (the
 * URL's user and password are the master's). Messages name each Sentinel and the master by host:port and name,
 * never a password. No state: every call asks again, so a failover is followed on the next connect. */
#ifndef CHUNKD_RSENTINEL_H
#define CHUNKD_RSENTINEL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "redis_url.h"

/* Longest wait for one Sentinel (connect and its answer); shorter when the Redis timeout is. */
#define RSENTINEL_TIMEOUT_MS 1000LL

/* Opens a connection to host:port with at most timeout_ms to connect. Returns a connected context the caller frees
 * with redisFree, or NULL with why it could not connect in err (one line, without the address: "Connection refused",
 * "TLS: certificate verify failed (...)"). */
typedef redisContext *(*rsentinel_dial_fn)(void *arg, const char *host, int port, long long timeout_ms, char *err,
                                           size_t errlen);

/* Asks url's Sentinels where url->master is. Returns 0 with its address in host (hostlen bytes) and *port, or -1
 * with err naming each Sentinel asked and what it said. timeout_ms caps RSENTINEL_TIMEOUT_MS. */
int rsentinel_resolve(const redis_url_t *url, long long timeout_ms, rsentinel_dial_fn dial, void *dial_arg,
                      char *host, size_t hostlen, int *port, char *err, size_t errlen);

/* Asks ctx (already authenticated) for its ROLE. Returns 0 when it is a master; -1 with err when it is a replica
 * ("<addr> is a replica, not the master (failover in progress?)"), a Sentinel, or did not answer; *refused is set
 * when waiting cannot help (ROLE refused by the user's ACL). addr names the server in messages. */
int rsentinel_check_role(redisContext *ctx, const char *addr, char *err, size_t errlen, bool *refused);

#endif
