/* Fuzz target: chunk_decode() on an untrusted chunk (anything a client can LPUSH onto the pending list), then the
 * result line and the dead record of every item it yields, and the dead record read back as a requeue does.
 *
 * Checks beyond "no crash, no leak, no undefined behaviour": a decoded chunk's id is printable ASCII; every result
 * line and dead record is one valid JSON object without a raw line break that carries the item's id and value; a
 * dead record reads back (result_dead_item) to the item's id and to its text byte for byte; an item's value is the
 * one json_loadb gives for its text. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "result.h"

#define FUZZ_NAME "fuzz_chunk"
#include "fuzz.h"
const char *__asan_default_options(void);

/* Strict string checks: a str* function reading past the end of a counted buffer is reported even where it finds
 * what it looks for first. */
const char *__asan_default_options(void) { return "strict_string_checks=1"; }

/* Parses line[0..len) as one JSON object on one line; returns it (a new reference). */
static json_t *load_line(const char *what, const char *line, size_t len)
{
    CHECK(memchr(line, '\n', len) == NULL && memchr(line, '\r', len) == NULL, "%s has a raw line break", what);
    json_error_t jerr;
    json_t *v = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    CHECK(json_is_object(v), "%s is not a JSON object: %s: %.*s", what, jerr.text, (int)len, line);
    return v;
}

static void check_item(const chunk_t *c, const chunk_item_t *it)
{
    json_t *id = json_loads(it->id_json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(json_is_string(id) || json_is_integer(id), "item id %s", it->id_json);
    CHECK((it->value == NULL) == (it->error != NULL), "an item has a value or an error");
    CHECK(strlen(it->text) <= it->text_len, "text_len");
    /* The value is json_loadb's, whichever reader made it (flat objects skip jansson's). */
    json_t *loaded = json_loadb(it->text, it->text_len, JSON_DECODE_ANY, NULL);
    CHECK((loaded == NULL) == (it->value == NULL) && (!loaded || json_equal(loaded, it->value)),
          "item value differs from json_loadb's: %.*s", (int)it->text_len, it->text);
    json_decref(loaded);

    size_t len;
    char *line = result_encode(it->id_json, it->value != NULL, it->text, it->text_len, it->error, 0, NULL, 0, 1, 5, &len);
    json_t *r = load_line("result line", line, len);
    CHECK(json_equal(json_object_get(r, "id"), id), "result line id: %s", line);
    if (it->value) CHECK(json_equal(json_object_get(r, "result"), it->value), "result line value: %s", line);
    json_decref(r);
    free(line);

    char *rec = result_dead_record(it->id_json, it->text, it->text_len, it->value != NULL,
                                   it->error ? it->error : "failed", 3, c->id, &len);
    r = load_line("dead record", rec, len);
    CHECK(json_equal(json_object_get(r, "id"), id), "dead record id: %s", rec);
    json_decref(r);
    /* An exact-size copy: the requeue reads records as counted bytes. */
    char *exact = malloc(len);
    memcpy(exact, rec, len);
    json_t *back_id = NULL;
    char *back_text = NULL;
    size_t back_len = 0;
    CHECK(result_dead_item(exact, len, &back_id, &back_text, &back_len) == 0, "dead record does not read back: %s",
          rec);
    CHECK(json_equal(back_id, id), "dead record id read back: %s", rec);
    CHECK(back_len == it->text_len && memcmp(back_text, it->text, back_len) == 0,
          "dead record text read back: %.*s, enqueued: %.*s", (int)back_len, back_text, (int)it->text_len, it->text);
    json_decref(back_id);
    free(back_text);
    free(exact);
    free(rec);
    json_decref(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The input as a dead record, as chunkd requeue reads one from the dead list. */
    json_t *dead_id = NULL;
    char *dead_text = NULL;
    size_t dead_len = 0;
    if (result_dead_item((const char *)data, size, &dead_id, &dead_text, &dead_len) == 0) {
        CHECK(json_is_string(dead_id) || json_is_integer(dead_id), "dead record id");
        json_decref(dead_id);
        free(dead_text);
    }

    chunk_t c;
    char err[512];
    if (chunk_decode((const char *)data, size, &c, err, sizeof err)) {
        CHECK(c.id == NULL && c.items == NULL && c.n_items == 0, "a failed decode leaves nothing to free");
        return 0;
    }
    for (const char *p = c.id; *p; p++) CHECK(*p > 0x20 && *p < 0x7f, "chunk id byte 0x%02x", (unsigned char)*p);
    for (size_t i = 0; i < c.n_items; i++) check_item(&c, &c.items[i]);
    chunk_clear(&c);
    return 0;
}
