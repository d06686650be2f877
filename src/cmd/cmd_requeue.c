/* cmd_requeue: `chunkd requeue [--limit N]`: moves failed items from the dead list back to pending.
 *
 * Records are taken oldest first into a scratch list (atomically), about --max-chunk-bytes of them per round,
 * packed into new chunks of --chunk-size items and --max-chunk-bytes with their original ids and item text, and
 * pushed to pending by one script that also deletes the scratch list, so each record is requeued once. A record
 * of a chunk that went to dead whole (over a worker's --max-chunk-bytes) gives back its items the same way.
 * Records of chunks that cannot be read are put back into dead. */
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
    long long chunk_items;  /* of items: from records of chunks that went to dead whole */
    size_t chunks;
    size_t kept;            /* records kept in dead */
} requeue_round_t;

static void round_add(requeue_round_t *r, char *text, size_t len)
{
    r->argv = xrealloc(r->argv, (r->argc + 1) * sizeof(char *));
    r->lens = xrealloc(r->lens, (r->argc + 1) * sizeof(size_t));
    r->argv[r->argc] = text;
    r->lens[r->argc++] = len;
}

/* The chunks of one round being built: entries go into the builder, full chunks into the round. */
typedef struct requeue_fill {
    requeue_round_t *round;
    requeue_round_t *kept;
    chunk_builder_t chunk;
    const char *run_id;
    long long *chunk_seq;
    long long filling_chunk_items; /* entries in the builder that came from dead chunks' records */
} requeue_fill_t;

/* Closes the chunk being filled into the round. */
static void fill_close(requeue_fill_t *f)
{
    size_t n = chunk_builder_items(&f->chunk);
    if (n == 0) return;
    char id[64];
    snprintf(id, sizeof id, "requeue-%s-%lld", f->run_id, ++*f->chunk_seq);
    size_t len;
    char *chunk = chunk_builder_take(&f->chunk, id, &len);
    if (chunk) {
        round_add(f->round, chunk, len);
        f->round->chunks++;
        f->round->items += (long long)n;
        f->round->chunk_items += f->filling_chunk_items;
    } else {
        LOG(LL_ERROR, "requeue: cannot encode chunk %s; its records stay in the scratch list", id);
    }
    f->filling_chunk_items = 0;
}

/* Adds one item to the chunks (steals id); from_chunk: it comes from a dead chunk's record. An item too large for a
 * chunk of --max-chunk-bytes on its own stays in dead as an item record saying so. */
static void fill_item(requeue_fill_t *f, json_t *id, const char *text, size_t text_len, const char *chunk_id,
                      bool from_chunk)
{
    json_t *entry = chunk_entry_new(id, text, text_len);
    size_t bytes = chunk_entry_bytes(entry);
    if (!chunk_builder_fits_alone(&f->chunk, bytes)) {
        char *id_json = json_dumps(json_object_get(entry, "id"), JSON_ENCODE_ANY | JSON_COMPACT);
        char why[160];
        snprintf(why, sizeof why, "requeue: the item takes %zu bytes in a chunk, more than --max-chunk-bytes allows",
                 bytes);
        size_t len;
        char *record = result_dead_record(id_json ? id_json : "null", text, text_len, false, why, 0, chunk_id, &len);
        round_add(f->kept, record, len);
        free(id_json);
        json_decref(entry);
        return;
    }
    if (chunk_builder_must_close(&f->chunk, bytes)) fill_close(f);
    f->filling_chunk_items += from_chunk;
    if (chunk_builder_add(&f->chunk, entry, bytes)) fill_close(f);
}

/* Adds the items of a chunk that went to dead whole (its record's raw text). Returns -1 when the text is not a
 * chunk this build can read (the record then stays in dead). */
static int fill_chunk(requeue_fill_t *f, const char *record, size_t len)
{
    char *raw;
    size_t raw_len;
    if (result_dead_chunk_raw(record, len, &raw, &raw_len)) return -1;
    chunk_t c;
    char err[256];
    int rc = chunk_decode(raw, raw_len, &c, err, sizeof err);
    free(raw);
    if (rc) return -1;
    for (size_t i = 0; i < c.n_items; i++) {
        json_t *id = json_loads(c.items[i].id_json, JSON_DECODE_ANY, NULL);
        fill_item(f, id ? id : json_null(), c.items[i].text, c.items[i].text_len, c.id, true);
    }
    chunk_clear(&c);
    return 0;
}

/* Builds the chunks of one round from the scratch list's records (reply->element): item records, and records of
 * chunks that went to dead whole (too large, or unreadable by an older build), whose items are repacked. */
static void round_build(requeue_round_t *r, redisReply *records, const settings_t *s, const char *run_id,
                        long long *chunk_seq)
{
    requeue_round_t kept = {0};
    requeue_fill_t f = {.round = r, .kept = &kept, .run_id = run_id, .chunk_seq = chunk_seq};
    chunk_builder_init(&f.chunk, (size_t)s->chunk_size, (size_t)s->max_chunk_bytes);
    for (size_t i = 0; i < records->elements; i++) {
        redisReply *rec = records->element[i];
        if (rec->type != REDIS_REPLY_STRING) continue;
        json_t *id;
        char *text;
        size_t text_len;
        if (result_dead_item(rec->str, rec->len, &id, &text, &text_len) == 0) {
            fill_item(&f, id, text, text_len, "requeue", false);
            free(text);
        } else if (fill_chunk(&f, rec->str, rec->len)) {
            round_add(&kept, xstrndup(rec->str, rec->len), rec->len);
        }
    }
    fill_close(&f);
    chunk_builder_free(&f.chunk);
    r->kept = kept.argc;
    for (size_t i = 0; i < kept.argc; i++) round_add(r, kept.argv[i], kept.lens[i]);
    free(kept.argv);
    free(kept.lens);
}

static void round_free(requeue_round_t *r)
{
    for (size_t i = 0; i < r->argc; i++) free(r->argv[i]);
    free(r->argv);
    free(r->lens);
}

/* The records this run requeues: dead's length, at most --limit. Returns -1 after logging why when Redis does not
 * answer. */
static long long requeue_count(rconn_t *c, const keys_t *k, const settings_t *s)
{
    redisReply *r = rconn_command(c, "LLEN %s", k->dead);
    long long remaining = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    if (remaining < 0) {
        LOG(LL_ERROR, "cannot read %s: %s", k->dead, rconn_error(c));
        return -1;
    }
    if (s->limit > 0 && s->limit < remaining) remaining = s->limit;
    return remaining;
}

/* Moves up to `most` records (about most_bytes of them, at least one) from dead to the scratch list (dead_take.lua)
 * and reads them there. Returns the records, an array reply the caller frees, with their number in *taken; or
 * NULL with *taken 0 when dead is empty, -1 when Redis failed. */
static redisReply *requeue_take(rconn_t *c, const keys_t *k, const char *scratch, long long most,
                                const char *most_bytes, long long *taken)
{
    char n[24];
    snprintf(n, sizeof n, "%lld", most);
    const char *take[] = {"EVAL", script_dead_take, "2", k->dead, scratch, n, most_bytes};
    redisReply *r = rconn_command_argv(c, 7, take, NULL);
    *taken = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    if (*taken <= 0) return NULL;
    r = rconn_command(c, "LRANGE %s 0 -1", scratch);
    if (r && r->type == REDIS_REPLY_ARRAY) return r;
    if (r) freeReplyObject(r);
    *taken = -1;
    return NULL;
}

/* Pushes a round's chunks to pending and its kept records back to dead, and deletes the scratch list, in one
 * script (dead_put.lua). Returns 0, or -1 after logging why (the records then wait in the scratch list). */
static int requeue_put(rconn_t *c, const keys_t *k, const char *scratch, const requeue_round_t *round)
{
    char counts[3][24];
    snprintf(counts[0], sizeof counts[0], "%lld", round->items);
    snprintf(counts[1], sizeof counts[1], "%lld", round->chunk_items);
    snprintf(counts[2], sizeof counts[2], "%zu", round->chunks);
    /* ARGV[1..3] the counts; the chunks and kept records follow. */
    const char *head[] = {"EVAL", script_dead_put, "4", scratch, k->pending, k->dead, k->stats,
                          counts[0], counts[1], counts[2]};
    const size_t n_head = sizeof head / sizeof head[0];
    size_t argc = n_head + round->argc;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    for (size_t i = 0; i < n_head; i++) argv[i] = head[i], lens[i] = strlen(head[i]);
    for (size_t i = 0; i < round->argc; i++) argv[n_head + i] = round->argv[i], lens[n_head + i] = round->lens[i];
    redisReply *r = rconn_command_argv(c, (int)argc, argv, lens);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok) LOG(LL_ERROR, "requeue: pushing chunks failed (%s); the records wait in %s",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c), scratch);
    if (r) freeReplyObject(r);
    free(argv);
    free(lens);
    return ok ? 0 : -1;
}

/* Requeues up to `remaining` records, one round (take, build, put) after another, adding the items requeued to
 * *items and the records kept in dead to *kept. Returns 0, or -1 when Redis failed (a round's records then wait in
 * the scratch list). */
static int requeue_rounds(rconn_t *c, const keys_t *k, const settings_t *s, const char *scratch, const char *run_id,
                          long long remaining, long long *items, long long *kept)
{
    long long chunk_seq = 0;
    /* A round reads about --max-chunk-bytes of records (at least one), whatever their size. */
    char most_bytes[24];
    snprintf(most_bytes, sizeof most_bytes, "%lld", s->max_chunk_bytes);
    while (remaining > 0) {
        long long taken;
        redisReply *records = requeue_take(c, k, scratch, remaining < REQUEUE_BATCH ? remaining : REQUEUE_BATCH,
                                           most_bytes, &taken);
        if (!records) return taken < 0 ? -1 : 0;
        remaining -= taken;
        requeue_round_t round = {0};
        round_build(&round, records, s, run_id, &chunk_seq);
        freeReplyObject(records);
        int put = requeue_put(c, k, scratch, &round);
        round_free(&round);
        if (put) return -1;
        *items += round.items;
        *kept += (long long)round.kept;
    }
    return 0;
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
    long long remaining = requeue_count(c, &k, s);
    if (remaining < 0) {
        rconn_free(c);
        return EXIT_RUNTIME;
    }
    /* Records in flight wait in the scratch list; if this process dies, they are there, not lost. */
    LOG(LL_INFO, "requeue: up to %lld records from %s, through %s", remaining, k.dead, scratch);
    long long items = 0, kept_total = 0;
    int rc = requeue_rounds(c, &k, s, scratch, run_id, remaining, &items, &kept_total);
    rconn_free(c);
    if (rc) return EXIT_RUNTIME;
    printf("requeued %lld items from %s to %s", items, k.dead, k.pending);
    if (kept_total) printf("; %lld records stay in dead (unreadable chunks, or items too large for a chunk)", kept_total);
    printf("\n");
    return 0;
}
