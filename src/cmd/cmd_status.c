/* cmd_status: `chunkd status [--json]`: one look at a queue, from Redis alone (works with no worker running). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backlog.h"
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
                                          "collected", "rejected", "requeued_dead", "dead_chunk_items",
                                          "purged"};

static long long field(const json_t *o, const char *name) { return json_integer_value(json_object_get(o, name)); }

json_t *cmd_status_read(rconn_t *c, const char *queue)
{
    keys_t keys, *k = &keys;
    keys_init(k, queue);
    /* The seal first: every item of a queue seen sealed is counted in the stats read after it. */
    enum { SEALED, PENDING, DEAD, STATS, PAUSED, RESULTS };
    const char *cmds[][2] = {[SEALED] = {"EXISTS", k->sealed}, [PENDING] = {"LLEN", k->pending},
                             [DEAD] = {"LLEN", k->dead}, [STATS] = {"HGETALL", k->stats},
                             [PAUSED] = {"EXISTS", k->paused}};
    enum { N_CMDS = sizeof cmds / sizeof cmds[0] + 1 }; /* and the results backlog (backlog.lua), last */
    rconn_route(c, k->stats); /* a cluster's node of this queue (queues reads several), before the pipeline */
    for (size_t i = 0; i < RESULTS; i++) rconn_append_argv(c, 2, cmds[i], NULL);
    backlog_append(c, k, true);
    redisReply *r[N_CMDS] = {0};
    int rc = 0;
    char why[300] = "";
    for (size_t i = 0; i < N_CMDS; i++) {
        r[i] = rconn_get_reply(c);
        if (!r[i] || r[i]->type == REDIS_REPLY_ERROR) {
            if (!why[0]) snprintf(why, sizeof why, "%s", r[i] ? r[i]->str : rconn_error(c));
            rc = -1;
        }
    }
    backlog_t backlog = {.maxmemory = -1};
    char backlog_err[300];
    if (rc == 0 && backlog_take_reply(r[RESULTS], &backlog, backlog_err, sizeof backlog_err) < 0) {
        snprintf(why, sizeof why, "%s", backlog_err);
        rc = -1;
    }
    json_t *out = NULL;
    if (rc == 0) {
        out = json_object();
        json_object_set_new(out, "queue", json_string(queue));
        json_object_set_new(out, "paused", json_boolean(r[PAUSED]->integer > 0));
        json_object_set_new(out, "pending", json_integer(r[PENDING]->integer));
        long long workers = 0, processing = lease_processing_chunks(c, queue, k, NULL, &workers);
        json_object_set_new(out, "processing", json_integer(processing > 0 ? processing : 0));
        json_object_set_new(out, "workers", json_integer(workers));
        json_object_set_new(out, "results_backlog", json_integer(backlog.lines));
        json_object_set_new(out, "results_backlog_bytes", json_integer(backlog.bytes));
        json_object_set_new(out, "redis_maxmemory", json_integer(backlog.maxmemory));
        json_object_set_new(out, "dead_list", json_integer(r[DEAD]->integer));
        for (size_t i = 0; i < sizeof stat_fields / sizeof stat_fields[0]; i++)
            json_object_set_new(out, stat_fields[i], json_integer(0));
        for (size_t i = 0; i + 1 < r[STATS]->elements; i += 2)
            if (json_object_get(out, r[STATS]->element[i]->str))
                json_object_set_new(out, r[STATS]->element[i]->str, json_integer(atoll(r[STATS]->element[i + 1]->str)));
        /* stats "failed" counts every failure; a requeued item that then succeeded is no longer failed. The same
         * arithmetic as collect's (collect_read_stats). */
        long long left = field(out, "failed") + field(out, "dead_chunk_items") - field(out, "requeued_dead");
        json_object_set_new(out, "failed_left", json_integer(left > 0 ? left : 0));
        /* Sealed: the input is complete, so enqueued is the total; open: more items may come. */
        json_object_set_new(out, "sealed", json_boolean(r[SEALED]->integer > 0));
        json_object_set_new(out, "total", r[SEALED]->integer > 0 ? json_integer(field(out, "enqueued")) : json_null());
    } else {
        LOG_LIMITED(LL_ERROR, "cannot read queue %s at %s: %s", queue, rconn_addr(c), why);
    }
    for (size_t i = 0; i < N_CMDS; i++)
        if (r[i]) freeReplyObject(r[i]);
    return out;
}

/* Each counter's unit, for the text output. */
static const char *status_unit(const char *key)
{
    static const char *const chunk_counts[] = {"pending", "processing", "enqueued_chunks", "dead_chunks",
                                               "chunks_done", "requeued_chunks", "purged_chunks"};
    static const char *const entries[] = {"dead_list", "requeued_dead"};
    static const char *const bytes[] = {"results_backlog_bytes", "results_backlog_bytes_cap", "redis_maxmemory"};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++)
        if (strcmp(key, bytes[i]) == 0) return "bytes";
    for (size_t i = 0; i < sizeof chunk_counts / sizeof chunk_counts[0]; i++)
        if (strcmp(key, chunk_counts[i]) == 0) return "chunks";
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if (strcmp(key, entries[i]) == 0) return "entries";
    if (strcmp(key, "workers") == 0) return "workers";
    if (strcmp(key, "rejected") == 0 || strcmp(key, "results_backlog") == 0) return "lines";
    return "items";
}

/* Adds to out whether workers with the caps of s (--max-results-backlog, --max-results-backlog-bytes) pause
 * fetching at the results backlog out holds: "results_backlog_bytes_cap" (0: none) and "fetch_paused" with, when it
 * is, "fetch_paused_why". */
static void status_add_backlog(const settings_t *s, json_t *out)
{
    backlog_t b = {.lines = field(out, "results_backlog"), .bytes = field(out, "results_backlog_bytes"),
                   .maxmemory = field(out, "redis_maxmemory")};
    keys_t k;
    keys_init(&k, s->queue);
    char why[320];
    bool over = backlog_over(&b, s->max_results_backlog, s->max_results_backlog_bytes, k.results, why, sizeof why);
    json_object_set_new(out, "results_backlog_bytes_cap",
                        json_integer(backlog_bytes_cap(s->max_results_backlog_bytes, b.maxmemory)));
    json_object_set_new(out, "fetch_paused", json_boolean(over));
    if (over) json_object_set_new(out, "fetch_paused_why", json_string(why));
}

/* The queue is sealed and every enqueued item is finished: done, failed or in a chunk that went to dead unread. */
static bool status_done(const json_t *out)
{
    long long finished = field(out, "done") + field(out, "failed") + field(out, "dead_chunk_items");
    return json_is_true(json_object_get(out, "sealed")) && finished >= field(out, "enqueued") &&
           field(out, "pending") == 0 && field(out, "processing") == 0;
}

/* "sealed, N items" or "open (more items may come)", into buf. */
static const char *status_input(const json_t *out, char *buf, size_t buflen)
{
    if (json_is_true(json_object_get(out, "sealed"))) snprintf(buf, buflen, "sealed, %lld items", field(out, "total"));
    else snprintf(buf, buflen, "open (not sealed: more items may come)");
    return buf;
}

static void status_print(const settings_t *s, json_t *out, progress_rate_t *rate, bool watch, bool tty)
{
    char input[64];
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
                printf("chunkd queue %s%s: %s\n\n  %s\n\n", s->queue,
                       json_is_true(json_object_get(out, "paused")) ? " (paused)" : "",
                       status_input(out, input, sizeof input), line);
                printf("  in flight %lld chunks   pending %lld chunks   failed %lld items   dead %lld   workers %lld\n",
                       field(out, "processing"), field(out, "pending"), field(out, "failed_left"), field(out, "dead_list"),
                       field(out, "workers"));
                printf("  results not yet collected %lld (%lld bytes)   collected %lld\n",
                       field(out, "results_backlog"), field(out, "results_backlog_bytes"), field(out, "collected"));
                if (json_is_true(json_object_get(out, "fetch_paused")))
                    printf("  workers pause fetching: %s\n", json_string_value(json_object_get(out, "fetch_paused_why")));
            } else {
                printf("%s  failed %lld  dead %lld  in flight %lld chunks  workers %lld%s%s%s\n", line,
                       field(out, "failed_left"), field(out, "dead_list"), field(out, "processing"),
                       field(out, "workers"), json_is_true(json_object_get(out, "paused")) ? "  paused" : "",
                       json_is_true(json_object_get(out, "sealed")) ? "" : "  open",
                       json_is_true(json_object_get(out, "fetch_paused")) ? "  results backlog full" : "");
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
        printf("queue %s%s: %s\n", s->queue, json_is_true(json_object_get(out, "paused")) ? " (paused)" : "",
               status_input(out, input, sizeof input));
        json_object_foreach(out, key, v) {
            if (json_is_integer(v))
                printf("  %-16s %lld %s\n", key, (long long)json_integer_value(v), status_unit(key));
        }
        if (json_is_true(json_object_get(out, "fetch_paused")))
            printf("  workers pause fetching: %s\n", json_string_value(json_object_get(out, "fetch_paused_why")));
    }
    fflush(stdout);
}

int cmd_status(settings_t *s)
{
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    bool tty = isatty(STDOUT_FILENO);
    progress_rate_t rate = {0};
    int rc = 0;
    char err[1024];
    int exists = cmd_queue_exists(c, s, true);
    if (exists <= 0) {
        rconn_free(c);
        return exists < 0 ? EXIT_RUNTIME : EXIT_NO_QUEUE;
    }
    for (;;) {
        if (!rconn_connected(c) && rconn_connect(c, err, sizeof err)) LOG_LIMITED(LL_WARN, "%s", err);
        json_t *out = rconn_connected(c) ? cmd_status_read(c, s->queue) : NULL;
        bool done = false;
        if (out) {
            status_add_backlog(s, out);
            status_print(s, out, &rate, s->watch, tty);
            done = status_done(out);
            json_decref(out);
        } else if (!s->watch) {
            rc = EXIT_RUNTIME;
        }
        if (done && s->watch) LOG(LL_INFO, "queue %s is done: every enqueued item is finished", s->queue);
        if (!s->watch || done || sig_wait((int)s->interval_ms)) break;
    }
    rconn_free(c);
    return rc;
}
