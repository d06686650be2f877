/* cmd_requeue: `chunkd requeue [--limit N]`: moves failed items from the dead list back to pending.
 *
 * Records are taken oldest first into a scratch list (atomically), packed into new chunks of --chunk-size items
 * with their original ids and item text, and pushed to pending by one script that also deletes the scratch list,
 * so each record is requeued once. Records of chunks that could not be parsed are put back into dead. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "chunk.h"
#include "clock.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "rconn.h"
#include "result.h"
#include "scripts.h"
#include "xalloc.h"

#define REQUEUE_BATCH 10000 /* records per round */

typedef struct requeue_round {
    char **argv;            /* chunks, then records kept in dead */
    size_t *lens;
    size_t argc;
    long long items;
    size_t chunks;
} requeue_round_t;

static void round_add(requeue_round_t *r, char *text, size_t len)
{
    r->argv = xrealloc(r->argv, (r->argc + 1) * sizeof(char *));
    r->lens = xrealloc(r->lens, (r->argc + 1) * sizeof(size_t));
    r->argv[r->argc] = text;
    r->lens[r->argc++] = len;
}

/* Builds the chunks of one round from the scratch list's records (reply->element). */
static void round_build(requeue_round_t *r, redisReply *records, const settings_t *s, const char *run_id,
                        long long *chunk_seq)
{
    json_t *entries = json_array();
    requeue_round_t kept = {0};
    for (size_t i = 0; i <= records->elements; i++) {
        bool last = i == records->elements;
        if (!last) {
            redisReply *rec = records->element[i];
            json_t *id;
            char *text;
            size_t text_len;
            if (rec->type == REDIS_REPLY_STRING && result_dead_item(rec->str, rec->len, &id, &text, &text_len) == 0) {
                json_array_append_new(entries, chunk_entry_new(id, text, text_len));
                free(text);
                r->items++;
            } else if (rec->type == REDIS_REPLY_STRING) {
                round_add(&kept, xstrndup(rec->str, rec->len), rec->len);
            }
        }
        if (json_array_size(entries) && (last || (long long)json_array_size(entries) >= s->chunk_size)) {
            char id[64];
            snprintf(id, sizeof id, "requeue-%s-%lld", run_id, ++*chunk_seq);
            size_t len;
            char *chunk = chunk_encode(id, entries, &len);
            if (chunk) {
                round_add(r, chunk, len);
                r->chunks++;
            } else {
                r->items -= (long long)json_array_size(entries);
                LOG(LL_ERROR, "requeue: cannot encode chunk %s; its records stay in the scratch list", id);
            }
            json_array_clear(entries);
        }
    }
    json_decref(entries);
    for (size_t i = 0; i < kept.argc; i++) round_add(r, kept.argv[i], kept.lens[i]);
    free(kept.argv);
    free(kept.lens);
}

int cmd_requeue(settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    char scratch[KEYS_MAX + 64];
    unsigned int rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (unsigned int)clock_now_ms();
    char run_id[24];
    snprintf(run_id, sizeof run_id, "%d-%08x", (int)getpid(), rnd);
    snprintf(scratch, sizeof scratch, "chunkd:{%s}:requeue:%s", s->queue, run_id);

    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    redisReply *r = rconn_command(c, "LLEN %s", k.dead);
    long long remaining = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    if (remaining < 0) {
        LOG(LL_ERROR, "cannot read %s: %s", k.dead, rconn_error(c));
        rconn_free(c);
        return EXIT_RUNTIME;
    }
    if (s->limit > 0 && s->limit < remaining) remaining = s->limit;
    /* Records in flight wait in the scratch list; if this process dies, they are there, not lost. */
    LOG(LL_INFO, "requeue: up to %lld records from %s, through %s", remaining, k.dead, scratch);
    long long items = 0, kept_total = 0, chunk_seq = 0;
    int rc = 0;
    while (remaining > 0) {
        char n[24];
        snprintf(n, sizeof n, "%lld", remaining < REQUEUE_BATCH ? remaining : REQUEUE_BATCH);
        const char *take[] = {"EVAL", script_dead_take, "2", k.dead, scratch, n};
        r = rconn_command_argv(c, 6, take, NULL);
        long long taken = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        if (r) freeReplyObject(r);
        if (taken <= 0) {
            if (taken < 0) rc = -1;
            break;
        }
        remaining -= taken;
        r = rconn_command(c, "LRANGE %s 0 -1", scratch);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r) freeReplyObject(r);
            rc = -1;
            break;
        }
        requeue_round_t round = {0};
        round_build(&round, r, s, run_id, &chunk_seq);
        freeReplyObject(r);
        size_t argc = 9 + round.argc;
        const char **argv = xmalloc(argc * sizeof *argv);
        size_t *lens = xmalloc(argc * sizeof *lens);
        char items_s[24], chunks_s[24];
        snprintf(items_s, sizeof items_s, "%lld", round.items);
        snprintf(chunks_s, sizeof chunks_s, "%zu", round.chunks);
        const char *head[] = {"EVAL", script_dead_put, "4", scratch, k.pending, k.dead, k.stats, items_s};
        for (size_t i = 0; i < 8; i++) argv[i] = head[i], lens[i] = strlen(head[i]);
        argv[8] = chunks_s; /* ARGV[2]; the chunks and kept records follow */
        lens[8] = strlen(chunks_s);
        for (size_t i = 0; i < round.argc; i++) argv[9 + i] = round.argv[i], lens[9 + i] = round.lens[i];
        r = rconn_command_argv(c, (int)argc, argv, lens);
        bool ok = r && r->type == REDIS_REPLY_INTEGER;
        if (!ok) LOG(LL_ERROR, "requeue: pushing chunks failed (%s); the records wait in %s",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c), scratch);
        if (r) freeReplyObject(r);
        for (size_t i = 0; i < round.argc; i++) free(round.argv[i]);
        free(round.argv);
        free(round.lens);
        free(argv);
        free(lens);
        if (!ok) {
            rc = -1;
            break;
        }
        items += round.items;
        kept_total += (long long)(taken - round.items);
    }
    rconn_free(c);
    if (rc) return EXIT_RUNTIME;
    printf("requeued %lld items from %s to %s", items, k.dead, k.pending);
    if (kept_total) printf("; %lld records of unreadable chunks stay in dead", kept_total);
    printf("\n");
    return 0;
}
