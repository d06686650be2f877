/* rcluster: the Redis Cluster part of a connection to a redis-cluster:// URL: which node to dial, and what the
 * nodes' redirections say. rconn does all the I/O; this module only keeps the state and reads replies.
 *
 * State, per connection: the seed nodes of the URL (tried in turn, from the one after the last that failed), the
 * node remembered as serving the connection's slot (learned from CLUSTER SLOTS at connect, or from a MOVED reply),
 * and a one-shot target named by an ASK reply. A node that cannot be dialled is forgotten, so after a failover the
 * next connect goes back to the seeds and finds the promoted replica through them.
 *
 * All of a queue's keys carry the hash tag {Q}, so they share one slot (rcluster_slot) and one connection never
 * needs two nodes at once. */
#ifndef CHUNKD_RCLUSTER_H
#define CHUNKD_RCLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "redis_url.h"

#define RCLUSTER_SLOTS 16384
#define RCLUSTER_MASTERS_MAX 64 /* masters listed by rcluster_masters at most */

typedef struct rcluster rcluster_t;

/* Copies the URL's seed nodes (url->mode must be REDIS_URL_CLUSTER). */
rcluster_t *rcluster_new(const redis_url_t *url);
void rcluster_free(rcluster_t *cl);

/* The node to dial next: the ASK target once, else the remembered node, else the current seed. Sets *is_seed when
 * it is a seed (the caller then asks it which node serves its slot). host is at least 256 bytes. */
void rcluster_next(rcluster_t *cl, char *host, size_t hostlen, int *port, bool *is_seed);
/* Dialling what rcluster_next gave failed: the remembered node is forgotten, or the next seed becomes current. */
void rcluster_dial_failed(rcluster_t *cl);
/* How many dials one connect tries before it gives up: the remembered node and every seed. */
int rcluster_candidates(const rcluster_t *cl);
/* Remembers host:port as the node of this connection's slot (the next rcluster_next gives it). */
void rcluster_remember(rcluster_t *cl, const char *host, int port);

typedef enum rcluster_redirect {
    RCLUSTER_NONE,  /* not a redirection */
    RCLUSTER_MOVED, /* "MOVED <slot> <host>:<port>": the slot is served there now; remembered */
    RCLUSTER_ASK,   /* "ASK <slot> <host>:<port>": this key is there during a migration; one command, after ASKING */
} rcluster_redirect_t;

/* Reads an error reply's text. MOVED remembers the node; ASK, with arm_ask, arms it for the next rcluster_next
 * only. A redirection whose address does not parse is RCLUSTER_NONE (the caller sees the error as it is). */
rcluster_redirect_t rcluster_redirect(rcluster_t *cl, const char *msg, bool arm_ask);

/* The cluster slot of a key: CRC16 (XMODEM) of its hash tag (the text between the first '{' and the next '}', when
 * not empty) or of the whole key, modulo 16384. Pure. */
unsigned rcluster_slot(const char *key, size_t len);

/* From a CLUSTER SLOTS reply: the master serving slot into host/port. Returns 0, or -1 when no range holds it. */
int rcluster_slot_owner(const redisReply *slots, unsigned slot, char *host, size_t hostlen, int *port);
/* From a CLUSTER SLOTS reply: every distinct master, in the order of the reply, at most max. Returns how many, or -1
 * when the reply is not one of CLUSTER SLOTS. */
int rcluster_masters(const redisReply *slots, redis_url_node_t *out, int max);

#endif
