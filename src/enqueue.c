/* enqueue: see enqueue.h. */
#include "enqueue.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "chunk.h"
#include "clock.h"
#include "dynbuf.h"
#include "idset.h"
#include "keys.h"
#include "linereader.h"
#include "log.h"
#include "rconn.h"
#include "scripts.h"
#include "xalloc.h"

#define ENQUEUE_BATCH_CHUNKS 32               /* chunks per script call */
#define ENQUEUE_BATCH_BYTES ((size_t)8 * 1024 * 1024) /* or fewer, when they are large */
#define ENQUEUE_REJECTS_LOGGED 100            /* reject messages on stderr before they are only counted */
/* Warns when the queue already has finished items: ids enqueued again share their Idempotency-Key with them (a
 * cheap check; remembering every id of a queue would cost Redis memory per item). */
static void enqueue_warn_finished(rconn_t *c, const keys_t *k, const char *queue)
{
    redisReply *r = rconn_command(c, "HMGET %s done failed", k->stats);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        long long finished = 0;
        for (size_t i = 0; i < 2; i++) finished += r->element[i]->str ? atoll(r->element[i]->str) : 0;
        if (finished > 0)
            LOG(LL_WARN, "queue %s already has %lld finished items: an id enqueued again shares its Idempotency-Key "
                         "with the earlier item of that id (a new --queue gives new keys)", queue, finished);
    }
    if (r) freeReplyObject(r);
}

int enqueue_seal(rconn_t *c, const char *queue, bool seal, bool *was_sealed, long long *enqueued, char *err,
                 size_t errlen)
{
    keys_t k;
    keys_init(&k, queue);
    const char *argv[] = {"EVAL", script_seal, "2", k.sealed, k.stats, seal ? "seal" : "open"};
    redisReply *r = rconn_command_argv(c, 6, argv, NULL);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (was_sealed) *was_sealed = r->element[0]->integer == 1;
        if (enqueued) *enqueued = r->element[1]->integer;
        rc = 0;
    } else {
        snprintf(err, errlen, "cannot %s queue %s at %s: %.300s", seal ? "seal" : "reopen", queue, rconn_addr(c),
                 r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c));
    }
    if (r) freeReplyObject(r);
    return rc;
}

int enqueue_sealed(rconn_t *c, const keys_t *k, char *err, size_t errlen)
{
    redisReply *r = rconn_command_argv(c, 2, (const char *[]){"EXISTS", k->sealed}, NULL);
    int sealed = r && r->type == REDIS_REPLY_INTEGER ? r->integer == 1 : -1;
    if (sealed < 0 && err) snprintf(err, errlen, "%.300s", r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c));
    if (r) freeReplyObject(r);
    return sealed;
}

/* Says why a sealed queue takes nothing, into err. */
static void enqueue_sealed_error(const char *queue, char *err, size_t errlen)
{
    snprintf(err, errlen, "queue %s is sealed: its input was declared complete (by an enqueue that read its input "
             "to the end, or chunkd seal), and --no-reopen refuses to add to it, so nothing was enqueued; drop "
             "--no-reopen to add to it, or use a new --queue", queue);
}

/* Opens a sealed queue (--reopen, the default) or refuses it (--no-reopen). Returns 0, or -1 with the reason in
 * err. */
static int enqueue_check_open(rconn_t *c, const settings_t *s, const keys_t *k, enqueue_result_t *res, char *err,
                              size_t errlen)
{
    if (s->reopen) {
        bool was_sealed = false;
        if (enqueue_seal(c, s->queue, false, &was_sealed, NULL, err, errlen)) return -1;
        if (was_sealed)
            LOG(LL_WARN, "queue %s was sealed: this enqueue adds to it (--no-reopen refuses instead); workers that "
                         "already ended with --exit-when-empty do not see these items", s->queue);
        return 0;
    }
    char why[320];
    int sealed = enqueue_sealed(c, k, why, sizeof why);
    if (sealed < 0) snprintf(err, errlen, "cannot read queue %s at %s: %s", s->queue, rconn_addr(c), why);
    if (sealed == 1) {
        res->refused_sealed = true;
        enqueue_sealed_error(s->queue, err, errlen);
    }
    return sealed == 0 ? 0 : -1;
}

typedef struct enqueue_state {
    keys_t keys;
    const char *queue;      /* borrowed: the settings' */
    rconn_t *conn;
    char run_id[20];        /* random prefix of this run's chunk ids */
    long long chunk_seq;
    chunk_builder_t chunk;  /* the chunk being built: --chunk-size items, --max-chunk-bytes */
    char **batch;           /* encoded chunks waiting to be sent */
    size_t *batch_lens;
    size_t batch_n, batch_bytes;
    long long batch_items;
    FILE *rejects;
    enqueue_result_t *res;
} enqueue_state_t;

static int enqueue_send(enqueue_state_t *st, char *err, size_t errlen)
{
    if (st->batch_n == 0) return 0;
    enum { HEAD = 7 };
    size_t argc = HEAD + st->batch_n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char items[24];
    snprintf(items, sizeof items, "%lld", st->batch_items);
    const char *head[HEAD] = {"EVAL", script_enqueue, "3", st->keys.pending, st->keys.stats, st->keys.sealed, items};
    for (size_t i = 0; i < HEAD; i++) argv[i] = head[i], lens[i] = strlen(head[i]);
    for (size_t i = 0; i < st->batch_n; i++) argv[HEAD + i] = st->batch[i], lens[HEAD + i] = st->batch_lens[i];
    int rc = -1;
    /* The script is atomic, so a lost reply is the only ambiguous case: the batch may or may not have been
     * pushed. Resending could enqueue it twice, so enqueue stops with an error instead. */
    redisReply *r = rconn_command_argv(st->conn, (int)argc, argv, lens);
    if (!r) snprintf(err, errlen, "Redis at %s failed during enqueue: %s (lines up to %lld were enqueued before this batch)",
                     rconn_addr(st->conn), rconn_error(st->conn), st->res->lines - st->batch_items);
    else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "SEALED", 6) == 0) { /* sealed since the start */
        st->res->refused_sealed = true;
        enqueue_sealed_error(st->queue, err, errlen);
    } else if (r->type == REDIS_REPLY_ERROR) snprintf(err, errlen, "enqueue failed: %.300s", r->str);
    else rc = 0;
    if (r) freeReplyObject(r);
    char why[300];
    if (rc == 0 && rconn_wait_replicas(st->conn, why, sizeof why)) {
        /* Written to the master but not known to be on a replica: a failover could lose it, so it is not
         * reported as enqueued. */
        snprintf(err, errlen, "Redis at %s: the batch of %lld items up to line %lld was written but not confirmed "
                 "on a replica: %s (the items before it were; this batch may be in the queue too)",
                 rconn_addr(st->conn), st->batch_items, st->res->lines, why);
        rc = -1;
    }
    if (rc == 0) {
        st->res->chunks += (long long)st->batch_n;
        st->res->items += st->batch_items;
    }
    for (size_t i = 0; i < st->batch_n; i++) free(st->batch[i]);
    free(argv);
    free(lens);
    st->batch_n = st->batch_bytes = 0;
    st->batch_items = 0;
    return rc;
}

/* Closes the chunk being built and queues it for sending. */
static int enqueue_close_chunk(enqueue_state_t *st, char *err, size_t errlen)
{
    size_t n = chunk_builder_items(&st->chunk);
    if (n == 0) return 0;
    char id[64];
    snprintf(id, sizeof id, "%s-%lld", st->run_id, ++st->chunk_seq);
    size_t len;
    st->batch[st->batch_n] = chunk_builder_take(&st->chunk, id, &len);
    if (!st->batch[st->batch_n]) {
        snprintf(err, errlen, "cannot encode chunk %s (invalid UTF-8 in an item)", id);
        return -1;
    }
    st->batch_lens[st->batch_n++] = len;
    st->batch_bytes += len;
    st->batch_items += (long long)n;
    if (st->batch_n == ENQUEUE_BATCH_CHUNKS || st->batch_bytes >= ENQUEUE_BATCH_BYTES)
        return enqueue_send(st, err, errlen);
    return 0;
}

static int enqueue_reject(enqueue_state_t *st, const char *line, size_t len, size_t full_len, const char *why,
                          char *err, size_t errlen)
{
    enqueue_result_t *res = st->res;
    if (!st->rejects) {
        st->rejects = fopen(res->rejects_path, "a");
        if (!st->rejects) {
            snprintf(err, errlen, "cannot open rejects file %s: %s", res->rejects_path, strerror(errno));
            return -1;
        }
    }
    res->rejected++;
    if (res->rejected <= ENQUEUE_REJECTS_LOGGED)
        LOG(LL_WARN, "line %lld rejected: %s", st->res->lines, why);
    else if (res->rejected == ENQUEUE_REJECTS_LOGGED + 1)
        LOG(LL_WARN, "more lines rejected; see %s", res->rejects_path);
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_printf(&b, "{\"line\":%lld,\"error\":", res->lines);
    dynbuf_add_json_string(&b, why, strlen(why));
    dynbuf_addstr(&b, ",\"raw\":");
    dynbuf_add_json_string(&b, line, len);
    if (full_len > len) dynbuf_printf(&b, ",\"truncated\":true,\"bytes\":%zu", full_len);
    dynbuf_addstr(&b, "}\n");
    int rc = fwrite(b.data, 1, b.len, st->rejects) == b.len ? 0 : -1;
    dynbuf_free(&b);
    if (rc) snprintf(err, errlen, "cannot write rejects file %s: %s", res->rejects_path, strerror(errno));
    return rc;
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t') return false;
    return true;
}

int enqueue_run(const settings_t *s, FILE *in, const char *input_name, const atomic_bool *stop,
                const idset_t *skip, enqueue_result_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    bool is_stdin = strcmp(input_name, "-") == 0;
    if (s->rejects) snprintf(res->rejects_path, sizeof res->rejects_path, "%s", s->rejects);
    else if (is_stdin) snprintf(res->rejects_path, sizeof res->rejects_path, "chunkd-rejected.jsonl");
    else snprintf(res->rejects_path, sizeof res->rejects_path, "%s.rejected", input_name);

    enqueue_state_t st = {.res = res, .queue = s->queue};
    keys_init(&st.keys, s->queue);
    unsigned char rnd[6];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) memset(rnd, (int)clock_now_ms(), sizeof rnd);
    snprintf(st.run_id, sizeof st.run_id, "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    st.conn = rconn_new(s->redis_url, s->redis_timeout_ms);
    rconn_set_min_replicas(st.conn, (int)s->redis_min_replicas, s->redis_min_replicas_timeout_ms);
    if (rconn_connect(st.conn, err, errlen)) {
        rconn_free(st.conn);
        return -1;
    }
    if (enqueue_check_open(st.conn, s, &st.keys, res, err, errlen)) {
        rconn_free(st.conn);
        return -1;
    }
    enqueue_warn_finished(st.conn, &st.keys, s->queue);
    idset_t *ids = idset_new();
    long long repeated = 0;
    chunk_builder_init(&st.chunk, (size_t)s->chunk_size, (size_t)s->max_chunk_bytes);
    st.batch = xcalloc(ENQUEUE_BATCH_CHUNKS, sizeof *st.batch);
    st.batch_lens = xcalloc(ENQUEUE_BATCH_CHUNKS, sizeof *st.batch_lens);

    linereader_t lr;
    linereader_init(&lr, in, (size_t)s->max_item_bytes);
    int rc = 0;
    const char *line;
    size_t len, full_len;
    int got = 0;
    while (rc == 0 && !(stop && atomic_load(stop)) && (got = linereader_next(&lr, &line, &len, &full_len)) == 1) {
        res->lines = lr.line_no;
        if (full_len > len) {
            char why[128];
            snprintf(why, sizeof why, "line is %zu bytes, more than --max-item-bytes %lld", full_len,
                     s->max_item_bytes);
            rc = enqueue_reject(&st, line, len, full_len, why, err, errlen);
            continue;
        }
        if (blank(line, len)) continue;
        char why[256];
        json_t *entry = chunk_entry_from_line(line, len, lr.line_no, why, sizeof why);
        if (!entry) {
            rc = enqueue_reject(&st, line, len, full_len, why, err, errlen);
            continue;
        }
        const json_t *id = json_object_get(entry, "id");
        if (skip && idset_has(skip, id)) { /* run --resume: its result is in the output already */
            json_decref(entry);
            res->skipped++;
            continue;
        }
        int seen = idset_add(ids, id);
        if (seen > 0 && repeated++ < 1)
            LOG(LL_WARN, "line %lld repeats an id of an earlier line: items with the same id share an "
                         "Idempotency-Key (the count follows at the end)", lr.line_no);
        if (seen < 0 && idset_count(ids) == IDSET_SLOTS_MAX / 2)
            LOG(LL_INFO, "more than %zu ids: later ids are not checked for repeats", idset_count(ids));
        size_t entry_bytes = chunk_entry_bytes(entry);
        if (!chunk_builder_fits_alone(&st.chunk, entry_bytes)) {
            json_decref(entry);
            snprintf(why, sizeof why, "item takes %zu bytes in a chunk; with the chunk's frame that is more than "
                     "--max-chunk-bytes %lld", entry_bytes, s->max_chunk_bytes);
            rc = enqueue_reject(&st, line, len, full_len, why, err, errlen);
            continue;
        }
        if (chunk_builder_must_close(&st.chunk, entry_bytes)) rc = enqueue_close_chunk(&st, err, errlen);
        if (chunk_builder_add(&st.chunk, entry, entry_bytes) && rc == 0) rc = enqueue_close_chunk(&st, err, errlen);
    }
    if (rc == 0 && got < 0) {
        snprintf(err, errlen, "cannot read %s: %s", is_stdin ? "stdin" : input_name, strerror(errno));
        rc = -1;
    }
    if (rc == 0) rc = enqueue_close_chunk(&st, err, errlen);
    if (rc == 0) rc = enqueue_send(&st, err, errlen);
    /* The whole input is in: seal, so that workers with --exit-when-empty and collect --until-done can end. */
    if (rc == 0 && got == 0 && !(stop && atomic_load(stop)) && s->seal) {
        rc = enqueue_seal(st.conn, s->queue, true, NULL, &res->total, err, errlen);
        res->sealed = rc == 0;
    }
    if (repeated)
        LOG(LL_WARN, "%lld items repeat the id of an earlier line of %s", repeated, is_stdin ? "stdin" : input_name);
    idset_free(ids);
    if (res->rejected) {
        redisReply *r = rconn_command(st.conn, "HINCRBY %s rejected %lld", st.keys.stats, res->rejected);
        if (r) freeReplyObject(r);
    } else {
        res->rejects_path[0] = '\0';
    }
    for (size_t i = 0; i < st.batch_n; i++) free(st.batch[i]);
    if (st.rejects && fclose(st.rejects) && rc == 0) {
        snprintf(err, errlen, "cannot write rejects file %s: %s", res->rejects_path, strerror(errno));
        rc = -1;
    }
    linereader_free(&lr);
    chunk_builder_free(&st.chunk);
    free(st.batch);
    free(st.batch_lens);
    rconn_free(st.conn);
    return rc;
}
