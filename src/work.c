/* work: see work.h. */
#include "work.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynbuf.h"
#include "result.h"
#include "xalloc.h"

work_chunk_t *work_chunk_new(char *raw, size_t raw_len, int64_t now_ms)
{
    work_chunk_t *c = xcalloc(1, sizeof *c);
    c->raw = raw;
    c->raw_len = raw_len;
    c->fetched_ms = now_ms;
    c->marker.chunk = c;
    char err[512];
    /* Items are parsed by the loop that runs them (loop.c), not all at once here. */
    if (chunk_decode_texts(raw, raw_len, &c->decoded, err, sizeof err)) {
        c->dead_reason = xstrdup(err);
        return c;
    }
    c->items = xcalloc(c->decoded.n_items ? c->decoded.n_items : 1, sizeof *c->items);
    for (size_t i = 0; i < c->decoded.n_items; i++) {
        c->items[i].in = &c->decoded.items[i];
        c->items[i].chunk = c;
    }
    c->n_run = c->decoded.n_items;
    /* FNV-1a over the chunk text: not a defence against an attacker (who could as well write the bits), only
     * against an innocent reuse of a chunk id. */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < raw_len; i++) h = (h ^ (unsigned char)raw[i]) * 0x100000001b3ULL;
    snprintf(c->ckpt, sizeof c->ckpt, "%s:%016llx", c->decoded.id, (unsigned long long)h);
    return c;
}

void work_chunk_apply_checkpoint(work_chunk_t *c, const unsigned char *bits, size_t len)
{
    size_t run = 0;
    for (size_t i = 0; i < c->decoded.n_items; i++) {
        bool done = bits && i / 8 < len && (bits[i / 8] >> (7 - i % 8)) & 1;
        c->items[i].done_before = done;
        c->items[i].finished = done;
        run += !done;
    }
    c->n_run = run;
}

void work_chunk_make_dead(work_chunk_t *c, const char *why)
{
    free(c->items);
    c->items = NULL;
    chunk_clear(&c->decoded);
    c->n_run = 0;
    c->ckpt[0] = '\0';
    free(c->dead_reason);
    c->dead_reason = xstrdup(why);
}

void work_chunk_free(work_chunk_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->decoded.n_items; i++) {
        free(c->items[i].result_line);
        free(c->items[i].dead_record);
        free(c->items[i].error_body);
    }
    free(c->items);
    chunk_clear(&c->decoded);
    free(c->dead_reason);
    free(c->poison);
    free(c->raw);
    free(c);
}

void work_item_finish(work_item_t *it, bool ok, const char *result_json, size_t result_len, const char *error,
                      int64_t now_ms)
{
    int64_t ms = it->started_ms ? now_ms - it->started_ms : 0;
    it->finished = true;
    it->ok = ok;
    it->result_line = result_encode(it->in->id_json, ok, result_json, result_len, error, it->status,
                                    ok ? NULL : it->error_body, it->error_body_len, it->attempts, ms, &it->result_len);
    free(it->error_body);
    it->error_body = NULL;
    if (!ok || it->chunk->include_item)
        chunk_item_parse(it->in); /* an item that failed before it started (poison, timeout): is it JSON? */
    if (it->chunk->include_item && it->in->text)
        result_add_item(&it->result_line, &it->result_len, it->in->text, it->in->text_len, it->in->error == NULL);
    if (!ok) {
        it->dead_record = result_dead_record(it->in->id_json, it->in->text, it->in->text_len, it->in->error == NULL,
                                             error, it->attempts, it->chunk->decoded.id, &it->dead_len);
    }
    /* The result line (and dead record) hold what is still needed of the item: its text and value go now, so a
     * large chunk's finished items are not held twice while they wait for their commit. */
    chunk_item_release(it->in);
}

char *work_chunk_dead_record(const work_chunk_t *c, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"error\":");
    dynbuf_add_json_string(&b, c->dead_reason, strlen(c->dead_reason));
    dynbuf_printf(&b, ",\"bytes\":%zu,\"raw\":", c->raw_len);
    dynbuf_add_json_string(&b, c->raw, c->raw_len);
    dynbuf_addstr(&b, "}");
    return dynbuf_take(&b, len);
}
