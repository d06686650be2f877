/* redis_url: see redis_url.h. */
#include "redis_url.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes src[0..len) into dst (capacity cap, NUL-terminated). Returns 0, or -1 if invalid or too long. */
static int pct_decode(const char *src, size_t len, char *dst, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= len) return -1;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || n + 1 >= cap) return -1;
        dst[n++] = c;
    }
    dst[n] = '\0';
    return 0;
}

/* Writes src to dst (capacity cap, NUL-terminated, cut if too small) with every byte other than A-Z a-z 0-9 - . _ ~
 * (and '/' when keep_slash) as a %XX escape: printable ASCII, one line, and pct_decode() gives src back. */
static void pct_encode(const char *src, bool keep_slash, char *dst, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *src; src++) {
        unsigned char c = (unsigned char)*src;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (n + (plain ? 1 : 3) >= cap) break;
        if (plain) {
            dst[n++] = (char)c;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        }
    }
    dst[n] = '\0';
}

static int parse_int(const char *s, size_t len, int min, int max, int *out)
{
    if (len == 0 || len > 9) return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* unix:///path[?db=N], p just past "unix://". */
static int parse_unix(const char *p, redis_url_t *out, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    if (len == 0 || p[0] != '/') {
        snprintf(err, errlen, "unix:// needs an absolute socket path, as in unix:///run/redis.sock");
        return -1;
    }
    if (pct_decode(p, len, out->path, sizeof out->path)) {
        snprintf(err, errlen, "unix socket path is invalid or longer than %zu bytes", sizeof out->path - 1);
        return -1;
    }
    if (q) {
        if (strncmp(q, "?db=", 4) != 0 || parse_int(q + 4, strlen(q + 4), 0, 100000, &out->db)) {
            snprintf(err, errlen, "unix:// accepts only ?db=N after the path");
            return -1;
        }
    }
    out->is_unix = true;
    return 0;
}

/* The userinfo of redis://[user:password@]host..., p just past "redis://" and auth_end the length before the path.
 * Sets *host_start past the '@' (or to p without one). */
static int parse_userinfo(const char *p, size_t auth_end, redis_url_t *out, const char **host_start, char *err,
                          size_t errlen)
{
    *host_start = p;
    /* The last '@' before the path separates the userinfo, so a password may contain '@' when encoded or not. */
    const char *at = NULL;
    for (size_t i = 0; i < auth_end; i++)
        if (p[i] == '@') at = p + i;
    if (!at) return 0;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
        if (pct_decode(p, (size_t)(colon - p), out->user, sizeof out->user) ||
            pct_decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password)) {
            snprintf(err, errlen, "user or password is invalid (bad %%-escape) or too long");
            return -1;
        }
    } else if (pct_decode(p, (size_t)(at - p), out->password, sizeof out->password)) {
        /* redis://secret@host: a password alone, as redis-cli reads it. */
        snprintf(err, errlen, "password is invalid (bad %%-escape) or too long");
        return -1;
    }
    *host_start = at + 1;
    return 0;
}

/* host[:port] or [ipv6][:port] in p..end. */
static int parse_hostport(const char *p, const char *end, redis_url_t *out, char *err, size_t errlen)
{
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) {
            snprintf(err, errlen, "unterminated [ipv6] host");
            return -1;
        }
        host = p + 1;
        host_end = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':') {
                snprintf(err, errlen, "unexpected text after ]");
                return -1;
            }
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        host_end = colon ? colon : end;
        if (colon) port = colon + 1;
    }
    size_t host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof out->host) {
        snprintf(err, errlen, "missing or too long host");
        return -1;
    }
    for (size_t i = 0; i < host_len; i++) {
        char c = host[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == ':')) {
            snprintf(err, errlen, "invalid character in host");
            return -1;
        }
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (port && parse_int(port, (size_t)(end - port), 1, 65535, &out->port)) {
        snprintf(err, errlen, "port must be a number from 1 to 65535");
        return -1;
    }
    return 0;
}

/* host[:port][,host[:port]...] in p..end into out->nodes; the first is also out->host and out->port. */
static int parse_nodes(const char *p, const char *end, int default_port, redis_url_t *out, char *err, size_t errlen)
{
    out->n_nodes = 0;
    for (const char *at = p;;) {
        const char *comma = memchr(at, ',', (size_t)(end - at));
        const char *node_end = comma ? comma : end;
        if (out->n_nodes == REDIS_URL_MAX_NODES) {
            snprintf(err, errlen, "more than %d hosts", REDIS_URL_MAX_NODES);
            return -1;
        }
        out->port = default_port;
        if (parse_hostport(at, node_end, out, err, errlen)) return -1;
        redis_url_node_t *n = &out->nodes[out->n_nodes++];
        snprintf(n->host, sizeof n->host, "%s", out->host);
        n->port = out->port;
        if (!comma) break;
        at = comma + 1;
    }
    snprintf(out->host, sizeof out->host, "%s", out->nodes[0].host);
    out->port = out->nodes[0].port;
    return 0;
}

/* The part after the node list: "/master[/db]" for Sentinel, "" or "/" or "/0" for Cluster, "[/db]" otherwise. */
static int parse_tail(const char *slash, redis_url_t *out, char *err, size_t errlen)
{
    const char *db = slash && slash[1] ? slash + 1 : NULL;
    if (out->mode == REDIS_URL_SENTINEL) {
        const char *name = db, *name_end = name ? strchr(name, '/') : NULL;
        size_t len = name ? (name_end ? (size_t)(name_end - name) : strlen(name)) : 0;
        if (len == 0 || pct_decode(name, len, out->master, sizeof out->master)) {
            snprintf(err, errlen, "redis-sentinel:// needs the master's name after the hosts, as in "
                                  "redis-sentinel://sentinel-1:26379,sentinel-2:26379/mymaster");
            return -1;
        }
        db = name_end && name_end[1] ? name_end + 1 : NULL;
    }
    if (db && parse_int(db, strlen(db), 0, 100000, &out->db)) {
        snprintf(err, errlen, "database after / must be a number");
        return -1;
    }
    if (out->mode == REDIS_URL_CLUSTER && out->db != 0) {
        snprintf(err, errlen, "a Redis Cluster has database 0 only");
        return -1;
    }
    return 0;
}

int redis_url_parse(const char *text, redis_url_t *out, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        redis_url_mode_t mode;
        bool tls;
        int port;
    } schemes[] = {
        {"redis://", REDIS_URL_DIRECT, false, 6379},
        {"rediss://", REDIS_URL_DIRECT, true, 6379},
        {"redis-sentinel://", REDIS_URL_SENTINEL, false, 26379},
        {"rediss-sentinel://", REDIS_URL_SENTINEL, true, 26379},
        {"redis-cluster://", REDIS_URL_CLUSTER, false, 6379},
        {"rediss-cluster://", REDIS_URL_CLUSTER, true, 6379},
    };
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(text, "unix://", 7) == 0) return parse_unix(text + 7, out, err, errlen);
    size_t k = 0;
    const size_t n_schemes = sizeof schemes / sizeof schemes[0];
    while (k < n_schemes && strncmp(text, schemes[k].prefix, strlen(schemes[k].prefix)) != 0) k++;
    if (k == n_schemes) {
        snprintf(err, errlen, "expected redis://host[:port][/db], rediss://..., unix:///path, "
                              "redis-sentinel://host[:port],.../master or redis-cluster://host[:port],...");
        return -1;
    }
    out->mode = schemes[k].mode;
    out->tls = schemes[k].tls;
    const char *p = text + strlen(schemes[k].prefix);
    const char *slash = strchr(p, '/');
    if (parse_userinfo(p, slash ? (size_t)(slash - p) : strlen(p), out, &p, err, errlen)) return -1;
    const char *end = slash ? slash : p + strlen(p);
    if (out->mode == REDIS_URL_DIRECT && memchr(p, ',', (size_t)(end - p))) {
        snprintf(err, errlen, "several hosts need redis-sentinel:// or redis-cluster://");
        return -1;
    }
    if (parse_nodes(p, end, schemes[k].port, out, err, errlen)) return -1;
    return parse_tail(slash, out, err, errlen);
}

/* host:port, with brackets around an IPv6 address. */
static void mask_node(const char *host, int port, char *out, size_t outlen)
{
    const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
    snprintf(out, outlen, "%s%s%s:%d", lb, host, rb, port);
}

void redis_url_mask(const char *text, char *out, size_t outlen)
{
    redis_url_t u;
    char err[256];
    if (redis_url_parse(text, &u, err, sizeof err)) {
        snprintf(out, outlen, "<invalid redis url>");
        return;
    }
    /* The user and the path are written %-encoded: decoded, they may hold line breaks or URL delimiters. */
    if (u.is_unix) {
        char path[sizeof u.path * 3];
        pct_encode(u.path, true, path, sizeof path);
        snprintf(out, outlen, "unix://%s%s", path, u.db ? "?db=" : "");
        if (u.db) snprintf(out + strlen(out), outlen - strlen(out), "%d", u.db);
        return;
    }
    static const char *const names[2][3] = {{"redis", "redis-sentinel", "redis-cluster"},
                                            {"rediss", "rediss-sentinel", "rediss-cluster"}};
    char user[sizeof u.user * 3];
    pct_encode(u.user, false, user, sizeof user);
    snprintf(out, outlen, "%s://%s%s%s", names[u.tls][u.mode], user, u.password[0] ? ":***" : u.user[0] ? ":" : "",
             (u.user[0] || u.password[0]) ? "@" : "");
    for (int i = 0; i < u.n_nodes; i++) {
        char node[300];
        mask_node(u.nodes[i].host, u.nodes[i].port, node, sizeof node);
        size_t len = strlen(out);
        snprintf(out + len, outlen - len, "%s%s", i ? "," : "", node);
    }
    size_t len = strlen(out);
    if (u.mode == REDIS_URL_SENTINEL) {
        char master[sizeof u.master * 3];
        pct_encode(u.master, false, master, sizeof master);
        snprintf(out + len, outlen - len, "/%s/%d", master, u.db);
    } else if (u.mode == REDIS_URL_DIRECT) {
        snprintf(out + len, outlen - len, "/%d", u.db);
    }
}
