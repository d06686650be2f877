/* cmd_status: `chunkd status [--json]`: one look at a queue, from Redis alone (works with no worker running). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "rconn.h"

static const char *const stat_fields[] = {"enqueued", "enqueued_chunks", "done",     "failed",
                                          "dead",     "dead_chunks",     "chunks_done", "requeued_chunks",
                                          "collected", "rejected", "requeued_dead"};

int cmd_status(settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    char err[1024];
    if (rconn_connect(c, err, sizeof err)) {
        LOG(LL_ERROR, "%s", err);
        rconn_free(c);
        return EXIT_RUNTIME;
    }
    const char *cmds[][2] = {{"LLEN", k.pending}, {"XLEN", k.results}, {"LLEN", k.dead}, {"SMEMBERS", k.workers}};
    for (size_t i = 0; i < 4; i++) rconn_append_argv(c, 2, cmds[i], NULL);
    const char *hget[] = {"HGETALL", k.stats};
    rconn_append_argv(c, 2, hget, NULL);
    redisReply *r[5] = {0};
    int rc = 0;
    char why[300] = "";
    for (size_t i = 0; i < 5; i++) {
        r[i] = rconn_get_reply(c);
        if (!r[i] || r[i]->type == REDIS_REPLY_ERROR) {
            if (!why[0]) snprintf(why, sizeof why, "%s", r[i] ? r[i]->str : rconn_error(c));
            rc = -1;
        }
    }
    json_t *out = json_object();
    if (rc == 0) {
        json_object_set_new(out, "queue", json_string(s->queue));
        json_object_set_new(out, "pending", json_integer(r[0]->integer));
        long long processing = 0;
        for (size_t i = 0; i < r[3]->elements; i++) {
            char key[KEYS_MAX + 256];
            keys_processing(key, sizeof key, s->queue, r[3]->element[i]->str);
            redisReply *l = rconn_command(c, "LLEN %s", key);
            if (l && l->type == REDIS_REPLY_INTEGER) processing += l->integer;
            if (l) freeReplyObject(l);
        }
        json_object_set_new(out, "processing", json_integer(processing));
        json_object_set_new(out, "workers", json_integer((json_int_t)r[3]->elements));
        json_object_set_new(out, "results_backlog", json_integer(r[1]->integer));
        json_object_set_new(out, "dead_list", json_integer(r[2]->integer));
        for (size_t i = 0; i < sizeof stat_fields / sizeof stat_fields[0]; i++)
            json_object_set_new(out, stat_fields[i], json_integer(0));
        for (size_t i = 0; i + 1 < r[4]->elements; i += 2)
            if (json_object_get(out, r[4]->element[i]->str))
                json_object_set_new(out, r[4]->element[i]->str, json_integer(atoll(r[4]->element[i + 1]->str)));
    } else {
        LOG(LL_ERROR, "cannot read queue %s at %s: %s", s->queue, rconn_addr(c), why);
    }
    for (size_t i = 0; i < 5; i++)
        if (r[i]) freeReplyObject(r[i]);
    rconn_free(c);
    if (rc) {
        json_decref(out);
        return EXIT_RUNTIME;
    }
    if (s->json) {
        char *text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text);
        free(text);
    } else {
        const char *key;
        json_t *v;
        printf("queue %s\n", s->queue);
        json_object_foreach(out, key, v) {
            if (json_is_integer(v)) printf("  %-16s %lld\n", key, (long long)json_integer_value(v));
        }
    }
    json_decref(out);
    return 0;
}
