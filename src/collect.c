/* collect: see collect.h. */
#include "collect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "keys.h"
#include "log.h"
#include "progress.h"
#include "rconn.h"
#include "scripts.h"
#include "xalloc.h"

#define COLLECT_BLOCK_MS 200

/* Sends the ack script for ids until Redis answers (reconnecting as needed). Returns 0, or -1 on stop. */
static int collect_ack(rconn_t *c, const keys_t *k, redisReply **entries, size_t n, collect_progress_t *p,
                       const atomic_bool *stop)
{
    size_t argc = 6 + n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    const char *head[] = {"EVAL", script_ack, "2", k->results, k->stats, KEYS_COLLECT_GROUP};
    for (size_t i = 0; i < 6; i++) argv[i] = head[i], lens[i] = strlen(head[i]);
    for (size_t i = 0; i < n; i++) argv[6 + i] = entries[i]->element[0]->str, lens[6 + i] = entries[i]->element[0]->len;
    int rc = -1;
    while (!atomic_load(stop)) {
        if (!rconn_connected(c) && rconn_reconnect(c, stop)) break;
        redisReply *r = rconn_command_argv(c, (int)argc, argv, lens);
        if (!r) continue;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            p->collected = r->element[0]->integer;
            p->enqueued = r->element[1]->integer;
            p->dead_chunk_items = r->element[2]->integer;
            rc = 0;
        } else {
            LOG(LL_ERROR, "collect: acknowledging failed: %.300s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
        }
        freeReplyObject(r);
        if (rc == 0) break;
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    free(argv);
    free(lens);
    return rc;
}


static bool collect_done(const collect_progress_t *p, const atomic_bool *producer_done)
{
    if (producer_done) return atomic_load(producer_done) && collect_finished(p) >= p->enqueued;
    return p->enqueued > 0 && collect_finished(p) >= p->enqueued;
}

static void collect_read_stats(rconn_t *c, const keys_t *k, collect_progress_t *p)
{
    redisReply *r = rconn_command(c, "HMGET %s collected enqueued dead_chunk_items failed requeued_dead "
                                     "requeued_chunk_items", k->stats);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 6) {
        long long failed = 0, requeued = 0, requeued_chunk_items = 0;
        long long *to[] = {&p->collected, &p->enqueued, &p->dead_chunk_items, &failed, &requeued,
                           &requeued_chunk_items};
        for (size_t i = 0; i < 6; i++) *to[i] = r->element[i]->str ? atoll(r->element[i]->str) : 0;
        p->failed_left = failed + p->dead_chunk_items - requeued;
        p->dead_chunk_items_left = p->dead_chunk_items - requeued_chunk_items;
        if (p->failed_left < 0) p->failed_left = 0;
        if (p->dead_chunk_items_left < 0) p->dead_chunk_items_left = 0;
    }
    if (r) freeReplyObject(r);
}

int collect_run(const settings_t *s, sink_t *sink, collect_mode_t mode, const atomic_bool *stop,
                const atomic_bool *producer_done, collect_progress_t *p, char *err, size_t errlen)
{
    keys_t k;
    keys_init(&k, s->queue);
    memset(p, 0, sizeof *p);
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    rconn_set_extra_timeout(c, COLLECT_BLOCK_MS);
    int rc = -1;
    /* A progress bar for people: only with --until-done and a terminal on stderr. */
    bool show_bar = mode == COLLECT_UNTIL_DONE && isatty(STDERR_FILENO);
    int64_t last_bar = 0;
    progress_rate_t rate = {0};
    if (rconn_connect(c, err, errlen)) goto out;
    redisReply *r = rconn_command(c, "XGROUP CREATE %s %s 0 MKSTREAM", k.results, KEYS_COLLECT_GROUP);
    if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)) {
        snprintf(err, errlen, "cannot create consumer group on %s: %s", k.results, r ? r->str : rconn_error(c));
        if (r) freeReplyObject(r);
        goto out;
    }
    freeReplyObject(r);

    char count[24], block[24];
    snprintf(count, sizeof count, "%lld", s->collect_batch);
    snprintf(block, sizeof block, "%d", COLLECT_BLOCK_MS);
    bool own_pending = true; /* first re-read entries this consumer took before a crash */
    int64_t last_log = clock_now_ms();
    while (!atomic_load(stop)) {
        if (!rconn_connected(c)) {
            if (rconn_reconnect(c, stop)) break;
            own_pending = true;
        }
        bool blocking = !own_pending && mode != COLLECT_AVAILABLE;
        const char *argv[] = {"XREADGROUP", "GROUP", KEYS_COLLECT_GROUP, s->consumer, "COUNT", count,
                              "BLOCK",      block,   "STREAMS",          k.results,   own_pending ? "0" : ">"};
        const char **a = argv;
        const char *noblock[] = {"XREADGROUP", "GROUP", KEYS_COLLECT_GROUP, s->consumer, "COUNT", count,
                                 "STREAMS",    k.results, own_pending ? "0" : ">"};
        r = blocking ? rconn_command_argv(c, 11, a, NULL) : rconn_command_argv(c, 9, noblock, NULL);
        if (!r) {
            LOG_LIMITED(LL_WARN, "collect: Redis connection lost: %s", rconn_error(c));
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR && rconn_transient_error(r->str)) {
            /* A restarted Redis answers LOADING until it has read its data back (BUSY: a long script). */
            LOG_LIMITED(LL_WARN, "collect: Redis is not ready (%.100s); retrying", r->str);
            freeReplyObject(r);
            for (int t = 0; t < 4 && !atomic_load(stop); t++) {
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "XREADGROUP on %s failed: %s", k.results, r->str);
            freeReplyObject(r);
            goto out;
        }
        redisReply **entries = NULL;
        size_t n = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
            r->element[0]->elements == 2 && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
            entries = r->element[0]->element[1]->element;
            n = r->element[0]->element[1]->elements;
        }
        for (size_t i = 0; i < n; i++) {
            /* Each entry is [id, fields]; anything else means the stream is not ours. */
            if (entries[i]->type != REDIS_REPLY_ARRAY || entries[i]->elements != 2 ||
                entries[i]->element[0]->type != REDIS_REPLY_STRING) {
                snprintf(err, errlen, "unexpected reply shape from XREADGROUP on %s", k.results);
                freeReplyObject(r);
                goto out;
            }
        }
        if (n == 0) {
            freeReplyObject(r);
            if (own_pending) {
                own_pending = false;
                continue;
            }
            if (mode == COLLECT_AVAILABLE) break;
            if (mode == COLLECT_UNTIL_DONE) {
                collect_read_stats(c, &k, p);
                if (collect_done(p, producer_done)) break;
            }
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            redisReply *fields = entries[i]->element[1];
            /* An entry deleted after it was delivered has no fields: nothing to write, still acknowledged. */
            if (fields->type != REDIS_REPLY_ARRAY || fields->elements < 2) continue;
            redisReply *v = fields->element[1];
            if (v->type != REDIS_REPLY_STRING) continue;
            if (sink_write(sink, v->str, v->len)) {
                snprintf(err, errlen, "cannot write to %s: %s", sink_where(sink), strerror(errno));
                freeReplyObject(r);
                goto out;
            }
        }
        if (sink_flush(sink)) {
            snprintf(err, errlen, "cannot write to %s: %s", sink_where(sink), strerror(errno));
            freeReplyObject(r);
            goto out;
        }
        p->written += (long long)n;
        int ack = collect_ack(c, &k, entries, n, p, stop);
        freeReplyObject(r);
        if (ack) break;
        if (show_bar && clock_now_ms() - last_bar >= 250) {
            char line[256];
            last_bar = clock_now_ms();
            progress_format(line, sizeof line, collect_finished(p), p->enqueued,
                            progress_rate_update(&rate, collect_finished(p), last_bar), 30);
            fprintf(stderr, "\r\033[K%s", line);
        }
        if (!show_bar && clock_now_ms() - last_log >= 5000) {
            LOG(LL_INFO, "collect: %lld results written to %s (%lld of %lld collected)", p->written, sink_where(sink),
                p->collected, p->enqueued);
            last_log = clock_now_ms();
        }
        if (mode == COLLECT_UNTIL_DONE && collect_done(p, producer_done)) break;
    }
    rc = 0;
    if (rconn_connected(c)) collect_read_stats(c, &k, p);
out:
    if (show_bar && last_bar) fprintf(stderr, "\n");
    rconn_free(c);
    return rc;
}
