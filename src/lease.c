/* lease: see lease.h. */
#include "lease.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "scripts.h"

int lease_renew(rconn_t *c, const keys_t *k, const char *worker_id, long long lease_ms, char *why, size_t whylen)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", lease_ms);
    const char *set[] = {"SET", k->lease, worker_id, "PX", ms, "GET"};
    const char *sadd[] = {"SADD", k->workers, worker_id};
    rconn_append_argv(c, 6, set, NULL);
    rconn_append_argv(c, 3, sadd, NULL);
    redisReply *r1 = rconn_get_reply(c), *r2 = r1 ? rconn_get_reply(c) : NULL;
    int rc = -1;
    if (r1 && r2 && r1->type != REDIS_REPLY_ERROR && r2->type != REDIS_REPLY_ERROR)
        rc = r1->type == REDIS_REPLY_STRING ? 1 : 0;
    else if (r1 && r1->type == REDIS_REPLY_ERROR) snprintf(why, whylen, "%s", r1->str);
    else if (r2 && r2->type == REDIS_REPLY_ERROR) snprintf(why, whylen, "%s", r2->str);
    else snprintf(why, whylen, "%s", rconn_error(c));
    if (r1) freeReplyObject(r1);
    if (r2) freeReplyObject(r2);
    return rc;
}

void lease_release(rconn_t *c, const keys_t *k, const char *worker_id)
{
    redisReply *r = rconn_command(c, "DEL %s", k->lease);
    if (r) freeReplyObject(r);
    r = rconn_command(c, "HDEL %s %s", k->inflight, worker_id); /* its slots of --max-inflight-global */
    if (r) freeReplyObject(r);
    r = rconn_command(c, "SREM %s %s", k->workers, worker_id);
    if (r) freeReplyObject(r);
}

long long lease_reap(rconn_t *c, const char *queue, const keys_t *k, const char *self_id, long long lock_ms,
                     bool force, long long *workers_reaped)
{
    *workers_reaped = 0;
    if (!force) {
        redisReply *lock = rconn_command(c, "SET %s %s NX PX %lld", k->reaper, self_id, lock_ms);
        bool mine = lock && lock->type == REDIS_REPLY_STATUS;
        if (lock) freeReplyObject(lock);
        if (!mine) return lock ? 0 : -1;
    }
    redisReply *members = rconn_command(c, "SMEMBERS %s", k->workers);
    if (!members || members->type != REDIS_REPLY_ARRAY) {
        if (members) freeReplyObject(members);
        return -1;
    }
    long long moved = 0;
    for (size_t i = 0; i < members->elements; i++) {
        const char *id = members->element[i]->str;
        if (!id || (self_id && strcmp(id, self_id) == 0)) continue;
        char lease[KEYS_MAX + 256], processing[KEYS_MAX + 256];
        keys_lease(lease, sizeof lease, queue, id);
        keys_processing(processing, sizeof processing, queue, id);
        const char *argv[] = {"EVAL", script_reap, "6", lease, processing, k->pending, k->workers, k->stats,
                              k->inflight, id};
        redisReply *r = rconn_command_argv(c, 10, argv, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
            LOG(LL_WARN, "reaped worker %s (lease expired): %lld chunks went back to pending", id, r->integer);
            moved += r->integer;
            (*workers_reaped)++;
        }
        if (r) freeReplyObject(r);
    }
    freeReplyObject(members);
    return moved;
}

long long lease_processing_chunks(rconn_t *c, const char *queue, const keys_t *k, const char *exclude_id,
                                  long long *workers)
{
    redisReply *members = rconn_command(c, "SMEMBERS %s", k->workers);
    if (!members || members->type != REDIS_REPLY_ARRAY) {
        if (members) freeReplyObject(members);
        return -1;
    }
    if (workers) *workers = (long long)members->elements;
    size_t sent = 0;
    for (size_t i = 0; i < members->elements; i++) {
        const char *id = members->element[i]->str;
        if (!id || (exclude_id && strcmp(id, exclude_id) == 0)) continue;
        char key[KEYS_MAX + 256];
        keys_processing(key, sizeof key, queue, id);
        const char *llen[] = {"LLEN", key};
        rconn_append_argv(c, 2, llen, NULL);
        sent++;
    }
    freeReplyObject(members);
    long long held = 0;
    for (size_t i = 0; i < sent; i++) {
        redisReply *l = rconn_get_reply(c);
        if (!l) return -1;
        if (l->type == REDIS_REPLY_INTEGER) held += l->integer;
        freeReplyObject(l);
    }
    return held;
}
