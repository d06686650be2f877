/* chunk: see chunk.h. */
#include "chunk.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

json_t *chunk_item_id(const json_t *value, long long line)
{
    json_t *id = json_is_object(value) ? json_object_get(value, "id") : NULL;
    if (json_is_string(id) || json_is_integer(id)) return json_incref(id);
    return json_integer(line);
}

json_t *chunk_entry_new(json_t *id, const char *text, size_t len)
{
    json_t *e = json_object();
    json_object_set_new(e, "id", id);
    json_object_set_new(e, "item", json_stringn_nocheck(text, len));
    return e;
}

json_t *chunk_entry_from_line(const char *line, size_t len, long long line_no, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *value = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (!value) {
        snprintf(why, whylen, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return NULL;
    }
    json_t *entry = chunk_entry_new(chunk_item_id(value, line_no), line, len);
    json_decref(value);
    return entry;
}

char *chunk_encode(const char *chunk_id, const json_t *entries, size_t *len)
{
    json_t *root = json_object();
    json_object_set_new(root, "v", json_integer(CHUNK_FORMAT_VERSION));
    json_object_set_new(root, "chunk", json_string(chunk_id));
    json_object_set(root, "items", (json_t *)entries);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    *len = s ? strlen(s) : 0;
    return s;
}

void chunk_clear(chunk_t *c)
{
    for (size_t i = 0; i < c->n_items; i++) {
        free(c->items[i].id_json);
        free(c->items[i].text);
        free(c->items[i].error);
        json_decref(c->items[i].value);
    }
    free(c->items);
    free(c->id);
    memset(c, 0, sizeof *c);
}

/* Chunk ids appear in logs: printable ASCII only, so they cannot forge log lines. */
static bool chunk_id_ok(const char *id)
{
    for (; *id; id++)
        if (*id < 0x21 || *id > 0x7e) return false;
    return true;
}

int chunk_decode(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > CHUNK_MAX_BYTES) {
        snprintf(err, errlen, "chunk larger than %zu bytes", CHUNK_MAX_BYTES);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(raw, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        snprintf(err, errlen, "chunk is not valid JSON: %s at byte %d", jerr.text, jerr.position);
        return -1;
    }
    json_t *v = json_object_get(root, "v"), *id = json_object_get(root, "chunk"),
           *items = json_object_get(root, "items");
    int rc = -1;
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "chunk has no integer \"v\" (format version)");
        goto done;
    }
    if (json_integer_value(v) != CHUNK_FORMAT_VERSION) {
        snprintf(err, errlen, "chunk format version %lld is not supported (this worker reads version %d)",
                 (long long)json_integer_value(v), CHUNK_FORMAT_VERSION);
        goto done;
    }
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > CHUNK_ID_MAX ||
        !chunk_id_ok(json_string_value(id))) {
        snprintf(err, errlen, "chunk has no \"chunk\" id of 1 to %d printable ASCII characters", CHUNK_ID_MAX);
        goto done;
    }
    if (!json_is_array(items) || json_array_size(items) > CHUNK_MAX_ITEMS) {
        snprintf(err, errlen, "chunk has no \"items\" array of at most %d items", CHUNK_MAX_ITEMS);
        goto done;
    }
    out->id = xstrdup(json_string_value(id));
    out->n_items = json_array_size(items);
    out->items = xcalloc(out->n_items ? out->n_items : 1, sizeof *out->items);
    for (size_t i = 0; i < out->n_items; i++) {
        json_t *e = json_array_get(items, i), *iid = json_object_get(e, "id"), *text = json_object_get(e, "item");
        chunk_item_t *it = &out->items[i];
        if (!json_is_object(e) || !(json_is_string(iid) || json_is_integer(iid)) || !json_is_string(text)) {
            snprintf(err, errlen, "item %zu of chunk %s needs a string or integer \"id\" and a string \"item\"", i,
                     out->id);
            chunk_clear(out);
            goto done;
        }
        it->id_json = json_dumps(iid, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!it->id_json) abort();
        it->text_len = json_string_length(text);
        it->text = xstrndup(json_string_value(text), it->text_len);
        it->value = json_loadb(it->text, it->text_len, JSON_DECODE_ANY, &jerr);
        if (!it->value) {
            it->error = xasprintf("item is not valid JSON: %s at byte %d", jerr.text, jerr.position);
        } else {
            /* Valid JSON has raw line breaks only as whitespace between tokens: make them spaces, so an item copied
             * into a result line can never split it into forged lines. */
            for (size_t k = 0; k < it->text_len; k++)
                if (it->text[k] == '\n' || it->text[k] == '\r') it->text[k] = ' ';
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}
