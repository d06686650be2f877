/* cmd_status: `chunkd status [--json]`: one look at a queue, from Redis alone (works with no worker running). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "lease.h"
#include "log.h"
#include "progress.h"
#include "rconn.h"
#include "sig.h"

static const char *const stat_fields[] = {"enqueued", "enqueued_chunks", "done",     "failed",
                                          "dead",     "dead_chunks",     "chunks_done", "requeued_chunks",
                                          "collected", "rejected", "requeued_dead", "dead_chunk_items"};

/* Reads the queue's counters into a new JSON object, or returns NULL with the reason logged. */
static json_t *status_read(rconn_t *c, const settings_t *s, const keys_t *k)
{
    const char *cmds[][2] = {{"LLEN", k->pending}, {"XLEN", k->results}, {"LLEN", k->dead}, {"HGETALL", k->stats}};
    for (size_t i = 0; i < 4; i++) rconn_append_argv(c, 2, cmds[i], NULL);
    redisReply *r[4] = {0};
    int rc = 0;
    char why[300] = "";
    for (size_t i = 0; i < 4; i++) {
        r[i] = rconn_get_reply(c);
        if (!r[i] || r[i]->type == REDIS_REPLY_ERROR) {
            if (!why[0]) snprintf(why, sizeof why, "%s", r[i] ? r[i]->str : rconn_error(c));
            rc = -1;
        }
    }
    json_t *out = NULL;
    if (rc == 0) {
        out = json_object();
        json_object_set_new(out, "queue", json_string(s->queue));
        json_object_set_new(out, "pending", json_integer(r[0]->integer));
        long long workers = 0, processing = lease_processing_chunks(c, s->queue, k, NULL, &workers);
        json_object_set_new(out, "processing", json_integer(processing > 0 ? processing : 0));
        json_object_set_new(out, "workers", json_integer(workers));
        json_object_set_new(out, "results_backlog", json_integer(r[1]->integer));
        json_object_set_new(out, "dead_list", json_integer(r[2]->integer));
        for (size_t i = 0; i < sizeof stat_fields / sizeof stat_fields[0]; i++)
            json_object_set_new(out, stat_fields[i], json_integer(0));
        for (size_t i = 0; i + 1 < r[3]->elements; i += 2)
            if (json_object_get(out, r[3]->element[i]->str))
                json_object_set_new(out, r[3]->element[i]->str, json_integer(atoll(r[3]->element[i + 1]->str)));
    } else {
        LOG_LIMITED(LL_ERROR, "cannot read queue %s at %s: %s", s->queue, rconn_addr(c), why);
    }
    for (size_t i = 0; i < 4; i++)
        if (r[i]) freeReplyObject(r[i]);
    return out;
}

static long long field(const json_t *o, const char *name) { return json_integer_value(json_object_get(o, name)); }

static void status_print(const settings_t *s, json_t *out, progress_rate_t *rate, bool watch, bool tty)
{
    /* Items of chunks that went to dead unread are finished too: they will get no result. */
    long long finished = field(out, "done") + field(out, "failed") + field(out, "dead_chunk_items");
    long long total = field(out, "enqueued");
    if (watch) {
        double per_s = progress_rate_update(rate, finished, clock_now_ms());
        json_object_set_new(out, "items_per_s", json_real(per_s));
        json_object_set_new(out, "eta_s", per_s > 0 && total > finished ? json_real((double)(total - finished) / per_s)
                                                                         : json_null());
        if (!s->json) {
            char line[512];
            progress_format(line, sizeof line, finished, total, per_s, tty ? 40 : 0);
            if (tty) {
                printf("\033[H\033[2J");
                printf("chunkd queue %s\n\n  %s\n\n", s->queue, line);
                printf("  in flight %lld chunks   pending %lld chunks   failed %lld   dead %lld   workers %lld\n",
                       field(out, "processing"), field(out, "pending"), field(out, "failed"), field(out, "dead_list"),
                       field(out, "workers"));
                printf("  results not yet collected %lld   collected %lld\n", field(out, "results_backlog"),
                       field(out, "collected"));
            } else {
                printf("%s  failed %lld  dead %lld  in flight %lld chunks  workers %lld\n", line, field(out, "failed"),
                       field(out, "dead_list"), field(out, "processing"), field(out, "workers"));
            }
            fflush(stdout);
            return;
        }
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
    fflush(stdout);
}

int cmd_status(settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    bool tty = isatty(STDOUT_FILENO);
    progress_rate_t rate = {0};
    int rc = 0;
    char err[1024];
    for (;;) {
        if (!rconn_connected(c) && rconn_connect(c, err, sizeof err)) LOG_LIMITED(LL_WARN, "%s", err);
        json_t *out = rconn_connected(c) ? status_read(c, s, &k) : NULL;
        if (out) {
            status_print(s, out, &rate, s->watch, tty);
            json_decref(out);
        } else if (!s->watch) {
            rc = EXIT_RUNTIME;
        }
        if (!s->watch || sig_wait((int)s->interval_ms)) break;
    }
    rconn_free(c);
    return rc;
}
