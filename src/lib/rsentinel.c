/* rsentinel: see rsentinel.h. */
#include "rsentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends one Sentinel's answer to the summary in err, keeping it a bounded single line. */
static void rsentinel_note(char *err, size_t errlen, const redis_url_node_t *n, const char *what)
{
    size_t used = strlen(err);
    if (used + 1 >= errlen) return;
    snprintf(err + used, errlen - used, "%sSentinel %s:%d %.200s", used ? "; " : "", n->host, n->port, what);
}

/* Asks one Sentinel. Returns 0 with host and port, or -1 with why (its answer, or how it failed). */
static int rsentinel_ask(const redis_url_t *url, const redis_url_node_t *n, long long timeout_ms,
                         rsentinel_dial_fn dial, void *dial_arg, char *host, size_t hostlen, int *port, char *why,
                         size_t whylen)
{
    char dial_err[200];
    redisContext *ctx = dial(dial_arg, n->host, n->port, timeout_ms, dial_err, sizeof dial_err);
    if (!ctx) {
        snprintf(why, whylen, "cannot be reached: %s", dial_err);
        return -1;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisSetTimeout(ctx, tv);
    redisReply *r = redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", url->master);
    int rc = -1;
    if (!r) snprintf(why, whylen, "did not answer: %s", ctx->errstr);
    else if (r->type == REDIS_REPLY_ERROR) snprintf(why, whylen, "refused: %.150s", r->str);
    else if (r->type == REDIS_REPLY_NIL) snprintf(why, whylen, "does not know a master named %s", url->master);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
             r->element[1]->type != REDIS_REPLY_STRING || atoi(r->element[1]->str) <= 0 ||
             strlen(r->element[0]->str) >= hostlen)
        snprintf(why, whylen, "gave an answer that is not an address");
    else {
        snprintf(host, hostlen, "%s", r->element[0]->str);
        *port = atoi(r->element[1]->str);
        rc = 0;
    }
    if (r) freeReplyObject(r);
    redisFree(ctx);
    return rc;
}

int rsentinel_resolve(const redis_url_t *url, long long timeout_ms, rsentinel_dial_fn dial, void *dial_arg,
                      char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
    if (timeout_ms > RSENTINEL_TIMEOUT_MS) timeout_ms = RSENTINEL_TIMEOUT_MS;
    char tried[768] = "";
    for (int i = 0; i < url->n_nodes; i++) {
        char why[300];
        if (rsentinel_ask(url, &url->nodes[i], timeout_ms, dial, dial_arg, host, hostlen, port, why, sizeof why) == 0)
            return 0;
        rsentinel_note(tried, sizeof tried, &url->nodes[i], why);
    }
    snprintf(err, errlen, "no Sentinel named the master %s: %s", url->master, tried);
    return -1;
}

int rsentinel_check_role(redisContext *ctx, const char *addr, char *err, size_t errlen, bool *refused)
{
    *refused = false;
    redisReply *r = redisCommand(ctx, "ROLE");
    int rc = -1;
    if (!r) {
        snprintf(err, errlen, "ROLE: %s", ctx->errstr);
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "ROLE refused: %.200s (with redis-sentinel:// the Redis user needs +role)", r->str);
        *refused = strncmp(r->str, "LOADING ", 8) != 0;
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "%s gave a ROLE answer that is not a role", addr);
    } else if (strcmp(r->element[0]->str, "master") == 0) {
        rc = 0;
    } else if (strcmp(r->element[0]->str, "slave") == 0) {
        snprintf(err, errlen, "%s is a replica, not the master (failover in progress?)", addr);
    } else {
        snprintf(err, errlen, "%s is a %.20s, not the master", addr, r->element[0]->str);
    }
    if (r) freeReplyObject(r);
    return rc;
}
