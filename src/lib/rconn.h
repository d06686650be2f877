/* rconn: one Redis connection (hiredis), with the address, AUTH, SELECT, timeouts and reconnection in one place.
 *
 * A connection belongs to one thread. After any I/O error the hiredis context is unusable, so rconn drops it;
 * the next command fails fast until rconn_reconnect() succeeds. Every message names the address with the
 * password masked.
 *
 * rediss:// (TLS): hiredis 0.14 has no TLS, so each such connection is an rtls stream (rtls.h: OpenSSL, and a pump
 * thread per connection) behind a plain descriptor that hiredis reads and writes. What TLS trusts and shows is
 * process-wide: rconn_tls_init() sets it once, before any thread starts, and every connection (Sentinel and Cluster
 * ones too: they all go through the same transport) uses it.
 *
 * With redis-sentinel:// each connect asks the Sentinels for the master (rsentinel.h) and refuses
 * a replica; a READONLY reply (the master was demoted by a failover) drops the connection, so the next connect
 * asks them again. */
#ifndef CHUNKD_RCONN_H
#define CHUNKD_RCONN_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "redis_url.h"
#include "rtls.h"

typedef struct rconn rconn_t;

/* Process-wide TLS settings for rediss:// (the CA file, client certificate and key, or no verification). Call once,
 * before any thread starts and before the first rediss:// connection (which aborts without it). Returns 0, or -1
 * with a one-line reason in err naming the file that could not be used. */
int rconn_tls_init(const rtls_opts_t *opts, char *err, size_t errlen);
/* Frees them; only once no connection is left. */
void rconn_tls_cleanup(void);

/* url must already be valid (settings checked it). timeout_ms bounds connecting and every command. */
rconn_t *rconn_new(const char *url, long long timeout_ms);
void rconn_free(rconn_t *c);

/* Connects, authenticates and selects the database. Returns 0, or -1 with a one-line reason in err. */
int rconn_connect(rconn_t *c, char *err, size_t errlen);

/* rconn_connect(), then a PING: a Redis still loading its data accepts connections but answers LOADING, and one
 * that wants a password not given answers NOAUTH only now. Returns 0 when Redis serves commands, or -1 with a
 * one-line reason in err; then rconn_refused() tells whether waiting could help. */
int rconn_connect_serving(rconn_t *c, char *err, size_t errlen);
/* True when the last connect failed because Redis answered with an error that waiting will not change (AUTH or
 * SELECT refused, NOAUTH); false when Redis could not be reached (refused, timed out, name not resolved) or was
 * loading its data. */
bool rconn_refused(const rconn_t *c);

/* Capped exponential backoff with full jitter: returns the next pause (from half of *backoff_ms to all of it) and
 * doubles *backoff_ms up to RCONN_BACKOFF_MAX_MS. Start *backoff_ms at RCONN_BACKOFF_MIN_MS. */
#define RCONN_BACKOFF_MIN_MS 100LL
#define RCONN_BACKOFF_MAX_MS 5000LL
long long rconn_backoff_next(long long *backoff_ms);

/* Reconnects with that backoff until it succeeds (0) or *stop becomes true (-1). Logs at most one line per 5 s.
 * While it waits it stores the time into *alive_ms (NULL: none), so a thread that is only waiting for Redis still
 * shows as alive on /healthz. */
int rconn_reconnect(rconn_t *c, const atomic_bool *stop, atomic_llong *alive_ms);

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

/* --redis-min-replicas: after writes whose loss matters, rconn_wait_replicas() sends WAIT min_replicas timeout_ms.
 * 0 (the default) turns it off. */
void rconn_set_min_replicas(rconn_t *c, int min_replicas, long long timeout_ms);
/* Returns 0 when the writes sent so far on this connection reached min_replicas replicas (or it is 0); -1 with why
 * otherwise (fewer acknowledged within the timeout, WAIT refused, the connection lost). A shortfall is recorded as
 * a write refusal (rconn_refused_recently), so the worker's /readyz says why. */
int rconn_wait_replicas(rconn_t *c, char *why, size_t whylen);

bool rconn_connected(const rconn_t *c);
/* redis-sentinel://: how many times this connection reconnected to a master at another address (a failover); what
 * the old master acknowledged and had not replicated may be missing from the new one. Always 0 otherwise. */
long long rconn_master_moves(const rconn_t *c);
/* True for error replies that mean "not now" rather than "never": Redis still loading its data after a restart,
 * or busy in a long script. */
bool rconn_transient_error(const char *msg);
/* True for error replies that mean Redis refuses writes for now: out of memory under a noeviction policy (OOM), a
 * read-only replica after a failover (READONLY), a failed save (MISCONF), a master that is down (MASTERDOWN), too
 * few replicas (NOREPLICAS). rconn_transient_error() is true for these too: they say nothing against the data. */
bool rconn_refusal_error(const char *msg);
/* True for error replies that mean the Redis user lacks a right: NOPERM (a command, or a key, outside its ACL), or
 * a script's call refused by the user's ACL (Redis 7.0 says "The user executing the script can't ..."). rconn logs
 * each such reply (at most one line per 5 s) with the rights to give; waiting does not help. */
bool rconn_permission_error(const char *msg);
/* Process-wide: true once any connection received such a refusal; copies the first one's text to why.
 * Thread-safe. */
bool rconn_denied(char *why, size_t whylen);
/* Process-wide: the last refusal any connection received (rconn records it when a reply is one). Returns true and
 * copies its text to why when one came within the last within_ms milliseconds. Thread-safe. */
bool rconn_refused_recently(long long within_ms, char *why, size_t whylen);
/* Redis Cluster (redis-cluster:// URLs; for other URLs these do nothing and return 0).
 *
 * Process-wide: a key of the queue this process works on (keys_t.stats), set once before any thread starts. Each
 * connection made through a seed node then moves on to the node that serves this key's slot (CLUSTER SLOTS), so
 * pipelines start at the right node. */
void rconn_set_cluster_key(const char *key);
/* Moves the connection to the node that serves key's slot (for a command that works on several queues). Returns 0,
 * or -1 when the connection failed. */
int rconn_route(rconn_t *c, const char *key);
/* The masters that serve slots (CLUSTER SLOTS, asked of the node the connection is at): up to max into out.
 * Returns how many, or -1 (reason in rconn_error). For commands without keys, like SCAN, that must visit each. */
int rconn_cluster_masters(rconn_t *c, redis_url_node_t *out, int max);
/* Connects to that node; keyed commands still follow MOVED from there. Returns 0, or -1 with a reason in err. */
int rconn_connect_node(rconn_t *c, const redis_url_node_t *node, char *err, size_t errlen);

/* The address with the password masked, for messages. */
const char *rconn_addr(const rconn_t *c);
/* Last connection error text (never contains the password). */
const char *rconn_error(const rconn_t *c);

#endif
