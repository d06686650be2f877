/* redis_url: parsing and masking of Redis addresses.
 *
 *   redis://[user:password@]host[:port][/db]     (user and password may be %-encoded; host may be [ipv6])
 *   unix:///path/to/socket[?db=N]
 *
 * Pure functions with fixed-size fields: no allocation, no I/O. */
#ifndef CHUNKD_REDIS_URL_H
#define CHUNKD_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct redis_url {
    bool is_unix;
    char host[256];     /* TCP host, without brackets */
    int port;           /* TCP port, default 6379 */
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
