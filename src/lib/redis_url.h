/* redis_url: parsing and masking of Redis addresses.
 *
 *   redis://[user:password@]host[:port][/db]     (user and password may be %-encoded; host may be [ipv6])
 *   rediss://...                                  the same over TLS (rconn's TLS settings: CA, client cert)
 *   unix:///path/to/socket[?db=N]
 *   redis-sentinel://[user:password@]host[:port][,host[:port]...]/master[/db]
 *                                                 Sentinels (default port 26379) that name the master; user and
 *                                                 password are the master's; rediss-sentinel:// for TLS to both
 *   redis-cluster://[user:password@]host[:port][,host[:port]...]
 *                                                 seed nodes of a Redis Cluster (no db); rediss-cluster:// for TLS
 *
 * Pure functions with fixed-size fields: no allocation, no I/O. */
#ifndef CHUNKD_REDIS_URL_H
#define CHUNKD_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_MAX_NODES 16 /* Sentinels or cluster seed nodes in one URL */

typedef enum redis_url_mode {
    REDIS_URL_DIRECT,   /* one server: redis://, rediss://, unix:// */
    REDIS_URL_SENTINEL, /* nodes[] are Sentinels; master names the monitored master */
    REDIS_URL_CLUSTER,  /* nodes[] are seed nodes of a cluster */
} redis_url_mode_t;

typedef struct redis_url_node {
    char host[256]; /* without brackets */
    int port;
} redis_url_node_t;

typedef struct redis_url {
    redis_url_mode_t mode;
    bool is_unix;
    bool tls;           /* rediss://, rediss-sentinel://, rediss-cluster:// */
    char host[256];     /* TCP host, without brackets (DIRECT; otherwise nodes[0]'s) */
    int port;           /* TCP port, default 6379 (26379 for Sentinels) */
    redis_url_node_t nodes[REDIS_URL_MAX_NODES]; /* SENTINEL and CLUSTER: the nodes to ask, in order */
    int n_nodes;        /* at least 1 for SENTINEL and CLUSTER; 1 (host, port) for DIRECT TCP */
    char master[128];   /* SENTINEL: the master's name as the Sentinels know it */
    char path[108];     /* unix socket path (sun_path's size) */
    char user[128];     /* ACL user; empty: "default" via legacy AUTH */
    char password[256]; /* empty: no AUTH */
    int db;             /* SELECT db when > 0 */
} redis_url_t;

/* Returns 0 and fills *out, or -1 with a message in err that never contains the password. */
int redis_url_parse(const char *text, redis_url_t *out, char *err, size_t errlen);

/* Writes text with its password replaced by "***" (for logs and errors). Text that does not parse is written
 * as "<invalid redis url>". */
void redis_url_mask(const char *text, char *out, size_t outlen);

#endif
