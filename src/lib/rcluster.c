/* rcluster: see rcluster.h. */
#include "rcluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

struct rcluster {
    redis_url_node_t seeds[REDIS_URL_MAX_NODES];
    int n_seeds;
    int seed;                /* the seed tried next */
    redis_url_node_t known;  /* the node serving this connection's slot; port 0: none */
    redis_url_node_t ask;    /* the target of the last ASK, for one dial; port 0: none */
    redis_url_node_t last;   /* what rcluster_next gave last */
    enum { GAVE_ASK, GAVE_KNOWN, GAVE_SEED } gave;
};

rcluster_t *rcluster_new(const redis_url_t *url)
{
    rcluster_t *cl = xcalloc(1, sizeof *cl);
    cl->n_seeds = url->n_nodes > 0 ? url->n_nodes : 1;
    if (url->n_nodes > 0) memcpy(cl->seeds, url->nodes, (size_t)url->n_nodes * sizeof cl->seeds[0]);
    else snprintf(cl->seeds[0].host, sizeof cl->seeds[0].host, "%s", url->host), cl->seeds[0].port = url->port;
    return cl;
}

void rcluster_free(rcluster_t *cl) { free(cl); }

void rcluster_next(rcluster_t *cl, char *host, size_t hostlen, int *port, bool *is_seed)
{
    if (cl->ask.port) cl->last = cl->ask, cl->gave = GAVE_ASK, cl->ask.port = 0;
    else if (cl->known.port) cl->last = cl->known, cl->gave = GAVE_KNOWN;
    else cl->last = cl->seeds[cl->seed], cl->gave = GAVE_SEED;
    snprintf(host, hostlen, "%s", cl->last.host);
    *port = cl->last.port;
    *is_seed = cl->gave == GAVE_SEED;
}

void rcluster_dial_failed(rcluster_t *cl)
{
    if (cl->gave == GAVE_KNOWN) cl->known.port = 0;
    else if (cl->gave == GAVE_SEED) cl->seed = (cl->seed + 1) % cl->n_seeds;
}

int rcluster_candidates(const rcluster_t *cl) { return cl->n_seeds + 2; /* an ASK target, the known node, seeds */ }

void rcluster_remember(rcluster_t *cl, const char *host, int port)
{
    snprintf(cl->known.host, sizeof cl->known.host, "%s", host);
    cl->known.port = port;
}

/* Parses "<slot> <host>:<port>" (host may be an IPv6 address: the port follows the last ':'). */
static int parse_target(const char *text, redis_url_node_t *out)
{
    const char *sp = strchr(text, ' ');
    const char *colon = sp ? strrchr(sp + 1, ':') : NULL;
    if (!colon) return -1;
    size_t hostlen = (size_t)(colon - (sp + 1));
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (hostlen == 0 || hostlen >= sizeof out->host || port <= 0 || port > 65535 || end == colon + 1) return -1;
    memcpy(out->host, sp + 1, hostlen);
    out->host[hostlen] = '\0';
    out->port = (int)port;
    return 0;
}

rcluster_redirect_t rcluster_redirect(rcluster_t *cl, const char *msg, bool arm_ask)
{
    redis_url_node_t target;
    if (strncmp(msg, "MOVED ", 6) == 0 && parse_target(msg + 6, &target) == 0) {
        cl->known = target;
        return RCLUSTER_MOVED;
    }
    if (strncmp(msg, "ASK ", 4) == 0 && parse_target(msg + 4, &target) == 0) {
        if (arm_ask) cl->ask = target;
        return RCLUSTER_ASK;
    }
    return RCLUSTER_NONE;
}

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in the Redis Cluster specification. */
static unsigned crc16(const char *buf, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

unsigned rcluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1) return crc16(open + 1, (size_t)(close - open - 1)) % RCLUSTER_SLOTS;
    }
    return crc16(key, len) % RCLUSTER_SLOTS;
}

/* One range of a CLUSTER SLOTS reply: [start, end, [host, port, id, ...], replicas...]; its master into *node. */
static bool slot_range(const redisReply *e, long long *start, long long *end, redis_url_node_t *node)
{
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER)
        return false;
    const redisReply *m = e->element[2];
    if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
        m->element[1]->type != REDIS_REPLY_INTEGER || m->element[0]->len == 0 ||
        m->element[0]->len >= sizeof node->host)
        return false;
    *start = e->element[0]->integer;
    *end = e->element[1]->integer;
    memcpy(node->host, m->element[0]->str, m->element[0]->len);
    node->host[m->element[0]->len] = '\0';
    node->port = (int)m->element[1]->integer;
    return true;
}

int rcluster_slot_owner(const redisReply *slots, unsigned slot, char *host, size_t hostlen, int *port)
{
    if (!slots || slots->type != REDIS_REPLY_ARRAY) return -1;
    for (size_t i = 0; i < slots->elements; i++) {
        long long start, end;
        redis_url_node_t node;
        if (slot_range(slots->element[i], &start, &end, &node) && start <= (long long)slot &&
            (long long)slot <= end) {
            snprintf(host, hostlen, "%s", node.host);
            *port = node.port;
            return 0;
        }
    }
    return -1;
}

int rcluster_masters(const redisReply *slots, redis_url_node_t *out, int max)
{
    if (!slots || slots->type != REDIS_REPLY_ARRAY) return -1;
    int n = 0;
    for (size_t i = 0; i < slots->elements && n < max; i++) {
        long long start, end;
        redis_url_node_t node;
        if (!slot_range(slots->element[i], &start, &end, &node)) continue;
        bool seen = false;
        for (int j = 0; j < n && !seen; j++) seen = out[j].port == node.port && strcmp(out[j].host, node.host) == 0;
        if (!seen) out[n++] = node;
    }
    return n;
}
